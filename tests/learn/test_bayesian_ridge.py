"""Bayesian ridge from normal equations: scikit-learn's BayesianRidge is the reference."""

import numpy as np
from sklearn.linear_model import BayesianRidge

from mdplugin.learn.bayesian_ridge import NormalEquations, fit_bayesian_ridge


def _problem(n=300, p=40, k=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p)) @ rng.normal(size=(p, p)) / np.sqrt(p)
    w = rng.normal(size=(p, k)) * np.array([1.0, 10.0])[:k]
    y = x @ w + rng.normal(scale=[0.1, 0.5][:k], size=(n, k))
    return x, y


def test_matches_scikit_learn_and_streams_in_chunks():
    x, y = _problem()
    eq = NormalEquations.zeros(x.shape[1], y.shape[1])
    for start in range(0, len(x), 70):  # rows in chunks: the same sums
        eq.add(x[start:start + 70], y[start:start + 70])
    fit = fit_bayesian_ridge(eq)
    for o in range(y.shape[1]):
        ref = BayesianRidge(fit_intercept=False, tol=1e-10, max_iter=2000, compute_score=False).fit(x, y[:, o])
        np.testing.assert_allclose(fit.coef[:, o], ref.coef_, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(fit.beta[o], ref.alpha_, rtol=1e-3)  # noise precision
        np.testing.assert_allclose(fit.alpha[o], ref.lambda_, rtol=1e-3)  # weight precision
        _, std = ref.predict(x[:5], return_std=True)
        own = np.sqrt(fit.predict_std(x[:5])[:, o] ** 2 + 1 / fit.beta[o])  # sklearn adds the noise
        np.testing.assert_allclose(own, std, rtol=1e-3)


def test_collinear_and_zero_targets_stay_finite():
    x, y = _problem(n=50, p=80, k=1)  # more features than rows
    x = np.hstack([x, x[:, :5]])  # and exactly repeated columns
    eq = NormalEquations.zeros(x.shape[1], 2)
    eq.add(x, np.hstack([y, np.zeros_like(y)]))
    fit = fit_bayesian_ridge(eq)
    assert np.all(np.isfinite(fit.coef)) and np.all(fit.coef[:, 1] == 0)
    assert np.sqrt(np.mean((x @ fit.coef[:, 0] - y[:, 0]) ** 2)) < 0.5 * y.std()
