"""Helpers for the i-PI tests: small RPR models, i-PI inputs, processes that never leak."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DRIVER_FILE = REPO / "drivers" / "mdplugin_driver.py"
BIN = Path(sys.executable).parent


def train_models(folder: Path, frames) -> tuple[Path, Path]:
    """RPR dipole and polarizability models fitted on ``frames`` labelled with tblite (GFN2-xTB,
    finite-field polarizability), saved in ``folder``: a few seconds, real project models."""
    from mdplugin.models import build
    from mdplugin.oracles.label import label_frames

    data = label_frames(frames, "tblite", properties=["dipole", "polarizability"])
    paths = folder / "dipole.npz", folder / "polarizability.npz"
    build("rpr", target="dipole").fit(data.frames, data.dipole).save(paths[0])
    build("rpr", target="polarizability").fit(data.frames, data.polarizability).save(paths[1])
    return paths


# ----------------------------------------------------------------------------------------------
# processes
# ----------------------------------------------------------------------------------------------
def client_command(argv: list[str], kind: str = "mdplugin") -> list[str]:
    """The console scripts of this environment: ``mdplugin ipi ARGV`` or ``i-pi-py_driver ARGV``."""
    if kind == "mdplugin":
        return [str(BIN / "mdplugin"), "ipi", *argv]
    return [str(BIN / "i-pi-py_driver"), *argv]


def env() -> dict:
    e = dict(os.environ)
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
              batch_size: int = 1, std_stride: int = 1) -> str:
    """The tests' i-PI input (:func:`mdplugin.engines.ipi.input_xml`): NVT (or PIMD with ``nbeads``
    > 1) of the molecule in ``init`` (extxyz), everything written every step; with ``extras``
    the files ``<prefix>.dipole_<bead>``, ``.polarizability_<bead>`` and ``.std_<bead>`` (every
    ``std_stride`` steps); ``batch_size`` > 1 makes i-PI send that many structures per message."""
    from mdplugin.engines.ipi import Socket, input_xml

    return input_xml(init=init, steps=steps, n_beads=nbeads, temperature_K=temperature, dt_fs=dt_fs, seed=seed,
                     socket=Socket(address, mode=mode, port=port, batch_size=batch_size if batch_size > 1 else None),
                     sockets_prefix=sockets_prefix, extras=("dipole", "polarizability") if extras else (),
                     std_stride=std_stride if extras else None, prefix=prefix, safe_stride=100000)
