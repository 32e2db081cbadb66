#!/usr/bin/env python
"""Farthest-point sampling: mdplugin's (filtered, distributable) FPS against skmatter's FPS.

The models choose their representative environments by FPS per species on normalised invariant
features. This script computes those features for real training sets, runs
:func:`mdplugin.learn.gpr.distributed_farthest_point_sampling` (one process) and
``skmatter.sample_selection.FPS`` on the same rows in the same process, and prints for every
species: rows, feature width, points chosen, whether both chose the same points in the same order,
both wall times (best of ``--repeat``) and their ratio.

Cases: the SOAP energy model's features (cutoff 5 Å, max_radial 4, max_angular 3; 200 points) and the
λ-SOAP models' invariant features (cutoff 4.5 Å, max_radial 6, max_angular 4; 500 points) of
``--frames`` frames of ``examples/trajectories/dce_train.xyz``, and the λ-SOAP features of the
TENSOAP water dimers (``/work/shared/data/tensoap-water``, when present).

Run::

    OMP_NUM_THREADS=1 python benchmarks/bench_fps.py [--frames 1000] [--repeat 3]
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

SOAP = dict(cutoff=5.0, max_radial=4, max_angular=3, gaussian_width=0.3, smoothing_width=0.5)
LSOAP = dict(cutoff=4.5, max_radial=6, max_angular=4, gaussian_width=0.3, smoothing_width=0.5)
WATER = Path("/work/shared/data/tensoap-water/water_dimer.xyz")


def features(frames, hypers):
    """Normalised invariant power spectrum (n_atoms, F) and the species of every row."""
    from mdplugin.features.expansion import SphericalExpansion
    from mdplugin.features.lambda_soap import power_spectrum

    calc = SphericalExpansion(sorted({int(z) for a in frames for z in a.numbers}), **hypers)
    x = np.concatenate([power_spectrum(calc.compute(frames[i : i + 100])) for i in range(0, len(frames), 100)])
    return x / np.linalg.norm(x, axis=1)[:, None], np.concatenate([a.numbers for a in frames])


def best_of(repeat, fn):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from ase.io import read
    from skmatter.sample_selection import FPS

    from mdplugin.learn.gpr import distributed_farthest_point_sampling

    dce = read(REPO / "examples" / "trajectories" / "dce_train.xyz", index=f":{args.frames}")
    cases = [("DCE, SOAP energy features", dce, SOAP, 200), ("DCE, λ-SOAP λ=0 features", dce, LSOAP, 500)]
    if WATER.exists():
        cases.append(("water dimer, λ-SOAP λ=0", read(WATER, index=f":{args.frames}"), LSOAP, 500))
    print(f"{'case':28s} {'Z':>3s} {'rows':>6s} {'F':>5s} {'chosen':>6s} {'same':>5s} "
          f"{'mdplugin s':>10s} {'skmatter s':>10s} {'ratio':>6s}")
    total_ours = total_sk = 0.0
    for name, frames, hypers, m in cases:
        x, z = features(frames, hypers)
        for s in np.unique(z):
            rows = np.ascontiguousarray(x[z == s])
            k = min(m, len(rows))
            t_ours, ours = best_of(args.repeat, lambda: distributed_farthest_point_sampling(rows, k))
            t_sk, theirs = best_of(args.repeat, lambda: FPS(n_to_select=k, initialize=0).fit(rows).selected_idx_)
            total_ours, total_sk = total_ours + t_ours, total_sk + t_sk
            print(f"{name:28s} {s:3d} {len(rows):6d} {rows.shape[1]:5d} {k:6d} {str(np.array_equal(ours, theirs)):>5s} "
                  f"{t_ours:10.3f} {t_sk:10.3f} {t_sk / t_ours:6.1f}", flush=True)
    print(f"total: mdplugin {total_ours:.2f} s, skmatter {total_sk:.2f} s ({total_sk / total_ours:.1f}x)")


if __name__ == "__main__":
    main()
