"""``mdplugin ipi-input``: options -> :func:`~mdplugin.engines.ipi.write_input`, and the
``mdplugin ipi`` command that serves the input it wrote."""

from __future__ import annotations

import shlex

from ..core.errors import ConfigError
from ..engines.ipi import DEFAULT_SOCKETS_PREFIX, Barostat, Socket, write_input


def run_ipi_input_command(args) -> int:
    """Write the i-PI input of the options to ``args.output``; print how to serve it."""
    if args.unix and args.port is not None:
        raise ConfigError("--port makes no sense with --unix (the address is the socket name)")
    if not args.unix and args.port is None:
        raise ConfigError("give --port for a TCP socket, or --unix for a UNIX socket")
    extras = tuple(e for e in args.extras.split(",") if e) if args.extras else ()
    barostat = Barostat(pressure_GPa=args.pressure) if args.ensemble == "npt" else None
    if args.pressure != 0.0 and barostat is None:
        raise ConfigError(f"--pressure goes with --ensemble npt, not {args.ensemble}")
    prefix = None if args.sockets_prefix == DEFAULT_SOCKETS_PREFIX else args.sockets_prefix
    std_stride = args.every if args.std and extras else None
    path = write_input(args.output, init=args.start, steps=args.steps, ensemble=args.ensemble, n_beads=args.beads,
                       dt_fs=args.dt, temperature_K=args.temperature, pbc=args.pbc, barostat=barostat,
                       socket=Socket(args.address, mode="unix" if args.unix else "inet", port=args.port),
                       sockets_prefix=prefix, seed=args.seed, extras=extras, std_stride=std_stride,
                       properties_stride=args.every, positions_stride=args.every,
                       checkpoint_stride=args.checkpoint, prefix=args.prefix)
    client = ["mdplugin", "ipi", "--template", args.start, "--energy", "ENERGY"]
    client += [item for extra in extras for item in (f"--{extra}", f"{extra.upper()}_MODEL")]
    client += ["--unix", "--address", args.address] if args.unix else ["--address", args.address, "--port",
                                                                       str(args.port)]
    if prefix is not None:
        client += ["--sockets-prefix", prefix]
    client += ["--std-every", str(args.every)] if std_stride else (["--no-std"] if extras else [])
    print(f"wrote {path}: {args.steps} {args.ensemble} steps of {args.dt:g} fs at {args.temperature:g} K, "
          f"{args.beads} bead(s)")
    print(f"run it: i-pi {shlex.quote(str(path))} &  then  {shlex.join(client)}")
    return 0
