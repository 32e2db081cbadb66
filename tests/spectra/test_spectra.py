"""Spectra from synthetic series with known answers: peak positions, band areas, absolute units,
quantum corrections, isotropic/anisotropic Raman separation, rotation invariance."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units as ase_units

from mdplugin.core.errors import ConfigError, DataError
from mdplugin.spectra import (autocorrelation, ir_spectrum, raman_spectrum, spectral_density)
from mdplugin.spectra import factors
from mdplugin.spectra.correlation import C_CM_PER_FS, correlation_sums, lag_window
from mdplugin.core.tensors import random_rotation

DT = 0.5  # fs


def sinusoids(n, nus, amps, rng, dt=DT):
    """(n,) sum of cosines of wavenumbers nus (cm⁻¹) and amplitudes amps with random phases."""
    t = np.arange(n) * dt
    return sum(a * np.cos(2 * np.pi * C_CM_PER_FS * nu * t + rng.uniform(0, 2 * np.pi))
               for nu, a in zip(nus, amps))


def band_area(nu, y, center, half=60.0):
    sel = np.abs(nu - center) <= half
    return np.trapezoid(y[sel], nu[sel])


def harmonic_coordinate(n, nu, temperature, rng, dt=DT):
    """Mass-weighted normal coordinate Q(t) (Å·√amu) of a classical mode of wavenumber nu (cm⁻¹)
    with exactly k_B T of energy (so <Q̇²> = k_B T) and a random phase."""
    omega = 2 * np.pi * C_CM_PER_FS * nu / ase_units.fs  # rad per ASE time unit
    amp = np.sqrt(2 * ase_units.kB * temperature) / omega
    t = np.arange(n) * dt * ase_units.fs
    return amp * np.cos(omega * t + rng.uniform(0, 2 * np.pi))


# ---------------------------------------------------------------------------------------------
# the correlation core


def test_fft_autocorrelation_equals_direct_sum():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3))
    depth = 40
    direct = np.array([np.sum(x[: len(x) - k] * x[k:]) for k in range(depth + 1)])
    np.testing.assert_allclose(correlation_sums(x, depth), direct, rtol=1e-10, atol=1e-9)
    acf = autocorrelation(x, depth, subtract_mean=False)
    np.testing.assert_allclose(acf, direct / (len(x) - np.arange(depth + 1)), rtol=1e-10)


def test_parseval_without_window():
    """∫ G dω/2π over the whole band = C(0) when no window is applied."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2000, 2))
    acf = autocorrelation(x, 100)
    nu, g = spectral_density(acf, DT, window="none", pad=1)
    omega = 2 * np.pi * C_CM_PER_FS * nu
    area = 2 * np.trapezoid(g, omega) / (2 * np.pi)  # two-sided
    assert area == pytest.approx(acf[0], rel=0.02)


def test_lag_window_is_half_of_a_symmetric_window():
    w = lag_window("hann", 10)
    assert w[0] == pytest.approx(1.0) and w[-1] == pytest.approx(0.0)
    np.testing.assert_allclose(w, np.hanning(21)[10:])
    np.testing.assert_allclose(lag_window("none", 5), 1.0)
    with pytest.raises(ConfigError):
        lag_window("no-such-window", 5)


def test_lag_window_with_parameters():
    """A window with a parameter is written name:value (numpy's Kaiser window of the same β); the
    name alone says how to give the parameter instead of scipy's message."""
    np.testing.assert_allclose(lag_window("kaiser:8", 10), np.kaiser(21, 8.0)[10:])
    w = lag_window("tukey:0.5", 10)  # flat over the inner half, tapering to 0 at the end
    assert w[0] == pytest.approx(1.0) and w[5] == pytest.approx(1.0) and w[-1] == pytest.approx(0.0)
    with pytest.raises(ConfigError, match="kaiser:VALUE"):
        lag_window("kaiser", 10)
    with pytest.raises(ConfigError, match="kaiser:x"):
        lag_window("kaiser:x", 10)


@pytest.mark.parametrize("window", ["hann", "blackman", "none"])
def test_sinusoids_give_peaks_at_their_frequencies_and_areas_in_amplitude_ratio(window):
    rng = np.random.default_rng(3)
    nus, amps = [700.0, 1650.0, 3400.0], [1.0, 0.5, 2.0]
    x = sinusoids(40000, nus, amps, rng)[:, None]
    depth = 2000
    nu, g = spectral_density(autocorrelation(x, depth), DT, window=window, pad=4)
    bin_width = nu[1] - nu[0]
    areas = []
    for c in nus:
        sel = np.abs(nu - c) < 60
        peak = nu[sel][np.argmax(g[sel])]
        assert abs(peak - c) <= bin_width
        areas.append(band_area(nu, g, c))
    areas = np.array(areas)
    # band areas are variances: in the ratio of the squared amplitudes
    tol = 0.02 if window != "none" else 0.1
    np.testing.assert_allclose(areas / areas[0], (np.array(amps) / amps[0]) ** 2, rtol=tol)


# ---------------------------------------------------------------------------------------------
# IR


@pytest.mark.parametrize("form", ["derivative", "omega2"])
def test_ir_band_areas_are_harmonic_intensities_in_km_per_mol(form):
    """A dipole μ = μ₀ + Σ_k d_k Q_k(t) of classical harmonic modes at temperature T: the band
    integrals are |d_k|² in km/mol, as ASE's Infrared reports them (42.255 km/mol per (D/Å)²/amu)."""
    rng = np.random.default_rng(4)
    temperature = 300.0
    nus = [1600.0, 3650.0, 3750.0]
    d = rng.normal(scale=0.05, size=(3, 3))  # e/√amu, one row per mode
    n = 30000
    mu = np.array([1.0, -0.5, 0.3]) + sum(np.outer(harmonic_coordinate(n, nu, temperature, rng), dk)
                                          for nu, dk in zip(nus, d))
    r = ir_spectrum([mu], DT, temperature, depth=2000, form=form)
    assert r.units["ir"] == "km mol^-1 (cm^-1)^-1"
    for nu, dk in zip(nus, d):
        expected = np.sum(dk**2) / ase_units.Debye**2 * 42.255  # (D/Å)²/amu -> km/mol
        assert r.band_area("ir", nu - 45, nu + 45) == pytest.approx(expected, rel=0.02)
    np.testing.assert_allclose(r.peaks(), nus, atol=r.wavenumber[1])
    np.testing.assert_allclose(r.components["ir"], r.components["ir_x"] + r.components["ir_y"]
                               + r.components["ir_z"], rtol=1e-12, atol=1e-12)


def test_derivative_and_omega2_forms_agree():
    """Up to near the Nyquist wavenumber (16678 cm⁻¹ at 1 fs), where finite differences alone would
    lose a factor sinc²(ωΔt/2) = 0.66 at 11000 cm⁻¹."""
    rng = np.random.default_rng(5)
    lines = [900.0, 2100.0, 11000.0]
    mu = np.stack([sinusoids(20000, lines, [0.3, 0.1, 0.02], rng, dt=1.0) for _ in range(3)], axis=1)
    mu += 0.01 * rng.normal(size=mu.shape)
    a = ir_spectrum([mu], 1.0, 300.0, depth=1000, form="derivative")
    b = ir_spectrum([mu], 1.0, 300.0, depth=1000, form="omega2")
    for c in lines:
        assert a.band_area("ir", c - 50, c + 50) == pytest.approx(b.band_area("ir", c - 50, c + 50), rel=0.01)


def test_several_series_are_averaged():
    rng = np.random.default_rng(6)
    one = np.stack([sinusoids(8000, [1000.0], [0.2], rng) for _ in range(3)], axis=1)
    two = np.stack([sinusoids(8000, [1000.0], [0.2], rng) for _ in range(3)], axis=1)
    both = ir_spectrum([one, two], DT, 300.0, depth=500)
    r1, r2 = ir_spectrum([one], DT, 300.0, depth=500), ir_spectrum([two], DT, 300.0, depth=500)
    np.testing.assert_allclose(both.total, 0.5 * (r1.total + r2.total), rtol=1e-3, atol=1e-6 * r1.total.max())


def test_quantum_correction_factors():
    rng = np.random.default_rng(7)
    temperature = 100.0
    mu = np.outer(harmonic_coordinate(20000, 1500.0, temperature, rng), [0.1, 0.0, 0.0])
    spectra = {c: ir_spectrum([mu], DT, temperature, depth=1000, correction=c) for c in factors.CORRECTIONS}
    x = factors.C2_CM_K * 1500.0 / temperature
    harm = spectra["harmonic"].band_area("ir", 1400, 1600)
    expected = {"harmonic": 1.0, "none": (1 - np.exp(-x)) / x, "standard": 2 / x * np.tanh(x / 2),
                "schofield": 2 / x * np.sinh(x / 2)}
    for c, ratio in expected.items():
        assert spectra[c].band_area("ir", 1400, 1600) / harm == pytest.approx(ratio, rel=0.03)
    # all factors -> 1 in the classical limit
    nu = np.linspace(0, 4000, 50)
    for c in factors.CORRECTIONS:
        np.testing.assert_allclose(factors.correction_ratio(nu, 1e7, c), 1.0, rtol=1e-3)
        assert np.all(np.isfinite(factors.correction_ratio(np.linspace(0, 40000, 9), 10.0, c)))


def test_error_bands_from_blocks():
    rng = np.random.default_rng(8)
    mu = rng.normal(size=(12000, 3))
    r = ir_spectrum([mu], DT, 300.0, depth=200)
    assert r.meta["n_blocks"] == (12000 - 1) // 800  # blocks of twice the depth (400 frames)
    err = r.errors["ir"][1:]
    assert np.all(np.isfinite(err)) and np.all(err > 0)
    # white noise: the spectrum is flat within a few standard errors
    sel = (r.wavenumber > 2000) & (r.wavenumber < 20000)
    mean = np.mean(r.total[sel] / r.wavenumber[sel] ** 2)  # ω² G with G flat
    z = (r.total[sel] - mean * r.wavenumber[sel] ** 2) / r.errors["ir"][sel]
    assert np.mean(np.abs(z) < 4) > 0.95
    few = ir_spectrum([mu[:900]], DT, 300.0, depth=200)
    assert few.meta["n_blocks"] == 0 and few.errors == {}  # no estimate: no error columns either


# ---------------------------------------------------------------------------------------------
# Raman


def _random_symmetric_traceless(rng):
    a = rng.normal(size=(3, 3))
    a = 0.5 * (a + a.T)
    return a - np.trace(a) / 3 * np.eye(3)


def test_isotropic_signal_has_no_anisotropic_spectrum_and_vice_versa():
    rng = np.random.default_rng(9)
    n = 16000
    s = sinusoids(n, [800.0, 1700.0], [0.3, 0.2], rng) + 0.02 * rng.normal(size=n)
    iso = (1.5 + s)[:, None, None] * np.eye(3)
    r_iso = raman_spectrum([iso], DT, 300.0, depth=800)
    assert np.abs(r_iso.components["anisotropic"]).max() < 1e-12 * r_iso.components["isotropic"].max()
    strong = r_iso.total > 0.05 * r_iso.total.max()
    np.testing.assert_allclose(r_iso.components["depolarization"][strong], 0.0, atol=1e-12)

    b1, b2 = _random_symmetric_traceless(rng), _random_symmetric_traceless(rng)
    s1 = sinusoids(n, [900.0], [1.0], rng) + 0.02 * rng.normal(size=n)
    s2 = sinusoids(n, [2500.0], [0.5], rng)
    aniso = 1.5 * np.eye(3) + s1[:, None, None] * b1 + s2[:, None, None] * b2
    r_an = raman_spectrum([aniso], DT, 300.0, depth=800)
    assert np.abs(r_an.components["isotropic"]).max() < 1e-12 * r_an.components["anisotropic"].max()
    strong = r_an.total > 0.05 * r_an.total.max()
    np.testing.assert_allclose(r_an.components["depolarization"][strong], 0.75, rtol=1e-10)


def test_raman_spectra_are_rotation_and_reflection_invariant():
    rng = np.random.default_rng(10)
    n = 6000
    b = _random_symmetric_traceless(rng)
    alpha = (1.4 + sinusoids(n, [1200.0], [0.1], rng))[:, None, None] * np.eye(3) \
        + sinusoids(n, [1200.0], [0.2], rng)[:, None, None] * b
    r0 = raman_spectrum([alpha], DT, 300.0, depth=500)
    for reflection in (False, True):
        R = random_rotation(rng, reflection=reflection)
        rotated = np.einsum("ij,njk,lk->nil", R, alpha, R)
        r1 = raman_spectrum([rotated], DT, 300.0, depth=500)
        for k in ("unpolarized", "vv", "vh", "isotropic", "anisotropic"):
            np.testing.assert_allclose(r1.components[k], r0.components[k], rtol=1e-8,
                                       atol=1e-10 * r0.components[k].max())


def test_raman_band_area_is_the_raman_activity():
    """α(t) = α₀ + (a'·1 + b')·Q(t) for a classical harmonic mode: the unpolarized band integral is
    the activity 45 a'² + 7 γ'² (Å⁴/amu), with γ'² = (3/2) tr b'², and ρ = 3γ'²/(45a'² + 4γ'²)."""
    rng = np.random.default_rng(11)
    temperature = 200.0
    a1, b1 = 0.3, 0.2 * _random_symmetric_traceless(rng)
    q = harmonic_coordinate(30000, 1400.0, temperature, rng)
    alpha = 1.2 * np.eye(3) + q[:, None, None] * (a1 * np.eye(3) + b1)
    r = raman_spectrum([alpha], DT, temperature, depth=2000)
    gamma2 = 1.5 * np.sum(b1 * b1)
    assert r.band_area("unpolarized", 1350, 1450) == pytest.approx(45 * a1**2 + 7 * gamma2, rel=0.01)
    vv, vh = r.band_area("vv", 1350, 1450), r.band_area("vh", 1350, 1450)
    assert vh / vv == pytest.approx(3 * gamma2 / (45 * a1**2 + 4 * gamma2), rel=1e-3)
    assert r.units["unpolarized"] == "angstrom^4 amu^-1 (cm^-1)^-1"


def test_raman_laser_and_bose_factors():
    rng = np.random.default_rng(12)
    temperature = 300.0
    alpha = (1.0 + 0.1 * harmonic_coordinate(10000, 500.0, temperature, rng))[:, None, None] * np.eye(3)
    base = raman_spectrum([alpha], DT, temperature, depth=1000)
    laser = raman_spectrum([alpha], DT, temperature, depth=1000, laser=18797.0)
    bose = raman_spectrum([alpha], DT, temperature, depth=1000, bose=True)
    i = int(np.argmax(base.total))
    nu = base.wavenumber[i]
    assert laser.total[i] / base.total[i] == pytest.approx(((18797.0 - nu) / 18797.0) ** 4)
    x = factors.C2_CM_K * nu / temperature
    assert bose.total[i] / base.total[i] == pytest.approx(1 / (1 - np.exp(-x)))


# ---------------------------------------------------------------------------------------------
# bad input: one clear error


@pytest.mark.parametrize("bad, exc, words", [
    (dict(series=[np.zeros((100, 4))]), DataError, "shape"),
    (dict(series=[np.zeros(100)]), DataError, "shape"),
    (dict(dt=0.0), ConfigError, "time step"),
    (dict(dt=-1.0), ConfigError, "time step"),
    (dict(depth=100.0), DataError, "fewer than"),
    (dict(temperature=None), ConfigError, "temperature"),
    (dict(temperature=-5.0), ConfigError, "temperature"),
    (dict(window="nope"), ConfigError, "window"),
    (dict(form="nope"), ConfigError, "form"),
    (dict(correction="nope"), ConfigError, "correction"),
    (dict(block=10.0), ConfigError, "block"),
])
def test_bad_ir_input_is_one_clear_error(bad, exc, words):
    rng = np.random.default_rng(13)
    args = dict(series=[rng.normal(size=(100, 3))], dt=DT, temperature=300.0, depth=10.0)
    args.update(bad)
    with pytest.raises(exc) as info:
        ir_spectrum(**args)
    msg = str(info.value)
    assert words in msg and "\n" not in msg


def test_bad_raman_input_is_one_clear_error():
    with pytest.raises(DataError, match="shape"):
        raman_spectrum([np.zeros((100, 3))], DT, 300.0)
    with pytest.raises(DataError, match="NaN"):
        raman_spectrum([np.full((100, 3, 3), np.nan)], DT, 300.0)
    with pytest.raises(ConfigError, match="laser"):
        raman_spectrum([np.random.default_rng(0).normal(size=(100, 3, 3))], DT, 300.0, laser=-1.0)


@pytest.mark.parametrize("offset", [0.2, 0.5, 0.8])
def test_band_peak_finds_a_band_between_the_points_of_a_coarse_grid(offset):
    """A dipole oscillating at a wavenumber that lies between the grid points of a 100 fs correlation
    depth (grid ~42 cm⁻¹, the liquid-water example's quick mode): the parabola through the highest
    point and its neighbours finds it within a quarter of the spacing, the highest grid point alone
    can be half a spacing off."""
    from mdplugin.spectra import band_peak

    coarse = ir_spectrum([np.zeros((400, 3))], DT, 300.0, depth=100.0)
    spacing = coarse.wavenumber[1] - coarse.wavenumber[0]
    target = coarse.wavenumber[np.argmin(np.abs(coarse.wavenumber - 1600.0))] + offset * spacing
    rng = np.random.default_rng(5)
    mu = np.zeros((20000, 3))
    mu[:, 2] = sinusoids(20000, [target], [0.05], rng)
    spec = ir_spectrum([mu], DT, 300.0, depth=100.0)
    peak = band_peak(spec.wavenumber, spec.total, 1300.0, 2000.0)
    assert abs(peak - target) < 0.25 * spacing
    grid = spec.wavenumber[(spec.wavenumber >= 1300) & (spec.wavenumber <= 2000)]
    assert abs(peak - target) < np.min(np.abs(grid - target)) + 0.25 * spacing
    top = float(spec.wavenumber.max())
    with pytest.raises(ConfigError, match=f"{top + 100:g}-{top + 200:g} cm"):
        band_peak(spec.wavenumber, spec.total, top + 100, top + 200)
