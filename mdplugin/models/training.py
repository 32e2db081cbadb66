"""Fit, evaluate and predict on :class:`~mdplugin.structures.data.Dataset` objects (used by the CLI,
the demo, the benchmarks and active learning).

Energy models take ``fit(frames, energies, forces=forces)`` and provide ``predict_forces(frames)``;
dipole and polarizability models take ``fit(frames, y)``.
"""

from __future__ import annotations

import numpy as np

from ..structures.data import Dataset
from ..core.errors import DataError
from ..learn.metrics import regression_metrics
from .base import Model


def select_training(data: Dataset, n_train: int | None, seed: int = 0) -> Dataset:
    """``n_train`` frames drawn at random (fixed ``seed``), or all of them when ``None``."""
    if n_train is None:
        return data
    if n_train <= 0:
        raise DataError(f"--n-train must be positive, got {n_train}")
    if n_train > len(data):
        raise DataError(f"{data.source}: asked for {n_train} training frames but the file has {len(data)}")
    idx = np.sort(np.random.default_rng(seed).permutation(len(data))[:n_train])
    return data.subset(idx)


def fit_on_dataset(model: Model, data: Dataset, comm=None) -> Model:
    """Fit ``model`` on the labels of its target in ``data``.

    ``comm``: an MPI communicator (:func:`mdplugin.learn.parallel.get_comm`) shared by the ranks that
    all call this with the same data; models whose ``fit`` takes ``comm`` (SOAP energy, λ-SOAP)
    split the work and end with the serial model on every rank, others fit on every rank.
    """
    target = model.target
    extra = {"comm": comm} if comm is not None and _fit_takes_comm(model) else {}
    if target == "energy":
        return model.fit(data.frames, data.get("energy"), forces=data.forces, **extra)
    return model.fit(data.frames, data.get(target), **extra)


def _fit_takes_comm(model: Model) -> bool:
    import inspect

    return "comm" in inspect.signature(model.fit).parameters


def evaluate_model(model: Model, data: Dataset) -> dict:
    """Errors of ``model`` on ``data``: target, n, rmse, mae, rmse_percent_of_std (+ energy extras)."""
    target = model.target
    y_true = data.get(target)
    y_pred = model.predict(data.frames)
    result = {"target": target, "n": len(data), **regression_metrics(y_true, y_pred)}
    if target == "energy":
        n_atoms = np.array([len(a) for a in data.frames])
        result["rmse_per_atom"] = float(np.sqrt(np.mean(((y_pred - y_true) / n_atoms) ** 2)))
        if data.forces is not None:
            f_true = np.concatenate(data.forces)
            f_pred = np.concatenate(model.predict_forces(data.frames))
            fm = regression_metrics(f_true, f_pred)
            result["forces_rmse"] = fm["rmse"]
            result["forces_mae"] = fm["mae"]
            result["forces_rmse_percent_of_std"] = fm["rmse_percent_of_std"]
    return result


def predict_dataset(model: Model, data: Dataset) -> Dataset:
    """A copy of ``data``'s structures labelled with the model's predictions and ``<target>_std``."""
    target = model.target
    y, std = model.predict(data.frames, return_std=True)
    out = Dataset(frames=data.frames, source=data.source)
    setattr(out, target, np.asarray(y))
    if target == "energy":
        out.forces = model.predict_forces(data.frames)
    out.extras[f"{target}_std"] = np.asarray(std).reshape(len(data), -1) if np.ndim(std) > 1 else np.asarray(std)
    return out
