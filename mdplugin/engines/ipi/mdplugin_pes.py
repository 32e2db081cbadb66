"""mdplugin's i-PI PES: ML energies, forces, stress, dipoles and polarizabilities in atomic units.

An i-PI *custom PES file* (``__DRIVER_NAME__``, ``__DRIVER_CLASS__``), on i-PI's public PES
interface (``ipi.pes.dummy.Dummy_driver`` through ``ipi.pes._ase.ASEDriver``), so i-PI's own
driver runs it::

    i-pi-py_driver -m custom -P $(python -c "import mdplugin.engines.ipi as m; print(m.PES_FILE)") \\
        -u -a NAME -o template=start.xyz,energy=tblite,dipole=dipole.npz,polarizability=alpha.npz

``mdplugin ipi`` runs exactly that (:mod:`.client`); inside i-PI (``<ffdirect>``) it needs no
socket. i-PI loads this file by its path, so it imports the package absolutely.

:class:`MdpluginDriver` is i-PI's ASE driver with mdplugin's calculator and its own hooks:

* :meth:`~MdpluginDriver.convert_units` — i-PI's cell (columns) and positions in bohr to an ASE
  cell (rows) and positions in Å (:data:`mdplugin.core.units.BOHR`, the one unit table);
* :meth:`~MdpluginDriver.compute_structure` — the template structure at those positions, one
  calculator call for every property;
* :meth:`~MdpluginDriver.post_process` — the energy (Hartree), forces (n_atoms, 3) (Hartree/bohr),
  the virial (3, 3) (Hartree) ``−σ V`` from the calculator's stress σ (i-PI's convention, as its
  ``ASEDriver``), zero for a molecule, and the *extras* JSON (:func:`extras_json`) in **atomic
  units**: ``dipole`` (3, e·bohr), ``polarizability`` (9, bohr³, row-major) and the models'
  uncertainties ``dipole_std``, ``polarizability_std`` and ``energy_std`` (Hartree).
  (i-PI's own ``ASEDriver`` passes extras through in ASE units; here they are converted.)
"""

from __future__ import annotations

import json
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from ase.calculators.calculator import all_changes
from ipi.pes._ase import ASEDriver

from mdplugin.core.errors import ConfigError, DataError
from mdplugin.core.units import AU_PER_ASE, BOHR

if TYPE_CHECKING:  # pragma: no cover
    from mdplugin.engines.ase import MLCalculator

__DRIVER_NAME__ = "mdplugin"
__DRIVER_CLASS__ = "MdpluginDriver"

__all__ = ["MdpluginDriver", "EXTRAS_UNITS", "extras_json", "make_calculator", "virial_from_stress"]

#: extras key -> factor ASE -> atomic units (:data:`mdplugin.core.units.AU_PER_ASE`)
EXTRAS_UNITS = {
    "dipole": AU_PER_ASE["dipole"],
    "polarizability": AU_PER_ASE["polarizability"],
    "dipole_std": AU_PER_ASE["dipole"],
    "polarizability_std": AU_PER_ASE["polarizability"],
    "energy_std": AU_PER_ASE["energy"],
}

_VALUES = ("energy", "forces", "dipole", "polarizability")
_STDS = ("energy_std", "dipole_std", "polarizability_std")
#: shapes of the uncertainties in the calculator's results (ASE units)
_STD_SHAPES = {"energy_std": (), "dipole_std": (3,), "polarizability_std": (3, 3)}


def _flag(value: Any, name: str) -> bool:
    """A yes/no parameter given from Python or as text by ``i-pi-py_driver -o name=...``."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def _is_set(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and value.strip().lower() in ("", "none"))


def make_calculator(energy: Any = "tblite", dipole: Any = None, polarizability: Any = None) -> "MLCalculator":
    """The ASE calculator behind the PES: ``MLCalculator(energy=..., dipole=..., polarizability=...)``.

    Each slot takes a model file path or a loaded model; ``energy`` also takes ``"tblite"`` or
    any ASE calculator.
    """
    from mdplugin.engines.ase import MLCalculator

    kwargs = {"energy": str(energy) if isinstance(energy, (int, float)) else energy}
    if _is_set(dipole):
        kwargs["dipole"] = str(dipole)
    if _is_set(polarizability):
        kwargs["polarizability"] = str(polarizability)
    return MLCalculator(**kwargs)


def _calculator_from(spec: Any, argument: Any):
    """An ASE calculator: ``spec`` itself, or made by the factory ``"package.module:function"``
    names (called with ``argument`` when it is given)."""
    if not isinstance(spec, str):
        return spec
    from mdplugin.core.plugins import import_object

    factory = import_object(spec, "calculator factory")
    if not callable(factory):
        raise ConfigError(f"calculator factory {spec!r} is not callable")
    calc = factory(str(argument)) if _is_set(argument) else factory()
    if not hasattr(calc, "calculate"):
        raise ConfigError(f"the calculator factory {spec!r} returned {type(calc).__name__}, not an ASE calculator")
    return calc


def virial_from_stress(stress: np.ndarray, volume: float) -> np.ndarray:
    """i-PI's virial (3, 3) in Hartree from an ASE stress (Voigt (6,) or (3, 3), eV/Å³) and the
    cell volume (Å³): ``−σ V``, as i-PI's ``ASEDriver``."""
    stress = np.asarray(stress, dtype=np.float64)
    if stress.shape == (6,):
        stress = stress[[0, 5, 4, 5, 1, 3, 4, 3, 2]].reshape(3, 3)
    return -stress.T * float(volume) * AU_PER_ASE["energy"]


def extras_json(results: dict) -> str:
    """The extras JSON string (atomic units) of a calculator's ASE-unit ``results``.

    Keys: ``dipole`` (3, e·bohr), ``polarizability`` (9, bohr³, row-major), ``dipole_std`` (3),
    ``polarizability_std`` (9), ``energy_std`` (Hartree), each only when present in ``results``.
    """
    extras = {}
    for key, factor in EXTRAS_UNITS.items():
        value = results.get(key)
        if value is None:
            continue
        value = np.asarray(value, dtype=np.float64) * factor
        extras[key] = value.ravel().tolist() if value.ndim else float(value)
    return json.dumps(extras) if extras else ""


class MdpluginDriver(ASEDriver):
    """i-PI PES serving mdplugin models (energy, forces, stress, dipole, polarizability) in atomic units.

    Parameters (``i-pi-py_driver -o key=value,...``, ``<ffdirect><parameters>`` or Python):
        template : structure file (any ASE format) giving the atom types, in i-PI's atom order,
            and, for a periodic system, the periodic directions (the cell comes from i-PI).
        energy : energy model file, ``"tblite"``, or (from Python) any ASE calculator.
        dipole, polarizability : model files or loaded models (optional).
        std : also compute and send the models' uncertainties ``*_std`` (default true).
        std_every : send them with every N-th structure this PES evaluates, counting from the
            first (default 1: every structure; 0: never, as ``std=false``). An uncertainty costs
            far more than the values (about 100 ms against 4 ms per structure with the default
            λ-SOAP dipole and polarizability models of 1,2-dichloroethane), and i-PI reads the
            ``*_std`` extras only on the steps that write them: set N to the ``stride`` of the
            ``*_std`` trajectory outputs of ``input.xml``. On the other structures the ``*_std``
            extras are NaN (the keys stay, as i-PI wants the same keys from every bead of a
            path-integral run), so a misaligned N shows as NaN in i-PI's output, never as stale
            values; path-integral runs that write the ``*_std`` extras need ``std_every=1``.
        calculator : an ASE calculator to serve instead of building ``MLCalculator`` (Python), or
            the factory that makes it, ``"package.module:function"`` (the module looked up on the
            Python path, then in the current folder), called with ``calculator_arg`` if given.
        calculator_arg : the one (string) argument of the ``calculator`` factory.
        verbose : i-PI's verbosity flag.

    A template periodic in all three directions with a calculator that gives ``stress`` sends
    the virial ``−σ V`` (so i-PI can run NPT); otherwise the virial is zero (a molecule's energy
    does not depend on the cell) and a periodic template without a stress warns once.
    """

    def __init__(self, template, energy="tblite", dipole=None, polarizability=None, std=True, calculator=None,
                 calculator_arg=None, *args, std_every=1, **kwargs):
        self.std = _flag(std, "std")
        try:
            every = int(float(std_every))
            ok = every >= 0 and float(std_every) == every
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(f"std_every (--std-every) must be a whole number >= 0, got {std_every!r}")
        self.std_every = every if self.std else 0
        self.evaluations = 0  # structures evaluated for i-PI so far
        self.energy = energy
        self.dipole = dipole
        self.polarizability = polarizability
        self.calculator = calculator
        self.calculator_arg = calculator_arg
        super().__init__(str(template), True, True, False, *args, **kwargs)

    # --- set-up ---------------------------------------------------------------------------------
    def check_parameters(self) -> None:
        """Read the template, build the calculator and evaluate the template once (fails fast)."""
        from ase.io import read

        try:
            self.template_ase = read(self.template)
        except FileNotFoundError:
            raise ConfigError(f"{self.template}: template structure file not found") from None
        except Exception as exc:  # ASE raises many kinds of errors for unreadable files
            raise ConfigError(f"{self.template}: cannot read the template structure ({exc})") from None
        if _is_set(self.calculator):
            given = [f"--{n}" for n in ("energy", "dipole", "polarizability")
                     if _is_set(getattr(self, n)) and not (n == "energy" and self.energy == "tblite")]
            if given:
                raise ConfigError(f"{', '.join(given)}: not with a calculator of its own (--active serves the "
                                  "run folder's models; leave these out)")
            self.ase_calculator = _calculator_from(self.calculator, self.calculator_arg)
        else:
            if not _is_set(self.energy):
                raise ConfigError("the i-PI driver needs an energy model (a model file or 'tblite')")
            self.ase_calculator = make_calculator(self.energy, self.dipole, self.polarizability)
        implemented = set(getattr(self.ase_calculator, "implemented_properties", ()))
        missing = {"energy", "forces"} - implemented
        if missing:
            raise ConfigError(f"the energy calculator provides no {' or '.join(sorted(missing))}")
        self._atoms = self.template_ase.copy()
        self._natoms = len(self._atoms)
        self._periodic = bool(self._atoms.pbc.any())
        self._bulk = bool(self._atoms.pbc.all() and abs(self._atoms.cell.volume) > 0)
        wanted = list(_VALUES) + (["stress"] if self._bulk else [])
        self.values_only = [p for p in wanted if p in implemented]
        wanted += list(_STDS) if self.std_every else []
        self.properties = [p for p in wanted if p in implemented]
        if self._bulk and "stress" not in implemented:
            warnings.warn(f"{self.template} is periodic but the calculator gives no stress: the virial sent to "
                          "i-PI is zero (fine for NVE and NVT, wrong for a constant-pressure run)", stacklevel=2)
        self._atoms.calc = self.ase_calculator
        # one evaluation of the template: configuration errors show before i-PI is contacted,
        # and lazily built caches are warm for the first step
        self._evaluate(self._atoms, self.properties)

    # --- the hooks ------------------------------------------------------------------------------
    def convert_units(self, cell: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """i-PI's cell (3, 3, cell vectors as columns) and positions (n_atoms, 3), bohr -> an ASE
        cell (vectors as rows) and positions, Å."""
        cell = np.asarray(cell, dtype=np.float64).T * BOHR
        pos = np.asarray(pos, dtype=np.float64).reshape(-1, 3) * BOHR
        return cell, pos

    def compute_structure(self, cell: np.ndarray, pos: np.ndarray):
        """Energy [Ha], forces [Ha/bohr], virial [Ha] and extras (JSON, atomic units) at ``pos`` [bohr]."""
        cell, pos = self.convert_units(cell, pos)
        if len(pos) != self._natoms:
            raise ConfigError(f"i-PI sent {len(pos)} atoms but the template {self.template} has {self._natoms}")
        if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(cell))):
            raise DataError("i-PI sent non-finite positions or cell (NaN or inf): the dynamics blew up")
        atoms = self._atoms
        atoms.positions = pos
        if self._periodic:
            atoms.cell[:] = cell
        with_std = bool(self.std_every) and self.evaluations % self.std_every == 0
        self.evaluations += 1
        if with_std:
            return self.post_process(self._evaluate(atoms, self.properties), atoms)
        results = dict(self._evaluate(atoms, self.values_only))
        for name in self.properties:  # not computed this time: NaN, with the same keys every time
            if name.endswith("_std"):
                results[name] = np.full(_STD_SHAPES[name], np.nan)
        return self.post_process(results, atoms)

    def post_process(self, results: dict, structure=None):
        """ASE-unit ``results`` at ``structure`` -> i-PI's ``(energy [Ha], forces (n_atoms, 3)
        [Ha/bohr], virial (3, 3) [Ha], extras JSON)``."""
        energy = float(results["energy"]) * AU_PER_ASE["energy"]
        forces = np.asarray(results["forces"], dtype=np.float64).reshape(-1, 3) * AU_PER_ASE["forces"]
        stress = results.get("stress") if self._bulk else None
        virial = (virial_from_stress(stress, structure.cell.volume) if stress is not None
                  else np.zeros((3, 3), dtype=np.float64))
        return energy, forces, virial, extras_json(results)

    def _evaluate(self, atoms, properties: list[str]) -> dict:
        """The calculator's results at ``atoms``, all properties in one call.

        Between two i-PI requests only the positions (and the cell of a periodic template) change,
        so the calculator is told exactly that: ASE's general ``check_state`` comparison of every
        array costs more than the rest of this PES together. Same positions: cached results.
        """
        calc = self.ase_calculator
        last = calc.atoms
        if last is None:
            changes = list(all_changes)
        else:
            changes = ["positions"] if not np.array_equal(last.positions, atoms.positions) else []
            if self._periodic and not np.array_equal(last.cell.array, atoms.cell.array):
                changes.append("cell")
            if not changes and all(name in calc.results for name in properties):
                return {name: calc.results[name] for name in properties}
            if not changes:  # same structure, more asked: keep what is there
                calc.calculate(atoms, properties, [])
                return {name: calc.results[name] for name in properties}
        calc.reset()
        calc.calculate(atoms, properties, changes)
        return {name: calc.results[name] for name in properties if name in calc.results}
