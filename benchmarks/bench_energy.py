#!/usr/bin/env python
"""SOAP energy model on 1,2-dichloroethane: accuracy, training time and NVE energy drift.

1. Train ``mdplugin.models.soap.SoapEnergyModel`` on ``--n-train`` frames (energies and forces)
   of ``--train`` (default ``examples/trajectories/dce_train.xyz``) and time it.
2. Evaluate on the independent trajectory ``--test`` (default ``dce_test.xyz``): energy RMSE in
   meV/atom, force RMSE in eV/Å and as % of the force standard deviation.
3. NVE (velocity Verlet) with the trained model: ``--dt`` fs × ``--nve-ps`` ps from ``--temperature``
   K; total-energy drift (last − first) and maximum deviation in meV/atom, and whether the
   molecule stays intact.

Targets (issue 4): force RMSE ≤ 5 % of the force std, energy RMSE ≤ 3 meV/atom, training ≤ 120 s
(1000 frames); NVE 0.5 fs × 10 ps drift ≤ 1 meV/atom. Run::

    python benchmarks/bench_energy.py [--n-train 1000] [--hypers '{"n_sparse": 300}'] [--nve-ps 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TRAJ = REPO / "examples" / "trajectories"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=Path, default=TRAJ / "dce_train.xyz")
    p.add_argument("--test", type=Path, default=TRAJ / "dce_test.xyz")
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--hypers", default="{}", help="SoapEnergyModel hyper-parameters (JSON)")
    p.add_argument("--nve-ps", type=float, default=10.0, help="NVE length, ps (0: skip)")
    p.add_argument("--dt", type=float, default=0.5, help="NVE time step, fs")
    p.add_argument("--temperature", type=float, default=300.0)
    p.add_argument("--save", type=Path, help="write the trained model here")
    args = p.parse_args(argv)

    from mdplugin.engines.ase import MLCalculator
    from mdplugin.structures.data import read_dataset
    from mdplugin.engines.md import run_md
    from mdplugin.models.soap import SoapEnergyModel
    from mdplugin.models.training import evaluate_model, select_training

    train = read_dataset(args.train, properties=["energy", "forces"])
    train = select_training(train, min(args.n_train, len(train)), seed=0)
    test = read_dataset(args.test, properties=["energy", "forces"])
    model = SoapEnergyModel(**json.loads(args.hypers))
    t0 = time.perf_counter()
    model.fit(train.frames, {"energy": train.energy, "forces": train.forces})
    t_train = time.perf_counter() - t0
    print(f"hypers: {json.dumps(model.get_params())}")
    print(f"trained on {len(train)} frames ({len(model.sparse_species_)} sparse environments) in {t_train:.1f} s")
    if args.save:
        model.save(args.save)
    result = evaluate_model(model, test)
    print(f"test ({len(test)} frames of {args.test.name}): energy RMSE {1000 * result['rmse_per_atom']:.2f} meV/atom, "
          f"forces RMSE {result['forces_rmse']:.4f} eV/Å = {result['forces_rmse_percent_of_std']:.2f} % of the "
          f"force std")
    _, std = model.predict(test.frames, return_std=True)
    err = np.abs(model.predict(test.frames) - test.energy)
    print(f"energy std estimate: median {1000 * np.median(std):.1f} meV vs median |error| {1000 * np.median(err):.1f} meV")

    if args.nve_ps > 0:
        steps = int(round(args.nve_ps * 1000 / args.dt))
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "nve.xyz"
            summary = run_md(test.frames[0], MLCalculator(energy=model), steps=steps, dt_fs=args.dt,
                             output=out, temperature_K=args.temperature, thermostat="none",
                             interval=max(1, steps // 1000), seed=0, progress=False)
        print(f"NVE {args.dt} fs x {args.nve_ps} ps from {args.temperature} K: {summary.text()}")


if __name__ == "__main__":
    main()
