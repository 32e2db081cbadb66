"""Bayesian linear (ridge) regression from accumulated normal equations, many outputs at once.

The model ``y = X w + ε`` with prior ``w ~ N(0, 1/α)`` and noise ``ε ~ N(0, 1/β)``; α and β are
set per output by maximising the evidence (MacKay's fixed-point updates, as scikit-learn's
``BayesianRidge`` does), using only ``XᵀX``, ``Xᵀy``, ``yᵀy`` and the number of rows — so the rows
can be streamed in chunks and summed over MPI ranks (:class:`NormalEquations`). One
eigendecomposition of ``XᵀX`` serves every output.

Posterior of the weights of output o: mean ``m_o``, covariance
``Σ_o = V diag(1 / (β_o e + α_o)) Vᵀ`` (``XᵀX = V diag(e) Vᵀ``); the standard deviation of the
mean prediction at a row ``x`` is ``sqrt(xᵀ Σ_o x)``.

scikit-learn's ``BayesianRidge`` needs the whole ``X`` in memory and one output at a time; the
Hamiltonian model has ~10⁵–10⁶ rows per block kind and up to ~10 outputs sharing them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class NormalEquations:
    """Running sums ``XᵀX`` (p, p), ``XᵀY`` (p, k), ``YᵀY`` (k,) and the row count."""

    xtx: np.ndarray
    xty: np.ndarray
    yty: np.ndarray
    n_rows: int = 0

    @classmethod
    def zeros(cls, n_features: int, n_outputs: int) -> "NormalEquations":
        return cls(np.zeros((n_features, n_features)), np.zeros((n_features, n_outputs)), np.zeros(n_outputs))

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Add rows ``x`` (n, p) with targets ``y`` (n, k)."""
        self.xtx += x.T @ x
        self.xty += x.T @ y
        self.yty += np.einsum("nk,nk->k", y, y)
        self.n_rows += len(x)

    def allreduce(self, comm) -> None:
        """Sum over the ranks of an mpi4py-like communicator (no-op without one)."""
        if comm is None or comm.Get_size() == 1:
            return
        for a in (self.xtx, self.xty, self.yty):
            total = np.empty_like(a)
            comm.Allreduce(np.ascontiguousarray(a), total)  # buffers: no rank sees another's sum half-written
            a[...] = total
        self.n_rows = int(comm.allreduce(self.n_rows))


@dataclass
class BayesianRidgeFit:
    """Fitted weights ``coef`` (p, k), precisions ``alpha``/``beta`` (k,), the eigenbasis of XᵀX
    ``eigvecs`` (p, p) and ``eigvals`` (p,)."""

    coef: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    eigvecs: np.ndarray
    eigvals: np.ndarray

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Mean predictions (n, k) of rows ``x`` (n, p)."""
        return x @ self.coef

    def posterior_factor(self, output: int) -> np.ndarray:
        """``L`` (p, p) with ``L Lᵀ = Σ_output`` (the weights' posterior covariance)."""
        return self.eigvecs / np.sqrt(self.beta[output] * self.eigvals + self.alpha[output])

    def predict_std(self, x: np.ndarray) -> np.ndarray:
        """Standard deviation (n, k) of the mean prediction of rows ``x`` (n, p)."""
        proj = (x @ self.eigvecs) ** 2  # (n, p)
        return np.sqrt(proj @ (1.0 / (np.outer(self.eigvals, self.beta) + self.alpha)))


def fit_bayesian_ridge(eq: NormalEquations, max_iter: int = 500, tol: float = 1e-7,
                       rcond: float = 1e-11) -> BayesianRidgeFit:
    """Evidence-maximising Bayesian ridge for each output column of ``eq``.

    Directions of ``XᵀX`` with eigenvalues below ``rcond`` × the largest are treated as unseen by
    the data (their weights stay 0, their variance is the prior's 1/α), which keeps the
    fixed-point iteration stable when features are (nearly) collinear.
    """
    e, v = np.linalg.eigh(eq.xtx)
    seen = e > rcond * max(e.max(initial=0.0), 1e-300)
    e = np.where(seen, e, 0.0)
    vty = np.where(seen[:, None], v.T @ eq.xty, 0.0)  # (p, k)
    n, p = max(eq.n_rows, 1), len(e)
    k = eq.xty.shape[1]
    coef = np.zeros((p, k))
    alphas, betas = np.ones(k), np.ones(k)
    safe_e = np.where(seen, e, 1.0)
    for o in range(k):
        b = vty[:, o]
        # residual of the least-squares fit (≥ 0 up to round-off) and the weights' size there
        rss_ls = max(float(eq.yty[o] - np.sum(np.where(seen, b**2 / safe_e, 0.0))), 0.0)
        if eq.yty[o] <= 0.0 or not seen.any():  # an all-zero target: nothing to learn
            alphas[o], betas[o] = 1.0, 1e12
            continue
        beta = n / max(float(eq.yty[o]), 1e-300)
        alpha = float(np.mean(e[seen])) * beta * 1e-3
        for _ in range(max_iter):
            d = beta * e + alpha
            m = beta * b / d
            gamma = float(np.sum(beta * e / d))
            shrink = alpha / d  # the fit's distance from the least-squares weights, per direction
            rss = rss_ls + float(np.sum(np.where(seen, b**2 / safe_e * shrink**2, 0.0)))
            alpha_new = gamma / max(float(m @ m), 1e-300)
            beta_new = max(n - gamma, 1e-6) / max(rss, 1e-300)
            done = abs(np.log(alpha_new / alpha)) < tol and abs(np.log(beta_new / beta)) < tol
            alpha, beta = alpha_new, beta_new
            if done:
                break
        coef[:, o] = v @ (beta * b / (beta * e + alpha))
        alphas[o], betas[o] = alpha, beta
    return BayesianRidgeFit(coef=coef, alpha=alphas, beta=betas, eigvecs=v, eigvals=e)
