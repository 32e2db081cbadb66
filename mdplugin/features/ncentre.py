"""N-centre equivariant features: one-centre (atom) and two-centre (pair) features split by
rotational order λ and parity σ (Nigam, Willatt, Ceriotti, JCP 156, 014115, 2022).

From the pair expansion of a batch of molecules (:mod:`.pair_expansion`: featomic's radial
integral, the numbers of ``featomic.SphericalExpansionByPair``) —

* ``g_ij`` per ordered pair i ≠ j within the cutoff: the density of atom j alone seen from atom i,
  ``(n_ordered_pairs, 2l+1, n_radial)`` per l, and
* the neighbour density ``ρ_i = Σ_j g_ij`` by species (featomic's ``SphericalExpansion``),
  ``(n_atoms, 2l+1, n_species·n_radial)`` per l, species outer, optionally compressed to a few
  principal channels (``projection``) —

the features of order (λ, σ) are

* one-centre, atom i: ``ρ_i^λ`` (ν = 1, σ = +1 only) and the λ-SOAP ``[ρ_i ⊗ ρ_i]^{λσ}`` (ν = 2) —
  what featomic's ``clebsch_gordan.EquivariantPowerSpectrum`` computes;
* two-centre, ordered pair (i, j): ``g_ij^λ`` (σ = +1 only) and ``[ρ_i ⊗ g_ij]^{λσ}`` — what
  featomic's ``clebsch_gordan.EquivariantPowerSpectrumByPair`` computes (both tested against
  featomic) —

with ``[a ⊗ b]^{λσ}_μ = Σ_{m1 m2} C^{l1 l2 λ}_{m1 m2 μ} a^{l1}_{m1} b^{l2}_{m2}`` (featomic's real
Clebsch–Gordan coefficients and sign convention) and ``σ = (-1)^{l1+l2+λ}``: under a rotation or
reflection ``R`` a feature of order (λ, σ) transforms as ``σ^{[det R < 0]} D^λ(R)`` (σ = -1: a
pseudo-tensor). Both orientations of each unordered pair are returned, so a model can form the
exchange-symmetric and antisymmetric combinations ``f_ij ± f_ji`` of same-species pairs
(:func:`exchange_combinations`).

The couplings are one BLAS product per (l1, l2) over all atoms/pairs of the batch (featomic's own
coupling code takes ~1 s for one ethanol molecule).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from ..core.errors import ConfigError, DataError
from .pair_expansion import PairExpansion

Key = tuple[int, int]  # (λ, σ)


@functools.lru_cache(maxsize=None)
def cg_coefficients(lambda_max: int) -> dict[tuple[int, int, int], np.ndarray]:
    """featomic's real Clebsch–Gordan coefficients ``{(l1, l2, λ): (2l1+1, 2l2+1, 2λ+1)}`` for
    l1, l2, λ ≤ ``lambda_max`` (for fixed l1, l2 the maps to all λ form an orthogonal matrix)."""
    from featomic.clebsch_gordan import calculate_cg_coefficients

    tmap = calculate_cg_coefficients(int(lambda_max), "python-dense", "numpy", np.float64, "cpu")
    out = {}
    for key, block in zip(tmap.keys, tmap.blocks()):
        out[(int(key["l1"]), int(key["l2"]), int(key["lambda"]))] = np.ascontiguousarray(block.values[0, ..., 0])
    return out


def couple(a: np.ndarray, b: np.ndarray, l1: int, l2: int, lambdas: Sequence[int]) -> list[np.ndarray]:
    """``[a ⊗ b]^λ`` for each λ of ``lambdas``, of rows of equivariants: ``a`` (n, 2l1+1, p), ``b``
    (n, 2l2+1, q) -> list of (n, 2λ+1, p·q), properties ordered (p outer, q inner).

    featomic's convention: ``Σ C^{l1 l2 λ}_{m1 m2 μ} a_{m1} b_{m2}`` times ``(-1)^{l1+l2+λ}``.
    """
    n, p, q = a.shape[0], a.shape[2], b.shape[2]
    # (m1, m2) rows, (sample, p, q) columns: one BLAS product for every λ and sample
    outer = np.einsum("nap,nbq->abnpq", a, b).reshape((2 * l1 + 1) * (2 * l2 + 1), n * p * q)
    stacked, sizes = _stacked_coupling(l1, l2, tuple(lambdas))
    coupled = (stacked @ outer).reshape(-1, n, p * q)
    return [np.ascontiguousarray(part.transpose(1, 0, 2)) for part in np.split(coupled, sizes)]


@functools.lru_cache(maxsize=None)
def _stacked_coupling(l1: int, l2: int, lambdas: tuple[int, ...]) -> tuple[np.ndarray, list[int]]:
    mats = [coupling_matrix(l1, l2, lam) for lam in lambdas]
    return np.ascontiguousarray(np.concatenate(mats)), list(np.cumsum([len(m) for m in mats])[:-1])


@functools.lru_cache(maxsize=None)
def coupling_matrix(l1: int, l2: int, lam: int) -> np.ndarray:
    """(2λ+1, (2l1+1)(2l2+1)): the product basis ``(m1, m2)`` (m1 outer) -> the order-λ part, in
    featomic's convention (see :func:`couple`). Stacked over all λ = |l1-l2| … l1+l2 these rows
    form an orthogonal matrix."""
    cg = cg_coefficients(max(l1, l2, lam))[(l1, l2, lam)] * (-1.0) ** (l1 + l2 + lam)
    return np.ascontiguousarray(cg.reshape(-1, 2 * lam + 1).T)


class _CouplingPlan:
    """Every product ``[a^{l1} ⊗ b^{l2}]^λ`` (l1 ≤ lmax1, l2 ≤ lmax2, λ ≤ max_lambda; l1 ≤ l2 when
    ``same``) of all rows at once: the inputs are concatenated over l (``a`` (n, Σ(2l1+1), p),
    ``b`` (n, Σ(2l2+1), q)); the (m1, m2) products that some coefficient needs are formed once and
    one sparse matrix of Clebsch–Gordan coefficients maps them to every output row.

    ``gather[(λ, σ)] = (rows (2λ+1, F), cols (F,))`` picks the features of order (λ, σ) from the
    result (rows, n, p·q), ordered by (l1, l2) then channels (p outer, q inner; for l1 = l2 only
    the independent channel pairs); ``second_l[(λ, σ)]`` (F,) is the l2 of each.
    """

    def __init__(self, lmax1: int, lmax2: int, max_lambda: int, same: bool, p: int, q: int) -> None:
        import scipy.sparse

        start1 = np.r_[0, np.cumsum([2 * l + 1 for l in range(lmax1 + 1)])]
        start2 = np.r_[0, np.cumsum([2 * l + 1 for l in range(lmax2 + 1)])]
        m2_total = int(start2[-1])
        entries, n_rows = [], 0
        gather_rows: dict[Key, list] = {}
        gather_cols: dict[Key, list] = {}
        second_l: dict[Key, list] = {}
        upper, strict = np.triu_indices(q), np.triu_indices(q, 1)
        for l1 in range(lmax1 + 1):
            for l2 in range(l1 if same else 0, lmax2 + 1):
                for lam in range(abs(l1 - l2), min(l1 + l2, max_lambda) + 1):
                    c = coupling_matrix(l1, l2, lam).reshape(2 * lam + 1, 2 * l1 + 1, 2 * l2 + 1)
                    mu, m1, m2 = np.nonzero(np.abs(c) > 1e-14)
                    entries.append((n_rows + mu, (start1[l1] + m1) * m2_total + start2[l2] + m2, c[mu, m1, m2]))
                    sigma = (-1) ** (l1 + l2 + lam)
                    cols = np.arange(p * q)
                    if same and l1 == l2:
                        i, j = upper if sigma == 1 else strict
                        cols = i * q + j
                    rows = n_rows + np.arange(2 * lam + 1)
                    gather_rows.setdefault((lam, sigma), []).append(np.broadcast_to(rows[:, None], (2 * lam + 1, len(cols))))
                    gather_cols.setdefault((lam, sigma), []).append(cols)
                    second_l.setdefault((lam, sigma), []).append(np.full(len(cols), l2))
                    n_rows += 2 * lam + 1
        row, col, val = (np.concatenate(x) for x in zip(*entries))
        self.used = np.unique(col)  # the (m1, m2) products some coefficient needs
        self.m1, self.m2 = np.divmod(self.used, m2_total)
        self.matrix = scipy.sparse.csr_matrix((val, (row, np.searchsorted(self.used, col))),
                                              shape=(n_rows, len(self.used)))
        self.gather = {k: (np.concatenate(gather_rows[k], axis=1), np.concatenate(gather_cols[k]))
                       for k in sorted(gather_rows)}
        self.second_l = {k: np.concatenate(v) for k, v in second_l.items()}

    def couple(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(rows, n, p·q) for ``a`` (n, Σ(2l1+1), p) and ``b`` (n, Σ(2l2+1), q)."""
        n = a.shape[0]
        products = np.einsum("nup,nuq->unpq", a[:, self.m1], b[:, self.m2]).reshape(len(self.used), -1)
        return (self.matrix @ products).reshape(self.matrix.shape[0], n, -1)


@functools.lru_cache(maxsize=None)
def _coupling_plan(lmax1: int, lmax2: int, max_lambda: int, same: bool, p: int, q: int) -> _CouplingPlan:
    return _CouplingPlan(lmax1, lmax2, max_lambda, same, p, q)


def exchange_combinations(f_ij: np.ndarray, f_ji: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exchange-symmetric and antisymmetric features of same-species pairs: ``(f_ij + f_ji,
    f_ij - f_ji)``, each (n_pairs, 2λ+1, n_features)."""
    return f_ij + f_ji, f_ij - f_ji


@dataclass
class NCentreFeatures:
    """Features of a batch of molecules (see the module docstring).

    Atoms are numbered across the batch (frame order, then atom order). Pairs are the unordered
    pairs within the pair cutoff in a canonical orientation (``first``'s species comes first in
    ``species``; for equal species the lower index first).

    Attributes
    ----------
    species : tuple of atomic numbers (the order of the density's species channels)
    atom_frame, atom_index, atom_species : (n_atoms,) int
    pair_first, pair_second : (n_pairs,) int, global atom indices
    onsite : {(λ, σ): (n_atoms, 2λ+1, n_onsite_features)}
    pair_ij, pair_ji : {(λ, σ): (n_pairs, 2λ+1, n_pair_features)} — features of (first, second)
        and of (second, first)
    frames : the structures (models that need more than features, e.g. AO integrals, read them)
    """

    species: tuple[int, ...]
    atom_frame: np.ndarray
    atom_index: np.ndarray
    atom_species: np.ndarray
    pair_first: np.ndarray
    pair_second: np.ndarray
    onsite: dict[Key, np.ndarray] = field(default_factory=dict)
    pair_ij: dict[Key, np.ndarray] = field(default_factory=dict)
    pair_ji: dict[Key, np.ndarray] = field(default_factory=dict)
    frames: list[Atoms] = field(default_factory=list)

    @property
    def n_atoms(self) -> int:
        return int(len(self.atom_frame))

    @property
    def n_pairs(self) -> int:
        return int(len(self.pair_first))


class NCentreFeaturizer:
    """One- and two-centre features of order λ ≤ ``max_lambda`` (see the module docstring).

    Parameters
    ----------
    species : atomic numbers the features know (an element outside them is a DataError).
    cutoff, max_radial, max_angular, density_width, smoothing_width : the pair expansion and the
        density (Å; ``max_radial + 1`` radial functions). Pairs farther apart than ``cutoff`` get no
        features (a model predicts zero for them).
    pair_max_angular : highest l of ``g_ij`` in the pair features (default ``max_angular``).
    max_lambda : highest λ computed.
    projection : optional per-l matrices (n_species·n_radial, k) compressing the density's channels
        (species and radial functions mixed) before the products; :meth:`fit_projection` finds them
        as the leading principal directions of training densities. They act on channels only, so
        the features stay equivariant; they cut the λ-SOAP size by (k / n_channels)².
    splines : stored spline points of the radial integral (:meth:`PairExpansion.spline_arrays`).
    """

    def __init__(self, species: Sequence[int], cutoff: float = 5.0, max_radial: int = 7, max_angular: int = 4,
                 density_width: float = 0.2, smoothing_width: float = 0.5, pair_max_angular: int | None = None,
                 max_lambda: int = 2, projection: Sequence[np.ndarray] | None = None, splines=None) -> None:
        self.species = tuple(sorted(int(z) for z in set(species)))
        if not self.species:
            raise ConfigError("NCentreFeaturizer needs at least one species")
        self.cutoff, self.max_radial, self.max_angular = float(cutoff), int(max_radial), int(max_angular)
        self.pair_max_angular = self.max_angular if pair_max_angular is None else int(pair_max_angular)
        if not 0 <= self.pair_max_angular <= self.max_angular:
            raise ConfigError(f"pair_max_angular must be between 0 and max_angular ({self.max_angular})")
        self.density_width, self.smoothing_width = float(density_width), float(smoothing_width)
        self.max_lambda = int(max_lambda)
        self.projection = None if projection is None else [np.asarray(p, dtype=float) for p in projection]
        self.expansion = PairExpansion(self.cutoff, self.max_radial, self.max_angular, self.density_width,
                                       self.smoothing_width, splines)

    def fit_projection(self, frames: Sequence[Atoms], n_channels: int) -> list[np.ndarray]:
        """Set and return :attr:`projection`: per l, the ``n_channels`` leading eigenvectors of
        ``Σ ρ ρᵀ`` over the atoms and m of ``frames`` (all channels when there are fewer)."""
        self.projection = None
        rho = self.expand(frames)[0]
        out = []
        for r in rho:
            flat = r.reshape(-1, r.shape[2])
            w, v = np.linalg.eigh(flat.T @ flat)
            out.append(np.ascontiguousarray(v[:, ::-1][:, :min(int(n_channels), len(w))]))
        self.projection = out
        return out

    def __eq__(self, other: object) -> bool:
        """Equal hyper-parameters and projections: the same features."""
        if not isinstance(other, NCentreFeaturizer):
            return NotImplemented
        same = self._key() == other._key()
        if same and self.projection is not None:
            same = all(np.array_equal(a, b) for a, b in zip(self.projection, other.projection))
        return same

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple:
        return (self.species, self.cutoff, self.max_radial, self.max_angular, self.pair_max_angular,
                self.density_width, self.smoothing_width, self.max_lambda,
                None if self.projection is None else tuple(p.shape for p in self.projection))

    def calculators(self):
        """featomic's ``(SphericalExpansion, SphericalExpansionByPair)`` with the same radial
        spline: the reference of :meth:`expand` (tests)."""
        import featomic

        hypers = self.expansion.featomic_hypers()
        return featomic.SphericalExpansion(**hypers), featomic.SphericalExpansionByPair(**hypers)

    def _check(self, frames: Sequence[Atoms]) -> None:
        known = set(self.species)
        for i, atoms in enumerate(frames):
            if atoms.pbc.any():
                raise DataError(f"frame {i}: N-centre features are for isolated molecules (the frame is periodic)")
            extra = set(atoms.numbers.tolist()) - known
            if extra:
                names = ", ".join(chemical_symbols[z] for z in sorted(extra))
                raise DataError(f"frame {i}: element(s) {names} not among the features' species "
                                f"({', '.join(chemical_symbols[z] for z in self.species)})")

    def expand(self, frames: Sequence[Atoms]) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
        """``(ρ per l (n_atoms, 2l+1, n_species·n_radial), g per l (n_ordered_pairs, 2l+1, n_radial),
        ordered pairs (n_ordered_pairs, 2) sorted, frame offsets (n_frames+1,))`` — ρ uncompressed."""
        rho, ylm, radial, pairs, offsets = self._expand(frames)
        return rho, [y[:, :, None] * r[:, None, :] for y, r in zip(ylm, radial)], pairs, offsets

    def _expand(self, frames: Sequence[Atoms]):
        """ρ, and the pair expansion as its factors (harmonics, radial parts; see
        :meth:`PairExpansion.factors`), pairs, offsets."""
        self._check(frames)
        pairs, ylm, radial, offsets = self.expansion.factors(frames)
        g = [y[:, :, None] * r[:, None, :] for y, r in zip(ylm, radial)]
        numbers = np.concatenate([a.numbers for a in frames]).astype(int) if len(frames) else np.zeros(0, int)
        lookup = np.zeros(max(self.species) + 1, dtype=int)
        lookup[list(self.species)] = np.arange(len(self.species))
        rho = self.expansion.densities(pairs, g, lookup[numbers], len(self.species), len(numbers))
        return rho, ylm, radial, pairs, offsets

    # -- features ----------------------------------------------------------------------------
    def _products(self, lmax1: int, lmax2: int, same: bool):
        """(l1, l2, [λ, ...]) with l1 ≤ lmax1, l2 ≤ lmax2, |l1-l2| ≤ λ ≤ min(l1+l2, max_lambda)
        (l1 ≤ l2 when ``same``)."""
        for l1 in range(lmax1 + 1):
            for l2 in range(l1 if same else 0, lmax2 + 1):
                lambdas = list(range(abs(l1 - l2), min(l1 + l2, self.max_lambda) + 1))
                if lambdas:
                    yield l1, l2, lambdas

    def onsite_features(self, rho: Sequence[np.ndarray]) -> dict[Key, np.ndarray]:
        """{(λ, σ): (n_atoms, 2λ+1, n)}: ``ρ^λ`` then ``[ρ ⊗ ρ]^{λσ}`` for l1 ≤ l2 (for l1 = l2 only
        the independent channel pairs: q1 ≤ q2 for σ = +1, q1 < q2 for σ = -1)."""
        q = rho[0].shape[2]
        plan = _coupling_plan(self.max_angular, self.max_angular, self.max_lambda, True, q, q)
        coupled = plan.couple(np.concatenate(rho, axis=1), np.concatenate(rho, axis=1))
        out = {}
        for key, (rows, cols) in plan.gather.items():
            part = np.moveaxis(coupled[rows, :, cols], -1, 0)  # (n, 2λ+1, F)
            out[key] = np.concatenate([rho[key[0]], part], axis=2) if key[1] == 1 and key[0] <= self.max_angular else part
        return out

    def pair_features(self, rho: Sequence[np.ndarray], ylm: Sequence[np.ndarray], radial: Sequence[np.ndarray],
                      pairs: np.ndarray) -> dict[Key, np.ndarray]:
        """{(λ, σ): (n_ordered_pairs, 2λ+1, n)}: ``g^λ`` then ``[ρ_i ⊗ g_ij]^{λσ}`` per ordered pair.

        ``g_ij^{l2} = Y^{l2}(r̂_ij) ⊗ R_{l2}(r_ij)`` is a product, so ``[ρ_i ⊗ g_ij]^λ`` is
        ``[ρ_i ⊗ Y^{l2}]^λ ⊗ R_{l2}``: the coupling runs on the harmonics alone (n_radial times
        less work) and the radial part multiplies the result."""
        p = rho[0].shape[2]
        plan = _coupling_plan(self.max_angular, self.pair_max_angular, self.max_lambda, False, p, 1)
        harmonics = np.concatenate(ylm[:self.pair_max_angular + 1], axis=1)[:, :, None]
        coupled = plan.couple(np.concatenate(rho, axis=1)[pairs[:, 0]], harmonics)
        radial_by_l = np.stack(radial[:self.pair_max_angular + 1], axis=1)  # (n, L, n_radial)
        out = {}
        for key, (rows, cols) in plan.gather.items():
            part = np.moveaxis(coupled[rows, :, cols], -1, 0)  # (n, 2λ+1, F)
            rad = radial_by_l[:, plan.second_l[key]]  # (n, F, n_radial)
            part = (part[:, :, :, None] * rad[:, None]).reshape(part.shape[0], part.shape[1], -1)
            lam, sigma = key
            if sigma == 1 and lam <= self.pair_max_angular:
                part = np.concatenate([ylm[lam][:, :, None] * radial[lam][:, None, :], part], axis=2)
            out[key] = part
        return out

    def features(self, frames: Sequence[Atoms], gradients: bool = False) -> NCentreFeatures:
        """The features the models of an MD step share: :meth:`compute`'s (the featurizer protocol)."""
        return self.compute(frames, gradients=gradients)

    def compute(self, frames: Sequence[Atoms], gradients: bool = False) -> NCentreFeatures:
        """The :class:`NCentreFeatures` of a batch of molecules (no gradients: the Hamiltonian
        model predicts no forces)."""
        if gradients:
            raise ConfigError("N-centre features have no position gradients")
        frames = list(frames)
        rho, ylm, radial, ordered, offsets = self._expand(frames)
        if self.projection is not None:
            rho = [r @ p for r, p in zip(rho, self.projection)]
        numbers = np.concatenate([a.numbers for a in frames]).astype(int)
        atom_frame = np.repeat(np.arange(len(frames)), np.diff(offsets))
        atom_index = np.arange(len(numbers)) - offsets[atom_frame]
        onsite = self.onsite_features(rho)
        rank = np.searchsorted(self.species, numbers)
        i, j = ordered[:, 0], ordered[:, 1]
        canonical = (rank[i] < rank[j]) | ((rank[i] == rank[j]) & (i < j))
        code = i * len(numbers) + j  # ascending: the pairs are sorted by (i, j)
        ij = np.flatnonzero(canonical)
        ji = np.searchsorted(code, j[ij] * len(numbers) + i[ij])
        by_pair = self.pair_features(rho, ylm, radial, ordered)
        return NCentreFeatures(
            species=self.species, atom_frame=atom_frame, atom_index=atom_index, atom_species=numbers,
            pair_first=i[ij], pair_second=j[ij], onsite=onsite,
            pair_ij={k: v[ij] for k, v in by_pair.items()}, pair_ji={k: v[ji] for k, v in by_pair.items()},
            frames=frames)
