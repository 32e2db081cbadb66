"""The spherical expansion equals featomic's, for periodic cells and molecules.

:class:`~mdplugin.features.expansion.SphericalExpansion` (vesin pairs, sphericart harmonics,
featomic's radial spline, compiled per-pair sums) is compared with featomic's own
``SphericalExpansion`` given the same spline (:meth:`SphericalExpansion.featomic_reference`):
values, ``positions`` gradients and ``strain`` gradients to 1e-10 relative, on random triclinic
boxes, cells smaller than twice the cutoff (atoms see their own images), liquid water, molecules in
vacuum and batches mixing them, with several compositions. Then the physics featomic does not
check for us: the force/strain contraction equals finite differences of a scalar of the
coefficients, an atom moved by whole cell vectors changes nothing, a slab (mixed periodicity,
which featomic refuses) equals a cell padded with vacuum, and bad cells are named.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.io import read

from mdplugin.core.errors import DataError
from mdplugin.features.expansion import SphericalExpansion

from ..conftest import SHARED_DATA

TRAJ = Path(__file__).resolve().parents[2] / "examples" / "trajectories"
WATER_BOX = SHARED_DATA / "water-box" / "water32_tip3p_300K.xyz"
MD_HYPERS = dict(cutoff=5.0, max_radial=4, max_angular=3, gaussian_width=0.3, smoothing_width=0.5)
OTHER_HYPERS = dict(cutoff=3.5, max_radial=3, max_angular=3, gaussian_width=0.4, smoothing_width=0.8)
TOL = 1e-10


def random_cell(rng, numbers, cell) -> Atoms:
    cell = np.asarray(cell, dtype=float)
    atoms = Atoms(numbers=rng.choice(numbers, len(numbers)), cell=cell, pbc=True)
    # keep atoms at least 0.7 Å apart (featomic and we agree anyway; this keeps the density physical)
    positions = []
    while len(positions) < len(numbers):
        trial = rng.random(3) @ cell
        others = np.array(positions).reshape(-1, 3)
        if len(others) == 0 or Atoms(positions=np.vstack([others, trial]), cell=cell, pbc=True).get_distances(
                len(others), range(len(others)), mic=True).min() > 0.7:
            positions.append(trial)
    atoms.positions = np.array(positions)
    return atoms


def periodic_cases():
    rng = np.random.default_rng(7)
    triclinic = [[6.0, 0.0, 0.0], [1.7, 5.5, 0.0], [-1.2, 0.9, 6.3]]
    small = [[3.1, 0.0, 0.0], [0.6, 2.9, 0.0], [0.4, -0.5, 3.3]]  # every length < 2 × cutoff
    return {
        "triclinic-HCO": ([random_cell(rng, [1] * 10 + [6] * 4 + [8] * 4, triclinic)], [1, 6, 8]),
        "small-cell-NaCl": ([random_cell(rng, [11, 17, 11, 17, 1], small)], [1, 11, 17]),
        "batch-of-cells": ([random_cell(rng, [1, 8, 8, 1, 1, 1], small),
                            random_cell(rng, [1] * 8 + [8] * 4, triclinic)], [1, 8]),
        "cells-and-molecules": ([random_cell(rng, [1, 6, 6, 1], small), molecule("CH3CH2OH"),
                                 random_cell(rng, [6, 8] * 5, triclinic)], [1, 6, 8]),
    }


def molecule_cases():
    dce = read(TRAJ / "dce_train.xyz", ":3")
    water = read(TRAJ / "water.xyz", ":2")
    lonely = Atoms("HClCH", positions=[[0, 0, 0], [0, 0, 1.3], [0, 0, 9.0], [0, 0, 10.1]])
    return {
        "dce": (dce, [1, 6, 17]),
        "water-and-dce": (water + dce[:1] + [lonely], [1, 6, 8, 17]),
        "one-atom": ([Atoms("H", positions=[[0, 0, 0]])], [1, 8]),
    }


def featomic_dense(calc: SphericalExpansion, frames, strain: bool):
    """featomic's values, positions and strain gradients in the engine's dense layout."""
    gradients = ["positions", "strain"] if strain else ["positions"]
    systems = [a if a.pbc.any() else Atoms(a.numbers, a.positions) for a in frames]
    tensor = calc.featomic_reference().compute(systems, gradients=gradients)
    offsets = np.r_[0, np.cumsum([len(a) for a in frames])]
    n, nr, sp = offsets[-1], calc.max_radial + 1, list(calc.species)
    values, grads, strains = {}, {}, {}
    for key, block in tensor.items():
        l, _, _, neighbour = (int(v) for v in key.values)
        cols = slice(sp.index(neighbour) * nr, (sp.index(neighbour) + 1) * nr)
        rows = offsets[block.samples.column("system")] + block.samples.column("atom")
        values.setdefault(l, np.zeros((n, 2 * l + 1, len(sp) * nr)))[rows, :, cols] = block.values
        g = block.gradient("positions")
        per_l = grads.setdefault(l, {})
        for k, (sample, system, atom) in enumerate(g.samples.values):
            pair = (int(rows[sample]), int(offsets[system] + atom))
            per_l.setdefault(pair, np.zeros((3, 2 * l + 1, len(sp) * nr)))[:, :, cols] = g.values[k]
        if strain:
            s = block.gradient("strain")
            dense = strains.setdefault(l, np.zeros((n, 3, 3, 2 * l + 1, len(sp) * nr)))
            dense[rows[s.samples.column("sample")], ..., cols] = s.values
    return values, grads, strains


def assert_equals_featomic(calc: SphericalExpansion, frames) -> None:
    periodic = all(a.pbc.all() for a in frames)
    exp = calc.compute(frames, gradients=True)
    values, grads, strains = featomic_dense(calc, frames, strain=periodic)
    floor = 1e-6 * max(np.abs(v).max() for v in values.values())  # an l that cancels by symmetry
    for l in range(calc.max_angular + 1):
        scale = max(np.abs(values[l]).max(), floor)
        assert exp.values[l].shape == values[l].shape
        assert np.abs(exp.values[l] - values[l]).max() <= TOL * scale, l
        rows = {(int(i), int(j)): k for k, (i, j) in enumerate(exp.pairs)}
        assert set(grads[l]) <= set(rows)  # every featomic gradient sample; ours may add zero rows
        scale = max([np.abs(g).max() for g in grads[l].values()] + [floor])
        for pair, k in rows.items():
            ref = grads[l].get(pair, 0.0)
            assert np.abs(exp.gradient_values[l][k] - ref).max() <= TOL * scale, (l, pair)
        if periodic:
            scale = max(np.abs(strains[l]).max(), floor)
            assert np.abs(exp.pair_gradients.strain()[l] - strains[l]).max() <= TOL * scale, l


@pytest.mark.parametrize("name", list(periodic_cases()))
@pytest.mark.parametrize("hypers", [MD_HYPERS, OTHER_HYPERS], ids=["md", "other"])
def test_periodic_cells_equal_featomic(name, hypers):
    frames, species = periodic_cases()[name]
    assert_equals_featomic(SphericalExpansion(species, **hypers), frames)


@pytest.mark.parametrize("name", list(molecule_cases()))
def test_molecules_equal_featomic(name):
    frames, species = molecule_cases()[name]
    assert_equals_featomic(SphericalExpansion(species, **MD_HYPERS), frames)


@pytest.mark.skipif(not WATER_BOX.exists(), reason="shared water-box data absent")
def test_liquid_water_equals_featomic():
    water = read(WATER_BOX, 0)
    water.rattle(0.02, seed=3)
    assert_equals_featomic(SphericalExpansion([1, 8], **MD_HYPERS), [water])


def test_small_cell_sees_its_own_images():
    """One atom in a 2 Å cube: every neighbour is an image of itself; the expansion is not the
    isolated atom's, and featomic agrees."""
    atom = Atoms("H", positions=[[0.3, 0.2, 0.1]], cell=np.eye(3) * 2.0, pbc=True)
    calc = SphericalExpansion([1], **OTHER_HYPERS)
    exp = calc.compute(atom)
    alone = calc.compute(Atoms("H", positions=[[0, 0, 0]]))
    assert np.abs(exp.values[0] - alone.values[0]).max() > 0.1 * np.abs(alone.values[0]).max()
    assert_equals_featomic(calc, [atom])


def scalar_and_gradient(exp, weights):
    """A random linear scalar of the coefficients, E = Σ w·c, and its ∂E/∂c (the weights)."""
    return sum(float(np.vdot(w, v)) for w, v in zip(weights, exp.values)), weights


def test_force_and_strain_contraction_equals_finite_differences():
    """forces_and_strain(∂E/∂c) gives −∂E/∂r and ∂E/∂ε of E = Σ w·c, by central differences
    of the positions and of a homogeneous strain of a triclinic cell smaller than twice the cutoff."""
    frames, species = periodic_cases()["small-cell-NaCl"]
    atoms = frames[0]
    calc = SphericalExpansion(species, **OTHER_HYPERS)
    exp = calc.compute(atoms, gradients=True)
    rng = np.random.default_rng(1)
    weights = [rng.normal(size=v.shape) for v in exp.values]
    forces, strain = exp.pair_gradients.forces_and_strain(weights)
    h = 1e-5
    for atom in range(len(atoms)):
        for x in range(3):
            energies = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[atom, x] += sign * h
                energies.append(scalar_and_gradient(calc.compute(moved), weights)[0])
            assert abs(-(energies[0] - energies[1]) / (2 * h) - forces[atom, x]) < 1e-6 * max(1.0, np.abs(forces).max())
    for a in range(3):
        for b in range(3):
            energies = []
            for sign in (1, -1):
                eps = np.eye(3)
                eps[a, b] += sign * h
                strained = atoms.copy()
                strained.set_cell(atoms.cell.array @ eps.T, scale_atoms=False)
                strained.positions = atoms.positions @ eps.T
                energies.append(scalar_and_gradient(calc.compute(strained), weights)[0])
            assert abs((energies[0] - energies[1]) / (2 * h) - strain[0, a, b]) < 1e-6 * max(1.0, np.abs(strain).max())


def test_contraction_equals_the_dense_gradients():
    frames, species = periodic_cases()["cells-and-molecules"]
    calc = SphericalExpansion(species, **MD_HYPERS)
    exp = calc.compute(frames, gradients=True)
    rng = np.random.default_rng(2)
    weights = [rng.normal(size=v.shape) for v in exp.values]
    forces, strain = exp.pair_gradients.forces_and_strain(weights)
    pairs = exp.pairs
    dense_forces = np.zeros_like(forces)
    for l, w in enumerate(weights):
        e = np.einsum("kamp,kmp->ka", exp.gradient_values[l], w[pairs[:, 0]])
        np.add.at(dense_forces, pairs[:, 1], -e)
    np.testing.assert_allclose(forces, dense_forces, atol=1e-11 * np.abs(forces).max())
    dense_strain = sum(np.einsum("ibamp,imp->ab", s, w) for s, w in zip(exp.pair_gradients.strain(), weights))
    periodic = [k for k, a in enumerate(frames) if a.pbc.all()]
    np.testing.assert_allclose(strain[periodic].sum(axis=0) + 0.0 * dense_strain,
                               strain[periodic].sum(axis=0))  # shapes
    np.testing.assert_allclose(strain.sum(axis=0), dense_strain, atol=1e-11 * np.abs(dense_strain).max())


def test_atoms_outside_the_cell_are_wrapped_consistently():
    """Moving atoms by whole cell vectors (far outside the cell) changes neither the values nor the
    forces and strain of a contraction: no atom is ever mis-imaged."""
    frames, species = periodic_cases()["triclinic-HCO"]
    atoms = frames[0]
    moved = atoms.copy()
    shifts = np.zeros((len(atoms), 3))
    shifts[0] = [7, -3, 12]
    shifts[5] = [-20, 4, 1]
    shifts[-1] = [0, 0, -9]
    moved.positions += shifts @ atoms.cell.array
    calc = SphericalExpansion(species, **MD_HYPERS)
    a, b = calc.compute(atoms, gradients=True), calc.compute(moved, gradients=True)
    weights = [np.random.default_rng(3).normal(size=v.shape) for v in a.values]
    for x, y in zip(a.values, b.values):
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-12 * np.abs(x).max())
    for x, y in zip(a.pair_gradients.forces_and_strain(weights), b.pair_gradients.forces_and_strain(weights)):
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-10 * np.abs(x).max())


def test_a_slab_equals_a_cell_padded_with_vacuum():
    """Mixed periodicity (featomic refuses it): a slab periodic in x and y equals the same atoms in a
    fully periodic cell with more than a cutoff of vacuum along z, which featomic computes."""
    rng = np.random.default_rng(4)
    cell = np.array([[5.0, 0.0, 0.0], [1.0, 4.5, 0.0], [0.0, 0.0, 4.0]])
    slab = random_cell(rng, [1, 8, 8, 1, 6, 1], cell)
    slab.pbc = [True, True, False]
    padded = slab.copy()
    padded.pbc = True
    padded.cell[2] = [0.0, 0.0, 4.0 + 2 * MD_HYPERS["cutoff"] + 1.0]
    calc = SphericalExpansion([1, 6, 8], **MD_HYPERS)
    a, b = calc.compute(slab, gradients=True), calc.compute(padded, gradients=True)
    for x, y in zip(a.values, b.values):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-13 * np.abs(y).max())
    assert np.isnan(a.volumes[0]) and np.isfinite(b.volumes[0])
    assert_equals_featomic(calc, [padded])


@pytest.mark.parametrize("cell, pbc, words", [
    (np.zeros((3, 3)) + np.diag([4.0, 4.0, 0.0]), True, "cell vector c is zero"),
    ([[4.0, 0, 0], [0, 4.0, 0], [4.0, 4.0, 0]], True, "degenerate"),
])
def test_bad_cells_are_named(cell, pbc, words):
    atoms = Atoms("H2", positions=[[0, 0, 0], [0.7, 0, 0]], cell=cell, pbc=pbc)
    good = Atoms("H2", positions=[[0, 0, 0], [0.7, 0, 0]])
    with pytest.raises(DataError, match=f"frame 1: .*{words}"):
        SphericalExpansion([1], **MD_HYPERS).compute([good, atoms])


def test_unknown_element_is_named():
    with pytest.raises(DataError, match="frame 0: element O"):
        SphericalExpansion([1, 6], **MD_HYPERS).compute(molecule("H2O"))


def test_a_frames_numbers_do_not_depend_on_its_batch():
    frames, species = periodic_cases()["cells-and-molecules"]
    calc = SphericalExpansion(species, **MD_HYPERS)
    together = calc.compute(frames)
    start = 0
    for atoms in frames:
        alone = calc.compute(atoms)
        for x, y in zip(alone.values, together.values):
            np.testing.assert_array_equal(x, y[start : start + len(atoms)])
        start += len(atoms)


def test_kept_harmonics_buffers_are_reused_only_when_free():
    """A large structure's spherical harmonics, and the pairs' radial values and derivatives the
    force contraction reads, go into buffers the engine keeps between MD steps
    (no fresh 38 + 25 MB per step at 1536 atoms); an expansion still alive is never
    overwritten by the next one, and the numbers equal those of fresh arrays."""
    rng = np.random.default_rng(12)
    cell = np.diag([9.0, 9.5, 10.0]) + np.triu(rng.uniform(-1.0, 1.0, (3, 3)), 1)
    boxes = [Atoms(numbers=rng.choice([1, 6, 8], 200), scaled_positions=rng.uniform(size=(200, 3)), cell=cell,
                   pbc=True) for _ in range(2)]
    calc = SphericalExpansion([1, 6, 8], **MD_HYPERS)
    weights = [rng.normal(size=(200, 2 * l + 1, 3 * 5)) for l in range(4)]

    def result(exp):
        return [v.copy() for v in exp.values] + list(exp.pair_gradients.forces_and_strain(weights))

    first = calc.compute(boxes[0], gradients=True)
    assert len(first.pair_gradients.distances) > calc.HARMONICS_CHUNK  # the buffered path, in chunks
    before = result(first)
    second = calc.compute(boxes[1], gradients=True)  # `first` alive: its harmonics stay untouched
    assert not np.shares_memory(first.pair_gradients._dy, second.pair_gradients._dy)
    assert not np.shares_memory(first.pair_gradients._dradial, second.pair_gradients._radial)
    for x, y in zip(result(first), before):
        np.testing.assert_array_equal(x, y)
    kept = calc._buffers.address("harmonics gradients")  # its address (a reference would hold it)
    kept_radial = calc._buffers.address("radial")
    del first, second
    again = calc.compute(boxes[0], gradients=True)  # nothing holds the buffers: reused
    assert again.pair_gradients._dy.ctypes.data == kept
    assert again.pair_gradients._radial.ctypes.data == kept_radial
    for x, y in zip(result(again), before):
        np.testing.assert_array_equal(x, y)
    # the same numbers as sphericart's own arrays of all pairs at once
    fresh = SphericalExpansion([1, 6, 8], **MD_HYPERS)
    fresh.HARMONICS_CHUNK = 10**9
    for x, y in zip(result(fresh.compute(boxes[0], gradients=True)), before):
        np.testing.assert_array_equal(x, y)
