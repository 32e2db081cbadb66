"""Error metrics used by ``mdplugin evaluate``, the benchmarks and the demo."""

from __future__ import annotations

import numpy as np


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    """RMSE, MAE and RMSE as % of the standard deviation of ``y_true``.

    Arrays of any shape (n, ...): every component counts as one observation; the standard deviation
    is taken about the per-component mean over frames.
    """
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    err = y_pred - y_true
    rmse = float(np.sqrt(np.mean(err**2)))
    std = float(np.sqrt(np.mean((y_true - y_true.mean(axis=0)) ** 2)))
    return {
        "rmse": rmse,
        "mae": float(np.mean(np.abs(err))),
        "std": std,
        "rmse_percent_of_std": 100.0 * rmse / std if std > 0 else float("nan"),
    }
