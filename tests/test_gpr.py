"""The sparse GPR core against dense closed forms."""

import numpy as np

from mdplugin.models.gpr import farthest_point_sampling, normal_equations, solve_projected_process


def _rbf(a, b, ell=1.0):
    d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.exp(-0.5 * d / ell**2)


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


def test_projected_process_matches_full_gpr_when_all_points_are_sparse():
    rng = np.random.default_rng(1)
    x = rng.uniform(-3, 3, size=(40, 1))
    y = np.sin(x[:, 0]) + 0.01 * rng.normal(size=40)
    xs = np.linspace(-3, 3, 17)[:, None]
    noise = 1e-2
    k = _rbf(x, x)
    # full GPR mean and variance
    kinv = np.linalg.solve(k + noise * np.eye(40), np.eye(40))
    mean_full = _rbf(xs, x) @ kinv @ y
    var_full = 1.0 - np.einsum("ij,jk,ik->i", _rbf(xs, x), kinv, _rbf(xs, x))
    a, b = normal_equations(k, y)
    sol = solve_projected_process(a, b, k, regularizer=noise)
    assert np.allclose(sol.predict(_rbf(xs, x)), mean_full, atol=1e-6)
    # the Nyström residual involves K_MM⁻¹ of an ill-conditioned RBF matrix: jitter costs ~1e-3 relative
    assert np.allclose(sol.variance(_rbf(xs, x), k_xx=np.ones(17)), var_full, rtol=2e-3, atol=1e-7)


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
