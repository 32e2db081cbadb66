"""λ-SOAP features: agreement with featomic, exact equivariance, power-spectrum gradients."""

import numpy as np
import pytest
from ase import Atoms

from mdplugin.core import tensors as T
from mdplugin.features.expansion import SphericalExpansion
from mdplugin.features.lambda_soap import (
    feature_labels,
    lambda_soap,
    n_features,
    power_spectrum,
    real_clebsch_gordan,
)
from mdplugin.features.soap import SoapPowerSpectrum
from mdplugin.core.errors import DataError

from ..conftest import dichloroethane

SPECIES = [1, 6, 17]
HYPERS = dict(cutoff=3.5, max_radial=3, max_angular=3, gaussian_width=0.3)


def _frames(n=3, seed=0):
    rng = np.random.default_rng(seed)
    frames = [dichloroethane(rng, noise=0.15) for _ in range(n)]
    # a smaller molecule with a different composition in the same batch
    frames.append(Atoms("CHCl", positions=[[0, 0, 0], [1.09, 0, 0], [-0.6, 1.6, 0.1]]))
    return frames


@pytest.mark.parametrize("fold", [True, False])
def test_matches_featomic_equivariant_power_spectrum(fold):
    from featomic.clebsch_gordan import EquivariantPowerSpectrum
    from metatensor import Labels

    frames = _frames()
    calc = SphericalExpansion(SPECIES, **HYPERS)
    ours = lambda_soap(calc.compute(frames), fold=fold)
    import featomic

    # featomic's coupling takes only its native TensorProduct (Gto) basis, whose spline agrees with
    # the engine's to ~1e-9 relative (tests/features/test_radial.py): hence the tolerance below
    eps = EquivariantPowerSpectrum(featomic.SphericalExpansion(**calc.hypers()), neighbor_types=SPECIES)
    keys = Labels(["o3_lambda", "o3_sigma"], np.array([[0, 1], [1, 1], [2, 1]], dtype=np.int32))
    ref = eps.compute(frames, neighbors_to_properties=True, selected_keys=keys)
    offsets = np.cumsum([0] + [len(f) for f in frames])
    names = ["l_1", "l_2", "neighbor_1_type", "n_1", "neighbor_2_type", "n_2"]
    n_checked = 0
    for lam in (0, 1, 2):
        labels, weights = feature_labels(lam, HYPERS["max_angular"], SPECIES, 4, fold=fold)
        assert ours[lam].shape[2] == len(labels) == n_features(lam, 3, 12, fold)
        for centre_type in SPECIES:
            block = ref.block(o3_lambda=lam, o3_sigma=1, center_type=centre_type)
            props = block.properties
            order = [props.names.index(n) for n in names]
            lookup = {tuple(row): k for k, row in enumerate(props.values[:, order].tolist())}
            cols = np.array([lookup[tuple(row)] for row in labels.tolist()])
            if not fold:  # every featomic feature is present exactly once
                assert sorted(cols.tolist()) == list(range(len(props)))
            samples = block.samples.values
            rows = offsets[samples[:, 0]] + samples[:, 1]
            expected = block.values[:, :, cols] * weights
            np.testing.assert_allclose(ours[lam][rows], expected, rtol=0, atol=1e-8 * np.abs(expected).max())
            n_checked += len(rows)
    assert n_checked == 3 * sum(len(f) for f in frames)


def test_folding_preserves_dot_products():
    exp = SphericalExpansion(SPECIES, **HYPERS).compute(_frames(2))
    folded = lambda_soap(exp, fold=True)
    full = lambda_soap(exp, fold=False)
    for lam in (0, 1, 2):
        a = folded[lam].reshape(len(folded[lam]), -1)
        b = full[lam].reshape(len(full[lam]), -1)
        np.testing.assert_allclose(a @ a.T, b @ b.T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reflection", [False, True])
def test_features_are_equivariant(reflection):
    rng = np.random.default_rng(3)
    frames = _frames(2, seed=1)
    calc = SphericalExpansion(SPECIES, **HYPERS)
    base = lambda_soap(calc.compute(frames))
    for trial in range(2):
        r = T.random_rotation(rng, reflection=reflection)
        rotated = [f.copy() for f in frames]
        for f in rotated:
            f.positions = f.positions @ r.T + rng.normal(size=3)  # rotate and translate
        new = lambda_soap(calc.compute(rotated))
        for lam in (0, 1, 2):
            d = T.wigner_d_real(r, lam)
            expected = np.einsum("mn,inf->imf", d, base[lam])
            scale = np.abs(base[lam]).max()
            np.testing.assert_allclose(new[lam], expected, rtol=0, atol=1e-8 * scale)


def test_real_clebsch_gordan_couples_vectors():
    # two l=1 vectors: λ=0 is ∝ the dot product, λ=1 ∝ the cross product (pseudo-vector)
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=3), rng.normal(size=3)
    su, sv = T.vector_to_spherical(u), T.vector_to_spherical(v)
    dot = np.einsum("abm,a,b->m", real_clebsch_gordan(1, 1, 0), su, sv)
    np.testing.assert_allclose(abs(dot[0]), abs(u @ v) / np.sqrt(3), rtol=1e-12)
    cross = np.einsum("abm,a,b->m", real_clebsch_gordan(1, 1, 1), su, sv)
    np.testing.assert_allclose(
        np.abs(cross), np.abs(T.vector_to_spherical(np.cross(u, v))) / np.sqrt(2), rtol=1e-12
    )


def test_power_spectrum_gradients_match_finite_differences():
    atoms = dichloroethane(np.random.default_rng(5), noise=0.1)
    calc = SphericalExpansion(SPECIES, cutoff=3.0, max_radial=3, max_angular=3)
    exp = calc.compute([atoms], gradients=True)
    x, dx, pairs = power_spectrum(exp, gradients=True)
    assert dx.shape == (len(pairs), 3, x.shape[1])
    h = 1e-5
    for j in range(len(atoms)):
        for a in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[j, a] += h
            minus.positions[j, a] -= h
            fd = (power_spectrum(calc.compute([plus])) - power_spectrum(calc.compute([minus]))) / (
                2 * h
            )
            analytic = np.zeros_like(fd)
            sel = pairs[:, 1] == j
            np.add.at(analytic, pairs[sel, 0], dx[sel, a])
            np.testing.assert_allclose(analytic, fd, rtol=0, atol=1e-7 * np.abs(dx).max())


def test_soap_front_end_and_periodic_cells():
    soap = SoapPowerSpectrum([8, 1], cutoff=3.0, max_radial=2, max_angular=2)
    water = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    boxed = water.copy()
    boxed.cell = np.eye(3) * 4.0
    boxed.pbc = True
    zero_cell = water.copy()
    zero_cell.pbc = True  # all-zero cell: a molecule, whatever pbc says
    out = soap.compute([water, boxed, zero_cell], gradients=True)
    assert out.values.shape[0] == 9 and out.gradients.shape[1] == 3
    # periodic images within the cutoff change the environment; a zero cell does not
    assert not np.allclose(out.values[3:6], out.values[:3])
    np.testing.assert_allclose(out.values[6:9], out.values[:3], atol=1e-12)
    np.testing.assert_array_equal(out.centre_frame, np.repeat([0, 1, 2], 3))


def test_unknown_element_is_named():
    calc = SphericalExpansion([1, 8], cutoff=3.0, max_radial=2, max_angular=2)
    with pytest.raises(DataError, match="Cl"):
        calc.compute([Atoms("HCl", positions=[[0, 0, 0], [1.3, 0, 0]])])


def test_coupling_threads_follow_omp_num_threads(monkeypatch):
    """MPI ranks run with OMP_NUM_THREADS=1: the coupling must not start more threads than that."""
    from mdplugin.features import lambda_soap as module

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert module._default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert module._default_threads() == module._N_CPUS
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert module._default_threads() == module._N_CPUS


def test_no_centres_give_empty_features_of_the_right_shape():
    """A batch without centres (nothing to couple) returns empty arrays, not an error."""
    from mdplugin.features.expansion import Expansion

    values = [np.zeros((0, 2 * l + 1, 6)) for l in range(4)]
    empty = Expansion(species=(1, 6), max_angular=3, values=values, centre_frame=np.zeros(0, int),
                      centre_atom=np.zeros(0, int), centre_species=np.zeros(0, int), n_frames=0)
    features = lambda_soap(empty, (0, 1, 2))
    assert {lam: f.shape for lam, f in features.items()} == {
        lam: (0, 2 * lam + 1, n_features(lam, 3, 6)) for lam in (0, 1, 2)}


@pytest.mark.parametrize("n_threads", [1, 2])
def test_chunked_coupling_gives_the_one_chunk_features(n_threads):
    """Training batches are coupled in chunks (and threads), an MD step in one chunk whose zero-padded
    expansion is shared with the λ-SOAP means: the same numbers per centre either way."""
    exp = SphericalExpansion(SPECIES, **HYPERS).compute(_frames())
    whole = lambda_soap(exp, (0, 1, 2))
    chunked = lambda_soap(exp, (0, 1, 2), chunk_size=5, n_threads=n_threads)
    for lam in (0, 1, 2):
        np.testing.assert_allclose(chunked[lam], whole[lam], rtol=0, atol=1e-15 * np.abs(whole[lam]).max())
