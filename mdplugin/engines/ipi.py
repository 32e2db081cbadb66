"""The i-PI client: ML energies, forces, dipoles and polarizabilities served to an i-PI server.

Two pieces, both on i-PI's own code:

* :class:`MdpluginDriver`, an i-PI PES (a subclass of ``ipi.pes._ase.ASEDriver``, itself a
  ``ipi.pes.dummy.Dummy_driver``). i-PI calls it with a cell and positions in bohr; it evaluates
  an :class:`~mdplugin.engines.ase.MLCalculator` on the template structure and returns

  * the energy in Hartree, forces (n_atoms, 3) in Hartree/bohr, the virial (3, 3) in Hartree
    (zero: the models describe isolated molecules, so the energy does not depend on the cell);
  * an *extras* JSON string in **atomic units**: ``dipole`` (3, e·bohr), ``polarizability``
    (9, bohr³, row-major), and the uncertainties ``dipole_std`` (3, e·bohr),
    ``polarizability_std`` (9, bohr³) and ``energy_std`` (Hartree) when the models provide them.
    (i-PI's own ``ASEDriver`` would pass extras through in ASE units; here they are converted.)

* :func:`run_client`, which connects the PES to a server through **i-PI's own driver loop**
  (``run_driver`` of the ``i-pi-py_driver`` script: batch mode, consolidated messages, shared
  memory all come from i-PI). mdplugin only adds what that loop lacks: waiting for the server
  up to a timeout, and a clear error when the server disappears mid-run (the bare loop would
  spin forever on a closed socket).

Ways to run it::

    i-pi-py_driver -m custom -P drivers/mdplugin_driver.py -a NAME -u \\
        -o template=start.xyz,energy=tblite,dipole=dipole.npz,polarizability=alpha.npz
    mdplugin ipi --template start.xyz --energy tblite --dipole dipole.npz --unix --address NAME
    mdplugin ipi --template start.xyz --energy energy.npz --address 127.0.0.1 --port 31415
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import json
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from ase.calculators.calculator import all_changes
from ipi.pes._ase import ASEDriver

from ..core.errors import ConfigError, MdpluginError
from ..core.units import AU_PER_ASE, BOHR

if TYPE_CHECKING:  # pragma: no cover
    from .ase import MLCalculator

#: i-PI's default prefix of UNIX-socket file names (``<simulation sockets_prefix=...>``)
DEFAULT_SOCKETS_PREFIX = "/tmp/ipi_"

#: extras key -> factor ASE -> atomic units (:data:`mdplugin.core.units.AU_PER_ASE`)
EXTRAS_UNITS = {
    "dipole": AU_PER_ASE["dipole"],
    "polarizability": AU_PER_ASE["polarizability"],
    "dipole_std": AU_PER_ASE["dipole"],
    "polarizability_std": AU_PER_ASE["polarizability"],
    "energy_std": AU_PER_ASE["energy"],
}


class IPIConnectionError(MdpluginError):
    """No i-PI server answered in time, or the server went away mid-run."""


# ----------------------------------------------------------------------------------------------
# the PES
# ----------------------------------------------------------------------------------------------
def _is_set(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and value.strip().lower() in ("", "none"))


def make_calculator(energy: Any = "tblite", dipole: Any = None, polarizability: Any = None) -> "MLCalculator":
    """The ASE calculator behind the PES: ``MLCalculator(energy=..., dipole=..., polarizability=...)``.

    Each slot takes a model file path or a loaded model; ``energy`` also takes ``"tblite"`` or
    any ASE calculator.
    """
    from .ase import MLCalculator

    kwargs = {"energy": energy}
    if _is_set(dipole):
        kwargs["dipole"] = dipole
    if _is_set(polarizability):
        kwargs["polarizability"] = polarizability
    return MLCalculator(**kwargs)


class MdpluginDriver(ASEDriver):
    """i-PI PES serving mdplugin models (energy, forces, dipole, polarizability) in atomic units.

    Parameters (``i-pi-py_driver -o key=value,...`` or ``<ffdirect><parameters>``):
        template : structure file (any ASE format) giving the atom types, in i-PI's atom order.
        energy : energy model file, ``"tblite"``, or (from Python) any ASE calculator.
        dipole, polarizability : model files or loaded models (optional).
        std : also compute and send the models' uncertainties ``*_std`` (default true).
        calculator : (Python only) an ASE calculator to use instead of building ``MLCalculator``.
        verbose : i-PI's verbosity flag.

    ``compute_structure(cell, pos)`` takes the cell (3, 3, columns are cell vectors) and positions
    (n_atoms, 3) in bohr and returns ``(energy [Ha], forces (n_atoms, 3) [Ha/bohr],
    virial (3, 3) [Ha], extras JSON)``; see the module docstring for the extras.
    """

    def __init__(self, template, energy="tblite", dipole=None, polarizability=None, std=True, calculator=None,
                 *args, **kwargs):
        self.std = bool(std)
        self.energy = energy
        self.dipole = dipole
        self.polarizability = polarizability
        self.calculator = calculator
        super().__init__(template, True, True, False, *args, **kwargs)

    def check_parameters(self) -> None:
        """Read the template, build the calculator and evaluate the template once (fails fast)."""
        from ase.io import read

        try:
            self.template_ase = read(self.template)
        except FileNotFoundError:
            raise ConfigError(f"{self.template}: template structure file not found") from None
        except Exception as exc:  # ASE raises many kinds of errors for unreadable files
            raise ConfigError(f"{self.template}: cannot read the template structure ({exc})") from None
        if self.calculator is not None:
            given = [f"--{n}" for n in ("energy", "dipole", "polarizability")
                     if _is_set(getattr(self, n)) and not (n == "energy" and self.energy == "tblite")]
            if given:
                raise ConfigError(f"{', '.join(given)}: not with a calculator of its own (--active serves the "
                                  "run folder's models; leave these out)")
            self.ase_calculator = self.calculator
        else:
            if not _is_set(self.energy):
                raise ConfigError("the i-PI driver needs an energy model (a model file or 'tblite')")
            self.ase_calculator = make_calculator(self.energy, self.dipole, self.polarizability)
        implemented = set(getattr(self.ase_calculator, "implemented_properties", ()))
        missing = {"energy", "forces"} - implemented
        if missing:
            raise ConfigError(f"the energy calculator provides no {' or '.join(sorted(missing))}")
        wanted = ["energy", "forces", "dipole", "polarizability"]
        if self.std:
            wanted += ["energy_std", "dipole_std", "polarizability_std"]
        self.properties = [p for p in wanted if p in implemented]
        self._atoms = self.template_ase.copy()
        self._natoms = len(self._atoms)
        self._periodic = bool(self._atoms.pbc.any())
        self._atoms.calc = self.ase_calculator
        # one evaluation of the template: configuration errors show before i-PI is contacted,
        # and lazily built caches are warm for the first step
        self._evaluate(self._atoms)

    def _evaluate(self, atoms) -> dict:
        """The calculator's results at ``atoms``, all properties in one call.

        Between two i-PI requests only the positions (and the cell of a periodic template) change,
        so the calculator is told exactly that: ASE's general ``check_state`` comparison of every
        array costs more than the rest of this PES together. Same positions: cached results.
        """
        calc = self.ase_calculator
        last = calc.atoms
        if last is None:
            changes = list(all_changes)
        else:
            changes = ["positions"] if not np.array_equal(last.positions, atoms.positions) else []
            if self._periodic and not np.array_equal(last.cell.array, atoms.cell.array):
                changes.append("cell")
            if not changes and all(name in calc.results for name in self.properties):
                return calc.results
        calc.reset()
        calc.calculate(atoms, self.properties, changes)
        return calc.results

    def compute_structure(self, cell: np.ndarray, pos: np.ndarray):
        """Energy [Ha], forces [Ha/bohr], virial [Ha] and extras (JSON, atomic units) at ``pos`` [bohr]."""
        pos = np.asarray(pos, dtype=np.float64).reshape(-1, 3)
        if len(pos) != self._natoms:
            raise ConfigError(
                f"i-PI sent {len(pos)} atoms but the template {self.template} has {self._natoms}"
            )
        atoms = self._atoms
        atoms.positions = pos * BOHR
        if self._periodic:
            atoms.cell[:] = np.asarray(cell, dtype=np.float64).T * BOHR
        return self.post_process(self._evaluate(atoms), atoms)

    def post_process(self, results: dict, structure=None):
        """Turn ASE-unit results into i-PI's return tuple in atomic units."""
        energy = float(results["energy"]) * AU_PER_ASE["energy"]
        forces = np.asarray(results["forces"], dtype=np.float64).reshape(-1, 3) * AU_PER_ASE["forces"]
        virial = np.zeros((3, 3), dtype=np.float64)
        return energy, forces, virial, extras_json(results)


def extras_json(results: dict) -> str:
    """The extras JSON string (atomic units) of a calculator's ASE-unit ``results``.

    Keys: ``dipole`` (3, e·bohr), ``polarizability`` (9, bohr³, row-major), ``dipole_std`` (3),
    ``polarizability_std`` (9), ``energy_std`` (Hartree), each only when present in ``results``.
    """
    extras = {}
    for key, factor in EXTRAS_UNITS.items():
        value = results.get(key)
        if value is None:
            continue
        value = np.asarray(value, dtype=np.float64) * factor
        extras[key] = value.ravel().tolist() if value.ndim else float(value)
    return json.dumps(extras) if extras else ""


# ----------------------------------------------------------------------------------------------
# i-PI's driver loop, with a patient connection and a clear end
# ----------------------------------------------------------------------------------------------
_DRIVER_SCRIPT: Path | None = None


def _driver_script() -> Path:
    """Path of i-PI's ``i-pi-py_driver`` script (it holds the driver loop ``run_driver``)."""
    candidates = []
    try:
        dist = importlib.metadata.distribution("ipi")
        candidates += [Path(dist.locate_file(f)) for f in (dist.files or []) if f.name == "i-pi-py_driver"]
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - ipi is a dependency
        pass
    candidates.append(Path(sys.executable).with_name("i-pi-py_driver"))
    which = shutil.which("i-pi-py_driver")
    if which:
        candidates.append(Path(which))
    for path in candidates:
        if path.is_file():
            return path.resolve()
    raise ConfigError("cannot find i-PI's i-pi-py_driver script (is the 'ipi' package installed?)")


def ipi_driver_loop() -> Callable:
    """i-PI's own ``run_driver(unix, address, port, driver, f_verbose, sockets_prefix, shm)``.

    Loaded from the ``i-pi-py_driver`` script as a fresh private module on every call (so each
    client has its own copy to hand its socket factory to), so mdplugin speaks exactly the
    protocol of the installed i-PI.
    """
    global _DRIVER_SCRIPT
    if _DRIVER_SCRIPT is None:
        _DRIVER_SCRIPT = _driver_script()
    loader = importlib.machinery.SourceFileLoader("_mdplugin_ipi_py_driver", str(_DRIVER_SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    if not callable(getattr(module, "run_driver", None)):
        raise ConfigError(f"{_DRIVER_SCRIPT}: no run_driver() in i-PI's driver script (unsupported i-PI version)")
    return module.run_driver


#: length of an i-PI message header
HDRLEN = 12
#: headers i-PI's standard protocol sends to a driver (used when the loop's own cannot be read)
_STANDARD_HEADERS = ("STATUS", "INIT", "POSDATA", "GETFORCE", "EXIT")


def _known_headers(loop: Callable) -> frozenset[bytes]:
    """Every header the installed driver loop knows: the upper-case words among its constants
    (so a protocol extension in a newer i-PI is accepted without a change here)."""
    words = {c for c in loop.__code__.co_consts
             if isinstance(c, str) and c.isalpha() and c.isupper() and len(c) <= HDRLEN}
    words |= set(_STANDARD_HEADERS)
    return frozenset(w.ljust(HDRLEN).encode() for w in words)


class _ServerGone(ConnectionError):
    """The server closed the connection."""


class _DriverFailure(Exception):
    """Carries an exception raised by the PES itself through i-PI's loop (not a protocol fault)."""

    def __init__(self, original: BaseException):
        super().__init__(str(original))
        self.original = original


class _Guarded:
    """The PES as i-PI's loop sees it: exceptions it raises are marked as the PES's own."""

    def __init__(self, driver):
        self.driver = driver

    def __call__(self, cell, pos):
        try:
            return self.driver(cell, pos)
        except Exception as exc:
            raise _DriverFailure(exc) from exc


class _ClientSocket:
    """A client socket for i-PI's driver loop: patient ``connect``, loud end of stream.

    * ``connect`` retries (fresh socket each time) until ``deadline`` and then raises
      :class:`IPIConnectionError`; after connecting, the first message must arrive before the
      deadline too.
    * ``recv``/``recv_into`` raise when the server has closed the connection, where the bare loop
      would read empty messages forever.
    * ``recv`` (the loop reads only headers with it) reads a whole header and refuses one the loop
      does not know, which the bare loop would skip and then wait forever.
    Everything else is the plain socket's.
    """

    def __init__(self, family: int, kind: int, deadline: float, where: str, headers: frozenset[bytes]):
        self._family, self._kind = family, kind
        self._deadline, self._where, self._headers = deadline, where, headers
        self._options: list[tuple] = []
        self._sock = socket.socket(family, kind)
        self._waiting_first = True

    def setsockopt(self, *option) -> None:
        self._options.append(option)
        self._sock.setsockopt(*option)

    def connect(self, address) -> None:
        while True:
            try:
                self._sock.connect(address)
                break
            except (FileNotFoundError, ConnectionRefusedError, ConnectionAbortedError) as exc:
                self._sock.close()
                if time.monotonic() >= self._deadline:
                    raise IPIConnectionError(
                        f"no i-PI server answered at {self._where} within the timeout ({exc.strerror or exc})"
                    ) from None
                time.sleep(0.05)
                self._sock = socket.socket(self._family, self._kind)
                for option in self._options:
                    self._sock.setsockopt(*option)
        self._sock.settimeout(max(self._deadline - time.monotonic(), 0.01))

    def _first_message(self) -> None:
        self._waiting_first = False
        self._sock.settimeout(None)

    def recv(self, n: int, *flags) -> bytes:
        try:
            data = self._sock.recv(n, *flags)
            while data and len(data) < n:  # a header split across packets
                more = self._sock.recv(n - len(data), *flags)
                if not more:
                    break
                data += more
        except socket.timeout:
            if self._waiting_first:
                raise IPIConnectionError(
                    f"connected to {self._where} but the i-PI server sent nothing within the timeout"
                ) from None
            raise
        if len(data) < n:
            raise _ServerGone()
        if n == HDRLEN and data not in self._headers:
            raise IPIConnectionError(
                f"the i-PI server at {self._where} sent an unknown message {data.rstrip()!r} "
                f"(not the i-PI protocol, or an i-PI newer than this driver loop)"
            )
        if self._waiting_first:
            self._first_message()
        return data

    def recv_into(self, buffer, nbytes: int = 0, *flags) -> int:
        got = self._sock.recv_into(buffer, nbytes, *flags)
        if got == 0 and (nbytes or len(buffer)):
            raise _ServerGone()
        return got

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


class _SocketModule:
    """Stands in for the ``socket`` module inside i-PI's driver loop (creates :class:`_ClientSocket`)."""

    def __init__(self, deadline: float, where: str, headers: frozenset[bytes]):
        self._deadline, self._where, self._headers = deadline, where, headers
        self.last: _ClientSocket | None = None

    def socket(self, family=socket.AF_INET, kind=socket.SOCK_STREAM) -> _ClientSocket:
        self.last = _ClientSocket(family, kind, self._deadline, self._where, self._headers)
        return self.last

    def __getattr__(self, name: str):
        return getattr(socket, name)


def run_client(driver, *, unix: bool = False, address: str = "localhost", port: int | None = None,
               sockets_prefix: str = DEFAULT_SOCKETS_PREFIX, timeout: float = 60.0, shm: bool = False,
               verbose: bool = False) -> None:
    """Serve ``driver`` (an i-PI PES) to an i-PI server with i-PI's own driver loop.

    Waits up to ``timeout`` seconds for the server to accept the connection and send its first
    message; returns when the server ends the run (its EXIT message). Raises
    :class:`IPIConnectionError` (one-line message) when no server answers in time or the server
    closes the connection mid-run.
    """
    if not unix and not shm and port is None:
        raise ConfigError("an inet connection needs a port (--port), or use --unix for a UNIX socket")
    if (unix or shm) and port is not None:
        raise ConfigError("--port makes no sense with a UNIX socket (--unix)")
    if timeout <= 0:
        raise ConfigError(f"the timeout must be positive, got {timeout!r} s")
    where = f"UNIX socket {sockets_prefix}{address}" if (unix or shm) else f"{address}:{port}"
    loop = ipi_driver_loop()
    sockets = _SocketModule(time.monotonic() + timeout, where, _known_headers(loop))
    loop.__globals__["socket"] = sockets  # this client's private copy of i-PI's script
    gone = (f"the i-PI server at {where} closed the connection mid-run (it died or was killed; if its "
            f"log says an extra is 'not among the quantities returned by the forcefield', its input asks "
            f"for an output this client does not send, e.g. *_std with --no-std, or a property without a model)")
    try:
        loop(unix=unix, address=address, port=port if port is not None else 0, driver=_Guarded(driver),
             f_verbose=verbose, sockets_prefix=sockets_prefix, shm=shm)
    except _DriverFailure as failure:  # the PES's own error, as it was raised
        raise failure.original from None
    except MdpluginError:
        raise
    except (_ServerGone, ConnectionResetError, BrokenPipeError):
        raise IPIConnectionError(gone) from None
    except RuntimeError as exc:
        if "disconnected" in str(exc).lower():
            raise IPIConnectionError(gone) from None
        raise IPIConnectionError(f"protocol error with the i-PI server at {where}: {exc}") from None
    except Exception as exc:  # malformed messages make i-PI's loop fail in many ways
        text = " ".join(str(exc).split())
        raise IPIConnectionError(
            f"protocol error with the i-PI server at {where}: {type(exc).__name__}: {text}") from None
    finally:
        loop.__globals__["socket"] = socket
        if sockets.last is not None:
            sockets.last.close()
