"""The hook by which models built on one featomic spherical expansion share it in an MD step."""

from __future__ import annotations

from ..features.expansion import SphericalExpansion


class SharedExpansionMixin:
    """``expansion_hypers()`` and a cached :class:`SphericalExpansion` for expansion-based models.

    The ASE calculator groups models whose ``expansion_hypers()`` are equal and computes ONE expansion
    per structure for all of them (with position gradients when any of them ``needs_gradients``).
    The class using it defines ``cutoff``, ``max_radial``, ``max_angular``, ``gaussian_width`` and
    ``smoothing_width`` hyper-parameters and, once fitted, ``species_``.
    """

    #: whether the calculator must compute the shared expansion with position gradients
    needs_gradients = False

    def expansion_hypers(self) -> dict:
        """Keyword arguments of :class:`~mdplugin.features.expansion.SphericalExpansion`
        (species included): models with equal hypers can share one expansion per MD step."""
        species = getattr(self, "species_", None)
        return {
            "species": [int(z) for z in (species if species is not None else [])],
            "cutoff": float(self.cutoff),
            "max_radial": int(self.max_radial),
            "max_angular": int(self.max_angular),
            "gaussian_width": float(self.gaussian_width),
            "smoothing_width": float(self.smoothing_width),
        }

    def _expansion(self) -> SphericalExpansion:
        """The featomic expansion for the current hypers, built once and cached."""
        hypers = self.expansion_hypers()
        calc = getattr(self, "_expansion_calc", None)
        if calc is None or getattr(self, "_expansion_key", None) != hypers:
            calc = SphericalExpansion(**hypers)
            self._expansion_calc = calc
            self._expansion_key = hypers
        return calc
