"""What the i-PI client's uncertainties cost per structure, and what ``--std-every`` saves.

The PES of ``mdplugin ipi`` (``MdpluginDriver.compute_structure``, what i-PI's driver loop calls for
every structure) is timed in one process on the same structures (a Langevin trajectory of
1,2-dichloroethane with the models), with the ``*_std`` extras sent with every structure
(``std_every=1``, what the client did before), every 10th (``--std-every 10``, the default now) and
never (``--no-std``). Per structure: median and mean wall time; the ratios are to ``--no-std``.

    OMP_NUM_THREADS=1 python benchmarks/bench_ipi_std.py --models DIR   # DIR: energy_soap.npz, dipole_lsoap.npz,
                                                                       # polarizability_lsoap.npz (mdplugin demo -o X: X/models)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="folder with energy_soap.npz, dipole_lsoap.npz, polarizability_lsoap.npz")
    ap.add_argument("--structures", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import ase.io
    from ase import units
    from ase.md.langevin import Langevin

    from mdplugin.core.units import BOHR
    from mdplugin.engines.ase import MLCalculator
    from mdplugin.engines.ipi import MdpluginDriver

    models = Path(args.models)
    files = {"energy": models / "energy_soap.npz", "dipole": models / "dipole_lsoap.npz",
             "polarizability": models / "polarizability_lsoap.npz"}
    start = ase.io.read(REPO / "examples" / "trajectories" / "dce_test.xyz", index=0)
    start.cell = [20.0, 20.0, 20.0]
    template = Path("bench_ipi_std_template.xyz").resolve()
    ase.io.write(template, start)
    # the structures: a Langevin trajectory with the models
    atoms = start.copy()
    atoms.calc = MLCalculator(**{k: str(v) for k, v in files.items()})
    dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=300, friction=0.01 / units.fs, rng=np.random.default_rng(0))
    positions = []
    for _ in range(args.structures):
        dyn.run(1)
        positions.append(atoms.positions / BOHR)
    cell = np.eye(3) * 20.0 / BOHR

    settings = {"every structure (std_every=1)": {"std_every": 1}, "--std-every 10": {"std_every": 10},
                "--no-std": {"std": False}}
    times: dict[str, list[float]] = {name: [] for name in settings}
    drivers = {name: MdpluginDriver(template=str(template), energy=str(files["energy"]), dipole=str(files["dipole"]),
                                    polarizability=str(files["polarizability"]), **kw)
               for name, kw in settings.items()}
    for _ in range(args.rounds):  # the settings interleaved, round by round
        for name, driver in drivers.items():
            driver.evaluations = 0
            for pos in positions:
                t0 = time.perf_counter()
                driver.compute_structure(cell, pos)
                times[name].append(time.perf_counter() - t0)
    base = np.mean(times["--no-std"])
    for name, t in times.items():
        t = np.asarray(t) * 1000
        print(f"{name:>30}: median {np.median(t):7.2f} ms, mean {t.mean():7.2f} ms per structure "
              f"({t.mean() / 1000 / base:.2f}x --no-std)")
    print(f"load {os.getloadavg()[0]:.1f}, git "
          + subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True).stdout.strip())
    template.unlink()


if __name__ == "__main__":
    main()
