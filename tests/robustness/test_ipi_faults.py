"""Faults in the i-PI link: malformed messages from a (fake) server, a server that vanishes mid-message.

The client must end with an :class:`MdpluginError` (one line on the command line), never hang while
the server is gone and never leave anything behind (socket files, processes). A real i-PI server
that is absent or killed mid-run is covered by tests/engines/test_ipi.py; here a hand-written server
speaks the i-PI wire protocol (12-byte headers, int32/float64 payloads) and breaks it on purpose.

The client is i-PI's own driver (a child process) behind mdplugin's relay; the PES it serves here
has a light calculator (tests/support/ipi_calculators.py) that the driver imports by name.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mdplugin.core.errors import MdpluginError
from mdplugin.engines.ipi import run_client
from mdplugin.core.units import BOHR

from ..conftest import dichloroethane
from .helpers import one_error_line

HDR = 12


def msg(text: str) -> bytes:
    return text.ljust(HDR).encode()


class FakeServer:
    """A UNIX-socket server speaking just enough i-PI to be rude."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="ipi-", dir="/tmp"))  # short: UNIX paths ≤ 107 bytes
        self.prefix = str(self.folder) + "/"
        self.address = "fake"
        self.path = self.prefix + self.address
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.path)
        self.srv.listen(1)
        self.srv.settimeout(60)
        self.conn: socket.socket | None = None

    def accept(self) -> socket.socket:
        self.conn, _ = self.srv.accept()
        self.conn.settimeout(30)
        return self.conn

    def recv_exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            part = self.conn.recv(n - len(out))
            if not part:
                raise ConnectionError("client closed")
            out += part
        return out

    def handshake(self) -> None:
        """STATUS -> NEEDINIT, INIT, STATUS -> READY."""
        self.conn.sendall(msg("STATUS"))
        assert self.recv_exact(HDR).strip() == b"NEEDINIT"
        self.conn.sendall(msg("INIT") + np.int32(0).tobytes() + np.int32(1).tobytes() + b" ")
        self.conn.sendall(msg("STATUS"))
        assert self.recv_exact(HDR).strip() == b"READY"

    def posdata(self, pos_bohr: np.ndarray, nat: int | None = None) -> None:
        cell = np.eye(3) * 40.0
        nat = len(pos_bohr) if nat is None else nat
        self.conn.sendall(msg("POSDATA") + cell.tobytes() + np.linalg.inv(cell).tobytes()
                          + np.int32(nat).tobytes() + np.asarray(pos_bohr, dtype=np.float64).tobytes())

    def getforce(self, nat: int) -> dict:
        self.conn.sendall(msg("STATUS"))
        assert self.recv_exact(HDR).strip() == b"HAVEDATA"
        self.conn.sendall(msg("GETFORCE"))
        assert self.recv_exact(HDR).strip() == b"FORCEREADY"
        energy = np.frombuffer(self.recv_exact(8), np.float64)[0]
        n = np.frombuffer(self.recv_exact(4), np.int32)[0]
        forces = np.frombuffer(self.recv_exact(8 * 3 * n), np.float64).reshape(n, 3)
        self.recv_exact(72)
        length = np.frombuffer(self.recv_exact(4), np.int32)[0]
        extras = self.recv_exact(int(length)).decode()
        assert n == nat
        return {"energy": energy, "forces": forces, "extras": extras}

    def close(self) -> None:
        for s in (self.conn, self.srv):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def template(tmp_path):
    atoms = dichloroethane(rng=5, noise=0.02)
    path = tmp_path / "dce.xyz"
    atoms.write(path)
    return atoms, path


REPO = Path(__file__).resolve().parents[2]
#: the calculator i-PI's driver serves in these tests (imported by name in the driver process)
FACTORY = "tests.support.ipi_calculators:springs_with_dipole"


@pytest.fixture
def driver(template, monkeypatch):
    """The PES options: the template and a light calculator (the repository on the driver's path)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return {"template": str(template[1]), "calculator": FACTORY}


def _client_thread(driver, server, timeout=20.0):
    box = {}

    def target():
        try:
            run_client(driver, unix=True, address=server.address, sockets_prefix=server.prefix, timeout=timeout)
            box["result"] = "returned"
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            box["result"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def _scenario(driver, template, script, wait=8.0):
    """Run the client against a fake server doing ``script(server, pos_bohr)``; the client's outcome."""
    atoms, _ = template
    server = FakeServer()
    try:
        thread, box = _client_thread(driver, server)
        server.accept()
        script(server, atoms.positions / BOHR)
        thread.join(wait)
        hung = thread.is_alive()
    finally:
        server.close()  # also releases a hung client (it sees the closed connection)
    thread.join(30)
    assert not thread.is_alive()
    return ("hung", box.get("result")) if hung else box.get("result")


def test_fake_server_normal_step(driver, template):
    """The fake server is right: one honest step, then EXIT -> the client returns normally."""
    atoms, _ = template

    def script(server, pos):
        server.handshake()
        server.posdata(pos)
        out = server.getforce(len(pos))
        assert np.isfinite(out["energy"]) and "dipole" in out["extras"]
        server.conn.sendall(msg("EXIT"))

    assert _scenario(driver, template, script) == "returned"


def _is_clean_error(result) -> bool:
    return isinstance(result, MdpluginError) and "\n" not in str(result)


def test_server_dies_in_the_middle_of_a_message(driver, template):
    def script(server, pos):
        server.handshake()
        server.conn.sendall(msg("POSDATA") + np.eye(3).tobytes()[:20])  # half a cell, then gone
        server.conn.close()

    result = _scenario(driver, template, script)
    assert _is_clean_error(result) and "closed the connection" in str(result), result


def test_garbage_then_closed(driver, template):
    def script(server, pos):
        server.conn.sendall(b"\x00\xffGARBAGE\x13\x37!!")
        server.conn.close()

    result = _scenario(driver, template, script)
    assert _is_clean_error(result), result


def test_wrong_atom_count(driver, template):
    def script(server, pos):
        server.handshake()
        server.posdata(pos[:3])
        with contextlib.suppress(OSError):  # the client may already have hung up on the bad data
            server.conn.sendall(msg("STATUS"))

    result = _scenario(driver, template, script)
    assert _is_clean_error(result) and "i-PI sent 3 atoms" in str(result), result


def test_nan_positions(driver, template):
    def script(server, pos):
        server.handshake()
        bad = pos.copy()
        bad[1, 2] = np.nan
        server.posdata(bad)
        with contextlib.suppress(OSError):  # the client may already have hung up on the bad data
            server.conn.sendall(msg("STATUS"))

    result = _scenario(driver, template, script)
    assert _is_clean_error(result), result


def test_unknown_header_then_gone(driver, template):
    """i-PI's driver skips a header it does not know (forward compatibility) and waits for the next;
    when that server then goes away, the client ends with one line."""
    def script(server, pos):
        server.handshake()
        server.conn.sendall(msg("GARBAGE"))
        time.sleep(0.5)
        server.conn.close()

    result = _scenario(driver, template, script)
    assert _is_clean_error(result) and "closed the connection" in str(result), result


def test_a_server_that_is_not_i_pi_is_named(driver, template):
    """The first message must be i-PI's STATUS."""
    def script(server, pos):
        server.conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n")

    result = _scenario(driver, template, script)
    assert _is_clean_error(result) and "not an i-PI message" in str(result), result


def test_negative_atom_count(driver, template):
    def script(server, pos):
        server.handshake()
        server.conn.sendall(msg("POSDATA") + np.eye(3).tobytes() * 2 + np.int32(-5).tobytes())

    result = _scenario(driver, template, script)
    assert _is_clean_error(result), result


def test_getforce_before_posdata(driver, template):
    def script(server, pos):
        server.handshake()
        server.conn.sendall(msg("GETFORCE"))

    result = _scenario(driver, template, script)
    assert _is_clean_error(result), result


# ---------------------------------------------------------------------------------------------
# the console script: one line, nothing left behind
# ---------------------------------------------------------------------------------------------
def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_mdplugin_ipi_server_gone_mid_run_leaves_nothing(template):
    """`mdplugin ipi` in its own process group: the server does one step and vanishes. The client
    exits non-zero with one line, no process of its group survives, no file appears in the socket
    folder but the server's own socket."""
    atoms, path = template
    server = FakeServer()
    before = set(os.listdir(server.folder))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mdplugin", "ipi", "--template", str(path), "--energy", "tblite", "--unix",
         "--address", server.address, "--sockets-prefix", server.prefix, "--timeout", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        server.accept()
        server.handshake()
        server.posdata(atoms.positions / BOHR)
        out = server.getforce(len(atoms))
        assert np.isfinite(out["energy"])
        server.conn.close()  # the server is gone
        server.srv.close()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2
        line = one_error_line(err)
        assert "closed the connection mid-run" in line and server.path in line
        time.sleep(0.2)
        assert not _group_alive(proc.pid), "a process of the client's group survived"
        assert set(os.listdir(server.folder)) <= before, "the client left files in the socket folder"
        assert not glob.glob(f"/tmp/mdplugin-ipi-{proc.pid}-*"), "the client left its relay folder"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        server.close()


def test_mdplugin_ipi_terminated_leaves_nothing(template):
    """`mdplugin ipi` ended by SIGTERM (a job script's kill) in the middle of a run: i-PI's driver
    process ends too and the client's relay folder is removed."""
    atoms, path = template
    server = FakeServer()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mdplugin", "ipi", "--template", str(path), "--energy", "tblite", "--unix",
         "--address", server.address, "--sockets-prefix", server.prefix, "--timeout", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        server.accept()
        server.handshake()
        assert glob.glob(f"/tmp/mdplugin-ipi-{proc.pid}-*"), "no relay folder while serving"
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        assert proc.returncode != 0
        time.sleep(0.2)
        assert not _group_alive(proc.pid), "i-PI's driver process survived the client"
        assert not glob.glob(f"/tmp/mdplugin-ipi-{proc.pid}-*"), "the client left its relay folder"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        server.close()
