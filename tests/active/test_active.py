"""Active learning: durable run folder, thresholds and budgets, kill-and-resume, the CLI.

The oracle here is a cheap analytic ASE calculator (:func:`toy_oracle`: Morse bonds, point-charge
dipole, bond-polarizability model), so the loop runs in seconds; tblite is the default oracle and
is exercised by benchmarks/bench_active.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from mdplugin.active import ActiveConfig, RunStore, run_active, structure_hash
from mdplugin.active.store import LOG_COLUMNS
from mdplugin.structures.data import read_dataset
from mdplugin.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

#: small models: the loop's logic is under test, not the models' accuracy
HYPERS = {"energy": {"n_sparse": 20, "max_radial": 2, "max_angular": 2, "cutoff": 3.0}}


class ToyOracle(Calculator):
    """Morse bonds to the water geometry, charges (-0.8, 0.4, 0.4) e, bond polarizabilities.

    ``MDPLUGIN_TEST_ORACLE_DELAY`` (s) makes every call slow (for the kill tests).
    """

    implemented_properties = ["energy", "free_energy", "forces", "dipole", "polarizability"]
    r0 = np.array([[0.0, 0.96, 0.96], [0.96, 0.0, 1.52], [0.96, 1.52, 0.0]])
    charges = np.array([-0.8, 0.4, 0.4])

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        time.sleep(float(os.environ.get("MDPLUGIN_TEST_ORACLE_DELAY", "0")))
        x = self.atoms.positions
        d = x[:, None] - x[None]
        r = np.linalg.norm(d, axis=-1) + np.eye(len(x))
        a, de = 2.0, np.where(self.r0 < 1.2, 4.0, 0.5)
        e = np.exp(-a * (r - self.r0))
        pair = de * (1 - e) ** 2
        np.fill_diagonal(pair, 0.0)
        dpair = de * 2 * (1 - e) * a * e / r
        np.fill_diagonal(dpair, 0.0)
        forces = -np.einsum("ij,ijk->ik", dpair, d)
        u = d / r[..., None]
        f = np.exp(-(r - 1.0) ** 2)
        np.fill_diagonal(f, 0.0)
        alpha = 0.5 * np.einsum("ij,ijk,ijl->kl", f, u, u) + 0.3 * np.eye(3) * f.sum() / 2
        self.results = {"energy": 0.5 * pair.sum(), "free_energy": 0.5 * pair.sum(), "forces": forces,
                        "dipole": self.charges @ x + 0.05 * np.sin(r[0, 1]) * u[1, 0],
                        "polarizability": alpha}


def toy_oracle() -> ToyOracle:
    return ToyOracle()


def water() -> Atoms:
    return Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])


def rattled_waters(n: int, scale: float, seed: int) -> list[Atoms]:
    """``n`` copies of :func:`water` with Gaussian displacements of ``scale`` Å."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        a = water()
        a.positions += rng.normal(scale=scale, size=a.positions.shape)
        frames.append(a)
    return frames


def _config(**kw) -> ActiveConfig:
    base = dict(targets=("energy", "dipole"), model="rpr", hypers=HYPERS, steps=60, max_calls=8,
                n_initial=4, initial_stride=5, temperature=(300, 600), seed=3, checkpoint_every=10,
                thresholds={"energy": 1e-3})
    base.update(kw)
    return ActiveConfig(**base)


def _run(tmp_path, name="run", **kw):
    return run_active(water(), tmp_path / name, _config(**kw), oracle=toy_oracle(), say=lambda m: None)


def _keys(run_dir: Path) -> list[str]:
    import re

    return re.findall(r"active_hash=(\w+)", (run_dir / "data.xyz").read_text())


# --------------------------------------------------------------------------------------------
# run folder
# --------------------------------------------------------------------------------------------
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
        ActiveConfig(walkers=True)
    with pytest.raises(ConfigError, match="sample_every"):
        ActiveConfig(segment=10, sample_every=0)
    with pytest.raises(ConfigError, match="unknown selection"):
        ActiveConfig(segment=10, selection="random")
    with pytest.raises(ConfigError, match="stop_factor"):
        ActiveConfig(segment=10, stop_factor=0.5)


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------
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


def _candidates(rng, n: int, ratios) -> list[dict]:
    return [{"positions": rng.normal(size=(n, 3)) * 1.5, "ratio": r, "u": {}, "predicted": {}, "step": i}
            for i, r in enumerate(ratios)]


def test_selection_is_most_uncertain_then_farthest_and_invariant():
    from scipy.spatial.transform import Rotation

    from mdplugin.active.loop import select_candidates

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

    from mdplugin.active.loop import select_candidates

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


def test_relative_threshold_is_a_multiple_of_the_training_error(tmp_path):
    from mdplugin.active import Learner, measure
    from mdplugin.models import build
    from mdplugin.models.training import fit_on_dataset

    cfg = _config(thresholds={}, threshold_factor=2.5)
    _run(tmp_path, thresholds={}, threshold_factor=2.5, max_calls=0, n_initial=6)
    data = RunStore(tmp_path / "run").read_data(cfg.labels())
    learner = Learner(cfg, toy_oracle())
    learner.train(data)
    # no labels yet: 2-fold cross-validation error (the in-sample one is ~0 for an interpolating GPR)
    errs = []
    for fit_idx, test_idx in (([0, 2, 4], [1, 3, 5]), ([1, 3, 5], [0, 2, 4])):
        model = fit_on_dataset(build("rpr", target="dipole"), data.subset(fit_idx))
        pred = model.predict(data.subset(test_idx).frames)
        errs += [measure("dipole", p - t, 3) for p, t in zip(pred, data.dipole[test_idx])]
    assert learner.thresholds()["dipole"] == pytest.approx(2.5 * np.sqrt(np.mean(np.square(errs))))
    # with errors measured on labelled structures (before they were added): their RMS
    for e in (0.01, 0.02, 0.04):
        learner.record_errors({"dipole": e, "energy": e / 10, "forces": 1.0})
    learner.train(data)
    assert learner.thresholds()["dipole"] == pytest.approx(2.5 * np.sqrt(np.mean(np.square([0.01, 0.02, 0.04]))))
    assert learner.thresholds()["energy"] == pytest.approx(0.25 * np.sqrt(np.mean(np.square([0.01, 0.02, 0.04]))))


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


# --------------------------------------------------------------------------------------------
# command line, SIGKILL and resume
# --------------------------------------------------------------------------------------------
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mdplugin", "active", *args]


def _env(delay: float) -> dict:
    env = dict(os.environ, MDPLUGIN_TEST_ORACLE_DELAY=str(delay), OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return env


def _start_file(tmp_path) -> Path:
    path = tmp_path / "start.xyz"
    water().write(path)
    return path


RUN_OPTIONS = ("--oracle", "tests.active.test_active:toy_oracle", "--targets", "energy,dipole", "--model", "rpr",
               "--energy-hypers", '{"n_sparse": 20, "max_radial": 2, "max_angular": 2, "cutoff": 3.0}',
               "--threshold-energy", "1e-3", "--n-initial", "3", "--steps", "400", "--max-calls", "5",
               "--temperature", "300:600", "--seed", "1")


def _kill_when(proc: subprocess.Popen, wanted, timeout: float = 120.0) -> list[str]:
    """Read the run's output until ``wanted(lines)``; then SIGKILL it. Returns the lines read."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if wanted(lines):
            proc.send_signal(signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "the run did not reach the kill point"
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return lines


def _reported(lines: list[str]) -> list[str]:
    return [line.split()[2] for line in lines if line.startswith("label written ")]


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
    done = subprocess.run(_cli("--resume", str(run_dir), "--oracle", "tests.active.test_active:toy_oracle"),
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


# --------------------------------------------------------------------------------------------
# on the fly (the i-PI client holds a learner)
# --------------------------------------------------------------------------------------------
def test_ipi_driver_with_active_calculator_labels_unsure_structures(tmp_path):
    from mdplugin.active import ActiveCalculator
    from mdplugin.engines.ipi import MdpluginDriver
    from mdplugin.core.units import BOHR, HARTREE

    _run(tmp_path, steps=0, max_calls=2)  # initial frames and models only
    run_dir = tmp_path / "run"
    n0 = len(_keys(run_dir))
    template = _start_file(tmp_path)
    calc = ActiveCalculator(run_dir, oracle=toy_oracle(), say=lambda m: None)
    driver = MdpluginDriver(template=str(template), calculator=calc)
    far = water()
    far.positions[1] *= 1.15  # a stretched bond: outside the initial data
    energy, forces, _, extras = driver.compute_structure(np.eye(3) * 20 / BOHR, far.positions / BOHR)
    keys = _keys(run_dir)
    assert len(keys) >= n0 + 1 and structure_hash(far) in keys
    far.calc = toy_oracle()  # the labelled structure gets the oracle's values
    assert energy * HARTREE == pytest.approx(far.get_potential_energy(), abs=1e-8)
    np.testing.assert_allclose(forces * HARTREE / BOHR, far.get_forces(), atol=1e-7)
    # a structure the models are sure of is not labelled; the budget caps the labels
    for shift in np.linspace(0.0, 0.4, 6):
        x = water()
        x.positions[2] *= 1.0 + shift
        driver.compute_structure(np.eye(3) * 20 / BOHR, x.positions / BOHR)
    assert len(_keys(run_dir)) <= n0 + 2


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

    (tmp_path / "toy_oracle_here.py").write_text("from tests.active.test_active import ToyOracle\n\n"
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


class FailingOracle(ToyOracle):
    """An oracle whose every calculation fails (an SCF that does not converge)."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        raise RuntimeError("SCF did not converge")


def _labelled_file(path: Path, n: int) -> Path:
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    frames = []
    for a in rattled_waters(n, 0.05, seed=11):
        calc = ToyOracle()
        calc.calculate(a, ["energy", "forces", "dipole"])
        a.calc = SinglePointCalculator(a, energy=calc.results["energy"], forces=calc.results["forces"],
                                       dipole=calc.results["dipole"])
        frames.append(a)
    write(path, frames, format="extxyz")
    return path


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


def test_cli_failed_start_then_rerun(tmp_path, capsys):
    from mdplugin.cli.parser import main

    run_dir = tmp_path / "run5"
    raw = tmp_path / "raw5.xyz"
    water().write(raw)
    opts = [o if o != "400" else "5" for o in RUN_OPTIONS]
    assert main(["active", str(_start_file(tmp_path)), "-o", str(run_dir), *opts, "--initial", str(raw)]) == 2
    assert "missing key 'energy'" in capsys.readouterr().err and not run_dir.exists()
    good = _labelled_file(tmp_path / "good.xyz", 3)
    assert main(["active", str(_start_file(tmp_path)), "-o", str(run_dir), *opts, "--initial", str(good)]) == 0
    assert len(_keys(run_dir)) >= 3


def _lines(ax, label: str):
    return [line for line in ax.get_lines() if line.get_label() == label]


def test_plot_has_a_panel_per_target_threshold_and_note_with_no_label(tmp_path):
    from mdplugin.active.report import build_figure

    s = _run(tmp_path, steps=5, max_calls=0, thresholds={"energy": 10.0}, threshold_factor=2.0)
    assert s.oracle_calls == 0 and (tmp_path / "run" / "active.png").stat().st_size > 0
    fig = build_figure(RunStore(tmp_path / "run"))
    axes = fig.get_axes()
    assert [ax.get_ylabel().split()[0] for ax in axes] == ["energy", "dipole"]
    for ax, t in zip(axes, ("energy", "dipole")):
        (thr,) = _lines(ax, "threshold")
        assert np.allclose(thr.get_ydata(), s.thresholds[t])  # drawn at the run's threshold
        assert any("no structure labelled yet" in text.get_text() for text in ax.texts)
    fig.canvas.draw()
    ticks = [x for x in axes[-1].get_xticks() if axes[-1].get_xlim()[0] <= x <= axes[-1].get_xlim()[1]]
    assert ticks and all(float(x).is_integer() for x in ticks)


def test_plot_x_ticks_are_whole_oracle_calls(tmp_path):
    from mdplugin.active.report import build_figure

    s = _run(tmp_path, steps=200, max_calls=3)
    assert s.oracle_calls == 3
    fig = build_figure(RunStore(tmp_path / "run"))
    fig.canvas.draw()
    for ax in fig.get_axes():
        lo, hi = ax.get_xlim()
        ticks = [x for x in ax.get_xticks() if lo <= x <= hi]
        assert len(ticks) >= 2 and all(float(x).is_integer() for x in ticks)
        assert len(_lines(ax, "uncertainty (model std)")[0].get_xdata()) == 3
        assert not ax.texts


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
