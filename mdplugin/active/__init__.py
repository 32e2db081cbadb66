"""Active learning: run MD with the models, label structures where they are unsure, retrain.

Python::

    from mdplugin.active import ActiveConfig, run_active
    cfg = ActiveConfig(targets=("energy", "dipole"), model="rpr", steps=5000, max_calls=100,
                       thresholds={"dipole": 0.02}, threshold_factor=3.0, temperature=(300, 600))
    summary = run_active("start.xyz", "run1", cfg, oracle="tblite", initial="labelled.xyz")
    summary = run_active(None, "run1", resume=True, overrides={"steps": 10000})

Command line: ``mdplugin active START.xyz -o RUN_DIR ...`` and ``mdplugin active --resume RUN_DIR``
(see ``mdplugin active --help`` and docs/active.md).
"""

from .config import LABELS_FOR, TARGETS, ActiveConfig
from .learner import Learner, measure
from .loop import ActiveSummary, resolve_oracle, run_active
from .onthefly import ActiveCalculator
from .store import LOG_COLUMNS, RunStore, structure_hash


__all__ = ["ActiveCalculator", "ActiveConfig", "ActiveSummary", "Learner", "LABELS_FOR", "LOG_COLUMNS", "RunStore", "TARGETS",
           "measure", "resolve_oracle", "run_active", "structure_hash"]
