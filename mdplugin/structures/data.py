"""Labelled data sets: read, validate and write extended XYZ.

In memory a data set is a :class:`Dataset`: structures plus, where present, per-frame labels in
ASE units — ``energy`` (n,) eV, ``forces`` list of (n_atoms_i, 3) eV/Å, ``dipole`` (n, 3) e·Å,
``polarizability`` (n, 3, 3) Å³.

On disk: extended XYZ with per-frame ``energy``, ``dipole`` (3), ``polarizability`` (9, row-major)
and per-atom ``forces``. Other key names are mapped with ``keys={"dipole": "mu"}``; files in atomic
units (e·bohr, bohr³, Hartree, Hartree/bohr) are read with ``units="atomic"``. ASE's reader moves
known properties (energy, forces, dipole, ...) into a ``SinglePointCalculator``; both places are read.
An all-zero ``Lattice`` (as in the TENSOAP files) means an isolated molecule. Polarizabilities
symmetric only to rounding are symmetrised (with one warning per file); the dipoles of periodic
frames that follow each other in time must not jump by a polarization quantum.
"""

from __future__ import annotations

import collections
import io
import itertools
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import ase.io
import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from .charge import frame_charge
from ..core.atomicio import append_durably, atomic_write
from ..core.errors import DataError, DataWarning
from ..core.units import FROM_UNITS, UNIT_NAMES
from .neighbours import closest_pair

#: properties a data set can carry, with the shape of one frame's value (None = per atom)
PROPERTIES: dict[str, tuple[int, ...] | None] = {
    "energy": (),
    "forces": None,
    "dipole": (3,),
    "polarizability": (3, 3),
}

#: closest allowed distance between two atoms, Å
MIN_DISTANCE = 0.1

#: polarizabilities symmetric to this fraction of their largest component are symmetrised (public
#: sets print them to a few digits: a bulk-water set has |α − αᵀ| up to 7e-4 of it); above, refused
SYMMETRY_TOLERANCE = 2e-3
#: below this fraction the asymmetry is floating-point noise and symmetrised without a word
SILENT_ASYMMETRY = 1e-6


@dataclass
class Dataset:
    """Structures with optional labels, all in ASE units."""

    frames: list[Atoms]
    energy: np.ndarray | None = None
    forces: list[np.ndarray] | None = None
    dipole: np.ndarray | None = None
    polarizability: np.ndarray | None = None
    source: str = "<memory>"
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    #: AO Hamiltonians of the frames (:class:`~mdplugin.structures.hamiltonians.HamiltonianSet`,
    #: read from the file beside the data by :func:`~mdplugin.structures.hamiltonians.attach_hamiltonians`)
    hamiltonian: object | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def get(self, name: str):
        """Labels of property ``name``; a :class:`DataError` if the set has none."""
        if name == "hamiltonian":
            if self.hamiltonian is None:
                raise DataError(f"{self.source}: no Hamiltonians (they come from the .hamiltonian.npz file "
                                f"'mdplugin label --properties hamiltonian' writes beside the data)")
            return self.hamiltonian
        if name not in PROPERTIES:
            raise DataError(f"unknown property {name!r} (known: {', '.join(PROPERTIES)})")
        value = getattr(self, name)
        if value is None:
            raise DataError(f"{self.source}: no {name!r} labels")
        return value

    def has(self, name: str) -> bool:
        return getattr(self, name, None) is not None

    @property
    def properties(self) -> list[str]:
        return [p for p in PROPERTIES if self.has(p)]

    def subset(self, indices: Iterable[int]) -> "Dataset":
        idx = [int(i) for i in indices]
        return Dataset(
            frames=[self.frames[i] for i in idx],
            energy=None if self.energy is None else self.energy[idx],
            forces=None if self.forces is None else [self.forces[i] for i in idx],
            dipole=None if self.dipole is None else self.dipole[idx],
            polarizability=None if self.polarizability is None else self.polarizability[idx],
            source=self.source,
            extras={k: v[idx] for k, v in self.extras.items()},
            hamiltonian=None if self.hamiltonian is None else self.hamiltonian.subset(idx),
        )

    def __add__(self, other: "Dataset") -> "Dataset":
        def cat(a, b, lists=False):
            if a is None or b is None:
                return None
            return list(a) + list(b) if lists else np.concatenate([a, b])

        return Dataset(
            frames=list(self.frames) + list(other.frames),
            energy=cat(self.energy, other.energy),
            forces=cat(self.forces, other.forces, lists=True),
            dipole=cat(self.dipole, other.dipole),
            polarizability=cat(self.polarizability, other.polarizability),
            source=self.source,
        )


def _raw_value(atoms: Atoms, key: str):
    """The value stored under ``key``: atoms.info, atoms.arrays, or the SinglePointCalculator."""
    if key in atoms.info:
        return atoms.info[key]
    if key in atoms.arrays:
        return atoms.arrays[key]
    calc = atoms.calc
    if calc is not None and key in getattr(calc, "results", {}):
        return calc.results[key]
    return None


def _is_molecule_cell(atoms: Atoms) -> bool:
    return not np.any(atoms.cell.array)


def _check_structure(atoms: Atoms, where: str) -> None:
    pos = atoms.positions
    if not np.all(np.isfinite(pos)):
        raise DataError(f"{where}: positions contain NaN or inf")
    numbers = atoms.numbers
    bad = (numbers <= 0) | (numbers >= len(chemical_symbols))
    if np.any(bad):
        raise DataError(f"{where}: unknown element (atomic number {int(numbers[bad][0])})")
    _check_cell(atoms, where)
    if len(atoms) < 2:
        return
    close = closest_pair(atoms, MIN_DISTANCE)  # images count in a cell
    if close is not None:
        i, j, d = close
        raise DataError(f"{where}: atoms {i} and {j} are {d:.3g} Å apart (closer than {MIN_DISTANCE} Å)")


def _check_cell(atoms: Atoms, where: str) -> None:
    """Periodic cell vectors must be finite, independent and at least ``MIN_DISTANCE`` apart."""
    if not atoms.pbc.any():
        return
    cell = atoms.cell.array
    if not np.all(np.isfinite(cell)):
        raise DataError(f"{where}: cell contains NaN or inf")
    vecs = cell[atoms.pbc]
    for k in range(len(vecs)):
        others = np.delete(vecs, k, axis=0)
        v = vecs[k]
        if len(others):  # the part of v not in the plane/line of the other periodic vectors
            coef = np.linalg.lstsq(others.T, v, rcond=None)[0]
            v = v - others.T @ coef
        height = float(np.linalg.norm(v))
        if height < MIN_DISTANCE:
            raise DataError(
                f"{where}: periodic cell is degenerate or too small "
                f"(periodic images {height:.3g} Å apart, closer than {MIN_DISTANCE} Å)"
            )


def _convert(name: str, raw, atoms: Atoms, units: str, where: str, key: str,
             asymmetry: dict | None = None) -> np.ndarray:
    try:
        value = np.asarray(raw, dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {name} (key {key!r}) is not numeric: {raw!r}") from None
    shape = PROPERTIES[name]
    if shape is None:
        shape = (len(atoms), 3)
    if name == "polarizability" and value.shape == (9,):
        value = value.reshape(3, 3)
    if value.shape != shape:
        want = "9 or 3×3" if name == "polarizability" else ("a scalar" if shape == () else str(shape))
        raise DataError(f"{where}: {name} (key {key!r}) has shape {value.shape}, expected {want}")
    if not np.all(np.isfinite(value)):
        raise DataError(f"{where}: {name} (key {key!r}) contains NaN or inf")
    if name == "polarizability":
        asym = float(np.abs(value - value.T).max())
        scale = float(np.abs(value).max())
        relative = asym / scale if scale > 0 else 0.0
        if relative > SYMMETRY_TOLERANCE:
            unit = UNIT_NAMES[units]["polarizability"]
            raise DataError(f"{where}: polarizability (key {key!r}) is not symmetric: max |α-αᵀ| = {asym:.3g} {unit}, "
                            f"{relative:.2g} of its largest component (up to {SYMMETRY_TOLERANCE:g} is taken as "
                            f"rounding and symmetrised)")
        if asymmetry is not None and asym > asymmetry.get("value", 0.0):
            asymmetry.update(value=asym, relative=relative, where=where)
        value = 0.5 * (value + value.T)
    return FROM_UNITS[units][name](value)


def read_frames(path: str | os.PathLike, index=":") -> list[Atoms]:
    """Read structures with ASE after a layout check, naming the first frame that fails to parse."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a data file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    frames: list[Atoms] = []
    fmt = "extxyz" if path.suffix in (".xyz", ".extxyz", "") else None
    if fmt == "extxyz":
        try:
            _check_layout(path)
        except UnicodeDecodeError:
            raise DataError(f"{path}: not a text file (bytes that are not UTF-8); is it an extended XYZ file?") from None
    try:
        for atoms in ase.io.iread(str(path), index=":", format=fmt, parallel=False):
            frames.append(atoms)
    except Exception as exc:  # ASE raises many kinds for malformed files
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, KeyError):  # ase.symbols: an unknown chemical symbol
            msg = f"unknown element symbol {exc.args[0]!r}" if exc.args else msg
        elif isinstance(exc, RuntimeError) and "StopIteration" in msg:
            msg = "file ends in the middle of a frame (truncated?)"
        elif isinstance(exc, UnicodeDecodeError):
            raise DataError(f"{path}: not a text file (bytes that are not UTF-8); is it an extended XYZ file?") from None
        raise DataError(f"{path}: frame {len(frames)}: cannot parse ({msg})") from None
    if not frames:
        raise DataError(f"{path}: no frames")
    if index not in (":", None):
        try:
            sel = frames[index] if isinstance(index, slice) else frames[int(index)]
        except (IndexError, ValueError):
            raise DataError(f"{path}: no frame {index!r} (file has {len(frames)})") from None
        frames = sel if isinstance(sel, list) else [sel]
    return frames


def _check_layout(path: Path) -> None:
    """Walk the atom-count lines of an extended-XYZ file before ASE parses it.

    ASE scans every header first and reports any layout error as frame 0, loops over a huge atom
    count for minutes, and silently stops at a blank line. Here a bad or negative count, a count
    larger than the rest of the file, and data after a blank line are named by frame and line.
    """
    with open(path, "rb") as fh:
        total, last = 0, b"\n"
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            total += chunk.count(b"\n")
            last = chunk[-1:]
    total += last != b"\n"  # a last line without a newline
    with open(path) as fh:
        frame, lineno = 0, 0
        for line in fh:
            lineno += 1
            if not line.strip():  # ASE stops here: nothing may follow
                for more, rest in enumerate(fh, lineno + 1):
                    if rest.strip():
                        raise DataError(
                            f"{path}: frame {frame}: blank line {lineno} where an atom count was expected, "
                            f"but more data follow at line {more} (remove the blank line(s))")
                return
            if frame and line.lstrip().startswith("VEC"):  # cell vectors after a frame
                continue
            try:
                n = int(line)
            except ValueError:
                hint = f" (is the atom count of frame {frame - 1} right?)" if frame else ""
                raise DataError(f"{path}: frame {frame}: line {lineno}: expected an atom count, "
                                f"got {line.strip()[:40]!r}{hint}") from None
            if n < 0:
                raise DataError(f"{path}: frame {frame}: line {lineno}: negative atom count {n}")
            if lineno + n + 1 > total:
                raise DataError(
                    f"{path}: frame {frame}: cannot parse (file ends in the middle of a frame (truncated?): "
                    f"line {lineno} announces {n} atoms, {total - lineno} line(s) follow)")
            collections.deque(itertools.islice(fh, n + 1), maxlen=0)  # skip comment and atom lines
            lineno += n + 1
            frame += 1


def read_dataset(
    path: str | os.PathLike,
    properties: Sequence[str] | None = None,
    keys: Mapping[str, str] | None = None,
    units: str = "ase",
    index=":",
) -> Dataset:
    """Read and validate an extended-XYZ data set.

    Parameters
    ----------
    path : file to read (extended XYZ, or any format ASE reads).
    properties : labels that every frame must have; ``None`` reads whichever of energy, forces,
        dipole, polarizability the first frame has (and then requires them on every frame).
    keys : key name in the file per property, e.g. ``{"dipole": "mu", "polarizability": "alpha"}``.
    units : ``"ase"`` (eV, eV/Å, e·Å, Å³) or ``"atomic"`` (Hartree, Hartree/bohr, e·bohr, bohr³).
    index : ``":"`` for all frames, an int, or a slice.

    Polarizabilities symmetric to :data:`SYMMETRY_TOLERANCE` of their largest component are
    symmetrised (one :class:`~mdplugin.core.errors.DataWarning` per file names the largest
    asymmetry), less symmetric ones refused. Dipoles of periodic frames must be continuous between
    neighbouring frames (:func:`mdplugin.structures.continuity.check_dipole_continuity`).

    Raises
    ------
    DataError naming the file, the frame index and the problem.
    """
    path = Path(path)
    if units not in FROM_UNITS:
        raise DataError(f"unknown units {units!r} (use 'ase' or 'atomic')")
    keys = dict(keys or {})
    for name in keys:
        if name not in PROPERTIES:
            raise DataError(f"unknown property {name!r} in key mapping (known: {', '.join(PROPERTIES)})")
    key_of = {name: keys.get(name, name) for name in PROPERTIES}
    frames = read_frames(path, index)

    if properties is None:
        properties = [p for p in PROPERTIES if _raw_value(frames[0], key_of[p]) is not None]
    else:
        for p in properties:
            if p not in PROPERTIES:
                raise DataError(f"unknown property {p!r} (known: {', '.join(PROPERTIES)})")

    values: dict[str, list[np.ndarray]] = {p: [] for p in properties}
    clean: list[Atoms] = []
    asymmetry: dict = {}
    for i, atoms in enumerate(frames):
        where = f"{path}: frame {i}"
        for p in properties:
            raw = _raw_value(atoms, key_of[p])
            if raw is None:
                present = sorted(set(atoms.info) | set(atoms.arrays) - {"numbers", "positions"}
                                 | set(getattr(atoms.calc, "results", {}) or {}))
                raise DataError(f"{where}: missing key {key_of[p]!r} for {p} (keys present: {', '.join(present) or 'none'})")
            values[p].append(_convert(p, raw, atoms, units, where, key_of[p], asymmetry))
        out = Atoms(numbers=atoms.numbers, positions=atoms.positions)
        out.info.update({k: atoms.info[k] for k in ("charge", "spin") if k in atoms.info})  # electrons, for AO models
        if "charge" in atoms.info:
            out.info["charge"] = frame_charge(atoms, where)  # an integer, or one line naming the frame
        if not _is_molecule_cell(atoms):
            out.cell = atoms.cell
            out.pbc = atoms.pbc
        _check_structure(out, where)
        clean.append(out)

    if asymmetry.get("relative", 0.0) > SILENT_ASYMMETRY:
        warnings.warn(DataWarning(
            f"{path}: polarizabilities are symmetric only to rounding (largest |α-αᵀ| "
            f"{asymmetry['value']:.3g} {UNIT_NAMES[units]['polarizability']}, {asymmetry['relative']:.2g} of the "
            f"tensor, at {asymmetry['where'].split(': ')[-1]}): symmetrised"), stacklevel=2)
    data = Dataset(frames=clean, source=str(path))
    for p, vals in values.items():
        setattr(data, p, vals if p == "forces" else np.array(vals))
    if data.dipole is not None and any(a.pbc.all() for a in clean):
        from .continuity import check_dipole_continuity

        check_dipole_continuity(clean, data.dipole, str(path))
    return data


def _frames_for_writing(data: Dataset) -> list[Atoms]:
    out = []
    for i, atoms in enumerate(data.frames):
        a = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        a.info.update({k: atoms.info[k] for k in ("charge", "spin") if k in atoms.info})
        if data.energy is not None:
            a.info["energy"] = float(data.energy[i])
        if data.dipole is not None:
            a.info["dipole"] = np.asarray(data.dipole[i], dtype=float)
        if data.polarizability is not None:
            a.info["polarizability"] = np.asarray(data.polarizability[i], dtype=float).reshape(9)
        for key, val in data.extras.items():
            v = np.asarray(val[i], dtype=float)
            if isinstance(val, list) and v.shape == (len(a), 3):  # per atom (a list of (n_atoms_i, 3))
                a.arrays[key] = v
                continue
            a.info[key] = v.reshape(-1) if v.ndim else float(v)
        if data.forces is not None:
            a.arrays["forces"] = np.asarray(data.forces[i], dtype=float)
        out.append(a)
    return out


def dataset_to_text(data: Dataset) -> str:
    """The extended-XYZ text of a data set."""
    buf = io.StringIO()
    # parallel=False: ASE I/O is otherwise collective under MPI and a rank-0-only write would hang
    ase.io.write(buf, _frames_for_writing(data), format="extxyz", parallel=False)
    return buf.getvalue()


def write_dataset(path: str | os.PathLike, data: Dataset, append: bool = False) -> None:
    """Write a data set as extended XYZ.

    A new file is written atomically (temporary file, then rename); with ``append=True`` the
    frames are appended and flushed to disk (fsync) before this returns.
    """
    text = dataset_to_text(data)
    if append:
        append_durably(path, text)
    else:
        with atomic_write(path) as handle:
            handle.write(text)

