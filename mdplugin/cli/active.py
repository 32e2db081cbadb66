"""``mdplugin active``: options -> :class:`ActiveConfig` -> :func:`run_active`."""

from __future__ import annotations

import dataclasses

from .options import json_object
from ..core.errors import ConfigError, MdpluginError
from ..active.config import TARGETS, ActiveConfig
from ..active.loop import run_active


def _temperature(text: str | None):
    if text is None:
        return None
    try:
        parts = [float(x) for x in str(text).split(":")]
    except ValueError:
        raise ConfigError(f"--temperature: expected K or T_START:T_END, got {text!r}") from None
    if len(parts) not in (1, 2):
        raise ConfigError(f"--temperature: expected K or T_START:T_END, got {text!r}")
    return (parts[0], parts[-1])


def _window(text: str | None):
    if text is None:
        return None
    parts = str(text).split(":")
    try:
        values = tuple(float(x) for x in parts)
    except ValueError:
        values = ()
    if len(values) != 2:
        raise ConfigError(f"--spectrum-window: expected LOW:HIGH in cm^-1 (e.g. 600:800), got {text!r}")
    return values


def config_from_args(args) -> dict:
    """The settings given on the command line (``None`` for those not given)."""
    thresholds = {t: getattr(args, f"threshold_{t}", None) for t in TARGETS}
    hypers = {t: json_object(getattr(args, f"{t}_hypers", None), f"--{t}-hypers") for t in TARGETS}
    return {
        "targets": tuple(t.strip() for t in args.targets.split(",") if t.strip()) if args.targets else None,
        "model": args.model,
        "energy_model": getattr(args, "energy_model", None),
        "hypers": {t: h for t, h in hypers.items() if h} or None,
        "thresholds": {t: v for t, v in thresholds.items() if v is not None} or None,
        "threshold_factor": getattr(args, "threshold_factor", None),
        "steps": args.steps,
        "dt": getattr(args, "dt", None),
        "friction": getattr(args, "friction", None),
        "temperature": _temperature(args.temperature),
        "temperature_cycles": getattr(args, "temperature_cycles", None),
        "seed": getattr(args, "seed", None),
        "max_calls": args.max_calls,
        "wall_time": getattr(args, "wall_time", None),
        "n_initial": getattr(args, "n_initial", None),
        "checkpoint_every": getattr(args, "checkpoint_every", None),
        "segment": getattr(args, "segment", None),
        "sample_every": getattr(args, "sample_every", None),
        "batch": getattr(args, "batch", None),
        "stop_factor": getattr(args, "stop_factor", None),
        "walkers": getattr(args, "walkers", None),
        "pool": getattr(args, "pool", None),
        "selection": getattr(args, "selection", None),
        "explore": getattr(args, "explore", None),
        "explore_heat": getattr(args, "explore_heat", None),
        "explore_window": getattr(args, "explore_window", None),
        "spectrum_window": _window(getattr(args, "spectrum_window", None)),
        "spectrum_tolerance": getattr(args, "spectrum_tolerance", None),
        "spectrum_steps": getattr(args, "spectrum_steps", None),
        "spectrum_samples": getattr(args, "spectrum_samples", None),
    }


#: settings a resumed run may change (budgets); the others stay as the run was started
RESUMABLE = ("steps", "max_calls", "wall_time")


def run_active_command(args) -> int:
    """Under ``mpiexec -n P`` the P ranks share the run (see :func:`mdplugin.active.run_active`);
    an error raised on every rank is reported by rank 0 alone (the others exit with its code)."""
    from ..learn.parallel import get_comm

    comm = get_comm()
    try:
        return _run(args, comm)
    except Exception as exc:
        if comm.rank == 0:
            raise
        raise SystemExit(2 if isinstance(exc, (MdpluginError, OSError)) else 1) from None


def _run(args, comm) -> int:
    given = config_from_args(args)
    if isinstance(args.resume, str):  # --resume RUN_DIR
        if args.output and args.output != args.resume:
            raise ConfigError(f"active: --resume {args.resume} and -o {args.output} name different folders")
        args.output = args.resume
    if args.output is None:
        raise ConfigError("active: give the run folder (-o RUN_DIR, or --resume RUN_DIR)")
    quiet = getattr(args, "quiet", False)
    say = (lambda message: None) if quiet else None  # --quiet: the summary alone (warnings go to stderr)
    if args.resume:
        overrides = {k: given[k] for k in RESUMABLE if given[k] is not None}
        summary = run_active(None, args.output, oracle=args.oracle, resume=True, overrides=overrides, say=say,
                             comm=comm)
    else:
        if args.start is None:
            raise ConfigError("active: give a start structure (or --resume RUN_DIR)")
        config = ActiveConfig(**{k: v for k, v in given.items() if v is not None})
        if getattr(args, "explore_filters", None) is False:  # --no-explore-filters: a run meant to see reactions
            config = dataclasses.replace(config, explore_contact=None, explore_bonds=None, explore_label_window=None)
        summary = run_active(args.start, args.output, config=config, oracle=args.oracle or "tblite",
                             initial=getattr(args, "initial", None), say=say, comm=comm)
    if quiet and comm.rank == 0:
        print(summary.text(), flush=True)
    return 0
