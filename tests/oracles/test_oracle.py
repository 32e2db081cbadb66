"""Reference labellers: finite-field polarizability physics, units, errors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.calculator import CalculationFailed, Calculator, all_changes

from threadpoolctl import threadpool_limits

from mdplugin.core.errors import ConfigError, OracleError
from mdplugin.oracles.label import (
    COULOMB_CONSTANT,
    FiniteFieldPolarizability,
    label_frames,
    make_oracle,
    tblite_factory,
)
from mdplugin.core.tensors import random_rotation

ALL = ["energy", "forces", "dipole", "polarizability"]


def _ethanol() -> Atoms:
    """Ethanol, slightly distorted so that it has no symmetry at all."""
    atoms = molecule("CH3CH2OH")
    atoms.positions += np.random.default_rng(0).normal(scale=0.03, size=atoms.positions.shape)
    return atoms


def _results(calc: Calculator, atoms: Atoms, props=ALL) -> dict:
    calc.calculate(atoms, props, all_changes)
    return dict(calc.results)


@pytest.fixture(scope="module")
def ethanol_labels():
    atoms = _ethanol()
    return atoms, _results(make_oracle("tblite"), atoms)


def test_polarizability_symmetric_positive_definite(ethanol_labels):
    _, res = ethanol_labels
    alpha = res["polarizability"]
    assert alpha.shape == (3, 3)
    np.testing.assert_allclose(alpha, alpha.T, atol=0)
    # before symmetrisation the finite-difference tensor was already symmetric to noise level
    assert res["polarizability_asymmetry"] < 1e-5 * np.abs(alpha).max()
    assert np.all(np.linalg.eigvalsh(alpha) > 0)


@pytest.mark.parametrize("reflection", [False, True])
def test_labels_rotate_covariantly(ethanol_labels, reflection):
    atoms, res = ethanol_labels
    rot = random_rotation(np.random.default_rng(3 + reflection), reflection=reflection)
    moved = atoms.copy()
    moved.positions = atoms.positions @ rot.T
    res_r = _results(make_oracle("tblite"), moved)
    scale = np.abs(res["polarizability"]).max()
    np.testing.assert_allclose(res_r["polarizability"], rot @ res["polarizability"] @ rot.T,
                               atol=1e-5 * scale)
    np.testing.assert_allclose(res_r["dipole"], rot @ res["dipole"], atol=1e-6)
    np.testing.assert_allclose(res_r["forces"], res["forces"] @ rot.T, atol=1e-6)
    assert res_r["energy"] == pytest.approx(res["energy"], abs=1e-6)


def _field_energies(factory, atoms: Atoms, h: float):
    """E(0) and E(±h e_j), j = x, y, z (eV), field in V/Å."""
    def energy(field):
        calc = factory(field)
        calc.calculate(atoms.copy(), ["energy"], all_changes)
        return calc.results["energy"]

    e0 = energy(None)
    plus, minus = np.empty(3), np.empty(3)
    for j in range(3):
        f = np.zeros(3)
        f[j] = h
        plus[j], minus[j] = energy(f), energy(-f)
    return e0, plus, minus


def _check_field_response(factory, atoms: Atoms, h: float, rtol_alpha: float):
    """μ = −dE/dF and α = −K d²E/dF² (diagonal) against the finite-field calculator."""
    res = _results(FiniteFieldPolarizability(factory, threads=1), atoms,
                   ["energy", "dipole", "polarizability"])
    with threadpool_limits(1):
        e0, plus, minus = _field_energies(factory, atoms, h)
    np.testing.assert_allclose(-(plus - minus) / (2 * h), res["dipole"], atol=1e-5)
    alpha_from_energy = -COULOMB_CONSTANT * (plus - 2 * e0 + minus) / h**2
    np.testing.assert_allclose(alpha_from_energy, np.diag(res["polarizability"]),
                               rtol=rtol_alpha, atol=rtol_alpha * np.abs(res["polarizability"]).max())
    return res


def test_tblite_dipole_is_minus_energy_field_derivative():
    res = _check_field_response(tblite_factory(), _ethanol(), h=0.05, rtol_alpha=1e-3)
    assert np.linalg.norm(res["dipole"]) > 0.1  # ethanol is polar: the check is not trivial


def test_tblite_water_polarizability_value():
    """GFN2-xTB's minimal basis gives a small water polarizability (PBE0/aug-cc-pVDZ: 1.38 Å³)."""
    res = _results(make_oracle("tblite"), molecule("H2O"), ["polarizability"])
    mean = np.trace(res["polarizability"]) / 3
    assert 0.2 < mean < 1.6
    # molecule("H2O") lies in the yz plane: in-plane components exceed the out-of-plane one
    alpha = np.diag(res["polarizability"])
    assert alpha[1] > alpha[0] and alpha[2] > alpha[0]


def test_field_step_does_not_matter():
    atoms = _ethanol()
    a1 = _results(make_oracle("tblite", field=0.01), atoms, ["polarizability"])["polarizability"]
    a2 = _results(make_oracle("tblite", field=0.04), atoms, ["polarizability"])["polarizability"]
    np.testing.assert_allclose(a1, a2, atol=1e-4 * np.abs(a1).max())


def test_ase_interface():
    atoms = molecule("H2O")
    atoms.calc = make_oracle("tblite")
    alpha = atoms.calc.get_property("polarizability", atoms)
    assert alpha.shape == (3, 3)
    assert atoms.get_dipole_moment().shape == (3,)
    assert atoms.get_forces().shape == (3, 3)


@pytest.mark.skipif(importlib.util.find_spec("pyscf") is None, reason="PySCF not installed")
def test_pyscf_water():
    from mdplugin.oracles.label import pyscf_factory

    factory = pyscf_factory(xc="hf", basis="sto-3g")
    limit = threadpool_limits(1)
    res = _check_field_response(factory, molecule("H2O"), h=0.05, rtol_alpha=1e-3)
    assert np.all(np.linalg.eigvalsh(res["polarizability"]) > 0)
    data = label_frames([molecule("H2O")], make_oracle("pyscf", xc="hf", basis="sto-3g", threads=1), ALL)
    # forces are analytic gradients: compare with a finite difference of the energy
    atoms = molecule("H2O")
    calc = factory(None)
    d = 1e-4
    for atom, axis in [(0, 2), (1, 1)]:
        e = []
        for s in (+1, -1):
            moved = atoms.copy()
            moved.positions[atom, axis] += s * d
            calc.calculate(moved, ["energy"], all_changes)
            e.append(calc.results["energy"])
        assert data.forces[0][atom, axis] == pytest.approx(-(e[0] - e[1]) / (2 * d), abs=1e-4)
    limit.unregister()


def test_label_frames_order_and_shapes():
    frames = [molecule("H2O"), molecule("CH4"), _ethanol()]
    data = label_frames(frames, "tblite", ALL)
    assert len(data) == 3
    assert data.energy.shape == (3,)
    assert data.dipole.shape == (3, 3)
    assert data.polarizability.shape == (3, 3, 3)
    assert [f.shape for f in data.forces] == [(3, 3), (5, 3), (9, 3)]
    for frame, original in zip(data.frames, frames):
        np.testing.assert_array_equal(frame.numbers, original.numbers)
    # CH4 is non-polar, ethanol is polar
    assert np.linalg.norm(data.dipole[1]) < 1e-6 < np.linalg.norm(data.dipole[2])


def test_subset_of_properties():
    data = label_frames([molecule("H2O")], "tblite", ["dipole"])
    assert data.dipole.shape == (1, 3)
    assert data.energy is None and data.polarizability is None


class _FailsOnNitrogen(Calculator):
    """A stand-in oracle whose SCF 'fails' for any structure with nitrogen."""

    implemented_properties = ["energy", "dipole"]

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if 7 in self.atoms.numbers:
            raise CalculationFailed("SCF did not converge")
        self.results = {"energy": 0.0, "dipole": np.zeros(3)}


def test_failed_frame_is_named():
    frames = [molecule("H2O"), molecule("CH4"), molecule("NH3")]
    with pytest.raises(OracleError, match=r"frame 2: .*SCF did not converge"):
        label_frames(frames, _FailsOnNitrogen(), ["energy"])


def test_real_scf_failure_is_named():
    with pytest.raises(OracleError, match=r"frame 0: tblite .*not converged"):
        label_frames([molecule("H2O")], make_oracle("tblite", max_iterations=1), ["energy"])


def test_bad_requests():
    with pytest.raises(ConfigError, match="unknown oracle"):
        make_oracle("vasp")
    with pytest.raises(ConfigError, match="unknown property"):
        label_frames([molecule("H2O")], "tblite", ["charges"])
    with pytest.raises(ConfigError, match="does not compute polarizability"):
        label_frames([molecule("H2O")], _FailsOnNitrogen(), ["polarizability"])
    with pytest.raises(ConfigError, match="positive"):
        FiniteFieldPolarizability(tblite_factory(), field=0.0)


def test_example_data_are_complete_and_reproducible(examples_dir):
    from mdplugin.structures.data import read_dataset

    total = sum(p.stat().st_size for p in examples_dir.iterdir())
    assert total < 5e6
    for name, n_min in [("dce_train", 1000), ("dce_test", 400), ("water", 200)]:
        data = read_dataset(examples_dir / f"{name}.xyz")
        assert data.properties == ALL and len(data) >= n_min
        assert np.all(np.linalg.eigvalsh(data.polarizability) > 0)
        if name.startswith("dce"):  # C, C, Cl, Cl, H...: both conformers are present
            dihedral = np.array([a.get_dihedral(2, 0, 1, 3) for a in data.frames])
            anti = np.mean(np.abs(dihedral - 180.0) < 60.0)
            assert 0.1 < anti < 0.9
        # the stored labels are what the oracle computes now
        idx = [0, len(data) // 2]
        again = label_frames([data.frames[i] for i in idx], "tblite", ALL)
        np.testing.assert_allclose(again.energy, data.energy[idx], atol=1e-5)
        np.testing.assert_allclose(again.dipole, data.dipole[idx], atol=1e-5)
        np.testing.assert_allclose(again.polarizability, data.polarizability[idx], atol=1e-4)
        for k, i in enumerate(idx):
            np.testing.assert_allclose(again.forces[k], data.forces[i], atol=1e-4)
