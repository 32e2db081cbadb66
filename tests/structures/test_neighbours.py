"""The vesin neighbour search against ASE's, on molecules and periodic cells (triclinic, smaller
than twice the cutoff, mixed periodicity)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.neighborlist import neighbor_list

from mdplugin.core.errors import DataError
from mdplugin.structures.neighbours import closest_pair, nearest_neighbour_distances, neighbour_pairs


def _same_pairs(atoms: Atoms, cutoff: float) -> None:
    pairs = neighbour_pairs(atoms, cutoff)
    i, j, shifts, vectors = neighbor_list("ijSD", atoms, cutoff)
    ours = sorted(zip(pairs.i, pairs.j, map(tuple, pairs.shifts)))
    theirs = sorted(zip(i, j, map(tuple, shifts)))
    assert ours == theirs
    expected = atoms.positions[pairs.j] + pairs.shifts @ atoms.cell.array - atoms.positions[pairs.i]
    np.testing.assert_allclose(pairs.vectors, expected, atol=1e-12)
    np.testing.assert_allclose(pairs.distances, np.linalg.norm(expected, axis=1), atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_random_triclinic_cells_match_ase(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(2.5, 7.0, 3)) + np.triu(rng.uniform(-1.0, 1.0, (3, 3)), 1)
    n = int(rng.integers(1, 12))
    atoms = Atoms(numbers=rng.integers(1, 9, n), scaled_positions=rng.uniform(size=(n, 3)), cell=cell, pbc=True)
    _same_pairs(atoms, 5.0)  # cells smaller than twice the cutoff: atoms see their own images


def test_molecules_and_mixed_periodicity_match_ase() -> None:
    _same_pairs(molecule("CH3CH2OH"), 3.0)
    slab = Atoms("H3O", positions=[[0, 0, 0], [0.9, 0.3, 0.1], [0.2, 1.1, 0.4], [1.5, 1.5, 1.5]],
                 cell=[[3, 0, 0], [0.4, 3.2, 0], [0, 0, 9]], pbc=[True, True, False])
    _same_pairs(slab, 4.0)


def test_closest_pair_and_nearest_neighbours() -> None:
    water = molecule("H2O")
    i, j, d = closest_pair(water, 1.2)
    assert {i, j} == {0, 1} or {i, j} == {0, 2}
    assert d == pytest.approx(np.linalg.norm(water.positions[1] - water.positions[0]))
    assert closest_pair(water, 0.5) is None
    nearest = nearest_neighbour_distances(water, 3.0)
    assert nearest.shape == (3,) and np.all(np.isfinite(nearest))
    lone = Atoms("H2", positions=[[0, 0, 0], [10, 0, 0]])
    assert np.all(np.isinf(nearest_neighbour_distances(lone, 3.0)))


def test_degenerate_cells_are_named() -> None:
    flat = Atoms("H", positions=[[0, 0, 0]], cell=[[1, 0, 0], [2, 0, 0], [0, 0, 1]], pbc=True)
    with pytest.raises(DataError, match="degenerate"):
        neighbour_pairs(flat, 2.0)
    missing = Atoms("H", positions=[[0, 0, 0]], cell=[[1, 0, 0], [0, 1, 0], [0, 0, 0]], pbc=True)
    with pytest.raises(DataError, match="cell vector c is zero"):
        neighbour_pairs(missing, 2.0)
    # a cell of non-zero volume whose images are nearly on top of each other: an atom would see
    # ~cutoff / 1e-9 images of itself (vesin returns a wrong list); refused, for a slab too
    thin = Atoms("H", positions=[[0, 0, 0]], cell=[[4, 0, 0], [0, 4, 0], [0, 0, 1e-9]], pbc=True)
    with pytest.raises(DataError, match=r"degenerate: the periodic images along c are 1e-09 Å apart"):
        neighbour_pairs(thin, 2.0)
    sheared = Atoms("H", positions=[[0, 0, 0]], cell=[[4, 0, 0], [4, 1e-5, 0], [0, 0, 0]], pbc=[True, True, False])
    with pytest.raises(DataError, match="degenerate: the periodic images along a are 1e-05 Å apart"):
        neighbour_pairs(sheared, 2.0)
    not_finite = Atoms("H", positions=[[0, 0, 0]], cell=[[4, 0, 0], [0, np.nan, 0], [0, 0, 4]], pbc=True)
    with pytest.raises(DataError, match="the cell contains NaN or inf"):
        neighbour_pairs(not_finite, 2.0)
    for atoms in (flat, missing, thin, sheared, not_finite):  # one line each
        with pytest.raises(DataError) as caught:
            neighbour_pairs(atoms, 2.0)
        assert "\n" not in str(caught.value)


def _within(i, j, vectors, distances, cutoff) -> set:
    keep = distances < cutoff
    return {(int(a), int(b), tuple(np.round(v, 9))) for a, b, v in zip(i[keep], j[keep], vectors[keep])}


def test_verlet_list_reuses_its_search_and_never_misses_a_pair() -> None:
    """Atoms diffusing in a small triclinic cell (own images within the cutoff): at every step the
    pairs within the cutoff equal a fresh search's, vectors and all, while the list is searched again
    only every few steps (when an atom has moved by half the skin)."""
    from mdplugin.structures.neighbours import VerletPairs, pair_vectors, sorted_pairs, system_arrays

    rng = np.random.default_rng(3)
    cell = [[4.2, 0.0, 0.0], [0.9, 3.8, 0.0], [-0.6, 0.5, 4.4]]
    atoms = Atoms(numbers=rng.integers(1, 9, 14), scaled_positions=rng.uniform(size=(14, 3)), cell=cell, pbc=True)
    verlet = VerletPairs(cutoff=3.5, skin=0.4)
    for step in range(60):
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
        got = verlet.pairs(atoms)
        assert np.all(got[3] < 3.5)  # the skin's pairs are dropped: only pairs within the cutoff
        positions, box, periodic = system_arrays(atoms)
        fresh = sorted_pairs(positions, box, periodic, 3.5)
        assert _within(*got, 3.5) == _within(fresh[0], fresh[1], *pair_vectors(positions, *fresh), 3.5)
    assert 3 <= verlet.searches <= 30


def test_verlet_list_searches_again_when_the_structure_changes() -> None:
    from mdplugin.structures.neighbours import VerletPairs

    atoms = molecule("CH3CH2OH")
    verlet = VerletPairs(cutoff=3.0)
    verlet.pairs(atoms)
    verlet.pairs(atoms)
    assert verlet.searches == 1
    other = atoms.copy()
    other.numbers[0] = 7
    verlet.pairs(other)
    assert verlet.searches == 2
    boxed = other.copy()
    boxed.cell = np.eye(3) * 6.0
    boxed.pbc = True
    verlet.pairs(boxed)
    assert verlet.searches == 3
    boxed.set_cell(np.eye(3) * 6.1, scale_atoms=False)  # NPT: the cell moved
    verlet.pairs(boxed)
    assert verlet.searches == 4
    moved = boxed.copy()
    moved.positions[2] += [0.25, 0.0, 0.0]  # more than half the skin
    verlet.pairs(moved)
    assert verlet.searches == 5


def _split_by_the_wall(rng: np.random.Generator) -> tuple[Atoms, Atoms]:
    """Ethanol in a triclinic cell, moved so that the cell wall cuts it, and wrapped (atoms on both
    sides of the cell), and the same molecule whole in a cell far larger than it."""
    mol = molecule("CH3CH2OH")
    cell = np.array([[10.0, 0.0, 0.0], [1.5, 9.5, 0.0], [-1.0, 1.2, 9.8]])  # heights > 2 x its size
    split = Atoms(mol.numbers, positions=mol.positions - mol.positions.mean(0), cell=cell, pbc=True)
    split.positions += rng.uniform(-0.3, 0.3, 3)  # the centre near the corner: every wall cuts it
    split.wrap()
    assert np.ptp(split.positions, axis=0).max() > 5.0  # atoms really are on both sides
    whole = Atoms(mol.numbers, positions=mol.positions, cell=np.eye(3) * 30.0, pbc=True)
    return split, whole


@pytest.mark.parametrize("seed", range(3))
def test_a_molecule_across_the_wall_is_whole(seed: int) -> None:
    """The lost-atom test and the structure signature see a molecule cut by the cell wall as the
    molecule it is (the former dense codes saw atoms a cell length apart)."""
    from mdplugin.structures.neighbours import largest_nearest_neighbour_distance, pair_distances

    split, whole = _split_by_the_wall(np.random.default_rng(seed))
    gap = largest_nearest_neighbour_distance(whole, 4.0)
    assert gap < 1.6  # every atom of ethanol has a bonded neighbour
    assert largest_nearest_neighbour_distance(split, 4.0) == pytest.approx(gap, abs=1e-12)
    np.testing.assert_allclose(np.sort(pair_distances(split)), np.sort(pair_distances(whole)), atol=1e-12)
    # the same positions without the cell: atoms far apart (what the dense code measured)
    assert largest_nearest_neighbour_distance(Atoms(split.numbers, split.positions), 4.0) == np.inf


def test_pair_distances_are_minimum_image_in_triclinic_cells() -> None:
    import itertools

    from mdplugin.structures.neighbours import pair_distances

    rng = np.random.default_rng(11)
    cell = np.array([[4.0, 0.0, 0.0], [2.5, 3.5, 0.0], [1.0, 1.2, 3.8]])  # strongly skewed
    atoms = Atoms("H7", scaled_positions=rng.uniform(size=(7, 3)), cell=cell, pbc=True)
    images = np.array(list(itertools.product(range(-3, 4), repeat=3))) @ cell
    i, j = np.triu_indices(7, 1)
    brute = [np.linalg.norm(atoms.positions[b] + images - atoms.positions[a], axis=1).min() for a, b in zip(i, j)]
    np.testing.assert_allclose(pair_distances(atoms), brute, atol=1e-12)
    mol = molecule("H2O")
    np.testing.assert_allclose(pair_distances(mol), [np.linalg.norm(mol.positions[b] - mol.positions[a])
                                                     for a, b in zip(*np.triu_indices(3, 1))])


@pytest.mark.parametrize("n", [1, 2, 9, 48, 49])
def test_small_molecules_dense_path_equals_the_vesin_search(n: int) -> None:
    """Molecules of at most DENSE_MAX_ATOMS atoms are measured densely (vesin's call overhead);
    the answers are vesin's."""
    from mdplugin.structures.neighbours import DENSE_MAX_ATOMS

    rng = np.random.default_rng(n)
    atoms = Atoms(numbers=np.ones(n, int), positions=rng.uniform(0, 2.2 * n ** (1 / 3), (n, 3)))
    cutoff = 1.5
    pairs = neighbour_pairs(atoms, cutoff)
    expected = np.full(n, np.inf)
    np.minimum.at(expected, pairs.i, pairs.distances)
    np.testing.assert_allclose(nearest_neighbour_distances(atoms, cutoff), expected, atol=1e-12)
    got = closest_pair(atoms, cutoff)
    if len(pairs) == 0:
        assert got is None
    else:
        k = int(np.argmin(pairs.distances))
        assert got[2] == pytest.approx(pairs.distances[k], abs=1e-12)
        assert {got[0], got[1]} == {int(pairs.i[k]), int(pairs.j[k])}
    assert (n <= DENSE_MAX_ATOMS) == (n != 49)


@pytest.mark.parametrize("seed", range(3))
def test_half_list_is_the_full_list_once_in_canonical_orientation(seed: int) -> None:
    """The half list of the expansion (every pair once; ``i < j``, or an atom and its own image with
    a lexicographically positive shift) gives the full list when each pair is also read from its
    other end — in small triclinic cells (own images), a slab, and batches of cells and molecules."""
    from mdplugin.structures.neighbours import batch_pairs

    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(2.5, 7.0, 3)) + np.triu(rng.uniform(-1.0, 1.0, (3, 3)), 1)
    box = Atoms(numbers=rng.integers(1, 9, 9), scaled_positions=rng.uniform(size=(9, 3)), cell=cell, pbc=True)
    slab = box.copy()
    slab.pbc = [True, False, True]
    frames = [box, molecule("CH3CH2OH"), slab, molecule("H2O")]
    full = batch_pairs(frames, 4.5)
    half = batch_pairs(frames, 4.5, full_list=False)
    assert len(full[0]) == 2 * len(half[0])
    i, j, frame, vectors, _ = half
    assert np.all(i <= j) and np.any(i == j)  # the small cell: atoms see their own images
    both = {(int(a), int(b), int(f), tuple(np.round(v, 9))) for a, b, f, v in zip(i, j, frame, vectors)}
    both |= {(int(b), int(a), int(f), tuple(np.round(-v, 9))) for a, b, f, v in zip(i, j, frame, vectors)}
    # both ends of the half list are the full list, and no pair (nor an image ±S) comes twice
    assert both == {(int(a), int(b), int(f), tuple(np.round(v, 9))) for a, b, f, v in zip(*full[:4])}
    assert np.all(np.diff(i[frame == 0]) >= 0)  # sorted by centre within a frame
