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

from .lambda_soap import angular_pairs, n_features, real_clebsch_gordan, unfold_index

__all__ = ["contract_lambda_soap", "lambda_soap_squared_norms", "gram_matrices"]


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


def gram_matrices(padded: np.ndarray, transposed: np.ndarray) -> np.ndarray:
    """The Gram matrices ``c^l c^lᵀ`` (n, L, M, M) of the padded expansion (n, L, M, P) and its
    contiguous transpose (n, L, P, M)."""
    return np.matmul(padded, transposed)


def contract_lambda_soap(padded: np.ndarray, transposed: np.ndarray, lam: int, weights: np.ndarray) -> np.ndarray:
    """``y_iμ = Σ_F x^λ_iμF weights_iF`` (n_centres, 2λ+1) for the folded λ-SOAP features ``x^λ``
    (σ = +1, unnormalised) of the expansion whose padded form is ``padded`` (n, L, M, P) with its
    contiguous transpose ``transposed`` (:func:`.lambda_soap.padded_and_transposed`), and per-centre
    ``weights`` (n_centres, F_λ), without forming the features: ``lambda_soap(expansion,
    (lam,))[lam] @ weights`` per centre."""
    n, n_l, _, n_prop = padded.shape
    l1s, l2s, cg, _, unfold, scale = _plan(int(lam), n_l - 1, n_prop)
    if unfold is not None:
        weights = np.take(weights, unfold, axis=1) * scale
    w = np.ascontiguousarray(weights).reshape(n, len(l1s), n_prop, n_prop)
    products = np.matmul(np.matmul(padded[:, l1s], w), transposed[:, l2s])  # (n, K, M, M)
    return products.reshape(n, len(cg)) @ cg


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
