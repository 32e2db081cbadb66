"""Posterior draws of the dipole/polarizability models (``sample_predictions``): whole functions.

The draws' mean and per-frame spread converge to ``predict(return_std=True)``; their joint
covariance is the model's posterior covariance between frames (λ-SOAP: exactly, Nyström residual
included); every draw is covariant under rotations and reflections; two nearby structures have
strongly correlated errors, unrelated environments none; models that cannot sample say so.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from scipy.linalg import solve_triangular

from mdplugin.core import tensors as T
from mdplugin.core.errors import ConfigError
from mdplugin.models import build

from ..conftest import dichloroethane
from .test_lsoap import SMALL, _bond_polarizability, _data, _point_charge_dipole

N_DRAWS = 3000


def _water(rng, noise=0.05, cell: float | None = None) -> Atoms:
    a = Atoms("OH2", positions=[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    a.positions = (a.positions + rng.normal(scale=noise, size=(3, 3))) @ T.random_rotation(rng).T
    return a


def _water_box(rng, n: int = 4, side: float = 5.0) -> Atoms:
    """``n`` water molecules at random places and orientations in a periodic cube (independent data)."""
    box = Atoms(cell=np.eye(3) * side, pbc=True)
    for _ in range(n):
        w = _water(rng)
        w.positions += rng.uniform(0, side, size=3)
        box += w
    box.wrap()
    return box


def _box_dipole(atoms):
    """A local, periodic-safe dipole: every O carries its two nearest H with charges ±, minimum image."""
    out = np.zeros(3)
    for i in np.flatnonzero(atoms.numbers == 8):
        d = atoms.get_distances(i, np.flatnonzero(atoms.numbers == 1), mic=True, vector=True)
        near = np.argsort(np.linalg.norm(d, axis=1))[:2]
        out += 0.4 * d[near].sum(axis=0)
    return out


@pytest.fixture(scope="module")
def lsoap_dipole():
    rng = np.random.default_rng(3)
    frames = _data(30, 0) + [_water(rng) for _ in range(30)]  # two compositions
    y = np.array([_point_charge_dipole(f) for f in frames])
    return build("lsoap", target="dipole", **SMALL).fit(frames, y)


@pytest.fixture(scope="module")
def lsoap_polarizability():
    frames = _data(40, 1)
    y = np.array([_bond_polarizability(f) for f in frames])
    return build("lsoap", target="polarizability", **SMALL).fit(frames, y)


@pytest.fixture(scope="module")
def rpr_models():
    frames = _data(50, 2)
    return {t: build("rpr", target=t).fit(frames, np.array([f(a) for a in frames]))
            for t, f in (("dipole", _point_charge_dipole), ("polarizability", _bond_polarizability))}


def _test_frames(n=8, seed=11):
    rng = np.random.default_rng(seed)
    return [dichloroethane(rng, noise=0.15) for _ in range(n)]


def _check_moments(model, frames, latent_noise=0.0):
    mean, draws = model.sample_predictions(frames, N_DRAWS, seed=5, return_mean=True)
    y, std = model.predict(frames, return_std=True)
    assert draws.shape == (N_DRAWS,) + y.shape
    np.testing.assert_allclose(mean, y, atol=1e-10 * np.abs(y).max())
    # mean of the draws: within 5 standard errors of the mean prediction
    assert np.all(np.abs(draws.mean(0) - y) <= 5 * std / np.sqrt(N_DRAWS) + 1e-12)
    # spread: the posterior std of every component (its estimate from 3000 draws is good to ~1.3 %)
    target = np.sqrt(np.maximum(std**2 - latent_noise, 0.0))
    ratio = draws.std(0) / target
    assert np.all(np.abs(ratio - 1.0) < 0.07), ratio
    return draws


@pytest.mark.parametrize("zeta", [1, 2])
def test_lsoap_draws_converge_to_the_posterior_mean_and_std(zeta):
    frames = _data(30, 0)
    model = build("lsoap", target="dipole", zeta=zeta, **SMALL).fit(frames, [_point_charge_dipole(f) for f in frames])
    _check_moments(model, _test_frames())


def test_lsoap_polarizability_draws_converge(lsoap_polarizability):
    draws = _check_moments(lsoap_polarizability, _test_frames(6))
    np.testing.assert_allclose(draws, np.swapaxes(draws, -1, -2), atol=1e-12)  # symmetric tensors


def test_lsoap_draws_have_the_exact_joint_posterior_covariance(lsoap_dipole):
    """The sample covariance between every pair of frames and components equals the projected-
    process posterior covariance λ K_xM (A + λK_MM)⁻¹ K_Mx' + K_xx' − K_xM K_MM⁻¹ K_Mx': the
    Nyström residual is drawn, correlated across frames, not dropped."""
    m = lsoap_dipole
    rng = np.random.default_rng(4)
    frames = _test_frames(4) + [_water(rng, 0.1) for _ in range(2)]
    exp = m.featurizer().compute(frames)
    z = m._project(m._raw_features(exp), exp.centre_species)
    k = m._structure_kernel(z, exp.centre_species, exp.centre_frame, len(frames), 1) / m.kernel_scale_[1]
    gpr = m.gpr_[1]
    v = solve_triangular(gpr.factor, k.T, lower=True)
    u = solve_triangular(gpr.kmm_factor, k.T, lower=True)
    prior = m.prior_covariance(frames)[1][0]
    exact = (gpr.regularizer * v.T @ v + prior - u.T @ u) * m.signal_variance_[1] * m.y_scale_[1] ** 2
    draws = m.sample_predictions(frames, 6000, seed=1)
    sph = T.vector_to_spherical(draws).reshape(6000, -1)
    sampled = np.cov(sph, rowvar=False)
    assert np.linalg.norm(sampled - exact) < 0.06 * np.linalg.norm(exact)
    residual = prior - u.T @ u
    # the residual is a sizeable, off-diagonal part here: dropping it would fail the check above
    assert np.linalg.norm(residual * m.signal_variance_[1] * m.y_scale_[1] ** 2) > 0.2 * np.linalg.norm(exact)


def _canonical_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Largest canonical correlation between draws a (S, k) and b (S, k) (any orientation)."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    qa, _ = np.linalg.qr(a)
    qb, _ = np.linalg.qr(b)
    return float(np.linalg.svd(qa.T @ qb, compute_uv=False)[0])


@pytest.mark.parametrize("kind", ["lsoap", "rpr"])
def test_errors_of_nearby_frames_correlate_and_unrelated_ones_do_not(kind, lsoap_dipole, rpr_models):
    rng = np.random.default_rng(6)
    a = dichloroethane(rng, noise=0.1)
    near = a.copy()
    near.positions += rng.normal(scale=0.005, size=near.positions.shape)
    if kind == "lsoap":
        model, far = lsoap_dipole, _water(rng, 0.1)  # shares only H environments with DCE, unlike ones
        frames = [a, near, far]
    else:
        model = rpr_models["dipole"]
        far = dichloroethane(rng, noise=0.35)  # far from every training frame and from a
        frames = [a, near, far]
    draws = model.sample_predictions(frames, N_DRAWS, seed=3)
    assert _canonical_correlation(draws[:, 0], draws[:, 1]) > 0.97
    assert _canonical_correlation(draws[:, 0], draws[:, 2]) < 0.3


def _turned(frames, r):
    out = [f.copy() for f in frames]
    for f in out:
        f.positions = f.positions @ r.T
    return out


@pytest.mark.parametrize("reflection", [False, True])
def test_every_lsoap_draw_is_covariant(reflection, lsoap_polarizability):
    """λ-SOAP draws are functions of equivariant features: the same seed gives the rotated draw."""
    frames = _test_frames(5, seed=21)
    r = T.random_rotation(np.random.default_rng(8), reflection=reflection)
    a = lsoap_polarizability.sample_predictions(frames, 20, seed=9)
    b = lsoap_polarizability.sample_predictions(_turned(frames, r), 20, seed=9)
    np.testing.assert_allclose(b, T.rotate_tensors(a, r), atol=1e-8 * np.abs(a).max())


@pytest.mark.parametrize("reflection", [False, True])
def test_rpr_draws_are_covariant_in_distribution(reflection, rpr_models):
    """RPR draws are made in each frame's principal-axis frame, whose axis signs are arbitrary: a
    rotated input gives draws with the rotated mean and the rotated covariance (one draw need not
    be the rotated draw)."""
    model = rpr_models["dipole"]
    frames = _test_frames(4, seed=21)
    r = T.random_rotation(np.random.default_rng(8), reflection=reflection)
    mean_a, a = model.sample_predictions(frames, N_DRAWS, seed=9, return_mean=True)
    mean_b, b = model.sample_predictions(_turned(frames, r), N_DRAWS, seed=10, return_mean=True)
    np.testing.assert_allclose(mean_b, T.rotate_vectors(mean_a, r), atol=1e-10 * np.abs(mean_a).max())
    cov_a = np.cov(T.rotate_vectors(a, r).reshape(N_DRAWS, -1), rowvar=False)
    cov_b = np.cov(b.reshape(N_DRAWS, -1), rowvar=False)
    assert np.linalg.norm(cov_a - cov_b) < 0.08 * np.linalg.norm(cov_a)


def test_a_draw_is_the_same_function_whatever_frames_it_is_asked_for(lsoap_dipole):
    """Same seed, same draws: the first frames get the same values alone or among others (and
    across the model's chunks of frames)."""
    frames = _test_frames(12, seed=2)
    lsoap_dipole.set_params(chunk_size=5)
    try:
        every = lsoap_dipole.sample_predictions(frames, 16, seed=4)
        some = lsoap_dipole.sample_predictions(frames[:3], 16, seed=4)
    finally:
        lsoap_dipole.set_params(chunk_size=SMALL["chunk_size"])
    np.testing.assert_allclose(every[:, :3], some, rtol=1e-10, atol=1e-12)


def test_rpr_draws_converge_to_the_posterior(rpr_models):
    for target, model in rpr_models.items():
        kind = "vector" if target == "dipole" else "l2"
        # draws are of the latent function: predict adds the label noise λ s² (tiny)
        _check_moments(model, _test_frames(10), latent_noise=model.regularizer * model.signal_var_[kind])


def test_rpr_draws_have_the_exact_joint_posterior_covariance(rpr_models):
    """With every frame a candidate, RPR's draws have the GP's joint posterior covariance between
    frames, s²[K(x, x') − K(x, X)(K + λI)⁻¹K(X, x')] in the body frames, rotated to the lab."""
    m = rpr_models["dipole"]
    frames = _test_frames(6, seed=30)
    fr = m._prepare(m._positions(frames, training=False))
    kap = m._kappa(fr)
    rows = np.arange(len(frames))
    v = m._train_solves(fr, rows, kap)[1]["vector"]
    body = m._posterior_block("vector", m._frame_kernel(fr, rows, rows, kap)["vector"], v, v)
    exact = np.einsum("aip,apbq,bjq->aibj", fr.axes, body, fr.axes).reshape(len(frames) * 3, -1)
    draws = m.sample_predictions(frames, 6000, seed=2)
    sampled = np.cov(draws.reshape(6000, -1), rowvar=False)
    assert np.linalg.norm(sampled - exact) < 0.06 * np.linalg.norm(exact)
    off = exact.copy()
    for a in range(len(frames)):
        off[3 * a : 3 * a + 3, 3 * a : 3 * a + 3] = 0.0
    assert np.linalg.norm(off) > 0.2 * np.linalg.norm(exact)  # frames are correlated, and so are the draws


def test_rpr_with_few_candidates_says_the_draws_miss_variance(rpr_models):
    frames = _test_frames(12)
    with pytest.warns(UserWarning, match="miss up to"):
        rpr_models["dipole"].sample_predictions(frames, 8, seed=0, max_rows=9)


def test_periodic_box_draws(tmp_path):
    """A periodic water box: draws converge, and a molecule's dipole drawn across the cell wall is
    the same function (the draws are continuous when atoms cross the wall)."""
    rng = np.random.default_rng(12)
    frames = [_water_box(rng) for _ in range(30)]
    model = build("lsoap", target="dipole", **SMALL).fit(frames, [_box_dipole(f) for f in frames])
    test = [_water_box(rng) for _ in range(4)]
    _check_moments(model, test)
    shifted = [f.copy() for f in test]
    for f in shifted:
        f.positions += np.array([2.3, -1.1, 4.7])
        f.wrap()
    a = model.sample_predictions(test, 10, seed=1)
    b = model.sample_predictions(shifted, 10, seed=1)
    np.testing.assert_allclose(a, b, atol=1e-8 * np.abs(a).max())


def test_models_that_cannot_sample_say_so_in_one_line(rpr_models):
    frames = _data(20, 3)
    y = np.array([_point_charge_dipole(f) for f in frames])
    cases = [build("rpr", target="dipole", regressor="krr").fit(frames, y),
             build("lsoap", target="dipole", zeta=3, **SMALL).fit(frames, y)]
    for model in cases:
        with pytest.raises(ConfigError) as err:
            model.sample_predictions(frames, 4)
        assert "cannot draw posterior samples" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="'soap' energy model cannot draw posterior samples"):
        build("soap").sample_predictions(frames, 4)  # the base class: no posterior draws
    for bad in (0, 2.5, "many"):
        with pytest.raises(ConfigError, match="positive integer"):
            rpr_models["dipole"].sample_predictions(frames, bad)


@pytest.mark.parametrize("target", ["dipole", "polarizability"])
def test_lsoap_std_is_calibrated_on_independent_frames(target):
    """The signal variance comes from the held-out frames (errors of unit variance under the fit
    without them): on independent frames the standardised errors have an RMS near 1. The
    maximum-likelihood value for the chosen regulariser gave 0.25 (dipole) and 0.49
    (polarizability) here: the predicted std 2-4x the actual error."""
    fn = _point_charge_dipole if target == "dipole" else _bond_polarizability
    frames = _data(100, 0)
    model = build("lsoap", target=target, **SMALL).fit(frames, np.array([fn(f) for f in frames]))
    test = _data(60, 9)
    mu, std = model.predict(test, return_std=True)
    z = (mu - np.array([fn(f) for f in test])) / std
    assert 0.7 < np.sqrt(np.mean(z**2)) < 1.4
