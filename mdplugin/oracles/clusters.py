"""The polarizability of a periodic cell from clusters cut out of it.

A uniform electric field is not a periodic perturbation: ``−F·r`` differs by ``F·a`` between an
atom and its image one cell vector ``a`` away, so a finite-field calculation on a cell drives
charge across the wall, and its dipole response (GFN2-xTB: about 47 bohr³ per water molecule,
anisotropic for an isotropic liquid) is not a polarizability (measured in docs/condensed.md,
``benchmarks/condensed_reference.py``).

Here each molecule ``m`` of the cell gets a cluster: the whole molecules whose centres of mass are
within ``radius`` of its own (images included, so a small cell gives a cluster larger than
itself), in vacuum. The field is applied to the cluster, and the response of molecule ``m``'s own
dipole about its centre of mass (atomic charges and atomic dipoles of its atoms) is its
polarizability in the liquid, with the fields induced in its neighbours included:
``α_m = ∂μ_m/∂F``. The cell's polarizability is ``Σ_m α_m``, the polarizability of the
same dipole convention as :func:`mdplugin.structures.molecules.molecular_dipole`. For liquid
water the mean converges to 1 % at 4 Å (the default), single components to 0.017 Å³ of 0.30 Å³
per molecule (0.010 Å³ at 5 Å, for three times the cost; docs/condensed.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from ase import Atoms
from ase.data import atomic_masses

from ..core.errors import ConfigError
from ..core.units import BOHR, HARTREE
from ..structures.molecules import Molecules, find_molecules
from ..structures.neighbours import neighbour_pairs

__all__ = ["DEFAULT_CLUSTER_RADIUS", "Cluster", "molecule_centres", "molecular_clusters", "centre_dipole",
           "cluster_polarizability"]

#: molecules whose centres are within this distance (Å) of a molecule's centre form its cluster
DEFAULT_CLUSTER_RADIUS: float = 4.0


@dataclass(frozen=True)
class Cluster:
    """One molecule of a cell with its neighbours, in vacuum.

    Attributes
    ----------
    atoms : the cluster (no cell); the centre molecule's atoms come first.
    n_centre : number of atoms of the centre molecule.
    molecule : index of the centre molecule in the cell.
    """

    atoms: Atoms
    n_centre: int
    molecule: int


def molecule_centres(atoms: Atoms, molecules: Molecules) -> np.ndarray:
    """Centres of mass (n_molecules, 3) in Å of the whole (unwrapped) molecules."""
    masses = atomic_masses[atoms.numbers]
    total = np.bincount(molecules.index, weights=masses, minlength=molecules.n_molecules)
    return np.stack([np.bincount(molecules.index, weights=masses * molecules.unwrapped[:, k],
                                 minlength=molecules.n_molecules) for k in range(3)], axis=1) / total[:, None]


def molecular_clusters(atoms: Atoms, radius: float = DEFAULT_CLUSTER_RADIUS,
                       molecules: Molecules | None = None) -> list[Cluster]:
    """One :class:`Cluster` per molecule of ``atoms``: the whole molecules (periodic images
    included) whose centres of mass are closer than ``radius`` Å to the molecule's own."""
    if not radius > 0:
        raise ConfigError(f"the cluster radius must be positive, got {radius!r} Å")
    mol = molecules if molecules is not None else find_molecules(atoms)
    centres = molecule_centres(atoms, mol)
    points = Atoms(numbers=np.ones(len(centres), dtype=int), positions=centres, cell=atoms.cell, pbc=atoms.pbc)
    pairs = neighbour_pairs(points, float(radius), full_list=True)
    cell = atoms.cell.array
    members_of = np.argsort(mol.index, kind="stable")
    starts = np.concatenate([[0], np.cumsum(mol.sizes())])
    by_centre = np.argsort(pairs.i, kind="stable")
    bounds = np.searchsorted(pairs.i[by_centre], np.arange(len(centres) + 1))
    clusters = []
    for m in range(len(centres)):
        sel = by_centre[bounds[m]:bounds[m + 1]]
        molecules_in = np.concatenate([[m], pairs.j[sel]])
        offsets = np.concatenate([np.zeros((1, 3)), pairs.shifts[sel] @ cell])
        atom_lists = [members_of[starts[k]:starts[k + 1]] for k in molecules_in]
        index = np.concatenate(atom_lists)
        shift = np.repeat(offsets, [len(a) for a in atom_lists], axis=0)
        cluster = Atoms(numbers=atoms.numbers[index], positions=mol.unwrapped[index] + shift)
        clusters.append(Cluster(atoms=cluster, n_centre=len(atom_lists[0]), molecule=m))
    return clusters


def centre_dipole(cluster: Cluster, charges: np.ndarray, atomic_dipoles: np.ndarray) -> np.ndarray:
    """Dipole (3,) in e·Å of the cluster's centre molecule about its centre of mass."""
    k = cluster.n_centre
    pos = cluster.atoms.positions[:k]
    masses = atomic_masses[cluster.atoms.numbers[:k]]
    centre = masses @ pos / masses.sum()
    return np.asarray(charges[:k], float) @ (pos - centre) + np.asarray(atomic_dipoles[:k], float).sum(axis=0)


def cluster_polarizability(atoms: Atoms, charges_and_dipoles: Callable[[Atoms, np.ndarray], tuple[np.ndarray, np.ndarray]],
                           field: float, radius: float = DEFAULT_CLUSTER_RADIUS,
                           coulomb_constant: float = HARTREE * BOHR) -> tuple[np.ndarray, float]:
    """Polarizability (3, 3) in Å³ of a periodic cell as ``Σ_m ∂μ_m/∂F`` over its molecules'
    clusters, and ``max |α − αᵀ|`` (Å³) before symmetrising.

    ``charges_and_dipoles(cluster, F)`` returns the atomic charges (n,) in e and atomic dipoles
    (n, 3) in e·Å of a cluster in the uniform field ``F`` (3,) V/Å; ``field`` is the central
    finite-difference step (V/Å); ``coulomb_constant`` (eV·Å/e²) turns e·Å²/V into Å³."""
    dmu_df = np.zeros((3, 3))
    for cluster in molecular_clusters(atoms, radius):
        for j in range(3):
            f = np.zeros(3)
            f[j] = field
            plus = centre_dipole(cluster, *charges_and_dipoles(cluster.atoms, f))
            minus = centre_dipole(cluster, *charges_and_dipoles(cluster.atoms, -f))
            dmu_df[:, j] += (plus - minus) / (2.0 * field)
    alpha = coulomb_constant * dmu_df
    return 0.5 * (alpha + alpha.T), float(np.abs(alpha - alpha.T).max())
