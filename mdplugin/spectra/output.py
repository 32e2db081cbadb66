"""Write and read spectra as CSV.

One header row, then one row per wavenumber: ``wavenumber [cm^-1]``, the total (IR absorption or
unpolarized Raman), the other components, then

* ``<name>_stat_err``: the statistical standard error of every component from blocks of the
  trajectory (only when there were at least 3 blocks; absent otherwise);
* ``<name>_model_p<lo>`` and ``<name>_model_p<hi>``: the model band, the ``lo`` and ``hi``
  percentiles (e.g. ``ir_model_p5``, ``ir_model_p95``) of the spectra of the model's posterior
  draws (only when the spectrum was computed with them).

Units are in the column names, in square brackets.
"""

from __future__ import annotations

import os

import numpy as np

from ..core.atomicio import atomic_write
from ..core.errors import DataError
from .compute import SpectrumResult


def csv_columns(result: SpectrumResult) -> tuple[list[str], np.ndarray]:
    """Column names and the (n, n_columns) table written by :func:`write_csv`."""
    names = ["wavenumber [cm^-1]"]
    cols = [result.wavenumber]
    for k, v in result.components.items():
        names.append(f"{k} [{result.units[k]}]")
        cols.append(v)
    for k, v in result.errors.items():
        names.append(f"{k}_stat_err [{result.units[k]}]")
        cols.append(v)
    if result.bands:
        lo, hi = result.meta["band"]
        for k, (low, high) in result.bands.items():
            names.append(f"{k}_model_p{lo:g} [{result.units[k]}]")
            cols.append(low)
            names.append(f"{k}_model_p{hi:g} [{result.units[k]}]")
            cols.append(high)
    return names, np.column_stack(cols)


def write_csv(result: SpectrumResult, path: str | os.PathLike) -> None:
    """Write ``result`` to ``path`` (atomically)."""
    names, table = csv_columns(result)
    with atomic_write(path) as fh:
        fh.write(",".join(names) + "\n")
        np.savetxt(fh, table, delimiter=",", fmt="%.9g")


def read_csv(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a spectrum CSV back: column name (without the unit) -> (n,) array."""
    try:
        with open(path) as fh:
            header = fh.readline().strip().split(",")
        table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read spectrum CSV ({exc})") from None
    return {h.split(" [")[0]: table[:, i] for i, h in enumerate(header)}
