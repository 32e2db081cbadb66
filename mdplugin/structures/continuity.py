"""Checks that the dipole of a periodic cell is continuous along a trajectory.

The dipole of a cell is defined only up to a *polarization quantum* ``e × (cell vector)``
(Berry-phase codes print it modulo that quantum), and a point-charge dipole of wrapped atoms
changes by ``q_i × (cell vector)`` whenever atom ``i`` crosses the wall. Either way the series
jumps, and its time derivative (the polarization current the IR spectrum is made of) gets a spike
that is not physics. The package's convention (the sum of whole molecules' dipoles about their own
centres, :mod:`mdplugin.structures.molecules`, docs/condensed.md) has no such jumps.

:func:`dipole_jumps` finds them between *neighbouring* frames: the same atoms in (nearly) the same
cell, no atom displaced by more than :data:`NEIGHBOUR_DISPLACEMENT` (minimum image). Between such
frames a continuous dipole changes by far less than a quarter of a quantum along any cell vector
(:data:`JUMP_FRACTION`); frames that are not neighbours (independent snapshots) are not compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ase import Atoms

from ..core.errors import DataError

__all__ = ["JUMP_FRACTION", "NEIGHBOUR_DISPLACEMENT", "Jump", "dipole_jumps", "check_dipole_continuity"]

#: frames whose atoms all moved less than this (Å, minimum image) are neighbours in time
NEIGHBOUR_DISPLACEMENT: float = 1.0
#: a change of at least this fraction of e·(cell vector) between neighbouring frames is a jump
JUMP_FRACTION: float = 0.25
#: cells of neighbouring frames differ by less than this (relative)
CELL_TOLERANCE: float = 0.05


@dataclass(frozen=True)
class Jump:
    """A jump of the dipole between frames ``frame`` and ``frame + 1``.

    ``quanta`` (3,): the change in units of ``e × (cell vector a, b, c)``; ``change`` (3,) the
    change in e·Å; ``displacement``: the largest atomic displacement between the frames (Å)."""

    frame: int
    quanta: np.ndarray
    change: np.ndarray
    displacement: float

    def describe(self) -> str:
        whole = np.round(self.quanta)
        if np.any(whole) and np.all(np.abs(self.quanta - whole) < 0.1):
            what = f"{_vector(whole, '{:+.0f}')} polarization quanta e·(a, b, c)"
        else:
            what = f"{_vector(self.quanta, '{:+.2f}')} e·(a, b, c) (an atom's charge times a cell vector?)"
        return (f"frames {self.frame} and {self.frame + 1}: the dipole jumps by {what}, ΔM = "
                f"{_vector(self.change, '{:.3g}')} e·Å, while no atom moves more than {self.displacement:.2f} Å")


def _vector(v, fmt: str) -> str:
    return "(" + ", ".join(fmt.format(float(x)) for x in v) + ")"


def dipole_jumps(frames: Sequence[Atoms], dipoles: np.ndarray) -> list[Jump]:
    """Jumps of ``dipoles`` (n_frames, 3) e·Å between neighbouring periodic frames, in order."""
    dipoles = np.asarray(dipoles, dtype=float).reshape(len(frames), 3)
    jumps = []
    for k in range(len(frames) - 1):
        a, b = frames[k], frames[k + 1]
        if not (a.pbc.all() and b.pbc.all()) or len(a) != len(b) or not np.array_equal(a.numbers, b.numbers):
            continue
        cell = a.cell.array
        if abs(np.linalg.det(cell)) < 1e-12:
            continue
        if np.abs(b.cell.array - cell).max() > CELL_TOLERANCE * np.abs(cell).max():
            continue
        inverse = np.linalg.inv(cell)
        step = (b.positions - a.positions) @ inverse
        step -= np.round(step)
        displacement = float(np.linalg.norm(step @ cell, axis=1).max()) if len(a) else 0.0
        if displacement > NEIGHBOUR_DISPLACEMENT:
            continue
        change = dipoles[k + 1] - dipoles[k]
        quanta = change @ inverse  # change = quanta @ cell, with e = 1
        if np.abs(quanta).max() >= JUMP_FRACTION:
            jumps.append(Jump(frame=k, quanta=quanta, change=change, displacement=displacement))
    return jumps


def check_dipole_continuity(frames: Sequence[Atoms], dipoles: np.ndarray, source: str) -> None:
    """A one-line :class:`DataError` naming the first jump of a periodic dipole series (and how
    many there are), saying what the convention needs; nothing when there is none."""
    jumps = dipole_jumps(frames, dipoles)
    if not jumps:
        return
    more = f" ({len(jumps)} such jumps in all)" if len(jumps) > 1 else ""
    raise DataError(
        f"{source}: {jumps[0].describe()}{more}: the dipole of a periodic cell must be continuous in time, e.g. "
        f"the sum of whole molecules' dipoles about their own centres as `mdplugin label` writes it "
        f"(docs/condensed.md); relabel the frames, or add back the lost quanta")
