"""random_distortions: the copies keep the molecule's identity, move by the asked scale, turn by
proper rotations, and are reproducible from the seed."""

import numpy as np
import pytest
from ase.build import bulk, molecule

from mdplugin.structures.distortions import random_distortions


def _kabsch_residual(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """The best rotation taking centred ``a`` onto centred ``b`` and its rms residual."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1, 1, d]) @ vt
    return rot, float(np.sqrt(np.mean((a @ rot - b) ** 2)))


@pytest.mark.parametrize("name", ["H2O", "CH3CH2OH"])
def test_displacements_have_the_asked_scale_and_rotations_are_proper(name):
    ref = molecule(name)
    scale = 0.05
    copies = random_distortions(ref, 400, scale=scale, seed=3)
    assert len(copies) == 400
    residuals = []
    for c in copies:
        assert c.get_chemical_symbols() == ref.get_chemical_symbols()
        assert c.calc is None
        rot, res = _kabsch_residual(ref.positions, c.positions)
        assert np.linalg.det(rot) == pytest.approx(1.0)
        residuals.append(res)
    # the rms residual after the best superposition of Gaussian noise of σ per component:
    # σ sqrt(1 - 6/(3N)) in expectation (translation and rotation absorb 6 of the 3N degrees)
    n = len(ref)
    expected = scale * np.sqrt(1 - 6 / (3 * n))
    assert np.sqrt(np.mean(np.square(residuals))) == pytest.approx(expected, rel=0.08)
    # the orientations are spread over the sphere: the mean rotation is far from the identity
    rots = [_kabsch_residual(ref.positions, c.positions)[0] for c in copies]
    assert np.abs(np.mean(rots, axis=0)).max() < 0.15


def test_same_seed_same_copies_other_seed_others():
    water = molecule("H2O")
    a = random_distortions(water, 5, seed=7)
    b = random_distortions(water, 5, seed=7)
    c = random_distortions(water, 5, seed=8)
    assert all(np.array_equal(x.positions, y.positions) for x, y in zip(a, b))
    assert not np.allclose(a[0].positions, c[0].positions)
    np.testing.assert_array_equal(water.positions, molecule("H2O").positions)  # input untouched


def test_periodic_structures_are_displaced_in_their_cell_not_rotated():
    box = bulk("Cu", cubic=True) * 2
    copies = random_distortions(box, 3, scale=0.02, seed=0, rotate=False)
    for c in copies:
        np.testing.assert_array_equal(c.cell[:], box.cell[:])
        assert 0 < np.abs(c.positions - box.positions).max() < 0.2
    with pytest.raises(ValueError, match="periodic structure cannot be rotated"):
        random_distortions(box, 1)
    with pytest.raises(ValueError, match="scale must be >= 0"):
        random_distortions(molecule("H2O"), 1, scale=-1)
