"""Invariant SOAP energy model: exact forces, symmetry, joint energy+force fit, uncertainty, files."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from scipy.spatial.transform import Rotation

from mdplugin.core.errors import DataError
from mdplugin.models import build, load_model
from mdplugin.models.soap import SoapEnergyModel

from ..conftest import dichloroethane
from ..support.finite_differences import model_fd_forces


def pair_potential(atoms: Atoms) -> tuple[float, np.ndarray]:
    """A smooth analytic reference: Σ_{i<j} c_ij exp(−r_ij / 0.8 Å), c_ij = Z_i Z_j / 100 eV."""
    pos = atoms.positions
    z = atoms.numbers.astype(float)
    d = pos[:, None, :] - pos[None, :, :]
    r = np.linalg.norm(d, axis=-1)
    np.fill_diagonal(r, np.inf)
    c = np.outer(z, z) / 100.0
    e_pair = c * np.exp(-r / 0.8)
    energy = 0.5 * e_pair.sum()
    # dE/dr_i = Σ_j −e_ij/0.8 · (r_i − r_j)/r_ij
    de = (-(e_pair / 0.8) / r)[:, :, None] * d
    return float(energy), -de.sum(axis=1)


def periodic_cell(seed: int) -> Atoms:
    rng = np.random.default_rng(seed)
    base = np.array([[0, 0, 0], [2, 0, 0], [0, 2, 0], [0, 0, 2], [2, 2, 0], [2, 0, 2]], float) + 0.5
    return Atoms("C2H2O2", positions=base + rng.normal(scale=0.15, size=(6, 3)), cell=[4.1, 4.3, 3.9], pbc=True)



@pytest.fixture(scope="module")
def dce_model():
    frames = [dichloroethane(i, 0.08) for i in range(60)]
    labels = [pair_potential(a) for a in frames]
    model = SoapEnergyModel(n_sparse=40, energy_noise=1e-4, force_noise=1e-3)
    return model.fit(frames, {"energy": [e for e, _ in labels], "forces": [f for _, f in labels]})


def test_forces_are_exact_gradients_for_a_molecule(dce_model):
    atoms = dichloroethane(123, 0.08)
    f = dce_model.predict_forces([atoms])[0]
    fd = model_fd_forces(dce_model, atoms, h=1e-4)
    assert np.abs(f - fd).max() <= 1e-6 * np.abs(f).max()
    assert np.allclose(f.sum(axis=0), 0.0, atol=1e-9 * np.abs(f).max())


def test_forces_are_exact_gradients_in_a_periodic_cell():
    rng = np.random.default_rng(0)
    frames = [periodic_cell(i) for i in range(8)]
    model = SoapEnergyModel(n_sparse=8, cutoff=4.0).fit(
        frames, {"energy": rng.normal(size=8), "forces": [rng.normal(size=(6, 3)) for _ in frames]})
    atoms = periodic_cell(99)
    atoms.positions[0] += [0.0, 0.0, 3.8]  # an atom near the cell face: its images matter
    f = model.predict_forces([atoms])[0]
    fd = model_fd_forces(model, atoms, h=1e-4)
    assert np.abs(f - fd).max() <= 1e-6 * np.abs(f).max()
    # the energy is periodic: moving an atom by a lattice vector changes nothing
    moved = atoms.copy()
    moved.positions[2] += atoms.cell[1]
    assert model.predict([moved])[0] == pytest.approx(model.predict([atoms])[0], abs=1e-9)


def test_training_force_rows_are_the_predicted_forces(dce_model):
    from mdplugin.features.lambda_soap import power_spectrum
    from mdplugin.models.soap import _power_spectrum

    frames = [dichloroethane(200 + i, 0.08) for i in range(3)]
    from mdplugin.features.cache import FeatureCache

    exp = dce_model.featurizer().compute(frames)
    assert np.allclose(_power_spectrum(FeatureCache(exp))[0], power_spectrum(exp), rtol=1e-12, atol=1e-14)
    k_e, k_f = dce_model._design_rows(frames, with_forces=True)
    w = dce_model.gpr_.weights
    forces = np.concatenate(dce_model.predict_forces(frames))
    assert np.allclose(k_f @ w, forces.reshape(-1), atol=1e-10 * np.abs(forces).max())
    base = np.array([dce_model.baseline_[np.searchsorted(dce_model.species_, a.numbers)].sum() for a in frames])
    assert np.allclose(k_e @ w + base, dce_model.predict(frames))


@pytest.mark.parametrize("reflect", [False, True])
def test_energy_invariant_and_forces_covariant(dce_model, reflect):
    atoms = dichloroethane(7, 0.08)
    rot = Rotation.random(random_state=3).as_matrix()
    if reflect:
        rot = rot @ np.diag([1.0, 1.0, -1.0])
    moved = atoms.copy()
    moved.positions = atoms.positions @ rot.T + np.array([1.3, -2.0, 0.7])
    e0, e1 = dce_model.predict([atoms, moved])
    f0, f1 = dce_model.predict_forces([atoms, moved])
    assert e1 == pytest.approx(e0, abs=1e-9)
    assert np.allclose(f1, f0 @ rot.T, atol=1e-8)


def test_learns_an_analytic_potential_from_energies_and_forces(dce_model):
    test = [dichloroethane(1000 + i, 0.08) for i in range(20)]
    ref = [pair_potential(a) for a in test]
    e_true = np.array([e for e, _ in ref])
    f_true = np.concatenate([f for _, f in ref])
    e_pred = dce_model.predict(test)
    f_pred = np.concatenate(dce_model.predict_forces(test))
    f_rmse = np.sqrt(np.mean((f_pred - f_true) ** 2))
    assert f_rmse < 0.05 * f_true.std()
    assert np.sqrt(np.mean((e_pred - e_true) ** 2)) < 0.1 * e_true.std()


def test_forces_improve_the_fit():
    frames = [dichloroethane(i, 0.08) for i in range(15)]
    labels = [pair_potential(a) for a in frames]
    e = [x for x, _ in labels]
    test = [dichloroethane(500 + i, 0.08) for i in range(10)]
    f_true = np.concatenate([pair_potential(a)[1] for a in test])
    rmse = {}
    for use in (False, True):
        m = SoapEnergyModel(n_sparse=30, energy_noise=1e-4, force_noise=1e-3, use_forces=use)
        m.fit(frames, {"energy": e, "forces": [f for _, f in labels]})
        rmse[use] = np.sqrt(np.mean((np.concatenate(m.predict_forces(test)) - f_true) ** 2))
    assert rmse[True] < 0.5 * rmse[False]


def test_uncertainty_grows_away_from_the_training_data(dce_model):
    near = dichloroethane(77, 0.08)
    far = dichloroethane(77, 0.08)
    far.positions *= 1.25  # stretched far beyond the training distortions
    _, std = dce_model.predict([near, far], return_std=True)
    assert np.all(std > 0) and std[1] > 3 * std[0]


def test_model_file_round_trip(dce_model, tmp_path):
    path = tmp_path / "energy.npz"
    dce_model.save(path)
    loaded = load_model(path, kind="soap", target="energy")
    frames = [dichloroethane(300 + i, 0.08) for i in range(3)]
    e0, s0 = dce_model.predict(frames, return_std=True)
    e1, s1 = loaded.predict(frames, return_std=True)
    assert np.array_equal(e0, e1) and np.array_equal(s0, s1)
    assert all(np.array_equal(a, b) for a, b in zip(dce_model.predict_forces(frames), loaded.predict_forces(frames)))


def test_registry_and_bad_input(dce_model):
    assert isinstance(build("soap", target="energy"), SoapEnergyModel)
    with pytest.raises(DataError, match="Br"):
        dce_model.predict([Atoms("CBr", positions=[[0, 0, 0], [0, 0, 1.9]])])
    with pytest.raises(DataError):
        SoapEnergyModel().fit([dichloroethane()], [1.0, 2.0])
