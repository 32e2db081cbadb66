"""The run folder: data.xyz survives a torn frame and never holds a structure twice, bad settings
are one-line errors, and a start that fails leaves no folder behind (or takes over one that a
killed start left)."""

from __future__ import annotations

import numpy as np
import pytest

from mdplugin.active import ActiveConfig, RunStore, run_active, structure_hash
from mdplugin.core.errors import ConfigError

from .helpers import FailingOracle, _config, _keys, _labelled_file, _run, toy_oracle, water


def test_store_drops_a_torn_frame_and_never_duplicates(tmp_path):
    store = RunStore(tmp_path / "r")
    assert store.open() == 0
    oracle = toy_oracle()
    frames = []
    for shift in (0.0, 0.05):
        a = water()
        a.positions[1, 0] += shift
        a.calc = oracle
        labels = {"energy": a.get_potential_energy(), "forces": a.get_forces(), "dipole": a.get_dipole_moment()}
        store.append_frame(a, labels, step=0, origin="md")
        store.append_frame(a, labels, step=0, origin="md")  # the same structure again: ignored
        frames.append(a)
    good = store.data_path.read_text()
    with open(store.data_path, "a") as fh:  # a kill in the middle of the next frame
        fh.write(good[: len(good) // 3])
    store = RunStore(tmp_path / "r")
    assert store.open() == 2
    assert store.data_path.read_text() == good
    assert store.has(structure_hash(frames[1])) and store.origins == {"md": 2}
    data = store.read_data(["energy", "forces", "dipole"])
    np.testing.assert_allclose(data.dipole[1], frames[1].get_dipole_moment())
    np.testing.assert_allclose(data.forces[0], frames[0].get_forces(), atol=1e-7)


def test_structure_hash_sees_any_displacement():
    a, b = water(), water()
    assert structure_hash(a) == structure_hash(b)
    b.positions[2, 1] += 1e-9
    assert structure_hash(a) != structure_hash(b)


def test_bad_settings_raise_config_error():
    with pytest.raises(ConfigError, match="unknown target"):
        ActiveConfig(targets=("charge",))
    with pytest.raises(ConfigError, match="dipole threshold must be positive"):
        ActiveConfig(thresholds={"dipole": -1.0})
    with pytest.raises(ConfigError, match="temperature"):
        ActiveConfig(temperature=(-5, 300))
    with pytest.raises(ConfigError, match="max_calls"):
        ActiveConfig(max_calls=-1)
    assert ActiveConfig(temperature=(300, 600), steps=100).temperature_at(50) == pytest.approx(450)
    with pytest.raises(ConfigError, match="walkers need segments"):
        ActiveConfig(walkers=True, explore=False)
    with pytest.raises(ConfigError, match="sample_every"):
        ActiveConfig(segment=10, sample_every=0)
    with pytest.raises(ConfigError, match="unknown selection"):
        ActiveConfig(segment=10, selection="random")
    with pytest.raises(ConfigError, match="stop_factor"):
        ActiveConfig(segment=10, stop_factor=0.5)


def test_a_failed_start_leaves_no_run_folder_and_a_rerun_works(tmp_path):
    from mdplugin.core.errors import DataError, MdpluginError

    run_dir = tmp_path / "run5"
    raw = tmp_path / "raw5.xyz"
    water().write(raw)  # positions only
    kw = dict(config=_config(steps=5, max_calls=1), say=lambda m: None)
    with pytest.raises(DataError, match="raw5.xyz"):  # initial data without labels
        run_active(water(), run_dir, initial=raw, oracle=toy_oracle(), **kw)
    assert not run_dir.exists()
    with pytest.raises(ConfigError, match="nowhere_mod"):  # an oracle that cannot be made
        run_active(water(), run_dir, oracle="nowhere_mod:make", **kw)
    assert not run_dir.exists()
    with pytest.raises(RuntimeError, match="SCF"):  # the oracle fails on the first reference frame
        run_active(water(), run_dir, oracle=FailingOracle(), **kw)
    assert not run_dir.exists()
    # a folder that existed keeps what was in it; only the run's files go
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    with pytest.raises(MdpluginError):
        run_active(water(), run_dir, oracle="nowhere_mod:make", **kw)
    assert sorted(p.name for p in run_dir.iterdir()) == ["notes.txt"]
    # the same command with correct input works
    s = run_active(water(), run_dir, initial=_labelled_file(tmp_path / "good.xyz", 4), oracle=toy_oracle(), **kw)
    assert s.initial_frames == 4 and len(_keys(run_dir)) == 4 + s.oracle_calls
    # a folder that holds labels is never removed by a failed start
    keys = _keys(run_dir)
    with pytest.raises(ConfigError, match="already holds"):
        run_active(water(), run_dir, oracle="nowhere_mod:make", **kw)
    assert _keys(run_dir) == keys and (run_dir / "config.json").exists()


def test_a_folder_left_by_a_start_killed_before_its_first_label_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"config": {}, "initial": "raw5.xyz", "oracle": "tblite"}')
    (run_dir / "data.xyz").write_text("")
    water().write(run_dir / "start.xyz")
    s = _run(tmp_path, steps=5, max_calls=1)
    assert s.initial_frames == 4
    saved = RunStore(run_dir).read_config()
    assert saved["initial"] is None and saved["config"]["steps"] == 5

