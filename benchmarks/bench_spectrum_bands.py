"""Calibration of the model band of IR and Raman spectra against GFN2-xTB reference spectra.

For each molecule, a reference trajectory is run with GFN2-xTB (tblite through
``mdplugin.oracles.make_oracle``): Langevin equilibration at 300 K, then NVE, recording the
oracle's dipole and finite-field polarizability on every stored frame. Models (λ-SOAP ``lsoap``
and ``rpr``) are trained on 25, 50, 100, 200 … frames drawn at random from labelled frames of
OTHER trajectories (``examples/trajectories``: ``dce_train.xyz`` for 1,2-dichloroethane,
``water.xyz`` for water; independent runs at 300 and 600 K, never the reference run), then evaluated
on the reference trajectory's structures with ``sample_predictions``. The IR (dipole) and Raman
(polarizability) spectra of the model's mean and of its posterior draws give the model band
(5–95 %); it is compared with the spectrum of the reference dipoles/polarizabilities on the same
frames (same settings, so the trajectory's statistical noise is common to both and cancels):

* coverage: the intensity-weighted fraction of wavenumbers (0–``--max-wavenumber``) at which the
  band holds the reference spectrum (:meth:`SpectrumResult.coverage`);
* relative width: ``∫(p95 − p5) dν̃ / ∫ I dν̃`` of the model spectrum (:meth:`relative_band_width`);
* the model's RMSE on the trajectory's frames (% of the reference's standard deviation).

    python benchmarks/bench_spectrum_bands.py --workdir /tmp/bands            # everything (~40 min)
    python benchmarks/bench_spectrum_bands.py --workdir /tmp/bands --molecules water --models rpr --sizes 25,50
    python benchmarks/bench_spectrum_bands.py --workdir /tmp/bands --plot docs/spectra_bands.png
    python benchmarks/bench_spectrum_bands.py --workdir /tmp/bands --speed   # cost per atom, periodic boxes

The reference trajectories are kept in ``--workdir`` and reused. Prints one Markdown table row per
molecule, model, spectrum and training size (mean and lowest coverage over ``--repeats`` random
training sets).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import tblite.ase  # noqa: F401  (import before threadpoolctl limits the BLAS threads)
from threadpoolctl import threadpool_limits

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

POOLS = {"dce": ROOT / "examples" / "trajectories" / "dce_train.xyz",
         "water": ROOT / "examples" / "trajectories" / "water.xyz"}
#: start structures of the reference runs: an independent file (dce_test.xyz) / the pool's first frame
STARTS = {"dce": (ROOT / "examples" / "trajectories" / "dce_test.xyz", 0),
          "water": (ROOT / "examples" / "trajectories" / "water.xyz", 0)}
NAMES = {"dce": "1,2-dichloroethane", "water": "water"}
TARGETS = {"ir": "dipole", "raman": "polarizability"}


def reference_trajectory(molecule: str, args, workdir: Path) -> Path:
    """GFN2-xTB MD at ``args.temperature``: equilibration, then NVE storing dipole and polarizability."""
    from ase.io import read

    from mdplugin.engines.md import run_md
    from mdplugin.oracles.label import make_oracle
    from mdplugin.structures.data import read_dataset

    out = workdir / f"reference_{molecule}.xyz"
    if out.exists():
        return out
    path, index = STARTS[molecule]
    start = read_dataset(path, index=index).frames[0]
    calc = make_oracle("tblite")
    t0 = time.perf_counter()
    eq = run_md(start, calc, steps=int(round(1000 * args.equil_ps / args.dt)), dt_fs=args.dt,
                output=workdir / f"equil_{molecule}.xyz", temperature_K=args.temperature, thermostat="langevin",
                friction_per_fs=0.02, interval=100, seed=args.seed, progress=args.progress)
    last = read(workdir / f"equil_{molecule}.xyz", index=-1)
    tmp = out.with_suffix(".partial.xyz")
    nve = run_md(last, calc, steps=int(round(1000 * args.nve_ps / args.dt)), dt_fs=args.dt, output=tmp,
                 temperature_K=args.temperature, thermostat="none", interval=args.interval, seed=args.seed + 1,
                 progress=args.progress)
    tmp.rename(out)
    print(f"reference {molecule}: GFN2-xTB {eq.text()}\n  NVE: {nve.text()} ({time.perf_counter() - t0:.0f} s)",
          flush=True)
    return out


def spectrum(kind: str, series, args, samples=None):
    from mdplugin.spectra import ir_spectrum, raman_spectrum

    fn = ir_spectrum if kind == "ir" else raman_spectrum
    return fn([series], args.dt * args.interval, args.temperature, depth=args.depth,
              max_wavenumber=args.max_wavenumber, samples=None if samples is None else [samples])


def run(args) -> list[dict]:
    from mdplugin.models import build
    from mdplugin.spectra.uncertainty import read_structures
    from mdplugin.structures.data import read_dataset

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    results_path = workdir / "results.json"
    done = json.loads(results_path.read_text()) if results_path.exists() and args.reuse else []
    for molecule in args.molecules:
        ref_path = reference_trajectory(molecule, args, workdir)
        frames = read_structures(ref_path)
        ref_data = read_dataset(ref_path)
        pool = read_dataset(POOLS[molecule])
        for kind in args.spectra:
            target = TARGETS[kind]
            truth = ref_data.get(target)
            reference = spectrum(kind, truth, args)
            for model_kind in args.models:
                for n in args.sizes:
                    if n > len(pool):
                        print(f"{molecule}: {n} training frames asked, the pool {POOLS[molecule].name} has "
                              f"{len(pool)}; skipped")
                        continue
                    for repeat in range(args.repeats):
                        key = dict(molecule=molecule, spectrum=kind, model=model_kind, n_train=n, repeat=repeat)
                        old = next((r for r in done if all(r[k] == v for k, v in key.items())), None)
                        if old is not None:
                            rows.append(old)
                            continue
                        pick = np.sort(np.random.default_rng(1000 + repeat).permutation(len(pool))[:n])
                        train = pool.subset(pick)
                        t0 = time.perf_counter()
                        model = build(model_kind, target=target).fit(train.frames, train.get(target))
                        t_fit = time.perf_counter() - t0
                        t0 = time.perf_counter()
                        model.predict(frames)
                        t_predict = time.perf_counter() - t0
                        t0 = time.perf_counter()
                        mean, draws = model.sample_predictions(frames, args.draws, seed=repeat, return_mean=True)
                        t_draw = time.perf_counter() - t0
                        result = spectrum(kind, mean, args, samples=draws)
                        name = next(iter(result.components))
                        rmse = np.sqrt(np.mean((mean - truth) ** 2)) / np.std(truth.reshape(len(truth), -1), axis=0).mean()
                        row = dict(key, coverage=result.coverage(reference, name),
                                   width=result.relative_band_width(name),
                                   rmse_percent=100 * float(rmse), fit_s=t_fit, draws_s=t_draw, predict_s=t_predict,
                                   n_frames=len(frames), n_draws=args.draws)
                        rows.append(row)
                        done.append(row)
                        results_path.write_text(json.dumps(done, indent=1))
                        print(f"{molecule:6s} {kind:5s} {model_kind:5s} n={n:4d} #{repeat}: coverage "
                              f"{row['coverage']:.3f}, width {row['width']:.3f}, RMSE {row['rmse_percent']:.2f} % "
                              f"(fit {t_fit:.1f} s, {args.draws} draws on {len(frames)} frames {t_draw:.1f} s, "
                              f"{t_draw / t_predict:.1f} x a prediction)",
                              flush=True)
    return rows


def ratio(rows: list[dict]) -> str:
    """Mean time of the draws over the time of a plain prediction (rows that measured it)."""
    timed = [r["draws_s"] / r["predict_s"] for r in rows if r.get("predict_s")]
    return f"{np.mean(timed):.1f}" if timed else "–"


def table(rows: list[dict]) -> str:
    lines = ["| molecule | spectrum | model | training frames | coverage (mean, lowest) | band width (rel.) | "
             "RMSE on the trajectory (% of std) | draws / prediction (time) |", "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["molecule"], r["spectrum"], r["model"]) for r in rows})
    for mol, kind, model in keys:
        for n in sorted({r["n_train"] for r in rows if (r["molecule"], r["spectrum"], r["model"]) == (mol, kind, model)}):
            sel = [r for r in rows if (r["molecule"], r["spectrum"], r["model"], r["n_train"]) == (mol, kind, model, n)]
            cov = [r["coverage"] for r in sel]
            lines.append(f"| {NAMES[mol]} | {kind.upper() if kind == 'ir' else 'Raman'} | {model} | {n} | "
                         f"{np.mean(cov):.2f}, {np.min(cov):.2f} | {np.mean([r['width'] for r in sel]):.3f} | "
                         f"{np.mean([r['rmse_percent'] for r in sel]):.2f} | {ratio(sel)} |")
    return "\n".join(lines)


def plot(args, rows: list[dict], path: str) -> None:
    """Top: DCE IR spectra with the model band (smallest and largest training set) and the
    reference; bottom: coverage and band width against the training-set size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mdplugin.models import build
    from mdplugin.spectra.uncertainty import read_structures
    from mdplugin.structures.data import read_dataset

    workdir = Path(args.workdir)
    molecule, kind, model_kind = args.molecules[0], args.spectra[0], args.models[0]
    ref_path = workdir / f"reference_{molecule}.xyz"
    frames, ref_data = read_structures(ref_path), read_dataset(ref_path)
    pool = read_dataset(POOLS[molecule])
    target = TARGETS[kind]
    reference = spectrum(kind, ref_data.get(target), args)
    name = next(iter(reference.components))
    sizes = [min(args.sizes), max(args.sizes)]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, n in zip(axes[0], sizes):
        train = pool.subset(np.sort(np.random.default_rng(1000).permutation(len(pool))[:n]))
        model = build(model_kind, target=target).fit(train.frames, train.get(target))
        mean, draws = model.sample_predictions(frames, args.draws, seed=0, return_mean=True)
        r = spectrum(kind, mean, args, samples=draws)
        lo, hi = r.bands[name]
        ax.fill_between(r.wavenumber, lo, hi, color="#b2182b", alpha=0.3, lw=0, label="model band 5–95 %")
        ax.plot(r.wavenumber, r.components[name], color="#b2182b", lw=1.0, label=f"{model_kind} model ({n} frames)")
        ax.plot(reference.wavenumber, reference.components[name], color="k", lw=0.8, ls="--",
                label="GFN2-xTB reference")
        ax.set_xlim(0, args.max_wavenumber)
        ax.set_title(f"{NAMES[molecule]}, {kind.upper()}: {n} training frames; coverage "
                     f"{r.coverage(reference, name):.2f}", fontsize=10)
        ax.set_xlabel("wavenumber [cm⁻¹]")
        ax.set_ylabel("IR absorption [km mol⁻¹ (cm⁻¹)⁻¹]" if kind == "ir" else "Raman activity [Å⁴ amu⁻¹ (cm⁻¹)⁻¹]")
        ax.legend(fontsize=8)
    markers = {"lsoap": "o", "rpr": "s"}
    colors = {("dce", "ir"): "#b2182b", ("dce", "raman"): "#2166ac", ("water", "ir"): "#f4a582",
              ("water", "raman"): "#92c5de"}
    for (mol, kd, mk) in sorted({(r["molecule"], r["spectrum"], r["model"]) for r in rows}):
        ns = sorted({r["n_train"] for r in rows if (r["molecule"], r["spectrum"], r["model"]) == (mol, kd, mk)})
        if len(ns) < 2:  # a curve needs two training sizes
            continue
        sel = lambda n: [r for r in rows if (r["molecule"], r["spectrum"], r["model"], r["n_train"]) == (mol, kd, mk, n)]
        cov = [np.mean([r["coverage"] for r in sel(n)]) for n in ns]
        width = [np.mean([r["width"] for r in sel(n)]) for n in ns]
        label = f"{NAMES[mol]} {kd.upper() if kd == 'ir' else 'Raman'}, {mk}"
        axes[1, 0].plot(ns, cov, marker=markers.get(mk, "o"), color=colors.get((mol, kd)), label=label)
        axes[1, 1].plot(ns, width, marker=markers.get(mk, "o"), color=colors.get((mol, kd)), label=label)
    axes[1, 0].axhline(0.9, color="0.4", ls=":", lw=1)
    axes[1, 0].set_ylim(0, 1.02)
    axes[1, 0].set_ylabel("coverage of the reference\n(intensity-weighted)")
    axes[1, 1].set_yscale("log")
    axes[1, 1].set_ylabel("relative band width")
    ticks = sorted({r["n_train"] for r in rows})
    for ax in axes[1]:
        ax.set_xscale("log")
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("training frames")
        ax.grid(alpha=0.3)
    axes[1, 0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def speed(args) -> None:
    """CPU cost (one thread: the machine's load does not enter) of the draws per atom at several
    sizes, against a prediction in the same process:
    a λ-SOAP dipole model of periodic water boxes (synthetic local dipoles: the cost does not
    depend on the labels), evaluated on boxes of 16, 32 and 64 molecules at liquid density."""
    from ase import Atoms

    from mdplugin.core.tensors import random_rotation
    from mdplugin.models import build

    rng = np.random.default_rng(0)

    def box(n_molecules: int) -> Atoms:
        side = (n_molecules * 29.9) ** (1.0 / 3.0)  # Å: 1 g/cm³
        out = Atoms(cell=np.eye(3) * side, pbc=True)
        grid = int(np.ceil(n_molecules ** (1.0 / 3.0)))
        sites = np.stack(np.meshgrid(*[np.arange(grid)] * 3), -1).reshape(-1, 3)[:n_molecules] * side / grid
        for site in sites:
            w = Atoms("OH2", positions=[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
            w.positions = w.positions @ random_rotation(rng).T + site + rng.normal(scale=0.1, size=3)
            out += w
        out.wrap()
        return out

    def dipole(atoms: Atoms) -> np.ndarray:
        o = atoms.positions[atoms.numbers == 8]
        h = atoms.positions[atoms.numbers == 1].reshape(-1, 2, 3)
        return 0.4 * (h - o[:, None]).sum(axis=(0, 1))

    train = [box(16) for _ in range(20)]
    model = build("lsoap", target="dipole").fit(train, np.array([dipole(b) for b in train]))
    print("\n| molecules | atoms | predict (CPU ms/atom) | 16 draws (CPU ms/atom) | draws / prediction |\n|---|---|---|---|---|")
    for n in (16, 32, 64):
        frames = [box(n) for _ in range(8)]
        t0 = time.process_time()
        model.predict(frames)
        t_predict = time.process_time() - t0
        t0 = time.process_time()
        model.sample_predictions(frames, 16, seed=0)
        t_draw = time.process_time() - t0
        atoms = 8 * 3 * n
        print(f"| {n} | {3 * n} | {1000 * t_predict / atoms:.3f} | {1000 * t_draw / atoms:.3f} | {t_draw / t_predict:.1f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="reference trajectories and results.json are kept here")
    p.add_argument("--molecules", type=lambda s: s.split(","), default=["dce", "water"])
    p.add_argument("--models", type=lambda s: s.split(","), default=["lsoap", "rpr"])
    p.add_argument("--spectra", type=lambda s: s.split(","), default=["ir", "raman"])
    p.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[25, 50, 100, 200])
    p.add_argument("--repeats", type=int, default=2, help="random training sets per size (default 2)")
    p.add_argument("--draws", type=int, default=64, help="posterior draws (default 64)")
    p.add_argument("--equil-ps", type=float, default=1.0)
    p.add_argument("--nve-ps", type=float, default=4.0)
    p.add_argument("--dt", type=float, default=0.5, help="MD time step, fs")
    p.add_argument("--interval", type=int, default=2, help="store every N steps (default 2: 1 fs)")
    p.add_argument("--temperature", type=float, default=300.0)
    p.add_argument("--depth", type=float, default=500.0, help="correlation depth, fs (default 500)")
    p.add_argument("--max-wavenumber", type=float, default=3800.0)
    p.add_argument("--seed", type=int, default=101)
    p.add_argument("--reuse", action="store_true", help="reuse the results of earlier runs in --workdir")
    p.add_argument("--plot", help="PNG: spectra with bands and coverage/width against training size")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--speed", action="store_true",
                   help="only the cost of the draws per atom at several sizes (periodic water boxes)")
    args = p.parse_args(argv)
    if args.speed:
        with threadpool_limits(1):
            speed(args)
        return 0
    with threadpool_limits(1):
        rows = run(args)
        print()
        print(table(rows))
        if args.plot:  # the coverage and width panels show every result kept in --workdir
            plot(args, json.loads((Path(args.workdir) / "results.json").read_text()), args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
