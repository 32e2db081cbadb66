"""Helpers for the i-PI tests: tiny covariant models, i-PI inputs, processes that never leak.

The two models here are registered under names starting with ``_ipi_test`` when this module is
imported. Client processes that must load them run ``python -c "import tests.ipi_utils; ..."``
(see :func:`client_command`), so the models need no training time and no other helper's code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mdplugin.models.base import Model, register

REPO = Path(__file__).resolve().parents[1]
DRIVER_FILE = REPO / "drivers" / "mdplugin_driver.py"


def _centred(atoms) -> np.ndarray:
    pos = atoms.positions
    return pos - pos.mean(axis=0)


@register("_ipi_test_charges")
class ChargeDipole(Model):
    """μ = Σ_i q_Z(i) (r_i − r̄): one fitted charge per element (e); covariant and translation-free.

    The standard deviation is ``std_fraction`` × |μ| per component (e·Å), just to exercise ``*_std``.
    """

    targets_supported = ("dipole",)

    def __init__(self, target="dipole", std_fraction=0.01):
        self.target = target
        self.std_fraction = std_fraction

    def _design(self, frames):
        rows = []
        for atoms in frames:
            x = _centred(atoms)
            rows.append(np.stack([x[atoms.numbers == z].sum(axis=0) for z in self.species_], axis=1))
        return np.concatenate(rows)  # (3 n, n_species)

    def fit(self, frames, y):
        self.species_ = np.unique(np.concatenate([a.numbers for a in frames]))
        self.charges_, *_ = np.linalg.lstsq(self._design(frames), np.asarray(y, float).ravel(), rcond=None)
        self.is_fitted_ = True
        return self

    def predict(self, frames, return_std=False):
        y = (self._design(frames) @ self.charges_).reshape(len(frames), 3)
        return (y, self.std_fraction * np.abs(y)) if return_std else y

    def _get_state(self):
        return {"charges": self.charges_}

    def _set_state(self, arrays):
        self.charges_ = arrays["charges"]


@register("_ipi_test_gyration")
class GyrationPolarizability(Model):
    """α = c₀·1 + Σ_i w_Z(i) (r_i − r̄)(r_i − r̄)ᵀ (Å³): symmetric, covariant; std = 0.01 Å³."""

    targets_supported = ("polarizability",)

    def __init__(self, target="polarizability"):
        self.target = target

    def _design(self, frames):
        blocks = []
        for atoms in frames:
            x = _centred(atoms)
            cols = [np.eye(3).ravel()]
            for z in self.species_:
                xz = x[atoms.numbers == z]
                cols.append((xz.T @ xz).ravel())
            blocks.append(np.stack(cols, axis=1))
        return np.concatenate(blocks)  # (9 n, 1 + n_species)

    def fit(self, frames, y):
        self.species_ = np.unique(np.concatenate([a.numbers for a in frames]))
        self.weights_, *_ = np.linalg.lstsq(self._design(frames), np.asarray(y, float).ravel(), rcond=None)
        self.is_fitted_ = True
        return self

    def predict(self, frames, return_std=False):
        y = (self._design(frames) @ self.weights_).reshape(len(frames), 3, 3)
        return (y, np.full_like(y, 0.01)) if return_std else y

    def _get_state(self):
        return {"weights": self.weights_}

    def _set_state(self, arrays):
        self.weights_ = arrays["weights"]


def train_test_models(folder: Path, frames) -> tuple[Path, Path]:
    """Fit the two test models on ``frames`` with synthetic covariant labels; save them in ``folder``."""
    rng = np.random.default_rng(0)
    q = {1: 0.1, 6: -0.05, 17: -0.15}
    mu = np.array([sum(q[z] * r for z, r in zip(a.numbers, _centred(a))) for a in frames])
    alpha = np.array([6.0 * np.eye(3) + 0.3 * _centred(a).T @ _centred(a) for a in frames])
    mu += rng.normal(scale=1e-3, size=mu.shape)
    dip = ChargeDipole().fit(frames, mu)
    pol = GyrationPolarizability().fit(frames, alpha)
    paths = folder / "dipole.npz", folder / "polarizability.npz"
    dip.save(paths[0])
    pol.save(paths[1])
    return paths


# ----------------------------------------------------------------------------------------------
# processes
# ----------------------------------------------------------------------------------------------
def client_command(argv: list[str], kind: str = "mdplugin") -> list[str]:
    """A client process that knows the test models: ``mdplugin ipi ARGV`` or ``i-pi-py_driver ARGV``."""
    if kind == "mdplugin":
        code = "import sys, tests.ipi_utils; from mdplugin.cli import main; sys.exit(main(sys.argv[1:]))"
        return [sys.executable, "-c", code, "ipi", *argv]
    code = ("import sys, runpy, tests.ipi_utils; from mdplugin.ipi import _driver_script; "
            "sys.argv = ['i-pi-py_driver', *sys.argv[1:]]; runpy.run_path(str(_driver_script()), run_name='__main__')")
    return [sys.executable, "-c", code, *argv]


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    e["PYTHONUNBUFFERED"] = "1"
    e["OMP_NUM_THREADS"] = "1"  # tblite's OpenMP threads thrash on a busy 2-core machine
    return e


@contextlib.contextmanager
def process(cmd: list[str], cwd: Path, log: Path, timeout: float = 120.0):
    """Run ``cmd`` in its own session; on exit (also on failure) kill it if it still runs."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env(),
                                start_new_session=True)
        proc.deadline = time.monotonic() + timeout
        try:
            yield proc
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def wait(proc: subprocess.Popen, timeout: float | None = None) -> int:
    """Wait for ``proc`` (at most ``timeout`` s, default: its own deadline) and return its status."""
    if timeout is None:
        timeout = max(proc.deadline - time.monotonic(), 1.0)
    return proc.wait(timeout=timeout)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    """Poll ``predicate()`` until true; fail with ``what`` after ``timeout`` s or if ``proc`` ended."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended (status {proc.returncode}) while waiting for {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# ----------------------------------------------------------------------------------------------
# i-PI inputs
# ----------------------------------------------------------------------------------------------
def ipi_input(*, init: str, steps: int, nbeads: int = 1, mode: str = "unix", address: str = "mdplugin",
              port: int | None = None, sockets_prefix: str | None = None, temperature: float = 300.0,
              dt_fs: float = 0.5, seed: int = 31415, extras: bool = True, prefix: str = "sim",
              batch_size: int = 1) -> str:
    """An i-PI input: NVT (or PIMD with ``nbeads`` > 1) of the molecule in ``init`` (extxyz);
    ``batch_size`` > 1 makes i-PI send that many structures per message (its batch mode)."""
    sp = f" sockets_prefix='{sockets_prefix}'" if sockets_prefix is not None else ""
    port_xml = f"<port> {port} </port>" if port is not None else ""
    extras_xml = """
    <trajectory filename='dip' stride='1' extra_type='dipole'> extras </trajectory>
    <trajectory filename='pol' stride='1' extra_type='polarizability'> extras </trajectory>
    <trajectory filename='std' stride='1' extra_type='dipole_std,polarizability_std'> extras </trajectory>
""" if extras else ""
    thermostat = ("<thermostat mode='pile_l'><tau units='femtosecond'> 100 </tau></thermostat>" if nbeads > 1
                  else "<thermostat mode='svr'><tau units='femtosecond'> 100 </tau></thermostat>")
    return f"""<simulation verbosity='low' safe_stride='100000'{sp}>
  <output prefix='{prefix}'>
    <properties stride='1' filename='out'> [ step, time{{picosecond}}, conserved{{electronvolt}}, temperature{{kelvin}}, potential{{electronvolt}} ] </properties>
    <trajectory filename='pos' stride='1' format='ase'> positions </trajectory>{extras_xml}
  </output>
  <total_steps> {steps} </total_steps>
  <prng><seed> {seed} </seed></prng>
  <ffsocket name='mdplugin' mode='{mode}' pbc='false'>
    <address> {address} </address> {port_xml}
    <latency> 1e-4 </latency> <batch_size> {batch_size} </batch_size>
  </ffsocket>
  <system>
    <initialize nbeads='{nbeads}'>
      <file mode='ase'> {init} </file>
      <velocities mode='thermal' units='kelvin'> {temperature} </velocities>
    </initialize>
    <forces><force forcefield='mdplugin'/></forces>
    <motion mode='dynamics'>
      <dynamics mode='nvt'>
        <timestep units='femtosecond'> {dt_fs} </timestep>
        {thermostat}
      </dynamics>
    </motion>
    <ensemble><temperature units='kelvin'> {temperature} </temperature></ensemble>
  </system>
</simulation>
"""
