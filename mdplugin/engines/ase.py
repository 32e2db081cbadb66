"""The ASE calculator: ML (or reference) energies and forces plus ML dipoles and polarizabilities.

::

    from mdplugin.engines.ase import MLCalculator
    atoms.calc = MLCalculator(energy="energy.npz", dipole="dipole.npz", polarizability="alpha.npz")
    atoms.get_forces(); atoms.get_dipole_moment(); atoms.calc.get_property("polarizability")

Each slot takes a model file path, a loaded :class:`~mdplugin.models.base.Model`, or nothing;
``energy`` also takes any ASE calculator (e.g. ``tblite.ase.TBLite``) or the name ``"tblite"``
(GFN2-xTB), so MD can run on a reference or third-party potential and still record ML dipoles and
polarizabilities.

Results (ASE units): ``energy`` and ``free_energy`` (eV), ``forces`` (n_atoms, 3) eV/Å, ``stress``
(6,) eV/Å³ in ASE's Voigt order for structures periodic in all three directions,
``dipole`` (3,) e·Å, ``polarizability`` (3, 3) Å³, and the model uncertainties ``energy_std``
(eV), ``dipole_std`` (3,) e·Å, ``polarizability_std`` (3, 3) Å³ (when the models provide them).
A ``hamiltonian`` model file in the dipole or polarizability slot gives those from its predicted
Hamiltonian, and the calculator then also reports ``orbital_energies`` (n_ao,) eV and ``gap`` (the
HOMO–LUMO gap, eV), with ``orbital_energies_std`` and ``gap_std``. The same file given to both
slots is loaded once and its Hamiltonian computed once per structure.
Asking for a property no slot provides raises ASE's ``PropertyNotImplementedError`` naming the
missing model.

Features: the calculator never builds a model's features itself. Every model says which features it
predicts from (``model.featurizer()``, a features-layer object); the calculator groups the models
whose featurizers are equal, computes ONE set of features per structure and group through it — with
position gradients when the group serves the energy slot and the forces are not yet computed at
this structure — and hands it to each model's ``predict_from_features``, which returns a
:class:`~mdplugin.models.contract.Prediction` whatever the model. The SOAP energy model and λ-SOAP
models of equal hypers thus share one spherical expansion per MD step and its λ-SOAP features (the
λ = 0 power spectrum serves the energy, dipole and polarizability models alike); two RPR models of
one molecule share its principal axes. :attr:`MLCalculator.feature_groups` shows the grouping.

Efficiency: ASE's ``check_state`` means nothing is recomputed while positions, numbers and cell are
unchanged; properties are computed when first asked for. Properties asked at an unchanged structure
are served without copying the atoms again, and when only the positions moved (an MD step) the kept
copy of the atoms is updated in place.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from ..core.errors import ConfigError, DataError, ModelFileError, SimulationError
from ..core.precision import TENSOR_PRECISIONS
from ..models.base import Model, load_model

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


def _resolve(slot: str, value: Any, loaded: dict | None = None) -> Model | Calculator | None:
    """Turn a slot value (path, model, calculator, name, None) into a model or a calculator
    (``loaded``: files already read for other slots, by path, reused when they serve this one)."""
    if value is None:
        return None
    if isinstance(value, str) and value.lower() in REFERENCE_CALCULATORS:
        if slot != "energy":
            raise ConfigError(f"{slot}: {value!r} is a reference calculator; the {slot} slot takes a model")
        return make_reference_calculator(value)
    if isinstance(value, (str, os.PathLike)):
        if slot == "energy" and not os.path.exists(value):
            hint = ("did you mean 'tblite' (GFN2-xTB)?" if "xtb" in str(value).lower()
                    else f"the energy slot takes a model file or {' or '.join(map(repr, REFERENCE_CALCULATORS))}")
            raise ModelFileError(f"{value}: no such model file; {hint}")
        key = os.path.realpath(os.fspath(value))
        kept = (loaded or {}).get(key)
        if kept is not None and slot in kept.derived_targets:
            return kept
        model = load_model(value, target=slot)
        if loaded is not None:
            loaded[key] = model
        return model
    if isinstance(value, Model):
        target = getattr(value, "target", None)
        if target != slot and slot not in value.derived_targets:
            raise ConfigError(f"the {slot} slot got a {target!r} model")
        return value
    if isinstance(value, Calculator) or hasattr(value, "get_potential_energy"):
        if slot != "energy":
            raise ConfigError(f"{slot}: only the energy slot takes an ASE calculator; give a {slot} model")
        return value
    raise ConfigError(f"{slot}: expected a model file, a model{' or an ASE calculator' if slot == 'energy' else ''}, "
                      f"got {type(value).__name__}")


def _periodic_3d(atoms: Atoms | None) -> bool:
    """Whether ``atoms`` is periodic in all three directions with a cell (a degenerate cell counts:
    its calculation names what is wrong with it; an all-zero cell is a molecule)."""
    if atoms is None:
        return False
    return bool(np.all(atoms.pbc)) and bool(np.any(atoms.cell.array))


def full_to_voigt(stress: np.ndarray) -> np.ndarray:
    """ASE's Voigt order ``(xx, yy, zz, yz, xz, xy)`` (6,) of a symmetric (3, 3) stress."""
    s = np.asarray(stress, dtype=float)
    return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


def voigt_to_full(stress: np.ndarray) -> np.ndarray:
    """The symmetric (3, 3) stress of ASE's Voigt (6,) form (a full (3, 3) one passes through)."""
    s = np.asarray(stress, dtype=float)
    if s.shape == (3, 3):
        return s
    xx, yy, zz, yz, xz, xy = s
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


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
        expansion (:meth:`~mdplugin.models.lsoap.LambdaSoapModel.predict_from_features`). Single
        precision halves the bytes an MD step reads from memory (about 0.7 ms of a 5 ms step) and
        changes the dipole and polarizability by ~1e-6 relative, three orders of magnitude below
        the models' own errors. Energies, forces and every uncertainty are always double.
    """

    #: everything this class can provide; an instance lists only what its slots provide
    all_properties = ("energy", "free_energy", "forces", "stress", "energy_std", "dipole", "dipole_std",
                      "polarizability", "polarizability_std", "orbital_energies", "orbital_energies_std",
                      "gap", "gap_std")
    #: results a hamiltonian model gives with its dipole or polarizability
    _ORBITAL_PROPERTIES = ("orbital_energies", "gap")

    @property
    def implemented_properties(self) -> list[str]:
        """What the slots provide; ``stress`` when the energy slot gives it (an ML energy model, or
        an ASE calculator listing it) and the structure (the last one computed, or none yet) is
        periodic in all three directions — never for a molecule or a slab."""
        provided = list(self._provided)
        if self._stress_capable and (self.atoms is None or _periodic_3d(self.atoms)):
            provided.insert(3, "stress")
        return provided

    def __init__(self, energy: Any = None, dipole: Any = None, polarizability: Any = None,
                 tensor_precision: str = "single", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if tensor_precision not in TENSOR_PRECISIONS:
            raise ConfigError(f"tensor_precision must be one of {', '.join(TENSOR_PRECISIONS)}, got {tensor_precision!r}")
        self.tensor_precision = tensor_precision
        loaded: dict[str, Model] = {}
        self.slots: dict[str, Model | Calculator | None] = {
            "energy": _resolve("energy", energy),
            "dipole": _resolve("dipole", dipole, loaded),
            "polarizability": _resolve("polarizability", polarizability, loaded),
        }
        #: slot -> the model file it was loaded from (for messages)
        self.sources = {slot: os.fspath(v) for slot, v in
                        (("energy", energy), ("dipole", dipole), ("polarizability", polarizability))
                        if isinstance(v, (str, os.PathLike)) and isinstance(self.slots[slot], Model)}
        if all(v is None for v in self.slots.values()):
            raise ConfigError("MLCalculator needs at least one of energy=, dipole=, polarizability=")
        provided = []
        energy = self.slots["energy"]
        if energy is not None:
            provided += ["energy", "free_energy", "forces"]
            if isinstance(energy, Model):
                provided.append("energy_std")
        for slot in ("dipole", "polarizability"):
            if self.slots[slot] is not None:
                provided += [slot, f"{slot}_std"]
        #: the slot whose (hamiltonian) model gives orbital energies and the gap, if any
        self._orbital_slot = next((slot for slot in ("dipole", "polarizability") if isinstance(self.slots[slot], Model)
                                   and getattr(self.slots[slot], "target", None) == "hamiltonian"), None)
        if self._orbital_slot is not None:
            provided += [f"{name}{suffix}" for name in self._ORBITAL_PROPERTIES for suffix in ("", "_std")]
        self._provided = provided
        # the ML energy models give the stress with the forces; an ASE calculator when it lists it
        self._stress_capable = energy is not None and (
            energy.gives_stress if isinstance(energy, Model) else "stress" in getattr(energy, "implemented_properties", ()))
        # the models grouped by equal featurizers: [(featurizer, [slots])]
        self._groups: list[tuple[Any, list[str]]] = []
        for slot, model in self.slots.items():
            if isinstance(model, Model):
                featurizer = model.featurizer()
                group = next((g for g in self._groups if g[0] == featurizer), None)
                if group is None:
                    group = (featurizer, [])
                    self._groups.append(group)
                group[1].append(slot)
        self._group_of = {slot: i for i, (_, slots) in enumerate(self._groups) for slot in slots}
        # the current structure's features per group: index -> (features, with position gradients)
        self._features: dict[int, tuple[Any, bool]] = {}

    @property
    def feature_groups(self) -> list[tuple[Any, list[str]]]:
        """The featurizers and the slots whose models share each one's features, e.g.
        ``[(SphericalExpansion(...), ["energy", "dipole", "polarizability"])]``."""
        return [(featurizer, list(slots)) for featurizer, slots in self._groups]

    def check_elements(self, atoms: Atoms, where: str) -> None:
        """Raise a :class:`DataError` when ``atoms`` (read from ``where``, e.g. a file name) holds
        an element a model of this calculator was not trained on, naming the element, the model
        (its file when it was loaded from one) and the elements it knows."""
        from ase.data import chemical_symbols

        present = set(np.unique(atoms.numbers).tolist())
        for slot, model in self.slots.items():
            known = getattr(model, "species_", None) if isinstance(model, Model) else None
            if known is None or not len(known):
                continue
            missing = sorted(present - set(int(z) for z in known))
            if missing:
                names = ", ".join(chemical_symbols[z] for z in missing)
                source = f" ({self.sources[slot]})" if slot in self.sources else ""
                trained = ", ".join(chemical_symbols[int(z)] for z in sorted(known))
                raise DataError(f"{where}: element(s) {names} not in the training set of the {slot} model"
                                f"{source}, which knows {trained}")

    # ------------------------------------------------------------------------------------------
    def _slot_of(self, name: str) -> str:
        if name in ("energy", "free_energy", "forces", "stress", "energy_std"):
            return "energy"
        if name.removesuffix("_std") in self._ORBITAL_PROPERTIES:
            return self._orbital_slot or "dipole"
        return name.removesuffix("_std")

    def get_property(self, name: str, atoms: Atoms | None = None, allow_calculation: bool = True):
        if name == "stress" and self._stress_capable and not _periodic_3d(atoms if atoms is not None else self.atoms):
            raise PropertyNotImplementedError(
                "stress: the structure is not periodic in all three directions (a molecule or a slab has no "
                "stress tensor; give it a cell and pbc=True)")
        if name not in self.implemented_properties:
            if name in self.all_properties:
                slot = self._slot_of(name)
                if name.removesuffix("_std") in self._ORBITAL_PROPERTIES:
                    raise PropertyNotImplementedError(
                        f"{name}: comes from a hamiltonian model (pass dipole= or polarizability= a hamiltonian model file)")
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
            self._features = {}
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
            self._features = {}
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
    def _features_for(self, slot: str, gradients: bool):
        """The features of the current structure for ``slot``'s group, computed once per structure
        (again only when position gradients are needed and the kept features lack them)."""
        index = self._group_of[slot]
        kept = self._features.get(index)
        if kept is None or (gradients and not kept[1]):
            featurizer, members = self._groups[index]
            # the energy slot's forces come with its energy: one computation serves the whole MD step
            gradients = gradients or ("energy" in members and "forces" not in self.results)
            # featurizer.features: the structure's features as the models of the group share them (for
            # an expansion, a FeatureCache: its λ-SOAP features are formed once for all of them)
            kept = (featurizer.features([self.atoms], gradients=gradients), gradients)
            self._features[index] = kept
        return kept[0]

    def _compute_slot(self, slot: str, want_std: bool) -> None:
        """Fill the results of one slot; the ``*_std`` uncertainty only when ``want_std``."""
        model = self.slots[slot]
        atoms = self.atoms
        if slot == "energy" and not isinstance(model, Model):  # an ASE calculator
            energy = float(model.get_potential_energy(atoms))
            forces = np.asarray(model.get_forces(atoms), dtype=float)
            stress = None
            if self._stress_capable and _periodic_3d(atoms):
                stress = voigt_to_full(np.asarray(model.get_stress(atoms), dtype=float))
            self._store_energy(energy, forces, stress)
            return
        forces = slot == "energy" and "forces" not in self.results
        features = self._features_for(slot, gradients=forces)
        stress = forces and self._stress_capable and _periodic_3d(atoms)  # with the forces: one pass over the pairs
        derived = {"target": slot} if getattr(model, "target", slot) != slot else {}  # e.g. a hamiltonian's dipole
        out = model.predict_from_features(features, return_std=want_std, forces=forces, stress=stress,
                                          precision=self.tensor_precision, **derived)
        for name, value in out.extras.items():  # orbital energies and gap of a hamiltonian model
            self.results[name] = np.asarray(value[0], dtype=float) if np.ndim(value[0]) else float(value[0])
        if slot == "energy":
            if want_std:
                self.results["energy_std"] = float(out.std[0])
            self._store_energy(float(out.values[0]), out.forces if forces else None,
                               out.stress[0] if stress else None)
            return
        shape = _SHAPES[slot]
        self.results[slot] = np.asarray(out.values, dtype=float).reshape(shape)
        if out.std is None:
            return
        std = np.asarray(out.std, dtype=float)
        self.results[f"{slot}_std"] = std.reshape(shape) if std.size == np.prod(shape) else std.reshape(-1)

    def _store_energy(self, energy: float, forces: np.ndarray | None, stress: np.ndarray | None = None) -> None:
        """The energy (and forces (n_atoms, 3) eV/Å and stress (3, 3) eV/Å³, when computed) in the
        results (the stress in ASE's Voigt form), checked finite."""
        if (not np.isfinite(energy) or (forces is not None and not np.all(np.isfinite(forces)))
                or (stress is not None and not np.all(np.isfinite(stress)))):
            raise SimulationError("the energy model returned a non-finite energy, forces or stress")
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        if forces is not None:
            self.results["forces"] = np.asarray(forces, dtype=float).reshape(len(self.atoms), 3)
        if stress is not None:
            self.results["stress"] = full_to_voigt(stress)
