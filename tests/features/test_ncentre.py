"""N-centre features: equal to featomic's equivariant power spectra, equivariant under rotations and
reflections (with their parity σ), permuted with the atoms."""

import numpy as np
import pytest
from ase.build import molecule

from mdplugin.core.errors import DataError
from mdplugin.core.tensors import random_rotation
from mdplugin.core.wigner import real_wigner_d
from mdplugin.features.ncentre import NCentreFeaturizer, coupling_matrix, couple, exchange_combinations

SPECIES = (1, 6, 8)


def _featurizer(**kw):
    hypers = dict(cutoff=4.0, max_radial=3, max_angular=3, density_width=0.3, max_lambda=2)
    hypers.update(kw)
    return NCentreFeaturizer(SPECIES, **hypers)


def _frames():
    rng = np.random.default_rng(0)
    out = []
    for name in ("H2O", "CH3CH2OH", "HCOOH"):
        a = molecule(name)
        a.positions += rng.normal(scale=0.05, size=a.positions.shape)
        out.append(a)
    return out


def _channel(types, n, n_radial):
    return np.array([SPECIES.index(t) for t in types]) * n_radial + n


MAX_RADIAL = 3


def _featomic_inputs(frames):
    """featomic's own (TensorProduct-basis) calculators, which its equivariant power spectra require,
    and their expansions as dense arrays: the coupling is compared on the same inputs."""
    import featomic
    from metatensor import Labels

    hypers = {"cutoff": {"radius": 4.0, "smoothing": {"type": "ShiftedCosine", "width": 0.5}},
              "density": {"type": "Gaussian", "width": 0.3},
              "basis": {"type": "TensorProduct", "max_angular": 2, "radial": {"type": "Gto", "max_radial": MAX_RADIAL}}}
    density, by_pair = featomic.SphericalExpansion(**hypers), featomic.SphericalExpansionByPair(**hypers)
    offsets = np.r_[0, np.cumsum([len(a) for a in frames])]
    types = Labels(["neighbor_type"], np.array(SPECIES).reshape(-1, 1))
    rho = [None] * 3
    for key, block in zip(*(lambda t: (t.keys, t.blocks()))(
            density.compute(frames).keys_to_properties(types).keys_to_samples("center_type"))):
        s = block.samples.values
        rho[int(key["o3_lambda"])] = np.zeros((offsets[-1],) + block.values.shape[1:])
        rho[int(key["o3_lambda"])][offsets[s[:, 0]] + s[:, 1]] = block.values
    g, pairs = [None] * 3, None
    for key, block in zip(*(lambda t: (t.keys, t.blocks()))(
            by_pair.compute(frames).keys_to_samples(["first_atom_type", "second_atom_type"]))):
        s = block.samples.values
        keep = s[:, 1] != s[:, 2]
        ij = np.stack([offsets[s[keep, 0]] + s[keep, 1], offsets[s[keep, 0]] + s[keep, 2]], axis=1)
        order = np.lexsort((ij[:, 1], ij[:, 0]))
        pairs = ij[order]
        g[int(key["o3_lambda"])] = block.values[keep][order]
    return (density, by_pair), rho, g, pairs, offsets


def test_pair_features_equal_featomic():
    from featomic.clebsch_gordan import EquivariantPowerSpectrumByPair

    frames = _frames()
    calculators, rho, g, pairs, offsets = _featomic_inputs(frames)
    ref = EquivariantPowerSpectrumByPair(*calculators, neighbor_types=list(SPECIES)).compute(
        frames, neighbors_to_properties=True)
    code = pairs[:, 0] * 10000 + pairs[:, 1]
    compared = 0
    for key, block in zip(ref.keys, ref.blocks()):
        lam = int(key["o3_lambda"])
        s = block.samples.values
        keep = s[:, 1] != s[:, 2]
        if lam > 2 or not keep.any():
            continue
        rows = np.searchsorted(code, (offsets[s[keep, 0]] + s[keep, 1]) * 10000 + offsets[s[keep, 0]] + s[keep, 2])
        props = block.properties.values  # l_1, l_2, neighbor_1_type, n_1, n_2
        for l1, l2 in {tuple(p) for p in props[:, :2].tolist()}:
            sel = (props[:, 0] == l1) & (props[:, 1] == l2)
            mine = couple(rho[l1][pairs[rows, 0]], g[l2][rows], l1, l2, [lam])[0]
            col = _channel(props[sel, 2], props[sel, 3], MAX_RADIAL + 1) * (MAX_RADIAL + 1) + props[sel, 4]
            np.testing.assert_allclose(mine[:, :, col], block.values[keep][:, :, sel], atol=1e-14, rtol=1e-10)
            compared += 1
    assert compared > 50


def test_onsite_features_equal_featomic():
    from featomic.clebsch_gordan import EquivariantPowerSpectrum

    frames = _frames()
    calculators, rho, _, _, offsets = _featomic_inputs(frames)
    ref = EquivariantPowerSpectrum(calculators[0], neighbor_types=list(SPECIES)).compute(
        frames, neighbors_to_properties=True)
    q = len(SPECIES) * (MAX_RADIAL + 1)
    compared = 0
    for key, block in zip(ref.keys, ref.blocks()):
        lam = int(key["o3_lambda"])
        s = block.samples.values
        if lam > 2 or not len(s):
            continue
        rows = offsets[s[:, 0]] + s[:, 1]
        props = block.properties.values  # l_1, l_2, neighbor_1_type, n_1, neighbor_2_type, n_2
        for l1, l2 in {tuple(p) for p in props[:, :2].tolist()}:
            sel = (props[:, 0] == l1) & (props[:, 1] == l2)
            p = props[sel]
            mine = couple(rho[l1][rows], rho[l2][rows], l1, l2, [lam])[0]
            col = _channel(p[:, 2], p[:, 3], MAX_RADIAL + 1) * q + _channel(p[:, 4], p[:, 5], MAX_RADIAL + 1)
            np.testing.assert_allclose(mine[:, :, col], block.values[:, :, sel], atol=1e-14, rtol=1e-10)
            compared += 1
    assert compared > 20


def test_coupling_is_orthogonal():
    for l1 in range(4):
        for l2 in range(4):
            m = np.concatenate([coupling_matrix(l1, l2, lam) for lam in range(abs(l1 - l2), l1 + l2 + 1)])
            np.testing.assert_allclose(m @ m.T, np.eye(len(m)), atol=1e-12)


@pytest.mark.parametrize("reflection", [False, True])
def test_equivariance_with_parity(reflection):
    fz = _featurizer()
    atoms = _frames()[1]
    r = random_rotation(5, reflection=reflection)
    moved = atoms.copy()
    moved.positions = atoms.positions @ r.T + np.array([0.5, -1.0, 2.0])
    f, g = fz.compute([atoms]), fz.compute([moved])
    for table_f, table_g in ((f.onsite, g.onsite), (f.pair_ij, g.pair_ij), (f.pair_ji, g.pair_ji)):
        assert {k for k in table_f} == {(0, 1), (1, 1), (1, -1), (2, 1), (2, -1)}
        for (lam, sigma), x in table_f.items():
            d = real_wigner_d(r, lam) * (sigma if reflection else 1)
            np.testing.assert_allclose(table_g[(lam, sigma)], np.einsum("mk,nkq->nmq", d, x), atol=1e-12)
            assert np.abs(x).max() > 1e-3  # the features are not trivially zero


def test_permutation_and_exchange():
    fz = _featurizer()
    atoms = _frames()[1]
    order = np.random.default_rng(1).permutation(len(atoms))
    f, g = fz.compute([atoms]), fz.compute([atoms[order]])
    new_of_old = np.argsort(order)
    for key, x in f.onsite.items():
        np.testing.assert_allclose(g.onsite[key][new_of_old], x, atol=1e-13)
    # pairs: the same unordered pairs; features follow the (first, second) orientation
    old_pairs = {(a, b): k for k, (a, b) in enumerate(zip(f.pair_first, f.pair_second))}
    assert f.n_pairs == g.n_pairs == int(np.sum(np.triu(atoms.get_all_distances() < fz.cutoff, 1)))
    for k, (a, b) in enumerate(zip(g.pair_first, g.pair_second)):
        oa, ob = order[a], order[b]
        same = (oa, ob) in old_pairs
        j = old_pairs[(oa, ob)] if same else old_pairs[(ob, oa)]
        for key in f.pair_ij:
            ij, ji = (g.pair_ij[key][k], g.pair_ji[key][k]) if same else (g.pair_ji[key][k], g.pair_ij[key][k])
            np.testing.assert_allclose(ij, f.pair_ij[key][j], atol=1e-13)
            np.testing.assert_allclose(ji, f.pair_ji[key][j], atol=1e-13)
    plus, minus = exchange_combinations(f.pair_ij[(1, 1)], f.pair_ji[(1, 1)])
    swapped_plus, swapped_minus = exchange_combinations(f.pair_ji[(1, 1)], f.pair_ij[(1, 1)])
    np.testing.assert_allclose(swapped_plus, plus)
    np.testing.assert_allclose(swapped_minus, -minus)


def test_canonical_orientation_and_unknown_species():
    fz = _featurizer()
    f = fz.compute(_frames()[:2])
    z1, z2 = f.atom_species[f.pair_first], f.atom_species[f.pair_second]
    rank = {z: k for k, z in enumerate(SPECIES)}
    assert all(rank[a] <= rank[b] for a, b in zip(z1, z2))
    assert np.all(f.atom_frame[f.pair_first] == f.atom_frame[f.pair_second])  # no pairs across frames
    with pytest.raises(DataError, match="frame 0: element.* N not among the features' species"):
        fz.compute([molecule("NH3")])


def test_pair_expansion_and_density_equal_featomic():
    from metatensor import Labels

    fz, frames = _featurizer(), _frames()
    rho, g, pairs, offsets = fz.expand(frames)
    density, by_pair = fz.calculators()
    ref = by_pair.compute(frames).keys_to_samples(["first_atom_type", "second_atom_type"])
    code = pairs[:, 0] * 10000 + pairs[:, 1]
    for key, block in zip(ref.keys, ref.blocks()):
        s = block.samples.values
        keep = s[:, 1] != s[:, 2]
        want = (offsets[s[keep, 0]] + s[keep, 1]) * 10000 + offsets[s[keep, 0]] + s[keep, 2]
        rows = np.searchsorted(code, want)
        np.testing.assert_array_equal(code[rows], want)
        np.testing.assert_allclose(g[int(key["o3_lambda"])][rows], block.values[keep], atol=1e-13, rtol=1e-10)
    within = sum(int(np.sum((a.get_all_distances() < fz.cutoff) & ~np.eye(len(a), dtype=bool))) for a in frames)
    assert len(pairs) == within
    types = Labels(["neighbor_type"], np.array(SPECIES).reshape(-1, 1))
    ref = density.compute(frames).keys_to_properties(types).keys_to_samples("center_type")
    for key, block in zip(ref.keys, ref.blocks()):
        s = block.samples.values
        np.testing.assert_allclose(rho[int(key["o3_lambda"])][offsets[s[:, 0]] + s[:, 1]], block.values,
                                   atol=1e-13, rtol=1e-10)


def test_batched_products_equal_the_pairwise_couplings():
    """The features' one-matrix coupling of every (l1, l2) equals :func:`couple` per (l1, l2), the
    function checked against featomic above (and g as a product of harmonics and radial parts)."""
    fz = _featurizer(max_angular=3, pair_max_angular=2)
    rho, g, pairs, _ = fz.expand(_frames())
    onsite = fz.onsite_features(rho)
    q = rho[0].shape[2]
    upper, strict = np.triu_indices(q), np.triu_indices(q, 1)
    for (lam, sigma), x in onsite.items():
        parts = [rho[lam]] if sigma == 1 else []
        for l1 in range(4):
            for l2 in range(l1, 4):
                if abs(l1 - l2) <= lam <= l1 + l2 and (-1) ** (l1 + l2 + lam) == sigma:
                    f = couple(rho[l1], rho[l2], l1, l2, [lam])[0]
                    if l1 == l2:
                        i, j = upper if sigma == 1 else strict
                        f = f.reshape(len(f), 2 * lam + 1, q, q)[:, :, i, j]
                    parts.append(f)
        np.testing.assert_allclose(x, np.concatenate(parts, axis=2), atol=1e-14)
    _, ylm, radial, _, _ = fz._expand(_frames())
    by_pair = fz.pair_features(rho, ylm, radial, pairs)
    for (lam, sigma), x in by_pair.items():
        parts = [g[lam]] if sigma == 1 else []
        for l1 in range(4):
            for l2 in range(3):
                if abs(l1 - l2) <= lam <= l1 + l2 and (-1) ** (l1 + l2 + lam) == sigma:
                    parts.append(couple(rho[l1][pairs[:, 0]], g[l2], l1, l2, [lam])[0])
        np.testing.assert_allclose(x, np.concatenate(parts, axis=2), atol=1e-14)
