"""Central finite differences of a model's energy, the reference the analytic forces are tested against."""

from __future__ import annotations

import numpy as np
from ase import Atoms


def model_fd_forces(model, atoms: Atoms, h: float) -> np.ndarray:
    """Forces (n_atoms, 3) eV/Å as −(E(x + h) − E(x − h)) / 2h of ``model.predict`` (eV), h in Å."""
    out = np.zeros((len(atoms), 3))
    for i in range(len(atoms)):
        for x in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[i, x] += h
            minus.positions[i, x] -= h
            out[i, x] = -(model.predict([plus])[0] - model.predict([minus])[0]) / (2 * h)
    return out
