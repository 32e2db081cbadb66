"""SA-GPR (λ-SOAP sparse GPR) accuracy, training time, model size and uncertainty, in one run.

* Water dimer (../shared/data/tensoap-water/water_dimer.xyz, atomic units, random split, 800
  training frames, the other 200 for testing): RMSE as % of the test standard deviation of the
  dipole, and of the λ = 0 and λ = 2 parts of the polarizability (targets 1.9 %, 4.7 %, 5.8 %:
  the full-GPR reference of that folder's README), with WATER_HYPERS: water-specific
  hyper-parameters (wider cutoff and atomic Gaussians; λ = 0 with 1600 representative
  environments per species, i.e. all the oxygens and half the hydrogens of the training set).
* 1,2-dichloroethane (examples/trajectories/dce_train.xyz, first 1000 frames, tested on the
  independent trajectory dce_test.xyz) with the *default* hyper-parameters: dipole and
  polarizability RMSE % of std (targets 0.8 %, 1.2 %), against the linear λ-SOAP kernel (ζ = 1)
  on the same features; training wall time per target (≤ 60 s) and model file size.
* Uncertainty: test frames in the top decile of predicted std must have ≥ 2× the mean error of
  the bottom half (error and std as the norm over components of a frame).

Prints the BLAS thread count and the load average with every fit (timings are wall times of
one process; run with OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 for single-thread figures).

Usage: python benchmarks/bench_sagpr.py [--skip-water] [--skip-dce] [--skip-linear] [--n-train 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mdplugin.structures.data import read_dataset  # noqa: E402
from mdplugin.learn.metrics import regression_metrics  # noqa: E402
from mdplugin.models import build  # noqa: E402
from mdplugin.core.tensors import symmetric_to_spherical  # noqa: E402

WATER = REPO.parent / "shared" / "data" / "tensoap-water" / "water_dimer.xyz"
DCE_TRAIN = REPO / "examples" / "trajectories" / "dce_train.xyz"
DCE_TEST = REPO / "examples" / "trajectories" / "dce_test.xyz"

#: water-dimer hyper-parameters (the DCE benchmark uses the defaults of LambdaSoapModel)
WATER_HYPERS = dict(cutoff=5.5, max_radial=7, max_angular=4, gaussian_width=0.4,
                    n_sparse=400, n_sparse_l0=1600, n_components=400)
SUMMARY: list[str] = []


def blas_threads() -> str:
    return os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "unset (all cores)"


def model_size_mb(model) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.npz"
        model.save(path)
        return path.stat().st_size / 1e6


def check(label: str, value: float, limit: float, unit: str, below: bool = True) -> None:
    ok = value <= limit if below else value >= limit
    SUMMARY.append(f"  {'PASS' if ok else 'FAIL'}  {label}: {value:.2f}{unit} ({'≤' if below else '≥'} {limit:g}{unit})")


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
    regs = {lam: f"{r:.1e}" for lam, r in model.regularizer_.items()}
    print(f"    (fit: wall {t_fit:.1f} s, CPU {time.process_time() - c0:.1f} s, load average {load:.1f}, "
          f"BLAS threads {blas_threads()}; regularisers {regs})", flush=True)
    t0 = time.perf_counter()
    pred, std = model.predict(test_frames, return_std=True)
    t_pred = time.perf_counter() - t0
    return model, pred, std, t_fit, t_pred


def report(name, target, y_test, pred, std, t_fit, t_pred, n_test, size_mb=None) -> dict:
    """Print one line; return the figures (RMSE % of std, λ parts, uncertainty ratio)."""
    out = {"fit": t_fit}
    line = f"{name:>28s} {target:>14s}: fit {t_fit:6.1f} s, predict {1e3 * t_pred / n_test:6.2f} ms/frame, "
    out["rmse"] = pct(y_test, pred)
    if target == "dipole":
        line += f"RMSE {out['rmse']:6.2f} % of std"
    else:
        a0, a2 = symmetric_to_spherical(y_test)
        b0, b2 = symmetric_to_spherical(pred)
        out["l0"], out["l2"] = pct(a0, b0), pct(a2, b2)
        line += f"RMSE {out['rmse']:6.2f} % of std (λ=0 {out['l0']:5.2f} %, λ=2 {out['l2']:5.2f} %)"
    if std is not None:
        out["ratio"] = uncertainty_ratio(y_test, pred, std)
        line += f"; top-decile/bottom-half error {out['ratio']:4.2f}"
    if size_mb is not None:
        line += f"; model file {size_mb:.0f} MB"
    print(line, flush=True)
    return out


def water() -> None:
    if not WATER.exists():
        print(f"{WATER} not found: water benchmark skipped")
        return
    ds = read_dataset(WATER, keys={"dipole": "mu", "polarizability": "alpha"}, units="atomic")
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(ds))
    train, test = perm[:800], perm[800:]
    frames = ds.frames
    print(f"water dimer: {len(train)} train / {len(test)} test (targets: μ 1.9 %, α λ=0 4.7 %, λ=2 5.8 %); "
          f"water-specific hyper-parameters {WATER_HYPERS}")
    for target in ("dipole", "polarizability"):
        y = getattr(ds, target)
        model, pred, std, t_fit, t_pred = run(
            target, [frames[i] for i in train], y[train], [frames[i] for i in test], y[test], **WATER_HYPERS
        )
        got = report("SA-GPR (WATER_HYPERS)", target, y[test], pred, std, t_fit, t_pred, len(test),
                     model_size_mb(model))
        if target == "dipole":
            check("water μ RMSE", got["rmse"], 1.9, " %")
        else:
            check("water α λ=0 RMSE", got["l0"], 4.7, " %")
            check("water α λ=2 RMSE", got["l2"], 5.8, " %")


def dce(n_train: int, linear: bool = True) -> None:
    if not (DCE_TRAIN.exists() and DCE_TEST.exists()):
        print("examples/trajectories/dce_{train,test}.xyz not found: DCE benchmark skipped")
        return
    train = read_dataset(DCE_TRAIN, properties=["dipole", "polarizability"])
    test = read_dataset(DCE_TEST, properties=["dipole", "polarizability"])
    idx = np.arange(min(n_train, len(train)))
    print(f"1,2-dichloroethane: {len(idx)} train ({DCE_TRAIN.name}) / {len(test)} test ({DCE_TEST.name}) "
          "(targets: μ 0.8 %, α 1.2 %, fit ≤ 60 s, uncertainty ratio ≥ 2); default hyper-parameters")
    limits = {"dipole": 0.8, "polarizability": 1.2}
    for target in ("dipole", "polarizability"):
        y_train = getattr(train, target)[idx]
        y_test = getattr(test, target)
        tr_frames = [train.frames[i] for i in idx]
        model, pred, std, t_fit, t_pred = run(target, tr_frames, y_train, test.frames, y_test)
        got = report("SA-GPR ζ=2 (defaults)", target, y_test, pred, std, t_fit, t_pred, len(test),
                     model_size_mb(model))
        check(f"DCE {target} RMSE", got["rmse"], limits[target], " %")
        check(f"DCE {target} fit wall time ({len(idx)} frames)", got["fit"], 60.0, " s")
        check(f"DCE {target} uncertainty ratio", got["ratio"], 2.0, "", below=False)
        if linear:
            _, pred, _, t_fit, t_pred = run(target, tr_frames, y_train, test.frames, y_test, zeta=1)
            report("linear λ-SOAP kernel (ζ=1)", target, y_test, pred, None, t_fit, t_pred, len(test))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-water", action="store_true")
    parser.add_argument("--skip-dce", action="store_true")
    parser.add_argument("--skip-linear", action="store_true", help="no ζ = 1 comparison fits")
    parser.add_argument("--n-train", type=int, default=1000)
    args = parser.parse_args()
    if not args.skip_dce:
        dce(args.n_train, linear=not args.skip_linear)
    if not args.skip_water:
        water()
    print("summary:")
    print("\n".join(SUMMARY) if SUMMARY else "  (nothing measured)")


if __name__ == "__main__":
    main()
