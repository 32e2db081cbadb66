"""What every model takes and gives: :class:`Targets` (training labels) and :class:`Prediction`.

* ``model.fit(frames, targets, *, comm=None)``: ``targets`` is a :class:`Targets`, a mapping with
  the same keys (``{"energy": e, "forces": f}``), or, for convenience, a bare array taken as the
  model's own target (``model.fit(frames, dipoles)``). :meth:`Targets.coerce` does that turn.
* ``model.predict_from_features(features, ...)`` returns a :class:`Prediction`, whatever the model.

Units are ASE's (eV, Å, e·Å, Å³); shapes are given per field.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

import numpy as np

from ..core.errors import DataError

__all__ = ["Prediction", "Targets"]


@dataclass
class Targets:
    """Training labels of ``n`` structures; every field optional (a model reads what it learns).

    Attributes
    ----------
    energy : (n,) eV.
    forces : list of n arrays (n_atoms_i, 3), eV/Å.
    dipole : (n, 3) e·Å.
    polarizability : (n, 3, 3) Å³ (or (n, 9) row-major).
    stress : (n, 3, 3) eV/Å³ (room for the periodic energy models; no model reads it yet).
    hamiltonian : a :class:`~mdplugin.structures.hamiltonians.HamiltonianSet` (AO Fock and overlap
        matrices per structure, eV), what the ``hamiltonian`` model learns.
    """

    energy: Any = None
    forces: Any = None
    dipole: Any = None
    polarizability: Any = None
    stress: Any = None
    hamiltonian: Any = None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def coerce(cls, targets: "Targets | Mapping[str, Any] | Any", target: str) -> "Targets":
        """``targets`` as :class:`Targets`, checked to hold labels of ``target`` (the model's own).

        A mapping's keys must be field names (an unknown key is a :class:`DataError` naming it and
        the valid ones); anything else is taken as the labels of ``target`` itself.
        """
        if isinstance(targets, cls):
            out = targets
        elif isinstance(targets, Mapping):
            unknown = sorted(set(targets) - set(cls.names()))
            if unknown:
                raise DataError(f"unknown target key(s) {', '.join(map(repr, unknown))} "
                                f"(valid: {', '.join(cls.names())})")
            out = cls(**targets)
        else:
            if target not in cls.names():
                raise DataError(f"unknown target {target!r} (valid: {', '.join(cls.names())})")
            out = cls(**{target: targets})
        if getattr(out, target, None) is None:
            given = [name for name in cls.names() if getattr(out, name) is not None]
            raise DataError(f"no {target!r} labels among the targets (given: {', '.join(given) or 'none'})")
        return out


@dataclass
class Prediction:
    """A model's prediction for ``n_frames`` structures from their features.

    Attributes
    ----------
    target : ``"energy"``, ``"dipole"`` or ``"polarizability"``.
    values : energy (n_frames,) eV, dipole (n_frames, 3) e·Å or polarizability (n_frames, 3, 3) Å³.
    std : the model's standard deviation, same shape and units as ``values``, or ``None`` (not asked).
    forces : energy models, when asked: (n_atoms, 3) eV/Å for the atoms of all frames in order
        (the features' centre order); ``None`` otherwise.
    stress : energy models of periodic cells, when asked: (n_frames, 3, 3) eV/Å³; ``None`` otherwise.
    extras : further per-frame results a model derives with the target, by name (the
        ``hamiltonian`` model: ``orbital_energies`` list of (n_ao,) eV, ``gap`` (n_frames,) eV).
    """

    target: str
    values: np.ndarray
    std: np.ndarray | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(np.shape(self.values)[0])
