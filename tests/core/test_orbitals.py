"""Orbital energies, dipole and sum-over-states polarizability of a one-electron Hamiltonian."""

import numpy as np

from mdplugin.core.orbitals import COULOMB_CONSTANT, density_matrix, dipole, homo_lumo_gap, orbitals, polarizability


def _system(n=8, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    s = a @ a.T / n + np.eye(n)  # symmetric positive definite overlap
    h = rng.normal(size=(n, n)) * 3.0
    h = h + h.T
    r = rng.normal(size=(3, n, n))
    r = r + np.swapaxes(r, 1, 2)
    numbers = np.array([8, 1, 1])
    positions = rng.normal(size=(3, 3))
    return h, s, r, numbers, positions


def test_generalised_eigenproblem_and_batches():
    h, s, *_ = _system()
    eps, c = orbitals(h, s)
    np.testing.assert_allclose(h @ c, s @ c * eps, atol=1e-10)
    np.testing.assert_allclose(c.T @ s @ c, np.eye(len(h)), atol=1e-10)
    eps2, _ = orbitals(np.stack([h, 2 * h]), np.stack([s, s]))
    np.testing.assert_allclose(eps2, [eps, 2 * eps], atol=1e-10)
    assert np.isclose(homo_lumo_gap(eps, 3), eps[3] - eps[2])
    p = density_matrix(c, 3)
    assert np.isclose(np.trace(p @ s), 6.0)  # 3 doubly occupied orbitals


def test_polarizability_is_the_field_derivative_of_the_dipole():
    h, s, r, numbers, positions = _system(seed=1)
    n_occ = 3
    eps, c = orbitals(h, s)
    alpha = polarizability(eps, c, n_occ, r)
    step = 1e-5
    numeric = np.empty((3, 3))
    for j in range(3):
        mu = [dipole(orbitals(h + sign * step * r[j], s)[1], n_occ, r, numbers, positions) for sign in (1, -1)]
        numeric[:, j] = COULOMB_CONSTANT * (mu[0] - mu[1]) / (2 * step)
    np.testing.assert_allclose(alpha, numeric, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(alpha, alpha.T, atol=1e-12)


def test_dipole_moves_with_the_origin_only_through_the_charge():
    h, s, r, numbers, positions = _system(seed=2)
    eps, c = orbitals(h, s)
    shift = np.array([0.3, -1.0, 2.0])
    mu0 = dipole(c, 3, r, numbers, positions)
    mu1 = dipole(c, 3, r + shift[:, None, None] * s[None], numbers, positions + shift)
    charge = numbers.sum() - 6.0
    np.testing.assert_allclose(mu1 - mu0, charge * shift, atol=1e-10)
