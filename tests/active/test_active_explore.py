"""Exploration (``ActiveConfig.explore``, the default): replicas from diverse, outward starts and
hot segments. Each test fails without the mechanism: the starts of the loop before exploration
(random initial frames, or one trajectory) repeat and stay near the start structure."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from ase.calculators.calculator import CalculationFailed, all_changes

from mdplugin.active import ActiveConfig
from mdplugin.active.explore import K_B, farthest_starts, thermal_window
from mdplugin.active.selection import _distance_signature

from .helpers import ToyOracle, _config, _run, rattled_waters, water


def test_farthest_starts_push_away_from_earlier_starts():
    rng = np.random.default_rng(0)
    sig = rng.normal(size=(30, 3))
    earlier = sig[:1]
    picks = farthest_starts(sig, earlier, 4)
    assert len(set(picks)) == 4 and 0 not in picks
    # the first pick is the farthest from the earlier start, each next one the farthest from all before
    assert picks[0] == int(np.argmax(np.linalg.norm(sig - sig[0], axis=1)))
    chosen = np.vstack([earlier, sig[picks[:2]]])
    d = np.min(np.linalg.norm(sig[:, None] - chosen[None], axis=2), axis=1)
    assert picks[2] == int(np.argmax(d))
    assert farthest_starts(sig[:2], np.empty((0, 3)), 3) == [0, 1, 0]  # fewer structures than replicas: cycled
    with pytest.raises(ValueError, match="no structure"):
        farthest_starts(np.empty((0, 3)), earlier, 1)


def test_starts_are_invariant_under_rotations_reflections_and_permutations():
    frames = rattled_waters(12, 0.15, seed=1)
    sig = np.array([_distance_signature(a.positions) for a in frames])
    rng = np.random.default_rng(2)
    moved = []
    for a in frames:
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        q[:, 0] *= -1 if rng.random() < 0.5 else 1  # reflections too
        moved.append(a.positions[rng.permutation(3)] @ q.T + rng.normal(size=3))
    sig2 = np.array([_distance_signature(p) for p in moved])
    assert farthest_starts(sig, sig[:1], 5) == farthest_starts(sig2, sig2[:1], 5)


def _segment_rows(run_dir):
    with open(run_dir / "log.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["event"] == "segment"]


@pytest.mark.parametrize("pool", [30, 0])
def test_exploring_run_starts_every_segment_somewhere_new_and_heats_them(tmp_path, pool):
    """A real run (analytic oracle): every segment starts from a structure no segment started from
    before, chosen among labelled frames and candidates (without a pool, the last segment's; there
    the thresholds are so high that nothing is labelled: 12 segments and 4 labelled frames, so starts
    from those alone would repeat), and the temperatures cycle T, T(1+h)/2, T h."""
    cfg = dict(segment=10, sample_every=2, pool=pool, steps=120, max_calls=6, explore=True, explore_heat=2.0,
               temperature=(300, 300))
    if pool == 0:
        cfg["thresholds"] = {"energy": 1e3, "dipole": 1e3}
    _run(tmp_path, "explore", **cfg)
    rows = _segment_rows(tmp_path / "explore")
    assert len(rows) >= 6
    keys = [r["note"].split()[1] for r in rows]
    assert len(set(keys)) == len(keys)
    temps = [float(r["note"].split()[3]) for r in rows]
    assert temps[:3] == [300.0, 450.0, 600.0] and temps[3] == 300.0
    # the loop before: walkers from random initial frames repeat their starts and log none
    _run(tmp_path, "walkers", **dict(cfg, explore=False, walkers=True))
    assert _segment_rows(tmp_path / "walkers") == []


def test_exploring_run_labels_farther_from_its_start(tmp_path):
    """The labelled structures of an exploring run spread farther from the start structure (sorted
    interatomic distances) than those of the same budget following one trajectory."""
    from mdplugin.structures.data import read_dataset

    def spread(name, **kw):
        _run(tmp_path, name, steps=200, max_calls=8, temperature=(300, 300), **kw)
        data = read_dataset(tmp_path / name / "data.xyz")
        ref = _distance_signature(water().positions)
        md = [a for a in data.frames if a.info.get("active_origin") == "md"] or data.frames
        return np.mean([np.linalg.norm(_distance_signature(a.positions) - ref) for a in md])

    explore = spread("explore", segment=10, sample_every=2, pool=30, explore=True)
    follow = spread("follow", explore=False)
    assert explore > 1.3 * follow, (explore, follow)


def test_thermal_window_takes_a_boltzmann_sample_and_refuses_a_hot_one():
    """The potential energy of 3N harmonic degrees of freedom at T is kT/2 chi2(3N) above the minimum:
    the window (3 standard deviations) keeps nearly all of such a sample at T and almost none at 4 T,
    whatever the reference energy."""
    rng = np.random.default_rng(0)
    n_atoms, temperature = 8, 500.0
    for reference in (0.0, -408.7):
        at_t = reference + 0.5 * K_B * temperature * rng.chisquare(3 * n_atoms, size=4000)
        hot = reference + 0.5 * K_B * 4 * temperature * rng.chisquare(3 * n_atoms, size=4000)
        assert thermal_window(at_t, reference, n_atoms, temperature, 3.0).mean() > 0.99
        assert thermal_window(hot, reference, n_atoms, temperature, 3.0).mean() < 0.05
    assert not thermal_window(np.array([np.nan]), 0.0, n_atoms, temperature, 3.0).any()  # unknown: never a start
    # a model's energy far below every labelled one is a hole of the model (3 std = 0.45 eV here), not a start
    assert thermal_window(np.array([-0.4, -0.5, -8.7]), 0.0, n_atoms, temperature, 3.0).tolist() == [True, False, False]


def _start_excess(run_dir):
    """Energies (eV) of the segment starts above the lowest labelled energy, from log.csv."""
    return np.array([float(r["note"].split(", ")[1].split()[0]) for r in _segment_rows(run_dir)])


@pytest.mark.slow
def test_exploring_tblite_run_starts_only_from_thermally_accessible_structures(tmp_path):
    """A real GFN2-xTB (tblite) run of 1,2-dichloroethane at 500 K with hot segments (3 x T): every
    segment starts within the thermal window of the thermostat temperature. Without the window
    (the rule before) the farthest known structures are distorted ones and the chain of starts
    climbs eV above the minimum."""
    pytest.importorskip("tblite")
    from mdplugin.active import run_active

    from ..conftest import dichloroethane

    def run(name, window):
        cfg = ActiveConfig(targets=("energy",), temperature=500.0, steps=300, max_calls=10, n_initial=6,
                           initial_stride=10, segment=20, sample_every=5, pool=40, explore_heat=3.0,
                           explore_window=window, seed=0,
                           hypers={"energy": {"n_sparse": 30, "max_radial": 3, "max_angular": 3}})
        run_active(dichloroethane(), tmp_path / name, cfg, oracle="tblite", say=lambda m: None)
        return _start_excess(tmp_path / name)

    limit = K_B * 500.0 * (12 + 3 * np.sqrt(12))  # 3N/2 = 12 for 8 atoms: 0.97 eV
    windowed = run("window", 3.0)
    assert len(windowed) >= 6 and windowed.max() <= limit, windowed
    assert windowed.min() >= -K_B * 500.0 * 3 * np.sqrt(12), windowed
    before = run("before", None)
    assert before.max() > limit, before


def test_old_run_folders_keep_their_loop_and_bad_heat_is_refused():
    assert ActiveConfig.from_dict({"steps": 10}).explore is False
    assert ActiveConfig.from_dict({"steps": 10, "explore": True}).explore_window is None
    assert ActiveConfig().explore_window == 3.0
    with pytest.raises(Exception, match="explore_window"):
        ActiveConfig(explore_window=-1.0)
    assert ActiveConfig().explore and ActiveConfig().segment == 300 and ActiveConfig().pool == 200
    with pytest.raises(Exception, match="explore_heat"):
        ActiveConfig(explore_heat=0.5)


class _FailingOracle(ToyOracle):
    """The analytic oracle, failing like an SCF that does not converge on the labelling calls in
    ``fail`` (counted from 1 once :meth:`arm` is called, after the initial frames)."""

    def __init__(self, fail):
        super().__init__()
        self.fail, self.n = set(fail), None

    def arm(self, *_):
        if self.n is None:
            self.n = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        if self.n is not None:
            self.n += 1
            if self.n in self.fail:
                raise CalculationFailed("SCF not converged in 250 cycles")
        super().calculate(atoms, properties, system_changes)


def test_an_oracle_failure_on_a_candidate_drops_it_and_the_run_goes_on(tmp_path):
    """A picked structure the oracle cannot label is logged and dropped; the run still spends its
    call budget. An oracle that fails on every structure ends the run after three in a row."""
    from mdplugin.active import run_active
    from mdplugin.core.errors import OracleError

    cfg = _config(segment=10, sample_every=2, pool=30, steps=400, max_calls=5, explore=True, n_initial=4)
    oracle = _FailingOracle({2, 4})
    summary = run_active(water(), tmp_path / "run", cfg, oracle=oracle, say=lambda m: None, on_train=oracle.arm)
    with open(tmp_path / "run" / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    failed = [r for r in rows if r["event"] == "oracle-failed"]
    assert len(failed) == 2 and "SCF not converged" in failed[0]["note"]
    assert summary.oracle_calls == 5 and "oracle-call budget" in summary.reason
    broken = _FailingOracle(range(1, 10**6))
    with pytest.raises(OracleError, match="3 oracle failures in a row"):
        run_active(water(), tmp_path / "broken", cfg, oracle=broken, say=lambda m: None, on_train=broken.arm)
