"""The rotate–predict–rotate kernel (mdplugin.learn.axial_kernel) on its own: exactly equivariant
under the ambiguity group of the chosen principal axis, K(g x, x') = D(g) K(x, x'), for every
rotation about the axis, the mirror planes containing it and its sign flip; positive definite."""

from __future__ import annotations

import numpy as np
import pytest

from mdplugin.features.inertia import InertiaFeatures
from mdplugin.learn.axial_kernel import AxialInputs, kernel_block, representation, self_kernels

NUMBERS = np.array([6, 6, 17, 17, 1, 1, 1, 1])


def _inputs(body: np.ndarray, moments: np.ndarray) -> AxialInputs:
    """Kernel inputs whose body coordinates are ``body`` (n, n_atoms, 3) (axes = identity)."""
    n = len(body)
    features = InertiaFeatures(body, NUMBERS, np.zeros((n, 3)), np.repeat(np.eye(3)[None], n, axis=0), moments)
    return AxialInputs(features, 0.35, 0.65)


def _rot_x(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


@pytest.mark.parametrize("axis", [1, 3])
@pytest.mark.parametrize("kinds", [("vector",), ("l0", "l2")])
def test_equivariant_under_the_axis_group(axis, kinds):
    rng = np.random.default_rng(axis)
    xa, xb = rng.normal(size=(2, 3, len(NUMBERS), 3))
    # prolate (g12 >> g23: the axis of λ1 serves) or oblate (the axis of λ3)
    moments = np.tile([1.0, 5.0, 5.2] if axis == 1 else [1.0, 1.2, 5.0], (3, 1))
    fa, fb = _inputs(xa, moments), _inputs(xb, moments)
    assert np.allclose(fa.p[axis], 1.0)
    inv_l2 = 1.0 / (len(NUMBERS) * 0.9**2)
    ka, kb = self_kernels(fa, inv_l2), self_kernels(fb, inv_l2)
    idx = np.arange(3)
    k = kernel_block(fa, idx, fb, idx, kinds, inv_l2, ka, kb)
    for theta, s, f in [(0.7, 1.0, 1.0), (2.1, -1.0, 1.0), (-1.3, 1.0, -1.0), (3.0, -1.0, -1.0)]:
        g = _rot_x(theta) @ np.diag([s, 1.0, f])  # rotation about x, then a sign flip / mirror
        if axis == 3:  # the same group about the z axis
            perm = np.eye(3)[[2, 0, 1]]
            g = perm.T @ g @ perm
        moved = _inputs(np.einsum("ij,naj->nai", g, xa), moments)
        k_moved = kernel_block(moved, idx, fb, idx, kinds, inv_l2, self_kernels(moved, inv_l2), kb)
        for kind in kinds:
            d = representation(g, kind)
            assert np.allclose(k_moved[kind], np.einsum("ij,nmjk->nmik", d, k[kind]), atol=1e-12), (kind, theta)


def test_positive_definite_and_unit_prior_of_the_invariant_part():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(12, len(NUMBERS), 3))
    moments = np.sort(rng.uniform(1.0, 5.0, size=(12, 3)), axis=1)
    fr = _inputs(x, moments)
    inv_l2 = 1.0 / (len(NUMBERS) * 0.9**2)
    kap = self_kernels(fr, inv_l2)
    idx = np.arange(12)
    k = kernel_block(fr, idx, fr, idx, ("l0", "l2"), inv_l2, kap, kap)
    assert np.allclose(np.einsum("nnii->n", k["l0"]), 1.0)  # normalised: unit prior variance
    for kind, d in (("l0", 1), ("l2", 5)):
        full = k[kind].transpose(0, 2, 1, 3).reshape(12 * d, 12 * d)
        assert np.allclose(full, full.T, atol=1e-12)
        assert np.linalg.eigvalsh(full).min() > -1e-10
