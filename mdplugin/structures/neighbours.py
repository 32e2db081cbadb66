"""Neighbour pairs of molecules and periodic cells, from vesin.

One module answers every "which atoms are near which" question of the package (features, data
checks, MD safety checks), on `vesin <https://luthaf.fr/vesin>`_'s cell-list neighbour search:

    pairs = neighbour_pairs(atoms, cutoff=5.0)          # full list: (i, j) and (j, i)
    pairs.i, pairs.j, pairs.shifts, pairs.vectors, pairs.distances

A molecule (no periodic direction, or an all-zero cell) is searched without images; a cell is
searched with its images in the periodic directions (an atom sees its own images when the cell is
smaller than twice the cutoff). ``vectors[k] = r[j] + shifts[k] @ cell − r[i]`` (Å).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms

from ..core.errors import DataError

__all__ = ["Pairs", "system_arrays", "neighbour_pairs", "closest_pair", "nearest_neighbour_distances"]


@dataclass(frozen=True)
class Pairs:
    """Neighbour pairs of one structure (``n_pairs`` of them).

    Attributes
    ----------
    i, j : (n_pairs,) int
        Centre and neighbour atom indices.
    shifts : (n_pairs, 3) int
        Cell-image shift of the neighbour (zeros for a molecule).
    vectors : (n_pairs, 3) float
        ``r[j] + shifts @ cell − r[i]``, Å.
    distances : (n_pairs,) float
        Lengths of ``vectors``, Å.
    """

    i: np.ndarray
    j: np.ndarray
    shifts: np.ndarray
    vectors: np.ndarray
    distances: np.ndarray

    def __len__(self) -> int:
        return int(self.i.shape[0])


def system_arrays(atoms: Atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(positions (n, 3), box (3, 3), periodic (3,) bool)`` as the neighbour search takes them.

    A structure with no periodic direction or an all-zero cell is a molecule (zero box, no
    periodic direction). A periodic direction whose cell vector is zero, or a singular cell, is a
    :class:`DataError` naming the problem."""
    positions = np.ascontiguousarray(atoms.positions, dtype=np.float64)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    periodic = np.asarray(atoms.pbc, dtype=bool).reshape(-1)
    if periodic.size == 1:
        periodic = np.repeat(periodic, 3)
    if not periodic.any() or not np.any(cell):
        return positions, np.zeros((3, 3)), np.zeros(3, dtype=bool)
    lengths = np.linalg.norm(cell, axis=1)
    if np.any(lengths[periodic] == 0.0):
        axis = "abc"[int(np.flatnonzero(periodic & (lengths == 0.0))[0])]
        raise DataError(f"periodic cell vector {axis} is zero: give the cell or set pbc False along {axis}")
    if periodic.all() and abs(np.linalg.det(cell)) < 1e-6 * max(lengths.prod(), 1e-300):
        raise DataError(f"the cell is degenerate (zero volume): {cell.tolist()}")
    return positions, cell, periodic


def neighbour_pairs(atoms: Atoms, cutoff: float, full_list: bool = True) -> Pairs:
    """All pairs of ``atoms`` closer than ``cutoff`` (Å), images included for a cell.

    ``full_list`` gives both ``(i, j)`` and ``(j, i)``; otherwise each pair once. Pairs are in
    vesin's order (not sorted)."""
    from vesin import NeighborList

    positions, box, periodic = system_arrays(atoms)
    if len(positions) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Pairs(empty, empty, np.zeros((0, 3), dtype=np.int64), np.zeros((0, 3)), np.zeros(0))
    finder = NeighborList(cutoff=float(cutoff), full_list=full_list)
    i, j, shifts, vectors, distances = finder.compute(positions, box, periodic, "ijSDd")
    return Pairs(i.astype(np.int64), j.astype(np.int64), shifts.astype(np.int64), vectors, distances)


def closest_pair(atoms: Atoms, within: float) -> tuple[int, int, float] | None:
    """``(i, j, distance)`` of the closest two atoms (or an atom and its own image) nearer than
    ``within`` Å, or ``None`` when no two atoms are that close."""
    pairs = neighbour_pairs(atoms, within, full_list=False)
    if len(pairs) == 0:
        return None
    k = int(np.argmin(pairs.distances))
    return int(pairs.i[k]), int(pairs.j[k]), float(pairs.distances[k])


def nearest_neighbour_distances(atoms: Atoms, cutoff: float) -> np.ndarray:
    """Distance of every atom to its nearest neighbour (n,), Å; ``inf`` for an atom with no
    neighbour within ``cutoff``."""
    pairs = neighbour_pairs(atoms, cutoff, full_list=True)
    nearest = np.full(len(atoms), np.inf)
    np.minimum.at(nearest, pairs.i, pairs.distances)
    return nearest
