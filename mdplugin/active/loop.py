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

This module is the orchestration (:func:`run_active` and the run state); segment mode is in
:mod:`mdplugin.active.segments`, the collective steps of several ranks in
:mod:`mdplugin.active.ranks`, opening the run folder and the oracle in :mod:`mdplugin.active.folder`.

Kill-safety: a label is appended and fsync'ed before it is reported or used; models are saved
and the trusted state checkpointed atomically after each retraining and every
``checkpoint_every`` steps. On resume the models are retrained on every label in ``data.xyz``
(unless the saved ones already saw them all) and the dynamics restart from the checkpoint; a
structure whose key is already in ``data.xyz`` is never sent to the oracle again.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from ase import Atoms, units
from ase.parallel import DummyMPI
from ase.calculators.calculator import Calculator

from ..structures.data import Dataset, read_dataset
from ..core.errors import DataError
from ..core.threads import limited_threads
from ..engines.md import largest_bond_gap
from ..models import load_model
from ..learn.parallel import resolve_comm
from . import ranks
from .config import ActiveConfig
from .folder import discard_failed_start, open_folder, resolve_oracle
from .learner import Learner
from .lock import RunLock
from .aimed import SpectrumMode
from .segments import SegmentMode
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
    #: why a run that labelled nothing did so, and what to change (empty otherwise)
    warning: str = ""

    def text(self) -> str:
        thr = ", ".join(f"{k} {v:.3g}" for k, v in self.thresholds.items())
        return (f"active: {self.reason}; {self.steps} MD steps, {self.oracle_calls} oracle calls "
                f"(+{self.initial_frames} initial frames), {self.n_train} training frames, "
                f"{self.wall_time_s:.1f} s; thresholds {thr}; run folder {self.run_dir}")


def no_calls_warning(steps: int, max_ratio: float, config: ActiveConfig) -> str:
    """What a run that ended with 0 oracle calls says: the largest uncertainty it met, as a
    fraction of its threshold, and how to make it label."""
    seen = (f"the largest uncertainty met was {max_ratio:.2f}x its threshold" if max_ratio > 0
            else "no uncertainty was measured")
    absolute = [t for t in config.targets if t in config.thresholds]
    fix = (f"lower --threshold-{absolute[0]}" if absolute
           else f"lower --threshold-factor (now {config.threshold_factor:g}) or give absolute thresholds")
    return (f"0 oracle calls in {steps} MD steps: the models were never unsure enough to label a structure "
            f"({seen}), so they were not improved; {fix}, run longer or hotter (--steps, --temperature), "
            f"or see docs/active.md")


def _draw_momenta(atoms: Atoms, temperature: float, rng: np.random.Generator) -> None:
    """Maxwell–Boltzmann momenta at ``temperature`` (K), no net translation, and no net rotation
    unless periodic (a cell's contents have no rotation to remove)."""
    from ase.md.velocitydistribution import Stationary, thermalize_momenta, ZeroRotation

    thermalize_momenta(atoms, temperature_K=temperature, rng=rng, comm=_NO_MPI)
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)


def _langevin(atoms: Atoms, config: ActiveConfig, temperature: float, rng: np.random.Generator):
    """Langevin dynamics of ``atoms`` with the time step and friction of ``config``."""
    from ase.md.langevin import Langevin

    return Langevin(atoms, config.dt * units.fs, temperature_K=temperature, friction=config.friction / units.fs,
                    fixcm=False, rng=rng, comm=_NO_MPI)


class _Run(SegmentMode, SpectrumMode):
    """State of one invocation of :func:`run_active` (segment mode: :class:`SegmentMode`; aimed at a
    spectrum: :class:`SpectrumMode`)."""

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
        self.rng = np.random.default_rng(ranks.walker_seed(config.seed, self.rank))
        self.atoms: Atoms | None = None
        self.trusted: tuple[np.ndarray, np.ndarray] | None = None
        self.max_ratio = 0.0
        #: the run's cell (3, 3) Å and periodicity, those of its start structure: every structure of
        #: the run (dynamics, candidates, labels) is in it
        self.numbers, self.cell, self.pbc = np.zeros(0, dtype=int), np.zeros((3, 3)), np.zeros(3, dtype=bool)

    def frame(self, positions: np.ndarray) -> Atoms:
        """A structure of the run at ``positions`` (n_atoms, 3) Å: the run's atoms, cell and periodicity."""
        return Atoms(numbers=self.numbers, positions=np.array(positions, dtype=float), cell=self.cell, pbc=self.pbc)

    # --- bookkeeping -----------------------------------------------------------------------
    def wall(self) -> float:
        return self.wall_before + time.perf_counter() - self.t_start

    def counts(self) -> tuple[int, int]:
        """(oracle calls during MD, initial frames) from data.xyz (and refused.xyz: refused labels
        count as calls)."""
        during = ("md", "refused")
        return (sum(self.store.origins.get(k, 0) for k in during),
                sum(v for k, v in self.store.origins.items() if k not in during))

    def data(self) -> Dataset:
        """The labelled frames (collective under MPI: rank 0 reads data.xyz and broadcasts)."""
        return ranks.on_root(self.comm, lambda: self.store.read_data(self.config.labels()))

    def checkpoint(self, phase: str = "md", reason: str = "") -> None:
        """Write state.npz (collective under MPI: rank 0 writes every rank's walker; ranks > 0 as
        ``positions_rank{r}``, ``momenta_rank{r}`` and ``rank_rng``/``rank_retries`` in the metadata)."""
        pos, mom = self.trusted
        meta = {"phase": phase, "step": self.step, "wall_time_s": self.wall(), "retries": self.retries,
                "rng": self.rng.bit_generator.state, "n_train": self.learner.n_train, "reason": reason}
        arrays = {"numbers": self.atoms.numbers, "positions": pos, "momenta": mom}
        more_meta, more_arrays = ranks.gather_walkers(self.comm, pos, mom, self.rng.bit_generator.state, self.retries)
        meta.update(more_meta)
        arrays.update(more_arrays)
        self.store.write_state(meta, arrays)

    def resume_walker(self, meta: dict, arrays: dict, start: Atoms) -> tuple[np.ndarray, np.ndarray | None]:
        """This rank's checkpointed walker: positions and momenta, with its random-generator state
        and retry count restored. A rank the checkpoint does not know (the run had fewer ranks)
        starts a new walker at the start structure (momenta ``None``: to be drawn)."""
        walker = ranks.rank_walker(meta, arrays, self.rank)
        if walker is None:
            return start.positions, None
        positions, momenta, self.rng.bit_generator.state, self.retries = walker
        return positions, momenta

    def save_models(self) -> None:
        if not self.store.writer:
            return
        for t, m in self.learner.models.items():
            m.save(self.store.model_path(t))

    def retrain(self, note: str) -> None:
        data = self.data()
        self.say(f"retraining on {len(data)} frames")
        before = self.learner.calibration_note
        seconds = self.fit_models(data)
        if self.learner.calibration_note != before:
            self.say(self.learner.calibration_note)
        self.save_models()
        thr = self.learner.thresholds()
        calls, _ = self.counts()
        self.store.log(event="train", step=self.step, oracle_calls=calls, n_train=len(data),
                       train_time_s=seconds, wall_time_s=self.wall(), note=note,
                       **{f"thr_{t}": v for t, v in thr.items()})
        if self.on_train is not None:
            self.on_train(self.learner, calls)

    def fit_models(self, data: Dataset) -> float:
        """Fit the models on ``data`` (:meth:`Learner.train`; under MPI the targets shared among
        the ranks, :func:`mdplugin.active.ranks.fit_shared`); returns the wall time (s)."""
        if self.size == 1:
            return self.learner.train(data)
        t0 = time.perf_counter()
        models, self.fit_seconds = ranks.fit_shared(self.comm, self.config.targets, data, self.learner._new_model,
                                                    getattr(self, "fit_seconds", {}))
        self.learner.set_models(models, data)
        return time.perf_counter() - t0

    def load_or_retrain(self, n_trained: int) -> None:
        """Load the saved models if they were trained on every frame of data.xyz, else retrain."""
        data = self.data()
        paths = {t: self.store.model_path(t) for t in self.config.targets}
        saved = ranks.on_root(self.comm, lambda: n_trained == len(data) and all(p.exists() for p in paths.values()))
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

        rng = np.random.default_rng(self.config.seed + 7919)
        atoms = start.copy()
        atoms.calc = self.learner.oracle
        t0 = self.config.temperature_at(0)
        _draw_momenta(atoms, t0, rng)
        atoms.set_constraint(FixCom())
        dyn = _langevin(atoms, self.config, t0, rng)
        self.say(f"initial data: {n} frames from a reference run with the oracle")
        for i in range(n):
            dyn.run(self.config.initial_stride)
            frame = self.frame(atoms.positions.copy())
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

        atoms = Atoms(numbers=numbers, positions=positions, cell=self.cell, pbc=self.pbc)
        if momenta is None:
            _draw_momenta(atoms, self.config.temperature_at(self.step), self.rng)
        else:
            atoms.set_momenta(momenta)
        atoms.set_constraint(FixCom())
        self.atoms = atoms
        self.trusted = (atoms.positions.copy(), atoms.get_momenta().copy())
        self.dyn = _langevin(atoms, self.config, self.config.temperature_at(self.step), self.rng)

    def set_state(self, positions: np.ndarray, momenta: np.ndarray | None, temperature: float | None = None) -> None:
        """Put the MD at ``positions`` with ``momenta`` (``None``: Maxwell–Boltzmann at ``temperature``
        K, default the current one, no net translation or rotation) and make it the trusted state."""
        from ase.constraints import FixCom

        self.atoms.set_constraint()
        self.atoms.set_positions(positions)
        if momenta is None:
            _draw_momenta(self.atoms, self.config.temperature_at(self.step) if temperature is None else temperature,
                          self.rng)
        else:
            self.atoms.set_momenta(momenta)
        self.atoms.set_constraint(FixCom())
        self.trusted = (self.atoms.positions.copy(), self.atoms.get_momenta().copy())

    def restore_trusted(self, redraw: bool = False) -> None:
        """Back to the trusted state (with new momenta if ``redraw``)."""
        pos, mom = self.trusted
        self.set_state(pos, None if redraw else mom)

    def broken(self) -> bool:
        """Whether the MD state is lost: non-finite positions or an atom far from every other."""
        return not np.all(np.isfinite(self.atoms.positions)) or (
            len(self.atoms) > 1 and largest_bond_gap(self.atoms) > LOST_ATOM_DISTANCE)

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

    def note_ratio(self, ratio: float) -> None:
        """Remember the largest uncertainty/threshold ratio the dynamics met (reported when a run
        labels nothing)."""
        if np.isfinite(ratio):
            self.max_ratio = max(self.max_ratio, float(ratio))

    def md(self) -> str:
        """The MD until a budget is reached (step by step, or :meth:`md_segments`); returns the reason."""
        cfg = self.config
        if cfg.spectrum_window is not None:
            return self.md_spectrum()
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
                self.note_ratio(ratio)
                broken = self.broken()
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

    # --- labels ----------------------------------------------------------------------------
    def log_label(self, step: int, calls: int, ratio: float, note: str, u: dict[str, float],
                  err: dict[str, float], thr: dict[str, float]) -> None:
        """The log.csv row of a label (uncertainties, errors of the models, thresholds)."""
        self.store.log(event="label", step=step, oracle_calls=calls, n_train=self.learner.n_train + 1,
                       uncertainty=ratio, wall_time_s=self.wall(), note=note,
                       **{f"u_{t}": v for t, v in u.items()},
                       **{f"err_{t}": v for t, v in err.items()},
                       **{f"thr_{t}": v for t, v in thr.items()})

    def label_structure(self, positions: np.ndarray, u: dict[str, float], ratio: float,
                        predicted: dict[str, np.ndarray], step: int) -> None:
        """Label one structure (unless already in data.xyz): oracle, append + fsync, log."""
        frame = self.frame(positions)
        key = structure_hash(frame)
        if self.store.has(key):
            return
        thr = self.learner.thresholds()
        self.say(f"labelling step {step} (uncertainty {ratio:.2f} x threshold)")
        labels = self.learner.label(frame)
        if self.refuse_label(frame, labels, step, key):
            return
        err = self.learner.errors(predicted, labels, len(frame))
        self.learner.record_errors(err)
        self.store.append_frame(frame, labels, step=step, origin="md", key=key)
        calls, _ = self.counts()
        self.say(f"label written {key} step {step} call {calls}")
        self.log_label(step, calls, ratio, key, u, err, thr)

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
    comm : MPI communicator (``mpi4py.MPI.COMM_WORLD`` or :func:`mdplugin.learn.parallel.get_comm`);
        ``None``: one process. Every rank calls ``run_active`` with the same arguments (an oracle
        object: one per rank); segment mode (``config.segment > 0``) is required with > 1 rank.
        An error on one rank where the others would wait forever ends the job with
        ``comm.Abort(1)`` after a message on stderr.
    """
    comm = resolve_comm(comm)
    with limited_threads("step", comm):  # the dynamics and labels on 1 thread; fits take their own (core.threads)
        return ranks.abort_on_failure(
            comm, lambda: _run_active(start, run_dir, config, oracle, initial, resume, overrides, say, on_train, comm))


def _run_active(start, run_dir, config, oracle, initial, resume, overrides, say, on_train, comm) -> ActiveSummary:
    run_dir = Path(run_dir)
    store = RunStore(run_dir, writer=comm.rank == 0)
    lock = RunLock(run_dir)  # rank 0 holds it from opening the folder to the end (released on any exit)
    try:
        if resume or not store.writer:
            return _run_in(store, start, config, oracle, initial, resume, overrides, say, on_train, comm, lock)
        # a new run that fails before its first label leaves no run folder behind (a plain re-run works)
        before = set(os.listdir(run_dir)) if run_dir.is_dir() else None
        try:
            return _run_in(store, start, config, oracle, initial, resume, overrides, say, on_train, comm, lock)
        except BaseException:
            if lock.held:  # never when another process holds the folder
                discard_failed_start(run_dir, before)
            raise
    finally:
        lock.release()


def _run_in(store, start, config, oracle, initial, resume, overrides, say, on_train, comm, lock) -> ActiveSummary:
    say = say or (lambda msg: print(msg, flush=True))
    run_dir = store.dir
    read: dict[str, Dataset | None] = {}  # the initial frames open_folder read (rank 0, not broadcast)

    def open_() -> tuple:
        if resume:
            store.read_config()  # not a run folder: said before the lock creates anything
        lock.acquire()
        *opened, read["initial"] = open_folder(store, start, config, oracle, initial, resume, overrides, comm.size)
        return tuple(opened)

    cfg_dict, oracle_name, start_atoms, initial_spec = ranks.on_root(comm, open_)
    config = ActiveConfig.from_dict(cfg_dict)
    oracle = oracle if oracle is not None and not isinstance(oracle, str) else oracle_name
    oracle_calc = resolve_oracle(oracle)
    if comm.size > 1:
        store.set_keys(comm.bcast(store.keys(), root=0))
    run = _Run(store, config, oracle_calc, say, on_train, comm)
    run.numbers, run.cell, run.pbc = start_atoms.numbers.copy(), np.array(start_atoms.cell), start_atoms.pbc.copy()
    errors = ranks.on_root(comm, lambda: [{t: float(row[f"err_{t}"]) for t in config.targets if row.get(f"err_{t}")}
                                          for row in store.read_log() if row["event"] == "label"])
    for err in errors:  # errors of earlier labels (relative thresholds)
        run.learner.record_errors(err)
    state = ranks.on_root(comm, store.read_state)

    if state is None:
        def first_labels():
            data = read.get("initial")  # a new run's frames, read and checked by open_folder
            if data is None:  # a resumed run: its file, or the Dataset given
                data = read_dataset(initial_spec, properties=config.labels()) \
                    if isinstance(initial_spec, (str, Path)) else initial
            run.initial_data(start_atoms, data if isinstance(data, Dataset) else None)
            return store.keys()

        keys = ranks.on_root(comm, first_labels)
        if comm.size > 1:
            store.set_keys(keys)
        run.retrain("initial")
        if config.spectrum_window is not None:
            run.check_spectrum_model()
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
    if calls == 0 and run.step > 0 and config.max_calls > 0 and not reason.startswith("spectrum band reached"):
        summary.warning = no_calls_warning(run.step, run.max_ratio, config)
        if comm.rank == 0:  # loud: on stderr, whatever ``say`` does
            print(f"mdplugin active: warning: {summary.warning}", file=sys.stderr, flush=True)
    run.say(summary.text())
    if comm.size > 1:
        comm.Barrier()  # rank 0's files are complete when run_active returns on any rank
    return summary
