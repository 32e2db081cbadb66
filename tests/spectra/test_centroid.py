"""Centroid spectra of path-integral runs (``mdplugin spectrum --centroid P``): the bead average of
i-PI's per-bead extras, and one-line errors when the files are not whole runs of P beads.

The beads carry the same slow oscillation (the centroid's, 1650 cm⁻¹) plus fast internal ring-polymer
modes (3600 cm⁻¹) whose phases cancel in the bead sum: the centroid's IR has the slow band alone,
the spectrum of one bead has both.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from mdplugin.cli.parser import main
from mdplugin.core.errors import DataError
from mdplugin.core.units import AU_PER_ASE
from mdplugin.spectra import spectrum_command
from mdplugin.spectra.centroid import centroid_series

from .test_spectra_io import write_ipi_extras

C_CM_PER_FS = 2.99792458e-5
DT = 1.0  # fs
N_STEPS = 4000
SLOW, FAST = 1650.0, 3600.0


def ring_polymer_dipoles(n_beads: int, seed: int = 0) -> np.ndarray:
    """(n_beads, N_STEPS, 3) bead dipoles, e·Å: a common slow oscillation plus a fast internal
    mode with phase 2πb/P on bead b (it sums to zero over the beads)."""
    rng = np.random.default_rng(seed)
    t = np.arange(N_STEPS) * DT
    slow = np.cos(2 * np.pi * SLOW * C_CM_PER_FS * t)[:, None] * np.array([0.3, 0.1, -0.2])
    beads = []
    for b in range(n_beads):
        fast = np.cos(2 * np.pi * FAST * C_CM_PER_FS * t + 2 * np.pi * b / n_beads)[:, None] * np.array([0.5, -0.4, 0.2])
        beads.append(slow + fast + 1e-4 * rng.standard_normal((N_STEPS, 3)))
    return np.array(beads)


def write_run(folder, n_beads: int, prefix: str = "trpmd.dipole", steps=None, padding=None) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    digits = padding or int(1 + np.floor(np.log10(n_beads)))
    paths = []
    for b, series in enumerate(ring_polymer_dipoles(n_beads)):
        path = folder / f"{prefix}_{b:0{digits}d}"
        write_ipi_extras(path, "dipole", series * AU_PER_ASE["dipole"])
        paths.append(path)
    return paths


def test_centroid_ir_keeps_the_centroid_band_and_drops_the_internal_modes(tmp_path):
    paths = write_run(tmp_path, 4)
    series, names = centroid_series(paths, "dipole", 4)
    assert names == [str(tmp_path / "trpmd.dipole")]
    np.testing.assert_allclose(series[0], ring_polymer_dipoles(4).mean(axis=0), atol=1e-6)
    kwargs = dict(dt=DT, temperature=300.0, depth=400.0, blocks=4)
    centroid = spectrum_command("ir", paths, output=str(tmp_path / "c.csv"), plot=None, centroid=4, **kwargs)
    one_bead = spectrum_command("ir", paths[:1], output=str(tmp_path / "b.csv"), plot=None, **kwargs)
    total = centroid.band_area("ir", 100, 5000)
    assert centroid.band_area("ir", SLOW - 150, SLOW + 150) > 0.95 * total
    assert centroid.band_area("ir", FAST - 150, FAST + 150) < 0.01 * total
    assert one_bead.band_area("ir", FAST - 150, FAST + 150) > 0.5 * one_bead.band_area("ir", 100, 5000)
    assert centroid.meta["centroid_beads"] == 4


def test_two_runs_give_two_centroid_series(tmp_path):
    paths = write_run(tmp_path / "a", 2) + write_run(tmp_path / "b", 2)
    series, names = centroid_series(paths, "dipole", 2)
    assert len(series) == 2 and names == [str(tmp_path / "a" / "trpmd.dipole"), str(tmp_path / "b" / "trpmd.dipole")]


def _one_line_error(capsys, argv) -> str:
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bead_count_that_does_not_divide_is_one_line_naming_files_and_counts(tmp_path, capsys):
    paths = write_run(tmp_path, 8)
    err = _one_line_error(capsys, ["spectrum", "ir", *map(str, paths[:6]), "--dt", "1", "--temperature", "300",
                                   "-o", str(tmp_path / "x.csv"), "--centroid", "4"])
    assert "--centroid 4" in err and "6 bead file(s)" in err and "trpmd.dipole_0" in err and "whole runs of 4" in err


def test_beads_of_another_run_size_are_named(tmp_path, capsys):
    """Extras of an 8-bead run asked as the centroid of 4-bead runs: beads 4-7 do not belong."""
    paths = write_run(tmp_path, 8)
    err = _one_line_error(capsys, ["spectrum", "ir", *map(str, paths), "--dt", "1", "--temperature", "300",
                                   "-o", str(tmp_path / "x.csv"), "--centroid", "4"])
    assert "trpmd.dipole_4" in err and "not the beads 0-3 of one run" in err


def test_name_padded_for_another_bead_count_is_refused(tmp_path):
    """i-PI pads the bead index to the digits of the bead count: _03 is a file of a run of 10-99 beads."""
    paths = write_run(tmp_path, 4, padding=2)
    with pytest.raises(DataError, match=r"trpmd.dipole_00: .*padded to 2 digit.*not the 4 beads of --centroid 4"):
        centroid_series(paths, "dipole", 4)


def test_beads_with_different_steps_or_lengths_are_refused(tmp_path):
    paths = write_run(tmp_path, 2)
    text = paths[1].read_text().splitlines(keepends=True)
    paths[1].write_text("".join(text[:-2]))  # one frame fewer: a run still writing
    with pytest.raises(DataError, match=r"disagree in length: trpmd.dipole_0 4000 frames, trpmd.dipole_1 3999 frames"):
        centroid_series(paths, "dipole", 2)
    shifted = re.sub(r"Step:\s+(\d+)", lambda m: f"Step: {int(m.group(1)) + 100:10d}", "".join(text))
    paths[1].write_text(shifted)  # the same length, but steps 101 ... of another (restarted) run
    with pytest.raises(DataError, match=r"trpmd.dipole_1 and .*trpmd.dipole_0 are not beads of the same steps"):
        centroid_series(paths, "dipole", 2)
