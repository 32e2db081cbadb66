"""Active learning on 1,2-dichloroethane with GFN2-xTB (tblite) as the oracle.

Starts from 10 labelled frames of the example data, runs Langevin MD ramped from 300 to 600 K
with SOAP (energy/forces) and λ-SOAP (dipole) models, labels structures whose uncertainty is over
the thresholds, retrains, and stops after 20 oracle calls or 1000 steps. Then it resumes the run
with a larger budget, as one would after a crash (``mdplugin active --resume RUN_DIR``).

    python examples/active_learning.py [RUN_DIR]
    MDPLUGIN_EXAMPLE_QUICK=1 python examples/active_learning.py RUN_DIR   # a reduced run (CI)

The same from the command line::

    mdplugin active start.xyz -o RUN_DIR --initial initial.xyz --targets energy,dipole \\
        --dipole-hypers '{"n_components": 64, "n_sparse": 100, "n_sparse_l0": 200}' \\
        --threshold-energy 0.008 --threshold-dipole 0.015 --temperature 300:600 \\
        --steps 1000 --max-calls 20
    mdplugin active --resume RUN_DIR --max-calls 30
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from mdplugin.active import ActiveConfig, run_active
from mdplugin.data import read_dataset

HERE = Path(__file__).resolve().parent
QUICK = bool(os.environ.get("MDPLUGIN_EXAMPLE_QUICK"))


def main(run_dir: str = "active-run") -> None:
    pool = read_dataset(HERE / "trajectories" / "dce_train.xyz")
    picks = np.random.default_rng(0).permutation(len(pool))[:10]
    initial = pool.subset(picks)
    hypers = {"dipole": {"n_components": 64, "n_sparse": 100, "n_sparse_l0": 200}}
    if QUICK:  # small models, a short run, a tiny oracle budget
        hypers = {"energy": {"n_sparse": 30, "max_radial": 3, "max_angular": 2},
                  "dipole": {"n_components": 16, "n_sparse": 30, "n_sparse_l0": 60, "max_radial": 3,
                             "max_angular": 2, "regularizer_l1": 1e-4}}
    config = ActiveConfig(
        targets=("energy", "dipole"),
        model="lsoap",
        hypers=hypers,
        thresholds={"energy": 0.008, "dipole": 0.015},  # eV/atom, e·Å
        temperature=(300.0, 600.0),
        steps=40 if QUICK else 1000,
        max_calls=2 if QUICK else 20,
        seed=0,
    )
    if (Path(run_dir) / "config.json").exists():
        summary = run_active(None, run_dir, resume=True, overrides={"max_calls": 3 if QUICK else 30})
    else:
        summary = run_active(initial.frames[0], run_dir, config, oracle="tblite", initial=initial)
    print(summary.text())
    print(f"labels in {run_dir}/data.xyz, events in {run_dir}/log.csv, plot {run_dir}/active.png")


if __name__ == "__main__":
    main(*sys.argv[1:])
