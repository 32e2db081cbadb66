"""``RUN_DIR/active.png``: true error and uncertainty of every labelled structure against the
oracle-call number, one panel per target (from ``log.csv``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .store import RunStore

_UNITS = {"energy": "eV/atom", "dipole": "e·Å", "polarizability": "Å³"}


def plot_run(store: RunStore, path: str | Path | None = None) -> Path:
    """Write the plot (PNG, atomically) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..atomicio import atomic_write

    rows = [r for r in store.read_log() if r["event"] == "label"]
    targets = [t for t in _UNITS if any(r.get(f"u_{t}") for r in rows)] or ["energy"]
    fig, axes = plt.subplots(len(targets), 1, figsize=(6, 2.6 * len(targets)), sharex=True, squeeze=False)

    def col(name: str) -> np.ndarray:
        return np.array([float(r[name]) if r.get(name) else np.nan for r in rows])

    calls = col("oracle_calls")
    for ax, t in zip(axes[:, 0], targets):
        ax.semilogy(calls, col(f"u_{t}"), "o", ms=3, label="uncertainty (model std)")
        ax.semilogy(calls, col(f"err_{t}"), "x", ms=4, label="true error (once labelled)")
        ax.plot(calls, col(f"thr_{t}"), "-", lw=1, color="grey", label="threshold")
        ax.set_ylabel(f"{t} ({_UNITS[t]})")
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("oracle calls")
    fig.tight_layout()
    path = Path(path) if path else store.dir / "active.png"
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
    return path
