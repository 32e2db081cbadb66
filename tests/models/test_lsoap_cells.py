"""A λ-SOAP dipole model of periodic boxes predicts a sum of local contributions: its cell dipole
does not depend on the origin or on wrapping, and it stays continuous when a molecule crosses the
cell wall (labels: the molecular convention with point charges, no QM needed)."""

from __future__ import annotations

import numpy as np

from mdplugin.models import build
from mdplugin.structures.molecules import molecular_dipole

from ..structures.test_molecules import charges, water_box

SMALL = dict(cutoff=3.0, max_radial=3, max_angular=2, n_sparse=40, n_components=30)


def test_predicted_cell_dipole_is_continuous_across_the_wall() -> None:
    frames = [water_box(seed=s, noise=0.08) for s in range(12)]
    model = build("lsoap", target="dipole", **SMALL)
    model.fit(frames, np.array([molecular_dipole(a, charges(a)) for a in frames]))

    atoms = water_box(seed=20, noise=0.08)
    atoms.wrap()
    start = atoms.cell[0, 0] - atoms.positions[:3, 0].max() - 0.2
    path = []
    for step in start + np.linspace(0.0, 0.4, 9):  # molecule 0 crosses the +x wall
        frame = atoms.copy()
        frame.positions[:3, 0] += step
        frame.wrap()
        path.append(frame)
    predicted = model.predict(path)
    steps = np.linalg.norm(np.diff(predicted, axis=0), axis=1)
    assert steps.max() < 0.05  # e·Å for 0.05 Å steps: nothing jumps at the wall
    unwrapped = [a.copy() for a in path]
    for a, b in zip(unwrapped, path):
        a.positions = b.positions + 0.5 * b.cell.sum(axis=0)  # origin moved, atoms not wrapped
    np.testing.assert_allclose(model.predict(unwrapped), predicted, atol=1e-8)
