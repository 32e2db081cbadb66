"""Multi-scale local models: two cutoffs with kernel weights fitted on held-out frames, against each cutoff alone.

The ``lode`` model with ``long_range=False`` and ``cutoffs=(3, 6)`` sums the linear kernels of the 3 Å and
6 Å λ-SOAP blocks with weights chosen on every 5th training frame (``weights_`` after the fit); the
same model with one cutoff is the reference. Data:

* the TENSOAP water dimers (``/work/shared/data/tensoap-water/water_dimer.xyz``, atomic units,
  randomly oriented): the first ``--n-train`` frames train, the last ``--n-test`` test;
* with ``--dimers DIR`` also the ion-molecule dimers of ``benchmarks/long_range.py`` (train_300.xyz,
  test_300.xyz in DIR).

Errors: RMSE in % of the test labels' standard deviation over all components.

    python benchmarks/multiscale.py [--n-train 200 --n-test 300] [--dimers DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

WATER = "/work/shared/data/tensoap-water/water_dimer.xyz"
SETTINGS = {"3 Å": [3.0], "6 Å": [6.0], "3 + 6 Å": [3.0, 6.0]}


def percent(pred, y) -> float:
    y = y.reshape(len(y), -1)
    pred = np.asarray(pred).reshape(len(y), -1)
    return float(100 * np.sqrt(((pred - y) ** 2).sum(axis=1).mean() / ((y - y.mean(axis=0)) ** 2).sum(axis=1).mean()))


def compare(name: str, train, test) -> dict:
    from mdplugin.models import build

    out = {}
    for target in ("dipole", "polarizability"):
        for label, cutoffs in SETTINGS.items():
            t0 = time.perf_counter()
            model = build("lode", target=target, long_range=False, cutoffs=cutoffs).fit(
                train.frames, {target: getattr(train, target)})
            err = percent(model.predict(test.frames), getattr(test, target))
            weights = {part: {b: round(w, 3) for b, w in ws.items() if b != "one"} for part, ws in model.weights_.items()}
            out[f"{target} {label}"] = {"rmse_percent": err, "weights": weights}
            print(f"{name:10s} {target:15s} {label:8s} {err:6.2f} %   weights {weights}   "
                  f"fit {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=200)
    ap.add_argument("--n-test", type=int, default=300)
    ap.add_argument("--dimers", help="folder of benchmarks/long_range.py's data")
    args = ap.parse_args(argv)
    from mdplugin.structures.data import read_dataset

    results = {}
    if os.path.exists(WATER):
        keys = {"dipole": "mu", "polarizability": "alpha"}
        data = read_dataset(WATER, properties=["dipole", "polarizability"], keys=keys, units="atomic")
        n = len(data.frames)
        train, test = data.subset(range(args.n_train)), data.subset(range(n - args.n_test, n))
        results["water dimers"] = compare("water", train, test)
    else:
        print(f"{WATER} absent: water dimers skipped")
    if args.dimers:
        from long_range import read_set

        train, _ = read_set(os.path.join(args.dimers, "train_300.xyz"))
        test, _ = read_set(os.path.join(args.dimers, "test_300.xyz"))
        results["ion dimers"] = compare("ion", train, test)
    print(json.dumps({"load": os.getloadavg()[0], "results": results}))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
