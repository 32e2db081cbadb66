"""Does a charge-flow term help the QM7b-like polarizability? A prototype measurement (issue 27, point 4).

GFN2-xTB's finite-field polarizability is mostly charge moving between atoms
(``benchmarks/qm7like_diagnose.py split``: ``α = Σ_i r_i ⊗ ∂q_i/∂F + Σ_i ∂p_i/∂F``). A sum of atomic
tensors (λ-SOAP SA-GPR) describes the second term; the first grows with the distance the charge
moves. This script compares, with the same features, representative environments and solver,

* **local**: ``α = Σ_i α_i`` with ``α_i`` from the λ = 0 and λ = 2 λ-SOAP kernels (SA-GPR) plus a
  per-element isotropic baseline;
* **local + charge flow**: the same plus ``sym Σ_i (r_i − r̄) ⊗ v_i``, where ``v_i`` is an atomic
  vector from the λ = 1 λ-SOAP kernel (the learned ``∂q_i/∂F``) and ``r̄`` the mean atom position
  (so the term is translation invariant and ``Σ v_i = 0`` is implied); it is equivariant under
  rotations and reflections because ``v_i`` is a polar vector.

Both are subset-of-regressors sparse GPRs (``ζ = 2``, features normalised like ``lsoap``)
on the same random representative environments per element, one regulariser per block chosen by
the error on every 5th training molecule (coordinate search on a grid), then refitted on all
training molecules. The training set and the 300 test molecules are those of
``benchmarks/qm7like_curves.py``; errors per atom in bohr³ as there. A prototype, not the
library's ``lsoap`` model (whose own figure at 1000 molecules is 0.173 bohr³ per atom).

Usage:
    python benchmarks/qm7like_chargeflow.py [--size 1000] [--sparse 100] [--targets stored]
        [--check]       # equivariance / translation check of the design on random rotations
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.qm7like_curves import N_TEST, isotropic_anisotropic, per_atom_rmse, split  # noqa: E402
from benchmarks.qm7like_diagnose import header  # noqa: E402

DEFAULT_DATA = Path("/work/data/qm7like/qm7like.xyz")
ZETA = 2


def features(frames, species, chunk: int = 100) -> dict:
    """Normalised λ-SOAP features of every atom of ``frames`` (float32), their frame, species and
    position relative to their frame's mean atom position."""
    from mdplugin.features.expansion import SphericalExpansion
    from mdplugin.features.lambda_soap import lambda_soap
    from mdplugin.learn.lambda_kernels import normalise_rows

    calc = SphericalExpansion(species)
    out = {0: [], 1: [], 2: []}
    for start in range(0, len(frames), chunk):
        exp = calc.compute(list(frames[start:start + chunk]))
        f = lambda_soap(exp, (0, 1, 2))
        sq0 = np.einsum("nij,nij->n", f[0], f[0])
        out[0].append(normalise_rows(f[0][:, 0, :]).astype(np.float32))
        for lam in (1, 2):
            out[lam].append(normalise_rows(f[lam], squared0=sq0).astype(np.float32))
    feats = {lam: np.concatenate(v) for lam, v in out.items()}
    feats["frame"] = np.concatenate([np.full(len(a), k) for k, a in enumerate(frames)])
    feats["species"] = np.concatenate([a.numbers for a in frames])
    feats["rel"] = np.concatenate([a.positions - a.positions.mean(axis=0) for a in frames])
    return feats


def _cartesian_maps() -> tuple[np.ndarray, np.ndarray]:
    """(λ = 0 → 9 Cartesian (1, 9), λ = 2 → 9 Cartesian (5, 9)) maps of a symmetric tensor."""
    from mdplugin.core.tensors import spherical_to_symmetric

    l0 = spherical_to_symmetric(np.ones((1, 1)), np.zeros((1, 5))).reshape(1, 9)
    l2 = spherical_to_symmetric(np.zeros((5, 1)), np.eye(5)).reshape(5, 9)
    return l0, l2


def design(feats: dict, rows: np.ndarray, sparse: dict, n_frames: int, charge_flow: bool) -> dict:
    """Design blocks {name: (n_frames·9, columns)} of the atoms ``rows`` (sorted; their frames
    renumbered 0..n_frames-1 in sorted order)."""
    from scipy.sparse import csr_matrix

    from mdplugin.core.tensors import spherical_to_vector

    l0map, l2map = _cartesian_maps()
    _, frame = np.unique(feats["frame"][rows], return_inverse=True)
    blocks = {"l0": [], "l2": []} | ({"cf": []} if charge_flow else {})
    for s, cols in sparse.items():
        pick = feats["species"][rows] == s
        mine, f_of = rows[pick], frame[pick]
        m = len(cols)
        total = csr_matrix((np.ones(len(mine)), (f_of, np.arange(len(mine)))), shape=(n_frames, len(mine)))
        k0 = feats[0][mine].astype(float) @ feats[0][cols].astype(float).T  # (n, m)
        kz = k0 ** (ZETA - 1)
        acc = {"l0": np.einsum("fm,c->fcm", total @ k0**ZETA, l0map[0]).reshape(n_frames * 9, m)}
        # λ = 2: K[i, μ, M, ν] = x2_i[μ]·x2_M[ν] k0^(ζ-1), Cartesian c = Σ_μ L2[μ, c] K[i, μ, ...]
        k2 = np.einsum("nuf,Mvf->nuMv", feats[2][mine], feats[2][cols]).astype(float) * kz[:, None, :, None]
        k2 = total @ k2.reshape(len(mine), -1)  # (frames, 5·m·5)
        acc["l2"] = np.einsum("fuMv,uc->fcMv", k2.reshape(n_frames, 5, m, 5), l2map).reshape(n_frames * 9, m * 5)
        if charge_flow:
            k1 = np.einsum("nuf,Mvf->nuMv", feats[1][mine], feats[1][cols]).astype(float) * kz[:, None, :, None]
            k1 = spherical_to_vector(np.moveaxis(k1, 1, 3))  # (n, M, v, b) with b Cartesian
            t = np.einsum("na,nMvb->nabMv", feats["rel"][mine], k1)
            t = 0.5 * (t + t.transpose(0, 2, 1, 3, 4))
            acc["cf"] = (total @ t.reshape(len(mine), -1)).reshape(n_frames * 9, m * 3)
        for name in blocks:
            blocks[name].append(acc[name])
    return {name: np.concatenate(v, axis=1) for name, v in blocks.items()}


def design_chunked(feats: dict, frame_ids: np.ndarray, sparse: dict, charge_flow: bool, chunk: int = 100) -> dict:
    """:func:`design` of the sorted frames ``frame_ids``, computed ``chunk`` frames at a time."""
    parts = []
    for start in range(0, len(frame_ids), chunk):
        ids = frame_ids[start:start + chunk]
        parts.append(design(feats, np.flatnonzero(np.isin(feats["frame"], ids)), sparse, len(ids), charge_flow))
    return {b: np.concatenate([p[b] for p in parts]) for b in parts[0]}


def sparse_kernels(feats: dict, sparse: dict, charge_flow: bool) -> dict:
    """Prior covariance K_MM per block (block-diagonal over elements)."""
    from scipy.linalg import block_diag

    mats = {"l0": [], "l2": []} | ({"cf": []} if charge_flow else {})
    for s, cols in sparse.items():
        k0 = feats[0][cols].astype(float) @ feats[0][cols].astype(float).T
        kz = k0 ** (ZETA - 1)
        mats["l0"].append(k0**ZETA)
        for lam, name in ((2, "l2"), (1, "cf")):
            if name in mats:
                x = feats[lam][cols].astype(float)
                k = np.einsum("nmf,Mvf->nmMv", x, x) * kz[:, None, :, None]
                mats[name].append(k.reshape(len(cols) * (2 * lam + 1), -1))
    return {name: block_diag(*v) for name, v in mats.items()}


def composition_block(frames, species) -> np.ndarray:
    """Unpenalised per-element isotropic baseline columns (n_frames·9, n_species)."""
    l0map, _ = _cartesian_maps()
    counts = np.array([[np.sum(a.numbers == s) for s in species] for a in frames], float)
    return (counts[:, None, :] * l0map[0][None, :, None]).reshape(len(frames) * 9, len(species))


def normal_equations(blocks: dict, base: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(D, DᵀD, Dᵀy) with D = [baseline | blocks...]."""
    d = np.concatenate([base] + list(blocks.values()), axis=1)
    return d, d.T @ d, d.T @ y


def solve(gram: np.ndarray, rhs: np.ndarray, kmm: dict, regs: dict, n_base: int) -> np.ndarray:
    """Weights of ``min |D w − y|² + Σ_b reg_b w_bᵀ K_b w_b`` (baseline columns nearly free)."""
    from scipy.linalg import block_diag, cho_factor, cho_solve

    a = gram + block_diag(1e-8 * np.eye(n_base), *[regs[b] * kmm[b] for b in kmm])
    a[np.diag_indices_from(a)] += 1e-10 * np.trace(a) / len(a)
    return cho_solve(cho_factor(a), rhs)


def fit_predict(feats, frames, species, train, test, y, charge_flow: bool, n_sparse: int, seed: int = 0):
    """Choose the regularisers on every 5th training molecule, refit on all, predict ``test``."""
    rng = np.random.default_rng(seed)
    train_rows = np.flatnonzero(np.isin(feats["frame"], train))
    sparse = {}
    for s in species:
        cand = train_rows[feats["species"][train_rows] == s]
        sparse[s] = np.sort(rng.choice(cand, size=min(n_sparse, len(cand)), replace=False))
    kmm = sparse_kernels(feats, sparse, charge_flow)

    def blocks_of(frame_ids):
        return design_chunked(feats, frame_ids, sparse, charge_flow)

    held = np.sort(train)[::5]
    fit_ids = np.setdiff1d(train, held)
    b_fit, b_held = blocks_of(np.sort(fit_ids)), blocks_of(held)
    base_fit = composition_block([frames[i] for i in np.sort(fit_ids)], species)
    base_held = composition_block([frames[i] for i in held], species)
    y_fit, y_held = y[np.sort(fit_ids)].reshape(-1), y[held].reshape(-1)
    scale = {b: np.trace(b_fit[b].T @ b_fit[b]) / np.trace(kmm[b]) for b in b_fit}
    grid = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    regs = {b: 1e-3 * scale[b] for b in b_fit}

    _, gram, rhs = normal_equations(b_fit, base_fit, y_fit)
    d_held = np.concatenate([base_held] + list(b_held.values()), axis=1)
    nb = base_fit.shape[1]

    def held_error(r):
        w = solve(gram, rhs, kmm, r, nb)
        return float(np.sqrt(np.mean((d_held @ w - y_held) ** 2)))

    best = held_error(regs)
    for _ in range(2):
        for b in b_fit:
            for g in grid:
                trial = dict(regs, **{b: g * scale[b]})
                err = held_error(trial)
                if err < best:
                    best, regs = err, trial
    b_all, b_test = blocks_of(np.sort(train)), blocks_of(np.sort(test))
    _, gram, rhs = normal_equations(b_all, composition_block([frames[i] for i in np.sort(train)], species),
                                    y[np.sort(train)].reshape(-1))
    w = solve(gram, rhs, kmm, regs, nb)
    d = np.concatenate([composition_block([frames[i] for i in np.sort(test)], species)] + [b_test[b] for b in b_test], axis=1)
    pred = (d @ w).reshape(len(test), 9)
    order = np.argsort(np.argsort(test))  # back to the order of ``test``
    return pred[order], {b: regs[b] / scale[b] for b in regs}


def check(feats_fn, frames, species) -> None:
    """Design of a rotated/reflected, translated molecule = rotated design (equivariance)."""
    from mdplugin.core.tensors import random_rotation

    atoms = frames[0]
    rot = random_rotation(np.random.default_rng(3), reflection=True)
    moved = atoms.copy()
    moved.positions = atoms.positions @ rot.T + np.array([1.0, -2.0, 0.5])
    f = feats_fn([atoms, moved], species)
    sparse = {s: np.flatnonzero(f["species"] == s)[:2] for s in species if np.any(f["species"] == s)}
    for rows, name in ((np.flatnonzero(f["frame"] == 0), "original"), (np.flatnonzero(f["frame"] == 1), "moved")):
        d = design(f, rows, {s: c for s, c in sparse.items() if np.all(f["frame"][c] == 0)}, 1, True)
        if name == "original":
            ref = d
        else:
            for b in d:
                want = np.einsum("ij,jkc,lk->ilc", rot, ref[b].reshape(3, 3, -1), rot).reshape(9, -1)
                print(f"# {b}: max |D(R x) − R D(x) Rᵀ| = {np.abs(d[b] - want).max():.1e} (max |D| {np.abs(want).max():.1e})")


def main(argv=None) -> None:
    from mdplugin.core.units import BOHR
    from mdplugin.structures.data import read_dataset

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--size", type=int, default=1000)
    p.add_argument("--sparse", type=int, default=100, help="representative environments per element")
    p.add_argument("--check", action="store_true")
    args = p.parse_args(argv)
    data = read_dataset(args.data, properties=("polarizability",))
    frames = data.frames
    species = sorted({int(z) for a in frames for z in a.numbers})
    if args.check:
        check(features, frames, species)
        return
    test, train_order = split(len(frames))
    train = train_order[:args.size]
    used = np.sort(np.concatenate([test, train]))
    start = time.process_time()
    feats = features([frames[i] for i in used], species)
    remap = {g: k for k, g in enumerate(used)}
    local_frames = [frames[i] for i in used]
    tr, te = np.array([remap[i] for i in train]), np.array([remap[i] for i in test])
    y = data.polarizability.reshape(-1, 9)[used]
    n_atoms = np.array([len(frames[i]) for i in test], float)
    print(header() + f"; {args.size} training / {N_TEST} test molecules; {args.sparse} environments per element; "
          f"features {time.process_time() - start:.0f} s CPU", flush=True)
    print("| model | polarizability RMSE per atom (bohr³) | λ = 0 part | λ = 2 part | regularisers | fit CPU s |")
    print("|---|---|---|---|---|---|")
    for cf in (False, True):
        t0 = time.process_time()
        pred, regs = fit_predict(feats, local_frames, species, tr, te, y, cf, args.sparse)
        rmse = per_atom_rmse(pred, y[te], n_atoms, 1 / BOHR**3)
        iso, aniso = isotropic_anisotropic(pred, y[te], n_atoms, 1 / BOHR**3)
        label = "local + charge flow" if cf else "local (SA-GPR)"
        print(f"| {label} | {rmse:.4f} | {iso:.4f} | {aniso:.4f} | "
              f"{', '.join(f'{b} {v:.0e}' for b, v in regs.items())} | {time.process_time() - t0:.0f} |", flush=True)
    print(f"# load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
