"""Train every model on the example data and compare them on held-out frames.

Trains the SOAP energy model and, for dipoles and polarizabilities, RPR and λ-SOAP SA-GPR side by
side on ``examples/trajectories/dce_train.xyz`` (GFN2-xTB labels of 1,2-dichloroethane), evaluates
them on the independent trajectory ``dce_test.xyz``, and prints accuracy, training and prediction
times and how well the predicted uncertainties match the actual errors. Saves the models.

    python examples/train_and_evaluate.py [-o OUT_DIR] [--n-train N] [--quick]

``--quick`` (or ``MDPLUGIN_EXAMPLE_QUICK=1``): 40 training and 40 test frames, smaller λ-SOAP
models, for CI. The same from the command line (one model)::

    mdplugin train examples/trajectories/dce_train.xyz --target dipole --model lsoap -o dipole.npz --n-train 300
    mdplugin evaluate dipole.npz examples/trajectories/dce_test.xyz --json

See docs/models.md for what the numbers mean and how to choose a model.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

import mdplugin
from mdplugin.structures.data import read_dataset
from mdplugin.models import build
from mdplugin.models.training import evaluate_model, fit_on_dataset, select_training

DATA = Path(__file__).resolve().parent / "trajectories"

#: smaller λ-SOAP models for the quick mode (fewer representative environments and components)
QUICK_LSOAP = {"n_sparse": 60, "n_sparse_l0": 120, "n_components": 64}


def uncertainty_check(model, data) -> dict:
    """Mean predicted std vs RMSE, and the fraction of errors within 2 predicted std."""
    y, std = model.predict(data.frames, return_std=True)
    y, std = np.asarray(y), np.asarray(std)
    err = np.abs(y - np.asarray(data.get(model.target)))
    return {"mean_std": float(np.mean(std)), "within_2std": float(np.mean(err <= 2 * std))}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-o", "--output", default="train-and-evaluate", help="folder for the models")
    p.add_argument("--n-train", type=int, default=None, help="training frames (default 300; quick 40)")
    p.add_argument("--quick", action="store_true", help="reduced run for CI")
    args = p.parse_args(argv)
    quick = args.quick or os.environ.get("MDPLUGIN_EXAMPLE_QUICK") == "1"
    n_train = args.n_train or (40 if quick else 300)
    n_test = 40 if quick else 500
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)

    train = select_training(read_dataset(DATA / "dce_train.xyz"), n_train, seed=0)
    test = read_dataset(DATA / "dce_test.xyz").subset(np.arange(n_test))
    print(f"{len(train)} training frames, {len(test)} held-out frames (independent trajectory)")

    jobs = [("soap", "energy"), ("rpr", "dipole"), ("lsoap", "dipole"),
            ("rpr", "polarizability"), ("lsoap", "polarizability")]
    rows = {}
    print(f"\n{'model':<22}{'RMSE':>10}{'% of std':>10}{'train s':>9}{'predict ms/frame':>18}"
          f"{'mean std':>10}{'|err|<2std':>11}")
    for kind, target in jobs:
        hypers = QUICK_LSOAP if (quick and kind == "lsoap") else {}
        model = build(kind, target=target, **hypers)
        t0 = time.perf_counter()
        fit_on_dataset(model, train)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        metrics = evaluate_model(model, test)
        t_pred = 1000 * (time.perf_counter() - t0) / len(test)
        unc = uncertainty_check(model, test)
        path = out / f"{target}_{kind}.npz"
        model.save(path)
        assert mdplugin.load_model(path).target == target  # a saved model loads back
        rows[f"{target}_{kind}"] = {**metrics, **unc, "train_s": t_train, "predict_ms_per_frame": t_pred}
        print(f"{kind + ' ' + target:<22}{metrics['rmse']:>10.4g}{metrics['rmse_percent_of_std']:>10.2f}"
              f"{t_train:>9.1f}{t_pred:>18.1f}{unc['mean_std']:>10.3g}{unc['within_2std']:>11.2f}")
    e = rows["energy_soap"]
    print(f"\nenergy: {1000 * e['rmse_per_atom']:.2f} meV/atom; forces {e['forces_rmse']:.3f} eV/Å "
          f"({e['forces_rmse_percent_of_std']:.1f} % of std)")
    print("units: energy eV, dipole e·Å, polarizability Å³; 'mean std' is the model's own uncertainty, "
          "'|err|<2std' the fraction of test components within two predicted std (≈ 0.95 if calibrated)")
    with open(out / "metrics.json", "w") as fh:
        json.dump(rows, fh, indent=2)
    print(f"models and metrics.json in {out}/")
    return rows


if __name__ == "__main__":
    main()
