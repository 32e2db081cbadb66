"""Runaway ML dynamics are noticed: a warning once, or a stop (the default of ``mdplugin md``).

The watch is checked on series whose answer is known (a small molecule's large temperature
swings are not a runaway, a heating ramp is, at the point where the window mean crosses twice the
set temperature; an uncertainty that grows 15× is), then on real dynamics: a SOAP energy model of
1,2-dichloroethane in NVE is stable at 0.5 fs and runs away at 2.5 fs (too long for the C–H
stretch), where the run warns once, stops, or goes on as asked.
"""

from __future__ import annotations

import numpy as np
import pytest

from mdplugin.core.errors import SimulationError
from mdplugin.engines.ase import MLCalculator
from mdplugin.engines.md import run_md
from mdplugin.engines.runaway import BASELINE_RECORDS, RunawayWatch
from mdplugin.models import build


def test_small_molecule_swings_are_not_a_runaway() -> None:
    rng = np.random.default_rng(0)
    watch = RunawayWatch(300.0, frame_dt_fs=0.5)
    # frame-to-frame swings of ±50 % (a few atoms in NVE), some frames at 2.5x the set temperature
    temps = 300 * (1 + 0.5 * np.sin(np.arange(5000) * 0.7)) + rng.normal(0, 60, 5000)
    assert temps.max() > 2 * 300
    assert all(watch.observe(i, t, {}) is None for i, t in enumerate(temps))


def test_heating_ramp_is_caught_where_the_window_mean_crosses_twice_the_set_temperature() -> None:
    watch = RunawayWatch(300.0, frame_dt_fs=5.0)  # window: 20 frames (100 fs)
    temps = np.linspace(300, 1600, 400)
    fired = [i for i, t in enumerate(temps) if watch.observe(i, t, {}) is not None]
    window_mean = np.convolve(temps, np.ones(20) / 20, mode="valid")  # mean of frames i-19..i at index i-19
    expected = int(np.argmax(window_mean > 600)) + 19
    assert fired == [expected]  # once, at the right frame
    assert watch.observe(400, 5000.0, {}) is None  # and only once


def test_growing_uncertainty_is_caught_against_its_start() -> None:
    watch = RunawayWatch(300.0, frame_dt_fs=5.0)
    std = [0.0] + [0.08] * (BASELINE_RECORDS - 1) + list(np.linspace(0.08, 1.2, 50))  # 0.08 -> 1.2 eV
    messages = [watch.observe(i, 300.0, {"energy_std": s}) for i, s in enumerate(std)]
    fired = [i for i, m in enumerate(messages) if m]
    assert len(fired) == 1 and std[fired[0]] > 10 * 0.08 >= std[fired[0] - 1]
    assert "energy_std" in messages[fired[0]] and "the temperature" not in messages[fired[0]]


def test_no_temperature_criterion_at_zero_kelvin() -> None:
    watch = RunawayWatch(0.0, frame_dt_fs=1.0)
    assert all(watch.observe(i, 1000.0, {}) is None for i in range(100))


@pytest.fixture(scope="module")
def dce_model():
    from mdplugin.structures.data import read_dataset

    from ..conftest import EXAMPLES

    if not (EXAMPLES / "dce_train.xyz").exists():
        pytest.skip("examples/trajectories/dce_train.xyz not generated yet")
    data = read_dataset(EXAMPLES / "dce_train.xyz", index=slice(0, 400, 20))
    model = build("soap", target="energy", n_sparse=50, max_radial=3, max_angular=2)
    return model.fit(data.frames, {"energy": data.energy, "forces": data.forces}), data.frames[0]


#: steps of the real runs: at 2.5 fs the watch fires at step ~280; the molecule falls apart at ~360 or
#: later, depending on the BLAS threads' summation order (chaotic dynamics), so the runs end before that
STEPS = 320


def _run(dce_model, tmp_path, dt, runaway, warn=None):
    model, start = dce_model
    return run_md(start, MLCalculator(energy=model), steps=STEPS, dt_fs=dt, output=tmp_path / "traj.xyz",
                  temperature_K=300.0, thermostat="none", progress=False, uncertainty_every=1, runaway=runaway,
                  warn=warn)


def test_stable_dynamics_give_no_warning(dce_model, tmp_path) -> None:
    said = []
    summary = _run(dce_model, tmp_path, 0.5, "warn", said.append)
    assert summary.warnings == [] and said == []
    assert abs(summary.total_energy_drift_eV_per_atom) < 2e-3


def test_runaway_warns_once_and_goes_on(dce_model, tmp_path) -> None:
    said = []
    summary = _run(dce_model, tmp_path, 2.5, "warn", said.append)
    assert len(said) == 1 and summary.warnings == said
    assert "the temperature ran away" in said[0]
    assert summary.frames == STEPS + 1  # ran to the end


def test_runaway_stops_after_writing_the_frame(dce_model, tmp_path) -> None:
    import ase.io

    with pytest.raises(SimulationError, match=r"^step (\d+): the temperature ran away") as info:
        _run(dce_model, tmp_path, 2.5, "stop")
    step = int(info.value.args[0].split()[1].rstrip(":"))
    frames = ase.io.read(tmp_path / "traj.xyz", ":")
    assert frames[-1].info["step"] == step < STEPS
    window = [a.info["temperature"] for a in frames[-40:]]  # 100 fs at 2.5 fs per frame
    assert np.mean(window) > 600


def test_runaway_off_runs_silently(dce_model, tmp_path, capsys) -> None:
    summary = _run(dce_model, tmp_path, 2.5, "off")
    assert summary.warnings == [] and summary.frames == STEPS + 1
    assert "warning" not in capsys.readouterr().err


def test_command_line_stops_by_default(dce_model, tmp_path, capsys) -> None:
    import ase.io

    from mdplugin.cli.parser import main

    model, start = dce_model
    model.save(tmp_path / "energy.npz")
    ase.io.write(tmp_path / "start.xyz", start)
    argv = ["md", str(tmp_path / "start.xyz"), "--energy", str(tmp_path / "energy.npz"), "--steps", str(STEPS),
            "--dt", "2.5", "--thermostat", "none", "--quiet", "-o", str(tmp_path / "t.xyz")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "the temperature ran away" in err and len(err.strip().splitlines()) == 1
    assert main(argv + ["--runaway", "warn"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("warning: step") == 1 and f"{STEPS} steps in" in captured.out
