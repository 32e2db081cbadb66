"""Real spherical harmonics and real Wigner matrices of any order l.

Convention: the real spherical harmonics of featomic and sphericart (m = -l … l; for l = 1 the
components are proportional to (y, z, x)), built from scipy's complex ones as

    Y_l^m = √2 (-1)^m Im Y_l^|m| (m < 0),   Y_l^0,   √2 (-1)^m Re Y_l^m (m > 0),

orthonormal on the unit sphere. :func:`real_wigner_d` gives the matrix ``D`` with
``Y_l(R r) = D(R) @ Y_l(r)`` for any 3×3 orthogonal ``R``; for a reflection (det R = -1) it contains
the parity (-1)^l. For l ≤ 2 it equals :func:`mdplugin.core.tensors.wigner_d_real`.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.special


def real_spherical_harmonics(directions: np.ndarray, l: int) -> np.ndarray:
    """Real spherical harmonics of order ``l`` at ``directions`` (n, 3) (need not be normalised):
    shape (n, 2l+1), m = -l … l."""
    d = np.asarray(directions, dtype=float).reshape(-1, 3)
    r = np.linalg.norm(d, axis=1)
    if np.any(r == 0):
        raise ValueError("real_spherical_harmonics: a direction of length zero")
    theta = np.arccos(np.clip(d[:, 2] / r, -1.0, 1.0))
    phi = np.arctan2(d[:, 1], d[:, 0])
    out = np.empty((len(d), 2 * l + 1))
    out[:, l] = scipy.special.sph_harm_y(l, 0, theta, phi).real
    for m in range(1, l + 1):
        y = scipy.special.sph_harm_y(l, m, theta, phi)
        sign = np.sqrt(2.0) * (-1.0) ** m
        out[:, l + m] = sign * y.real
        out[:, l - m] = sign * y.imag
    return out


@functools.lru_cache(maxsize=None)
def _probe(l: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed well-spread directions (n, 3) and the pseudo-inverse of their harmonics (2l+1, n)."""
    rng = np.random.default_rng(12345 + l)
    points = rng.normal(size=(4 * l + 4, 3))
    return points, np.linalg.pinv(real_spherical_harmonics(points, l))


def real_wigner_d(rotation: np.ndarray, l: int) -> np.ndarray:
    """Real Wigner matrix (2l+1, 2l+1) of a rotation or reflection ``rotation`` (3, 3), any l ≥ 0:
    ``Y_l(R r) = D @ Y_l(r)``.

    Found from the harmonics at fixed directions (exact to ~1e-13: the harmonics of order l
    span a (2l+1)-dimensional space that ``R`` maps onto itself).
    """
    r = np.asarray(rotation, dtype=float)
    if r.shape != (3, 3) or not np.allclose(r @ r.T, np.eye(3), atol=1e-8):
        raise ValueError("real_wigner_d: rotation must be an orthogonal 3×3 matrix")
    if l == 0:
        return np.ones((1, 1))
    points, pinv = _probe(l)
    # Y(P Rᵀ) = Y(P) Dᵀ  ->  Dᵀ = pinv(Y(P)) Y(P Rᵀ)
    return (pinv @ real_spherical_harmonics(points @ r.T, l)).T
