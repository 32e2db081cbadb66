"""Hamiltonian data files: per-frame AO Fock (or effective Hamiltonian) and overlap matrices kept
beside an extended-XYZ file (``OUT.xyz`` -> ``OUT.hamiltonian.npz``).

The file is an ``.npz`` archive of plain arrays (read with ``allow_pickle=False``) plus one JSON
metadata string, written atomically. Frames may differ in size; each frame's matrices are stored
flattened (row-major) one after the other:

=================  ==============================  ==============================================
array              shape                           meaning
=================  ==============================  ==============================================
``n_ao``           (n_frames,) int                 AOs of each frame
``n_spin``         (n_frames,) int                 1: closed shell (one matrix); 2: α and β
``charge``         (n_frames,) int                 total charge, e
``spin``           (n_frames,) int                 2S, number of unpaired electrons
``fock``           (Σ n_spin·n_ao²,) float, eV     Fock matrices F (n_spin, n_ao, n_ao) per frame
``overlap``        (Σ n_ao²,) float                AO overlap S (n_ao, n_ao) per frame
``mo_energy``      (Σ n_spin·n_ao,) float, eV      eigenvalues of F c = ε S c per frame, ascending
``ao_atom``        (Σ n_ao,) int                   atom (0-based, in the frame) of each AO
``ao_label``       (Σ n_ao,) str                   PySCF's AO label, e.g. ``"0 O 2px"``
``n_atoms``        (n_frames,) int                 atoms of each frame
``numbers``        (Σ n_atoms,) int                atomic numbers, to check the file matches the XYZ
``positions``      (Σ n_atoms, 3) float, Å         positions, the same check (to 1e-5 Å)
``scf_energy``     (n_frames,) float, eV           total SCF energy in the SCF basis
=================  ==============================  ==============================================

AO order (PySCF's): atoms in the frame's order; per atom the shells as the basis set lists them;
per shell the magnetic components — p shells (x, y, z), l ≥ 2 shells real spherical harmonics
m = -l … l. The metadata (key ``__metadata__``) holds ``format`` (``"mdplugin-hamiltonians"``),
``format_version``, ``basis`` (the AO basis of the matrices), ``scf_basis`` (basis of the SCF;
different when the matrices are projected), ``method`` (``"hf"`` or the functional), ``projected``,
``n_frames`` and ``units``.

Projected Hamiltonians (``projected: true``): the SCF runs in ``scf_basis``; its occupied orbitals
and the lowest ``n_ao - n_occ`` virtual orbitals are projected onto the minimal basis, made
orthonormal (occupied among themselves; virtuals orthogonal to them), and
``H = S Φ diag(ε) Φᵀ S`` — so ``H c = ε S c`` has exactly the SCF-basis orbital energies ``ε`` of
the kept states, and its occupied orbitals span the projected occupied space.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms

from ..core.atomicio import atomic_write
from ..core.errors import DataError

FORMAT = "mdplugin-hamiltonians"
FORMAT_VERSION = 1
_META_KEY = "__metadata__"
SUFFIX = ".hamiltonian.npz"
#: positions in the file and in the structures agree to this, Å (extended XYZ keeps 1e-8)
POSITION_TOL = 1e-5


def hamiltonian_path(xyz_path: str | os.PathLike) -> Path:
    """The Hamiltonian file kept beside ``xyz_path``: ``OUT.xyz`` -> ``OUT.hamiltonian.npz``."""
    path = Path(xyz_path)
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return path.with_name(stem + SUFFIX)


@dataclass
class HamiltonianSet:
    """Per-frame AO matrices of a data set (eV; see the module docstring for the meaning).

    ``fock[i]`` (n_spin, n_ao, n_ao), ``overlap[i]`` (n_ao, n_ao), ``mo_energy[i]`` (n_spin, n_ao),
    ``ao_atom[i]`` (n_ao,), ``ao_label[i]`` (n_ao,), ``numbers[i]`` (n_atoms,), ``positions[i]``
    (n_atoms, 3) Å; ``charge``,
    ``spin`` (n_frames,) int; ``scf_energy`` (n_frames,) eV.
    """

    basis: str
    method: str
    fock: list[np.ndarray]
    overlap: list[np.ndarray]
    mo_energy: list[np.ndarray]
    ao_atom: list[np.ndarray]
    ao_label: list[np.ndarray]
    numbers: list[np.ndarray]
    positions: list[np.ndarray]
    charge: np.ndarray
    spin: np.ndarray
    scf_energy: np.ndarray
    scf_basis: str | None = None
    source: str = "<memory>"
    extra_meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.fock)

    @property
    def projected(self) -> bool:
        return self.scf_basis is not None and self.scf_basis.lower() != self.basis.lower()

    def n_electrons(self, i: int) -> int:
        return int(np.sum(self.numbers[i]) - self.charge[i])

    def subset(self, indices: Sequence[int]) -> "HamiltonianSet":
        idx = [int(i) for i in indices]
        pick = lambda seq: [seq[i] for i in idx]  # noqa: E731
        return HamiltonianSet(
            basis=self.basis, method=self.method, fock=pick(self.fock), overlap=pick(self.overlap),
            mo_energy=pick(self.mo_energy), ao_atom=pick(self.ao_atom), ao_label=pick(self.ao_label),
            numbers=pick(self.numbers), positions=pick(self.positions), charge=self.charge[idx],
            spin=self.spin[idx], scf_energy=self.scf_energy[idx], scf_basis=self.scf_basis, source=self.source,
            extra_meta=dict(self.extra_meta))

    def check_frames(self, frames: Sequence[Atoms], where: str | None = None) -> None:
        """A :class:`DataError` unless ``frames`` are the structures these matrices belong to."""
        where = where or self.source
        if len(frames) != len(self):
            raise DataError(f"{where}: holds {len(self)} frames but the structures have {len(frames)}")
        for i, atoms in enumerate(frames):
            if not np.array_equal(atoms.numbers, self.numbers[i]):
                raise DataError(f"{where}: frame {i}: atoms differ from the structure file's "
                                f"({atoms.get_chemical_formula()} there)")
            if not np.allclose(atoms.positions, self.positions[i], rtol=0.0, atol=POSITION_TOL):
                raise DataError(f"{where}: frame {i}: positions differ from the structure file's by up to "
                                f"{np.abs(atoms.positions - self.positions[i]).max():.3g} Å (the matrices belong "
                                f"to other geometries)")


def write_hamiltonians(path: str | os.PathLike, data: HamiltonianSet) -> None:
    """Write ``data`` atomically to ``path``."""
    n = len(data)
    n_spin = np.array([f.shape[0] for f in data.fock], dtype=np.int64)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "basis": data.basis,
        "scf_basis": data.scf_basis or data.basis,
        "method": data.method,
        "projected": data.projected,
        "n_frames": n,
        "units": {"fock": "eV", "mo_energy": "eV", "scf_energy": "eV", "overlap": "1"},
        "ao_order": "PySCF: atoms in order, shells as listed by the basis, p as (x, y, z), "
                    "l >= 2 real spherical harmonics m = -l..l",
        **data.extra_meta,
    }
    cat = lambda seq: (np.concatenate([np.ravel(x) for x in seq]) if n else np.zeros(0))  # noqa: E731
    arrays = {
        "n_ao": np.array([s.shape[0] for s in data.overlap], dtype=np.int64),
        "n_atoms": np.array([len(z) for z in data.numbers], dtype=np.int64),
        "n_spin": n_spin,
        "charge": np.asarray(data.charge, dtype=np.int64),
        "spin": np.asarray(data.spin, dtype=np.int64),
        "fock": cat(data.fock).astype(np.float64),
        "overlap": cat(data.overlap).astype(np.float64),
        "mo_energy": cat(data.mo_energy).astype(np.float64),
        "ao_atom": cat(data.ao_atom).astype(np.int64),
        "ao_label": cat(data.ao_label).astype(str),
        "numbers": cat(data.numbers).astype(np.int64),
        "positions": cat(data.positions).astype(np.float64).reshape(-1, 3),
        "scf_energy": np.asarray(data.scf_energy, dtype=np.float64),
    }
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **{_META_KEY: np.array(json.dumps(meta))}, **arrays)


def read_hamiltonians(path: str | os.PathLike, frames: Sequence[Atoms] | None = None) -> HamiltonianSet:
    """Read a Hamiltonian file (never unpickles); with ``frames``, check that it belongs to them.

    Raises :class:`DataError` naming the file (and frame) for a missing, damaged or mismatched file.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such Hamiltonian file (write it with "
                        f"'mdplugin label ... --oracle pyscf --properties hamiltonian')")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a Hamiltonian file (not an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a valid Hamiltonian file ({' '.join(str(exc).split())})") from None
    try:
        meta = json.loads(str(arrays.pop(_META_KEY)))
    except (KeyError, ValueError):
        raise DataError(f"{path}: not a Hamiltonian file (no metadata)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a Hamiltonian file (format {meta.get('format')!r})")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise DataError(f"{path}: Hamiltonian format version {meta['format_version']} is newer than this "
                        f"mdplugin reads ({FORMAT_VERSION}); upgrade mdplugin")
    required = ("n_ao", "n_atoms", "n_spin", "charge", "spin", "fock", "overlap", "mo_energy", "ao_atom", "ao_label",
                "numbers", "positions", "scf_energy")
    missing = [k for k in required if k not in arrays]
    if missing:
        raise DataError(f"{path}: Hamiltonian file lacks {', '.join(missing)}")
    n_ao, n_spin = arrays["n_ao"].astype(int), arrays["n_spin"].astype(int)
    sizes = {"fock": n_spin * n_ao**2, "overlap": n_ao**2, "mo_energy": n_spin * n_ao, "ao_atom": n_ao,
             "ao_label": n_ao}
    for key, size in sizes.items():
        if arrays[key].size != size.sum():
            raise DataError(f"{path}: array {key!r} has {arrays[key].size} values, the frame sizes say {size.sum()}")
    split = lambda key, size: np.split(arrays[key], np.cumsum(size)[:-1]) if len(size) else []  # noqa: E731
    fock = [f.reshape(s, n, n) for f, s, n in zip(split("fock", sizes["fock"]), n_spin, n_ao)]
    overlap = [o.reshape(n, n) for o, n in zip(split("overlap", sizes["overlap"]), n_ao)]
    mo_energy = [e.reshape(s, n) for e, s, n in zip(split("mo_energy", sizes["mo_energy"]), n_spin, n_ao)]
    ao_atom = split("ao_atom", n_ao)
    atoms_per_frame = arrays["n_atoms"].astype(int) if "n_atoms" in arrays else np.zeros(0, int)
    if (len(atoms_per_frame) != len(n_ao) or arrays["numbers"].size != atoms_per_frame.sum()
            or arrays["positions"].shape != (atoms_per_frame.sum(), 3)):
        raise DataError(f"{path}: arrays 'n_atoms', 'numbers' and 'positions' do not match the frames")
    data = HamiltonianSet(
        basis=str(meta.get("basis")), method=str(meta.get("method")), fock=fock, overlap=overlap,
        mo_energy=mo_energy, ao_atom=ao_atom, ao_label=split("ao_label", n_ao),
        numbers=split("numbers", atoms_per_frame),
        positions=np.split(arrays["positions"], np.cumsum(atoms_per_frame)[:-1]) if len(atoms_per_frame) else [],
        charge=arrays["charge"].astype(int),
        spin=arrays["spin"].astype(int), scf_energy=arrays["scf_energy"].astype(float),
        scf_basis=meta.get("scf_basis"), source=str(path),
        extra_meta={k: v for k, v in meta.items() if k not in (
            "format", "format_version", "basis", "scf_basis", "method", "projected", "n_frames", "units",
            "ao_order")})
    if frames is not None:
        data.check_frames(frames)
    return data


def attach_hamiltonians(data, path: str | os.PathLike | None = None):
    """``data`` (a :class:`~mdplugin.structures.data.Dataset`) with its ``hamiltonian`` read from
    ``path`` (default: the file beside the data's source, :func:`hamiltonian_path`), checked to
    belong to its frames."""
    data.hamiltonian = read_hamiltonians(path or hamiltonian_path(data.source), data.frames)
    return data
