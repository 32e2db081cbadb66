"""A small ASE calculator for molecules with PySCF (Kohn–Sham DFT or Hartree–Fock).

Optional: needs the ``[pyscf]`` extra. Used by :func:`mdplugin.oracles.label.make_oracle` ("pyscf") for
accurate dipoles and, with :class:`mdplugin.oracles.label.FiniteFieldPolarizability`, finite-field
polarizabilities.

A uniform electric field ``F`` (V/Å) enters the Hamiltonian as ``H(F) = H(0) − μ̂·F`` with
``μ̂ = Σ_A Z_A R_A − Σ_i r_i``: the one-electron Hamiltonian gains ``+F·r`` and the nuclear
repulsion ``−F·Σ Z_A R_A``. Hence ``μ = −dE/dF``. Forces are only available at zero field.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, CalculationFailed, all_changes

from ..structures.charge import frame_charge
from ..core.units import BOHR, HARTREE


class PySCF(Calculator):
    """ASE calculator: energy (eV), forces (eV/Å), dipole (e·Å) of an isolated molecule.

    Parameters
    ----------
    xc : exchange–correlation functional (``"hf"`` for Hartree–Fock), default ``"pbe0"``.
    basis : basis set name, default ``"aug-cc-pvdz"`` (diffuse functions matter for α).
    charge, spin : total charge and 2S (number of unpaired electrons).
    electric_field : uniform field (3,) in V/Å or ``None``.
    conv_tol : SCF energy convergence in Hartree (tight, since dipoles are differentiated).
    grid_level : DFT integration grid level (PySCF's ``grids.level``).
    """

    implemented_properties = ["energy", "free_energy", "forces", "dipole"]

    default_parameters = {
        "xc": "pbe0",
        "basis": "aug-cc-pvdz",
        "charge": 0,
        "spin": 0,
        "electric_field": None,
        "conv_tol": 1e-11,
        "grid_level": 3,
        "max_cycle": 100,
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def _molecule(self, atoms: Atoms):
        from pyscf import gto

        p = self.parameters
        return gto.M(
            atom=[(s, tuple(x)) for s, x in zip(atoms.get_chemical_symbols(), atoms.positions)],
            unit="Angstrom", basis=p.basis, spin=p.spin, verbose=0,
            # the frame's total charge ('charge' key) unless the calculator was given one
            charge=frame_charge(atoms, "structure") if "charge" in atoms.info and not p.charge else p.charge,
        )

    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] | None = None,
                  system_changes: Sequence[str] = all_changes) -> None:
        from pyscf import dft, scf

        properties = list(properties or ["energy"])
        super().calculate(atoms, properties, system_changes)
        if self.atoms.pbc.any():
            raise CalculationFailed("the PySCF calculator handles isolated molecules only")
        p = self.parameters
        mol = self._molecule(self.atoms)
        if str(p.xc).lower() == "hf":
            mf = scf.RHF(mol) if p.spin == 0 else scf.UHF(mol)
        else:
            mf = dft.RKS(mol) if p.spin == 0 else dft.UKS(mol)
            mf.xc = p.xc
            mf.grids.level = p.grid_level
        mf.conv_tol = p.conv_tol
        mf.max_cycle = p.max_cycle

        field = None if p.electric_field is None else np.asarray(p.electric_field, float) * BOHR / HARTREE
        e_nuc_field = 0.0
        if field is not None and np.any(field):
            with mol.with_common_orig((0.0, 0.0, 0.0)):
                r_ints = mol.intor_symmetric("int1e_r", comp=3)
            h1 = mf.get_hcore() + np.einsum("x,xij->ij", field, r_ints)
            mf.get_hcore = lambda *args, **kw: h1
            nuclear_dipole = mol.atom_charges() @ mol.atom_coords()  # e·bohr
            e_nuc_field = -float(field @ nuclear_dipole)
            if "forces" in properties:
                raise CalculationFailed("PySCF forces are only implemented at zero field")

        energy = mf.kernel()
        if not mf.converged:
            raise CalculationFailed(f"PySCF SCF did not converge in {p.max_cycle} cycles")
        self.results["energy"] = (float(energy) + e_nuc_field) * HARTREE
        self.results["free_energy"] = self.results["energy"]
        dm = mf.make_rdm1()
        with mol.with_common_orig((0.0, 0.0, 0.0)):
            mu = mf.dip_moment(mol, dm, unit="au", verbose=0)
        # about the centre of mass: a charged molecule's dipole depends on the origin (μ_0 = μ_com + Q R_com)
        self.results["dipole"] = np.asarray(mu, float) * BOHR - mol.charge * self.atoms.get_center_of_mass()
        if "forces" in properties:
            grad = mf.nuc_grad_method().kernel()
            self.results["forces"] = -np.asarray(grad) * HARTREE / BOHR
