"""Model files written before the new expansion engine still load and predict what they predicted.

``tests/data/old_models`` holds energy, dipole and polarizability models written at commit 7ae9193
(featomic's native ``Gto`` expansion computed every feature; ``make_old_models.py`` there says how),
for 1,2-dichloroethane and for periodic water boxes, with their predictions on other structures. The
engine maps their ``Gto`` hypers onto featomic's spline of the same radial integral: the predictions
agree to ~1e-7 relative (the spline's accuracy), far below any model's error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.io import read

from mdplugin.models.base import load_model

OLD = Path(__file__).resolve().parents[1] / "data" / "old_models"
TRAJ = Path(__file__).resolve().parents[2] / "examples" / "trajectories"
RTOL = 1e-7


def relative_error(new, old) -> float:
    return float(np.abs(np.asarray(new) - old).max() / np.abs(old).max())


@pytest.fixture(scope="module")
def predictions():
    with np.load(OLD / "predictions.npz") as data:
        return dict(data)


@pytest.mark.parametrize("name", ["dce_energy", "water_energy"])
def test_old_energy_models_predict_energies_and_forces_as_before(name, predictions):
    model = load_model(OLD / f"{name}.npz")
    frames = read(TRAJ / "dce_test.xyz", ":4") if name.startswith("dce") else read(OLD / "water_test.xyz", ":")
    energy = model.predict(frames)
    # energies: relative to the spread of the per-structure energies, not their (large) mean
    old = predictions[f"{name}/energy"]
    assert np.abs(energy - old).max() <= RTOL * max(np.abs(old - old.mean()).max(), 1e-3 * len(frames[0]))
    assert relative_error(np.concatenate(model.predict_forces(frames)), predictions[f"{name}/forces"]) <= RTOL


@pytest.mark.parametrize("name", ["dce_dipole", "dce_polarizability", "water_dipole"])
def test_old_tensor_models_predict_as_before(name, predictions):
    model = load_model(OLD / f"{name}.npz")
    frames = read(TRAJ / "dce_test.xyz", ":4") if name.startswith("dce") else read(OLD / "water_test.xyz", ":")
    target = name.split("_")[1]
    y, std = model.predict(frames, return_std=True)
    assert relative_error(y, predictions[f"{name}/{target}"]) <= RTOL
    assert relative_error(std, predictions[f"{name}/{target}_std"]) <= 1e-5  # a difference of close numbers
