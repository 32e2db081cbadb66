"""Light ASE calculators that i-PI's driver imports by name (the PES option ``calculator=``) in the
i-PI tests: numpy and ASE only, so the driver process starts quickly."""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from ..conftest import dichloroethane

#: charges (e) of C, C, Cl, Cl, H, H, H, H for the dipole
CHARGES = np.array([-0.1, -0.1, -0.2, -0.2, 0.15, 0.15, 0.15, 0.15])


class SpringsWithDipole(Calculator):
    """Harmonic springs (k eV/Å²) to reference positions, and a point-charge dipole (e·Å)."""

    implemented_properties = ["energy", "forces", "dipole"]

    def __init__(self, reference: np.ndarray, k: float = 20.0, **kwargs):
        super().__init__(**kwargs)
        self.reference, self.k = np.array(reference, dtype=float), float(k)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        d = self.atoms.positions - self.reference
        self.results = {"energy": 0.5 * self.k * float((d**2).sum()), "forces": -self.k * d,
                        "dipole": CHARGES[: len(d)] @ self.atoms.positions}


def springs_with_dipole() -> SpringsWithDipole:
    """Springs to ``dichloroethane(rng=5, noise=0.02)`` (the fault tests' template)."""
    return SpringsWithDipole(dichloroethane(rng=5, noise=0.02).positions)
