#!/usr/bin/env python
"""Spherical expansion of 1,2-dichloroethane: mdplugin's engine vs featomic, in the same process.

Both compute the same expansion (the MD hypers: cutoff 5 Å, max_radial 4, max_angular 3, species H,
C, Cl; featomic given mdplugin's radial spline, :meth:`SphericalExpansion.featomic_reference`),
alternating in rounds so that a busy machine slows both alike:

* one frame (an MD step), with and without position gradients: best and median of ``--repeat``
  calls each, and their ratio. "With gradients" is, for mdplugin, the expansion plus one
  contraction of a ∂E/∂c into forces and strain (what an MD step does with them); for featomic the
  expansion with ``positions`` gradients alone (its TensorMap, not even made dense);
* ``--frames`` frames at once (a training batch), without and (``--big-gradients``) with
  gradients (mdplugin: the dense gradient arrays training with forces uses): best of ``--big-repeat``;
* the largest deviation from featomic (relative to the largest |value| of each l) on the frames.

Run::

    python benchmarks/bench_expansion.py [--repeat 200] [--frames 1000] [--big-gradients]
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
    for run in engines.values():  # warm up (spline, compiled kernels, featomic initialisation)
        run(frames, gradients)
    per_round = max(1, repeat // rounds)
    for _ in range(rounds):
        for name, run in engines.items():
            times[name] += timed(lambda: run(frames, gradients), per_round)
    return times


def report(label: str, times: dict) -> None:
    f, t = (1e3 * np.asarray(times[k]) for k in ("featomic", "mdplugin"))
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
    args = p.parse_args(argv)

    from ase.io import read

    from mdplugin.features.expansion import SphericalExpansion

    frames = read(args.data, index=f":{args.frames}")
    ours = SphericalExpansion(SPECIES, **HYPERS)
    t0 = time.perf_counter()
    ours.compute(frames[:1], gradients=True).pair_gradients.forces_and_strain(ours.compute(frames[:1]).values)
    print(f"first call (spline from the disk cache or featomic, compiled kernels from numba's cache): "
          f"{time.perf_counter() - t0:.2f} s")
    reference = ours.featomic_reference()

    def run_featomic(batch, gradients):
        return reference.compute(batch, gradients=["positions"] if gradients else None)

    def run_ours(batch, gradients):
        exp = ours.compute(batch, gradients=gradients)
        if gradients and len(batch) == 1:
            exp.pair_gradients.forces_and_strain(exp.values)
        elif gradients:
            exp.gradient_values[0]  # noqa: B018 - the dense gradients of training
        return exp

    engines = {"featomic": run_featomic, "mdplugin": run_ours}
    print(f"{'ms':<34}{'featomic best':>14}{'median':>9}{'mdplugin best':>14}{'median':>9}"
          f"{'ratio best':>11}{'median':>7}")
    for gradients in (True, False):
        times = compare(engines, frames[:1], gradients, args.repeat, args.rounds)
        report(f"1 frame, {'with' if gradients else 'no'} gradients", times)
    for gradients in (False, True) if args.big_gradients else (False,):
        times = compare(engines, frames, gradients, args.big_repeat, args.big_repeat)
        report(f"{len(frames)} frames, {'with' if gradients else 'no'} gradients", times)
    worst = 0.0
    mine = ours.compute(frames)
    tensor = reference.compute(frames)
    offsets = np.r_[0, np.cumsum([len(a) for a in frames])]
    nr = HYPERS["max_radial"] + 1
    for key, block in tensor.items():
        l, _, _, neighbour = (int(v) for v in key.values)
        s = SPECIES.index(neighbour)
        rows = offsets[block.samples.column("system")] + block.samples.column("atom")
        got = mine.values[l][rows][:, :, s * nr : (s + 1) * nr]
        worst = max(worst, float(np.abs(got - block.values).max() / np.abs(mine.values[l]).max()))
    print(f"largest deviation from featomic (relative to the largest |value| per l): {worst:.1e}")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
