"""Active learning on several MPI ranks, under a real ``mpiexec -n 2``.

Every rank runs its own walker, the candidates are gathered, the batch is labelled in parallel,
every rank retrains. Checked: labels come from both ranks' walkers, each is written once (by
rank 0) in batch order, the models on the two ranks predict identically (and as the saved
files), a resumed 2-rank run (and a resumed 1-rank run) continues without duplicating a label,
an oracle failing on one rank ends every rank with an error instead of a hang, and a rank failing
while the others wait for it aborts the job (``MPI_Abort``).

This file is also the per-rank driver: ``mpiexec -n 2 python tests/active/test_active_mpi.py RUN_DIR
[resume|abort]`` (the toy oracle of tests/active/helpers.py, tiny models), and holds the failing oracle
factory of the ``mdplugin active`` command-line test.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _config(**kw):
    from mdplugin.active import ActiveConfig
    from tests.active.helpers import HYPERS

    base = dict(targets=("energy", "dipole"), model="rpr", hypers=HYPERS, steps=400, max_calls=6,
                n_initial=3, initial_stride=5, temperature=(300, 600), seed=5, thresholds={"energy": 1e-3},
                segment=20, sample_every=4, batch=3, walkers=True, explore=False)
    base.update(kw)
    return ActiveConfig(**base)


def _probe_frames():
    from tests.active.helpers import rattled_waters

    return rattled_waters(5, 0.05, seed=11)


def _predictions(models: dict) -> dict[str, np.ndarray]:
    frames = _probe_frames()
    out = {}
    for t, m in models.items():
        value, std = m.predict(frames, return_std=True)
        out[t], out[f"{t}_std"] = np.asarray(value, dtype=float), np.asarray(std, dtype=float)
        if t == "energy":
            out["forces"] = np.concatenate(m.predict_forces(frames))
    return out


def failing_on_rank1():
    """``--oracle`` factory: the toy oracle, except on MPI rank 1 where every call raises (a
    crashed reference code)."""
    from mdplugin.learn.parallel import get_comm
    from tests.active.helpers import ToyOracle

    rank = get_comm().rank

    class Failing(ToyOracle):
        def calculate(self, *args, **kwargs):
            if rank == 1:
                raise RuntimeError("the reference code crashed on rank 1")
            return super().calculate(*args, **kwargs)

    return Failing()


def _driver(run_dir: str, mode: str) -> None:
    """One rank of a run (``mode``: ``new``, ``resume``, or ``abort``: rank 0 fails where rank 1
    waits for it)."""
    from mdplugin.active import run_active
    from mdplugin.learn.parallel import get_comm
    from tests.active.helpers import ToyOracle, water

    comm = get_comm()
    learners = []
    on_train = lambda learner, calls: learners.append(learner)  # noqa: E731
    if mode == "resume":
        run_active(None, run_dir, oracle=ToyOracle(), resume=True, overrides={"max_calls": 8},
                   on_train=on_train, comm=comm)
    elif mode == "abort":
        def say(msg: str) -> None:  # rank 0's progress messages, while rank 1 waits for the data
            if msg.startswith("retraining on") and not msg.startswith("retraining on 3 "):  # after the first batch
                raise RuntimeError("rank 0 failed while rank 1 waits")

        run_active(water(), run_dir, _config(), oracle=ToyOracle(), say=say, comm=comm)
    else:
        run_active(water(), run_dir, _config(), oracle=ToyOracle(), on_train=on_train, comm=comm)
    np.savez(Path(run_dir).parent / f"{Path(run_dir).name}.{mode}.rank{comm.rank}.npz", size=comm.size,
             **_predictions(learners[-1].models))


# ------------------------------------------------------------------------------------------------
def _mpiexec() -> str:
    from tests.support.mpi_utils import mpiexec_path

    return mpiexec_path()


def _launch(run_dir: Path, mode: str, check: bool = True, command: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(ROOT)}
    command = command or [__file__, str(run_dir), mode]
    proc = subprocess.run([_mpiexec(), "-n", "2", sys.executable, *command],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _frames(run_dir: Path) -> list[dict]:
    """(key, origin, rank) of every frame of data.xyz, in file order."""
    out = []
    for line in (run_dir / "data.xyz").read_text().splitlines():
        m = re.search(r"active_hash=(\w+)", line)
        if m:
            rank = re.search(r"active_rank=(\d+)", line)
            out.append({"key": m.group(1), "origin": re.search(r"active_origin=(\w+)", line).group(1),
                        "rank": int(rank.group(1)) if rank else None})
    return out


def _log(run_dir: Path) -> list[dict]:
    with open(run_dir / "log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _same_predictions(a, b) -> None:
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("active_mpi")
    proc = _launch(root / "run", "new")
    return root, proc


def test_two_ranks_label_both_walkers_once_in_batch_order(two_rank_run):
    root, proc = two_rank_run
    run_dir = root / "run"
    frames = _frames(run_dir)
    md = [f for f in frames if f["origin"] == "md"]
    assert [f["origin"] for f in frames[:3]] == ["reference"] * 3 and all(f["rank"] is None for f in frames[:3])
    assert len(md) == 6  # the call budget, exactly
    assert {f["rank"] for f in md} == {0, 1}  # labels from both ranks' walkers
    keys = [f["key"] for f in frames]
    assert len(keys) == len(set(keys))
    # rank 0 alone reports and logs, once per label, in the order of data.xyz
    reported = [line.split() for line in proc.stdout.splitlines() if line.startswith("label written ")]
    assert [w[2] for w in reported] == keys  # initial frames, then the MD labels
    assert [int(w[-1]) for w in reported if w[3] == "step"] == [f["rank"] for f in md]
    assert proc.stdout.count("active: oracle-call budget reached") == 1
    rows = [r for r in _log(run_dir) if r["event"] == "label"]
    assert [r["note"] for r in rows] == [f"{f['key']} rank {f['rank']}" for f in md]
    calls = [int(r["oracle_calls"]) for r in rows]
    assert calls == list(range(1, 7))
    # files: the serial run folder, nothing per rank
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        [".lock", "active.png", "config.json", "data.xyz", "dipole.npz", "energy.npz", "log.csv", "start.xyz", "state.npz"])
    state = np.load(run_dir / "state.npz")
    assert {"positions_rank1", "momenta_rank1"} <= set(state.files)


def test_two_ranks_hold_identical_models_equal_to_the_saved_ones(two_rank_run):
    from mdplugin import load_model

    root, _ = two_rank_run
    r0, r1 = (np.load(root / f"run.new.rank{r}.npz") for r in (0, 1))
    assert int(r0["size"]) == int(r1["size"]) == 2
    _same_predictions(r0, r1)
    saved = _predictions({t: load_model(root / "run" / f"{t}.npz") for t in ("energy", "dipole")})
    for k, v in saved.items():
        np.testing.assert_allclose(v, r0[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_resume_on_two_then_one_rank_duplicates_no_label(two_rank_run, tmp_path):
    from mdplugin.active import run_active
    from tests.active.helpers import ToyOracle

    root, _ = two_rank_run
    run_dir = tmp_path / "run"
    shutil.copytree(root / "run", run_dir)
    before = [f["key"] for f in _frames(run_dir)]
    proc = _launch(run_dir, "resume")
    assert "resuming at step" in proc.stdout and "on 2 MPI ranks" in proc.stdout
    frames = _frames(run_dir)
    keys = [f["key"] for f in frames]
    assert keys[: len(before)] == before and len(keys) == len(set(keys))
    assert sum(f["origin"] == "md" for f in frames) == 8
    r0, r1 = (np.load(tmp_path / f"run.resume.rank{r}.npz") for r in (0, 1))
    _same_predictions(r0, r1)
    # a different number of ranks: the 2-rank checkpoint resumed by one process
    s = run_active(None, run_dir, oracle=ToyOracle(), resume=True, overrides={"max_calls": 10},
                   say=lambda m: None)
    after = [f["key"] for f in _frames(run_dir)]
    assert after[: len(keys)] == keys and len(after) == len(set(after)) and s.oracle_calls == 10
    assert [r["event"] for r in _log(run_dir)].count("resume") == 2


def test_an_oracle_failing_on_one_rank_ends_every_rank(tmp_path):
    """``mpiexec -n 2 mdplugin active``: rank 1's oracle fails; every rank ends (no hang), rank 0
    reports the error once."""
    from tests.active.helpers import water

    water().write(tmp_path / "start.xyz")
    cli = ["-m", "mdplugin", "active", str(tmp_path / "start.xyz"), "-o", str(tmp_path / "run"),
           "--oracle", "tests.active.test_active_mpi:failing_on_rank1", "--targets", "energy,dipole", "--model", "rpr",
           "--energy-hypers", '{"n_sparse": 20, "max_radial": 2, "max_angular": 2, "cutoff": 3.0}',
           "--threshold-energy", "1e-3", "--n-initial", "3", "--steps", "400", "--max-calls", "6",
           "--temperature", "300:600", "--seed", "5", "--segment", "20", "--sample-every", "4", "--batch", "3",
           "--walkers"]
    proc = _launch(tmp_path / "run", "", check=False, command=cli)  # would time out if a rank hung
    assert proc.returncode != 0
    assert proc.stderr.count("the reference code crashed on rank 1") == 1, proc.stderr
    # the labels rank 0 made before the error are kept, each once
    keys = [f["key"] for f in _frames(tmp_path / "run")]
    assert len(keys) == len(set(keys)) >= 3


def test_a_rank_failing_while_the_others_wait_aborts_the_job(tmp_path):
    proc = _launch(tmp_path / "run", "abort", check=False)  # would time out if rank 1 hung
    assert proc.returncode != 0
    assert "mdplugin active: rank 0 of 2 failed (RuntimeError: rank 0 failed while rank 1 waits); " \
           "aborting every rank" in proc.stdout + proc.stderr
    keys = [f["key"] for f in _frames(tmp_path / "run")]
    assert len(keys) == len(set(keys)) and 3 < len(keys) <= 6  # 3 initial frames, the first batch (at most 3)


if __name__ == "__main__":
    _driver(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "new")
