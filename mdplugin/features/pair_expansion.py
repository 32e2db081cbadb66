"""The spherical expansion of molecules by atom pair, dense numpy, and the atom-centred density
summed from it.

For every ordered pair (i, j ≠ i) of a molecule closer than ``cutoff``:
``g_ij^{l}[m, n] = f_c(r_ij) R_{nl}(r_ij) Y_l^m(r̂_ij)`` (``r_ij = r_j − r_i``) — the Gaussian
density of atom j alone seen from atom i — and the neighbour density of atom i,
``ρ_i^{l}[m, (s, n)] = Σ_{j of species s} g_ij^{l}[m, n]`` (no self contribution).

``R_{nl}`` is featomic's own radial integral, splined by ``featomic.splines.SoapSpliner``; the
smoothing ``f_c`` is featomic's ``ShiftedCosine``; ``Y`` are the real harmonics of
:mod:`mdplugin.core.wigner`. :meth:`PairExpansion.featomic_hypers` gives the same spline as
featomic hyper-parameters, so ``featomic.SphericalExpansionByPair`` / ``SphericalExpansion`` with
them compute the same numbers (the tests check 1e-10). Why not featomic itself here: for one
small molecule its per-call overhead and the metatensor block handling cost ~5 ms per MD step
(two calculators, ethanol), this ~0.3 ms.

Building the spline takes seconds (featomic integrates the radial basis numerically), so it is
kept per set of hyper-parameters in the process and a model stores its points
(:meth:`PairExpansion.spline_arrays`).
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import scipy.sparse
import scipy.special
from ase import Atoms

#: spline points per angular channel (cubic Hermite: ~2e-6 relative to the exact radial integral
#: at 200 points, ~1e-7 at 400)
SPLINE_POINTS = 400


@functools.lru_cache(maxsize=16)
def _spline(cutoff: float, max_radial: int, max_angular: int, density_width: float, smoothing_width: float,
            n_points: int) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]:
    """Per l: (positions, values (n_points, n_radial), derivatives) of featomic's radial integral."""
    from featomic.basis import Gto, TensorProduct
    from featomic.cutoff import Cutoff, ShiftedCosine
    from featomic.density import Gaussian
    from featomic.splines import SoapSpliner

    spliner = SoapSpliner(cutoff=Cutoff(radius=cutoff, smoothing=ShiftedCosine(width=smoothing_width)),
                          density=Gaussian(width=density_width),
                          basis=TensorProduct(max_angular=max_angular, radial=Gto(max_radial=max_radial, radius=cutoff)),
                          n_spline_points=n_points)
    by_angular = spliner.get_hypers()["basis"].by_angular
    return tuple((by_angular[l].spline.positions.copy(), by_angular[l].spline.values.copy(),
                  by_angular[l].spline.derivatives.copy()) for l in range(max_angular + 1))


class PairExpansion:
    """Dense pair expansion and neighbour density of molecules (see the module docstring).

    Parameters
    ----------
    cutoff : Å; pairs farther apart get nothing. max_radial : radial functions ``0 … max_radial``.
    max_angular : l ≤ max_angular. density_width : Gaussian width, Å. smoothing_width : Å.
    splines : stored spline points (:meth:`spline_arrays`) instead of building them.
    """

    def __init__(self, cutoff: float, max_radial: int, max_angular: int, density_width: float,
                 smoothing_width: float = 0.5, splines: Sequence[Sequence[np.ndarray]] | None = None) -> None:
        self.cutoff, self.max_radial, self.max_angular = float(cutoff), int(max_radial), int(max_angular)
        self.density_width, self.smoothing_width = float(density_width), float(smoothing_width)
        self._points = None if splines is None else tuple(tuple(np.asarray(a, dtype=float) for a in s) for s in splines)
        self._splines = None

    def spline_arrays(self) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]:
        """Per l: (positions (k,), values (k, n_radial), derivatives (k, n_radial))."""
        if self._points is None:
            self._points = _spline(self.cutoff, self.max_radial, self.max_angular, self.density_width,
                                   self.smoothing_width, SPLINE_POINTS)
        return self._points

    def _radial(self):
        if self._splines is None:
            from featomic.splines import Spline

            self._splines = []
            for positions, values, derivatives in self.spline_arrays():
                spline = Spline(0.0, self.cutoff)
                spline.add_points(positions, values, derivatives)
                self._splines.append(spline)
        return self._splines

    def featomic_hypers(self) -> dict:
        """featomic hyper-parameters with this spline: ``featomic.SphericalExpansion(**h)`` and
        ``featomic.SphericalExpansionByPair(**h)`` compute what this class does."""
        from featomic.basis import Explicit
        from featomic.cutoff import Cutoff, ShiftedCosine
        from featomic.density import DiracDelta
        from featomic.splines import SplinedRadialBasis

        by_angular = {l: SplinedRadialBasis(spline=s, max_radial=self.max_radial, radius=self.cutoff)
                      for l, s in enumerate(self._radial())}
        return {"cutoff": Cutoff(radius=self.cutoff, smoothing=ShiftedCosine(width=self.smoothing_width)),
                "density": DiracDelta(center_atom_weight=0.0),  # no self term: ρ_i sums the other atoms only
                "basis": Explicit(by_angular=by_angular, spline_accuracy=None)}

    def pairs(self, frames: Sequence[Atoms]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ordered pairs (i ≠ j) closer than the cutoff: global atom indices (n_pairs, 2) sorted,
        their vectors r_j − r_i (n_pairs, 3) Å, and the frame offsets (n_frames+1,)."""
        offsets = np.r_[0, np.cumsum([len(a) for a in frames])].astype(int)
        found, vectors = [], []
        for start, atoms in zip(offsets, frames):  # all pairs of a molecule: n² distances
            pos = atoms.positions
            d = pos[None, :, :] - pos[:, None, :]
            i, j = np.nonzero((np.einsum("ijx,ijx->ij", d, d) < self.cutoff**2) & ~np.eye(len(pos), dtype=bool))
            found.append(np.stack([i + start, j + start], axis=1))
            vectors.append(d[i, j])
        if not found:
            return np.zeros((0, 2), int), np.zeros((0, 3)), offsets
        return np.concatenate(found), np.concatenate(vectors), offsets

    def factors(self, frames: Sequence[Atoms]) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], np.ndarray]:
        """The two factors of ``g_ij^l = Y^l(r̂_ij) ⊗ f_c(r_ij) R_l(r_ij)``: ``(pairs (n_pairs, 2),
        harmonics per l (n_pairs, 2l+1), radial parts per l (n_pairs, n_radial), frame offsets)``."""
        pairs, vectors, offsets = self.pairs(frames)
        r = np.linalg.norm(vectors, axis=1)
        from featomic.cutoff import ShiftedCosine

        fc = ShiftedCosine(width=self.smoothing_width).compute(self.cutoff, r, derivative=False)
        ylm = _real_harmonics(vectors, self.max_angular)
        radial = [spline.compute(r) * fc[:, None] for spline in self._radial()]
        return pairs, ylm, radial, offsets

    def compute(self, frames: Sequence[Atoms]) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """``(pairs (n_pairs, 2), g per l (n_pairs, 2l+1, n_radial), frame offsets)``."""
        pairs, ylm, radial, offsets = self.factors(frames)
        return pairs, [y[:, :, None] * r[:, None, :] for y, r in zip(ylm, radial)], offsets

    @staticmethod
    def densities(pairs: np.ndarray, g: Sequence[np.ndarray], species_index: np.ndarray, n_species: int,
                  n_atoms: int) -> list[np.ndarray]:
        """ρ per l (n_atoms, 2l+1, n_species·n_radial) from the pair expansion (species outer)."""
        rows = pairs[:, 0] * n_species + species_index[pairs[:, 1]]
        sum_pairs = scipy.sparse.csr_matrix((np.ones(len(pairs)), (rows, np.arange(len(pairs)))),
                                            shape=(n_atoms * n_species, len(pairs)))
        out = []
        for gl in g:
            m, n_rad = gl.shape[1], gl.shape[2]
            summed = (sum_pairs @ gl.reshape(len(pairs), -1)).reshape(n_atoms, n_species, m, n_rad)
            out.append(np.ascontiguousarray(summed.transpose(0, 2, 1, 3)).reshape(n_atoms, m, n_species * n_rad))
        return out


def _real_harmonics(vectors: np.ndarray, max_angular: int) -> list[np.ndarray]:
    """Real spherical harmonics (featomic's convention, :mod:`mdplugin.core.wigner`) of
    ``vectors`` (n, 3) for l = 0 … max_angular, one scipy call: list of (n, 2l+1)."""
    r = np.linalg.norm(vectors, axis=1)
    theta = np.arccos(np.clip(vectors[:, 2] / np.where(r > 0, r, 1.0), -1.0, 1.0))
    phi = np.arctan2(vectors[:, 1], vectors[:, 0])
    ls, ms = _lm(max_angular)
    y = scipy.special.sph_harm_y(ls[:, None], ms[:, None], theta[None, :], phi[None, :])  # (n_lm, n)
    out, k = [], 0
    for l in range(max_angular + 1):
        block = np.empty((len(r), 2 * l + 1))
        block[:, l] = y[k].real
        for m in range(1, l + 1):
            sign = np.sqrt(2.0) * (-1.0) ** m
            block[:, l + m] = sign * y[k + m].real
            block[:, l - m] = sign * y[k + m].imag
        out.append(block)
        k += l + 1
    return out


@functools.lru_cache(maxsize=None)
def _lm(max_angular: int) -> tuple[np.ndarray, np.ndarray]:
    ls = np.concatenate([[l] * (l + 1) for l in range(max_angular + 1)])
    ms = np.concatenate([np.arange(l + 1) for l in range(max_angular + 1)])
    return ls, ms
