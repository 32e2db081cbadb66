"""Principal axes of inertia of molecules, for rotate–predict–rotate models.

The inertia tensor of a structure about its centre of mass is ``I = Σ_a m_a (|r_a|² 1 − r_a r_aᵀ)``
(amu·Å², standard atomic masses of :data:`ase.data.atomic_masses`, so a structure's own ``masses``
array is ignored and the axes are a function of the positions only). Its eigenvectors, sorted by
increasing moment ``λ1 ≤ λ2 ≤ λ3``, are the columns of ``axes``; body coordinates are
``x_b = axesᵀ (r − r_com)``.

The eigenvectors are defined only up to sign, and their order is ill-defined when two moments are
(nearly) equal. :mod:`mdplugin.models.rpr` makes its predictions independent of the sign and
continuous through degeneracies; this module supplies the raw ingredients:

* :func:`principal_axes` — centres of mass, sorted axes and moments of many structures at once;
* :func:`body_coordinates` — positions along the principal axes;
* :func:`relative_gaps` — ``g12 = (λ2 − λ1)/λ3`` and ``g23 = (λ3 − λ2)/λ3`` (dimensionless);
* :func:`axes_quality` — ``max(g12, g23)``: the relative gap of the best-defined axis (0 for a
  spherical top, where no axis is defined, 1 for a linear molecule);
* :func:`third_moment_signs` — the classic (naive) sign rule, for comparison;
* :class:`PrincipalAxes` — the featurizer a rotate–predict–rotate model hands the ASE calculator:
  :class:`InertiaFeatures` (positions, centres of mass, axes, moments) of structures of one molecule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, chemical_symbols

from ..core.errors import ConfigError, DataError

__all__ = [
    "InertiaFeatures",
    "PrincipalAxes",
    "stack_positions",
    "principal_axes",
    "body_coordinates",
    "relative_gaps",
    "axes_quality",
    "third_moment_signs",
]


def refuse_cells(atoms: Atoms, index: int, what: str = "frame") -> None:
    """A :class:`DataError` when ``atoms`` (frame ``index``) is periodic with a cell: an inertia frame is
    a molecule's, a periodic cell has no principal axes (its atoms' images are everywhere)."""
    if np.any(atoms.pbc) and np.any(atoms.cell.array):
        raise DataError(
            f"{what} {index} is periodic: RPR rotates a molecule to the principal axes of its inertia tensor, "
            "which a periodic cell does not have (use a λ-SOAP model, which does cells)")


def stack_positions(frames: Sequence[Atoms]) -> tuple[np.ndarray, np.ndarray]:
    """Positions (n, n_atoms, 3) Å and atomic numbers (n_atoms,) of structures (``frames``) of one
    molecule.

    All structures must have the same atomic numbers in the same order (raises ``ValueError``
    naming the first frame that differs).
    """
    if len(frames) == 0:
        return np.zeros((0, 0, 3)), np.zeros(0, dtype=int)
    numbers = np.asarray(frames[0].numbers)
    for i, atoms in enumerate(frames):
        if len(atoms) != len(numbers) or not np.array_equal(atoms.numbers, numbers):
            raise ValueError(f"frame {i}: atoms differ in number or order from frame 0")
    return np.stack([np.asarray(a.positions, dtype=float) for a in frames]), numbers


def principal_axes(positions: np.ndarray, numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres of mass, principal axes and moments of inertia.

    ``positions`` (n, n_atoms, 3) Å, ``numbers`` (n_atoms,). Returns ``com`` (n, 3) Å, ``axes``
    (n, 3, 3) with the eigenvectors as columns sorted by increasing moment (signs as returned by
    LAPACK: arbitrary), and ``moments`` (n, 3) amu·Å².
    """
    positions = np.asarray(positions, dtype=float)
    m = atomic_masses[np.asarray(numbers)]
    com = np.einsum("a,nai->ni", m, positions) / m.sum()
    r = positions - com[:, None, :]
    second = np.einsum("a,nai,naj->nij", m, r, r)  # Σ m r rᵀ
    inertia = np.trace(second, axis1=1, axis2=2)[:, None, None] * np.eye(3) - second
    moments, axes = np.linalg.eigh(inertia)
    return com, axes, moments


def body_coordinates(positions: np.ndarray, com: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Coordinates along the principal axes (body coordinates) ``axesᵀ (r − com)``, shape
    (n, n_atoms, 3), Å."""
    return np.einsum("nij,nai->naj", axes, np.asarray(positions) - com[:, None, :])


def relative_gaps(moments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``g12 = (λ2 − λ1)/λ3`` and ``g23 = (λ3 − λ2)/λ3`` for sorted moments (n, 3); each (n,)."""
    moments = np.asarray(moments, dtype=float)
    scale = np.maximum(moments[:, 2], np.finfo(float).tiny)
    g12 = np.maximum(moments[:, 1] - moments[:, 0], 0.0) / scale
    g23 = np.maximum(moments[:, 2] - moments[:, 1], 0.0) / scale
    return g12, g23


def axes_quality(moments: np.ndarray) -> np.ndarray:
    """``max(g12, g23)`` (n,): relative gap of the best-defined principal axis (0 … 1)."""
    g12, g23 = relative_gaps(moments)
    return np.maximum(g12, g23)


def third_moment_signs(body: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """Signs (n, 3) that make ``Σ_a m_a x_{a,k}³ ≥ 0`` along each body axis ``k`` (naive rule).

    Multiply the axes' columns (and the body coordinates) by these signs. The rule is
    discontinuous where a third moment changes sign, which is why naive RPR is poor.
    """
    m = atomic_masses[np.asarray(numbers)]
    third = np.einsum("a,nak->nk", m, np.asarray(body) ** 3)
    return np.where(third < 0.0, -1.0, 1.0)


@dataclass(frozen=True)
class InertiaFeatures:
    """Principal axes of ``n`` structures of one molecule (see :func:`principal_axes`).

    ``positions`` (n, n_atoms, 3) Å, ``numbers`` (n_atoms,), ``com`` (n, 3) Å, ``axes`` (n, 3, 3)
    (eigenvectors as columns, increasing moment, arbitrary signs), ``moments`` (n, 3) amu·Å².
    """

    positions: np.ndarray
    numbers: np.ndarray
    com: np.ndarray
    axes: np.ndarray
    moments: np.ndarray

    @classmethod
    def of(cls, positions: np.ndarray, numbers: np.ndarray) -> "InertiaFeatures":
        """The axes of stacked ``positions`` (n, n_atoms, 3) Å of a molecule of atoms ``numbers``."""
        positions = np.asarray(positions, dtype=float)
        numbers = np.asarray(numbers, dtype=int)
        return cls(positions, numbers, *principal_axes(positions, numbers))

    @property
    def n_frames(self) -> int:
        return int(self.positions.shape[0])


class PrincipalAxes:
    """Featurizer: :class:`InertiaFeatures` of structures of the molecule whose atoms are
    ``numbers``, in that order. Featurizers of the same molecule are equal (the dipole and
    polarizability models of one molecule share one computation per MD step). There are no
    position gradients (``gradients=True`` is a :class:`ConfigError`)."""

    def __init__(self, numbers: Sequence[int]):
        self.numbers = tuple(int(z) for z in numbers)

    def compute(self, frames: Sequence[Atoms] | Atoms, gradients: bool = False) -> InertiaFeatures:
        if gradients:
            raise ConfigError("principal axes have no position gradients (a model on them gives no forces)")
        frames = [frames] if isinstance(frames, Atoms) else list(frames)
        if not frames:
            raise DataError("no frames to compute features for")
        want = np.array(self.numbers)
        for i, atoms in enumerate(frames):
            refuse_cells(atoms, i)
            if len(atoms) != len(want) or not np.array_equal(atoms.numbers, want):
                raise DataError(
                    f"frame {i}: atoms {''.join(chemical_symbols[z] for z in atoms.numbers)} differ in number or "
                    f"order from the molecule {''.join(chemical_symbols[z] for z in want)} (principal axes need "
                    "one molecule with a fixed atom order)")
        return InertiaFeatures.of(stack_positions(frames)[0], want)

    def features(self, frames: Sequence[Atoms] | Atoms, gradients: bool = False) -> InertiaFeatures:
        """The features the models of an MD step share: :meth:`compute`'s (the featurizer protocol)."""
        return self.compute(frames, gradients=gradients)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrincipalAxes) and other.numbers == self.numbers

    def __hash__(self) -> int:
        return hash((PrincipalAxes, self.numbers))

    def __repr__(self) -> str:
        return f"PrincipalAxes({''.join(chemical_symbols[z] for z in self.numbers)})"
