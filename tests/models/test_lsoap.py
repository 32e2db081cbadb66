"""SA-GPR (λ-SOAP sparse GPR): covariance, mixed data sets, files, errors, learning a physical model."""

import numpy as np
import pytest
from ase import Atoms

import mdplugin
from mdplugin.core import tensors as T
from mdplugin.core.errors import DataError
from mdplugin.models import build

from ..conftest import dichloroethane

SMALL = dict(
    cutoff=3.5, max_radial=3, max_angular=3, n_sparse=30, n_components=40, chunk_size=7
)
CHARGES = {1: 0.1, 6: 0.0, 17: -0.2, 8: -0.4}  # neutral DCE (and water with H +0.2: below)


def _point_charge_dipole(atoms):
    q = np.array([CHARGES[z] for z in atoms.numbers])
    q -= q.mean()  # neutral whatever the composition
    return q @ atoms.positions


def _bond_polarizability(atoms):
    """Sum of axially symmetric pair polarizabilities with a smooth (Gaussian) distance weight."""
    alpha = np.eye(3) * 0.5 * len(atoms)
    d = atoms.get_all_distances(vector=True)
    r = np.linalg.norm(d, axis=-1)
    for i, j in zip(*np.triu_indices(len(atoms), 1)):
        u = d[i, j] / r[i, j]
        w = np.exp(-((r[i, j] / 1.5) ** 2))
        alpha += w * (np.eye(3) + 2.0 * np.outer(u, u))
    return alpha


def _data(n, seed, noise=0.12):
    rng = np.random.default_rng(seed)
    frames = [dichloroethane(rng, noise=noise) for _ in range(n)]
    for f in frames:
        f.positions = f.positions @ T.random_rotation(rng).T
    return frames


@pytest.fixture(scope="module")
def dipole_model():
    frames = _data(40, 0)
    y = np.array([_point_charge_dipole(f) for f in frames])
    return build("lsoap", target="dipole", **SMALL).fit(frames, y)


@pytest.fixture(scope="module")
def polarizability_model():
    frames = _data(40, 1)
    y = np.array([_bond_polarizability(f) for f in frames])
    return build("lsoap", target="polarizability", **SMALL).fit(frames, y)


@pytest.mark.parametrize("reflection", [False, True])
def test_dipole_is_exactly_covariant(dipole_model, reflection):
    rng = np.random.default_rng(7)
    frames = _data(4, 11, noise=0.2)
    y, std = dipole_model.predict(frames, return_std=True)
    for _ in range(2):
        r = T.random_rotation(rng, reflection=reflection)
        moved = [f.copy() for f in frames]
        for f in moved:
            f.positions = f.positions @ r.T + rng.normal(size=3)
        y2, std2 = dipole_model.predict(moved, return_std=True)
        np.testing.assert_allclose(y2, y @ r.T, rtol=0, atol=1e-8 * np.abs(y).max())
        # the covariance rotates too: the std of the norm-preserving total is invariant
        np.testing.assert_allclose((std2**2).sum(1), (std**2).sum(1), rtol=1e-8)


@pytest.mark.parametrize("reflection", [False, True])
def test_polarizability_is_exactly_covariant(polarizability_model, reflection):
    rng = np.random.default_rng(8)
    frames = _data(4, 12, noise=0.2)
    y, std = polarizability_model.predict(frames, return_std=True)
    assert y.shape == std.shape == (4, 3, 3)
    np.testing.assert_allclose(y, y.transpose(0, 2, 1), atol=1e-12)
    for _ in range(2):
        r = T.random_rotation(rng, reflection=reflection)
        moved = [f.copy() for f in frames]
        for f in moved:
            f.positions = f.positions @ r.T + rng.normal(size=3)
        y2 = polarizability_model.predict(moved)
        np.testing.assert_allclose(y2, T.rotate_tensors(y, r), rtol=0, atol=1e-8 * np.abs(y).max())


def test_learns_point_charge_dipoles(dipole_model):
    test = _data(20, 3)
    y = np.array([_point_charge_dipole(f) for f in test])
    pred = dipole_model.predict(test)
    rmse = np.sqrt(np.mean((pred - y) ** 2))
    assert rmse < 0.15 * np.std(y)


def test_learns_bond_polarizabilities(polarizability_model):
    test = _data(20, 4)
    y = np.array([_bond_polarizability(f) for f in test])
    pred = polarizability_model.predict(test)
    rmse = np.sqrt(np.mean((pred - y) ** 2))
    assert rmse < 0.1 * np.sqrt(np.mean((y - y.mean(0)) ** 2))


def test_std_grows_away_from_the_training_data(dipole_model):
    near = _data(5, 21, noise=0.12)
    far = _data(5, 22, noise=0.45)
    _, s_near = dipole_model.predict(near, return_std=True)
    _, s_far = dipole_model.predict(far, return_std=True)
    assert np.all(s_near > 0)
    assert np.linalg.norm(s_far, axis=1).mean() > 1.5 * np.linalg.norm(s_near, axis=1).mean()


def test_mixed_sizes_compositions_and_periodic_cells():
    rng = np.random.default_rng(5)
    frames = []
    for k in range(24):
        if k % 3 == 0:
            a = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
            a.positions += rng.normal(scale=0.05, size=(3, 3))
        elif k % 3 == 1:
            a = Atoms("CHCl", positions=[[0, 0, 0], [1.09, 0, 0], [-0.6, 1.6, 0.1]])
            a.positions += rng.normal(scale=0.05, size=(3, 3))
        else:
            a = Atoms("OH2OH2", positions=rng.uniform(0, 4.0, size=(6, 3)), cell=np.eye(3) * 4.0, pbc=True)
        frames.append(a)
    y = np.array([T.rotate_tensors(np.diag([1.0, 2.0, 3.0]) * len(a), T.random_rotation(rng)) for a in frames])
    model = build("lsoap", target="polarizability", **SMALL).fit(frames, y)
    pred, std = model.predict(frames[:6], return_std=True)
    assert pred.shape == (6, 3, 3) and np.all(np.isfinite(std))
    # the λ = 0 part scales with the number of atoms: the composition baseline gets it
    tr_pred = np.trace(pred, axis1=1, axis2=2)
    tr_true = np.trace(y[:6], axis1=1, axis2=2)
    assert np.allclose(tr_pred, tr_true, rtol=0.05)


def test_unknown_element_names_it(dipole_model):
    water = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    with pytest.raises(DataError, match=r"\bO\b"):
        dipole_model.predict([water])


def test_save_and_load_round_trip(tmp_path, polarizability_model):
    frames = _data(3, 30)
    y, std = polarizability_model.predict(frames, return_std=True)
    path = tmp_path / "alpha.npz"
    polarizability_model.save(path)
    loaded = mdplugin.load_model(path)
    y2, std2 = loaded.predict(frames, return_std=True)
    np.testing.assert_allclose(y2, y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(std2, std, rtol=1e-10, atol=1e-12)


def test_automatic_regulariser_is_a_candidate_and_refits_on_all_frames():
    frames = _data(30, 40)
    y = np.array([_point_charge_dipole(f) for f in frames])
    grid = (1e-8, 1e-4, 1.0)
    auto = build("lsoap", target="dipole", regularizer_grid=grid, **SMALL).fit(frames, y)
    reg = auto.regularizer_[1]
    candidates = set(grid) | {float(np.sqrt(a * b)) for a, b in zip(grid[:-1], grid[1:])}
    assert any(np.isclose(reg, c, rtol=1e-12) for c in candidates)
    fixed = build("lsoap", target="dipole", regularizer_l1=reg, **SMALL).fit(frames, y)
    test = _data(5, 41)
    np.testing.assert_allclose(auto.predict(test), fixed.predict(test), rtol=1e-12, atol=1e-12)


def test_a_non_positive_regulariser_in_the_grid_is_a_config_error():
    from mdplugin.core.errors import ConfigError

    frames = _data(12, 42)
    y = np.array([_point_charge_dipole(f) for f in frames])
    with pytest.raises(ConfigError, match="regularizer_grid"):
        build("lsoap", target="dipole", regularizer_grid=(1e-4, 0.0), **SMALL).fit(frames, y)


@pytest.mark.parametrize("zeta", [1, 2])
@pytest.mark.parametrize("target", ["dipole", "polarizability"])
def test_contracted_prediction_equals_the_kernel_prediction(target, zeta):
    """Without std the mean goes through the weights folded into the representative environments
    (ζ = 1, 2); with std through the kernel rows. Both must give the same numbers, on frames the
    model has not seen, including a rotated and reflected copy."""
    frames = _data(30, 50)
    truth = _point_charge_dipole if target == "dipole" else _bond_polarizability
    y = np.array([truth(f) for f in frames])
    model = build("lsoap", target=target, zeta=zeta, **SMALL).fit(frames, y)
    rng = np.random.default_rng(51)
    test = _data(4, 52)
    mirrored = test[0].copy()
    mirrored.positions = -mirrored.positions @ T.random_rotation(rng).T
    test.append(mirrored)
    mean_fast = model.predict(test)
    mean_kernel, _ = model.predict(test, return_std=True)
    assert np.abs(mean_fast).max() > 0.1 * np.abs(y).max()  # a real prediction, not zeros
    np.testing.assert_allclose(mean_fast, mean_kernel, rtol=1e-10, atol=1e-10 * np.abs(mean_kernel).max())


@pytest.mark.parametrize("target", ["dipole", "polarizability"])
def test_single_precision_mean_is_the_double_one_to_float32_rounding_and_covariant(target):
    """precision="single" runs the products with the model's large matrices in float32: the mean
    differs from the double one only by float32 rounding (~1e-6 relative, not exactly equal, so
    the float32 path really ran), and still rotates with the molecule under rotations and
    reflections; a bad precision is a clear error."""
    from mdplugin.core.errors import ConfigError

    frames = _data(30, 60)
    truth = _point_charge_dipole if target == "dipole" else _bond_polarizability
    model = build("lsoap", target=target, **SMALL).fit(frames, np.array([truth(f) for f in frames]))
    rng = np.random.default_rng(61)
    atoms = _data(1, 62)[0]
    calc = model.featurizer()
    exp = calc.compute([atoms])
    double = model.predict_from_features(exp).values
    single = model.predict_from_features(exp, precision="single").values
    scale = np.abs(double).max()
    assert scale > 0.1 * np.abs(model.predict(frames)).max()  # a real prediction, not zeros
    assert 0 < np.abs(single - double).max() < 1e-5 * scale
    for reflection in (False, True):
        rotation = T.random_rotation(rng, reflection=reflection)
        turned = atoms.copy()
        turned.positions = atoms.positions @ rotation.T
        single_turned = model.predict_from_features(calc.compute([turned]), precision="single").values
        expected = double @ rotation.T if target == "dipole" else rotation @ double[0] @ rotation.T
        np.testing.assert_allclose(single_turned.reshape(expected.shape), expected, atol=1e-5 * scale)
    with pytest.raises(ConfigError, match="precision"):
        model.predict_from_features(exp, precision="half")


@pytest.mark.parametrize("lam", [0, 1, 2])
def test_structure_covariance_is_the_sum_over_same_species_atom_pairs(lam):
    """The structure prior covariance (chunked, sparse frame sums) equals the brute-force double
    sum over same-species atom pairs of the ζ-power atom kernel, for any chunk size."""
    from mdplugin.learn.lambda_kernels import structure_covariance

    rng = np.random.default_rng(lam)
    n, d = 6, 2 * lam + 1
    frame = np.repeat(np.arange(n), rng.integers(1, 5, size=n))
    species = rng.choice([1, 6, 17], size=len(frame))
    z = {0: rng.normal(size=(len(frame), 5))}
    if lam:
        z[lam] = rng.normal(size=(len(frame), d, 4))
    for zeta in (1, 2, 3):
        expected = np.zeros((n, d, n, d))
        for i in range(len(frame)):
            for j in np.flatnonzero(species == species[i]):
                k0 = z[0][i] @ z[0][j]
                block = np.full((d, d), k0**zeta) if lam == 0 else (z[lam][i] @ z[lam][j].T) * k0 ** (zeta - 1)
                expected[frame[i], :, frame[j], :] += block
        for chunk in (1, 3, 1024):
            got = structure_covariance(z, species, frame, n, lam, zeta, np.array([1, 6, 8, 17]), chunk=chunk)
            np.testing.assert_allclose(got, expected.reshape(n * d, n * d), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("zeta", [1, 2, 3])
@pytest.mark.parametrize("lam", [0, 1, 2])
def test_structure_self_kernel_equals_the_sum_over_atom_pairs(zeta, lam):
    """The prior variance of a structure is the sum over its same-species atom pairs; large groups
    (a 1536-atom box has ~1000 O and 500 H) take the linear-cost product form, small ones (molecules)
    their pairs: both equal the brute-force double sum."""
    from mdplugin.learn.lambda_kernels import structure_self_kernel

    rng = np.random.default_rng(lam * 10 + zeta)
    sizes = [150, 3, 7, 70]  # atoms per frame: large and small groups in one batch
    frame = np.repeat(np.arange(len(sizes)), sizes)
    species = rng.choice([1, 8], len(frame))
    d = 2 * lam + 1
    z = {0: rng.normal(size=(len(frame), 6))}
    if lam:
        z[lam] = rng.normal(size=(len(frame), d, 5))
    got = structure_self_kernel(z, species, frame, len(sizes), lam, zeta)
    want = np.zeros_like(got)
    for f in range(len(sizes)):
        for s in (1, 8):
            rows = np.flatnonzero((frame == f) & (species == s))
            k0 = z[0][rows] @ z[0][rows].T
            if lam == 0:
                want[f, 0, 0] += np.sum(k0**zeta)
            else:
                want[f] += np.einsum("ij,iak,jbk->ab", k0 ** (zeta - 1), z[lam][rows], z[lam][rows])
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11 * np.abs(want).max())


@pytest.mark.parametrize("zeta", [1, 2, 3])
@pytest.mark.parametrize("lam", [0, 1, 2])
def test_structure_kernel_row_is_the_sum_of_the_atom_kernels(zeta, lam):
    from mdplugin.learn.lambda_kernels import atom_kernel, structure_kernel_row

    rng = np.random.default_rng(lam + 7 * zeta)
    d = 2 * lam + 1
    a0, b0 = rng.normal(size=(40, 6)), rng.normal(size=(9, 6))
    a = rng.normal(size=(40, d, 5)) if lam else None
    b = rng.normal(size=(9 * d, 5)) if lam else None
    want = atom_kernel(a0, a, b0, b, lam, zeta).sum(axis=0)
    np.testing.assert_allclose(structure_kernel_row(a0, a, b0, b, lam, zeta), want, rtol=1e-11,
                               atol=1e-11 * np.abs(want).max())
