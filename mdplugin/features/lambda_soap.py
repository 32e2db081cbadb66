"""λ-SOAP (equivariant power spectrum) features by Clebsch–Gordan coupling in numpy.

Given the dense spherical expansion ``c^l_i[m, (a, n)]`` of every atom ``i``
(:mod:`mdplugin.features.expansion`), the λ-SOAP features of order λ and parity σ = +1 are

    T^λ_i[μ, (l1, l2, a, n1, b, n2)] = Σ_{m1, m2} C^{l1 l2 λ}_{m1 m2 μ} c^{l1}_i[m1, (a, n1)] c^{l2}_i[m2, (b, n2)]

with real Clebsch–Gordan coefficients ``C`` (built from :mod:`wigners` exactly as featomic
builds them), ``l1 + l2 + λ`` even (σ = +1) and ``|l1 - l2| <= λ <= l1 + l2``.  They transform
under a rotation or reflection R as ``T(R·) = D^λ(R) T``, with the real Wigner matrices of
:func:`mdplugin.core.tensors.wigner_d_real` (σ = +1 means no extra sign under inversion).

Relation to featomic's ``clebsch_gordan.EquivariantPowerSpectrum`` (``neighbors_to_properties
=True``, properties ``(l_1, l_2, neighbor_1_type, n_1, neighbor_2_type, n_2)``):

* featomic keeps the pairs ``l1 <= l2`` (the ``l1 > l2`` ones are the same numbers with
  ``(a, n1) <-> (b, n2)`` swapped); so do we, in the order of :func:`angular_pairs`.
* For ``l1 == l2`` (only even λ) the features are symmetric under ``(a, n1) <-> (b, n2)``; with
  ``fold=True`` (default) we keep only ``(a, n1) <= (b, n2)`` and multiply the off-diagonal
  ones by √2, which preserves every dot product (so every linear kernel) exactly.
* Each feature ``k`` is ``weight[k] * featomic[l1, l2, a, n1, b, n2]`` with the labels and
  weights returned by :func:`feature_labels`; no other normalisation is applied.

The invariant SOAP power spectrum is the λ = 0 set (:func:`power_spectrum`), optionally with
exact position gradients for energy models.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from typing import Sequence

import numpy as np
from numba import njit


_N_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

__all__ = [
    "real_clebsch_gordan",
    "angular_pairs",
    "feature_labels",
    "n_features",
    "unfold_index",
    "lambda_soap",
    "pad_values",
    "padded_and_transposed",
    "power_spectrum",
    "EQUIVARIANT_NORM_FLOOR",
    "equivariant_inverse_norms",
]


#: Relative floor ε of the normalisation of the λ > 0 features: a centre's features are divided by
#: ``sqrt(|x^λ|² + ε² |x⁰|²)`` (not ``|x^λ|``), the invariant ones by ``|x⁰|``. Both norms are
#: quadratic in the neighbour density, so ε is dimensionless. Where the λ features vanish by symmetry
#: (the N of an ammonium ion, the C of methane, S in SF6, an isolated atom, the C of CO2 for λ = 1)
#: they are rounding noise (~1e-15 of |x⁰|); divided by their own norm they became unit vectors of
#: random direction — a model's contribution of that centre turned with the rounding, not with the
#: molecule, and a rounding-negative squared norm gave NaN. With the floor such a centre contributes
#: ~1e-11 of an ordinary one and the features stay smooth; an environment with |x^λ| = 0.01 |x⁰| (a
#: slightly distorted methane) changes by 5e-5 relative, a typical one (|x^λ| ≳ 0.1 |x⁰|) by < 5e-7.
EQUIVARIANT_NORM_FLOOR = 1e-4


def equivariant_inverse_norms(squared: np.ndarray, squared0: np.ndarray) -> np.ndarray:
    """``1 / sqrt(|x^λ|² + ε² |x⁰|²)`` (n,) from the squared norms ``squared`` (n,) of the λ > 0
    features and ``squared0`` (n,) of the invariant ones of the same centres (negative rounding
    clipped to 0; :data:`EQUIVARIANT_NORM_FLOOR` is ε). Zero features of an environment without
    neighbours give 0 (not NaN, not inf)."""
    total = np.maximum(squared, 0.0) + EQUIVARIANT_NORM_FLOOR**2 * np.maximum(squared0, 0.0)
    return 1.0 / np.maximum(np.sqrt(total), 1e-300)


# --------------------------------------------------------------------------------------------
# real Clebsch-Gordan coefficients
# --------------------------------------------------------------------------------------------


def _real2complex(l: int) -> np.ndarray:
    """featomic's real -> complex spherical-harmonic transformation (2l+1, 2l+1)."""
    result = np.zeros((2 * l + 1, 2 * l + 1), dtype=complex)
    inv_sqrt_2 = 1.0 / math.sqrt(2.0)
    i_sqrt_2 = 1.0j / math.sqrt(2.0)
    for m in range(-l, l + 1):
        if m < 0:
            result[l + m, l + m] = -i_sqrt_2
            result[l + m, l - m] = i_sqrt_2 * ((-1) ** m)
        elif m == 0:
            result[l, l] = 1.0
        else:
            result[l + m, l - m] = inv_sqrt_2
            result[l + m, l + m] = inv_sqrt_2 * ((-1) ** m)
    return result.T


@lru_cache(maxsize=None)
def real_clebsch_gordan(l1: int, l2: int, lam: int) -> np.ndarray:
    """Real Clebsch–Gordan coefficients ``C[m1, m2, μ]``, shape (2l1+1, 2l2+1, 2λ+1).

    Same values as ``featomic.clebsch_gordan`` (complex CG from :mod:`wigners`, rotated to
    the real basis); read-only cached array.
    """
    import wigners

    cg = np.asarray(wigners.clebsch_gordan_array(l1, l2, lam), dtype=complex)
    r2c1 = _real2complex(l1)
    r2c2 = _real2complex(l2)
    c2r = np.conjugate(_real2complex(lam)).T
    real = np.einsum("MN,abN,aA,bB->ABM", c2r, cg, r2c1, r2c2)
    out = real.real if (l1 + l2 + lam) % 2 == 0 else real.imag
    out = np.ascontiguousarray(out)
    out.setflags(write=False)
    return out


# --------------------------------------------------------------------------------------------
# feature layout
# --------------------------------------------------------------------------------------------


def angular_pairs(lam: int, max_angular: int) -> list[tuple[int, int]]:
    """The ``(l1, l2)`` pairs, ``l1 <= l2 <= max_angular``, coupling to (λ, σ = +1), in order."""
    return [
        (l1, l2)
        for l1 in range(max_angular + 1)
        for l2 in range(l1, max_angular + 1)
        if abs(l1 - l2) <= lam <= l1 + l2 and (l1 + l2 + lam) % 2 == 0
    ]


@lru_cache(maxsize=None)
def _fold_index(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices into an (n, n) matrix of its upper triangle (row-major), and weights."""
    p, q = np.triu_indices(n)
    weights = np.where(p == q, 1.0, math.sqrt(2.0))
    return p * n + q, weights


@lru_cache(maxsize=None)
def unfold_index(n: int) -> tuple[np.ndarray, np.ndarray]:
    """For every entry (p, q) of an (n, n) matrix, row-major: the position of (min, max) in the
    folded upper triangle of :func:`_fold_index`, and that entry's fold weight (1 on the diagonal,
    √2 off it). Used to turn folded weights or gradients back into (n, n) matrices."""
    flat, weights = _fold_index(n)
    p, q = np.divmod(np.arange(n * n), n)
    position = np.empty(n * n, dtype=np.int64)
    position[flat] = np.arange(len(flat))
    index = position[np.minimum(p, q) * n + np.maximum(p, q)]
    index.setflags(write=False)
    return index, weights[index]


@lru_cache(maxsize=None)
def n_features(lam: int, max_angular: int, n_properties: int, fold: bool = True) -> int:
    """Number of λ-SOAP features of order λ for ``n_properties = n_species * n_radial``."""
    total = 0
    for l1, l2 in angular_pairs(lam, max_angular):
        if fold and l1 == l2:
            total += n_properties * (n_properties + 1) // 2
        else:
            total += n_properties * n_properties
    return total


def feature_labels(
    lam: int, max_angular: int, species: Sequence[int], n_radial: int, fold: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Labels ``(F, 6)`` int — columns ``l1, l2, neighbour_1_type, n1, neighbour_2_type, n2``
    (featomic's property names) — and weights ``(F,)`` such that
    ``ours[..., k] == weights[k] * featomic[..., labels[k]]``."""
    species = np.asarray(species)
    n_prop = len(species) * n_radial
    a = np.repeat(species, n_radial)
    n = np.tile(np.arange(n_radial), len(species))
    labels, weights = [], []
    for l1, l2 in angular_pairs(lam, max_angular):
        p, q = np.divmod(np.arange(n_prop * n_prop), n_prop)
        w = np.ones(n_prop * n_prop)
        if fold and l1 == l2:
            idx, w = _fold_index(n_prop)
            p, q = np.divmod(idx, n_prop)
        block = np.stack(
            [np.full(len(p), l1), np.full(len(p), l2), a[p], n[p], a[q], n[q]], axis=1
        )
        labels.append(block)
        weights.append(w)
    return np.concatenate(labels).astype(np.int64), np.concatenate(weights)


# --------------------------------------------------------------------------------------------
# coupling
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _coupling_plan(lambdas: tuple[int, ...], max_angular: int, n_prop: int, fold: bool):
    """Per (l1, l2) pair: CG coefficients of every requested λ stacked as a matrix
    ``(2l1+1, Σ_λ (2λ+1) * (2l2+1))`` (rows m1, columns (μ, m2)), and for every λ its
    μ-slice and output column offset."""
    offsets: dict[tuple[int, int, int], int] = {}
    for lam in lambdas:
        col = 0
        for l1, l2 in angular_pairs(lam, max_angular):
            offsets[(lam, l1, l2)] = col
            col += n_prop * (n_prop + 1) // 2 if (fold and l1 == l2) else n_prop * n_prop
    plan = []
    pairs = sorted({pair for lam in lambdas for pair in angular_pairs(lam, max_angular)})
    for l1, l2 in pairs:
        lams = [lam for lam in lambdas if (l1, l2) in angular_pairs(lam, max_angular)]
        cg = np.concatenate([real_clebsch_gordan(l1, l2, lam) for lam in lams], axis=2)
        n_mu = cg.shape[2]
        matrix = np.ascontiguousarray(cg.transpose(0, 2, 1).reshape(2 * l1 + 1, -1))
        targets, start = [], 0
        for lam in lams:
            targets.append((lam, start, start + 2 * lam + 1, offsets[(lam, l1, l2)]))
            start += 2 * lam + 1
        plan.append((l1, l2, matrix, n_mu, tuple(targets)))
    return tuple(plan)


@lru_cache(maxsize=None)
def _invariant_plan(max_angular: int, n_prop: int) -> tuple[np.ndarray, np.ndarray]:
    """For :func:`_couple_invariant`: ``index``, ``weights`` (F₀,) folding the L (P, P) blocks
    into the λ = 0 layout, the weights times each l's Clebsch–Gordan value ``C^{ll0}_{mm0}``
    (the same for every m)."""
    n_l = max_angular + 1
    idx, w = _fold_index(n_prop)
    index = (np.arange(n_l)[:, None] * (n_prop * n_prop) + idx[None, :]).ravel()
    weights = np.concatenate([w * real_clebsch_gordan(l, l, 0)[0, 0, 0] for l in range(n_l)])
    for array in (index, weights):
        array.setflags(write=False)
    return index, weights


def pad_values(values: Sequence[np.ndarray], sl: slice = slice(None)) -> np.ndarray:
    """The expansion's per-l arrays ``(n, 2l+1, P)`` (centres ``sl``) zero-padded into one
    ``(n, L, 2L−1, P)`` array, so that one batched product can serve every l."""
    n_l = len(values)
    first = values[0][sl]
    padded = np.zeros((first.shape[0], n_l, 2 * n_l - 1, first.shape[-1]))
    for l, v in enumerate(values):
        padded[:, l, : 2 * l + 1] = v[sl]
    return padded


def padded_and_transposed(values: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pad_values` of all centres (n, L, 2L−1, P) and its contiguous transpose
    (n, L, P, 2L−1), both read-only (the λ = 0 features and the λ-SOAP contractions of one step share
    them through :class:`~mdplugin.features.cache.FeatureCache`)."""
    padded = pad_values(values)
    out = (padded, np.ascontiguousarray(padded.transpose(0, 1, 3, 2)))
    for array in out:
        array.setflags(write=False)
    return out


def _couple_invariant(padded, transposed, out):
    """Fill ``out`` ((c, 1, F₀)) with the folded λ = 0 features ``C^{ll0} Σ_m c^l_m ⊗ c^l_m`` from
    the zero-padded expansion (c, L, 2L−1, P) (``transposed``, its contiguous transpose, is not
    needed): one compiled pass over the centres (:func:`_invariant_kernel`), each feature a sum over
    the 2l+1 real m of one l (the Clebsch–Gordan matrix is diagonal) — no (c, L, P, P) products in
    memory."""
    c, n_l, _, n_prop = padded.shape
    _, weights = _invariant_plan(n_l - 1, n_prop)
    _invariant_kernel(n_prop)(np.ascontiguousarray(padded), weights, out.reshape(c, -1))


@lru_cache(maxsize=None)
def _invariant_kernel(n_prop: int):
    """The pass of :func:`_couple_invariant` compiled for ``n_prop`` = P (a closure constant, the
    loops over P unrolled and vectorised): ``out[i, f] = weights[f] Σ_m padded[i, l, m, a]
    padded[i, l, m, b]`` for the features ``f`` of the folded layout, l outer, then the upper
    triangle ``a ≤ b`` row-major (:func:`_fold_index`)."""
    N_P = int(n_prop)
    N_T = N_P * (N_P + 1) // 2

    @njit(cache=True, nogil=True, fastmath={"contract", "reassoc", "nsz"})
    def kernel(padded, weights, out):
        total = np.empty(N_P)
        for i in range(padded.shape[0]):
            for l in range(padded.shape[1]):
                f = l * N_T
                for a in range(N_P):
                    for b in range(a, N_P):
                        total[b] = 0.0
                    for m in range(2 * l + 1):
                        ca = padded[i, l, m, a]
                        for b in range(a, N_P):
                            total[b] += ca * padded[i, l, m, b]
                    for b in range(a, N_P):
                        out[i, f] = weights[f] * total[b]
                        f += 1

    return kernel


def _couple_chunk(values, out, plan, sl, n_prop, fold):
    """Fill ``out[λ][sl]`` for the centres in slice ``sl`` (all pairs)."""
    transposed = {}
    for l1, l2, matrix, n_mu, targets in plan:
        m1, m2 = 2 * l1 + 1, 2 * l2 + 1
        b = values[l2][sl]  # (c, m2, Q)
        c = b.shape[0]
        if l1 not in transposed:
            transposed[l1] = np.ascontiguousarray(values[l1][sl].transpose(0, 2, 1))
        a_t = transposed[l1]  # (c, P, m1)
        # g[c, P, μ, m2] = Σ_m1 a[c, m1, P] C[m1, m2, μ]
        if m1 == 1:
            g = a_t.reshape(c * n_prop, 1) * matrix
        else:
            g = a_t.reshape(c * n_prop, m1) @ matrix
        g = g.reshape(c, n_prop, n_mu, m2).transpose(0, 2, 1, 3)  # (c, μ, P, m2)
        # t[c, μ, P, Q] = Σ_m2 g[c, μ, P, m2] b[c, m2, Q], written straight into the output
        b = b[:, None]
        for lam, mu0, mu1, col in targets:
            if fold and l1 == l2:
                t = g[:, mu0:mu1] * b if m2 == 1 else np.matmul(g[:, mu0:mu1], b)
                idx, w = _fold_index(n_prop)
                dest = out[lam][sl, :, col : col + len(idx)]
                np.multiply(t.reshape(c, mu1 - mu0, -1)[:, :, idx], w, out=dest)
            else:
                dest = out[lam][sl, :, col : col + n_prop * n_prop].reshape(
                    c, mu1 - mu0, n_prop, n_prop
                )
                if m2 == 1:
                    np.multiply(g[:, mu0:mu1], b, out=dest)
                else:
                    np.matmul(g[:, mu0:mu1], b, out=dest)


def lambda_soap(
    expansion,
    lambdas: Sequence[int] = (0, 1, 2),
    fold: bool = True,
    chunk_size: int = 64,
    n_threads: int | None = None,
    out: dict | None = None,
    padded: tuple | None = None,
) -> dict[int, np.ndarray]:
    """λ-SOAP features (σ = +1) for every centre of ``expansion`` (an
    :class:`~mdplugin.features.expansion.Expansion`).

    Returns ``{λ: array (n_centres, 2λ+1, n_features(λ))}`` in the layout of
    :func:`feature_labels`.  Vectorised over centres (one GEMM and one batched matmul per
    (l1, l2) pair), in cache-sized chunks of ``chunk_size`` centres spread over
    ``n_threads`` threads (default: ``$OMP_NUM_THREADS`` if set, else the number of CPUs; numpy
    releases the GIL). ``out``: optional ``{λ: float64 array of that shape}`` to write into
    (e.g. a slice of a larger array: no new arrays); returned. ``padded``: the expansion's
    :func:`padded_and_transposed` arrays when the caller has them (a feature cache).
    """
    lambdas = tuple(sorted(set(int(x) for x in lambdas)))
    lmax = expansion.max_angular
    n = expansion.n_centres
    n_prop = expansion.values[0].shape[-1]
    invariant = fold and 0 in lambdas  # λ = 0 by its own short path (_couple_invariant)
    plan = _coupling_plan(tuple(lam for lam in lambdas if not (invariant and lam == 0)), lmax, n_prop, fold)
    shapes = {lam: (n, 2 * lam + 1, n_features(lam, lmax, n_prop, fold)) for lam in lambdas}
    if out is None:
        out = {lam: np.empty(shape) for lam, shape in shapes.items()}
    elif any(out[lam].shape != shape or out[lam].dtype != np.float64 for lam, shape in shapes.items()):
        raise ValueError(f"lambda_soap: out must hold float64 arrays of shapes {shapes}")

    if n and invariant and padded is not None:  # the caller's padded arrays: λ = 0 in one product
        _couple_invariant(*padded, out[0])
        invariant = False
        if not plan:
            return out

    def fill(sl):
        if invariant:
            padded = pad_values(expansion.values, sl)
            _couple_invariant(padded, np.ascontiguousarray(padded.transpose(0, 1, 3, 2)), out[0][sl])
        _couple_chunk(expansion.values, out, plan, sl, n_prop, fold)

    if n <= chunk_size:  # one chunk (an MD step of a molecule): no thread pool to consider
        if n and invariant:
            _couple_invariant(*padded_and_transposed(expansion.values), out[0])
        if n:
            _couple_chunk(expansion.values, out, plan, slice(0, n), n_prop, fold)
        return out
    slices = list(_chunks(n, chunk_size))
    if n_threads is None:
        n_threads = _default_threads()
    if n_threads > 1 and len(slices) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(n_threads, len(slices))) as pool:
            list(pool.map(fill, slices))
    else:
        for sl in slices:
            fill(sl)
    return out


def _default_threads() -> int:
    """``$OMP_NUM_THREADS`` if set to a positive integer (so MPI ranks run with one thread each, as
    the BLAS does), else the number of CPUs this process may use."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    if value.strip().isdigit() and int(value) > 0:
        return min(int(value), _N_CPUS)
    return _N_CPUS


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def power_spectrum(expansion, gradients: bool = False, chunk_size: int = 256):
    """Invariant SOAP power spectrum (the folded λ = 0 λ-SOAP features).

    Returns ``features (n_centres, F)``; with ``gradients=True`` returns
    ``(features, gradients, pairs)`` where ``gradients (n_pairs, 3, F)`` is
    d features[i] / d r_j for every pair ``pairs[k] = (i, j)`` of ``expansion.pairs``
    (global atom indices), in Å⁻¹ times the feature units.  ``F = (max_angular + 1) *
    P (P + 1) / 2`` with ``P = n_species * n_radial``; layout of :func:`feature_labels` (λ=0).
    """
    features = lambda_soap(expansion, (0,), fold=True)[0][:, 0, :]
    if not gradients:
        return features
    if expansion.gradient_values is None or expansion.pairs is None:
        raise ValueError("power_spectrum(gradients=True) needs an expansion with gradients")
    lmax = expansion.max_angular
    n_prop = expansion.values[0].shape[-1]
    pairs = expansion.pairs
    n_pairs = len(pairs)
    idx, w = _fold_index(n_prop)
    width = len(idx)
    grads = np.empty((n_pairs, 3, (lmax + 1) * width))
    for l in range(lmax + 1):
        c0 = real_clebsch_gordan(l, l, 0)[:, :, 0]  # (2l+1, 2l+1), symmetric
        rho = expansion.values[l]  # (n, m, P)
        g_all = expansion.gradient_values[l]  # (pairs, 3, m, P)
        for sl in _chunks(n_pairs, chunk_size):
            h = np.einsum("ab,kbq->kaq", c0, rho[pairs[sl, 0]])  # (k, m, Q)
            g = g_all[sl]  # (k, 3, m, P)
            k = g.shape[0]
            mat = np.matmul(g.transpose(0, 1, 3, 2), h[:, None])  # (k, 3, P, Q)
            mat = mat + mat.transpose(0, 1, 3, 2)
            grads[sl, :, l * width : (l + 1) * width] = (
                mat.reshape(k, 3, n_prop * n_prop)[:, :, idx] * w
            )
    return features, grads, pairs
