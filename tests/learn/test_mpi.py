"""MPI: helpers of mdplugin.learn.parallel (serial), and under a real ``mpiexec -n 2``: models trained on
two ranks equal the serial models, ``mdplugin train`` on two ranks writes the serial model, MD
replicas give one independent trajectory per rank that ``mdplugin spectrum`` averages.

Serial reference fits run in a subprocess with the same one-thread BLAS as the ranks: the
regularised GPR solves amplify rounding (two BLAS thread counts already differ at ~1e-6 relative
in a dipole prediction), so "equal to the serial model" is checked at equal arithmetic, where
the parallel fit is designed to be bit-identical (same blocks, sums in the serial order).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mdplugin.learn.parallel import (
    CpuLedger,
    PhaseTimer,
    SerialComm,
    TreeSum,
    allgather_blocks,
    allgather_array,
    assign_tasks,
    gather_rows,
    get_comm,
    local_blocks,
    rank_offset,
    resolve_comm,
    share_tasks,
    split_indices,
    sum_over_ranks,
    wait_quietly,
)

from ..support.fake_comm import run_ranks
from ..support.mpi_utils import mpiexec_path

SCRIPTS = Path(__file__).resolve().parent / "mpi_scripts"
N_FRAMES, CHUNK = 40, 7  # 6 blocks of frames: 3 per rank
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ------------------------------------------------------------------------------------------------
# helpers, serial
# ------------------------------------------------------------------------------------------------
def test_serial_comm_withoutmpiexec_path():
    comm = get_comm()  # pytest runs on one rank
    assert comm.size == 1 and comm.rank == 0
    assert isinstance(resolve_comm(None), SerialComm)


@pytest.mark.parametrize("n,size", [(0, 3), (5, 2), (7, 3), (100, 8), (3, 5)])
def test_split_indices_partition(n, size):
    parts = [split_indices(n, r, size) for r in range(size)]
    np.testing.assert_array_equal(np.concatenate(parts) if n else np.zeros(0), np.arange(n))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("n,block,size", [(40, 7, 2), (10, 50, 2), (23, 4, 3), (1, 1, 4)])
def test_local_blocks_cover_the_serial_blocks_in_order(n, block, size):
    class Fake:
        def __init__(self, rank):
            self.rank, self.size = rank, size

    starts = [s for r in range(size) for s in local_blocks(n, block, Fake(r))]
    assert starts == list(range(0, n, block))


def test_serial_collectives_are_identity():
    comm = SerialComm()
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 3))
    assert sum_over_ranks(comm, a) is a
    parts = [a, a[:1]]
    assert allgather_blocks(comm, parts) == parts
    idx = np.array([3, 0, 2])
    np.testing.assert_array_equal(gather_rows(comm, {0: a}, idx, 0, len(a))[0], a[idx])


def test_tree_sum_serial_edge_cases():
    """One term is returned unchanged, scalars add as Python floats in the tree, no terms give
    zeros, and a missing term is an error rather than a wrong sum."""
    rng = np.random.default_rng(1)
    term = rng.normal(size=(5, 5))
    one = TreeSum(SerialComm(), (5, 5), 1)
    one.add(0, term.copy())
    np.testing.assert_array_equal(one.result(), term)
    values = [float(v) * 10.0**k for k, v in zip(range(-8, 8, 3), rng.normal(size=6))]
    scalar = TreeSum(SerialComm(), (), len(values))
    for i, v in enumerate(values):
        scalar.add(i, v)
    # the documented tree over 6 terms: ((0 + 1) + 2) + ((3 + 4) + 5)
    assert float(scalar.result()) == ((values[0] + values[1]) + values[2]) + ((values[3] + values[4]) + values[5])
    np.testing.assert_array_equal(TreeSum(SerialComm(), 4, 0).result(), np.zeros(4))
    partial = TreeSum(SerialComm(), 3, 4)
    for i in (0, 1, 3):
        partial.add(i, np.ones(3))
    with pytest.raises(RuntimeError, match="every block"):
        partial.result()


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_assign_tasks_balances_longest_first(size):
    rng = np.random.default_rng(2)
    costs = rng.uniform(0.1, 1.0, 11).tolist()
    owner = assign_tasks(costs, size)
    assert owner.shape == (11,) and set(owner.tolist()) <= set(range(size))
    np.testing.assert_array_equal(owner, assign_tasks(costs, size))  # the same on every rank
    loads = np.bincount(owner, weights=costs, minlength=size)
    # greedy longest-first: no rank exceeds the mean load by more than one task
    assert loads.max() <= np.sum(costs) / size + max(costs) + 1e-12
    np.testing.assert_array_equal(assign_tasks([1.0] * 6, 2), [0, 1, 0, 1, 0, 1])


@pytest.mark.parametrize("size", [1, 2, 3])
def test_share_tasks_runs_each_task_once_and_returns_all_results_everywhere(size):
    rng = np.random.default_rng(3)
    mats = [rng.normal(size=(20, 20)) for _ in range(7)]
    ran = []

    def task(i):  # small arrays travel pickled, large ones (> 64 kB) as raw buffers, here F-ordered
        ran.append(i)
        factor = np.linalg.cholesky(mats[i] @ mats[i].T + 20 * np.eye(20))
        return np.asfortranarray(np.kron(factor, np.ones((5, 5)))) if i % 2 else factor

    serial = share_tasks(SerialComm(), [1.0] * 7, task)
    ran.clear()
    results = run_ranks(size, lambda comm: share_tasks(comm, [float(i + 1) for i in range(7)], task))
    assert sorted(ran) == list(range(7))  # each task once, on one rank
    for rank_results in results:
        for got, ref in zip(rank_results, serial):
            np.testing.assert_array_equal(got, ref)
            assert got.flags.f_contiguous == ref.flags.f_contiguous


def test_cpu_ledger_assigns_the_same_tasks_on_every_rank():
    ran = []

    def run(comm):
        ledger = CpuLedger(comm)
        first = share_tasks(comm, [3e9, 3e9, 3e9], lambda i: (ran.append(i), i)[1], ledger)
        owner = ledger.assign([1e9] * 4)
        second = share_tasks(comm, [1e9] * 4, lambda i: 10 + i, owner=owner)
        return first + second, owner

    results = run_ranks(2, run)
    assert sorted(ran) == [0, 1, 2]  # each task once
    for got, owner in results:
        assert got == [0, 1, 2, 10, 11, 12, 13]
    np.testing.assert_array_equal(results[0][1], results[1][1])  # gathered loads: one assignment
    np.testing.assert_array_equal(assign_tasks([1.0] * 4, 2, np.array([2.0, 1.0])), [1, 0, 1, 0])
    assert CpuLedger(SerialComm()).assign([1.0, 2.0]).tolist() == [0, 0]


def test_allgather_array():
    got = run_ranks(3, lambda comm: allgather_array(comm, np.full(4, comm.rank + 0.5)))
    for g in got:
        np.testing.assert_array_equal(g, np.repeat([[0.5], [1.5], [2.5]], 4, axis=1))
    np.testing.assert_array_equal(allgather_array(SerialComm(), np.arange(3.0)), [[0.0, 1.0, 2.0]])

def test_phase_timer_is_silent_unless_enabled(monkeypatch, capsys):
    monkeypatch.delenv("MDPLUGIN_FIT_TIMES", raising=False)
    timer = PhaseTimer(SerialComm(), "quiet")
    timer("a")
    timer.report()
    assert capsys.readouterr().err == "" and timer.phases == {}
    monkeypatch.setenv("MDPLUGIN_FIT_TIMES", "1")
    timer = PhaseTimer(SerialComm(), "loud")
    sum(range(10000))
    timer("work")
    timer("work")  # the same phase again: added
    timer("other")
    timer.report()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[4] for line in lines] == ["work", "other", "total"]
    assert all(line.startswith("fit-times loud rank 0/1 ") for line in lines)
    cpu = {line.split()[4]: float(line.split()[6]) for line in lines}
    assert cpu["total"] == pytest.approx(cpu["work"] + cpu["other"])
    wait_quietly(SerialComm())  # one rank: returns at once


def test_rank_offset():
    counts = [3, 0, 5, 2]
    got = run_ranks(4, lambda comm: rank_offset(comm, counts[comm.rank]))
    assert got == [(0, 10), (3, 10), (3, 10), (8, 10)]
    assert rank_offset(SerialComm(), 7) == (0, 7)


@pytest.mark.parametrize("root", [None, 0, 1, 2])
def test_gather_rows_from_split_arrays(root):
    """Rows spread over 3 ranks (rank 1 without rows) gathered in the requested order, on every
    rank or on one (a root with or without rows of its own); the rows travel as raw buffers."""
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(9, 2)), rng.normal(size=(9, 3, 4))
    cuts = [0, 4, 4, 9]  # rank 1 holds no row
    index = np.array([7, 0, 3, 8, 5])

    def gather(comm):
        lo, hi = cuts[comm.rank], cuts[comm.rank + 1]
        local = {"a": a[lo:hi], "b": b[lo:hi]} if hi > lo else {}
        return gather_rows(comm, local, index, lo, hi - lo, root=root)

    for rank, got in enumerate(run_ranks(3, gather)):
        if root is not None and rank != root:
            assert got is None
            continue
        np.testing.assert_array_equal(got["a"], a[index])
        np.testing.assert_array_equal(got["b"], b[index])

def _tree(terms, lo, hi):
    """The tree TreeSum documents: [lo, hi) = [lo, mid) + [mid, hi), mid the rounded middle."""
    if hi - lo == 1:
        return np.array(terms[lo], dtype=float)
    mid = lo + int(round((hi - lo) / 2))
    return _tree(terms, lo, mid) + _tree(terms, mid, hi)


@pytest.mark.parametrize("n_terms", [1, 2, 7, 10, 13])
def test_tree_sum_is_the_same_on_any_number_of_ranks(n_terms):
    """Terms of wildly different magnitudes (so that the order of additions shows): the serial
    TreeSum is the documented tree, and 2, 3 or 4 (thread-)ranks holding contiguous runs of
    blocks, as local_blocks hands them out (some ranks empty), give it bit for bit."""
    rng = np.random.default_rng(7)
    terms = [rng.normal(size=(6, 6)) * 10.0 ** rng.integers(-8, 8) for _ in range(n_terms)]
    scalars = [float(t[0, 0]) for t in terms]
    ref = _tree(terms, 0, n_terms)
    serial = TreeSum(SerialComm(), (6, 6), n_terms)
    for i, t in enumerate(terms):
        serial.add(i, t.copy())
    np.testing.assert_array_equal(serial.result(), ref)

    def run(comm):
        acc, acc_s = TreeSum(comm, (6, 6), n_terms), TreeSum(comm, (), n_terms)
        for i in local_blocks(n_terms, 1, comm):
            acc.add(i, terms[i].copy())
            acc_s.add(i, scalars[i])
        return acc.result(), float(acc_s.result())

    for size in (2, 3, 4):
        for total, scalar in run_ranks(size, run):
            np.testing.assert_array_equal(total, ref)
            assert scalar == float(_tree(scalars, 0, n_terms))

@pytest.mark.parametrize("n_frames,chunk", [(14, 3), (5, 4)])  # 5 blocks; 2 blocks (a rank empty on 3)
def test_energy_fit_on_thread_ranks_is_the_serial_fit(n_frames, chunk):
    """The SOAP energy fit on 2 and 3 (thread-)ranks: the same representative environments (the
    distributed FPS) and bit for bit the same normal equations (TreeSum) as the serial fit, so
    the same model; water frames among the DCE ones give ranks without some species."""
    from ase.build import molecule

    from mdplugin.models.soap import SoapEnergyModel

    from ..conftest import dichloroethane
    from ..models.test_soap import pair_potential

    frames = [molecule("H2O") if i % 4 == 1 else dichloroethane(i, 0.08) for i in range(n_frames)]
    for i, a in enumerate(frames):
        a.positions += np.random.default_rng(100 + i).normal(scale=0.05, size=a.positions.shape)
    labels = [pair_potential(a) for a in frames]
    energies, forces = [e for e, _ in labels], [f for _, f in labels]

    def fit(comm=None):
        model = SoapEnergyModel(n_sparse=12, max_radial=3, max_angular=2, chunk_size=chunk)
        return model.fit(frames, {"energy": energies, "forces": forces}, comm=comm)

    serial = fit()
    for size in (2, 3):
        for model in run_ranks(size, fit):
            np.testing.assert_array_equal(model.sparse_species_, serial.sparse_species_)
            np.testing.assert_array_equal(model.sparse_features_, serial.sparse_features_)
            np.testing.assert_array_equal(model.gpr_.weights, serial.gpr_.weights)


# ------------------------------------------------------------------------------------------------
# under mpiexec -n 2
# ------------------------------------------------------------------------------------------------


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **ONE_THREAD}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _relative_error(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Models fitted on 2 ranks and serially (same script, same one-thread BLAS)."""
    mpiexec = mpiexec_path()
    data = Path(__file__).resolve().parents[2] / "examples" / "trajectories" / "dce_train.xyz"
    if not data.exists():
        pytest.skip("examples/trajectories/dce_train.xyz not generated yet")
    root = tmp_path_factory.mktemp("mpi_fit")
    (root / "mpi").mkdir()
    (root / "serial").mkdir()
    script = str(SCRIPTS / "fit_models.py")
    _run([mpiexec, "-n", "2", sys.executable, script, str(data), str(N_FRAMES), str(CHUNK), str(root / "mpi")])
    _run([sys.executable, script, str(data), str(N_FRAMES), str(CHUNK), str(root / "serial")])
    return root


@pytest.mark.slow  # mpiexec start-up and featomic import per rank: ~30-70 s on a loaded 2-core box
@pytest.mark.parametrize("target", ["energy", "dipole", "polarizability"])
def test_two_ranks_train_the_serial_model(fitted, target, examples_dir):
    from mdplugin import load_model
    from mdplugin.structures.data import read_dataset

    assert int(np.load(fitted / "mpi" / "check.rank0.npz")["size"]) == 2
    assert int(np.load(fitted / "serial" / "check.rank0.npz")["size"]) == 1
    # both ranks hold the same model
    r0, r1 = np.load(fitted / "mpi" / "check.rank0.npz"), np.load(fitted / "mpi" / "check.rank1.npz")
    np.testing.assert_array_equal(r0[target], r1[target])

    par, ser = load_model(fitted / "mpi" / f"{target}.npz"), load_model(fitted / "serial" / f"{target}.npz")
    test = read_dataset(examples_dir / "dce_test.xyz").subset(np.arange(20)).frames
    assert _relative_error(par.predict(test), ser.predict(test)) <= 1e-10
    if target == "energy":
        f_par = np.concatenate(par.predict_forces(test))
        f_ser = np.concatenate(ser.predict_forces(test))
        assert _relative_error(f_par, f_ser) <= 1e-10
    else:
        assert par.regularizer_ == ser.regularizer_
    np.testing.assert_array_equal(par.sparse_species_, ser.sparse_species_)
    # the regression is not trivial: the model follows its training labels
    train = read_dataset(examples_dir / "dce_train.xyz").subset(np.arange(N_FRAMES))
    y = train.get(target)
    err = _relative_error(par.predict(train.frames) - np.mean(y, axis=0), y - np.mean(y, axis=0))
    assert err < 0.5


@pytest.mark.slow  # mpiexec start-up and featomic import per rank: ~30-70 s on a loaded 2-core box
def test_mpiexec_train_command_writes_the_serial_model(tmp_path, examples_dir):
    from mdplugin import load_model
    from mdplugin.structures.data import read_dataset, write_dataset

    mpiexec = mpiexec_path()
    data = read_dataset(examples_dir / "dce_train.xyz").subset(np.arange(30))
    path = tmp_path / "train.xyz"
    write_dataset(path, data)
    hypers = '{"n_sparse": 15, "n_sparse_l0": 30, "max_radial": 3, "max_angular": 3, "n_components": 16, ' \
             '"chunk_size": 6}'
    args = ["-m", "mdplugin", "train", str(path), "--target", "polarizability", "--model", "lsoap",
            "--hypers", hypers]
    proc = _run([mpiexec, "-n", "2", sys.executable, *args, "-o", str(tmp_path / "mpi.npz")])
    assert proc.stdout.count("trained lsoap") == 1 and "on 2 MPI ranks" in proc.stdout  # rank 0 only
    _run([sys.executable, *args, "-o", str(tmp_path / "serial.npz")])
    test = read_dataset(examples_dir / "dce_test.xyz").subset(np.arange(10)).frames
    par, ser = load_model(tmp_path / "mpi.npz"), load_model(tmp_path / "serial.npz")
    assert _relative_error(par.predict(test), ser.predict(test)) <= 1e-10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mpi.npz", "serial.npz", "train.xyz"]


def _read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path) as fh:
        rows = list(csv.reader(fh))
    header = rows[0]
    body = [r for r in rows[1:] if r and not r[0].startswith("#")]
    return header, np.array(body, dtype=float)


@pytest.mark.slow  # mpiexec start-up and featomic import per rank: ~30-70 s on a loaded 2-core box
def test_md_replicas_one_trajectory_per_rank_averaged_by_spectrum(fitted, tmp_path, examples_dir):
    from mdplugin.cli.parser import main
    from mdplugin.structures.data import read_dataset

    mpiexec = mpiexec_path()
    start = tmp_path / "start.xyz"
    shutil.copy(examples_dir / "dce_test.xyz", start)  # md reads its first frame
    models = fitted / "mpi"
    _run([mpiexec, "-n", "2", sys.executable, "-m", "mdplugin", "md", str(start),
          "--energy", str(models / "energy.npz"), "--dipole", str(models / "dipole.npz"),
          "--steps", "40", "--dt", "0.5", "--temperature", "300", "--seed", "3", "-o", str(tmp_path / "traj.xyz"),
          "--replicas", "--quiet"])
    files = [tmp_path / f"traj.rank{r}.xyz" for r in (0, 1)]
    assert all(f.exists() for f in files) and not (tmp_path / "traj.xyz").exists()
    runs = [read_dataset(f, properties=["dipole"]) for f in files]
    assert len(runs[0]) == len(runs[1]) > 10
    np.testing.assert_allclose(runs[0].frames[0].positions, runs[1].frames[0].positions)  # same start
    # independent seeds: the replicas separate
    assert np.abs(runs[0].frames[-1].positions - runs[1].frames[-1].positions).max() > 1e-3
    assert np.abs(runs[0].dipole - runs[1].dipole).max() > 1e-6

    spec = ["spectrum", "ir", "--dt", "0.5", "--temperature", "300"]
    assert main([*spec, *map(str, files), "-o", str(tmp_path / "both.csv")]) == 0
    for r, f in enumerate(files):
        assert main([*spec, str(f), "-o", str(tmp_path / f"one{r}.csv")]) == 0
    _, both = _read_csv(tmp_path / "both.csv")
    _, one0 = _read_csv(tmp_path / "one0.csv")
    _, one1 = _read_csv(tmp_path / "one1.csv")
    np.testing.assert_allclose(both[:, 0], one0[:, 0])
    # equal-length series: the pooled correlation function, hence the spectrum, is the mean
    np.testing.assert_allclose(both[:, 1], 0.5 * (one0[:, 1] + one1[:, 1]), rtol=1e-8,
                               atol=1e-10 * np.abs(both[:, 1]).max())


@pytest.mark.slow  # mpiexec start-up and featomic import per rank: ~30-70 s on a loaded 2-core box
def test_mpiexec_label_writes_the_serial_file(tmp_path):
    """`mpiexec -n 2 mdplugin label` writes byte for byte the file of the serial command."""
    import ase.io
    from ase.build import molecule

    from ..conftest import dichloroethane

    mpiexec = mpiexec_path()
    frames = [molecule("H2O"), dichloroethane(rng=1, noise=0.05), molecule("CH4"), molecule("NH3"),
              dichloroethane(rng=2, noise=0.05)]
    ase.io.write(tmp_path / "in.xyz", frames, format="extxyz")
    args = ["-m", "mdplugin", "label", str(tmp_path / "in.xyz"), "--properties", "energy,forces,dipole",
            "--quiet"]
    _run([mpiexec, "-n", "2", sys.executable, *args, "-o", str(tmp_path / "mpi.xyz")])
    _run([sys.executable, *args, "-o", str(tmp_path / "serial.xyz")])
    assert (tmp_path / "mpi.xyz").read_bytes() == (tmp_path / "serial.xyz").read_bytes()
    labelled = ase.io.read(tmp_path / "mpi.xyz", ":")
    assert [a.get_chemical_formula() for a in labelled] == [a.get_chemical_formula() for a in frames]
