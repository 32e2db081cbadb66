"""Active learning aimed at a spectrum: the window intensity, its gradient, the frame choice, the
rounds of a real run (analytic oracle) and the one-line errors of bad input."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest

from mdplugin.active import ActiveConfig
from mdplugin.active.spectral import C_CM_PER_FS, check_window, spectral_order, window_band, window_gradient, \
    window_intensity
from mdplugin.core.errors import ConfigError

from .helpers import HYPERS, ROOT, _run

DT = 2.5  # fs between frames


def _line(nu_cm: float, n: int = 400, amplitude: float = 1.0, axis: int = 0) -> np.ndarray:
    t = np.arange(n) * DT
    mu = np.zeros((n, 3))
    mu[:, axis] = amplitude * np.sin(2 * np.pi * nu_cm * C_CM_PER_FS * t)
    return mu


def test_window_intensity_counts_the_lines_inside_the_window_only():
    inside, outside = _line(700), _line(1500, axis=1)
    p_in = window_intensity(inside, DT, (600, 800))
    assert p_in > 0
    assert window_intensity(inside + outside, DT, (600, 800)) == pytest.approx(p_in, rel=1e-3)
    assert window_intensity(outside, DT, (600, 800)) < 1e-4 * p_in
    assert window_intensity(2 * inside, DT, (600, 800)) == pytest.approx(4 * p_in)
    # invariant under a rotation or reflection of the dipoles (the IR is)
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    assert window_intensity((inside + outside) @ q.T, DT, (600, 800)) == pytest.approx(p_in, rel=1e-3)


def test_window_gradient_equals_finite_differences():
    rng = np.random.default_rng(1)
    mu = _line(700) + _line(1500, axis=1) + 0.05 * rng.normal(size=(400, 3))
    g = window_gradient(mu, DT, (600, 800))
    for t, c in [(0, 0), (17, 1), (200, 2), (399, 0), (250, 0)]:
        step = np.zeros_like(mu)
        step[t, c] = 1e-6
        fd = (window_intensity(mu + step, DT, (600, 800)) - window_intensity(mu - step, DT, (600, 800))) / 2e-6
        assert fd == pytest.approx(g[t, c], rel=1e-5, abs=1e-8 * np.abs(g).max())


def test_the_choice_follows_the_windows_intensity_not_the_largest_dipole_variance():
    """Frame 100 is very uncertain along z, which the window (a line along x) does not see;
    frame 300 a little uncertain along x. The band narrows most by labelling 300; the most
    uncertain frame (the frame-error criterion) would be 100. Frames 301-303 move with 300 in every
    draw: once 300 is picked they are known too and are not picked next."""
    rng = np.random.default_rng(2)
    mean = _line(700)
    s = 64
    draws = np.repeat(mean[None], s, axis=0)
    draws[:, 100, 2] += 1.0 * rng.normal(size=s)
    common = 0.1 * rng.normal(size=s)
    for t in (300, 301, 302, 303):
        draws[:, t, 0] += common
    draws[:, 50, 0] += 0.05 * rng.normal(size=s)
    picks = spectral_order(mean, draws, DT, (600, 800), 2)
    assert picks[0] in (300, 301, 302, 303)
    assert picks[1] == 50
    std = np.linalg.norm(draws.std(axis=0), axis=1)
    assert int(np.argmax(std)) == 100  # what the per-frame uncertainty would label
    assert window_band(draws, DT, (600, 800)) > 0
    with pytest.raises(ConfigError, match="at least 2"):
        spectral_order(mean, draws[:1], DT, (600, 800), 1)


def test_bad_windows_are_one_line_errors_naming_the_range():
    assert check_window((600, 800), DT, 400) == (600.0, 800.0)
    with pytest.raises(ConfigError, match=r"outside the range 0-6671 cm\^-1"):
        check_window((6000, 8000), DT, 400)
    with pytest.raises(ConfigError, match="narrower than the resolution"):
        check_window((700, 710), DT, 400)
    with pytest.raises(ConfigError, match="LOW < HIGH"):
        check_window((800, 600), DT, 400)
    with pytest.raises(ConfigError, match="needs the dipole target"):
        ActiveConfig(targets=("energy",), spectrum_window=(600, 800))
    with pytest.raises(ConfigError, match="shorter than one spectrum round"):
        ActiveConfig(spectrum_window=(600, 800), steps=100, spectrum_steps=2000)
    with pytest.raises(ConfigError, match=r"outside the range 0-3336 cm\^-1 of a round's spectrum"):
        ActiveConfig(spectrum_window=(3000, 4000))


def _rows(run_dir, event):
    with open(run_dir / "log.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["event"] == event]


SPECTRUM = dict(spectrum_window=(500.0, 4000.0), spectrum_steps=60, sample_every=2, steps=400, batch=2,
                temperature=(300, 300), model="lsoap",
                hypers={**HYPERS, "dipole": {"cutoff": 3.0, "max_radial": 2, "max_angular": 2, "n_sparse": 20,
                                             "n_sparse_l0": 20, "n_components": 16, "regularizer_l1": 1e-4}})


def test_a_run_aimed_at_a_spectrum_labels_in_rounds_and_stops_on_the_band(tmp_path):
    # a tolerance it cannot reach: rounds of 2 labels until the call budget
    s = _run(tmp_path, "budget", max_calls=4, spectrum_tolerance=1e-9, **SPECTRUM)
    rounds = _rows(tmp_path / "budget", "spectrum")
    assert s.oracle_calls == 4 and "oracle-call budget" in s.reason and len(rounds) == 2
    assert all(float(r["uncertainty"]) > 0 for r in rounds)
    # a tolerance met at once: the run stops on the band after one round, nothing labelled
    s = _run(tmp_path, "met", max_calls=4, spectrum_tolerance=1e9, **SPECTRUM)
    assert s.oracle_calls == 0 and s.reason.startswith("spectrum band reached") and s.warning == ""


def test_a_model_that_cannot_sample_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="needs a dipole model that draws posterior samples") as info:
        _run(tmp_path, "naive", max_calls=2, **dict(SPECTRUM, model="rpr", hypers={**HYPERS, "dipole": {"frame": "naive"}}))
    assert "\n" not in str(info.value)


def test_cli_spectrum_window_outside_the_range(tmp_path):
    start = tmp_path / "w.xyz"
    start.write_text("3\n\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n")
    out = subprocess.run([sys.executable, "-m", "mdplugin", "active", str(start), "-o", str(tmp_path / "r"),
                          "--spectrum-window", "5000:9000"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "outside the range 0-3336 cm^-1" in lines[0], out.stderr
    out = subprocess.run([sys.executable, "-m", "mdplugin", "active", str(start), "-o", str(tmp_path / "r"),
                          "--spectrum-window", "600-800"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0 and "expected LOW:HIGH" in out.stderr
