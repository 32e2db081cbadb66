#!/usr/bin/env python
"""Make the labelled example data sets in ``examples/trajectories/``.

Two stages, both deterministic (fixed seeds):

1. **MD.** Langevin dynamics with GFN2-xTB (tblite) of 1,2-dichloroethane (ClCH2–CH2Cl) at
   300 K and 600 K, started from the anti *and* the gauche conformer so that both appear, and of
   water at 300 K and 600 K. Frames are sampled every ``stride`` steps (20 fs) after an
   equilibration period. Unlabelled frames go to ``RAW_DIR/<set>.xyz``.
2. **Labels.** Each raw file is labelled with the project's own command,
   ``mdplugin label RAW.xyz -o OUT.xyz --properties energy,forces,dipole,polarizability``.

Usage::

    python examples/make_trajectories.py                    # everything (~15-25 min on 2 cores)
    python examples/make_trajectories.py --quick -o /tmp/x  # a few frames per set, for a smoke test
    python examples/make_trajectories.py --reuse-raw        # label existing raw files only
    python examples/make_trajectories.py --ranks 2          # label with mpiexec -n 2 mdplugin label
    python examples/make_trajectories.py --sets dce_extra   # one data set only (here the 300 extra DCE frames)

The MD part is importable for other scripts (e.g. reference trajectories for benchmarks)::

    from make_trajectories import dichloroethane, langevin_frames
    frames = langevin_frames(dichloroethane("gauche"), temperature_K=450, n_frames=100, seed=7)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase import units as ase_units

HERE = Path(__file__).resolve().parent

# --------------------------------------------------------------------------------------------
# structures


def _substituent_directions(axis: np.ndarray, phases_deg: list[float]) -> np.ndarray:
    """Unit vectors at the tetrahedral angle to ``-axis`` with the given rotation phases (°).

    ``axis`` points from the other carbon to this one; the returned bonds make 109.47° with the
    C–C bond. Phases are measured in a fixed basis perpendicular to the axis.
    """
    e = axis / np.linalg.norm(axis)
    ref = np.array([1.0, 0.0, 0.0]) if abs(e[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    p1 = ref - ref.dot(e) * e
    p1 /= np.linalg.norm(p1)
    p2 = np.cross(e, p1)
    theta = np.deg2rad(180.0 - 109.47)  # angle between the bond and the axis
    phi = np.deg2rad(np.asarray(phases_deg, dtype=float))
    return (np.cos(theta) * e[None, :]
            + np.sin(theta) * (np.cos(phi)[:, None] * p1 + np.sin(phi)[:, None] * p2))


def dichloroethane(conformer: str = "anti") -> Atoms:
    """1,2-dichloroethane, Cl–C–C–Cl dihedral 180° (``"anti"``) or 65° (``"gauche"``).

    Idealised geometry (C–C 1.52 Å, C–Cl 1.79 Å, C–H 1.09 Å, tetrahedral angles), not optimised.
    Atom order: C, C, Cl, Cl, H, H, H, H (Cl 2 on C 0, Cl 3 on C 1).
    """
    tau = {"anti": 180.0, "gauche": 65.0}.get(conformer)
    if tau is None:
        raise ValueError(f"unknown conformer {conformer!r} (anti or gauche)")
    c1 = np.zeros(3)
    c2 = np.array([0.0, 0.0, 1.52])
    d1 = _substituent_directions(c1 - c2, [0.0, 120.0, 240.0])
    # on the second carbon the axis is reversed, which mirrors the phase: use -tau
    d2 = _substituent_directions(c2 - c1, [-tau, -tau + 120.0, -tau + 240.0])
    positions = np.array([
        c1, c2,
        c1 + 1.79 * d1[0], c2 + 1.79 * d2[0],
        c1 + 1.09 * d1[1], c1 + 1.09 * d1[2],
        c2 + 1.09 * d2[1], c2 + 1.09 * d2[2],
    ])
    atoms = Atoms("C2Cl2H4", positions=positions)
    atoms.positions -= atoms.get_center_of_mass()
    return atoms


def water() -> Atoms:
    """A water molecule (ASE's ``molecule("H2O")`` geometry)."""
    from ase.build import molecule

    return molecule("H2O")


def clccl_dihedral(atoms: Atoms) -> float:
    """The Cl–C–C–Cl dihedral of a dichloroethane frame in degrees, folded to [0, 180]."""
    d = atoms.get_dihedral(2, 0, 1, 3)
    return float(min(d, 360.0 - d))


def conformer_of(atoms: Atoms) -> str:
    """``"anti"`` if the Cl–C–C–Cl dihedral is above 120°, else ``"gauche"``."""
    return "anti" if clccl_dihedral(atoms) > 120.0 else "gauche"


# --------------------------------------------------------------------------------------------
# MD


def tblite_calculator():
    """GFN2-xTB through tblite's ASE calculator, quiet."""
    from tblite.ase import TBLite

    return TBLite(method="GFN2-xTB", verbosity=0)


def langevin_frames(
    atoms: Atoms,
    temperature_K: float,
    n_frames: int,
    seed: int,
    *,
    calculator=None,
    timestep_fs: float = 0.5,
    stride: int = 40,
    equilibration_steps: int = 1000,
    friction_per_fs: float = 0.01,
    optimise: bool = True,
) -> list[Atoms]:
    """Langevin MD frames (positions only) sampled every ``stride`` steps.

    Parameters
    ----------
    atoms : starting structure (not modified).
    temperature_K : thermostat temperature, K.
    n_frames : number of frames returned (after ``equilibration_steps`` steps).
    seed : seeds the initial velocities and the Langevin noise (results are reproducible).
    calculator : ASE calculator for the forces; default GFN2-xTB (tblite).
    timestep_fs, stride : time step in fs and steps between saved frames (default 0.5 fs × 40 = 20 fs).
    friction_per_fs : Langevin friction, 1/fs.
    optimise : relax the start structure first (BFGS, fmax 0.05 eV/Å), keeping its conformer.
    """
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
    from ase.optimize import BFGS

    rng = np.random.default_rng(seed)
    atoms = atoms.copy()
    atoms.calc = calculator if calculator is not None else tblite_calculator()
    if optimise:
        BFGS(atoms, logfile=None).run(fmax=0.05, steps=200)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    atoms.set_constraint(FixCom())
    dyn = Langevin(atoms, timestep_fs * ase_units.fs, temperature_K=temperature_K,
                   friction=friction_per_fs / ase_units.fs, fixcm=False, rng=rng)
    dyn.run(equilibration_steps)
    frames = []
    for _ in range(n_frames):
        dyn.run(stride)
        frames.append(Atoms(numbers=atoms.numbers, positions=atoms.positions.copy()))
    return frames


@dataclass(frozen=True)
class Run:
    """One MD run: molecule, start conformer, temperature, number of frames, seed."""

    molecule: str
    start: str
    temperature_K: float
    n_frames: int
    seed: int

    def start_structure(self) -> Atoms:
        return dichloroethane(self.start) if self.molecule == "dce" else water()


#: the data sets: name -> runs (training and test runs use different seeds)
DATASETS: dict[str, list[Run]] = {
    "dce_train": [
        Run("dce", "anti", 300, 300, 101),
        Run("dce", "gauche", 300, 300, 102),
        Run("dce", "anti", 600, 300, 103),
        Run("dce", "gauche", 600, 300, 104),
    ],
    "dce_test": [
        Run("dce", "anti", 300, 125, 201),
        Run("dce", "gauche", 300, 125, 202),
        Run("dce", "anti", 600, 125, 203),
        Run("dce", "gauche", 600, 125, 204),
    ],
    # 300 more DCE frames from independent runs (issue 8: 2000 frames with train + test)
    "dce_extra": [
        Run("dce", "anti", 300, 75, 401),
        Run("dce", "gauche", 300, 75, 402),
        Run("dce", "anti", 600, 75, 403),
        Run("dce", "gauche", 600, 75, 404),
    ],
    # independent runs at temperatures the training set does not have (issue 27: does the isotropic
    # polarizability generalise?), written where the user says (benchmarks/bench_isotropic.py)
    "dce_other_temperatures": [
        Run("dce", "anti", 450, 50, 501),
        Run("dce", "gauche", 450, 50, 502),
        Run("dce", "anti", 800, 50, 503),
        Run("dce", "gauche", 200, 50, 504),
    ],
    "water": [
        Run("water", "-", 300, 150, 301),
        Run("water", "-", 600, 150, 302),
    ],
}


def _run_one(args: tuple[Run, bool]) -> list[Atoms]:
    run, quick = args
    n = 3 if quick else run.n_frames
    eq = 20 if quick else 1000
    return langevin_frames(run.start_structure(), run.temperature_K, n, run.seed,
                           equilibration_steps=eq)


def make_raw(name: str, raw_dir: Path, quick: bool = False, workers: int = 2) -> Path:
    """Run the MD of data set ``name`` and write its unlabelled frames to ``raw_dir/name.xyz``."""
    import ase.io

    runs = DATASETS[name]
    jobs = [(r, quick) for r in runs]
    if workers > 1:
        from multiprocessing import get_context

        with get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            results = pool.map(_run_one, jobs)
    else:
        results = [_run_one(j) for j in jobs]
    frames = [f for fr in results for f in fr]
    raw_dir.mkdir(parents=True, exist_ok=True)
    path = raw_dir / f"{name}.xyz"
    ase.io.write(path, frames, format="extxyz")
    return path


# --------------------------------------------------------------------------------------------
# labels


def label(raw: Path, out: Path, ranks: int = 1) -> None:
    """Label ``raw`` into ``out`` with the project's own ``mdplugin label`` command.

    With ``ranks > 1`` the command runs under ``mpiexec -n ranks`` (frames shared across ranks).
    """
    bindir = str(Path(sys.executable).parent)
    exe = shutil.which("mdplugin", path=bindir) or shutil.which("mdplugin")
    if exe is None:
        raise SystemExit("the `mdplugin` command is not installed (pip install -e .)")
    cmd = [exe, "label", str(raw), "-o", str(out),
           "--properties", "energy,forces,dipole,polarizability"]
    if ranks > 1:
        mpiexec = shutil.which("mpiexec", path=bindir) or shutil.which("mpiexec")
        if mpiexec is None:
            raise SystemExit("--ranks needs mpiexec (pip install 'mdplugin[mpi]')")
        cmd = [mpiexec, "-n", str(ranks)] + cmd
    print("+", " ".join(Path(cmd[0]).name if i == 0 else c for i, c in enumerate(cmd)), flush=True)
    subprocess.run(cmd, check=True)


def summary(out_dir: Path, names: list[str]) -> str:
    """Markdown table: frames, file size, and the gauche/anti fractions per temperature."""
    from mdplugin.structures.data import read_dataset

    lines = ["| file | frames | size | conformers (Cl–C–C–Cl) |", "|---|---|---|---|"]
    for name in names:
        path = out_dir / f"{name}.xyz"
        data = read_dataset(path)
        runs = DATASETS[name]
        conf = "–"
        if runs[0].molecule == "dce":
            per_run = len(data) // len(runs)  # frames are stored run after run
            by_t: dict[float, list[str]] = {}
            for k, r in enumerate(runs):
                by_t.setdefault(r.temperature_K, []).extend(
                    conformer_of(a) for a in data.frames[k * per_run:(k + 1) * per_run])
            by_t[-1.0] = [conformer_of(a) for a in data.frames]
            parts = []
            for t, c in sorted(by_t.items()):
                g = c.count("gauche") / len(c)
                where = "all" if t < 0 else f"{t:.0f} K"
                parts.append(f"{where}: {100 * g:.0f} % gauche / {100 * (1 - g):.0f} % anti")
            conf = "; ".join(parts[1:] + parts[:1])
        size = path.stat().st_size / 1e6
        lines.append(f"| `{name}.xyz` | {len(data)} | {size:.2f} MB | {conf} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--out", type=Path, default=HERE / "trajectories", help="output folder")
    p.add_argument("--raw-dir", type=Path, default=None,
                   help="folder for the unlabelled MD frames (default: TMPDIR/mdplugin_raw_trajectories)")
    p.add_argument("--sets", default=",".join(DATASETS), help="comma-separated data sets")
    p.add_argument("--quick", action="store_true", help="3 frames per run, short equilibration")
    p.add_argument("--reuse-raw", action="store_true", help="skip MD where raw files exist")
    p.add_argument("--md-only", action="store_true", help="run the MD, do not label")
    p.add_argument("--workers", type=int, default=2, help="parallel MD runs")
    p.add_argument("--ranks", type=int, default=1, help="label with mpiexec -n RANKS mdplugin label")
    args = p.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    names = [n for n in args.sets.split(",") if n]
    raw_dir = args.raw_dir or Path(tempfile.gettempdir()) / "mdplugin_raw_trajectories"
    for name in names:
        raw = raw_dir / f"{name}.xyz"
        if not (args.reuse_raw and raw.exists()):
            print(f"MD for {name} ...", flush=True)
            make_raw(name, raw_dir, quick=args.quick, workers=args.workers)
        if args.md_only:
            continue
        label(raw, args.out / f"{name}.xyz", ranks=args.ranks)
    if not args.md_only:
        print(summary(args.out, names))


if __name__ == "__main__":
    main()
