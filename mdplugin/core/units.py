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


#: the name of each property's unit in the two unit systems of data files and reports
UNIT_NAMES: dict[str, dict[str, str]] = {
    "ase": {"energy": "eV", "forces": "eV/Å", "dipole": "e·Å", "polarizability": "Å³"},
    "atomic": {"energy": "Hartree", "forces": "Hartree/bohr", "dipole": "e·bohr", "polarizability": "bohr³"},
}

#: factors from ASE units to atomic units, per quantity: eV -> Hartree, eV/Å -> Hartree/bohr,
#: e·Å -> e·bohr, Å³ -> bohr³ (multiply an ASE-unit value by the factor; divide to go back)
AU_PER_ASE: dict[str, float] = {
    "energy": 1.0 / HARTREE,
    "forces": BOHR / HARTREE,
    "length": 1.0 / BOHR,
    "dipole": 1.0 / BOHR,
    "polarizability": 1.0 / BOHR**3,
}


def energy_to_au(e):
    """eV -> Hartree."""
    return np.asarray(e) * AU_PER_ASE["energy"]


def energy_from_au(e):
    """Hartree -> eV."""
    return np.asarray(e) / AU_PER_ASE["energy"]


def forces_to_au(f):
    """eV/Å -> Hartree/bohr."""
    return np.asarray(f) * AU_PER_ASE["forces"]


def forces_from_au(f):
    """Hartree/bohr -> eV/Å."""
    return np.asarray(f) / AU_PER_ASE["forces"]


def length_to_au(x):
    """Å -> bohr."""
    return np.asarray(x) * AU_PER_ASE["length"]


def length_from_au(x):
    """bohr -> Å."""
    return np.asarray(x) / AU_PER_ASE["length"]


def dipole_to_au(mu):
    """e·Å -> e·bohr."""
    return np.asarray(mu) * AU_PER_ASE["dipole"]


def dipole_from_au(mu):
    """e·bohr -> e·Å."""
    return np.asarray(mu) / AU_PER_ASE["dipole"]


def polarizability_to_au(alpha):
    """Å³ (polarizability volume) -> bohr³ (atomic units)."""
    return np.asarray(alpha) * AU_PER_ASE["polarizability"]


def polarizability_from_au(alpha):
    """bohr³ (atomic units) -> Å³ (polarizability volume)."""
    return np.asarray(alpha) / AU_PER_ASE["polarizability"]


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
