"""The hamiltonian model on distorted water and ethanol MD frames: learning curves of matrix
elements and orbital energies, the derived dipole and polarizability beside direct λ-SOAP models
on the same data, and the time of an MD step against the PySCF calculation it replaces.

Data (generated once, cached in the folder given by ``--data``; nothing is committed):

* ``water``: ``--n-water`` (default 1000) water molecules, every atom displaced by N(0, 0.08 Å)
  per coordinate from the equilibrium geometry, randomly oriented (seed 0);
* ``ethanol``: ``--n-ethanol`` (default 1000) frames of a GFN2-xTB (tblite) Langevin MD at 500 K,
  one every 10 fs after 1 ps (seed 1);

each labelled with ``mdplugin label --oracle pyscf --properties hamiltonian,dipole,polarizability
--xc hf --basis sto-3g`` (HF/STO-3G Fock and overlap matrices; dipole; finite-field
polarizability), spread over ``--ranks`` MPI ranks; ``water_projected`` (``--systems``): the same
water structures with the HF/def2-SVP Hamiltonian projected onto STO-3G (``--basis def2-svp
--minimal-basis sto-3g``) and the def2-SVP dipole.

Learning curves: models trained on the first N frames of a fixed random training pool, tested on
the same held-out frames (the last ``--n-test`` of the permutation): RMSE of the matrix elements
(meV), of the occupied and lowest virtual orbital energies (meV; goals at N = 500: water ≤ 10,
ethanol ≤ 50), of the derived dipole (e·Å) and polarizability (Å³) against the labels — for the
hamiltonian model, and for λ-SOAP dipole and polarizability models (``lsoap``) trained on the same
frames. The "reference matrices" row gives what the labelled Fock matrices themselves give (the
floor of the derived quantities: the sum-over-states polarizability of a minimal basis is not
the self-consistent finite-field one).

Timing (``--timing``, one core, ``time.process_time`` so that other processes do not count): an MD
step of the hamiltonian model (features, H, orbital energies, dipole, polarizability; with and
without the uncertainties) against the PySCF calculation of the same quantities that labelled the
data (SCF + dipole + six finite-field SCFs), in the same process, and against the SCF alone.

Usage: python benchmarks/bench_hamiltonian.py --data DIR [--n-water 1000] [--n-ethanol 1000]
       [--ranks 2] [--sizes 50,100,200,500] [--n-test 200] [--skip-lsoap] [--timing] [--plot PNG]
       python benchmarks/bench_hamiltonian.py --data DIR --results A.json,B.json --plot PNG   (plot only)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import ase.io  # noqa: E402
from ase.build import molecule  # noqa: E402

from mdplugin.structures.distortions import random_distortions  # noqa: E402


def ethanol_structures(n: int, seed: int = 1):
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from tblite.ase import TBLite

    atoms = molecule("CH3CH2OH")
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=500, rng=rng)
    md = Langevin(atoms, 0.5 * units.fs, temperature_K=500, friction=0.02, rng=rng, fixcm=False)
    md.run(2000)
    frames = []
    for _ in range(n):
        md.run(20)
        frames.append(atoms.copy())
        frames[-1].calc = None
    return frames


def labelled(data: Path, name: str, n: int, ranks: int) -> Path:
    """``DIR/name.xyz`` (+ ``.hamiltonian.npz``), generated and labelled when missing."""
    out = data / f"{name}.xyz"
    if out.exists():
        return out
    data.mkdir(parents=True, exist_ok=True)
    molecule_name = name.removesuffix("_projected")
    raw = data / f"{molecule_name}_structures.xyz"
    if not raw.exists():
        frames = random_distortions(molecule("H2O"), n, seed=0) if molecule_name == "water" else ethanol_structures(n)
        ase.io.write(raw, frames)
    method = (["--properties", "hamiltonian,dipole", "--basis", "def2-svp", "--minimal-basis", "sto-3g"]
              if name.endswith("_projected") else
              ["--properties", "hamiltonian,dipole,polarizability", "--basis", "sto-3g"])
    command = [sys.executable, "-m", "mdplugin", "label", str(raw), "-o", str(out), "--oracle", "pyscf",
               *method, "--xc", "hf", "--quiet"]
    if ranks > 1:
        mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
        command = [mpiexec, "-n", str(ranks)] + command
    t0 = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    subprocess.run(command, check=True, env=env)
    print(f"labelled {name}: {n} frames in {time.perf_counter() - t0:.0f} s on {ranks} rank(s)", flush=True)
    return out


def _rms(x) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def load(data: Path, name: str):
    from mdplugin.structures.data import read_dataset
    from mdplugin.structures.hamiltonians import attach_hamiltonians

    return attach_hamiltonians(read_dataset(data / f"{name}.xyz"))


def reference_floor(test) -> dict:
    """What the labelled matrices themselves give for the dipole and polarizability (against the
    labels: the SCF's dipole, the finite-field polarizability)."""
    from mdplugin.core import orbitals as orb
    from mdplugin.models.hamiltonian_response import coupled_polarizability
    from mdplugin.structures.aobasis import AOBasis

    basis = AOBasis(test.hamiltonian.basis)
    mu, alpha, coupled = [], [], []
    for i, atoms in enumerate(test.frames):
        s = basis.overlap(atoms.numbers, atoms.positions)
        r = basis.dipole_integrals(atoms.numbers, atoms.positions)
        eps, c = orb.orbitals(test.hamiltonian.fock[i][0], s)
        n_occ = test.hamiltonian.n_electrons(i) // 2
        mu.append(orb.dipole(c, n_occ, r, atoms.numbers, atoms.positions))
        alpha.append(orb.polarizability(eps, c, n_occ, r))
        coupled.append(coupled_polarizability(basis.molecule(atoms.numbers, atoms.positions), test.hamiltonian.method,
                                              eps, c, n_occ))
    return {"dipole_rmse": _rms(np.array(mu) - test.dipole), "polarizability_rmse": _rms(np.array(alpha) - test.polarizability),
            "polarizability_coupled_rmse": _rms(np.array(coupled) - test.polarizability),
            "polarizability_mean_trace_ratio": float(np.mean(np.trace(np.array(alpha), axis1=1, axis2=2)
                                                             / np.trace(test.polarizability, axis1=1, axis2=2)))}


def learning_curve(data, name: str, sizes: list[int], n_test: int, lsoap: bool, hypers: dict) -> dict:
    from mdplugin.learn.metrics import regression_metrics
    from mdplugin.models import build

    perm = np.random.default_rng(0).permutation(len(data))
    test, pool = data.subset(perm[-n_test:]), perm[:-n_test]
    rows = []
    for n in sizes:
        train = data.subset(pool[:n])
        t0 = time.perf_counter()
        model = build("hamiltonian", target="hamiltonian", **hypers).fit(train.frames, train.hamiltonian)
        fit_s = time.perf_counter() - t0
        res = model.evaluate_dataset(test)
        derived = model.predict_properties(test.frames, ["orbital_energies"])
        per_orbital = []
        for i, eps in enumerate(derived["orbital_energies"]):
            n_occ = test.hamiltonian.n_electrons(i) // 2
            per_orbital.append(eps[:n_occ + 1] - test.hamiltonian.mo_energy[i][0, :n_occ + 1])
        row = {"n_train": n, "fit_s": fit_s, "matrix_rmse_meV": 1e3 * res["rmse"],
               "orbital_rmse_meV": 1e3 * res["orbital_energies_rmse"],
               "per_orbital_rmse_meV": [1e3 * _rms(e) for e in np.array(per_orbital).T],
               "homo_rmse_meV": 1e3 * res["homo_rmse"], "lumo_rmse_meV": 1e3 * res["lumo_rmse"],
               "gap_rmse_meV": 1e3 * res["gap_rmse"], "dipole_rmse": res.get("dipole_rmse"),
               "polarizability_rmse": res.get("polarizability_rmse")}
        if test.polarizability is not None:
            coupled = model.set_params(response="coupled").predict_properties(test.frames, ["polarizability"])
            model.set_params(response="sos")
            row["polarizability_coupled_rmse"] = _rms(coupled["polarizability"] - test.polarizability)
        if lsoap:
            for target in ("dipole", "polarizability"):
                if getattr(train, target) is None:
                    continue
                t0 = time.perf_counter()
                direct = build("lsoap", target=target).fit(train.frames, getattr(train, target))
                row[f"lsoap_{target}_fit_s"] = time.perf_counter() - t0
                row[f"lsoap_{target}_rmse"] = regression_metrics(getattr(test, target), direct.predict(test.frames))["rmse"]
        rows.append(row)
        print(f"{name} N={n}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float)), flush=True)
    return {"rows": rows, "floor": reference_floor(test) if test.polarizability is not None else {}, "n_test": n_test,
            "label_std": {k: float(np.std(getattr(test, k))) for k in ("dipole", "polarizability")
                          if getattr(test, k) is not None}}


def timing(data, model_path: Path, repeats: int = 20) -> dict:
    """CPU seconds per MD step: the model through the calculator (positions moved every step)
    against PySCF computing the same quantities the way the labels were made."""
    from mdplugin.engines.ase import MLCalculator
    from mdplugin.models import load_model
    from mdplugin.oracles.label import make_oracle
    from mdplugin.oracles.hamiltonian import hamiltonian_of

    atoms = data.frames[0].copy()
    rng = np.random.default_rng(0)
    calcs = {"sos": MLCalculator(dipole=model_path, polarizability=model_path)}
    coupled = load_model(model_path).set_params(response="coupled")
    calcs["coupled"] = MLCalculator(dipole=coupled, polarizability=coupled)

    def step(with_std: bool, response: str = "sos") -> None:
        calc = calcs[response]
        atoms.positions += rng.normal(scale=1e-3, size=atoms.positions.shape)
        calc.get_property("dipole", atoms)
        calc.get_property("polarizability", atoms)
        calc.get_property("orbital_energies", atoms)
        if with_std:
            calc.get_property("dipole_std", atoms)

    def cpu(fn, n: int) -> float:
        fn()  # warm-up (plans, PySCF's Mole)
        t0 = time.process_time()
        for _ in range(n):
            fn()
        return (time.process_time() - t0) / n

    out = {"model_step_s": cpu(lambda: step(False), repeats), "model_step_with_std_s": cpu(lambda: step(True), repeats)}
    out["model_step_coupled_s"] = cpu(lambda: step(False, "coupled"), max(repeats // 4, 3))
    oracle = make_oracle("pyscf", xc="hf", basis="sto-3g")
    frame = data.frames[1]

    def reference() -> None:
        from ase.calculators.calculator import all_changes

        oracle.calculate(frame.copy(), ["dipole", "polarizability"], all_changes)

    out["pyscf_dipole_polarizability_s"] = cpu(reference, 3)
    out["pyscf_scf_s"] = cpu(lambda: hamiltonian_of(frame, basis="sto-3g", xc="hf"), 3)
    out["speedup_vs_pyscf"] = out["pyscf_dipole_polarizability_s"] / out["model_step_s"]
    out["speedup_vs_scf_alone"] = out["pyscf_scf_s"] / out["model_step_s"]
    out["speedup_coupled_vs_pyscf"] = out["pyscf_dipole_polarizability_s"] / out["model_step_coupled_s"]
    return out


STYLE = {"water": ("C0", "o"), "water_projected": ("C2", "^"), "ethanol": ("C3", "s")}
GOALS_MEV = {"water": 10.0, "ethanol": 50.0}  # orbital-energy RMSE goals at 500 training structures


def plot_curves(results: dict, path: Path) -> None:
    """Learning curves (log-log) of every system in ``results``: matrix elements and orbital
    energies (meV, with the goals), the derived dipole (e·Å) and polarizability (Å³) beside the
    direct λ-SOAP models; the polarizability panel also shows the floor of the minimal basis's
    sum over states (computed from the reference matrices themselves)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.9))
    for name, res in results.items():
        if not isinstance(res, dict) or "rows" not in res:
            continue
        color, marker = STYLE.get(name, ("k", "x"))
        n = [r["n_train"] for r in res["rows"]]
        rows = res["rows"]

        def col(key: str, rows=rows) -> list:
            return [r.get(key) for r in rows]

        axes[0].plot(n, col("orbital_rmse_meV"), "-" + marker, color=color, label=f"{name}: orbital energies")
        axes[0].plot(n, col("matrix_rmse_meV"), ":" + marker, color=color, mfc="none", label=f"{name}: matrix elements")
        if name in GOALS_MEV:
            axes[0].axhline(GOALS_MEV[name], color=color, lw=0.8, ls="--")
        axes[1].plot(n, col("dipole_rmse"), "-" + marker, color=color, label=f"{name}: from H")
        if res["rows"][0].get("lsoap_dipole_rmse") is not None:
            axes[1].plot(n, col("lsoap_dipole_rmse"), "--" + marker, color=color, mfc="none", label=f"{name}: λ-SOAP")
        if res["rows"][0].get("polarizability_rmse") is not None:
            axes[2].plot(n, col("polarizability_rmse"), "-" + marker, color=color, label=f"{name}: from H, sum over states")
            axes[2].plot(n, col("polarizability_coupled_rmse"), "-." + marker, color=color, mfc="none",
                         label=f"{name}: from H, coupled")
            axes[2].plot(n, col("lsoap_polarizability_rmse"), "--" + marker, color=color, mfc="none", label=f"{name}: λ-SOAP")
            if res.get("floor", {}).get("polarizability_rmse") is not None:
                axes[2].axhline(res["floor"]["polarizability_rmse"], color=color, lw=0.8, ls=":",
                                label=f"{name}: reference H, sum over states")
    sizes = sorted({r["n_train"] for res in results.values() if isinstance(res, dict) for r in res.get("rows", [])})
    for ax, label in zip(axes, ("RMSE (meV); dashed: goals at 500", "dipole RMSE (e·Å)", "polarizability RMSE (Å³)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sizes, [str(x) for x in sizes])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("training structures")
        ax.set_ylabel(label)
        ax.legend(fontsize=6.5)
        ax.grid(True, which="major", lw=0.3)
    stamp = results.get("stamp", {})
    n_test = {res["n_test"] for res in results.values() if isinstance(res, dict) and "n_test" in res}
    if stamp:
        fig.suptitle(f"HF/STO-3G, {'/'.join(map(str, sorted(n_test)))} held-out structures per system; {stamp.get('date', '')}, "
                     f"commit {stamp.get('commit', '')}, load {stamp.get('load', '')} on 2 cores", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"-> {path}")


def stamp() -> dict:
    """Date (UTC), commit and 1-minute load of a run."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False)
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit.stdout.strip(),
            "load": round(os.getloadavg()[0], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="folder for the generated data (cache)")
    parser.add_argument("--n-water", type=int, default=1000)
    parser.add_argument("--n-ethanol", type=int, default=1000)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--only-data", action="store_true", help="generate and label the data, then stop")
    parser.add_argument("--sizes", default="50,100,200,500")
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--skip-lsoap", action="store_true")
    parser.add_argument("--systems", default="water,ethanol")
    parser.add_argument("--timing", action="store_true", help="also time an MD step against PySCF")
    parser.add_argument("--hypers", default="{}", help="hamiltonian model hyper-parameters (JSON)")
    parser.add_argument("--plot", type=Path, help="draw the learning curves of the results files given by "
                        "--results (or of this run) into this PNG")
    parser.add_argument("--results", default="", help="comma-separated results_*.json to plot (no run)")
    args = parser.parse_args()
    if args.results:
        merged = {}
        for f in args.results.split(","):
            loaded = json.loads(Path(f).read_text())
            for name, res in loaded.items():  # rows of one system from several runs are joined
                if not (isinstance(res, dict) and "rows" in res):
                    continue
                if name in merged:
                    res = {**merged[name], **res, "rows": sorted(merged[name]["rows"] + res["rows"],
                                                                 key=lambda r: r["n_train"])}
                merged[name] = res
            merged.setdefault("stamp", loaded.get("stamp", {}))
        plot_curves(merged, args.plot or args.data / "hamiltonian_curves.png")
        return
    systems = [s for s in args.systems.split(",") if s]
    for name in systems:
        labelled(args.data, name, args.n_ethanol if name.startswith("ethanol") else args.n_water, args.ranks)
    if args.only_data:
        return
    from mdplugin.models import build

    sizes = [int(x) for x in args.sizes.split(",")]
    hypers = json.loads(args.hypers)
    print(f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
          flush=True)
    results = {"stamp": stamp()}
    for name in systems:
        data = load(args.data, name)
        results[name] = learning_curve(data, name, sizes, args.n_test, not args.skip_lsoap, hypers)
        print(f"{name}: derived from the reference matrices themselves: {results[name]['floor']}", flush=True)
        if args.timing:
            perm = np.random.default_rng(0).permutation(len(data))
            path = args.data / f"{name}_h.npz"
            build("hamiltonian", target="hamiltonian", **hypers).fit(
                [data.frames[i] for i in perm[:sizes[-1]]], data.hamiltonian.subset(perm[:sizes[-1]])).save(path)
            results[name]["timing"] = timing(data, path)
            print(f"{name} timing (CPU s per step): {results[name]['timing']}", flush=True)
    results["load_after"] = os.getloadavg()
    path = args.data / f"results_{'_'.join(systems)}.json"
    path.write_text(json.dumps(results, indent=1))
    print(f"-> {path}")
    if args.plot:
        plot_curves(results, args.plot)


if __name__ == "__main__":
    main()
