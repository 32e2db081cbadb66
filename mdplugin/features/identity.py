"""The identity featurizer: the features of a structure are the structure itself.

For models that compute their own descriptors from the positions (a model registered with
:func:`mdplugin.models.register` that implements only ``predict(frames)``), so that the ASE
calculator hands every model its features the same way. All :class:`Identity` featurizers are
equal: the models using one share a single :class:`Structures` per MD step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ase import Atoms

from ..core.errors import DataError

__all__ = ["Identity", "Structures"]


@dataclass(frozen=True)
class Structures:
    """The structures themselves (as given: never modify them), in order."""

    frames: tuple

    @property
    def n_frames(self) -> int:
        return len(self.frames)


class Identity:
    """Featurizer whose :meth:`compute` returns the structures (no position gradients: a model
    using it computes its forces itself)."""

    def compute(self, frames: Sequence[Atoms] | Atoms, gradients: bool = False) -> Structures:
        frames = [frames] if isinstance(frames, Atoms) else list(frames)
        if not frames:
            raise DataError("no frames to compute features for")
        return Structures(tuple(frames))

    def features(self, frames: Sequence[Atoms] | Atoms, gradients: bool = False) -> Structures:
        """The features the models of an MD step share: :meth:`compute`'s (the featurizer protocol)."""
        return self.compute(frames, gradients=gradients)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity)

    def __hash__(self) -> int:
        return hash(Identity)

    def __repr__(self) -> str:
        return "Identity()"
