"""Molecules of a structure, made whole across the cell boundary, and the cell dipole built on them.

A *molecule* is a connected set of covalently bonded atoms: atoms ``i`` and ``j`` are bonded when
they are closer than ``scale × (r_cov[i] + r_cov[j])`` (ASE's covalent radii), images included in a
cell (bonds found with :func:`mdplugin.structures.neighbours.neighbour_pairs`, i.e. vesin).
:func:`find_molecules` also gives each atom the image of itself that keeps its molecule whole
(``unwrapped`` positions), found along a breadth-first tree of the bonds.

The periodic dipole convention of the package (docs/condensed.md) is :func:`molecular_dipole`:

    M = Σ_m Σ_{i∈m} [ q_i (r_i − c_m) + p_i ],

the sum of the molecules' dipoles about their own centres of mass ``c_m`` (unwrapped positions
``r_i``, atomic charges ``q_i`` and atomic dipoles ``p_i``). Each term is a function of one whole
molecule only, so ``M`` does not depend on the origin, does not change when an atom or a molecule
is wrapped into the cell, and is continuous in time along a trajectory (as long as no bond breaks).
The charge a molecule has gained from its neighbours (``Q_m = Σ_{i∈m} q_i``, a few 0.01 e in
liquid water) contributes nothing: ``Q_m c_m`` is the term that jumps by ``Q_m × (cell vector)``
when the molecule crosses the wall.

Both run in vectorised numpy (no Python loop over atoms or bonds); a molecule bonded to its own
periodic image (a polymer chain or a network through the wall) is a :class:`DataError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, covalent_radii
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components

from ..core.errors import DataError
from .neighbours import neighbour_pairs, system_arrays

__all__ = ["BOND_SCALE", "Molecules", "find_molecules", "molecular_dipole", "molecule_dipoles"]

#: two atoms are bonded when closer than BOND_SCALE × the sum of their covalent radii (O–H: 1.26 Å)
BOND_SCALE: float = 1.3


@dataclass(frozen=True)
class Molecules:
    """The molecules of one structure.

    Attributes
    ----------
    index : (n_atoms,) int
        Molecule of each atom, 0 … n_molecules − 1 (numbered by their lowest atom index).
    unwrapped : (n_atoms, 3) float
        Positions (Å) with every molecule whole: the atom of lowest index of each molecule keeps
        its given position, the others are moved by whole cell vectors next to their bonded
        neighbours.
    images : (n_atoms, 3) int
        The cell shifts applied: ``unwrapped = positions + images @ cell``.
    """

    index: np.ndarray
    unwrapped: np.ndarray
    images: np.ndarray

    @property
    def n_molecules(self) -> int:
        return int(self.index.max()) + 1 if self.index.size else 0

    def sizes(self) -> np.ndarray:
        """Number of atoms of each molecule, (n_molecules,)."""
        return np.bincount(self.index, minlength=self.n_molecules)


def _bonds(atoms: Atoms, scale: float):
    """Bonded pairs ``(i, j, shifts)``, each once, with ``r_j + shifts @ cell − r_i`` the bond."""
    radii = covalent_radii[atoms.numbers]
    if len(atoms) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros((0, 3), dtype=np.int64)
    cutoff = 2.0 * scale * float(radii.max())
    pairs = neighbour_pairs(atoms, cutoff, full_list=False)
    bonded = pairs.distances < scale * (radii[pairs.i] + radii[pairs.j])
    return pairs.i[bonded], pairs.j[bonded], pairs.shifts[bonded]


def find_molecules(atoms: Atoms, scale: float = BOND_SCALE) -> Molecules:
    """The molecules of ``atoms`` (a molecule in vacuum or a periodic cell), made whole.

    ``scale``: bonds are pairs closer than ``scale × (r_cov,i + r_cov,j)``.

    Raises
    ------
    DataError when a molecule is bonded to its own periodic image (it has no finite extent, so
    it has no dipole of its own), naming its first atom and the cell direction.
    """
    positions, cell, periodic = system_arrays(atoms)
    n = len(positions)
    i, j, shifts = _bonds(atoms, scale)
    self_image = i == j
    if np.any(self_image):
        k = int(np.flatnonzero(self_image)[0])
        raise _percolation_error(int(i[k]), shifts[k])
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)).tocsr()
    n_mol, labels = connected_components(graph, directed=False)
    # number the molecules by their lowest atom and take that atom as the root of the tree
    roots = np.full(n_mol, n, dtype=np.int64)
    np.minimum.at(roots, labels, np.arange(n))
    order = np.argsort(roots)
    renumber = np.empty(n_mol, dtype=np.int64)
    renumber[order] = np.arange(n_mol)
    index = renumber[labels]
    roots = roots[order]

    images = np.zeros((n, 3), dtype=np.int64)
    if len(i) and periodic.any():
        images = _tree_images(n, i, j, shifts, roots)
        # every bond must join the two atoms' chosen images; otherwise the molecule wraps around
        bad = np.any(images[j] - images[i] != shifts, axis=1)
        if np.any(bad):
            k = int(np.flatnonzero(bad)[0])
            raise _percolation_error(int(i[k]), shifts[k] - (images[j[k]] - images[i[k]]))
    unwrapped = positions + images @ cell
    return Molecules(index=index, unwrapped=unwrapped, images=images)


def _tree_images(n: int, i: np.ndarray, j: np.ndarray, shifts: np.ndarray, roots: np.ndarray) -> np.ndarray:
    """Cell shift of every atom relative to its molecule's root, along a breadth-first tree.

    A virtual node ``n`` joins the roots so one search covers all molecules; the shift of each
    atom relative to its parent is summed up to the root by pointer jumping (log₂ depth steps)."""
    # both directions of every bond, keyed by (from, to)
    src = np.concatenate([i, j])
    dst = np.concatenate([j, i])
    step = np.concatenate([shifts, -shifts])
    key = src * (n + 1) + dst
    sort = np.argsort(key, kind="stable")
    key, step = key[sort], step[sort]
    dup = np.flatnonzero(key[1:] == key[:-1])
    if dup.size:  # two bonds between the same atoms through different images
        k = int(dup[0])
        raise _percolation_error(int(key[k] // (n + 1)), step[k + 1] - step[k])
    tree = coo_matrix((np.ones(len(src) + len(roots)),
                       (np.concatenate([src, np.full(len(roots), n)]), np.concatenate([dst, roots]))),
                      shape=(n + 1, n + 1)).tocsr()
    _, parent = breadth_first_order(tree, n, directed=True, return_predecessors=True)
    parent = parent[:n].astype(np.int64)
    is_root = parent == n
    parent[is_root] = np.flatnonzero(is_root)
    wanted = parent * (n + 1) + np.arange(n)
    pos = np.searchsorted(key, wanted)
    pos = np.minimum(pos, len(key) - 1)
    shift = np.where(is_root[:, None], 0, step[pos])
    # pointer jumping: shift relative to ancestor, ancestor <- ancestor's ancestor
    ancestor = parent
    while np.any(ancestor != ancestor[ancestor]):
        shift = shift + shift[ancestor]
        ancestor = ancestor[ancestor]
    return shift


def _percolation_error(atom: int, shift: np.ndarray) -> DataError:
    direction = " ".join(f"{int(s):+d}{'abc'[k]}" for k, s in enumerate(shift) if s) or "?"
    return DataError(
        f"the molecule of atom {atom} is bonded to its own periodic image (through {direction}): it has no "
        f"finite extent, so a cell dipole made of whole molecules is not defined (is the cell too small, or "
        f"are two molecules closer than bonded atoms?)")


def molecule_dipoles(atoms: Atoms, charges: np.ndarray, atomic_dipoles: np.ndarray | None = None,
                     molecules: Molecules | None = None) -> np.ndarray:
    """Dipole of every molecule about its own centre of mass, (n_molecules, 3) in e·Å.

    ``charges`` (n_atoms,) in e, ``atomic_dipoles`` (n_atoms, 3) in e·Å (or ``None``);
    ``molecules`` from :func:`find_molecules` (found here when not given)."""
    mol = molecules if molecules is not None else find_molecules(atoms)
    q = np.asarray(charges, dtype=float).reshape(len(atoms))
    masses = atomic_masses[atoms.numbers]
    n_mol = mol.n_molecules
    total_mass = np.bincount(mol.index, weights=masses, minlength=n_mol)
    centre = np.stack([np.bincount(mol.index, weights=masses * mol.unwrapped[:, k], minlength=n_mol)
                       for k in range(3)], axis=1) / total_mass[:, None]
    local = q[:, None] * (mol.unwrapped - centre[mol.index])
    if atomic_dipoles is not None:
        local = local + np.asarray(atomic_dipoles, dtype=float).reshape(len(atoms), 3)
    return np.stack([np.bincount(mol.index, weights=local[:, k], minlength=n_mol) for k in range(3)], axis=1)


def molecular_dipole(atoms: Atoms, charges: np.ndarray, atomic_dipoles: np.ndarray | None = None,
                     molecules: Molecules | None = None) -> np.ndarray:
    """The cell dipole of the package's convention (3,) in e·Å: the sum of the molecules' dipoles
    about their own centres of mass (see the module docstring); for a molecule in vacuum with a
    total charge of zero it equals ``Σ q_i r_i + Σ p_i``."""
    return molecule_dipoles(atoms, charges, atomic_dipoles, molecules).sum(axis=0)
