"""The ASE calculator: ML (or reference) energies and forces plus ML dipoles and polarizabilities.

::

    from mdplugin.engines.ase import MLCalculator
    atoms.calc = MLCalculator(energy="energy.npz", dipole="dipole.npz", polarizability="alpha.npz")
    atoms.get_forces(); atoms.get_dipole_moment(); atoms.calc.get_property("polarizability")

Each slot takes a model file path, a loaded :class:`~mdplugin.models.base.Model`, or nothing;
``energy`` also takes any ASE calculator (e.g. ``tblite.ase.TBLite``) or the name ``"tblite"``
(GFN2-xTB), so MD can run on a reference or third-party potential and still record ML dipoles and
polarizabilities.

Results (ASE units): ``energy`` and ``free_energy`` (eV), ``forces`` (n_atoms, 3) eV/Å,
``dipole`` (3,) e·Å, ``polarizability`` (3, 3) Å³, and the model uncertainties ``energy_std``
(eV), ``dipole_std`` (3,) e·Å, ``polarizability_std`` (3, 3) Å³ (when the models provide them).
Asking for a property no slot provides raises ASE's ``PropertyNotImplementedError`` naming the
missing model.

Efficiency: ASE's ``check_state`` means nothing is recomputed while positions, numbers and cell are
unchanged; properties are computed when first asked for. Models that expose
``expansion_hypers()`` and ``predict_from_expansion(expansion, ...)`` and have equal hypers share
ONE spherical expansion per structure (computed with position gradients when the energy model is
among them) and its λ-SOAP features (the λ = 0 power spectrum serves the energy, dipole and
polarizability models alike), kept until the structure changes. Properties asked at an unchanged
structure are served without copying the atoms again, and when only the positions moved (an MD
step) the kept copy of the atoms is updated in place.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from ..core.errors import ConfigError, SimulationError
from ..models.base import TENSOR_PRECISIONS, Model, load_model

__all__ = ["MLCalculator", "REFERENCE_CALCULATORS", "make_reference_calculator"]

#: names accepted in the ``energy`` slot for built-in reference calculators
REFERENCE_CALCULATORS = ("tblite",)

_SHAPES = {"dipole": (3,), "polarizability": (3, 3)}


def make_reference_calculator(name: str) -> Calculator:
    """A built-in reference ASE calculator by name (``"tblite"``: GFN2-xTB, energy/forces/dipole)."""
    if name.lower() == "tblite":
        from tblite.ase import TBLite

        return TBLite(method="GFN2-xTB", verbosity=0)
    raise ConfigError(f"unknown reference calculator {name!r} (known: {', '.join(REFERENCE_CALCULATORS)})")


def _resolve(slot: str, value: Any) -> Model | Calculator | None:
    """Turn a slot value (path, model, calculator, name, None) into a model or a calculator."""
    if value is None:
        return None
    if isinstance(value, str) and value.lower() in REFERENCE_CALCULATORS:
        if slot != "energy":
            raise ConfigError(f"{slot}: {value!r} is a reference calculator; the {slot} slot takes a model")
        return make_reference_calculator(value)
    if isinstance(value, (str, os.PathLike)):
        return load_model(value, target=slot)
    if isinstance(value, Model):
        target = getattr(value, "target", None)
        if target != slot:
            raise ConfigError(f"the {slot} slot got a {target!r} model")
        return value
    if isinstance(value, Calculator) or hasattr(value, "get_potential_energy"):
        if slot != "energy":
            raise ConfigError(f"{slot}: only the energy slot takes an ASE calculator; give a {slot} model")
        return value
    raise ConfigError(f"{slot}: expected a model file, a model{' or an ASE calculator' if slot == 'energy' else ''}, "
                      f"got {type(value).__name__}")


def _shares_expansion(model: Any) -> bool:
    return hasattr(model, "expansion_hypers") and hasattr(model, "predict_from_expansion")


class MLCalculator(Calculator):
    """ASE calculator combining an energy model (or any ASE calculator) with dipole and
    polarizability models (see the module docstring).

    Parameters
    ----------
    energy : model file, loaded energy model, ASE calculator, ``"tblite"`` or ``None``.
    dipole : model file, loaded dipole model or ``None``.
    polarizability : model file, loaded polarizability model or ``None``.
    tensor_precision : ``"single"`` (default) or ``"double"``: precision of the products with the
        λ-SOAP dipole and polarizability models' large matrices when they share the step's
        expansion (:meth:`~mdplugin.models.lsoap.SAGPRModel.predict_from_expansion`). Single
        precision halves the bytes an MD step reads from memory (about 0.7 ms of a 5 ms step) and
        changes the dipole and polarizability by ~1e-6 relative, three orders of magnitude below
        the models' own errors. Energies, forces and every uncertainty are always double.
    """

    #: everything this class can provide; an instance lists only what its slots provide
    all_properties = ("energy", "free_energy", "forces", "energy_std", "dipole", "dipole_std",
                      "polarizability", "polarizability_std")
    implemented_properties = list(all_properties)

    def __init__(self, energy: Any = None, dipole: Any = None, polarizability: Any = None,
                 tensor_precision: str = "single", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if tensor_precision not in TENSOR_PRECISIONS:
            raise ConfigError(f"tensor_precision must be one of {', '.join(TENSOR_PRECISIONS)}, got {tensor_precision!r}")
        self.tensor_precision = tensor_precision
        self.slots: dict[str, Model | Calculator | None] = {
            "energy": _resolve("energy", energy),
            "dipole": _resolve("dipole", dipole),
            "polarizability": _resolve("polarizability", polarizability),
        }
        if all(v is None for v in self.slots.values()):
            raise ConfigError("MLCalculator needs at least one of energy=, dipole=, polarizability=")
        provided = []
        if self.slots["energy"] is not None:
            provided += ["energy", "free_energy", "forces"]
            if isinstance(self.slots["energy"], Model):
                provided.append("energy_std")
        for slot in ("dipole", "polarizability"):
            if self.slots[slot] is not None:
                provided += [slot, f"{slot}_std"]
        self.implemented_properties = provided
        # groups of models sharing one spherical expansion: key -> (SphericalExpansion, [slots])
        self._groups: dict[str, tuple[Any, list[str]]] = {}
        for slot, model in self.slots.items():
            if isinstance(model, Model) and _shares_expansion(model):
                key = json.dumps(model.expansion_hypers(), sort_keys=True)
                if key not in self._groups:
                    from ..features.expansion import SphericalExpansion

                    self._groups[key] = (SphericalExpansion(**model.expansion_hypers()), [])
                self._groups[key][1].append(slot)
        self._group_of = {slot: key for key, (_, slots) in self._groups.items() for slot in slots}
        self._expansions: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------
    def _slot_of(self, name: str) -> str:
        if name in ("energy", "free_energy", "forces", "energy_std"):
            return "energy"
        return name.removesuffix("_std")

    def get_property(self, name: str, atoms: Atoms | None = None, allow_calculation: bool = True):
        if name not in self.implemented_properties:
            if name in self.all_properties:
                slot = self._slot_of(name)
                if self.slots.get(slot) is None:
                    hint = "an energy model or ASE calculator" if slot == "energy" else f"a {slot} model"
                    raise PropertyNotImplementedError(
                        f"{name}: no {slot} model in this MLCalculator (pass {slot}=... with {hint})")
                raise PropertyNotImplementedError(
                    f"{name}: the {slot} slot holds a reference calculator, which gives no uncertainty")
            raise PropertyNotImplementedError(
                f"{name}: not provided by MLCalculator (available: {', '.join(self.implemented_properties)})")
        if self.atoms is None:
            return super().get_property(name, atoms, allow_calculation)
        changes = self.check_state(atoms) if atoms is not None else []
        if changes == ["positions"]:
            # an MD step: only the positions moved. Update the kept copy in place; ASE's path
            # would copy the atoms twice (~70 µs each).
            self.atoms.arrays["positions"][...] = atoms.arrays["positions"]
            self.results = {}
            self._expansions = {}
        elif changes:
            return super().get_property(name, atoms, allow_calculation)
        # the structure of the last calculation (MD asks energy, forces, dipole, ... at one
        # geometry): served without copying the atoms
        if name not in self.results:
            if not allow_calculation:
                return None
            self.calculate(None, [name], [])
            if name not in self.results:
                raise PropertyNotImplementedError(f"{name} not present in this calculation")
        result = self.results[name]
        return result.copy() if isinstance(result, np.ndarray) else result

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """ASE's check, with a fast path for plain structures (no initial magnetic moments or
        charges): positions, numbers, cell and pbc compared directly — an empty list when all are
        bit-identical to the last calculation (several properties asked at one geometry), and
        ``["positions"]`` in the common MD case where only the positions moved."""
        old = self.atoms
        if old is None:
            return super().check_state(atoms, tol=tol)
        now, then = atoms.arrays, old.arrays
        if (now.keys() != then.keys() or "initial_magmoms" in now or "initial_charges" in now
                or now["positions"].shape != then["positions"].shape):
            return super().check_state(atoms, tol=tol)
        # byte comparisons: a few µs cheaper than np.array_equal each, at every MD property request
        same_rest = (now["numbers"].tobytes() == then["numbers"].tobytes()
                     and atoms.cell.array.tobytes() == old.cell.array.tobytes()
                     and atoms.pbc.tobytes() == old.pbc.tobytes())
        if not same_rest:
            return super().check_state(atoms, tol=tol)
        return [] if now["positions"].tobytes() == then["positions"].tobytes() else ["positions"]

    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] | None = None,
                  system_changes: Sequence[str] = all_changes) -> None:
        if system_changes:
            self._expansions = {}
            super().calculate(atoms, properties, system_changes)  # keeps a copy of the atoms
        properties = list(properties or ["energy"])
        todo: dict[str, bool] = {}  # slot -> uncertainty wanted
        for name in properties:
            slot = self._slot_of(name)
            if self.slots.get(slot) is not None and name not in self.results:
                todo[slot] = todo.get(slot, False) or name.endswith("_std")
        for slot, want_std in todo.items():
            self._compute_slot(slot, want_std)

    # ------------------------------------------------------------------------------------------
    def _expansion_for(self, slot: str):
        key = self._group_of[slot]
        calc, members = self._groups[key]
        exp = self._expansions.get(key)
        gradients = "energy" in members
        if exp is None:
            exp = calc.compute([self.atoms], gradients=gradients)
            self._expansions[key] = exp
        return exp

    def _compute_slot(self, slot: str, want_std: bool) -> None:
        """Fill the results of one slot; the ``*_std`` uncertainty only when ``want_std``."""
        model = self.slots[slot]
        atoms = self.atoms
        if slot == "energy":
            if isinstance(model, Model):
                if slot in self._group_of:
                    out = model.predict_from_expansion(self._expansion_for(slot), return_std=want_std, forces=True)
                    energy, forces = float(out["energy"][0]), out["forces"]
                else:
                    out = model.predict_energy_forces([atoms], return_std=want_std)
                    energy, forces = float(out["energy"][0]), out["forces"][0]
                if want_std:
                    self.results["energy_std"] = float(out["energy_std"][0])
            else:
                energy = float(model.get_potential_energy(atoms))
                forces = np.asarray(model.get_forces(atoms), dtype=float)
            if not np.isfinite(energy) or not np.all(np.isfinite(forces)):
                raise SimulationError("the energy model returned a non-finite energy or forces")
            self.results["energy"] = energy
            self.results["free_energy"] = energy
            self.results["forces"] = np.asarray(forces, dtype=float).reshape(len(atoms), 3)
            return
        if slot in self._group_of:
            out = model.predict_from_expansion(self._expansion_for(slot), return_std=want_std,
                                               precision=self.tensor_precision)
        else:
            out = model.predict([atoms], return_std=want_std)
        y, std = out if want_std else (out, None)
        shape = _SHAPES[slot]
        self.results[slot] = np.asarray(y, dtype=float).reshape(shape)
        if std is None:
            return
        std = np.asarray(std, dtype=float)
        self.results[f"{slot}_std"] = std.reshape(shape) if std.size == np.prod(shape) else std.reshape(-1)
