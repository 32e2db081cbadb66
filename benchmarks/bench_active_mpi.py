"""Wall time per active-learning cycle on 1 rank and with ``mpiexec -n P`` (same batch size).

One cycle of segment mode = every rank runs a segment of MD with the models (its own walker),
the candidates are gathered and the batch is picked, the batch is labelled by the oracle (split
over the ranks), every rank retrains on the same data, rank 0 checkpoints. The script runs the
same active-learning run (1,2-dichloroethane, GFN2-xTB through tblite as the oracle with
energy, forces, dipole and finite-field polarizability, SOAP energy + λ-SOAP dipole and
polarizability models, 10 initial frames of ``examples/trajectories/dce_train.xyz``) once
serially and once under ``mpiexec -n P``, each in a fresh process with one BLAS/OpenMP thread
per rank, and prints per cycle: the segment (MD, candidate uncertainties, gather and selection),
the labelling of the batch, the retraining and the total, on rank 0, with the ratio 1 rank /
P ranks, and the same in CPU time on the critical path (the largest rank's segment and oracle
calls, rank 0's retraining): the speed-up when every rank has a core to itself, which a machine
shared with other jobs does not give. The thresholds are tiny and ``stop_factor`` huge, so every cycle labels exactly
``--batch`` structures and every segment runs its ``--segment`` steps in both runs: the same
work per cycle, except that P walkers give P times the candidates.

Usage::

    python benchmarks/bench_active_mpi.py [--ranks 2] [--batch 8] [--cycles 4] [--segment 40]

The load average is printed: on a shared machine the timings are only indicative.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "trajectories" / "dce_train.xyz"
HYPERS = {"dipole": {"n_components": 64, "n_sparse": 100, "n_sparse_l0": 200},
          "polarizability": {"n_components": 64, "n_sparse": 100, "n_sparse_l0": 200},
          "energy": {"n_sparse": 200}}
PHASES = ("segment", "label", "retrain", "other")


def _worker(args: argparse.Namespace) -> None:
    """One rank of a timed run: prints (rank 0) one JSON line with the phase times."""
    from mdplugin.active import ActiveConfig, Learner, loop, ranks, run_active
    from mdplugin.structures.data import read_dataset
    from mdplugin.learn.parallel import get_comm

    comm = get_comm()
    times: dict[str, float] = defaultdict(float)
    cpu: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)

    def timed(name, fn):
        def wrapper(self, *a, **k):
            t0, c0, f0 = time.perf_counter(), time.process_time(), cpu["fit"]
            try:
                return fn(self, *a, **k)
            finally:
                key = name if name != "retrain" or (a and a[0] == "label") else "retrain_initial"
                times[key] += time.perf_counter() - t0
                cpu[key] += time.process_time() - c0
                counts[key] += 1
                if key == "retrain":
                    cpu["fit_cycles"] += cpu["fit"] - f0
        return wrapper

    for name, cls, method in (("segment", loop._Run, "run_segment"), ("gather", loop._Run, "gather_candidates"),
                              ("label", loop._Run, "label_batch"), ("label", loop._Run, "label_structure"),
                              ("oracle", Learner, "label"), ("retrain", loop._Run, "retrain"),
                              ("cycles", loop._Run, "md_segments")):
        setattr(cls, method, timed(name, getattr(cls, method)))
    from mdplugin.active import learner as learner_module

    for module in (ranks, learner_module):  # the CPU time of each model fit, on the rank that runs it
        fit = module.fit_on_dataset

        def timed_fit(*a, _fit=fit, **k):
            c0 = time.process_time()
            try:
                return _fit(*a, **k)
            finally:
                cpu["fit"] += time.process_time() - c0
        module.fit_on_dataset = timed_fit
    data = read_dataset(DATA).subset(list(range(0, 1200, 120)))  # 10 frames, both conformers
    cfg = ActiveConfig(targets=("energy", "dipole", "polarizability"), model="lsoap", hypers=HYPERS,
                       thresholds={"energy": 1e-9, "dipole": 1e-9, "polarizability": 1e-9}, stop_factor=1e30,
                       temperature=(300, 600), steps=10**6, max_calls=args.cycles * args.batch,
                       segment=args.segment, sample_every=args.sample_every, batch=args.batch, walkers=True,
                       seed=args.seed, explore=False)  # the protocol of its figures
    run_active(data.frames[0], args.run_dir, cfg, oracle="tblite", initial=data, comm=comm, say=lambda m: None)
    mine = {"times": dict(times), "cpu": dict(cpu), "counts": dict(counts)}
    every = comm.gather(mine, root=0)
    if comm.rank == 0:
        print("RESULT " + json.dumps({"ranks": comm.size, "per_rank": every}), flush=True)


def _run(ranks: int, args: argparse.Namespace, work: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, __file__, "--worker", "--run-dir", str(work / f"run{ranks}"),
           "--batch", str(args.batch), "--cycles", str(args.cycles), "--segment", str(args.segment),
           "--sample-every", str(args.sample_every), "--seed", str(args.seed)]
    if ranks > 1:
        mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
        cmd = [mpiexec, "-n", str(ranks)] + cmd
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    out["command_wall_s"] = time.perf_counter() - t0
    return out


def _per_cycle(result: dict, rest: float) -> dict:
    """Wall time per cycle and phase on rank 0, and the CPU time on the critical path: the largest
    over ranks of the segment's, the oracle calls' and the model fits' CPU time, plus ``rest`` (s
    per cycle: the part of a retraining besides the fits, done on every rank). Waits in MPI
    collectives, which MPICH spends polling, are left out."""
    ranks = result["per_rank"]
    t, n = ranks[0]["times"], ranks[0]["counts"]
    cycles = n.get("retrain", 0)
    out = {p: (t.get(p, 0.0) + (t.get("gather", 0.0) if p == "segment" else 0.0)) / cycles
           for p in ("segment", "label", "retrain")}
    out["total"] = t["cycles"] / cycles
    out["other"] = out["total"] - out["segment"] - out["label"] - out["retrain"]
    out["cycles"] = cycles
    seg = max(r["cpu"].get("segment", 0.0) for r in ranks) / cycles
    ora = max(r["cpu"].get("oracle", 0.0) for r in ranks) / cycles
    # retraining: the largest rank's model fits + the rest of a retraining, which every rank does
    # (reading/broadcasting the data, rebuilding and saving the models): taken from the 1-rank run
    fit_max = max(r["cpu"].get("fit_cycles", 0.0) for r in ranks) / cycles
    ret = fit_max + rest
    out["cpu"] = {"segment": seg, "label": ora, "retrain": ret, "total": seg + ora + ret}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8, help="labels per cycle (both runs)")
    ap.add_argument("--cycles", type=int, default=4)
    ap.add_argument("--segment", type=int, default=40, help="MD steps per segment and walker")
    ap.add_argument("--sample-every", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args)
        return
    print(f"load average before: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        results = {r: _run(r, args, Path(tmp)) for r in (1, args.ranks)}
    print(f"load average after: {os.getloadavg()}")
    serial = results[1]["per_rank"][0]
    cycles = serial["counts"]["retrain"]
    rest = (serial["cpu"]["retrain"] - serial["cpu"].get("fit_cycles", 0.0)) / cycles
    cyc = {r: _per_cycle(res, rest) for r, res in results.items()}
    print(f"\nactive learning, DCE, tblite (E, F, μ, α), batch {args.batch}, segment {args.segment} steps, "
          f"{cyc[1]['cycles']} cycles; wall time per cycle on rank 0 (s)")
    print(f"{'phase':<10} {'1 rank':>9} {f'{args.ranks} ranks':>9} {'ratio':>7}")
    for p in ("segment", "label", "retrain", "other", "total"):
        a, b = cyc[1][p], cyc[args.ranks][p]
        print(f"{p:<10} {a:9.2f} {b:9.2f} {a / b if b > 0 else float('nan'):7.2f}x")
    print(f"\nCPU time per cycle on the critical path (largest rank's segment, oracle calls and model fits; s)")
    for p in ("segment", "label", "retrain", "total"):
        a, b = cyc[1]["cpu"][p], cyc[args.ranks]["cpu"][p]
        print(f"{p:<10} {a:9.2f} {b:9.2f} {a / b if b > 0 else float('nan'):7.2f}x")
    print(f"candidates per cycle: {args.segment // args.sample_every} on 1 rank, "
          f"{args.ranks * (args.segment // args.sample_every)} on {args.ranks} ranks")
    print(json.dumps({"per_cycle": {str(r): c for r, c in cyc.items()},
                      "command_wall_s": {str(r): res["command_wall_s"] for r, res in results.items()}}))


if __name__ == "__main__":
    main()
