"""Every model gives finite, symmetric predictions where equivariant features vanish by symmetry
(issue 27, point 6): the N of an ammonium ion (also far from a water molecule), the C of methane,
the S of SF6, an isolated atom, the C of CO2 (λ = 1). Before the floor of the λ > 0 normalisation
(:data:`mdplugin.features.lambda_soap.EQUIVARIANT_NORM_FLOOR`) the λ = 1, 2 features of such a
centre were rounding noise divided by its own norm: a dipole of ammonium of 0.06 e·Å turning with
the rounding, and NaN where the squared norm from the Gram matrices rounded negative."""

import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from mdplugin.core import tensors as T
from mdplugin.models import build

SMALL = dict(cutoff=3.5, max_radial=3, max_angular=3, n_sparse=40, n_components=40, chunk_size=10)
CHARGES = {1: 0.15, 6: -0.1, 7: -0.5, 8: -0.45, 9: -0.3, 16: 0.4, 17: -0.2}


def ammonium() -> Atoms:
    atoms = molecule("CH4")
    atoms.numbers[0] = 7
    return atoms


def sf6() -> Atoms:
    """An octahedral SF6 (S–F 1.56 Å)."""
    axes = np.vstack([np.eye(3), -np.eye(3)]) * 1.56
    return Atoms("SF6", np.vstack([np.zeros(3), axes]))


def _dipole(atoms: Atoms) -> np.ndarray:
    q = np.array([CHARGES[z] for z in atoms.numbers])
    q -= q.mean()
    return q @ atoms.positions


def _polarizability(atoms: Atoms) -> np.ndarray:
    alpha = np.eye(3) * 0.5 * len(atoms)
    d = atoms.get_all_distances(vector=True)
    r = np.linalg.norm(d, axis=-1)
    for i, j in zip(*np.triu_indices(len(atoms), 1)):
        u = d[i, j] / r[i, j]
        alpha += np.exp(-((r[i, j] / 1.5) ** 2)) * (np.eye(3) + 2.0 * np.outer(u, u))
    return alpha


def _training_set(seed: int = 0, n: int = 40) -> list[Atoms]:
    """Distorted molecules of H, C, N, O, F, S and ammonium–water pairs at 2.6–3.4 Å."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        kind = k % 5
        if kind == 4:
            water = molecule("H2O")
            water.positions = water.positions @ T.random_rotation(rng).T + [rng.uniform(2.6, 3.4), 0, 0]
            atoms = ammonium() + water
        else:
            atoms = [molecule("CH4"), molecule("CH3Cl"), molecule("H2O"), sf6()][kind]
        atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
        atoms.positions = atoms.positions @ T.random_rotation(rng).T
        out.append(atoms)
    out.append(molecule("CO2"))
    out[-1].positions += rng.normal(scale=0.05, size=(3, 3))
    return out


def _symmetric_structures() -> dict[str, Atoms]:
    far = ammonium() + molecule("H2O")
    far.positions[5:] += [10.9, 0, 0]
    return {"methane": molecule("CH4"), "ammonium": ammonium(), "SF6": sf6(),
            "isolated O atom": Atoms("O", [[0.0, 0.0, 0.0]]), "CO2": molecule("CO2"),
            "ammonium far from water": far}


@pytest.fixture(scope="module")
def models():
    frames = _training_set()
    return {
        "dipole": build("lsoap", target="dipole", **SMALL).fit(frames, np.array([_dipole(f) for f in frames])),
        "polarizability": build("lsoap", target="polarizability", **SMALL).fit(
            frames, np.array([_polarizability(f) for f in frames])),
    }


def _turned(atoms: Atoms, rotation: np.ndarray) -> Atoms:
    out = atoms.copy()
    out.positions = out.positions @ rotation.T
    return out


@pytest.mark.parametrize("name", list(_symmetric_structures()))
@pytest.mark.parametrize("return_std", [False, True])
def test_lsoap_dipole_is_finite_and_zero_by_symmetry(models, name, return_std):
    atoms = _symmetric_structures()[name]
    rng = np.random.default_rng(3)
    rotations = [T.random_rotation(rng, reflection=k % 2 == 1) for k in range(6)]
    frames = [atoms] + [_turned(atoms, r) for r in rotations]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out = models["dipole"].predict(frames, return_std=return_std)
    y = out[0] if return_std else out
    assert np.all(np.isfinite(y)) and (not return_std or np.all(np.isfinite(out[1])))
    if name != "ammonium far from water":
        # every one of these has no dipole by symmetry: an equivariant model must give zero
        np.testing.assert_allclose(y, 0.0, atol=1e-9)
    else:  # the water's contribution alone, turned with the structure
        assert np.linalg.norm(y[0]) > 1e-3
        np.testing.assert_allclose(y[1:], np.array([r @ y[0] for r in rotations]), atol=1e-9)


@pytest.mark.parametrize("name", list(_symmetric_structures()))
@pytest.mark.parametrize("return_std", [False, True])
def test_lsoap_polarizability_is_finite_and_isotropic_where_symmetry_says(models, name, return_std):
    atoms = _symmetric_structures()[name]
    rng = np.random.default_rng(4)
    frames = [_turned(atoms, T.random_rotation(rng, reflection=k % 2 == 1)) for k in range(6)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out = models["polarizability"].predict(frames, return_std=return_std)
    y = out[0] if return_std else out
    assert np.all(np.isfinite(y)) and (not return_std or np.all(np.isfinite(out[1])))
    trace = np.trace(y, axis1=1, axis2=2)
    np.testing.assert_allclose(trace, trace[0], rtol=1e-9)  # invariant
    if name in ("methane", "ammonium", "SF6", "isolated O atom"):  # cubic symmetry: α = ᾱ·1
        np.testing.assert_allclose(y, trace[:, None, None] / 3 * np.eye(3), atol=1e-9 * abs(trace[0]))


@pytest.mark.parametrize("name", ["methane", "SF6", "CO2"])
@pytest.mark.parametrize("target", ["dipole", "polarizability"])
def test_rpr_is_finite_on_a_spherical_or_linear_top(name, target):
    """RPR learns one molecule: trained on distorted copies, it predicts the undistorted (spherical
    or linear top) one finitely, warning when the principal axes are ill-defined."""
    rng = np.random.default_rng(5)
    frames = []
    for _ in range(25):
        atoms = _symmetric_structures()[name]
        atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
        frames.append(_turned(atoms, T.random_rotation(rng)))
    y = np.array([_dipole(f) if target == "dipole" else _polarizability(f) for f in frames])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build("rpr", target=target).fit(frames, y)
        pred, std = model.predict([_symmetric_structures()[name]], return_std=True)
    assert np.all(np.isfinite(pred)) and np.all(np.isfinite(std))


def test_soap_energy_is_finite_with_forces_on_symmetric_structures():
    frames = _training_set(seed=1, n=20)
    energies = np.array([-0.5 * np.sum(_polarizability(f)) for f in frames])
    model = build("soap", cutoff=3.5, max_radial=3, max_angular=3, n_sparse=40).fit(frames, energies)
    for name, atoms in _symmetric_structures().items():
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            prediction = model.predict_from_features(model.featurizer().compute([atoms], gradients=True),
                                                     return_std=True, forces=True)
        assert np.all(np.isfinite(prediction.values)) and np.all(np.isfinite(prediction.forces)), name
