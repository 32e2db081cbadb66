"""Shell blocks of AO matrices and their equivariant (λ, σ) parts.

An AO matrix of a molecule (Fock, effective Hamiltonian) is made of blocks ``B`` between a shell
``a`` (order la) of atom i and a shell ``b`` (order lb) of atom j. In real-harmonic order
(:func:`mdplugin.structures.aobasis.pyscf_to_real`) a block transforms under a rotation or
reflection as ``B -> D^la B D^lbᵀ``; its Clebsch–Gordan parts ``c^λ = C^{la lb λ} vec(B)``
(λ = |la-lb| … la+lb, :func:`mdplugin.features.ncentre.coupling_matrix`) transform as features of
order (λ, σ = (-1)^{la+lb+λ}) and give the block back exactly (the coupling is orthogonal).

Block types (one regression each, :class:`BlockType`):

* ``onsite``: atom i with itself, shells a ≤ b (for a = b only even λ: the block is symmetric);
* ``pair``: atoms of different species, first species first (the canonical pair orientation of
  :class:`~mdplugin.features.ncentre.NCentreFeatures`), every shell a of the first, b of the second;
* ``pair+`` / ``pair-``: atoms of one species, ``T± = B_ij^{ab} ± B_ji^{ab}`` for shells a ≤ b,
  symmetric / antisymmetric under exchanging the atoms (for a = b, T+ has only even λ, T- only odd).

Matrices of a batch are handled flattened (row-major) one after the other, so every gather and
scatter is one fancy-indexing operation over all atoms or pairs of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..features.ncentre import coupling_matrix
from ..structures.aobasis import AOBasis, pyscf_to_real


@dataclass(frozen=True, order=True)
class BlockType:
    """One kind of block: ``kind`` in onsite/pair/pair+/pair-, atomic numbers ``z`` (first, second;
    equal for onsite), shell indices ``shells`` (within each atom), their orders ``l``, the coupled
    order ``lam`` and parity ``sigma``."""

    kind: str
    z: tuple[int, int]
    shells: tuple[int, int]
    l: tuple[int, int]
    lam: int
    sigma: int

    @property
    def feature_key(self) -> tuple:
        """Blocks with equal keys are predicted from the same features: (kind, z, λ, σ)."""
        return (self.kind, self.z, self.lam, self.sigma)

    def name(self) -> str:
        return f"{self.kind}:{self.z[0]}-{self.z[1]}:{self.shells[0]}-{self.shells[1]}:{self.lam}{'+' if self.sigma > 0 else '-'}"


def block_types(basis: AOBasis, species: Sequence[int]) -> list[BlockType]:
    """Every block type of molecules made of ``species`` in ``basis``, sorted."""
    species = sorted(int(z) for z in species)
    out = []

    def add(kind, z1, z2, a, b, la, lb, parity=None):
        for lam in range(abs(la - lb), la + lb + 1):
            if parity is not None and lam % 2 != parity:
                continue
            out.append(BlockType(kind, (z1, z2), (a, b), (la, lb), lam, (-1) ** (la + lb + lam)))

    for z in species:
        shells = basis.shells(z)
        for a, la in enumerate(shells):
            for b in range(a, len(shells)):
                add("onsite", z, z, a, b, la, shells[b], 0 if a == b else None)
                add("pair+", z, z, a, b, la, shells[b], 0 if a == b else None)
                add("pair-", z, z, a, b, la, shells[b], 1 if a == b else None)
    for k, z1 in enumerate(species):
        for z2 in species[k + 1:]:
            for a, la in enumerate(basis.shells(z1)):
                for b, lb in enumerate(basis.shells(z2)):
                    add("pair", z1, z2, a, b, la, lb)
    return sorted(out)


class BatchLayout:
    """Where every shell block of a batch of molecules sits in the batch's flattened AO matrices.

    ``numbers``: atomic numbers per frame. Attributes: ``n_ao`` (n_frames,), ``offset``
    (n_frames+1,) start of each frame's flattened matrix, ``atom_frame`` (n_atoms,),
    ``atom_ao`` (n_atoms,) first AO of each atom within its frame.
    """

    def __init__(self, basis: AOBasis, numbers: Sequence[np.ndarray]) -> None:
        self.basis = basis
        self.numbers = [np.asarray(z, dtype=int) for z in numbers]
        n_ao_atom = [np.array([sum(2 * l + 1 for l in basis.shells(z)) for z in zs], dtype=int) for zs in self.numbers]
        self.n_ao = np.array([int(n.sum()) for n in n_ao_atom], dtype=int)
        self.offset = np.r_[0, np.cumsum(self.n_ao**2)].astype(int)
        self.atom_frame = np.repeat(np.arange(len(self.numbers)), [len(z) for z in self.numbers])
        self.atom_ao = np.concatenate([np.r_[0, np.cumsum(n)[:-1]] for n in n_ao_atom]).astype(int) if n_ao_atom else np.zeros(0, int)
        self._shell_start: dict[int, np.ndarray] = {}

    def shell_start(self, z: int) -> np.ndarray:
        """First AO of each shell of element ``z`` within its atom."""
        if z not in self._shell_start:
            ls = self.basis.shells(z)
            self._shell_start[z] = np.r_[0, np.cumsum([2 * l + 1 for l in ls])[:-1]].astype(int)
        return self._shell_start[z]

    def indices(self, first: np.ndarray, second: np.ndarray, btype: BlockType, swap: bool = False) -> np.ndarray:
        """Flat indices (n, 2la+1, 2lb+1) of the blocks (shell a of ``first``, shell b of
        ``second``), global atom indices of the batch; ``swap``: the (second, first) blocks
        (b of ``second`` rows, a of ``first`` columns), shape (n, 2lb+1, 2la+1)."""
        (za, zb), (a, b), (la, lb) = btype.z, btype.shells, btype.l
        rows = self.atom_ao[first] + self.shell_start(za)[a]
        cols = self.atom_ao[second] + self.shell_start(zb)[b]
        frame = self.atom_frame[first]
        n = self.n_ao[frame]
        ra, cb = np.arange(2 * la + 1), np.arange(2 * lb + 1)
        if swap:
            return (self.offset[frame][:, None, None] + (cols[:, None, None] + cb[None, :, None]) * n[:, None, None]
                    + rows[:, None, None] + ra[None, None, :])
        return (self.offset[frame][:, None, None] + (rows[:, None, None] + ra[None, :, None]) * n[:, None, None]
                + cols[:, None, None] + cb[None, None, :])

    def flatten(self, matrices: Sequence[np.ndarray]) -> np.ndarray:
        """One flat vector of the batch's matrices (each (n_ao, n_ao), checked)."""
        for i, (m, n) in enumerate(zip(matrices, self.n_ao)):
            if np.shape(m) != (n, n):
                raise ValueError(f"frame {i}: matrix of shape {np.shape(m)}, the basis gives ({n}, {n})")
        return np.concatenate([np.ravel(m) for m in matrices]) if len(matrices) else np.zeros(0)

    def unflatten(self, flat: np.ndarray) -> list[np.ndarray]:
        """The batch's matrices from a flat vector (…, total) -> list of (…, n_ao, n_ao)."""
        return [flat[..., a:b].reshape(*flat.shape[:-1], n, n)
                for a, b, n in zip(self.offset[:-1], self.offset[1:], self.n_ao)]


def to_coupled(blocks: np.ndarray, btype: BlockType) -> np.ndarray:
    """PySCF-order blocks (n, 2la+1, 2lb+1) -> their order-λ part (n, 2λ+1)."""
    la, lb = btype.l
    real = np.einsum("ma,nmk,kb->nab", pyscf_to_real(la), blocks, pyscf_to_real(lb), optimize=True)
    return real.reshape(len(real), -1) @ coupling_matrix(la, lb, btype.lam).T


def from_coupled(coupled: np.ndarray, btype: BlockType) -> np.ndarray:
    """Order-λ parts (…, n, 2λ+1) -> their contribution to the PySCF-order blocks (…, n, 2la+1, 2lb+1);
    summed over λ they give the blocks back."""
    la, lb = btype.l
    real = (coupled @ coupling_matrix(la, lb, btype.lam)).reshape(*coupled.shape[:-1], 2 * la + 1, 2 * lb + 1)
    return pyscf_to_real(la) @ real @ pyscf_to_real(lb).T
