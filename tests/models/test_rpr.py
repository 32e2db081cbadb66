"""RPR (rotate–predict–rotate): exact covariance, continuity through degenerate moments,
uncertainty, model files, bad input, and the command line."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from ase import Atoms
from scipy.spatial.transform import Rotation

from mdplugin.cli.parser import main
from mdplugin.structures.data import Dataset, read_dataset, write_dataset
from mdplugin.core.errors import ConfigError, DataError, ModelFileError
from mdplugin.models import build, load_model
from mdplugin.models.rpr import IllDefinedAxesWarning
from mdplugin.core.tensors import random_rotation, rotate_tensors, rotate_vectors

from ..conftest import EXAMPLES, dichloroethane

# --------------------------------------------------------------------------------------------
# synthetic but covariant labels on 1,2-dichloroethane geometries


def twisted(phi_deg: float, rng=None, noise: float = 0.0) -> Atoms:
    """Anti DCE with the second CH2Cl group turned by ``phi_deg`` about the C–C bond (keeps C2).

    At phi ≈ 47.6° the two largest moments of inertia are exactly equal.
    """
    atoms = dichloroethane()
    p = atoms.positions
    axis = (p[1] - p[0]) / np.linalg.norm(p[1] - p[0])
    rot = Rotation.from_rotvec(axis * np.deg2rad(phi_deg)).as_matrix()
    for i in (1, 3, 6, 7):
        p[i] = p[0] + rot @ (p[i] - p[0])
    if noise:
        p = p + np.random.default_rng(rng).normal(scale=noise, size=p.shape)
    atoms.positions = p
    return atoms


def labels(frames):
    """A covariant, nonlinear dipole (n, 3) and polarizability (n, 3, 3) of the positions."""
    mu, alpha = [], []
    for a in frames:
        r = a.positions - a.get_center_of_mass()
        d_clcl = np.linalg.norm(r[2] - r[3])
        q = np.array([0.25, 0.25, -0.3, -0.3, 0.025, 0.025, 0.025, 0.025]) * (1.0 + 0.3 * np.tanh(d_clcl - 4.0))
        mu.append(q @ r + 0.02 * (r[2] - r[3]) * d_clcl)
        w = np.array([1.0, 1.0, 2.0, 2.0, 0.4, 0.4, 0.4, 0.4])
        alpha.append(np.einsum("a,ai,aj->ij", w, r, r) * 0.1 + np.eye(3) * (5.0 + 0.2 * d_clcl))
    return np.array(mu), np.array(alpha)


def random_frames(n: int, seed: int):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        a = twisted(rng.uniform(0.0, 120.0), rng, noise=0.03)
        a.positions = rotate_vectors(a.positions, random_rotation(rng))
        frames.append(a)
    return frames


@pytest.fixture(scope="module")
def synthetic():
    frames = random_frames(160, seed=1)
    mu, alpha = labels(frames)
    return frames, mu, alpha


@pytest.fixture(scope="module")
def fitted(synthetic):
    frames, mu, alpha = synthetic
    return {
        "dipole": build("rpr", target="dipole").fit(frames, mu),
        "polarizability": build("rpr", target="polarizability").fit(frames, alpha),
    }


def _transform(y, rot, target):
    return rotate_vectors(y, rot) if target == "dipole" else rotate_tensors(y, rot)


# --------------------------------------------------------------------------------------------
# exact covariance on real example frames


def _real_frames():
    """(frames, dipoles, polarizabilities) from the example DCE data or the shared water dimer."""
    if (EXAMPLES / "dce_train.xyz").exists():
        data = read_dataset(EXAMPLES / "dce_train.xyz", properties=["dipole", "polarizability"], index=slice(0, 80))
    else:
        from ..conftest import NO_REFERENCE_DATA, SHARED_DATA

        path = SHARED_DATA / "tensoap-water" / "water_dimer.xyz"
        if not path.exists():
            pytest.skip(f"examples/trajectories/dce_train.xyz absent and {NO_REFERENCE_DATA}")
        data = read_dataset(path, keys={"dipole": "mu", "polarizability": "alpha"}, units="atomic", index=slice(0, 80))
    return data.frames, data.dipole, data.polarizability


@pytest.mark.parametrize("target", ["dipole", "polarizability"])
def test_exactly_covariant_on_real_frames(target):
    frames, mu, alpha = _real_frames()
    y_train = mu if target == "dipole" else alpha
    model = build("rpr", target=target).fit(frames[:60], y_train[:60])
    test = frames[60:]
    y, std = model.predict(test, return_std=True)
    scale = np.abs(y).max()
    rng = np.random.default_rng(7)
    for reflection in (False, True, False, True):
        rot = random_rotation(rng, reflection=reflection)
        moved = [a.copy() for a in test]
        for a in moved:
            a.positions = rotate_vectors(a.positions, rot) + rng.normal(size=3)  # and a translation
        y_rot, std_rot = model.predict(moved, return_std=True)
        assert np.abs(y_rot - _transform(y, rot, target)).max() <= 1e-8 * scale
        # the total variance (trace of the covariance) is invariant
        axes = (1,) if target == "dipole" else (1, 2)
        assert np.allclose((std_rot**2).sum(axis=axes), (std**2).sum(axis=axes), rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("target", ["dipole", "polarizability"])
def test_covariant_with_any_sklearn_regressor(synthetic, target):
    from sklearn.kernel_ridge import KernelRidge

    frames, mu, alpha = synthetic
    y = mu if target == "dipole" else alpha
    model = build("rpr", target=target, regressor=KernelRidge(kernel="rbf", gamma=0.1, alpha=1e-6))
    model.fit(frames[:80], y[:80])
    pred = model.predict(frames[80:])
    rot = random_rotation(3, reflection=True)
    moved = [a.copy() for a in frames[80:]]
    for a in moved:
        a.positions = rotate_vectors(a.positions, rot)
    assert np.allclose(model.predict(moved), _transform(pred, rot, target), atol=1e-8 * np.abs(pred).max())
    with pytest.raises(ConfigError, match="no uncertainty"):
        model.predict(frames[:2], return_std=True)
    with pytest.raises(ModelFileError, match="cannot be saved"):
        model.save("never-written.npz")


# --------------------------------------------------------------------------------------------
# accuracy, uncertainty, continuity


@pytest.mark.parametrize("target", ["dipole", "polarizability"])
def test_learns_and_beats_naive(synthetic, fitted, target):
    frames, mu, alpha = synthetic
    y = mu if target == "dipole" else alpha
    test = random_frames(60, seed=2)
    y_test = labels(test)[0 if target == "dipole" else 1]
    std = np.sqrt(np.mean((y_test - y_test.mean(axis=0)) ** 2))
    err = np.sqrt(np.mean((fitted[target].predict(test) - y_test) ** 2)) / std
    naive = build("rpr", target=target, frame="naive", length_scale=None).fit(frames, y)
    err_naive = np.sqrt(np.mean((naive.predict(test) - y_test) ** 2)) / std
    assert err < 0.1
    assert err < err_naive


def test_uncertainty_is_small_on_training_data_and_larger_far_away(synthetic, fitted):
    frames, mu, _ = synthetic
    _, std_train = fitted["dipole"].predict(frames[:20], return_std=True)
    far = [twisted(60.0, rng=i, noise=0.25) for i in range(5)]
    _, std_far = fitted["dipole"].predict(far, return_std=True)
    assert np.all(std_train >= 0) and np.all(np.isfinite(std_far))
    assert np.median(np.linalg.norm(std_far, axis=1)) > 3 * np.median(np.linalg.norm(std_train, axis=1))


@pytest.mark.parametrize("target", ["dipole", "polarizability"])
def test_continuous_through_a_degenerate_moment_crossing(fitted, target):
    """Along a torsion path the two largest moments cross exactly (C2-symmetric geometries): the
    sorted eigenvectors swap there, the prediction must not jump."""
    phis = np.linspace(40.0, 56.0, 161)
    path = [twisted(p) for p in phis]
    moments = np.array([a.get_moments_of_inertia() for a in path])
    gap = moments[:, 2] - moments[:, 1]
    assert gap.min() < 1e-2 * gap.max()  # the path really goes through the crossing
    model = fitted[target]
    y, quality = model.predict(path, return_quality=True)
    steps = np.abs(np.diff(y.reshape(len(path), -1), axis=0)).max(axis=1)
    assert steps.max() <= 4.0 * np.median(steps) + 1e-12
    assert quality.min() > model.degenerate_tol  # one axis stays well defined: nothing to report


def test_naive_frames_jump_at_the_crossing(synthetic, fitted):
    """The comparison model shows the problem that the default one solves."""
    frames, mu, _ = synthetic
    naive = build("rpr", target="dipole", frame="naive", length_scale=None).fit(frames, mu)
    path = [twisted(p) for p in np.linspace(40.0, 56.0, 161)]
    jump_naive = np.abs(np.diff(naive.predict(path), axis=0)).max()
    jump = np.abs(np.diff(fitted["dipole"].predict(path), axis=0)).max()
    assert jump_naive > 10.0 * jump


def spherical_top() -> Atoms:
    """DCE's atoms squeezed linearly so that the inertia tensor is isotropic (no axis defined)."""
    atoms = dichloroethane()
    r = atoms.positions - atoms.get_center_of_mass()
    second = np.einsum("a,ai,aj->ij", atoms.get_masses(), r, r)
    w, v = np.linalg.eigh(second)
    atoms.positions = r @ (v @ np.diag(np.sqrt(w.mean() / w)) @ v.T)
    return atoms


def test_ill_defined_frame_is_reported(fitted):
    top = spherical_top()
    assert np.ptp(top.get_moments_of_inertia()) < 1e-8 * top.get_moments_of_inertia().max()
    model = fitted["dipole"]
    assert model.axes_quality([top])[0] < model.degenerate_tol
    with pytest.warns(IllDefinedAxesWarning, match="ill-defined"):
        y, q = model.predict([top], return_quality=True)
    assert np.all(np.isfinite(y)) and q[0] < model.degenerate_tol


# --------------------------------------------------------------------------------------------
# model files and bad input


@pytest.mark.parametrize("target", ["dipole", "polarizability"])
def test_save_load_round_trip(fitted, tmp_path, target):
    model = fitted[target]
    path = tmp_path / f"{target}.npz"
    model.save(path)
    loaded = load_model(path, kind="rpr", target=target)
    test = random_frames(5, seed=9)
    y0, s0 = model.predict(test, return_std=True)
    y1, s1 = loaded.predict(test, return_std=True)
    assert np.allclose(y0, y1, rtol=1e-12, atol=1e-12) and np.allclose(s0, s1, rtol=1e-8, atol=1e-14)
    assert loaded.get_params() == json.loads(json.dumps(model.get_params()))


def test_naive_round_trip(synthetic, tmp_path):
    frames, mu, _ = synthetic
    model = build("rpr", target="dipole", frame="naive", length_scale=None).fit(frames, mu)
    model.save(tmp_path / "n.npz")
    loaded = load_model(tmp_path / "n.npz")
    assert np.allclose(loaded.predict(frames[:5]), model.predict(frames[:5]), atol=1e-12)


def test_wrong_molecule_or_atom_order_is_a_clear_error(fitted):
    swapped = dichloroethane()
    swapped.numbers = swapped.numbers[[2, 1, 0, 3, 4, 5, 6, 7]]
    with pytest.raises(DataError, match="differ in number or order"):
        fitted["dipole"].predict([swapped])
    with pytest.raises(DataError, match="differ in number or order"):
        fitted["dipole"].predict([Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])])
    with pytest.raises(DataError, match="training frame 1"):
        build("rpr").fit([dichloroethane(), swapped], np.zeros((2, 3)))


def test_a_periodic_frame_is_refused_with_the_reason(fitted):
    """RPR's frame is a molecule's principal axes: a cell has none. Refused when predicting and when
    training, naming the frame and the reason; a molecule with pbc set but no cell is fine."""
    cell = dichloroethane()
    cell.cell = np.eye(3) * 9.0
    cell.pbc = True
    with pytest.raises(DataError, match="frame 0 is periodic: RPR rotates a molecule to the principal axes"):
        fitted["dipole"].predict([cell])
    with pytest.raises(DataError, match="training frame 1 is periodic"):
        build("rpr").fit([dichloroethane(), cell], np.zeros((2, 3)))
    no_cell = dichloroethane()
    no_cell.pbc = True  # no cell: a molecule
    fitted["dipole"].predict([no_cell])


def test_bad_options_and_shapes():
    frames = random_frames(4, seed=5)
    with pytest.raises(ConfigError, match="cannot learn target 'energy'"):
        build("rpr", target="energy").fit(frames, np.zeros(4))
    with pytest.raises(ConfigError, match="unknown frame"):
        build("rpr", frame="wobbly").fit(frames, np.zeros((4, 3)))
    with pytest.raises(DataError, match="shape"):
        build("rpr", target="polarizability").fit(frames, np.zeros((4, 3)))
    with pytest.raises(ConfigError, match="no uncertainty"):
        build("rpr", regressor="krr").fit(frames, labels(frames)[0]).predict(frames, return_std=True)


# --------------------------------------------------------------------------------------------
# command line


def test_cli_train_evaluate_predict(synthetic, tmp_path, capsys):
    frames, mu, alpha = synthetic
    data = tmp_path / "data.xyz"
    write_dataset(data, Dataset(frames=frames[:100], dipole=mu[:100], polarizability=alpha[:100]))
    test = tmp_path / "test.xyz"
    write_dataset(test, Dataset(frames=frames[100:], dipole=mu[100:], polarizability=alpha[100:]))
    model = tmp_path / "mu.npz"
    assert main(["train", str(data), "--target", "dipole", "--model", "rpr", "-o", str(model)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(model), str(test), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["target"] == "dipole" and result["n"] == 60 and result["rmse_percent_of_std"] < 10
    assert main(["evaluate", str(model), str(test)]) == 0  # the text form names the units
    text = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    assert text["rmse".rjust(28)].strip() == f"{result['rmse']:.6g} e·Å"
    assert text["rmse_percent_of_std".rjust(28)].strip().endswith(" %")
    out = tmp_path / "pred.xyz"
    with warnings.catch_warnings():
        warnings.simplefilter("error", IllDefinedAxesWarning)
        assert main(["predict", str(model), str(test), "-o", str(out)]) == 0
    pred = read_dataset(out, properties=["dipole"])
    assert np.allclose(pred.dipole, load_model(model).predict(frames[100:]), atol=1e-6)


@pytest.mark.parametrize("target", ["dipole", "polarizability"])
def test_block_diagonal_solve_equals_the_full_solve(synthetic, fitted, monkeypatch, target):
    """With one axis for every training frame the GP splits exactly into |m| blocks."""
    from mdplugin.models.rpr import RPRModel

    frames, mu, alpha = synthetic
    model = fitted[target]
    assert len(model._train_factors()[model._channels()[-1]]) > 1  # the block path is in use
    test = random_frames(6, seed=11)
    y0, s0 = model.predict(test, return_std=True)
    monkeypatch.setattr(RPRModel, "_blocks", lambda self, kind: [np.eye(3 if kind == "vector" else 5 if kind == "l2" else 1)])
    full = build("rpr", target=target).fit(frames, mu if target == "dipole" else alpha)
    assert len(full._train_factors()[full._channels()[-1]]) == 1
    y1, s1 = full.predict(test, return_std=True)
    assert np.allclose(y0, y1, rtol=1e-7, atol=1e-9 * np.abs(y0).max())
    assert np.allclose(s0, s1, rtol=1e-5, atol=1e-9 * np.abs(s0).max())


@pytest.mark.parametrize("full_gap", [None, (0.02, 0.06)])
def test_covariant_with_blended_axes_on_water(shared_data, full_gap):
    """Water is an asymmetric top (g12 ≈ g23): the λ1- and λ3-axis kernels (and optionally the
    full frame) are blended; the result must stay exactly covariant."""
    data = read_dataset(shared_data / "tensoap-water" / "water_monomer.xyz", keys={"dipole": "mu", "polarizability": "alpha"},
                        units="atomic", index=slice(0, 80))
    for target, y in (("dipole", data.dipole), ("polarizability", data.polarizability)):
        model = build("rpr", target=target, full_gap=full_gap).fit(data.frames[:60], y[:60])
        fr = model._prepare(np.array([a.positions for a in data.frames[:60]]))
        if full_gap is None:
            assert np.any((fr.p[1] > 0) & (fr.p[3] > 0))  # the blend of the two axes is exercised
        else:
            assert np.any(fr.p["full"] > 0)
        test = data.frames[60:]
        pred = model.predict(test)
        rot = random_rotation(21, reflection=True)
        moved = [a.copy() for a in test]
        for a in moved:
            a.positions = rotate_vectors(a.positions, rot)
        assert np.abs(model.predict(moved) - _transform(pred, rot, target)).max() <= 1e-8 * np.abs(pred).max()
