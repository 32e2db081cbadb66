"""IR band positions of 1,2-dichloroethane: the demo's ML MD vs a short GFN2-xTB MD.

Runs GFN2-xTB (tblite, one thread) molecular dynamics with the same protocol as ``mdplugin demo``
(start from the first frame of ``examples/trajectories/dce_test.xyz``, Langevin equilibration at
300 K, then NVE with fresh 300 K velocities, dipoles from tblite), computes the IR spectrum with
:func:`mdplugin.spectra.ir_spectrum` (same depth, window and quantum correction as the demo) and
compares the band maxima with the demo's ML IR spectrum.

    python benchmarks/bench_demo_bands.py --demo demo-output            # reads demo-output/ir.csv
    python benchmarks/bench_demo_bands.py --run-demo /tmp/demo          # runs the demo first
    python benchmarks/bench_demo_bands.py --demo demo-output --nve-ps 10 --save-csv xtb_ir.csv --plot bands.png

Bands (maximum of the total IR absorption in each window, parabolic interpolation):
C–Cl stretch 650–800, CH₂ wag 1150–1350, CH₂ scissor 1380–1500, C–H stretch 2900–3150 cm⁻¹.
Prints a Markdown table. GFN2-xTB positions differ from experiment; the comparison is ML vs the
method it was trained on.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import tblite.ase  # noqa: F401  (import before threadpoolctl limits the BLAS threads)
from threadpoolctl import threadpool_limits

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BANDS = {
    "C–Cl stretch": (650.0, 800.0),
    "CH₂ wag": (1150.0, 1350.0),
    "CH₂ scissor": (1380.0, 1500.0),
    "C–H stretch": (2900.0, 3150.0),
}


def band_maxima(wavenumber: np.ndarray, intensity: np.ndarray) -> dict[str, float]:
    """Position (cm⁻¹) of the largest value of ``intensity`` inside each window of :data:`BANDS`,
    refined by a parabola through the maximum and its two neighbours."""
    out = {}
    dnu = wavenumber[1] - wavenumber[0]
    for name, (lo, hi) in BANDS.items():
        idx = np.flatnonzero((wavenumber >= lo) & (wavenumber <= hi))
        if len(idx) == 0:
            out[name] = float("nan")
            continue
        i = idx[np.argmax(intensity[idx])]
        a, b, c = intensity[i - 1], intensity[i], intensity[i + 1]
        den = a - 2 * b + c
        shift = float(np.clip(0.5 * (a - c) / den, -0.5, 0.5)) if den != 0 else 0.0
        out[name] = float(np.clip(wavenumber[i] + shift * dnu, lo, hi))
    return out


def run_xtb(args: argparse.Namespace, workdir: Path):
    """GFN2-xTB MD (equilibration + NVE); returns (IR spectrum, seconds, summaries)."""
    from tblite.ase import TBLite

    from mdplugin.structures.data import read_dataset
    from mdplugin.engines.md import run_md
    from mdplugin.spectra import ir_spectrum, read_series

    start = read_dataset(ROOT / "examples" / "trajectories" / "dce_test.xyz", index=0).frames[0]
    dt, interval = args.dt, args.interval
    series, summaries = [], []
    t0 = time.perf_counter()
    for r in range(args.replicas):
        if args.reuse and (workdir / f"xtb_nve{r}.xyz").exists():
            series.append(read_series(workdir / f"xtb_nve{r}.xyz", "dipole"))
            continue
        calc = TBLite(method="GFN2-xTB", verbosity=0)
        eq = run_md(start, calc, steps=int(round(1000 * args.equil_ps / dt)), dt_fs=dt,
                    output=workdir / f"xtb_eq{r}.xyz", temperature_K=args.temperature, thermostat="langevin",
                    friction_per_fs=0.02, interval=50, seed=args.seed + 10 * r, progress=args.progress)
        import ase.io

        last = ase.io.read(workdir / f"xtb_eq{r}.xyz", index=-1)
        nve = run_md(last, calc, steps=int(round(1000 * args.nve_ps / dt)), dt_fs=dt,
                     output=workdir / f"xtb_nve{r}.xyz", temperature_K=args.temperature, thermostat="none",
                     interval=interval, seed=args.seed + 10 * r + 1, progress=args.progress)
        summaries.append((eq, nve))
        series.append(read_series(workdir / f"xtb_nve{r}.xyz", "dipole"))
    seconds = time.perf_counter() - t0
    step = dt * interval
    depth = args.depth or min(1000.0, min(len(s) for s in series) * step / 4)
    ir = ir_spectrum(series, step, args.temperature, depth=depth, max_wavenumber=3600.0)
    return ir, seconds, summaries


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--demo", help="folder of a finished demo run (reads ir.csv)")
    src.add_argument("--run-demo", metavar="DIR", help="run `mdplugin demo -o DIR` first")
    p.add_argument("--quick", action="store_true", help="with --run-demo: the demo's reduced mode")
    p.add_argument("--equil-ps", type=float, default=1.0, help="Langevin equilibration, ps (default 1)")
    p.add_argument("--nve-ps", type=float, default=5.0, help="NVE production per replica, ps (default 5)")
    p.add_argument("--replicas", type=int, default=1, help="independent GFN2-xTB trajectories (default 1)")
    p.add_argument("--dt", type=float, default=0.5, help="time step, fs (default 0.5, as the demo)")
    p.add_argument("--interval", type=int, default=2, help="record the dipole every N steps (default 2)")
    p.add_argument("--temperature", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--save-csv", help="write the GFN2-xTB IR spectrum here")
    p.add_argument("--depth", type=float, default=None,
                   help="correlation depth, fs (default: as the demo, min(1000, run length / 4))")
    p.add_argument("--reuse", action="store_true", help="reuse GFN2-xTB NVE trajectories found in --workdir")
    p.add_argument("--xtb-csv", help="reuse a GFN2-xTB IR spectrum written by --save-csv (no MD)")
    p.add_argument("--plot", help="PNG comparing the two spectra")
    p.add_argument("--workdir", help="keep the GFN2-xTB trajectories here (default: a temporary folder)")
    p.add_argument("--progress", action="store_true", help="progress bars")
    args = p.parse_args(argv)

    from mdplugin.spectra import read_csv, write_csv

    demo_dir = None
    if args.run_demo:
        from mdplugin.cli.demo import run_demo

        run_demo(args.run_demo, quick=args.quick, progress=args.progress)
        demo_dir = Path(args.run_demo)
    elif args.demo:
        demo_dir = Path(args.demo)

    if args.xtb_csv:
        saved = read_csv(args.xtb_csv)
        xtb_nu = saved["wavenumber"]
        xtb_total = saved[next(k for k in saved if k != "wavenumber")]
        print(f"GFN2-xTB IR spectrum read from {args.xtb_csv}")
    else:
        with threadpool_limits(1), tempfile.TemporaryDirectory() as tmp:
            workdir = Path(args.workdir) if args.workdir else Path(tmp)
            workdir.mkdir(parents=True, exist_ok=True)
            ir, seconds, summaries = run_xtb(args, workdir)
        n_steps = sum(s.steps for pair in summaries for s in pair)
        if n_steps:
            print(f"GFN2-xTB MD: {args.replicas} x ({args.equil_ps:g} ps Langevin + {args.nve_ps:g} ps NVE) at "
                  f"{args.dt:g} fs, {n_steps} steps in {seconds:.0f} s ({n_steps / seconds:.1f} steps/s, 1 thread)")
        for _, nve in summaries:
            print(f"  NVE: T = {nve.temperature_mean_K:.0f} ± {nve.temperature_std_K:.0f} K, total-energy drift "
                  f"{1000 * nve.total_energy_drift_eV_per_atom:+.3f} meV/atom")
        if args.save_csv:
            write_csv(ir, args.save_csv)
        xtb_nu, xtb_total = ir.wavenumber, ir.total
    xtb = band_maxima(xtb_nu, xtb_total)

    ml = None
    if demo_dir is not None:
        table = read_csv(demo_dir / "ir.csv")
        nu = table["wavenumber"]
        total = table[next(k for k in table if k != "wavenumber")]
        ml = band_maxima(nu, total)

    print()
    if ml is None:
        print("| band | window (cm⁻¹) | GFN2-xTB MD (cm⁻¹) |\n|---|---|---|")
        for name, (lo, hi) in BANDS.items():
            print(f"| {name} | {lo:.0f}–{hi:.0f} | {xtb[name]:.0f} |")
    else:
        print("| band | window (cm⁻¹) | GFN2-xTB MD (cm⁻¹) | ML MD, demo (cm⁻¹) | ML − GFN2-xTB (cm⁻¹) |")
        print("|---|---|---|---|---|")
        for name, (lo, hi) in BANDS.items():
            print(f"| {name} | {lo:.0f}–{hi:.0f} | {xtb[name]:.0f} | {ml[name]:.0f} | {ml[name] - xtb[name]:+.0f} |")
    print(f"\nspectral grid: GFN2-xTB {xtb_nu[1] - xtb_nu[0]:.1f} cm⁻¹"
          + (f", ML {nu[1] - nu[0]:.1f} cm⁻¹" if ml is not None else ""))

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 4))
        ax.plot(xtb_nu, xtb_total / xtb_total.max(), label="GFN2-xTB MD")
        if ml is not None:
            ax.plot(nu, total / total.max(), label="ML MD (demo)", alpha=0.8)
        for lo, hi in BANDS.values():
            ax.axvspan(lo, hi, color="0.9", zorder=0)
        ax.set_xlim(0, 3600)
        ax.set_xlabel("wavenumber (cm⁻¹)")
        ax.set_ylabel("IR absorption (normalised)")
        ax.set_title("1,2-dichloroethane, 300 K: IR from ML MD vs GFN2-xTB MD")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
