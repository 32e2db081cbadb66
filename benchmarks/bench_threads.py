"""Default threads against ``OMP_NUM_THREADS=1``, on a loaded and on an unloaded machine.

Runs each command in a fresh process under three settings, interleaved:

* ``all-cores``: ``MDPLUGIN_THREADS=<cores>``, i.e. one BLAS/OpenMP thread per core everywhere, as
  numpy, tblite and PySCF start by default (the behaviour before ``mdplugin/core/threads.py``);
* ``default``: nothing set (``mdplugin/core/threads.py`` chooses);
* ``omp1``: ``OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=MKL_NUM_THREADS=1`` (the reference);

and prints the wall time of each and the ratios to ``omp1``. ``--load`` starts one busy process per
core (a Python loop) for the duration, as other users' jobs on a shared node would; the 1-minute load
average before and after every run is printed beside it.

Commands (``--commands``): ``demo`` (``mdplugin demo``, full size; ``demo-quick`` the reduced one),
``fit`` (a λ-SOAP dipole fit on 201 DCE frames), ``md-ml`` (``mdplugin md`` with the demo's SOAP
energy and λ-SOAP dipole and polarizability models, 2000 steps), ``md-tblite`` (``mdplugin md
--energy tblite``, 300 steps).

    python benchmarks/bench_threads.py --load --repeat 2
    python benchmarks/bench_threads.py --commands fit md-ml md-tblite
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "trajectories"
SETTINGS = ("all-cores", "default", "omp1")
LIBRARY_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "MDPLUGIN_THREADS")


def environment(setting: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LIBRARY_VARIABLES}
    env["PYTHONPATH"] = str(REPO)
    if setting == "all-cores":
        env["MDPLUGIN_THREADS"] = str(os.cpu_count() or 1)
    elif setting == "omp1":
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def commands(work: Path, models: Path) -> dict[str, list[str]]:
    mdp = [sys.executable, "-m", "mdplugin"]
    start = work / "start.xyz"
    return {
        "demo": mdp + ["demo", "--quiet", "-o", str(work / "demo")],
        "demo-quick": mdp + ["demo", "--quick", "--quiet", "-o", str(work / "demo-quick")],
        "fit": mdp + ["train", str(DATA / "dce_train.xyz"), "--n-train", "201", "--target", "dipole", "--model",
                      "lsoap", "-o", str(work / "dipole.npz")],
        "md-ml": mdp + ["md", str(start), "--energy", str(models / "energy_soap.npz"), "--dipole",
                        str(models / "dipole_lsoap.npz"), "--polarizability", str(models / "polarizability_lsoap.npz"),
                        "--steps", "2000", "--dt", "0.5", "--quiet", "-o", str(work / "md_ml.xyz")],
        "md-tblite": mdp + ["md", str(start), "--energy", "tblite", "--steps", "300", "--dt", "0.5", "--quiet",
                            "-o", str(work / "md_tblite.xyz")],
    }


def prepare(work: Path, need_models: bool) -> Path:
    """The start structure and (for md-ml) the demo's models, made once with one thread."""
    import ase.io

    work.mkdir(parents=True, exist_ok=True)
    ase.io.write(work / "start.xyz", ase.io.read(DATA / "dce_test.xyz", index=0))
    models = work / "models-demo" / "models"
    if need_models and not (models / "polarizability_lsoap.npz").exists():
        print("training the demo's models once (mdplugin demo, one thread) ...", flush=True)
        subprocess.run([sys.executable, "-m", "mdplugin", "demo", "--quiet", "-o", str(work / "models-demo")],
                       env=environment("omp1"), check=True, stdout=subprocess.DEVNULL)
    return models


def run(cmd: list[str], setting: str) -> tuple[float, float, float]:
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=environment(setting), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t0, load0, os.getloadavg()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commands", nargs="+", default=["demo", "fit", "md-ml", "md-tblite"],
                    choices=["demo", "demo-quick", "fit", "md-ml", "md-tblite"])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    ap.add_argument("--load", action="store_true", help="one busy process per core during the runs")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--workdir", default="bench_threads")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    work = Path(args.workdir).resolve()
    models = prepare(work, "md-ml" in args.commands)
    cmds = commands(work, models)
    busy = []
    if args.load:
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
        time.sleep(5)
    results: dict[str, dict[str, list]] = {}
    try:
        for name in args.commands:
            results[name] = {s: [] for s in args.settings}
            for _ in range(args.repeat):
                for setting in args.settings:
                    seconds, load0, load1 = run(cmds[name], setting)
                    results[name][setting].append(seconds)
                    print(f"{name:>10} {setting:>9}: {seconds:7.1f} s  (load {load0:.1f} -> {load1:.1f})", flush=True)
            best = {s: min(v) for s, v in results[name].items()}
            if "omp1" in best:
                ratios = ", ".join(f"{s} {best[s] / best['omp1']:.2f}x" for s in best if s != "omp1")
                print(f"{name:>10} best of {args.repeat}: " + ", ".join(f"{s} {v:.1f} s" for s, v in best.items())
                      + f"; against omp1: {ratios}", flush=True)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    print(f"cores: {os.cpu_count()}, extra busy processes: {len(busy)}, git: "
          + subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True).stdout.strip())
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
