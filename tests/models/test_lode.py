"""The 'lode' model: charged molecules, long range, covariance, model files, bad input."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from mdplugin.core.errors import DataError
from mdplugin.core.tensors import random_rotation
from mdplugin.models import build, load_model

from ..support.finite_differences import model_fd_forces

Q = {1: 0.35, 8: -0.7, 17: -1.0}  # point charges of the synthetic labels (water + Cl⁻: total −1)
ALPHA_WATER = 1.4  # Å³, the water's induced dipole α E in the chloride's field


def dimer(rng, separation):
    w = molecule("H2O")
    w.positions = (w.positions - w.get_center_of_mass()) @ random_rotation(rng).T
    w.positions += rng.normal(scale=0.04, size=w.positions.shape)
    u = rng.normal(size=3)
    atoms = w + Atoms("Cl", positions=[separation * u / np.linalg.norm(u)])
    atoms.info["charge"] = -1
    return atoms


def labels(atoms):
    """Point charges about the centre of mass plus the water's dipole induced by the ion's field
    (long range: 1/r², seen at any separation) and an ion-independent polarizability."""
    q = np.array([Q[z] for z in atoms.numbers])
    com = atoms.get_center_of_mass()
    d = atoms.positions[:3].mean(axis=0) - atoms.positions[3]
    field = -1.0 * d / np.linalg.norm(d) ** 3 * 14.4  # V/Å from −1 e at the ion
    dipole = q @ (atoms.positions - com) + ALPHA_WATER * field / 14.4 * 0.5
    alpha = np.diag([1.5, 1.6, 1.7]) + 0.2 * np.outer(d, d) / np.dot(d, d) * (4.0 / np.linalg.norm(d)) ** 3
    return dipole, alpha


def dataset(seed, n, lo=3.0, hi=11.0):
    rng = np.random.default_rng(seed)
    frames = [dimer(rng, s) for s in rng.uniform(lo, hi, n)]
    y = [labels(a) for a in frames]
    return frames, np.array([d for d, _ in y]), np.array([a for _, a in y])


@pytest.fixture(scope="module")
def fitted():
    frames, mu, alpha = dataset(0, 60)
    hypers = dict(max_radial=2, max_angular=2, n_posterior=64)
    return {
        "lode": build("lode", target="dipole", **hypers).fit(frames, mu),
        "local": build("lode", target="dipole", long_range=False, **hypers).fit(frames, {"dipole": mu}),
        "alpha": build("lode", target="polarizability", **hypers).fit(frames, alpha),
    }


def test_atomic_charges_sum_to_the_total_charge(fitted):
    frames, _, _ = dataset(1, 5)
    frames[2].info["charge"] = 0  # another total: the constraint holds for any charge given
    for atoms, q in zip(frames, fitted["lode"].predict_charges(frames)):
        assert q.sum() == pytest.approx(atoms.info["charge"], abs=1e-10)


def test_translating_a_charged_molecule_moves_its_dipole_by_q_times_t(fitted):
    frames, _, _ = dataset(2, 3)
    t = np.array([2.5, -7.0, 4.0])
    moved = [a.copy() for a in frames]
    for a in moved:
        a.translate(t)
    com = fitted["lode"]
    np.testing.assert_allclose(com.predict(moved), com.predict(frames), atol=1e-9)  # about the centre of mass
    zero = build("lode", **dict(com.get_params(), dipole_origin="zero"))
    zero._set_state(com._get_state())
    zero.species_, zero.is_fitted_ = com.species_, True
    charge = np.array([a.info["charge"] for a in frames])
    np.testing.assert_allclose(zero.predict(moved) - zero.predict(frames), charge[:, None] * t, atol=1e-9)


@pytest.mark.parametrize("reflection", [False, True])
def test_predictions_are_covariant(fitted, reflection):
    frames, _, _ = dataset(3, 3)
    r = random_rotation(np.random.default_rng(4), reflection=reflection)
    turned = [a.copy() for a in frames]
    for a in turned:
        a.positions = a.positions @ r.T
    np.testing.assert_allclose(fitted["lode"].predict(turned), fitted["lode"].predict(frames) @ r.T, atol=1e-9)
    a0, a1 = fitted["alpha"].predict(frames), fitted["alpha"].predict(turned)
    np.testing.assert_allclose(a1, np.einsum("ij,njk,lk->nil", r, a0, r), atol=1e-9)


def test_long_range_features_learn_what_the_local_model_cannot(fitted):
    frames, mu, _ = dataset(5, 40, lo=6.5, hi=11.0)  # no water atom within 5 Å of the ion
    err = {k: np.sqrt(np.mean((fitted[k].predict(frames) - mu) ** 2)) for k in ("lode", "local")}
    assert err["lode"] < err["local"] / 3, err


def test_model_file_keeps_the_settings_and_predictions(fitted, tmp_path):
    frames, _, _ = dataset(6, 4)
    for key in ("lode", "alpha"):
        path = tmp_path / f"{key}.npz"
        fitted[key].save(path)
        again = load_model(path)
        assert again.get_params() == fitted[key].get_params() or again.get_params()["long_range"] is True
        values, std = again.predict(frames, return_std=True)
        np.testing.assert_allclose(values, fitted[key].predict(frames), rtol=1e-12, atol=1e-12)
        assert np.all(std > 0) and std.shape == values.shape


def test_prediction_from_features_is_the_prediction(fitted):
    frames, _, _ = dataset(7, 2)
    model = fitted["alpha"]
    pred = model.predict_from_features(model.featurizer().compute(frames), return_std=True)
    np.testing.assert_allclose(pred.values, model.predict(frames))
    assert pred.target == "polarizability" and pred.std.shape == (2, 3, 3)


def test_bad_input_is_one_line(fitted):
    frames, mu, _ = dataset(8, 6)
    frames[3].info["charge"] = 0.5
    with pytest.raises(DataError, match=r"^training frame 3: charge 0.5 is not an integer"):
        build("lode", target="dipole").fit(frames, mu)
    box = Atoms("H2O", positions=[[0, 0, 0], [0.9, 0, 0], [0, 0.9, 0.2]], cell=[[4, 0, 0], [0, 4, 0], [4, 4, 0]], pbc=True)
    with pytest.raises(DataError, match=r"^frame 0: a periodic frame handed to a LODE model needs a cell with a volume"):
        fitted["alpha"].predict([box])
    box.set_cell([8, 8, 8], scale_atoms=False)
    with pytest.raises(DataError, match=r"fitted on molecules; it cannot predict periodic cells"):
        fitted["alpha"].predict([box])


def test_energy_model_sees_the_ion_beyond_the_cutoff():
    def energy(atoms):  # the chloride in the water's point charges (eV), a 1/r² charge-dipole tail
        q = np.array([Q[z] for z in atoms.numbers[:3]])
        r = np.linalg.norm(atoms.positions[:3] - atoms.positions[3], axis=1)
        return 14.4 * -1.0 * np.sum(q / r)

    frames, _, _ = dataset(9, 60)
    e = np.array([energy(a) for a in frames])
    test, _, _ = dataset(10, 30, lo=6.5, hi=11.0)
    e_test = np.array([energy(a) for a in test])
    err, models = {}, {}
    for long_range in (True, False):
        models[long_range] = build("lode", target="energy", long_range=long_range, max_radial=2).fit(frames, e)
        err[long_range] = np.sqrt(np.mean((models[long_range].predict(test) - e_test) ** 2))
    assert err[True] < err[False] / 3, err
    far = test[int(np.argmax([np.linalg.norm(a.positions[3] - a.positions[:3].mean(axis=0)) for a in test]))]
    assert np.abs(models[False].predict_forces([far])[0][3]).max() == 0.0  # local: no force on the far ion
    assert np.abs(models[True].predict_forces([far])[0][3]).max() > 1e-3  # LODE: the ion is pulled



def _water_boxes(seed, n):
    rng = np.random.default_rng(seed)
    return [Atoms("H4O2", positions=rng.uniform(0, 4.5, (6, 3)), cell=np.diag(rng.uniform(4.5, 5.5, 3)), pbc=True)
            for _ in range(n)]


@pytest.mark.parametrize("system", ["dimer", "dimer-multiscale", "periodic"])
def test_energy_forces_are_minus_the_gradient(system, tmp_path):
    if system == "periodic":
        frames = _water_boxes(21, 12)
        energy = np.array([np.cos(a.positions).sum() + 0.1 * np.sum(a.get_all_distances(mic=True)) for a in frames])
        hypers = dict(max_radial=2, lode_max_radial=1, lode_smearing=1.5)
    else:
        frames, _, _ = dataset(22, 30, lo=3.0, hi=9.0)
        energy = np.array([14.4 * np.sum([Q[z] for z in a.numbers[:3]] / np.linalg.norm(a.positions[:3] - a.positions[3], axis=1))
                           + np.sum(a.get_all_distances()[:3, :3] ** 2) for a in frames])
        hypers = dict(max_radial=3) if system == "dimer" else dict(max_radial=2, cutoffs=[3.0, 5.0], lode_square=True)
    model = build("lode", target="energy", **hypers).fit(frames, energy)
    atoms = frames[1]
    forces = model.predict_forces([atoms])[0]
    expected = model_fd_forces(model, atoms, h=1e-5)
    scale = np.abs(expected).max()
    assert scale > 0.1
    np.testing.assert_allclose(forces, expected, atol=1e-7 * scale)
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-9 * scale)  # translation invariance
    model.save(tmp_path / "e.npz")
    loaded = load_model(tmp_path / "e.npz")
    np.testing.assert_allclose(loaded.predict_forces([atoms])[0], forces, rtol=1e-12, atol=1e-12 * scale)
    pred = loaded.predict_from_features(loaded.featurizer().compute([atoms]), forces=True)
    np.testing.assert_allclose(pred.forces, forces, rtol=1e-12, atol=1e-12 * scale)
    from mdplugin.engines.ase import MLCalculator

    run = atoms.copy()
    run.calc = MLCalculator(energy=loaded)  # an MD engine gets the same forces
    np.testing.assert_allclose(run.get_forces(), forces, rtol=1e-12, atol=1e-12 * scale)


def test_only_energy_models_give_forces(fitted):
    frames, _, _ = dataset(23, 1)
    with pytest.raises(Exception, match="gives no forces"):
        fitted["lode"].predict_from_features(fitted["lode"].featurizer().compute(frames), forces=True)


def test_polarizability_of_periodic_boxes_is_covariant_and_refuses_molecules(tmp_path):
    rng = np.random.default_rng(11)

    def box():
        atoms = Atoms("H4O2", positions=rng.uniform(0, 4.5, (6, 3)), cell=np.diag(rng.uniform(4.5, 5.5, 3)), pbc=True)
        atoms.info["charge"] = 0
        return atoms

    frames = [box() for _ in range(10)]
    alpha = np.array([np.eye(3) * len(a) + 0.1 * np.cov(a.positions.T) for a in frames])
    model = build("lode", target="polarizability", max_radial=2, lode_max_radial=1, lode_smearing=1.0).fit(frames, alpha)
    r = random_rotation(np.random.default_rng(12), reflection=True)
    turned = frames[0].copy()
    turned.set_cell(frames[0].cell.array @ r.T, scale_atoms=False)
    turned.positions = frames[0].positions @ r.T
    a0, a1 = model.predict([frames[0]]), model.predict([turned])
    np.testing.assert_allclose(a1[0], r @ a0[0] @ r.T, atol=1e-8 * np.abs(a0).max())
    model.save(tmp_path / "a.npz")
    np.testing.assert_allclose(load_model(tmp_path / "a.npz").predict([turned]), a1, rtol=1e-12)
    with pytest.raises(DataError, match="fitted on periodic cells; it cannot predict molecules"):
        model.predict([molecule("H2O")])
    charged = [a.copy() for a in frames]
    charged[4].info["charge"] = 1
    with pytest.raises(DataError, match=r"^frame 4: a charged cell \(charge 1\) has no periodic dipole"):
        build("lode", target="dipole", lode_smearing=1.0).fit(charged, np.zeros((10, 3)))


def _small_water_boxes(seed, n, side=6.2):
    """Eight water molecules at random orientations on a 2×2×2 lattice of a cubic cell (Å)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = Atoms(cell=np.eye(3) * side, pbc=True)
        for corner in np.ndindex(2, 2, 2):
            w = molecule("H2O")
            w.positions = (w.positions - w.positions[0]) @ random_rotation(rng).T
            w.translate((np.array(corner) + 0.25) * side / 2 + rng.normal(scale=0.2, size=3))
            atoms += w
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
        out.append(atoms)
    return out


def _box_dipole(atoms):
    """Σ over molecules of point charges on the O→H bonds (minimum image): a label continuous
    across the cell wall."""
    total = np.zeros(3)
    for o in range(0, len(atoms), 3):
        total += 0.4 * atoms.get_distances(o, [o + 1, o + 2], mic=True, vector=True).sum(axis=0)
    return total


def test_periodic_dipole_is_continuous_across_the_cell_wall_and_covariant(tmp_path):
    frames = _small_water_boxes(31, 16)
    mu = np.array([_box_dipole(a) for a in frames])
    model = build("lode", target="dipole", max_radial=2, lode_max_radial=1, lode_smearing=1.5).fit(frames, mu)
    atoms = frames[0].copy()
    h = atoms.positions[1] - atoms.positions[0]  # move an H across the wall x = 0 along x
    path = []
    for t in np.linspace(-0.04, 0.04, 9):
        moved = atoms.copy()
        moved.positions[1] = [t, h[1] + atoms.positions[0, 1], h[2] + atoms.positions[0, 2]]
        path.append(moved)
    unwrapped = np.array([model.predict([a])[0] for a in path])
    wrapped = []
    for a in path:
        a = a.copy()
        a.wrap()
        wrapped.append(model.predict([a])[0])
    scale = np.abs(unwrapped).max()
    np.testing.assert_allclose(np.array(wrapped), unwrapped, atol=1e-9 * scale)  # the same structure
    step = np.diff(unwrapped, axis=0)
    assert np.abs(np.diff(step, axis=0)).max() < 0.05 * np.abs(step).max() + 1e-9 * scale  # no jump at x = 0
    rotation = random_rotation(np.random.default_rng(32), reflection=True)
    for reflection in (False, True):
        r = rotation if reflection else random_rotation(np.random.default_rng(33))
        turned = atoms.copy()
        turned.set_cell(atoms.cell.array @ r.T, scale_atoms=False)
        turned.positions = atoms.positions @ r.T + np.array([0.3, -2.0, 1.1])
        np.testing.assert_allclose(model.predict([turned])[0], r @ model.predict([atoms])[0], atol=1e-8 * scale)
    model.save(tmp_path / "mu.npz")
    np.testing.assert_allclose(load_model(tmp_path / "mu.npz").predict(path[:2]), unwrapped[:2], rtol=1e-12)
    test = _small_water_boxes(34, 6)
    err = model.predict(test) - np.array([_box_dipole(a) for a in test])
    assert np.sqrt(np.mean(err ** 2)) < 0.5 * np.std([_box_dipole(a) for a in test])  # it learned something


def test_ase_calculator_reports_the_lode_dipole_of_a_charged_molecule(fitted):
    from mdplugin.engines.ase import MLCalculator

    frames, _, _ = dataset(13, 1)
    atoms = frames[0]
    atoms.calc = MLCalculator(energy=None, dipole=fitted["lode"])
    np.testing.assert_allclose(atoms.get_dipole_moment(), fitted["lode"].predict([atoms])[0], rtol=1e-12)

