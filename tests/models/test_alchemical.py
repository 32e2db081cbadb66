"""Alchemical compression (issue 27, point 3): species channels mixed into k pseudo-species."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from mdplugin.core import tensors as T
from mdplugin.core.errors import DataError
from mdplugin.features.alchemical import AlchemicalChannels
from mdplugin.features.expansion import SphericalExpansion
from mdplugin.features.lambda_soap import lambda_soap, n_features
from mdplugin.models import build, load_model

SPECIES = [1, 6, 7, 8, 9]
NAMES = ["CH4", "NH3", "H2O", "CH3OH", "HCN", "H2CO", "HF", "C2H6", "CH3CN", "HCOOH"]


def _molecules(seed: int, n: int) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = molecule(NAMES[k % len(NAMES)])
        atoms.positions += rng.normal(scale=0.06, size=atoms.positions.shape)
        atoms.positions = atoms.positions @ T.random_rotation(rng).T
        out.append(atoms)
    return out


def _dipole(atoms):
    q = {1: 0.2, 6: -0.1, 7: -0.4, 8: -0.5, 9: -0.3}
    charges = np.array([q[z] for z in atoms.numbers])
    return (charges - charges.mean()) @ atoms.positions


def test_as_many_orthogonal_channels_as_species_keep_every_linear_kernel():
    calc = SphericalExpansion(SPECIES, cutoff=3.5, max_radial=3, max_angular=3)
    exp = calc.compute(_molecules(0, 6))
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(len(SPECIES), len(SPECIES))))
    mapped = AlchemicalChannels(SPECIES, len(SPECIES), q).transform(exp)
    for lam in (0, 1, 2):
        a = lambda_soap(exp, (lam,))[lam].reshape(exp.n_centres, -1)
        b = lambda_soap(mapped, (lam,))[lam]
        gram_b = np.einsum("imf,jmf->ij", b, b) if lam else b[:, 0] @ b[:, 0].T
        gram_a = np.einsum("imf,jmf->ij", a.reshape(b.shape[0], b.shape[1], -1), a.reshape(b.shape[0], b.shape[1], -1))
        np.testing.assert_allclose(gram_b, gram_a, rtol=1e-10, atol=1e-12 * np.abs(gram_a).max())


def test_learned_channels_shrink_the_features_quadratically():
    calc = SphericalExpansion(SPECIES, cutoff=3.5, max_radial=3, max_angular=3)
    exp = calc.compute(_molecules(0, 10))
    channels = AlchemicalChannels(SPECIES, 2).fit(exp)
    mapped = channels.transform(exp)
    assert mapped.values[0].shape[-1] == 2 * exp.n_radial
    full, small = n_features(2, 3, 5 * exp.n_radial), n_features(2, 3, 2 * exp.n_radial)
    assert lambda_soap(mapped, (2,))[2].shape[-1] == small and small * 6 < full
    np.testing.assert_allclose(channels.mixing @ channels.mixing.T, np.eye(2), atol=1e-12)


def test_a_species_outside_the_compressed_set_is_named():
    calc = SphericalExpansion([1, 6, 16], cutoff=3.5, max_radial=3, max_angular=3)
    channels = AlchemicalChannels([1, 6], 1, np.array([[1.0, 0.5]]))
    with pytest.raises(DataError, match="16"):
        channels.transform(calc.compute([Atoms("CS", [[0, 0, 0], [1.5, 0, 0]])]))


@pytest.fixture(scope="module")
def model():
    frames = _molecules(2, 60)
    return build("lsoap", target="dipole", cutoff=3.5, max_radial=3, max_angular=3, n_sparse=40, n_components=40,
                 alchemical_channels=2).fit(frames, np.array([_dipole(f) for f in frames]))


@pytest.mark.parametrize("reflection", [False, True])
def test_compressed_model_is_covariant_and_learns(model, reflection):
    frames = _molecules(5, 10)
    y = model.predict(frames)
    truth = np.array([_dipole(f) for f in frames])
    assert np.sqrt(np.mean((y - truth) ** 2)) < 0.3 * np.std(truth)
    r = T.random_rotation(np.random.default_rng(6), reflection=reflection)
    moved = [f.copy() for f in frames]
    for f in moved:
        f.positions = f.positions @ r.T
    np.testing.assert_allclose(model.predict(moved), y @ r.T, atol=1e-9 * np.abs(y).max())


def test_compressed_model_file_and_unknown_element(model, tmp_path):
    frames = _molecules(7, 4)
    path = tmp_path / "alchemical.npz"
    model.save(path)
    again = load_model(path)
    np.testing.assert_allclose(again.predict(frames), model.predict(frames), rtol=1e-12, atol=1e-14)
    with pytest.raises(DataError, match="S|16"):
        again.predict([Atoms("CS", [[0, 0, 0], [1.5, 0, 0]])])
