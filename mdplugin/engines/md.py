"""Molecular dynamics with the ML calculator, recording dipoles and polarizabilities.

:func:`run_md` integrates Newton's equations with ASE (velocity Verlet for NVE, or Langevin) and
every ``interval`` steps appends one frame to an extended-XYZ trajectory with ``energy`` (eV),
``forces`` (eV/Å, per atom), ``dipole`` (e·Å), ``polarizability`` (9, row-major, Å³), ``time``
(fs), ``temperature`` (K), ``total_energy`` (eV) and, on every ``uncertainty_every``-th written
frame (default 10, starting with the first), the model uncertainties (``energy_std``,
``dipole_std``, ``polarizability_std``) — readable back by :func:`mdplugin.structures.data.read_dataset` and
by ``mdplugin spectrum``. With a ``hamiltonian`` model as the dipole or polarizability model the
frames also hold its ``gap`` (HOMO–LUMO, eV; ``gap_std``) and ``orbital_energies`` (eV). An uncertainty costs far more than the values (the GPR variances read
the models' m × m factors: for the default λ-SOAP models about as much as 25 MD steps), hence the
sparser default. Frames are appended and flushed as they are made, so a crash leaves a readable
trajectory.

``mdplugin md`` calls :func:`run_md_command`.
"""

from __future__ import annotations

import io
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import ase.io
import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator

from ..core.errors import ConfigError, SimulationError
from ..core.threads import with_threads
from ..structures.neighbours import largest_nearest_neighbour_distance
from .runaway import RUNAWAY_MODES, RunawayWatch

__all__ = ["MDSummary", "run_md", "run_md_command", "largest_bond_gap"]

#: an atom is "lost" when its nearest neighbour is farther than this, Å (molecules only)
LOST_ATOM_DISTANCE = 4.0

#: recorded per frame when the calculator provides them (uncertainties first: they come with the values)
_RECORDED = ("energy_std", "dipole_std", "polarizability_std", "gap_std", "dipole", "polarizability", "gap",
             "orbital_energies")


@dataclass
class MDSummary:
    """What a run did: steps, frames written, wall time (frame 0 included), speed, temperatures,
    energy drift, and the runaway warning if there was one."""

    steps: int
    frames: int
    wall_time_s: float
    steps_per_s: float
    ns_per_day: float
    temperature_mean_K: float
    temperature_std_K: float
    total_energy_drift_eV_per_atom: float
    total_energy_max_deviation_eV_per_atom: float
    output: str
    thermostat: str = "none"
    warnings: list[str] = field(default_factory=list)

    def text(self) -> str:
        if self.thermostat == "none":
            energy = (f"total-energy drift {1000 * self.total_energy_drift_eV_per_atom:+.3f} meV/atom "
                      f"(max deviation {1000 * self.total_energy_max_deviation_eV_per_atom:.3f} meV/atom)")
        else:
            energy = f"{self.thermostat} thermostat (total energy not conserved)"
        return (
            f"{self.steps} steps in {self.wall_time_s:.1f} s ({self.steps_per_s:.1f} steps/s, "
            f"{self.ns_per_day:.2f} ns/day); T = {self.temperature_mean_K:.1f} ± {self.temperature_std_K:.1f} K; "
            f"{energy}; {self.frames} frames -> {self.output}"
        )


def largest_bond_gap(atoms: Atoms, cutoff: float = LOST_ATOM_DISTANCE) -> float:
    """Largest nearest-neighbour distance over the atoms, Å (images count in a cell); ``inf`` when
    an atom has no neighbour within ``cutoff`` Å (the lost-atom test) or for a single atom
    (:func:`~mdplugin.structures.neighbours.largest_nearest_neighbour_distance`)."""
    return largest_nearest_neighbour_distance(atoms, cutoff)


def _frame_text(atoms: Atoms, calc: Calculator, step: int, dt_fs: float, epot: float, ekin: float,
                record: list[str]) -> str:
    out = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    out.info["energy"] = epot
    out.info["step"] = int(step)
    out.info["time"] = float(step * dt_fs)
    out.info["temperature"] = float(atoms.get_temperature())
    out.info["total_energy"] = float(epot + ekin)
    for name in record:
        value = np.asarray(calc.get_property(name, atoms), dtype=float)
        out.info[name] = value.reshape(-1) if value.ndim else float(value)
    out.arrays["forces"] = np.asarray(calc.get_property("forces", atoms), dtype=float)
    buf = io.StringIO()
    ase.io.write(buf, out, format="extxyz")
    return buf.getvalue()


@with_threads("step")
def run_md(
    atoms: Atoms,
    calc: Calculator,
    steps: int,
    dt_fs: float,
    output: str | os.PathLike,
    temperature_K: float = 300.0,
    thermostat: str = "langevin",
    friction_per_fs: float = 0.01,
    interval: int = 1,
    seed: int = 0,
    progress: bool = True,
    initialize_velocities: bool = True,
    max_uncertainty: float | dict[str, float] | None = None,
    uncertainty_every: int = 10,
    runaway: str = "warn",
    warn: Callable[[str], None] | None = None,
) -> MDSummary:
    """Run MD and write the trajectory (see the module docstring).

    Parameters
    ----------
    atoms : starting structure (not modified; a copy is propagated).
    calc : ASE calculator, usually :class:`mdplugin.engines.ase.MLCalculator`.
    steps : number of MD steps; ``dt_fs`` time step in fs.
    output : extended-XYZ file to write (replaced if it exists); frames at steps 0, interval, ...
    temperature_K : initial Maxwell–Boltzmann temperature (K) and Langevin target.
    thermostat : ``"langevin"`` or ``"none"`` (NVE, velocity Verlet).
    friction_per_fs : Langevin friction, 1/fs.
    interval : write every ``interval`` steps.
    seed : random seed for the velocities and the Langevin noise.
    initialize_velocities : draw velocities at ``temperature_K`` (else keep the atoms' momenta).
    max_uncertainty : hard limit on the model uncertainties, checked on every frame that records
        them: a number applies to every ``*_std`` the calculator gives (largest component, in that
        property's units), a dict sets one limit per key, e.g. ``{"energy_std": 0.05,
        "dipole_std": 0.1}`` (eV, e·Å). The offending frame is written, then the run stops.
    uncertainty_every : record (and check) the ``*_std`` uncertainties on every N-th written
        frame, the first one included (1: every frame; 0: never).
    runaway : what to do when the dynamics run away (:mod:`mdplugin.engines.runaway`: the mean
        temperature of the last 100 fs above twice ``temperature_K``, or an uncertainty above 10×
        its value at the start): ``"warn"`` (default: one message, the run goes on), ``"stop"``
        (a :class:`SimulationError` after writing the frame) or ``"off"``.
    warn : where the warning goes (default: one line on stderr, above the progress bar).

    The run uses one BLAS/OpenMP thread (:mod:`mdplugin.core.threads`; ``MDPLUGIN_THREADS``
    overrides it).

    Raises
    ------
    SimulationError for non-finite energies/forces, (molecules) an atom farther than
    ``LOST_ATOM_DISTANCE`` Å from every other atom, or an uncertainty above ``max_uncertainty``;
    the message names the step, and the trajectory written so far stays readable.
    """
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
    from ase.md.verlet import VelocityVerlet
    from ase.parallel import DummyMPI

    if steps < 0:
        raise ConfigError(f"steps must be >= 0, got {steps}")
    if not dt_fs > 0:
        raise ConfigError(f"time step must be positive, got {dt_fs} fs")
    if interval < 1:
        raise ConfigError(f"interval must be >= 1, got {interval}")
    if uncertainty_every < 0:
        raise ConfigError(f"uncertainty_every must be >= 0 (0: never), got {uncertainty_every}")
    if runaway not in RUNAWAY_MODES:
        raise ConfigError(f"runaway must be one of {', '.join(RUNAWAY_MODES)}, got {runaway!r}")
    if thermostat not in ("langevin", "none"):
        raise ConfigError(f"unknown thermostat {thermostat!r} (use langevin or none)")
    if not temperature_K >= 0 or not np.isfinite(temperature_K):
        raise ConfigError(f"temperature must be a finite number >= 0 K, got {temperature_K}")
    if not friction_per_fs >= 0 or not np.isfinite(friction_per_fs):
        raise ConfigError(f"friction must be a finite number >= 0 per fs, got {friction_per_fs}")
    atoms = atoms.copy()
    atoms.calc = calc
    is_molecule = not np.any(atoms.pbc)
    rng = np.random.default_rng(seed)
    if initialize_velocities:
        # each process draws its own velocities (independent replicas under MPI)
        thermalize_momenta(atoms, temperature_K, exact_temperature=True, rng=rng, comm=DummyMPI())
        Stationary(atoms)  # both keep the temperature
        if is_molecule:
            ZeroRotation(atoms)
    if thermostat == "langevin":
        dyn = Langevin(atoms, dt_fs * units.fs, temperature_K=temperature_K,
                       friction=friction_per_fs / units.fs, fixcm=False, rng=rng, comm=DummyMPI())
    else:
        dyn = VelocityVerlet(atoms, dt_fs * units.fs)

    record = []
    for name in _RECORDED:
        if name in getattr(calc, "implemented_properties", ()):
            record.append(name)
    stds = [name for name in record if name.endswith("_std")] if uncertainty_every else []
    values_only = [name for name in record if not name.endswith("_std")]
    record = stds + values_only  # uncertainties first: they come with the values
    if max_uncertainty is not None and not uncertainty_every:
        raise ConfigError("max_uncertainty (--max-uncertainty) needs the uncertainties: "
                          "uncertainty_every (--std-every) must be >= 1")
    if max_uncertainty is None:
        limits: dict[str, float] = {}
    elif isinstance(max_uncertainty, dict):
        unknown = sorted(set(max_uncertainty) - set(_RECORDED[:3]))
        if unknown:
            raise ConfigError(f"max_uncertainty: unknown key(s) {', '.join(unknown)} (use {', '.join(_RECORDED[:3])})")
        limits = {k: float(v) for k, v in max_uncertainty.items() if k in stds}
    else:
        limits = {name: float(max_uncertainty) for name in stds}
    if isinstance(max_uncertainty, dict) and set(max_uncertainty) - set(limits):
        absent = ", ".join(sorted(set(max_uncertainty) - set(limits)))
        raise ConfigError(f"max_uncertainty: the calculator gives no {absent} "
                          f"(it gives {', '.join(stds) or 'no uncertainties'})")
    if max_uncertainty is not None and not limits:
        raise ConfigError("max_uncertainty (--max-uncertainty): the calculator gives no uncertainties "
                          "(only the ML models do; a reference method such as tblite has none)")

    # the first frame's properties before the output is opened: a structure or model the run
    # cannot use (an unknown element, a wrong atom order) fails here, and an existing file of the
    # same name is left as it was (the calculator keeps the results for the frame's first write)
    t0 = time.perf_counter()  # the run's time includes frame 0
    for name in record:
        calc.get_property(name, atoms)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    temps, etots = [], []
    n_frames = 0
    bar = None
    if progress:
        from tqdm import tqdm

        # disable=None: no bar when stderr is not a terminal (a log file gets no progress lines)
        bar = tqdm(total=steps, unit="step", desc="md", dynamic_ncols=True, disable=None)
    watch = RunawayWatch(temperature_K, dt_fs * interval) if runaway != "off" else None
    warnings: list[str] = []

    def say(message: str) -> None:
        if warn is not None:
            warn(message)
        elif bar is not None and not bar.disable:
            bar.write(f"warning: {message}", file=sys.stderr)
        else:
            print(f"warning: {message}", file=sys.stderr, flush=True)

    with open(output, "w") as handle:

        def observe() -> None:
            nonlocal n_frames
            with_std = bool(stds) and n_frames % uncertainty_every == 0
            names = record if with_std else values_only
            for name in names:  # values and uncertainties in one model call per slot
                calc.get_property(name, atoms)
            epot = float(atoms.get_potential_energy())
            ekin = float(atoms.get_kinetic_energy())
            if not np.isfinite(epot) or not np.all(np.isfinite(atoms.get_forces())):
                raise SimulationError(f"step {dyn.nsteps}: non-finite energy or forces")
            if is_molecule and largest_bond_gap(atoms) > LOST_ATOM_DISTANCE:
                raise SimulationError(
                    f"step {dyn.nsteps}: an atom is more than {LOST_ATOM_DISTANCE} Å from every other atom "
                    f"(the molecule fell apart); see {output}")
            temps.append(float(atoms.get_temperature()))
            etots.append(epot + ekin)
            handle.write(_frame_text(atoms, calc, dyn.nsteps, dt_fs, epot, ekin, names))
            handle.flush()
            n_frames += 1
            for name, limit in (limits.items() if with_std else ()):
                value = float(np.max(calc.get_property(name, atoms)))
                if value > limit:
                    raise SimulationError(
                        f"step {dyn.nsteps}: the model is too uncertain: {name} = {value:.3g} > limit {limit:g} "
                        f"(the frame is the last one in {output})")
            if watch is not None:
                recorded = {n: float(np.max(np.abs(calc.get_property(n, atoms)))) for n in stds} if with_std else {}
                message = watch.observe(dyn.nsteps, temps[-1], recorded)
                if message is not None:
                    warnings.append(message)
                    if runaway == "stop":
                        raise SimulationError(f"{message} (stopped; the frame is the last one in {output}; "
                                              f"--runaway warn, runaway='warn' in Python, goes on)")
                    say(message)

        observe()
        done = 0
        while done < steps:
            chunk = min(interval, steps - done)
            try:
                dyn.run(chunk)
            except SimulationError as exc:
                raise SimulationError(
                    f"step {dyn.nsteps + 1}: {exc} (trajectory up to step {done} in {output})") from None
            done += chunk
            if done % interval == 0:
                observe()
            if bar is not None:
                bar.update(chunk)
        wall = time.perf_counter() - t0
        os.fsync(handle.fileno())
    if bar is not None:
        bar.close()

    n = len(atoms)
    etots_arr = np.asarray(etots)
    return MDSummary(
        steps=steps,
        frames=n_frames,
        wall_time_s=wall,
        steps_per_s=steps / wall if wall > 0 else float("inf"),
        ns_per_day=(steps * dt_fs * 1e-6) / (wall / 86400.0) if wall > 0 else float("inf"),
        temperature_mean_K=float(np.mean(temps)),
        temperature_std_K=float(np.std(temps)),
        total_energy_drift_eV_per_atom=float((etots_arr[-1] - etots_arr[0]) / n),
        total_energy_max_deviation_eV_per_atom=float(np.abs(etots_arr - etots_arr[0]).max() / n),
        output=str(output),
        thermostat=thermostat,
        warnings=warnings,
    )


def run_md_command(args: Any) -> int:
    """``mdplugin md``: build the calculator from the options, run, print the summary."""
    from .ase import MLCalculator
    from ..structures.data import read_dataset
    from ..learn.parallel import get_comm

    start = read_dataset(args.start, properties=[], index=0).frames[0]
    calc = MLCalculator(energy=args.energy, dipole=args.dipole, polarizability=args.polarizability,
                        tensor_precision=getattr(args, "tensor_precision", "single"))
    calc.check_elements(start, args.start)
    seed, output = args.seed, Path(args.output)
    comm = get_comm()
    if getattr(args, "replicas", False) and comm.size > 1:
        seed = seed + 1000 * comm.rank
        output = output.with_name(f"{output.stem}.rank{comm.rank}{output.suffix}")
    summary = run_md(
        start, calc, steps=args.steps, dt_fs=args.dt, output=output,
        temperature_K=args.temperature, thermostat=args.thermostat,
        friction_per_fs=args.friction, interval=args.interval, seed=seed,
        progress=not args.quiet and comm.rank == 0,
        max_uncertainty=getattr(args, "max_uncertainty", None),
        uncertainty_every=getattr(args, "std_every", 10),
        runaway=getattr(args, "runaway", "stop"),
    )
    prefix = f"[rank {comm.rank}] " if comm.size > 1 else ""
    print(prefix + summary.text())
    return 0
