"""The active-learning loop: labels when the models are unsure, budgets (calls, steps, wall time),
thresholds, segments and batches, resume, and targets without an energy."""

from __future__ import annotations

import numpy as np
import pytest

from mdplugin.active import RunStore, run_active
from mdplugin.active.store import LOG_COLUMNS
from mdplugin.core.errors import ConfigError
from mdplugin.structures.data import read_dataset

from .helpers import _config, _keys, _run, rattled_waters, toy_oracle, water


def test_call_budget_labels_uncertain_structures_durably(tmp_path):
    s = _run(tmp_path, max_calls=3, steps=500)
    run_dir = tmp_path / "run"
    assert s.oracle_calls == 3 and "oracle-call budget" in s.reason
    keys = _keys(run_dir)
    assert len(keys) == len(set(keys)) == 4 + 3
    data = read_dataset(run_dir / "data.xyz")
    # the stored labels are the oracle's
    for atoms, mu in zip(data.frames, data.dipole):
        atoms.calc = toy_oracle()
        np.testing.assert_allclose(atoms.get_dipole_moment(), mu, atol=1e-6)
    rows = RunStore(run_dir).read_log()
    assert list(rows[0]) == list(LOG_COLUMNS)
    labels = [r for r in rows if r["event"] == "label"]
    assert len(labels) == 3
    for r in labels:  # labelled because some target's uncertainty was over its threshold
        assert float(r["uncertainty"]) > 1.0
        assert max(float(r[f"u_{t}"]) / float(r[f"thr_{t}"]) for t in ("energy", "dipole")) == \
            pytest.approx(float(r["uncertainty"]), rel=1e-4)
        assert float(r["err_dipole"]) >= 0 and float(r["err_forces"]) >= 0
    assert (run_dir / "active.png").stat().st_size > 1000
    # after retraining, the GPR is surer at the structures it was just taught
    from mdplugin.models import load_model

    model = load_model(run_dir / "dipole.npz")
    _, std = model.predict(data.frames[-3:], return_std=True)
    assert np.all(np.linalg.norm(std, axis=1) < np.array([float(r["u_dipole"]) for r in labels]))


@pytest.mark.parametrize("walkers,pool", [(False, 0), (True, 0), (True, 40)])
def test_segments_label_at_most_a_batch_per_retraining(tmp_path, walkers, pool):
    s = _run(tmp_path, max_calls=5, steps=600, segment=20, sample_every=4, batch=2, walkers=walkers, pool=pool,
             selection="density" if pool else "max")
    run_dir = tmp_path / "run"
    assert s.oracle_calls == 5 and "oracle-call budget" in s.reason
    keys = _keys(run_dir)
    assert len(keys) == len(set(keys)) == 4 + 5
    rows = RunStore(run_dir).read_log()
    in_a_row = 0
    for r in rows:
        if r["event"] == "label":
            in_a_row += 1
            assert float(r["uncertainty"]) > 1.0
            assert int(r["step"]) % 4 == 0 or int(r["step"]) % 20 == 0  # a candidate step
        elif r["event"] == "train":
            assert in_a_row <= 2
            in_a_row = 0
    data = read_dataset(run_dir / "data.xyz")
    for atoms, e in zip(data.frames, data.energy):  # the labels are the oracle's
        atoms.calc = toy_oracle()
        assert atoms.get_potential_energy() == pytest.approx(e, abs=1e-6)


def test_batched_uncertainties_match_the_calculator(tmp_path):
    from mdplugin.active import Learner

    _run(tmp_path, max_calls=0, n_initial=5)
    cfg = _config()
    learner = Learner(cfg, toy_oracle())
    learner.train(RunStore(tmp_path / "run").read_data(cfg.labels()))
    frames = rattled_waters(4, 0.08, seed=2)
    batched = learner.uncertainties_of(frames)
    for a, u in zip(frames, batched):
        a.calc = learner.calculator()
        one = learner.uncertainties(a)
        for t in cfg.targets:
            assert u[t] == pytest.approx(one[t], rel=1e-6, abs=1e-12)


def test_step_budget_ends_a_confident_run(tmp_path):
    s = _run(tmp_path, steps=25, thresholds={"energy": 10.0, "dipole": 10.0})
    assert s.steps == 25 and s.oracle_calls == 0 and "step budget" in s.reason
    assert len(_keys(tmp_path / "run")) == 4


def test_wall_time_budget(tmp_path):
    s = _run(tmp_path, steps=10**6, wall_time=3.0, thresholds={"energy": 10.0, "dipole": 10.0})
    assert "wall-time budget" in s.reason and s.wall_time_s >= 3.0


def test_relative_threshold_is_a_multiple_of_the_cross_validated_uncertainty(tmp_path):
    from mdplugin.active import Learner, measure
    from mdplugin.models import build
    from mdplugin.models.training import fit_on_dataset

    cfg = _config(thresholds={}, threshold_factor=2.5)
    _run(tmp_path, thresholds={}, threshold_factor=2.5, max_calls=0, n_initial=8)
    data = RunStore(tmp_path / "run").read_data(cfg.labels())
    learner = Learner(cfg, toy_oracle())
    learner.train(data.subset(range(6)))
    # 2-fold cross-validation: the RMS of the uncertainty the half models give on the other half
    stds, errs = [], []
    for fit_idx, test_idx in (([0, 2, 4], [1, 3, 5]), ([1, 3, 5], [0, 2, 4])):
        model = fit_on_dataset(build("rpr", target="dipole"), data.subset(fit_idx))
        pred, std = model.predict(data.subset(test_idx).frames, return_std=True)
        stds += [measure("dipole", s, 3) for s in std]
        errs += [measure("dipole", p - t, 3) for p, t in zip(pred, data.dipole[test_idx])]
    rms = np.sqrt(np.mean(np.square(stds))) * np.sqrt(3 / 6)  # scaled from 3 to 6 training frames
    assert learner.thresholds()["dipole"] == pytest.approx(2.5 * rms)
    assert learner.validation["dipole"]["error"] == pytest.approx(np.sqrt(np.mean(np.square(errs))))
    assert "held-out" in learner.calibration_note
    # labelled structures' errors are recorded, but do not move the threshold
    learner.record_errors({"dipole": 1.0, "energy": 1.0, "forces": 1.0})
    learner.train(data.subset(range(7)))  # 7 < 1.25 x 6 frames: the calibration is kept
    assert learner.thresholds()["dipole"] == pytest.approx(2.5 * rms)
    learner.train(data)  # 8 frames: cross-validated again
    assert learner.calibrated_on == 8 and learner.thresholds()["dipole"] != pytest.approx(2.5 * rms)


def test_a_run_with_no_oracle_call_says_so_loudly(tmp_path, capsys):
    s = run_active(water(), tmp_path / "run", _config(thresholds={"energy": 10.0, "dipole": 10.0}, steps=20),
                   oracle=toy_oracle())
    assert s.oracle_calls == 0
    err = capsys.readouterr().err
    assert "warning: 0 oracle calls in 20 MD steps" in err and "lower --threshold-energy" in err
    assert s.warning and "x its threshold" in s.warning
    s = _run(tmp_path, name="run2", max_calls=1, thresholds={"energy": 1e-6})  # a run that labels: no warning
    assert s.oracle_calls == 1 and not s.warning and "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("segment", [0, 25])
def test_resume_extends_budgets_and_keeps_labels(tmp_path, segment):
    _run(tmp_path, max_calls=2, steps=500, segment=segment, sample_every=5)
    run_dir = tmp_path / "run"
    before = _keys(run_dir)
    s = run_active(None, run_dir, oracle=toy_oracle(), resume=True, overrides={"max_calls": 4},
                   say=lambda m: None)
    after = _keys(run_dir)
    assert after[: len(before)] == before and len(after) == len(set(after)) == len(before) + 2
    assert s.oracle_calls == 4
    with pytest.raises(ConfigError, match="already holds"):
        _run(tmp_path)


def test_resume_budgets_are_new_totals_and_a_step_budget_needs_steps(tmp_path):
    """As docs/active.md says: on resume ``steps`` is the new total, not an increment, and a run
    that ended on its step budget does not go on when only ``max_calls`` is raised."""
    confident = {"energy": 10.0, "dipole": 10.0}
    s = _run(tmp_path, steps=20, thresholds=confident)
    assert "step budget" in s.reason and s.steps == 20
    more = run_active(None, tmp_path / "run", oracle=toy_oracle(), resume=True, overrides={"max_calls": 50},
                      say=lambda m: None)
    assert "step budget" in more.reason and more.steps == 20
    more = run_active(None, tmp_path / "run", oracle=toy_oracle(), resume=True, overrides={"steps": 30},
                      say=lambda m: None)
    assert "step budget reached (30 steps)" in more.reason and more.steps == 30


def test_dipole_and_polarizability_only_the_oracle_drives_the_dynamics(tmp_path):
    s = _run(tmp_path, targets=("dipole", "polarizability"), thresholds={"dipole": 1e-3}, max_calls=2, steps=200)
    assert s.oracle_calls == 2
    data = read_dataset(tmp_path / "run" / "data.xyz")
    assert data.properties == ["dipole", "polarizability"]
    alpha = data.polarizability
    np.testing.assert_allclose(alpha, np.swapaxes(alpha, 1, 2), atol=1e-10)  # symmetric, as labelled
    rows = [r for r in RunStore(tmp_path / "run").read_log() if r["event"] == "label"]
    assert all(r["u_polarizability"] and r["err_polarizability"] and not r["u_energy"] for r in rows)
    for key in ("dipole", "polarizability"):
        assert (tmp_path / "run" / f"{key}.npz").exists()
    assert not (tmp_path / "run" / "energy.npz").exists()

