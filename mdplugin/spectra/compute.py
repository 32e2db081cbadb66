"""IR and Raman spectra from dipole and polarizability time series.

IR (dipoles μ, e·Å): the molar absorption coefficient (Napierian, per wavenumber)

    κ(ν̃) = N_A/(12 ε₀ c²) · D_μ(ν̃),   D_μ = 2c β ω² G_μ(ω) · Q/Q_harm,

in km mol⁻¹ per cm⁻¹: the integral over a band is the integrated absorption intensity in km/mol,
the quantity harmonic codes print (ASE's ``Infrared`` in km/mol, Gaussian's "IR Inten").

Raman (polarizabilities α, Å³): ᾱ = tr α/3 and β = α − ᾱ·1 (of the symmetrised α);
``isotropic = 45·D_ᾱ`` and ``anisotropic = 7·(3/2)·D_β`` with ``D_β`` from ``<β(0):β(t)>``;
then, for an isotropic sample and linearly polarised light at 90°,
``VV = isotropic + 4/7·anisotropic``, ``VH = 3/7·anisotropic``, ``unpolarized = VV + VH``
and the depolarisation ratio ``ρ = VH/VV`` (0.75 for non-totally-symmetric modes).
The band integral of ``unpolarized`` is the Raman activity ``45 a'² + 7 γ'²`` in Å⁴/amu.
Optional factors: ``((ν̃_L − ν̃)/ν̃_L)⁴`` for a laser at ν̃_L and the Bose factor ``n(ω) + 1``.

``D`` is defined in :mod:`mdplugin.spectra.factors`. Several series are averaged by summing their
lagged products before normalising (each lag weighted by its number of pairs); statistical
errors are the standard error of the spectra of independent blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.errors import ConfigError, DataError
from . import correlation, factors

#: derivative forms: finite differences with sinc correction, or ω² times the dipole spectrum
FORMS = ("derivative", "omega2")

#: minimum number of blocks for an error estimate
MIN_BLOCKS = 3

#: default cap of the correlation depth, fs
DEFAULT_MAX_DEPTH_FS = 2000.0


@dataclass
class SpectrumResult:
    """A spectrum on a wavenumber grid.

    Attributes
    ----------
    kind : "ir" or "raman".
    wavenumber : (n,) cm⁻¹.
    components : name -> (n,) values; the first is the total (IR) or unpolarized (Raman).
    errors : name -> (n,) standard errors (NaN when there are too few blocks).
    units : name -> unit string.
    meta : dt (fs), depth (frames), window, form, correction, temperature (K), n_series,
        n_frames, n_blocks, block (frames), and the laser/bose options for Raman.
    """

    kind: str
    wavenumber: np.ndarray
    components: dict[str, np.ndarray]
    errors: dict[str, np.ndarray]
    units: dict[str, str]
    meta: dict = field(default_factory=dict)

    @property
    def total(self) -> np.ndarray:
        """The first component: IR absorption or unpolarized Raman."""
        return next(iter(self.components.values()))

    def band_area(self, name: str, lo: float, hi: float) -> float:
        """Integral of component ``name`` over ``lo <= ν̃ <= hi`` (cm⁻¹), trapezoidal rule."""
        sel = (self.wavenumber >= lo) & (self.wavenumber <= hi)
        return float(np.trapezoid(self.components[name][sel], self.wavenumber[sel]))

    def peaks(self, name: str | None = None, prominence: float = 0.05, lo: float = 50.0) -> np.ndarray:
        """Wavenumbers (cm⁻¹) of peaks of a component above ``lo`` with a prominence of at least
        ``prominence`` times the largest value, parabolic interpolation between grid points."""
        from scipy.signal import find_peaks

        y = self.components[name] if name else self.total
        y = np.where(self.wavenumber >= lo, np.nan_to_num(y), 0.0)
        top = y.max()
        if not top > 0:
            return np.empty(0)
        idx, _ = find_peaks(y, prominence=prominence * top)
        out = []
        dnu = self.wavenumber[1] - self.wavenumber[0]
        for i in idx:
            a, b, c = y[i - 1], y[i], y[i + 1]
            den = a - 2 * b + c
            shift = 0.5 * (a - c) / den if den != 0 else 0.0
            out.append(self.wavenumber[i] + shift * dnu)
        return np.array(out)

    @property
    def line_width(self) -> float:
        """Half width (cm⁻¹) of a line at this correlation depth, about 1/(depth·c) for the Hann
        window: bands closer than this merge (``inf`` for a zero depth)."""
        span = self.meta["depth_fs"] * correlation.C_CM_PER_FS
        return 1.0 / span if span > 0 else float("inf")

    def summary(self) -> str:
        """One line: frames, series, depth, line width and the first peaks (cm⁻¹)."""
        peaks = ", ".join(f"{p:.0f}" for p in self.peaks()[:8])
        return (f"{self.kind} spectrum of {self.meta['n_frames']} frames ({self.meta['n_series']} series, depth "
                f"{self.meta['depth_fs']:g} fs: lines about {self.line_width:.0f} cm^-1 wide; peaks "
                f"{peaks or 'none'} cm^-1)")


# ----------------------------------------------------------------------------------------------
# the shared engine


def _frames(length: float, dt: float, what: str) -> int:
    """A length in fs as a whole number of frames of ``dt`` fs; a ConfigError naming ``what`` when
    the ratio overflows (e.g. a depth of 1e300 fs at a time step of 1e-300 fs)."""
    ratio = length / dt
    if not np.isfinite(ratio):
        raise ConfigError(f"{what} of {length:g} fs is too many frames at a time step of {dt:g} fs")
    return int(round(ratio))


def _check_common(series: list[np.ndarray], dt: float, depth: float | None, block: float | None,
                  form: str, pad: int, names: list[str]) -> tuple[int, int]:
    """Validate and turn depth/block (fs) into frames. Returns (depth, block) in frames."""
    if not series:
        raise DataError("no time series given")
    try:
        ok = bool(np.isfinite(float(dt)) and float(dt) > 0)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"time step must be positive, got {dt!r} fs")
    if form not in FORMS:
        raise ConfigError(f"unknown form {form!r} (use {' or '.join(FORMS)})")
    if int(pad) != pad or pad < 1:
        raise ConfigError(f"zero-padding factor must be an integer >= 1, got {pad!r}")
    usable = min(len(s) for s in series) - (1 if form == "derivative" else 0)
    if depth is None:
        d = min(usable // 6, int(round(min(DEFAULT_MAX_DEPTH_FS / dt, usable))))
        d = max(d, min(usable - 1, 8))
    else:
        if not (np.isfinite(depth) and depth > 0):
            raise ConfigError(f"correlation depth must be a positive number of fs, got {depth!r}")
        d = _frames(depth, dt, "correlation depth")
    if d < 2:
        raise DataError(f"correlation depth of {d} frame(s) is too short (series of {usable + (form == 'derivative')} frames, dt {dt} fs)")
    for i, s in enumerate(series):
        n = len(s) - (1 if form == "derivative" else 0)
        if n <= d:
            need = d + 1 + (1 if form == "derivative" else 0)
            raise DataError(f"{names[i]} has {len(s)} frames, fewer than the {need} the correlation depth "
                            f"of {d * dt:g} fs needs")
    if block is None:
        b = 2 * d
    else:
        if not (np.isfinite(block) and block > 0):
            raise ConfigError(f"block length must be a positive number of fs, got {block!r}")
        b = _frames(block, dt, "block length")
        if b < 2 * d:
            raise ConfigError(f"block length {block:g} fs is shorter than twice the correlation depth ({2 * d * dt:g} fs)")
    return d, b


def _channel_sums(x: np.ndarray, groups: list[np.ndarray], depth: int) -> np.ndarray:
    """Lagged products (depth+1, n_channels) of x (n, m), summed over the components of each group."""
    x = x - x.mean(axis=0)
    return np.stack([correlation.correlation_sums(x[:, g], depth) for g in groups], axis=1)


def _derivative_spectra(series: list[np.ndarray], groups: list[np.ndarray], dt: float, depth: int,
                        window: str, pad: int, form: str, block: int):
    """Spectral densities of the time derivative, ``ω²G`` in [x]²/fs, per channel.

    Returns ``(nu (n_nu,), F (n_nu, n_channels), F_blocks (n_blocks, n_nu, n_channels))``.
    """
    prepared = [np.diff(s, axis=0) / dt if form == "derivative" else s for s in series]

    def density(chunks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        sums = sum(_channel_sums(c, groups, depth) for c in chunks)
        counts = sum(correlation.pair_counts(len(c), depth) for c in chunks)
        nu, g = correlation.spectral_density(sums / counts[:, None], dt, window, pad)
        omega = 2.0 * np.pi * correlation.C_CM_PER_FS * nu  # rad/fs
        if form == "derivative":
            half = omega * dt / 2.0
            sinc = np.sinc(half / np.pi)  # |transfer function| of the forward (midpoint) difference / ω
            return nu, g / (sinc**2)[:, None]
        return nu, g * (omega**2)[:, None]

    nu, f = density(prepared)
    blocks = []
    for c in prepared:
        for sl in correlation.split_blocks(len(c), block):
            blocks.append(density([c[sl]])[1])
    f_blocks = np.array(blocks) if len(blocks) >= MIN_BLOCKS else None
    return nu, f, f_blocks


def _stderr(blocks: np.ndarray | None, shape) -> np.ndarray:
    if blocks is None:
        return np.full(shape, np.nan)
    return blocks.std(axis=0, ddof=1) / np.sqrt(len(blocks))


def _limit(nu: np.ndarray, max_wavenumber: float | None) -> np.ndarray:
    if max_wavenumber is None:
        return np.ones(nu.shape, bool)
    if not max_wavenumber > 0:
        raise ConfigError(f"maximum wavenumber must be positive, got {max_wavenumber!r}")
    return nu <= max_wavenumber


def _meta(series, dt, depth, block, window, form, correction, temperature, pad, f_blocks) -> dict:
    return dict(dt=float(dt), depth=int(depth), depth_fs=float(depth * dt), window=window, form=form,
                correction=correction, temperature=float(temperature), pad=int(pad),
                n_series=len(series), n_frames=int(sum(len(s) for s in series)),
                block=int(block), n_blocks=0 if f_blocks is None else len(f_blocks))


# ----------------------------------------------------------------------------------------------
# IR


def ir_spectrum(series: list[np.ndarray], dt: float, temperature: float, depth: float | None = None,
                window: str = "hann", form: str = "derivative", correction: str = "harmonic",
                pad: int = 4, block: float | None = None, max_wavenumber: float | None = None,
                names: list[str] | None = None) -> SpectrumResult:
    """IR absorption from dipole series.

    Parameters
    ----------
    series : dipole time series, each (n_frames_i, 3) in e·Å; several are averaged.
    dt : time between frames, fs.
    temperature : K (sets β in the absolute units and the quantum correction).
    depth : correlation depth in fs (default: a sixth of the shortest series, at most 2 ps).
    window : lag window, "hann" (default), "hamming", "blackman", "bartlett", "none", ...
    form : "derivative" (finite differences of μ with the sinc correction) or "omega2"
        (ω² times the dipole spectrum).
    correction : quantum correction "harmonic" (default), "none", "standard" or "schofield".
    pad : zero padding of the ACF, factor (the grid spacing is 1/(2·pad·depth·c)).
    block : block length for error estimates, fs (default twice the depth).
    max_wavenumber : cut the grid at this wavenumber (cm⁻¹); default the Nyquist wavenumber.
    names : how error messages call the series (e.g. file names); default "series i".

    Returns
    -------
    SpectrumResult with components ``ir`` (total) and ``ir_x, ir_y, ir_z`` in km mol⁻¹ per cm⁻¹.
    """
    names = _names(names, series)
    series = [_as_dipoles(s, n) for s, n in zip(series, names)]
    correction = factors.check_correction(correction)
    _check_temperature(temperature)
    d, b = _check_common(series, dt, depth, block, form, pad, names)
    groups = [np.array([0]), np.array([1]), np.array([2])]
    nu, f, f_blocks = _derivative_spectra(series, groups, dt, d, window, pad, form, b)

    def convert(arr):
        scale = factors.KM_MOL_PER_E2_AMU * factors.correction_ratio(nu, temperature, correction)
        return factors.harmonic_density(nu, arr, temperature) * scale.reshape((-1,) + (1,) * (arr.ndim - 1))

    ir = convert(f)
    ir_blocks = None if f_blocks is None else np.stack([convert(fb) for fb in f_blocks])
    keep = _limit(nu, max_wavenumber)
    comps = {"ir": ir.sum(axis=1), "ir_x": ir[:, 0], "ir_y": ir[:, 1], "ir_z": ir[:, 2]}
    errs = {k: np.full(nu.shape, np.nan) for k in comps}
    if ir_blocks is not None:
        errs["ir"] = _stderr(ir_blocks.sum(axis=2), nu.shape)
        for j, k in enumerate(("ir_x", "ir_y", "ir_z")):
            errs[k] = _stderr(ir_blocks[:, :, j], nu.shape)
    unit = "km mol^-1 (cm^-1)^-1"
    return SpectrumResult(
        kind="ir", wavenumber=nu[keep], components={k: v[keep] for k, v in comps.items()},
        errors={k: v[keep] for k, v in errs.items()}, units={k: unit for k in comps},
        meta=_meta(series, dt, d, b, window, form, correction, temperature, pad, f_blocks))


# ----------------------------------------------------------------------------------------------
# Raman


def raman_spectrum(series: list[np.ndarray], dt: float, temperature: float, depth: float | None = None,
                   window: str = "hann", form: str = "derivative", correction: str = "harmonic",
                   pad: int = 4, block: float | None = None, max_wavenumber: float | None = None,
                   laser: float | None = None, bose: bool = False, names: list[str] | None = None) -> SpectrumResult:
    """Raman spectra from polarizability series.

    Parameters are those of :func:`ir_spectrum` plus ``laser`` (excitation wavenumber, cm⁻¹:
    multiplies by ``((ν̃_L − ν̃)/ν̃_L)⁴``) and ``bose`` (multiplies by ``n(ω) + 1``);
    ``series`` are (n_frames_i, 3, 3) or (n_frames_i, 9) polarizabilities in Å³.

    Returns
    -------
    SpectrumResult with components ``unpolarized`` (VV + VH), ``vv``, ``vh``, ``isotropic``,
    ``anisotropic`` in Å⁴ amu⁻¹ per cm⁻¹ and ``depolarization`` (VH/VV, dimensionless, NaN where
    VV is below 10⁻⁶ of its maximum).
    """
    names = _names(names, series)
    tensors = [_as_polarizabilities(s, n) for s, n in zip(series, names)]
    correction = factors.check_correction(correction)
    _check_temperature(temperature)
    # channels: column 0 = ᾱ, columns 1..9 = β (traceless part, row-major)
    flat = []
    for a in tensors:
        a = 0.5 * (a + np.swapaxes(a, 1, 2))
        mean = np.trace(a, axis1=1, axis2=2) / 3.0
        beta = a - mean[:, None, None] * np.eye(3)
        flat.append(np.concatenate([mean[:, None], beta.reshape(len(a), 9)], axis=1))
    d, b = _check_common(flat, dt, depth, block, form, pad, names)
    groups = [np.array([0]), np.arange(1, 10)]
    nu, f, f_blocks = _derivative_spectra(flat, groups, dt, d, window, pad, form, b)

    extra = factors.correction_ratio(nu, temperature, correction)
    if laser is not None:
        extra = extra * factors.laser_factor(nu, laser)
    if bose:
        extra = extra * factors.bose_factor(nu, temperature)

    def combos(arr):
        dens = factors.harmonic_density(nu, arr, temperature) * extra[:, None]
        iso = 45.0 * dens[:, 0]
        aniso = 10.5 * dens[:, 1]
        vv = iso + 4.0 / 7.0 * aniso
        vh = 3.0 / 7.0 * aniso
        return {"unpolarized": vv + vh, "vv": vv, "vh": vh, "isotropic": iso, "anisotropic": aniso}

    comps = combos(f)
    comps["depolarization"] = _ratio(comps["vh"], comps["vv"])
    errs = {k: np.full(nu.shape, np.nan) for k in comps}
    if f_blocks is not None:
        per_block = [combos(fb) for fb in f_blocks]
        for k in comps:
            if k == "depolarization":
                vals = np.array([_ratio(p["vh"], p["vv"], comps["vv"]) for p in per_block])
            else:
                vals = np.array([p[k] for p in per_block])
            errs[k] = _stderr(vals, nu.shape)
    keep = _limit(nu, max_wavenumber)
    unit = "angstrom^4 amu^-1 (cm^-1)^-1"
    units = {k: unit for k in comps}
    units["depolarization"] = "1"
    meta = _meta(tensors, dt, d, b, window, form, correction, temperature, pad, f_blocks)
    meta.update(laser=laser, bose=bool(bose))
    return SpectrumResult(
        kind="raman", wavenumber=nu[keep], components={k: v[keep] for k, v in comps.items()},
        errors={k: v[keep] for k, v in errs.items()}, units=units, meta=meta)


def _ratio(num: np.ndarray, den: np.ndarray, ref: np.ndarray | None = None) -> np.ndarray:
    ref = den if ref is None else ref
    ok = ref > 1e-6 * np.max(ref) if np.max(ref) > 0 else np.zeros(ref.shape, bool)
    out = np.full(num.shape, np.nan)
    out[ok] = num[ok] / den[ok]
    return out


# ----------------------------------------------------------------------------------------------
# input checks


def _check_temperature(temperature) -> None:
    if temperature is None:
        raise ConfigError("a temperature (K) is needed: absolute IR/Raman intensities scale with 1/(k_B T) "
                          "(give the simulation temperature, --temperature)")
    if not (np.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"temperature must be positive, got {temperature!r} K")


def _names(names: list[str] | None, series) -> list[str]:
    if isinstance(series, (np.ndarray, str)) or not hasattr(series, "__len__"):
        what = f"one array of shape {series.shape}" if isinstance(series, np.ndarray) else type(series).__name__
        raise ConfigError(f"series must be a list of time series, got {what}: pass [array] for one series, "
                          f"each (n_frames, 3) dipoles (IR) or (n_frames, 3, 3) / (n_frames, 9) polarizabilities (Raman)")
    if not series:
        raise DataError("no time series given")
    if names is None:
        return [f"series {i}" for i in range(len(series))]
    if len(names) != len(series):
        raise ConfigError(f"{len(names)} names for {len(series)} series")
    return [str(n) for n in names]


def _as_dipoles(s, name: str) -> np.ndarray:
    a = np.asarray(s, dtype=float)
    if a.ndim != 2 or a.shape[1] != 3:
        raise DataError(f"{name}: dipole series has shape {a.shape}, expected (n_frames, 3)")
    if not np.all(np.isfinite(a)):
        raise DataError(f"{name}: dipole series contains NaN or inf")
    return a


def _as_polarizabilities(s, name: str) -> np.ndarray:
    a = np.asarray(s, dtype=float)
    if a.ndim == 2 and a.shape[1] == 9:
        a = a.reshape(-1, 3, 3)
    if a.ndim != 3 or a.shape[1:] != (3, 3):
        raise DataError(f"{name}: polarizability series has shape {a.shape}, expected (n_frames, 3, 3) or (n_frames, 9)")
    if not np.all(np.isfinite(a)):
        raise DataError(f"{name}: polarizability series contains NaN or inf")
    return a
