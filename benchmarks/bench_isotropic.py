"""Does the λ-SOAP polarizability generalise to independent trajectories? (issue 27, point 5)

Trains the default ``lsoap`` polarizability model on ``examples/trajectories/dce_train.xyz``
(1,2-dichloroethane, Langevin MD at 300 and 600 K, seeds 101–104) and tests it on

* ``dce_test.xyz``: independent runs at the training temperatures (seeds 201–204), and
* ``OTHER``: independent runs at other temperatures (450 K anti and gauche, 800 K anti, 200 K gauche;
  seeds 501–504), made with
  ``python examples/make_trajectories.py -o DIR --sets dce_other_temperatures`` (not committed),

printing, per regulariser choice, the RMSE of the isotropic part α₀ = tr α / 3 as % of its standard
deviation on that test set, of the anisotropic part β = α − α₀·1 (Frobenius, % of the spread of β), and
of the whole tensor (% of the std of all components: ``mdplugin evaluate``'s ``rmse_percent_of_std``),
with the regularisers each λ ended at.

Usage: python benchmarks/bench_isotropic.py OTHER.xyz [--n-train 1200] [--choices grid,wide,evidence]
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

from mdplugin.learn.metrics import regression_metrics  # noqa: E402
from mdplugin.models import build  # noqa: E402
from mdplugin.structures.data import read_dataset  # noqa: E402

TRAIN = REPO / "examples" / "trajectories" / "dce_train.xyz"
TEST = REPO / "examples" / "trajectories" / "dce_test.xyz"

#: regulariser choices compared (hyper-parameters of the lsoap model)
CHOICES = {
    "grid": dict(regularizer_grid=(1e-10, 1e-8, 1e-6, 1e-4, 1e-2)),  # the choice before issue 27
    "wide": dict(regularizer_grid=tuple(10.0 ** np.arange(-14, 1, 2))),
    "evidence": dict(regularizer_choice="evidence"),
    "nu3": dict(body_order=3),
}


def parts_errors(predicted: np.ndarray, reference: np.ndarray) -> dict:
    """RMSE % of spread: α₀, anisotropic β (Frobenius), whole tensor (all components)."""
    a0p, a0r = np.trace(predicted, axis1=1, axis2=2) / 3, np.trace(reference, axis1=1, axis2=2) / 3
    bp, br = predicted - a0p[:, None, None] * np.eye(3), reference - a0r[:, None, None] * np.eye(3)
    iso = 100 * np.sqrt(np.mean((a0p - a0r) ** 2)) / np.std(a0r)
    spread_b = np.sqrt(np.mean(np.sum((br - br.mean(0)) ** 2, axis=(1, 2))))
    aniso = 100 * np.sqrt(np.mean(np.sum((bp - br) ** 2, axis=(1, 2)))) / spread_b

    whole = regression_metrics(reference, predicted)["rmse_percent_of_std"]
    return {"alpha0 %": iso, "aniso %": aniso, "whole %": whole}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("other", type=Path, help="labelled DCE frames at other temperatures (extended XYZ)")
    p.add_argument("--n-train", type=int, default=1200)
    p.add_argument("--choices", default=",".join(CHOICES))
    args = p.parse_args(argv)
    train = read_dataset(TRAIN)
    frames, y = train.frames[: args.n_train], train.polarizability[: args.n_train]
    tests = {"dce_test": read_dataset(TEST), "other T": read_dataset(args.other)}
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load {os.getloadavg()[0]:.1f}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; {len(frames)} training frames")
    print("| choice | regularisers (λ=0, λ=2) | test set | α₀ % | anisotropic % | whole % | fit s |")
    print("|---|---|---|---|---|---|---|")
    for name in args.choices.split(","):
        start = time.perf_counter()
        model = build("lsoap", target="polarizability", **CHOICES[name]).fit(frames, y)
        elapsed = time.perf_counter() - start
        regs = ", ".join(f"{model.regularizer_[lam]:.1e}" for lam in (0, 2))
        for label, data in tests.items():
            e = parts_errors(model.predict(data.frames), data.polarizability)
            print(f"| {name} | {regs} | {label} ({len(data.frames)}) | {e['alpha0 %']:.2f} | {e['aniso %']:.2f} | "
                  f"{e['whole %']:.2f} | {elapsed:.0f} |", flush=True)


if __name__ == "__main__":
    main()
