"""The features of one structure (or batch), computed once and shared by the models of a step.

The ASE calculator computes ONE spherical expansion per structure and hands a :class:`FeatureCache`
around it to every model of the step: the energy model's invariant power spectrum is the λ = 0
λ-SOAP set the dipole and polarizability models use too, the norms and the padded arrays of the
contractions are the same for all of them. Each derived array is computed on first request and
kept, read-only, until the structure changes (the calculator then builds a new cache).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .lambda_contract import contract_lambda_soap, gram_matrices, lambda_soap_squared_norms
from .lambda_soap import equivariant_inverse_norms, lambda_soap, padded_and_transposed

__all__ = ["FeatureCache", "as_feature_cache"]


class FeatureCache:
    """Derived features of one :class:`~mdplugin.features.expansion.Expansion` (``expansion``), each
    computed once.

    Never write into the returned arrays (they are flagged read-only where they are not views)."""

    def __init__(self, expansion):
        self.expansion = expansion
        self._rows: dict | None = None
        self._padded: tuple | None = None
        self._gram: np.ndarray | None = None
        self._lambda_soap: dict[int, np.ndarray] = {}
        self._inverse_norms: dict[int, np.ndarray] = {}
        self._squared_norms: dict[int, np.ndarray] = {}

    # the expansion's description, for convenience
    @property
    def n_centres(self) -> int:
        return self.expansion.n_centres

    @property
    def n_frames(self) -> int:
        return self.expansion.n_frames

    @property
    def centre_species(self) -> np.ndarray:
        return self.expansion.centre_species

    @property
    def centre_frame(self) -> np.ndarray:
        return self.expansion.centre_frame

    def centre_rows(self) -> dict[int, slice | np.ndarray]:
        """``{atomic number: rows}`` of the centres of each species present, in order of atomic
        number; ``rows`` is a slice when those centres are contiguous (indexing then makes no copy)."""
        if self._rows is None:
            species = self.expansion.centre_species
            rows = {}
            for z in np.unique(species):
                index = np.flatnonzero(species == z)
                if index[-1] - index[0] + 1 == len(index):
                    index = slice(int(index[0]), int(index[-1]) + 1)
                else:
                    index.setflags(write=False)
                rows[int(z)] = index
            self._rows = rows
        return self._rows

    def padded(self) -> tuple[np.ndarray, np.ndarray]:
        """The expansion zero-padded to (n, L, 2L−1, P) and its contiguous transpose (n, L, P, 2L−1)
        (:func:`~mdplugin.features.lambda_soap.padded_and_transposed`)."""
        if self._padded is None:
            self._padded = padded_and_transposed(self.expansion.values)
        return self._padded

    def gram(self) -> np.ndarray:
        """The Gram matrices ``c^l c^lᵀ`` (n, L, 2L−1, 2L−1) of every centre and l."""
        if self._gram is None:
            self._gram = gram_matrices(*self.padded())
            self._gram.setflags(write=False)
        return self._gram

    def lambda_soap(self, lambdas: Sequence[int]) -> dict[int, np.ndarray]:
        """Folded λ-SOAP features ``{λ: (n_centres, 2λ+1, n_features(λ))}``
        (:func:`~mdplugin.features.lambda_soap.lambda_soap`), each λ computed once."""
        missing = tuple(sorted({int(lam) for lam in lambdas} - set(self._lambda_soap)))
        if missing:
            padded = self.padded() if 0 in missing else None
            for lam, features in lambda_soap(self.expansion, missing, padded=padded).items():
                features.setflags(write=False)
                self._lambda_soap[lam] = features
        return {int(lam): self._lambda_soap[int(lam)] for lam in lambdas}

    def power_spectrum(self) -> np.ndarray:
        """The invariant power spectrum (n_centres, F₀): the λ = 0 features."""
        return self.lambda_soap((0,))[0][:, 0, :]

    def squared_norms(self, lam: int) -> np.ndarray:
        """``|x^λ_i|²`` (n_centres,) of the λ features (over the 2λ+1 components and all features):
        from the features when they were computed, else from the Gram matrices without forming them
        (then possibly rounding-negative where the features vanish)."""
        lam = int(lam)
        if lam not in self._squared_norms:
            features = self._lambda_soap.get(lam)
            if features is not None:
                flat = features.reshape(self.n_centres, -1)
                squared = np.vecdot(flat, flat)
            else:
                squared = lambda_soap_squared_norms(self.gram(), self.expansion.values[0].shape[-1], lam)
            squared.setflags(write=False)
            self._squared_norms[lam] = squared
        return self._squared_norms[lam]

    def inverse_norms(self, lam: int) -> np.ndarray:
        """The normalisation (n_centres,) of the λ features: ``1 / |x⁰_i|`` for λ = 0 (floored at
        1e-300), ``1 / sqrt(|x^λ_i|² + ε² |x⁰_i|²)`` for λ > 0
        (:func:`~mdplugin.features.lambda_soap.equivariant_inverse_norms`: finite and smooth where the
        λ features vanish by symmetry)."""
        lam = int(lam)
        if lam not in self._inverse_norms:
            if lam == 0:
                inverse = 1.0 / np.maximum(np.sqrt(np.maximum(self.squared_norms(0), 0.0)), 1e-300)
            else:
                inverse = equivariant_inverse_norms(self.squared_norms(lam), self.squared_norms(0))
            inverse.setflags(write=False)
            self._inverse_norms[lam] = inverse
        return self._inverse_norms[lam]

    def contract(self, lam: int, weights: np.ndarray) -> np.ndarray:
        """``Σ_F x^λ_iμF weights_iF`` (n_centres, 2λ+1) without forming the features
        (:func:`~mdplugin.features.lambda_contract.contract_lambda_soap`)."""
        return contract_lambda_soap(*self.padded(), lam, weights)


def as_feature_cache(features) -> FeatureCache:
    """``features`` itself when it is a :class:`FeatureCache`, else a new one around ``features`` (an
    :class:`~mdplugin.features.expansion.Expansion`)."""
    return features if isinstance(features, FeatureCache) else FeatureCache(features)
