"""The main job (`mdplugin demo`) in its reduced mode, through the console script."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from mdplugin import load_model


def test_demo_quick_writes_spectra_models_and_summary(tmp_path, examples_dir):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "mdplugin", "demo", "--quick", "-o", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "summary" in proc.stdout and "Traceback" not in proc.stderr
    for name in ("spectra.png", "ir.png", "raman.png", "parity.png", "ir.csv", "raman.csv", "md_nve.xyz",
                 "summary.json"):
        assert (out / name).stat().st_size > 0, name
    for target, kind in [("energy", "soap"), ("dipole", "rpr"), ("dipole", "lsoap"),
                         ("polarizability", "rpr"), ("polarizability", "lsoap")]:
        model = load_model(out / "models" / f"{target}_{kind}.npz", kind=kind, target=target)
        assert model.is_fitted_
    summary = json.loads((out / "summary.json").read_text())
    # every model was evaluated on held-out frames and learned something (better than predicting the mean)
    for name, metrics in summary["models"].items():
        assert metrics["rmse_percent_of_std"] < 100.0, name
    # the spectra CSVs hold a frequency axis in cm⁻¹ and a non-negative total intensity
    with open(out / "ir.csv") as fh:
        rows = list(csv.reader(fh))
    header, values = rows[0], np.array(rows[1:], dtype=float)
    assert "cm" in header[0] and values[:, 0].max() > 3000
    assert np.all(values[:, 1] >= -1e-9 * np.abs(values[:, 1]).max())
    # NVE production conserved energy reasonably even in the short run
    assert abs(summary["md"]["production"]["total_energy_drift_eV_per_atom"]) < 5e-3
