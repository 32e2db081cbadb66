"""The feature cache: what the models of one step share, computed once, read-only, and equal to
the features computed directly (no model can change another's inputs behind its back)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from mdplugin.features.cache import FeatureCache, as_feature_cache
from mdplugin.features.expansion import Expansion, SphericalExpansion
from mdplugin.features.lambda_contract import contract_lambda_soap, gram_matrices, lambda_soap_squared_norms
from mdplugin.features.lambda_soap import EQUIVARIANT_NORM_FLOOR, lambda_soap, n_features, padded_and_transposed

from ..conftest import dichloroethane

SPECIES = [1, 6, 17]
HYPERS = dict(cutoff=3.5, max_radial=3, max_angular=3, gaussian_width=0.3)


def _frames(n=3, seed=0):
    rng = np.random.default_rng(seed)
    frames = [dichloroethane(rng, noise=0.15) for _ in range(n)]
    frames.append(Atoms("CHCl", positions=[[0, 0, 0], [1.09, 0, 0], [-0.6, 1.6, 0.1]]))
    return frames


def _empty() -> Expansion:
    values = [np.zeros((0, 2 * l + 1, 6)) for l in range(4)]
    return Expansion(species=(1, 6), max_angular=3, values=values, centre_frame=np.zeros(0, int),
                     centre_atom=np.zeros(0, int), centre_species=np.zeros(0, int), n_frames=0)


def test_features_are_computed_once_and_read_only():
    exp = SphericalExpansion(SPECIES, **HYPERS).compute(_frames())
    cache = FeatureCache(exp)
    first = cache.lambda_soap((0, 1))
    second = cache.lambda_soap((0, 2))
    assert second[0] is first[0]
    assert cache.power_spectrum().base is first[0] or np.shares_memory(cache.power_spectrum(), first[0])
    fresh = lambda_soap(exp, (0, 1, 2))
    for lam, features in [(0, first[0]), (1, first[1]), (2, second[2])]:
        np.testing.assert_array_equal(features, fresh[lam])
        with pytest.raises(ValueError):
            features[0, 0, 0] = 1.0
    assert as_feature_cache(cache) is cache and as_feature_cache(exp).expansion is exp


def test_inverse_norms_with_and_without_the_features_agree():
    """From the features when a model formed them, else from the Gram matrices without forming them
    (an MD step's λ-SOAP means form no λ > 0 features)."""
    calc = SphericalExpansion(SPECIES, **HYPERS)
    without, with_features = FeatureCache(calc.compute(_frames())), FeatureCache(calc.compute(_frames()))
    with_features.lambda_soap((0, 1, 2))
    for lam in (0, 1, 2):
        inverse = without.inverse_norms(lam)
        assert without.inverse_norms(lam) is inverse
        np.testing.assert_allclose(inverse, with_features.inverse_norms(lam), rtol=1e-14)
        x = with_features.lambda_soap((lam,))[lam]
        norm = np.linalg.norm(x.reshape(len(x), -1), axis=1)
        if lam == 0:
            np.testing.assert_allclose(inverse * norm, 1.0, rtol=1e-13)
        else:  # floored by ε |x⁰| (EQUIVARIANT_NORM_FLOOR): 1 / sqrt(|x^λ|² + ε² |x⁰|²)
            norm0 = np.linalg.norm(with_features.power_spectrum(), axis=1)
            np.testing.assert_allclose(inverse * np.hypot(norm, EQUIVARIANT_NORM_FLOOR * norm0), 1.0, rtol=1e-13)
            assert np.all(inverse * norm < 1.0) and np.all(inverse * norm > 1.0 - 1e-6)
        with pytest.raises(ValueError):
            inverse[0] = 1.0
    assert without._lambda_soap == {}  # no features were formed for the norms


@pytest.mark.parametrize("lam", [0, 1, 2])
def test_contraction_and_norms_without_the_features_equal_those_of_the_features(lam):
    """An MD step's SA-GPR mean contracts per-centre weights with the λ-SOAP features, and
    normalises by their norms, without forming them: the same numbers as the features give, for a
    batch of several compositions (full and folded blocks at max_angular 3), and empty results for
    no centres."""
    exp = SphericalExpansion(SPECIES, **HYPERS).compute(_frames())
    cache = FeatureCache(exp)
    x = lambda_soap(exp, (lam,))[lam]
    weights = np.random.default_rng(lam).normal(size=(exp.n_centres, x.shape[2]))
    np.testing.assert_allclose(cache.contract(lam, weights), np.einsum("imf,if->im", x, weights),
                               rtol=0, atol=1e-13 * np.abs(x).max() * np.abs(weights).sum(axis=1).max())
    n_prop = exp.values[0].shape[-1]
    np.testing.assert_allclose(lambda_soap_squared_norms(cache.gram(), n_prop, lam), np.sum(x**2, axis=(1, 2)),
                               rtol=1e-13)
    padded = padded_and_transposed(_empty().values)
    assert contract_lambda_soap(*padded, lam, np.zeros((0, n_features(lam, 3, 6)))).shape == (0, 2 * lam + 1)
    assert lambda_soap_squared_norms(gram_matrices(*padded), 6, lam).shape == (0,)


def test_centre_rows_group_the_centres_of_each_species():
    """Slices where a species' centres are contiguous (one molecule), index arrays where not (a
    batch); together they cover every centre once."""
    calc = SphericalExpansion(SPECIES, **HYPERS)
    frames = _frames()
    for batch in (frames[:1], frames):
        cache = FeatureCache(calc.compute(batch))
        rows = cache.centre_rows()
        assert cache.centre_rows() is rows
        assert sorted(rows) == sorted(set(cache.centre_species.tolist()))
        covered = np.concatenate([np.arange(cache.n_centres)[r] for r in rows.values()])
        assert sorted(covered.tolist()) == list(range(cache.n_centres))
        for z, r in rows.items():
            assert np.all(cache.centre_species[r] == z)
    contiguous = calc.compute([Atoms("CCHHHH", positions=np.random.default_rng(0).normal(scale=1.2, size=(6, 3)))])
    assert all(isinstance(r, slice) for r in FeatureCache(contiguous).centre_rows().values())


def test_nothing_is_written_into_the_expansion():
    exp = SphericalExpansion(SPECIES, **HYPERS).compute(_frames(), gradients=True)
    before = set(vars(exp))
    cache = FeatureCache(exp)
    cache.lambda_soap((0, 1, 2)), cache.inverse_norms(1), cache.gram(), cache.centre_rows(), cache.padded()
    assert set(vars(exp)) == before
