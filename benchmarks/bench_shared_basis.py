#!/usr/bin/env python
"""Which one expansion basis should the energy, dipole and polarizability models share by default?

For each candidate basis (cutoff, max_radial, max_angular; Gaussian width 0.3 Å, smoothing 0.5 Å)
the three default models are trained with it and tested on independent data:

* 1,2-dichloroethane (GFN2-xTB, ``examples/trajectories``): ``--n-train`` frames of
  ``dce_train.xyz``, tested on ``dce_test.xyz``: energy RMSE (meV/atom), forces RMSE (% of std),
  dipole and polarizability RMSE (% of std);
* liquid water (periodic 96-atom boxes, the labels of ``benchmarks/condensed.py``: TIP3P energies
  and forces, point-charge dipole, additive molecular polarizability): ``--n-water`` training
  boxes, 40 test boxes;
* the cost of one MD step's models on a 1536-atom water box (CPU ms, one core): the expansion with
  gradients, the energy model, and the dipole and polarizability means sharing the features.

Run::

    python benchmarks/bench_shared_basis.py [--bases 5.0,4,3 4.5,6,4] [--n-train 1000] [--n-water 200]
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
sys.path.insert(0, str(REPO / "benchmarks"))

TRAJ = REPO / "examples" / "trajectories"


def rmse_percent(y, ref) -> float:
    from mdplugin.learn.metrics import regression_metrics

    return regression_metrics(ref, y)["rmse_percent_of_std"]


def cpu_ms(function, n: int = 3) -> float:
    best = np.inf
    for _ in range(n):
        t0 = time.process_time()
        function()
        best = min(best, time.process_time() - t0)
    return 1e3 * best


def evaluate(basis: dict, dce: tuple, water: tuple) -> dict:
    from mdplugin.features.cache import FeatureCache
    from mdplugin.models import build

    out = {}
    for name, (train, test) in (("dce", dce), ("water", water)):
        (frames, energy, forces, dipole, alpha), (t_frames, t_energy, t_forces, t_dipole, t_alpha) = train, test
        t0 = time.process_time()
        model = build("soap", target="energy", **basis).fit(frames, {"energy": energy, "forces": forces})
        out[f"{name} energy fit s"] = time.process_time() - t0
        n_atoms = np.array([len(a) for a in t_frames])
        e = model.predict(t_frames)
        out[f"{name} energy meV/atom"] = 1e3 * float(np.sqrt(np.mean(((e - t_energy) / n_atoms) ** 2)))
        f = np.concatenate(model.predict_forces(t_frames))
        out[f"{name} forces %"] = rmse_percent(f, np.concatenate(t_forces))
        models = {"energy": model}
        for target, y, t_y in (("dipole", dipole, t_dipole), ("polarizability", alpha, t_alpha)):
            t0 = time.process_time()
            models[target] = build("lsoap", target=target, **basis).fit(frames, y)
            out[f"{name} {target} fit s"] = time.process_time() - t0
            out[f"{name} {target} %"] = rmse_percent(models[target].predict(t_frames), t_y)
        if name == "water":
            import condensed

            box = condensed.perturbed_box((2, 2, 4), seed=11)
            calc = model.featurizer()
            exp = calc.compute([box], gradients=True)
            out["1536: expansion ms"] = cpu_ms(lambda: calc.compute([box], gradients=True))
            out["1536: energy model ms"] = cpu_ms(lambda: model.predict_from_features(FeatureCache(exp), forces=True))

            def tensors():
                features = FeatureCache(exp)
                models["dipole"].predict_from_features(features, precision="single")
                models["polarizability"].predict_from_features(features, precision="single")

            out["1536: dipole + polarizability ms"] = cpu_ms(tensors)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bases", nargs="+", default=["5.0,4,3", "4.5,6,4", "4.5,4,3"])
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--n-water", type=int, default=200)
    args = p.parse_args(argv)

    import condensed
    from mdplugin.models.training import select_training
    from mdplugin.structures.data import read_dataset

    props = ["energy", "forces", "dipole", "polarizability"]
    train = select_training(read_dataset(TRAJ / "dce_train.xyz", properties=props), args.n_train, seed=0)
    test = read_dataset(TRAJ / "dce_test.xyz", properties=props)

    def unpack(data):
        return data.frames, data.get("energy"), data.forces, data.get("dipole"), data.get("polarizability")

    def water_set(n, seed):
        frames = condensed.training_frames(n, seed)
        el = [condensed.energy_labels(a) for a in frames]
        tl = [condensed.tensor_labels(a) for a in frames]
        return (frames, np.array([e for e, _ in el]), [f for _, f in el], np.array([d for d, _ in tl]),
                np.array([a for _, a in tl]))

    dce = (unpack(train), unpack(test))
    water = (water_set(args.n_water, 5), water_set(40, 6))
    print(f"{time.strftime('%Y-%m-%d')}, load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"DCE {len(train)} training frames, {len(test)} test; water {args.n_water} training boxes, 40 test")
    rows = {}
    for text in args.bases:
        cutoff, max_radial, max_angular = text.split(",")
        basis = dict(cutoff=float(cutoff), max_radial=int(max_radial), max_angular=int(max_angular))
        rows[text] = evaluate(basis, dce, water)
        print(f"basis {text}: " + ", ".join(f"{k} {v:.3g}" for k, v in rows[text].items()), flush=True)
    keys = list(next(iter(rows.values())))
    print(f"\n{'':34}" + "".join(f"{b:>12}" for b in rows))
    for k in keys:
        print(f"{k:34}" + "".join(f"{rows[b][k]:12.3g}" for b in rows))
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
