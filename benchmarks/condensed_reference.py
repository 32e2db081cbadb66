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
  fs, how much of the polarization current the convention leaves out: the charge transferred
  between molecules, ``d/dt Σ_m Q_m c_m`` (molecule charges Q_m, centres followed across the wall),
  against ``dM/dt`` of the convention.
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


def section_current(n_frames: int = 121, stride_fs: float = 1.0) -> None:
    sys.path.insert(0, str(REPO / "examples" / "liquid_water"))
    from make_data import start_box, tip3p_frames

    from mdplugin.oracles.tblite import TBLite
    from mdplugin.structures.molecules import find_molecules, molecule_dipoles
    from mdplugin.oracles.clusters import molecule_centres

    frames = tip3p_frames(start_box("water8", START), seed=3, n_frames=n_frames, equilibration_ps=2.0,
                          interval_fs=stride_fs)
    t = time.perf_counter()
    m_series, ct_series = [], []
    previous = None
    for atoms in frames:
        calc = TBLite(accuracy=0.01)
        calc.calculate(atoms, ["dipole", "atomic_dipoles"], all_changes)
        q, p = calc.results["charges"], calc.results["atomic_dipoles"]
        mol = find_molecules(atoms)
        centres = molecule_centres(atoms, mol)
        if previous is not None:  # follow each centre across the wall (minimum image in time)
            step = (centres - previous) @ np.linalg.inv(atoms.cell.array)
            step -= np.round(step)
            centres = previous + step @ atoms.cell.array
        previous = centres
        charge = np.bincount(mol.index, weights=q, minlength=mol.n_molecules)
        m_series.append(molecule_dipoles(atoms, q, p, mol).sum(axis=0))
        ct_series.append(charge @ centres)
    m_dot = np.diff(m_series, axis=0) / stride_fs
    ct_dot = np.diff(ct_series, axis=0) / stride_fs
    ratio = np.mean(np.sum(ct_dot**2, axis=1)) / np.mean(np.sum(m_dot**2, axis=1))
    print(f"8-molecule box, {n_frames} frames {stride_fs:g} fs apart ({time.perf_counter() - t:.0f} s): "
          f"<|d/dt Σ Q_m c_m|²> / <|dM/dt|²> = {ratio:.4f} (the charge-transfer current the convention leaves "
          f"out); rms dM/dt {np.sqrt(np.mean(np.sum(m_dot**2, axis=1))):.4f} e·Å/fs", flush=True)
    # where the two currents carry their power: periodograms (Hann taper) in three bands
    taper = np.hanning(len(m_dot))[:, None]
    nu = np.fft.rfftfreq(len(m_dot), stride_fs) / 2.99792458e-5  # cm⁻¹
    power = {name: np.sum(np.abs(np.fft.rfft((x - x.mean(axis=0)) * taper, axis=0)) ** 2, axis=1)
             for name, x in (("M", m_dot), ("CT", ct_dot))}
    for lo, hi in ((0, 1000), (1000, 2500), (2500, 5000)):
        sel = (nu >= lo) & (nu < hi)
        print(f"  {lo}-{hi} cm^-1: power of dM/dt {power['M'][sel].sum() / power['M'].sum():.2f} of its total, "
              f"charge-transfer / molecular current power {power['CT'][sel].sum() / power['M'][sel].sum():.3f}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default="dipole,alpha,current")
    parser.add_argument("--molecules", type=int, default=8, help="molecules of the box in the radius scan")
    args = parser.parse_args()
    for name in args.sections.split(","):
        {"alpha": lambda: section_alpha(args.molecules), "dipole": section_dipole, "current": section_current}[name]()


if __name__ == "__main__":
    main()
