#!/usr/bin/env python
"""ms per MD step of an i-PI run of 1,2-dichloroethane served by the mdplugin client, against the
same run served by i-PI's built-in ``dummy`` driver, in one run of this script.

For each repeat the script runs, with the same i-PI input (NVT, UNIX socket, positions written
every step):

1. i-PI + ``i-pi-py_driver -m dummy`` (zero forces: i-PI's own cost and the socket round trip);
2. i-PI + ``mdplugin ipi`` (energy: tblite by default; dipole and polarizability: RPR models
   trained here on a few tblite-labelled frames, or the model files given);
3. the model's own time, measured inside the client of run 2 while it runs (the calculator call
   for energy, forces, dipole, polarizability and their uncertainties, per request), and the
   time of the whole PES call (``MdpluginDriver.compute_structure``: plus unit conversion, the
   Atoms update and the extras JSON), by a timing subclass of the PES served like ``mdplugin ipi``
   serves it (i-PI's driver in a child process behind the client's relay). Measuring in the run
   itself keeps the machine's load out of the difference.

i-PI's own per-step wall time (``Average timings`` at verbosity medium, blocks of 100 steps after
step 0) is the measure of a run. The client's overhead over the model's own time is

    overhead = t(mdplugin run) − t(dummy run) − t(model)

(the requirement: ≤ 1 ms per step), printed with the PES glue ``t(PES) − t(model)``. On a busy
machine, i-PI itself is slower when its client keeps a core busy (fewer cycles, later wake-ups),
which the dummy driver does not do; a control run with i-PI's dummy PES spinning the CPU for as
long as the model took (``busy dummy``) has the same load pattern and no mdplugin code, so
``t(mdplugin) − t(busy dummy)`` is the client's overhead with the machine's load taken out.
All processes run with OMP_NUM_THREADS=1.

Usage::

    python benchmarks/bench_ipi.py                       # 300 steps, 3 repeats
    python benchmarks/bench_ipi.py --steps 500 --repeats 5 --energy energy.npz --dipole d.npz
    python benchmarks/bench_ipi.py --no-std --energy energy.npz --dipole d.npz --polarizability a.npz
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.io import write  # noqa: E402

BIN = Path(sys.executable).parent


def dichloroethane() -> Atoms:
    """Anti 1,2-dichloroethane, slightly displaced (no symmetry), in a 20 Å box (Å)."""
    pos = np.array([
        [0.000, 0.000, 0.760], [0.000, 0.000, -0.760],
        [0.000, 1.780, 1.290], [0.000, -1.780, -1.290],
        [0.890, -0.510, 1.130], [-0.890, -0.510, 1.130],
        [0.890, 0.510, -1.130], [-0.890, 0.510, -1.130],
    ])
    atoms = Atoms("C2Cl2H4", positions=pos + np.random.default_rng(1).normal(scale=0.03, size=pos.shape))
    atoms.cell = [20.0, 20.0, 20.0]
    atoms.center()
    return atoms


def train_models(folder: Path, template: Atoms, n_train: int) -> tuple[Path, Path]:
    """RPR dipole and polarizability models on ``n_train`` displaced frames labelled with tblite."""
    from mdplugin.models import build
    from mdplugin.oracles.label import label_frames

    rng = np.random.default_rng(0)
    frames = []
    for _ in range(n_train):
        atoms = template.copy()
        atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
        frames.append(atoms)
    data = label_frames(frames, "tblite", properties=["dipole", "polarizability"])
    paths = folder / "dipole.npz", folder / "polarizability.npz"
    build("rpr", target="dipole").fit(data.frames, data.dipole).save(paths[0])
    build("rpr", target="polarizability").fit(data.frames, data.polarizability).save(paths[1])
    return paths


def ipi_input(init: str, steps: int, prefix: str, address: str) -> str:
    """The benchmark's i-PI input: NVT (SVR), positions every step, no extras written (i-PI's
    verbosity medium prints the ``Average timings`` this script reads)."""
    from mdplugin.engines.ipi import input_xml

    return input_xml(init=init, steps=steps, socket=address, sockets_prefix=prefix, seed=12345, extras=(),
                     properties=("step", "time{picosecond}", "temperature{kelvin}", "potential"),
                     verbosity="medium", safe_stride=1000000)


#: the PES of mdplugin's client, timing inside i-PI's driver process what its calculator takes per
#: request (a subclass of mdplugin's PES, served by run_client like `mdplugin ipi` serves the PES)
TIMED_PES = """
import atexit, json, time
from mdplugin.engines.ipi.mdplugin_pes import MdpluginDriver

__DRIVER_NAME__ = "timed"
__DRIVER_CLASS__ = "TimedDriver"
model, pes, start = [], [], []


class TimedDriver(MdpluginDriver):
    def _evaluate(self, atoms, *args):
        t0 = time.perf_counter()
        out = super()._evaluate(atoms, *args)
        model.append(time.perf_counter() - t0)
        return out

    def compute_structure(self, cell, pos):
        t0 = time.perf_counter()
        out = super().compute_structure(cell, pos)
        start.append(t0)
        pes.append(time.perf_counter() - t0)
        return out


@atexit.register
def _dump():
    with open("client_times.json", "w") as f:
        json.dump({"model": model, "pes": pes, "start": start}, f)
"""

#: the client: mdplugin ipi's options and run_client, with the timed PES
TIMED_CLIENT = """
import sys
from mdplugin.cli.ipi import pes_options
from mdplugin.cli.parser import build_parser
from mdplugin.engines.ipi import run_client

args = build_parser().parse_args(sys.argv[2:])
run_client(pes_options(args), unix=True, address=args.address, sockets_prefix=args.sockets_prefix,
           timeout=args.timeout, pes_file=sys.argv[1])
"""


#: control client: i-PI's dummy PES that keeps the CPU busy for as long as the model took, so the
#: machine sees the same load pattern as with mdplugin, without any mdplugin code
BUSY_DRIVER = """
import time
from ipi.pes.dummy import Dummy_driver

__DRIVER_NAME__ = "busy"
__DRIVER_CLASS__ = "BusyDummy"


class BusyDummy(Dummy_driver):
    def __init__(self, seconds=0.0, *args, **kwargs):
        self.seconds = float(seconds)
        super().__init__(*args, **kwargs)

    def compute_structure(self, cell, pos):
        end = time.perf_counter() + self.seconds
        while time.perf_counter() < end:
            pass
        return super().compute_structure(cell, pos)
"""


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def run_ipi(folder: Path, template: Path, steps: int, client: list[str], address: str) -> float:
    """Run i-PI with ``client`` in ``folder``; i-PI's mean wall time per step (s) after step 0."""
    folder.mkdir(parents=True, exist_ok=True)
    prefix = f"{folder}/"
    (folder / "input.xml").write_text(ipi_input(str(template), steps, prefix, address))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",  # this checkout's mdplugin in the client
               PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH")])))
    with open(folder / "ipi.log", "w") as log:
        server = subprocess.Popen([str(BIN / "i-pi"), "input.xml"], cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                                  env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (folder / address).exists():  # i-PI's driver does not wait for the server
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"i-PI did not start; see {folder / 'ipi.log'}")
            time.sleep(0.05)
        with open(folder / "client.log", "w") as log:
            proc = subprocess.Popen([*client, "--sockets-prefix" if "ipi" in client else "-S", prefix],
                                    cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            if proc.wait(timeout=3600) != 0 or server.wait(timeout=600) != 0:
                raise RuntimeError(f"run failed; see {folder}")
        finally:
            _kill(proc)
    finally:
        _kill(server)
    text = (folder / "ipi.log").read_text()
    blocks = [(int(s), float(t)) for s, t in re.findall(r"Average timings at MD step\s+(\d+)\. t/step:\s+(\S+)", text)]
    times = [t for s, t in blocks if s > 0]
    if not times:
        raise RuntimeError(f"no i-PI timings in {folder / 'ipi.log'} (run at least 101 steps)")
    return float(np.mean(times))


def client_times(folder: Path, skip: int) -> tuple[float, float, float]:
    """Mean seconds per request inside the client: the calculator alone, the whole PES call, and
    the time between the end of one PES call and the start of the next (i-PI's step + the socket
    round trip + i-PI's driver loop, as the client sees it)."""
    import json

    data = json.loads((folder / "client_times.json").read_text())
    model = data["model"][1 + skip:]  # [0] is the template evaluated at start-up
    pes = np.array(data["pes"][skip:])
    start = np.array(data["start"][skip:])
    between = start[1:] - (start[:-1] + pes[:-1])
    return float(np.mean(model)), float(np.mean(pes)), float(np.mean(between))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300, help="MD steps per run (blocks of 100 are timed; default 300)")
    p.add_argument("--repeats", type=int, default=3, help="dummy/mdplugin run pairs (default 3)")
    p.add_argument("--energy", default="tblite", help="energy model file or 'tblite' (default)")
    p.add_argument("--dipole", help="dipole model file (default: RPR trained here)")
    p.add_argument("--polarizability", help="polarizability model file (default: RPR trained here)")
    p.add_argument("--n-train", type=int, default=20, help="frames for the default RPR models (default 20)")
    p.add_argument("--keep", help="keep the run folders in this directory")
    p.add_argument("--no-std", action="store_true",
                   help="run the client with --no-std (values only, no uncertainties: a production run)")
    args = p.parse_args(argv)

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-ipi-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        template = dichloroethane()
        template_path = work / "dce.xyz"
        write(template_path, template)
        dipole, polarizability = args.dipole, args.polarizability
        if dipole is None or polarizability is None:
            t0 = time.perf_counter()
            d, a = train_models(work, template, args.n_train)
            dipole, polarizability = dipole or str(d), polarizability or str(a)
            print(f"trained RPR dipole/polarizability models on {args.n_train} tblite frames "
                  f"in {time.perf_counter() - t0:.1f} s")
        steps = max(args.steps, 101) + 1
        (work / "timed_pes.py").write_text(TIMED_PES)
        client = [sys.executable, "-c", TIMED_CLIENT, str(work / "timed_pes.py"), "ipi", "--template",
                  str(template_path), "--energy", args.energy,
                  "--dipole", str(dipole), "--polarizability", str(polarizability), "--unix", "--address", "ff"]
        if args.no_std:
            client.append("--no-std")
        dummy = [str(BIN / "i-pi-py_driver"), "-u", "-a", "ff", "-m", "dummy"]
        (work / "busy_driver.py").write_text(BUSY_DRIVER)
        rows = []
        for r in range(args.repeats):
            t_ml = run_ipi(work / f"mdplugin{r}", template_path, steps, client, "ff")
            # i-PI times steps 1.. (step 0 includes the connection); requests 0 and 1 are the
            # initial forces and step 0
            t_model, t_pes, t_between = client_times(work / f"mdplugin{r}", skip=2)
            t_dummy = run_ipi(work / f"dummy{r}", template_path, steps, dummy, "ff")
            busy = [str(BIN / "i-pi-py_driver"), "-u", "-a", "ff", "-m", "custom", "-P", str(work / "busy_driver.py"),
                    "-o", f"seconds={t_model:.6f}"]
            t_busy = run_ipi(work / f"busy{r}", template_path, steps, busy, "ff")
            rows.append((t_dummy, t_ml, t_model, t_pes, t_between, t_busy))
            print(f"repeat {r}: dummy {1e3 * t_dummy:7.2f} | mdplugin {1e3 * t_ml:7.2f} | model {1e3 * t_model:7.2f} | "
                  f"PES {1e3 * t_pes:7.2f} | between {1e3 * t_between:6.2f} | busy dummy {1e3 * t_busy:7.2f} ms/step | "
                  f"overhead vs dummy {1e3 * (t_ml - t_dummy - t_model):+6.2f}, vs busy dummy "
                  f"{1e3 * (t_ml - t_busy):+6.2f} ms/step", flush=True)
        med = [statistics.median(col) for col in zip(*rows)]
        t_dummy, t_ml, t_model, t_pes, t_between, t_busy = med
        # medians of the per-repeat differences (each repeat's runs are close in time)
        overhead = statistics.median(r[1] - r[0] - r[2] for r in rows)
        over_busy = statistics.median(r[1] - r[5] for r in rows)
        glue = statistics.median(r[3] - r[2] for r in rows)
        print()
        models = "RPR (trained here)" if not (args.dipole and args.polarizability) else f"{dipole}, {polarizability}"
        print(f"1,2-dichloroethane, {steps - 1} NVT steps, energy={args.energy}, dipole + polarizability: {models}, "
              f"{'no uncertainties' if args.no_std else 'with uncertainties'}; medians of {args.repeats} repeats")
        print(f"  i-PI + dummy driver        {1e3 * t_dummy:8.2f} ms/step")
        print(f"  i-PI + mdplugin client     {1e3 * t_ml:8.2f} ms/step   ({t_ml / t_dummy:.2f} x dummy)")
        print(f"  model (inside the client)  {1e3 * t_model:8.2f} ms/step")
        print(f"  client overhead            {1e3 * overhead:+8.2f} ms/step   (mdplugin − dummy − model; "
              f"target ≤ 1 ms) {'OK' if overhead <= 1e-3 else 'OVER'}")
        print(f"  i-PI + dummy kept busy     {1e3 * t_busy:8.2f} ms/step   (dummy PES spinning the CPU for the "
              f"model's time: same load, no mdplugin code)")
        print(f"  overhead vs busy dummy     {1e3 * over_busy:+8.2f} ms/step   (mdplugin − busy dummy)")
        print(f"  PES glue (inside client)   {1e3 * glue:+8.3f} ms/step   (compute_structure − model: "
              f"units, Atoms update, extras JSON)")
        print(f"  between two PES calls      {1e3 * t_between:8.2f} ms/step   (i-PI's step + socket round trip + "
              f"driver loop, seen by the client; compare with the dummy run)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
