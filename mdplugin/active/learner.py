"""Models, uncertainties and thresholds of an active-learning run (:class:`Learner`).

Uncertainty and error measures, one number per target and structure:

* energy: GPR std of the energy / n_atoms (eV/atom); error |ΔE| / n_atoms (the force RMSE, eV/Å,
  is logged beside it);
* dipole: norm of the per-component std (e·Å); error |Δμ|;
* polarizability: Frobenius norm of the per-component std (Å³); error ‖Δα‖_F.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from ..engines.ase import MLCalculator
from ..structures.data import Dataset
from ..core.errors import ConfigError, DataError
from ..models import build
from ..models.base import Model
from ..oracles.label import label_frames
from ..models.training import fit_on_dataset
from .config import ActiveConfig

#: relative thresholds are cross-validated again when the training set has grown by this fraction
#: (a 2-fold cross-validation costs about one more fit; once per labelled structure it would double
#: the cost of retraining)
RECALIBRATE_GROWTH = 0.25


def measure(target: str, value: Any, n_atoms: int) -> float:
    """The scalar measure of a target's std (or error) for one structure (see the module docstring)."""
    v = np.asarray(value, dtype=float)
    if target == "energy":
        return float(np.abs(v).sum() / n_atoms)
    return float(np.sqrt(np.sum(v**2)))


class Learner:
    """The current models of a run, their uncertainties and thresholds, and the oracle.

    Parameters
    ----------
    config : the run's :class:`ActiveConfig`.
    oracle : ASE calculator computing the properties of ``config.labels()``.
    """

    def __init__(self, config: ActiveConfig, oracle: Calculator) -> None:
        self.config = config
        self.oracle = oracle
        self.models: dict[str, Model] = {}
        #: target -> {"std", "error"} on held-out frames (:meth:`cross_validate`), for relative thresholds
        self.validation: dict[str, dict[str, float]] = {}
        self.calibrated_on = 0  # training frames of the last cross-validation
        self.calibration_note = ""
        self.label_errors: dict[str, list[float]] = {}
        self.n_train = 0
        self.train_frames: list[Atoms] = []

    # --- models ----------------------------------------------------------------------------
    def _new_model(self, target: str) -> Model:
        name = self.config.energy_model if target == "energy" else self.config.model
        return build(name, target=target, **dict(self.config.hypers.get(target, {})))

    def train(self, data: Dataset) -> float:
        """Fit every target's model on ``data``; returns the wall time (s)."""
        if len(data) == 0:
            raise DataError("active: no labelled frames to train on (give initial data or n_initial > 0)")
        t0 = time.perf_counter()
        models = {t: fit_on_dataset(self._new_model(t), data) for t in self.config.targets}
        self.models = models
        self.n_train = len(data)
        self.train_frames = list(data.frames)
        self._calibrate(data)
        return time.perf_counter() - t0

    def set_models(self, models: dict[str, Model], data: Dataset) -> None:
        """Use already fitted models (loaded from the run folder) trained on ``data``."""
        self.models = models
        self.n_train = len(data)
        self.train_frames = list(data.frames)
        self._calibrate(data)

    def _calibrate(self, data: Dataset) -> None:
        """Cross-validate the models of the targets without an absolute threshold when the training
        set is new or has grown by :data:`RECALIBRATE_GROWTH` since the last time (see
        :meth:`cross_validate`); their thresholds follow (:meth:`thresholds`)."""
        relative = [t for t in self.config.targets if t not in self.config.thresholds]
        if not relative or (self.calibrated_on and len(data) < (1 + RECALIBRATE_GROWTH) * self.calibrated_on):
            return
        self.validation = {t: self.cross_validate(t, data) for t in relative}
        self.calibrated_on = len(data)
        self.calibration_note = "thresholds from held-out frames ({}): {}".format(
            "2-fold cross-validation" if len(data) >= 4 else "leave one out" if len(data) > 1 else "in-sample",
            ", ".join(f"{t} {v['std']:.3g} (held-out error {v['error']:.3g})" for t, v in self.validation.items()))

    def cross_validate(self, target: str, data: Dataset) -> dict[str, float]:
        """The target's uncertainty and error on frames its model has not seen, in its measure's units.

        Models are fitted on half of ``data`` and predict the other half, both ways (2-fold
        cross-validation; leave-one-out with 2 or 3 frames, in-sample with one). Returns ``error``,
        the RMS of their true errors on the held-out frames, ``held_out_std``, the RMS of the
        uncertainty measure they gave there, and ``std`` = ``held_out_std`` × √(n_fit / n): the
        same scaled to models of all ``n`` frames as a GP's posterior variance at unseen structures
        like its data falls, about as 1/n (measured on 1,2-dichloroethane with 10–160 frames, the
        held-out std fell as n^-0.6 for the dipole and n^-1 for the energy per atom: the threshold
        is then at or above the full models' typical uncertainty on such structures, so typical
        structures are not labelled — with n^-1, labels came at nearly every step of a water
        trimer). ``std`` is the relative
        threshold's unit: a structure whose uncertainty is above it is one the models are less
        sure of than of unseen structures like their data. (The rule before compared the
        uncertainty with the held-out *error*, two different scales: on methanol the first energy
        model's held-out error was 1.9x its held-out uncertainty, a threshold the dynamics never
        reached, and the run labelled nothing.)
        """
        n = len(data)
        idx = np.arange(n)
        if n >= 4:
            folds = [(idx[0::2], idx[1::2]), (idx[1::2], idx[0::2])]
        elif n > 1:
            folds = [(np.delete(idx, i), idx[i:i + 1]) for i in range(n)]
        else:
            folds = [(idx, idx)]
        stds, errors = [], []
        n_fit = np.mean([len(fit_idx) for fit_idx, _ in folds])
        for fit_idx, test_idx in folds:
            model = self.models[target] if len(fit_idx) == n else fit_on_dataset(self._new_model(target),
                                                                                 data.subset(fit_idx))
            test = data.subset(test_idx)
            y_pred, y_std = model.predict(test.frames, return_std=True)
            y_true = test.get(target)
            for p, s, t, a in zip(y_pred, y_std, y_true, test.frames):
                stds.append(measure(target, s, len(a)))
                errors.append(measure(target, p - t, len(a)))
        held_out = float(np.sqrt(np.mean(np.square(stds))))
        return {"std": held_out * float(np.sqrt(n_fit / n)), "held_out_std": held_out,
                "error": float(np.sqrt(np.mean(np.square(errors))))}

    def record_errors(self, errors: dict[str, float]) -> None:
        """Remember the true errors of a structure labelled while the models were unsure (reported
        in log.csv and active.png)."""
        for t, v in errors.items():
            if t in self.config.targets and np.isfinite(v):
                self.label_errors.setdefault(t, []).append(float(v))

    def thresholds(self) -> dict[str, float]:
        """Threshold per target, in its measure's units: the absolute one, or ``threshold_factor``
        × the cross-validated uncertainty (:meth:`cross_validate`)."""
        out = {}
        for t in self.config.targets:
            if t in self.config.thresholds:
                out[t] = float(self.config.thresholds[t])
            else:
                scale = self.validation.get(t, {}).get("std", 0.0)
                out[t] = float(self.config.threshold_factor * max(scale, 1e-12))
        return out

    def calculator(self) -> MLCalculator:
        """An ASE calculator with the current models (the oracle drives the dynamics when no
        energy model is learned)."""
        if not self.models:
            raise ConfigError("active: the learner has no trained models yet")
        energy = self.models.get("energy", self.oracle)
        return MLCalculator(energy=energy, dipole=self.models.get("dipole"),
                            polarizability=self.models.get("polarizability"))

    # --- uncertainty and labels ------------------------------------------------------------
    def uncertainties(self, atoms: Atoms) -> dict[str, float]:
        """Uncertainty measure per target at ``atoms`` (its calculator must be :meth:`calculator`)."""
        calc = atoms.calc
        n = len(atoms)
        return {t: measure(t, calc.get_property(f"{t}_std", atoms), n) for t in self.config.targets}

    def uncertainties_of(self, frames: list[Atoms]) -> list[dict[str, float]]:
        """Uncertainty measure per target of every structure in ``frames`` (one batched
        prediction per model; the same numbers as :meth:`uncertainties`)."""
        out: list[dict[str, float]] = [{} for _ in frames]
        if not frames:
            return out
        for t in self.config.targets:
            _, std = self.models[t].predict(frames, return_std=True)
            for d, s, a in zip(out, std, frames):
                d[t] = measure(t, s, len(a))
        return out

    def predictions(self, atoms: Atoms) -> dict[str, np.ndarray]:
        """The models' values at ``atoms`` (energy eV, forces eV/Å, dipole e·Å, polarizability Å³)."""
        calc = atoms.calc
        out = {}
        for t in self.config.targets:
            if t == "energy":
                out["energy"] = np.asarray(calc.get_property("energy", atoms))
                out["forces"] = np.asarray(calc.get_property("forces", atoms))
            else:
                out[t] = np.asarray(calc.get_property(t, atoms))
        return out

    def posterior_groups(self, frames: list[Atoms], models: dict[str, Model] | None = None) -> list:
        """The models' GP posterior over ``frames`` given the training frames, as
        :class:`~mdplugin.active.selection.PosteriorGroup` objects for integrated-variance-
        reduction selection: the energy model's atomic energies (a label observes every atom of
        its structure) and each λ GPR of a λ-SOAP dipole/polarizability model (a label observes
        the structure's 2λ+1 components). Every target has weight 1 (split evenly between the
        λ of the polarizability). Targets whose model has no such posterior (RPR) are left out
        (an empty list when none has one). ``models`` ({target: fitted model}, default the
        learner's own) scores with other kernels, e.g. an earlier model's, still conditioned on
        all the training frames.
        """
        from .selection import conditioned_group

        if not self.models or not self.train_frames:
            raise ConfigError("active: the learner has no trained models yet")
        models = self.models if models is None else models
        train, n_train, n_pool = list(self.train_frames), len(self.train_frames), len(frames)
        both = train + list(frames)
        groups = []
        for t in self.config.targets:
            model = models[t]
            if t == "energy" and hasattr(model, "environment_covariance"):
                k, frame, noise = model.environment_covariance(both)
                order = np.r_[np.flatnonzero(frame < n_train), np.flatnonzero(frame >= n_train)]
                pool_frame = frame[order][frame[order] >= n_train] - n_train
                rows = [np.flatnonzero(pool_frame == i) for i in range(n_pool)]
                groups.append(conditioned_group(k[np.ix_(order, order)], int(np.sum(frame < n_train)), noise,
                                                rows, 1.0, "energy"))
            elif hasattr(model, "prior_covariance"):
                parts = model.prior_covariance(both)
                for lam, (k, noise) in parts.items():
                    d = 2 * lam + 1
                    rows = [np.arange(i * d, (i + 1) * d) for i in range(n_pool)]
                    groups.append(conditioned_group(k, n_train * d, noise, rows, 1.0 / len(parts), f"{t} l={lam}"))
        return groups

    def ratio(self, u: dict[str, float]) -> float:
        """max over targets of uncertainty / threshold (> 1: label the structure)."""
        thr = self.thresholds()
        return max(u[t] / thr[t] for t in u)

    def label(self, atoms: Atoms) -> dict[str, np.ndarray]:
        """Labels of one structure from the oracle (one oracle call)."""
        data = label_frames([atoms], self.oracle, self.config.labels())
        return {p: (np.asarray(data.get(p)[0])) for p in self.config.labels()}

    def errors(self, predicted: dict[str, np.ndarray], labels: dict[str, np.ndarray], n_atoms: int) -> dict[str, float]:
        """True error measure per target (plus ``forces`` RMSE, eV/Å) of ``predicted``."""
        out = {}
        for t in self.config.targets:
            out[t] = measure(t, predicted[t] - labels[t], n_atoms)
        if "energy" in self.config.targets:
            out["forces"] = float(np.sqrt(np.mean((predicted["forces"] - labels["forces"]) ** 2)))
        return out
