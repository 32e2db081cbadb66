"""Contractions and norms of λ-SOAP features without forming the features.

A prediction linear in each centre's folded λ-SOAP features (:func:`.lambda_soap.lambda_soap`),
``y_iμ = Σ_F x^λ_iμF w_iF`` (the SA-GPR mean, its weights folded into the representative
environments), and the features' norms ``|x^λ_i|`` need only small matrices per centre. For each
angular pair (l1, l2) of the layout of :func:`.lambda_soap.feature_labels`, with ``c^l`` the centre's
expansion (2l+1, P), ``W`` the pair's weights as a (P, P) matrix and ``C`` the real Clebsch–Gordan
coefficients::

    Σ_F x_μF w_F = Σ_(m1, m2) C_(m1 m2 μ) (c^l1 W c^l2ᵀ)_(m1 m2)
    |x_pair|²    = Σ_μ Σ_(m1, m2) C_(m1 m2 μ) (G^l1 C_μ G^l2)_(m1 m2),     G^l = c^l c^lᵀ

A folded block (l1 = l2, its features symmetric in the two (species, radial) indices) takes
``W = ½ (U + Uᵀ)`` with ``U`` its upper triangle times the fold weights. The (2l+1, P) blocks are
zero-padded to (2L−1, P) (:func:`.lambda_soap.padded_and_transposed`) so that every pair goes through the
same few batched products. The functions take those padded arrays (and the Gram matrices) from the
caller — :class:`~mdplugin.features.cache.FeatureCache` computes them once per structure. For 1,2-dichloroethane this replaces writing and reading the 48,000 λ = 1, 2
features of an MD step by products of (7, 15) matrices.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit

from .lambda_soap import angular_pairs, n_features, real_clebsch_gordan, unfold_index

__all__ = ["contract_lambda_soap", "lambda_soap_squared_norms", "gram_matrices", "times_unfolded"]

#: fused multiply-adds and reordered sums in the compiled passes (~1e-16 relative), not the
#: "no NaN/inf" assumptions of ``fastmath=True``
_FASTMATH = {"contract", "reassoc", "nsz"}


@lru_cache(maxsize=None)
def _plan(lam: int, max_angular: int, n_prop: int) -> tuple:
    """``(l1s, l2s, cg, cg_rows, unfold, scale)`` for the angular pairs of λ: their l's (K,), the
    zero-padded Clebsch–Gordan coefficients as ``cg`` (K·M·M, 2λ+1) (rows (pair, m1, m2)) and
    ``cg_rows`` (K, M, (2λ+1)·M) (M = 2L−1), and, when some block is folded, the feature column and
    factor of every entry of the pairs' (P, P) weight matrices ``unfold``, ``scale`` (K·P²,); None
    when the features are the pairs' full blocks in order."""
    size = 2 * max_angular + 1
    pairs = angular_pairs(lam, max_angular)
    cg = np.zeros((len(pairs), size, size, 2 * lam + 1))
    for k, (l1, l2) in enumerate(pairs):
        cg[k, : 2 * l1 + 1, : 2 * l2 + 1] = real_clebsch_gordan(l1, l2, lam)
    cg_rows = np.ascontiguousarray(cg.transpose(0, 1, 3, 2).reshape(len(pairs), size, -1))
    unfold = scale = None
    if any(l1 == l2 for l1, l2 in pairs):
        folded_column, weights = unfold_index(n_prop)
        diagonal = np.arange(n_prop * n_prop) % (n_prop + 1) == 0
        folded_scale = np.where(diagonal, 1.0, 0.5) * weights  # W = ½ (U + Uᵀ)
        n_folded = n_prop * (n_prop + 1) // 2
        unfold, scale, column = [], [], 0
        for l1, l2 in pairs:
            if l1 == l2:
                unfold.append(column + folded_column)
                scale.append(folded_scale)
                column += n_folded
            else:
                unfold.append(column + np.arange(n_prop * n_prop))
                scale.append(np.ones(n_prop * n_prop))
                column += n_prop * n_prop
        unfold, scale = np.concatenate(unfold), np.concatenate(scale)
        assert column == n_features(lam, max_angular, n_prop)
    else:
        assert len(pairs) * n_prop * n_prop == n_features(lam, max_angular, n_prop)
    arrays = (np.array([l1 for l1, _ in pairs]), np.array([l2 for _, l2 in pairs]),
              np.ascontiguousarray(cg.reshape(-1, 2 * lam + 1)), cg_rows, unfold, scale)
    for array in arrays:
        if array is not None:
            array.setflags(write=False)
    return arrays


def gram_matrices(padded: np.ndarray, transposed: np.ndarray | None = None) -> np.ndarray:
    """The Gram matrices ``c^l c^lᵀ`` (n, L, M, M) of the padded expansion (n, L, M, P) (zero
    outside the (2l+1, 2l+1) blocks), in one compiled pass over the centres (numpy's batched
    product of the (M, P) matrices with the contiguous transpose ``transposed`` costs 2–3× more;
    that argument is not needed)."""
    n, n_l, size, _ = padded.shape
    out = np.zeros((n, n_l, size, size))
    _gram(np.ascontiguousarray(padded), out)
    return out


@njit(cache=True, nogil=True)
def _gram(padded, out):
    n, n_l, _, n_prop = padded.shape
    for i in range(n):
        for l in range(n_l):
            for m1 in range(2 * l + 1):
                for m2 in range(m1, 2 * l + 1):
                    total = 0.0
                    for a in range(n_prop):
                        total += padded[i, l, m1, a] * padded[i, l, m2, a]
                    out[i, l, m1, m2] = total
                    out[i, l, m2, m1] = total


def contract_lambda_soap(padded: np.ndarray, transposed: np.ndarray, lam: int, weights: np.ndarray) -> np.ndarray:
    """``y_iμ = Σ_F x^λ_iμF weights_iF`` (n_centres, 2λ+1) for the folded λ-SOAP features ``x^λ``
    (σ = +1, unnormalised) of the expansion whose padded form is ``padded`` (n, L, M, P) (its
    contiguous transpose ``transposed`` (:func:`.lambda_soap.padded_and_transposed`) is not needed
    here), and per-centre ``weights`` (n_centres, F_λ) (float64 or float32), without forming the
    features: ``lambda_soap(expansion, (lam,))[lam] @ weights`` per centre.

    One compiled pass over the centres (:func:`_contract_centres`): per centre and angular pair the
    (P, P) weight matrix is read from the folded weights in place, and the products
    ``c^l1 W c^l2ᵀ`` and their Clebsch–Gordan sum run on small local arrays — no (n, K, P, P)
    unfolded weights or (n, K, M, P) products in memory (numpy's gather and batched small products
    of those cost 3–6× more at 1536 atoms)."""
    n, n_l, _, n_prop = padded.shape
    out = np.zeros((n, 2 * int(lam) + 1))
    if n:
        _contract_centres(np.ascontiguousarray(padded), np.ascontiguousarray(weights),
                          *_kernel_plan(int(lam), n_l - 1, n_prop), out)
    return out


@lru_cache(maxsize=None)
def _kernel_plan(lam: int, max_angular: int, n_prop: int) -> tuple:
    """:func:`_plan` for :func:`_contract_centres`: ``(l1s, l2s, start, m1s, m2s, cg, unfold, scale)``:
    the (m1, m2) entries of pair k whose Clebsch–Gordan coefficients are not all zero are
    ``m1s[start[k]:start[k+1]]``, ``m2s[…]`` with their coefficients ``cg[…]`` (·, 2λ+1) (the real
    coefficients are sparse: most (m1, m2) couple to no μ); ``unfold``, ``scale`` (K·P²,) also when
    no block is folded (then the identity)."""
    l1s, l2s, cg, _, unfold, scale = _plan(lam, max_angular, n_prop)
    size = 2 * max_angular + 1
    if unfold is None:
        unfold, scale = np.arange(len(l1s) * n_prop * n_prop), np.ones(len(l1s) * n_prop * n_prop)
    cg = cg.reshape(len(l1s), size, size, -1)
    k, m1, m2 = np.nonzero(np.abs(cg).max(axis=3) > 0.0)  # sorted by k, then m1, m2
    start = np.searchsorted(k, np.arange(len(l1s) + 1))
    arrays = (l1s.astype(np.int64), l2s.astype(np.int64), start.astype(np.int64), m1.astype(np.int64),
              m2.astype(np.int64), np.ascontiguousarray(cg[k, m1, m2]),
              np.ascontiguousarray(unfold, dtype=np.int64), np.ascontiguousarray(scale, dtype=np.float64))
    for array in arrays:
        array.setflags(write=False)
    return arrays


@lru_cache(maxsize=None)
def _contract_kernel(n_prop: int):
    """:func:`_contract_centres` compiled for ``n_prop`` = P (a closure constant: the loops over the
    (P, P) weight matrices unrolled and vectorised; numba caches each P on disk)."""
    N_P = int(n_prop)

    @njit(cache=True, nogil=True, fastmath=_FASTMATH)
    def kernel(padded, weights, l1s, l2s, start, m1s, m2s, cg, unfold, scale, out):
        n, _, size, _ = padded.shape
        d = out.shape[1]
        w = np.empty((N_P, N_P))
        t = np.empty((size, N_P))
        for i in range(n):
            for k in range(len(l1s)):
                l1 = l1s[k]
                l2 = l2s[k]
                base = k * N_P * N_P
                for a in range(N_P):
                    for b in range(N_P):
                        q = base + a * N_P + b
                        w[a, b] = weights[i, unfold[q]] * scale[q]
                for m1 in range(2 * l1 + 1):  # t = c^l1 W
                    for b in range(N_P):
                        t[m1, b] = 0.0
                    for a in range(N_P):
                        c = padded[i, l1, m1, a]
                        for b in range(N_P):
                            t[m1, b] += c * w[a, b]
                for e in range(start[k], start[k + 1]):
                    m1 = m1s[e]
                    m2 = m2s[e]
                    s = 0.0
                    for b in range(N_P):
                        s += t[m1, b] * padded[i, l2, m2, b]
                    for mu in range(d):
                        out[i, mu] += cg[e, mu] * s

    return kernel


def _contract_centres(padded, weights, l1s, l2s, start, m1s, m2s, cg, unfold, scale, out):
    """``out[i, μ] = Σ_k Σ_(m1 m2) cg_k[m1, m2, μ] (c^l1 W_ik c^l2ᵀ)_(m1 m2)`` with ``c^l`` =
    ``padded[i, l]`` (2l+1 rows used), ``W_ik[a, b] = weights[i, unfold[q]] · scale[q]``,
    ``q = (k·P + a)·P + b``, and the non-zero Clebsch–Gordan entries of :func:`_kernel_plan`
    (one compiled pass over the centres, :func:`_contract_kernel`)."""
    _contract_kernel(padded.shape[3])(padded, weights, l1s, l2s, start, m1s, m2s, cg, unfold, scale, out)


def times_unfolded(padded: np.ndarray, weights: np.ndarray, unfold: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``c^l_i S^l_i`` for every centre and l, flat in the expansion's coefficient layout (per l an
    ``(n, 2l+1, P)`` block, one after the other), with ``S^l_i[a, b] = weights[i, unfold[q]] ·
    scale[q]``, ``q = (l·P + a)·P + b`` — e.g. the energy's gradient ``∂E/∂c`` from its gradient with
    respect to the folded power spectrum (``weights`` (n, F₀)), ready for the force contraction.

    ``padded`` (n, L, M, P) (:func:`.lambda_soap.padded_and_transposed`); ``unfold``, ``scale``
    (L·P²,). One compiled pass over the centres: no (n, L, P, P) unfolded array in memory."""
    n, n_l, _, n_prop = padded.shape
    out = np.empty(n * n_l * n_l * n_prop)
    offsets = n * n_prop * np.arange(n_l, dtype=np.int64) ** 2  # Σ_(l' < l) (2l' + 1) = l²
    _times_unfolded(np.ascontiguousarray(padded), np.ascontiguousarray(weights, dtype=np.float64),
                    np.ascontiguousarray(unfold, dtype=np.int64), np.ascontiguousarray(scale, dtype=np.float64),
                    offsets, out)
    return out


@lru_cache(maxsize=None)
def _times_unfolded_kernel(n_prop: int):
    """The pass of :func:`times_unfolded` compiled for ``n_prop`` = P (closure constant)."""
    N_P = int(n_prop)

    @njit(cache=True, nogil=True, fastmath=_FASTMATH)
    def kernel(padded, weights, unfold, scale, offsets, out):
        n, n_l, _, _ = padded.shape
        w = np.empty((N_P, N_P))
        row = np.empty(N_P)
        for i in range(n):
            for l in range(n_l):
                base = l * N_P * N_P
                for a in range(N_P):
                    for b in range(N_P):
                        q = base + a * N_P + b
                        w[a, b] = weights[i, unfold[q]] * scale[q]
                start = offsets[l] + i * (2 * l + 1) * N_P
                for m in range(2 * l + 1):
                    for b in range(N_P):
                        row[b] = 0.0
                    for a in range(N_P):
                        c = padded[i, l, m, a]
                        for b in range(N_P):
                            row[b] += c * w[a, b]
                    for b in range(N_P):
                        out[start + m * N_P + b] = row[b]

    return kernel


def _times_unfolded(padded, weights, unfold, scale, offsets, out):
    _times_unfolded_kernel(padded.shape[3])(padded, weights, unfold, scale, offsets, out)


@lru_cache(maxsize=None)
def _norm_form(lam: int, max_angular: int) -> tuple[np.ndarray, np.ndarray]:
    """``(index, form)``: the entries ``index`` (G,) of the flattened padded Gram matrices
    (L+1, M, M) that are not padding, and the symmetric quadratic form ``form`` (G, G) with
    ``|x^λ_i|² = g_iᵀ form g_i`` for ``g_i`` those entries of centre i's Gram matrices.

    For an angular pair (l1, l2) and every (species, radial) pair (a, b), the features are
    ``t_μab = Σ_(m1 m2) C_(m1 m2 μ) c^l1_(m1 a) c^l2_(m2 b)``, so ``Σ_(μ a b) t² = Σ C_(m1 m2 μ)
    C_(m1' m2' μ) G^l1_(m1 m1') G^l2_(m2 m2')``: a fixed quadratic form in the Gram entries, summed over
    the pairs l1 ≤ l2 of λ (folding keeps the norms)."""
    size, n_l = 2 * max_angular + 1, max_angular + 1
    start = np.cumsum([0] + [(2 * l + 1) ** 2 for l in range(n_l)])
    index = np.concatenate([l * size * size + (np.arange(2 * l + 1)[:, None] * size + np.arange(2 * l + 1)).ravel()
                            for l in range(n_l)])
    form = np.zeros((start[-1], start[-1]))
    for l1, l2 in angular_pairs(lam, max_angular):
        cg = real_clebsch_gordan(l1, l2, lam)  # (2l1+1, 2l2+1, 2λ+1)
        block = np.einsum("acm,bdm->abcd", cg, cg).reshape((2 * l1 + 1) ** 2, (2 * l2 + 1) ** 2)
        form[start[l1] : start[l1 + 1], start[l2] : start[l2 + 1]] += block
    form = 0.5 * (form + form.T)
    for array in (index, form):
        array.setflags(write=False)
    return index, form


def lambda_soap_squared_norms(gram: np.ndarray, n_prop: int, lam: int) -> np.ndarray:
    """``|x^λ_i|²`` (n_centres,) of the folded λ-SOAP features (over the 2λ+1 components and all
    features) of an expansion with ``n_prop`` = n_species·n_radial, from its Gram matrices ``gram``
    (n, L, M, M) (:func:`gram_matrices`), without forming the features: one quadratic form in the
    Gram entries per centre (:func:`_norm_form`), one (n, G) × (G, G) product (G = Σ_l (2l+1)²)."""
    index, form = _norm_form(int(lam), gram.shape[1] - 1)
    g = np.take(gram.reshape(len(gram), int(np.prod(gram.shape[1:]))), index, axis=1)
    return np.vecdot(g @ form, g)
