"""Fit, evaluate and predict on :class:`~mdplugin.structures.data.Dataset` objects (used by the CLI,
the demo, the benchmarks and active learning).

Every model takes ``fit(frames, targets, comm=comm)`` with the data set's labels as
:class:`~mdplugin.models.contract.Targets` (:func:`targets_of`); energy models also provide
``predict_forces(frames)``.
"""

from __future__ import annotations

import functools

import numpy as np

from ..structures.data import Dataset
from ..core.errors import DataError
from ..core.threads import limited_threads
from ..learn.metrics import regression_metrics
from .base import Model
from .contract import Targets


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


def targets_of(data: Dataset) -> Targets:
    """The labels of ``data`` (energy, forces, dipole, polarizability; ``None`` where absent)."""
    return Targets(energy=data.energy, forces=data.forces, dipole=data.dipole, polarizability=data.polarizability,
                   hamiltonian=data.hamiltonian)


def fit_on_dataset(model: Model, data: Dataset, comm=None) -> Model:
    """Fit ``model`` on the labels in ``data`` (a :class:`DataError` naming the file when it has none
    of the model's target).

    ``comm``: an MPI communicator (:func:`mdplugin.learn.parallel.get_comm`) shared by the ranks that
    all call this with the same data; the SOAP energy and λ-SOAP models split the work and end with
    the serial model on every rank, the others fit on every rank. The fit runs with the "batch"
    threads of :mod:`mdplugin.core.threads`.
    """
    data.get(model.target)  # the file's name in the error when the labels are missing
    with limited_threads("batch", comm, len(data)):  # threads from the size, the free cores, the ranks per node
        return model.fit(data.frames, targets_of(data), comm=comm)


def _batch_threads(function):
    """``function(model, data, ...)`` runs with the "batch" threads for ``len(data)`` structures."""

    @functools.wraps(function)
    def wrapper(model: Model, data: Dataset, *args, **kwargs):
        with limited_threads("batch", None, len(data)):
            return function(model, data, *args, **kwargs)

    return wrapper


@_batch_threads
def evaluate_model(model: Model, data: Dataset) -> dict:
    """Errors of ``model`` on ``data``: target, n, rmse, mae, rmse_percent_of_std (+ energy extras;
    a model with its own ``evaluate_dataset`` reports what it defines)."""
    if hasattr(model, "evaluate_dataset"):
        return model.evaluate_dataset(data)
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


@_batch_threads
def predict_dataset(model: Model, data: Dataset) -> Dataset:
    """A copy of ``data``'s structures labelled with the model's predictions and ``<target>_std``
    (a model with its own ``predict_dataset`` labels what it defines).

    The input's own labels are kept: those of other properties under their own names, those the
    model predicts (and, for an energy model, the forces) as ``<name>_reference``
    (:func:`reference_keys`), so that one file holds both for a comparison.
    """
    if hasattr(model, "predict_dataset"):
        return model.predict_dataset(data)
    target = model.target
    try:
        y, std = model.predict(data.frames, return_std=True)
    except DataError as exc:  # e.g. "frame 3: element(s) O not in ...": name the file too
        raise DataError(f"{data.source}: {exc}" if data.source not in str(exc) else str(exc)) from None
    out = Dataset(frames=data.frames, source=data.source)
    for name in data.properties:  # labels of the other properties, as they were
        if name not in predicted_properties(target):
            setattr(out, name, data.get(name))
    setattr(out, target, np.asarray(y))
    if target == "energy":
        out.forces = model.predict_forces(data.frames)
    out.extras[f"{target}_std"] = np.asarray(std).reshape(len(data), -1) if np.ndim(std) > 1 else np.asarray(std)
    for name, key in reference_keys(target, data).items():
        if name == "forces":  # per atom: a list of (n_atoms_i, 3)
            out.extras[key] = [np.asarray(f, dtype=float) for f in data.forces]
        else:
            value = np.asarray(data.get(name))
            out.extras[key] = value.reshape(len(data), -1) if value.ndim > 1 else value
    return out


def predicted_properties(target: str) -> tuple[str, ...]:
    """The properties a model of ``target`` writes (an energy model: energy and forces)."""
    return ("energy", "forces") if target == "energy" else (target,)


def reference_keys(target: str, data: Dataset) -> dict[str, str]:
    """property -> key under which ``predict_dataset`` keeps the input's own labels of what the
    model predicts (``dipole`` -> ``dipole_reference``), for the properties ``data`` has."""
    return {name: f"{name}_reference" for name in predicted_properties(target) if data.has(name)}


def comparison(model: Model, data: Dataset, predicted: Dataset) -> dict[str, dict[str, float]]:
    """Errors of the predictions against the input's own labels (:func:`regression_metrics`), per
    predicted property the input has ({} when it has none)."""
    out = {}
    if hasattr(model, "predict_dataset"):  # a model that labels what it defines (hamiltonian): its own evaluate
        return out
    for name in reference_keys(model.target, data):
        if name == "forces":
            out[name] = regression_metrics(np.concatenate(data.forces), np.concatenate(predicted.forces))
        else:
            out[name] = regression_metrics(data.get(name), predicted.get(name))
    return out


#: metric -> the property whose unit it carries (for the target's own metrics: the target)
_METRIC_PROPERTY = {"rmse": None, "mae": None, "std": None, "mean_std": None,
                    "rmse_per_atom": "energy", "forces_rmse": "forces", "forces_mae": "forces",
                    **{k: "energy" for k in ("orbital_energies_rmse", "orbital_energies_mae", "homo_rmse",
                                             "lumo_rmse", "gap_rmse")},
                    "dipole_rmse": "dipole", "polarizability_rmse": "polarizability"}


def metrics_in_units(result: dict, units: str = "ase") -> dict:
    """``result`` of :func:`evaluate_model` (ASE units) in ``units`` (``"ase"`` or ``"atomic"``:
    Hartree, Hartree/bohr, e·bohr, bohr³), with a ``"units"`` entry naming the unit of every
    dimensioned metric (percentages and counts are unit-free)."""
    from ..core.units import AU_PER_ASE, UNIT_NAMES

    if units not in UNIT_NAMES:
        raise DataError(f"unknown units {units!r} (use 'ase' or 'atomic')")
    target = result["target"]
    out = dict(result)
    names = {}
    for key, prop in _METRIC_PROPERTY.items():
        if key not in result:
            continue
        prop = prop or ("energy" if target == "hamiltonian" else target)  # matrix elements: an energy
        if units == "atomic":
            out[key] = float(result[key]) * AU_PER_ASE[prop]
        names[key] = UNIT_NAMES[units][prop] + ("/atom" if key == "rmse_per_atom" else "")
    out["units"] = {"system": units, **names}
    return out
