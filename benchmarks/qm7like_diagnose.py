"""What holds the λ-SOAP polarizability of the QM7b-like set at 0.17 bohr³ per atom (issue 27, point 4)?

Two measurements on the set of ``benchmarks/qm7like.py`` with the split of ``benchmarks/qm7like_curves.py``:

* ``labels``: **label noise of the finite-field polarizability.** Relabels a sample of molecules
  (from the test set and from the first 1000 training molecules, always including those with the
  largest polarizability per atom, which are the low-gap S/Cl ones) with GFN2-xTB at other
  finite-field settings: half and double the field, a 100× tighter SCF (tblite ``accuracy``), a
  4-point central stencil; prints the rms difference per atom (bohr³, over the 9 components, the
  error measure of the learning curves) of each against the stored labels and against the
  tightest reference (4-point stencil, tight SCF), and the HOMO–LUMO gap of the molecules with
  the largest differences.
* ``outliers``: **the error distribution of the 1000-molecule model.** Fits the default λ-SOAP
  polarizability model on the first 1000 training molecules, predicts the 300 test molecules and
  prints: the share of the summed squared error (per atom, 9 components) carried by the worst 1, 5,
  10 % of the molecules; the RMSE without them; the worst molecules (SMILES, gap, elements,
  conjugation); the RMSE per class (S or Cl present, aromatic/conjugated, gap below 2 eV); and the
  error correlation with the gap. ``--save FILE`` keeps the predictions (.npz) for re-analysis.
* ``split``: **charge flow against atomic polarisation.** GFN2-xTB's dipole is ``Σ q_i r_i + Σ p_i``
  (Mulliken charges, atomic dipoles), so its finite-field polarizability splits exactly into a
  charge-flow part ``Σ r_i ⊗ ∂q_i/∂F`` (charge moving between atoms: nonlocal) and an atomic part
  ``Σ ∂p_i/∂F``; relabels every molecule (six field SCFs each, as the stored labels) and saves
  both parts (``--out``, .npz; checks that they add up to the stored labels). MPI-parallel.
* ``parts``: fits the default λ-SOAP polarizability model on the whole α and on each part and
  prints the test errors (which part the local model cannot learn).

Usage:
    python benchmarks/qm7like_diagnose.py labels [--n 60]
    python benchmarks/qm7like_diagnose.py outliers [--size 1000] [--save preds.npz]
    mpiexec -n 2 python benchmarks/qm7like_diagnose.py split [--out /work/data/qm7like_split/alpha_parts.npz]
    python benchmarks/qm7like_diagnose.py parts [--size 1000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.qm7like_curves import N_TEST, split  # noqa: E402

DEFAULT_DATA = Path("/work/data/qm7like/qm7like.xyz")


def header() -> str:
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; commit {commit}; load {os.getloadavg()[0]:.1f}"


def read_labelled(path: Path):
    """(frames with ``smiles`` in their info, dipoles (n, 3) e·Å, polarizabilities (n, 3, 3) Å³)."""
    from ase.io import read

    frames = read(path, ":")
    alpha = np.array([np.reshape((a.calc.results if a.calc else {}).get("polarizability", a.info.get("polarizability")),
                                 (3, 3)) for a in frames])
    return frames, alpha


def gap_ev(atoms, accuracy: float = 0.01) -> float:
    """GFN2-xTB HOMO–LUMO gap (eV) of a closed-shell molecule (tblite's orbital energies)."""
    from tblite.interface import Calculator as Engine

    from mdplugin.core.units import BOHR, HARTREE

    engine = Engine("GFN2-xTB", atoms.numbers, atoms.positions / BOHR)
    engine.set("verbosity", 0)
    engine.set("accuracy", accuracy)
    res = engine.singlepoint()
    eps, occ = np.asarray(res.get("orbital-energies")), np.asarray(res.get("orbital-occupations"))
    homo = np.max(eps[occ > 1.0])
    lumo = np.min(eps[occ < 1.0])
    return float(lumo - homo) * HARTREE


def finite_field_alpha(oracle, atoms, h: float, points: int = 2) -> np.ndarray:
    """Symmetrised polarizability (3, 3) Å³ by central differences of the dipole with step ``h``
    V/Å: 2 points ``[μ(h) − μ(−h)]/2h`` or 4 points ``[8(μ(h) − μ(−h)) − (μ(2h) − μ(−2h))]/12h``."""
    from mdplugin.oracles.label import COULOMB_CONSTANT

    d = np.empty((3, 3))
    for j in range(3):
        e = np.zeros(3)
        e[j] = 1.0
        first = (oracle.dipole_in_field(atoms, h * e) - oracle.dipole_in_field(atoms, -h * e)) / (2 * h)
        if points == 2:
            d[:, j] = first
        else:
            second = (oracle.dipole_in_field(atoms, 2 * h * e) - oracle.dipole_in_field(atoms, -2 * h * e)) / (4 * h)
            d[:, j] = (4 * first - second) / 3
    a = COULOMB_CONSTANT * d
    return 0.5 * (a + a.T)


def pick(alpha: np.ndarray, n_atoms: np.ndarray, n: int, seed: int = 2) -> np.ndarray:
    """``n`` molecule indices: the 10 largest polarizabilities per atom (largest eigenvalue),
    then a random half from the test set and half from the first 1000 training molecules."""
    test, train_order = split(len(alpha))
    big = np.argsort(-np.linalg.eigvalsh(alpha)[:, -1] / n_atoms)[:10]
    rng = np.random.default_rng(seed)
    rest = (n - len(big)) // 2
    chosen = list(big)
    for pool in (test, train_order[:1000]):
        chosen += [i for i in rng.permutation(pool) if i not in chosen][:rest]
    return np.array(chosen[:n])


def per_atom_rms(diff: np.ndarray, n_atoms: np.ndarray) -> float:
    """RMS over molecules and the 9 components of ``diff`` (n, 3, 3) Å³ / n_atoms, in bohr³."""
    from mdplugin.core.units import BOHR

    return float(np.sqrt(np.mean((diff.reshape(len(diff), 9) / BOHR**3 / n_atoms[:, None]) ** 2)))


def cmd_labels(args) -> None:
    from mdplugin.core.units import BOHR
    from mdplugin.oracles.label import make_oracle

    frames, stored = read_labelled(args.data)
    n_atoms_all = np.array([len(a) for a in frames], float)
    idx = pick(stored, n_atoms_all, args.n)
    n_atoms = n_atoms_all[idx]
    settings = {  # label: (field V/Å, tblite accuracy, stencil points)
        "default (0.02 V/Å, accuracy 0.01, 2-point)": (0.02, 0.01, 2),
        "half field (0.01 V/Å)": (0.01, 0.01, 2),
        "double field (0.04 V/Å)": (0.04, 0.01, 2),
        "tight SCF (accuracy 1e-4)": (0.02, 1e-4, 2),
        "half field, tight SCF": (0.01, 1e-4, 2),
        "4-point, 0.02 V/Å, tight SCF (reference)": (0.02, 1e-4, 4),
    }
    print(header() + f"; {len(idx)} molecules ({args.data})")
    start = time.perf_counter()
    out = {}
    for label, (h, acc, points) in settings.items():
        oracle = make_oracle("tblite", field=h, accuracy=acc)
        t0 = time.perf_counter()
        out[label] = np.array([finite_field_alpha(oracle, frames[i], h, points) for i in idx])
        print(f"# {label}: {time.perf_counter() - t0:.0f} s", flush=True)
    ref = out["4-point, 0.02 V/Å, tight SCF (reference)"]
    print("| labels | rms difference to the stored labels, bohr³ per atom | to the reference | max per molecule |")
    print("|---|---|---|---|")
    for label, a in out.items():
        per_mol = np.sqrt(np.mean(((a - ref).reshape(len(a), 9) / n_atoms[:, None]) ** 2, axis=1)) / BOHR**3
        print(f"| {label} | {per_atom_rms(a - stored[idx], n_atoms):.2e} | {per_atom_rms(a - ref, n_atoms):.2e} | "
              f"{per_mol.max():.2e} |")
    print(f"| stored (qm7like.xyz) | 0 | {per_atom_rms(stored[idx] - ref, n_atoms):.2e} | |")
    worst = np.argsort(-np.abs(out["double field (0.04 V/Å)"] - ref).reshape(len(idx), 9).max(axis=1))[:5]
    print("# largest field dependence (double field against reference), with the HOMO–LUMO gap:")
    for w in worst:
        i = idx[w]
        diff = np.abs(out["double field (0.04 V/Å)"][w] - ref[w]).max()
        print(f"#   {frames[i].info.get('smiles')}: {diff:.2e} Å³ (largest α eigenvalue "
              f"{np.linalg.eigvalsh(ref[w])[-1]:.1f} Å³), gap {gap_ev(frames[i]):.2f} eV")
    print(f"# total {time.perf_counter() - start:.0f} s, load {os.getloadavg()[0]:.1f}")


def alpha_parts(oracle, atoms, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Charge-flow and atomic-dipole parts (3, 3) Å³ (each symmetrised) of the finite-field
    polarizability: ``μ = Σ q_i r_i + Σ p_i`` (tblite's Mulliken charges and atomic dipoles), so
    ``α = C Σ r_i ⊗ ∂q_i/∂F + C Σ ∂p_i/∂F``; the first is charge moving between atoms (origin-free
    because ``Σ ∂q_i/∂F = 0``), the second each atom's own polarisation."""
    from mdplugin.oracles.label import COULOMB_CONSTANT

    flow, local = np.empty((3, 3)), np.empty((3, 3))
    centred = atoms.positions - atoms.get_center_of_mass()
    for j in range(3):
        e = np.zeros(3)
        e[j] = h
        qp, pp = oracle.charges_and_dipoles_in_field(atoms, e)
        qm, pm = oracle.charges_and_dipoles_in_field(atoms, -e)
        flow[:, j] = centred.T @ (qp - qm) / (2 * h)
        local[:, j] = (pp - pm).sum(axis=0) / (2 * h)
    return (COULOMB_CONSTANT * 0.5 * (flow + flow.T), COULOMB_CONSTANT * 0.5 * (local + local.T))


def cmd_split(args) -> None:
    from mdplugin.learn.parallel import get_comm
    from mdplugin.oracles.label import DEFAULT_FIELD, make_oracle

    comm = get_comm()
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    frames, stored = read_labelled(args.data)
    oracle = make_oracle("tblite")
    start = time.perf_counter()
    mine = range(rank, len(frames), size)
    parts = {i: alpha_parts(oracle, frames[i], DEFAULT_FIELD) for i in mine}
    if comm is not None:
        gathered = comm.allgather(parts)
        parts = {k: v for d in gathered for k, v in d.items()}
    if rank:
        return
    flow = np.array([parts[i][0] for i in range(len(frames))])
    local = np.array([parts[i][1] for i in range(len(frames))])
    n_atoms = np.array([len(a) for a in frames], float)
    np.savez(args.out, charge_flow=flow, atomic=local, stored=stored)
    print(header() + f"; {len(frames)} molecules on {size} rank(s) in {time.perf_counter() - start:.0f} s -> {args.out}")
    print(f"# |charge flow + atomic − stored| rms per atom {per_atom_rms(flow + local - stored, n_atoms):.1e} bohr³")
    for name, part in (("charge flow", flow), ("atomic dipoles", local)):
        spread = per_atom_rms(part - part.mean(axis=0), n_atoms)
        trace = np.trace(part, axis1=1, axis2=2) / np.trace(stored, axis1=1, axis2=2)
        print(f"# {name}: spread per atom {spread:.3f} bohr³; share of the trace {np.mean(trace):.2f} "
              f"(range {trace.min():.2f} … {trace.max():.2f})")


def cmd_parts(args) -> None:
    """Fit the default λ-SOAP polarizability model on each part of the split (and on the whole) and
    print the test errors: which part carries the error the local model cannot learn."""
    from benchmarks.qm7like_curves import isotropic_anisotropic, per_atom_rmse
    from mdplugin.core.units import BOHR
    from mdplugin.models import build

    frames, _ = read_labelled(args.data)
    saved = np.load(args.out)
    test, train_order = split(len(frames))
    train = train_order[:args.size]
    n_atoms = np.array([len(frames[i]) for i in test], float)
    scale = 1 / BOHR**3
    print(header() + f"; λ-SOAP defaults, {args.size} training molecules, {N_TEST} test molecules")
    print("| target | spread per atom (bohr³) | RMSE per atom (bohr³) | λ = 0 part | λ = 2 part | regulariser λ = 0 / 2 |")
    print("|---|---|---|---|---|---|")
    preds = {}
    for name, key in (("whole α", "stored"), ("charge flow", "charge_flow"), ("atomic dipoles", "atomic")):
        y = saved[key].reshape(-1, 9)
        model = build("lsoap", target="polarizability")
        model.fit([frames[i] for i in train], y[train])
        preds[key] = pred = model.predict([frames[i] for i in test]).reshape(-1, 9)
        spread = per_atom_rmse(np.broadcast_to(y[train].mean(axis=0), y[test].shape), y[test], n_atoms, scale)
        iso, aniso = isotropic_anisotropic(pred, y[test], n_atoms, scale)
        reg = model.regularizer_
        print(f"| {name} | {spread:.3f} | {per_atom_rmse(pred, y[test], n_atoms, scale):.4f} | {iso:.4f} | "
              f"{aniso:.4f} | {reg.get(0, 0):.0e} / {reg.get(2, 0):.0e} |", flush=True)
    both = preds["charge_flow"] + preds["atomic"]
    print(f"# sum of the two part models against the whole: "
          f"{per_atom_rmse(both, saved['stored'].reshape(-1, 9)[test], n_atoms, scale):.4f} bohr³ per atom; "
          f"load {os.getloadavg()[0]:.1f}")


def describe(atoms) -> dict:
    """Elements and conjugation of a molecule from its SMILES (RDKit)."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(atoms.info["smiles"])
    conj = sum(b.GetIsConjugated() for b in mol.GetBonds())
    nitroso = mol.HasSubstructMatch(Chem.MolFromSmarts("[#6,#7,#8,#16]-[NX2]=[OX1]"))
    return {"S": "S" in atoms.get_chemical_symbols(), "Cl": "Cl" in atoms.get_chemical_symbols(), "nitroso": nitroso,
            "aromatic": any(a.GetIsAromatic() for a in mol.GetAtoms()), "conjugated_bonds": int(conj)}


def cmd_outliers(args) -> None:
    from mdplugin.core.units import BOHR
    from mdplugin.models import build

    frames, alpha = read_labelled(args.data)
    test, train_order = split(len(frames))
    train = train_order[:args.size]
    n_atoms = np.array([len(frames[i]) for i in test], float)
    print(header() + f"; λ-SOAP polarizability, {args.size} training molecules, {N_TEST} test molecules")
    if args.load and args.load.exists():
        pred = np.load(args.load)["prediction"]
    else:
        model = build("lsoap", target="polarizability")
        t0 = time.process_time()
        model.fit([frames[i] for i in train], alpha[train].reshape(-1, 9))
        print(f"# fit {time.process_time() - t0:.0f} s CPU", flush=True)
        pred = model.predict([frames[i] for i in test]).reshape(-1, 3, 3)
        if args.save:
            np.savez(args.save, prediction=pred, test=test)
    err = (pred - alpha[test]).reshape(len(test), 9) / BOHR**3 / n_atoms[:, None]  # bohr³ per atom
    sq = np.sum(err**2, axis=1)  # per molecule
    rmse = np.sqrt(sq.sum() / err.size)
    order = np.argsort(-sq)
    print(f"RMSE per atom {rmse:.4f} bohr³ (300 test molecules)")
    print("| worst share of molecules | molecules | share of the squared error | RMSE without them (bohr³ per atom) |")
    print("|---|---|---|---|")
    for share in (0.01, 0.05, 0.10):
        k = int(round(share * len(test)))
        rest = np.sort(order[k:])
        print(f"| {share:.0%} | {k} | {sq[order[:k]].sum() / sq.sum():.1%} | {np.sqrt(sq[rest].sum() / (9 * len(rest))):.4f} |")
    gaps = np.array([gap_ev(frames[i]) for i in test])
    info = [describe(frames[i]) for i in test]
    print("# worst molecules: SMILES, atoms, per-atom error (rms over 9), gap eV, largest α eigenvalue per atom (bohr³)")
    for j in order[:15]:
        i = test[j]
        print(f"#   {frames[i].info['smiles']:<22s} {len(frames[i]):3d}  {np.sqrt(sq[j] / 9):.3f}  {gaps[j]:.2f}  "
              f"{np.linalg.eigvalsh(alpha[i])[-1] / BOHR**3 / len(frames[i]):.2f}")
    print("| class | molecules | RMSE per atom (bohr³) | RMSE of the others |")
    print("|---|---|---|---|")
    classes = {
        "contains S": np.array([d["S"] for d in info]),
        "contains Cl": np.array([d["Cl"] for d in info]),
        "contains S or Cl": np.array([d["S"] or d["Cl"] for d in info]),
        "aromatic": np.array([d["aromatic"] for d in info]),
        "≥ 2 conjugated bonds": np.array([d["conjugated_bonds"] >= 2 for d in info]),
        "nitroso (–N=O)": np.array([d["nitroso"] for d in info]),
        "≤ 6 atoms": n_atoms <= 6,
        "formula not in training": np.array([frames[i].get_chemical_formula() not in
                                             {frames[k].get_chemical_formula() for k in train} for i in test]),
        "gap < 2 eV": gaps < 2.0,
        "gap < 1 eV": gaps < 1.0,
    }
    for name, mask in classes.items():
        if mask.any() and (~mask).any():
            print(f"| {name} | {mask.sum()} | {np.sqrt(sq[mask].mean() / 9):.4f} | {np.sqrt(sq[~mask].mean() / 9):.4f} |")
    from scipy.stats import spearmanr

    rho = spearmanr(gaps, np.sqrt(sq / 9))
    print(f"# Spearman correlation of the per-molecule error with the gap: {rho.statistic:.2f} "
          f"(p = {rho.pvalue:.1e}); gap quartiles {np.percentile(gaps, [25, 50, 75]).round(2).tolist()} eV")
    quart = np.digitize(gaps, np.percentile(gaps, [25, 50, 75]))
    print("# RMSE per gap quartile (low to high): "
          + ", ".join(f"{np.sqrt(sq[quart == q].mean() / 9):.4f}" for q in range(4)))
    print(f"# load {os.getloadavg()[0]:.1f}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=("labels", "outliers", "split", "parts"))
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--n", type=int, default=60, help="molecules to relabel (labels)")
    p.add_argument("--size", type=int, default=1000, help="training molecules (outliers)")
    p.add_argument("--save", type=Path, help="keep the test predictions (outliers)")
    p.add_argument("--load", type=Path, help="reuse saved test predictions instead of fitting (outliers)")
    p.add_argument("--out", type=Path, default=Path("/work/data/qm7like_split/alpha_parts.npz"),
                   help="charge-flow / atomic split of every molecule's polarizability (split)")
    args = p.parse_args(argv)
    {"labels": cmd_labels, "outliers": cmd_outliers, "split": cmd_split, "parts": cmd_parts}[args.step](args)


if __name__ == "__main__":
    main()
