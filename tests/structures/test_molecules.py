"""Molecules made whole across the cell wall, and the cell dipole of the package's convention
(sum of the molecules' dipoles about their own centres): independent of the origin, of wrapping,
continuous when an atom crosses the wall, covariant under rotations and reflections, invariant
under permutations of the atoms; a molecule bonded to its own image is refused."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from mdplugin.core.errors import DataError
from mdplugin.core.tensors import random_rotation
from mdplugin.structures.molecules import find_molecules, molecular_dipole

#: TIP3P-like point charges (e), enough to make a dipole convention testable without a QM code
CHARGES = {8: -0.834, 1: 0.417, 6: -0.2, 17: 0.2}


def water_box(n_side: int = 2, spacing: float = 3.1, seed: int = 0, noise: float = 0.05) -> Atoms:
    """``n_side³`` water molecules on a cubic lattice, randomly oriented, in a periodic cube."""
    rng = np.random.default_rng(seed)
    side = n_side * spacing
    positions = []
    for corner in np.array(np.meshgrid(*[np.arange(n_side)] * 3)).reshape(3, -1).T:
        w = molecule("H2O")
        w.rotate(rng.uniform(0, 360), rng.normal(size=3))
        positions.append(w.positions - w.get_center_of_mass() + (corner + 0.5) * spacing)
    atoms = Atoms("OH2" * n_side**3, positions=np.concatenate(positions), cell=[side] * 3, pbc=True)
    atoms.positions += rng.normal(scale=noise, size=atoms.positions.shape)
    return atoms


def charges(atoms: Atoms) -> np.ndarray:
    """Point charges with a little charge transfer: each molecule has a small net charge, the
    cell none."""
    q = np.array([CHARGES[z] for z in atoms.numbers])
    q = q + np.random.default_rng(len(atoms)).normal(scale=0.03, size=len(q))
    return q - q.mean()


def dipole(atoms: Atoms) -> np.ndarray:
    return molecular_dipole(atoms, charges(atoms))


def test_molecules_are_found_and_made_whole() -> None:
    atoms = water_box(seed=1)
    atoms.positions[1] += atoms.cell[0]  # an H one cell away from its O
    atoms.wrap()  # and every atom back into the cell: some molecules are now split by the wall
    mol = find_molecules(atoms)
    assert mol.n_molecules == 8 and np.all(mol.sizes() == 3)
    u = mol.unwrapped.reshape(8, 3, 3)
    oh = np.linalg.norm(u[:, 1:] - u[:, :1], axis=2)
    assert np.all((oh > 0.75) & (oh < 1.25))  # bonded within the molecule, whatever the wrapping
    np.testing.assert_allclose(mol.unwrapped, atoms.positions + mol.images @ atoms.cell.array)


def test_dipole_does_not_depend_on_the_origin_or_on_wrapping() -> None:
    atoms = water_box(seed=2)
    ref = dipole(atoms)
    moved = atoms.copy()
    moved.positions += 0.5 * moved.cell.sum(axis=0) + np.array([0.13, -0.21, 0.07])
    moved.wrap()
    np.testing.assert_allclose(dipole(moved), ref, atol=1e-12)
    scattered = atoms.copy()
    scattered.positions += np.random.default_rng(0).integers(-2, 3, (len(atoms), 1)) * atoms.cell[1]
    np.testing.assert_allclose(dipole(scattered), ref, atol=1e-12)
    # the plain point-charge dipole of the wrapped atoms does change: the test is not trivial
    q = charges(atoms)
    assert np.abs(q @ moved.positions - q @ atoms.positions).max() > 0.1


def test_dipole_is_continuous_when_an_atom_crosses_the_wall() -> None:
    atoms = water_box(seed=3)
    atoms.wrap()
    h = 1  # move this hydrogen with its molecule along x across the wall in small steps
    members = [0, 1, 2]
    start = atoms.cell[0, 0] - atoms.positions[h, 0] - 0.3
    path, raw = [], []
    for step in np.linspace(start, start + 0.6, 13):
        frame = atoms.copy()
        frame.positions[members, 0] += step
        frame.positions[h, 1] += 0.2 * (step - start)  # and bend it a little on the way
        frame.wrap()
        path.append(dipole(frame))
        raw.append(charges(frame) @ frame.positions)
    jumps = np.linalg.norm(np.diff(path, axis=0), axis=1)
    raw_jumps = np.linalg.norm(np.diff(raw, axis=0), axis=1)
    assert jumps.max() < 0.05  # e·Å per 0.05 Å step
    assert raw_jumps.max() > 1.0  # the wrapped point-charge dipole jumps by q·L at the wall


@pytest.mark.parametrize("reflection", [False, True])
def test_dipole_rotates_with_the_cell(reflection: bool) -> None:
    atoms = water_box(seed=4)
    rot = random_rotation(np.random.default_rng(5 + reflection), reflection=reflection)
    turned = atoms.copy()
    turned.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    turned.positions = atoms.positions @ rot.T
    np.testing.assert_allclose(dipole(turned), rot @ dipole(atoms), atol=1e-12)


def test_dipole_is_invariant_under_atom_permutations() -> None:
    atoms = water_box(seed=6)
    order = np.random.default_rng(1).permutation(len(atoms))
    np.testing.assert_allclose(molecular_dipole(atoms[order], charges(atoms)[order]), dipole(atoms), atol=1e-12)


def test_molecule_in_vacuum_is_the_plain_dipole() -> None:
    w = molecule("CH3CH2OH")
    q = np.random.default_rng(0).normal(size=len(w))
    q -= q.mean()
    p = np.random.default_rng(1).normal(size=(len(w), 3))
    np.testing.assert_allclose(molecular_dipole(w, q, p), q @ w.positions + p.sum(axis=0), atol=1e-12)


def test_small_cell_and_atomic_dipoles() -> None:
    """A cell of one molecule smaller than twice the bond search range still works; atomic
    dipoles add."""
    w = molecule("H2O")
    w.cell = [2.6, 2.7, 2.8]
    w.pbc = True
    w.positions += [2.3, 2.5, 2.6]
    w.wrap()
    p = np.array([[0.1, 0.0, 0.0], [0.0, 0.2, 0.0], [0.0, 0.0, 0.3]])
    free = molecule("H2O")
    q = charges(free)
    np.testing.assert_allclose(molecular_dipole(w, q, p), molecular_dipole(free, q, p), atol=1e-12)


def test_molecule_bonded_to_its_own_image_is_refused() -> None:
    chain = Atoms("H", positions=[[0, 0, 0]], cell=[0.6, 5, 5], pbc=True)
    with pytest.raises(DataError, match="bonded to its own periodic image .*\\+1a"):
        find_molecules(chain)
    ring = Atoms("C2", positions=[[0, 0, 0], [1.4, 0, 0]], cell=[2.8, 6, 6], pbc=True)
    with pytest.raises(DataError, match="bonded to its own periodic image"):
        find_molecules(ring)
