"""``mdplugin active``: SIGKILL and resume lose and duplicate no label, help and one-line errors,
options reach the run, ``--oracle module:function`` from the current folder."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from mdplugin.active import ActiveConfig, RunStore
from mdplugin.core.errors import ConfigError
from mdplugin.structures.data import read_dataset

from .helpers import (
    ROOT,
    RUN_OPTIONS,
    ToyOracle,
    _cli,
    _env,
    _keys,
    _kill_when,
    _labelled_file,
    _reported,
    _start_file,
    water,
)


@pytest.mark.slow  # two runs in subprocesses: ~40 s each on an idle machine
@pytest.mark.parametrize("moment,mode", [("labelling", ()), ("retraining", ()),
                                         ("labelling", ("--segment", "30", "--sample-every", "5", "--batch", "2",
                                                        "--walkers", "--pool", "30", "--selection", "density"))])
def test_sigkill_then_resume_loses_and_duplicates_no_label(tmp_path, moment, mode):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(_cli(str(_start_file(tmp_path)), "-o", str(run_dir), *RUN_OPTIONS, *mode), cwd=ROOT,
                            env=_env(0.3), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def wanted(lines):  # the second label of the MD phase is being computed / has just been used
        md_labels = sum(" step " in line for line in lines if line.startswith("label written"))
        if moment == "labelling":
            return md_labels == 1 and lines[-1].startswith("labelling step")
        return md_labels == 2 and lines[-1].startswith("retraining")

    lines = _kill_when(proc, wanted)
    reported = _reported(lines)
    keys = _keys(run_dir)
    assert set(reported) <= set(keys) and len(keys) == len(set(keys))
    done = subprocess.run(_cli("--resume", str(run_dir), "--oracle", "tests.active.helpers:toy_oracle"),
                          cwd=ROOT, env=_env(0.0), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming at step" in done.stdout and "oracle-call budget reached (5 calls)" in done.stdout
    keys = _keys(run_dir)
    assert set(reported) <= set(keys)
    assert len(keys) == len(set(keys)) == 3 + 5
    data = read_dataset(run_dir / "data.xyz")
    pos = np.array([a.positions for a in data.frames]).reshape(len(data), -1)
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(len(data))
    assert dist.min() > 1e-6  # no structure twice


def test_help_explains_every_option():
    out = subprocess.run(_cli("--help"), capture_output=True, text=True, cwd=ROOT, env=_env(0)).stdout
    for opt in ("--oracle", "--initial", "--n-initial", "--targets", "--model", "--threshold-energy",
                "--threshold-dipole", "--threshold-polarizability", "--threshold-factor", "--steps",
                "--max-calls", "--wall-time", "--temperature", "--seed", "--resume", "--segment",
                "--sample-every", "--batch", "--stop-factor", "--walkers", "--pool", "--selection",
                "--temperature-cycles"):
        assert opt in out
    assert "eV/atom" in out and "training" in out


def test_cli_errors_are_one_line(tmp_path):
    bad = subprocess.run(_cli(str(_start_file(tmp_path)), "-o", str(tmp_path / "r"), "--targets", "charge"),
                         capture_output=True, text=True, cwd=ROOT, env=_env(0))
    assert bad.returncode == 2 and "unknown target 'charge'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_cli_passes_temperature_cycles_to_the_run(tmp_path, capsys):
    from mdplugin.cli.parser import main

    run_dir = tmp_path / "run"
    assert main(["active", str(_start_file(tmp_path)), "-o", str(run_dir), *RUN_OPTIONS,
                 "--steps", "30", "--temperature-cycles", "3"]) == 0
    cfg = ActiveConfig.from_dict(RunStore(run_dir).read_config()["config"])
    assert cfg.temperature_cycles == 3 and cfg.temperature == (300.0, 600.0)
    assert cfg.temperature_at(9) > 550 and cfg.temperature_at(10) == pytest.approx(300)  # a sawtooth of period 30 / 3 steps
    capsys.readouterr()
    assert main(["active", str(_start_file(tmp_path)), "-o", str(tmp_path / "bad"), *RUN_OPTIONS,
                 "--temperature-cycles", "0"]) == 2
    assert "temperature_cycles must be a positive integer" in capsys.readouterr().err


def test_cli_missing_start_file_is_one_line_like_other_commands(tmp_path):
    run_dir = tmp_path / "runX"
    bad = subprocess.run(_cli("nothere.xyz", "-o", str(run_dir)), capture_output=True, text=True, cwd=tmp_path,
                         env=_env(0))
    assert bad.returncode == 2
    assert bad.stderr.strip() == "mdplugin: error: nothere.xyz: no such file"
    assert not run_dir.exists()


def test_oracle_factory_is_found_in_the_current_folder(tmp_path, monkeypatch):
    """``--oracle module:function`` with the module in the current folder, which the ``mdplugin``
    script (unlike ``python -m``) does not put on ``sys.path``."""
    from mdplugin.active import resolve_oracle

    (tmp_path / "toy_oracle_here.py").write_text("from tests.active.helpers import ToyOracle\n\n"
                                                 "def make():\n    return ToyOracle()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if os.path.abspath(p or ".") != str(tmp_path)])
    try:
        calc = resolve_oracle("toy_oracle_here:make")
        assert type(calc).__name__ == "ToyOracle"
        assert calc.get_potential_energy(water()) == pytest.approx(ToyOracle().get_potential_energy(water()))
    finally:
        sys.modules.pop("toy_oracle_here", None)
    with pytest.raises(ConfigError, match="no module named 'nowhere_mod' on the Python path or in the current"):
        resolve_oracle("nowhere_mod:make")


def test_cli_failed_start_then_rerun(tmp_path, capsys):
    from mdplugin.cli.parser import main

    run_dir = tmp_path / "run5"
    raw = tmp_path / "raw5.xyz"
    water().write(raw)
    opts = [o if o != "1200" else "5" for o in RUN_OPTIONS]
    assert main(["active", str(_start_file(tmp_path)), "-o", str(run_dir), *opts, "--initial", str(raw)]) == 2
    assert "missing key 'energy'" in capsys.readouterr().err and not run_dir.exists()
    good = _labelled_file(tmp_path / "good.xyz", 3)
    assert main(["active", str(_start_file(tmp_path)), "-o", str(run_dir), *opts, "--initial", str(good)]) == 0
    assert len(_keys(run_dir)) >= 3

