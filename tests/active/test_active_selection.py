"""Integrated-variance-reduction selection (mdplugin.active.selection) and the models' posteriors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mdplugin.active.selection import PosteriorGroup, conditioned_group, ivr_order, select_candidates

ROOT = Path(__file__).resolve().parents[2]
TRAJ = ROOT / "examples" / "trajectories"


def _rbf(a: np.ndarray, b: np.ndarray, length: float = 0.5) -> np.ndarray:
    return np.exp(-0.5 * (a[:, None] - b[None, :]) ** 2 / length**2)


def _pool_variance(train: np.ndarray, pool: np.ndarray, noise: float) -> float:
    """Brute force: the summed posterior variance over ``pool`` of a full GP on ``train``."""
    k_tt = _rbf(train, train) + noise * np.eye(len(train))
    k_tp = _rbf(train, pool)
    return float(np.sum(1.0 - np.einsum("tp,tp->p", k_tp, np.linalg.solve(k_tt, k_tp))))


def _toy_group(train: np.ndarray, pool: np.ndarray, noise: float) -> PosteriorGroup:
    x = np.r_[train, pool]
    return conditioned_group(_rbf(x, x), len(train), noise, [np.array([i]) for i in range(len(pool))])


def test_ivr_picks_the_largest_reduction_of_pool_variance_as_brute_force():
    rng = np.random.default_rng(3)
    noise = 1e-3
    for _ in range(5):
        train = rng.uniform(-3, 3, size=4)
        pool = np.r_[rng.normal(0.5, 0.6, size=25), rng.uniform(-4, 4, size=15)]
        group = _toy_group(train, pool, noise)
        # the conditioned covariance is the posterior of the pool
        assert np.trace(group.cov) == pytest.approx(_pool_variance(train, pool, noise), rel=1e-8)
        eligible = rng.choice(len(pool), size=20, replace=False)
        picks = ivr_order([group], eligible, 3)
        chosen = list(train)
        for pick in picks:  # every greedy pick is the best one given the picks before it
            after = {int(x): _pool_variance(np.r_[chosen, pool[x]], pool, noise) for x in eligible if x not in picks[:len(chosen) - 4]}
            assert pick == min(after, key=after.get)
            chosen.append(pool[pick])
        assert len(set(picks)) == 3 and set(picks) <= set(eligible.tolist())


def test_ivr_prefers_a_representative_structure_over_an_isolated_outlier():
    rng = np.random.default_rng(8)
    train = np.array([-3.0, 0.6])  # the second point makes the dense region half known
    dense = rng.normal(1.0, 0.15, size=30)  # many uncertain pool points in one region
    outlier = np.array([4.5])  # alone and the most uncertain (farthest from the data)
    pool = np.r_[dense, outlier]
    group = _toy_group(train, pool, 1e-4)
    var = np.diag(group.cov)
    assert int(np.argmax(var)) == len(pool) - 1  # "max" would take the outlier
    (pick,) = ivr_order([group], np.arange(len(pool)), 1)
    assert pick < len(dense)
    # weights: a second group in which only the outlier is uncertain pulls the pick there
    lonely = PosteriorGroup(cov=np.diag(np.r_[np.full(len(dense), 1e-6), 1.0]), rows=group.rows, noise=1e-4,
                            weight=10.0)
    assert ivr_order([_toy_group(train, pool, 1e-4), lonely], np.arange(len(pool)), 1) == [len(pool) - 1]


def test_ivr_vector_outputs_and_batch_update_match_a_joint_posterior():
    # two outputs per candidate (a block of rows); the greedy update equals conditioning on both picks at once
    rng = np.random.default_rng(1)
    x = rng.uniform(-2, 2, size=12)
    k1 = _rbf(x, x)
    prior = np.kron(k1, np.array([[1.0, 0.3], [0.3, 0.5]]))
    rows = [np.array([2 * i, 2 * i + 1]) for i in range(10)]
    group = conditioned_group(prior, 4, 1e-3, rows)  # the first two points are the training data
    picks = ivr_order([group], range(10), 2)
    observed = np.r_[np.arange(4), 4 + rows[picks[0]], 4 + rows[picks[1]]]
    joint = conditioned_group(prior[np.ix_(np.r_[observed, np.arange(4, 24)], np.r_[observed, np.arange(4, 24)])],
                              len(observed), 1e-3, rows)
    np.testing.assert_allclose(group.cov, joint.cov, atol=1e-9)


def test_ivr_without_a_gp_model_falls_back_to_density():
    class NoGP:
        def posterior_groups(self, frames):
            return []

    rng = np.random.default_rng(6)
    cands = [{"positions": rng.normal(size=(4, 3)), "ratio": r, "step": i} for i, r in enumerate([2.0, 0.5, 3.0, 1.5])]
    assert select_candidates(cands, 2, "ivr", learner=NoGP(), numbers=np.ones(4, int)) == \
        select_candidates(cands, 2, "density")


def _rotated(frames, rng):
    out = []
    for a in frames:
        b = a.copy()
        q = Rotation.random(random_state=rng).as_matrix() * rng.choice([-1.0, 1.0])
        b.positions = a.positions @ q.T + rng.normal(size=3)
        out.append(b)
    return out


@pytest.fixture(scope="module")
def dce():
    from mdplugin.structures.data import read_dataset

    data = read_dataset(TRAJ / "dce_train.xyz")
    return data.subset(range(0, 120, 12)), data.subset(range(5, 400, 25))


def test_sagpr_prior_covariance_gives_the_models_posterior(dce):
    from mdplugin.models import build
    from mdplugin.core.tensors import vector_to_spherical

    train, test = dce
    # every training environment is a representative one: the sparse GP is the full GP
    model = build("lsoap", target="dipole", n_components=64, n_sparse=100, n_sparse_l0=200,
                  regularizer_l1=1e-4).fit(train.frames, train.dipole)
    _, std = model.predict(test.frames, return_std=True)
    rng = np.random.default_rng(0)
    for frames in (list(test.frames), _rotated(test.frames, rng)):
        k, noise = model.prior_covariance(list(train.frames) + frames)[1]
        assert k.shape == (3 * (len(train) + len(frames)),) * 2 and noise == pytest.approx(1e-4)
        group = conditioned_group(k, 3 * len(train), noise, [np.arange(3 * i, 3 * i + 3) for i in range(len(frames))])
        var = np.diag(group.cov).reshape(-1, 3) * model.signal_variance_[1] * model.y_scale_[1] ** 2
        if frames[0] is test.frames[0]:
            np.testing.assert_allclose(np.sqrt(var), np.abs(vector_to_spherical(std)), rtol=1e-3)
        # the summed variance of each structure is invariant under rotations and reflections
        np.testing.assert_allclose(var.sum(axis=1), (std**2).sum(axis=1), rtol=1e-3)


def test_energy_environment_covariance_is_invariant(dce):
    from mdplugin.models import build

    train, test = dce
    model = build("soap", target="energy", n_sparse=50).fit(train.frames, {"energy": train.energy, "forces": train.forces})
    k, frame, noise = model.environment_covariance(test.frames)
    rng = np.random.default_rng(2)
    moved = _rotated(test.frames, rng)
    perm = [rng.permutation(len(a)) for a in moved]
    moved = [a[p] for a, p in zip(moved, perm)]
    k2, frame2, _ = model.environment_covariance(moved)
    n = len(test.frames[0])
    order = np.concatenate([i * n + np.argsort(p) for i, p in enumerate(perm)])  # original atom -> moved row
    np.testing.assert_allclose(k2[np.ix_(order, order)], k, atol=1e-10)
    np.testing.assert_array_equal(frame, np.repeat(np.arange(len(test)), n))
    assert noise == pytest.approx((model.energy_noise / model.signal_std_) ** 2)
    assert np.linalg.eigvalsh(k).min() > -1e-8


def test_ivr_selection_with_a_learner_is_invariant_and_respects_the_threshold(dce):
    from mdplugin.active import ActiveConfig, Learner

    train, test = dce
    cfg = ActiveConfig(targets=("energy", "dipole"), hypers={
        "energy": {"n_sparse": 50}, "dipole": {"n_components": 32, "n_sparse": 40, "n_sparse_l0": 80}},
        thresholds={"energy": 1e-3, "dipole": 1e-3})
    learner = Learner(cfg, oracle=None)
    learner.train(train)
    groups = learner.posterior_groups(list(test.frames))
    assert [g.name for g in groups] == ["energy", "dipole l=1"]
    numbers = test.frames[0].numbers
    cands = [{"positions": a.positions, "ratio": 2.0 if i % 4 else 0.5, "step": i, "u": u}
             for i, (a, u) in enumerate(zip(test.frames, learner.uncertainties_of(list(test.frames))))]
    picks = [c["step"] for c in select_candidates(cands, 3, "ivr", learner=learner, numbers=numbers)]
    assert len(set(picks)) == 3 and all(p % 4 for p in picks)  # only candidates over the threshold
    rng = np.random.default_rng(4)
    moved = [dict(c, positions=a.positions) for c, a in zip(cands, _rotated(test.frames, rng))]
    assert [c["step"] for c in select_candidates(moved, 3, "ivr", learner=learner, numbers=numbers)] == picks


# --- max and density selection (sorted interatomic distances) ------------------------------------


def _candidates(rng, n: int, ratios) -> list[dict]:
    return [{"positions": rng.normal(size=(n, 3)) * 1.5, "ratio": r, "u": {}, "predicted": {}, "step": i}
            for i, r in enumerate(ratios)]


def test_selection_is_most_uncertain_then_farthest_and_invariant():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(5)
    ratios = [0.5, 3.0, 1.5, 7.0, 2.0, 0.9, 1.2]
    cands = _candidates(rng, 5, ratios)
    assert select_candidates(cands, 0) == [] and select_candidates(_candidates(rng, 5, [0.2, 1.0]), 3) == []
    one = select_candidates(cands, 1)
    assert [c["step"] for c in one] == [3]  # the most uncertain
    picks = select_candidates(cands, 3)
    assert picks[0]["step"] == 3 and all(c["ratio"] > 1 for c in picks) and len({c["step"] for c in picks}) == 3

    def sig(c):
        d = np.linalg.norm(c["positions"][:, None] - c["positions"][None], axis=-1)
        return np.sort(d[np.triu_indices(5, 1)])

    over = [c for c in cands if c["ratio"] > 1]
    dist_to_first = {c["step"]: np.linalg.norm(sig(c) - sig(picks[0])) for c in over}
    assert picks[1]["step"] == max(dist_to_first, key=dist_to_first.get)  # the farthest from the first
    # the same picks after rotating/reflecting and permuting the atoms of every candidate
    moved = []
    for c in cands:
        q = Rotation.random(random_state=rng).as_matrix() * rng.choice([-1.0, 1.0])
        moved.append(dict(c, positions=(c["positions"] @ q.T + rng.normal(size=3))[rng.permutation(5)]))
    assert [c["step"] for c in select_candidates(moved, 3)] == [c["step"] for c in picks]


def test_density_selection_prefers_uncertain_and_representative_structures():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(11)
    base = rng.normal(size=(5, 3)) * 1.5

    def around(shape, n, ratio, scale=0.01):
        return [{"positions": shape + rng.normal(scale=scale, size=shape.shape), "ratio": ratio, "u": {},
                 "predicted": {}} for _ in range(n)]

    dense = around(base, 10, 2.0)  # many moderately uncertain structures in one region
    outlier = around(base * 1.3, 1, 3.0)  # the single most uncertain, alone
    second = around(base * 0.8, 8, 1.8)  # a smaller, less uncertain region
    cands = dense + outlier + second
    for i, c in enumerate(cands):
        c["step"] = i
    assert select_candidates(cands, 1, "max")[0]["step"] == 10  # the outlier
    one = select_candidates(cands, 1, "density")[0]["step"]
    assert one < 10  # a structure of the dense region
    two = [c["step"] for c in select_candidates(cands, 2, "density")]
    assert two[0] == one and two[1] >= 11  # then the other region: the first pick took most of the dense one's
    # the same picks after rotating/reflecting and permuting every candidate's atoms
    moved = [dict(c, positions=(c["positions"] @ (Rotation.random(random_state=rng).as_matrix()
                                                   * rng.choice([-1.0, 1.0])).T)[rng.permutation(5)])
             for c in cands]
    assert [c["step"] for c in select_candidates(moved, 2, "density")] == two
    assert select_candidates(around(base, 4, 0.9), 2, "density") == []  # none over the threshold


@pytest.mark.parametrize("selection", ["max", "density"])
def test_selection_in_a_periodic_cell_sees_structures_across_the_wall(selection):
    """In a cell the structure signature takes minimum-image distances: candidates whose atoms are
    moved by lattice vectors (wrapped across the cell wall) are picked exactly as before; without
    the cell (the former code) the wrapped structures look like other structures."""
    from ase import Atoms

    rng = np.random.default_rng(2)
    cell = np.array([[9.0, 0.0, 0.0], [1.0, 8.5, 0.0], [-0.7, 0.6, 9.2]])
    template = Atoms("C2H2O2", cell=cell, pbc=True)
    base = rng.normal(size=(6, 3)) * 1.0
    cands = [{"positions": base * rng.uniform(0.8, 1.3) + rng.normal(scale=0.2, size=(6, 3)), "ratio": r,
              "u": {}, "predicted": {}, "step": i} for i, r in enumerate([2.0, 3.5, 1.4, 5.0, 1.1, 2.6, 0.7, 1.9])]
    picks = [c["step"] for c in select_candidates(cands, 3, selection, template=template)]
    wrapped = []
    for c in cands:
        shifts = rng.integers(-1, 2, size=(6, 3)) @ cell  # each atom to one of its images
        wrapped.append(dict(c, positions=c["positions"] + shifts))
    assert [c["step"] for c in select_candidates(wrapped, 3, selection, template=template)] == picks
    from mdplugin.active.selection import _distance_signature

    for c, w in zip(cands, wrapped):
        np.testing.assert_allclose(_distance_signature(w["positions"], template),
                                   _distance_signature(c["positions"], template), atol=1e-12)
    assert not np.allclose(_distance_signature(wrapped[0]["positions"]), _distance_signature(cands[0]["positions"]))
