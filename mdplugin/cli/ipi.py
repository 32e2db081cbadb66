"""``mdplugin ipi``: options -> :class:`~mdplugin.engines.ipi.MdpluginDriver` -> :func:`~mdplugin.engines.ipi.run_client`.

The on-the-fly option (``--active RUN_DIR``) is wired here, in the command layer: the PES of
:mod:`mdplugin.engines.ipi` then serves an :class:`~mdplugin.active.ActiveCalculator`, and the
engines layer never imports ``active``.
"""

from __future__ import annotations

from ..core.errors import ConfigError
from ..engines.ipi import DEFAULT_SOCKETS_PREFIX, MdpluginDriver, run_client


def run_ipi_command(args) -> int:
    """``mdplugin ipi``: build the PES from the command line and serve it until i-PI ends the run."""
    shm = getattr(args, "shm", False)
    unix = args.unix or shm
    if unix and args.port is not None:
        raise ConfigError("--port makes no sense with --unix (the address is the socket name)")
    if not unix and args.port is None:
        raise ConfigError("give --port for a TCP connection, or --unix for a UNIX socket")
    calculator = None
    if getattr(args, "active", None):  # on-the-fly active learning
        from ..active import ActiveCalculator

        calculator = ActiveCalculator(args.active)
    driver = MdpluginDriver(template=args.template, energy=args.energy, dipole=args.dipole,
                            polarizability=args.polarizability, std=getattr(args, "std", True),
                            calculator=calculator)
    run_client(driver, unix=unix, address=args.address, port=args.port,
               sockets_prefix=getattr(args, "sockets_prefix", DEFAULT_SOCKETS_PREFIX),
               timeout=args.timeout, shm=shm, verbose=getattr(args, "verbose", False))
    return 0
