"""The measurements behind the reference labels of a periodic cell (docs/condensed.md).

    python benchmarks/condensed_reference.py [--sections alpha,dipole,current] [--molecules 8]

* ``alpha``: GFN2-xTB polarizability of water from (1) the gas-phase molecule, (2) a uniform
  field on the periodic 32-molecule box (the response of tblite's dipole, as `mdplugin label` did
  before), also with the origin moved by half a cell, (3) each molecule's response in a cluster
  cut from the liquid, against the cluster radius R (0 = the molecule alone in its liquid
  geometry), with the cost per molecule, (4) the box's sum at the default R (isotropy), and (5)
  PBE0/aug-cc-pVDZ (PySCF) for the gas-phase molecule, the scale GFN2-xTB's minimal basis misses.
* ``dipole``: tblite's own dipole and the package's convention for the box and the box with its
  origin moved by half a cell.
* ``current``: along 120 fs of flexible-TIP3P MD of an 8-molecule box labelled with GFN2-xTB every
  fs, how much of the polarization current the convention leaves out: the charge moved between
  molecules (:func:`charge_transfer_dipole`, the smallest flow between neighbours that gives each
  molecule its net charge), against ``dM/dt`` of the convention, per frequency band.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import molecule
from ase.calculators.calculator import all_changes

REPO = Path(__file__).resolve().parents[1]
START = REPO.parent / "shared" / "data" / "water-box" / "water32_tip3p_300K.xyz"
BOHR3 = 0.529177210903**3


def _box() -> Atoms:
    import ase.io

    box = ase.io.read(START)
    return Atoms(numbers=box.numbers, positions=box.positions, cell=box.cell, pbc=True)


def _uniform_field_alpha(atoms: Atoms, field: float = 0.02) -> np.ndarray:
    """α (Å³) from tblite's own dipole of the cell in ±field (V/Å): the old way."""
    from mdplugin.oracles.label import COULOMB_CONSTANT
    from mdplugin.oracles.tblite import TBLite

    d = np.zeros((3, 3))
    for j in range(3):
        mu = []
        for s in (1, -1):
            f = np.zeros(3)
            f[j] = s * field
            calc = TBLite(accuracy=0.01, electric_field=f)
            calc.calculate(atoms, ["energy", "atomic_dipoles"], all_changes)
            q, p = calc.results["charges"], calc.results["atomic_dipoles"]
            frac = atoms.cell.scaled_positions(atoms.positions) % 1.0  # tblite's dipole: wrapped atoms
            mu.append(q @ (frac @ atoms.cell.array) + p.sum(axis=0))
        d[:, j] = (mu[0] - mu[1]) / (2 * field)
    return COULOMB_CONSTANT * d


def section_alpha(n_molecules: int) -> None:
    from ase.optimize import BFGS

    from mdplugin.oracles.clusters import centre_dipole, molecular_clusters
    from mdplugin.oracles.label import COULOMB_CONSTANT, label_frames, make_oracle, tblite_factory

    w = molecule("H2O")
    w.calc = tblite_factory()(None)
    BFGS(w, logfile=None).run(fmax=1e-4)
    gas = label_frames([w], "tblite", ["polarizability"]).polarizability[0]
    ev = np.linalg.eigvalsh(gas)
    print(f"gas-phase molecule (GFN2-xTB minimum): principal values {np.round(ev, 3)} Å³, mean "
          f"{np.trace(gas) / 3:.3f} Å³ ({np.trace(gas) / 3 / BOHR3:.2f} bohr³)", flush=True)

    box = _box()
    n = len(box) // 3
    t = time.perf_counter()
    uniform = _uniform_field_alpha(box)
    shifted = box.copy()
    shifted.positions += 0.5 * shifted.cell.sum(axis=0)
    shifted.wrap()
    uniform_shifted = _uniform_field_alpha(shifted)
    print(f"uniform field on the periodic box: diagonal per molecule {np.round(np.diag(uniform) / n, 3)} Å³ "
          f"(mean {np.trace(uniform) / 3 / n / BOHR3:.1f} bohr³); origin moved by half a cell: "
          f"{np.round(np.diag(uniform_shifted) / n, 3)} Å³ ({time.perf_counter() - t:.0f} s)", flush=True)

    oracle = make_oracle("tblite")
    results = {}
    for radius in (0.5, 3.2, 4.0, 5.0, 6.0):
        clusters = molecular_clusters(box, radius)[:: max(1, n // n_molecules)][:n_molecules]
        t = time.perf_counter()
        alphas = []
        for c in clusters:
            d = np.zeros((3, 3))
            for j in range(3):
                f = np.zeros(3)
                f[j] = oracle.field
                plus = centre_dipole(c, *oracle.charges_and_dipoles_in_field(c.atoms, f))
                minus = centre_dipole(c, *oracle.charges_and_dipoles_in_field(c.atoms, -f))
                d[:, j] = (plus - minus) / (2 * oracle.field)
            alphas.append(COULOMB_CONSTANT * d)
        results[radius] = (np.array(alphas), (time.perf_counter() - t) / len(clusters),
                           np.mean([len(c.atoms) for c in clusters]))
    reference = results[6.0][0]
    for radius, (alphas, seconds, atoms) in results.items():
        iso = np.trace(alphas, axis1=1, axis2=2) / 3
        print(f"clusters R = {radius:3.1f} Å ({atoms:5.1f} atoms): mean isotropic {iso.mean():.4f} Å³, largest "
              f"component difference from R = 6 Å {np.abs(alphas - reference).max():.4f} Å³, "
              f"{seconds:.2f} s per molecule", flush=True)

    t = time.perf_counter()
    total = label_frames([box], "tblite", ["polarizability"]).polarizability[0]
    ev = np.linalg.eigvalsh(total)
    print(f"box at the default radius: diagonal per molecule {np.round(np.diag(total) / n, 4)} Å³, principal "
          f"values {np.round(ev / n, 4)} ({time.perf_counter() - t:.0f} s for {n} molecules)", flush=True)

    try:
        pyscf = label_frames([w], make_oracle("pyscf"), ["polarizability"]).polarizability[0]
        print(f"PBE0/aug-cc-pVDZ (PySCF), same molecule: principal values {np.round(np.linalg.eigvalsh(pyscf), 3)} Å³, "
              f"mean {np.trace(pyscf) / 3:.3f} Å³", flush=True)
    except Exception as exc:  # PySCF is optional
        print(f"PySCF not run: {exc}")


def section_dipole() -> None:
    from mdplugin.oracles.label import make_oracle
    from mdplugin.structures.molecules import find_molecules

    box = _box()
    shifted = box.copy()
    shifted.positions += 0.5 * shifted.cell.sum(axis=0)
    shifted.wrap()
    for name, atoms in (("box", box), ("origin moved by half a cell", shifted)):
        calc = make_oracle("tblite")
        calc.calculate(atoms, ["energy", "dipole", "atomic_dipoles"], all_changes)
        base = calc.base
        frac = atoms.cell.scaled_positions(atoms.positions) % 1.0
        raw = base.results["charges"] @ (frac @ atoms.cell.array) + base.results["atomic_dipoles"].sum(axis=0)
        q = base.results["charges"]
        mol = find_molecules(atoms)
        charge = np.bincount(mol.index, weights=q)
        print(f"{name}: energy {calc.results['energy']:.6f} eV, tblite's dipole {np.round(raw, 3)} e·Å, "
              f"molecules' dipoles {np.round(calc.results['dipole'], 4)} e·Å; molecule charges std "
              f"{charge.std():.4f} e, range {charge.min():+.3f} … {charge.max():+.3f} e", flush=True)


def charge_transfer_dipole(atoms: Atoms, charges: np.ndarray, r_on: float = 3.0, r_off: float = 3.6) -> np.ndarray:
    """``Σ_m Q_m c_m`` made periodic: each molecule's net charge ``Q_m`` is carried to it from its
    neighbours (centres closer than ``r_off`` Å, weights switched smoothly off from ``r_on``) as the
    smallest flow with those sources (a graph-Laplacian solve), and the dipole is the sum of the
    flows times the minimum-image vectors between the centres (e·Å). Continuous and independent
    of the origin; its time derivative is the current of charge moved between molecules."""
    from mdplugin.oracles.clusters import molecule_centres
    from mdplugin.structures.molecules import find_molecules
    from mdplugin.structures.neighbours import neighbour_pairs

    mol = find_molecules(atoms)
    centres = molecule_centres(atoms, mol)
    q_mol = np.bincount(mol.index, weights=charges, minlength=mol.n_molecules)
    points = Atoms(numbers=np.ones(len(centres), dtype=int), positions=centres, cell=atoms.cell, pbc=atoms.pbc)
    pairs = neighbour_pairs(points, r_off, full_list=False)
    x = np.clip((pairs.distances - r_on) / (r_off - r_on), 0.0, 1.0)
    w = 0.5 * (1.0 + np.cos(np.pi * x))
    n = len(centres)
    laplacian = np.zeros((n, n))
    np.add.at(laplacian, (pairs.i, pairs.j), -w)
    np.add.at(laplacian, (pairs.j, pairs.i), -w)
    laplacian[np.diag_indices(n)] -= laplacian.sum(axis=1)
    phi = np.linalg.pinv(laplacian) @ q_mol
    flow = w * (phi[pairs.i] - phi[pairs.j])  # charge carried from j to i (the pair counted once)
    return -(flow[:, None] * pairs.vectors).sum(axis=0)


def section_current(n_frames: int = 121, stride_fs: float = 1.0, cache: Path | None = None) -> None:
    sys.path.insert(0, str(REPO / "examples" / "liquid_water"))
    from make_data import start_box, tip3p_frames

    from mdplugin.oracles.tblite import TBLite
    from mdplugin.structures.molecules import molecular_dipole

    t = time.perf_counter()
    if cache is not None and cache.exists():
        saved = np.load(cache)
        cell, numbers = saved["cell"], saved["numbers"]
        frames = [Atoms(numbers=numbers, positions=p, cell=cell, pbc=True) for p in saved["positions"]]
        charges, atomic_dipoles = saved["charges"], saved["atomic_dipoles"]
    else:
        frames = tip3p_frames(start_box("water8", START), seed=3, n_frames=n_frames, equilibration_ps=2.0,
                              interval_fs=stride_fs)
        charges, atomic_dipoles = [], []
        for atoms in frames:
            calc = TBLite(accuracy=0.01)
            calc.calculate(atoms, ["charges", "atomic_dipoles"], all_changes)
            charges.append(calc.results["charges"])
            atomic_dipoles.append(calc.results["atomic_dipoles"])
        charges, atomic_dipoles = np.array(charges), np.array(atomic_dipoles)
        if cache is not None:
            np.savez(cache, positions=np.array([a.positions for a in frames]), cell=frames[0].cell.array,
                     numbers=frames[0].numbers, charges=charges, atomic_dipoles=atomic_dipoles)
    m_series = np.array([molecular_dipole(a, q, p) for a, q, p in zip(frames, charges, atomic_dipoles)])
    ct_series = np.array([charge_transfer_dipole(a, q) for a, q in zip(frames, charges)])
    m_dot = np.diff(m_series, axis=0) / stride_fs
    ct_dot = np.diff(ct_series, axis=0) / stride_fs
    total_dot = m_dot + ct_dot
    print(f"8-molecule box, {len(frames)} frames {stride_fs:g} fs apart ({time.perf_counter() - t:.0f} s): "
          f"rms dM/dt {np.sqrt(np.mean(np.sum(m_dot**2, axis=1))):.4f} e·Å/fs; charge moved between molecules "
          f"(smallest flow over neighbours): <|dM_CT/dt|²> / <|dM/dt|²> = "
          f"{np.mean(np.sum(ct_dot**2, axis=1)) / np.mean(np.sum(m_dot**2, axis=1)):.3f}", flush=True)
    taper = np.hanning(len(m_dot))[:, None]
    nu = np.fft.rfftfreq(len(m_dot), stride_fs) / 2.99792458e-5  # cm⁻¹
    power = {name: np.sum(np.abs(np.fft.rfft((x - x.mean(axis=0)) * taper, axis=0)) ** 2, axis=1)
             for name, x in (("M", m_dot), ("CT", ct_dot), ("total", total_dot))}
    for lo, hi in ((0, 1000), (1000, 2500), (2500, 5000)):
        sel = (nu >= lo) & (nu < hi)
        print(f"  {lo}-{hi} cm^-1: {power['M'][sel].sum() / power['M'].sum():.2f} of the power of dM/dt; "
              f"power with the charge-transfer current added / without: "
              f"{power['total'][sel].sum() / power['M'][sel].sum():.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default="dipole,alpha,current")
    parser.add_argument("--molecules", type=int, default=8, help="molecules of the box in the radius scan")
    parser.add_argument("--cache", type=Path, help="current: keep (or reuse) the labelled trajectory in this .npz")
    args = parser.parse_args()
    for name in args.sections.split(","):
        {"alpha": lambda: section_alpha(args.molecules), "dipole": section_dipole,
         "current": lambda: section_current(cache=args.cache)}[name]()


if __name__ == "__main__":
    main()
