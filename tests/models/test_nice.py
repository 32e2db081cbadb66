"""NICE body order (issue 27, points 1–2): equivariant ν = 3 features, a pair of environments with
equal power spectra (ν = 2) and different ν = 3 features, and a model that tells them apart only with
``body_order=3``; model files keep the NICE compressions."""

import itertools

import numpy as np
import pytest
from ase import Atoms

from mdplugin.core import tensors as T
from mdplugin.core.errors import ConfigError
from mdplugin.features.expansion import SphericalExpansion
from mdplugin.features.lambda_soap import lambda_soap
from mdplugin.features.nice import NiceFeatures
from mdplugin.models import build, load_model

SMALL = dict(cutoff=3.0, max_radial=3, max_angular=3, n_sparse=60, n_sparse_l0=120, n_components=60,
             chunk_size=20, regularizer_l0=1e-8, regularizer_l2=1e-8)


def ring(sites, radius: float = 1.5, n: int = 8) -> Atoms:
    """A C centre with H neighbours at the ``sites`` of a regular ``n``-gon of ``radius`` Å around it.

    {0, 1, 2, 5} and {0, 1, 3, 4} of the octagon are *homometric*: the same multiset of pairwise
    distances (circular differences {1, 1, 2, 3, 3, 4}) without being congruent. At one distance from
    the centre, the power spectrum Σ_ij R(r_i) R(r_j) P_l(cos θ_ij) of the C depends only on that
    multiset: equal ν = 2 features for two different environments — the degeneracy of Pozdnyakov et
    al. (PRL 125, 166001, 2020), here in its planar form (their published coordinates were not
    reachable offline); the triangles differ, so ν = 3 (the bispectrum) tells them apart."""
    angle = 2 * np.pi * np.asarray(sites, dtype=float) / n
    positions = np.c_[radius * np.cos(angle), radius * np.sin(angle), np.zeros(len(angle))]
    return Atoms("C" + "H" * len(angle), np.vstack([np.zeros(3), positions]))


PAIR = (ring([0, 1, 2, 5]), ring([0, 1, 3, 4]))


def triangles(atoms: Atoms) -> float:
    """A three-neighbour (4-body) invariant: Σ over H triangles of the product of Gaussian edge weights."""
    h = atoms.positions[atoms.numbers == 1]
    total = 0.0
    for i, j, k in itertools.combinations(range(len(h)), 3):
        r = [np.linalg.norm(h[a] - h[b]) for a, b in ((i, j), (j, k), (i, k))]
        total += np.prod(np.exp(-((np.array(r) / 2.0) ** 2)))
    return total


def target(atoms: Atoms) -> np.ndarray:
    """A polarizability whose trace is 3-body in the neighbours (the triangles) plus a pair part."""
    alpha = np.eye(3) * (1.0 + 3.0 * triangles(atoms))
    d = atoms.get_all_distances(vector=True)[0, 1:]
    for u in d:
        alpha += 0.1 * np.outer(u, u)
    return alpha


def _ring_set(seed: int, n: int) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = ring(rng.choice(8, size=4, replace=False), radius=rng.uniform(1.3, 1.7))
        atoms.positions[1:] += rng.normal(scale=0.15, size=(4, 3))
        atoms.positions = atoms.positions @ T.random_rotation(rng).T
        out.append(atoms)
    return out


def test_the_pair_has_equal_power_spectra_and_different_nu3_features():
    calc = SphericalExpansion([1, 6], cutoff=3.0, max_radial=3, max_angular=3)
    a, b = (calc.compute([atoms]) for atoms in PAIR)
    xa, xb = lambda_soap(a, (0,))[0][0, 0], lambda_soap(b, (0,))[0][0, 0]  # the power spectrum of the C
    np.testing.assert_allclose(xa, xb, rtol=0, atol=1e-12 * np.abs(xa).max())
    nice = NiceFeatures(3, 3, (0,), n_components=400).fit(calc.compute(_ring_set(0, 30)).values)
    fa, fb = (nice.transform([v[:1] for v in e.values])[0][0, 0] for e in (a, b))
    assert np.linalg.norm(fa - fb) > 1e-2 * np.linalg.norm(fa)
    assert triangles(PAIR[0]) != pytest.approx(triangles(PAIR[1]), rel=1e-3)


@pytest.mark.parametrize("body_order", [3, 4])
@pytest.mark.parametrize("reflection", [False, True])
def test_nice_features_are_equivariant(body_order, reflection):
    calc = SphericalExpansion([1, 6], cutoff=3.0, max_radial=3, max_angular=3)
    frames = _ring_set(1, 12)
    nice = NiceFeatures(body_order, 3, (0, 1, 2), n_components=32).fit(calc.compute(frames).values)
    rng = np.random.default_rng(2)
    r = T.random_rotation(rng, reflection=reflection)
    moved = [f.copy() for f in frames[:3]]
    for f in moved:
        f.positions = f.positions @ r.T
    before, after = nice.transform(calc.compute(frames[:3]).values), nice.transform(calc.compute(moved).values)
    for lam in (0, 1, 2):
        assert before[lam].shape[2] > 0
        turned = np.einsum("mn,inf->imf", T.wigner_d_real(r, lam), before[lam])
        np.testing.assert_allclose(after[lam], turned, atol=1e-10 * np.abs(before[lam]).max())


@pytest.fixture(scope="module")
def ring_models():
    frames = _ring_set(3, 120)
    y = np.array([target(f) for f in frames])
    return {nu: build("lsoap", target="polarizability", body_order=nu, **SMALL).fit(frames, y) for nu in (2, 3)}


def _carbon_contribution(model, frames) -> np.ndarray:
    """The model's prediction from the C centres alone (n_frames, 3, 3): the sum over the centres of
    an expansion restricted to them (the H centres of the pair have different environments)."""
    from mdplugin.models.lsoap import _centres

    exp = model.featurizer().compute(frames)
    return model.predict_from_features(_centres(exp, np.flatnonzero(exp.centre_species == 6))).values


def test_only_the_nu3_model_tells_the_pair_apart(ring_models):
    truth = np.trace(np.array([target(f) for f in PAIR]), axis1=1, axis2=2)
    plain = np.trace(_carbon_contribution(ring_models[2], list(PAIR)), axis1=1, axis2=2)
    nice = np.trace(_carbon_contribution(ring_models[3], list(PAIR)), axis1=1, axis2=2)
    print("C contribution to tr α, ν = 2:", plain, "ν = 3:", nice, "true tr α:", truth)
    assert plain[0] == pytest.approx(plain[1], rel=1e-9)  # equal features: equal predictions
    assert abs(nice[0] - nice[1]) > 0.05 * abs(truth[0] - truth[1])
    errors = {nu: np.abs(np.trace(ring_models[nu].predict(list(PAIR)), axis1=1, axis2=2) - truth).max() for nu in (2, 3)}
    print("largest error of tr α on the pair:", errors)
    assert errors[3] < errors[2]


def test_nice_model_is_covariant_and_survives_its_file(ring_models, tmp_path):
    model = ring_models[3]
    frames = _ring_set(7, 4)
    y = model.predict(frames)
    rng = np.random.default_rng(9)
    r = T.random_rotation(rng, reflection=True)
    moved = [f.copy() for f in frames]
    for f in moved:
        f.positions = f.positions @ r.T
    np.testing.assert_allclose(model.predict(moved), r @ y @ r.T, atol=1e-9 * np.abs(y).max())
    path = tmp_path / "nice.npz"
    model.save(path)
    again = load_model(path)
    assert again.body_order == 3
    np.testing.assert_allclose(again.predict(frames), y, rtol=1e-12, atol=1e-12)
    features = again.featurizer().compute(frames)
    np.testing.assert_allclose(again.predict_from_features(features).values, y, rtol=1e-12, atol=1e-12)


def test_body_order_is_checked():
    with pytest.raises(ConfigError, match="body_order"):
        build("lsoap", target="dipole", body_order=5).fit(_ring_set(0, 3), np.zeros((3, 3)))


def test_a_file_without_the_features_of_its_order_is_named(ring_models, tmp_path):
    """A model state of body order 3 without its NICE projections: one error naming the setting
    (model files are checksummed, so this is the state such a file would load into)."""
    from mdplugin.models.base import read_metadata
    from mdplugin.models.lsoap import LambdaSoapModel

    path = tmp_path / "nice.npz"
    ring_models[3].save(path)
    meta, arrays = read_metadata(path)
    arrays = {key: value for key, value in arrays.items() if not key.startswith("nice_")}
    with pytest.raises(KeyError, match="body_order=3"):
        LambdaSoapModel.from_state({**meta, "arrays": arrays})
