#!/usr/bin/env python
"""Make the labelled liquid-water boxes (train.xyz, test.xyz) for the condensed-phase models.

Two stages, deterministic (fixed seeds), resumable (each finished chunk of labels is kept):

1. **Structures.** Molecular dynamics of flexible TIP3P water (OpenMM: CHARMM's flexible TIP3P
   bonds and angle, PME electrostatics, Langevin at 300 K, 0.5 fs steps) from
   ``water32_tip3p_300K.xyz`` (32 molecules) and a 64-molecule box made from it
   (``repeat((2, 1, 1))``), one run per seed: 5 ps of equilibration, then a frame every 200 fs.
   Training and test frames come from different seeds (independent trajectories).
2. **Labels.** GFN2-xTB with the project's own command,
   ``mpiexec -n RANKS mdplugin label CHUNK.xyz -o CHUNK_labelled.xyz`` (energy and forces of the
   cell, the continuous cell dipole, the cluster polarizability; docs/condensed.md), 10 frames a
   chunk. A rerun labels only the chunks still missing.

Why TIP3P structures and GFN2-xTB labels: GFN2-xTB on a periodic 96-atom box costs about 10 s per
step on one core (its periodic dispersion and multipole sums), so equilibrated GFN2-xTB MD of
several independent seeds is out of reach here; flexible TIP3P samples the liquid's intermolecular
structure and thermal bond and angle motion for a few ms per step. The labels are GFN2-xTB's.

Usage::

    python examples/liquid_water/make_data.py -o /work/data/water --ranks 2   # ~2 core-hours
    python examples/liquid_water/make_data.py --quick -o /tmp/water            # 8-molecule boxes, ~1 min

Needs ``openmm`` (``pip install 'mdplugin[examples]'``) for stage 1.
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
QUICK_ENV = "MDPLUGIN_EXAMPLE_QUICK"
DEFAULT_START = REPO.parent / "shared" / "data" / "water-box" / "water32_tip3p_300K.xyz"

TEMPERATURE = 300.0  # K
TIMESTEP = 0.5  # fs
FRICTION = 1.0  # 1/ps
EQUILIBRATION = 5.0  # ps
INTERVAL = 200.0  # fs between frames
CHUNK = 10  # frames per labelling chunk

#: (set, box, seed, frames): training and test frames come from different seeds
PLAN = [
    *[("train", "water32", seed, 40) for seed in range(1, 6)],
    ("test", "water32", 101, 24), ("test", "water32", 102, 24), ("test", "water64", 201, 12),
]
QUICK_PLAN = [("train", "water8", 1, 2), ("test", "water8", 101, 2)]


# --------------------------------------------------------------------------------------------
# structures


def start_box(name: str, start: Path):
    """The start structure of a box: ``water32`` (the shared file), ``water64`` (it repeated along
    a) or ``water8`` (8 molecules on a lattice in a 6.21 Å cube, for the quick mode)."""
    import ase.io
    from ase import Atoms
    from ase.build import molecule

    if name == "water8":
        side = (8 * 18.015 / 0.997 / 0.60221) ** (1 / 3)  # Å at 0.997 g/cm³
        rng = np.random.default_rng(0)
        positions = []
        for corner in np.array(np.meshgrid(*[[0.25, 0.75]] * 3)).reshape(3, -1).T:
            w = molecule("H2O")
            w.rotate(rng.uniform(0, 360), rng.normal(size=3))
            positions.append(w.positions - w.get_center_of_mass() + corner * side)
        return Atoms("OH2" * 8, positions=np.concatenate(positions), cell=[side] * 3, pbc=True)
    box = ase.io.read(start)
    box = Atoms(numbers=box.numbers, positions=box.positions, cell=box.cell, pbc=True)
    return box.repeat((2, 1, 1)) if name == "water64" else box


def tip3p_frames(box, seed: int, n_frames: int, equilibration_ps: float = EQUILIBRATION,
                 interval_fs: float = INTERVAL) -> list:
    """Frames of flexible-TIP3P Langevin MD (OpenMM, PME) at 300 K: ``n_frames`` every
    ``interval_fs`` after ``equilibration_ps``. Atoms must come as O, H, H per molecule."""
    import openmm as mm
    from openmm import app, unit
    from ase import Atoms

    if list(box.get_chemical_symbols()[:3]) != ["O", "H", "H"] or len(box) % 3:
        raise SystemExit("the start box must list its atoms as O, H, H per molecule")
    topology = app.Topology()
    chain = topology.addChain()
    oxygen, hydrogen = app.Element.getBySymbol("O"), app.Element.getBySymbol("H")
    for _ in range(len(box) // 3):
        residue = topology.addResidue("HOH", chain)
        o = topology.addAtom("O", oxygen, residue)
        for name in ("H1", "H2"):
            topology.addBond(o, topology.addAtom(name, hydrogen, residue))
    topology.setPeriodicBoxVectors(box.cell.array * 0.1 * unit.nanometer)
    cutoff = 0.1 * min(9.0, 0.49 * float(np.min(box.cell.cellpar()[:3])))  # nm: at most 9 Å, below half the box
    system = app.ForceField("tip3p.xml").createSystem(topology, nonbondedMethod=app.PME, nonbondedCutoff=cutoff,
                                                      constraints=None, rigidWater=False)
    integrator = mm.LangevinMiddleIntegrator(TEMPERATURE * unit.kelvin, FRICTION / unit.picosecond,
                                             TIMESTEP * unit.femtoseconds)
    integrator.setRandomNumberSeed(seed)
    sim = app.Simulation(topology, system, integrator, mm.Platform.getPlatform("CPU"), {"Threads": "1"})
    sim.context.setPositions(box.positions * 0.1)
    sim.minimizeEnergy(maxIterations=200)
    sim.context.setVelocitiesToTemperature(TEMPERATURE * unit.kelvin, seed)
    sim.step(int(round(equilibration_ps * 1000 / TIMESTEP)))
    stride = int(round(interval_fs / TIMESTEP))
    frames = []
    for _ in range(n_frames):
        sim.step(stride)
        pos = sim.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.angstrom)
        frames.append(Atoms(numbers=box.numbers, positions=np.asarray(pos), cell=box.cell, pbc=True))
    return frames


# --------------------------------------------------------------------------------------------
# labels


def mdplugin_label(raw: Path, out: Path, ranks: int) -> None:
    """``[mpiexec -n ranks] mdplugin label raw -o out`` (all four labels)."""
    bindir = str(Path(sys.executable).parent)
    exe = shutil.which("mdplugin", path=bindir) or shutil.which("mdplugin")
    if exe is None:
        raise SystemExit("the `mdplugin` command is not installed (pip install -e .)")
    cmd = [exe, "label", str(raw), "-o", str(out), "--quiet"]
    if ranks > 1:
        mpiexec = shutil.which("mpiexec", path=bindir) or shutil.which("mpiexec")
        if mpiexec is None:
            raise SystemExit("--ranks needs mpiexec (pip install 'mdplugin[mpi]')")
        cmd = [mpiexec, "-n", str(ranks)] + cmd
    print("+", " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd)), flush=True)
    subprocess.run(cmd, check=True)


def make(out: Path, plan: list, ranks: int, start: Path, quick: bool) -> dict:
    """Run both stages into ``out``; returns the timings (s) and frame counts."""
    import ase.io

    from mdplugin.structures.data import read_dataset, write_dataset

    raw_dir = out / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    log_path = out / "timings.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {"md_s": {}, "label_s": {}}
    sets: dict[str, list[Path]] = {"train": [], "test": []}
    for set_name, box_name, seed, n_frames in plan:
        run = f"{box_name}_seed{seed}"
        raw = raw_dir / f"{run}.xyz"
        if not raw.exists():
            t0 = time.perf_counter()
            eq = 1.0 if quick else EQUILIBRATION
            frames = tip3p_frames(start_box(box_name, start), seed, n_frames, equilibration_ps=eq)
            ase.io.write(raw.with_suffix(".tmp.xyz"), frames, format="extxyz")
            raw.with_suffix(".tmp.xyz").replace(raw)
            log["md_s"][run] = round(time.perf_counter() - t0, 1)
            log_path.write_text(json.dumps(log, indent=1))
        frames = ase.io.read(raw, ":")
        for first in range(0, len(frames), CHUNK):
            chunk = raw_dir / f"{run}_{first:03d}.xyz"
            labelled = raw_dir / f"{run}_{first:03d}_labelled.xyz"
            if not labelled.exists():
                ase.io.write(chunk, frames[first:first + CHUNK], format="extxyz")
                t0 = time.perf_counter()
                mdplugin_label(chunk, labelled, ranks)
                log["label_s"][labelled.name] = round(time.perf_counter() - t0, 1)
                log_path.write_text(json.dumps(log, indent=1))
            sets[set_name].append(labelled)
    counts = {}
    for set_name, parts in sets.items():
        data = None
        for part in parts:
            d = read_dataset(part)
            data = d if data is None else data + d
        write_dataset(out / f"{set_name}.xyz", data)
        counts[set_name] = len(data)
    log["frames"] = counts
    log["ranks"] = ranks
    log["equilibration_ps"] = 1.0 if quick else EQUILIBRATION
    log_path.write_text(json.dumps(log, indent=1))
    write_readme(out, log, plan)
    return log


def write_readme(out: Path, log: dict, plan: list) -> None:
    """``out/README.md``: how the files were made, with the times of both stages."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    rows = "\n".join(f"| {s} | {box} | {seed} | {n} |" for s, box, seed, n in plan)
    md = sum(log["md_s"].values())
    label = sum(log["label_s"].values())
    text = f"""# Liquid-water boxes labelled with GFN2-xTB

Made by `examples/liquid_water/make_data.py` (mdplugin {commit}); `train.xyz` has {log['frames']['train']}
boxes, `test.xyz` {log['frames']['test']}, from different seeds (independent trajectories):

| set | box | seed | frames |
|---|---|---|---|
{rows}

1. Structures: flexible TIP3P (OpenMM's tip3p.xml with rigidWater=False: harmonic O-H and H-O-H terms,
   PME), Langevin at {TEMPERATURE:g} K (friction {FRICTION:g}/ps, {TIMESTEP:g} fs steps) from
   water32_tip3p_300K.xyz (water64: it repeated twice along a), {log.get('equilibration_ps', EQUILIBRATION):g} ps of equilibration per
   seed, then a frame every {INTERVAL:g} fs. Raw frames: raw/<box>_seed<seed>.xyz.
2. Labels: `mpiexec -n {log['ranks']} mdplugin label CHUNK.xyz -o CHUNK_labelled.xyz` on chunks of {CHUNK}
   frames: energy (eV) and forces (eV/Å) of GFN2-xTB on the periodic cell, the dipole (e·Å) as the sum of
   whole molecules' dipoles about their centres of mass, the polarizability (Å³) as the sum of each
   molecule's response in its 4 Å cluster (docs/condensed.md).

Time: MD {md:.0f} s, labels {label:.0f} s of wall time on {log['ranks']} MPI ranks of a shared 2-core
machine (per chunk in timings.json; load average {os.getloadavg()[0]:.1f} when this file was written).
"""
    (out / "README.md").write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", nargs="?", help="output folder (same as -o)")
    parser.add_argument("-o", "--out", help="output folder (default /work/data/water, or ./water-data)")
    parser.add_argument("--ranks", type=int, default=1, help="label with mpiexec -n RANKS mdplugin label")
    parser.add_argument("--start", type=Path, default=DEFAULT_START, help="the 32-molecule start box")
    parser.add_argument("--quick", action="store_true", help=f"two 8-molecule boxes per set (also {QUICK_ENV}=1)")
    args = parser.parse_args()
    quick = args.quick or os.environ.get(QUICK_ENV) == "1"
    out = Path(args.out or args.output or ("water-data" if quick else "/work/data/water"))
    if not quick and not args.start.exists():
        raise SystemExit(f"{args.start}: no such file (give the 32-molecule box with --start)")
    t0 = time.perf_counter()
    log = make(out, QUICK_PLAN if quick else PLAN, args.ranks, args.start, quick)
    print(f"wrote {out / 'train.xyz'} ({log['frames']['train']} boxes) and {out / 'test.xyz'} "
          f"({log['frames']['test']} boxes) in {time.perf_counter() - t0:.0f} s; timings in {out / 'timings.json'}")


if __name__ == "__main__":
    main()
