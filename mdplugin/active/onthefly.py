"""On-the-fly active learning inside any driver of ASE calculators (the i-PI client, ASE MD).

:class:`ActiveCalculator` holds a learner on an existing run folder (made by ``mdplugin active
START -o RUN_DIR --steps 0``, which labels the initial frames and trains the models). For every
structure it is asked about it evaluates the models with their uncertainties; when one is above
its threshold and the oracle-call budget allows, it labels the structure with the oracle,
appends it to ``RUN_DIR/data.xyz`` (fsync first), logs it, retrains, saves the models, and
returns the oracle's values for that structure. Otherwise it returns the models' values.

``mdplugin ipi --active RUN_DIR ...`` serves it to i-PI.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from ..models import load_model
from .config import ActiveConfig
from .learner import Learner
from .loop import resolve_oracle
from .lock import RunLock
from .store import RunStore, structure_hash


class ActiveCalculator(Calculator):
    """ASE calculator that learns on the fly (see the module docstring).

    Parameters
    ----------
    run_dir : run folder of ``mdplugin active`` (config.json, data.xyz, models).
    oracle : name, ``module:function`` or ASE calculator; default: the run's saved oracle.
    overrides : settings replacing the saved ones (e.g. ``max_calls``, ``thresholds``).
    say : progress messages (default: print, flushed).
    """

    implemented_properties = ["energy", "free_energy", "forces", "energy_std", "dipole", "dipole_std",
                              "polarizability", "polarizability_std"]

    def __init__(self, run_dir: str | Path, oracle: Any = None, overrides: dict | None = None,
                 say=None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.store = RunStore(run_dir)
        self.store.read_config()  # not a run folder: said before the lock creates anything
        #: held while this calculator lives (released by close() or when the process ends)
        self.lock = RunLock(run_dir).acquire()
        try:
            self._open(oracle, overrides, say)
        except BaseException:
            self.lock.release()
            raise

    def _open(self, oracle: Any, overrides: dict | None, say) -> None:
        saved = self.store.read_config()
        cfg = dict(saved["config"])
        cfg.update({k: v for k, v in (overrides or {}).items() if v is not None})
        self.config = ActiveConfig.from_dict(cfg)
        self.store.open()
        self.learner = Learner(self.config, resolve_oracle(oracle or saved.get("oracle") or "tblite"))
        for row in self.store.read_log():
            if row["event"] == "label":
                self.learner.record_errors({t: float(row[f"err_{t}"]) for t in self.config.targets
                                            if row.get(f"err_{t}")})
        self.say = say or (lambda m: print(m, flush=True))
        data = self.store.read_data(self.config.labels())
        paths = {t: self.store.model_path(t) for t in self.config.targets}
        if all(p.exists() for p in paths.values()):
            self.learner.set_models({t: load_model(p) for t, p in paths.items()}, data)
            if len(data) != self.learner.n_train or self._stale(data):
                self._retrain()
        else:
            self._retrain()
        provided = ["energy", "free_energy", "forces"]
        for t in self.config.targets:
            provided += [t, f"{t}_std"] if t != "energy" else ["energy_std"]
        self.implemented_properties = provided
        self.t0 = time.perf_counter()
        self.ml = self.learner.calculator()

    def close(self) -> None:
        """Release the run folder's lock (a later ``mdplugin active --resume`` may use it)."""
        self.lock.release()

    def _stale(self, data) -> bool:
        state = self.store.read_state()
        return state is None or int(state[0].get("n_train", -1)) != len(data)

    def _retrain(self) -> None:
        data = self.store.read_data(self.config.labels())
        seconds = self.learner.train(data)
        for t, m in self.learner.models.items():
            m.save(self.store.model_path(t))
        self.store.log(event="train", oracle_calls=self.store.origins.get("md", 0), n_train=len(data),
                       train_time_s=seconds, note="on the fly",
                       **{f"thr_{t}": v for t, v in self.learner.thresholds().items()})
        self.ml = self.learner.calculator()

    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] | None = None,
                  system_changes: Sequence[str] = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        frame = Atoms(numbers=self.atoms.numbers, positions=self.atoms.positions, cell=self.atoms.cell,
                      pbc=self.atoms.pbc)
        frame.calc = self.ml
        u = self.learner.uncertainties(frame)
        ratio = self.learner.ratio(u)
        calls = self.store.origins.get("md", 0)
        results = self._ml_results(frame)
        if ratio > 1.0 and calls < self.config.max_calls:
            key = structure_hash(frame)
            if not self.store.has(key):
                predicted = self.learner.predictions(frame)
                self.say(f"labelling (uncertainty {ratio:.2f} x threshold)")
                labels = self.learner.label(frame)
                err = self.learner.errors(predicted, labels, len(frame))
                self.learner.record_errors(err)
                self.store.append_frame(frame, labels, step=calls + 1, origin="md", key=key)
                self.say(f"label written {key} call {calls + 1}")
                self.store.log(event="label", oracle_calls=calls + 1, n_train=self.learner.n_train + 1,
                               uncertainty=ratio, wall_time_s=time.perf_counter() - self.t0, note=key,
                               **{f"u_{t}": v for t, v in u.items()}, **{f"err_{t}": v for t, v in err.items()},
                               **{f"thr_{t}": v for t, v in self.learner.thresholds().items()})
                self._retrain()
                results.update({k: np.asarray(v, dtype=float) for k, v in labels.items()})
                if "energy" in labels:
                    results["energy"] = float(labels["energy"])
                    results["free_energy"] = results["energy"]
        self.results = results

    def _ml_results(self, frame: Atoms) -> dict:
        out = {}
        for name in self.implemented_properties:
            out[name] = frame.calc.get_property(name, frame)
        return out
