"""Draws of the λ-SOAP kernel's prior functions through its explicit features (for posterior samples).

For ζ = 1 and 2 the λ-SOAP kernel between two centres of one species is a dot product of
finite feature vectors built from the compressed features ``x⁰`` (k0,) and ``x^λ`` (2λ+1, kλ):

* λ > 0: ``K_{μν}(i, j) = (x⁰_i·x⁰_j)^(ζ−1) x^λ_{iμ}·x^λ_{jν} = Φ_{iμ}·Φ_{jν}`` with
  ``Φ_{iμ} = x^λ_{iμ}`` (ζ = 1) or ``x^λ_{iμ} ⊗ x⁰_i`` (ζ = 2);
* λ = 0: ``K(i, j) = (x⁰_i·x⁰_j)^ζ`` with ``Φ_i = x⁰_i`` or ``x⁰_i ⊗ x⁰_i``.

A function of the prior is ``f_μ(i) = Φ_{iμ}·g`` with ``g ~ N(0, I)`` drawn once per species (the
kernel is zero between species): ``g`` is a vector (ζ = 1) or a matrix ``G`` (ζ = 2, then
``f_μ(i) = x^λ_{iμ} G x⁰_i``), and ``Cov(f(i), f(j)) = K(i, j)`` exactly. Evaluated on every
centre and summed over the centres of each structure it is one draw of the prior of the structure
kernel, the same function on every frame. ``prior_draws`` draws the ``g``;
``prior_function`` evaluates them on centres or structures (vectorised over draws, in chunks of
centres). Cost per centre and draw: ``(2λ+1)·kλ·k0`` multiply-adds for ζ = 2.
"""

from __future__ import annotations

import numpy as np

from ..learn.lambda_kernels import sum_by_frame

__all__ = ["prior_draws", "centre_prior_function", "prior_function"]


def prior_draws(species: np.ndarray, widths: tuple[int, int], lam: int, zeta: int, n_samples: int,
                rng: np.random.Generator) -> dict[int, np.ndarray]:
    """``g`` per centre species: ``{s: (n_samples, kλ[, k0])}`` for λ > 0, ``(n_samples, k0[, k0])``
    for λ = 0 (the second axis only for ζ = 2). ``widths`` = (k0, kλ) of the compressed features."""
    if int(zeta) not in (1, 2):
        raise ValueError(f"explicit kernel features exist here for zeta 1 and 2 only, got {zeta}")
    k0, kl = widths
    first = k0 if lam == 0 else kl
    shape = (int(n_samples), first) + ((k0,) if int(zeta) == 2 else ())
    return {int(s): rng.standard_normal(shape) for s in species}


def centre_prior_function(z0: np.ndarray, zl: np.ndarray | None, lam: int, zeta: int, g: np.ndarray,
                          chunk: int = 512) -> np.ndarray:
    """The prior function ``g`` (:func:`prior_draws`, one species) on centres of that species:
    (n, 2λ+1, n_samples), unscaled kernel units. ``z0`` (n, k0), ``zl`` (n, 2λ+1, kλ) (None for λ = 0)."""
    n = len(z0)
    d = 2 * lam + 1
    n_samples = g.shape[0]
    out = np.empty((n, d, n_samples))
    for start in range(0, n, chunk):
        a0 = z0[start : start + chunk]
        c = len(a0)
        x = a0[:, None, :] if lam == 0 else zl[start : start + chunk]  # (c, d, k)
        if int(zeta) == 1:
            out[start : start + c] = (x.reshape(c * d, -1) @ g.T).reshape(c, d, n_samples)
        else:
            # f_μ = x_μ G x⁰: contract x⁰ first, (c, k0) @ (k0, S·k) -> (c, S, k)
            u = (a0 @ np.moveaxis(g, 2, 0).reshape(g.shape[2], -1)).reshape(c, n_samples, g.shape[1])
            out[start : start + c] = np.einsum("cdk,csk->cds", x, u)
    return out


def prior_function(z: dict, species: np.ndarray, frame: np.ndarray, n_frames: int, lam: int, zeta: int,
                   draws: dict[int, np.ndarray]) -> np.ndarray:
    """The prior functions ``draws`` summed over the centres of every structure: (n_frames, 2λ+1,
    n_samples), unscaled. ``z``, ``species``, ``frame``: compressed features, species and (sorted)
    frames of the centres (:mod:`mdplugin.learn.lambda_kernels` shapes)."""
    n_samples = next(iter(draws.values())).shape[0]
    d = 2 * lam + 1
    per_centre = np.zeros((len(species), d, n_samples))
    for s, g in draws.items():
        rows = np.flatnonzero(species == s)
        if len(rows):
            per_centre[rows] = centre_prior_function(z[0][rows], z[lam][rows] if lam else None, lam, zeta, g)
    return sum_by_frame(per_centre, frame, n_frames)
