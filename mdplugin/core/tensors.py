"""Rotations and Cartesian <-> real spherical components for λ = 0, 1, 2.

Convention (the one of featomic / sphericart real spherical harmonics, m = -λ … λ):

* λ = 1: a vector ``(x, y, z)`` has spherical components ``(y, z, x)`` (m = -1, 0, 1).
* λ = 0 and λ = 2 of a symmetric 3×3 tensor ``A`` are its coordinates in an orthonormal basis
  (Frobenius inner product) of symmetric matrices::

      B0   = I / √3                           (λ = 0:  a0 = tr A / √3)
      B2,-2 = (e_x e_yᵀ + e_y e_xᵀ) / √2      ∝ Y_2^-2 ∝ xy
      B2,-1 = (e_y e_zᵀ + e_z e_yᵀ) / √2      ∝ Y_2^-1 ∝ yz
      B2,0  = diag(-1, -1, 2) / √6            ∝ Y_2^0  ∝ 3z² - r²
      B2,1  = (e_x e_zᵀ + e_z e_xᵀ) / √2      ∝ Y_2^1  ∝ xz
      B2,2  = diag(1, -1, 0) / √2             ∝ Y_2^2  ∝ x² - y²

  so that ``xᵀ B2,m x`` is the same multiple of the real harmonic ``r² Y_2^m(x)`` for every m.
  The map is orthogonal: ‖A‖_F² = a0² + ‖a2‖².

Under a rotation or reflection ``R`` (3×3 orthogonal), ``v -> R v`` and ``A -> R A Rᵀ``; the
spherical components transform with :func:`wigner_d_real`: ``sph(R x) = D(R) @ sph(x)``.
"""

from __future__ import annotations

import numpy as np

_SQ2 = np.sqrt(2.0)
_SQ3 = np.sqrt(3.0)
_SQ6 = np.sqrt(6.0)

#: permutation taking (x, y, z) to the λ = 1 order (y, z, x)
_VECTOR_ORDER = np.array([1, 2, 0])

#: orthonormal basis of symmetric traceless 3×3 matrices, m = -2 … 2, shape (5, 3, 3)
L2_BASIS = np.array(
    [
        [[0, 1, 0], [1, 0, 0], [0, 0, 0]],
        [[0, 0, 0], [0, 0, 1], [0, 1, 0]],
        [[-1, 0, 0], [0, -1, 0], [0, 0, 2]],
        [[0, 0, 1], [0, 0, 0], [1, 0, 0]],
        [[1, 0, 0], [0, -1, 0], [0, 0, 0]],
    ],
    dtype=float,
) / np.array([_SQ2, _SQ2, _SQ6, _SQ2, _SQ2])[:, None, None]

#: basis matrix of the λ = 0 part, shape (1, 3, 3)
L0_BASIS = np.eye(3)[None] / _SQ3
_SPHERICAL_TO_VECTOR = np.argsort(_VECTOR_ORDER)
_L0_FLAT, _L2_FLAT = L0_BASIS.reshape(1, 9), L2_BASIS.reshape(5, 9)  # rows: basis tensors, flattened


def random_rotation(rng: np.random.Generator | int | None = None, reflection: bool = False) -> np.ndarray:
    """A uniformly random rotation matrix (3, 3); with ``reflection=True`` an improper one (det -1)."""
    rng = np.random.default_rng(rng)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1.0
    return -q if reflection else q


def vector_to_spherical(v: np.ndarray) -> np.ndarray:
    """Cartesian vectors (..., 3) -> λ = 1 spherical components (..., 3), order (y, z, x)."""
    return np.asarray(v)[..., _VECTOR_ORDER]


def spherical_to_vector(s: np.ndarray) -> np.ndarray:
    """λ = 1 spherical components (..., 3) in order (y, z, x) -> Cartesian vectors (..., 3)."""
    return np.asarray(s)[..., _SPHERICAL_TO_VECTOR]


def symmetric_to_spherical(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric tensors (..., 3, 3) -> (λ = 0 part (..., 1), λ = 2 part (..., 5)).

    The antisymmetric part, if any, is discarded (it is a λ = 1 pseudo-vector).
    """
    a = np.asarray(a, dtype=float)
    l0 = np.einsum("kij,...ij->...k", L0_BASIS, a)
    l2 = np.einsum("kij,...ij->...k", L2_BASIS, a)
    return l0, l2


def spherical_to_symmetric(l0: np.ndarray, l2: np.ndarray) -> np.ndarray:
    """(λ = 0 (..., 1), λ = 2 (..., 5)) -> symmetric tensors (..., 3, 3)."""
    flat = np.asarray(l0) @ _L0_FLAT + np.asarray(l2) @ _L2_FLAT  # (..., 9)
    return flat.reshape(*flat.shape[:-1], 3, 3)


def wigner_d_real(rotation: np.ndarray, lam: int) -> np.ndarray:
    """Real Wigner matrix (2λ+1, 2λ+1) of a rotation or reflection, λ in {0, 1, 2}.

    ``sph(R x) = D @ sph(x)`` with the conventions of this module; for an improper ``R`` this
    includes the parity (-1)^λ.
    """
    r = np.asarray(rotation, dtype=float)
    if lam == 0:
        return np.ones((1, 1))
    if lam == 1:
        return r[np.ix_(_VECTOR_ORDER, _VECTOR_ORDER)]
    if lam == 2:
        rotated = np.einsum("ia,nab,jb->nij", r, L2_BASIS, r)
        return np.einsum("mij,nij->mn", L2_BASIS, rotated)
    raise ValueError(f"wigner_d_real supports λ = 0, 1, 2, not {lam}")


def rotate_vectors(v: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Apply ``R`` to Cartesian vectors (..., 3)."""
    return np.asarray(v) @ np.asarray(rotation).T


def rotate_tensors(a: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Apply ``R a Rᵀ`` to tensors (..., 3, 3)."""
    r = np.asarray(rotation)
    return np.einsum("ia,...ab,jb->...ij", r, np.asarray(a), r)
