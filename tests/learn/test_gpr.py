"""The sparse GPR core against dense closed forms."""

import numpy as np
import pytest

from mdplugin.learn.gpr import (
    ProjectedProcess,
    distributed_farthest_point_sampling,
    distributed_farthest_point_sampling_groups,
    factor_sparse_kernel,
    farthest_point_sampling,
    held_out_errors,
    held_out_weights,
    normal_equations,
    pack_lower,
    scaled_symmetric_part,
    solve_projected_process,
    solve_projected_process_factored,
    unpack_lower,
)


def _rbf(a, b, ell=1.0):
    d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.exp(-0.5 * d / ell**2)


def _skmatter_fps(x: np.ndarray, n_select: int, start: int = 0) -> np.ndarray:
    """The reference: scikit-matter's greedy FPS (updates every row at every step)."""
    from skmatter.sample_selection import FPS

    return FPS(n_to_select=min(n_select, len(x)), initialize=start).fit(x).selected_idx_


def test_fps_chooses_what_skmatter_chooses():
    """The filtered FPS picks the rows of scikit-matter's FPS, in the same order (clustered rows like
    invariant features, and plain Gaussian rows where the filter directions explain little)."""
    rng = np.random.default_rng(11)
    for x in (_clustered(rng), rng.normal(size=(700, 80))):
        for start in (0, 123):
            np.testing.assert_array_equal(farthest_point_sampling(x, 150, start=start), _skmatter_fps(x, 150, start))
    x = rng.normal(size=(10, 3))
    np.testing.assert_array_equal(farthest_point_sampling(x, 25), _skmatter_fps(x, 10))  # all, in FPS order
    assert len(farthest_point_sampling(x, 0)) == 0


def test_fps_chooses_what_skmatter_chooses_on_real_features():
    """The same on the SOAP energy model's normalised features of 150 DCE training frames, per
    species (the rows the models really select from; benchmarks/bench_fps.py does 1000 frames)."""
    from pathlib import Path

    from ase.io import read

    from mdplugin.features.expansion import SphericalExpansion
    from mdplugin.features.lambda_soap import power_spectrum

    frames = read(Path(__file__).resolve().parents[2] / "examples" / "trajectories" / "dce_train.xyz", index=":150")
    x = power_spectrum(SphericalExpansion([1, 6, 17], cutoff=5.0, max_radial=4, max_angular=3).compute(frames))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    z = np.concatenate([a.numbers for a in frames])
    for species in (1, 6, 17):
        rows = np.ascontiguousarray(x[z == species])
        np.testing.assert_array_equal(distributed_farthest_point_sampling(rows, 120), _skmatter_fps(rows, 120))


def test_fps_is_deterministic_and_spread():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    idx = farthest_point_sampling(x, 20)
    assert len(set(idx.tolist())) == 20 and idx[0] == 0
    assert np.array_equal(idx, farthest_point_sampling(x, 20))
    # the 2nd point is the one farthest from the first
    assert idx[1] == np.argmax(((x - x[0]) ** 2).sum(1))
    # spread: min distance among selected beats that of a random subset
    def min_pair(s):
        d = ((x[s][:, None] - x[s][None]) ** 2).sum(-1)
        return d[np.triu_indices(len(s), 1)].min()
    assert min_pair(idx) > min_pair(rng.permutation(300)[:20])


def _clustered(rng, n=1500, d=24):
    """Rows like normalised invariant features: a few clusters along a decaying spectrum."""
    centres = rng.normal(size=(12, d)) * np.geomspace(1.0, 0.01, d)
    x = centres[rng.integers(0, 12, n)] + 0.05 * rng.normal(size=(n, d)) * np.geomspace(1.0, 0.1, d)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_distributed_fps_on_one_rank_is_fps():
    rng = np.random.default_rng(3)
    x = _clustered(rng)
    for start in (0, 17):
        np.testing.assert_array_equal(
            distributed_farthest_point_sampling(x, 200, start=start), _skmatter_fps(x, 200, start=start))
    assert sorted(distributed_farthest_point_sampling(x[:30], 50).tolist()) == list(range(30))  # all, FPS order
    assert len(distributed_farthest_point_sampling(x, 0)) == 0
    with pytest.raises(ValueError):
        distributed_farthest_point_sampling(x, 5, start=len(x))


@pytest.mark.parametrize("bounds", [(0, 750, 1500), (0, 1, 1499, 1500), (0, 0, 400, 401, 1500), (0, 1500, 1500)])
def test_distributed_fps_is_independent_of_how_the_rows_are_split(bounds):
    """Every split over (thread-)ranks, empty and one-row ranks included, selects the serial rows."""
    from ..support.fake_comm import run_ranks

    x = _clustered(np.random.default_rng(4))
    serial = distributed_farthest_point_sampling(x, 150, start=900)
    got = run_ranks(len(bounds) - 1, lambda comm: distributed_farthest_point_sampling(
        x[bounds[comm.rank]:bounds[comm.rank + 1]], 150, comm, start=900))
    for chosen in got:
        np.testing.assert_array_equal(chosen, serial)


def test_distributed_fps_groups_are_independent_selections():
    """Several matrices (one per species in SA-GPR) share the per-step exchange, not the result;
    a rank may hold no row of a group."""
    from ..support.fake_comm import run_ranks

    rng = np.random.default_rng(6)
    xs = [_clustered(rng, n=n, d=d) for n, d in ((900, 24), (40, 10), (300, 70))]
    alone = [distributed_farthest_point_sampling(x, 60) for x in xs]
    together = distributed_farthest_point_sampling_groups(xs, 60)
    assert [len(c) for c in together] == [60, 40, 60]
    for a, b in zip(together, alone):
        np.testing.assert_array_equal(a, b)
    cuts = [(0, 500, 900), (0, 40, 40), (0, 0, 300)]  # group 1 only on rank 0, group 2 only on rank 1
    got = run_ranks(2, lambda comm: distributed_farthest_point_sampling_groups(
        [x[c[comm.rank]:c[comm.rank + 1]] for x, c in zip(xs, cuts)], 60, comm))
    for rank_result in got:
        for a, b in zip(rank_result, alone):
            np.testing.assert_array_equal(a, b)

def test_distributed_fps_filter_is_exact():
    """The lower-bound filter (distances along a few principal directions) only skips rows that
    cannot change: any number of directions (1: a loose bound; 0: no filter, every row updated)
    selects the same rows, also with duplicated rows (ties)."""
    rng = np.random.default_rng(5)
    x = _clustered(rng, n=600)
    x = np.concatenate([x, x[::3]])  # exact duplicates: ties broken by the lowest index
    ref = distributed_farthest_point_sampling(x, 300, n_filter=0)
    for width in (1, 3, 8):
        np.testing.assert_array_equal(distributed_farthest_point_sampling(x, 300, n_filter=width), ref)
    assert len(set(ref.tolist())) == 300 and np.all(ref < 600)  # a duplicate never beats its original


def test_normal_equations_sum_over_blocks():
    rng = np.random.default_rng(2)
    knm = rng.normal(size=(50, 6))
    y = rng.normal(size=(50, 2))
    a, b = normal_equations(knm, y)
    a1, b1 = normal_equations(knm[:20], y[:20])
    a2, b2 = normal_equations(knm[20:], y[20:])
    assert np.allclose(a, a1 + a2) and np.allclose(b, b1 + b2)
    sol = solve_projected_process(a, b, np.eye(6), regularizer=1e-3)
    assert sol.weights.shape == (6, 2)
    # ridge solution
    assert np.allclose(sol.weights, np.linalg.solve(a + 1e-3 * np.eye(6), b), atol=1e-8)


def _random_problem(seed, n=60, m=12):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, size=(n, 1))
    xm = np.linspace(-3, 3, m)[:, None]
    y = np.sin(x[:, 0]) + 0.05 * rng.normal(size=n)
    return _rbf(x, xm), y, _rbf(xm, xm)


def test_factored_solve_is_the_plain_solve():
    knm, y, kmm = _random_problem(3)
    a, b = normal_equations(knm, y)
    plain = solve_projected_process(a, b, kmm, regularizer=1e-3)
    kmm_sym, kmm_factor = factor_sparse_kernel(kmm)
    fast = solve_projected_process_factored(a, b, kmm_sym, kmm_factor, regularizer=1e-3)
    assert np.allclose(fast.weights, plain.weights, rtol=1e-12, atol=1e-12)
    assert np.allclose(fast.variance(knm[:5], np.ones(5)), plain.variance(knm[:5], np.ones(5)), rtol=1e-10)
    # K_MM = L Lᵀ
    assert np.allclose(kmm_factor @ kmm_factor.T, kmm_sym, atol=1e-8)


def test_held_out_errors_are_those_of_explicit_fits():
    knm, y, kmm = _random_problem(4, m=6)  # well separated sparse points: K_MM well conditioned
    val = np.arange(len(y)) % 5 == 0
    a, b = normal_equations(knm[~val], y[~val])
    grid = [1e-3, 1e-1, 10.0]  # well-conditioned systems: the jitter is negligible
    errors = held_out_errors(a, b, 0.5 * (kmm + kmm.T), knm[val], y[val], grid)
    assert sorted(errors) == grid
    for reg in grid:
        # the closed form: w = (A + λ K_MM)⁻¹ b
        w = np.linalg.solve(a + reg * kmm, b)
        assert np.isclose(errors[reg], np.mean((knm[val] @ w - y[val]) ** 2), rtol=1e-6)
    # heavy regularisation underfits a smooth, nearly noise-free signal
    assert errors[10.0] > errors[1e-3]


def test_held_out_weights_solve_the_system_and_reuse_a_buffer():
    knm, y, kmm = _random_problem(6, m=6)
    a, b = normal_equations(knm, y)
    work = np.empty((6, 6), order="F")
    for reg in (1e-3, 1.0):
        w = held_out_weights(a, b, kmm, reg, work=work)  # the same scratch buffer each time
        np.testing.assert_allclose((a + reg * kmm) @ w, b, rtol=1e-8, atol=1e-10)
    # a system that no jitter makes positive definite: None, not an exception
    assert held_out_weights(-np.eye(3), np.ones(3), np.eye(3), 1e-3) is None
    with pytest.raises(ValueError):
        held_out_weights(a, b, kmm, 0.0)


def test_factor_of_a_singular_matrix_gets_jitter_and_a_clean_upper_triangle():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(3, 8))
    singular = x.T @ x  # rank 3 of 8: the factorisation needs the jitter retries
    plain = solve_projected_process(singular, np.ones(8), np.eye(8), regularizer=1e-30, jitter=1e-13)
    factor = plain.factor
    assert np.all(np.triu(factor, 1) == 0.0) and np.all(np.isfinite(factor))
    mean_diag = np.trace(singular) / 8
    # L Lᵀ = the matrix plus a small multiple of its mean diagonal on the diagonal
    extra = np.diag(factor @ factor.T - singular)
    np.testing.assert_allclose(factor @ factor.T - np.diag(extra), singular, atol=1e-9 * mean_diag)
    assert np.all(extra > 0) and np.all(extra < 1e-6 * mean_diag)


@pytest.mark.parametrize("m", [1, 7, 300, 513])
def test_scaled_symmetric_part_is_the_plain_expression(m):
    rng = np.random.default_rng(m)
    a = rng.normal(size=(m, m)) * 10.0 ** rng.integers(-5, 5, size=(m, m))
    ref = a / 3.7
    ref = 0.5 * (ref + ref.T)
    got = scaled_symmetric_part(a.copy(), 3.7, tile=64)
    np.testing.assert_array_equal(got, ref)  # bit for bit
    np.testing.assert_array_equal(got, got.T)


def test_packed_factors_round_trip_exactly_and_old_layout_loads():
    knm, y, kmm = _random_problem(5)
    a, b = normal_equations(knm, y)
    sol = solve_projected_process(a, b, kmm, regularizer=1e-2)
    packed = sol.to_packed_arrays("p")
    m = len(kmm)
    assert packed["p_factor_packed"].shape == (m * (m + 1) // 2,)
    for arrays in (packed, sol.to_arrays("p")):
        back = ProjectedProcess.from_arrays(arrays, "p")
        assert np.array_equal(back.factor, sol.factor) and np.array_equal(back.kmm_factor, sol.kmm_factor)
        assert np.array_equal(back.weights, sol.weights) and back.regularizer == sol.regularizer
    lower = np.tril(np.arange(1.0, 17.0).reshape(4, 4))
    assert np.array_equal(unpack_lower(pack_lower(lower)), lower)
    with pytest.raises(ValueError):
        unpack_lower(np.ones(5))


def test_log_evidence_is_the_marginal_likelihood_of_the_projected_process():
    """The evidence from the normal equations equals the direct n × n Gaussian log-likelihood (with
    the signal variance at its maximum) up to a λ-independent constant, and its maximiser finds the
    noise level of data drawn from the model."""
    from scipy.stats import multivariate_normal

    from mdplugin.learn.regularizer import evidence_regularizer, log_evidence

    rng = np.random.default_rng(0)
    n, m = 300, 25
    x = rng.normal(size=(n, 3))
    centres = x[:m]
    kernel = lambda a, b: np.exp(-0.5 * np.sum((a[:, None] - b[None]) ** 2, axis=-1))  # noqa: E731
    knm, kmm = kernel(x, centres), kernel(centres, centres)
    q = knm @ np.linalg.solve(kmm + 1e-12 * np.eye(m), knm.T)
    noise = 1e-2
    y = rng.multivariate_normal(np.zeros(n), 2.0 * (q + noise * np.eye(n)))
    a, b, yy = knm.T @ knm, knm.T @ y, float(y @ y)
    regs = np.array([1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    ours = log_evidence(regs, a, b, yy, n, kmm, jitter=1e-12)
    direct = []
    for reg in regs:
        cov = q + reg * np.eye(n)
        s2 = y @ np.linalg.solve(cov, y) / n
        direct.append(multivariate_normal(np.zeros(n), s2 * cov, allow_singular=True).logpdf(y))
    np.testing.assert_allclose(ours - ours[0], np.array(direct) - direct[0], rtol=1e-6, atol=1e-6)
    best = evidence_regularizer(a, b, yy, n, kmm, jitter=1e-12)
    assert 10 ** -2.6 < best < 10 ** -1.4  # the noise-to-signal ratio of the data, 1e-2
