"""Model bands and statistical error bars of spectra, with answers known in advance.

* a band from draws whose mode amplitudes are uncertain sits at those modes' frequencies and has
  exactly the percentiles of the squared amplitudes; a model with zero posterior variance has a
  band collapsed onto the mean spectrum;
* statistical error bars from blocks shrink as 1/√n_blocks on white noise, and replicas count as
  blocks;
* calibration: when the truth is one more draw of the same posterior, the 5–95 % band covers it at
  about 90 % of the intensity-weighted wavenumbers; an overconfident posterior covers far less;
* the command line end to end (model files, CSV columns, plot) and its one-line errors.
"""

from __future__ import annotations

import numpy as np
import pytest

from mdplugin.cli.parser import main
from mdplugin.core.errors import ConfigError, DataError
from mdplugin.models import build
from mdplugin.spectra import ir_spectrum, model_series, raman_spectrum, read_csv
from mdplugin.spectra.correlation import C_CM_PER_FS

from ..conftest import dichloroethane
from .test_spectra import DT, sinusoids

T = 300.0


def _modes(n, nus, rng, dt=DT):
    """(n, k) unit cosines of wavenumbers ``nus`` (cm⁻¹) with random phases."""
    t = np.arange(n) * dt
    return np.stack([np.cos(2 * np.pi * C_CM_PER_FS * nu * t + rng.uniform(0, 2 * np.pi)) for nu in nus], axis=1)


def _near(nu, value):
    return int(np.argmin(np.abs(nu - value)))


def test_band_sits_on_the_uncertain_mode_with_the_percentiles_of_its_squared_amplitude():
    rng = np.random.default_rng(1)
    q = _modes(4000, [900.0, 2400.0], rng)  # two modes along x and y
    mean = q * [0.2, 0.1] @ np.array([[1.0, 0, 0], [0, 1.0, 0]])
    s = 200
    scale = 1.0 + 0.2 * rng.normal(size=s)  # only the first mode's amplitude is uncertain
    draws = np.stack([np.stack([k * mean[:, 0], mean[:, 1], mean[:, 2]], axis=1) for k in scale])
    r = ir_spectrum([mean], DT, T, depth=500, samples=[draws], band=(5, 95))
    assert r.meta["n_samples"] == s and r.meta["band"] == [5.0, 95.0]
    lo, hi = r.bands["ir"]
    i, j = _near(r.wavenumber, 900.0), _near(r.wavenumber, 2400.0)
    # at the uncertain mode: the spectrum scales with the squared amplitude, draw by draw
    expected = np.percentile(scale**2, [5, 95]) * r.components["ir_x"][i]
    np.testing.assert_allclose([lo[i] - r.components["ir_y"][i], hi[i] - r.components["ir_y"][i]], expected, rtol=1e-9)
    # at the certain mode the band has no width; the x component's band is the same at both modes
    assert hi[j] - lo[j] < 1e-3 * r.components["ir"][j]  # (the first mode's line tail only)
    assert hi[i] - lo[i] > 0.5 * r.components["ir"][i]
    np.testing.assert_allclose(r.bands["ir_x"][:, i] / r.components["ir_x"][i], np.percentile(scale**2, [5, 95]),
                               rtol=1e-9)
    assert r.peaks("ir") == pytest.approx([900.0, 2400.0], abs=r.wavenumber[1])


def test_zero_posterior_variance_collapses_the_band_onto_the_mean_spectrum():
    rng = np.random.default_rng(2)
    mu = np.stack([sinusoids(3000, [700.0, 1650.0], [0.3, 0.1], rng) for _ in range(3)], axis=1)
    alpha = np.stack([np.eye(3) * 10 + 0.1 * rng.normal() for _ in range(3000)])
    alpha += 0.05 * np.sin(np.arange(3000) * 0.3)[:, None, None] * np.array([[1, 0.5, 0], [0.5, -1, 0], [0, 0, 0]])
    ir = ir_spectrum([mu], DT, T, samples=[np.stack([mu] * 5)])
    raman = raman_spectrum([alpha], DT, T, samples=[np.stack([alpha] * 5)])
    for r in (ir, raman):
        for name, values in r.components.items():
            lo, hi = r.bands[name]
            ok = np.isfinite(values)
            np.testing.assert_allclose(lo[ok], values[ok], rtol=1e-9, atol=1e-12 * np.nanmax(np.abs(values)))
            np.testing.assert_allclose(hi[ok], values[ok], rtol=1e-9, atol=1e-12 * np.nanmax(np.abs(values)))


def test_draws_of_several_series_are_averaged_like_the_series():
    """Draw k of every series is one model: its spectrum averages over the series like the mean's."""
    rng = np.random.default_rng(3)
    a, b = (np.stack([sinusoids(3000, [1000.0], [0.2], rng)] * 3, axis=1) for _ in range(2))
    draws = [np.stack([a * k for k in (0.9, 1.0, 1.1)]), np.stack([b * k for k in (0.9, 1.0, 1.1)])]
    r = ir_spectrum([a, b], DT, T, samples=draws, band=(0, 100))
    up = r.components["ir"] > 0  # (the lowest draw is the largest where side lobes are negative)
    np.testing.assert_allclose(r.bands["ir"][0][up], 0.81 * r.components["ir"][up], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(r.bands["ir"][1][up], 1.21 * r.components["ir"][up], rtol=1e-9, atol=1e-12)


def test_block_error_bars_shrink_as_one_over_the_square_root_of_the_number_of_blocks():
    rng = np.random.default_rng(4)
    depth, block = 100, 200  # frames
    errors = {}
    for n_blocks in (4, 16, 64):
        mu = rng.normal(size=(n_blocks * block + 1, 3))  # white noise: a flat ω²-weighted spectrum
        r = ir_spectrum([mu], DT, T, depth=depth * DT, blocks=n_blocks)
        assert r.meta["n_blocks"] == n_blocks
        sel = (r.wavenumber > 3000) & (r.wavenumber < 30000)
        errors[n_blocks] = np.mean(r.errors["ir"][sel] / r.components["ir"][sel])
    assert errors[4] / errors[16] == pytest.approx(2.0, rel=0.15)
    assert errors[16] / errors[64] == pytest.approx(2.0, rel=0.15)


def test_independent_replicas_are_blocks():
    rng = np.random.default_rng(5)
    replicas = [rng.normal(size=(801, 3)) for _ in range(4)]
    r = ir_spectrum(replicas, DT, T, depth=100 * DT, blocks=1)
    assert r.meta["n_blocks"] == 4 and set(r.errors) == set(r.components)
    assert np.all(r.errors["ir"][1:] > 0)


def test_too_few_frames_for_the_blocks_asked_for_is_one_line_saying_what_works():
    mu = np.random.default_rng(6).normal(size=(1001, 3))
    with pytest.raises(DataError) as err:
        ir_spectrum([mu], DT, T, depth=100 * DT, blocks=8)
    msg = str(err.value)
    assert "\n" not in msg and "8 blocks of 125 frames" in msg and "use 5 block(s) or fewer" in msg
    with pytest.raises(DataError, match="at least 3"):
        ir_spectrum([mu], DT, T, depth=100 * DT, blocks=2)
    with pytest.raises(DataError, match="give 2 block"):
        ir_spectrum([mu], DT, T, depth=100 * DT, block=400 * DT)
    with pytest.raises(ConfigError, match="not both"):
        ir_spectrum([mu], DT, T, depth=100 * DT, blocks=3, block=300.0)
    # without a request, too few blocks is no estimate and no error columns, not an error
    assert ir_spectrum([mu], DT, T, depth=250 * DT).errors == {}


def test_coverage_of_a_calibrated_posterior_is_about_its_band_and_an_overconfident_one_is_not():
    """A linear model μ(t) = W q(t) of three modes with a Gaussian posterior on W: the truth is one
    more draw of that posterior, so at each wavenumber it falls inside the 5–95 % band of the
    draws' spectra with probability 0.9; averaged over 200 truths the intensity-weighted coverage
    is 0.9. Draws with a third of the posterior spread cover far less."""
    rng = np.random.default_rng(7)
    n, s, n_truths = 3000, 200, 150
    q = _modes(n, [800.0, 1500.0, 3000.0], rng)
    w0 = np.array([[0.3, 0.0, 0.1], [0.0, 0.2, 0.05], [0.1, 0.1, 0.0]])
    spread = 0.3 * np.abs(w0).max()
    mean = q @ w0

    def draws(count, sigma):
        w = w0 + sigma * rng.normal(size=(count, 3, 3))
        return np.einsum("tk,skc->stc", q, w)

    truths = draws(n_truths, spread)
    references = [ir_spectrum([t], DT, T, depth=500) for t in truths]
    for sigma, lo_cov, hi_cov in ((spread, 0.85, 0.95), (spread / 3, 0.0, 0.5)):
        band = ir_spectrum([mean], DT, T, depth=500, samples=[draws(s, sigma)])
        coverages = [band.coverage(ref, window=(100.0, 3800.0)) for ref in references]
        assert lo_cov <= np.mean(coverages) <= hi_cov, (sigma, np.mean(coverages))


# ---------------------------------------------------------------------------------------------
# models on trajectories, and the command line


def _trajectory(path, n=500, dt=1.0, seed=0):
    """A 1,2-dichloroethane 'trajectory' (written as extended XYZ): motion along three random
    displacement patterns at 700, 1300 and 3000 cm⁻¹; returns the frames."""
    from ase.io import write

    rng = np.random.default_rng(seed)
    base = dichloroethane()
    patterns = rng.normal(size=(3, len(base), 3))
    patterns /= np.linalg.norm(patterns, axis=(1, 2))[:, None, None]
    q = _modes(n, [700.0, 1300.0, 3000.0], rng, dt=dt) * [0.25, 0.15, 0.08]
    frames = []
    for k in range(n):
        atoms = base.copy()
        atoms.positions += np.tensordot(q[k], patterns, axes=1)
        frames.append(atoms)
    write(path, frames, format="extxyz")
    return frames


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    from ..models.test_lsoap import SMALL, _bond_polarizability, _data, _point_charge_dipole

    folder = tmp_path_factory.mktemp("models")
    frames = _data(40, 0, noise=0.15)
    mu = np.array([_point_charge_dipole(f) for f in frames])
    alpha = np.array([_bond_polarizability(f) for f in frames])
    build("lsoap", target="dipole", **SMALL).fit(frames, mu).save(folder / "dipole.npz")
    build("lsoap", target="polarizability", **SMALL).fit(frames, alpha).save(folder / "alpha.npz")
    build("rpr", target="dipole").fit(frames, mu).save(folder / "rpr.npz")
    build("rpr", target="dipole", regressor="krr").fit(frames, mu).save(folder / "krr.npz")
    _trajectory(folder / "traj.xyz", n=300)
    return folder


@pytest.mark.parametrize("model", ["dipole.npz", "rpr.npz"])
def test_cli_ir_with_a_model_band(model, model_files, tmp_path, capsys):
    out, png = tmp_path / "ir.csv", tmp_path / "ir.png"
    args = ["spectrum", "ir", str(model_files / "traj.xyz"), "--dt", "1", "--temperature", "300", "-o", str(out),
            "--model", str(model_files / model), "--uncertainty", "--samples", "16", "--seed", "3"]
    assert main(args + ["--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "model band: 5-95 % of 16 posterior draws" in text and "statistical error: 3 blocks" in text
    header = out.read_text().splitlines()[0]
    assert "ir_model_p5 [km mol^-1 (cm^-1)^-1]" in header and "ir_z_model_p95" in header and "ir_stat_err" in header
    table = read_csv(out)
    lo, hi, ir = table["ir_model_p5"], table["ir_model_p95"], table["ir"]
    assert np.all(lo <= hi)
    peak = np.argmax(ir)
    assert hi[peak] > lo[peak] > 0 and lo[peak] < 1.5 * ir[peak] and hi[peak] > 0.67 * ir[peak]
    assert png.stat().st_size > 10000
    first = out.read_text()
    assert main(args) == 0  # the same seed gives the same draws
    assert out.read_text() == first


def test_cli_raman_with_a_model_band(model_files, tmp_path):
    out = tmp_path / "raman.csv"
    assert main(["spectrum", "raman", str(model_files / "traj.xyz"), "--dt", "1", "--temperature", "300",
                 "-o", str(out), "--model", str(model_files / "alpha.npz"), "--uncertainty", "--samples", "8",
                 "--band", "10,90", "--plot", str(tmp_path / "raman.png")]) == 0
    table = read_csv(out)
    for name in ("unpolarized", "vv", "vh", "isotropic", "anisotropic", "depolarization"):
        assert f"{name}_model_p10" in table and f"{name}_model_p90" in table
    assert np.all(table["unpolarized_model_p10"] <= table["unpolarized_model_p90"])


def test_draws_are_one_model_across_replicas(model_files):
    """Two trajectories get the same draw k (one model): the same trajectory twice gets equal draws,
    also from RPR, whose draws are made on all frames at once."""
    from mdplugin.models import load_model

    path = model_files / "short.xyz"
    _trajectory(path, n=150, seed=4)
    for name in ("dipole.npz", "rpr.npz"):
        means, draws = model_series([path, path], load_model(model_files / name), n_samples=6, seed=1)
        np.testing.assert_allclose(means[0], means[1])
        np.testing.assert_allclose(draws[0], draws[1], rtol=1e-8, atol=1e-12)


def _error(capsys, args) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mdplugin: error:") and "\n" not in err, err
    return err


def test_cli_band_errors_are_one_line_saying_what_works(model_files, tmp_path, capsys):
    traj = str(model_files / "traj.xyz")
    base = ["spectrum", "ir", traj, "--dt", "1", "--temperature", "300", "-o", str(tmp_path / "x.csv")]
    assert "add --model" in _error(capsys, base + ["--uncertainty"])
    err = _error(capsys, base + ["--model", str(model_files / "krr.npz"), "--uncertainty"])
    assert "cannot draw posterior samples" in err and "regressor 'gpr'" in err
    np.save(tmp_path / "mu.npy", np.zeros((100, 3)))
    err = _error(capsys, ["spectrum", "ir", str(tmp_path / "mu.npy"), "--dt", "1", "--temperature", "300", "-o",
                          str(tmp_path / "x.csv"), "--model", str(model_files / "dipole.npz")])
    assert "holds no structures" in err
    assert "expected 'polarizability'" in _error(capsys, ["spectrum", "raman"] + base[2:] + [
        "--model", str(model_files / "dipole.npz")])
    assert "at least 2" in _error(capsys, base + ["--model", str(model_files / "dipole.npz"), "--uncertainty",
                                                  "--samples", "1"])
    assert "0 <= low < high <= 100" in _error(capsys, base + ["--model", str(model_files / "dipole.npz"),
                                                             "--uncertainty", "--band", "95,5"])
    err = _error(capsys, base + ["--model", str(model_files / "dipole.npz"), "--blocks", "9"])
    assert "9 blocks of 33 frames" in err and "use 3 block(s) or fewer" in err
    assert not (tmp_path / "x.csv").exists()


def test_model_band_of_a_periodic_box_whose_cell_changes(tmp_path):
    """A λ-SOAP dipole model on a periodic box of drifting water molecules: its mean and draws are
    continuous across the walls (checked as stored dipoles are), a changing cell needs
    cell_dipole like stored dipoles do, and 'polarization' scales the mean and every draw by <V>/V."""
    import ase.io

    from mdplugin.models import load_model

    from ..models.test_lsoap import SMALL
    from .test_cells import _trajectory as box_trajectory

    train = box_trajectory(n_frames=300)[::15]
    build("lsoap", target="dipole", **SMALL).fit(train, np.array([a.info["dipole"] for a in train])).save(
        tmp_path / "box.npz")
    model = load_model(tmp_path / "box.npz")
    path = tmp_path / "npt.xyz"
    frames = box_trajectory(breathing=0.01, n_frames=120)
    ase.io.write(path, frames, format="extxyz")
    with pytest.raises(DataError, match="cell changes.*--cell-dipole"):
        model_series([path], model, n_samples=4, seed=0)
    (raw,), (raw_draws,) = model_series([path], model, n_samples=4, seed=0, cell_dipole="total")
    (scaled,), (scaled_draws,) = model_series([path], model, n_samples=4, seed=0, cell_dipole="polarization")
    volumes = np.array([a.get_volume() for a in frames])
    factor = (volumes.mean() / volumes)[:, None]
    np.testing.assert_allclose(scaled, raw * factor)
    np.testing.assert_allclose(scaled_draws, raw_draws * factor[None])
    assert np.std(raw_draws - raw[None]) > 0
