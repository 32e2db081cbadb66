"""The i-PI client: i-PI's own driver, ``i-pi-py_driver -m custom -P <PES file>``, run for a server.

:func:`run_client` starts i-PI's ``i-pi-py_driver`` entry point (its public command line) with
mdplugin's PES file (:mod:`.mdplugin_pes`) and the PES parameters as ``-o key=value,...``; batch
mode, consolidated messages, shared memory and future protocol changes are i-PI's own. The driver
talks to the server through a relay in this process, which adds what the bare driver lacks:

* waiting for the server, up to ``timeout`` seconds, to accept the connection and speak (the
  driver connects once and fails at once);
* a clear end when the server goes away mid-run (the driver would read empty messages forever
  from a closed socket): the relay knows i-PI ended the run only when its last message was
  ``EXIT``, and otherwise stops the driver and says that the server closed the connection;
* a first message that is not i-PI's ``STATUS`` is refused (not an i-PI server);
* the PES's own errors (a wrong atom count, a model that fails) come back as the same one-line
  :class:`~mdplugin.core.errors.MdpluginError`; anything else the driver raised is a
  :class:`IPIConnectionError` (a protocol error) or an :class:`IPIDriverError`.

The relay copies bytes without reading them (an i-PI step is a few messages of a few kB), so
what the driver speaks is exactly what the installed i-PI speaks.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from ...core.errors import ConfigError, MdpluginError
from ...core.threads import LIBRARY_VARIABLES, threads_for

__all__ = ["run_client", "driver_command", "IPIConnectionError", "IPIDriverError", "DEFAULT_SOCKETS_PREFIX",
           "PES_FILE"]

#: i-PI's default prefix of UNIX-socket file names (``<simulation sockets_prefix=...>``)
DEFAULT_SOCKETS_PREFIX = "/tmp/ipi_"

#: the PES file i-PI's driver loads (``-m custom -P PES_FILE``)
PES_FILE = str(Path(__file__).with_name("mdplugin_pes.py"))

#: an i-PI message header: 12 characters (i-PI's ``ipi.interfaces.sockets.HDRLEN``)
_HDRLEN = 12


class IPIConnectionError(MdpluginError):
    """No i-PI server answered in time, the server went away mid-run, or it broke the protocol."""


class IPIDriverError(MdpluginError):
    """i-PI's driver process failed for a reason of its own (its traceback is printed above)."""


# ----------------------------------------------------------------------------------------------
# i-PI's driver, as a command
# ----------------------------------------------------------------------------------------------
def _driver_script() -> Path:
    """Path of i-PI's ``i-pi-py_driver`` entry point (installed with the ``ipi`` package)."""
    candidates = [Path(sys.executable).with_name("i-pi-py_driver")]
    try:
        dist = importlib.metadata.distribution("ipi")
        candidates += [Path(dist.locate_file(f)) for f in (dist.files or []) if f.name == "i-pi-py_driver"]
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - ipi is a dependency
        pass
    which = shutil.which("i-pi-py_driver")
    if which:
        candidates.append(Path(which))
    for path in candidates:
        if path.is_file():
            return path.resolve()
    raise ConfigError("cannot find i-PI's i-pi-py_driver (is the 'ipi' package installed?)")


def _option_text(options: Mapping[str, Any]) -> str:
    """``key=value,...`` for ``i-pi-py_driver -o`` (i-PI splits at commas: values may not hold one)."""
    parts = []
    for key, value in options.items():
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        if "," in text or "=" in text:
            raise ConfigError(f"{key}: {text!r} holds a ',' or '=', which i-PI's driver options cannot carry "
                              "(rename the file or folder)")
        parts.append(f"{key}={text}")
    return ",".join(parts)


def driver_command(options: Mapping[str, Any], *, unix: bool = False, address: str = "localhost",
                   port: int | None = None, sockets_prefix: str = DEFAULT_SOCKETS_PREFIX, shm: bool = False,
                   verbose: bool = False, pes_file: str | os.PathLike = PES_FILE) -> list[str]:
    """The ``i-pi-py_driver`` command that serves mdplugin's PES with ``options`` (the
    :class:`~.mdplugin_pes.MdpluginDriver` parameters) to a server at that address; ``pes_file``:
    another i-PI PES file (e.g. a subclass of the PES), with the parameters it takes."""
    cmd = [sys.executable, str(_driver_script()), "-m", "custom", "-P", str(pes_file), "-o", _option_text(options)]
    if unix or shm:
        cmd += ["-u", "-a", address, "-S", sockets_prefix]
    else:
        cmd += ["-a", address, "-p", str(port)]
    return cmd + (["--shm"] if shm else []) + (["-v"] if verbose else [])


# ----------------------------------------------------------------------------------------------
# the driver's stderr: passed on, except the traceback it may end with
# ----------------------------------------------------------------------------------------------
class _Stderr(threading.Thread):
    """Copies the driver's stderr to ours line by line, holding back a traceback (from its
    ``Traceback (most recent call last):`` line on), which :meth:`failure` reads."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream = stream
        self.traceback: list[str] = []

    def run(self) -> None:
        for line in self.stream:
            if self.traceback or line.startswith("Traceback (most recent call last):"):
                self.traceback.append(line)
            else:
                sys.stderr.write(line)
                sys.stderr.flush()

    def failure(self) -> tuple[str, str, str] | None:
        """``(exception type, message, file of the innermost frame)`` of the traceback, or None."""
        self.join(timeout=10)
        frames = [m for line in self.traceback if (m := re.match(r'\s*File "(.*)", line \d+, in ', line))]
        for line in reversed(self.traceback):
            found = re.match(r"([A-Za-z_][\w.]*)(?:: (.*))?$", line.rstrip("\n"))
            if found and not line.startswith(" "):
                return found.group(1), found.group(2) or "", frames[-1].group(1) if frames else ""
        return None


def _raise_driver_failure(stderr: _Stderr, status: int, where: str) -> None:
    """The driver process ended with ``status`` != 0: raise its error as one line."""
    failure = stderr.failure()
    if failure is None:
        raise IPIDriverError(f"i-PI's driver (mdplugin's PES) ended with status {status} and no message")
    name, message, innermost = failure
    module, _, cls_name = name.rpartition(".")
    if module.startswith("mdplugin"):
        try:
            cls = getattr(importlib.import_module(module), cls_name)
        except (ImportError, AttributeError):
            cls = None
        if isinstance(cls, type) and issubclass(cls, MdpluginError):
            raise cls(message)
    if Path(innermost).name == "i-pi-py_driver":  # raised by i-PI's loop: the server's messages
        raise IPIConnectionError(f"protocol error with the i-PI server at {where}: {name}: {message}")
    sys.stderr.write("".join(stderr.traceback))
    raise IPIDriverError(f"i-PI's driver (mdplugin's PES) failed: {name}: {message} (traceback above)")


# ----------------------------------------------------------------------------------------------
# the relay
# ----------------------------------------------------------------------------------------------
def _connect(unix: bool, address: str, port: int | None, path: str, deadline: float, where: str) -> socket.socket:
    """A socket connected to the server, retrying until ``deadline``."""
    while True:
        sock = socket.socket(socket.AF_UNIX if unix else socket.AF_INET, socket.SOCK_STREAM)
        try:
            if unix:
                sock.connect(path)
            else:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.connect((address, port))
            return sock
        except (FileNotFoundError, ConnectionRefusedError, ConnectionAbortedError) as exc:
            sock.close()
            if time.monotonic() >= deadline:
                raise IPIConnectionError(
                    f"no i-PI server answered at {where} within the timeout ({exc.strerror or exc})") from None
            time.sleep(0.05)


def _accept_driver(listener: socket.socket, proc: subprocess.Popen, stderr: _Stderr, where: str) -> socket.socket:
    """The driver's connection to the relay, once it has built its PES (models loaded, template
    evaluated); its error if it fails before."""
    while True:
        ready, _, _ = select.select([listener], [], [], 0.1)
        if ready:
            conn, _ = listener.accept()
            return conn
        status = proc.poll()
        if status is not None:
            _raise_driver_failure(stderr, status, where)


def _driver_environment() -> dict:
    """This process's environment for i-PI's driver, with the folder that holds this ``mdplugin``
    package first on its path: the driver serves the same mdplugin as the client (also from a
    checkout that is not the installed one), and the threads of step work (:mod:`mdplugin.core.threads`)."""
    root = str(Path(__file__).resolve().parents[3])
    path = [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), PYTHONUNBUFFERED="1")
    threads = threads_for("step")  # one structure per request: 1 BLAS/OpenMP thread unless the user says
    if threads is not None:
        env.update({name: str(threads) for name in LIBRARY_VARIABLES})
    return env


def _die_with_parent() -> None:
    """In the driver process (Linux): SIGTERM when this process dies, even by SIGKILL, so that a
    killed client leaves no driver behind (it would spin on its closed socket)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the relay's closed socket still ends most runs
        pass


def _terminated(signum, frame) -> None:
    """SIGTERM while serving: leave through the clean-up (the driver stopped, the relay removed)."""
    raise SystemExit(128 + signum)


def _stop(proc: subprocess.Popen) -> None:
    """End the driver process (SIGTERM, then SIGKILL)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def _relay(server: socket.socket, driver: socket.socket, deadline: float, where: str, gone: str) -> bool:
    """Copy bytes both ways until one side closes. True: the server ended the run (its last
    message was EXIT); raises when it went away otherwise, stayed silent or is not i-PI."""
    from ipi.interfaces.sockets import Message

    status, exit_msg = Message("status"), Message("exit")
    first, tail = b"", b""
    server.setblocking(False)
    driver.setblocking(False)
    while True:
        wait = max(deadline - time.monotonic(), 0.0) if len(first) < _HDRLEN else None
        readable, _, _ = select.select([server, driver], [], [], wait)
        if not readable:
            raise IPIConnectionError(f"connected to {where} but the i-PI server sent nothing within the timeout")
        if server in readable:
            try:
                data = server.recv(1 << 16)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            if not data:
                if tail == exit_msg:
                    return True
                raise IPIConnectionError(gone)
            if len(first) < _HDRLEN:
                first += data[: _HDRLEN - len(first)]
                if len(first) == _HDRLEN and first != status or len(first) < _HDRLEN and not status.startswith(first):
                    raise IPIConnectionError(f"the server at {where} sent {first!r}, not an i-PI message "
                                             "(is it an i-PI server?)")
            tail = (tail + data)[-_HDRLEN:]
            driver.setblocking(True)
            try:
                driver.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                return False  # the driver ended (its status tells why)
            driver.setblocking(False)
        if driver in readable:
            try:
                data = driver.recv(1 << 16)
            except ConnectionResetError:
                data = b""
            if not data:
                return False
            server.setblocking(True)
            try:
                server.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                if tail == exit_msg:
                    return True
                raise IPIConnectionError(gone) from None
            server.setblocking(False)


def run_client(options: Mapping[str, Any], *, unix: bool = False, address: str = "localhost",
               port: int | None = None, sockets_prefix: str = DEFAULT_SOCKETS_PREFIX, timeout: float = 60.0,
               shm: bool = False, verbose: bool = False, pes_file: str | os.PathLike = PES_FILE) -> None:
    """Serve mdplugin's PES with ``options`` (the parameters of
    :class:`~.mdplugin_pes.MdpluginDriver`: ``template``, ``energy``, ``dipole``,
    ``polarizability``, ``std``, ``calculator``, ``calculator_arg``) to an i-PI server, with i-PI's
    own driver (:func:`driver_command`) in a child process (``pes_file``: another PES file, e.g.
    a subclass of :class:`~.mdplugin_pes.MdpluginDriver`, served the same way).

    The PES is built first (models loaded, the template evaluated once: configuration errors show
    before the server is contacted); then the server has ``timeout`` seconds to accept the
    connection and send its first message. Returns when the server ends the run (its EXIT
    message). Raises the PES's own :class:`~mdplugin.core.errors.MdpluginError`, or
    :class:`IPIConnectionError` (one line) when no server answers in time, the server closes the
    connection mid-run or breaks the protocol. The driver process never outlives the call.
    """
    if not unix and not shm and port is None:
        raise ConfigError("an inet connection needs a port (--port), or use --unix for a UNIX socket")
    if (unix or shm) and port is not None:
        raise ConfigError("--port makes no sense with a UNIX socket (--unix)")
    if timeout <= 0:
        raise ConfigError(f"the timeout must be positive, got {timeout!r} s")
    unix = unix or shm
    where = f"UNIX socket {sockets_prefix}{address}" if unix else f"{address}:{port}"
    gone = (f"the i-PI server at {where} closed the connection mid-run (it died or was killed; if its "
            f"log says an extra is 'not among the quantities returned by the forcefield', its input asks "
            f"for an output this client does not send, e.g. *_std with --no-std, or a property without a model)")
    folder = tempfile.mkdtemp(prefix=f"mdplugin-ipi-{os.getpid()}-", dir="/tmp")  # short: UNIX paths <= 107 bytes
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    proc = None
    server = driver = None
    # a SIGTERM (a job script's `kill`) ends the client through its clean-up below, not around it
    previous = (signal.signal(signal.SIGTERM, _terminated)
                if threading.current_thread() is threading.main_thread() else None)
    try:
        listener.bind(os.path.join(folder, "relay"))
        listener.listen(1)
        cmd = driver_command(options, unix=True, address="relay", sockets_prefix=folder + "/", shm=shm,
                             verbose=verbose, pes_file=pes_file)
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=_driver_environment(),
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        stderr = _Stderr(proc.stderr)
        stderr.start()
        driver = _accept_driver(listener, proc, stderr, where)
        deadline = time.monotonic() + float(timeout)
        server = _connect(unix, address, port, f"{sockets_prefix}{address}", deadline, where)
        ended = _relay(server, driver, deadline, where, gone)  # False: the driver closed its end first
        driver.close()
        try:
            status = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            why = "the server's EXIT" if ended else "closing its connection"
            raise IPIDriverError(f"i-PI's driver did not end within 60 s of {why}") from None
        if status != 0:
            _raise_driver_failure(stderr, status, where)
    finally:
        for sock in (server, driver, listener):
            if sock is not None:
                sock.close()
        if proc is not None:
            _stop(proc)
        shutil.rmtree(folder, ignore_errors=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
