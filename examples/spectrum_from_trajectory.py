"""IR and Raman spectra of an existing trajectory: predict dipoles and polarizabilities, then spectra.

A trajectory from any MD engine (any ASE-readable file of positions at a fixed time step) gets ML
dipoles and polarizabilities frame by frame, and the IR and Raman spectra follow from their
autocorrelation functions. Without a trajectory argument, the script first makes one: a short
GFN2-xTB (tblite) NVE run of 1,2-dichloroethane, standing in for "a trajectory from another code".

    python examples/spectrum_from_trajectory.py [TRAJ --dt FS] [-o OUT_DIR] [--quick]

``--quick`` (or ``MDPLUGIN_EXAMPLE_QUICK=1``): 40 training frames and a 100-step trajectory, for CI.
The same from the command line::

    mdplugin train examples/trajectories/dce_train.xyz --target dipole --model rpr -o dipole.npz
    mdplugin train examples/trajectories/dce_train.xyz --target polarizability --model rpr -o alpha.npz
    mdplugin predict dipole.npz traj.xyz -o mu.xyz
    mdplugin predict alpha.npz traj.xyz -o alpha.xyz
    mdplugin spectrum ir mu.xyz --dt 1.0 --temperature 300 -o ir.csv --plot ir.png
    mdplugin spectrum raman alpha.xyz --dt 1.0 --temperature 300 -o raman.csv --plot raman.png

(the script runs these commands too, through :func:`mdplugin.cli.parser.main`, and checks that they give
the same IR spectrum as the Python route). Formulas, units and options: docs/spectra.md.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "trajectories"


def make_reference_trajectory(path: Path, steps: int, interval: int, dt: float) -> None:
    """A GFN2-xTB NVE trajectory of 1,2-dichloroethane at 300 K (positions only matter here)."""
    import tblite.ase  # noqa: F401  (before threadpoolctl limits the threads)
    from threadpoolctl import threadpool_limits

    from mdplugin.engines.ase import make_reference_calculator
    from mdplugin.structures.data import read_dataset
    from mdplugin.engines.md import run_md

    start = read_dataset(DATA / "dce_test.xyz", index=0).frames[0]
    with threadpool_limits(1):
        run_md(start, make_reference_calculator("tblite"), steps=steps, dt_fs=dt, output=path,
               temperature_K=300.0, thermostat="none", interval=interval, seed=3, progress=False)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("trajectory", nargs="?", help="MD trajectory (any ASE format); default: make one")
    p.add_argument("--dt", type=float, default=None, help="time between frames of TRAJ, fs")
    p.add_argument("-o", "--output", default="spectrum-from-trajectory", help="output folder")
    p.add_argument("--quick", action="store_true", help="reduced run for CI")
    args = p.parse_args(argv)
    quick = args.quick or os.environ.get("MDPLUGIN_EXAMPLE_QUICK") == "1"
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)

    import ase.io

    from mdplugin.cli.parser import main as cli
    from mdplugin.structures.data import read_dataset
    from mdplugin.models import build
    from mdplugin.spectra import ir_spectrum, plot_spectra, raman_spectrum, read_csv, write_csv
    from mdplugin.models.training import fit_on_dataset, select_training

    if args.trajectory:
        if args.dt is None:
            p.error("--dt (time between frames, fs) is required with a trajectory")
        traj, dt = Path(args.trajectory), args.dt
    else:
        steps, interval = (100, 2) if quick else (4000, 2)
        traj, dt = out / "reference_md.xyz", 0.5 * interval
        print(f"making a GFN2-xTB NVE trajectory ({steps} steps of 0.5 fs) -> {traj}")
        make_reference_trajectory(traj, steps, interval, 0.5)
    frames = ase.io.read(traj, index=":")
    print(f"{len(frames)} frames, {dt:g} fs apart, from {traj}")

    # models (RPR: seconds to train; "lsoap" works the same, more accurate and slower)
    train = select_training(read_dataset(DATA / "dce_train.xyz"), 40 if quick else 600, seed=0)
    mu_model = fit_on_dataset(build("rpr", target="dipole"), train)
    alpha_model = fit_on_dataset(build("rpr", target="polarizability"), train)
    mu_model.save(out / "dipole.npz")
    alpha_model.save(out / "alpha.npz")

    # Python route: predict, then spectra
    mu, mu_std = mu_model.predict(frames, return_std=True)                 # (n, 3) e·Å
    alpha, alpha_std = alpha_model.predict(frames, return_std=True)        # (n, 3, 3) Å³
    print(f"mean predicted std: dipole {np.mean(mu_std):.4f} e·Å, polarizability {np.mean(alpha_std):.4f} Å³")
    depth = min(1000.0, len(frames) * dt / 4)
    ir = ir_spectrum([mu], dt, 300.0, depth=depth, max_wavenumber=3600.0)
    raman = raman_spectrum([alpha], dt, 300.0, depth=depth, max_wavenumber=3600.0)
    write_csv(ir, out / "ir.csv")
    write_csv(raman, out / "raman.csv")
    plot_spectra([ir, raman], out / "spectra.png", title="1,2-dichloroethane: IR and Raman from a trajectory")
    print(f"IR peaks (cm⁻¹): {', '.join(f'{x:.0f}' for x in ir.peaks())}")
    print(f"Raman peaks (cm⁻¹): {', '.join(f'{x:.0f}' for x in raman.peaks())}")

    # command-line route: the same IR spectrum
    cli(["predict", str(out / "dipole.npz"), str(traj), "-o", str(out / "mu.xyz")])
    cli(["spectrum", "ir", str(out / "mu.xyz"), "--dt", str(dt), "--temperature", "300",
         "--depth", str(depth), "--max-wavenumber", "3600", "-o", str(out / "ir_cli.csv")])
    a, b = read_csv(out / "ir.csv"), read_csv(out / "ir_cli.csv")
    same = np.allclose(a["ir"], b["ir"], rtol=1e-5, atol=1e-8 * np.abs(a["ir"]).max())
    print(f"command-line IR spectrum equals the Python one: {same}")
    print(f"wrote {out}/ir.csv raman.csv spectra.png (and the models, mu.xyz, ir_cli.csv)")
    return {"same": bool(same), "n_frames": len(frames)}


if __name__ == "__main__":
    main()
