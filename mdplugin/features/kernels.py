"""Compiled per-pair kernels of the spherical expansion (numba).

The pairs are a half list: every neighbour pair once, ``p = (i, j)`` with ``d = r_j + S·cell − r_i``
of length ``r`` (``i`` of species slot ``si``, ``j`` of slot ``sj``). It adds ``G_nl(r) Y_lm(d̂)`` to
the coefficients of ``i`` (neighbour slot ``sj``) and, since ``Y_lm(−d̂) = (−1)^l Y_lm(d̂)`` and the
radial part is the same, ``(−1)^l G_nl(r) Y_lm(d̂)`` to those of ``j`` (neighbour slot ``si``): one
evaluation of the harmonics, their gradients and the radial spline serves both ends. ``G_nl = f_c(r)
R_nl(r)`` (the shifted-cosine cutoff times featomic's radial spline, see :mod:`.radial`); ``Y`` and
``∂Y/∂d`` from sphericart. The coefficient buffer holds the per-l blocks ``(n_centres, 2l+1,
n_species, n_radial)`` one after the other (``offsets[l]`` is where block l starts): the dense
layout of :class:`~mdplugin.features.expansion.Expansion`.

Why compiled: each pair touches ``(L+1)² · n_radial`` numbers of two centres; numpy would need
``(n_pairs, (L+1)², n_radial)`` temporaries and a scatter-add, several times slower and
proportionally larger in memory. The loops here run over pairs once, keep a pair's radial values
in a small local array, and write each coefficient in place. The force/virial contraction
(:func:`contract_pairs`) reads the radial values and derivatives the expansion pass kept
(``(n_pairs, L+1, n_radial)`` each, :func:`expand_pairs` with ``keep_radial``) and forms each pair's
derivative on the fly instead of storing the ``(n_pairs, 3, (L+1)², n_radial)`` gradients: an MD
step's memory stays O(pairs).
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

__all__ = ["expand_pairs", "contract_pairs", "dense_pair_gradients", "radial_rows"]


@njit(cache=True, nogil=True, inline="always")
def _radial(coef, inv_step, n_int, rc, width, r, g, dg, with_derivative):
    """``g[l, n] = f_c(r) R_nl(r)`` and, ``with_derivative``, ``dg[l, n] = d g / d r``, from the
    cubics ``coef`` (L+1, n_intervals, n_radial, 4) on each l's grid (``inv_step``, ``n_int`` (L+1,))."""
    fc = 1.0
    dfc = 0.0
    if r >= rc:
        fc = 0.0
    elif r > rc - width:
        s = np.pi * (r - rc + width) / width
        fc = 0.5 * (1.0 + np.cos(s))
        dfc = -0.5 * np.pi / width * np.sin(s)
    for l in range(coef.shape[0]):
        x = r * inv_step[l]
        k = int(x)
        if k > n_int[l] - 1:
            k = n_int[l] - 1
        t = x - k
        for n in range(coef.shape[2]):
            c0 = coef[l, k, n, 0]
            c1 = coef[l, k, n, 1]
            c2 = coef[l, k, n, 2]
            c3 = coef[l, k, n, 3]
            value = c0 + t * (c1 + t * (c2 + t * c3))
            g[l, n] = fc * value
            if with_derivative:
                dg[l, n] = dfc * value + fc * (c1 + t * (2.0 * c2 + 3.0 * t * c3)) * inv_step[l]


def radial_rows(coef: np.ndarray, inv_step: np.ndarray, n_int: np.ndarray) -> tuple[np.ndarray, bool]:
    """The spline's cubics ``coef`` (L+1, n_intervals, n_radial, 4) re-laid for the pair kernels as
    ``(n_intervals, 4, (L+1)·n_radial)`` (column ``l·n_radial + n``), and whether every l has the
    same grid (``inv_step``, ``n_int`` (L+1,); featomic's spliner gives them the same grid in
    practice): then one interval and one contiguous loop over all (l, n) per pair."""
    rows = np.ascontiguousarray(coef.transpose(1, 3, 0, 2).reshape(coef.shape[1], 4, coef.shape[0] * coef.shape[2]))
    uniform = bool(np.all(inv_step == inv_step[0]) and np.all(n_int == n_int[0]))
    return rows, uniform


def expand_pairs(centre, neighbour, centre_slot, slot, r, y, rows, uniform, inv_step, n_int, rc, width, n_species,
                 offsets, out, radial, dradial, keep_radial) -> None:
    """Add every half-list pair's ``G_nl(r) Y_lm`` to ``out`` (flat per-l blocks, see the module
    doc), at both ends.

    ``centre``, ``neighbour`` (n_pairs,) int: rows of ``i`` and ``j``; ``centre_slot``, ``slot``
    (n_pairs,) int: their species slots; ``r`` (n_pairs,) Å; ``y`` (n_pairs, (L+1)²) spherical
    harmonics of the pair vectors; ``rows``, ``uniform``: the spline's cubics as
    :func:`radial_rows` lays them out, ``inv_step``, ``n_int`` (L+1,) each l's grid
    (:meth:`~.radial.RadialSpline.coefficients`); ``offsets`` (L+1,) int. An atom and its own image
    (``i == j``) adds both ends to the same atom, as the full list's two pairs ``±S`` would. The
    pairs come sorted by ``i``: its end is summed in a small local array, added to ``out`` when the
    centre changes; the other end goes to ``out`` directly (to the local sums too for an atom's own
    image, so that the odd-l terms of ``±S`` cancel exactly as they do by symmetry).

    ``keep_radial``: also write every pair's ``G_nl(r)`` and ``dG_nl/dr`` to ``radial`` and
    ``dradial`` (n_pairs, L+1, n_radial) (rows of pairs beyond the cutoff are left as they are), for
    :func:`contract_pairs` (an MD step with forces: one spline evaluation per pair, not two).

    The loops run in a kernel compiled for the basis sizes (:func:`_pair_kernels`): with ``L+1``
    and ``n_radial`` known to the compiler, the short loops over them are unrolled and vectorised
    (the 1536-atom water box: 12 → 6–7 ms)."""
    n_l, n_r = radial.shape[1], radial.shape[2]
    if n_l != len(inv_step) or n_r * n_l != rows.shape[2]:
        raise ValueError(f"radial buffers of shape {radial.shape} for a spline of {rows.shape[2]} functions")
    _pair_kernels(n_l, n_r)[0](centre, neighbour, centre_slot, slot, r, y, rows, uniform, inv_step, n_int, rc,
                               width, n_species, offsets, out, radial, dradial, keep_radial)


def contract_pairs(centre, neighbour, centre_slot, slot, frame, vectors, r, y, dy, radial, dradial, rc,
                   n_species, offsets, de_dc, forces, strain) -> None:
    """Contract ``de_dc = ∂E/∂c`` (flat, the layout of the coefficients) with every half-list pair's
    derivatives at both ends without storing them.

    The pair ``(i, j, d)`` moves ``c_i`` (through ``d``) and ``c_j`` (through ``−d``, with
    ``Y(−d) = (−1)^l Y(d)``, ``∂Y/∂d(−d) = (−1)^(l+1) ∂Y/∂d(d)``); both ends together give
    ``e = Σ_lmn (∂E/∂c_i,lmn + (−1)^l ∂E/∂c_j,lmn) ∂(G_nl Y_lm)/∂d`` (3,), with one set of radial
    values and harmonics. Then ``forces[i] += e``, ``forces[j] −= e`` (so ``forces`` = −∂E/∂r, eV/Å
    for E in eV) and ``strain[frame, a, b] += e_a d_b`` (∂E/∂ε, the derivative under a homogeneous
    strain ε of positions and cell).

    ``dy`` (n_pairs, 3, (L+1)²): ∂Y_lm(d̂)/∂d (Å⁻¹); ``radial``, ``dradial`` (n_pairs, L+1,
    n_radial): ``G_nl(r)`` and ``dG_nl/dr`` as :func:`expand_pairs` kept them; ``frame`` (n_pairs,)
    row of ``strain``. Compiled for the basis sizes, as :func:`expand_pairs`."""
    _pair_kernels(radial.shape[1], radial.shape[2])[1](centre, neighbour, centre_slot, slot, frame, vectors, r, y,
                                                       dy, radial, dradial, rc, n_species, offsets, de_dc, forces,
                                                       strain)


#: floating-point liberties of the pair kernels: fused multiply-adds and reordered sums (results
#: move by ~1e-16 relative), never the "no NaN/inf" assumptions of ``fastmath=True``
_FASTMATH = {"contract", "reassoc", "nsz"}


@functools.lru_cache(maxsize=None)
def _pair_kernels(n_l: int, n_r: int) -> tuple:
    """``(expand, contract)``: the pair kernels of :func:`expand_pairs` and :func:`contract_pairs`
    compiled for ``L+1 = n_l`` angular and ``n_r`` radial functions (closure constants, so the
    compiler unrolls and vectorises the loops over them; numba caches each on disk)."""
    N_L, N_R = int(n_l), int(n_r)
    NLR = N_L * N_R  # (l, n) radial values of a pair
    NT = N_L * N_L * N_R  # (lm, n) products of a pair

    @njit(cache=True, nogil=True, fastmath=_FASTMATH)
    def expand(centre, neighbour, centre_slot, slot, r, y, rows, uniform, inv_step, n_int, rc, width, n_species,
               offsets, out, radial, dradial, keep_radial):
        g = np.empty(NLR)
        dg = np.empty(NLR)
        t = np.empty(NT)  # the pair's G_nl Y_lm, (lm, n)
        parity = np.empty(NT)  # (−1)^l
        for l in range(N_L):
            for q in range(l * l * N_R, (l + 1) * (l + 1) * N_R):
                parity[q] = 1.0 - 2.0 * (l % 2)
        acc = np.zeros((n_species, NT))  # the current centre's own end, (slot, lm, n)
        sr = n_species * N_R
        n_pairs = len(r)
        current = -1
        for p in range(n_pairs + 1):
            c = centre[p] if p < n_pairs else -1
            if c != current:
                if current >= 0:  # flush the finished centre
                    for l in range(N_L):
                        width_l = 2 * l + 1
                        for s in range(n_species):
                            base = offsets[l] + current * width_l * sr + s * N_R
                            for m in range(width_l):
                                b = base + m * sr
                                q = (l * l + m) * N_R
                                for n in range(N_R):
                                    out[b + n] += acc[s, q + n]
                    acc[:, :] = 0.0
                current = c
            if p == n_pairs or r[p] >= rc:  # the end, or a pair beyond the cutoff
                continue
            rp = r[p]
            fc = 1.0
            dfc = 0.0
            if rp > rc - width:
                phase = np.pi * (rp - rc + width) / width
                fc = 0.5 * (1.0 + np.cos(phase))
                dfc = -0.5 * np.pi / width * np.sin(phase)
            for l in range(N_L):
                if uniform and l > 0:  # the same interval for every l: one loop over all (l, n)
                    break
                h = inv_step[l]
                x = rp * h
                k = int(x)
                if k > n_int[l] - 1:
                    k = n_int[l] - 1
                tt = x - k
                lo = 0 if uniform else l * N_R
                hi = NLR if uniform else lo + N_R
                for q in range(lo, hi):
                    c0 = rows[k, 0, q]
                    c1 = rows[k, 1, q]
                    c2 = rows[k, 2, q]
                    c3 = rows[k, 3, q]
                    value = c0 + tt * (c1 + tt * (c2 + tt * c3))
                    g[q] = fc * value
                    dg[q] = dfc * value + fc * (c1 + tt * (2.0 * c2 + 3.0 * tt * c3)) * h
            if keep_radial:
                for l in range(N_L):
                    for n in range(N_R):
                        radial[p, l, n] = g[l * N_R + n]
                        dradial[p, l, n] = dg[l * N_R + n]
            for l in range(N_L):
                for m in range(2 * l + 1):
                    value = y[p, l * l + m]
                    for n in range(N_R):
                        t[(l * l + m) * N_R + n] = g[l * N_R + n] * value
            si = slot[p]
            for q in range(NT):
                acc[si, q] += t[q]
            if neighbour[p] == c:  # an atom's own image: both ends in the local sums
                for q in range(NT):
                    acc[si, q] += parity[q] * t[q]
                continue
            for l in range(N_L):
                width_l = 2 * l + 1
                sign = 1.0 - 2.0 * (l % 2)
                base_j = offsets[l] + neighbour[p] * width_l * sr + centre_slot[p] * N_R
                for m in range(width_l):
                    bj = base_j + m * sr
                    q = (l * l + m) * N_R
                    for n in range(N_R):
                        out[bj + n] += sign * t[q + n]

    @njit(cache=True, nogil=True, fastmath=_FASTMATH)
    def contract(centre, neighbour, centre_slot, slot, frame, vectors, r, y, dy, radial, dradial, rc,
                 n_species, offsets, de_dc, forces, strain):
        sr = n_species * N_R
        for p in range(len(r)):
            rp = r[p]
            if rp <= 0.0 or rp >= rc:
                continue
            i, j = centre[p], neighbour[p]
            # ∂c/∂d = dG/dr Y d̂ + G ∂Y/∂d: the radial part along d̂, the angular part from sphericart
            radial_part = 0.0
            ex = 0.0
            ey = 0.0
            ez = 0.0
            for l in range(N_L):
                width_l = 2 * l + 1
                sign = 1.0 - 2.0 * (l % 2)
                base_i = offsets[l] + i * width_l * sr + slot[p] * N_R
                base_j = offsets[l] + j * width_l * sr + centre_slot[p] * N_R
                for m in range(width_l):
                    bi = base_i + m * sr
                    bj = base_j + m * sr
                    a_sum = 0.0
                    b_sum = 0.0
                    for n in range(N_R):
                        w = de_dc[bi + n] + sign * de_dc[bj + n]
                        a_sum += w * dradial[p, l, n]
                        b_sum += w * radial[p, l, n]
                    lm = l * l + m
                    radial_part += a_sum * y[p, lm]
                    ex += b_sum * dy[p, 0, lm]
                    ey += b_sum * dy[p, 1, lm]
                    ez += b_sum * dy[p, 2, lm]
            radial_part /= rp
            ex += radial_part * vectors[p, 0]
            ey += radial_part * vectors[p, 1]
            ez += radial_part * vectors[p, 2]
            forces[i, 0] += ex
            forces[i, 1] += ey
            forces[i, 2] += ez
            forces[j, 0] -= ex
            forces[j, 1] -= ey
            forces[j, 2] -= ez
            f = frame[p]
            for b in range(3):
                db = vectors[p, b]
                strain[f, 0, b] += ex * db
                strain[f, 1, b] += ey * db
                strain[f, 2, b] += ez * db

    return expand, contract


@njit(cache=True, nogil=True)
def dense_pair_gradients(centre, neighbour, centre_slot, slot, vectors, r, y, dy, coef, inv_step, n_int, rc, width,
                         n_species, row, row_back, self_i, self_j, offsets, out, strain_out, with_strain):
    """Write every half-list pair's derivatives, at both ends, as dense gradients (featomic's
    position and strain gradients).

    ``out``: flat per-l blocks ``(n_rows, 3, 2l+1, n_species, n_radial)`` (``offsets[l]``). The
    pair's ``v = ∂c_i/∂d`` goes to its row ``row[p]`` (d c_i / d r_j) and, negated, to the centre's
    own row ``self_i[p]`` (d c_i / d r_i); the other end's ``∂c_j/∂(−d) = −(−1)^l v`` (neighbour slot
    ``si``) to ``row_back[p]`` (d c_j / d r_i) and, negated, to ``self_j[p]``. ``strain_out`` (with
    ``with_strain``): flat per-l blocks ``(n_centres, 3, 3, 2l+1, n_species, n_radial)`` (offsets
    ``9/3 · offsets``: the caller gives them in ``offsets[L+1:]``) of ``∂c_i/∂ε_ba`` — featomic's
    ``strain`` gradient, components (xyz_2 = b, xyz_1 = a): ``Σ_p ∂c_i/∂d_p,a d_p,b``."""
    n_l, n_r = coef.shape[0], coef.shape[2]
    g = np.empty((n_l, n_r))
    dg = np.empty((n_l, n_r))
    sr = n_species * n_r
    for p in range(len(r)):
        rp = r[p]
        if rp <= 0.0 or rp >= rc:
            continue
        _radial(coef, inv_step, n_int, rc, width, rp, g, dg, True)
        i, j, si, sj = centre[p], neighbour[p], centre_slot[p], slot[p]
        u0, u1, u2 = vectors[p, 0] / rp, vectors[p, 1] / rp, vectors[p, 2] / rp
        for l in range(n_l):
            width_l = 2 * l + 1
            sign = 1.0 - 2.0 * (l % 2)
            block = 3 * width_l * sr
            for m in range(width_l):
                lm = l * l + m
                yy = y[p, lm]
                for n in range(n_r):
                    radial_part = dg[l, n] * yy
                    for a in range(3):
                        ua = u0 if a == 0 else (u1 if a == 1 else u2)
                        value = radial_part * ua + g[l, n] * dy[p, a, lm]
                        back = -sign * value
                        inner_i = (a * width_l + m) * sr + sj * n_r + n
                        inner_j = (a * width_l + m) * sr + si * n_r + n
                        out[offsets[l] + row[p] * block + inner_i] += value
                        out[offsets[l] + self_i[p] * block + inner_i] -= value
                        out[offsets[l] + row_back[p] * block + inner_j] += back
                        out[offsets[l] + self_j[p] * block + inner_j] -= back
                        if with_strain:
                            base_i = offsets[n_l + l] + i * 9 * width_l * sr + m * sr + sj * n_r + n
                            base_j = offsets[n_l + l] + j * 9 * width_l * sr + m * sr + si * n_r + n
                            for b in range(3):
                                # the other end's vector is −d: −back · d_b = sign · value · d_b
                                strain_out[base_i + (b * 3 + a) * width_l * sr] += value * vectors[p, b]
                                strain_out[base_j + (b * 3 + a) * width_l * sr] -= back * vectors[p, b]
