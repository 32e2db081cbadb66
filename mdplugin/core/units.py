"""Units in one place.

Inside mdplugin and in ASE: eV, Å, e·Å (dipole), Å³ (polarizability volume), fs.
i-PI and the TENSOAP data use atomic units: Hartree, bohr, e·bohr, bohr³.
"""

from __future__ import annotations

import numpy as np
from ase import units as _ase_units

#: one bohr in Å
BOHR: float = float(_ase_units.Bohr)
#: one Hartree in eV
HARTREE: float = float(_ase_units.Hartree)
#: one femtosecond in ASE time units
FS: float = float(_ase_units.fs)
#: Boltzmann constant in eV/K
KB: float = float(_ase_units.kB)
#: one e·Å in Debye
DEBYE_PER_EA: float = 1.0 / float(_ase_units.Debye)


def energy_to_au(e):
    """eV -> Hartree."""
    return np.asarray(e) / HARTREE


def energy_from_au(e):
    """Hartree -> eV."""
    return np.asarray(e) * HARTREE


def forces_to_au(f):
    """eV/Å -> Hartree/bohr."""
    return np.asarray(f) * (BOHR / HARTREE)


def forces_from_au(f):
    """Hartree/bohr -> eV/Å."""
    return np.asarray(f) * (HARTREE / BOHR)


def length_to_au(x):
    """Å -> bohr."""
    return np.asarray(x) / BOHR


def length_from_au(x):
    """bohr -> Å."""
    return np.asarray(x) * BOHR


def dipole_to_au(mu):
    """e·Å -> e·bohr."""
    return np.asarray(mu) / BOHR


def dipole_from_au(mu):
    """e·bohr -> e·Å."""
    return np.asarray(mu) * BOHR


def polarizability_to_au(alpha):
    """Å³ (polarizability volume) -> bohr³ (atomic units)."""
    return np.asarray(alpha) / BOHR**3


def polarizability_from_au(alpha):
    """bohr³ (atomic units) -> Å³ (polarizability volume)."""
    return np.asarray(alpha) * BOHR**3


#: converters from a file's unit system into ASE units, per property
FROM_UNITS = {
    "ase": {
        "energy": lambda x: np.asarray(x, dtype=float),
        "forces": lambda x: np.asarray(x, dtype=float),
        "dipole": lambda x: np.asarray(x, dtype=float),
        "polarizability": lambda x: np.asarray(x, dtype=float),
    },
    "atomic": {
        "energy": energy_from_au,
        "forces": forces_from_au,
        "dipole": dipole_from_au,
        "polarizability": polarizability_from_au,
    },
}
