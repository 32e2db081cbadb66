"""``mdplugin ipi``: options -> the PES parameters -> :func:`~mdplugin.engines.ipi.run_client`.

The on-the-fly option (``--active RUN_DIR``) is wired here, in the command layer: the PES serves
the calculator that the factory :class:`mdplugin.active.ActiveCalculator` makes of the run folder
(in i-PI's driver process), and the engines layer never imports ``active``.
"""

from __future__ import annotations

from ..core.errors import ConfigError
from ..engines.ipi import DEFAULT_SOCKETS_PREFIX, run_client

#: the factory of the on-the-fly calculator, called with the run folder
ACTIVE_CALCULATOR = "mdplugin.active:ActiveCalculator"


def pes_options(args) -> dict:
    """The :class:`~mdplugin.engines.ipi.MdpluginDriver` parameters of ``mdplugin ipi``'s options."""
    options = {"template": args.template, "energy": args.energy, "dipole": args.dipole,
               "polarizability": args.polarizability, "std": getattr(args, "std", True),
               "std_every": getattr(args, "std_every", 10)}
    if getattr(args, "active", None):  # on-the-fly active learning: the run folder's models and oracle
        options.update(calculator=ACTIVE_CALCULATOR, calculator_arg=str(args.active))
    return options


def run_ipi_command(args) -> int:
    """``mdplugin ipi``: serve the PES built from the command line until i-PI ends the run."""
    shm = getattr(args, "shm", False)
    unix = args.unix or shm
    if unix and args.port is not None:
        raise ConfigError("--port makes no sense with --unix (the address is the socket name)")
    if not unix and args.port is None:
        raise ConfigError("give --port for a TCP connection, or --unix for a UNIX socket")
    run_client(pes_options(args), unix=unix, address=args.address, port=args.port,
               sockets_prefix=getattr(args, "sockets_prefix", DEFAULT_SOCKETS_PREFIX),
               timeout=args.timeout, shm=shm, verbose=getattr(args, "verbose", False))
    return 0
