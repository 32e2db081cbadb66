#!/usr/bin/env python
"""Liquid water end to end: labelled boxes -> three models -> MD in ASE and i-PI (classical NVT then
NVE, and TRPMD) -> IR and Raman spectra, against the gas-phase monomer.

Every step is the command a user types (printed with a leading ``+``), run in ``OUT``:

1. data: ``DATA/train.xyz`` and ``DATA/test.xyz`` (``make_data.py``; with ``--quick`` and no
   ``--data`` a few 8-molecule boxes are made and labelled here);
2a. ``mdplugin active`` on the periodic box (``--active-rounds`` rounds, default 3): the energy model
   runs exploring ML Langevin segments, ``--active-batch`` structures of each are labelled by
   GFN2-xTB on the cell and the model is retrained; its ``active/energy.npz`` is the MD's energy model;
2. ``mdplugin train`` the ``soap`` energy and the ``lsoap`` dipole and polarizability models
   (hyper-parameters for liquids, :data:`LSOAP_HYPERS`), ``mdplugin evaluate`` them on the test boxes;
3. ASE: ``mdplugin md`` Langevin NVT, then NVE from its last frame (``ase_nvt.xyz``, ``ase_nve.xyz``);
4. i-PI: ``i-pi`` with ``mdplugin ipi`` as its client: NVT (SVR thermostat), NVE from the NVT
   checkpoint, and TRPMD (``P`` beads, PILE-G with λ = 0.5, started from the NVT end), dipoles and
   polarizabilities as i-PI extras (``ipi/``);
5. gas phase: one water molecule, GFN2-xTB NVE (``mdplugin md --energy tblite``), its dipole and
   polarizability from the liquid's models (``mdplugin spectrum ir|raman --model``);
6. ``mdplugin spectrum ir|raman`` of every run (TRPMD with ``--centroid P``, the bead average), the
   band positions in ``summary.json`` and the figure ``spectra.png``.

Usage::

    python examples/liquid_water/run.py --data /work/data/water -o /work/data/water2/run
    python examples/liquid_water/run.py --quick -o /tmp/water-run          # tiny boxes (the CI test)
    python examples/liquid_water/run.py --data DATA -o RUN --stages ase &   # stages side by side
    python examples/liquid_water/run.py --data DATA -o RUN --stages ipi &

Measured on 2026-12-08 (docs/condensed.md, "Active learning on the cell"): in the quick mode the
active stage and a 3.5 Å energy cutoff keep the 0.6 ps NVE near 300 K (it heated to 600 K before);
with the 3.5 Å energy cutoff the 32-molecule box holds a 2.2 ps NVE (at 5 Å it ran away at 1.3 ps).

The lengths (steps of 0.5 fs) are options; ``--quick`` (or ``MDPLUGIN_EXAMPLE_QUICK=1``) makes
everything tiny: 8-molecule boxes, a few hundred steps.
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
QUICK_ENV = "MDPLUGIN_EXAMPLE_QUICK"
DT = 0.5  # fs
TEMPERATURE = 300.0  # K

#: hyper-parameters for liquid water (docs/condensed.md, benchmarks/condensed_accuracy.py): the
#: models' defaults
LSOAP_HYPERS: dict = {}
#: the energy model: the defaults (1000 environments per species) with a 3.5 Å cutoff. On the
#: structures of its own ML dynamics the 5 Å default errs by 20 meV/atom, 3.5 Å by 5 (8-molecule
#: boxes); on 200 boxes of 32 molecules the forces err by 0.059 against 0.112 eV/Å, and the NVE
#: holds 2.2 ps where at 5 Å it ran away within 1 ps (docs/condensed.md, "Active learning on the cell")
SOAP_HYPERS: dict = {"cutoff": 3.5}
#: wavenumber windows of the bands, cm⁻¹
#: quick mode: training boxes of 8 molecules (energy, forces, dipole) and how many also get α
QUICK_BOXES, QUICK_ALPHA = 32, 6
BANDS = {"libration": (300.0, 1200.0), "bend": (1300.0, 2000.0), "stretch": (2600.0, 4200.0)}


def sh(cmd: list, cwd: Path, log: Path | None = None, background: bool = False):
    """Run (or start) one command, printed as a user would type it."""
    print("+ " + " ".join(str(c) for c in cmd), flush=True)
    if background:
        out = open(log, "w") if log else subprocess.DEVNULL
        return subprocess.Popen([str(c) for c in cmd], cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True)
    if log:
        log.write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


def exe(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        raise SystemExit(f"`{name}` is not installed")
    return found


# ------------------------------------------------------------------------------------------------
# 1. data


def quick_data(out: Path) -> Path:
    """Small labelled 8-molecule boxes: ``QUICK_BOXES`` training boxes with energy, forces and dipole
    (GFN2-xTB on the cell: a fraction of a second each), half of them from flexible-TIP3P MD at
    300 K and half at 600 K (the hotter frames stretch the bonds further: without them ML NVE at
    300 K leaves the data within a few hundred steps), ``QUICK_ALPHA`` boxes at 300 K with the
    cluster polarizability too, and 2 test boxes of another seed."""
    sys.path.insert(0, str(HERE))
    import ase.io
    import make_data

    out.mkdir(parents=True, exist_ok=True)
    box = make_data.start_box("water8", make_data.DEFAULT_START)
    plans = (("train", 1, QUICK_BOXES // 2, (300.0, 600.0), "energy,forces,dipole"),
             ("train_polarizability", 2, QUICK_ALPHA, (300.0,), "energy,forces,dipole,polarizability"),
             ("test", 101, 2, (300.0,), "energy,forces,dipole,polarizability"))
    for name, seed, n, temperatures, props in plans:
        if (out / f"{name}.xyz").exists():
            continue
        frames = []
        for temperature in temperatures:
            make_data.TEMPERATURE = temperature
            frames += make_data.tip3p_frames(box, seed, n, equilibration_ps=1.0, interval_fs=100.0)
        make_data.TEMPERATURE = TEMPERATURE
        ase.io.write(out / f"{name}_raw.xyz", frames, format="extxyz")
        sh([exe("mdplugin"), "label", out / f"{name}_raw.xyz", "-o", out / f"{name}.xyz", "--properties", props,
            "--quiet"], out)
    return out


# ------------------------------------------------------------------------------------------------
# 2. models


def train(data: Path, out: Path, hypers: dict, energy_hypers: dict, n_train: int | None = None) -> dict:
    """Train (or take) the three models and evaluate them on the test boxes. The energy model of an
    active-learning stage (``active/energy.npz``, trained on the boxes and the labelled frames of
    the ML dynamics) is taken as it is."""
    models = out / "models"
    models.mkdir(parents=True, exist_ok=True)
    errors = {}
    learned = out / "active" / "energy.npz"
    if learned.exists() and (out / "active" / "done").exists() and not (models / "energy.npz").exists():
        print(f"+ cp {learned} {models / 'energy.npz'}", flush=True)
        shutil.copyfile(learned, models / "energy.npz")
    for target, kind, extra in (("energy", "soap", energy_hypers), ("dipole", "lsoap", hypers),
                                ("polarizability", "lsoap", hypers)):
        path = models / f"{target}.npz"
        source = data / f"train_{target}.xyz"  # the quick mode labels α on fewer boxes
        source = source if source.exists() else data / "train.xyz"
        if not path.exists():
            cmd = [exe("mdplugin"), "train", source, "--target", target, "--model", kind, "-o", path]
            if extra:
                cmd += ["--hypers", json.dumps(extra)]
            if n_train:
                cmd += ["--n-train", n_train]
            sh(cmd, out)
        text = sh([exe("mdplugin"), "evaluate", path, data / "test.xyz", "--json"], out)
        errors[target] = json.loads(text.strip().splitlines()[-1])
    return errors


# ------------------------------------------------------------------------------------------------
# 2a. active learning on the cell


def active(data: Path, out: Path, rounds: int, batch: int, segment: int, energy_hypers: dict,
           targets: str = "energy") -> dict:
    """``mdplugin active`` on the periodic box: the energy model, trained on the boxes of
    ``train.xyz``, runs exploring Langevin segments of ``segment`` steps at 300 K (every third one
    hotter, the loop's default), and after each the ``batch`` most uncertain, mutually distant
    structures of the segment are labelled by GFN2-xTB on the cell and the model is retrained:
    ``rounds`` rounds. The TIP3P boxes never share a proton between two oxygens; the ML dynamics
    do, where the model has no data (docs/condensed.md). Returns the run's summary line."""
    run = out / "active"
    if (run / "done").exists():
        print(f"active learning: done before ({run / 'done'})", flush=True)
        return json.loads((run / "done").read_text())
    train0 = ase_read(data / "train.xyz", 0)
    ase_write(out / "active_start.xyz", train0)
    if (run / "state.npz").exists():  # killed before: go on
        cmd = [exe("mdplugin"), "active", "--resume", run, "--quiet"]
    else:
        cmd = [exe("mdplugin"), "active", out / "active_start.xyz", "-o", run, "--initial", data / "train.xyz",
               "--targets", targets, "--oracle", "tblite", "--temperature", TEMPERATURE, "--dt", DT,
               "--segment", segment, "--sample-every", 10, "--pool", max(1, segment // 10), "--selection", "max",
               "--batch", batch, "--max-calls", rounds * batch, "--seed", 5, "--quiet",
               # label every round: the most uncertain structures, whatever their uncertainty
               *[x for t in targets.split(",") for x in (f"--threshold-{t}", 1e-9)], "--stop-factor", 1e12]
        if energy_hypers:
            cmd += ["--energy-hypers", json.dumps(energy_hypers)]
    line = sh(cmd, out).strip().splitlines()[-1]
    result = {"summary": line, "rounds": rounds, "batch": batch, "segment_steps": segment}
    (run / "done").write_text(json.dumps(result))
    return result


def ase_read(path: Path, index):
    import ase.io

    return ase.io.read(path, index)


def ase_write(path: Path, atoms) -> None:
    import ase.io
    from ase import Atoms

    ase.io.write(path, Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc),
                 format="extxyz")


# ------------------------------------------------------------------------------------------------
# 3. ASE


def ase_md(start: Path, out: Path, nvt_steps: int, nve_steps: int) -> dict:
    import ase.io

    m = out / "models"
    models = ["--energy", m / "energy.npz", "--dipole", m / "dipole.npz", "--polarizability", m / "polarizability.npz"]
    md = [exe("mdplugin"), "md", "--dt", DT, "--temperature", TEMPERATURE, "--std-every", 0, "--quiet"]
    sh(md + [start, *models, "--steps", nvt_steps, "--interval", 20, "--seed", 1, "-o", out / "ase_nvt.xyz"], out)
    last = ase.io.read(out / "ase_nvt.xyz", -1)
    ase.io.write(out / "ase_nvt_last.xyz", last, format="extxyz")
    text = sh(md + [out / "ase_nvt_last.xyz", *models, "--steps", nve_steps, "--thermostat", "none", "--seed", 2,
                    "-o", out / "ase_nve.xyz"], out)
    return {"summary": text.strip().splitlines()[-1], "nve_drift_meV_per_atom": _drift(out / "ase_nve.xyz"),
            "nve_temperature_K": _temperatures(out / "ase_nve.xyz")}


def _temperatures(path: Path) -> dict:
    """Mean kinetic temperature (K) of the first and the second half of an ASE trajectory."""
    import ase.io

    t = np.array([a.info["temperature"] for a in ase.io.read(path, ":")])
    half = len(t) // 2
    return {"first_half": float(t[:half].mean()), "second_half": float(t[half:].mean())}


def _drift(path: Path) -> float:
    """Total-energy change over an NVE trajectory, meV per atom (a linear fit, end minus start)."""
    import ase.io

    frames = ase.io.read(path, ":")
    e = np.array([a.info["total_energy"] for a in frames])
    t = np.arange(len(e))
    slope = np.polyfit(t, e, 1)[0]
    return float(1000 * slope * (len(e) - 1) / len(frames[0]))


# ------------------------------------------------------------------------------------------------
# 4. i-PI

def ipi_run(name: str, out: Path, template: Path, init: Path, steps: int, beads: int, ensemble: str, seed: int,
            clients: int = 1, init_mode: str = "ase") -> Path:
    """One i-PI run (``ensemble`` nvt: SVR thermostat, nve, or trpmd: PILE-G with λ = 0.5) of the
    periodic box ``init`` (or the i-PI checkpoint, ``init_mode='chk'``) with ``clients`` mdplugin
    clients on a UNIX socket of its own; dipoles and polarizabilities every step, a checkpoint at
    the end (``ipi/<name>.chk``); returns its folder."""
    from mdplugin.engines.ipi import write_input

    work = out / "ipi"
    work.mkdir(parents=True, exist_ok=True)
    done = work / f"{name}.done"
    if done.exists():  # finished before
        print(f"i-PI {name}: done before ({done})", flush=True)
        return work
    address = f"mdplugin-water-{name}-{os.getpid()}"
    write_input(work / f"{name}.xml", init=init, init_mode=init_mode, steps=steps, socket=address, pbc=True,
                ensemble=ensemble, n_beads=beads, dt_fs=DT, temperature_K=TEMPERATURE, seed=seed, prefix=name,
                properties=("step", "time{femtosecond}", "conserved{electronvolt}", "temperature{kelvin}",
                            "potential{electronvolt}"), properties_stride=10,
                positions_stride=max(1, steps // 20), checkpoint_stride=steps, safe_stride=100)
    socket = Path(f"/tmp/ipi_{address}")
    socket.unlink(missing_ok=True)
    env_threads = dict(os.environ, OMP_NUM_THREADS="1")
    print(f"+ cd {work} && i-pi {name}.xml &", flush=True)
    server = subprocess.Popen([exe("i-pi"), f"{name}.xml"], cwd=work, stdout=open(work / f"{name}.log", "w"),
                              stderr=subprocess.STDOUT, env=env_threads)
    m = out / "models"
    cmd = [exe("mdplugin"), "ipi", "--template", template, "--energy", m / "energy.npz", "--dipole",
           m / "dipole.npz", "--polarizability", m / "polarizability.npz", "--unix", "--address", address, "--no-std"]
    clients_p = [sh(cmd, work, log=work / f"{name}.client{k}.log", background=True) for k in range(clients)]
    try:
        for c in clients_p:
            if c.wait() != 0:
                raise SystemExit(f"mdplugin ipi failed: {(work / f'{name}.client0.log').read_text()[-2000:]}")
        if server.wait(timeout=120) != 0:
            raise SystemExit(f"i-PI failed: {(work / f'{name}.log').read_text()[-2000:]}")
        done.write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    finally:
        for p in (server, *clients_p):
            if p.poll() is None:
                p.kill()
        socket.unlink(missing_ok=True)
    return work


def ipi_md(start: Path, out: Path, nvt_steps: int, nve_steps: int) -> dict:
    """Classical NVT, then NVE from its checkpoint (positions, momenta)."""
    import ase.io

    work = ipi_run("nvt", out, start, start, nvt_steps, 1, "nvt", seed=11)
    ipi_run("nve", out, start, work / "nvt.chk", nve_steps, 1, "nve", seed=12, init_mode="chk")
    rows = np.loadtxt(work / "nve.out", ndmin=2)
    half = len(rows) // 2
    return {"nve_drift_meV_per_atom": _ipi_drift(work / "nve.out", len(ase.io.read(start))),
            "nve_temperature_K": {"first_half": float(rows[:half, 3].mean()),
                                  "second_half": float(rows[half:, 3].mean())}}


def trpmd(start: Path, out: Path, steps: int, beads: int) -> None:
    """TRPMD: the ring polymer starts collapsed on ``start`` (the classical NVT end when that run is
    done, else the start box), with thermal bead momenta; two clients share the beads."""
    import ase.io

    work = out / "ipi"
    work.mkdir(parents=True, exist_ok=True)
    if (work / "nvt.done").exists():
        ase.io.write(work / "trpmd_start.xyz", ase.io.read(work / "nvt.pos_0.extxyz", -1), format="extxyz")
        start = work / "trpmd_start.xyz"
    ipi_run("trpmd", out, start, start, steps, beads, "trpmd", seed=13, clients=min(2, beads))


def _ipi_drift(path: Path, n_atoms: int) -> float:
    """Conserved-quantity change over i-PI's NVE run (linear fit, end minus start), meV per atom."""
    rows = np.loadtxt(path, ndmin=2)
    t, e = rows[:, 1], rows[:, 2]
    slope = np.polyfit(t, e, 1)[0]
    return float(1000 * slope * (t[-1] - t[0]) / n_atoms)


# ------------------------------------------------------------------------------------------------
# 5. gas phase


def gas_md(out: Path, steps: int) -> Path:
    import ase.io
    from ase.build import molecule

    w = molecule("H2O")
    ase.io.write(out / "monomer.xyz", w, format="extxyz")
    # --runaway warn: the kinetic temperature of 3 atoms swings far more than a liquid's
    md = [exe("mdplugin"), "md", "--dt", DT, "--temperature", TEMPERATURE, "--quiet", "--energy", "tblite",
          "--runaway", "warn"]
    sh(md + [out / "monomer.xyz", "--steps", steps // 4, "--seed", 3, "-o", out / "gas_nvt.xyz"], out)
    last = ase.io.read(out / "gas_nvt.xyz", -1)
    ase.io.write(out / "gas_nvt_last.xyz", last, format="extxyz")
    sh(md + [out / "gas_nvt_last.xyz", "--steps", steps, "--thermostat", "none", "--seed", 4,
             "-o", out / "gas_nve.xyz"], out)
    return out / "gas_nve.xyz"


# ------------------------------------------------------------------------------------------------
# 6. spectra


def spectra(out: Path, beads: int, blocks: int, depth: float) -> dict:
    ipi = out / "ipi"
    spec = out / "spectra"
    spec.mkdir(exist_ok=True)
    common = ["--dt", DT, "--temperature", TEMPERATURE, "--depth", depth, "--max-wavenumber", 4500]
    runs = {
        "ase": (["ase_nve.xyz"], ["ase_nve.xyz"], ["--blocks", blocks]),
        "ipi": ([ipi / "nve.dipole_0"], [ipi / "nve.polarizability_0"], ["--blocks", blocks]),
        "trpmd": ([ipi / f"trpmd.dipole_{b:0{_digits(beads)}d}" for b in range(beads)],
                  [ipi / f"trpmd.polarizability_{b:0{_digits(beads)}d}" for b in range(beads)],
                  ["--centroid", beads, "--blocks", blocks]),
        "gas": (["gas_nve.xyz"], ["gas_nve.xyz"], ["--blocks", blocks]),
    }
    results = {}
    for run, (dip, pol, extra) in runs.items():
        for kind, files in (("ir", dip), ("raman", pol)):
            csv = spec / f"{run}_{kind}.csv"
            cmd = [exe("mdplugin"), "spectrum", kind, *files, *common, *extra, "-o", csv]
            if run == "gas":  # md --energy tblite records no dipole: the liquid's models on the monomer
                cmd += ["--model", out / "models" / ("dipole.npz" if kind == "ir" else "polarizability.npz")]
            sh(cmd, out)
            results[f"{run}_{kind}"] = bands(csv, kind)
    return results


def _digits(beads: int) -> int:
    return int(1 + np.floor(np.log10(beads)))


def bands(csv: Path, kind: str) -> dict:
    """Peak wavenumber (cm⁻¹, between grid points by a parabola) and share of the integral of each
    band window."""
    from mdplugin.spectra import band_peak, read_csv

    res = read_csv(csv)
    nu = res["wavenumber"]
    y = res["ir" if kind == "ir" else "unpolarized"]
    inside = (nu > 200) & (nu < 4500)
    total = np.trapezoid(y[inside], nu[inside])
    out = {}
    for name, (lo, hi) in BANDS.items():
        sel = (nu >= lo) & (nu <= hi)
        out[name] = {"peak": band_peak(nu, y, lo, hi), "share": float(np.trapezoid(y[sel], nu[sel]) / total)}
    return out


def figure(out: Path, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mdplugin.spectra import read_csv

    spec = out / "spectra"
    fig, axes = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    styles = {"ase": ("liquid, ASE NVE", "C0", "-"), "ipi": ("liquid, i-PI NVE", "C1", "--"),
              "trpmd": ("liquid, i-PI TRPMD centroid", "C2", "-"), "gas": ("gas-phase monomer", "k", ":")}
    panels = [("ir", "ir", "IR"), ("raman", "isotropic", "isotropic Raman"), ("raman", "anisotropic", "anisotropic Raman")]
    for ax, (kind, column, label) in zip(axes, panels):
        for run, (name, color, ls) in styles.items():
            csv = spec / f"{run}_{kind}.csv"
            if not csv.exists():
                continue
            res = read_csv(csv)
            y, nu = res.get(column), res["wavenumber"]
            if y is None:
                continue
            sel = (nu > 100) & (nu < 4300)
            scale = np.max(y[sel]) or 1.0
            ax.plot(nu[sel], y[sel] / scale, color=color, ls=ls, lw=1.2, label=name)
            err = res.get(f"{column}_stat_err")
            if err is not None and run != "gas":
                ax.fill_between(nu[sel], (y[sel] - err[sel]) / scale, (y[sel] + err[sel]) / scale,
                                color=color, alpha=0.2, lw=0)
        ax.set_ylabel(f"{label}\n(normalised)")
        for lo, hi in BANDS.values():
            ax.axvspan(lo, hi, color="grey", alpha=0.05)
    axes[0].legend(fontsize=8, loc="upper left")
    axes[-1].set_xlabel("wavenumber (cm$^{-1}$)")
    axes[0].set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


# ------------------------------------------------------------------------------------------------


def main(argv=None) -> None:
    global TEMPERATURE
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--out", type=Path, default=Path("water-run"), help="output folder")
    p.add_argument("--data", type=Path, help="folder with the labelled train.xyz and test.xyz (make_data.py)")
    p.add_argument("--start", type=Path, help="start box of the MD (default: the first test box)")
    p.add_argument("--quick", action="store_true", help=f"tiny sizes, for CI (also {QUICK_ENV}=1)")
    p.add_argument("--temperature", type=float, default=TEMPERATURE, help="K (default 300)")
    p.add_argument("--nvt", type=int, default=2000, help="NVT steps (ASE and i-PI), 0.5 fs each")
    p.add_argument("--nve", type=int, default=8000, help="NVE steps (ASE and i-PI)")
    p.add_argument("--trpmd", type=int, default=2000, help="TRPMD steps")
    p.add_argument("--beads", type=int, default=4, help="TRPMD beads")
    p.add_argument("--gas", type=int, default=8000, help="gas-phase NVE steps")
    p.add_argument("--blocks", type=int, default=4, help="blocks of the statistical error bars")
    p.add_argument("--depth", type=float, default=500.0, help="correlation depth, fs")
    p.add_argument("--hypers", default=json.dumps(LSOAP_HYPERS), help="lsoap hyper-parameters (JSON)")
    p.add_argument("--energy-hypers", default=json.dumps(SOAP_HYPERS),
                   help="soap energy hyper-parameters (JSON; default %(default)s, a 3.5 Å cutoff)")
    p.add_argument("--n-train", type=int, help="train on this many boxes drawn at random (default: all)")
    p.add_argument("--active-rounds", type=int, default=3,
                   help="active-learning rounds on the cell before the MD (0: none; --quick: 3)")
    p.add_argument("--active-batch", type=int, default=8, help="boxes labelled per round (--quick: 8)")
    p.add_argument("--active-segment", type=int, default=200, help="ML MD steps per round (--quick: 200)")
    p.add_argument("--stages", default="data,active,train,ase,ipi,trpmd,gas,spectra",
                   help="comma list; stages on one folder may also run as separate processes side by side")
    args = p.parse_args(argv)
    quick = args.quick or os.environ.get(QUICK_ENV) == "1"
    TEMPERATURE = args.temperature
    if quick:
        # `mdplugin spectrum` needs 3 blocks of at least twice the 100 fs depth: 1200 steps per series
        args.nvt, args.nve, args.trpmd, args.beads, args.gas = 100, 1200, 1200, 2, 1200
        args.blocks, args.depth = 3, 100.0
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    stages = args.stages.split(",")
    summary_path = out / "summary.json"
    summary = dict(date=time.strftime("%Y-%m-%d"), quick=quick, dt_fs=DT, temperature_K=TEMPERATURE,
                   steps={"nvt": args.nvt, "nve": args.nve, "trpmd": args.trpmd, "beads": args.beads, "gas": args.gas},
                   commit=subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True,
                                         text=True).stdout.strip())
    t0 = time.perf_counter()
    data = args.data.resolve() if args.data else out / "data"
    if "data" in stages and not args.data:
        quick_data(data)
    start = args.start
    if start is None:
        import ase.io

        ase.io.write(out / "start.xyz", ase.io.read(data / "test.xyz", 0), format="extxyz")
        start = out / "start.xyz"
    start = Path(start).resolve()
    if "active" in stages and args.active_rounds > 0:
        summary["active"] = active(data, out, args.active_rounds, args.active_batch, args.active_segment,
                                   json.loads(args.energy_hypers))
    if "train" in stages:
        summary["test_errors"] = train(data, out, json.loads(args.hypers), json.loads(args.energy_hypers),
                                       args.n_train)
    if "ase" in stages:
        summary["ase"] = ase_md(start, out, args.nvt, args.nve)
    if "ipi" in stages:
        summary["ipi"] = ipi_md(start, out, args.nvt, args.nve)
    if "trpmd" in stages:
        trpmd(start, out, args.trpmd, args.beads)
    if "gas" in stages:
        gas_md(out, args.gas)
    if "spectra" in stages:
        summary["bands"] = spectra(out, args.beads, args.blocks, args.depth)
        figure(out, out / "spectra.png", f"liquid water (32 H2O) and the monomer, GFN2-xTB-trained models, "
                                         f"{summary['date']}")
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    # stages may run as separate processes on one folder (e.g. ase and ipi side by side): merge
    merged = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    merged.update(summary)
    summary = merged
    tmp = summary_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(summary_path)
    for run, b in summary.get("bands", {}).items():
        print(f"{run:12s} " + "  ".join(f"{k} {v['peak']:.0f} cm-1 ({100 * v['share']:.0f} %)" for k, v in b.items()))
    print(f"done in {summary['wall_s']:.0f} s: {out}")


if __name__ == "__main__":
    main()
