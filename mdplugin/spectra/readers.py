"""Read dipole or polarizability time series from files.

Formats (detected from the file, not only its name):

* extended XYZ / ASE trajectories (``mdplugin md`` output): per-frame ``dipole`` (3, e·Å) and
  ``polarizability`` (9 row-major or 3×3, Å³) in ``atoms.info`` or in the
  SinglePointCalculator that ASE's reader creates (both places are read);
* i-PI extras files (``<trajectory filename="dip" extra_type="dipole"> extras </trajectory>``
  gives ``simulation.dip_0``): each frame a ``#EXTRAS(<type>)# Step: N`` header and the values,
  in atomic units (e·bohr, bohr³), read with i-PI's own ``ipi.read_trajectory(..., "extras")``;
  ``<type>`` is the key (``dipole``), a comma list of keys (``dipole,polarizability``) or
  ``raw`` (one JSON object per frame); the steps must be equally spaced;
* ``.npy`` arrays and text arrays (``.txt``, ``.dat``, anything ``numpy.loadtxt`` reads) of shape
  (n_frames, 3) for dipoles, (n_frames, 9) or (n_frames, 3, 3) for polarizabilities.

All readers return ASE units: dipoles (n, 3) in e·Å, polarizabilities (n, 3, 3) in Å³. Dipoles of
periodic trajectories are checked for jumps, and a changing cell needs ``cell_dipole``
(:func:`read_series`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from ..core.errors import ConfigError, DataError
from ..core.units import FROM_UNITS

#: number of values per frame of the quantities i-PI extras may hold next to each other
EXTRAS_SIZES = {"dipole": 3, "polarizability": 9, "dipole_std": 3, "polarizability_std": 9}

QUANTITIES = ("dipole", "polarizability")

#: how the dipole of a cell that changes along a trajectory enters the IR spectrum (None: not said)
CELL_DIPOLES = (None, "total", "polarization")


def _shape(values: np.ndarray, quantity: str, where: str) -> np.ndarray:
    """Check and reshape a whole series: (n, 3) dipoles or (n, 3, 3) polarizabilities."""
    if values.dtype == object:
        raise DataError(f"{where}: {quantity} values are not a regular numeric array")
    values = np.asarray(values, dtype=float)
    n = values.shape[0] if values.ndim else 0
    if quantity == "dipole":
        ok = values.ndim == 2 and values.shape[1] == 3
        want = "(n_frames, 3)"
    else:
        if values.ndim == 2 and values.shape[1] == 9:
            values = values.reshape(n, 3, 3)
        ok = values.ndim == 3 and values.shape[1:] == (3, 3)
        want = "(n_frames, 9) or (n_frames, 3, 3)"
    if not ok:
        raise DataError(f"{where}: {quantity} series has shape {values.shape}, expected {want}")
    if n < 2:
        raise DataError(f"{where}: {quantity} series has {n} frame(s); a spectrum needs a time series")
    bad = ~np.isfinite(values.reshape(n, -1)).all(axis=1)
    if bad.any():
        raise DataError(f"{where}: frame {int(np.argmax(bad))}: {quantity} contains NaN or inf")
    return values


def _is_ipi_extras(path: Path) -> bool:
    with open(path, "r", errors="replace") as fh:
        for line in fh:
            if line.strip():
                return line.lstrip().startswith("#EXTRAS")
    return False


_EXTRAS_HEADER = re.compile(r"^[ \t]*#EXTRAS\(([^)]*)\)#[ \t]*Step:[ \t]*(\d+)[^\n]*$", re.MULTILINE)


def _read_ipi_extras(path: Path, quantity: str, key: str) -> np.ndarray:
    """Values of ``key`` from an i-PI extras file, converted from atomic units.

    Parses the format i-PI writes (``ipi.engine.outputs.TrajectoryOutput``) and reads back with
    ``ipi.read_trajectory(path, format="extras")``, in one pass (much faster on long files).
    """
    parts = _EXTRAS_HEADER.split(path.read_text(errors="replace"))
    types, steps, bodies = parts[1::3], parts[2::3], parts[3::3]
    if not types:
        raise DataError(f"{path}: i-PI extras file without frames")
    extra_type = types[0].strip()
    if any(t.strip() != extra_type for t in types):
        other = next(t for t in types if t.strip() != extra_type)
        raise DataError(f"{path}: mixed extras types {extra_type!r} and {other.strip()!r}")
    step = np.array(steps, dtype=int)
    if len(step) > 2 and np.any(np.diff(step) != step[1] - step[0]):
        i = int(np.argmax(np.diff(step) != step[1] - step[0]))
        raise DataError(f"{path}: frames are not equally spaced in time (step {step[i]} is followed by "
                        f"{step[i + 1]}; expected {step[i] + step[1] - step[0]})")
    if extra_type == "raw":
        values = []
        for i, text in enumerate(bodies):
            try:
                obj = json.loads(text)
            except json.JSONDecodeError:
                raise DataError(f"{path}: frame {i}: extras are not a JSON object") from None
            if not isinstance(obj, dict) or key not in obj:
                present = ", ".join(sorted(obj)) if isinstance(obj, dict) else "none"
                raise DataError(f"{path}: frame {i}: i-PI extras have no key {key!r} (keys: {present})")
            values.append(np.asarray(obj[key], dtype=float).reshape(-1))
    else:
        fields = [f.strip() for f in extra_type.split(",")]
        if key not in fields:
            raise DataError(f"{path}: i-PI extras file has no key {key!r} (it holds: {', '.join(fields)})")
        values = [b.split() for b in bodies]
        if len(fields) > 1:
            unknown = [f for f in fields if f not in EXTRAS_SIZES]
            if unknown:
                raise DataError(f"{path}: cannot split extras {extra_type!r}: unknown size of {', '.join(unknown)}")
            start = sum(EXTRAS_SIZES[f] for f in fields[: fields.index(key)])
            total = sum(EXTRAS_SIZES[f] for f in fields)
            for i, v in enumerate(values):
                if len(v) != total:
                    raise DataError(f"{path}: frame {i}: extras {extra_type!r} have {len(v)} values, expected {total}")
            values = [v[start:start + EXTRAS_SIZES[key]] for v in values]
    _check_sizes(values, path, key)
    try:
        array = np.array(values, dtype=float)
    except ValueError:
        raise DataError(f"{path}: {key!r} values are not numeric") from None
    array = _shape(array, quantity, str(path))
    return FROM_UNITS["atomic"][quantity](array)


def _read_ase(path: Path, quantity: str, key: str) -> tuple[np.ndarray, list]:
    """``key`` per frame of a trajectory, read with :func:`mdplugin.structures.data.read_frames` (layout checked,
    unparsable frames named) from ``atoms.info`` or the SinglePointCalculator; and the frames."""
    from ..structures.data import read_frames

    values = []
    frames = read_frames(path)
    for i, atoms in enumerate(frames):
        raw = atoms.info.get(key)
        if raw is None and atoms.calc is not None:
            raw = getattr(atoms.calc, "results", {}).get(key)
        if raw is None:
            present = sorted(set(atoms.info) | set(getattr(atoms.calc, "results", {}) or {}))
            raise DataError(f"{path}: frame {i}: no {key!r} (per-frame keys: {', '.join(present) or 'none'})")
        try:
            values.append(np.asarray(raw, dtype=float).reshape(-1))
        except (TypeError, ValueError):
            raise DataError(f"{path}: frame {i}: {key!r} is not numeric") from None
    _check_sizes(values, path, key)
    return np.array(values), frames


def _check_sizes(values: list, path: Path, key: str) -> None:
    """Every frame must hold as many numbers as most frames do; name the first that does not."""
    lengths = np.array([len(v) for v in values])
    common = np.bincount(lengths).argmax()
    bad = np.flatnonzero(lengths != common)
    if len(bad):
        i = int(bad[0])
        hint = " (truncated file?)" if i == len(values) - 1 else ""
        raise DataError(f"{path}: frame {i}: {key!r} has {lengths[i]} values, other frames {common}{hint}")


def read_series(path: str | os.PathLike, quantity: str, key: str | None = None, units: str = "ase",
                cell_dipole: str | None = None) -> np.ndarray:
    """One time series from a file: dipoles (n, 3) e·Å or polarizabilities (n, 3, 3) Å³.

    ``quantity`` is ``"dipole"`` or ``"polarizability"``; ``key`` the name in the file (defaults
    to the quantity); ``units`` (``"ase"`` or ``"atomic"``) the units of XYZ/ASE and array files
    (i-PI extras are always atomic units).

    Dipoles of a periodic trajectory (XYZ/ASE files, which carry the cell) must be continuous:
    a jump between neighbouring frames is a :class:`DataError`
    (:func:`mdplugin.structures.continuity.check_dipole_continuity`). When the cell changes along
    the trajectory (NPT), ``cell_dipole`` must say how the dipole enters the spectrum:
    ``"total"`` (the cell's dipole as stored) or ``"polarization"`` (``M(t)·⟨V⟩/V(t)``, the
    polarization times the mean volume); see docs/condensed.md.
    """
    if cell_dipole not in CELL_DIPOLES:
        raise ConfigError(f"unknown cell dipole {cell_dipole!r} (use {' or '.join(c for c in CELL_DIPOLES if c)})")
    if quantity not in QUANTITIES:
        raise ConfigError(f"unknown quantity {quantity!r} (use dipole or polarizability)")
    if units not in FROM_UNITS:
        raise ConfigError(f"unknown units {units!r} (use 'ase' or 'atomic')")
    key = key or quantity
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a series file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise DataError(f"{path}: cannot read as a .npy array ({exc})") from None
        return FROM_UNITS[units][quantity](_shape(array, quantity, str(path)))
    if _is_ipi_extras(path):
        return _read_ipi_extras(path, quantity, key)
    if suffix in (".txt", ".dat", ".csv"):
        try:
            array = np.loadtxt(path, ndmin=2, delimiter="," if suffix == ".csv" else None)
        except ValueError as exc:
            raise DataError(f"{path}: cannot read as a numeric text array ({str(exc).splitlines()[0]})") from None
        return FROM_UNITS[units][quantity](_shape(array, quantity, str(path)))
    array, frames = _read_ase(path, quantity, key)
    values = FROM_UNITS[units][quantity](_shape(array, quantity, str(path)))
    if quantity == "dipole" and any(a.pbc.all() for a in frames):
        values = _periodic_dipoles(values, frames, path, cell_dipole)
    return values


def _periodic_dipoles(values: np.ndarray, frames: list, path: Path, cell_dipole: str | None) -> np.ndarray:
    """The dipole series of a periodic trajectory, checked for jumps, for a changing cell scaled
    as ``cell_dipole`` says."""
    from ..structures.continuity import check_dipole_continuity

    check_dipole_continuity(frames, values, str(path))
    return values * periodic_dipole_scale(frames, path, cell_dipole)[:, None]


def periodic_dipole_scale(frames: list, path: Path, cell_dipole: str | None) -> np.ndarray:
    """Factor (n,) by which the dipoles of a periodic trajectory enter the spectrum: ones for a
    fixed cell or ``cell_dipole="total"``, ``<V>/V`` for ``"polarization"``; a changing cell
    without ``cell_dipole`` is a :class:`DataError` saying what to choose."""
    cells = np.array([a.cell.array for a in frames])
    if np.abs(cells - cells[0]).max() <= 1e-6 * np.abs(cells[0]).max():
        return np.ones(len(frames))
    volumes = np.abs(np.linalg.det(cells))
    if cell_dipole is None:
        raise DataError(
            f"{path}: the cell changes along the trajectory (volume {volumes.min():.4g} to {volumes.max():.4g} Å³, "
            f"NPT?): say how the dipole of a changing cell enters the IR spectrum, --cell-dipole total (the "
            f"cell's dipole as stored, as the sum of whole molecules' dipoles is) or --cell-dipole polarization "
            f"(M·<V>/V, the polarization at the mean volume); see docs/condensed.md")
    if cell_dipole == "polarization":
        return volumes.mean() / volumes
    return np.ones(len(frames))
