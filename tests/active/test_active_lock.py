"""One process at a time in a run folder: a second ``mdplugin active`` started while the first is
labelling its first frame (the folder holds only config.json and start.xyz, which an abandoned
start also leaves) is refused instead of taking the folder over; the lock dies with its process, so
after a SIGKILL the folder is free again. Real processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from mdplugin.active.lock import RunLock
from mdplugin.core.errors import ConfigError

from .helpers import ROOT, RUN_OPTIONS, ToyOracle, _cli, _env, _keys, _start_file


class SlowLabelOracle(ToyOracle):
    """The toy oracle, slow (``MDPLUGIN_TEST_LABEL_DELAY`` s) only when it labels a structure (the
    dipole is asked), not in the reference MD before the first label (forces only)."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        if "dipole" in properties:
            time.sleep(float(os.environ.get("MDPLUGIN_TEST_LABEL_DELAY", "0")))
        super().calculate(atoms, properties, system_changes or ["positions", "numbers", "cell", "pbc"])


def slow_label_oracle() -> SlowLabelOracle:
    return SlowLabelOracle()


def _options(steps: str) -> list[str]:
    opts = [o if o != "1200" else steps for o in RUN_OPTIONS]
    return [o if o != "tests.active.helpers:toy_oracle" else "tests.active.test_active_lock:slow_label_oracle"
            for o in opts]


def _slow_env(delay: float) -> dict:
    return dict(_env(0.0), MDPLUGIN_TEST_LABEL_DELAY=str(delay))


def test_second_process_is_refused_during_the_first_label_and_the_lock_dies_with_sigkill(tmp_path):
    run_dir = tmp_path / "run"
    start = str(_start_file(tmp_path))
    first = subprocess.Popen(_cli(start, "-o", str(run_dir), *_options("20")), cwd=ROOT, env=_slow_env(60.0),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 120
        for line in first.stdout:  # the first label of the new run is being computed (30 s oracle)
            if line.startswith("labelling initial frame 0"):
                break
            assert time.monotonic() < deadline, "the first run did not reach its first label"
        assert not _keys(run_dir) and (run_dir / "config.json").exists()
        config = (run_dir / "config.json").read_text()

        second = subprocess.run(_cli(start, "-o", str(run_dir), *_options("20")), cwd=ROOT, env=_env(0.0),
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "another mdplugin process" in lines[0], second.stderr
        assert f"(process {first.pid})" in lines[0]
        resumed = subprocess.run(_cli("--resume", str(run_dir)), cwd=ROOT, env=_env(0.0),
                                 capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 2 and "another mdplugin process" in resumed.stderr
        assert (run_dir / "config.json").read_text() == config  # the first run's folder untouched
        assert first.poll() is None  # and the first run still running
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL

    # the kernel dropped the lock with the process: a new start takes the abandoned folder over
    third = subprocess.run(_cli(start, "-o", str(run_dir), *_options("20")), cwd=ROOT, env=_env(0.0),
                           capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr
    assert len(_keys(run_dir)) >= 3


def test_lock_in_one_process(tmp_path):
    with RunLock(tmp_path / "run") as lock:
        assert lock.held and (tmp_path / "run" / ".lock").read_text().strip().isdigit()
        with pytest.raises(ConfigError, match="another mdplugin process"):
            RunLock(tmp_path / "run").acquire()
    RunLock(tmp_path / "run").acquire().release()  # free again
