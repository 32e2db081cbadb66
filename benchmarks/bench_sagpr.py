"""SA-GPR (λ-SOAP sparse GPR) accuracy, training time and uncertainty, in one run.

* Water dimer (../shared/data/tensoap-water/water_dimer.xyz, atomic units, random split, 800
  training frames, the other 200 for testing): RMSE as % of the test standard deviation of the
  dipole, and of the λ = 0 and λ = 2 parts of the polarizability (targets 1.9 %, 4.7 %, 5.8 %).
* 1,2-dichloroethane (examples/trajectories/dce_train.xyz, first 1000 frames, tested on the
  independent trajectory dce_test.xyz): dipole and polarizability RMSE % of std (targets 0.8 %,
  1.2 %), against the linear λ-SOAP kernel (ζ = 1) on the same features; training time (≤ 60 s).
* Uncertainty: test frames in the top decile of predicted std must have ≥ 2× the mean error of
  the bottom half (error and std as the norm over components of a frame).

Usage: python benchmarks/bench_sagpr.py [--skip-water] [--skip-dce] [--n-train 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mdplugin.data import read_dataset  # noqa: E402
from mdplugin.metrics import regression_metrics  # noqa: E402
from mdplugin.models import build  # noqa: E402
from mdplugin.tensors import symmetric_to_spherical  # noqa: E402

WATER = REPO.parent / "shared" / "data" / "tensoap-water" / "water_dimer.xyz"
DCE_TRAIN = REPO / "examples" / "trajectories" / "dce_train.xyz"
DCE_TEST = REPO / "examples" / "trajectories" / "dce_test.xyz"


def pct(y_true, y_pred) -> float:
    return regression_metrics(y_true, y_pred)["rmse_percent_of_std"]


def uncertainty_ratio(y_true, y_pred, std) -> float:
    n = len(y_true)
    err = np.linalg.norm((y_pred - y_true).reshape(n, -1), axis=1)
    sd = np.linalg.norm(std.reshape(n, -1), axis=1)
    order = np.argsort(sd)
    top = order[-max(1, n // 10):]
    bottom = order[: n // 2]
    return float(err[top].mean() / err[bottom].mean())


def run(target, train_frames, y_train, test_frames, y_test, **hypers):
    model = build("lsoap", target=target, **hypers)
    c0, t0 = time.process_time(), time.perf_counter()
    model.fit(train_frames, y_train)
    t_fit = time.perf_counter() - t0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"    (fit: wall {t_fit:.1f} s, CPU {time.process_time() - c0:.1f} s, load average {load:.1f}; "
          f"regularisers {model.regularizer_})", flush=True)
    t0 = time.perf_counter()
    pred, std = model.predict(test_frames, return_std=True)
    t_pred = time.perf_counter() - t0
    return model, pred, std, t_fit, t_pred


def report(name, target, y_test, pred, std, t_fit, t_pred, n_test):
    line = f"{name:>28s} {target:>14s}: fit {t_fit:6.1f} s, predict {1e3 * t_pred / n_test:6.2f} ms/frame, "
    if target == "dipole":
        line += f"RMSE {pct(y_test, pred):6.2f} % of std"
    else:
        a0, a2 = symmetric_to_spherical(y_test)
        b0, b2 = symmetric_to_spherical(pred)
        line += (f"RMSE {pct(y_test, pred):6.2f} % of std (λ=0 {pct(a0, b0):5.2f} %, "
                 f"λ=2 {pct(a2, b2):5.2f} %)")
    if std is not None:
        line += f"; top-decile/bottom-half error {uncertainty_ratio(y_test, pred, std):4.2f}"
    print(line, flush=True)


def water() -> None:
    if not WATER.exists():
        print(f"{WATER} not found: water benchmark skipped")
        return
    ds = read_dataset(WATER, keys={"dipole": "mu", "polarizability": "alpha"}, units="atomic")
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(ds))
    train, test = perm[:800], perm[800:]
    frames = ds.frames
    print(f"water dimer: {len(train)} train / {len(test)} test (targets: μ 1.9 %, α λ=0 4.7 %, λ=2 5.8 %)")
    for target in ("dipole", "polarizability"):
        y = getattr(ds, target)
        _, pred, std, t_fit, t_pred = run(
            target, [frames[i] for i in train], y[train], [frames[i] for i in test], y[test]
        )
        report("SA-GPR (defaults)", target, y[test], pred, std, t_fit, t_pred, len(test))


def dce(n_train: int) -> None:
    if not (DCE_TRAIN.exists() and DCE_TEST.exists()):
        print("examples/trajectories/dce_{train,test}.xyz not found: DCE benchmark skipped")
        return
    train = read_dataset(DCE_TRAIN, properties=["dipole", "polarizability"])
    test = read_dataset(DCE_TEST, properties=["dipole", "polarizability"])
    idx = np.arange(min(n_train, len(train)))
    print(f"1,2-dichloroethane: {len(idx)} train ({DCE_TRAIN.name}) / {len(test)} test ({DCE_TEST.name}) "
          "(targets: μ 0.8 %, α 1.2 %, fit ≤ 60 s)")
    for target in ("dipole", "polarizability"):
        y_train = getattr(train, target)[idx]
        y_test = getattr(test, target)
        tr_frames = [train.frames[i] for i in idx]
        _, pred, std, t_fit, t_pred = run(target, tr_frames, y_train, test.frames, y_test)
        report("SA-GPR ζ=2 (defaults)", target, y_test, pred, std, t_fit, t_pred, len(test))
        _, pred, _, t_fit, t_pred = run(target, tr_frames, y_train, test.frames, y_test, zeta=1)
        report("linear λ-SOAP kernel (ζ=1)", target, y_test, pred, None, t_fit, t_pred, len(test))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-water", action="store_true")
    parser.add_argument("--skip-dce", action="store_true")
    parser.add_argument("--n-train", type=int, default=1000)
    args = parser.parse_args()
    if not args.skip_water:
        water()
    if not args.skip_dce:
        dce(args.n_train)


if __name__ == "__main__":
    main()
