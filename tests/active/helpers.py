"""Shared pieces of the active-learning tests: a cheap analytic oracle, small configurations,
the run folder's keys, and the ``mdplugin active`` command in a subprocess.

The oracle is a cheap analytic ASE calculator (:func:`toy_oracle`: Morse bonds, point-charge
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
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from mdplugin.active import ActiveConfig, run_active

ROOT = Path(__file__).resolve().parents[2]


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
                thresholds={"energy": 1e-3}, explore=False)
    base.update(kw)
    return ActiveConfig(**base)


def _run(tmp_path, name="run", **kw):
    return run_active(water(), tmp_path / name, _config(**kw), oracle=toy_oracle(), say=lambda m: None)


def _keys(run_dir: Path) -> list[str]:
    import re

    return re.findall(r"active_hash=(\w+)", (run_dir / "data.xyz").read_text())


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


#: the ``mdplugin active`` options of the CLI tests (1200 steps: four 300-step exploring segments and more)
RUN_OPTIONS = ("--oracle", "tests.active.helpers:toy_oracle", "--targets", "energy,dipole", "--model", "rpr",
               "--energy-hypers", '{"n_sparse": 20, "max_radial": 2, "max_angular": 2, "cutoff": 3.0}',
               "--threshold-energy", "1e-3", "--n-initial", "3", "--steps", "1200", "--max-calls", "5",
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

