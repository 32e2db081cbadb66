"""The hamiltonian model: equivariant by construction (rotations, reflections, inversion parities,
atom permutations), the degenerate orbitals of a symmetric molecule, learning beyond one molecule,
derived dipole and polarizability, uncertainties, model files and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule

from mdplugin.core.errors import DataError
from mdplugin.core.orbitals import dipole, orbitals, polarizability
from mdplugin.core.tensors import random_rotation, rotate_tensors, rotate_vectors
from mdplugin.models import build, load_model
from mdplugin.structures.aobasis import AOBasis

pytest.importorskip("pyscf")
from mdplugin.oracles.hamiltonian import label_hamiltonians  # noqa: E402

HYPERS = dict(cutoff=4.0, max_radial=5, max_angular=4, density_width=0.2, pair_max_angular=3, density_channels=10,
              n_samples=16)


def _distorted(name, rng, scale=0.06):
    atoms = molecule(name)
    atoms.positions += rng.normal(scale=scale, size=atoms.positions.shape)
    atoms.positions = atoms.positions @ random_rotation(rng).T
    return atoms


@pytest.fixture(scope="module")
def data():
    """Distorted water and methane (two compositions), HF/STO-3G: training and held-out sets."""
    rng = np.random.default_rng(0)
    train = [_distorted(name, rng) for name in ("H2O", "CH4") for _ in range(30)]
    test = [_distorted(name, rng) for name in ("H2O", "CH4") for _ in range(6)]
    return train, label_hamiltonians(train, xc="hf"), test, label_hamiltonians(test, xc="hf")


@pytest.fixture(scope="module")
def model(data):
    train, hams, _, _ = data
    return build("hamiltonian", target="hamiltonian", **HYPERS).fit(train, hams)


def test_learns_orbital_energies_of_held_out_molecules(model, data):
    _, hams, test, ref = data
    pred = model.predict_properties(test, ["orbital_energies"])["orbital_energies"]
    errors, spread = [], []
    for atoms, eps, eps_ref in zip(test, pred, ref.mo_energy):
        n_occ = int(atoms.numbers.sum()) // 2
        errors.append(eps[:n_occ + 1] - eps_ref[0, :n_occ + 1])
        same = [e[0, :n_occ + 1] for e, z in zip(hams.mo_energy, hams.numbers) if np.array_equal(z, atoms.numbers)]
        spread.append(eps_ref[0, :n_occ + 1] - np.mean(same, axis=0))
    rmse = np.sqrt(np.mean(np.concatenate(errors) ** 2))
    assert rmse < 0.05  # eV, from 30 structures of each molecule
    assert rmse < 0.1 * np.sqrt(np.mean(np.concatenate(spread) ** 2))  # far better than the mean per molecule


@pytest.mark.parametrize("reflection", [False, True])
def test_rotation_and_reflection(model, data, reflection):
    atoms = data[2][0].copy()
    basis = AOBasis(model.basis_)
    for seed in range(2):
        r = random_rotation(seed + 10, reflection=reflection)
        moved = atoms.copy()
        moved.positions = atoms.positions @ r.T + np.array([1.0, -2.0, 0.5])
        h, h2 = model.predict([atoms, moved])
        d = basis.rotation_matrix(atoms.numbers, r)
        np.testing.assert_allclose(h2, d @ h @ d.T, atol=1e-9)
        assert np.abs(h2 - h).max() > 0.1  # the rotation did change the matrix


def test_inversion_gives_the_parity_of_each_block(model, data):
    atoms = data[2][1]
    inverted = atoms.copy()
    inverted.positions = -atoms.positions
    h, h2 = model.predict([atoms, inverted])
    l = AOBasis(model.basis_).layout(atoms.numbers).ao_l
    parity = (-1.0) ** (l[:, None] + l[None, :])  # an (s, p) block changes sign, (s, s) and (p, p) do not
    np.testing.assert_allclose(h2, parity * h, atol=1e-9)
    assert np.abs(h[parity < 0]).max() > 0.1


def test_permuting_atoms_permutes_blocks(model, data):
    atoms = data[2][7]  # methane
    order = [3, 0, 4, 1, 2]
    h, h2 = model.predict([atoms, atoms[order]])
    p = AOBasis(model.basis_).permutation_matrix(atoms.numbers, order)
    np.testing.assert_allclose(h2, p @ h @ p.T, atol=1e-9)


def test_symmetric_molecule_keeps_its_degeneracies(model):
    methane = molecule("CH4")  # Td: t2 levels, triply degenerate
    ref = label_hamiltonians([methane], xc="hf").mo_energy[0][0]
    eps = model.predict_properties([methane], ["orbital_energies"])["orbital_energies"][0]
    for t2 in (slice(2, 5), slice(5, 8)):  # occupied and virtual t2
        np.testing.assert_allclose(ref[t2], ref[t2.start], atol=1e-6)  # the reference's degeneracy ...
        np.testing.assert_allclose(eps[t2], eps[t2.start], atol=1e-8)  # ... kept exactly by the model
    assert abs(eps[8] - eps[7]) > 0.5  # the a1 virtual stays apart
    np.testing.assert_allclose(eps, ref, atol=0.1)


def test_derived_dipole_and_polarizability(model, data):
    _, _, test, ref = data
    out = model.predict_properties(test, ["dipole", "polarizability", "gap"])
    basis = AOBasis(model.basis_)
    for k, atoms in enumerate(test):
        s = basis.overlap(atoms.numbers, atoms.positions)
        r = basis.dipole_integrals(atoms.numbers, atoms.positions)
        eps, c = orbitals(ref.fock[k][0], s)
        n_occ = int(atoms.numbers.sum()) // 2
        np.testing.assert_allclose(out["dipole"][k], dipole(c, n_occ, r, atoms.numbers, atoms.positions), atol=0.02)
        np.testing.assert_allclose(out["polarizability"][k], polarizability(eps, c, n_occ, r), atol=0.05)
        assert abs(out["gap"][k] - (eps[n_occ] - eps[n_occ - 1])) < 0.1
    # covariant like any dipole and polarizability model
    atoms, rot = test[0], random_rotation(3, reflection=True)
    moved = atoms.copy()
    moved.positions = atoms.positions @ rot.T
    both = model.predict_properties([atoms, moved], ["dipole", "polarizability"])
    np.testing.assert_allclose(both["dipole"][1], rotate_vectors(both["dipole"][0], rot), atol=1e-8)
    np.testing.assert_allclose(both["polarizability"][1], rotate_tensors(both["polarizability"][0], rot), atol=1e-8)


def test_uncertainty_grows_away_from_the_training_data(model, data):
    near = data[2][0]
    far = near.copy()
    far.positions[1] += 0.6 * (far.positions[1] - far.positions[0])  # one O-H bond stretched by 60 %
    out = model.predict_properties([near, far], ["orbital_energies", "dipole"], return_std=True)
    std_near, std_far = out["orbital_energies_std"]
    assert np.all(std_near > 0) and np.all(np.isfinite(std_far))
    assert std_far[:6].mean() > 3 * std_near[:6].mean()
    assert out["dipole_std"][1].mean() > 3 * out["dipole_std"][0].mean()
    h, h_std = model.predict([near], return_std=True)
    assert h_std[0].shape == h[0].shape and np.all(h_std[0] >= 0)


def test_model_file_round_trip(model, data, tmp_path):
    path = tmp_path / "h.npz"
    model.save(path)
    back = load_model(path)
    test = data[2]
    for a, b in zip(model.predict(test), back.predict(test)):
        np.testing.assert_array_equal(a, b)
    a, b = model.predict_properties(test[:2], return_std=True), back.predict_properties(test[:2], return_std=True)
    np.testing.assert_array_equal(a["dipole_std"], b["dipole_std"])
    with np.load(path, allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)


def test_bad_input(model, data):
    with pytest.raises(DataError, match="frame 0: element.* N not in the hamiltonian model's training set"):
        model.predict([molecule("NH3")])
    charged = molecule("H2O")
    charged.info["charge"] = 1
    with pytest.raises(DataError, match="frame 0: H2O with charge 1 has 9 electrons; .* closed shells"):
        model.predict_properties([charged])
    train, hams, _, _ = data
    with pytest.raises(DataError, match="holds 60 frames but the structures have 59"):
        build("hamiltonian", target="hamiltonian", **HYPERS).fit(train[1:], hams)


def test_contract(model, data):
    """fit takes a HamiltonianSet, Targets or a mapping, and comm= (two thread ranks end with the
    serial model); predict_from_features gives the dipole and polarizability Predictions (with the
    orbital energies and gap as extras) of predict_properties; scikit-learn's clone and set_params."""
    from sklearn.base import clone

    from mdplugin.models import Prediction, Targets

    from ..support.fake_comm import run_ranks

    train, hams, test, _ = data
    sub = list(range(0, 60, 3))
    frames, sub_hams = [train[i] for i in sub], hams.subset(sub)
    ref = build("hamiltonian", target="hamiltonian", **HYPERS).fit(frames, sub_hams)
    for targets in (Targets(hamiltonian=sub_hams), {"hamiltonian": sub_hams}):
        for a, b in zip(ref.predict(test), build("hamiltonian", target="hamiltonian", **HYPERS).fit(frames, targets).predict(test)):
            np.testing.assert_array_equal(a, b)
    ranks = run_ranks(2, lambda comm: build("hamiltonian", target="hamiltonian", **HYPERS).fit(frames, sub_hams, comm=comm))
    for a, b, c in zip(ref.predict(test), ranks[0].predict(test), ranks[1].predict(test)):
        np.testing.assert_array_equal(b, c)  # the ranks hold one model
        # the normal equations summed in another order: round-off, which the evidence maximisation of
        # this small, nearly collinear fit (20 frames) amplifies to ~1e-4 eV, far below its errors
        np.testing.assert_allclose(a, b, atol=1e-3)
    features = model.featurizer().compute(test[:3])
    direct = model.predict_properties(test[:3], return_std=True)
    for target in ("dipole", "polarizability"):
        out = model.predict_from_features(features, return_std=True, target=target)
        assert isinstance(out, Prediction) and out.target == target
        np.testing.assert_allclose(out.values, direct[target], atol=1e-12)
        np.testing.assert_allclose(out.std, direct[f"{target}_std"], atol=1e-12)
        np.testing.assert_allclose(out.extras["gap"], direct["gap"], atol=1e-12)
    matrices = model.predict_from_features(features)
    assert matrices.target == "hamiltonian" and matrices.values[0].shape == (7, 7)
    copy = clone(model)
    assert copy.get_params() == model.get_params() and not getattr(copy, "is_fitted_", False)
    with pytest.raises(ValueError, match="Invalid parameter"):
        copy.set_params(nonsense=1)


def test_coupled_response_gives_the_scf_polarizability(model, data, tmp_path):
    """With the SCF's own orbitals the coupled response is the finite-field polarizability of that
    SCF (mdplugin label's); the model's coupled polarizability is close to it, the uncoupled
    sum over states of a minimal basis far below it."""
    from ase.calculators.calculator import all_changes

    from mdplugin.models.hamiltonian_response import coupled_polarizability
    from mdplugin.oracles.label import make_oracle

    _, _, test, ref = data
    oracle = make_oracle("pyscf", xc="hf", basis="sto-3g")
    basis = AOBasis("sto-3g")
    model.save(tmp_path / "h.npz")
    coupled_model = load_model(tmp_path / "h.npz").set_params(response="coupled")  # a prediction-time choice
    for k in (0, 7):  # a water and a methane
        atoms = test[k]
        oracle.calculate(atoms.copy(), ["polarizability"], all_changes)
        finite_field = oracle.results["polarizability"]
        s = basis.overlap(atoms.numbers, atoms.positions)
        eps, c = orbitals(ref.fock[k][0], s)
        n_occ = int(atoms.numbers.sum()) // 2
        exact = coupled_polarizability(basis.molecule(atoms.numbers, atoms.positions), "hf", eps, c, n_occ)
        np.testing.assert_allclose(exact, finite_field, atol=2e-4)
        out = coupled_model.predict_properties([atoms], ["polarizability"], return_std=True)
        assert np.abs(out["polarizability"][0] - finite_field).max() < 0.03
        sos = model.predict_properties([atoms], ["polarizability"])["polarizability"][0]
        assert np.abs(sos - finite_field).max() > 0.1  # the uncoupled minimal-basis response is not it
        assert np.all(out["polarizability_std"][0] >= 0)
