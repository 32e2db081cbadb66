"""Every example script runs, in its reduced mode, and writes what it says it writes.

Each script in examples/ (``*.py``) is run in a fresh process with ``MDPLUGIN_EXAMPLE_QUICK=1``
(and ``--quick`` where it takes it), and its outputs are checked for physics, not for fixed
numbers: NVE conserves energy, polarizabilities are symmetric, the command-line and Python
routes give the same spectrum, saved models load back. A script added to examples/ without a
check here still runs (the generic test); a script without a reduced mode is skipped with a
message rather than run at full length.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
QUICK_ENV = "MDPLUGIN_EXAMPLE_QUICK"


def run_example(args: list[str], cwd: Path, timeout: float = 1200) -> str:
    env = dict(os.environ, **{QUICK_ENV: "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"})
    proc = subprocess.run([sys.executable, "-W", "ignore", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_train_and_evaluate(tmp_path: Path) -> None:
    out = tmp_path / "out"
    text = run_example([str(EXAMPLES / "train_and_evaluate.py"), "-o", str(out)], tmp_path)
    rows = json.loads((out / "metrics.json").read_text())
    assert set(rows) == {"energy_soap", "dipole_rpr", "dipole_lsoap", "polarizability_rpr", "polarizability_lsoap"}
    for name, row in rows.items():
        # better than predicting the mean (100 % of the std), and the uncertainty is a positive number
        assert 0 < row["rmse_percent_of_std"] < 100, name
        assert row["mean_std"] > 0, name
        assert (out / f"{name.split('_')[0]}_{name.split('_')[1]}.npz").exists()
    assert "held-out" in text


def test_ase_md_dipoles(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_example([str(EXAMPLES / "ase_md_dipoles.py"), "-o", str(out)], tmp_path)
    s = np.load(out / "series.npz")
    n = len(s["time"])
    assert s["dipole"].shape == (n, 3) and s["polarizability"].shape == (n, 3, 3)
    assert np.allclose(s["polarizability"], np.swapaxes(s["polarizability"], 1, 2))
    assert np.all(s["dipole_std"] > 0)
    # NVE with analytic forces: the total energy is conserved to well under kT per atom (26 meV)
    n_atoms = 8
    assert np.ptp(s["total_energy"]) / n_atoms < 2e-3
    from mdplugin.data import read_dataset

    traj = read_dataset(out / "traj.xyz", properties=["dipole", "polarizability"])
    assert len(traj) == n and np.allclose(traj.dipole, s["dipole"])
    assert (out / "ir.csv").exists() and (out / "ir.png").exists()


def test_spectrum_from_trajectory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    text = run_example([str(EXAMPLES / "spectrum_from_trajectory.py"), "-o", str(out)], tmp_path)
    from mdplugin.spectra import read_csv

    py, cli = read_csv(out / "ir.csv"), read_csv(out / "ir_cli.csv")
    assert np.allclose(py["wavenumber"], cli["wavenumber"])
    assert np.allclose(py["ir"], cli["ir"], rtol=1e-5, atol=1e-8 * np.abs(py["ir"]).max())
    raman = read_csv(out / "raman.csv")
    assert np.all(raman["unpolarized"] >= -1e-9 * raman["unpolarized"].max())
    assert (out / "spectra.png").exists()
    assert "equals the Python one: True" in text


def test_make_trajectories_quick(tmp_path: Path) -> None:
    out = tmp_path / "data"
    run_example([str(EXAMPLES / "make_trajectories.py"), "--quick", "-o", str(out), "--raw-dir",
                 str(tmp_path / "raw"), "--sets", "dce_test"], tmp_path)
    from mdplugin.data import read_dataset

    data = read_dataset(out / "dce_test.xyz")
    assert len(data) > 0
    assert np.allclose(data.polarizability, np.swapaxes(data.polarizability, 1, 2))
    assert all(np.isfinite(f).all() for f in data.forces)


CHECKED = {"train_and_evaluate.py", "ase_md_dipoles.py", "spectrum_from_trajectory.py", "make_trajectories.py"}


def _other_examples() -> list[Path]:
    found = sorted(p for p in EXAMPLES.rglob("*.py") if p.name not in CHECKED and "trajectories" not in p.parts)
    runners = sorted(EXAMPLES.rglob("run.sh"))
    return found + runners


@pytest.mark.parametrize("script", _other_examples(), ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_other_example_runs(script: Path, tmp_path: Path) -> None:
    if QUICK_ENV not in script.read_text(encoding="utf-8"):
        pytest.skip(f"{script.relative_to(REPO)} has no reduced mode ({QUICK_ENV}=1) yet")
    if script.suffix == ".sh":
        env = dict(os.environ, **{QUICK_ENV: "1", "OUT": str(tmp_path)})
        proc = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=1200)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    else:
        run_example([str(script), str(tmp_path / "out")], tmp_path)
    assert any(tmp_path.rglob("*")), "the example wrote nothing"
