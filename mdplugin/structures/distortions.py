"""Randomly distorted, randomly oriented copies of a structure: quick test and benchmark sets.

``random_distortions(molecule("H2O"), 30, scale=0.06, seed=1)`` gives 30 waters whose atoms are
displaced by Gaussian noise of 0.06 Å per Cartesian component and which are then turned by a random
rotation each — the sets the Hamiltonian example, its benchmark and the tests label with PySCF.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from ..core.tensors import random_rotation


def random_distortions(atoms: Atoms, n: int, *, scale: float = 0.08, seed: int | None = 0,
                       rotate: bool = True) -> list[Atoms]:
    """``n`` copies of ``atoms`` with Gaussian displacements and (by default) random rotations.

    Parameters
    ----------
    atoms : the structure to copy (its positions in Å; cell and pbc are kept, a periodic cell is
        not rotated: ``rotate`` must be False for it).
    n : the number of copies.
    scale : the standard deviation of each Cartesian displacement, Å.
    seed : seed of the random generator (one generator for all copies, displacement then rotation).
    rotate : turn each copy by a random proper rotation about the origin after displacing it.

    Returns
    -------
    A list of ``n`` new :class:`ase.Atoms` without calculators.
    """
    if n < 0:
        raise ValueError(f"random_distortions: n must be >= 0, got {n}")
    if scale < 0:
        raise ValueError(f"random_distortions: scale must be >= 0 Å, got {scale}")
    if rotate and atoms.pbc.any():
        raise ValueError("random_distortions: a periodic structure cannot be rotated without its cell; "
                         "pass rotate=False")
    rng = np.random.default_rng(seed)
    copies = []
    for _ in range(n):
        copy = atoms.copy()
        copy.calc = None
        copy.positions += rng.normal(scale=scale, size=copy.positions.shape)
        if rotate:
            copy.positions = copy.positions @ random_rotation(rng).T
        copies.append(copy)
    return copies
