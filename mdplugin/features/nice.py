"""NICE: equivariant features of body order ν ≥ 3 by iterated, compressed Clebsch–Gordan products.

Nigam, Pozdnyakov, Ceriotti, JCP 153, 121101 (2020). Starting from the neighbour density of every
centre, ``ρ^(1) = c^l_i[m, q]`` (the :class:`~mdplugin.features.expansion.Expansion`, ``q`` =
(species, radial)), each iteration couples the previous body order with the density::

    ρ^(ν+1)_{λσ}[μ, (f, q)] = Σ_{m1 m2} C^{λ1 l λ}_{m1 m m2..μ} ρ^(ν)_{λ1σ1}[m1, f] c^l[m, q],
    σ = σ1 · (−1)^(λ1 + l + λ)

(σ the parity relative to (−1)^λ: σ = +1 are proper tensors, σ = −1 pseudo-tensors, as
featomic's ``o3_sigma``), then compresses every (λ, σ) block by an uncentred principal-component
projection over the feature index (it commutes with rotations and reflections, so the compressed
features stay exactly equivariant) to at most ``n_components`` features. ν = 2 is the λ-SOAP
power spectrum of both parities (l1 ≤ l2); ν = 3 the bispectrum and its equivariant
generalisations, which resolve environments the power spectrum cannot (Pozdnyakov et al., PRL 125,
166001, 2020).

:class:`NiceFeatures` is fitted on the expansion of some training centres (the projections are
learned state, saved as plain arrays by the model that owns it) and then maps any expansion of the
same species and hyper-parameters to ``{λ: (n, 2λ+1, k)}`` of σ = +1 at the top body order. All
products are batched over centres (one ``einsum`` per (block, l) pair) in chunks of ``chunk``
centres, so memory stays at ``chunk × (2λ+1) × F`` before each compression.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .lambda_soap import real_clebsch_gordan

__all__ = ["cg_iterate", "NiceFeatures"]

Key = tuple  # (λ, σ)


def _density(values: Sequence[np.ndarray], rows=slice(None)) -> dict:
    """The density blocks ``{(l, +1): (n, 2l+1, P)}`` of an expansion's per-l arrays."""
    return {(l, 1): np.asarray(v[rows]) for l, v in enumerate(values)}


def cg_iterate(blocks: dict, density: dict, max_angular: int, keys: Sequence[Key] | None = None,
               symmetric: bool = False) -> dict:
    """One NICE iteration without compression: ``{(λ, σ): (n, 2λ+1, F)}`` from every pair of a
    ``blocks`` key (λ1, σ1) (n, 2λ1+1, F1) and a ``density`` key (l, +1) (n, 2l+1, P), for
    λ ≤ ``max_angular`` (or only the requested ``keys``); features are the (f, q) products,
    concatenated over the pairs in key order. ``symmetric``: ``blocks`` is the density itself
    (ν = 2): only pairs λ1 ≤ l (the others repeat them)."""
    wanted = None if keys is None else {tuple(k) for k in keys}
    parts: dict = {}
    for (l1, s1), a in sorted(blocks.items()):
        for (l2, s2), b in sorted(density.items()):
            if symmetric and l1 > l2:
                continue
            for lam in range(abs(l1 - l2), min(l1 + l2, max_angular) + 1):
                sigma = s1 * s2 * (-1) ** ((l1 + l2 + lam) % 2)
                if wanted is not None and (lam, sigma) not in wanted:
                    continue
                cg = real_clebsch_gordan(l1, l2, lam)  # (2l1+1, 2l2+1, 2λ+1)
                # t[n, μ, f, q] = Σ C[m1, m2, μ] a[n, m1, f] b[n, m2, q]
                g = np.einsum("amu,nmq->naqu", cg, b, optimize=True)  # (n, 2l1+1, q, 2λ+1)
                t = np.einsum("naf,naqu->nufq", a, g, optimize=True)
                parts.setdefault((lam, sigma), []).append(t.reshape(len(a), 2 * lam + 1, -1))
    return {key: np.concatenate(p, axis=2) for key, p in sorted(parts.items())}


def _principal_directions(x: np.ndarray, k: int) -> np.ndarray:
    """Leading right singular vectors (F, ≤k) of the rows (r, F), uncentred; directions with a
    singular value below 1e-10 of the largest are dropped. Signs fixed (largest entry positive)."""
    if x.shape[0] == 0 or x.shape[1] == 0:
        return np.zeros((x.shape[1], 0))
    _, sv, vt = np.linalg.svd(x, full_matrices=False)
    keep = min(k, int(np.sum(sv > 1e-10 * max(sv[0], 1e-300))))
    basis = vt[:keep].T
    signs = np.sign(basis[np.argmax(np.abs(basis), axis=0), np.arange(keep)])
    return np.ascontiguousarray(basis * np.where(signs == 0, 1.0, signs))


class NiceFeatures:
    """Compressed NICE features of body order ``body_order`` (3 or 4) from a spherical expansion.

    Parameters
    ----------
    body_order : ν of the features given out (3: the bispectrum level, 4: one more iteration).
    max_angular : the expansion's highest l (the λ of intermediate blocks stop there too).
    lambdas : the λ of the output (σ = +1), e.g. (0, 2) for a polarizability.
    n_components : features kept per (λ, σ) block after every compression (also the output's).
    chunk : centres per batch of products (memory).

    :meth:`fit` learns the projections (``projections[ν][(λ, σ)]`` (F, k)); :meth:`transform` maps an
    expansion's per-l arrays to ``{λ: (n, 2λ+1, k_λ)}``. :meth:`to_arrays` / :meth:`from_arrays`
    store the projections as plain arrays (model files)."""

    def __init__(self, body_order: int, max_angular: int, lambdas: Sequence[int], n_components: int = 64,
                 chunk: int = 256):
        if int(body_order) not in (3, 4):
            raise ValueError(f"NICE body_order must be 3 or 4, got {body_order}")
        self.body_order = int(body_order)
        self.max_angular = int(max_angular)
        self.lambdas = tuple(sorted({int(lam) for lam in lambdas}))
        self.n_components = int(n_components)
        self.chunk = int(chunk)
        self.projections: dict[int, dict[Key, np.ndarray]] = {}

    # -- the iteration ----------------------------------------------------------------------------
    def _keys(self, nu: int):
        """The (λ, σ) blocks computed at body order ν: all of them below the top, the output ones at it."""
        return None if nu < self.body_order else [(lam, 1) for lam in self.lambdas]

    def _step(self, nu: int, blocks: dict | None, density: dict) -> dict:
        if nu == 2:
            return cg_iterate(density, density, self.max_angular, self._keys(2), symmetric=True)
        return cg_iterate(blocks, density, self.max_angular, self._keys(nu))

    def _compress(self, nu: int, blocks: dict) -> dict:
        out = {}
        for key, x in blocks.items():
            basis = self.projections[nu].get(key)
            if basis is not None and basis.shape[1]:
                out[key] = x @ basis
        return out

    def fit(self, values: Sequence[np.ndarray]) -> "NiceFeatures":
        """Learn the projections from the per-l expansion arrays ``values`` [(n, 2l+1, P)] of some
        training centres (all of them at once: pass a few hundred to a few thousand)."""
        density = _density(values)
        blocks = None
        self.projections = {}
        for nu in range(2, self.body_order + 1):
            raw = self._step(nu, blocks, density)
            self.projections[nu] = {
                key: _principal_directions(x.reshape(-1, x.shape[-1]), self.n_components) for key, x in raw.items()
            }
            blocks = self._compress(nu, raw)
        return self

    def transform(self, values: Sequence[np.ndarray]) -> dict[int, np.ndarray]:
        """``{λ: (n, 2λ+1, k_λ)}`` (σ = +1, body order ``body_order``) of every centre of ``values``."""
        if not self.projections:
            raise RuntimeError("NiceFeatures.transform before fit")
        n = len(values[0])
        widths = {lam: self.projections[self.body_order].get((lam, 1), np.zeros((0, 0))).shape[1]
                  for lam in self.lambdas}
        out = {lam: np.zeros((n, 2 * lam + 1, widths[lam])) for lam in self.lambdas}
        for start in range(0, n, self.chunk):
            rows = slice(start, min(n, start + self.chunk))
            density = _density(values, rows)
            blocks = None
            for nu in range(2, self.body_order + 1):
                blocks = self._compress(nu, self._step(nu, blocks, density))
            for lam in self.lambdas:
                if (lam, 1) in blocks:
                    out[lam][rows] = blocks[(lam, 1)]
        return out

    # -- files --------------------------------------------------------------------------------------
    def to_arrays(self, prefix: str = "nice") -> dict[str, np.ndarray]:
        """The projections as ``{f"{prefix}_{ν}_{λ}_{σ}": (F, k)}`` (σ as p/m)."""
        return {f"{prefix}_{nu}_{lam}_{'p' if sigma > 0 else 'm'}": basis
                for nu, blocks in self.projections.items() for (lam, sigma), basis in blocks.items()}

    def load_arrays(self, arrays: dict, prefix: str = "nice") -> "NiceFeatures":
        """Set the projections from :meth:`to_arrays`' output."""
        self.projections = {}
        for name, basis in arrays.items():
            if not name.startswith(prefix + "_"):
                continue
            nu, lam, sigma = name[len(prefix) + 1 :].split("_")
            self.projections.setdefault(int(nu), {})[(int(lam), 1 if sigma == "p" else -1)] = np.asarray(basis)
        return self
