"""N-centre equivariant features: one-centre (atom) and two-centre (pair) features split by
rotational order λ and parity σ (Nigam, Willatt, Ceriotti, JCP 156, 014115, 2022).

From two featomic expansions of a batch of molecules —

* the atom-centred neighbour density ``ρ_i`` (``featomic.SphericalExpansion``; dense here as
  ``(n_atoms, 2l+1, n_species·n_radial)`` per l, species outer), and
* the pair expansion ``g_ij`` (``featomic.SphericalExpansionByPair``: the density of atom j alone,
  seen from atom i, ``(n_ordered_pairs, 2l+1, n_pair_radial)`` per l; every ordered pair i ≠ j
  within ``pair_cutoff``) —

the features of order (λ, σ) are

* one-centre, atom i: ``ρ_i^λ`` (ν = 1, σ = +1 only) and the λ-SOAP ``[ρ_i ⊗ ρ_i]^{λσ}`` (ν = 2);
* two-centre, ordered pair (i, j): ``g_ij^λ`` (σ = +1 only) and ``[ρ_i ⊗ g_ij]^{λσ}`` — what
  featomic's ``clebsch_gordan.EquivariantPowerSpectrumByPair`` computes (tested against it) —

with ``[a ⊗ b]^{λσ}_μ = Σ_{m1 m2} C^{l1 l2 λ}_{m1 m2 μ} a^{l1}_{m1} b^{l2}_{m2}`` (featomic's real
Clebsch–Gordan coefficients) and ``σ = (-1)^{l1+l2+λ}``: under a rotation or reflection ``R`` a
feature of order (λ, σ) transforms as ``σ^{[det R < 0]} D^λ(R)`` (σ = -1: a pseudo-tensor).
Both orientations of each unordered pair are returned, so a model can form the exchange-symmetric
and antisymmetric combinations ``f_ij ± f_ji`` of same-species pairs (:func:`exchange_combinations`).

The couplings are numpy einsums over all atoms/pairs of the batch at once (featomic's own
coupling code takes ~1 s for one ethanol molecule; this ~1 ms).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from ..core.errors import ConfigError, DataError

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
    outer = (a[:, :, None, :, None] * b[:, None, :, None, :]).reshape(n, (2 * l1 + 1) * (2 * l2 + 1), p * q)
    return [coupling_matrix(l1, l2, lam) @ outer for lam in lambdas]


@functools.lru_cache(maxsize=None)
def coupling_matrix(l1: int, l2: int, lam: int) -> np.ndarray:
    """(2λ+1, (2l1+1)(2l2+1)): the product basis ``(m1, m2)`` (m1 outer) -> the order-λ part, in
    featomic's convention (see :func:`couple`). Stacked over all λ = |l1-l2| … l1+l2 these rows
    form an orthogonal matrix."""
    cg = cg_coefficients(max(l1, l2, lam))[(l1, l2, lam)] * (-1.0) ** (l1 + l2 + lam)
    return np.ascontiguousarray(cg.reshape(-1, 2 * lam + 1).T)


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
    cutoff, max_radial, max_angular : the atom-centred density (Å; featomic counts radial
        functions from 0, so there are ``max_radial + 1``).
    pair_cutoff, pair_max_radial, pair_max_angular : the pair expansion; pairs farther apart than
        ``pair_cutoff`` get no features (a model predicts zero for them).
    density_width : Gaussian width of the atomic densities, Å.
    max_lambda : highest λ computed.
    projection : optional per-l matrices (n_species·n_radial, k) compressing the density's channels
        (species and radial functions mixed) before the products; :meth:`fit_projection` finds them
        as the leading principal directions of training densities. They act on channels only, so
        the features stay equivariant; they cut the λ-SOAP size by (k / n_channels)².
    """

    def __init__(self, species: Sequence[int], cutoff: float = 4.0, max_radial: int = 5, max_angular: int = 3,
                 pair_cutoff: float = 6.0, pair_max_radial: int = 5, pair_max_angular: int = 3,
                 density_width: float = 0.3, smoothing_width: float = 0.5, max_lambda: int = 2,
                 projection: Sequence[np.ndarray] | None = None) -> None:
        self.species = tuple(sorted(int(z) for z in set(species)))
        if not self.species:
            raise ConfigError("NCentreFeaturizer needs at least one species")
        self.cutoff, self.max_radial, self.max_angular = float(cutoff), int(max_radial), int(max_angular)
        self.pair_cutoff, self.pair_max_radial = float(pair_cutoff), int(pair_max_radial)
        self.pair_max_angular = int(pair_max_angular)
        self.density_width, self.smoothing_width = float(density_width), float(smoothing_width)
        self.max_lambda = int(max_lambda)
        self.projection = None if projection is None else [np.asarray(p, dtype=float) for p in projection]
        self._calculators = None

    def fit_projection(self, frames: Sequence[Atoms], n_channels: int) -> list[np.ndarray]:
        """Set and return :attr:`projection`: per l, the ``n_channels`` leading eigenvectors of
        ``Σ ρ ρᵀ`` over the atoms and m of ``frames`` (all channels when there are fewer)."""
        self.projection = None
        rho, _ = self.densities(frames)
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
        return (self.species, self.cutoff, self.max_radial, self.max_angular, self.pair_cutoff, self.pair_max_radial,
                self.pair_max_angular, self.density_width, self.smoothing_width, self.max_lambda,
                None if self.projection is None else tuple(p.shape for p in self.projection))

    # -- featomic ----------------------------------------------------------------------------
    def _hypers(self, cutoff: float, max_radial: int, max_angular: int) -> dict:
        return {"cutoff": {"radius": cutoff, "smoothing": {"type": "ShiftedCosine", "width": self.smoothing_width}},
                "density": {"type": "Gaussian", "width": self.density_width},
                "basis": {"type": "TensorProduct", "max_angular": max_angular,
                          "radial": {"type": "Gto", "max_radial": max_radial}}}

    def calculators(self):
        """The featomic ``(SphericalExpansion, SphericalExpansionByPair)`` behind these features."""
        if self._calculators is None:
            import featomic

            self._calculators = (
                featomic.SphericalExpansion(**self._hypers(self.cutoff, self.max_radial, self.max_angular)),
                featomic.SphericalExpansionByPair(**self._hypers(self.pair_cutoff, self.pair_max_radial,
                                                                 self.pair_max_angular)))
        return self._calculators

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

    def densities(self, frames: Sequence[Atoms]) -> tuple[list[np.ndarray], np.ndarray]:
        """Dense ``ρ`` per l (n_atoms, 2l+1, n_species·n_radial) and the frame offsets (n_frames+1,)."""
        from metatensor import Labels

        self._check(frames)
        offsets = np.r_[0, np.cumsum([len(a) for a in frames])]
        n_atoms = int(offsets[-1])
        rho = [np.zeros((n_atoms, 2 * l + 1, len(self.species) * (self.max_radial + 1)))
               for l in range(self.max_angular + 1)]
        types = Labels(["neighbor_type"], np.array(self.species, dtype=np.int32).reshape(-1, 1))
        tmap = self.calculators()[0].compute(list(frames)).keys_to_properties(types).keys_to_samples("center_type")
        for key, block in zip(tmap.keys, tmap.blocks()):
            samples = block.samples.values
            rho[int(key["o3_lambda"])][offsets[samples[:, 0]] + samples[:, 1]] = block.values
        return rho, offsets

    def pair_expansion(self, frames: Sequence[Atoms], offsets: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Dense ``g`` per l (n_ordered_pairs, 2l+1, n_pair_radial) and the (i, j) global atom
        indices of each row (n_ordered_pairs, 2), sorted."""
        tmap = self.calculators()[1].compute(list(frames)).keys_to_samples(["first_atom_type", "second_atom_type"])
        g, pairs = [], None
        for block in tmap.blocks():
            s = block.samples.values
            s = s[s[:, 1] != s[:, 2]]  # molecules: no self pairs
            ij = np.stack([offsets[s[:, 0]] + s[:, 1], offsets[s[:, 0]] + s[:, 2]], axis=1)
            order = np.lexsort((ij[:, 1], ij[:, 0]))
            if pairs is None:
                pairs = ij[order]
            elif not np.array_equal(ij[order], pairs):  # pragma: no cover - featomic's contract
                raise RuntimeError("featomic's pair expansion lists different pairs for different l")
            g.append(block.values[block.samples.values[:, 1] != block.samples.values[:, 2]][order])
        return g, pairs

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
        parts: dict[Key, list[np.ndarray]] = {}
        for lam in range(min(self.max_lambda, self.max_angular) + 1):
            parts.setdefault((lam, 1), []).append(rho[lam])
        q = rho[0].shape[2]
        upper = np.triu_indices(q)
        strict = np.triu_indices(q, 1)
        for l1, l2, lambdas in self._products(self.max_angular, self.max_angular, same=True):
            for lam, f in zip(lambdas, couple(rho[l1], rho[l2], l1, l2, lambdas)):
                sigma = (-1) ** (l1 + l2 + lam)
                if l1 == l2:
                    i, j = upper if sigma == 1 else strict
                    f = f.reshape(f.shape[0], f.shape[1], q, q)[:, :, i, j]
                parts.setdefault((lam, sigma), []).append(f)
        return {k: np.concatenate(v, axis=2) for k, v in sorted(parts.items())}

    def pair_features(self, rho: Sequence[np.ndarray], g: Sequence[np.ndarray], pairs: np.ndarray) -> dict[Key, np.ndarray]:
        """{(λ, σ): (n_ordered_pairs, 2λ+1, n)}: ``g^λ`` then ``[ρ_i ⊗ g_ij]^{λσ}`` per ordered pair."""
        parts: dict[Key, list[np.ndarray]] = {}
        for lam in range(min(self.max_lambda, self.pair_max_angular) + 1):
            parts.setdefault((lam, 1), []).append(g[lam])
        first = pairs[:, 0]
        for l1, l2, lambdas in self._products(self.max_angular, self.pair_max_angular, same=False):
            rho_first = rho[l1][first]
            for lam, f in zip(lambdas, couple(rho_first, g[l2], l1, l2, lambdas)):
                parts.setdefault((lam, (-1) ** (l1 + l2 + lam)), []).append(f)
        return {k: np.concatenate(v, axis=2) for k, v in sorted(parts.items())}

    def compute(self, frames: Sequence[Atoms]) -> NCentreFeatures:
        """The :class:`NCentreFeatures` of a batch of molecules."""
        frames = list(frames)
        rho, offsets = self.densities(frames)
        if self.projection is not None:
            rho = [r @ p for r, p in zip(rho, self.projection)]
        numbers = np.concatenate([a.numbers for a in frames]).astype(int)
        atom_frame = np.repeat(np.arange(len(frames)), np.diff(offsets))
        atom_index = np.arange(len(numbers)) - offsets[atom_frame]
        onsite = self.onsite_features(rho)
        g, ordered = self.pair_expansion(frames, offsets)
        rank = np.array([self.species.index(z) for z in numbers]) if len(numbers) else np.zeros(0, int)
        i, j = ordered[:, 0], ordered[:, 1]
        canonical = (rank[i] < rank[j]) | ((rank[i] == rank[j]) & (i < j))
        code = i * len(numbers) + j  # ascending: the pairs are sorted by (i, j)
        ij = np.flatnonzero(canonical)
        ji = np.searchsorted(code, j[ij] * len(numbers) + i[ij])
        by_pair = self.pair_features(rho, g, ordered)
        return NCentreFeatures(
            species=self.species, atom_frame=atom_frame, atom_index=atom_index, atom_species=numbers,
            pair_first=i[ij], pair_second=j[ij], onsite=onsite,
            pair_ij={k: v[ij] for k, v in by_pair.items()}, pair_ji={k: v[ji] for k, v in by_pair.items()})
