"""Dipole/polarizability series from a model on the structures of trajectories, with posterior draws.

:func:`model_series` evaluates a dipole or polarizability model on every frame of one or several
trajectories and, when asked, draws ``n_samples`` plausible models from its posterior
(``model.sample_predictions``). All frames go through one call, so that draw ``k`` is the same
model on every trajectory (independent replicas share the model's error, as they do in reality;
drawing per trajectory would average the model error away). The spectra of the draws give the
model band (:func:`mdplugin.spectra.ir_spectrum` with ``samples=``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..core.errors import DataError

__all__ = ["model_series", "read_structures"]


def read_structures(path: str | os.PathLike) -> list:
    """The frames (``ase.Atoms``) of a trajectory file, or a one-line :class:`DataError` saying why a
    file holds no structures (arrays and i-PI extras files hold values only)."""
    from ..structures.data import read_frames

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".txt", ".dat", ".csv"):
        raise DataError(f"{path}: an array of values holds no structures; a model needs the trajectory "
                        f"(extended XYZ or ASE trajectory) to predict on")
    with open(path, "r", errors="replace") as fh:
        head = fh.readline()
    if head.lstrip().startswith("#EXTRAS"):
        raise DataError(f"{path}: an i-PI extras file holds no structures; give the positions trajectory "
                        f"(i-PI <trajectory> of positions, converted to extended XYZ in Å) instead")
    frames = list(read_frames(path))
    if len(frames) < 2:
        raise DataError(f"{path}: {len(frames)} frame(s); a spectrum needs a time series")
    return frames


def model_series(paths: list[str | os.PathLike], model, n_samples: int = 0, seed=None,
                 cell_dipole: str | None = None) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """The model's mean prediction on every frame of every trajectory in ``paths`` and, with
    ``n_samples`` > 0, its posterior draws.

    Returns ``(means, samples)``: per trajectory (n_i, 3) or (n_i, 3, 3) means and
    (n_samples, n_i, ...) draws (``None`` without draws), in the model's units (mdplugin: e·Å, Å³).
    Dipoles of periodic trajectories are treated as :func:`~mdplugin.spectra.read_series` treats
    stored ones (checked for jumps; a changing cell needs ``cell_dipole``, and ``"polarization"``
    scales the mean and every draw by ``<V>/V``).
    """
    from ..structures.continuity import check_dipole_continuity
    from .readers import periodic_dipole_scale

    frames = [read_structures(p) for p in paths]
    every = [atoms for f in frames for atoms in f]
    cuts = np.cumsum([len(f) for f in frames])[:-1]
    if n_samples:
        mean, draws = model.sample_predictions(every, n_samples, seed=seed, return_mean=True)
        means, draws = np.split(np.asarray(mean), cuts), np.split(np.asarray(draws), cuts, axis=1)
    else:
        means, draws = np.split(np.asarray(model.predict(every)), cuts), None
    if model.target_ == "dipole":
        for i, (path, f) in enumerate(zip(paths, frames)):
            if any(a.pbc.all() for a in f):
                check_dipole_continuity(f, means[i], str(path))
                scale = periodic_dipole_scale(f, Path(path), cell_dipole)[:, None]
                means[i] = means[i] * scale
                if draws is not None:
                    draws[i] = draws[i] * scale[None]
    return means, draws
