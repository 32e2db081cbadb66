"""A minimal-basis Hamiltonian model of water, from reference matrices to an IR spectrum.

1. Distorted water molecules are labelled with PySCF: HF/STO-3G Fock and overlap matrices
   (``water.hamiltonian.npz`` beside ``water.xyz``) and dipoles — the same as
   ``mdplugin label water_in.xyz -o water.xyz --oracle pyscf --properties hamiltonian,dipole --xc hf``.
2. A ``hamiltonian`` model is trained on 200 of them and evaluated on 100 others: errors of the
   matrix elements, the occupied and lowest virtual orbital energies, the gap, and the dipole
   derived from the predicted density matrix.
3. The model file goes into the calculator's dipole and polarizability slots (GFN2-xTB forces
   drive the MD), which also reports the orbital energies and HOMO–LUMO gap; an IR spectrum is
   computed from the trajectory.

Usage: python examples/hamiltonian_water.py [-o OUT_DIR] [--quick]   (~3 min; --quick ~1 min)
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import ase.io
import numpy as np
from ase.build import molecule

from mdplugin.engines.ase import MLCalculator
from mdplugin.engines.md import run_md
from mdplugin.models import build, load_model
from mdplugin.models.training import evaluate_model
from mdplugin.oracles.label import label_file
from mdplugin.spectra import spectrum_command
from mdplugin.structures.data import read_dataset
from mdplugin.structures.distortions import random_distortions
from mdplugin.structures.hamiltonians import attach_hamiltonians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", default="hamiltonian_water", help="folder for the files (default ./hamiltonian_water)")
    parser.add_argument("--quick", action="store_true", help="fewer structures and MD steps")
    args = parser.parse_args()
    quick = args.quick or os.environ.get("MDPLUGIN_EXAMPLE_QUICK") == "1"
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    n_train, n_test, steps = (60, 30, 400) if quick else (200, 100, 4000)

    # 1. reference data: HF/STO-3G matrices and dipoles from PySCF
    for name, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        ase.io.write(out / f"{name}_in.xyz", random_distortions(molecule("H2O"), n, seed=seed))
        label_file(out / f"{name}_in.xyz", out / f"{name}.xyz", oracle="pyscf", properties=["hamiltonian", "dipole"],
                   pyscf_options={"xc": "hf", "basis": "sto-3g"}, progress=False)

    # 2. train and evaluate
    train = attach_hamiltonians(read_dataset(out / "train.xyz"))
    model = build("hamiltonian", target="hamiltonian").fit(train.frames, train.hamiltonian)
    model.save(out / "water_h.npz")
    errors = evaluate_model(load_model(out / "water_h.npz"), attach_hamiltonians(read_dataset(out / "test.xyz")))
    print(f"held-out: matrix elements {1000 * errors['rmse']:.1f} meV, occupied + LUMO orbital energies "
          f"{1000 * errors['orbital_energies_rmse']:.1f} meV, gap {1000 * errors['gap_rmse']:.1f} meV, "
          f"derived dipole {errors['dipole_rmse']:.4f} e·Å (RMSE)")

    # 3. the model file in the calculator: dipoles, polarizabilities, orbital energies along an MD run
    atoms = molecule("H2O")
    calc = MLCalculator(energy="tblite", dipole=out / "water_h.npz", polarizability=out / "water_h.npz")
    atoms.calc = calc
    print(f"equilibrium water: gap {calc.get_property('gap', atoms):.2f} eV, dipole "
          f"{np.linalg.norm(atoms.get_dipole_moment()):.3f} e·Å, orbital energies (eV) "
          f"{np.round(calc.get_property('orbital_energies', atoms), 2).tolist()}")
    summary = run_md(atoms, calc, steps=steps, dt_fs=0.5, output=out / "md.xyz", temperature_K=300.0, seed=0,
                     progress=False)
    gaps = [f.info["gap"] for f in ase.io.read(out / "md.xyz", ":")]
    print(f"MD: {summary.steps} steps; gap along the trajectory {np.mean(gaps):.2f} ± {np.std(gaps):.2f} eV")
    spectrum = spectrum_command("ir", [str(out / "md.xyz")], dt=0.5, output=str(out / "ir.csv"), plot=None,
                                temperature=300.0)
    print(f"IR spectrum -> {out / 'ir.csv'} ({spectrum.summary()})")
    (out / "metrics.json").write_text(json.dumps({**errors, "gap_mean": float(np.mean(gaps)),
                                                  "gap_std_along_md": float(np.std(gaps))}))


if __name__ == "__main__":
    main()
