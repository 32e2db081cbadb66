"""The featurizer of the models built on one spherical expansion (SOAP energy, λ-SOAP)."""

from __future__ import annotations

from ..features.expansion import SphericalExpansion


class SharedExpansionMixin:
    """``featurizer()``: the :class:`~mdplugin.features.expansion.SphericalExpansion` of the model's
    hyper-parameters and species, built once per set of them.

    Two models with equal hypers and species have equal featurizers, so the ASE calculator
    computes ONE expansion per structure for both (with position gradients when forces are asked).
    The class using it defines ``cutoff``, ``max_radial``, ``max_angular``, ``gaussian_width`` and
    ``smoothing_width`` hyper-parameters and, once fitted, ``species_``.
    """

    def expansion_hypers(self) -> dict:
        """Keyword arguments of :class:`~mdplugin.features.expansion.SphericalExpansion`
        (species included)."""
        species = getattr(self, "species_", None)
        return {
            "species": [int(z) for z in (species if species is not None else [])],
            "cutoff": float(self.cutoff),
            "max_radial": int(self.max_radial),
            "max_angular": int(self.max_angular),
            "gaussian_width": float(self.gaussian_width),
            "smoothing_width": float(self.smoothing_width),
        }

    def featurizer(self) -> SphericalExpansion:
        """The featomic expansion for the current hypers and species, built once and kept."""
        hypers = self.expansion_hypers()
        calc = getattr(self, "_expansion_calc", None)
        if calc is None or self._expansion_key != hypers:
            calc = SphericalExpansion(**hypers)
            self._expansion_calc = calc
            self._expansion_key = hypers
        return calc
