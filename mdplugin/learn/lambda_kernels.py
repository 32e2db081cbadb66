"""The λ-SOAP SA-GPR's kernel maths: stateless array functions of :mod:`mdplugin.models.lsoap`.

Row helpers (normalisation, projection in cache-sized runs, sums over the rows of a frame,
same-species atom pairs), the kernels (atom blocks between centres and
representative environments, structure prior covariances), the posterior covariance, the
principal directions of the compression, and the mean prediction through GPR weights folded
into the representative environments (no kernel rows). None of them needs a fitted model: the
model passes its arrays and hyper-parameters (``zeta``, ``λ``).

Shapes: ``z`` is a dict of compressed features, ``z[0]`` (n, k0) invariant and ``z[λ]``
(n, 2λ+1, kλ); ``species`` and ``frame`` (n,) the centre species and (frame-sorted) frame
index of every row.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from scipy import sparse
from scipy.linalg import solve_triangular

from ..core.precision import TENSOR_PRECISIONS
from ..features.cache import FeatureCache
from ..features.lambda_soap import equivariant_inverse_norms
from .gpr import ProjectedProcess

__all__ = [
    "normalise_rows",
    "project_rows",
    "sum_by_frame",
    "same_species_pairs",
    "atom_kernel",
    "atom_kernel_blocks",
    "structure_kernel_row",
    "structure_self_kernel",
    "structure_covariance",
    "posterior_covariance",
    "principal_directions",
    "fold_weights",
    "contracted_means",
]


def normalise_rows(x: np.ndarray, in_place: bool = False, squared0: np.ndarray | None = None) -> np.ndarray:
    """Divide every centre's features (n, ...) by their Frobenius norm: a new array, or ``x``
    itself with ``in_place`` (then in cache-sized runs of rows, read from memory once).

    ``squared0`` (n,): the squared norms of the same centres' invariant features; then ``x`` are
    λ > 0 features and the norm is floored as in
    :func:`~mdplugin.features.lambda_soap.equivariant_inverse_norms` (finite, smooth where they
    vanish by symmetry)."""
    flat = x.reshape(len(x), -1)

    def inverse(rows, lo, hi):
        squared = np.vecdot(rows, rows)
        if squared0 is None:
            return 1.0 / np.maximum(np.sqrt(squared), 1e-300)
        return equivariant_inverse_norms(squared, squared0[lo:hi])

    if not in_place:
        return x * inverse(flat, 0, len(flat)).reshape((-1,) + (1,) * (x.ndim - 1))
    if not np.shares_memory(flat, x):
        raise ValueError("in-place normalisation needs rows that are contiguous in memory")
    step = max(1, (1 << 19) // max(flat.shape[1] * flat.itemsize, 1))
    for start in range(0, len(flat), step):
        rows = flat[start : start + step]
        rows *= inverse(rows, start, start + len(rows))[:, None]
    return x


def project_rows(x: np.ndarray, rows: np.ndarray, basis: np.ndarray, out: np.ndarray) -> None:
    """``out[rows] = x[rows] @ basis`` over the last axis, for ``x`` (n, ..., F), ``basis`` (F, k),
    ``out`` (n, ..., k), in runs of rows that fit in a core's cache (the gathered rows are read
    back from cache by the product, not from memory). The runs depend only on ``rows``."""
    width = int(np.prod(x.shape[1:-1], dtype=int))
    step = max(1, (1 << 20) // max(width * x.shape[-1] * x.itemsize, 1))
    buf = np.empty((min(step, len(rows)),) + x.shape[1:])
    for start in range(0, len(rows), step):
        r = rows[start : start + step]
        xs = np.take(x, r, axis=0, out=buf[: len(r)])
        out[r] = (xs.reshape(-1, x.shape[-1]) @ basis).reshape((len(r),) + out.shape[1:])


def _frame_groups(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by frame: start index of every run and the frame of that run."""
    if len(frame) == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    starts = np.flatnonzero(np.r_[True, frame[1:] != frame[:-1]])
    return starts, frame[starts]


def sum_by_frame(values: np.ndarray, frame: np.ndarray, n_frames: int) -> np.ndarray:
    """Sum rows (n, ...) sorted by frame into (n_frames, ...)."""
    out = np.zeros((n_frames,) + values.shape[1:])
    if len(frame):
        starts, frames = _frame_groups(frame)
        sizes = np.diff(np.r_[starts, len(frame)])
        if np.all(sizes == sizes[0]):
            # every frame has as many rows (one MD step; a batch of one molecule): a reshaped sum,
            # 10-30x faster than np.add.reduceat over the first axis
            out[frames] = values.reshape((len(starts), int(sizes[0])) + values.shape[1:]).sum(axis=1)
        else:
            out[frames] = np.add.reduceat(values, starts, axis=0)
    return out


def same_species_pairs(frame: np.ndarray, species: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All ordered pairs (i, j) of centres in the same frame with the same species."""
    if len(frame) == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    key = frame.astype(np.int64) * 256 + species
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    sizes = np.diff(np.r_[starts, len(key)])
    sq = sizes * sizes
    group = np.repeat(np.arange(len(sizes)), sq)
    within = np.arange(sq.sum()) - np.repeat(np.cumsum(sq) - sq, sq)
    g = sizes[group]
    i = order[starts[group] + within // g]
    j = order[starts[group] + within % g]
    return i, j



def atom_kernel(
    a0: np.ndarray, a: np.ndarray | None, b0: np.ndarray, b: np.ndarray | None, lam: int, zeta: int
) -> np.ndarray:
    """The λ-SOAP kernel (unscaled) between centres A and centres B of one species:
    (r, 2λ+1, c, 2λ+1) ``(a0·b0)^(ζ−1) (a^λ b^λᵀ)``, or (r, 1, c, 1) ``(a0·b0)^ζ`` for λ = 0.

    ``a0`` (r, k0), ``b0`` (c, k0): compressed invariant features; ``a`` (r, 2λ+1, kλ) or
    (r·(2λ+1), kλ), ``b`` (c·(2λ+1), kλ): the λ ones (None for λ = 0)."""
    k0 = a0 @ b0.T  # (r, c)
    if lam == 0:
        return (k0**zeta)[:, None, :, None]
    d = 2 * lam + 1
    k = (a.reshape(len(a0) * d, -1) @ b.T).reshape(len(a0), d, len(b0), d)
    if zeta != 1:
        k *= (k0 ** (zeta - 1))[:, None, :, None]
    return k


def structure_kernel_row(
    a0: np.ndarray, a: np.ndarray | None, b0: np.ndarray, b: np.ndarray | None, lam: int, zeta: int
) -> np.ndarray:
    """The kernel (unscaled) between ONE structure — the sum over its centres A of one species — and
    representative environments B of that species: (2λ+1, c, 2λ+1), ``Σ_i atom_kernel(a_i, b)``.

    Summed before the λ features meet B: ``Σ_i S_iM z_iμ · b_Mν = Σ_k U_Mμk b_Mνk`` with
    ``S = (a0 b0ᵀ)^(ζ−1)`` and ``U = Sᵀ z`` (one (c, r) × (r, (2λ+1) kλ) product), instead of the
    (r·(2λ+1)) × (c·(2λ+1)) products of every atom: (2λ+1)× fewer operations for a large structure."""
    k0 = a0 @ b0.T  # (r, c)
    if lam == 0:
        return (k0**zeta).sum(axis=0)[None, :, None]
    d = 2 * lam + 1
    s = k0 if zeta == 2 else (np.ones_like(k0) if zeta == 1 else k0 ** (zeta - 1))
    u = (s.T @ a.reshape(len(a0), -1)).reshape(len(b0), d, -1)  # (c, d, kλ)
    return np.einsum("cmk,cnk->mcn", u, b.reshape(len(b0), d, -1))


def atom_kernel_blocks(
    z: dict, species: np.ndarray, lam: int, zeta: int, sparse_blocks: list
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (rows, cols, K) with K (len(rows), 2λ+1, len(cols), 2λ+1): kernel (unscaled) of the
    centres ``rows`` with the representative environments ``cols`` of their species.

    ``sparse_blocks``: per centre species ``(s, cols, x⁰ (m, k0), x^λ (m·(2λ+1), kλ) or None)``
    of the representative environments (``LambdaSoapModel._sparse_blocks``)."""
    for s, cols, b0, b in sparse_blocks:
        rows = np.flatnonzero(species == s)
        if len(rows) == 0 or len(cols) == 0:
            continue
        yield rows, cols, atom_kernel(z[0][rows], z[lam][rows] if lam else None, b0, b, lam, zeta)


def structure_self_kernel(
    z: dict, species: np.ndarray, frame: np.ndarray, n_frames: int, lam: int, zeta: int,
    max_pairs: int = 1 << 16,
) -> np.ndarray:
    """K_AA (n_frames, 2λ+1, 2λ+1): prior covariance of every structure, unscaled: the sum over the
    ordered pairs (i, j) of centres of the same frame and species of ``(z⁰_i·z⁰_j)^(ζ−1) z^λ_i z^λ_jᵀ``
    (``(z⁰_i·z⁰_j)^ζ`` for λ = 0).

    Memory and time stay linear in the centres of a large structure: for ζ = 1 or 2 the sum over
    the pairs of a (frame, species) group of ``g`` centres is a product of sums over its centres,
    ``Σ_ij (z⁰_i·z⁰_j) z_iμ·z_jν = Σ_ab T_μab T_νab`` with ``T_μ = Σ_i z⁰_i ⊗ z_iμ`` (ζ = 2), which
    costs ``g·k0·kλ`` instead of ``g²(k0 + kλ)``; groups of fewer than 64 centres (molecules), and
    every group for another ζ, go through their pairs, ``max_pairs`` at a time."""
    d = 2 * lam + 1
    out = np.zeros((n_frames, d, d))
    if len(frame) == 0:
        return out
    key = frame.astype(np.int64) * 256 + species
    order = np.argsort(key, kind="stable")
    starts = np.flatnonzero(np.r_[True, key[order][1:] != key[order][:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    big = (sizes >= 64) & (zeta in (1, 2))
    z0 = z[0]
    for start, size in zip(starts[big], sizes[big]):
        rows = order[start : start + size]
        f = int(frame[rows[0]])
        if lam == 0:
            if zeta == 1:
                total = z0[rows].sum(axis=0)
                out[f, 0, 0] += total @ total
            else:
                gram = z0[rows].T @ z0[rows]  # (k0, k0)
                out[f, 0, 0] += np.vecdot(gram.ravel(), gram.ravel())
            continue
        zl = z[lam][rows]  # (g, d, kλ)
        if zeta == 1:
            total = zl.sum(axis=0)  # (d, kλ)
            out[f] += total @ total.T
        else:
            t = (z0[rows].T @ zl.reshape(size, -1)).reshape(-1, d, zl.shape[2])  # (k0, d, kλ), one product
            t = t.transpose(1, 0, 2).reshape(d, -1)  # T_μ flattened: (d, k0·kλ)
            out[f] += t @ t.T
    if big.all():
        return out
    small = np.repeat(~big, sizes)
    rows = order[small]
    i, j = same_species_pairs(frame[rows], species[rows])
    i, j = rows[i], rows[j]
    for start in range(0, len(i), max_pairs):
        a, b = i[start : start + max_pairs], j[start : start + max_pairs]
        k0 = np.einsum("pk,pk->p", z0[a], z0[b])
        if lam == 0:
            k = (k0**zeta)[:, None, None]
        else:
            k = np.einsum("pak,pbk->pab", z[lam][a], z[lam][b])
            if zeta != 1:
                k *= (k0 ** (zeta - 1))[:, None, None]
        np.add.at(out, frame[a], k)
    return out


def structure_covariance(
    z: dict, species: np.ndarray, frame: np.ndarray, n_frames: int, lam: int, zeta: int, species_list: np.ndarray,
    chunk: int = 1024,
) -> np.ndarray:
    """K (n_frames·(2λ+1), n_frames·(2λ+1)), unscaled: the kernel between every pair of
    structures, the sum over their atom pairs of the same species (one of ``species_list``);
    rows are frame-major, components in the spherical order.

    The atom kernel is formed ``chunk`` centres at a time and summed over each structure's atoms
    by a sparse (frame × centre) indicator, so memory stays at chunk·(2λ+1) × r·(2λ+1) for a
    species with r centres and the sums cost O(r²) instead of O(n_frames·r²).
    """
    n, d = n_frames, 2 * lam + 1
    cov = np.zeros((n * d, n * d))
    for s in species_list:
        rows = np.flatnonzero(species == s)
        r = len(rows)
        if r == 0:
            continue
        z0 = z[0][rows]
        a = z[lam][rows].reshape(r * d, -1) if lam else None
        # (frame, component) × (centre, component) indicator: sums a block over each frame's atoms
        cols = np.arange(r * d)
        sums = sparse.csr_matrix((np.ones(r * d), (np.repeat(frame[rows], d) * d + np.tile(np.arange(d), r), cols)),
                                 shape=(n * d, r * d))
        for start in range(0, r, chunk):
            stop = min(r, start + chunk)
            part = a[start * d : stop * d] if lam else None
            k = atom_kernel(z0[start:stop], part, z0, a, lam, zeta).reshape((stop - start) * d, r * d)
            partial = (sums @ k.T).T  # (c·d, n·d): summed over the atoms of every column frame
            cov += sums[:, start * d : stop * d] @ partial
    return cov


def posterior_covariance(gpr: ProjectedProcess, k: np.ndarray, kaa: np.ndarray) -> np.ndarray:
    """Posterior covariance (n, 2λ+1, 2λ+1) of ``n`` structures under the λ GPR ``gpr``, in units
    of its signal variance, from their scaled kernel rows ``k`` (n·(2λ+1), M·(2λ+1)) and prior
    covariances ``kaa`` (n, 2λ+1, 2λ+1); includes the Nyström residual ``kaa - K K_MM⁻¹ Kᵀ``."""
    n, d = kaa.shape[:2]
    v = solve_triangular(gpr.factor, k.T, lower=True, check_finite=False)
    u = solve_triangular(gpr.kmm_factor, k.T, lower=True, check_finite=False)
    v = v.reshape(-1, n, d)
    u = u.reshape(-1, n, d)
    c = gpr.regularizer * np.einsum("kna,knb->nab", v, v)
    # Nyström residual (PSD in exact arithmetic; the callers clip the variances at 0)
    c += kaa - np.einsum("kna,knb->nab", u, u)
    return c


def principal_directions(xs: np.ndarray, k: int) -> np.ndarray:
    """Leading right singular vectors (F, k) of ``xs`` (r, F), uncentred (so the projection
    commutes with rotations); randomised SVD with a fixed seed (deterministic)."""
    from sklearn.utils.extmath import randomized_svd

    k_eff = min(k, *xs.shape)
    _, sv, vt = randomized_svd(xs, k_eff, n_oversamples=16, n_iter=2, random_state=0)
    basis = vt.T[:, sv > 1e-10 * max(sv.max(), 1e-300)]
    if basis.shape[1] < k:
        basis = np.pad(basis, ((0, 0), (0, k - basis.shape[1])))
    return np.ascontiguousarray(basis)


def fold_weights(
    weights: np.ndarray, position: np.ndarray, sparse_blocks: list, projections: list, lam: int, zeta: int
) -> list[np.ndarray]:
    """Per centre species (in the order of ``sparse_blocks``): Q, the GPR weights folded into
    the representative environments and the projections, so that a mean prediction needs no
    kernel row and no projected λ features (ζ = 1 or 2 only).

    ``weights`` (M, 2λ+1): the λ GPR's weights of its representative environments, scaled by
    ``y_scale / kernel_scale``; ``position`` (n_stored,): row of ``weights`` of every stored
    representative environment; ``sparse_blocks`` as in :func:`atom_kernel_blocks`;
    ``projections``: the λ projection ``P^λ`` (F_λ, k_λ) of every species.

    With the projected features ``z = Pᵀ x`` of the kernel the λ GPR's mean is::

        ζ = 2:  y_μ = Σ_i z^λ_iμ · T_s z⁰_i,   T_s = Σ_(c,ν) w_cν b^λ_cν ⊗ b⁰_c   (k_λ, k_0)
        ζ = 1:  y_μ = Σ_i z^λ_iμ · t_s,        t_s = Σ_(c,ν) w_cν b^λ_cν          (k_λ,)

    (for λ = 0, ``z^λ = z⁰``). Regrouped on the full normalised features ``x``: ζ = 2, λ > 0:
    ``y_μ = x^λ_iμ · (z⁰_i Q)`` with ``Q = (P^λ T_s)ᵀ`` (k_0, F_λ); ζ = 2, λ = 0:
    ``y = z⁰_i · (z⁰_i T_s)`` with ``Q = T_s``; ζ = 1: ``y_μ = x^λ_iμ · Q`` with ``Q = P^λ t_s``
    (F_λ,). The same sum as the kernel prediction, at about ``F_λ (k_0 + 2λ+1)`` operations per
    atom instead of ``(2λ+1)² M_s k_λ``."""
    d = 2 * lam + 1
    out = []
    for s_index, (_, cols, b0, b) in enumerate(sparse_blocks):  # species order
        w = weights[position[cols]]  # (m_s, d)
        bl = b0[:, None, :] if lam == 0 else b.reshape(len(cols), d, -1)  # (m_s, d, k_λ)
        projection = projections[s_index]  # (F_λ, k_λ)
        if zeta == 1:
            q = projection @ np.einsum("cn,cnk->k", w, bl)
        else:
            t = np.einsum("cn,cnk,cj->kj", w, bl, b0, optimize=True)
            q = t if lam == 0 else (projection @ t).T
        out.append(np.ascontiguousarray(q))
    return out


def contracted_means(features: FeatureCache, plan: tuple, zeta: int, precision: str = "double") -> dict:
    """Every λ GPR's mean prediction ``{λ: (n_frames, 2λ+1)}`` (scaled, no baseline) through the
    folded weights of :func:`fold_weights`, from the shared λ = 0 features of ``features`` (the
    step's :class:`~mdplugin.features.cache.FeatureCache`): each centre's weights
    ``w_i = Q_s z⁰_i`` are contracted with its λ > 0 features without forming them
    (:meth:`~mdplugin.features.cache.FeatureCache.contract`), and the
    normalisation is applied to each centre's result (``1/|x^λ_i|``, ``1/|x⁰_i|``, shared by the
    models of the step).

    ``plan``: ``(lambdas, species, projections, weights)``, the λ of the model's GPRs, its
    species as Python ints, the invariant projections per species (ζ = 2, else None) and
    ``{λ: Q per species}``, in ``precision`` (``LambdaSoapModel._contraction_plan``).

    ``precision="single"``: the two products with the model's large matrices (the invariant
    projection and Q, which an MD step reads from memory) run in float32 on float32 copies;
    the features, norms and the final contraction stay float64. Relative error ~1e-6.

    Only the products with the per-species matrices loop over species; the contraction with
    the features and the normalisation run once over all centres (an MD step of a small
    molecule is dominated by the number of numpy calls, not by their size)."""
    lams, species, projections, weights = plan
    x0 = features.power_spectrum()  # (n, F_0), read-only
    inv0 = features.inverse_norms(0)
    rows_of = features.centre_rows()
    groups = [(s_index, rows_of[z]) for s_index, z in enumerate(species) if z in rows_of]
    n = features.n_centres
    one_frame = features.n_frames == 1
    if zeta == 2:  # the projected invariant features (unnormalised), shared by every λ
        x0 = x0.astype(TENSOR_PRECISIONS[precision], copy=False)
        z0 = np.empty((n, projections[0].shape[1]), x0.dtype)
        for s_index, rows in groups:
            z0[rows] = x0[rows] @ projections[s_index]
    sph = {}
    for lam in lams:
        q = weights[lam]
        # per centre: the weights w_i of its features, y_iμ = x^λ_iμ · w_i / |x^λ_i| (/ |x⁰_i| for ζ = 2)
        if zeta == 1:
            w = np.empty((n, len(q[0])))
            for s_index, rows in groups:
                w[rows] = q[s_index]
            scale = features.inverse_norms(lam)
        else:
            w = np.empty((n, q[0].shape[1]), z0.dtype)  # z⁰_i Q_s: (n, k_0) for λ = 0, else (n, F_λ)
            for s_index, rows in groups:
                w[rows] = z0[rows] @ q[s_index]
            scale = inv0 * (inv0 if lam == 0 else features.inverse_norms(lam))
        if lam == 0:  # ζ = 2: y = z⁰ᵀ Q z⁰ / |x⁰|², ζ = 1: y = x⁰ · q / |x⁰|
            per_atom = np.vecdot(w, z0 if zeta == 2 else x0)[:, None] * scale[:, None]
        else:  # the λ features are not formed (lambda_contract)
            per_atom = features.contract(lam, w) * scale[:, None]
        sph[lam] = (per_atom.sum(axis=0, keepdims=True) if one_frame
                    else sum_by_frame(per_atom, features.centre_frame, features.n_frames))
    return sph
