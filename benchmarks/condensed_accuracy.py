#!/usr/bin/env python
"""Accuracy of the models on liquid water: learning curves on the GFN2-xTB water boxes.

Trains the ``lsoap`` dipole and polarizability models and the ``soap`` energy model (energies and
forces) on nested random subsets (``--sizes``, default 25, 50, 100, 200 boxes) of
``DATA_DIR/train.xyz`` and evaluates them on ``DATA_DIR/test.xyz`` (boxes from independent
trajectories, made by ``examples/liquid_water/make_data.py``). Errors are RMSEs in % of the
standard deviation of the test labels over the boxes (every Cartesian component counts), given
separately for the test boxes of each size (the spread of an extensive quantity grows with the
box, so boxes of 32 and 64 molecules are not pooled):

* dipole: the 3 components (e·Å);
* polarizability: all 9 components, the isotropic part ``tr α / 3`` and the anisotropic part
  ``α − (tr α / 3) 1`` (9 components) against their own spreads (Å³);
* energy: meV per molecule (RMSE after nothing is removed; the spread is that of the energy per
  box) and forces (eV/Å, % of the spread of the force components).

Every fit runs with ``OMP_NUM_THREADS=1``; times are wall seconds on the shared machine, printed
with its load average.

Run::

    python benchmarks/condensed_accuracy.py /work/data/water [--sizes 25,50,100,200]
        [--targets dipole,polarizability,energy] [--lsoap '{"cutoff": 6}'] [--soap '{}']
        [--json out.json] [--plot docs/condensed_learning.png] [--models DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mdplugin.structures.data import read_dataset  # noqa: E402

MODEL_OF = {"dipole": "lsoap", "polarizability": "lsoap", "energy": "soap"}


def percent(err: np.ndarray, ref: np.ndarray) -> float:
    """RMSE of ``err`` in % of the spread of ``ref`` about its per-component mean (arrays (n, ...))."""
    spread = np.sqrt(np.mean((ref - ref.mean(axis=0)) ** 2))
    return float(100.0 * np.sqrt(np.mean(err**2)) / spread)


def tensor_errors(target: str, y: np.ndarray, p: np.ndarray) -> dict:
    """Errors of dipoles (n, 3) or polarizabilities (n, 3, 3) ``p`` against ``y``."""
    out = {"rmse": float(np.sqrt(np.mean((p - y) ** 2))), "percent": percent(p - y, y)}
    if target == "polarizability":
        iso_y = np.trace(y, axis1=1, axis2=2) / 3.0
        iso_p = np.trace(p, axis1=1, axis2=2) / 3.0
        aniso_y = y - iso_y[:, None, None] * np.eye(3)
        aniso_p = p - iso_p[:, None, None] * np.eye(3)
        out.update(iso_rmse=float(np.sqrt(np.mean((iso_p - iso_y) ** 2))), iso_percent=percent(iso_p - iso_y, iso_y),
                   aniso_rmse=float(np.sqrt(np.mean((aniso_p - aniso_y) ** 2))),
                   aniso_percent=percent(aniso_p - aniso_y, aniso_y))
    return out


def energy_errors(test, energies: np.ndarray, forces: list, rows: np.ndarray) -> dict:
    n_mol = np.array([len(test.frames[i]) / 3 for i in rows])
    e_err = (energies[rows] - test.energy[rows]) / n_mol
    e_ref = test.energy[rows] / n_mol
    f_y = np.concatenate([test.forces[i] for i in rows])
    f_p = np.concatenate([forces[i] for i in rows])
    return {"energy_mev_per_molecule": float(1000 * np.sqrt(np.mean(e_err**2))),
            "energy_percent": percent(e_err, e_ref),
            "forces_rmse": float(np.sqrt(np.mean((f_p - f_y) ** 2))), "forces_percent": percent(f_p - f_y, f_y)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path, help="folder with train.xyz and test.xyz")
    p.add_argument("--sizes", default="25,50,100,200", help="training boxes (nested random subsets)")
    p.add_argument("--targets", default="dipole,polarizability,energy")
    p.add_argument("--lsoap", default="{}", help="hyper-parameters of the lsoap models (JSON)")
    p.add_argument("--soap", default="{}", help="hyper-parameters of the soap energy model (JSON)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset order")
    p.add_argument("--json", type=Path, help="append the results here (one JSON object per line)")
    p.add_argument("--plot", type=Path, help="write the learning curves here (needs the --json file's rows)")
    p.add_argument("--models", type=Path, help="save the models here (<target>_<boxes>.npz)")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    targets = args.targets.split(",")
    hypers = {"lsoap": json.loads(args.lsoap), "soap": json.loads(args.soap)}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = read_dataset(args.data / "train.xyz")
        test = read_dataset(args.data / "test.xyz")
    order = np.random.default_rng(args.seed).permutation(len(train.frames))
    groups = {}
    for i, atoms in enumerate(test.frames):
        groups.setdefault(len(atoms) // 3, []).append(i)
    groups = {n: np.array(rows) for n, rows in sorted(groups.items())}
    commit = os.popen(f"git -C {Path(__file__).resolve().parents[1]} rev-parse --short HEAD").read().strip()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit}; test boxes: "
          + ", ".join(f"{len(r)} of {n} molecules" for n, r in groups.items()), flush=True)

    from mdplugin.models import build

    for target in targets:
        kind = MODEL_OF[target]
        for n in sizes:
            rows = np.sort(order[:n])
            frames = [train.frames[i] for i in rows]
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            if target == "energy":
                y = {"energy": train.energy[rows], "forces": [train.forces[i] for i in rows]}
            else:
                y = getattr(train, target)[rows]
            model = build(kind, target=target, **hypers[kind]).fit(frames, y)
            fit_s = time.perf_counter() - t0
            if target == "energy":
                energies, forces = [], []
                from mdplugin.engines.ase import MLCalculator

                for atoms in test.frames:
                    calc = MLCalculator(energy=model)
                    atoms = atoms.copy()
                    atoms.calc = calc
                    energies.append(atoms.get_potential_energy())
                    forces.append(atoms.get_forces())
                energies = np.array(energies)
                per_group = {n_mol: energy_errors(test, energies, forces, r) for n_mol, r in groups.items()}
            else:
                pred = model.predict(test.frames)
                y_test = getattr(test, target)
                per_group = {n_mol: tensor_errors(target, y_test[r], pred[r]) for n_mol, r in groups.items()}
            row = {"target": target, "model": kind, "n_train": n, "fit_seconds": round(fit_s, 1),
                   "load": round(load, 2), "hypers": hypers[kind], "commit": commit,
                   "date": time.strftime("%Y-%m-%d"), "errors": {str(k): v for k, v in per_group.items()}}
            if hasattr(model, "regularizer_"):
                row["regularizer"] = {str(k): float(v) for k, v in dict(model.regularizer_).items()}
            text = "; ".join(f"{k} molecules: " + ", ".join(f"{a} {b:.3g}" for a, b in v.items())
                             for k, v in per_group.items())
            print(f"{target:15s} {n:4d} boxes  fit {fit_s:6.1f} s (load {load:.1f})  {text}", flush=True)
            if args.json:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
            if args.models:
                args.models.mkdir(parents=True, exist_ok=True)
                model.save(args.models / f"{target}_{n}.npz")
    if args.plot and args.json:
        plot(args.json, args.plot)


def plot(json_path: Path, out: Path) -> None:
    """Learning curves (error in % of the test spread against training boxes), the last row of each
    (target, size) in ``json_path`` with default hyper-parameters (rows with others: single points),
    boxes of 32 molecules."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, tuned = {}, {}
    for line in json_path.read_text().splitlines():
        r = json.loads(line)
        (tuned if r["hypers"] else rows)[(r["target"], r["n_train"])] = r
    curves = {"dipole": ("dipole", "percent"), "polarizability": ("polarizability", "percent"),
              "α isotropic": ("polarizability", "iso_percent"), "α anisotropic": ("polarizability", "aniso_percent"),
              "energy per molecule": ("energy", "energy_percent"), "forces": ("energy", "forces_percent")}
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, (target, key) in curves.items():
        pts = sorted((n, r["errors"]["32"][key]) for (t, n), r in rows.items() if t == target)
        if pts:
            ax.loglog(*zip(*pts), "o-", label=label)
    for (target, n), r in sorted(tuned.items()):  # rows with other hyper-parameters: points
        if target == "energy":
            ax.loglog([n], [r["errors"]["32"]["forces_percent"]], "s", color="C5", mfc="none",
                      label=f"forces, {json.dumps(r['hypers'])}")
            ax.loglog([n], [r["errors"]["32"]["energy_percent"]], "s", color="C4", mfc="none",
                      label=f"energy, {json.dumps(r['hypers'])}")
    ax.axhline(2, color="grey", ls=":", lw=1)
    ax.axhline(5, color="grey", ls="--", lw=1)
    any_row = next(iter(rows.values()))
    ax.set_xlabel("training boxes (32 H2O each)")
    ax.set_ylabel("test RMSE, % of the test spread")
    ax.set_title(f"liquid water, GFN2-xTB labels ({any_row['date']}, {any_row['commit']})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
