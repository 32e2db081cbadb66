"""A benchmark a local model cannot learn: dimers of an ion and a polar molecule, 3-12 Å apart.

NH4⁺ or Cl⁻ with water or methanol, the ion's centre at a uniform random distance of 3-12 Å from the
molecule's centre of mass, random orientations, atoms displaced by 0.05 Å (Gaussian); GFN2-xTB
labels (tblite): the dipole about the centre of mass and the finite-field polarizability, the total
charge from each frame's ``charge`` key. Training and test structures come from different seeds.

Models: the local λ-SOAP (``lsoap``, 5 Å cutoff), the ``lode`` model without its long-range blocks
(local, same cutoff: charges + atomic dipoles), the ``lode`` model (local + LODE + multi-scale), and
the multi-scale local ``lode`` model with cutoffs 3 and 6 Å; errors (RMSE in % of the test labels'
standard deviation, over all components) against the separation.

    python benchmarks/long_range.py DATA_DIR [--n-train 300 --n-test 300] [--quick] [--plot docs/long_range.png]
    python benchmarks/long_range.py DATA_DIR --replot LOG --plot docs/long_range.png   # from a run's JSON line
    python benchmarks/long_range.py DATA_DIR --scan    # the cells' LODE settings (smearing, n_max, k-cut-off)

``--scan``: the ``lode`` model with featomic's Ewald LODE, each dimer in a periodic cubic box of
``--box`` Å (``lode_box``), for the settings that set the cost of a periodic step (smearing,
``lode_max_radial``, k-space cut-off), against the direct sum (the default for molecules).

DATA_DIR receives train.xyz and test.xyz (labelled once, reused); the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from ase import Atoms
from ase.build import molecule

BINS = (3.0, 5.0, 7.0, 9.0, 12.01)
#: --scan: (smearing Å, lode_max_radial, k-space cut-off Å⁻¹ or None for featomic's 1.2π/smearing)
SCAN = ((1.0, 2, None), (2.0, 2, None), (3.0, 2, None), (4.0, 2, None), (5.0, 2, None),
        (3.0, 2, float(0.3 * np.pi)), (4.0, 1, None), (4.0, 4, None))


def ammonium() -> Atoms:
    t = np.array([[1, 1, 1], [-1, -1, 1], [-1, 1, -1], [1, -1, -1]], float) / np.sqrt(3.0) * 1.03
    return Atoms("NH4", positions=np.vstack([[0, 0, 0], t]))


def random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def dimer(rng) -> Atoms:
    """One ion + molecule structure with info charge and separation (ion to molecule COM, Å)."""
    while True:
        ion, charge = (ammonium(), 1) if rng.random() < 0.5 else (Atoms("Cl", positions=[[0, 0, 0]]), -1)
        mol = molecule("H2O" if rng.random() < 0.5 else "CH3OH")
        mol.positions = (mol.positions - mol.get_center_of_mass()) @ random_rotation(rng).T
        ion.positions = (ion.positions - ion.get_center_of_mass()) @ random_rotation(rng).T
        sep = rng.uniform(3.0, 12.0)
        u = rng.normal(size=3)
        ion.translate(sep * u / np.linalg.norm(u))
        atoms = mol + ion
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        d = atoms.get_all_distances()
        n_mol = len(mol)
        if d[:n_mol, n_mol:].min() > 1.7:
            atoms.info.update(charge=charge, separation=float(sep))
            return atoms


def make_set(path: str, n: int, seed: int) -> None:
    from mdplugin.oracles.label import label_frames
    from mdplugin.structures.data import write_dataset

    rng = np.random.default_rng(seed)
    frames = [dimer(rng) for _ in range(n)]
    t0 = time.perf_counter()
    data = label_frames(frames, "tblite", ["energy", "dipole", "polarizability"])
    print(f"labelled {n} dimers (seed {seed}) in {time.perf_counter() - t0:.0f} s", flush=True)
    write_dataset(path, data)


def separation(atoms: Atoms) -> float:
    """Ion centre to molecule centre of mass, Å (the ion's atoms come last: Cl, or N and 4 H)."""
    n_ion = 1 if atoms.numbers[-1] == 17 else 5
    return float(np.linalg.norm(atoms[-n_ion:].get_center_of_mass() - atoms[:-n_ion].get_center_of_mass()))


def read_set(path: str):
    from mdplugin.structures.data import read_dataset

    data = read_dataset(path, properties=["energy", "dipole", "polarizability"])
    for atoms in data.frames:  # files labelled before `mdplugin label` kept the charge lack it
        atoms.info.setdefault("charge", -1 if atoms.numbers[-1] == 17 else 1)
    return data, np.array([separation(a) for a in data.frames])


def binned(err: np.ndarray, sep: np.ndarray, spread: float) -> list[float]:
    """RMSE per separation bin in % of ``spread`` (err: per structure squared errors summed over comps)."""
    out = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        sel = (sep >= lo) & (sep < hi)
        out.append(float(100 * np.sqrt(err[sel].mean()) / spread) if sel.any() else float("nan"))
    return out


def plot(summary: dict, path: str, label: str) -> None:
    """Error against separation, one panel per target, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centres = 0.5 * (np.array(BINS[:-1]) + np.array(BINS[1:]))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, target in zip(axes, ("dipole", "polarizability")):
        for name, r in summary["results"].items():
            if name.startswith(target):
                ax.plot(centres, r["bins"], "o-", label=name.split(": ", 1)[1])
        ax.axvspan(5.0, 12.0, color="0.93", zorder=0)
        ax.set_yscale("log")
        ax.set_xlabel("ion – molecule separation (Å)")
        ax.set_ylabel("RMSE (% of test std)")
        ax.set_title(target)
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle(label, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir")
    ap.add_argument("--n-train", type=int, default=300)
    ap.add_argument("--n-test", type=int, default=300)
    ap.add_argument("--quick", action="store_true", help="60 + 60 structures")
    ap.add_argument("--plot", help="write the error-against-separation figure here")
    ap.add_argument("--scan", action="store_true", help="the Ewald LODE settings instead of the four models")
    ap.add_argument("--box", type=float, default=30.0, help="--scan: the cubic box side, Å")
    ap.add_argument("--settings", help="--scan: 'smearing,n_max[,k_cut];…' instead of the default list")
    ap.add_argument("--replot", help="only plot: the JSON line a previous run printed, saved in this file")
    args = ap.parse_args(argv)
    if args.replot:
        with open(args.replot) as handle:
            summary = json.loads(handle.read().strip().splitlines()[-1])
        plot(summary, args.plot, summary.get("label", ""))
        return 0
    if args.quick:
        args.n_train = args.n_test = 60
    os.makedirs(args.data_dir, exist_ok=True)
    paths = {k: os.path.join(args.data_dir, f"{k}_{n}.xyz") for k, n in (("train", args.n_train), ("test", args.n_test))}
    for (k, path), seed in zip(paths.items(), (11, 12)):
        if not os.path.exists(path):
            make_set(path, args.n_train if k == "train" else args.n_test, seed)
    train, _ = read_set(paths["train"])
    test, sep = read_set(paths["test"])

    from mdplugin.models import build

    models = {
        "lsoap (local 5 Å)": ("lsoap", {}),
        "lode local (5 Å, charges)": ("lode", {"long_range": False}),
        "lode multi-scale local (3+6 Å)": ("lode", {"long_range": False, "cutoffs": [3.0, 6.0]}),
        "lode (5 Å + LODE)": ("lode", {}),
    }
    if args.scan:
        models = {"direct sum (molecules' default)": ("lode", {})}
        scan = SCAN if not args.settings else [
            (float(p[0]), int(p[1]), float(p[2]) if len(p) > 2 else None)
            for p in (item.split(",") for item in args.settings.split(";"))]
        for smearing, n_max, k_cut in scan:
            kc = "" if k_cut is None else f", k-cut {k_cut:.2f}"
            models[f"Ewald σ {smearing:g} Å, n_max {n_max}{kc}, box {args.box:g} Å"] = (
                "lode", {"lode_box": args.box, "lode_smearing": smearing, "lode_max_radial": n_max, "lode_k_cutoff": k_cut})
    results = {}
    for target in ("dipole", "polarizability"):
        y = getattr(test, target).reshape(len(test.frames), -1)
        spread = float(np.sqrt(((y - y.mean(axis=0)) ** 2).sum(axis=1).mean()))
        for name, (kind, hypers) in models.items():
            t0 = time.perf_counter()
            model = build(kind, target=target, **hypers).fit(train.frames, {target: getattr(train, target)})
            fit_s = time.perf_counter() - t0
            pred = np.asarray(model.predict(test.frames)).reshape(len(test.frames), -1)
            err = ((pred - y) ** 2).sum(axis=1)
            row = binned(err, sep, spread)
            total = float(100 * np.sqrt(err.mean()) / spread)
            results[f"{target}: {name}"] = {"bins": row, "all": total, "fit_s": round(fit_s, 1)}
            print(f"{target:15s} {name:40s} " + " ".join(f"{x:7.1f}" for x in row) + f"   all {total:6.1f} %"
                  f"   fit {fit_s:.0f} s", flush=True)
    import subprocess

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    summary = {"bins_A": BINS, "n_train": len(train.frames), "n_test": len(test.frames), "load": os.getloadavg()[0],
               "label": f"commit {commit}, {time.strftime('%Y-%m-%d')}, load {os.getloadavg()[0]:.1f} on 2 cores, "
                        f"{len(train.frames)} training / {len(test.frames)} test dimers",
               "results": results}
    if args.plot:
        plot(summary, args.plot, summary["label"])
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
