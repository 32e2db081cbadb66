"""ASE molecular dynamics with ML forces, recording ML dipoles and polarizabilities.

Trains a SOAP energy model and RPR dipole and polarizability models on the example data
(1,2-dichloroethane, GFN2-xTB labels), attaches them to an ``ase.Atoms`` through
:class:`mdplugin.engines.ase.MLCalculator`, runs Langevin equilibration then NVE with ASE's own
integrators, and records the dipole, the polarizability and their uncertainties at every step.
Writes ``traj.xyz`` (extended XYZ: positions, energy, forces, dipole, polarizability) and
``series.npz`` (dipole (n, 3) e·Å, polarizability (n, 3, 3) Å³, their std, time fs), then the IR
spectrum from the dipoles.

    python examples/ase_md_dipoles.py [-o OUT_DIR] [--quick]

``--quick`` (or ``MDPLUGIN_EXAMPLE_QUICK=1``): 40 training frames and 60 MD steps, for CI.
The same with the command line: ``mdplugin md START.xyz --energy energy.npz --dipole dipole.npz
--polarizability alpha.npz --steps N --dt 0.5 -o traj.xyz`` (docs/md.md). See docs/calculator.md.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import ase.io
import numpy as np
from ase import units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
from ase.md.verlet import VelocityVerlet

from mdplugin.engines.ase import MLCalculator
from mdplugin.structures.data import read_dataset
from mdplugin.models import build
from mdplugin.spectra import ir_spectrum, plot_spectra, write_csv
from mdplugin.models.training import fit_on_dataset, select_training

DATA = Path(__file__).resolve().parent / "trajectories"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-o", "--output", default="ase-md-dipoles", help="output folder")
    p.add_argument("--quick", action="store_true", help="reduced run for CI")
    args = p.parse_args(argv)
    quick = args.quick or os.environ.get("MDPLUGIN_EXAMPLE_QUICK") == "1"
    n_train, n_eq, n_nve = (40, 20, 40) if quick else (300, 400, 2000)
    dt = 0.5  # fs
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)

    # 1. models (RPR trains in seconds; swap "rpr" for "lsoap" for λ-SOAP, nothing else changes)
    train = select_training(read_dataset(DATA / "dce_train.xyz"), n_train, seed=0)
    energy = fit_on_dataset(build("soap", target="energy"), train)
    dipole = fit_on_dataset(build("rpr", target="dipole"), train)
    alpha = fit_on_dataset(build("rpr", target="polarizability"), train)
    print(f"trained energy (SOAP), dipole and polarizability (RPR) models on {len(train)} frames")

    # 2. an ASE calculator with all three; model files work too: MLCalculator(energy="energy.npz", ...)
    atoms = read_dataset(DATA / "dce_test.xyz", index=0).frames[0].copy()
    atoms.calc = MLCalculator(energy=energy, dipole=dipole, polarizability=alpha)
    rng = np.random.default_rng(0)
    thermalize_momenta(atoms, temperature_K=300, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)

    # 3. equilibrate (Langevin), then NVE, recording at every step
    Langevin(atoms, dt * units.fs, temperature_K=300, friction=0.02 / units.fs, fixcm=False, rng=rng).run(n_eq)
    record: dict[str, list] = {k: [] for k in ("dipole", "dipole_std", "polarizability",
                                               "polarizability_std", "time", "total_energy")}
    dyn = VelocityVerlet(atoms, dt * units.fs)
    traj = open(out / "traj.xyz", "w")

    def observe() -> None:
        calc = atoms.calc
        mu = atoms.get_dipole_moment()                       # (3,) e·Å
        a = calc.get_property("polarizability", atoms)       # (3, 3) Å³
        record["dipole"].append(mu)
        record["dipole_std"].append(calc.get_property("dipole_std", atoms))
        record["polarizability"].append(a)
        record["polarizability_std"].append(calc.get_property("polarizability_std", atoms))
        record["time"].append(dyn.nsteps * dt)
        record["total_energy"].append(atoms.get_potential_energy() + atoms.get_kinetic_energy())
        frame = atoms.copy()
        frame.calc = None
        frame.info.update(dipole=mu, polarizability=np.asarray(a).ravel(), time=dyn.nsteps * dt)
        ase.io.write(traj, frame, format="extxyz")

    dyn.attach(observe, interval=1)
    dyn.run(n_nve)
    traj.close()
    series = {k: np.asarray(v) for k, v in record.items()}
    np.savez(out / "series.npz", **series)

    n_atoms = len(atoms)
    drift = (series["total_energy"][-1] - series["total_energy"][0]) / n_atoms
    print(f"NVE: {n_nve} steps of {dt} fs; total-energy drift {1000 * drift:+.3f} meV/atom")
    print(f"dipole: mean |μ| {np.linalg.norm(series['dipole'], axis=1).mean():.3f} e·Å, "
          f"mean predicted std {series['dipole_std'].mean():.4f} e·Å")
    print(f"polarizability: mean trace/3 {np.trace(series['polarizability'], axis1=1, axis2=2).mean() / 3:.2f} Å³, "
          f"mean predicted std {series['polarizability_std'].mean():.4f} Å³")

    # 4. the IR spectrum of this (short) trajectory
    ir = ir_spectrum([series["dipole"]], dt, 300.0, depth=min(500.0, n_nve * dt / 4))
    write_csv(ir, out / "ir.csv")
    plot_spectra([ir], out / "ir.png", title="1,2-dichloroethane, ASE NVE with ML models")
    print(f"IR peaks (cm⁻¹): {', '.join(f'{x:.0f}' for x in ir.peaks())}")
    print(f"wrote {out}/traj.xyz series.npz ir.csv ir.png")
    return {"drift_eV_per_atom": float(drift), "n_frames": len(series["time"])}


if __name__ == "__main__":
    main()
