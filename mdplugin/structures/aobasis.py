"""Atomic-orbital bases of PySCF: shells per element, the AO layout of a structure, the map between
PySCF's AO order and real spherical harmonics, AO rotation matrices and one-electron integrals.

PySCF orders the AOs of a molecule atom by atom, then shell by shell as the basis set lists them
(a generally contracted shell counts as one shell per contraction), then by magnetic number: p
shells in the Cartesian order (x, y, z), l ≥ 2 shells as real spherical harmonics m = -l … l. The
map to the real harmonics of featomic (:mod:`mdplugin.core.wigner`) is found numerically from
PySCF's own AO values (:func:`pyscf_to_real`), so no sign convention is assumed.

A matrix ``A`` over the AOs of a structure (Fock, overlap) transforms under a rotation or
reflection ``R`` of the structure as ``A' = D A Dᵀ`` with ``D =``
:meth:`AOBasis.rotation_matrix` (block diagonal, one block per shell); AO coefficient vectors as
``c' = D c``.

Needs PySCF (the ``[pyscf]`` extra); it is imported when a basis is first used.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ase.data import chemical_symbols

from ..core.errors import ConfigError, DataError
from ..core.units import BOHR
from ..core.wigner import real_spherical_harmonics, real_wigner_d


def _gto():
    try:
        from pyscf import gto
    except ImportError as exc:  # pragma: no cover - pyscf is installed with the [pyscf] extra
        raise ConfigError(f"AO bases need PySCF: pip install 'mdplugin[pyscf]' ({exc})") from None
    return gto


def _quiet_basis_load(gto, basis: str, symbol: str):
    with warnings.catch_warnings():  # PySCF suggests basis-set-exchange for unknown names
        warnings.simplefilter("ignore")
        return gto.basis.load(basis, symbol)


@functools.lru_cache(maxsize=None)
def element_shells(basis: str, z: int) -> tuple[int, ...]:
    """Angular momenta of the shells of element ``z`` in the PySCF basis ``basis``, in PySCF's AO
    order (one entry per contraction). A :class:`ConfigError` when PySCF does not know the basis
    or the element in it."""
    gto = _gto()
    symbol = chemical_symbols[int(z)]
    try:
        with warnings.catch_warnings():  # PySCF suggests basis-set-exchange for unknown names
            warnings.simplefilter("ignore")
            mol = gto.M(atom=[(symbol, (0.0, 0.0, 0.0))], basis=basis, spin=int(z) % 2, verbose=0)
    except (RuntimeError, KeyError, ValueError) as exc:
        from pyscf.lib.exceptions import BasisNotFoundError

        if isinstance(exc, BasisNotFoundError) or "basis" in str(exc).lower():
            try:
                _quiet_basis_load(gto, basis, "H")
            except Exception:  # noqa: BLE001 - PySCF raises several kinds for an unknown name
                raise ConfigError(f"basis {basis!r} is not known to PySCF") from None
            raise ConfigError(f"basis {basis!r} has no functions for element {symbol}") from None
        raise ConfigError(f"basis {basis!r}, element {symbol}: {' '.join(str(exc).split())}") from None
    shells = []
    for b in range(mol.nbas):
        shells += [int(mol.bas_angular(b))] * int(mol.bas_nctr(b))
    return tuple(shells)


@functools.lru_cache(maxsize=None)
def pyscf_to_real(l: int) -> np.ndarray:
    """Orthogonal (2l+1, 2l+1) ``U`` with ``φ_pyscf = U φ_real``: PySCF's AO functions of a shell of
    order ``l`` in terms of real spherical harmonics (m = -l … l). AO coefficients convert as
    ``c_real = Uᵀ c_pyscf`` and AO matrix blocks as ``A_real = U_aᵀ A_pyscf U_b``.
    """
    gto = _gto()
    mol = gto.M(atom=[("H", (0.0, 0.0, 0.0))], basis={"H": [[l, [1.0, 1.0]]]}, spin=1, verbose=0)
    points = np.random.default_rng(7).normal(size=(6 * l + 6, 3))
    points /= np.linalg.norm(points, axis=1)[:, None]  # one radius: the radial factor is common
    ao = mol.eval_gto("GTOval_sph", points)  # (n, 2l+1)
    y = real_spherical_harmonics(points, l)
    u_t, *_ = np.linalg.lstsq(y, ao, rcond=None)  # ao = y @ Uᵀ
    u = u_t.T
    u /= np.linalg.norm(u[0])
    if not np.allclose(u @ u.T, np.eye(2 * l + 1), atol=1e-8):  # pragma: no cover - PySCF's basis
        raise RuntimeError(f"PySCF's l={l} AO functions are not an orthonormal set of real harmonics")
    u[np.abs(u) < 1e-12] = 0.0
    return u


@dataclass(frozen=True)
class AOLayout:
    """Where each atom's shells sit in the AO vector of one structure.

    ``shell_atom``, ``shell_l``, ``shell_index`` (index of the shell within its atom),
    ``shell_start`` (first AO): arrays (n_shells,); ``ao_atom``, ``ao_l``: arrays (n_ao,).
    """

    shell_atom: np.ndarray
    shell_l: np.ndarray
    shell_index: np.ndarray
    shell_start: np.ndarray
    ao_atom: np.ndarray
    ao_l: np.ndarray

    @property
    def n_ao(self) -> int:
        return int(len(self.ao_atom))

    def atom_slices(self, n_atoms: int) -> list[slice]:
        """AO slice of each atom."""
        starts = np.searchsorted(self.ao_atom, np.arange(n_atoms + 1))
        return [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]


class AOBasis:
    """A PySCF basis set by name (``"sto-3g"``, ``"def2-svp"``, ...): shells per element, AO layouts,
    rotation matrices and one-electron integrals of structures.

    Raises :class:`ConfigError` for a basis or element PySCF does not know.
    """

    def __init__(self, name: str) -> None:
        self.name = str(name)
        self._mols: dict[tuple[int, ...], object] = {}

    def shells(self, z: int) -> tuple[int, ...]:
        """Angular momenta of element ``z``'s shells, in AO order."""
        return element_shells(self.name.lower(), int(z))

    def n_ao(self, numbers: Sequence[int]) -> int:
        return int(sum(sum(2 * l + 1 for l in self.shells(z)) for z in numbers))

    def layout(self, numbers: Sequence[int]) -> AOLayout:
        """The :class:`AOLayout` of a structure with atomic numbers ``numbers``."""
        shell_atom, shell_l, shell_index, shell_start, ao_atom, ao_l = [], [], [], [], [], []
        start = 0
        for atom, z in enumerate(numbers):
            for k, l in enumerate(self.shells(z)):
                shell_atom.append(atom)
                shell_l.append(l)
                shell_index.append(k)
                shell_start.append(start)
                ao_atom += [atom] * (2 * l + 1)
                ao_l += [l] * (2 * l + 1)
                start += 2 * l + 1
        as_int = lambda x: np.asarray(x, dtype=int)  # noqa: E731
        return AOLayout(as_int(shell_atom), as_int(shell_l), as_int(shell_index), as_int(shell_start),
                        as_int(ao_atom), as_int(ao_l))

    def rotation_matrix(self, numbers: Sequence[int], rotation: np.ndarray) -> np.ndarray:
        """``D`` (n_ao, n_ao) with ``A' = D A Dᵀ`` for AO matrices of the structure rotated (or
        reflected) by ``rotation`` (3, 3), positions ``r -> R r``."""
        lay = self.layout(numbers)
        d = np.zeros((lay.n_ao, lay.n_ao))
        blocks = {}
        for l, s in zip(lay.shell_l, lay.shell_start):
            if l not in blocks:
                u = pyscf_to_real(int(l))
                blocks[l] = u @ real_wigner_d(rotation, int(l)) @ u.T
            n = 2 * l + 1
            d[s:s + n, s:s + n] = blocks[l]
        return d

    def permutation_matrix(self, numbers: Sequence[int], order: Sequence[int]) -> np.ndarray:
        """``P`` (n_ao, n_ao) with ``A' = P A Pᵀ`` for the structure whose atom ``k`` is atom
        ``order[k]`` of the original (``atoms[order]``)."""
        lay = self.layout(numbers)
        slices = lay.atom_slices(len(numbers))
        index = np.concatenate([np.arange(slices[i].start, slices[i].stop) for i in order])
        return np.eye(lay.n_ao)[index]

    # -- integrals ---------------------------------------------------------------------------
    def molecule(self, numbers: Sequence[int], positions: np.ndarray):
        """A PySCF ``Mole`` of this basis at ``positions`` (n_atoms, 3) Å, kept per composition and
        moved with ``set_geom_`` (building one costs ~3 ms, moving it ~0.05 ms). The number of
        electrons is taken as neutral, with the smallest spin it allows: one-electron integrals do
        not depend on either."""
        key = tuple(int(z) for z in numbers)
        mol = self._mols.get(key)
        pos = np.asarray(positions, dtype=float)
        if mol is None:
            for z in set(key):
                self.shells(z)  # a ConfigError naming the basis or element
            gto = _gto()
            mol = gto.M(atom=[(chemical_symbols[z], tuple(x)) for z, x in zip(key, pos)], unit="Angstrom",
                        basis=self.name, spin=sum(key) % 2, verbose=0)
            self._mols[key] = mol
        else:
            mol.set_geom_(pos, unit="Angstrom", inplace=True)
        return mol

    def overlap(self, numbers: Sequence[int], positions: np.ndarray) -> np.ndarray:
        """AO overlap matrix (n_ao, n_ao) of a structure (positions in Å)."""
        return self.molecule(numbers, positions).intor_symmetric("int1e_ovlp")

    def dipole_integrals(self, numbers: Sequence[int], positions: np.ndarray) -> np.ndarray:
        """⟨μ|r|ν⟩ about the origin, (3, n_ao, n_ao) in Å."""
        mol = self.molecule(numbers, positions)
        with mol.with_common_orig((0.0, 0.0, 0.0)):
            return mol.intor_symmetric("int1e_r", comp=3) * BOHR


def check_structure_for_basis(basis: AOBasis, numbers: Sequence[int], where: str) -> None:
    """A :class:`DataError` naming ``where`` and the element when the basis lacks an element."""
    for z in sorted(set(int(x) for x in numbers)):
        try:
            basis.shells(z)
        except ConfigError as exc:
            raise DataError(f"{where}: {exc}") from None
