"""Real Wigner matrices of any order: the representation property and agreement with λ ≤ 2."""

import numpy as np
import pytest

from mdplugin.core.tensors import random_rotation, wigner_d_real
from mdplugin.core.wigner import real_spherical_harmonics, real_wigner_d


@pytest.mark.parametrize("reflection", [False, True])
def test_equal_to_the_tensor_convention_for_small_l(reflection):
    r = random_rotation(3, reflection=reflection)
    for l in range(3):
        np.testing.assert_allclose(real_wigner_d(r, l), wigner_d_real(r, l), atol=1e-12)


@pytest.mark.parametrize("l", [1, 2, 3, 4, 5])
def test_harmonics_of_rotated_directions(l):
    rng = np.random.default_rng(l)
    points = rng.normal(size=(20, 3))
    for reflection in (False, True):
        r = random_rotation(rng, reflection=reflection)
        d = real_wigner_d(r, l)
        np.testing.assert_allclose(real_spherical_harmonics(points @ r.T, l),
                                   real_spherical_harmonics(points, l) @ d.T, atol=1e-12)
        np.testing.assert_allclose(d @ d.T, np.eye(2 * l + 1), atol=1e-12)
        if reflection:  # parity: the inversion is (-1)^l
            np.testing.assert_allclose(real_wigner_d(-np.eye(3), l), (-1) ** l * np.eye(2 * l + 1), atol=1e-12)


def test_representation_property():
    a, b = random_rotation(1), random_rotation(2, reflection=True)
    for l in range(5):
        np.testing.assert_allclose(real_wigner_d(a @ b, l), real_wigner_d(a, l) @ real_wigner_d(b, l), atol=1e-12)


def test_harmonics_are_orthonormal_and_match_sphericart():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(200000, 3))
    y = real_spherical_harmonics(points, 3)
    np.testing.assert_allclose(4 * np.pi * (y.T @ y) / len(points), np.eye(7), atol=0.02)
    sphericart = pytest.importorskip("sphericart")
    ref = sphericart.SphericalHarmonics(3).compute(points[:50] / np.linalg.norm(points[:50], axis=1)[:, None])
    np.testing.assert_allclose(y[:50], ref[:, 9:16], atol=1e-12)


def test_not_a_rotation():
    with pytest.raises(ValueError, match="orthogonal"):
        real_wigner_d(np.diag([1.0, 2.0, 1.0]), 2)
