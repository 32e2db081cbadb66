"""Do the default thresholds of ``mdplugin active`` label where the models are wrong?

For each system (methanol, a water trimer, 1,2-dichloroethane; GFN2-xTB by tblite) this runs
``mdplugin active START -o RUN --targets energy,dipole --steps N`` with every other setting at its
default, twice:

* ``default``: the relative thresholds as they are now (the uncertainty the first models gave on
  held-out frames of a 2-fold cross-validation);
* ``error-threshold``: the rule before (the held-out *error* used as the threshold on the
  uncertainty), given as absolute thresholds with the values that rule computes.

and reports the oracle calls, the thresholds, and the RMSE of the first models (the initial frames
only) and of the final ones on an independent test set: frames of a separate GFN2-xTB Langevin run
at the same temperature (another seed), labelled by the same oracle, never seen in training.

    OMP_NUM_THREADS=1 python benchmarks/bench_active_defaults.py --workdir /tmp/bad
    OMP_NUM_THREADS=1 python benchmarks/bench_active_defaults.py --systems methanol --steps 600
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import molecule


def water_trimer() -> Atoms:
    """Three water molecules about 2.9 Å apart (O–O), in one plane."""
    atoms = Atoms()
    for shift in ([0.0, 0.0, 0.0], [2.9, 0.0, 0.0], [1.45, 2.5, 0.0]):
        w = molecule("H2O")
        w.translate(shift)
        atoms += w
    return atoms


def dichloroethane() -> Atoms:
    from ase.io import read

    return read(Path(__file__).resolve().parents[1] / "examples" / "ipi" / "dce.xyz")


SYSTEMS = {"methanol": lambda: molecule("CH3OH"), "water-trimer": water_trimer, "dce": dichloroethane}


def reference_set(start: Atoms, n: int, temperature: float, seed: int):
    """``n`` frames of a GFN2-xTB Langevin run (one every 20 steps of 0.5 fs), labelled."""
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from mdplugin.oracles.label import label_frames, resolve_oracle

    oracle = resolve_oracle("tblite")
    atoms = start.copy()
    atoms.calc = oracle
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=temperature, friction=0.01 / units.fs, rng=rng)
    frames = []
    for _ in range(n):
        dyn.run(20)
        frames.append(Atoms(numbers=atoms.numbers, positions=atoms.positions.copy()))
    return label_frames(frames, oracle, ["energy", "forces", "dipole"])


def errors(models: dict, test) -> dict:
    """RMSE of the energy (eV/atom), forces (eV/Å) and dipole (e·Å) on ``test``."""
    n_atoms = np.array([len(a) for a in test.frames])
    e = models["energy"].predict(test.frames)
    f = np.concatenate(models["energy"].predict_forces(test.frames))
    mu = models["dipole"].predict(test.frames)
    return {"energy": float(np.sqrt(np.mean(((e - test.energy) / n_atoms) ** 2))),
            "forces": float(np.sqrt(np.mean((f - np.concatenate(test.forces)) ** 2))),
            "dipole": float(np.sqrt(np.mean(np.sum((mu - test.dipole) ** 2, axis=1))))}


def first_models(run_dir: Path, config):
    """The models trained on the run's initial frames alone, and their learner (thresholds)."""
    from mdplugin.active import RunStore
    from mdplugin.active.learner import Learner
    from mdplugin.oracles.label import resolve_oracle

    import ase.io

    store = RunStore(run_dir)
    store.open()
    data = store.read_data(config.labels())
    origin = [a.info.get("active_origin") for a in ase.io.read(run_dir / "data.xyz", ":")]
    initial = data.subset([i for i, o in enumerate(origin) if o != "md"])
    learner = Learner(config, resolve_oracle("tblite"))
    learner.train(initial)
    return learner


def run_arm(start: Atoms, run_dir: Path, steps: int, temperature: float, thresholds: dict | None):
    from mdplugin.active import ActiveConfig, run_active

    shutil.rmtree(run_dir, ignore_errors=True)
    config = ActiveConfig(targets=("energy", "dipole"), steps=steps, temperature=(temperature, temperature),
                          thresholds=thresholds or {}, explore=False)  # the protocol of its figures
    t0 = time.perf_counter()
    summary = run_active(start, run_dir, config, oracle="tblite", say=lambda m: None)
    return summary, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--temperature", type=float, default=300.0)
    ap.add_argument("--n-test", type=int, default=40)
    ap.add_argument("--workdir", default="bench_active_defaults")
    args = ap.parse_args()
    from mdplugin.active import ActiveConfig
    from mdplugin.models import load_model

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.systems:
        start = SYSTEMS[name]()
        test = reference_set(start, args.n_test, args.temperature, seed=12345)
        rows = {}
        summary, seconds = run_arm(start, work / f"{name}-default", args.steps, args.temperature, None)
        config = ActiveConfig(targets=("energy", "dipole"))
        first = first_models(work / f"{name}-default", config)
        old = {t: v["error"] for t, v in first.validation.items()}  # the rule before: held-out error
        final = {t: load_model(work / f"{name}-default" / f"{t}.npz") for t in ("energy", "dipole")}
        rows["default"] = {"calls": summary.oracle_calls, "first_thresholds": first.thresholds(),
                           "final_thresholds": summary.thresholds, "seconds": seconds,
                           "first_errors": errors(first.models, test), "final_errors": errors(final, test)}
        summary, seconds = run_arm(start, work / f"{name}-error-threshold", args.steps, args.temperature, old)
        final = {t: load_model(work / f"{name}-error-threshold" / f"{t}.npz") for t in ("energy", "dipole")}
        rows["error-threshold"] = {"calls": summary.oracle_calls, "first_thresholds": old,
                                   "final_thresholds": summary.thresholds, "seconds": seconds,
                                   "first_errors": rows["default"]["first_errors"],
                                   "final_errors": errors(final, test)}
        results[name] = rows
        for arm, r in rows.items():
            thr = ", ".join(f"{t} {v:.3g}" for t, v in r["first_thresholds"].items())
            e0, e1 = r["first_errors"], r["final_errors"]
            print(f"{name:>13} {arm:>15}: {r['calls']:3d} oracle calls in {args.steps} steps ({r['seconds']:.0f} s); "
                  f"first thresholds {thr}; test RMSE energy {1000 * e0['energy']:.2f} -> {1000 * e1['energy']:.2f} "
                  f"meV/atom, forces {e0['forces']:.3f} -> {e1['forces']:.3f} eV/Å, dipole {e0['dipole']:.4f} -> "
                  f"{e1['dipole']:.4f} e·Å", flush=True)
    (work / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
