"""Does the default active-learning loop explore? (issue 28, point 5)

From one anti 1,2-dichloroethane structure at 500 K with tblite (GFN2-xTB) and 40 oracle calls
(10 initial frames of a reference run + 40 labels), the λ-SOAP dipole model of the labelled set is
tested on **independent** tblite trajectories that visit both conformers: Langevin MD at 300 K
and 600 K from the anti *and* the gauche conformer, seeds 901-904 (the active runs use seeds
0, 1, ...; nothing of the test set is seen in training). The error is the RMSE of the dipole in %
of the test set's standard deviation (the spread), printed per arm and seed:

* ``explore`` (the default of ``mdplugin active``): segments of 300 steps started from the
  thermally accessible known structure farthest from the earlier starts, hot segments, IVR picks
  over a pool (``--explore-window``, ``--explore-heat``, ``--segment``, ``--batch`` change it);
  a segment that reaches a hole of the young energy model (a bond broken or formed, two atoms
  nearly touching) ends there and a label far above the labelled energies is refused
  (``--no-explore-filters``: neither, the rule before 8 Dec 2026);
* ``follow`` (``explore=False``, the loop before): one trajectory, step by step, labelling the
  first structure over its threshold.

    python benchmarks/bench_active_explore.py [--out DIR] [--seeds 0,1,2,3] [--arms explore,follow]

The test frames are cached in ``DIR/explore_test.xyz`` (made once, ~3 min on one core).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

#: independent test runs: (start conformer, K, seed)
TEST_RUNS = [("anti", 300, 901), ("gauche", 300, 902), ("anti", 600, 903), ("gauche", 600, 904)]
HYPERS = {"dipole": {"n_components": 64, "n_sparse": 100, "n_sparse_l0": 200, "regularizer_l1": 1e-4}}


def test_set(out: Path, n_frames: int = 50):
    """The labelled independent test frames (energy, forces, dipole), made once and cached."""
    from mdplugin.structures.data import read_dataset

    path = out / "explore_test.xyz"
    if not path.exists():
        from make_trajectories import conformer_of, dichloroethane, langevin_frames, tblite_calculator
        from mdplugin.oracles.label import label_frames
        from mdplugin.structures.data import write_dataset

        frames = []
        for conf, temp, seed in TEST_RUNS:
            t0 = time.perf_counter()
            run = langevin_frames(dichloroethane(conf), temp, n_frames, seed, stride=40, equilibration_steps=400)
            kinds = [conformer_of(a) for a in run]
            print(f"test run {conf} {temp} K seed {seed}: {kinds.count('anti')} anti / "
                  f"{kinds.count('gauche')} gauche, {time.perf_counter() - t0:.0f} s", flush=True)
            frames += run
        labelled = label_frames(frames, tblite_calculator(), ("energy", "forces", "dipole"))
        write_dataset(path, labelled)
    return read_dataset(path)



def run_arm(arm: str, seed: int, out: Path, steps: int | None, max_calls: int, explore: dict | None = None) -> Path:
    """One ``mdplugin active`` run from the anti conformer at 500 K; returns its run folder."""
    from make_trajectories import dichloroethane

    from mdplugin.active import ActiveConfig, run_active

    run_dir = out / f"{arm}_seed{seed}"
    if (run_dir / "data.xyz").exists() and "active: " in (run_dir / "summary.txt").read_text() \
            if (run_dir / "summary.txt").exists() else False:
        return run_dir
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = ActiveConfig(targets=("energy", "dipole"), temperature=500.0, steps=steps, max_calls=max_calls,
                       seed=seed, hypers={"dipole": {k: v for k, v in HYPERS["dipole"].items()}},
                       explore=(arm == "explore"), **(explore or {}))
    t0 = time.perf_counter()
    summary = run_active(dichloroethane("anti"), run_dir, cfg, oracle="tblite", say=lambda m: None)
    (run_dir / "summary.txt").write_text(summary.text() + f"\nbenchmark wall {time.perf_counter() - t0:.0f} s\n")
    return run_dir


def dipole_error(run_dir: Path, test) -> dict:
    """RMSE (% of the test set's std) of a λ-SOAP dipole model fitted on the run's data.xyz, and
    the fraction of gauche frames in the labelled set."""
    from make_trajectories import conformer_of

    from mdplugin.models import build
    from mdplugin.models.training import evaluate_model, fit_on_dataset
    from mdplugin.structures.data import read_dataset

    data = read_dataset(run_dir / "data.xyz", properties=["dipole"])
    model = fit_on_dataset(build("lsoap", target="dipole", **HYPERS["dipole"]), data)
    e = evaluate_model(model, test)
    kinds = [conformer_of(a) for a in data.frames]
    events = [line.split(",", 1)[0] for line in (run_dir / "log.csv").read_text().splitlines()[1:]]
    return {"n_frames": len(data), "dipole_pct": float(e["rmse_percent_of_std"]),
            "gauche_fraction": kinds.count("gauche") / len(kinds),
            "holes": events.count("hole"), "refused": events.count("refused")}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench-explore-output")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--arms", default="explore,follow")
    ap.add_argument("--steps", type=int, default=None,
                    help="MD step budget of every run (0.5 fs; default: the loop's own, 3 x segment x max-calls "
                         "exploring, 2000 following)")
    ap.add_argument("--max-calls", type=int, default=40)
    ap.add_argument("--explore-window", default=None,
                    help="ActiveConfig.explore_window of the explore arm ('none': no window; default: the default)")
    ap.add_argument("--batch", type=int, default=None, help="ActiveConfig.batch of the explore arm (default: the default)")
    ap.add_argument("--segment", type=int, default=None, help="ActiveConfig.segment of the explore arm (default: the default)")
    ap.add_argument("--explore-heat", type=float, default=None, help="ActiveConfig.explore_heat (default: the default)")
    ap.add_argument("--no-explore-filters", action="store_true",
                    help="the explore arm without the hole filters (explore_contact, explore_bonds, explore_label_window None)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    test = test_set(out)
    print(f"test set: {len(test)} frames (300 K and 600 K, anti and gauche starts, seeds 901-904)", flush=True)
    explore = {}
    if args.explore_window is not None:
        explore["explore_window"] = None if args.explore_window.lower() == "none" else float(args.explore_window)
    if args.batch is not None:
        explore["batch"] = args.batch
    if args.segment is not None:
        explore["segment"] = args.segment
    if args.explore_heat is not None:
        explore["explore_heat"] = args.explore_heat
    if args.no_explore_filters:
        explore.update(explore_contact=None, explore_bonds=None, explore_label_window=None)
    results = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for arm in args.arms.split(","):
            t0 = time.perf_counter()
            run_dir = run_arm(arm, seed, out, args.steps, args.max_calls,
                              explore if arm == "explore" else None)
            r = dipole_error(run_dir, test)
            r["summary"] = (run_dir / "summary.txt").read_text().strip()
            results[f"{arm}/{seed}"] = r
            print(f"{arm:8s} seed {seed}: {r['n_frames']} labelled frames ({100 * r['gauche_fraction']:.0f} % gauche), "
                  f"dipole RMSE {r['dipole_pct']:.2f} % of the std; {r['holes']} segments ended in holes, "
                  f"{r['refused']} labels refused  [{time.perf_counter() - t0:.0f} s]", flush=True)
    for arm in args.arms.split(","):
        errs = [v["dipole_pct"] for k, v in results.items() if k.startswith(arm + "/")]
        print(f"{arm:8s}: mean {np.mean(errs):.2f} %, max {np.max(errs):.2f} % over {len(errs)} seeds", flush=True)
    (out / "bench_active_explore.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    if "--make-test" in sys.argv:
        out = Path(sys.argv[sys.argv.index("--make-test") + 1])
        out.mkdir(parents=True, exist_ok=True)
        print(len(test_set(out)), "test frames")
    else:
        main()
