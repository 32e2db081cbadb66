"""What a closed-shell one-electron Hamiltonian in a non-orthogonal AO basis gives: orbital
energies, the density matrix, the dipole and the (uncoupled, sum-over-states) polarizability.

Units: H in eV, overlap S dimensionless, AO dipole integrals ``r`` ⟨μ|r|ν⟩ in Å about the origin,
positions in Å; dipoles in e·Å, polarizabilities in Å³. Arrays may carry leading batch axes
(frames of one size): H, S (…, n, n), r (…, 3, n, n).

* Orbitals: ``H C = S C diag(ε)`` (``Cᵀ S C = 1``), ε ascending.
* Density matrix of ``n_occ`` doubly occupied orbitals: ``P = 2 C_occ C_occᵀ``.
* Dipole: ``μ = Σ_A Z_A R_A − tr(P r)`` (electrons carry −e).
* Polarizability from the response of H to a uniform field F (V/Å), ``H(F) = H + F·r`` (the
  potential energy of an electron in the field), orbitals relaxing but the Hamiltonian itself not
  (no self-consistent response):
  ``α_xy = 4 k Σ_{i occ, a virt} ⟨i|x|a⟩⟨a|y|i⟩ / (ε_a − ε_i)`` with ``k = 1/(4πε₀)`` =
  14.3996 eV·Å/e², the same as ``k · dμ/dF`` of the finite-field dipole of ``H + F·r``.
"""

from __future__ import annotations

import numpy as np

from .units import BOHR, HARTREE

#: 1/(4πε₀) in eV·Å/e²: e²Å²/eV -> Å³
COULOMB_CONSTANT = HARTREE * BOHR


def orbitals(h: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orbital energies (…, n) and coefficients (…, n, n) (columns, ``Cᵀ S C = 1``) of ``H C = S C ε``.

    Batched over leading axes through the Cholesky factor of S (numpy's batched ``eigh``)."""
    chol = np.linalg.cholesky(s)
    inv = np.linalg.inv(chol)
    a = inv @ h @ np.swapaxes(inv, -1, -2)
    eps, y = np.linalg.eigh(0.5 * (a + np.swapaxes(a, -1, -2)))
    return eps, np.swapaxes(inv, -1, -2) @ y


def density_matrix(c: np.ndarray, n_occ: int) -> np.ndarray:
    """``P = 2 C_occ C_occᵀ`` (…, n, n) of ``n_occ`` doubly occupied orbitals."""
    occ = c[..., :n_occ]
    return 2.0 * occ @ np.swapaxes(occ, -1, -2)


def dipole(c: np.ndarray, n_occ: int, r: np.ndarray, numbers: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Dipole (…, 3) e·Å: nuclear ``Σ Z R`` minus the electrons' ``tr(P r)``."""
    p = density_matrix(c, n_occ)
    electronic = np.einsum("...ij,...xji->...x", p, r)
    nuclear = np.einsum("a,...ax->...x", np.asarray(numbers, dtype=float), positions)
    return nuclear - electronic


def polarizability(eps: np.ndarray, c: np.ndarray, n_occ: int, r: np.ndarray) -> np.ndarray:
    """Sum-over-states polarizability (…, 3, 3) Å³ of the orbitals (see the module docstring)."""
    occ, virt = c[..., :n_occ], c[..., n_occ:]
    # ⟨i|r_x|a⟩: (…, 3, n_occ, n_virt)
    ria = np.swapaxes(occ, -1, -2)[..., None, :, :] @ r @ virt[..., None, :, :]
    gap = eps[..., None, n_occ:] - eps[..., :n_occ, None]  # (…, n_occ, n_virt)
    return 4.0 * COULOMB_CONSTANT * np.einsum("...xia,...yia->...xy", ria, ria / gap[..., None, :, :])


def homo_lumo_gap(eps: np.ndarray, n_occ: int) -> np.ndarray:
    """``ε_LUMO − ε_HOMO`` (…,) in the units of ``eps``."""
    return eps[..., n_occ] - eps[..., n_occ - 1]
