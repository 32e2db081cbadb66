"""Reference labellers ("oracles"): energies, forces, dipoles and polarizabilities.

An oracle is any ASE calculator. The built-in ones are

* ``"tblite"``: GFN2-xTB through tblite (:class:`mdplugin.oracles.tblite.TBLite`: energy,
  forces, dipole) and the polarizability by central finite differences of the dipole in a uniform
  electric field (tblite's ``electric-field`` interaction);
* ``"pyscf"``: Kohn–Sham DFT through PySCF (:mod:`mdplugin.oracles.pyscf`, the ``[pyscf]``
  extra), with the same finite-field polarizability.

Conventions (checked by the tests): the field ``F`` is in V/Å, the energy in a field is
``E(F) = E(0) − μ·F − ½ Fᵀ α F``, so ``μ = −dE/dF`` and ``α = dμ/dF``. ``dμ/dF`` comes out in
e·Å²/V and is turned into a polarizability volume (Å³) by multiplying with ``1/(4πε₀)`` =
Hartree·bohr = 14.3996 eV·Å/e².

Periodic cells (docs/condensed.md): energy and forces come from the calculation on the cell; the
dipole is the sum of the whole molecules' dipoles about their own centres of mass (continuous when
atoms cross the wall, independent of the origin); the polarizability is the sum of each molecule's
response in a cluster cut around it (:mod:`mdplugin.oracles.clusters`), because a uniform field
on a cell is no periodic perturbation.

Typical use::

    from mdplugin.oracles.label import make_oracle, label_file
    calc = make_oracle("tblite")
    atoms.calc = calc; atoms.calc.get_property("polarizability", atoms)   # (3, 3) Å³
    label_file("frames.xyz", "labelled.xyz", oracle="tblite")
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from threadpoolctl import threadpool_limits

from ..structures.charge import frame_charge
from ..core.atomicio import atomic_write
from ..structures.data import PROPERTIES, Dataset, dataset_to_text, read_dataset, read_frames, write_dataset
from ..core.errors import ConfigError, OracleError
from ..learn.parallel import merge_rank_results
from ..core.plugins import import_object
from ..core.units import BOHR, HARTREE
from .clusters import DEFAULT_CLUSTER_RADIUS, cluster_polarizability

#: 1/(4πε₀) in eV·Å/e²: turns dμ/dF (e·Å²/V) into a polarizability volume (Å³)
COULOMB_CONSTANT: float = HARTREE * BOHR

#: default finite-field step, V/Å (0.02 V/Å ≈ 3.9e-4 atomic units)
DEFAULT_FIELD: float = 0.02

#: oracle names understood by :func:`make_oracle`
ORACLES = ("tblite", "pyscf")

CalculatorFactory = Callable[[np.ndarray | None], Calculator]


class FiniteFieldPolarizability(Calculator):
    """ASE calculator adding a finite-field polarizability to any calculator with a dipole.

    Parameters
    ----------
    calculator_factory : ``factory(field)`` returns a fresh ASE calculator for a uniform electric
        field ``field`` ((3,) array in V/Å, or ``None`` for no field) that computes ``dipole``
        (e·Å) and, at zero field, whatever else is asked (energy, forces, ...).
    field : finite-difference step in V/Å.
    oracle_name : how error messages name the oracle (default: the base calculator's class).
    threads : limit the OpenMP/BLAS threads during a calculation (``None``: no limit). One thread
        is fastest for small molecules, and far faster than two on a busy machine.

    cluster_radius : for a periodic cell, the radius (Å) of the cluster cut around each molecule
        (:mod:`mdplugin.oracles.clusters`).

    Results: the base calculator's zero-field results (``energy``, ``free_energy``, ``forces``,
    ``dipole``, ...) and, when asked for, ``polarizability`` (3, 3) in Å³,
    ``α_ij = [μ_i(+h e_j) − μ_i(−h e_j)] / 2h`` symmetrised, from six extra calculations. For a
    periodic cell a uniform field is not a periodic perturbation, so the six calculations are made
    on a cluster around each molecule and ``α = Σ_m ∂μ_m/∂F`` (the molecules' own dipoles, the
    convention of the cell dipole; :func:`mdplugin.oracles.clusters.cluster_polarizability`); the
    calculator must then give ``charges`` and ``atomic_dipoles`` (the tblite oracle does).
    ``polarizability_asymmetry`` records ``max |α − αᵀ|`` before symmetrisation (Å³), a check
    of the numerical noise.
    """

    implemented_properties = ["energy", "free_energy", "forces", "dipole", "polarizability"]

    def __init__(self, calculator_factory: CalculatorFactory, field: float = DEFAULT_FIELD,
                 oracle_name: str | None = None, threads: int | None = None,
                 cluster_radius: float = DEFAULT_CLUSTER_RADIUS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not field > 0:
            raise ConfigError(f"finite-field step must be positive, got {field!r} V/Å")
        if not cluster_radius > 0:
            raise ConfigError(f"the cluster radius must be positive, got {cluster_radius!r} Å")
        self.cluster_radius = float(cluster_radius)
        self.calculator_factory = calculator_factory
        self.field = float(field)
        self.base = calculator_factory(None)
        #: how error messages name this oracle
        self.oracle_name = oracle_name or type(self.base).__name__
        self.threads = threads

    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] | None = None,
                  system_changes: Sequence[str] = all_changes) -> None:
        properties = list(properties or ["energy"])
        had = dict(self.results) if not system_changes else {}
        super().calculate(atoms, properties, system_changes)
        self.results = had
        limit = threadpool_limits(self.threads) if self.threads else contextlib.nullcontext()
        with limit:
            self._calculate(properties)

    def _calculate(self, properties: list[str]) -> None:
        zero = [p for p in properties if p != "polarizability" and p not in self.results]
        if zero:
            self.base.calculate(self.atoms, zero, all_changes)
            self.results.update(self.base.results)
        if "polarizability" in properties and "polarizability" not in self.results:
            alpha, asym = self.polarizability(self.atoms)
            self.results["polarizability"] = alpha
            self.results["polarizability_asymmetry"] = asym

    def dipole_in_field(self, atoms: Atoms, field: np.ndarray) -> np.ndarray:
        """Dipole (3,) in e·Å of ``atoms`` in the uniform field ``field`` (3,) V/Å."""
        calc = self.calculator_factory(np.asarray(field, dtype=float))
        calc.calculate(atoms.copy(), ["dipole"], all_changes)
        return np.asarray(calc.results["dipole"], dtype=float)

    def charges_and_dipoles_in_field(self, atoms: Atoms, field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Atomic charges (n,) in e and atomic dipoles (n, 3) in e·Å of ``atoms`` in the uniform
        field ``field`` (3,) V/Å."""
        calc = self.calculator_factory(np.asarray(field, dtype=float))
        if "atomic_dipoles" not in getattr(calc, "implemented_properties", ()):
            raise ConfigError(f"the polarizability of a periodic cell is computed on clusters from atomic charges and "
                              f"atomic dipoles, which {self.oracle_name} does not give (use the tblite oracle)")
        calc.calculate(atoms.copy(), ["charges", "atomic_dipoles"], all_changes)
        return np.asarray(calc.results["charges"], float), np.asarray(calc.results["atomic_dipoles"], float)

    def polarizability(self, atoms: Atoms) -> tuple[np.ndarray, float]:
        """Symmetrised polarizability (3, 3) in Å³ and the asymmetry before symmetrising (Å³)."""
        if np.any(atoms.pbc):
            return cluster_polarizability(atoms, self.charges_and_dipoles_in_field, self.field,
                                          self.cluster_radius, COULOMB_CONSTANT)
        h = self.field
        dmu_df = np.empty((3, 3))
        for j in range(3):
            f = np.zeros(3)
            f[j] = h
            dmu_df[:, j] = (self.dipole_in_field(atoms, f) - self.dipole_in_field(atoms, -f)) / (2 * h)
        alpha = COULOMB_CONSTANT * dmu_df
        return 0.5 * (alpha + alpha.T), float(np.abs(alpha - alpha.T).max())


# --------------------------------------------------------------------------------------------
# tblite


def tblite_factory(method: str = "GFN2-xTB", **options: Any) -> CalculatorFactory:
    """``factory(field)`` making tblite ASE calculators (``field`` in V/Å or ``None``).

    The calculators are :class:`mdplugin.oracles.tblite.TBLite` (atomic charges and dipoles, the
    continuous dipole of a cell); ``options`` go to it (``accuracy``, ``electronic_temperature``,
    ``charge``, ``max_iterations``, ...); ``accuracy`` defaults to 0.01 (100× tighter SCF than
    tblite's default, which leaves ~1e-4 relative noise in the finite-field polarizability; at
    0.01 it is ~1e-6, for ~10 % more time).
    """
    from .tblite import TBLite

    options.setdefault("accuracy", 0.01)
    TBLite(method=method, **options)  # unknown options fail here, not at the first frame

    def factory(field: np.ndarray | None) -> Calculator:
        if field is None or not np.any(field):
            return TBLite(method=method, **options)
        return TBLite(method=method, electric_field=np.asarray(field, dtype=float), **options)

    return factory


def pyscf_factory(**options: Any) -> CalculatorFactory:
    """``factory(field)`` making PySCF DFT calculators; see :class:`mdplugin.oracles.pyscf.PySCF`."""
    try:
        from .pyscf import PySCF
    except ImportError as exc:
        raise ConfigError(f"the pyscf oracle needs PySCF: pip install 'mdplugin[pyscf]' ({exc})") from None

    def factory(field: np.ndarray | None) -> Calculator:
        return PySCF(electric_field=None if field is None else np.asarray(field, float), **options)

    return factory


def make_oracle(name: str = "tblite", field: float = DEFAULT_FIELD, threads: int | None | str = "auto",
                cluster_radius: float = DEFAULT_CLUSTER_RADIUS, **options: Any) -> Calculator:
    """A reference calculator by name: ``"tblite"`` (GFN2-xTB) or ``"pyscf"`` (DFT).

    Returns a :class:`FiniteFieldPolarizability` around the named method, so it provides
    ``energy``, ``forces``, ``dipole`` and ``polarizability``; ``options`` go to the method
    (e.g. ``method="GFN1-xTB"`` for tblite, ``xc="pbe0", basis="aug-cc-pvdz"`` for pyscf);
    ``field`` is the finite-difference step in V/Å; ``threads`` limits OpenMP/BLAS threads
    (``"auto"``: 1 for tblite, no limit for pyscf; ``None``: no limit); ``cluster_radius`` (Å)
    sizes the clusters of a periodic cell's polarizability.
    """
    if name == "tblite":
        threads = 1 if threads == "auto" else threads
        factory = tblite_factory(**options)
        label = f"tblite ({options.get('method', 'GFN2-xTB')})"
    elif name == "pyscf":
        threads = None if threads == "auto" else threads
        factory = pyscf_factory(**options)
        label = "pyscf"
    else:
        raise ConfigError(f"unknown oracle {name!r} (known: {', '.join(ORACLES)})")
    return FiniteFieldPolarizability(factory, field=field, oracle_name=label, threads=threads,
                                     cluster_radius=cluster_radius)


# --------------------------------------------------------------------------------------------
# labelling


#: what ``mdplugin label --properties`` knows: the extended-XYZ labels and ``hamiltonian``
#: (PySCF AO matrices in a file beside the output, :mod:`mdplugin.oracles.hamiltonian`)
LABELS = (*PROPERTIES, "hamiltonian")


def _check_properties(properties: Sequence[str], allowed: Sequence[str] = tuple(PROPERTIES)) -> list[str]:
    props = [p.strip() for p in properties if p.strip()]
    if not props:
        raise ConfigError("no properties to label")
    for p in props:
        if p not in allowed:
            raise ConfigError(f"unknown property {p!r} (known: {', '.join(allowed)})")
    return props


def oracle_maker(spec: str | Calculator) -> Callable[[], Calculator]:
    """Check an oracle spec and return a function that makes the oracle: a name (``tblite``,
    ``pyscf``, ``tblite:GFN1-xTB``) or an ASE calculator is built or taken here (a missing
    package shows now); a ``package.module:function`` factory is imported here and called only by
    the returned function."""
    if not isinstance(spec, str):
        if not hasattr(spec, "calculate"):
            raise ConfigError(f"the oracle must be a name or an ASE calculator, got {spec!r}")
        return lambda: spec
    name, _, option = spec.partition(":")
    if name in ORACLES:
        calc = make_oracle(name, **({"method": option} if option else {}))
        return lambda: calc
    factory = oracle_factory(spec)

    def make() -> Calculator:
        calc = factory()
        if not hasattr(calc, "calculate"):
            raise ConfigError(f"the oracle factory {spec!r} returned {type(calc).__name__}, not an ASE calculator")
        return calc

    return make


def resolve_oracle(spec: str | Calculator) -> Calculator:
    """An oracle from a name (``tblite``, ``pyscf``, ``tblite:GFN1-xTB``), an import path to a
    factory (``package.module:function``, called with no argument) or an ASE calculator."""
    return oracle_maker(spec)()


def oracle_factory(spec: str) -> Callable[[], Calculator]:
    """The factory a ``package.module:function`` oracle names, imported but not called (the
    module is looked up on ``sys.path``, then in the current folder)."""
    name, _, option = spec.partition(":")
    if not option or not name:
        raise ConfigError(f"unknown oracle {spec!r} (use {', '.join(ORACLES)} or module:function)")
    factory = import_object(spec, "oracle factory")
    if not callable(factory):
        raise ConfigError(f"oracle factory {spec!r} is not callable")
    return factory


def _label_one(calc: Calculator, atoms: Atoms, properties: list[str], index: int) -> dict[str, np.ndarray]:
    """Labels of one frame; any failure becomes an :class:`OracleError` naming the frame."""
    implemented = getattr(calc, "implemented_properties", None)
    if implemented is not None:
        missing = [p for p in properties if p not in implemented]
        if missing:
            raise ConfigError(f"oracle {type(calc).__name__} does not compute {', '.join(missing)}")
    name = getattr(calc, "oracle_name", None) or type(calc).__name__
    frame = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    frame.info["charge"] = frame_charge(atoms, f"frame {index}")  # the total charge reaches the oracle
    try:
        calc.calculate(frame, list(properties), all_changes)
        out = {p: np.array(calc.results[p], dtype=float) for p in properties}
    except (OracleError, ConfigError):
        raise
    except Exception as exc:  # SCF failures etc. come as many types
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise OracleError(f"frame {index}: {name} failed: {msg}") from exc
    for p, v in out.items():
        if not np.all(np.isfinite(v)):
            raise OracleError(f"frame {index}: {name} returned non-finite {p}")
    return out


def label_frames(frames: Sequence[Atoms], oracle: str | Calculator = "tblite",
                 properties: Sequence[str] = ("energy", "forces", "dipole", "polarizability"),
                 progress: bool = False, comm=None, source: str = "<memory>") -> Dataset:
    """Label structures with an oracle, in input order.

    Parameters
    ----------
    frames : structures (only numbers, positions, cell and pbc are used).
    oracle : a name (``tblite``, ``tblite:GFN1-xTB``, ``pyscf``), ``package.module:function``
        (:func:`resolve_oracle`) or an ASE calculator (with ``polarizability`` in its
        ``implemented_properties`` if that is asked for, e.g. a :class:`FiniteFieldPolarizability`).
    properties : subset of energy (eV), forces (eV/Å), dipole (e·Å), polarizability (Å³).
    progress : show a tqdm progress bar (on rank 0).
    comm : optional MPI communicator (mpi4py-like: ``Get_rank``, ``Get_size``, ``allgather``);
        frames are split round-robin across ranks and every rank returns the full data set.

    Raises
    ------
    OracleError naming the frame whose calculation failed; ConfigError for unknown properties
    or an oracle that cannot compute them.
    """
    props = _check_properties(properties)
    calc = resolve_oracle(oracle)
    if comm is not None and comm.Get_size() == 1:
        comm = None
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    mine = range(rank, len(frames), size)

    from tqdm.auto import tqdm

    local: dict[int, dict[str, np.ndarray]] = {}
    error: str | None = None
    bar = tqdm(total=len(mine), desc="label", unit="frame", disable=True if not progress or rank != 0 else None,
               leave=False)
    try:
        for i in mine:
            try:
                local[i] = _label_one(calc, frames[i], props, i)
            except OracleError as exc:
                if source != "<memory>":
                    exc = OracleError(f"{source}: {exc}")
                if comm is None:
                    raise exc from exc.__cause__
                error = str(exc)
                break
            bar.update(1)
    finally:
        bar.close()
    local = merge_rank_results(comm, local, error, OracleError)

    labels = [local[i] for i in range(len(frames))]
    data = Dataset(frames=[Atoms(numbers=a.numbers, positions=a.positions, cell=a.cell, pbc=a.pbc)
                           for a in frames], source=source)
    for i, (out, atoms) in enumerate(zip(data.frames, frames)):  # the labels are of this charge: keep it
        if "charge" in atoms.info:
            out.info["charge"] = frame_charge(atoms, f"frame {i}")
    for p in props:
        vals = [lab[p] for lab in labels]
        setattr(data, p, vals if p == "forces" else np.array(vals).reshape((len(vals),) + PROPERTIES[p]))
    return data


def label_file(input_path: str | os.PathLike, output_path: str | os.PathLike,
               oracle: str | Calculator = "tblite",
               properties: Sequence[str] = ("energy", "forces", "dipole", "polarizability"),
               progress: bool = True, comm=None, pyscf_options: dict[str, Any] | None = None,
               minimal_basis: str | None = None) -> Dataset:
    """``mdplugin label IN.xyz -o OUT.xyz``: label every frame of a structure file.

    Reads the structures of ``input_path`` (any labels in it are ignored), labels them in input
    order with :func:`label_frames` and writes extended XYZ with
    :func:`mdplugin.structures.data.write_dataset` (atomically; rank 0 only under MPI). Returns the data set.

    ``"hamiltonian"`` among ``properties`` (oracle ``"pyscf"``) also writes the frames' AO
    Hamiltonians to ``OUT.hamiltonian.npz`` (:func:`mdplugin.oracles.hamiltonian.label_hamiltonians`;
    each frame's ``charge``/``spin`` info is used and kept in the output), in the basis of
    ``pyscf_options["basis"]`` (default STO-3G when the Hamiltonian is asked for), projected onto
    ``minimal_basis`` when that is given. ``pyscf_options`` (``basis``, ``xc``) set the PySCF
    method of every label of the run.

    ``comm=None`` uses :func:`mdplugin.learn.parallel.get_comm`: under ``mpiexec -n P mdplugin label``
    the frames are shared out across the P ranks; in a plain run it is serial.
    """
    if comm is None:
        from ..learn.parallel import get_comm

        comm = get_comm()
    props = _check_properties(properties, LABELS)
    xyz_props = [p for p in props if p != "hamiltonian"]
    options = dict(pyscf_options or {})
    is_pyscf = isinstance(oracle, str) and oracle == "pyscf"
    if (options or minimal_basis) and not is_pyscf:
        raise ConfigError("--basis, --xc and --minimal-basis set the PySCF method: use them with --oracle pyscf")
    if "hamiltonian" in props:
        if not is_pyscf:
            raise ConfigError(f"the hamiltonian property is computed with PySCF: use --oracle pyscf (not {oracle!r})")
        options.setdefault("basis", "sto-3g")
    elif minimal_basis:
        raise ConfigError("--minimal-basis projects the Hamiltonian: add hamiltonian to --properties")
    calc = None
    if xyz_props:  # fail on a bad oracle before reading
        calc = make_oracle("pyscf", **options) if is_pyscf and options else resolve_oracle(oracle)
    raw = read_frames(input_path)
    structures = read_dataset(input_path, properties=[])
    data = (label_frames(structures.frames, calc, xyz_props, progress=progress, comm=comm, source=str(input_path))
            if xyz_props else structures)
    hamiltonians = None
    if "hamiltonian" in props:
        from ..structures.hamiltonians import hamiltonian_path, write_hamiltonians
        from .hamiltonian import DEFAULT_XC, charge_and_spin, label_hamiltonians

        for i, atoms in enumerate(raw):  # one-line errors (odd electrons without a spin) before any SCF
            charge_and_spin(atoms, f"{input_path}: frame {i}")
        frames = []
        for atoms, clean in zip(raw, structures.frames):
            clean = clean.copy()
            clean.info.update({k: atoms.info[k] for k in ("charge", "spin") if k in atoms.info})
            frames.append(clean)
        hamiltonians = label_hamiltonians(frames, basis=options["basis"], xc=options.get("xc", DEFAULT_XC),
                                          minimal_basis=minimal_basis, progress=progress, comm=comm,
                                          source=str(input_path))
        for atoms, charge, spin in zip(data.frames, hamiltonians.charge, hamiltonians.spin):
            atoms.info.update(charge=int(charge), spin=int(spin))  # kept in OUT.xyz
    if comm.Get_size() == 1:
        if hamiltonians is not None:
            write_hamiltonians(hamiltonian_path(output_path), hamiltonians)
        write_dataset(output_path, data)
        return data
    # Under MPI, ASE's writer is collective (it runs on rank 0 and broadcasts), so every rank
    # makes the text and only rank 0 writes the file (atomically, like write_dataset).
    text = dataset_to_text(data)
    if comm.Get_rank() == 0:
        if hamiltonians is not None:
            write_hamiltonians(hamiltonian_path(output_path), hamiltonians)
        with atomic_write(output_path) as handle:
            handle.write(text)
    comm.Barrier()
    return data
