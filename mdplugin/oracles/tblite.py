"""GFN2-xTB (and GFN1-xTB) through tblite's library interface, as an ASE calculator for molecules and cells.

``tblite.ase.TBLite`` gives energy, forces, stress and tblite's dipole. For a periodic cell that
dipole is ``Σ q_i r_i + Σ p_i`` with the atoms wrapped into the cell (tblite wraps them), so it
jumps by ``q_i × (cell vector)`` whenever an atom crosses the wall and changes when the origin
moves. This calculator uses :class:`tblite.interface.Calculator` directly and also returns the
atomic charges and the atomic dipoles ``p_i`` (from the result container tblite saves as an
``.npz``, its ``dpat`` array), so that the dipole of a cell follows the package's continuous
convention (:func:`mdplugin.structures.molecules.molecular_dipole`, docs/condensed.md).

Results (ASE units): ``energy``, ``free_energy`` (eV), ``forces`` (n, 3) eV/Å, ``stress`` (6,)
eV/Å³ (3-D cells), ``charges`` (n,) e (Mulliken), ``atomic_dipoles`` (n, 3) e·Å and ``dipole``
(3,) e·Å: tblite's own for a molecule (no periodic direction), the sum of the whole molecules'
dipoles about their own centres of mass for a cell (computed only when asked for, so that energy
and forces of a cell without molecules, a crystal or a metal, need no molecules).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import CalculationFailed, Calculator, all_changes

from ..structures.charge import frame_charge
from ..core.errors import ConfigError
from ..core.units import BOHR, HARTREE, KB
from ..structures.molecules import molecular_dipole

__all__ = ["TBLite"]


class TBLite(Calculator):
    """ASE calculator for GFN-xTB with tblite, with atomic dipoles and a continuous cell dipole.

    Parameters
    ----------
    method : ``"GFN2-xTB"`` (default), ``"GFN1-xTB"`` or ``"IPEA1-xTB"``.
    accuracy : tblite's numerical accuracy (smaller is tighter; 1.0 is tblite's default).
    electronic_temperature : K.
    max_iterations : SCF iterations.
    charge : total charge in e (``None``: the sum of the atoms' initial charges).
    electric_field : uniform field (3,) in V/Å or ``None``.
    verbosity : tblite's printout level (0 is silent).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "charges", "atomic_dipoles", "dipole"]

    default_parameters = {
        "method": "GFN2-xTB",
        "accuracy": 1.0,
        "electronic_temperature": 300.0,
        "max_iterations": 250,
        "charge": None,
        "electric_field": None,
        "verbosity": 0,
    }

    def __init__(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(self.default_parameters) - {"atoms", "label", "directory"})
        if unknown:
            raise ConfigError(f"unknown tblite option(s): {', '.join(unknown)} "
                              f"(known: {', '.join(self.default_parameters)})")
        super().__init__(**kwargs)
        self._engine = None  # tblite.interface.Calculator of the current atoms
        self._restart = None  # last tblite Result, the SCF guess of the next calculation

    def set(self, **kwargs: Any) -> dict:
        changed = super().set(**kwargs)
        if changed:
            self._engine = None
            self._restart = None
        return changed

    # -------------------------------------------------------------------------------------------
    def _build(self, atoms: Atoms):
        from tblite.interface import Calculator as Engine

        p = self.parameters
        periodic = np.asarray(atoms.pbc, dtype=bool)
        kwargs: dict[str, Any] = {}
        if periodic.any():
            kwargs = {"lattice": atoms.cell.array / BOHR, "periodic": periodic}
        if p.charge is not None:
            charge = float(p.charge)
        elif "charge" in atoms.info:  # the frame's total charge (extended XYZ 'charge' key)
            charge = float(frame_charge(atoms, "structure"))
        else:
            charge = float(atoms.get_initial_charges().sum())
        try:
            engine = Engine(p.method, atoms.numbers, atoms.positions / BOHR, charge=charge, **kwargs)
            engine.set("verbosity", int(p.verbosity))
            engine.set("accuracy", float(p.accuracy))
            engine.set("temperature", float(p.electronic_temperature) * KB / HARTREE)
            engine.set("max-iter", int(p.max_iterations))
            if p.electric_field is not None and np.any(p.electric_field):
                field = np.asarray(p.electric_field, dtype=float).reshape(3) * BOHR / HARTREE
                engine.add("electric-field", [float(x) for x in field])
        except Exception as exc:  # tblite raises its own error types on bad input
            raise CalculationFailed(f"tblite could not set up the structure {atoms.get_chemical_formula()} with charge "
                                    f"{charge:g}: {' '.join(str(exc).split())}") from exc
        return engine

    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] | None = None,
                  system_changes: Sequence[str] = all_changes) -> None:
        properties = list(properties or ["energy"])
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        only_moved = set(system_changes) <= {"positions", "cell"}
        if self._engine is None or not only_moved:
            self._engine = self._build(atoms)
            self._restart = None
        elif system_changes:
            kwargs = {"lattice": atoms.cell.array / BOHR} if atoms.pbc.any() else {}
            self._engine.update(positions=atoms.positions / BOHR, **kwargs)
        try:
            result = self._engine.singlepoint(self._restart)
        except Exception as exc:  # SCF failures come as tblite's RuntimeError subclasses
            self._restart = None
            raise CalculationFailed(" ".join(str(exc).split()) or type(exc).__name__) from exc
        self._restart = result
        self._store(atoms, result, properties)

    def _store(self, atoms: Atoms, result, properties: list[str]) -> None:
        r = self.results
        r["energy"] = float(result.get("energy")) * HARTREE
        r["free_energy"] = r["energy"]
        r["forces"] = -np.asarray(result.get("gradient")) * (HARTREE / BOHR)
        r["charges"] = np.asarray(result.get("charges"), dtype=float)
        if atoms.pbc.all():
            virial = np.asarray(result.get("virial")) * HARTREE / atoms.get_volume()
            r["stress"] = virial.flat[[0, 4, 8, 5, 2, 1]]
        periodic = bool(atoms.pbc.any())
        if not periodic:
            # tblite's dipole is about the coordinate origin; mdplugin's about the centre of mass
            # (μ_com = μ_0 − Q R_com: a charged molecule's dipole depends on the origin)
            total = float(np.round(np.sum(r["charges"])))
            r["dipole"] = np.asarray(result.get("dipole"), dtype=float) * BOHR - total * atoms.get_center_of_mass()
        if "atomic_dipoles" in properties or (periodic and "dipole" in properties):
            r["atomic_dipoles"] = _atomic_dipoles(result) * BOHR
        if periodic and "dipole" in properties:  # only when asked: a crystal has no molecules
            r["dipole"] = molecular_dipole(atoms, r["charges"], r["atomic_dipoles"])


def _atomic_dipoles(result) -> np.ndarray:
    """Atomic dipole moments (n, 3) in e·bohr of a tblite result.

    tblite's Python interface has no getter for them; its documented ``Result.save`` writes the
    wavefunction as an ``.npz`` whose ``tblite0_dpat`` array (3, n, n_spin) holds them."""
    with tempfile.TemporaryDirectory(prefix="mdplugin-tblite-") as folder:
        path = os.path.join(folder, "result.npz")
        result.save(path)
        with np.load(path, allow_pickle=False) as saved:
            dpat = np.asarray(saved["tblite0_dpat"], dtype=float)
    # spin channels are (total, magnetisation): the first is the atomic dipole
    return (dpat[:, :, 0] if dpat.ndim == 3 else dpat).T
