"""Invariant SOAP power spectrum front end (features, and position gradients for forces).

Thin wrapper: one featomic spherical expansion (:mod:`.expansion`) coupled to the λ = 0
power spectrum in numpy (:func:`.lambda_soap.power_spectrum`); featomic's own
``SoapPowerSpectrum`` is about ten times slower for small molecules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .expansion import SphericalExpansion
from .lambda_soap import power_spectrum

__all__ = ["SoapFeatures", "SoapPowerSpectrum"]


@dataclass
class SoapFeatures:
    """Per-atom invariant features of a batch of frames.

    ``values (n_centres, F)``; ``centre_frame``, ``centre_species (n_centres,)``; with
    gradients, ``pairs (n_pairs, 2)`` (centre i, neighbour j, global atom indices) and
    ``gradients (n_pairs, 3, F)`` = d values[i] / d r_j in Å⁻¹.
    """

    values: np.ndarray
    centre_frame: np.ndarray
    centre_species: np.ndarray
    n_frames: int
    pairs: np.ndarray | None = None
    gradients: np.ndarray | None = None


class SoapPowerSpectrum:
    """SOAP power spectrum with fixed species; hyper-parameters as
    :class:`~mdplugin.features.expansion.SphericalExpansion` (cutoff Å, featomic
    ``max_radial`` counted from 0, ``max_angular``, Gaussian width Å, smoothing width Å)."""

    def __init__(
        self,
        species: Sequence[int],
        cutoff: float = 5.0,
        max_radial: int = 4,
        max_angular: int = 3,
        gaussian_width: float = 0.3,
        smoothing_width: float = 0.5,
    ):
        self.expansion = SphericalExpansion(
            species, cutoff, max_radial, max_angular, gaussian_width, smoothing_width
        )

    def compute(self, frames: Sequence, gradients: bool = False) -> SoapFeatures:
        """Features of every atom of ``frames`` (list of ``ase.Atoms``)."""
        exp = self.expansion.compute(frames, gradients=gradients)
        if gradients:
            values, grads, pairs = power_spectrum(exp, gradients=True)
        else:
            values, grads, pairs = power_spectrum(exp), None, None
        return SoapFeatures(
            values=values,
            centre_frame=exp.centre_frame,
            centre_species=exp.centre_species,
            n_frames=exp.n_frames,
            pairs=pairs,
            gradients=grads,
        )
