#!/usr/bin/env python
"""The two pair passes of a condensed-phase MD step on their own: the expansion with gradients
(``SphericalExpansion.compute``) and the force/stress contraction
(``PairGradients.forces_and_strain`` with a random ∂E/∂c), CPU time of one thread, best and
median of ``--repeats`` calls, on the liquid-water box of ``benchmarks/condensed.py``.

Run it on two checkouts one after the other to compare them (same machine, same load)::

    OMP_NUM_THREADS=1 python benchmarks/pair_passes.py [--atoms 1536] [--repeats 21]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from condensed import REPEATS, perturbed_box  # noqa: E402

from mdplugin.features.expansion import SphericalExpansion  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--atoms", type=int, default=1536, choices=sorted(REPEATS))
    p.add_argument("--repeats", type=int, default=21)
    args = p.parse_args(argv)
    featurizer = SphericalExpansion([1, 8])  # the default hypers (5 Å, max_radial 4, max_angular 3)
    atoms = perturbed_box(REPEATS[args.atoms], seed=7)
    n_values = sum(v.size for v in featurizer.compute([atoms], gradients=True).values)
    de_dc = np.random.default_rng(0).normal(size=n_values)

    def one() -> tuple[float, float]:
        t0 = time.process_time()
        exp = featurizer.compute([atoms], gradients=True)
        t1 = time.process_time()
        exp.pair_gradients.forces_and_strain(de_dc)
        return t1 - t0, time.process_time() - t1

    for _ in range(3):
        one()
    before = os.times()
    expansion, contraction = np.array([one() for _ in range(args.repeats)]).T * 1e3
    after = os.times()
    print(f"{args.atoms} atoms, load {os.getloadavg()[0]:.1f}: expansion best {expansion.min():.1f} median "
          f"{np.median(expansion):.1f} ms, contraction best {contraction.min():.1f} median {np.median(contraction):.1f}"
          f" ms; system CPU {1e3 * (after.system - before.system) / args.repeats:.1f} ms per call pair")


if __name__ == "__main__":
    main()
