"""Posterior sampling of Gaussian-process models: draws that are whole functions.

A sample of a model's posterior is one plausible model, evaluated on every frame: its error is
correlated between frames exactly as the posterior covariance says, not independent per frame.
Two building blocks, used by the models' ``sample_predictions``:

* :func:`weight_draws` — draws of the weights of a sparse (projected-process) GPR,
  ``δw ~ N(0, λ (A + λ K_MM)⁻¹)`` in units of the signal variance (:mod:`mdplugin.learn.gpr`'s
  notation), from the stored Cholesky factor; ``K_xM δw`` has the covariance of the weight part
  of the posterior, ``λ K_xM (A + λ K_MM)⁻¹ K_Mx'``, between any two frames.
* :func:`pivoted_cholesky` — a low-rank factor ``L`` (n, r) of a covariance matrix, ``C ≈ L Lᵀ``,
  whose pivots are the rows of largest remaining variance (LAPACK ``dpstrf``); the remaining
  diagonal is below ``tol²`` times the largest diagonal. Kriging from the pivots
  (``C_xP C_PP⁻¹ e_P``) extends a draw on the pivots to any other row with the right
  covariance up to that remainder (used by RPR, a full GP without explicit features).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import lapack, solve_triangular

from ..core.errors import ConfigError
from .gpr import ProjectedProcess

__all__ = ["check_n_samples", "weight_draws", "pivoted_cholesky"]


def check_n_samples(n_samples) -> int:
    """A positive whole number of posterior samples, or a one-line :class:`ConfigError`."""
    try:
        n = int(n_samples)
    except (TypeError, ValueError):
        n = 0
    if n != n_samples or n < 1:
        raise ConfigError(f"the number of posterior samples must be a positive integer, got {n_samples!r}")
    return n


def weight_draws(gpr: ProjectedProcess, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """``n_samples`` draws ``δw`` (m, n_samples) of the posterior of the weights around their mean,
    in units of the signal standard deviation: ``δw = √λ L⁻ᵀ ξ`` with ``L Lᵀ = A + λ K_MM`` (the
    stored factor) and ``ξ ~ N(0, I)``, so that ``Cov(δw) = λ (A + λ K_MM)⁻¹``."""
    m = gpr.factor.shape[0]
    xi = rng.standard_normal((m, int(n_samples)))
    return np.sqrt(gpr.regularizer) * solve_triangular(gpr.factor, xi, lower=True, trans="T", check_finite=False)


def pivoted_cholesky(matrix: np.ndarray, tol: float = 1e-2, max_rank: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pivoted Cholesky factor of a symmetric positive semi-definite ``matrix`` (n, n), LAPACK's
    ``dpstrf`` (complete pivoting: the next pivot is the row of largest remaining variance).

    Returns ``(pivots (r,), factor (n, r))`` with ``factor @ factor.T ≈ matrix``: exact on the
    pivot rows and columns, and every remaining diagonal element (the variance of a row given
    the pivots) at most ``tol²`` times the largest diagonal element of ``matrix``; at most
    ``max_rank`` columns. ``factor[pivots]`` is lower triangular.
    """
    a = np.asarray(matrix, dtype=float)
    n = a.shape[0]
    top = float(np.max(np.diag(a), initial=0.0))
    if n == 0 or top <= 0.0:
        return np.zeros(0, dtype=int), np.zeros((n, 0))
    c, piv, rank, info = lapack.dpstrf(a, tol=(float(tol) ** 2) * top, lower=1)
    if info < 0:
        raise ValueError(f"dpstrf: illegal argument {-info}")
    rank = min(int(rank), n if max_rank is None else int(max_rank))
    order = piv - 1  # LAPACK counts from 1
    factor = np.zeros((n, rank))
    factor[order] = np.tril(c)[:, :rank]
    return order[:rank].astype(int), factor
