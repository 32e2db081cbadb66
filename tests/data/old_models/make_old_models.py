#!/usr/bin/env python
"""Write the model files of tests/models/test_old_model_files.py with the code of an older commit.

Run from a checkout of that commit (the files here were written at 7ae9193, when featomic's native
``Gto`` expansion computed every feature)::

    PYTHONPATH=/path/to/old/checkout python tests/data/old_models/make_old_models.py tests/data/old_models

It trains small energy (soap), dipole and polarizability (lsoap) models on 1,2-dichloroethane and on
periodic water boxes, saves them, and stores their predictions (energies, forces, dipoles,
polarizabilities) on other structures in ``predictions.npz``: the new engine must reproduce them.
"""

import sys
from pathlib import Path

import numpy as np
from ase.calculators.tip3p import TIP3P
from ase.io import read

import mdplugin
from mdplugin.models.base import build

HERE = Path(sys.argv[1])
REPO = Path(__file__).resolve().parents[3]
dce = read(REPO / "examples" / "trajectories" / "dce_train.xyz", ":60")
dce_test = read(REPO / "examples" / "trajectories" / "dce_test.xyz", ":4")
box = read(REPO.parent / "shared" / "data" / "water-box" / "water32_tip3p_300K.xyz", 0)
rng = np.random.default_rng(0)
boxes = []
for k in range(14):
    b = box.copy()
    b.positions += rng.normal(scale=0.05, size=b.positions.shape)
    b.calc = TIP3P(rc=4.5)
    b.info["energy"] = b.get_potential_energy()
    b.arrays["forces"] = b.get_forces()
    charges = np.where(b.numbers == 8, -0.834, 0.417)
    b.info["dipole"] = charges @ b.positions
    b.calc = None
    boxes.append(b)
train_w, test_w = boxes[:10], boxes[10:]

out = {}
small = dict(n_sparse=30)
# the energy models with the soap defaults of that time; the λ-SOAP ones with a smaller basis than
# their defaults (4.5 Å, max_radial 6, max_angular 4), to keep the files small
tensor = dict(cutoff=4.0, max_radial=3, max_angular=3, n_sparse=15, n_sparse_l0=30, n_components=12)
specs = {
    "dce_energy": ("soap", dict(target="energy", **small), dce, "energy"),
    "dce_dipole": ("lsoap", dict(target="dipole", **tensor), dce, "dipole"),
    "dce_polarizability": ("lsoap", dict(target="polarizability", **tensor), dce, "polarizability"),
    "water_energy": ("soap", dict(target="energy", **small), train_w, "energy"),
    "water_dipole": ("lsoap", dict(target="dipole", **tensor), train_w, "dipole"),
}
for name, (kind, hypers, frames, target) in specs.items():
    model = build(kind, **hypers)
    if target == "energy":
        model.fit(frames, [a.get_potential_energy() if a.calc else a.info["energy"] for a in frames],
                  forces=[a.get_forces() if a.calc else a.arrays["forces"] for a in frames])
    elif target == "dipole":
        model.fit(frames, np.array([a.calc.results["dipole"] if a.calc else a.info["dipole"] for a in frames]))
    else:
        model.fit(frames, np.array([a.calc.results["polarizability"].reshape(3, 3) if "polarizability" in a.calc.results
                                    else a.info["polarizability"] for a in frames]))
    model.save(HERE / f"{name}.npz")
    test = dce_test if name.startswith("dce") else test_w
    if target == "energy":
        out[f"{name}/energy"] = model.predict(test)
        out[f"{name}/forces"] = np.concatenate(model.predict_forces(test))
    else:
        y, std = model.predict(test, return_std=True)
        out[f"{name}/{target}"] = y
        out[f"{name}/{target}_std"] = std
np.savez(HERE / "predictions.npz", **out)
from ase.io import write
write(HERE / "water_test.xyz", [b.copy() for b in test_w])
print("written with mdplugin", mdplugin.__file__)
