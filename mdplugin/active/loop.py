"""The active-learning loop: MD with the models; label, retrain and go back when unsure.

:func:`run_active` runs (or resumes) one run in a run folder (:mod:`mdplugin.active.store`):

1. initial data: the given labelled frames, or ``n_initial`` frames of a short reference MD run
   with the oracle (labelled one by one, each appended to ``data.xyz`` before the next);
2. train the models on ``data.xyz``;
3. Langevin MD with the models; after every step the uncertainty of each target is compared with
   its threshold. Below: the state becomes the *trusted* state. Above: the structure is labelled
   by the oracle, appended to ``data.xyz`` (fsync), the models are retrained, and the dynamics go
   on from the last trusted state;
   With ``segment > 0`` (segment mode) the models run ``segment`` steps at a time instead, keep a
   candidate every ``sample_every`` steps, and the most uncertain candidates over their threshold
   (``batch`` of them, diverse by farthest point) are labelled at the end of the segment before
   one retraining (:func:`select_candidates`; ``pool`` keeps candidates across segments,
   ``walkers`` restarts every segment from an initial frame);
4. the run ends cleanly at the first budget reached (MD steps, oracle calls, wall time).

Several MPI ranks (``run_active(..., comm=MPI.COMM_WORLD)``, ``mpiexec -n P mdplugin active``;
segment mode only): every rank runs its own walker (seed ``seed + 1000·rank``); the candidates of
a segment are gathered on every rank, which all run the same selection; the picked structures
are labelled in parallel (one share of the oracle calls per rank), then every rank retrains on
the same data, so the models stay identical. Only rank 0 reads and writes the run folder (the
others get what they need by broadcast); budgets are decided on rank 0; an error on one rank is
raised on every rank, or, where the others could wait forever, ends the job with ``Abort``.

Kill-safety: a label is appended and fsync'ed before it is reported or used; models are saved
and the trusted state checkpointed atomically after each retraining and every
``checkpoint_every`` steps. On resume the models are retrained on every label in ``data.xyz``
(unless the saved ones already saw them all) and the dynamics restart from the checkpoint; a
structure whose key is already in ``data.xyz`` is never sent to the oracle again.
"""

from __future__ import annotations

import importlib
import pickle
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import ase.io
import numpy as np
from ase import Atoms, units
from ase.parallel import DummyMPI
from ase.calculators.calculator import Calculator

from ..data import Dataset, read_dataset
from ..errors import ConfigError, DataError, OracleError
from ..models import load_model
from ..training import fit_on_dataset
from ..parallel import resolve_comm, split_indices
from .config import ActiveConfig
from .learner import Learner
from .selection import _distance_signature, select_candidates  # noqa: F401 (re-exported)
from .store import RunStore, structure_hash

__all__ = ["ActiveSummary", "run_active", "resolve_oracle"]

#: an atom is lost when its nearest neighbour is farther than this, Å
LOST_ATOM_DISTANCE = 4.0

#: ASE's MD and velocity tools would share random numbers over ``ase.parallel.world`` (all MPI
#: ranks) once mpi4py is imported: every walker draws its own
_NO_MPI = DummyMPI()


@dataclass
class ActiveSummary:
    """What a run did (all counts over the run and its resumes)."""

    run_dir: str
    reason: str
    steps: int
    oracle_calls: int
    initial_frames: int
    n_train: int
    wall_time_s: float
    thresholds: dict = field(default_factory=dict)

    def text(self) -> str:
        thr = ", ".join(f"{k} {v:.3g}" for k, v in self.thresholds.items())
        return (f"active: {self.reason}; {self.steps} MD steps, {self.oracle_calls} oracle calls "
                f"(+{self.initial_frames} initial frames), {self.n_train} training frames, "
                f"{self.wall_time_s:.1f} s; thresholds {thr}; run folder {self.run_dir}")


def resolve_oracle(spec: str | Calculator) -> Calculator:
    """An oracle from a name (``tblite``, ``pyscf``, ``tblite:GFN1-xTB``), an import path to a
    factory (``package.module:function``, called with no argument) or an ASE calculator."""
    if not isinstance(spec, str):
        if not hasattr(spec, "calculate"):
            raise ConfigError(f"active: the oracle must be a name or an ASE calculator, got {spec!r}")
        return spec
    from ..oracle import ORACLES, make_oracle

    name, _, option = spec.partition(":")
    if name in ORACLES:
        return make_oracle(name, **({"method": option} if option else {}))
    if option:
        try:
            factory = getattr(importlib.import_module(name), option)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"active: cannot import oracle factory {spec!r}: {exc}") from None
        return factory()
    raise ConfigError(f"active: unknown oracle {spec!r} (use {', '.join(ORACLES)} or module:function)")


class _AllRanks(Exception):
    """An error raised on every rank at once (no rank is left waiting): :func:`run_active`
    re-raises ``error``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it can be sent to other ranks (pickled), else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - an exception class that does not pickle
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _each(comm: Any, fn: Callable[[], Any]) -> tuple[list, BaseException | None]:
    """Run ``fn`` on every rank; everyone's results (rank order) and the first error, on every rank."""
    try:
        value, error = fn(), None
    except Exception as exc:  # noqa: BLE001 - shared with the other ranks
        value, error = None, _portable(exc)
    if comm.size == 1:
        if error is not None:
            raise error
        return [value], None
    got = comm.allgather((value, error))
    errors = [e for _, e in got if e is not None]
    return [v for v, _ in got], (errors[0] if errors else None)


def _on_root(comm: Any, fn: Callable[[], Any]) -> Any:
    """``fn()`` on rank 0, its result broadcast to every rank (its error raised on every rank)."""
    if comm.size == 1:
        return fn()
    value, error = None, None
    if comm.rank == 0:
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001 - shared with the other ranks
            error = _portable(exc)
    value, error = comm.bcast((value, error), root=0)
    if error is not None:
        raise _AllRanks(error)
    return value


def _model_state(model) -> dict:
    """What rebuilds a fitted model on another rank: its class, hyper-parameters and learned arrays
    (those of its model file, :meth:`mdplugin.models.base.Model.save`)."""
    return {"cls": type(model), "params": model.get_params(deep=False), "arrays": model._get_state(),
            "species": np.asarray(getattr(model, "species_", []), dtype=int),
            "fingerprint": getattr(model, "training_fingerprint_", None), "n_train": getattr(model, "n_train_", None)}


def _model_from_state(state: dict):
    """The model of :func:`_model_state`, rebuilt as :func:`mdplugin.models.load_model` does."""
    model = state["cls"](**state["params"])
    model._set_state({k: np.asarray(v) for k, v in state["arrays"].items()})
    model.species_ = state["species"].reshape(-1)
    model.training_fingerprint_ = state["fingerprint"]
    model.n_train_ = state["n_train"]
    model.is_fitted_ = True
    return model


def _largest_gap(positions: np.ndarray) -> float:
    if len(positions) < 2:
        return 0.0
    d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    return float(d.min(axis=1).max())


class _Run:
    """State of one invocation of :func:`run_active`."""

    def __init__(self, store: RunStore, config: ActiveConfig, oracle: Calculator,
                 say: Callable[[str], None], on_train: Callable[[Learner, int], None] | None = None,
                 comm: Any = None) -> None:
        self.comm = resolve_comm(comm)
        self.rank, self.size = self.comm.rank, self.comm.size
        self.store, self.config, self.on_train = store, config, on_train
        self.say = say if self.rank == 0 else (lambda msg: None)
        self.learner = Learner(config, oracle)
        self.t_start = time.perf_counter()
        self.wall_before = 0.0
        self.step = 0
        self.retries = 0
        self.rng = np.random.default_rng(config.seed + 1000 * self.rank)
        self.atoms: Atoms | None = None
        self.trusted: tuple[np.ndarray, np.ndarray] | None = None

    # --- bookkeeping -----------------------------------------------------------------------
    def wall(self) -> float:
        return self.wall_before + time.perf_counter() - self.t_start

    def counts(self) -> tuple[int, int]:
        """(oracle calls during MD, initial frames) from data.xyz."""
        return self.store.origins.get("md", 0), sum(v for k, v in self.store.origins.items() if k != "md")

    def data(self) -> Dataset:
        """The labelled frames (collective under MPI: rank 0 reads data.xyz and broadcasts)."""
        return _on_root(self.comm, lambda: self.store.read_data(self.config.labels()))

    def checkpoint(self, phase: str = "md", reason: str = "") -> None:
        """Write state.npz (collective under MPI: rank 0 writes every rank's walker; ranks > 0 as
        ``positions_rank{r}``, ``momenta_rank{r}`` and ``rank_rng``/``rank_retries`` in the metadata)."""
        pos, mom = self.trusted
        meta = {"phase": phase, "step": self.step, "wall_time_s": self.wall(), "retries": self.retries,
                "rng": self.rng.bit_generator.state, "n_train": self.learner.n_train, "reason": reason}
        arrays = {"numbers": self.atoms.numbers, "positions": pos, "momenta": mom}
        if self.size > 1:
            walkers = self.comm.gather((pos, mom, self.rng.bit_generator.state, self.retries), root=0)
            if self.rank == 0:
                meta.update(ranks=self.size, rank_rng=[w[2] for w in walkers[1:]],
                            rank_retries=[w[3] for w in walkers[1:]])
                for r, w in enumerate(walkers[1:], 1):
                    arrays[f"positions_rank{r}"], arrays[f"momenta_rank{r}"] = w[0], w[1]
        self.store.write_state(meta, arrays)

    def resume_walker(self, meta: dict, arrays: dict, start: Atoms) -> tuple[np.ndarray, np.ndarray | None]:
        """This rank's checkpointed walker: positions and momenta, with its random-generator state
        and retry count restored. A rank the checkpoint does not know (the run had fewer ranks)
        starts a new walker at the start structure (momenta ``None``: to be drawn)."""
        if self.rank == 0:
            self.retries = int(meta.get("retries", 0))
            self.rng.bit_generator.state = meta["rng"]
            return arrays["positions"], arrays["momenta"]
        if self.rank < int(meta.get("ranks", 1)):
            self.retries = int(meta["rank_retries"][self.rank - 1])
            self.rng.bit_generator.state = meta["rank_rng"][self.rank - 1]
            return arrays[f"positions_rank{self.rank}"], arrays[f"momenta_rank{self.rank}"]
        return start.positions, None

    def save_models(self) -> None:
        if not self.store.writer:
            return
        for t, m in self.learner.models.items():
            m.save(self.store.model_path(t))

    def retrain(self, note: str) -> None:
        data = self.data()
        self.say(f"retraining on {len(data)} frames")
        seconds = self.fit_models(data)
        self.save_models()
        thr = self.learner.thresholds()
        calls, _ = self.counts()
        self.store.log(event="train", step=self.step, oracle_calls=calls, n_train=len(data),
                       train_time_s=seconds, wall_time_s=self.wall(), note=note,
                       **{f"thr_{t}": v for t, v in thr.items()})
        if self.on_train is not None:
            self.on_train(self.learner, calls)

    def fit_models(self, data: Dataset) -> float:
        """Fit the models on ``data`` (:meth:`Learner.train`); returns the wall time (s).

        Under MPI the targets are shared among the ranks (each target fitted on one rank, the
        longest first on the least loaded rank, by the fit times of the previous training) and
        the fitted models sent to every rank, which all rebuild them from the same arrays (as
        :func:`mdplugin.models.load_model` does), so the models are identical on every rank.
        """
        if self.size == 1:
            return self.learner.train(data)
        if len(data) == 0:
            raise _AllRanks(DataError("active: no labelled frames to train on (give initial data or n_initial > 0)"))
        t0 = time.perf_counter()
        seconds = getattr(self, "fit_seconds", {})
        load = [0.0] * self.size
        owner = {}
        for t in sorted(self.config.targets, key=lambda t: -seconds.get(t, 1.0)):  # stable: config order on ties
            r = int(np.argmin(load))
            owner[t] = r
            load[r] += seconds.get(t, 1.0)

        def mine() -> dict:
            out = {}
            for t in self.config.targets:
                if owner[t] == self.rank:
                    t1 = time.perf_counter()
                    model = fit_on_dataset(self.learner._new_model(t), data)
                    out[t] = (_model_state(model), time.perf_counter() - t1)
            return out

        parts, error = _each(self.comm, mine)
        if error is not None:
            raise _AllRanks(error)
        states = {t: v for part in parts for t, v in part.items()}
        self.fit_seconds = {t: states[t][1] for t in self.config.targets}
        self.learner.set_models({t: _model_from_state(states[t][0]) for t in self.config.targets}, data)
        return time.perf_counter() - t0

    def load_or_retrain(self, n_trained: int) -> None:
        """Load the saved models if they were trained on every frame of data.xyz, else retrain."""
        data = self.data()
        paths = {t: self.store.model_path(t) for t in self.config.targets}
        saved = _on_root(self.comm, lambda: n_trained == len(data) and all(p.exists() for p in paths.values()))
        if saved:  # under MPI every rank reads the model files: nothing writes them until the next training
            try:
                models = {t: load_model(p) for t, p in paths.items()}
            except Exception:  # noqa: BLE001 - unreadable model files: retrain
                models = None
            if self.size > 1 and not all(self.comm.allgather(models is not None)):
                models = None
            if models is not None:
                self.learner.set_models(models, data)
                return
        self.retrain("resume")

    # --- initial data ----------------------------------------------------------------------
    def initial_data(self, start: Atoms, initial: Dataset | None) -> None:
        store = self.store
        if initial is not None:
            missing = [p for p in self.config.labels() if not initial.has(p)]
            if missing:
                raise DataError(f"{initial.source}: initial data lack {', '.join(missing)} labels")
            for i, a in enumerate(initial.frames):
                labels = {p: (initial.forces[i] if p == "forces" else initial.get(p)[i]) for p in self.config.labels()}
                store.append_frame(a, labels, step=-1, origin="initial")
            return
        n = self.config.n_initial
        if n == 0:
            return
        # a short reference run with the oracle (deterministic: a resumed run skips labelled frames)
        from ase.constraints import FixCom
        from ase.md.langevin import Langevin
        from ase.md.velocitydistribution import Stationary, thermalize_momenta, ZeroRotation

        rng = np.random.default_rng(self.config.seed + 7919)
        atoms = start.copy()
        atoms.calc = self.learner.oracle
        t0 = self.config.temperature_at(0)
        thermalize_momenta(atoms, temperature_K=t0, rng=rng, comm=_NO_MPI)
        Stationary(atoms)
        ZeroRotation(atoms)
        atoms.set_constraint(FixCom())
        dyn = Langevin(atoms, self.config.dt * units.fs, temperature_K=t0,
                       friction=self.config.friction / units.fs, fixcm=False, rng=rng, comm=_NO_MPI)
        self.say(f"initial data: {n} frames from a reference run with the oracle")
        for i in range(n):
            dyn.run(self.config.initial_stride)
            frame = Atoms(numbers=atoms.numbers, positions=atoms.positions.copy())
            key = structure_hash(frame)
            if store.has(key):
                continue
            self.say(f"labelling initial frame {i}")
            labels = self.learner.label(frame)
            store.append_frame(frame, labels, step=-1, origin="reference", key=key)
            self.say(f"label written {key} initial {i}")
            store.log(event="initial", step=-1, n_train=i + 1, wall_time_s=self.wall(), note=key)

    # --- dynamics --------------------------------------------------------------------------
    def setup_dynamics(self, positions: np.ndarray, momenta: np.ndarray | None, numbers: np.ndarray) -> None:
        from ase.constraints import FixCom
        from ase.md.langevin import Langevin
        from ase.md.velocitydistribution import Stationary, thermalize_momenta, ZeroRotation

        atoms = Atoms(numbers=numbers, positions=positions)
        if momenta is None:
            thermalize_momenta(atoms, temperature_K=self.config.temperature_at(self.step), rng=self.rng, comm=_NO_MPI)
            Stationary(atoms)
            ZeroRotation(atoms)
        else:
            atoms.set_momenta(momenta)
        atoms.set_constraint(FixCom())
        self.atoms = atoms
        self.trusted = (atoms.positions.copy(), atoms.get_momenta().copy())
        self.dyn = Langevin(atoms, self.config.dt * units.fs, temperature_K=self.config.temperature_at(self.step),
                            friction=self.config.friction / units.fs, fixcm=False, rng=self.rng, comm=_NO_MPI)

    def restore_trusted(self, redraw: bool = False) -> None:
        from ase.md.velocitydistribution import Stationary, thermalize_momenta, ZeroRotation

        pos, mom = self.trusted
        self.atoms.set_constraint()
        self.atoms.set_positions(pos)
        if redraw:
            thermalize_momenta(self.atoms, temperature_K=self.config.temperature_at(self.step), rng=self.rng, comm=_NO_MPI)
            Stationary(self.atoms)
            ZeroRotation(self.atoms)
            self.trusted = (pos, self.atoms.get_momenta().copy())
        else:
            self.atoms.set_momenta(mom)
        from ase.constraints import FixCom

        self.atoms.set_constraint(FixCom())

    def budget_reason(self) -> str | None:
        """Why the run ends now (``None``: go on); under MPI decided on rank 0 for every rank."""
        if self.size > 1:
            return self.comm.bcast(self._budget_reason() if self.rank == 0 else None, root=0)
        return self._budget_reason()

    def _budget_reason(self) -> str | None:
        calls, _ = self.counts()
        if self.step >= self.config.steps:
            return f"step budget reached ({self.config.steps} steps)"
        if calls >= self.config.max_calls:
            return f"oracle-call budget reached ({self.config.max_calls} calls)"
        if self.config.wall_time is not None and self.wall() >= self.config.wall_time:
            return f"wall-time budget reached ({self.config.wall_time:g} s)"
        return None

    def md(self) -> str:
        cfg = self.config
        if cfg.segment:
            return self.md_segments()
        self.atoms.calc = self.learner.calculator()
        last_ckpt = self.step
        while True:
            reason = self.budget_reason()
            if reason:
                return reason
            self.dyn.set_temperature(temperature_K=cfg.temperature_at(self.step))
            broken = False
            try:
                self.dyn.step()
                u = self.learner.uncertainties(self.atoms)
                ratio = self.learner.ratio(u)
                broken = not np.all(np.isfinite(self.atoms.positions)) or \
                    _largest_gap(self.atoms.positions) > LOST_ATOM_DISTANCE
            except Exception as exc:  # non-finite model output: back to the trusted state
                self.say(f"step {self.step + 1}: the models failed ({exc}); back to the trusted state")
                u, ratio, broken = {}, float("inf"), True
            self.step += 1
            if broken:
                self.retries += 1
                self.restore_trusted(redraw=True)
                self.atoms.calc = self.learner.calculator()
                continue
            if ratio <= 1.0:
                self.trusted = (self.atoms.positions.copy(), self.atoms.get_momenta().copy())
                self.retries = 0
                if self.step - last_ckpt >= cfg.checkpoint_every:
                    self.checkpoint()
                    last_ckpt = self.step
                continue
            self.on_uncertain(u, ratio)
            last_ckpt = self.step

    def label_structure(self, positions: np.ndarray, u: dict[str, float], ratio: float,
                        predicted: dict[str, np.ndarray], step: int) -> None:
        """Label one structure (unless already in data.xyz): oracle, append + fsync, log."""
        frame = Atoms(numbers=self.atoms.numbers, positions=np.array(positions, dtype=float))
        key = structure_hash(frame)
        if self.store.has(key):
            return
        thr = self.learner.thresholds()
        self.say(f"labelling step {step} (uncertainty {ratio:.2f} x threshold)")
        labels = self.learner.label(frame)
        err = self.learner.errors(predicted, labels, len(frame))
        self.learner.record_errors(err)
        self.store.append_frame(frame, labels, step=step, origin="md", key=key)
        calls, _ = self.counts()
        self.say(f"label written {key} step {step} call {calls}")
        self.store.log(event="label", step=step, oracle_calls=calls, n_train=self.learner.n_train + 1,
                       uncertainty=ratio, wall_time_s=self.wall(), note=key,
                       **{f"u_{t}": v for t, v in u.items()},
                       **{f"err_{t}": v for t, v in err.items()},
                       **{f"thr_{t}": v for t, v in thr.items()})

    def on_uncertain(self, u: dict[str, float], ratio: float) -> None:
        """Label the current structure, retrain, go back to the trusted state, checkpoint."""
        self.label_structure(self.atoms.positions.copy(), u, ratio, self.learner.predictions(self.atoms), self.step)
        self.retrain("label")
        self.retries += 1
        self.restore_trusted(redraw=self.retries > self.config.max_retries)
        if self.retries > self.config.max_retries:
            self.retries = 0
        self.atoms.calc = self.learner.calculator()
        self.checkpoint()


    # --- segments: label the most uncertain structures of a stretch of MD ----------------------
    def set_state(self, positions: np.ndarray, momenta: np.ndarray | None) -> None:
        """Put the MD at ``positions`` with ``momenta`` (``None``: Maxwell–Boltzmann at the current
        temperature, no net translation or rotation) and make it the trusted state."""
        from ase.constraints import FixCom
        from ase.md.velocitydistribution import Stationary, thermalize_momenta, ZeroRotation

        self.atoms.set_constraint()
        self.atoms.set_positions(positions)
        if momenta is None:
            thermalize_momenta(self.atoms, temperature_K=self.config.temperature_at(self.step), rng=self.rng, comm=_NO_MPI)
            Stationary(self.atoms)
            ZeroRotation(self.atoms)
        else:
            self.atoms.set_momenta(momenta)
        self.atoms.set_constraint(FixCom())
        self.trusted = (self.atoms.positions.copy(), self.atoms.get_momenta().copy())

    def walker_start(self) -> np.ndarray:
        """Positions of a random frame of the initial labelled set (the first frames of data.xyz)."""
        if getattr(self, "_initial_positions", None) is None:
            _, n_init = self.counts()
            frames = self.data().frames[:max(n_init, 1)]
            self._initial_positions = [np.array(a.positions) for a in frames]
        return self._initial_positions[int(self.rng.integers(len(self._initial_positions)))]

    def run_segment(self) -> tuple[list[dict], bool]:
        """Up to ``segment`` MD steps; returns the candidates (every ``sample_every`` steps and the
        last step: ``positions``, ``u``, ``ratio``, ``predicted``, ``step``) and whether the
        segment stopped early (failed step, lost atom, or ratio over ``stop_factor``)."""
        cfg = self.config
        start, end = self.step, min(self.step + cfg.segment, cfg.steps)
        candidates: list[dict] = []
        while self.step < end:
            self.dyn.set_temperature(temperature_K=cfg.temperature_at(self.step))
            sample = (self.step + 1 - start) % cfg.sample_every == 0 or self.step + 1 == end
            try:
                self.dyn.step()
                broken = not np.all(np.isfinite(self.atoms.positions)) or \
                    _largest_gap(self.atoms.positions) > LOST_ATOM_DISTANCE
                if not broken and sample:
                    u = self.learner.uncertainties(self.atoms)
                    ratio = self.learner.ratio(u)
                    broken = not np.isfinite(ratio)
                    if not broken:
                        candidates.append({"positions": self.atoms.positions.copy(), "u": u, "ratio": ratio,
                                           "predicted": self.learner.predictions(self.atoms),
                                           "step": self.step + 1})
            except Exception as exc:  # non-finite model output
                self.say(f"step {self.step + 1}: the models failed ({exc}); segment stopped")
                broken = True
            self.step += 1
            if broken:
                return candidates, True
            if candidates and candidates[-1]["step"] == self.step and candidates[-1]["ratio"] > cfg.stop_factor:
                return candidates, True
        return candidates, False

    def rescored_pool(self, candidates: list[dict]) -> list[dict]:
        """Add a segment's candidates to the pool (the latest ``config.pool`` kept) and rescore
        all of them with the current models."""
        pool = getattr(self, "pool", [])
        pool = (pool + [dict(c, predicted=None) for c in candidates])[-self.config.pool:]
        frames = [Atoms(numbers=self.atoms.numbers, positions=c["positions"]) for c in pool]
        mine = split_indices(len(frames), self.rank, self.size)  # under MPI each rank scores a share
        try:
            parts, error = _each(self.comm, lambda: self.learner.uncertainties_of([frames[i] for i in mine]))
            if error is not None:
                raise error
            us = [u for part in parts for u in part]
            for c, u in zip(pool, us):
                c["u"], c["ratio"] = u, self.learner.ratio(u)
        except Exception as exc:  # noqa: BLE001 - a candidate the models cannot evaluate
            self.say(f"pool: rescoring failed ({exc}); the segment's own candidates are used")
            return [dict(c, predicted=None) for c in candidates]
        self.pool = [c for c in pool if np.isfinite(c["ratio"])]
        return self.pool

    def gather_candidates(self, candidates: list[dict]) -> list[dict]:
        """Every rank's candidates of a segment, in rank order, each with its ``rank``; the
        step counter becomes the largest over the ranks (a segment may stop early on some)."""
        mine = [dict(c, rank=self.rank) for c in candidates]
        got = self.comm.allgather((mine, self.step))
        self.step = max(step for _, step in got)
        return [c for part, _ in got for c in part]

    def label_batch(self, picked: list[dict]) -> None:
        """Label the picked candidates in parallel (MPI): rank r labels the ones ``r, r + P, …``
        of the batch; every rank gets all labels, which are recorded (rank 0 appends to data.xyz
        and logs) in batch order. An oracle error on any rank is raised on every rank after the
        labels that did come back are written."""
        todo: list[tuple[dict, Atoms, str]] = []
        for c in picked:
            frame = Atoms(numbers=self.atoms.numbers, positions=np.array(c["positions"], dtype=float))
            key = structure_hash(frame)
            if not self.store.has(key) and key not in {k for _, _, k in todo}:
                todo.append((c, frame, key))
        if not todo:
            return
        thr = self.learner.thresholds()
        for c, _, _ in todo:
            self.say(f"labelling step {c['step']} of rank {c['rank']} (uncertainty {c['ratio']:.2f} x threshold)")

        def share() -> dict[int, tuple[dict, dict]]:
            out = {}
            for i in range(self.rank, len(todo), self.size):
                c, frame, _ = todo[i]
                predicted = c["predicted"]
                if predicted is None:
                    probe = frame.copy()
                    probe.calc = self.learner.calculator()
                    predicted = self.learner.predictions(probe)
                try:
                    out[i] = (self.learner.label(frame), predicted)
                except Exception as exc:  # noqa: BLE001 - keep this rank's earlier labels
                    out["error"] = _portable(exc)
                    break
            return out

        parts, error = _each(self.comm, share)
        done: dict = {}
        for part in parts:  # None: that rank failed outside the oracle (error already set)
            error = error or (part or {}).pop("error", None)
            done.update(part or {})
        for i, (c, frame, key) in enumerate(todo):
            if i not in done:
                continue
            labels, predicted = done[i]
            err = self.learner.errors(predicted, labels, len(frame))
            self.learner.record_errors(err)
            self.store.append_frame(frame, labels, step=c["step"], origin="md", key=key, rank=c["rank"])
            calls, _ = self.counts()
            self.say(f"label written {key} step {c['step']} call {calls} rank {c['rank']}")
            self.store.log(event="label", step=c["step"], oracle_calls=calls, n_train=self.learner.n_train + 1,
                           uncertainty=c["ratio"], wall_time_s=self.wall(), note=f"{key} rank {c['rank']}",
                           **{f"u_{t}": v for t, v in c["u"].items()},
                           **{f"err_{t}": v for t, v in err.items()},
                           **{f"thr_{t}": v for t, v in thr.items()})
        if error is not None:
            raise _AllRanks(error)

    def md_segments(self) -> str:
        """Segment mode (``config.segment > 0``): see :class:`ActiveConfig`."""
        cfg = self.config
        self.atoms.calc = self.learner.calculator()
        while True:
            reason = self.budget_reason()
            if reason:
                return reason
            if cfg.walkers:
                self.set_state(self.walker_start(), None)
            start = self.trusted
            candidates, stopped = self.run_segment()
            if self.size > 1:
                candidates = self.gather_candidates(candidates)
            if cfg.pool:
                candidates = self.rescored_pool(candidates)
            calls, _ = self.counts()
            picked = select_candidates(candidates, min(cfg.batch, cfg.max_calls - calls), cfg.selection,
                                       learner=self.learner, numbers=self.atoms.numbers)
            if self.size > 1:
                self.label_batch(picked)
                if cfg.pool:
                    self.pool = [k for k in self.pool if not any(k is c for c in picked)]
                picked_here = []
            else:
                picked_here = picked
            for c in picked_here:
                if c["predicted"] is None:
                    probe = Atoms(numbers=self.atoms.numbers, positions=c["positions"])
                    probe.calc = self.learner.calculator()
                    c["predicted"] = self.learner.predictions(probe)
                self.label_structure(c["positions"], c["u"], c["ratio"], c["predicted"], c["step"])
                if cfg.pool:
                    self.pool = [k for k in self.pool if k is not c]
            if picked:
                self.retrain("label")
                self.atoms.calc = self.learner.calculator()
            if stopped:
                self.trusted = start
                self.restore_trusted(redraw=True)
                self.atoms.calc = self.learner.calculator()
            else:
                self.trusted = (self.atoms.positions.copy(), self.atoms.get_momenta().copy())
            self.checkpoint()


def _read_start(start: str | Path | Atoms) -> Atoms:
    if isinstance(start, Atoms):
        return Atoms(numbers=start.numbers, positions=start.positions, cell=start.cell, pbc=start.pbc)
    try:
        atoms = ase.io.read(start, index=0, parallel=False)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise DataError(f"{start}: cannot read the start structure: {exc}") from None
    return Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)


def run_active(start: str | Path | Atoms | None, run_dir: str | Path, config: ActiveConfig | None = None,
               oracle: str | Calculator | None = None, initial: str | Path | Dataset | None = None,
               resume: bool = False, overrides: dict[str, Any] | None = None,
               say: Callable[[str], None] | None = None,
               on_train: Callable[[Learner, int], None] | None = None, comm: Any = None) -> ActiveSummary:
    """Run, or resume, active learning in ``run_dir`` (see the module docstring).

    Parameters
    ----------
    start : starting structure (file or Atoms); ignored on resume (the run folder has it).
    run_dir : run folder; must not hold a run unless ``resume``.
    config : settings (default :class:`ActiveConfig()`); on resume the saved ones are used,
        updated with ``overrides`` (e.g. ``{"steps": 5000, "max_calls": 300}`` to extend budgets).
    oracle : name, ``module:function`` or ASE calculator (default ``"tblite"``; on resume the saved
        name; an object is not saved and must be given again).
    initial : labelled frames to start from (extended XYZ or :class:`Dataset`); ``None``: label
        ``config.n_initial`` frames of a short reference run.
    say : progress messages (default: print to stdout, flushed); rank 0 only under MPI.
    on_train : called as ``on_train(learner, oracle_calls)`` after every training (e.g. to follow
        the test error of the models as labels come in); on every rank under MPI.
    comm : MPI communicator (``mpi4py.MPI.COMM_WORLD`` or :func:`mdplugin.parallel.get_comm`);
        ``None``: one process. Every rank calls ``run_active`` with the same arguments (an oracle
        object: one per rank); segment mode (``config.segment > 0``) is required with > 1 rank.
        An error on one rank where the others would wait forever ends the job with
        ``comm.Abort(1)`` after a message on stderr.
    """
    comm = resolve_comm(comm)
    if comm.size == 1:
        return _run_active(start, run_dir, config, oracle, initial, resume, overrides, say, on_train, comm)
    try:
        return _run_active(start, run_dir, config, oracle, initial, resume, overrides, say, on_train, comm)
    except _AllRanks as exc:  # raised on every rank together: a normal error
        raise exc.error from None
    except BaseException as exc:  # one rank only: the others may be waiting in a collective
        sys.stderr.write(f"mdplugin active: rank {comm.rank} of {comm.size} failed "
                         f"({type(exc).__name__}: {exc}); aborting every rank\n")
        sys.stderr.flush()
        comm.Abort(1)
        raise


def _setup_folder(store: RunStore, start, config, oracle, initial, resume: bool, overrides, size: int):
    """Rank 0: create or reopen the run folder. Returns (config dict, oracle name or None,
    start structure, initial data spec)."""
    run_dir = store.dir
    if resume:
        saved = store.read_config()
        cfg_dict = dict(saved["config"])
        cfg_dict.update({k: v for k, v in (overrides or {}).items() if v is not None})
        config = ActiveConfig.from_dict(cfg_dict)
        if size > 1 and not config.segment:
            raise ConfigError(f"active: {size} MPI ranks need segment mode (the run in {run_dir} has segment = 0)")
        if oracle is None:
            oracle = saved.get("oracle")
            if oracle is None:
                raise ConfigError(f"{run_dir}: the run's oracle was a Python object: pass it again (oracle=...)")
        start_atoms = _read_start(run_dir / "start.xyz")
        saved["config"] = config.to_dict()
        store.write_config(saved)
        if initial is None:
            initial = saved.get("initial")
    else:
        if (run_dir / "config.json").exists():
            raise ConfigError(f"{run_dir}: already holds an active-learning run (use --resume to continue it)")
        if start is None:
            raise ConfigError("active: a start structure is needed")
        config = config or ActiveConfig()
        if size > 1 and not config.segment:
            raise ConfigError(f"active: {size} MPI ranks need segment mode (--segment N, ActiveConfig(segment=N))")
        oracle = "tblite" if oracle is None else oracle
        start_atoms = _read_start(start)
        run_dir.mkdir(parents=True, exist_ok=True)
        from ..atomicio import atomic_write
        import io

        buf = io.StringIO()
        ase.io.write(buf, start_atoms, format="extxyz", parallel=False)
        with atomic_write(run_dir / "start.xyz") as fh:
            fh.write(buf.getvalue())
        store.write_config({"config": config.to_dict(),
                            "oracle": oracle if isinstance(oracle, str) else None,
                            "initial": str(initial) if isinstance(initial, (str, Path)) else None})
    store.open()
    return config.to_dict(), (oracle if isinstance(oracle, str) else None), start_atoms, \
        (initial if not isinstance(initial, Dataset) else None)


def _run_active(start, run_dir, config, oracle, initial, resume, overrides, say, on_train, comm) -> ActiveSummary:
    say = say or (lambda msg: print(msg, flush=True))
    run_dir = Path(run_dir)
    store = RunStore(run_dir, writer=comm.rank == 0)
    cfg_dict, oracle_name, start_atoms, initial_spec = _on_root(
        comm, lambda: _setup_folder(store, start, config, oracle, initial, resume, overrides, comm.size))
    config = ActiveConfig.from_dict(cfg_dict)
    oracle = oracle if oracle is not None and not isinstance(oracle, str) else oracle_name
    oracle_calc = resolve_oracle(oracle)
    if comm.size > 1:
        store.set_keys(comm.bcast(store.keys(), root=0))
    run = _Run(store, config, oracle_calc, say, on_train, comm)
    errors = _on_root(comm, lambda: [{t: float(row[f"err_{t}"]) for t in config.targets if row.get(f"err_{t}")}
                                     for row in store.read_log() if row["event"] == "label"])
    for err in errors:  # errors of earlier labels (relative thresholds)
        run.learner.record_errors(err)
    state = _on_root(comm, store.read_state)

    if state is None:
        def first_labels():
            data = initial
            if isinstance(initial_spec, (str, Path)):
                data = read_dataset(initial_spec, properties=config.labels())
            run.initial_data(start_atoms, data if isinstance(data, Dataset) else None)
            return store.keys()

        keys = _on_root(comm, first_labels)
        if comm.size > 1:
            store.set_keys(keys)
        run.retrain("initial")
        run.setup_dynamics(start_atoms.positions, None, start_atoms.numbers)
        run.checkpoint()
    else:
        meta, arrays = state
        run.step = int(meta["step"])
        run.wall_before = float(meta["wall_time_s"])
        positions, momenta = run.resume_walker(meta, arrays, start_atoms)
        n_data = len(run.data())
        run.say(f"resuming at step {run.step} with {n_data} labelled frames"
                + (f" on {comm.size} MPI ranks" if comm.size > 1 else ""))
        store.log(event="resume", step=run.step, oracle_calls=run.counts()[0], n_train=n_data,
                  wall_time_s=run.wall_before)
        run.load_or_retrain(int(meta.get("n_train", -1)))
        run.setup_dynamics(positions, momenta, arrays["numbers"])
    reason = run.md()
    run.checkpoint(phase="done", reason=reason)
    calls, n_init = run.counts()
    store.log(event="end", step=run.step, oracle_calls=calls, n_train=run.learner.n_train,
              wall_time_s=run.wall(), note=reason)
    if store.writer:
        try:
            from .report import plot_run

            plot_run(store)
        except Exception as exc:  # the plot is a convenience; the run's files are complete
            run.say(f"active: no plot ({exc})")
    summary = ActiveSummary(run_dir=str(run_dir), reason=reason, steps=run.step, oracle_calls=calls,
                            initial_frames=n_init, n_train=run.learner.n_train, wall_time_s=run.wall(),
                            thresholds=run.learner.thresholds())
    run.say(summary.text())
    if comm.size > 1:
        comm.Barrier()  # rank 0's files are complete when run_active returns on any rank
    return summary
