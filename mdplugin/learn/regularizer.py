"""The solve of a projected-process GPR from its summed normal equations, with the regulariser
chosen by the error on held-out rows (each λ GPR of :mod:`mdplugin.models.lsoap`).

The candidates are a grid of noise-to-signal variance ratios, then the geometric midpoints
between the best one and its neighbours; each costs one Cholesky factorisation (``K_MM`` is
factorised once), and with MPI the factorisations are shared among the ranks, so that the
model is the serial one on any number of ranks.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.linalg import cho_solve, eigh, solve_triangular

from ..core.errors import ConfigError
from .gpr import (
    ProjectedProcess,
    _cholesky_of,
    _stable_cholesky,
    _system_filler,
    held_out_weights,
    solve_projected_process_factored,
)
from .parallel import allgather_blocks, resolve_comm, share_tasks

__all__ = ["solve_regularized", "held_out_signal_variance", "evidence_regularizer", "log_evidence"]


def solve_regularized(
    a_fit: np.ndarray, b_fit: np.ndarray, kmm: np.ndarray, reg: float | None, grid: Sequence[float],
    jitter: float, comm=None, held_out: tuple | None = None, timer=None, ledger=None,
) -> tuple[ProjectedProcess, float]:
    """The λ GPR (and its regulariser) from the summed normal equations ``a_fit`` (m, m),
    ``b_fit`` (m,) and the symmetric scaled ``kmm`` (m, m).

    ``held_out`` None: ``a_fit``, ``b_fit`` hold every row and ``reg`` (or 1e-4) is used as
    given. Otherwise ``(a_val, b_val, blocks, n_val)``: the normal equations of the held-out
    rows (every rank), this rank's held-out kernel rows and targets ``[(k_val (v_b, m),
    y_val (v_b,))]`` one pair per local block in block order, and the number of held-out
    rows of all ranks; ``a_fit``, ``b_fit`` then hold the other rows. ``reg`` None: chosen
    by the RMSE on the held-out rows of the fits without them: every value of ``grid`` (the
    model's ``regularizer_grid``), then the geometric midpoints between the best one and its
    neighbours in the grid; then refitted on all rows (``a_fit`` is overwritten by
    ``a_fit + a_val``). ``jitter``: relative diagonal jitter of the Cholesky factorisations.

    With an MPI ``comm`` the Cholesky factorisations are shared among the ranks
    (:func:`~mdplugin.learn.parallel.share_tasks`): the grid candidates together with ``K_MM``'s
    factor, then the midpoints; every rank then solves the final system. The held-out errors
    are summed block by block, each block's on the rank that holds its rows (the held-out
    rows never travel). Each is the computation a serial fit does, so the model is the
    serial one. ``ledger``: a :class:`~mdplugin.learn.parallel.CpuLedger` (task costs in
    floating-point operations, a factorisation ``m³/3``).
    """
    comm = resolve_comm(comm)
    timer = timer or (lambda phase: None)
    cost = float(len(kmm)) ** 3 / 3.0
    if held_out is None:
        reg = 1e-4 if reg is None else float(reg)
        # K_MM's factor (for the variance) and the final system are independent
        kmm_factor, gpr = share_tasks(
            comm, [cost, cost],
            lambda t: _stable_cholesky(kmm, jitter) if t == 0
            else solve_projected_process_factored(a_fit, b_fit, kmm, None, reg, jitter),
            ledger,
        )
        gpr.kmm_factor = kmm_factor
        timer("solve")
        return gpr, reg
    a_val, b_val, blocks, n_val = held_out

    def scores(values: list, weights: list) -> dict:
        """Mean squared held-out error of each candidate (None: no positive-definite system)."""
        ok = [i for i, w in enumerate(weights) if w is not None]
        if not ok:
            return {value: None for value in values}
        w = np.stack([weights[i] for i in ok], axis=1)  # (m, candidates)
        # per block, on the rank that holds it; summed in block order (any number of ranks)
        sse = allgather_blocks(comm, [np.sum((kv @ w - yv[:, None]) ** 2, axis=0) for kv, yv in blocks])
        total = np.zeros(len(ok))
        for part in sse:
            total += part
        out = {value: None for value in values}
        out.update({values[i]: float(total[j] / max(n_val, 1)) for j, i in enumerate(ok)})
        return out

    def best_of(errors: dict) -> float | None:
        best, best_err = None, np.inf
        for value in sorted(errors):
            if errors[value] is not None and errors[value] < best_err:
                best, best_err = value, errors[value]
        return best

    grid = sorted({float(r) for r in grid})
    for value in grid:
        if not value > 0:
            raise ConfigError(f"lsoap: regularizer_grid values must be > 0, got {value}")
    # one scratch buffer for this rank's candidate systems (no new (m, m) arrays), which
    # finally holds the factor of the final system
    scratch: list = []

    def weights(value: float) -> np.ndarray | None:
        if not scratch:
            scratch.append(np.empty(a_fit.shape, order="F"))
        return held_out_weights(a_fit, b_fit, kmm, value, jitter, work=scratch[0])

    # one round: every grid candidate and K_MM's factor (all the size of one factorisation)
    done = share_tasks(
        comm, [cost] * (len(grid) + 1),
        lambda t: weights(grid[t]) if t < len(grid) else _stable_cholesky(kmm, jitter),
        ledger,
    )
    kmm_factor = done[-1]
    errors = scores(grid, done[:-1])
    timer("regulariser grid")
    best = best_of(errors)
    if best is None:
        raise ConfigError("no regulariser of regularizer_grid gives a positive-definite system")
    i = grid.index(best)
    refine = [float(np.sqrt(best * grid[j])) for j in (i - 1, i + 1) if 0 <= j < len(grid)]
    errors.update(scores(refine, share_tasks(comm, [cost] * len(refine), lambda t: weights(refine[t]), ledger)))
    reg = best_of(errors)
    timer("regulariser midpoints")
    a_fit += a_val  # every row
    work = scratch[0] if scratch else None
    gpr = solve_projected_process_factored(a_fit, b_fit + b_val, kmm, kmm_factor, reg, jitter, work=work)
    timer("solve")
    return gpr, reg


def held_out_signal_variance(
    a_fit: np.ndarray, b_fit: np.ndarray, kmm: np.ndarray, kmm_factor: np.ndarray, reg: float,
    blocks: list, jitter: float, comm=None,
) -> float | None:
    """The signal variance ``s²`` that makes the held-out rows' errors have unit variance:
    ``mean((y − f)² / v)`` over the held-out rows, with ``f`` and ``v`` (in units of ``s²``) the
    mean and the posterior variance of the fit *without* them at regulariser ``reg``
    (``v = λ k (A_fit + λ K_MM)⁻¹ kᵀ + k_xx − k K_MM⁻¹ kᵀ``, the Nyström residual included).

    ``a_fit``, ``b_fit``: the normal equations of the fitted rows; ``kmm`` and its factor
    ``kmm_factor``; ``blocks``: this rank's held-out ``(k_val (v, m), y_val (v,), k_xx (v,))`` in
    block order (summed over the ranks of ``comm`` block by block, the serial sum). ``None`` when
    no held-out row has a positive variance.

    Why not the maximum-likelihood ``s²`` for ``reg``: when the held-out choice lands on a tiny
    regulariser (nearly noise-free data), ``(yᵀy − bᵀw)/(λ N)`` divides the misfit of the sparse
    model by that tiny λ and the predicted standard deviation comes out tens of times the actual
    error; the held-out estimate measures the error where the model has not seen the data.
    """
    comm = resolve_comm(comm)
    factor = _cholesky_of(_system_filler(a_fit, kmm, reg), len(a_fit), jitter, clean=False)
    w = cho_solve((factor, True), b_fit, check_finite=False)
    parts = []
    for k_val, y_val, kxx in blocks:
        v = solve_triangular(factor, k_val.T, lower=True, check_finite=False)
        u = solve_triangular(kmm_factor, k_val.T, lower=True, check_finite=False)
        var = reg * np.einsum("ij,ij->j", v, v) + np.maximum(kxx - np.einsum("ij,ij->j", u, u), 0.0)
        ok = var > 0
        parts.append(np.array([np.sum((y_val - k_val @ w)[ok] ** 2 / var[ok]), float(np.sum(ok))]))
    total = np.zeros(2)
    for part in allgather_blocks(comm, parts):
        total += part
    return float(total[0] / total[1]) if total[1] > 0 else None


#: bounds of the evidence search (noise-to-signal variance ratios of normalised targets and kernels)
EVIDENCE_BOUNDS = (1e-14, 1e2)


def _whitened_spectrum(a: np.ndarray, b: np.ndarray, kmm: np.ndarray, jitter: float) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues ``e`` (m,) of ``L⁻¹ a L⁻ᵀ`` (``L`` the Cholesky factor of ``kmm`` with jitter) and the
    squared projections ``q² = (Vᵀ L⁻¹ b)²`` (m,): then ``bᵀ (a + λ kmm)⁻¹ b = Σ q²/(e + λ)`` and
    ``log|a + λ kmm| = log|kmm| + Σ log(e + λ)`` for every λ at once (one eigendecomposition)."""
    factor = _stable_cholesky(kmm, jitter)
    c = solve_triangular(factor, solve_triangular(factor, a, lower=True, check_finite=False).T, lower=True,
                         check_finite=False)
    e, v = eigh(0.5 * (c + c.T), check_finite=False)
    q = v.T @ solve_triangular(factor, b, lower=True, check_finite=False)
    return np.maximum(e, 0.0), q * q


def log_evidence(regularizers, a: np.ndarray, b: np.ndarray, yy: float, n_obs: int, kmm: np.ndarray,
                 jitter: float = 1e-13, spectrum: tuple | None = None) -> np.ndarray:
    """The log marginal likelihood (up to a constant; the signal variance at its maximum) of the
    projected-process GPR ``y ~ N(0, s² (K_nM K_MM⁻¹ K_Mn + λ I))`` for every λ of ``regularizers``
    (r,), from its normal equations ``a = Kᵀ K`` (m, m), ``b = Kᵀ y`` (m,), ``yy = yᵀ y`` and the
    number of observations ``n_obs``::

        −2 log L = n log(yᵀy − bᵀ w_λ) − m log λ + log|a + λ K_MM| + const,   w_λ = (a + λ K_MM)⁻¹ b

    (the determinant lemma and Woodbury's identity for the n × n covariance). ``spectrum``: the
    :func:`_whitened_spectrum` of ``(a, b, kmm)`` when the caller has it."""
    e, q2 = spectrum if spectrum is not None else _whitened_spectrum(a, b, kmm, jitter)
    lam = np.atleast_1d(np.asarray(regularizers, dtype=float))
    residual = yy - np.sum(q2[None, :] / (e[None, :] + lam[:, None]), axis=1)
    residual = np.maximum(residual, 1e-300 * max(yy, 1e-300))
    m = len(e)
    return -0.5 * (n_obs * np.log(residual) - m * np.log(lam) + np.sum(np.log(e[None, :] + lam[:, None]), axis=1))


def evidence_regularizer(a: np.ndarray, b: np.ndarray, yy: float, n_obs: int, kmm: np.ndarray,
                         jitter: float = 1e-13, bounds: tuple = EVIDENCE_BOUNDS) -> float:
    """The regulariser (noise-to-signal variance ratio) of largest :func:`log_evidence` in ``bounds``:
    a scan of 8 points per decade, then a bounded 1-D refinement of ``log λ`` around the best (one
    eigendecomposition of the whitened system serves every candidate, ~3 Cholesky factorisations'
    worth). Needs no held-out rows; the same on every MPI rank (deterministic, from the summed
    normal equations)."""
    from scipy.optimize import minimize_scalar

    spectrum = _whitened_spectrum(a, b, kmm, jitter)
    lo, hi = np.log10(bounds[0]), np.log10(bounds[1])
    grid = np.linspace(lo, hi, int(round((hi - lo) * 8)) + 1)
    values = log_evidence(10.0**grid, a, b, yy, n_obs, kmm, spectrum=spectrum)
    i = int(np.argmax(values))
    left, right = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    if right > left:
        best = minimize_scalar(lambda t: -log_evidence(10.0**t, a, b, yy, n_obs, kmm, spectrum=spectrum)[0],
                               bounds=(left, right), method="bounded", options={"xatol": 1e-3})
        if best.fun <= -values[i]:
            return float(10.0**best.x)
    return float(10.0 ** grid[i])
