"""Alchemical compression: a few pseudo-species channels instead of one per element.

Willatt, Musil, Ceriotti, PCCP 20, 29661 (2018). The spherical expansion has one density channel
per neighbour species, ``c^l_i[m, (a, n)]``; every feature built from it (λ-SOAP, NICE) grows with
the square (cube, ...) of the number of species. Mixing the channels linearly,

    c̃^l_i[m, (k, n)] = Σ_a U[k, a] c^l_i[m, (a, n)],    k = 1 … n_channels,

keeps every rotational property (the map acts on the property index only) and shrinks the λ-SOAP
features by ``(n_species / n_channels)²``. ``U`` (n_channels, n_species) is learned from the
training expansion: the leading eigenvectors of the species covariance ``Σ_{i l m n} c[a, n] c[b, n]``
(an uncentred PCA over the species index: the pseudo-species that carry most of the density), or
given (fixed). With ``n_channels = n_species`` and an orthogonal ``U`` the features are a rotation
of the full ones in feature space: every linear kernel is unchanged.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from ..core.errors import DataError
from .expansion import Expansion

__all__ = ["AlchemicalChannels"]


class AlchemicalChannels:
    """A linear map of an expansion's species channels to ``n_channels`` pseudo-species.

    ``species``: the atomic numbers of the expansion's channels (its ``species``); ``mixing``
    (n_channels, n_species): a fixed map, or None to learn it with :meth:`fit`."""

    def __init__(self, species: Sequence[int], n_channels: int, mixing: np.ndarray | None = None):
        self.species = tuple(int(s) for s in species)
        self.n_channels = int(n_channels)
        if not 1 <= self.n_channels:
            raise ValueError(f"alchemical channels must be >= 1, got {n_channels}")
        self.mixing = None if mixing is None else np.asarray(mixing, dtype=float)
        if self.mixing is not None and self.mixing.shape != (self.n_channels, len(self.species)):
            raise ValueError(f"mixing must have shape ({self.n_channels}, {len(self.species)}), got {self.mixing.shape}")

    def fit(self, expansion: Expansion) -> "AlchemicalChannels":
        """Learn ``mixing``: the leading ``n_channels`` eigenvectors (rows, largest first, signs with a
        positive largest entry) of the species covariance of ``expansion``'s centres."""
        self._check(expansion)
        cov = np.zeros((len(self.species),) * 2)
        for c in expansion.coefficients:  # (n, S, 2l+1, R)
            flat = np.moveaxis(c, 1, 0).reshape(len(self.species), -1)
            cov += flat @ flat.T
        values, vectors = np.linalg.eigh(cov)
        order = np.argsort(values)[::-1][: self.n_channels]
        u = vectors[:, order].T
        signs = np.sign(u[np.arange(len(u)), np.argmax(np.abs(u), axis=1)])
        u = u * np.where(signs == 0, 1.0, signs)[:, None]
        if len(u) < self.n_channels:  # more channels than species: pad with zeros
            u = np.vstack([u, np.zeros((self.n_channels - len(u), len(self.species)))])
        self.mixing = u
        return self

    def _check(self, expansion: Expansion) -> None:
        if tuple(expansion.species) != self.species:
            extra = sorted(set(expansion.species) - set(self.species))
            if extra:
                raise DataError(f"element(s) {', '.join(map(str, extra))} (atomic numbers) are outside the "
                                f"alchemically compressed species {list(self.species)}")
            raise DataError(f"expansion species {list(expansion.species)} differ from the compressed {list(self.species)}")

    def transform(self, expansion: Expansion) -> Expansion:
        """``expansion`` with its values mapped to the pseudo-species channels (no gradients)."""
        if self.mixing is None:
            raise RuntimeError("AlchemicalChannels.transform before fit")
        self._check(expansion)
        n_radial = expansion.n_radial
        values = []
        for c in expansion.coefficients:  # (n, S, 2l+1, R)
            mixed = np.einsum("ka,namr->nmkr", self.mixing, c, optimize=True)
            values.append(np.ascontiguousarray(mixed.reshape(len(c), c.shape[2], self.n_channels * n_radial)))
        pseudo = tuple(range(-1, -self.n_channels - 1, -1))  # pseudo-species labels -1, -2, ...
        return replace(expansion, species=pseudo, values=values, pair_gradients=None)
