"""``RUN_DIR/active.png``: true error and uncertainty of every labelled structure against the
oracle-call number, one panel per target of the run, with its threshold (from ``log.csv`` and
``config.json``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .store import RunStore

_UNITS = {"energy": "eV/atom", "dipole": "e·Å", "polarizability": "Å³"}


def _targets(store: RunStore, rows: list[dict[str, str]]) -> list[str]:
    """The run's targets (config.json), else those with an uncertainty in the log, else energy."""
    try:
        targets = [t for t in store.read_config()["config"]["targets"] if t in _UNITS]
    except Exception:  # noqa: BLE001 - no or unreadable config.json: from the log
        targets = []
    return targets or [t for t in _UNITS if any(r.get(f"u_{t}") for r in rows)] or ["energy"]


def _value(row: dict[str, str], name: str) -> float:
    try:
        return float(row[name]) if row.get(name) else np.nan
    except ValueError:
        return np.nan


def build_figure(store: RunStore):
    """The figure of :func:`plot_run` (a :class:`matplotlib.figure.Figure`, one axes per target,
    x: oracle calls during MD (integer ticks), y: uncertainty and true error on a log scale in the
    target's units, the threshold as a grey step line; "no structure labelled yet" when the run
    has made no oracle call)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    log = store.read_log()
    labels = [r for r in log if r["event"] == "label"]
    trains = [r for r in log if r["event"] in ("train", "label") and r.get("oracle_calls")]
    targets = _targets(store, labels)
    fig = Figure(figsize=(6, 2.6 * len(targets)))
    axes = fig.subplots(len(targets), 1, sharex=True, squeeze=False)[:, 0]
    calls = np.array([_value(r, "oracle_calls") for r in labels])
    x_max = max(1.0, float(np.nanmax(calls)) if len(calls) else 0.0)
    for ax, t in zip(axes, targets):
        u = np.array([_value(r, f"u_{t}") for r in labels])
        err = np.array([_value(r, f"err_{t}") for r in labels])
        thr = [(_value(r, "oracle_calls"), _value(r, f"thr_{t}")) for r in trains]
        thr = np.array([p for p in thr if np.isfinite(p[0]) and np.isfinite(p[1]) and p[1] > 0]).reshape(-1, 2)
        positive = np.concatenate([u[np.isfinite(u) & (u > 0)], err[np.isfinite(err) & (err > 0)], thr[:, 1]])
        if positive.size:
            ax.set_yscale("log")
        if len(labels):
            ax.plot(calls, u, "o", ms=3, label="uncertainty (model std)")
            ax.plot(calls, err, "x", ms=4, label="true error (once labelled)")
        if len(thr):  # threshold after each training, held until the next one
            order = np.argsort(thr[:, 0], kind="stable")
            xs, ys = np.append(thr[order, 0], x_max), np.append(thr[order, 1], thr[order[-1], 1])
            ax.step(xs, ys, where="post", lw=1, color="grey", label="threshold")
        if not len(labels):
            ax.text(0.5, 0.12, "no structure labelled yet (0 oracle calls)", transform=ax.transAxes,
                    ha="center", va="center", color="0.3")
        ax.set_ylabel(f"{t} ({_UNITS[t]})")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].set_xlim(-0.05 * x_max, 1.05 * x_max)
    axes[-1].set_xlabel("oracle calls")
    fig.tight_layout()
    return fig


def plot_run(store: RunStore, path: str | Path | None = None) -> Path:
    """Write the plot of :func:`build_figure` (PNG, atomically) and return its path."""
    from ..core.atomicio import atomic_write

    fig = build_figure(store)
    path = Path(path) if path else store.dir / "active.png"
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    return path
