"""The ASE calculator: slots, results, caching, shared expansions, covariance, errors."""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from scipy.spatial.transform import Rotation

from mdplugin.engines.ase import MLCalculator
from mdplugin.core.errors import ConfigError
from mdplugin.models.base import Model
from mdplugin.models.contract import Targets
from mdplugin.models.soap import SoapEnergyModel

from ..conftest import dichloroethane
from ..models.test_soap import pair_potential


class ToyTensorModel(Model):
    """A covariant toy model: dipole Σ q_Z r_i (about the centroid); polarizability
    a·1 + b Σ_{i<j} u_ij u_ijᵀ exp(−r_ij) (u = unit bond vector). Counts its predict calls."""

    targets_supported = ("dipole", "polarizability")

    def __init__(self, target: str = "dipole"):
        self.target = target

    def fit(self, frames, targets=None, *, comm=None):
        self.is_fitted_ = True
        self.species_ = np.array([1, 6, 17])
        self.calls_ = 0
        return self

    def predict(self, frames, return_std=False):
        self.calls_ += 1
        out = []
        for a in frames:
            r = a.positions - a.positions.mean(axis=0)
            if self.target == "dipole":
                q = np.select([a.numbers == 1, a.numbers == 6], [0.1, -0.05], -0.1)
                out.append(q @ r)
            else:
                d = r[:, None] - r[None]
                dist = np.linalg.norm(d, axis=-1) + np.eye(len(a))
                u = d / dist[..., None]
                w = np.exp(-dist) * (1 - np.eye(len(a)))
                out.append(5.0 * np.eye(3) + 0.5 * np.einsum("ij,ija,ijb->ab", w, u, u))
        y = np.array(out)
        return (y, 0.01 * np.abs(y)) if return_std else y


class CountingCalculator(Calculator):
    """An ASE calculator with the analytic pair potential, counting its calculations."""

    implemented_properties = ["energy", "forces"]

    def __init__(self):
        super().__init__()
        self.count = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.count += 1
        e, f = pair_potential(self.atoms)
        self.results = {"energy": e, "free_energy": e, "forces": f}


@pytest.fixture(scope="module")
def energy_model():
    frames = [dichloroethane(i, 0.08) for i in range(30)]
    labels = [pair_potential(a) for a in frames]
    return SoapEnergyModel(n_sparse=30, energy_noise=1e-4, force_noise=1e-3).fit(
        frames, Targets(energy=[e for e, _ in labels], forces=[f for _, f in labels]))


def toy(target):
    return ToyTensorModel(target).fit([], None)


def test_results_match_the_models(energy_model):
    atoms = dichloroethane(5, 0.08)
    atoms.calc = MLCalculator(energy=energy_model, dipole=toy("dipole"), polarizability=toy("polarizability"))
    assert atoms.get_potential_energy() == pytest.approx(energy_model.predict([atoms])[0], abs=1e-10)
    assert np.allclose(atoms.get_forces(), energy_model.predict_forces([atoms])[0], atol=1e-10)
    assert atoms.calc.get_property("free_energy") == atoms.get_potential_energy()
    assert np.allclose(atoms.get_dipole_moment(), toy("dipole").predict([atoms])[0])
    alpha = atoms.calc.get_property("polarizability", atoms)
    assert alpha.shape == (3, 3) and np.allclose(alpha, alpha.T)
    for name, shape in (("energy_std", ()), ("dipole_std", (3,)), ("polarizability_std", (3, 3))):
        assert np.shape(atoms.calc.get_property(name, atoms)) == shape
    assert atoms.calc.get_property("energy_std", atoms) > 0


def test_nothing_is_recomputed_while_positions_do_not_change(energy_model):
    dip = toy("dipole")
    ref = CountingCalculator()
    atoms = dichloroethane(6, 0.08)
    atoms.calc = MLCalculator(energy=ref, dipole=dip)
    for _ in range(3):
        atoms.get_forces(), atoms.get_potential_energy(), atoms.get_dipole_moment()
    assert ref.count == 1 and dip.calls_ == 1
    atoms.positions[0, 0] += 0.01
    atoms.get_dipole_moment(), atoms.get_forces()
    assert ref.count == 2 and dip.calls_ == 2
    # a third-party energy calculator gives the energy, the ML model the dipole
    assert atoms.get_potential_energy() == pytest.approx(pair_potential(atoms)[0])
    # any other change of the structure is seen too: species, cell/pbc, initial charges
    calls = dip.calls_
    for change in ("numbers", "cell", "charges"):
        if change == "numbers":
            atoms.numbers[-1] = 9
        elif change == "cell":
            atoms.cell = [20.0, 20.0, 20.0]
        else:
            atoms.set_initial_charges(np.full(len(atoms), 0.1))
        atoms.get_dipole_moment()
        calls += 1
        assert dip.calls_ == calls, change
        atoms.get_dipole_moment()
        assert dip.calls_ == calls, change


def test_md_steps_update_the_kept_structure_in_place_and_stay_correct(energy_model):
    """When only the positions move (an MD step) the calculator updates its own copy of the
    structure in place: every step's results are those of the new positions, and the copy is
    never the caller's object (moving the caller's atoms afterwards is a change it sees)."""
    atoms = dichloroethane(8, 0.08)
    calc = MLCalculator(energy=energy_model, dipole=toy("dipole"))
    atoms.calc = calc
    rng = np.random.default_rng(3)
    atoms.get_forces()
    kept = calc.atoms
    for _ in range(3):
        atoms.positions += rng.normal(scale=0.02, size=atoms.positions.shape)
        forces = atoms.get_forces()
        assert calc.atoms is kept and calc.atoms is not atoms
        np.testing.assert_array_equal(calc.atoms.positions, atoms.positions)
        np.testing.assert_allclose(forces, energy_model.predict_forces([atoms.copy()])[0], atol=1e-10)
        assert atoms.get_potential_energy() == pytest.approx(energy_model.predict([atoms.copy()])[0], abs=1e-10)
        np.testing.assert_allclose(atoms.get_dipole_moment(), toy("dipole").predict([atoms])[0])


def test_one_expansion_per_structure_for_models_with_equal_hypers(energy_model, monkeypatch):
    calc = MLCalculator(energy=energy_model)
    (expansion, members), = calc.feature_groups
    assert members == ["energy"]
    calls = []
    original = expansion.compute
    monkeypatch.setattr(expansion, "compute", lambda *a, **k: calls.append(k) or original(*a, **k))
    atoms = dichloroethane(8, 0.08)
    atoms.calc = calc
    atoms.get_potential_energy(), atoms.get_forces(), calc.get_property("energy_std", atoms)
    assert len(calls) == 1 and calls[0]["gradients"]


@pytest.mark.parametrize("reflect", [False, True])
def test_dipole_and_polarizability_rotate_with_the_molecule(energy_model, reflect):
    calc = MLCalculator(energy=energy_model, dipole=toy("dipole"), polarizability=toy("polarizability"))
    atoms = dichloroethane(9, 0.08)
    rot = Rotation.random(random_state=11).as_matrix()
    if reflect:
        rot = -rot
    moved = atoms.copy()
    moved.positions = atoms.positions @ rot.T + 2.0
    mu, alpha, f = (calc.get_property(p, atoms) for p in ("dipole", "polarizability", "forces"))
    mu2, alpha2, f2 = (calc.get_property(p, moved) for p in ("dipole", "polarizability", "forces"))
    assert np.allclose(mu2, rot @ mu, atol=1e-10)
    assert np.allclose(alpha2, rot @ alpha @ rot.T, atol=1e-10)
    assert np.allclose(f2, f @ rot.T, atol=1e-8)


def test_real_models_rotate_with_the_molecule(energy_model):
    rpr = pytest.importorskip("mdplugin.models.rpr")
    frames = [dichloroethane(i, 0.08) for i in range(40)]
    dip = rpr.RPRModel(target="dipole").fit(frames, toy("dipole").predict(frames))
    pol = rpr.RPRModel(target="polarizability").fit(frames, toy("polarizability").predict(frames))
    calc = MLCalculator(energy=energy_model, dipole=dip, polarizability=pol)
    atoms = dichloroethane(41, 0.08)
    rot = Rotation.random(random_state=5).as_matrix()
    moved = atoms.copy()
    moved.positions = atoms.positions @ rot.T
    assert np.allclose(calc.get_property("dipole", moved), rot @ calc.get_property("dipole", atoms), atol=1e-8)
    a0, a1 = calc.get_property("polarizability", atoms), calc.get_property("polarizability", moved)
    assert np.allclose(a1, rot @ a0 @ rot.T, atol=1e-8)


def test_missing_model_raises_property_not_implemented_naming_it(energy_model):
    atoms = dichloroethane()
    atoms.calc = MLCalculator(energy=energy_model)
    with pytest.raises(PropertyNotImplementedError, match="no dipole model"):
        atoms.get_dipole_moment()
    with pytest.raises(PropertyNotImplementedError, match="no polarizability model"):
        atoms.calc.get_property("polarizability", atoms)
    atoms.calc = MLCalculator(dipole=toy("dipole"))
    with pytest.raises(PropertyNotImplementedError, match="no energy model"):
        atoms.get_forces()
    atoms.calc = MLCalculator(energy=CountingCalculator())
    with pytest.raises(PropertyNotImplementedError, match="uncertainty"):
        atoms.calc.get_property("energy_std", atoms)


def test_model_files_and_bad_slots(energy_model, tmp_path):
    path = tmp_path / "e.npz"
    energy_model.save(path)
    atoms = dichloroethane(3, 0.05)
    atoms.calc = MLCalculator(energy=str(path))
    assert atoms.get_potential_energy() == pytest.approx(energy_model.predict([atoms])[0], abs=1e-10)
    with pytest.raises(ConfigError):
        MLCalculator(dipole=energy_model)
    with pytest.raises(ConfigError):
        MLCalculator(dipole=CountingCalculator())
    with pytest.raises(ConfigError):
        MLCalculator()
    with pytest.raises(Exception, match="no such model file"):
        MLCalculator(energy=tmp_path / "missing.npz")


def test_lambda_soap_models_share_the_energy_models_expansion(energy_model, monkeypatch):
    sagpr = pytest.importorskip("mdplugin.models.lsoap")
    frames = [dichloroethane(i, 0.08) for i in range(25)]
    hypers = {k: getattr(energy_model, k) for k in
              ("cutoff", "max_radial", "max_angular", "gaussian_width", "smoothing_width")}
    dip = sagpr.LambdaSoapModel(target="dipole", n_sparse=20, n_components=0, **hypers)
    dip.fit(frames, toy("dipole").predict(frames))
    calc = MLCalculator(energy=energy_model, dipole=dip)
    (expansion, members), = calc.feature_groups
    assert sorted(members) == ["dipole", "energy"]
    calls = []
    original = expansion.compute
    monkeypatch.setattr(expansion, "compute", lambda *a, **k: calls.append(k) or original(*a, **k))
    atoms = dichloroethane(31, 0.08)
    atoms.calc = calc
    mu = atoms.get_dipole_moment()  # first: the expansion is made with gradients for the energy
    forces = atoms.get_forces()
    assert len(calls) == 1 and calls[0]["gradients"]
    reference = dip.predict([atoms])[0]
    # default tensor_precision="single": float32 rounding of the model's large products only
    assert calc.tensor_precision == "single"
    np.testing.assert_allclose(mu, reference, rtol=0, atol=1e-5 * np.abs(reference).max())
    assert np.allclose(forces, energy_model.predict_forces([atoms])[0], atol=1e-10)
    atoms.calc = MLCalculator(energy=energy_model, dipole=dip, tensor_precision="double")
    np.testing.assert_allclose(atoms.get_dipole_moment(), reference, rtol=0, atol=1e-10)
    with pytest.raises(ConfigError, match="tensor_precision"):
        MLCalculator(dipole=dip, tensor_precision="float16")


def test_models_are_grouped_by_featurizer_and_each_group_computed_once(energy_model, monkeypatch):
    """The calculator builds no features of its own: it groups the models by their featurizers
    (the model's own objects; equal ones share), computes each group's features once per structure
    and hands them to every member; each slot's result is the model's Prediction."""
    from mdplugin.features.identity import Identity
    from mdplugin.features.inertia import PrincipalAxes
    from mdplugin.models.rpr import RPRModel

    frames = [dichloroethane(i, 0.08) for i in range(30)]
    dip = RPRModel(target="dipole").fit(frames, toy("dipole").predict(frames))
    pol = RPRModel(target="polarizability").fit(frames, toy("polarizability").predict(frames))
    calc = MLCalculator(energy=energy_model, dipole=dip, polarizability=pol)
    (expansion, e_slots), (inertia, t_slots) = calc.feature_groups
    assert expansion is energy_model.featurizer() and e_slots == ["energy"]
    assert isinstance(inertia, PrincipalAxes) and t_slots == ["dipole", "polarizability"]
    calls = {"expansion": [], "inertia": []}
    for name, featurizer in (("expansion", expansion), ("inertia", inertia)):
        original = featurizer.compute
        monkeypatch.setattr(featurizer, "compute",
                            lambda *a, _n=name, _o=original, **k: calls[_n].append(k) or _o(*a, **k))
    atoms = dichloroethane(33, 0.08)
    atoms.calc = calc
    results = []
    for _ in range(2):
        atoms.positions[0, 0] += 0.01
        results.append((atoms.copy(), atoms.get_dipole_moment(), calc.get_property("polarizability", atoms),
                        atoms.get_forces(), calc.get_property("dipole_std", atoms)))
    assert len(calls["expansion"]) == 2 and len(calls["inertia"]) == 2  # one per structure and group
    assert all(k["gradients"] for k in calls["expansion"]) and not any(k["gradients"] for k in calls["inertia"])
    for moved, mu, alpha, forces, mu_std in results:
        np.testing.assert_allclose(mu, dip.predict([moved])[0], atol=1e-12)
        np.testing.assert_allclose(mu_std, dip.predict([moved], return_std=True)[1][0], atol=1e-12)
        np.testing.assert_allclose(alpha, pol.predict([moved])[0], atol=1e-12)
        np.testing.assert_allclose(forces, energy_model.predict_forces([moved])[0], atol=1e-10)
    # models that compute from the structures themselves (the default featurizer) share them too
    both = MLCalculator(dipole=toy("dipole"), polarizability=toy("polarizability"))
    assert both.feature_groups == [(Identity(), ["dipole", "polarizability"])]


def test_calculator_in_a_periodic_box():
    """A periodic cell: the energy, forces and λ-SOAP dipole of the calculator are the models'
    (shared expansion with images), the forces are the energy's negative gradient, and moving an
    atom by a lattice vector (across the cell wall) changes nothing."""
    from mdplugin.models import build

    from ..models.test_contract import labels, periodic_box

    frames = [periodic_box(i) for i in range(16)]
    y = [labels(a) for a in frames]
    hypers = dict(cutoff=3.5, max_radial=3, max_angular=2)
    energy = build("soap", n_sparse=12, **hypers).fit(frames, {"energy": [t["energy"] for t in y],
                                                               "forces": [t["forces"] for t in y]})
    dip = build("lsoap", target="dipole", n_sparse=10, n_components=0, **hypers).fit(frames, np.array([t["dipole"] for t in y]))
    calc = MLCalculator(energy=energy, dipole=dip, tensor_precision="double")
    assert [slots for _, slots in calc.feature_groups] == [["energy", "dipole"]]
    atoms = periodic_box(99)
    atoms.positions[0] += [0.0, 0.0, 3.7]  # near the cell face
    atoms.calc = calc
    e, f, mu = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_dipole_moment()
    assert e == pytest.approx(energy.predict([atoms])[0], abs=1e-10)
    np.testing.assert_allclose(f, energy.predict_forces([atoms])[0], atol=1e-10)
    np.testing.assert_allclose(mu, dip.predict([atoms])[0], atol=1e-10)
    h = 1e-4
    for j, k in ((0, 2), (3, 1)):
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[j, k] += h
        minus.positions[j, k] -= h
        fd = -(energy.predict([plus])[0] - energy.predict([minus])[0]) / (2 * h)
        assert f[j, k] == pytest.approx(fd, abs=1e-6 * np.abs(f).max())
    moved = atoms.copy()
    moved.positions[0] -= atoms.cell[2]  # the same structure, the atom's image across the wall
    moved.calc = MLCalculator(energy=energy, dipole=dip, tensor_precision="double")
    assert moved.get_potential_energy() == pytest.approx(e, abs=1e-9)
    np.testing.assert_allclose(moved.get_forces(), f, atol=1e-9)
