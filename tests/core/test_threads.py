"""Threads chosen well by default: one BLAS/OpenMP thread for per-step work, the idle cores shared
among the ranks of a node for fits, the user's MDPLUGIN_THREADS (or their own OMP_NUM_THREADS)
above both — and the limits really reach the libraries during an MD run."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from threadpoolctl import threadpool_info

from mdplugin.core import threads
from mdplugin.core.errors import ConfigError


@pytest.fixture
def auto(monkeypatch):
    """No user setting at all: the rule decides."""
    for name in (*threads.LIBRARY_VARIABLES, *threads.LOCAL_RANKS_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(threads.ENV, "auto")  # restored after the test, even when main() sets it
    return monkeypatch


def _blas_threads() -> list[int]:
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_step_work_and_small_batches_use_one_thread(auto) -> None:
    assert threads.threads_for("step") == 1
    auto.setattr(threads, "cpus_available", lambda: 8)
    auto.setattr(threads.os, "cpu_count", lambda: 8)
    auto.setattr(threads.os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    assert threads.threads_for("batch", structures=threads.SMALL_BATCH - 1) == 1  # 10 initial frames
    assert threads.threads_for("batch", structures=threads.SMALL_BATCH) == 8


def test_batch_work_takes_the_idle_cores_shared_among_the_ranks_of_a_node(auto) -> None:
    auto.setattr(threads, "cpus_available", lambda: 8)
    auto.setattr(threads.os, "cpu_count", lambda: 8)
    auto.setattr(threads.os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    assert threads.threads_for("batch") == 8  # an idle node: all its cores
    auto.setenv("MPI_LOCALNRANKS", "4")  # four ranks on this node (MPICH/Hydra)
    assert threads.threads_for("batch") == 2
    auto.setenv("MPI_LOCALNRANKS", "16")
    assert threads.threads_for("batch") == 1
    auto.delenv("MPI_LOCALNRANKS")
    auto.setenv("SLURM_STEP_TASKS_PER_NODE", "2(x3)")  # srun's form
    assert threads.threads_for("batch") == 4
    auto.delenv("SLURM_STEP_TASKS_PER_NODE")
    auto.setattr(threads.os, "getloadavg", lambda: (7.6, 7.0, 6.0))  # other processes on 7 cores
    assert threads.threads_for("batch") == 1
    auto.setattr(threads.os, "getloadavg", lambda: (3.0, 3.0, 3.0))
    assert threads.threads_for("batch") == 6


def test_the_user_decides(auto) -> None:
    auto.setenv(threads.ENV, "3")
    assert threads.threads_for("step") == threads.threads_for("batch") == 3
    auto.setenv(threads.ENV, "auto")
    assert threads.threads_for("step") == 1
    auto.setenv(threads.ENV, "")
    auto.setenv("OMP_NUM_THREADS", "4")  # the user configured the libraries: left alone
    assert threads.threads_for("step") is None and threads.threads_for("batch") is None
    auto.setenv(threads.ENV, "2")  # MDPLUGIN_THREADS still wins
    assert threads.threads_for("step") == 2
    for bad in ("0", "-1", "many"):
        auto.setenv(threads.ENV, bad)
        with pytest.raises(ConfigError, match=f"{threads.ENV}='{bad}': give a positive number"):
            threads.threads_for("step")


def test_command_line_option_sets_the_variable(auto, tmp_path, capsys) -> None:
    from mdplugin.cli.parser import main

    argv = ["md", str(tmp_path / "nothere.xyz"), "--energy", "tblite", "--steps", "1", "--dt", "1", "-o",
            str(tmp_path / "t.xyz")]
    assert main(["--threads", "many", *argv]) == 2
    assert capsys.readouterr().err.strip() == "mdplugin: error: --threads many: give a positive number of threads or 'auto'"
    assert main(["--threads", "3", *argv]) == 2  # accepted (the run fails on its missing file)
    assert threads.threads_for("batch") == 3 and "no such file" in capsys.readouterr().err


class ThreadProbe(EMT):
    """ASE's EMT; records how many BLAS threads numpy would use at each evaluation."""

    seen: list[list[int]] = []

    def calculate(self, *args, **kwargs):
        ThreadProbe.seen.append(_blas_threads())
        super().calculate(*args, **kwargs)


@pytest.mark.skipif(threads.cpus_available() < 2, reason="one core: nothing to limit")
def test_md_runs_on_one_blas_thread_and_restores_the_pools(auto, tmp_path) -> None:
    from threadpoolctl import threadpool_limits

    from mdplugin.engines.md import run_md

    with threadpool_limits(limits=2, user_api="blas"):  # as numpy starts on this machine
        assert max(_blas_threads()) == 2
        ThreadProbe.seen = []
        run_md(bulk("Cu", cubic=True), ThreadProbe(), steps=3, dt_fs=1.0, output=tmp_path / "t.xyz",
               thermostat="none", progress=False)
        assert ThreadProbe.seen and all(max(s) == 1 for s in ThreadProbe.seen)
        assert max(_blas_threads()) == 2  # restored after the run
        auto.setenv(threads.ENV, "2")
        ThreadProbe.seen = []
        run_md(bulk("Cu", cubic=True), ThreadProbe(), steps=1, dt_fs=1.0, output=tmp_path / "t.xyz",
               thermostat="none", progress=False)
        assert all(max(s) == 2 for s in ThreadProbe.seen)


def test_fits_run_with_the_batch_threads(auto) -> None:
    from mdplugin.models import build
    from mdplugin.models.training import fit_on_dataset
    from mdplugin.structures.data import Dataset

    seen = []

    class Probe:  # a model whose fit records the BLAS threads it was given
        target = "dipole"

        def fit(self, frames, y, *, comm=None):
            seen.append(max(_blas_threads()))
            return self

    from threadpoolctl import threadpool_limits

    data = Dataset(frames=[bulk("Cu")], dipole=np.zeros((1, 3)))
    with threadpool_limits(limits=2, user_api="blas"):
        auto.setenv(threads.ENV, "1")
        fit_on_dataset(Probe(), data)
        auto.setenv(threads.ENV, "auto")
        auto.setattr(threads.os, "getloadavg", lambda: (9.0, 9.0, 9.0))  # a busy machine: 1 thread
        fit_on_dataset(Probe(), data)
        assert max(_blas_threads()) == 2  # restored
    assert seen == [1, 1]
    assert build("rpr", target="dipole")  # the registry is untouched by the probe
