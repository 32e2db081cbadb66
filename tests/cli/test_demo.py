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
    # a log that is not a terminal gets no progress bars; the spectra stage says what it made
    assert "step/s" not in proc.stderr and "it/s" not in proc.stderr and "\r" not in proc.stderr
    assert "ir spectrum of" in proc.stdout and "raman spectrum of" in proc.stdout
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


def test_demo_quiet_prints_the_summary_alone(tmp_path, examples_dir, capsys):
    from mdplugin.cli.parser import main

    assert main(["demo", "--quick", "--quiet", "-o", str(tmp_path / "demo")]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0].split() == ["model", "RMSE", "%", "of", "std", "train", "s"]
    assert lines[-1].startswith("wrote ") and len(lines) == 10
    assert captured.err == ""
    assert (tmp_path / "demo" / "summary.json").exists()


def test_parity_plot_shows_the_isotropic_and_anisotropic_polarizability_apart(examples_dir):
    from mdplugin.cli.demo import _parity_data
    from mdplugin.models import build
    from mdplugin.structures.data import read_dataset

    train = read_dataset(examples_dir / "dce_train.xyz", index=slice(0, 40))
    test = read_dataset(examples_dir / "dce_test.xyz", index=slice(0, 10))
    entry = {"model": build("rpr", target="polarizability").fit(train.frames, train.polarizability)}
    (iso_name, iso_ref, iso_pred, unit), (aniso_name, aniso_ref, aniso_pred, _) = _parity_data(
        "rpr", "polarizability", entry, test)
    alpha = test.polarizability
    mean = np.trace(alpha, axis1=1, axis2=2) / 3
    assert "isotropic" in iso_name and unit == "Å³"
    np.testing.assert_allclose(iso_ref, mean)  # ᾱ itself, one value per frame
    assert "anisotropic" in aniso_name and aniso_ref.shape == (5 * len(test),)
    beta = alpha - mean[:, None, None] * np.eye(3)  # the five λ = 2 components carry all of β
    np.testing.assert_allclose(np.sum(aniso_ref.reshape(-1, 5) ** 2, axis=1), np.sum(beta**2, axis=(1, 2)))
    pred = entry["model"].predict(test.frames)
    np.testing.assert_allclose(iso_pred, np.trace(pred, axis1=1, axis2=2) / 3)
