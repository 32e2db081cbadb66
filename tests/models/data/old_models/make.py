"""Write the model files of this folder with an OLD mdplugin (the one on ``PYTHONPATH``), and the
predictions that mdplugin made with them, so that tests/models/test_contract.py can check that
model files written before the model contract (issue 22) still load and predict the same.

Run (once, with the commit before the contract checked out in OLD)::

    PYTHONPATH=OLD python tests/models/data/old_models/make.py

The files here were written by commit 7ae9193 (mdplugin 0.1.0, 7 Dec 2026).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from ase import Atoms

HERE = Path(__file__).resolve().parent


def dichloroethane(seed: int, noise: float = 0.08) -> Atoms:
    pos = np.array([
        [0.000, 0.000, 0.760], [0.000, 0.000, -0.760],
        [0.000, 1.780, 1.290], [0.000, -1.780, -1.290],
        [0.890, -0.510, 1.130], [-0.890, -0.510, 1.130],
        [0.890, 0.510, -1.130], [-0.890, 0.510, -1.130],
    ])
    atoms = Atoms("C2Cl2H4", positions=pos)
    atoms.positions += np.random.default_rng(seed).normal(scale=noise, size=pos.shape)
    return atoms


def labels(atoms: Atoms) -> dict:
    """Smooth analytic labels: pair-potential energy and forces, point-charge dipole, bond polarizability."""
    pos, z = atoms.positions, atoms.numbers.astype(float)
    d = pos[:, None, :] - pos[None, :, :]
    r = np.linalg.norm(d, axis=-1)
    np.fill_diagonal(r, np.inf)
    e_pair = np.outer(z, z) / 100.0 * np.exp(-r / 0.8)
    forces = -((-(e_pair / 0.8) / r)[:, :, None] * d).sum(axis=1)
    q = np.select([atoms.numbers == 1, atoms.numbers == 6], [0.1, 0.0], -0.2)
    q = q - q.mean()
    alpha = 0.5 * len(atoms) * np.eye(3)
    for i, j in zip(*np.triu_indices(len(atoms), 1)):
        u = d[i, j] / r[i, j]
        alpha += np.exp(-((r[i, j] / 1.5) ** 2)) * (np.eye(3) + 2.0 * np.outer(u, u))
    return {"energy": 0.5 * e_pair[np.isfinite(e_pair)].sum(), "forces": forces, "dipole": q @ pos,
            "polarizability": alpha}


TRAIN = [dichloroethane(i) for i in range(24)]
CHECK = [dichloroethane(1000 + i) for i in range(3)]
SMALL = {"soap": dict(n_sparse=8, cutoff=3.5, max_radial=3, max_angular=2),
         "lsoap": dict(n_sparse=6, n_sparse_l0=8, n_components=8, cutoff=3.5, max_radial=3, max_angular=2),
         "rpr": {}}
CASES = [("soap", "energy"), ("lsoap", "dipole"), ("lsoap", "polarizability"), ("rpr", "dipole"),
         ("rpr", "polarizability")]


def main() -> None:
    import mdplugin
    from mdplugin.models import build

    y = [labels(a) for a in TRAIN]
    expected = {"mdplugin_version": mdplugin.__version__,
                "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                         cwd=Path(mdplugin.__file__).parent).stdout.strip()}
    for kind, target in CASES:
        model = build(kind, target=target, **SMALL[kind])
        if target == "energy":
            model.fit(TRAIN, [t["energy"] for t in y], forces=[t["forces"] for t in y])
        else:
            model.fit(TRAIN, np.array([t[target] for t in y]))
        model.save(HERE / f"{kind}-{target}.npz")
        values, std = model.predict(CHECK, return_std=True)
        expected[f"{kind}-{target}"] = {"values": np.asarray(values).tolist(), "std": np.asarray(std).tolist()}
        if target == "energy":
            expected[f"{kind}-{target}"]["forces"] = np.concatenate(model.predict_forces(CHECK)).tolist()
    (HERE / "expected.json").write_text(json.dumps(expected))
    print("wrote", sorted(p.name for p in HERE.glob("*.npz")), file=sys.stderr)


if __name__ == "__main__":
    main()
