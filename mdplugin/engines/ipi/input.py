"""i-PI input files for runs served by mdplugin: one writer for the ``<simulation>`` XML.

:func:`input_xml` returns the text of an i-PI input and :func:`write_input` writes it (atomically):
one ``<ffsocket>`` named ``mdplugin`` (the client connects to its ``address``), one system
started from a structure file (thermal velocities) or from an i-PI checkpoint, a molecular-dynamics
motion, and outputs of properties, positions and the extras mdplugin's PES sends (``dipole``,
``polarizability`` and their ``*_std``), one file per bead. Ensembles:

=========  =====================================================================================
``nve``    velocity Verlet, no thermostat
``nvt``    SVR thermostat (one bead) or PILE-L (several beads), τ = 100 fs unless given
``trpmd``  thermostatted ring-polymer MD: ``nvt`` dynamics with PILE-G, τ = 1000 fs on the
           centroid and λ = 0.5 of critical damping on the internal modes; needs ``n_beads`` > 1
``npt``    isotropic barostat (Bussi-Zykova-Parrinello) with a Langevin thermostat; needs ``pbc``
=========  =====================================================================================

Units are i-PI's names in the XML (``femtosecond``, ``kelvin``, ``gigapascal``): i-PI converts them.
The names of tags and attributes are those of i-PI's input reference
(``ipi.inputs.simulation.InputSimulation`` and the classes below it); the test parses every
variant with i-PI's own reader.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ...core.atomicio import atomic_write
from ...core.errors import ConfigError
from .mdplugin_pes import EXTRAS_UNITS

__all__ = ["Thermostat", "Barostat", "Socket", "ENSEMBLES", "DEFAULT_PROPERTIES", "input_xml", "write_input"]

#: the motions :func:`input_xml` writes
ENSEMBLES = ("nve", "nvt", "trpmd", "npt")

#: the columns of ``<prefix>.out`` unless told otherwise (i-PI's property names, units in braces)
DEFAULT_PROPERTIES = ("step", "time{picosecond}", "conserved{electronvolt}", "temperature{kelvin}",
                      "potential{electronvolt}")

#: the name of the forcefield in the input (the client only needs the socket's address)
FORCEFIELD = "mdplugin"


@dataclass(frozen=True)
class Thermostat:
    """An i-PI ``<thermostat>``: ``mode`` one of i-PI's (``svr``, ``langevin``, ``pile_l``,
    ``pile_g``, ...), time constant ``tau_fs`` (fs), ``pile_lambda``: the damping of the internal
    ring-polymer modes, in units of critical damping (PILE only; i-PI's default 1 when None)."""

    mode: str
    tau_fs: float
    pile_lambda: float | None = None


@dataclass(frozen=True)
class Barostat:
    """An i-PI ``<barostat>`` for ``npt``: ``mode`` (``isotropic``, ``flexible``, ...), piston time
    constant ``tau_fs`` (fs), the thermostat of the cell, and the external pressure (GPa)."""

    mode: str = "isotropic"
    tau_fs: float = 200.0
    thermostat: Thermostat = field(default_factory=lambda: Thermostat("langevin", 100.0))
    pressure_GPa: float = 0.0


@dataclass(frozen=True)
class Socket:
    """The ``<ffsocket>`` i-PI opens: ``mode`` ``unix`` (the file ``<sockets_prefix><address>``)
    or ``inet`` (``address`` a host, with a ``port``); ``latency_s``: how long i-PI sleeps between
    polls of the socket (s); ``batch_size``: structures per message (i-PI's batch mode, None: 1)."""

    address: str
    mode: str = "unix"
    port: int | None = None
    latency_s: float = 1e-4
    batch_size: int | None = None


def _default_thermostat(ensemble: str, n_beads: int) -> Thermostat | None:
    if ensemble == "nve":
        return None
    if ensemble == "trpmd":
        return Thermostat("pile_g", 1000.0, pile_lambda=0.5)
    if ensemble == "npt":
        return Thermostat("langevin", 100.0)
    return Thermostat("svr" if n_beads == 1 else "pile_l", 100.0)


def _positive(name: str, value, integer: bool = False) -> None:
    bad = not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0
    if integer and not bad:
        bad = int(value) != value
    if bad:
        raise ConfigError(f"{name} must be a positive {'whole number' if integer else 'number'}, got {value!r}")


def _check(*, steps, ensemble, n_beads, dt_fs, temperature_K, socket, pbc, thermostat, barostat, extras,
           std_stride, strides) -> None:
    """One-line errors for inputs i-PI would refuse late (or run wrongly)."""
    if ensemble not in ENSEMBLES:
        raise ConfigError(f"ensemble {ensemble!r}: not one of {', '.join(ENSEMBLES)}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ConfigError(f"steps must be a whole number >= 0, got {steps!r}")
    _positive("n_beads", n_beads, integer=True)
    _positive("dt_fs", dt_fs)
    _positive("temperature_K", temperature_K)
    for name, value in strides.items():
        if value is not None:
            _positive(name, value, integer=True)
    if ensemble == "trpmd" and n_beads < 2:
        raise ConfigError("ensemble 'trpmd' needs a ring polymer: n_beads > 1 (--beads)")
    if ensemble == "npt" and not pbc:
        raise ConfigError("ensemble 'npt' changes the cell: it needs a periodic system (pbc=True, --pbc)")
    if ensemble == "nve" and thermostat is not None:
        raise ConfigError("ensemble 'nve' takes no thermostat")
    if barostat is not None and ensemble != "npt":
        raise ConfigError(f"a barostat goes with ensemble 'npt', not {ensemble!r}")
    if socket.mode not in ("unix", "inet"):
        raise ConfigError(f"socket mode {socket.mode!r}: not 'unix' or 'inet'")
    if socket.mode == "inet" and socket.port is None:
        raise ConfigError(f"an inet socket ({socket.address}) needs a port")
    if socket.mode == "unix" and socket.port is not None:
        raise ConfigError(f"a port ({socket.port}) makes no sense with a UNIX socket")
    if socket.batch_size is not None:
        _positive("batch_size", socket.batch_size, integer=True)
    unknown = [e for e in extras if e not in EXTRAS_UNITS or e.endswith("_std")]
    if unknown:
        raise ConfigError(f"extras {', '.join(map(repr, unknown))}: mdplugin's PES sends "
                          f"{', '.join(e for e in EXTRAS_UNITS if not e.endswith('_std'))} "
                          "(and their *_std with std_stride)")
    if std_stride is not None and not extras:
        raise ConfigError("std_stride writes the uncertainties of the extras: give extras too")


def _sub(parent: ET.Element, tag: str, text=None, **attrib) -> ET.Element:
    """A child element; ``text`` as i-PI reads it (booleans True/False, numbers by repr)."""
    node = ET.SubElement(parent, tag, {k: str(v) for k, v in attrib.items()})
    if text is not None:
        node.text = f" {text} "
    return node


def _thermostat(parent: ET.Element, thermostat: Thermostat) -> None:
    node = _sub(parent, "thermostat", mode=thermostat.mode)
    _sub(node, "tau", thermostat.tau_fs, units="femtosecond")
    if thermostat.pile_lambda is not None:
        _sub(node, "pile_lambda", thermostat.pile_lambda)


def input_xml(*, init: str | os.PathLike, steps: int, socket: Socket | str, ensemble: str = "nvt",
              n_beads: int = 1, dt_fs: float = 0.5, temperature_K: float = 300.0, pbc: bool = False,
              thermostat: Thermostat | None = None, barostat: Barostat | None = None,
              init_mode: str = "ase", fixcom: bool | None = None, seed: int = 31415,
              extras: Sequence[str] = ("dipole", "polarizability"), extras_stride: int = 1,
              std_stride: int | None = None, positions_stride: int | None = 1,
              properties: Sequence[str] = DEFAULT_PROPERTIES, properties_stride: int = 1,
              checkpoint_stride: int | None = None, prefix: str = "sim", sockets_prefix: str | None = None,
              verbosity: str = "low", safe_stride: int = 1000) -> str:
    """The text of an i-PI input (``<simulation>``) of ``steps`` MD steps served by mdplugin.

    * ``init``: the start structure (``init_mode`` ``ase``: any file ASE reads, positions in Å, the
      cell from the file; velocities drawn at ``temperature_K``), or an i-PI checkpoint
      (``init_mode='chk'``: positions, momenta and cell from it, no new velocities);
    * ``socket``: a :class:`Socket`, or the address of a UNIX socket; ``sockets_prefix``: i-PI's
      prefix of UNIX-socket files (None: i-PI's ``/tmp/ipi_``); ``pbc``: i-PI wraps the positions
      it sends into the cell (condensed phase) — False for a molecule in a box;
    * ``ensemble``: one of :data:`ENSEMBLES` (module docstring); ``thermostat``/``barostat``
      replace the defaults of the ensemble; ``dt_fs``: time step (fs); ``temperature_K``: the
      thermostat's target (K); ``n_beads``: path-integral beads; ``fixcom``: i-PI removes the
      centre-of-mass motion (None: i-PI's default, True);
    * outputs, files ``<prefix>.<name>``: ``properties`` every ``properties_stride`` steps
      (``<prefix>.out``), positions (``pos_<bead>.extxyz``, Å) every ``positions_stride`` steps
      (None: none), each of ``extras`` (``dipole`` e·bohr, ``polarizability`` bohr³, 9 numbers
      row-major) to ``<prefix>.<extra>_<bead>`` every ``extras_stride`` steps, their ``*_std`` to
      ``<prefix>.std_<bead>`` every ``std_stride`` steps (None: not written; the client's
      ``--std-every`` should equal it), an i-PI checkpoint ``<prefix>.chk`` every
      ``checkpoint_stride`` steps (None: none);
    * ``seed``: i-PI's random numbers; ``verbosity``, ``safe_stride``: i-PI's log level and how
      often it writes its RESTART file.

    Raises :class:`~mdplugin.core.errors.ConfigError` (one line) on a setting i-PI would refuse
    or run wrongly (e.g. ``trpmd`` with one bead, ``npt`` of a molecule, an extra the PES does
    not send).
    """
    socket = Socket(socket) if isinstance(socket, str) else socket
    extras = tuple(extras)
    _check(steps=steps, ensemble=ensemble, n_beads=n_beads, dt_fs=dt_fs, temperature_K=temperature_K,
           socket=socket, pbc=pbc, thermostat=thermostat, barostat=barostat, extras=extras,
           std_stride=std_stride, strides={"extras_stride": extras_stride, "std_stride": std_stride,
                                           "positions_stride": positions_stride,
                                           "properties_stride": properties_stride,
                                           "checkpoint_stride": checkpoint_stride, "safe_stride": safe_stride})
    if thermostat is None:
        thermostat = _default_thermostat(ensemble, n_beads)
    if ensemble == "npt" and barostat is None:
        barostat = Barostat()

    attrib = {"verbosity": verbosity, "safe_stride": safe_stride}
    if sockets_prefix is not None:
        attrib["sockets_prefix"] = sockets_prefix
    root = ET.Element("simulation", {k: str(v) for k, v in attrib.items()})

    output = _sub(root, "output", prefix=prefix)
    _sub(output, "properties", f"[ {', '.join(properties)} ]", stride=properties_stride, filename="out")
    if positions_stride is not None:
        _sub(output, "trajectory", "positions", filename="pos", stride=positions_stride, format="ase")
    for extra in extras:
        _sub(output, "trajectory", "extras", filename=extra, stride=extras_stride, extra_type=extra)
    if std_stride is not None:
        _sub(output, "trajectory", "extras", filename="std", stride=std_stride,
             extra_type=",".join(f"{e}_std" for e in extras))
    if checkpoint_stride is not None:
        _sub(output, "checkpoint", filename="chk", stride=checkpoint_stride)
    _sub(root, "total_steps", steps)
    _sub(_sub(root, "prng"), "seed", seed)

    ff = _sub(root, "ffsocket", name=FORCEFIELD, mode=socket.mode, pbc=str(bool(pbc)).lower())
    _sub(ff, "address", socket.address)
    if socket.port is not None:
        _sub(ff, "port", socket.port)
    _sub(ff, "latency", socket.latency_s)
    if socket.batch_size is not None:
        _sub(ff, "batch_size", socket.batch_size)

    system = _sub(root, "system")
    initialize = _sub(system, "initialize", nbeads=n_beads)
    _sub(initialize, "file", os.fspath(init), mode=init_mode)
    if init_mode != "chk":
        _sub(initialize, "velocities", temperature_K, mode="thermal", units="kelvin")
    _sub(_sub(system, "forces"), "force", forcefield=FORCEFIELD)
    motion = _sub(system, "motion", mode="dynamics")
    if fixcom is not None:
        _sub(motion, "fixcom", fixcom)
    dynamics = _sub(motion, "dynamics", mode="nvt" if ensemble == "trpmd" else ensemble)
    _sub(dynamics, "timestep", dt_fs, units="femtosecond")
    if barostat is not None:
        baro = _sub(dynamics, "barostat", mode=barostat.mode)
        _sub(baro, "tau", barostat.tau_fs, units="femtosecond")
        _thermostat(baro, barostat.thermostat)
    if thermostat is not None:
        _thermostat(dynamics, thermostat)
    ens = _sub(system, "ensemble")
    _sub(ens, "temperature", temperature_K, units="kelvin")
    if barostat is not None:
        _sub(ens, "pressure", barostat.pressure_GPa, units="gigapascal")

    ET.indent(root, "  ")
    return ET.tostring(root, encoding="unicode") + "\n"


def write_input(path: str | os.PathLike, **settings) -> Path:
    """Write :func:`input_xml` ``(**settings)`` to ``path`` (atomically); returns the path."""
    text = input_xml(**settings)
    path = Path(path)
    with atomic_write(path) as handle:
        handle.write(text)
    return path
