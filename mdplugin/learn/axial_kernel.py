"""The rotate–predict–rotate kernel: a Gaussian kernel on body coordinates made exactly
equivariant under the ambiguity of the principal axes (stateless maths of :mod:`mdplugin.models.rpr`).

A structure's body coordinates ``x`` (n_atoms, 3) are its atoms along its principal axes of
inertia (:mod:`mdplugin.features.inertia`). One principal axis is used — the one with the largest
relative gap to its neighbour (``λ1`` for prolate, ``λ3`` for oblate tops) — and the kernel is
averaged over the whole residual ambiguity group of that axis: every rotation about it, the
reflections through planes containing it, and its sign flip (the group O(1)×O(2)). For the
Gaussian kernel the group integral is analytic (modified Bessel functions):

    K(x, x') = (1/4) Σ_{C} (1/2π) ∫ dθ  k(x, R_θ C x') D(R_θ) D(C)
             = (1/4) Σ_{C} e^{(−|x|²−|x'|²)/2ℓ² + a_C/ℓ²} Σ_m I_m(|Z_C|/ℓ²) (A_m cos mφ_C − B_m sin mφ_C) D(C)

with ``a_C`` the axial and ``Z_C = |Z_C| e^{iφ_C}`` the complex in-plane overlap of ``x`` and
``C x'``, and ``D(R_θ) = Σ_m A_m cos mθ + B_m sin mθ`` the Fourier series of the representation
``D`` of the channel: ``"vector"`` (a dipole, 3), ``"l0"`` (1) and ``"l2"`` (5) (a
polarizability's trace and symmetric traceless parts).

The kernel's components (:data:`COMPONENTS`): the axis of ``λ1`` (``1``), the axis of ``λ3``
(``3``), blended with a C¹ partition of unity in ``t = g12/(g12 + g23)`` where both are defined,
and optionally ``"full"``, all three axes averaged over their 8 sign choices. :class:`AxialInputs`
holds what the kernel needs of a set of structures (body coordinates, axes, blend weights);
:func:`kernel_block` evaluates it between two sets, per channel, as (n, m, d, d) matrices.
Shapes: ``n`` structures, ``d`` = :data:`CHANNEL_DIMS` of the channel.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
from ase.data import atomic_masses
from scipy.special import i0e, i1e

from ..core.tensors import L2_BASIS
from ..features.inertia import InertiaFeatures, body_coordinates, relative_gaps, third_moment_signs

__all__ = [
    "CHANNEL_DIMS",
    "COMPONENTS",
    "SIGN_CHOICES",
    "representation",
    "AxialInputs",
    "self_kernels",
    "block_bases",
    "kernel_block",
]


def representation(rotations: np.ndarray, kind: str) -> np.ndarray:
    """Representation matrices (..., d, d) of orthogonal matrices (..., 3, 3) on the channel ``kind``
    (``"vector"``, ``"l0"`` or ``"l2"``)."""
    r = np.asarray(rotations, dtype=float)
    if kind == "vector":
        return r
    if kind == "l0":
        return np.ones(r.shape[:-2] + (1, 1))
    if kind == "l2":
        return np.einsum("mij,...ia,kab,...jb->...mk", L2_BASIS, r, L2_BASIS, r)
    raise ValueError(kind)


#: dimension of each channel
CHANNEL_DIMS = {"vector": 3, "l0": 1, "l2": 5}
_MAX_M = {"vector": 1, "l0": 0, "l2": 2}


def _rot_x(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


#: coset representatives of O(1)×O(2) modulo rotations about body axis 1: diag(s, 1, f)
_COSETS = [(s, f) for s in (1.0, -1.0) for f in (1.0, -1.0)]
#: body-coordinate order of the two candidate axes: axis of λ1 first, or axis of λ3 first
_ORDERS = {1: np.array([0, 1, 2]), 3: np.array([2, 0, 1])}
#: kernel components: all three principal axes (up to signs), or one axis (λ1 or λ3)
COMPONENTS = ("full", 1, 3)
#: the 8 sign choices (8, 3) of the three principal axes
SIGN_CHOICES = np.array([[a, b, c] for a in (1.0, -1.0) for b in (1.0, -1.0) for c in (1.0, -1.0)])


@lru_cache(maxsize=None)
def _term_matrices(kind: str, max_m: int) -> dict:
    """Fixed matrices of the analytic group integral, per (component, coset): m -> (G_cos, G_sin).

    ``G_cos = Pᵀ A_m D(C) P`` and ``G_sin = −Pᵀ B_m D(C) P`` in the common (sorted) body coordinates,
    with ``P`` the reordering of the component and ``D(R_θ) = Σ_m A_m cos mθ + B_m sin mθ`` about
    the first axis of the component (m = 0 … ``max_m``; zero above the representation's order).
    Also ``"full"``: ``D(S)`` for the 8 sign matrices ``S``.
    """
    n_theta = 8
    thetas = 2.0 * np.pi * np.arange(n_theta) / n_theta
    d_theta = representation(np.array([_rot_x(t) for t in thetas]), kind)
    out = {}
    for comp, order in _ORDERS.items():
        perm = np.eye(3)[order]  # x_c = perm @ x
        d_perm = representation(perm, kind)
        for s, f in _COSETS:
            d_c = representation(np.diag([s, 1.0, f]), kind)
            terms = []
            for m in range(max_m + 1):
                a_m = (1.0 if m == 0 else 2.0) * np.mean(d_theta * np.cos(m * thetas)[:, None, None], axis=0)
                b_m = 2.0 * np.mean(d_theta * np.sin(m * thetas)[:, None, None], axis=0)
                terms.append((d_perm.T @ a_m @ d_c @ d_perm, -(d_perm.T @ b_m @ d_c @ d_perm)))
            out[comp, s, f] = terms
    out["full"] = [representation(np.diag(sg), kind) for sg in SIGN_CHOICES]
    return out


class AxialInputs:
    """What the kernel needs of ``n`` structures of one molecule, from their
    :class:`~mdplugin.features.inertia.InertiaFeatures`: ``body`` (n, n_atoms, 3) Å, the body
    coordinates (mass-weighted by ``(m_a / mean m)^mass_power``), ``axes`` (n, 3, 3) (columns;
    with ``naive`` signed by the third-moment rule), ``moments`` (n, 3) amu·Å², ``quality`` (n,)
    ``max(g12, g23)``, and the blend weights ``p[c]`` (n,) of every component ``c`` (sum 1):
    the two one-axis components blended over ``t = g12/(g12+g23)`` in ``(lo, hi)``, the
    ``"full"`` one switched on over ``min(g12, g23)`` in ``full_gap`` (None: off)."""

    def __init__(self, inertia: InertiaFeatures, lo: float, hi: float,
                 full_gap: tuple[float, float] | None = None, naive: bool = False, mass_power: float = 0.0):
        numbers, com, axes, moments = inertia.numbers, inertia.com, inertia.axes, inertia.moments
        body = body_coordinates(inertia.positions, com, axes)
        if naive:
            signs = third_moment_signs(body, numbers)
            axes = axes * signs[:, None, :]
            body = body * signs[:, None, :]
        self.axes = axes
        if mass_power:
            m = atomic_masses[np.asarray(numbers)]
            body = body * ((m / m.mean()) ** mass_power)[None, :, None]
        self.body = body  # kernel input: body coordinates (mass-weighted if asked)
        self.moments = moments
        g12, g23 = relative_gaps(moments)
        self.quality = np.maximum(g12, g23)
        total = g12 + g23
        t = np.where(total > 0, g12 / np.where(total > 0, total, 1.0), 0.5)
        p1 = _smoothstep(t, lo, hi)
        p_full = _smoothstep(np.minimum(g12, g23), *full_gap) if full_gap is not None else np.zeros_like(t)
        self.p = {"full": p_full, 1: (1.0 - p_full) * p1, 3: (1.0 - p_full) * (1.0 - p1)}


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """C¹ step from 0 (x <= lo) to 1 (x >= hi)."""
    u = np.clip((np.asarray(x, dtype=float) - lo) / (hi - lo), 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _pair_terms(xa: np.ndarray, xb: np.ndarray, inv_l2: float, paired: bool, max_m: int = 2):
    """Invariants of all pairs (n, m), or of matching pairs (n,) when ``paired``.

    Returns ``base`` = −(|x|² + |x'|²)/2ℓ², ``ax`` = (axial overlap)/ℓ² and, per in-plane
    reflection ``f`` = ±1, ``(r, Bessel_m, cos mφ, sin mφ)`` with ``r = |Z_f|/ℓ²`` and the
    exponentially scaled Bessel functions ``e^{−r} I_m(r)``, m = 0 … ``max_m`` (≤ 2).
    """
    sq_a = np.einsum("nai,nai->n", xa, xa)
    sq_b = np.einsum("nai,nai->n", xb, xb)
    wa = xa[..., 1] + 1j * xa[..., 2]
    wb = xb[..., 1] + 1j * xb[..., 2]
    if paired:
        ax = np.einsum("na,na->n", xa[..., 0], xb[..., 0])
        zs = {1.0: np.einsum("na,na->n", wa.conj(), wb), -1.0: np.einsum("na,na->n", wa.conj(), wb.conj())}
        base = -0.5 * (sq_a + sq_b)
    else:
        ax = xa[..., 0] @ xb[..., 0].T
        zs = {1.0: wa.conj() @ wb.T, -1.0: wa.conj() @ wb.conj().T}
        base = -0.5 * (sq_a[:, None] + sq_b[None, :])
    planes = {}
    for f, z in zs.items():
        absz = np.abs(z)
        r = absz * inv_l2
        safe = np.where(absz > 0, absz, 1.0)
        c = np.where(absz > 0, z.real / safe, 1.0)
        s = np.where(absz > 0, z.imag / safe, 0.0)
        b0, b1 = i0e(r), i1e(r)
        if max_m >= 2:
            small = r < 1e-3  # I_2 by recurrence I_2 = I_0 − (2/r) I_1, series for tiny r
            b2 = np.where(small, 0.125 * r * r * np.exp(-r), b0 - 2.0 * b1 / np.where(small, 1.0, r))
            planes[f] = (r, (b0, b1, b2), (None, c, c * c - s * s), (None, s, 2.0 * s * c))
        else:
            planes[f] = (r, (b0, b1), (None, c), (None, s))
    return base * inv_l2, ax * inv_l2, planes


def _axis_overlaps(xa: np.ndarray, xb: np.ndarray, inv_l2: float, paired: bool):
    """``base`` = −(|x|² + |x'|²)/2ℓ² and the per-axis overlaps Σ_a x_ak x'_ak / ℓ² (3, ...)."""
    sq_a = np.einsum("nai,nai->n", xa, xa)
    sq_b = np.einsum("nai,nai->n", xb, xb)
    if paired:
        ov = np.einsum("nak,nak->kn", xa, xb)
        base = -0.5 * (sq_a + sq_b)
    else:
        ov = np.stack([xa[..., k] @ xb[..., k].T for k in range(3)])
        base = -0.5 * (sq_a[:, None] + sq_b[None, :])
    return base * inv_l2, ov * inv_l2


def _self_kernel(fr: AxialInputs, comp, inv_l2: float) -> np.ndarray:
    """κ_c(x) = K_c(x, x) of the λ = 0 part (n,), used to normalise the kernel."""
    if comp == "full":
        base, ov = _axis_overlaps(fr.body, fr.body, inv_l2, paired=True)
        return sum(np.exp(base + np.tensordot(sg, ov, axes=1)) for sg in SIGN_CHOICES) / len(SIGN_CHOICES)
    x = fr.body[..., _ORDERS[comp]]
    base, ax, planes = _pair_terms(x, x, inv_l2, paired=True, max_m=0)
    return 0.25 * sum(np.exp(base + s * ax + planes[f][0]) * planes[f][1][0] for s, f in _COSETS)


def self_kernels(fr: AxialInputs, inv_l2: float) -> dict:
    """κ_c (n,) per component ``c``: the λ = 0 self-kernels that normalise :func:`kernel_block`. A
    component no structure of ``fr`` uses (``p_c = 0`` for all) is never read by
    :func:`kernel_block` and gets ones instead of its (costly) self-kernel."""
    return {c: _self_kernel(fr, c, inv_l2) if fr.p[c].any() else np.ones(len(fr.body)) for c in COMPONENTS}


def block_bases(fr: AxialInputs, kind: str) -> list[np.ndarray]:
    """Orthonormal bases (d, d_b) of independent blocks of the channel ``kind`` for a GP on the
    structures ``fr``.

    When a single one-axis component carries every structure, the kernel is block-diagonal in
    the |m| subspaces of rotations about that axis (m = 0, 1, 2): each block is an independent,
    much smaller GP. Otherwise one block (the identity).
    """
    d = CHANNEL_DIMS[kind]
    active = [c for c in COMPONENTS if fr.p[c].any()]
    if len(active) != 1 or active[0] == "full" or d == 1:
        return [np.eye(d)]
    mats = _term_matrices(kind, _MAX_M[kind])
    # A_m (m >= 1) and A_0 are the projectors on the |m| subspaces (about the component axis)
    blocks = []
    for m, (g_cos, _) in enumerate(mats[active[0], 1.0, 1.0]):
        w, v = np.linalg.eigh(0.5 * (g_cos + g_cos.T))  # C = identity coset: g_cos = Pᵀ A_m P
        basis = v[:, w > 0.5]
        if basis.shape[1]:
            blocks.append(basis)
    assert sum(b.shape[1] for b in blocks) == d
    return blocks


def kernel_block(fa: AxialInputs, ia: np.ndarray, fb: AxialInputs, ib: np.ndarray, kinds: Sequence[str],
                  inv_l2: float, kappa_a: dict, kappa_b: dict, paired: bool = False,
                  bases: dict[str, list[np.ndarray]] | None = None) -> dict:
    """The kernel between structures ``ia`` of ``fa`` and ``ib`` of ``fb``, per channel ``kinds``,
    normalised by the self-kernels ``kappa_a``, ``kappa_b`` (:func:`self_kernels`);
    ``inv_l2`` = 1/(n_atoms ℓ²) in 1/Å².

    Returns ``{kind: (n, m, d, d)}``, or ``(n, d, d)`` when ``paired`` (then ``ia`` and ``ib``
    have equal length). With ``bases`` (per kind, a list of orthonormal ``u`` (d, d_b)) also
    ``{(kind, b): uᵀ K u}`` of shape (n, m, d_b, d_b) for every block ``b``.
    """
    max_m = max(_MAX_M[k] for k in kinds)
    mats = {k: _term_matrices(k, max_m) for k in kinds}
    coefs: list[np.ndarray] = []
    cols: dict[str, list[np.ndarray]] = {k: [] for k in kinds}

    def add(coef, key, m=None, sin=False):
        coefs.append(coef)
        for k in kinds:
            g = mats[k][key] if m is None else mats[k][key][m][int(sin)]
            cols[k].append(g.ravel())

    for comp in COMPONENTS:
        pa, pb = fa.p[comp][ia], fb.p[comp][ib]
        if not (pa.any() and pb.any()):
            continue
        ka, kb = kappa_a[comp][ia], kappa_b[comp][ib]
        if paired:
            scale = 0.25 * np.sqrt(pa * pb / (ka * kb))
        else:
            scale = 0.25 * np.sqrt(np.outer(pa / ka, pb / kb))
        if comp == "full":
            base, ov = _axis_overlaps(fa.body[ia], fb.body[ib], inv_l2, paired)
            for i, sg in enumerate(SIGN_CHOICES):
                coefs.append(0.5 * scale * np.exp(base + np.tensordot(sg, ov, axes=1)))
                for k in kinds:
                    cols[k].append(mats[k]["full"][i].ravel())
            continue
        order = _ORDERS[comp]
        base, ax, planes = _pair_terms(fa.body[ia][..., order], fb.body[ib][..., order], inv_l2, paired, max_m)
        for s, f in _COSETS:
            r, bess, cos_m, sin_m = planes[f]
            w = scale * np.exp(base + s * ax + r)
            for m in range(max_m + 1):
                wb = w * bess[m]
                add(wb * cos_m[m] if m else wb, (comp, s, f), m, False)
                if m > 0:
                    add(wb * sin_m[m], (comp, s, f), m, True)
    shape = coefs[0].shape
    c = np.empty((len(coefs), coefs[0].size))
    for i, x in enumerate(coefs):
        c[i] = x.ravel()
    del coefs
    out: dict = {k: (c.T @ np.array(cols[k])).reshape(shape + (CHANNEL_DIMS[k], CHANNEL_DIMS[k])) for k in kinds}
    for k, us in (bases or {}).items():
        d = CHANNEL_DIMS[k]
        for b, u in enumerate(us):
            g = np.array([(u.T @ col.reshape(d, d) @ u).ravel() for col in cols[k]])
            out[k, b] = (c.T @ g).reshape(shape + (u.shape[1], u.shape[1]))
    return out
