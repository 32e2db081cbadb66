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
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
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
    from mdplugin.structures.data import read_dataset

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
    from mdplugin.structures.data import read_dataset

    data = read_dataset(out / "dce_test.xyz")
    assert len(data) > 0
    assert np.allclose(data.polarizability, np.swapaxes(data.polarizability, 1, 2))
    assert all(np.isfinite(f).all() for f in data.forces)


def test_dce_extra_is_like_the_other_dce_sets() -> None:
    """examples/trajectories/dce_extra.xyz (issue 8): same keys, units and molecule as dce_train.xyz,
    frames of its own (independent runs), symmetric polarizabilities."""
    folder = EXAMPLES / "trajectories"
    if not (folder / "dce_extra.xyz").exists():
        pytest.skip("examples/trajectories/dce_extra.xyz not generated")
    from mdplugin.structures.data import read_dataset

    extra, train = read_dataset(folder / "dce_extra.xyz"), read_dataset(folder / "dce_train.xyz")
    assert len(extra) > 0
    assert all(a.get_chemical_symbols() == train.frames[0].get_chemical_symbols() for a in extra.frames)
    assert np.allclose(extra.polarizability, np.swapaxes(extra.polarizability, 1, 2))
    # same units: the mean isotropic polarizability, the energy scale and the force scale agree
    iso = [np.trace(d.polarizability, axis1=1, axis2=2).mean() / 3 for d in (extra, train)]
    assert abs(iso[0] / iso[1] - 1) < 0.1
    assert abs(extra.energy.mean() - train.energy.mean()) < 3 * train.energy.std()
    rms = [np.sqrt(np.mean(np.concatenate(d.forces) ** 2)) for d in (extra, train)]
    assert abs(rms[0] / rms[1] - 1) < 0.2
    # independent runs: no frame of dce_extra is a frame of the training or test set
    test = read_dataset(folder / "dce_test.xyz")
    seen = {tuple(np.round(a.positions.ravel(), 5)) for d in (train, test) for a in d.frames}
    assert not any(tuple(np.round(a.positions.ravel(), 5)) in seen for a in extra.frames)


IPI_EXAMPLE = EXAMPLES / "ipi"


def _listing(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*") if "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def ipi_out(tmp_path_factory) -> Path:
    """One output folder for both i-PI cases: the quick models are trained once and reused."""
    return tmp_path_factory.mktemp("ipi_example")


def _frames_without_cell(path: Path) -> list:
    import ase.io

    frames = ase.io.read(path, index=":")
    for atoms in frames:  # i-PI writes its 20 Å container box; the molecule is isolated
        atoms.pbc = False
        atoms.cell = None
    return frames


@pytest.mark.parametrize("case, clients, beads", [("nvt", 1, 1), ("pimd", 2, 8)])
def test_ipi_example(case: str, clients: int, beads: int, ipi_out: Path) -> None:
    """examples/ipi/run.sh in its quick mode: i-PI runs with the mdplugin client(s), writes the
    trajectory and the extras, and the extras of each bead are the models' dipole and
    polarizability of that bead's positions in atomic units (e·bohr, bohr³); nothing is written
    into the repository."""
    import ipi

    from mdplugin import load_model
    from mdplugin.core.units import dipole_to_au, polarizability_to_au

    before = _listing(IPI_EXAMPLE)
    env = dict(os.environ, **{QUICK_ENV: "1", "OUT": str(ipi_out), "OMP_NUM_THREADS": "1"})
    env.pop("ENERGY", None)
    proc = subprocess.run(["bash", str(IPI_EXAMPLE / "run.sh"), case, str(clients)], cwd=ipi_out, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _listing(IPI_EXAMPLE) == before, "run.sh wrote into the repository despite OUT"

    work = ipi_out / case
    steps = int(re.search(r"<total_steps>\s*(\d+)", (work / f"{case}-run.xml").read_text()).group(1))
    assert steps < 100, "the quick mode runs a few steps only"
    # the models the client used: this folder's own if someone trained them, else the quick ones
    models = {t: (IPI_EXAMPLE / f"{t}.npz" if (IPI_EXAMPLE / f"{t}.npz").exists() else ipi_out / f"quick-{t}.npz")
              for t in ("dipole", "polarizability")}
    dipole_model, alpha_model = load_model(models["dipole"]), load_model(models["polarizability"])
    bead_positions = []
    for b in range(beads):
        dip = ipi.read_trajectory(str(work / f"{case}.dipole_{b}"), format="extras")
        alpha = ipi.read_trajectory(str(work / f"{case}.polarizability_{b}"), format="extras")
        assert np.array_equal(dip["step"], np.arange(steps + 1)) and dip["dipole"].shape == (steps + 1, 3)
        assert np.array_equal(alpha["step"], dip["step"]) and alpha["polarizability"].shape == (steps + 1, 9)
        assert np.all(np.isfinite(dip["dipole"])) and np.ptp(dip["dipole"], axis=0).max() > 0  # it moved
        tensors = alpha["polarizability"].reshape(-1, 3, 3)
        assert np.allclose(tensors, np.swapaxes(tensors, 1, 2))

        # positions every 10 steps: the extras at those steps are the predictions for them
        frames = _frames_without_cell(work / f"{case}.pos_{b}.extxyz")
        pos_steps = [int(re.search(r"Step:\s*(\d+)", a.info["ipi_comment"]).group(1)) for a in frames]
        assert pos_steps == list(range(0, steps + 1, 10))
        expected_mu = dipole_to_au(dipole_model.predict(frames))
        expected_alpha = polarizability_to_au(alpha_model.predict(frames))
        scale_mu, scale_alpha = np.abs(dip["dipole"]).max(), np.abs(tensors).max()
        assert np.allclose(dip["dipole"][pos_steps], expected_mu, rtol=1e-4, atol=1e-4 * scale_mu)
        assert np.allclose(tensors[pos_steps], expected_alpha, rtol=1e-4, atol=1e-4 * scale_alpha)
        bead_positions.append(np.array([a.positions for a in frames]))

    if case == "nvt":  # the uncertainties: dipole_std (3) then polarizability_std (9), all positive
        std = ipi.read_trajectory(str(work / "nvt.std_0"), format="extras")
        values = std["dipole_std,polarizability_std"]
        assert values.shape == (len(range(0, steps + 1, 10)), 12) and np.all(values > 0)
        temperature = np.loadtxt(work / "nvt.out")[:, 3]
        assert np.all((temperature > 30) & (temperature < 3000))  # thermal velocities at 300 K, 8 atoms
    else:  # the centroid is the mean of the beads
        # i-PI's 'ase' format stores a quantity other than the positions in an array of its own name
        centroid = np.array([a.arrays["x_centroid"] for a in _frames_without_cell(work / "pimd.centroid.extxyz")])
        assert np.allclose(centroid, np.mean(bead_positions, axis=0), atol=1e-5)


def test_liquid_water_data_quick(tmp_path: Path) -> None:
    """examples/liquid_water/make_data.py --quick: two labelled 8-molecule boxes per set from
    different seeds, periodic, with all four labels; the polarizability is molecular (about 0.3 Å³
    per molecule) and the timings are written; a rerun labels nothing again."""
    pytest.importorskip("openmm")
    out = tmp_path / "water"
    script = EXAMPLES / "liquid_water" / "make_data.py"
    run_example([str(script), "--quick", "-o", str(out), "--ranks", "1"], tmp_path)
    from mdplugin.structures.data import read_dataset

    train, test = read_dataset(out / "train.xyz"), read_dataset(out / "test.xyz")
    assert len(train) == 2 and len(test) == 2
    for data in (train, test):
        assert data.properties == ["energy", "forces", "dipole", "polarizability"]
        assert all(a.pbc.all() and len(a) == 24 for a in data.frames)
        per_molecule = np.trace(data.polarizability, axis1=1, axis2=2) / 3 / 8
        assert np.all((per_molecule > 0.2) & (per_molecule < 0.45))
    seen = {tuple(np.round(a.positions.ravel(), 4)) for a in train.frames}
    assert not any(tuple(np.round(a.positions.ravel(), 4)) in seen for a in test.frames)
    timings = json.loads((out / "timings.json").read_text())
    assert timings["frames"] == {"train": 2, "test": 2} and len(timings["label_s"]) == 2
    text = run_example([str(script), "--quick", "-o", str(out)], tmp_path)
    assert "+ mdplugin" not in text and "+ mpiexec" not in text  # resumed: nothing labelled twice


def test_liquid_water_end_to_end_quick(tmp_path: Path) -> None:
    """examples/liquid_water/run.py --quick: labelled 8-molecule boxes -> active learning of the
    energy model on the cell (3 rounds of 8 GFN2-xTB labels from its own ML dynamics) -> energy,
    dipole and polarizability models -> NVT then NVE in ASE and in i-PI, TRPMD in i-PI (2 beads,
    the centroid spectrum) -> IR and Raman. NVE conserves energy in both engines and stays near
    300 K (it heated to 600 K before); the IR of the liquid and of the gas-phase monomer has its
    H-O-H bend band between 1500 and 1800 cm⁻¹."""
    pytest.importorskip("openmm")
    pytest.importorskip("ipi")
    out = tmp_path / "run"
    run_example([str(EXAMPLES / "liquid_water" / "run.py"), "--quick", "-o", str(out)], tmp_path, timeout=3600)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["test_errors"]) == {"energy", "dipole", "polarizability"}
    assert abs(summary["ase"]["nve_drift_meV_per_atom"]) < 1.0
    assert abs(summary["ipi"]["nve_drift_meV_per_atom"]) < 1.0
    assert "oracle-call budget reached (24 calls)" in summary["active"]["summary"]
    for engine in ("ase", "ipi"):  # the NVE starts at 300 K: it stays liquid water, no runaway heating
        halves = summary[engine]["nve_temperature_K"]
        assert 220 < halves["first_half"] < 400 and 220 < halves["second_half"] < 400, (engine, halves)
    for run in ("ase_ir", "ipi_ir", "trpmd_ir", "gas_ir"):
        assert 1500 < summary["bands"][run]["bend"]["peak"] < 1800, (run, summary["bands"][run])
    for run in ("ase_raman", "ipi_raman", "trpmd_raman", "gas_raman"):
        assert (out / "spectra" / f"{run}.csv").exists()
    assert (out / "spectra.png").stat().st_size > 10000
    trpmd = sorted(p.name for p in (out / "ipi").glob("trpmd.dipole_*"))
    assert trpmd == ["trpmd.dipole_0", "trpmd.dipole_1"]


CHECKED = {"train_and_evaluate.py", "ase_md_dipoles.py", "spectrum_from_trajectory.py", "make_trajectories.py",
           "hamiltonian_water.py", "make_data.py", "run.py"}
CHECKED_RUNNERS = {IPI_EXAMPLE / "run.sh"}


def _other_examples() -> list[Path]:
    found = sorted(p for p in EXAMPLES.rglob("*.py") if p.name not in CHECKED and "trajectories" not in p.parts)
    runners = sorted(p for p in EXAMPLES.rglob("run.sh") if p not in CHECKED_RUNNERS)
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


def test_hamiltonian_water(tmp_path: Path) -> None:
    pytest.importorskip("pyscf")
    out = tmp_path / "out"
    text = run_example([str(EXAMPLES / "hamiltonian_water.py"), "-o", str(out), "--quick"], tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["orbital_energies_rmse"] < 0.05 and metrics["dipole_rmse"] < 0.01  # eV, e·Å, held out
    assert 20 < metrics["gap_mean"] < 35 and metrics["gap_std_along_md"] > 0  # HF/STO-3G water: ~27 eV
    assert (out / "ir.csv").exists() and "held-out" in text
    from mdplugin.models import load_model

    assert load_model(out / "water_h.npz", target="dipole").kind == "hamiltonian"
