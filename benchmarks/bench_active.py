"""Active learning vs random frames on 1,2-dichloroethane (GFN2-xTB through tblite as the oracle).

Both strategies start from the same 10 labelled frames (drawn at random from the reference MD
pool ``examples/trajectories/dce_train.xyz``) and train the same models (SOAP energy/forces GPR,
λ-SOAP SA-GPR dipole). Accuracy is measured on the independent held-out set
``examples/trajectories/dce_test.xyz`` (500 frames, 300/600 K, anti + gauche):

* active: ``mdplugin.active.run_active`` from a pool structure, Langevin MD ramped 300 → 600 K,
  tblite labels every structure whose uncertainty is over the threshold; the test errors after
  k oracle calls are those of the models trained on the first 10 + k frames of the run's data.xyz
  (what the run itself trained after its k-th label);
* random: the same initial frames plus N more drawn at random from the reference MD pool.

Targets (issue 7): dipole RMSE ≤ 3 % and force RMSE ≤ 8 % of their standard deviations. The script
prints, for both strategies, the oracle calls (labels after the initial 10) at which both targets
are first met and their ratio, writes ``bench_active.json`` and a figure ``bench_active.png``.

    python benchmarks/bench_active.py [--out DIR] [--max-calls 40] [--steps 4000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
TRAJ = ROOT / "examples" / "trajectories"

#: the same models for both strategies (λ-SOAP compressed for a quick retraining)
HYPERS = {"dipole": {"n_components": 64, "n_sparse": 100, "n_sparse_l0": 200}}
TARGETS = {"dipole": 3.0, "forces": 8.0}  # % of the standard deviation


def evaluate(models: dict, test) -> dict:
    from mdplugin.training import evaluate_model

    e = evaluate_model(models["energy"], test)
    d = evaluate_model(models["dipole"], test)
    return {"forces_pct": e["forces_rmse_percent_of_std"], "dipole_pct": d["rmse_percent_of_std"],
            "energy_per_atom_meV": 1000 * e["rmse_per_atom"]}


def fit_models(data) -> dict:
    """The benchmark's models (the same for both strategies) fitted on ``data``."""
    from mdplugin.models import build
    from mdplugin.training import fit_on_dataset

    return {"energy": fit_on_dataset(build("soap", target="energy"), data),
            "dipole": fit_on_dataset(build("lsoap", target="dipole", **HYPERS["dipole"]), data)}


def first_reaching(curve: list[dict]) -> int | None:
    for point in curve:
        if point["dipole_pct"] <= TARGETS["dipole"] and point["forces_pct"] <= TARGETS["forces"]:
            return point["calls"]
    return None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench-active-output")
    ap.add_argument("--n-initial", type=int, default=10)
    ap.add_argument("--max-calls", type=int, default=40)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--threshold-energy", type=float, default=0.008, help="eV/atom")
    ap.add_argument("--threshold-dipole", type=float, default=0.015, help="e·Å")
    ap.add_argument("--eval-every", type=int, default=5, help="oracle calls between test evaluations")
    ap.add_argument("--random-calls", default="0,5,10,15,20,30,40")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-random", action="store_true")
    ap.add_argument("--resume", action="store_true", help="resume the active run in OUT/run (after a kill, or to extend it to --steps/--max-calls)")
    args = ap.parse_args(argv)
    threadpool_limits(1)

    from mdplugin.active import ActiveConfig, run_active
    from mdplugin.data import read_dataset
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pool = read_dataset(TRAJ / "dce_train.xyz")
    test = read_dataset(TRAJ / "dce_test.xyz")
    perm = np.random.default_rng(args.seed).permutation(len(pool))
    initial = pool.subset(perm[: args.n_initial])
    results: dict = {"n_initial": args.n_initial, "targets_pct": TARGETS, "hypers": HYPERS}

    # --- active learning ---------------------------------------------------------------------
    run_dir = out / "run"
    cfg = ActiveConfig(targets=("energy", "dipole"), model="lsoap", hypers=HYPERS,
                       thresholds={"energy": args.threshold_energy, "dipole": args.threshold_dipole},
                       steps=args.steps, max_calls=args.max_calls, temperature=(300.0, 600.0),
                       seed=args.seed, checkpoint_every=200)
    say = lambda m: print("  " + m, flush=True) if m.startswith(("label", "active", "resum")) else None  # noqa: E731
    t0 = time.perf_counter()
    if args.resume and (run_dir / "config.json").exists():
        summary = run_active(None, run_dir, resume=True, say=say,
                             overrides={"steps": args.steps, "max_calls": args.max_calls})
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        summary = run_active(pool.frames[perm[0]], run_dir, cfg, oracle="tblite", initial=initial, say=say)
    t_active = time.perf_counter() - t0
    # the models after k oracle calls are the models trained on the first n_initial + k frames of
    # data.xyz (training is deterministic), so the curve is measured after the run
    labelled = read_dataset(run_dir / "data.xyz")
    n_calls = len(labelled) - args.n_initial
    curve: list[dict] = []
    for calls in sorted(set(range(0, n_calls + 1, args.eval_every)) | {n_calls}):
        data = labelled.subset(range(args.n_initial + calls))
        point = {"calls": calls, "n_train": len(data), **evaluate(fit_models(data), test)}
        curve.append(point)
        print(f"active  calls {calls:3d}: dipole {point['dipole_pct']:.2f} %  forces {point['forces_pct']:.2f} %",
              flush=True)
    results["active"] = {"curve": curve, "steps": summary.steps, "oracle_calls": summary.oracle_calls,
                         "reason": summary.reason, "wall_time_s_last_invocation": t_active,
                         "thresholds": summary.thresholds}

    # --- random frames from the reference MD -------------------------------------------------
    rcurve: list[dict] = []
    if not args.skip_random:
        for calls in [int(c) for c in args.random_calls.split(",")]:
            data = pool.subset(perm[: args.n_initial + calls])
            point = {"calls": calls, "n_train": len(data), **evaluate(fit_models(data), test)}
            rcurve.append(point)
            print(f"random  calls {calls:3d}: dipole {point['dipole_pct']:.2f} %  forces {point['forces_pct']:.2f} %",
                  flush=True)
    results["random"] = {"curve": rcurve}

    a, r = first_reaching(curve), first_reaching(rcurve)
    results["calls_to_targets"] = {"active": a, "random": r,
                                   "ratio_random_over_active": (r / a) if a and r else None}
    (out / "bench_active.json").write_text(json.dumps(results, indent=1))
    print(f"oracle calls (after {args.n_initial} initial frames) to reach dipole ≤ {TARGETS['dipole']} % and "
          f"forces ≤ {TARGETS['forces']} % of std: active {a}, random {r}"
          + (f", ratio {r / a:.2f}" if a and r else ""))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, name in ((axes[0], "dipole_pct", "dipole"), (axes[1], "forces_pct", "forces")):
        for c, label, style in ((curve, "active", "o-"), (rcurve, "random (reference MD)", "s--")):
            if c:
                ax.plot([p["calls"] for p in c], [p[key] for p in c], style, label=label)
        ax.axhline(TARGETS[name], color="grey", lw=1)
        ax.set_xlabel(f"oracle calls after {args.n_initial} initial frames")
        ax.set_ylabel(f"{name} RMSE, % of std (dce_test)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "bench_active.png", dpi=100)


if __name__ == "__main__":
    main()
