"""ν = 3 features against featomic (issue 27, point 1): the uncompressed NICE iteration of
:mod:`mdplugin.features.nice` (our expansion, then :func:`cg_iterate` twice — the part before the
compression) equals ``featomic.clebsch_gordan.DensityCorrelations(n_correlations=2)`` applied to
featomic's own ``SphericalExpansion``, to 1e-10 relative, for λ = 0, 1, 2 and both parities σ, on
molecules of two compositions and a periodic box.

Conventions, mapped explicitly here (none of them needs a sign or a factor):

* featomic keeps one block per coupling path ``(l_1, l_2, k_2, l_3)`` with ``l_1 ≤ l_2 ≤ l_3``
  (``skip_redundant=True``); ours concatenates the paths of a (λ, σ) block along the feature axis
  and keeps every ``l_3`` (``l_1 ≤ l_2`` only). Each featomic block is compared with our
  :func:`cg_iterate` run on the single blocks of that path; the paths with ``l_3 < l_2`` are ours
  only (featomic's ``skip_redundant`` drops them as linear combinations of the others).
* properties: featomic's ``(neighbor_k_type, n_k)`` for k = 1, 2, 3 against ours
  ``f = (q_1 · P + q_2) · P + q_3`` with ``q = species index · n_radial + n`` (the expansion's columns).
* the real Clebsch–Gordan coefficients, the m order (−l … l) and the parity label σ = σ₁σ₂(−1)^(l₁+l₂+λ)
  (featomic's ``o3_sigma``) are the same, but featomic's coupling multiplies each product by
  (−1)^(l₁+l₂+λ) (its ``_cg_couple_sparse``/``_dense``) and ours does not: a path with an odd
  number of odd (pseudo-tensor) coupling steps has the opposite sign, (−1)^((l₁+l₂+k₂)+(k₂+l₃+λ)).
  The σ = +1 blocks reached through two even steps (all of λ-SOAP, ν = 2) agree with ratio +1;
  signs do not change any kernel, norm or model.

The compressed features are a rotation of these: with every principal direction kept
(``n_components`` ≥ the rank), the compressed NICE features of the fitted centres have exactly
the Gram matrix of the uncompressed ones, so linear kernels equal featomic's.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from mdplugin.features.expansion import SphericalExpansion
from mdplugin.features.nice import NiceFeatures, cg_iterate

HYPERS = dict(cutoff=3.5, max_radial=2, max_angular=2, gaussian_width=0.4, smoothing_width=0.5)
TOL = 1e-10


def molecules():
    rng = np.random.default_rng(3)
    frames = [molecule("CH3CH2OH"), molecule("CH3CONH2"), molecule("CH3SH")]
    for a in frames:
        a.positions += rng.normal(scale=0.05, size=a.positions.shape)
    return frames, [1, 6, 7, 8, 16]


def periodic_box():
    rng = np.random.default_rng(11)
    cell = np.array([[4.2, 0.0, 0.0], [0.7, 4.0, 0.0], [-0.4, 0.5, 4.4]])
    numbers = [8, 1, 1] * 3 + [6, 1]
    positions = []
    while len(positions) < len(numbers):  # atoms at least 0.8 Å apart (minimum image)
        trial = rng.random(3) @ cell
        atoms = Atoms(positions=np.vstack([np.array(positions).reshape(-1, 3), trial]), cell=cell, pbc=True)
        if len(positions) == 0 or atoms.get_distances(len(positions), range(len(positions)), mic=True).min() > 0.8:
            positions.append(trial)
    return [Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)], [1, 6, 8]


def featomic_nu3(calc: SphericalExpansion, frames, lambdas=(0, 1, 2)):
    """featomic's ν = 3 density correlations of featomic's own expansion (neighbour types as properties)."""
    from featomic.clebsch_gordan import DensityCorrelations
    from metatensor import Labels

    systems = [a if a.pbc.any() else Atoms(a.numbers, a.positions) for a in frames]
    density = calc.featomic_reference().compute(systems).keys_to_properties("neighbor_type")
    keys = Labels(["o3_lambda"], np.array([[lam] for lam in lambdas], dtype=np.int32))
    correlations = DensityCorrelations(n_correlations=2, max_angular=2 * calc.max_angular)
    return correlations.compute(density, angular_cutoff=calc.max_angular, selected_keys=keys)


def our_path(values, l1, l2, k2, s2, l3, lam, sigma, max_angular):
    """Our ν = 3 block (λ, σ) of one coupling path (the expansion's per-l arrays ``values``)."""
    nu2 = cg_iterate({(l1, 1): values[l1]}, {(l2, 1): values[l2]}, max_angular, keys=[(k2, s2)])
    return cg_iterate(nu2, {(l3, 1): values[l3]}, max_angular, keys=[(lam, sigma)])[(lam, sigma)]


@pytest.mark.parametrize("case", [molecules, periodic_box], ids=["molecules", "periodic-box"])
def test_uncompressed_nu3_equals_featomic_density_correlations(case):
    frames, species = case()
    calc = SphericalExpansion(species, **HYPERS)
    values = calc.compute(frames).values
    ref = featomic_nu3(calc, frames)
    offsets = np.r_[0, np.cumsum([len(a) for a in frames])]
    n_radial, n_q = calc.max_radial + 1, len(species) * (calc.max_radial + 1)
    names = [f"{what}_{k}" for k in (1, 2, 3) for what in ("neighbor", "n")]
    checked = {}
    scale = {lam: max(np.abs(b.values).max() for k, b in ref.items() if k["o3_lambda"] == lam) for lam in (0, 1, 2)}
    for key, block in ref.items():
        lam, sigma, l1, l2, k2, l3 = (int(key[n]) for n in ("o3_lambda", "o3_sigma", "l_1", "l_2", "k_2", "l_3"))
        s2 = (-1) ** ((l1 + l2 + k2) % 2)
        ours = our_path(values, l1, l2, k2, s2, l3, lam, sigma, calc.max_angular)
        props = block.properties
        cols = np.zeros(len(props), dtype=int)
        for what, weight in ((1, n_q * n_q), (2, n_q), (3, 1)):
            q = (np.searchsorted(species, props.column(f"neighbor_{what}_type")) * n_radial
                 + props.column(f"n_{what}"))
            cols += q * weight
        assert sorted(props.names) == sorted(f"neighbor_{k}_type" if w == "neighbor" else f"n_{k}"
                                             for k in (1, 2, 3) for w in ("neighbor", "n")), names
        rows = offsets[block.samples.column("system")] + block.samples.column("atom")
        # featomic multiplies each coupling by (−1)^(l1+l2+λ) (``_cg_couple_*``), we do not: a
        # pseudo-tensor step (odd l1+l2+λ) flips the sign, once per such step of the path
        phase = (-1) ** ((l1 + l2 + k2) + (k2 + l3 + lam))
        expected = phase * block.values
        got = ours[rows][:, :, cols]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= TOL * scale[lam], (lam, sigma, l1, l2, k2, l3)
        checked[(lam, sigma)] = checked.get((lam, sigma), 0) + len(rows)
    # every centre in every (λ, σ) block that exists for l ≤ 2 was compared, both parities for λ ≥ 1
    assert {(0, 1), (0, -1), (1, 1), (1, -1), (2, 1), (2, -1)} <= set(checked)
    assert scale[0] > 0 and scale[2] > 0


def test_compressed_nice_keeps_featomic_kernels_when_nothing_is_cut():
    """With every principal direction kept, the compressed ν = 3 features of the fitted centres have
    the Gram matrix (linear kernel over μ and features, between centres of one element) of featomic's, summed over its paths
    with ``l_1 ≤ l_2`` (our ν = 3 blocks also hold the paths featomic calls redundant, so the
    comparison takes featomic with ``skip_redundant=False`` restricted to ``l_1 ≤ l_2``)."""
    from featomic.clebsch_gordan import DensityCorrelations
    from metatensor import Labels

    frames, species = molecules()
    calc = SphericalExpansion(species, **HYPERS)
    values = calc.compute(frames).values
    n = len(values[0])
    nice = NiceFeatures(3, calc.max_angular, lambdas=(0, 1, 2), n_components=100_000).fit(values)
    ours = nice.transform(values)
    systems = [Atoms(a.numbers, a.positions) for a in frames]
    density = calc.featomic_reference().compute(systems).keys_to_properties("neighbor_type")
    keys = Labels(["o3_lambda", "o3_sigma"], np.array([[0, 1], [1, 1], [2, 1]], dtype=np.int32))
    ref = DensityCorrelations(n_correlations=2, max_angular=2 * calc.max_angular, skip_redundant=False).compute(
        density, angular_cutoff=calc.max_angular, selected_keys=keys)
    offsets = np.r_[0, np.cumsum([len(a) for a in frames])]
    for lam in (0, 1, 2):
        gram = np.zeros((n, n))
        for key, block in ref.items():
            if int(key["o3_lambda"]) != lam or int(key["l_1"]) > int(key["l_2"]):
                continue
            full = np.zeros((n, 2 * lam + 1, block.values.shape[2]))
            rows = offsets[block.samples.column("system")] + block.samples.column("atom")
            full[rows] = block.values
            gram += np.einsum("amf,bmf->ab", full, full)
        # featomic's blocks are per centre type: compare centres of the same element
        numbers = np.concatenate([a.numbers for a in frames])
        same = numbers[:, None] == numbers[None, :]
        mine = np.einsum("amf,bmf->ab", ours[lam], ours[lam]) * same
        assert np.abs(mine - gram).max() <= 1e-9 * np.abs(gram).max(), lam
