"""The calculator in a periodic box of water: atoms far outside the cell, a molecule across the wall.

Energy (``soap``) and dipole (``lsoap``) models trained on a few TIP3P water boxes are evaluated on
other boxes: moving atoms by whole cell vectors (far outside the cell) gives the same energy,
forces, stress and dipole — nothing is mis-imaged — and wrapping a molecule across the wall leaves
the dipole continuous (a sum of local contributions), where the point-charge dipole of the same
positions jumps by a charge times a cell vector.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.tip3p import TIP3P
from ase.io import read

from mdplugin.engines.ase import MLCalculator
from mdplugin.models import build

from ..conftest import SHARED_DATA

WATER = SHARED_DATA / "water-box" / "water32_tip3p_300K.xyz"
CHARGES = np.array([-0.834, 0.417, 0.417])

pytestmark = pytest.mark.skipif(not WATER.exists(), reason="shared water-box data absent")


def perturbed(seed: int):
    atoms = read(WATER, 0)
    atoms.positions += np.random.default_rng(seed).normal(scale=0.08, size=atoms.positions.shape)
    return atoms


def point_charge_dipole(atoms) -> np.ndarray:
    return np.tile(CHARGES, len(atoms) // 3) @ atoms.positions


@pytest.fixture(scope="module")
def calc():
    frames = [perturbed(k) for k in range(8)]
    energies, forces, dipoles = [], [], []
    for atoms in frames:
        atoms.calc = TIP3P(rc=4.5)
        energies.append(atoms.get_potential_energy())
        forces.append(atoms.get_forces())
        atoms.calc = None
        dipoles.append(point_charge_dipole(atoms))
    energy = build("soap", target="energy", n_sparse=30).fit(frames, {"energy": np.array(energies), "forces": forces})
    dipole = build("lsoap", target="dipole", cutoff=3.5, max_radial=3, max_angular=3, n_sparse=20, n_sparse_l0=40,
                   n_components=16).fit(frames, np.array(dipoles))
    return MLCalculator(energy=energy, dipole=dipole)


def results(calc, atoms) -> dict:
    atoms = atoms.copy()
    atoms.calc = calc
    return {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(), "stress": atoms.get_stress(),
            "dipole": calc.get_property("dipole", atoms)}


def test_atoms_moved_by_cell_vectors_change_nothing(calc):
    atoms = perturbed(100)
    far = atoms.copy()
    rng = np.random.default_rng(1)
    shifts = rng.integers(-6, 7, size=(len(atoms), 3))  # every atom up to six cells away
    far.positions += shifts @ atoms.cell.array
    a, b = results(calc, atoms), results(calc, far)
    assert abs(a["energy"] - b["energy"]) < 1e-9 * len(atoms)
    for key in ("forces", "stress", "dipole"):
        np.testing.assert_allclose(b[key], a[key], rtol=0, atol=1e-9 * max(1.0, np.abs(a[key]).max()))


def test_the_dipole_is_continuous_when_a_molecule_crosses_the_wall(calc):
    """Move one molecule across the cell wall in small steps; wrapping it back into the cell (as an MD
    code does) changes the ML dipole by nothing, the point-charge dipole by −q·L per atom wrapped."""
    atoms = perturbed(101)
    length = atoms.cell.array[0, 0]
    molecule = slice(0, 3)
    # put the molecule just inside the x = L wall
    atoms.positions[molecule, 0] += length - 0.3 - atoms.positions[molecule, 0].max()
    ml, charges = [], []
    for step in range(12):
        moved = atoms.copy()
        moved.positions[molecule, 0] += 0.06 * step
        wrapped = moved.copy()
        wrapped.wrap()
        ml.append((results(calc, moved)["dipole"], results(calc, wrapped)["dipole"]))
        charges.append((point_charge_dipole(moved), point_charge_dipole(wrapped)))
    for unwrapped, wrapped in ml:
        np.testing.assert_allclose(wrapped, unwrapped, rtol=0, atol=1e-9)
    steps = np.diff([w for _, w in ml], axis=0)
    assert np.abs(steps).max() < 0.05  # smooth along the path (no jump at the wall)
    jumps = np.abs(np.diff([w for _, w in charges], axis=0)).max()
    assert jumps > 0.3 * length * 0.417  # the point-charge dipole of wrapped positions jumps


def test_default_models_share_one_expansion_with_their_uncertainties_too(monkeypatch):
    """Energy, dipole and polarizability models built with the default settings form one feature
    group; an MD step of a water box that asks for every value AND every uncertainty computes the
    expansion once (with gradients) and each λ-SOAP feature set once: the uncertainties take the
    same shared features, no per-model path."""
    from mdplugin.features import cache as cache_module

    frames = [perturbed(k) for k in range(3)]
    energy = build("soap", target="energy", n_sparse=20).fit(
        frames, {"energy": np.zeros(3), "forces": [np.zeros((len(a), 3)) for a in frames]})
    dipole = build("lsoap", target="dipole", n_sparse=10, n_sparse_l0=20).fit(
        frames, np.array([point_charge_dipole(a) for a in frames]))
    alpha = build("lsoap", target="polarizability", n_sparse=10, n_sparse_l0=20).fit(
        frames, np.array([np.eye(3) * len(a) for a in frames]))
    calc = MLCalculator(energy=energy, dipole=dipole, polarizability=alpha)
    (expansion, members), = calc.feature_groups
    assert sorted(members) == ["dipole", "energy", "polarizability"]
    expansions, features = [], []
    compute = expansion.compute
    monkeypatch.setattr(expansion, "compute", lambda *a, **k: expansions.append(k) or compute(*a, **k))
    lambda_soap = cache_module.lambda_soap
    monkeypatch.setattr(cache_module, "lambda_soap",
                        lambda exp, lams, **k: features.extend(lams) or lambda_soap(exp, lams, **k))
    atoms = perturbed(50)
    atoms.calc = calc
    for step in range(2):
        atoms.positions[0] += 0.01
        expansions.clear(), features.clear()
        atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        for name in ("dipole", "polarizability", "energy_std", "dipole_std", "polarizability_std"):
            value = calc.get_property(name, atoms)
            assert np.all(np.isfinite(value)), name
        assert len(expansions) == 1 and expansions[0]["gradients"], expansions
        assert features, "the uncertainties formed no λ-SOAP features: the check above would be empty"
        assert len(features) == len(set(features)), f"step {step}: λ-SOAP features formed again: {features}"
