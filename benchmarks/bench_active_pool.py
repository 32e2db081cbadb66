"""Active learning from a labelled pool with the production learner: IVR against random frames.

The counterpart of ``bench_active_bound.py`` with the real models: the models of an active run
(``mdplugin.active.learner.Learner`` with ``bench_active.py``'s SOAP energy and λ-SOAP dipole
models, refitted after every label, sparse points and PCA projections included) pick frames from
the labelled pool ``examples/trajectories/dce_train.xyz`` instead of from ML dynamics, so no
oracle is called. For each seed both strategies start from the same 10 frames as
``bench_active.py`` (the seed's permutation of the pool); then, per pick:

* ``ivr``: ``--candidates`` pool frames at random, the one chosen by
  :func:`mdplugin.active.selection.ivr_order` on the learner's posterior groups (energy with
  weight ``--energy-weight``, dipole with weight 1), as ``--selection ivr`` does in a run
  (``--selection-kernel pool``: the dipole scored with the kernel of a model whose projections
  and scales are fitted on the training and candidate structures, label-free; ``initial``: with
  the kernel of the model fitted on the 10 initial frames, kept for the whole run);
* ``random``: one pool frame at random.

The λ-SOAP dipole regulariser is ``bench_active.py``'s 1e-4 (``--dipole-regularizer``).

The dipole and force RMSE on ``dce_test.xyz`` (% of std) are printed every ``--every`` picks, and
the picks at which both of issue 7's targets (dipole ≤ 3 %, forces ≤ 8 %) are first met;
``bench_active_pool.json`` goes into ``--out``.

    python benchmarks/bench_active_pool.py [--seeds 0,1,2,3,4] [--energy-weight 1]
        [--selection-kernel model|pool|initial] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from bench_active import HYPERS, TRAJ, evaluate, first_reaching


def pool_kernel_model(pool, chosen, candidates):
    """A λ-SOAP dipole model whose projections and scales come from the training *and* candidate
    structures (label-free: its kernel depends on no label, so the candidates get zero targets)."""
    from mdplugin.structures.data import Dataset
    from mdplugin.models import build
    from mdplugin.models.training import fit_on_dataset

    frames = [pool.frames[i] for i in np.r_[chosen, candidates]]  # training frames in the learner's order
    targets = np.concatenate([pool.dipole[chosen], np.zeros((len(candidates), 3))])
    return fit_on_dataset(build("lsoap", target="dipole", **HYPERS["dipole"]), Dataset(frames=frames, dipole=targets))


def run(strategy: str, seed: int, pool, test, args) -> list[dict]:
    from mdplugin.active import ActiveConfig
    from mdplugin.active.learner import Learner
    from mdplugin.active.selection import ivr_order

    chosen = list(np.random.default_rng(seed).permutation(len(pool))[:10])
    rng = np.random.default_rng(seed + 1000)
    learner = Learner(ActiveConfig(targets=("energy", "dipole"), model="lsoap", hypers=HYPERS), oracle=None)
    curve = []
    initial_model = None
    for k in range(args.picks + 1):
        learner.train(pool.subset(chosen))
        if k % args.every == 0:
            point = {"calls": k, **evaluate(learner.models, test)}
            curve.append(point)
            print(f"  seed {seed} {strategy:6s} picks {k:3d}: dipole {point['dipole_pct']:.2f} %  "
                  f"forces {point['forces_pct']:.2f} %", flush=True)
        if k == args.picks:
            break
        rest = np.setdiff1d(np.arange(len(pool)), chosen)
        if strategy == "random":
            chosen.append(int(rng.choice(rest)))
            continue
        candidates = rng.choice(rest, min(args.candidates, len(rest)), replace=False)
        if initial_model is None:
            initial_model = learner.models["dipole"]
        dipole_model = {"model": learner.models["dipole"], "initial": initial_model}.get(args.selection_kernel)
        if dipole_model is None:  # "pool"
            dipole_model = pool_kernel_model(pool, chosen, candidates)
        groups = learner.posterior_groups([pool.frames[i] for i in candidates],
                                          models={**learner.models, "dipole": dipole_model})
        for group in groups:
            if group.name == "energy":
                group.weight = args.energy_weight
        chosen.append(int(candidates[ivr_order(groups, range(len(candidates)), 1)[0]]))
    return curve


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--picks", type=int, default=40)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--candidates", type=int, default=200, help="pool frames IVR chooses from at each pick")
    ap.add_argument("--energy-weight", type=float, default=1.0, help="weight of the energy group in the IVR score")
    ap.add_argument("--n-sparse", type=int, default=None,
                    help="representative environments per species of the dipole model (default: bench_active's 100)")
    ap.add_argument("--dipole-regularizer", type=float, default=1e-4,
                    help="λ-SOAP dipole regulariser, as bench_active.py's (0: the automatic choice)")
    ap.add_argument("--selection-kernel", choices=("model", "pool", "initial"), default="model",
                    help="the dipole kernel IVR scores with: the learner's model (as in a run), one whose "
                         "projections and scales are fitted on the training and candidate structures, or "
                         "the model fitted on the 10 initial frames, kept for the whole run")
    ap.add_argument("--strategies", default="ivr,random")
    ap.add_argument("--out", default="bench_active_pool")
    args = ap.parse_args(argv)

    from mdplugin.structures.data import read_dataset

    if args.n_sparse:
        HYPERS["dipole"]["n_sparse"] = args.n_sparse
    if args.dipole_regularizer:
        HYPERS["dipole"]["regularizer_l1"] = args.dipole_regularizer
    pool = read_dataset(TRAJ / "dce_train.xyz")
    test = read_dataset(TRAJ / "dce_test.xyz")
    seeds = [int(s) for s in args.seeds.split(",")]
    strategies = args.strategies.split(",")
    results: dict = {"args": vars(args), "hypers": HYPERS, "seeds": {}}
    t0 = time.perf_counter()
    with threadpool_limits(1):
        for seed in seeds:
            results["seeds"][seed] = {s: run(s, seed, pool, test, args) for s in strategies}
    print(f"\n{len(seeds)} seeds, {time.perf_counter() - t0:.0f} s. Picks to dipole ≤ 3 % and forces ≤ 8 % "
          "(None: not within --picks):")
    for s in strategies:
        reached = [first_reaching(results["seeds"][seed][s]) for seed in seeds]
        ok = [r for r in reached if r is not None]
        median = float(np.median(reached)) if len(ok) == len(reached) else None
        print(f"  {s:6s} per seed {reached}  median {median}")
        for key, name in (("dipole_pct", "dipole"), ("forces_pct", "forces")):
            mean = np.mean([[p[key] for p in results["seeds"][seed][s]] for seed in seeds], axis=0)
            print(f"  {s:6s} mean {name} %: " + " ".join(f"{v:5.2f}" for v in mean))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_active_pool.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {out / 'bench_active_pool.json'}")


if __name__ == "__main__":
    main()
