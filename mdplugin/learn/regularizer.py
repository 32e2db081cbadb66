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
from scipy.linalg import cho_solve, solve_triangular

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

__all__ = ["solve_regularized", "held_out_signal_variance"]


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
