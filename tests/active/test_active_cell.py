"""Active learning on a periodic cell, with real GFN2-xTB (tblite) on a box of 4 water molecules:
the exploring run's dynamics, candidates and labels stay in the start structure's cell, so every
labelled frame carries the cell and the labels are those of the periodic box (the loop before
dropped the cell: the box's molecules were labelled as a cluster in vacuum)."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest

from mdplugin.active import ActiveConfig, run_active
from mdplugin.oracles.label import label_frames, make_oracle
from mdplugin.structures.data import read_dataset

from ..oracles.test_cell import small_box

HYPERS = {"energy": {"n_sparse": 30, "max_radial": 3, "max_angular": 2, "cutoff": 3.5},
          "dipole": {"n_sparse": 30, "max_radial": 3, "max_angular": 2, "cutoff": 3.5}}


@pytest.mark.slow
def test_exploring_run_on_a_water_cell_labels_the_periodic_box(tmp_path):
    pytest.importorskip("tblite")
    box = small_box(4, seed=3)  # 12 atoms in a 4.9 Å cube
    cfg = ActiveConfig(targets=("energy", "dipole"), temperature=300.0, steps=80, max_calls=2, n_initial=3,
                       initial_stride=5, segment=20, sample_every=5, pool=20, seed=0, hypers=HYPERS,
                       thresholds={"energy": 1e-6, "dipole": 1e-6})  # label one structure per segment
    summary = run_active(box, tmp_path / "run", cfg, oracle="tblite", say=lambda m: None)
    assert summary.oracle_calls == 2
    data = read_dataset(tmp_path / "run" / "data.xyz", properties=["energy", "forces", "dipole"])
    assert len(data) == 5
    for a in data.frames:  # the reference run's frames and the ML dynamics' ones
        assert a.pbc.all() and np.allclose(a.cell.array, box.cell.array)
    # the labels are the periodic box's (GFN2-xTB on the cell, the molecular dipole convention) ...
    fresh = label_frames(data.frames, make_oracle("tblite"), ["energy", "forces", "dipole"])
    assert np.allclose(fresh.energy, data.energy, atol=1e-6)
    assert np.allclose(fresh.forces, data.forces, atol=1e-5)
    assert np.allclose(fresh.dipole, data.dipole, atol=1e-6)
    # ... not those of the same atoms as a cluster in vacuum (what the loop labelled before)
    vacuum = [a.copy() for a in data.frames]
    for a in vacuum:
        a.pbc, a.cell = False, np.zeros((3, 3))
    gas = label_frames(vacuum, make_oracle("tblite"), ["energy"])
    assert np.mean(np.abs(gas.energy - data.energy)) > 0.05  # eV: molecules cut off from their images
    # the ML dynamics moved the atoms: the labelled MD frames are new structures of the same cell
    md = [a for a in ase.io.read(tmp_path / "run" / "data.xyz", ":") if a.info.get("active_origin") == "md"]
    assert len(md) == 2
    assert all(np.abs(a.positions - box.positions).max() > 0.05 for a in md)
