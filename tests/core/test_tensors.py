"""Cartesian <-> spherical conventions, Wigner matrices, and agreement with featomic's harmonics."""

import numpy as np
import pytest
from ase import Atoms

from mdplugin.core import tensors as T


@pytest.mark.parametrize("reflection", [False, True])
def test_random_rotation_is_orthogonal(reflection):
    r = T.random_rotation(1, reflection=reflection)
    assert np.allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(r), -1.0 if reflection else 1.0)


def test_round_trips():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(7, 3))
    assert np.allclose(T.spherical_to_vector(T.vector_to_spherical(v)), v)
    a = rng.normal(size=(7, 3, 3))
    a = a + a.transpose(0, 2, 1)
    l0, l2 = T.symmetric_to_spherical(a)
    assert l0.shape == (7, 1) and l2.shape == (7, 5)
    assert np.allclose(T.spherical_to_symmetric(l0, l2), a, atol=1e-12)
    # orthonormal: Frobenius norm preserved; λ=0 is the trace part
    assert np.allclose((a**2).sum(axis=(1, 2)), (l0**2).sum(1) + (l2**2).sum(1))
    assert np.allclose(l0[:, 0], np.trace(a, axis1=1, axis2=2) / np.sqrt(3))


@pytest.mark.parametrize("reflection", [False, True])
def test_wigner_matrices_transform_components(reflection):
    rng = np.random.default_rng(3)
    r = T.random_rotation(rng, reflection=reflection)
    v = rng.normal(size=3)
    assert np.allclose(T.vector_to_spherical(r @ v), T.wigner_d_real(r, 1) @ T.vector_to_spherical(v))
    a = rng.normal(size=(3, 3))
    a = a + a.T
    l0, l2 = T.symmetric_to_spherical(a)
    m0, m2 = T.symmetric_to_spherical(T.rotate_tensors(a, r))
    assert np.allclose(m0, l0)
    assert np.allclose(m2, T.wigner_d_real(r, 2) @ l2)
    for lam in (0, 1, 2):
        d = T.wigner_d_real(r, lam)
        assert np.allclose(d @ d.T, np.eye(2 * lam + 1), atol=1e-12)


@pytest.mark.parametrize("reflection", [False, True])
def test_convention_matches_featomic_spherical_expansion(reflection):
    """featomic's l = 1, 2 density coefficients must transform with our Wigner matrices."""
    from featomic import SphericalExpansion

    hypers = {
        "cutoff": {"radius": 4.0, "smoothing": {"type": "ShiftedCosine", "width": 0.5}},
        "density": {"type": "Gaussian", "width": 0.3},
        "basis": {"type": "TensorProduct", "max_angular": 2, "radial": {"type": "Gto", "max_radial": 3}},
    }
    calc = SphericalExpansion(**hypers)
    rng = np.random.default_rng(7)
    atoms = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0.1, 0.05], [-0.3, 0.9, -0.1]])
    r = T.random_rotation(rng, reflection=reflection)
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ r.T
    ref, rot = calc.compute(atoms), calc.compute(rotated)
    for key, block in ref.items():
        lam = int(key["o3_lambda"])
        if lam == 0:
            continue
        d = T.wigner_d_real(r, lam)
        got = rot.block(key).values  # (samples, 2l+1, n)
        assert np.allclose(got, np.einsum("mk,skn->smn", d, block.values), atol=1e-10)
