"""Learning curves across chemistry on the QM7b-like set (issue 27, points 3–4): λ-SOAP dipole and
polarizability models trained on N molecules and tested on 300 *other* molecules (composition
transfer: no test molecule, and usually no test formula, is in the training set), for plain λ-SOAP
(defaults), alchemical compression to k pseudo-species, and NICE (``body_order=3``).

Data: ``benchmarks/qm7like.py`` (1600 molecules of H, C, N, O, S, Cl, ≤ 7 heavy atoms, GFN2-xTB).
Split: a fixed random permutation (seed 1) of the molecules; the first 300 are the test set, the
training sets are the first N of the rest (nested). Errors: RMSE over every Cartesian component of
the molecule's error divided by its number of atoms, in atomic units (dipole e·bohr, polarizability
bohr³), as usual on QM7b. Also printed: the fit's CPU time (dipole + polarizability, this process),
the peak resident memory of the process that fitted (each configuration runs in a fresh
subprocess) and the λ-SOAP feature counts per λ after the alchemical map.

Usage:
    python benchmarks/qm7like_curves.py [--data /work/data/qm7like/qm7like.xyz] [--sizes 100,300,1000]
        [--models plain,k2,k3,k4,nu3] [--json results.jsonl]      # one subprocess per row
    python benchmarks/qm7like_curves.py --plot results.jsonl -o docs/qm7like_curves.png
    python benchmarks/qm7like_curves.py --predict-cost --models plain,k3   # one molecule at a time
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_DATA = Path("/work/data/qm7like/qm7like.xyz")
N_TEST = 300
GOALS = {"dipole": 0.04, "polarizability": 0.043}  # issue 27, a.u. per atom at 1000 molecules

MODELS = {
    "plain": ("λ-SOAP (defaults)", {}),
    "k2": ("λ-SOAP, k = 2", {"alchemical_channels": 2}),
    "k3": ("λ-SOAP, k = 3", {"alchemical_channels": 3}),
    "k4": ("λ-SOAP, k = 4", {"alchemical_channels": 4}),
    "nu3": ("λ-SOAP + NICE ν = 3, k = 3", {"body_order": 3, "alchemical_channels": 3}),
}


def split(n_molecules: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(test indices (300), training order (the rest)) of a fixed random permutation."""
    order = np.random.default_rng(seed).permutation(n_molecules)
    return order[:N_TEST], order[N_TEST:]


def per_atom_rmse(pred: np.ndarray, ref: np.ndarray, n_atoms: np.ndarray, scale: float) -> float:
    """RMSE over components of (pred − ref) / n_atoms, times ``scale`` (unit conversion)."""
    err = (pred - ref).reshape(len(ref), -1) * scale / n_atoms[:, None]
    return float(np.sqrt(np.mean(err**2)))


def model_spec(key: str, hypers: str | None) -> tuple[str, dict]:
    """(label, λ-SOAP keyword arguments) of ``key``, updated by the JSON object ``hypers``."""
    label, base = MODELS.get(key, (key, {}))
    extra = json.loads(hypers) if hypers else {}
    if extra:
        label = f"{label} " + ", ".join(f"{k}={v}" for k, v in extra.items())
    return label, {**base, **extra}


def isotropic_anisotropic(pred: np.ndarray, ref: np.ndarray, n_atoms: np.ndarray, scale: float) -> tuple[float, float]:
    """Per-atom RMSE (as :func:`per_atom_rmse`, over the 9 components) of the isotropic part
    (trace/3 · I, λ = 0) and of the traceless anisotropic part (λ = 2) of polarizabilities
    ``pred``, ``ref`` (n, 9); their squares add up to the square of the whole error."""
    err = (pred - ref).reshape(len(ref), 3, 3)
    iso = np.trace(err, axis1=1, axis2=2)[:, None, None] / 3 * np.eye(3)
    return (per_atom_rmse(iso, np.zeros_like(iso), n_atoms, scale),
            per_atom_rmse(err - iso, np.zeros_like(iso), n_atoms, scale))


def run_one(data_path: Path, key: str, size: int, hypers: str | None = None,
            targets: tuple[str, ...] = ("dipole", "polarizability")) -> dict:
    """Fit ``targets`` on ``size`` training molecules and test on the held-out 300."""
    from mdplugin.core.units import AU_PER_ASE
    from mdplugin.features.lambda_soap import n_features
    from mdplugin.models import build
    from mdplugin.structures.data import read_dataset

    data = read_dataset(data_path, properties=("dipole", "polarizability"))
    test, train_order = split(len(data.frames))
    train = train_order[:size]
    frames = data.frames
    n_atoms = np.array([len(frames[i]) for i in test], dtype=float)
    label, hypers = model_spec(key, hypers)
    row = {"model": key, "label": label, "size": int(size), "hypers": hypers,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_start": os.getloadavg()[0]}
    train_formulas = {frames[i].get_chemical_formula() for i in train}
    row["test_formulas_unseen"] = float(np.mean([frames[i].get_chemical_formula() not in train_formulas for i in test]))
    cpu = 0.0
    for target in targets:
        y = getattr(data, target)
        model = build("lsoap", target=target, **hypers)
        start = time.process_time()
        model.fit([frames[i] for i in train], y[train])
        cpu += time.process_time() - start
        pred = model.predict([frames[i] for i in test])
        row[target] = per_atom_rmse(pred, y[test], n_atoms, AU_PER_ASE[target])
        unseen = np.array([frames[i].get_chemical_formula() not in train_formulas for i in test])
        row[f"{target}_unseen_formula"] = per_atom_rmse(pred[unseen], y[test][unseen], n_atoms[unseen],
                                                        AU_PER_ASE[target])
        row[f"{target}_std_per_atom"] = per_atom_rmse(np.broadcast_to(y[train].mean(axis=0), y[test].shape),
                                                      y[test], n_atoms, AU_PER_ASE[target])
        row[f"{target}_regularizer"] = {str(lam): float(v) for lam, v in model.regularizer_.items()}
        if target == "polarizability":
            row["polarizability_iso"], row["polarizability_aniso"] = isotropic_anisotropic(
                pred, y[test], n_atoms, AU_PER_ASE[target])
            k = int(model.alchemical_channels) or len(set(np.concatenate([frames[i].numbers for i in train])))
            row["features"] = [n_features(lam, model.max_angular, k * (model.max_radial + 1)) for lam in (0, 1, 2)]
    row["fit_cpu_s"] = cpu
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row["load_end"] = os.getloadavg()[0]
    return row


def predict_cost(data_path: Path, keys: list[str], size: int = 100, n_frames: int = 40,
                 hypers: str | None = None) -> None:
    """CPU time of a polarizability prediction one molecule at a time (as in an MD step, through
    the calculator's feature cache) for each model, as a ratio to the first; with ``hypers`` (JSON)
    each model is timed without and then with them."""
    from mdplugin.models import build
    from mdplugin.structures.data import read_dataset

    data = read_dataset(data_path, properties=("dipole", "polarizability"))
    test, train_order = split(len(data.frames))
    train = train_order[:size]
    frames = [data.frames[i] for i in test[:n_frames]]
    reference = None
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; commit {git_commit()}; "
          f"load {os.getloadavg()[0]:.1f}; polarizability models on {size} molecules, {n_frames} test molecules")
    print("| model | CPU ms per molecule (one at a time) | ratio |")
    print("|---|---|---|")
    specs = [spec for key in keys for spec in ([model_spec(key, None)] + ([model_spec(key, hypers)] if hypers else []))]
    for label, settings in specs:
        model = build("lsoap", target="polarizability", **settings)
        model.fit([data.frames[i] for i in train], data.polarizability[train])
        featurizer = model.featurizer()
        model.predict_from_features(featurizer.features(frames[:1], gradients=False))
        best = np.inf
        for _ in range(3):
            start = time.process_time()
            for atoms in frames:  # what the ASE calculator does in a step: features, then the model
                model.predict_from_features(featurizer.features([atoms], gradients=False))
            best = min(best, (time.process_time() - start) / len(frames))
        reference = reference or best
        print(f"| {label} | {1e3 * best:.1f} | {best / reference:.2f} |", flush=True)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def print_row(row: dict) -> None:
    f = row.get("features", ["–"] * 3)
    if "polarizability_iso" in row:  # the isotropic (λ = 0) / anisotropic (λ = 2) split and the regularisers
        reg = row["polarizability_regularizer"]
        print(f"# {row['label']}: polarizability λ = 0 part {row['polarizability_iso']:.4f}, λ = 2 part "
              f"{row['polarizability_aniso']:.4f} bohr³ per atom; regulariser λ = 0 {reg.get('0', 0):.0e}, "
              f"λ = 2 {reg.get('2', 0):.0e}", flush=True)
    dipole = f"{row['dipole']:.4f}" if "dipole" in row else "–"
    polar = f"{row['polarizability']:.4f}" if "polarizability" in row else "–"
    print(f"| {row['label']} | {row['size']} | {dipole} | {polar} | "
          f"{row['fit_cpu_s']:.0f} | {row['peak_rss_mb']:.0f} | {f[0]} / {f[1]} / {f[2]} | "
          f"{row['load_start']:.1f}–{row['load_end']:.1f} |", flush=True)


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, target, unit in zip(axes, ("dipole", "polarizability"), ("e·bohr", "bohr³")):
        for key, (label, _) in MODELS.items():
            pts = sorted((r["size"], r[target]) for r in rows if r["model"] == key)
            if pts:
                ax.loglog(*zip(*pts), "o-", label=label)
        ax.axhline(GOALS[target], color="k", ls="--", lw=1, label=f"goal at 1000 ({GOALS[target]})")
        ax.set_xlabel("training molecules")
        ax.set_ylabel(f"{target} RMSE per atom ({unit})")
        ax.set_title(f"{target}, 300 unseen molecules")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    dates = sorted({r["date"][:10] for r in rows})
    commits = sorted({r.get("commit", "?") for r in rows})
    loads = [r["load_start"] for r in rows] + [r["load_end"] for r in rows]
    fig.suptitle(f"QM7b-like set (GFN2-xTB), composition transfer; {', '.join(dates)}, {', '.join(commits)}, "
                 f"load {min(loads):.0f}–{max(loads):.0f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--sizes", default="100,300,1000")
    p.add_argument("--models", default="plain,k2,k3,k4")
    p.add_argument("--json", type=Path, help="append one JSON row per configuration")
    p.add_argument("--one", nargs=2, metavar=("MODEL", "SIZE"), help=argparse.SUPPRESS)
    p.add_argument("--plot", type=Path, help="draw the curves of a --json file")
    p.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "qm7like_curves.png")
    p.add_argument("--table", type=Path, help="print the table of a --json file")
    p.add_argument("--predict-cost", action="store_true", help="time one-molecule predictions of --models")
    p.add_argument("--hypers", help='JSON object of λ-SOAP settings added to every model, e.g. \'{"max_radial": 6}\'')
    p.add_argument("--targets", default="dipole,polarizability", help="comma-separated targets to fit")
    args = p.parse_args(argv)
    if args.predict_cost:
        predict_cost(args.data, args.models.split(","), hypers=args.hypers)
        return
    if args.one:
        row = run_one(args.data, args.one[0], int(args.one[1]), args.hypers, tuple(args.targets.split(",")))
        print("JSON " + json.dumps(row), flush=True)
        return
    if args.plot or args.table:
        rows = [json.loads(line) for line in open(args.plot or args.table)]
        if args.plot:
            plot(rows, args.output)
            print(f"-> {args.output}")
        for row in rows:
            print_row(row)
        return
    commit = git_commit()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; commit {commit}; load {os.getloadavg()[0]:.1f}; "
          f"{args.data}; {N_TEST} test molecules")
    print("| model | training molecules | dipole RMSE per atom (e·bohr) | polarizability RMSE per atom (bohr³) | "
          "fit CPU s (both) | peak RSS MB | features λ = 0 / 1 / 2 | load |")
    print("|---|---|---|---|---|---|---|---|")
    for size in [int(s) for s in args.sizes.split(",")]:
        for key in args.models.split(","):
            extra = (["--hypers", args.hypers] if args.hypers else []) + ["--targets", args.targets]
            out = subprocess.run([sys.executable, __file__, "--data", str(args.data), "--one", key, str(size)] + extra,
                                 capture_output=True, text=True)
            lines = [line for line in out.stdout.splitlines() if line.startswith("JSON ")]
            if out.returncode or not lines:
                print(f"| {model_spec(key, args.hypers)[0]} | {size} | failed: {out.stderr.strip().splitlines()[-1:]} |", flush=True)
                continue
            row = json.loads(lines[-1][5:])
            row["commit"] = commit
            print_row(row)
            if args.json:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
