#!/usr/bin/env python
"""Energy-model hyper-parameters against the structures of the models' own ML dynamics.

Takes the labelled frames of an active-learning run on a water cell (``RUN/data.xyz``: the initial
boxes, then the labels of the rounds in order), fits the ``soap`` energy model with each set of
hyper-parameters on the first ``--n-fit`` frames and prints its energy RMSE per atom in-sample and on
the remaining frames (the last rounds' labels: structures the ML dynamics visited, not in the fit),
with the wall time of the fit. docs/condensed.md ("Active learning on the cell") has the figures.

Usage::

    python examples/liquid_water/run.py --quick -o RUN --energy-hypers '{}' --stages data,active
    python benchmarks/water_al_hypers.py RUN/active/data.xyz --n-fit 48 \\
        --hypers '{}' '{"cutoff": 3.5}' '{"cutoff": 3.0}' '{"zeta": 4}'
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="labelled frames of an active run (RUN/data.xyz)")
    p.add_argument("--n-fit", type=int, required=True, help="fit on the first N frames, test on the rest")
    p.add_argument("--hypers", nargs="+", default=["{}"], help="JSON objects of soap hyper-parameters")
    args = p.parse_args(argv)
    from mdplugin.models import build
    from mdplugin.models.training import fit_on_dataset
    from mdplugin.structures.data import read_dataset

    data = read_dataset(args.data, properties=["energy", "forces"])
    fit, test = data.subset(np.arange(args.n_fit)), data.subset(np.arange(args.n_fit, len(data)))
    print(f"{len(fit)} frames fitted, {len(test)} held out; load {os.getloadavg()[0]:.1f}", flush=True)
    for text in args.hypers:
        hypers = json.loads(text)
        t0 = time.perf_counter()
        model = fit_on_dataset(build("soap", target="energy", **hypers), fit)
        seconds = time.perf_counter() - t0
        rmse = []
        for part in (fit, test):
            energy = np.asarray(model.predict(part.frames), dtype=float)
            n_atoms = np.array([len(a) for a in part.frames])
            rmse.append(1000 * np.sqrt(np.mean(((energy - part.energy) / n_atoms) ** 2)))
        print(f"{json.dumps(hypers):50s} in-sample {rmse[0]:6.2f}  held out {rmse[1]:6.2f} meV/atom  "
              f"fit {seconds:.0f} s (load {os.getloadavg()[0]:.1f})", flush=True)


if __name__ == "__main__":
    main()
