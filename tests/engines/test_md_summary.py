"""The ``mdplugin md`` summary counts the whole run: its wall time includes frame 0 (the first
evaluation, often the most expensive one: caches, the first uncertainty)."""

from __future__ import annotations

import time

from ase.build import bulk
from ase.calculators.emt import EMT

from mdplugin.engines.md import run_md

DELAY = 0.3


class SlowEMT(EMT):
    """ASE's EMT, ``DELAY`` s slower per evaluation."""

    def calculate(self, *args, **kwargs):
        time.sleep(DELAY)
        super().calculate(*args, **kwargs)


def test_wall_time_includes_frame_zero(tmp_path) -> None:
    calc = SlowEMT()
    atoms = bulk("Cu", cubic=True)
    summary = run_md(atoms, calc, steps=2, dt_fs=1.0, output=tmp_path / "t.xyz", thermostat="none",
                     progress=False)
    # three evaluations: frame 0, then one per step (velocity Verlet reuses the forces of the last)
    assert summary.frames == 3
    assert summary.wall_time_s >= 3 * DELAY * 0.95
    assert summary.steps_per_s <= 2 / (3 * DELAY * 0.95)
