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
        self.training_error: dict[str, float] = {}
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
        self.training_error = {t: self._training_error(t, data) for t in self.config.targets
                               if t not in self.config.thresholds}
        return time.perf_counter() - t0

    def set_models(self, models: dict[str, Model], data: Dataset) -> None:
        """Use already fitted models (loaded from the run folder) trained on ``data``."""
        self.models = models
        self.n_train = len(data)
        self.train_frames = list(data.frames)
        self.training_error = {t: self._training_error(t, data) for t in self.config.targets
                               if t not in self.config.thresholds}

    def _training_error(self, target: str, data: Dataset) -> float:
        """The target's error scale for relative thresholds (its measure's units).

        The RMS of the out-of-sample errors of the last (up to 20) labelled structures, measured
        before each was added (see :meth:`record_errors`); until there are 3 of them, a 2-fold
        cross-validation on ``data`` (in-sample errors with fewer than 4 frames). In-sample errors
        would be near zero for interpolating models (λ-SOAP, RPR) and label every step.
        """
        errs = self.label_errors.get(target, [])
        if len(errs) >= 3:
            return float(np.sqrt(np.mean(np.square(errs[-20:]))))
        n = len(data)
        if n < 4:
            halves = [(np.arange(n), np.arange(n))]
        else:
            idx = np.arange(n)
            halves = [(idx[0::2], idx[1::2]), (idx[1::2], idx[0::2])]
        out = []
        for fit_idx, test_idx in halves:
            part = data.subset(fit_idx)
            model = self.models[target] if len(fit_idx) == n else fit_on_dataset(self._new_model(target), part)
            test = data.subset(test_idx)
            y_pred = model.predict(test.frames)
            y_true = test.get(target)
            out += [measure(target, p - t, len(a)) for p, t, a in zip(y_pred, y_true, test.frames)]
        return float(np.sqrt(np.mean(np.square(out))))

    def record_errors(self, errors: dict[str, float]) -> None:
        """Remember the true errors of a structure labelled while the models were unsure."""
        for t, v in errors.items():
            if t in self.config.targets and np.isfinite(v):
                self.label_errors.setdefault(t, []).append(float(v))

    def thresholds(self) -> dict[str, float]:
        """Threshold per target, in its measure's units."""
        out = {}
        for t in self.config.targets:
            if t in self.config.thresholds:
                out[t] = float(self.config.thresholds[t])
            else:
                out[t] = float(self.config.threshold_factor * max(self.training_error.get(t, 0.0), 1e-12))
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
