#!/usr/bin/env python
"""Spherical expansion of 1,2-dichloroethane: featomic path vs the tabulated numpy engine.

Both engines of :class:`mdplugin.features.expansion.SphericalExpansion` compute the same
dense expansion (the MD hypers: cutoff 5 Å, max_radial 4, max_angular 3, species H, C, Cl) in
the same process, alternating in rounds so that a busy machine slows both alike:

* one frame (an MD step), with and without position gradients: best and median of ``--repeat``
  calls each, and their ratio;
* ``--frames`` frames at once (a training batch), without and (``--big-gradients``) with
  gradients: best of ``--big-repeat``;
* the largest deviation of the tabulated engine from featomic (relative to the largest |value|
  or |gradient| of each l) on the frames measured;
* ``--crossover``: both engines on batches of 1, 2, 5, 10, ... frames (where "auto" would switch).

Run::

    python benchmarks/bench_expansion.py [--repeat 200] [--frames 1000] [--big-gradients] [--crossover]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HYPERS = dict(cutoff=5.0, max_radial=4, max_angular=3, gaussian_width=0.3, smoothing_width=0.5)
SPECIES = [1, 6, 17]


def timed(function, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        function()
        out.append(time.perf_counter() - t0)
    return out


def compare(engines: dict, frames, gradients: bool, repeat: int, rounds: int) -> dict:
    """Alternate the engines in ``rounds`` rounds of ``repeat // rounds`` calls: {name: times}."""
    times = {name: [] for name in engines}
    for calc in engines.values():  # warm up (tables, plans, featomic initialisation)
        calc.compute(frames, gradients=gradients)
    per_round = max(1, repeat // rounds)
    for _ in range(rounds):
        for name, calc in engines.items():
            times[name] += timed(lambda: calc.compute(frames, gradients=gradients), per_round)
    return times


def deviation(ref, got) -> tuple[float, float]:
    """Largest |tabulated − featomic| relative to the largest |featomic| per l: (values, gradients)."""
    dv = max(np.abs(a - b).max() / np.abs(b).max() for a, b in zip(got.values, ref.values))
    dg = 0.0
    if ref.gradient_values is not None:
        assert np.array_equal(ref.pairs, got.pairs)
        dg = max(np.abs(a - b).max() / np.abs(b).max() for a, b in zip(got.gradient_values, ref.gradient_values))
    return dv, dg


def report(label: str, times: dict) -> None:
    f, t = (1e3 * np.asarray(times[k]) for k in ("featomic", "tabulated"))
    print(f"{label:<34}{f.min():9.3f}{np.median(f):9.3f}{t.min():9.3f}{np.median(t):9.3f}"
          f"{f.min() / t.min():8.1f}x{np.median(f) / np.median(t):7.1f}x")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO / "examples" / "trajectories" / "dce_train.xyz")
    p.add_argument("--repeat", type=int, default=200, help="one-frame calls per engine")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--frames", type=int, default=1000, help="frames in the batch measurement")
    p.add_argument("--big-repeat", type=int, default=3)
    p.add_argument("--big-gradients", action="store_true", help="also time the batch with gradients")
    p.add_argument("--crossover", action="store_true", help="time batches of 1 … --frames frames")
    args = p.parse_args(argv)

    from ase.io import read

    from mdplugin.features.expansion import SphericalExpansion

    frames = read(args.data, index=f":{args.frames}")
    engines = {name: SphericalExpansion(SPECIES, engine=name, **HYPERS) for name in ("featomic", "tabulated")}
    t0 = time.perf_counter()
    engines["tabulated"].compute(frames[:1])
    print(f"first tabulated call (featomic import + radial table): {time.perf_counter() - t0:.2f} s; "
          f"table: {engines['tabulated']._tabulated.table.n_intervals} intervals")

    print(f"{'ms':<34}{'featomic best':>14}{'median':>9}{'tabulated best':>15}{'median':>8}"
          f"{'ratio best':>11}{'median':>7}")
    worst = [0.0, 0.0]
    for gradients in (True, False):
        times = compare(engines, frames[:1], gradients, args.repeat, args.rounds)
        report(f"1 frame, {'with' if gradients else 'no'} gradients", times)
    for k in range(min(len(frames), 20)):
        for gradients in (True, False):
            dv, dg = deviation(engines["featomic"].compute(frames[k : k + 1], gradients=gradients),
                               engines["tabulated"].compute(frames[k : k + 1], gradients=gradients))
            worst = [max(worst[0], dv), max(worst[1], dg)]
    for gradients in (False, True) if args.big_gradients else (False,):
        times = compare(engines, frames, gradients, args.big_repeat, args.big_repeat)
        report(f"{len(frames)} frames, {'with' if gradients else 'no'} gradients", times)
        dv, dg = deviation(engines["featomic"].compute(frames, gradients=gradients),
                           engines["tabulated"].compute(frames, gradients=gradients))
        worst = [max(worst[0], dv), max(worst[1], dg)]
    print(f"largest deviation from featomic (relative to the largest |.| per l): values {worst[0]:.1e}, "
          f"gradients {worst[1]:.1e}")

    if args.crossover:
        sizes = [n for n in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if n <= len(frames)]
        for gradients in (False, True):
            for n in sizes:
                repeat = max(3, min(50, 400 // n))
                times = compare(engines, frames[:n], gradients, repeat, min(repeat, 3))
                report(f"{n} frames, {'with' if gradients else 'no'} gradients", times)
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
