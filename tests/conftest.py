"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "trajectories"

#: environment variable naming the folder of the optional reference data (tensoap-water/, water-box/)
REFERENCE_DATA_ENV = "MDPLUGIN_REFERENCE_DATA"


def _reference_data() -> Path:
    """The reference data folder: ``$MDPLUGIN_REFERENCE_DATA``, else a ``shared/data`` folder beside
    the checkout or one of its parents (where the project keeps it)."""
    if os.environ.get(REFERENCE_DATA_ENV):
        return Path(os.environ[REFERENCE_DATA_ENV])
    for parent in REPO.parents:
        if (parent / "shared" / "data" / "tensoap-water").is_dir():
            return parent / "shared" / "data"
    return REPO.parent / "shared" / "data"


SHARED_DATA = _reference_data()

#: the reason given when the reference data are absent (what they are and how to point to them)
NO_REFERENCE_DATA = (f"optional reference data (tensoap-water/, water-box/) not found; set {REFERENCE_DATA_ENV} "
                     f"to their folder to run this test")


@pytest.fixture
def shared_data() -> Path:
    """The read-only reference data (tensoap-water/, water-box/); the test is skipped when absent."""
    if not (SHARED_DATA / "tensoap-water").is_dir():
        pytest.skip(NO_REFERENCE_DATA)
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
