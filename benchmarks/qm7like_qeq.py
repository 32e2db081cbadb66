"""Nonlocal charge-response baselines under the λ-SOAP polarizability (issue 27, point 4; a measurement).

``benchmarks/qm7like_diagnose.py parts`` finds the QM7b-like polarizability error in the charge-flow
part ``Σ r_i ⊗ ∂q_i/∂F``. Two physical models whose charge response is nonlocal (a matrix inverse
over the whole molecule), fitted by least squares to the training polarizabilities (per atom, the
error measure of the curves), atomic units inside:

* **QEq** (charge equilibration): charges minimise
  ``Σ_i (χ_i q_i + ½ J_i q_i²) + ½ Σ_{i≠j} q_i q_j γ_ij − F·Σ_i q_i r_i`` at fixed total charge, with
  ``γ_ij = erf(r_ij / √(σ_i² + σ_j²)) / r_ij``; ``α = Rᵀ S R``, ``S = A⁻¹ − A⁻¹11ᵀA⁻¹ / 1ᵀA⁻¹1``,
  ``A = diag(J) + γ``, ``R`` the positions about their mean. A hardness and a width per element.
* **SQE** (split-charge equilibration): charge moves only along bonds (from the molecule's SMILES),
  ``α = Rᵀ B (Bᵀ A B + diag κ)⁻¹ Bᵀ R`` with ``B`` the signed atom–bond incidence and a bond
  hardness ``κ`` per bond from an element-pair term and a bond-order class term (single,
  conjugated single, aromatic, double, triple): soft conjugated bonds let charge travel.

Printed: the test error of each alone, and of the default λ-SOAP model fitted to the residual
``α − α_SQE`` with SQE added back (Δ-learning); the plain λ-SOAP figure at 1000 molecules is
0.1727 (``benchmarks/qm7like_curves.py``). Same split as there. Needs RDKit (bonds).

Usage:
    python benchmarks/qm7like_qeq.py [--size 1000] [--no-lsoap] [--full-bond-types]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy.special import erf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.qm7like_curves import N_TEST, isotropic_anisotropic, per_atom_rmse, split  # noqa: E402
from benchmarks.qm7like_diagnose import header  # noqa: E402

DEFAULT_DATA = Path("/work/data/qm7like/qm7like.xyz")


def hardness_matrix(atoms, slot: dict[int, int], hard: np.ndarray, width: np.ndarray):
    """Positions about the centroid (n, 3) bohr and the QEq hardness matrix (n, n) Hartree/e²:
    Gaussian-charge Coulomb erf(d/s)/d off the diagonal, the element's hardness on it (``slot``: element
    -> index into ``hard`` and ``width``, the Gaussian widths in bohr)."""
    from mdplugin.core.units import BOHR

    idx = np.array([slot[z] for z in atoms.numbers])
    r = (atoms.positions - atoms.positions.mean(axis=0)) / BOHR
    d = np.linalg.norm(r[:, None] - r[None], axis=-1)
    s = np.sqrt(width[idx][:, None] ** 2 + width[idx][None] ** 2)
    np.fill_diagonal(d, 1.0)
    gamma = erf(d / s) / d
    np.fill_diagonal(gamma, hard[idx])
    return r, gamma


def qeq_polarizability(frames, species: list[int], params: np.ndarray) -> np.ndarray:
    """QEq polarizabilities (n_frames, 9) in Å³; ``params`` = log J (Hartree/e²) then log σ (bohr)
    per element of ``species``."""
    from mdplugin.core.units import BOHR

    k = len(species)
    hard, width = np.exp(params[:k]), np.exp(params[k:])
    slot = {z: n for n, z in enumerate(species)}
    out = np.empty((len(frames), 9))
    for f, atoms in enumerate(frames):
        r, gamma = hardness_matrix(atoms, slot, hard, width)
        inv = np.linalg.inv(gamma)
        one = inv.sum(axis=1)
        smat = inv - np.outer(one, one) / one.sum()
        out[f] = (r.T @ smat @ r).reshape(9) * BOHR**3
    return out


BOND_CLASSES = ("single", "single, conjugated", "aromatic", "double", "triple")


def bonds_of(atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bonds (i, j) (n_b, 2), their element-pair keys (n_b, 2) and order classes (n_b,) from the
    molecule's SMILES (RDKit; the structure's atoms are in RDKit's order with explicit H)."""
    from rdkit import Chem

    mol = Chem.AddHs(Chem.MolFromSmiles(atoms.info["smiles"]))
    if [a.GetAtomicNum() for a in mol.GetAtoms()] != list(atoms.numbers):
        raise ValueError(f"atom order of {atoms.info['smiles']} differs from its SMILES")
    pairs, keys, classes = [], [], []
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        order = b.GetBondTypeAsDouble()
        cls = {1.0: 1 if b.GetIsConjugated() else 0, 1.5: 2, 2.0: 3, 3.0: 4}[order]
        pairs.append((i, j))
        keys.append(tuple(sorted((int(atoms.numbers[i]), int(atoms.numbers[j])))))
        classes.append(cls)
    return np.array(pairs), np.array(keys), np.array(classes)


class SplitCharge:
    """Split-charge equilibration (SQE): charge moves only along bonds, ``q = B p`` (``B`` the
    signed atom–bond incidence), with a bond hardness ``κ_b`` per bond:
    ``α = Rᵀ B (Bᵀ A B + diag κ)⁻¹ Bᵀ R`` (``A`` as in QEq). Nonlocal along the bond network: a
    chain of soft (conjugated) bonds lets charge travel its whole length. Parameters: log J and
    log σ per element, log κ = (element-pair term) + (bond-order class term)."""

    def __init__(self, frames, species: list[int], full_types: bool = False):
        self.species = species
        self.full_types = full_types  # one κ term per (element pair, bond class) instead of a sum
        self.bonds = [self._typed(b) for b in (bonds_of(a) for a in frames)]
        self.pairs = sorted({tuple(k) for _, keys, _ in self.bonds for k in keys})

    def _typed(self, bonds):
        ij, keys, classes = bonds
        if self.full_types:
            keys = np.column_stack([keys, classes])
        return ij, keys, classes

    def bonds_of(self, atoms):
        """:func:`bonds_of`, keyed like the training bonds."""
        return self._typed(bonds_of(atoms))

    def n_params(self) -> int:
        return 2 * len(self.species) + len(self.pairs) + (0 if self.full_types else len(BOND_CLASSES) - 1)

    def start(self) -> np.ndarray:
        k = len(self.species)
        return np.concatenate([np.log(np.full(k, 0.5)), np.log(np.full(k, 1.5)), np.zeros(len(self.pairs)),
                               np.zeros(len(BOND_CLASSES) - 1)])

    def predict(self, frames, params: np.ndarray, bonds=None) -> np.ndarray:
        """Polarizabilities (n_frames, 9) Å³ (``bonds``: :func:`bonds_of` of each frame, else the
        training frames')."""
        from mdplugin.core.units import BOHR

        k, npair = len(self.species), len(self.pairs)
        hard, width = np.exp(params[:k]), np.exp(params[k:2 * k])
        pair_term = dict(zip(self.pairs, params[2 * k:2 * k + npair]))
        class_term = np.concatenate([[0.0], params[2 * k + npair:]]) * (not self.full_types)
        slot = {z: n for n, z in enumerate(self.species)}
        out = np.empty((len(frames), 9))
        for f, atoms in enumerate(frames):
            ij, keys, classes = (bonds or self.bonds)[f]
            r, a = hardness_matrix(atoms, slot, hard, width)
            inc = np.zeros((len(atoms), len(ij)))
            inc[ij[:, 0], np.arange(len(ij))] = 1.0
            inc[ij[:, 1], np.arange(len(ij))] = -1.0
            kappa = np.exp(np.array([pair_term.get(tuple(key), 0.0) for key in keys]) + class_term[classes])
            br = inc.T @ r
            out[f] = (br.T @ np.linalg.solve(inc.T @ a @ inc + np.diag(kappa), br)).reshape(9) * BOHR**3
        return out


def fit_sqe(model: SplitCharge, frames, y: np.ndarray) -> np.ndarray:
    """Least-squares SQE parameters (per-atom residuals of all 9 components)."""
    from scipy.optimize import least_squares

    n_atoms = np.array([len(a) for a in frames], float)[:, None]

    def residual(p):
        return ((model.predict(frames, p) - y) / n_atoms).ravel()

    return least_squares(residual, model.start(), max_nfev=60).x


def fit_qeq(frames, y: np.ndarray, species: list[int]) -> np.ndarray:
    """Least-squares QEq parameters (per-atom residuals of all 9 components)."""
    from scipy.optimize import least_squares

    n_atoms = np.array([len(a) for a in frames], float)[:, None]

    def residual(p):
        return ((qeq_polarizability(frames, species, p) - y) / n_atoms).ravel()

    start = np.concatenate([np.log(np.full(len(species), 0.5)), np.log(np.full(len(species), 1.5))])
    return least_squares(residual, start, x_scale=1.0, max_nfev=200).x


def main(argv=None) -> None:
    from mdplugin.core.units import BOHR
    from mdplugin.models import build
    from mdplugin.structures.data import read_dataset

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--size", type=int, default=1000)
    p.add_argument("--no-lsoap", action="store_true", help="the baselines alone (no λ-SOAP fit)")
    p.add_argument("--full-bond-types", action="store_true",
                   help="SQE bond hardness per (element pair, bond class) instead of pair term + class term")
    args = p.parse_args(argv)
    from benchmarks.qm7like_diagnose import read_labelled

    data = read_dataset(args.data, properties=("polarizability",))
    frames, _ = read_labelled(args.data)  # with their SMILES
    y = data.polarizability.reshape(-1, 9)
    species = sorted({int(z) for a in frames for z in a.numbers})
    test, train_order = split(len(frames))
    train = train_order[:args.size]
    tr_frames, te_frames = [frames[i] for i in train], [frames[i] for i in test]
    n_atoms = np.array([len(a) for a in te_frames], float)
    scale = 1 / BOHR**3
    print(header() + f"; {args.size} training / {N_TEST} test molecules", flush=True)
    t0 = time.process_time()
    params = fit_qeq(tr_frames, y[train], species)
    q_te = qeq_polarizability(te_frames, species, params)
    k = len(species)
    print("# QEq: " + ", ".join(f"{z}: J {np.exp(params[n]):.3f} Eh, σ {np.exp(params[k + n]):.2f} bohr"
                                for n, z in enumerate(species)) + f"; fit {time.process_time() - t0:.0f} s CPU")
    print("| model | polarizability RMSE per atom (bohr³) | λ = 0 part | λ = 2 part | fit CPU s |")
    print("|---|---|---|---|---|")

    def row(label, pred, cpu):
        iso, aniso = isotropic_anisotropic(pred, y[test], n_atoms, scale)
        print(f"| {label} | {per_atom_rmse(pred, y[test], n_atoms, scale):.4f} | {iso:.4f} | {aniso:.4f} | {cpu:.0f} |",
              flush=True)

    row("QEq alone (12 parameters)", q_te, time.process_time() - t0)
    t0 = time.process_time()
    sqe = SplitCharge(tr_frames, species, full_types=args.full_bond_types)
    sp = fit_sqe(sqe, tr_frames, y[train])
    s_tr, s_te = sqe.predict(tr_frames, sp), sqe.predict(te_frames, sp, [sqe.bonds_of(a) for a in te_frames])
    label = "SQE, κ per element pair and bond class" if args.full_bond_types else "SQE"
    row(f"{label} alone ({sqe.n_params()} parameters)", s_te, time.process_time() - t0)
    if args.no_lsoap:
        return
    for label, target, base in (("λ-SOAP on α − α_SQE, + α_SQE", y[train] - s_tr, s_te),):
        model = build("lsoap", target="polarizability")
        t0 = time.process_time()
        model.fit(tr_frames, target)
        row(label, model.predict(te_frames).reshape(-1, 9) + base, time.process_time() - t0)
    print(f"# load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
