"""Neighbour pairs of molecules and periodic cells, from vesin.

One module answers every "which atoms are near which" question of the package (features, data
checks, MD safety checks, the structure signature of active learning), on
`vesin <https://luthaf.fr/vesin>`_'s cell-list neighbour search:

    pairs = neighbour_pairs(atoms, cutoff=5.0)          # full list: (i, j) and (j, i)
    pairs.i, pairs.j, pairs.shifts, pairs.vectors, pairs.distances

A molecule (no periodic direction, or an all-zero cell) is searched without images; a cell is
searched with its images in the periodic directions (an atom sees its own images when the cell is
smaller than twice the cutoff). ``vectors[k] = r[j] + shifts[k] @ cell − r[i]`` (Å).

:func:`pair_distances` is the one dense question, every pair's distance (minimum image in a
cell), for a whole-structure signature; everything else is a cutoff search.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from numba import njit

from ..core.errors import DataError

__all__ = ["Pairs", "system_arrays", "neighbour_pairs", "batch_pairs", "sorted_pairs", "pair_vectors",
           "pair_vectors_within", "VerletPairs",
           "closest_pair", "nearest_neighbour_distances", "largest_nearest_neighbour_distance", "pair_distances",
           "DENSE_MAX_ATOMS"]


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
    if not np.all(np.isfinite(cell)):
        raise DataError(f"the cell contains NaN or inf: {cell.tolist()}")
    lengths = np.linalg.norm(cell, axis=1)
    if np.any(lengths[periodic] == 0.0):
        axis = "abc"[int(np.flatnonzero(periodic & (lengths == 0.0))[0])]
        raise DataError(f"periodic cell vector {axis} is zero: give the cell or set pbc False along {axis}")
    if periodic.all() and abs(np.linalg.det(cell)) < 1e-6 * max(lengths.prod(), 1e-300):
        raise DataError(f"the cell is degenerate (zero volume): {cell.tolist()}")
    heights = periodic_heights(cell, periodic)
    if np.any(heights < MIN_IMAGE_DISTANCE):
        axis = "abc"[int(np.flatnonzero(periodic)[np.argmin(heights)])]
        raise DataError(f"the cell is degenerate: the periodic images along {axis} are {heights.min():.3g} Å apart "
                        f"(closer than {MIN_IMAGE_DISTANCE} Å): {cell.tolist()}")
    return positions, cell, periodic


#: periodic images closer than this (Å) make a cell degenerate (the data sets' closest atoms)
MIN_IMAGE_DISTANCE = 0.1


def periodic_heights(cell: np.ndarray, periodic: np.ndarray) -> np.ndarray:
    """The spacing (Å) of the periodic images along each periodic direction (n_periodic,): the
    length of each periodic cell vector's part outside the span of the other periodic ones (for a
    3-D cell, the distance between lattice planes)."""
    vectors = np.asarray(cell, dtype=float)[np.asarray(periodic, dtype=bool)]
    heights = np.empty(len(vectors))
    for k in range(len(vectors)):  # at most three cell vectors
        v, others = vectors[k], np.delete(vectors, k, axis=0)
        if len(others):
            v = v - others.T @ np.linalg.lstsq(others.T, v, rcond=None)[0]
        heights[k] = np.linalg.norm(v)
    return heights


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


def sorted_pairs(positions: np.ndarray, box: np.ndarray, periodic: np.ndarray, cutoff: float,
                 full_list: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """vesin's pairs of one structure (:func:`system_arrays`) in a canonical order — by centre,
    neighbour, then image — as ``(i, j, shift_vectors)`` with ``shift_vectors = S @ box`` (n_pairs, 3)
    Å; :func:`pair_vectors` gives their vectors. The order and the vectors depend only on the
    structure, not on how it was searched (a batch, a Verlet list).

    ``full_list=False`` gives every pair once, oriented canonically: ``i < j``, or for an atom and
    its own image (``i == j``) the image whose shift is lexicographically positive (the full list
    has both ``S`` and ``−S``)."""
    from vesin import NeighborList

    if len(positions) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros((0, 3))
    i, j, shifts = NeighborList(cutoff=float(cutoff), full_list=full_list).compute(positions, box, periodic, "ijS")
    i, j, shifts = i.astype(np.int64), j.astype(np.int64), shifts.astype(np.int64)
    if not full_list:
        i, j, shifts = _canonical_half(i, j, shifts)
    order = np.lexsort((shifts[:, 2], shifts[:, 1], shifts[:, 0], j, i))
    return i[order], j[order], shifts[order].astype(np.float64) @ box


def _canonical_half(i: np.ndarray, j: np.ndarray, shifts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-list pairs turned so that ``i < j``, or ``i == j`` with a lexicographically positive
    shift (the pair ``(j, i, −S)`` is the same pair seen from the other end)."""
    negative = (shifts[:, 0] < 0) | ((shifts[:, 0] == 0) & ((shifts[:, 1] < 0) | ((shifts[:, 1] == 0) & (shifts[:, 2] < 0))))
    flip = (i > j) | ((i == j) & negative)
    return np.where(flip, j, i), np.where(flip, i, j), np.where(flip[:, None], -shifts, shifts)


def pair_vectors(positions: np.ndarray, i: np.ndarray, j: np.ndarray, shift_vectors: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(vectors, distances)``: ``r_j − r_i + shift`` (n_pairs, 3) Å and their lengths (n_pairs,),
    in one compiled pass (an MD step asks at every step: numpy's gathers and temporaries cost 3×)."""
    vectors, distances = np.empty((len(i), 3)), np.empty(len(i))
    _pair_vectors(np.ascontiguousarray(positions, dtype=np.float64), i, j,
                  np.ascontiguousarray(shift_vectors, dtype=np.float64), vectors, distances)
    return vectors, distances


def pair_vectors_within(positions: np.ndarray, i: np.ndarray, j: np.ndarray, shift_vectors: np.ndarray, cutoff: float
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, vectors, distances)`` of the pairs of :func:`pair_vectors` closer than ``cutoff`` Å,
    in their order, in one compiled pass."""
    n = len(i)
    kept_i, kept_j = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    vectors, distances = np.empty((n, 3)), np.empty(n)
    count = _pair_vectors_within(np.ascontiguousarray(positions, dtype=np.float64), i, j,
                                 np.ascontiguousarray(shift_vectors, dtype=np.float64), float(cutoff), kept_i, kept_j,
                                 vectors, distances)
    return kept_i[:count], kept_j[:count], vectors[:count], distances[:count]


@njit(cache=True, nogil=True)
def _pair_vectors_within(positions, i, j, shift_vectors, cutoff, kept_i, kept_j, vectors, distances):
    count = 0
    for p in range(len(i)):
        a, b = i[p], j[p]
        x = positions[b, 0] - positions[a, 0] + shift_vectors[p, 0]
        y = positions[b, 1] - positions[a, 1] + shift_vectors[p, 1]
        z = positions[b, 2] - positions[a, 2] + shift_vectors[p, 2]
        d = np.sqrt(x * x + y * y + z * z)
        if d < cutoff:
            kept_i[count] = a
            kept_j[count] = b
            vectors[count, 0] = x
            vectors[count, 1] = y
            vectors[count, 2] = z
            distances[count] = d
            count += 1
    return count


@njit(cache=True, nogil=True)
def _pair_vectors(positions, i, j, shift_vectors, vectors, distances):
    for p in range(len(i)):
        a, b = i[p], j[p]
        x = positions[b, 0] - positions[a, 0] + shift_vectors[p, 0]
        y = positions[b, 1] - positions[a, 1] + shift_vectors[p, 1]
        z = positions[b, 2] - positions[a, 2] + shift_vectors[p, 2]
        vectors[p, 0] = x
        vectors[p, 1] = y
        vectors[p, 2] = z
        distances[p] = np.sqrt(x * x + y * y + z * z)


def batch_pairs(frames, cutoff: float, full_list: bool = True
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour pairs (``full_list``, or every pair once: :func:`sorted_pairs`) of every frame of a
    batch: ``(i, j, frame, vectors, distances)`` with ``i``, ``j`` global atom indices (atoms of all
    frames in order), ``frame`` (n_pairs,) the frame of each pair, ``vectors`` (n_pairs, 3) Å and
    ``distances`` (n_pairs,) Å; frame by frame in frame order.

    Molecules are searched together, in ONE vesin call on the molecules laid side by side more than
    a cutoff apart (a call per molecule costs more in vesin's Python wrapper than the search of a
    small molecule). Every frame's pairs are in :func:`sorted_pairs`' order with the vectors of
    :func:`pair_vectors`, so a frame's pairs and vectors do not depend on the batch it is in (nor on
    a :class:`VerletPairs` list). Cells are searched one by one.
    A bad cell raises :class:`DataError` naming its frame."""
    sizes = np.array([len(a) for a in frames], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    arrays = []
    for k, atoms in enumerate(frames):
        try:
            arrays.append(system_arrays(atoms))
        except DataError as exc:
            raise DataError(f"frame {k}: {exc}") from None
    molecule = np.array([not periodic.any() for _, _, periodic in arrays], dtype=bool)
    parts = []
    if molecule.any():
        parts.append(_molecule_pairs([arrays[k][0] for k in np.flatnonzero(molecule)], offsets,
                                     np.flatnonzero(molecule), cutoff, full_list))
    cells = np.flatnonzero(~molecule)
    for k in cells:
        positions, box, periodic = arrays[k]
        i, j, shift_vectors = sorted_pairs(positions, box, periodic, cutoff, full_list)
        vectors, distances = pair_vectors(positions, i, j, shift_vectors)
        parts.append((i + offsets[k], j + offsets[k], np.full(len(i), k, dtype=np.int64), vectors, distances))
    if len(parts) == 1:
        return parts[0]
    i, j, frame, vectors, distances = (np.concatenate([part[q] for part in parts]) for q in range(5))
    if len(cells) and molecule.any():  # frame order
        order = np.argsort(frame, kind="stable")
        i, j, frame, vectors, distances = i[order], j[order], frame[order], vectors[order], distances[order]
    return i, j, frame, vectors, distances


def _molecule_pairs(positions: list, offsets: np.ndarray, frames: np.ndarray, cutoff: float,
                    full_list: bool = True) -> tuple:
    """:func:`batch_pairs` of molecules ``frames`` (their ``positions``) in one vesin search."""
    from vesin import NeighborList

    if len(positions) == 1:  # one molecule (an MD step): searched where it is
        own = laid = positions[0]
        local, owner = np.arange(len(own)), np.zeros(len(own), dtype=np.int64)
    else:
        lower = [p.min(axis=0) if len(p) else np.zeros(3) for p in positions]
        width = np.array([p.max(axis=0)[0] - lo[0] if len(p) else 0.0 for p, lo in zip(positions, lower)])
        start = np.concatenate([[0.0], np.cumsum(width + 2.0 * cutoff + 1.0)[:-1]])
        laid = np.concatenate([p - lo + [s, 0.0, 0.0] for p, lo, s in zip(positions, lower, start)])
        own = np.concatenate(positions)
        local = np.concatenate([np.arange(len(p)) for p in positions])
        owner = np.repeat(np.arange(len(positions)), [len(p) for p in positions])
    if len(laid) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, np.zeros((0, 3)), np.zeros(0)
    a, b = NeighborList(cutoff=float(cutoff), full_list=full_list).compute(laid, np.zeros((3, 3)), False, "ij")
    a, b = a.astype(np.int64), b.astype(np.int64)
    if not full_list:  # every pair once, as (lower, higher) index: the orientation of sorted_pairs
        a, b = np.minimum(a, b), np.maximum(a, b)
    order = np.lexsort((b, a))  # by centre, then neighbour: within a molecule, the same order alone or batched
    a, b = a[order], b[order]
    vectors, distances = pair_vectors(own, a, b, np.zeros((len(a), 3)))  # from the molecule's own positions
    keep = distances < cutoff
    if len(positions) == 1:
        base = offsets[frames[0]]
        frame = np.full(int(keep.sum()), frames[0], dtype=np.int64)
        return (base + a)[keep], (base + b)[keep], frame, vectors[keep], distances[keep]
    mine = owner[a]
    base = offsets[frames][mine]
    return (base + local[a])[keep], (base + local[b])[keep], frames[mine][keep], vectors[keep], distances[keep]


def _largest_displacement(positions: np.ndarray, reference: np.ndarray) -> float:
    if len(positions) == 0:
        return 0.0
    step = positions - reference
    return float(np.sqrt(np.einsum("px,px->p", step, step).max()))


class VerletPairs:
    """Neighbour pairs of one structure followed along an MD run: the list is searched with a skin
    (``cutoff + skin``) and reused while no atom has moved by more than ``skin / 2`` (and numbers,
    cell and periodicity are unchanged), only the vectors being recomputed — the classic Verlet
    list. The pairs returned are exactly those closer than ``cutoff``: the kept list's pairs in the
    skin are dropped when the vectors are computed (one compiled pass), so that the work per pair
    after it (harmonics, expansion, forces) is done for the pairs within the cutoff only (a fifth
    fewer in liquid water with the default skin).

    A search of a 1536-atom water box with vesin takes ~10–20 ms; recomputing the vectors of the
    kept list ~0.2 ms (``benchmarks/condensed.py``)."""

    def __init__(self, cutoff: float, skin: float = 0.4, full_list: bool = True):
        self.cutoff, self.skin, self.full_list = float(cutoff), float(skin), bool(full_list)
        self._key: tuple | None = None
        self._reference: np.ndarray | None = None
        self._list: tuple | None = None
        self.searches = 0  #: how many times the list was searched (not reused)

    def pairs(self, atoms: Atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(i, j, vectors, distances)`` of ``atoms`` (the full or half list of :func:`sorted_pairs`,
        sorted by centre)."""
        positions, box, periodic = system_arrays(atoms)
        key = (np.asarray(atoms.numbers).tobytes(), box.tobytes(), periodic.tobytes())
        if (self._key != key or self._reference is None or len(self._reference) != len(positions)
                or _largest_displacement(positions, self._reference) > 0.5 * self.skin):
            self._list = sorted_pairs(positions, box, periodic, self.cutoff + self.skin, self.full_list)
            self._key, self._reference = key, positions.copy()
            self.searches += 1
        i, j, shift_vectors = self._list
        return pair_vectors_within(positions, i, j, shift_vectors, self.cutoff)


#: molecules of at most this many atoms are measured with dense numpy distances instead of vesin:
#: vesin's Python wrapper costs ~0.2 ms a call whatever the size, a dense 8-atom molecule ~0.03 ms
#: (measured: 26 / 29 / 146 / 420 µs dense against 194 / 178 / 271 / 472 µs for vesin at 8 / 16 /
#: 32 / 64 atoms, one thread, load 12 on 2 cores, 7 Dec 2026) — and the lost-atom test of MD and
#: active learning asks at every step. The results are the same (tested).
DENSE_MAX_ATOMS = 48


def _dense_distances(positions: np.ndarray) -> np.ndarray:
    """(n, n) distances of a small molecule, ``inf`` on the diagonal."""
    diff = positions[:, None, :] - positions[None, :, :]
    d = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
    np.fill_diagonal(d, np.inf)
    return d


def _small_molecule(atoms: Atoms) -> np.ndarray | None:
    """The positions of a molecule of at most :data:`DENSE_MAX_ATOMS` atoms, else None."""
    if len(atoms) > DENSE_MAX_ATOMS or (atoms.pbc.any() and atoms.cell.array.any()):
        return None  # (the test of system_arrays, without its copies: this runs at every MD step)
    return atoms.positions


def closest_pair(atoms: Atoms, within: float) -> tuple[int, int, float] | None:
    """``(i, j, distance)`` of the closest two atoms (or an atom and its own image) nearer than
    ``within`` Å, or ``None`` when no two atoms are that close."""
    small = _small_molecule(atoms)
    if small is not None:
        if len(small) < 2:
            return None
        d = _dense_distances(small)
        k = int(np.argmin(d))
        i, j = divmod(k, len(small))
        return (min(i, j), max(i, j), float(d[i, j])) if d[i, j] < within else None
    pairs = neighbour_pairs(atoms, within, full_list=False)
    if len(pairs) == 0:
        return None
    k = int(np.argmin(pairs.distances))
    return int(pairs.i[k]), int(pairs.j[k]), float(pairs.distances[k])


def nearest_neighbour_distances(atoms: Atoms, cutoff: float) -> np.ndarray:
    """Distance of every atom to its nearest neighbour (n,), Å; ``inf`` for an atom with no
    neighbour within ``cutoff``."""
    small = _small_molecule(atoms)
    if small is not None:
        nearest = _dense_distances(small).min(axis=1) if len(small) > 1 else np.full(len(small), np.inf)
        nearest[nearest >= cutoff] = np.inf
        return nearest
    pairs = neighbour_pairs(atoms, cutoff, full_list=True)
    nearest = np.full(len(atoms), np.inf)
    np.minimum.at(nearest, pairs.i, pairs.distances)
    return nearest


def largest_nearest_neighbour_distance(atoms: Atoms, cutoff: float) -> float:
    """The largest distance from an atom to its nearest neighbour, Å: ``inf`` when some atom has
    no neighbour within ``cutoff`` Å (or for fewer than two atoms). Images count in a cell, so a
    molecule split by the cell wall is whole. Costs one cutoff search (no n × n distances)."""
    if len(atoms) < 2:
        return float("inf")
    return float(nearest_neighbour_distances(atoms, cutoff).max())


def pair_distances(atoms: Atoms) -> np.ndarray:
    """Distances of all ``n (n − 1) / 2`` pairs ``i < j`` (row-major order), Å: the minimum-image
    distance in a cell (ASE's ``find_mic``, exact for triclinic cells), the plain one for a
    molecule. Dense by design: a fingerprint of the whole structure, not a neighbour search."""
    from ase.geometry import get_distances

    positions, box, periodic = system_arrays(atoms)
    i, j = np.triu_indices(len(positions), 1)
    if not periodic.any():
        return np.linalg.norm(positions[j] - positions[i], axis=1)
    _, d = get_distances(positions, cell=box, pbc=periodic)
    return d[i, j]
