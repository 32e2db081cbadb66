"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
EXAMPLES = REPO / "examples" / "trajectories"


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (read-only reference data); the test is skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not available")
    return SHARED_DATA


@pytest.fixture
def examples_dir() -> Path:
    """examples/trajectories (the project's own labelled data)."""
    if not (EXAMPLES / "dce_train.xyz").exists():
        pytest.skip("examples/trajectories/dce_train.xyz not generated yet")
    return EXAMPLES


def dichloroethane(rng=None, noise: float = 0.0) -> Atoms:
    """An anti 1,2-dichloroethane molecule (C2H4Cl2), optionally with random displacements (Å)."""
    pos = np.array([
        [0.000, 0.000, 0.760], [0.000, 0.000, -0.760],
        [0.000, 1.780, 1.290], [0.000, -1.780, -1.290],
        [0.890, -0.510, 1.130], [-0.890, -0.510, 1.130],
        [0.890, 0.510, -1.130], [-0.890, 0.510, -1.130],
    ])
    atoms = Atoms("C2Cl2H4", positions=pos)
    if noise:
        atoms.positions += np.random.default_rng(rng).normal(scale=noise, size=pos.shape)
    return atoms
