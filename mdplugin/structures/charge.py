"""The total charge of a structure: the ``charge`` key of a frame (extended XYZ ``info``), in e.

A structure's charge is a whole number of electrons taken away (``+1``: NH4⁺, ``-1``: Cl⁻); it
defaults to 0. The oracles (tblite ``charge=``, PySCF ``mol.charge``) and the models that use it
(the ``lode`` model's atomic charges sum to it) read it with :func:`frame_charge`, which refuses
anything that is not an integer with one line naming the structure.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms

from ..core.errors import DataError

__all__ = ["frame_charge", "frame_charges"]


def frame_charge(atoms: Atoms, where: str = "frame") -> int:
    """The total charge (e) of ``atoms`` from ``atoms.info["charge"]`` (default 0).

    A value that is not a whole number (``0.5``, ``"one"``, ``nan``) is a :class:`DataError`
    naming ``where``; ``1.0`` and ``"1"`` are accepted as 1. A charge that leaves fewer than zero
    electrons is refused too.
    """
    raw = (getattr(atoms, "info", None) or {}).get("charge", 0)
    try:
        value = float(np.asarray(raw, dtype=float).reshape(()))
    except (TypeError, ValueError):
        raise DataError(f"{where}: charge {raw!r} is not an integer") from None
    if not np.isfinite(value) or value != round(value):
        shown = raw if isinstance(raw, str) else f"{value:g}"
        raise DataError(f"{where}: charge {shown} is not an integer (a total charge is a whole number of e)")
    charge = int(round(value))
    if charge > int(np.sum(atoms.numbers)):
        raise DataError(f"{where}: charge {charge} leaves {int(np.sum(atoms.numbers)) - charge} electrons "
                        f"in {atoms.get_chemical_formula()}")
    return charge


def frame_charges(frames: Sequence[Atoms], where: str = "frame") -> np.ndarray:
    """(n_frames,) int: :func:`frame_charge` of every frame (errors name ``where`` and the index)."""
    return np.array([frame_charge(a, f"{where} {i}") for i, a in enumerate(frames)], dtype=int)
