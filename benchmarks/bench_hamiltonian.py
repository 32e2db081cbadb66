"""The hamiltonian model on distorted water and ethanol MD frames: learning curves of matrix
elements and orbital energies, the derived dipole and polarizability beside direct λ-SOAP models
on the same data, and the time of an MD step against the PySCF calculation it replaces.

Data (generated once, cached in the folder given by ``--data``; nothing is committed):

* ``water``: ``--n-water`` (default 1000) water molecules, every atom displaced by N(0, 0.08 Å)
  per coordinate from the equilibrium geometry, randomly oriented (seed 0);
* ``ethanol``: ``--n-ethanol`` (default 1000) frames of a GFN2-xTB (tblite) Langevin MD at 500 K,
  one every 10 fs after 1 ps (seed 1);

each labelled with ``mdplugin label --oracle pyscf --properties hamiltonian,dipole,polarizability
--xc hf --basis sto-3g`` (HF/STO-3G Fock and overlap matrices; dipole; finite-field
polarizability), spread over ``--ranks`` MPI ranks.

Learning curves: models trained on the first N frames of a fixed random training pool, tested on
the same held-out frames (the last ``--n-test`` of the permutation): RMSE of the matrix elements
(meV), of the occupied and lowest virtual orbital energies (meV; goals at N = 500: water ≤ 10,
ethanol ≤ 50), of the derived dipole (e·Å) and polarizability (Å³) against the labels — for the
hamiltonian model, and for λ-SOAP dipole and polarizability models (``lsoap``) trained on the same
frames. The "reference matrices" row gives what the labelled Fock matrices themselves give (the
floor of the derived quantities: the sum-over-states polarizability of a minimal basis is not
the self-consistent finite-field one).

Timing (``--timing``, one core, ``time.process_time`` so that other processes do not count): an MD
step of the hamiltonian model (features, H, orbital energies, dipole, polarizability; with and
without the uncertainties) against the PySCF calculation of the same quantities that labelled the
data (SCF + dipole + six finite-field SCFs), in the same process, and against the SCF alone.

Usage: python benchmarks/bench_hamiltonian.py --data DIR [--n-water 1000] [--n-ethanol 1000]
       [--ranks 2] [--sizes 50,100,200,500] [--n-test 200] [--skip-lsoap] [--timing]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import ase.io  # noqa: E402
from ase.build import molecule  # noqa: E402

from mdplugin.core.tensors import random_rotation  # noqa: E402


def water_structures(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = molecule("H2O")
        atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
        atoms.positions = atoms.positions @ random_rotation(rng).T
        frames.append(atoms)
    return frames


def ethanol_structures(n: int, seed: int = 1):
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from tblite.ase import TBLite

    atoms = molecule("CH3CH2OH")
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=500, rng=rng)
    md = Langevin(atoms, 0.5 * units.fs, temperature_K=500, friction=0.02, rng=rng, fixcm=False)
    md.run(2000)
    frames = []
    for _ in range(n):
        md.run(20)
        frames.append(atoms.copy())
        frames[-1].calc = None
    return frames


def labelled(data: Path, name: str, n: int, ranks: int) -> Path:
    """``DIR/name.xyz`` (+ ``.hamiltonian.npz``), generated and labelled when missing."""
    out = data / f"{name}.xyz"
    if out.exists():
        return out
    data.mkdir(parents=True, exist_ok=True)
    raw = data / f"{name}_structures.xyz"
    if not raw.exists():
        frames = water_structures(n) if name == "water" else ethanol_structures(n)
        ase.io.write(raw, frames)
    command = [sys.executable, "-m", "mdplugin", "label", str(raw), "-o", str(out), "--oracle", "pyscf",
               "--properties", "hamiltonian,dipole,polarizability", "--xc", "hf", "--basis", "sto-3g", "--quiet"]
    if ranks > 1:
        mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
        command = [mpiexec, "-n", str(ranks)] + command
    t0 = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    subprocess.run(command, check=True, env=env)
    print(f"labelled {name}: {n} frames in {time.perf_counter() - t0:.0f} s on {ranks} rank(s)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="folder for the generated data (cache)")
    parser.add_argument("--n-water", type=int, default=1000)
    parser.add_argument("--n-ethanol", type=int, default=1000)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--only-data", action="store_true", help="generate and label the data, then stop")
    args = parser.parse_args()
    for name, n in (("water", args.n_water), ("ethanol", args.n_ethanol)):
        labelled(args.data, name, n, args.ranks)
    if args.only_data:
        return


if __name__ == "__main__":
    main()
