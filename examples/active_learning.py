"""Active learning on 1,2-dichloroethane with GFN2-xTB (tblite) as the oracle.

Starts from 10 labelled frames of the example data and runs Langevin MD with SOAP (energy/forces)
and λ-SOAP (dipole) models in the benchmark's settings (docs/active.md): short walkers of 100 steps,
each from a random labelled frame, the 300 -> 600 K ramp repeated 5 times, a candidate every 5
steps, and after each walker the candidate (of the latest 200) whose label most lowers the models'
posterior variance is labelled; the models are retrained, and the run stops after 20 oracle calls
or 2000 steps. Then it resumes the run with a larger budget, as one would after a crash
(``mdplugin active --resume RUN_DIR``).

    python examples/active_learning.py [-o RUN_DIR]       # run it again to resume with a larger budget
    python examples/active_learning.py --quick -o RUN_DIR   # a reduced run (CI; or MDPLUGIN_EXAMPLE_QUICK=1)

The same from the command line::

    mdplugin active start.xyz -o RUN_DIR --initial initial.xyz --targets energy,dipole \\
        --dipole-hypers '{"n_components": 64, "n_sparse": 100, "n_sparse_l0": 200}' \\
        --segment 100 --sample-every 5 --walkers --pool 200 --stop-factor 20 \\
        --threshold-energy 0.003 --threshold-dipole 0.006 --temperature 300:600 --temperature-cycles 5 \\
        --steps 2000 --max-calls 20
    mdplugin active --resume RUN_DIR --max-calls 30 --steps 3000
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from mdplugin.active import ActiveConfig, run_active
from mdplugin.structures.data import read_dataset

HERE = Path(__file__).resolve().parent
QUICK = bool(os.environ.get("MDPLUGIN_EXAMPLE_QUICK"))


def main(run_dir: str = "active-run") -> None:
    """A new run in ``run_dir``, or, when it already holds one, the same run resumed."""
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
        thresholds={"energy": 0.003, "dipole": 0.006},  # eV/atom, e·Å; low: the selection decides
        temperature=(300.0, 600.0),
        temperature_cycles=5,
        segment=20 if QUICK else 100,  # MD steps per walker
        sample_every=5,
        walkers=True,
        pool=200,
        selection="ivr",
        stop_factor=20,
        steps=40 if QUICK else 2000,
        max_calls=2 if QUICK else 20,
        seed=0,
    )
    if (Path(run_dir) / "config.json").exists():
        summary = run_active(None, run_dir, resume=True,
                             overrides={"max_calls": 3, "steps": 60} if QUICK else {"max_calls": 30, "steps": 3000})
    else:
        summary = run_active(initial.frames[0], run_dir, config, oracle="tblite", initial=initial)
    print(f"{summary.oracle_calls} oracle calls; labels in {run_dir}/data.xyz, events in {run_dir}/log.csv, "
          f"plot {run_dir}/active.png")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", nargs="?", help="run folder (the same as -o)")
    parser.add_argument("-o", "--output", default=None, help="run folder (default active-run)")
    parser.add_argument("--quick", action="store_true", help="reduced run for CI")
    args = parser.parse_args()
    QUICK = QUICK or args.quick
    main(args.output or args.run_dir or "active-run")
