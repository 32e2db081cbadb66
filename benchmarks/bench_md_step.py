#!/usr/bin/env python
"""One MD step of 1,2-dichloroethane: ML (energy, forces, dipole, polarizability) vs GFN2-xTB.

Both sides compute the same four properties on the same structure, in the same process:

* **ML**: :class:`mdplugin.engines.ase.MLCalculator` with the SOAP energy model and λ-SOAP (default)
  or RPR dipole and polarizability models, trained on ``--train`` (default
  ``examples/trajectories/dce_train.xyz``). Models with equal featurizers share one set of
  features per step (``--shared``, the default, gives the λ-SOAP models the energy model's hypers:
  one spherical expansion serves all three).
* **GFN2-xTB** (tblite): energy, forces and dipole, plus the polarizability by central finite
  field differences (six extra dipole calculations, :func:`mdplugin.oracles.label.make_oracle`).

A "step" moves the atoms (a small random displacement, so nothing is cached) and asks the calculator
for the energy, forces, dipole and polarizability. ML and tblite measurements are interleaved in
rounds so that a busy machine slows both alike; wall time and process CPU time are reported (median
over all steps). Run::

    python benchmarks/bench_md_step.py [--train FILE] [--n-train 1000] [--tensor-model lsoap|rpr] [--n-components K]
                                        [--tensor-precision single|double] [--models DIR]

Target (issue 4): ML step ≤ 5 ms median, ≥ 5× faster than GFN2-xTB with finite-field polarizability.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROPS = ("energy", "forces", "dipole", "polarizability")


def train_models(path: Path, n_train: int, tensor_model: str, shared: bool, cache: Path | None,
                 n_components: int | None = None):
    from mdplugin.structures.data import read_dataset
    from mdplugin.models import build, load_model
    from mdplugin.models.training import fit_on_dataset, select_training

    names = {"energy": "soap", "dipole": tensor_model, "polarizability": tensor_model}
    data = read_dataset(path, properties=list(PROPS))
    data = select_training(data, min(n_train, len(data)), seed=0)
    models, times = {}, {}
    for target, kind in names.items():
        if cache is not None and (cache / f"{target}-{kind}.npz").exists():
            models[target] = load_model(cache / f"{target}-{kind}.npz", kind=kind, target=target)
            continue
        hypers = {}
        if kind == "lsoap" and shared:
            hypers = {k: getattr(models["energy"], k) for k in
                      ("cutoff", "max_radial", "max_angular", "gaussian_width", "smoothing_width")}
        if kind == "lsoap" and n_components is not None:
            hypers["n_components"] = n_components
        model = build(kind, target=target, **hypers)
        t0 = time.perf_counter()
        fit_on_dataset(model, data)
        times[target] = time.perf_counter() - t0
        models[target] = model
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            model.save(cache / f"{target}-{model.kind}.npz")
    return models, times


def one_step(calc, atoms, rng) -> None:
    atoms.positions += rng.normal(scale=1e-3, size=atoms.positions.shape)
    for p in PROPS:
        calc.get_property(p, atoms)


def measure(calc, atoms, n: int, rng) -> tuple[list[float], list[float]]:
    wall, cpu = [], []
    for _ in range(n):
        w0, c0 = time.perf_counter(), time.process_time()
        one_step(calc, atoms, rng)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=Path, default=REPO / "examples" / "trajectories" / "dce_train.xyz")
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--tensor-model", choices=("lsoap", "rpr"), default="lsoap")
    p.add_argument("--no-shared", dest="shared", action="store_false",
                   help="train the λ-SOAP models with their own default hypers (no shared expansion)")
    p.add_argument("--n-components", type=int, default=None,
                   help="λ-SOAP models: feature dimensions kept per species and λ (default: the model's, 128); "
                        "the step is bound by streaming the models' projections, so 64 is faster")
    p.add_argument("--tensor-precision", choices=("single", "double"), default="single",
                   help="MLCalculator's precision for the λ-SOAP models' large products (default single, "
                        "the calculator's default)")
    p.add_argument("--models", type=Path, help="folder to cache/reuse the trained models")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--ml-steps", type=int, default=100, help="ML steps per round")
    p.add_argument("--ref-steps", type=int, default=6, help="tblite steps per round")
    args = p.parse_args(argv)

    from ase.io import read

    from mdplugin.engines.ase import MLCalculator
    from mdplugin.oracles.label import make_oracle

    models, train_times = train_models(args.train, args.n_train, args.tensor_model, args.shared, args.models,
                                       args.n_components)
    for target, t in train_times.items():
        print(f"trained {target:<15} {type(models[target]).__name__:<16} in {t:6.1f} s")
    ml = MLCalculator(energy=models["energy"], dipole=models["dipole"], polarizability=models["polarizability"],
                      tensor_precision=args.tensor_precision)
    groups = [members for _, members in ml.feature_groups]
    print(f"models sharing features: {groups}; tensor precision: {args.tensor_precision}")
    ref = make_oracle("tblite")

    atoms = read(args.train, index=0)
    atoms.calc = None
    rng = np.random.default_rng(0)
    ml_atoms, ref_atoms = atoms.copy(), atoms.copy()
    # warm up (featomic/tblite initialisation, caches)
    measure(ml, ml_atoms, 5, rng)
    measure(ref, ref_atoms, 1, rng)
    ml_wall, ml_cpu, ref_wall, ref_cpu = [], [], [], []
    for _ in range(args.rounds):
        w, c = measure(ml, ml_atoms, args.ml_steps, rng)
        ml_wall += w
        ml_cpu += c
        w, c = measure(ref, ref_atoms, args.ref_steps, rng)
        ref_wall += w
        ref_cpu += c

    def ms(x):
        return 1000.0 * float(np.median(x))

    print(f"{'':28}{'median wall':>14}{'median CPU':>14}")
    print(f"{'ML step (E, F, mu, alpha)':<28}{ms(ml_wall):>11.2f} ms{ms(ml_cpu):>11.2f} ms")
    print(f"{'GFN2-xTB + finite field':<28}{ms(ref_wall):>11.2f} ms{ms(ref_cpu):>11.2f} ms")
    print(f"speed-up (wall): {ms(ref_wall) / ms(ml_wall):.1f}x   (CPU): {ms(ref_cpu) / ms(ml_cpu):.1f}x")
    # where the ML time goes: each group's features alone, and each model from given features
    for featurizer, members in ml.feature_groups:
        gradients = "energy" in members
        t = []
        for _ in range(200):
            t0 = time.perf_counter()
            features = featurizer.features([ml_atoms], gradients=gradients)
            t.append(time.perf_counter() - t0)
        what = "with gradients" if gradients else "without gradients"
        print(f"  of which {type(featurizer).__name__} {what} ({', '.join(members)}): {ms(t):.2f} ms")
        for slot in members:
            model = models[slot]
            t = []
            for _ in range(200):
                t0 = time.perf_counter()
                model.predict_from_features(features, forces=slot == "energy", precision=args.tensor_precision)
                t.append(time.perf_counter() - t0)
            print(f"  of which {slot} model from the features: {ms(t):.2f} ms")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
