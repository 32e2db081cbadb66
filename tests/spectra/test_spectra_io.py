"""Spectra: agreement with i-PI's own i-pi-getacf, the series readers, and the command line."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from mdplugin.cli.parser import main
from mdplugin.core.errors import ConfigError, DataError
from mdplugin.spectra import autocorrelation, read_csv, read_series, spectral_density, spectrum_command
from mdplugin.spectra.correlation import C_CM_PER_FS
from mdplugin.core.units import BOHR

IPI_FLOAT = "%16.8e"  # i-PI's ipi_global_settings["floatformat"]


def write_ipi_xyz(path, frames):
    """Frames (n, 3) as an i-PI xyz trajectory of one atom, atomic units."""
    with open(path, "w") as fh:
        for t, v in enumerate(frames):
            fh.write("1\n# CELL(abcABC): 10.0 10.0 10.0 90.0 90.0 90.0 "
                     f"Step: {t} Bead: 0 positions{{atomic_unit}} cell{{atomic_unit}}\n")
            fh.write("X %.17e %.17e %.17e\n" % tuple(v))


def write_ipi_extras(path, extra_type, rows):
    """An i-PI extras file as ipi.engine.outputs.TrajectoryOutput writes it."""
    with open(path, "w") as fh:
        for step, row in enumerate(rows):
            fh.write(" #%s(%s)# Step:  %10d \n" % ("EXTRAS", extra_type, step + 1))
            if extra_type == "raw":
                fh.write(str(row) + "\n")
            else:
                fh.write(" ".join(IPI_FLOAT % x for x in np.ravel(row)) + "\n")


@pytest.mark.skipif(shutil.which("i-pi-getacf") is None, reason="i-pi-getacf is not installed")
@pytest.mark.parametrize("window, ipi_window", [("hann", "cosine-hanning"), ("none", "none")])
def test_autocorrelation_and_spectrum_agree_with_ipi_getacf(tmp_path, window, ipi_window):
    """i-pi-getacf correlates blocks of ``bsize`` frames circularly and normalises by
    dt/(2π)/bsize (sum over x, y, z). Given one block made of our series followed by as many
    zeros, its circular correlation is our linear (zero-padded) one."""
    from ipi.utils.units import unit_to_internal

    rng = np.random.default_rng(0)
    n, depth, pad, dt = 300, 80, 4, 0.5
    x = rng.normal(size=(n, 3)) + np.sin(np.arange(n) / 7.0)[:, None]
    write_ipi_xyz(tmp_path / "series.xyz", np.concatenate([x, np.zeros_like(x)]))
    cmd = ["i-pi-getacf", "-ifile", "series.xyz", "-mlag", str(depth), "-bsize", str(2 * n),
           "-ftpad", str((pad - 1) * depth), "-ftwin", ipi_window, "-dt", f"{dt} femtosecond",
           "-oprefix", "ipi"]
    subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True, text=True)
    ipi_acf = np.loadtxt(tmp_path / "ipi_acf.data")
    ipi_facf = np.loadtxt(tmp_path / "ipi_facf.data")

    dt_au = unit_to_internal("time", "femtosecond", dt)
    norm = dt_au / (2 * np.pi) / (2 * n)  # i-PI's documented normalisation
    sums = autocorrelation(x, depth, subtract_mean=False) * (n - np.arange(depth + 1))
    np.testing.assert_allclose(ipi_acf[:, 1], norm * sums, rtol=1e-6, atol=1e-6 * np.abs(norm * sums).max())

    nu, g = spectral_density(sums, dt, window=window, pad=pad)  # ∫ e^{-iωt} w C dt, x²·fs
    ours = g / dt * norm
    k = len(ipi_facf)
    np.testing.assert_allclose(ipi_facf[:, 1], ours[:k], rtol=1e-6, atol=1e-6 * np.abs(ours).max())
    omega_au = 2 * np.pi * C_CM_PER_FS * nu / unit_to_internal("time", "femtosecond", 1.0)
    np.testing.assert_allclose(ipi_facf[:, 0], omega_au[:k], rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# readers


def test_read_ipi_extras_single_key_comma_list_and_raw(tmp_path):
    rng = np.random.default_rng(1)
    mu = rng.normal(size=(20, 3))  # e·bohr
    alpha = rng.normal(size=(20, 3, 3))
    alpha = alpha + alpha.transpose(0, 2, 1)  # bohr³
    write_ipi_extras(tmp_path / "sim.dip_0", "dipole", mu)
    got = read_series(tmp_path / "sim.dip_0", "dipole")
    np.testing.assert_allclose(got, mu * BOHR, rtol=1e-7)

    write_ipi_extras(tmp_path / "sim.both_0", "dipole,polarizability",
                     [np.concatenate([m, a.ravel()]) for m, a in zip(mu, alpha)])
    np.testing.assert_allclose(read_series(tmp_path / "sim.both_0", "polarizability"), alpha * BOHR**3, rtol=1e-7)
    np.testing.assert_allclose(read_series(tmp_path / "sim.both_0", "dipole"), mu * BOHR, rtol=1e-7)

    raw = [json.dumps({"dipole": m.tolist(), "polarizability": a.ravel().tolist(), "dipole_std": [0, 0, 0]})
           for m, a in zip(mu, alpha)]
    write_ipi_extras(tmp_path / "sim.raw_0", "raw", raw)
    np.testing.assert_allclose(read_series(tmp_path / "sim.raw_0", "polarizability"), alpha * BOHR**3, rtol=1e-12)

    # agrees with i-PI's own reader
    from ipi import read_trajectory

    ipi = read_trajectory(str(tmp_path / "sim.dip_0"), format="extras")
    np.testing.assert_allclose(read_series(tmp_path / "sim.dip_0", "dipole"), ipi["dipole"] * BOHR)


def test_ipi_extras_without_the_key_is_one_clear_error(tmp_path):
    write_ipi_extras(tmp_path / "sim.dip_0", "dipole", np.zeros((5, 3)))
    with pytest.raises(DataError, match="no key 'polarizability'") as info:
        read_series(tmp_path / "sim.dip_0", "polarizability")
    assert "\n" not in str(info.value)
    write_ipi_extras(tmp_path / "sim.raw_0", "raw", [json.dumps({"dipole": [0, 0, 1]})] * 5)
    with pytest.raises(DataError, match="no key 'polarizability'"):
        read_series(tmp_path / "sim.raw_0", "polarizability")


def test_read_extxyz_info_and_calculator(tmp_path):
    rng = np.random.default_rng(2)
    mu = rng.normal(size=(6, 3))
    alpha = rng.normal(size=(6, 3, 3))
    frames = []
    for m, a in zip(mu, alpha):
        atoms = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
        atoms.calc = SinglePointCalculator(atoms, dipole=m)  # where ASE's reader puts it
        atoms.info["polarizability"] = a.ravel()
        frames.append(atoms)
    write(tmp_path / "traj.xyz", frames, format="extxyz")
    np.testing.assert_allclose(read_series(tmp_path / "traj.xyz", "dipole"), mu, rtol=1e-8)
    np.testing.assert_allclose(read_series(tmp_path / "traj.xyz", "polarizability"), alpha, rtol=1e-8)
    np.testing.assert_allclose(read_series(tmp_path / "traj.xyz", "dipole", units="atomic"), mu * BOHR, rtol=1e-8)
    with pytest.raises(DataError, match="no 'mu'"):
        read_series(tmp_path / "traj.xyz", "dipole", key="mu")


def test_read_arrays(tmp_path):
    rng = np.random.default_rng(3)
    mu = rng.normal(size=(10, 3))
    alpha = rng.normal(size=(10, 3, 3))
    np.save(tmp_path / "mu.npy", mu)
    np.savetxt(tmp_path / "mu.txt", mu)
    np.save(tmp_path / "alpha.npy", alpha)
    np.savetxt(tmp_path / "alpha.txt", alpha.reshape(10, 9))
    np.testing.assert_allclose(read_series(tmp_path / "mu.npy", "dipole"), mu)
    np.testing.assert_allclose(read_series(tmp_path / "mu.txt", "dipole"), mu)
    np.testing.assert_allclose(read_series(tmp_path / "alpha.npy", "polarizability"), alpha)
    np.testing.assert_allclose(read_series(tmp_path / "alpha.txt", "polarizability"), alpha)
    with pytest.raises(DataError, match=r"shape \(10, 3, 3\), expected \(n_frames, 3\)"):
        read_series(tmp_path / "alpha.npy", "dipole")
    with pytest.raises(DataError, match="expected"):
        read_series(tmp_path / "mu.txt", "polarizability")
    with pytest.raises(DataError, match="no such file"):
        read_series(tmp_path / "missing.npy", "dipole")
    with pytest.raises(ConfigError):
        read_series(tmp_path / "mu.npy", "quadrupole")


# ---------------------------------------------------------------------------------------------
# command line


def _mu_series(n=4000, dt=0.5, seed=4):
    rng = np.random.default_rng(seed)
    t = np.arange(n) * dt
    return np.stack([0.1 * np.cos(2 * np.pi * C_CM_PER_FS * nu * t + rng.uniform(0, 6.3))
                     for nu in (1600.0, 3650.0, 3750.0)], axis=1) + 0.001 * rng.normal(size=(n, 3))


def test_cli_ir_writes_csv_and_png(tmp_path, capsys):
    np.save(tmp_path / "a.npy", _mu_series(n=4200, seed=4))  # 2 blocks of twice the depth each
    np.save(tmp_path / "b.npy", _mu_series(n=4200, seed=5))
    out, png = tmp_path / "ir.csv", tmp_path / "ir.png"
    status = main(["spectrum", "ir", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--dt", "0.5",
                   "--temperature", "300", "--depth", "500", "-o", str(out), "--plot", str(png)])
    assert status == 0
    header = out.read_text().splitlines()[0].split(",")
    assert header[0] == "wavenumber [cm^-1]" and header[1].startswith("ir [km mol^-1")
    table = read_csv(out)
    assert {"ir", "ir_x", "ir_y", "ir_z", "ir_stat_err"} <= set(table)
    nu, ir = table["wavenumber"], table["ir"]
    for c in (1600.0, 3650.0, 3750.0):
        sel = np.abs(nu - c) < 40
        assert abs(nu[sel][np.argmax(ir[sel])] - c) <= nu[1] - nu[0]
    assert png.stat().st_size > 10000


def test_cli_reports_what_it_wrote_and_warns_on_short_series(tmp_path, capsys):
    """The command says what it wrote, with the line width and the peaks; a series too short to
    resolve bands gets a note."""
    np.save(tmp_path / "long.npy", _mu_series(n=8000))
    assert main(["spectrum", "ir", str(tmp_path / "long.npy"), "--dt", "0.5", "--temperature", "300",
                 "-o", str(tmp_path / "a.csv")]) == 0
    out = capsys.readouterr().out
    assert "wrote the ir spectrum of 8000 frames" in out and str(tmp_path / "a.csv") in out
    assert "1600, 3650, 3750" in out and "note:" not in out, out
    np.save(tmp_path / "short.npy", _mu_series(n=300))
    assert main(["spectrum", "ir", str(tmp_path / "short.npy"), "--dt", "0.5", "--temperature", "300",
                 "-o", str(tmp_path / "b.csv")]) == 0
    assert "note: bands closer than about" in capsys.readouterr().out


def test_cli_raman_with_options(tmp_path):
    rng = np.random.default_rng(6)
    n, dt = 4000, 0.5
    t = np.arange(n) * dt
    s = np.cos(2 * np.pi * C_CM_PER_FS * 1000.0 * t)
    alpha = (1.0 + 0.1 * s)[:, None, None] * np.eye(3) + 0.05 * rng.normal(size=(n, 3, 3)) * 0.01
    np.save(tmp_path / "alpha.npy", alpha)
    out = tmp_path / "raman.csv"
    status = main(["spectrum", "raman", str(tmp_path / "alpha.npy"), "--dt", "0.5", "--temperature", "300",
                   "--depth", "400", "--window", "blackman", "--form", "omega2", "--correction", "standard",
                   "--laser", "18797", "--bose", "--max-wavenumber", "4000", "-o", str(out),
                   "--plot", str(tmp_path / "raman.png")])
    assert status == 0
    table = read_csv(out)
    assert list(table)[:7] == ["wavenumber", "unpolarized", "vv", "vh", "isotropic", "anisotropic", "depolarization"]
    assert table["wavenumber"].max() <= 4000


@pytest.mark.parametrize("args, words", [
    (["--dt", "0"], "time step"),
    (["--dt", "0.5", "--depth", "100000"], "fewer than"),
    (["--dt", "0.5", "--window", "nope"], "window"),
])
def test_cli_bad_input_is_one_line_and_status_2(tmp_path, capsys, args, words):
    np.save(tmp_path / "a.npy", _mu_series(n=400))
    status = main(["spectrum", "ir", str(tmp_path / "a.npy"), "--temperature", "300",
                   "-o", str(tmp_path / "x.csv")] + args)
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err.startswith("mdplugin: error:") and words in err and "\n" not in err
    assert not (tmp_path / "x.csv").exists()


def test_cli_missing_ipi_key(tmp_path, capsys):
    write_ipi_extras(tmp_path / "sim.dip_0", "dipole", np.zeros((50, 3)))
    status = main(["spectrum", "raman", str(tmp_path / "sim.dip_0"), "--dt", "1", "--temperature", "300",
                   "-o", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err.strip()
    assert status == 2 and "no key 'polarizability'" in err and "\n" not in err


def test_spectrum_command_rejects_unknown_options(tmp_path):
    np.save(tmp_path / "a.npy", _mu_series(n=400))
    with pytest.raises(ConfigError, match="unknown spectrum option"):
        spectrum_command("ir", [str(tmp_path / "a.npy")], 0.5, str(tmp_path / "x.csv"), None, 300.0, colour="red")


def test_ipi_extras_with_unequal_steps_is_an_error(tmp_path):
    path = tmp_path / "sim.dip_0"
    with open(path, "w") as fh:
        for step in (1, 2, 3, 5, 6):
            fh.write(" #EXTRAS(dipole)# Step:  %10d \n0.0 0.0 %f\n" % (step, step))
    with pytest.raises(DataError, match="not equally spaced"):
        read_series(path, "dipole")


def test_cli_too_short_series_names_the_file(tmp_path, capsys):
    np.save(tmp_path / "long.npy", _mu_series(n=2000))
    np.save(tmp_path / "short.npy", _mu_series(n=300))
    status = main(["spectrum", "ir", str(tmp_path / "long.npy"), str(tmp_path / "short.npy"), "--dt", "0.5",
                   "--temperature", "300", "--depth", "200", "-o", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err.strip()
    assert status == 2 and "short.npy has 300 frames" in err and "\n" not in err


@pytest.mark.parametrize("kind", ["ir", "raman"])
def test_peak_labels_of_close_bands_do_not_overlap(kind):
    """Bands 60-90 cm⁻¹ apart (closer than a label is wide on a 0-4000 cm⁻¹ axis) get labels that
    do not overlap one another, and every label stays inside the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mdplugin.spectra import ir_spectrum, raman_spectrum
    from mdplugin.spectra.plot import _annotate, _xmax

    rng = np.random.default_rng(2)
    n, dt = 40000, 0.5
    t = np.arange(n) * dt
    nus, amps = [60.0, 980.0, 1040.0, 1120.0, 1190.0, 2900.0, 2960.0], [0.5, 1.0, 0.8, 1.2, 0.6, 1.0, 0.9]
    x = sum(a * np.cos(2 * np.pi * C_CM_PER_FS * nu * t + rng.uniform(0, 2 * np.pi)) for nu, a in zip(nus, amps))
    noise = 0.05 * rng.normal(size=(n, 3))
    if kind == "ir":
        result, name = ir_spectrum([x[:, None] * np.array([1.0, 0.5, 0.2]) + noise], dt, temperature=300), "ir"
    else:
        alpha = np.zeros((n, 3, 3)) + np.eye(3) * 10
        alpha[:, 0, 0] += x
        alpha[:, 0, 1] = alpha[:, 1, 0] = 0.3 * x
        result, name = raman_spectrum([alpha + 0.01 * rng.normal(size=(n, 3, 3))], dt, temperature=300), "unpolarized"
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot(result.wavenumber, result.components[name])
    xmax = _xmax([result])
    top = _annotate(ax, result, name, xmax, "k", with_rho=kind == "raman")
    ax.set_xlim(0, xmax)
    ax.set_ylim(0, top * 1.03)
    fig.canvas.draw()
    boxes = [text.get_window_extent() for text in ax.texts]
    assert len(boxes) >= 6, [text.get_text() for text in ax.texts]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (ax.texts[i].get_text(), ax.texts[j].get_text())
    inside = fig.bbox
    for text, box in zip(ax.texts, boxes):
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and box.y1 <= inside.y1, text.get_text()
    plt.close(fig)
