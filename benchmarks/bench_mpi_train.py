"""Speed-up of ``mpiexec -n P mdplugin train`` over the serial command, and memory per rank.

For each model (SOAP energy + forces; λ-SOAP dipole and/or polarizability) on the DCE data of
``examples/trajectories`` (dce_train.xyz 1200 + dce_extra.xyz 300 + dce_test.xyz 500 = 2000 GFN2-xTB
frames from independent runs: all the labelled DCE data the project has; ``--frames`` takes a
subset), with the default hyper-parameters:

* serial ``mdplugin train`` with one BLAS thread (the per-rank setting of the MPI runs),
* serial with ``--threads`` BLAS threads (default: the number of cores; what a user gets without MPI),
* ``mpiexec -n P mdplugin train`` with one BLAS thread per rank,

each in a fresh process. Reported: the fit time printed by ``mdplugin train`` (reading the file and
starting Python excluded), the wall time of the whole command, the CPU time of the fit on every
rank (the ranks' clocks start after a barrier, so that waiting for another rank to finish reading
the data file is not counted) and the "CPU speed-up" = serial fit CPU time / largest rank fit CPU time (what the speed-up
is when every rank has a core to itself: on a machine loaded by other jobs the wall-clock ratio
is distorted, since P ranks get a larger share of the cores than one process), the peak resident
memory of every rank (``getrusage`` maxrss), and the largest relative difference between the predictions of the
MPI and the one-thread serial model on 100 frames (0 when the arithmetic is the same: the parallel
fit is designed to be bit-identical). The load average is printed before and after: on a shared
machine the timings are only indicative. ``--phases`` also prints, for every run and rank, the CPU
and wall time of each phase of the λ-SOAP fit (``MDPLUGIN_FIT_TIMES=1``, :class:`mdplugin.learn.parallel.PhaseTimer`):
where a rank waits, which phase does not split, which rank carries more.

The expansion's radial spline is put in the disk cache (``$MDPLUGIN_CACHE``, see
:func:`mdplugin.features.radial.radial_spline`) before the runs, so that every run finds it
there, as every run after a user's first does; ``--cold-cache`` switches the cache off for the
runs instead (every process then builds featomic's spline, 5–15 s each).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_mpi_train.py [--frames 2000] [--ranks 2] \
        [--targets energy dipole polarizability] [--no-threaded] [--repeat 3] [--phases] [--cold-cache]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "trajectories"
#: the labelled DCE files, concatenated in this order into the benchmark's training file
DATA_FILES = ("dce_train.xyz", "dce_extra.xyz", "dce_test.xyz")
MODEL_OF = {"energy": "soap", "dipole": "lsoap", "polarizability": "lsoap"}
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _worker(argv: list[str]) -> int:
    """Run ``mdplugin`` ARGV in this process, then print one JSON line with rank and peak memory."""
    import mdplugin.models.training
    from mdplugin.cli.parser import main
    from mdplugin.learn.parallel import get_comm, max_rss_mib

    fit, timing = mdplugin.models.training.fit_on_dataset, {}

    def timed_fit(*args, **kwargs):  # CPU and wall time of this rank's part of the fit
        # the ranks read the data file at their own pace: start every rank's clock together, so
        # that a rank's fit time does not include waiting (MPI busy-polls) for another's reading
        get_comm().Barrier()
        cpu, wall = time.process_time(), time.perf_counter()
        out = fit(*args, **kwargs)
        timing["fit_cpu_s"] = time.process_time() - cpu
        timing["fit_wall_s"] = time.perf_counter() - wall
        return out

    mdplugin.models.training.fit_on_dataset = timed_fit  # cmd_train imports it at call time
    status = main(argv)
    comm = get_comm()
    print("BENCH " + json.dumps({"rank": comm.rank, "size": comm.size, "maxrss_mib": max_rss_mib(), **timing}),
          flush=True)
    return status


def _run(cmd: list[str], threads: int, phases: bool = False, cold: bool = False) -> dict:
    env = {**os.environ, **{v: str(threads) for v in THREAD_VARS}}
    if phases:
        env["MDPLUGIN_FIT_TIMES"] = "1"
    if cold:
        env["MDPLUGIN_CACHE"] = "off"
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    fit = float(re.search(r" in ([0-9.]+) s ->", proc.stdout).group(1))
    ranks = sorted((json.loads(line[6:]) for line in proc.stdout.splitlines() if line.startswith("BENCH ")),
                   key=lambda r: r["rank"])
    if phases:
        print(f"  phases of: {' '.join(cmd[-8:])}")
        print("\n".join("    " + line for line in sorted(proc.stderr.splitlines(), key=_rank_of) if line.startswith("fit-times")))
    return {"fit_s": fit, "wall_s": wall, "maxrss_mib": [r["maxrss_mib"] for r in ranks],
            "fit_cpu_s": [r["fit_cpu_s"] for r in ranks], "load_before": load}


def _rank_of(line: str) -> str:
    """Sort key of a ``fit-times`` line: its rank (stable: phases stay in order)."""
    parts = line.split()
    return parts[3] if len(parts) > 3 else ""


def _mpiexec() -> str:
    exe = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    if exe is None:
        raise SystemExit("mpiexec not found (pip install mpich mpi4py)")
    return exe


def _warm_cache(targets: list[str]) -> str:
    """Build (or find) the radial splines of the targets' models in the disk cache, in this
    process, as a user's first run would; returns the cache folder."""
    from mdplugin.features.radial import cache_dir
    from mdplugin.models import build

    for target in targets:
        model = build(MODEL_OF[target], target=target)
        model.featurizer().spline  # noqa: B018 - builds or loads it
    return f"warm ({cache_dir()})"


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000, help="training frames (at most 2000)")
    parser.add_argument("--ranks", type=int, default=2, help="MPI ranks")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="BLAS threads of the threaded serial run")
    parser.add_argument("--targets", nargs="+", default=["energy", "dipole", "polarizability"],
                        help="targets, space- or comma-separated (energy dipole polarizability)")
    parser.add_argument("--no-threaded", action="store_true", help="skip the threaded serial run")
    parser.add_argument("--phases", action="store_true",
                        help="print every rank's per-phase CPU and wall time of each λ-SOAP fit (MDPLUGIN_FIT_TIMES=1)")
    parser.add_argument("--cold-cache", action="store_true",
                        help="switch the disk cache of the radial table off for the runs (default: warm it first)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="alternate the serial and MPI runs this many times and report the median CPU "
                             "speed-up (the machine's speed drifts with other jobs)")
    args = parser.parse_args()

    from mdplugin import load_model
    from mdplugin.structures.data import read_dataset

    mpiexec = _mpiexec()
    work = Path(tempfile.mkdtemp(prefix="bench_mpi_"))
    data = work / "dce.xyz"
    counts = {}
    with open(data, "wb") as out:
        for name in DATA_FILES:
            if not (DATA / name).exists():
                raise SystemExit(f"{DATA / name} is missing (python examples/make_trajectories.py --sets {name[:-4]})")
            out.write((DATA / name).read_bytes())
            counts[name] = len(read_dataset(DATA / name, properties=[]))
    n_all = len(read_dataset(data, properties=[]))
    assert n_all == sum(counts.values()), "the concatenated data file lost frames"
    sources = " + ".join(f"{name} {n}" for name, n in counts.items())
    if args.frames > n_all:
        raise SystemExit(f"--frames {args.frames}: only {n_all} labelled DCE frames are available")
    test = read_dataset(DATA / "dce_test.xyz", properties=[]).frames[:100]
    me = [sys.executable, str(Path(__file__).resolve()), "--worker"]

    targets = [t.strip() for item in args.targets for t in item.split(",") if t.strip()]
    for target in targets:
        if target not in MODEL_OF:
            raise SystemExit(f"unknown target {target!r} (one of {', '.join(MODEL_OF)})")
    cache = "off for the runs" if args.cold_cache else _warm_cache(targets)
    print(f"mpiexec -n {args.ranks} mdplugin train vs serial, {args.frames} of {n_all} DCE frames "
          f"({sources}), {os.cpu_count()} cores; radial-table disk cache {cache}; load average {_load()}")
    rows = []
    for target in targets:
        base = ["train", str(data), "--target", target, "--model", MODEL_OF[target]]
        if args.frames < n_all:
            base += ["--n-train", str(args.frames)]
        runs, pairs = {}, []
        for rep in range(max(1, args.repeat)):
            tag = f" #{rep + 1}" if args.repeat > 1 else ""
            runs["serial 1 thread" + tag] = serial = _run(
                me + base + ["-o", str(work / f"{target}.serial.npz")], 1, args.phases, args.cold_cache)
            if not args.no_threaded and rep == 0:
                runs[f"serial {args.threads} threads"] = _run(
                    me + base + ["-o", str(work / f"{target}.threads.npz")], args.threads, cold=args.cold_cache)
            runs[f"mpiexec -n {args.ranks}" + tag] = mpi = _run(
                [mpiexec, "-n", str(args.ranks)] + me + base + ["-o", str(work / f"{target}.mpi.npz")], 1, args.phases,
                args.cold_cache)
            pairs.append(serial["fit_cpu_s"][0] / max(mpi["fit_cpu_s"]))
        ser, par = load_model(work / f"{target}.serial.npz"), load_model(work / f"{target}.mpi.npz")
        ys, yp = np.asarray(ser.predict(test)), np.asarray(par.predict(test))
        diff = float(np.abs(ys - yp).max() / np.abs(ys).max())
        ref = runs["serial 1 thread" + (" #1" if args.repeat > 1 else "")]
        print(f"\n{MODEL_OF[target]} {target}  (load average {_load()})")
        print(f"  {'run':<22}{'fit s':>9}{'wall s':>9}{'speed-up':>10}{'fit CPU s per rank':>22}"
              f"{'CPU speed-up':>14}  peak memory per rank, MiB; load before")
        for name, r in runs.items():
            if " #" in name:  # each run against the serial run of its pair
                ref = runs["serial 1 thread #" + name.split(" #")[1]]
            mem = ", ".join(f"{m:.0f}" for m in r["maxrss_mib"])
            cpu = ", ".join(f"{c:.1f}" for c in r["fit_cpu_s"])
            cpu_speedup = ref["fit_cpu_s"][0] / max(r["fit_cpu_s"])
            print(f"  {name:<22}{r['fit_s']:9.1f}{r['wall_s']:9.1f}{ref['fit_s'] / r['fit_s']:9.2f}x{cpu:>22}"
                  f"{cpu_speedup:13.2f}x  {mem}; {r['load_before']:.1f}")
        if len(pairs) > 1:
            print(f"  CPU speed-up of the {len(pairs)} serial/MPI pairs: "
                  f"{', '.join(f'{x:.2f}' for x in pairs)}; median {np.median(pairs):.2f}x")
        print(f"  MPI vs serial (1 thread) predictions: max relative difference {diff:.1e}")
        rows.append({"target": target, "runs": runs, "cpu_speedups": pairs, "prediction_rel_diff": diff})
    print("\nJSON " + json.dumps({"frames": args.frames, "data": counts, "ranks": args.ranks,
                                 "cold_cache": args.cold_cache, "results": rows}))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.exit(_worker(sys.argv[2:]))
    main()
