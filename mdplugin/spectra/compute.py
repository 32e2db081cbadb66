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
lagged products before normalising (each lag weighted by its number of pairs).

Two uncertainties, reported apart:

* **statistical error** (``errors``): the standard error of the spectra of independent blocks
  (segments of each series, or whole replicas), ``std/√n_blocks`` — the noise of a finite
  trajectory, as i-PI's ``i-pi-getacf`` estimates it from blocks;
* **model band** (``bands``): given posterior draws of the model along the trajectory
  (``samples``, from a model's ``sample_predictions``), the spectrum of every draw, all
  transformed at once, and the ``band`` percentiles of those spectra at every wavenumber — how
  much of the spectrum the dipole/polarizability model does not pin down.
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

#: default percentiles (%) of the model band
DEFAULT_BAND = (5.0, 95.0)

#: values per FFT batch of posterior samples (bounds the memory of the sample spectra)
_SAMPLE_BATCH_VALUES = 1 << 23


@dataclass
class SpectrumResult:
    """A spectrum on a wavenumber grid.

    Attributes
    ----------
    kind : "ir" or "raman".
    wavenumber : (n,) cm⁻¹.
    components : name -> (n,) values; the first is the total (IR) or unpolarized (Raman).
    errors : name -> (n,) statistical standard errors from blocks; empty when there are fewer
        than ``MIN_BLOCKS`` blocks (no estimate).
    units : name -> unit string.
    meta : dt (fs), depth (frames), window, form, correction, temperature (K), n_series,
        n_frames, n_blocks, block (frames), the laser/bose options for Raman, and with a model
        band ``n_samples`` and ``band`` (the two percentiles).
    bands : name -> (2, n) lower and upper ``band`` percentiles of the spectra of the posterior
        draws (the model band); empty without draws.
    """

    kind: str
    wavenumber: np.ndarray
    components: dict[str, np.ndarray]
    errors: dict[str, np.ndarray]
    units: dict[str, str]
    meta: dict = field(default_factory=dict)
    bands: dict[str, np.ndarray] = field(default_factory=dict)

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
        return np.array([_vertex(self.wavenumber, y, i) for i in idx])

    def _window(self, window: tuple[float, float] | None) -> np.ndarray:
        if window is None:
            return np.ones(self.wavenumber.shape, bool)
        lo, hi = window
        sel = (self.wavenumber >= lo) & (self.wavenumber <= hi)
        if not sel.any():
            raise ConfigError(f"no wavenumber of the spectrum lies in {lo:g}-{hi:g} cm^-1")
        return sel

    def relative_band_width(self, name: str | None = None, window: tuple[float, float] | None = None) -> float:
        """Width of the model band relative to the spectrum, ``∫(hi − lo) dν̃ / ∫|I| dν̃`` over
        ``window`` (cm⁻¹, default everything) for component ``name`` (default the total): one
        number that shrinks as the model improves (e.g. for a stopping rule on a window)."""
        name = name or next(iter(self.components))
        if name not in self.bands:
            raise ConfigError("this spectrum has no model band (compute it with posterior samples)")
        sel = self._window(window)
        lo, hi = self.bands[name][:, sel]
        scale = float(np.sum(np.abs(np.nan_to_num(self.components[name][sel]))))
        return float(np.sum(hi - lo)) / scale if scale > 0 else float("inf")

    def coverage(self, reference: np.ndarray | "SpectrumResult", name: str | None = None,
                 window: tuple[float, float] | None = None) -> float:
        """Intensity-weighted fraction of wavenumbers at which the model band holds ``reference``
        (a spectrum on the same grid, or its (n,) values of component ``name``): the sum of the
        reference's positive intensity where ``lo ≤ reference ≤ hi``, over its sum (in ``window``)."""
        name = name or next(iter(self.components))
        if name not in self.bands:
            raise ConfigError("this spectrum has no model band (compute it with posterior samples)")
        ref = reference.components[name] if isinstance(reference, SpectrumResult) else np.asarray(reference, float)
        if ref.shape != self.wavenumber.shape:
            raise ConfigError(f"reference spectrum has {ref.shape} values, this one {self.wavenumber.shape}: "
                              f"compute both with the same dt, depth, pad and maximum wavenumber")
        sel = self._window(window)
        lo, hi = self.bands[name][:, sel]
        w = np.clip(np.nan_to_num(ref[sel]), 0.0, None)
        inside = (ref[sel] >= lo) & (ref[sel] <= hi)
        return float(np.sum(w * inside) / np.sum(w)) if np.sum(w) > 0 else float("nan")

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


def _vertex(wavenumber: np.ndarray, y: np.ndarray, i: int) -> float:
    """Wavenumber of the vertex of the parabola through points ``i - 1, i, i + 1`` of ``y`` on the
    uniform grid ``wavenumber`` (cm⁻¹); the grid point itself at either end of the grid."""
    if i == 0 or i == len(y) - 1:
        return float(wavenumber[i])
    a, b, c = y[i - 1], y[i], y[i + 1]
    den = a - 2 * b + c
    shift = 0.5 * (a - c) / den if den != 0 else 0.0
    return float(wavenumber[i] + shift * (wavenumber[1] - wavenumber[0]))


def band_peak(wavenumber: np.ndarray, intensity: np.ndarray, lo: float, hi: float) -> float:
    """Wavenumber (cm⁻¹) of the highest point of a spectrum in the window ``lo <= ν̃ <= hi``, between
    grid points by a parabola through the highest point and its two neighbours (a spectrum of a short
    correlation depth has a coarse grid: 42 cm⁻¹ at 100 fs with the default padding).

    ``wavenumber``: uniform grid, shape (n,); ``intensity``: shape (n,)."""
    nu, y = np.asarray(wavenumber, float), np.nan_to_num(np.asarray(intensity, float))
    inside = np.flatnonzero((nu >= lo) & (nu <= hi))
    if inside.size == 0:
        raise ConfigError(f"no wavenumber of the spectrum lies in {lo:g}-{hi:g} cm^-1")
    return _vertex(nu, y, int(inside[np.argmax(y[inside])]))


def _frames(length: float, dt: float, what: str) -> int:
    """A length in fs as a whole number of frames of ``dt`` fs; a ConfigError naming ``what`` when
    the ratio overflows (e.g. a depth of 1e300 fs at a time step of 1e-300 fs)."""
    ratio = length / dt
    if not np.isfinite(ratio):
        raise ConfigError(f"{what} of {length:g} fs is too many frames at a time step of {dt:g} fs")
    return int(round(ratio))


def _check_common(series: list[np.ndarray], dt: float, depth: float | None, block: float | None,
                  blocks: int | None, form: str, pad: int, names: list[str]) -> tuple[int, list[int], bool]:
    """Validate and turn depth/block (fs) into frames.

    Returns ``(depth, block lengths per series (frames), requested)``; ``requested`` is True when
    the user asked for blocks (``block`` or ``blocks``), so that too few of them is an error
    rather than a missing estimate."""
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
    lag = 1 if form == "derivative" else 0
    usable = min(len(s) for s in series) - lag
    if depth is None:
        d = min(usable // 6, int(round(min(DEFAULT_MAX_DEPTH_FS / dt, usable))))
        d = max(d, min(usable - 1, 8))
    else:
        if not (np.isfinite(depth) and depth > 0):
            raise ConfigError(f"correlation depth must be a positive number of fs, got {depth!r}")
        d = _frames(depth, dt, "correlation depth")
    if d < 2:
        raise DataError(f"correlation depth of {d} frame(s) is too short (series of {usable + lag} frames, dt {dt} fs)")
    for i, s in enumerate(series):
        n = len(s) - lag
        if n <= d:
            need = d + 1 + lag
            raise DataError(f"{names[i]} has {len(s)} frames, fewer than the {need} the correlation depth "
                            f"of {d * dt:g} fs needs")
    if block is not None and blocks is not None:
        raise ConfigError("give the block length (block, --block) or the number of blocks (blocks, --blocks), not both")
    if blocks is not None:
        if int(blocks) != blocks or blocks < 1:
            raise ConfigError(f"the number of blocks must be a positive integer, got {blocks!r}")
        blocks = int(blocks)
        lengths = [(len(s) - lag) // blocks for s in series]
        for i, (s, b) in enumerate(zip(series, lengths)):
            if b < 2 * d:
                fit = (len(s) - lag) // (2 * d)
                raise DataError(
                    f"{names[i]}: {blocks} blocks of {b} frames are shorter than twice the correlation depth "
                    f"({2 * d} frames = {2 * d * dt:g} fs); use {fit} block(s) or fewer per series"
                    f"{'' if fit else ' (none fits)'}, a depth of at most {(len(s) - lag) // (2 * blocks) * dt:g} fs, "
                    f"or a longer trajectory")
        total = blocks * len(series)
        if total < MIN_BLOCKS:
            raise DataError(f"{blocks} block(s) per series x {len(series)} series = {total} blocks; a statistical "
                            f"error needs at least {MIN_BLOCKS} (more blocks per series, or independent replicas)")
        return d, lengths, True
    if block is None:
        return d, [2 * d] * len(series), False
    if not (np.isfinite(block) and block > 0):
        raise ConfigError(f"block length must be a positive number of fs, got {block!r}")
    b = _frames(block, dt, "block length")
    if b < 2 * d:
        raise ConfigError(f"block length {block:g} fs is shorter than twice the correlation depth ({2 * d * dt:g} fs)")
    total = sum((len(s) - lag) // b for s in series)
    if total < MIN_BLOCKS:
        raise DataError(f"blocks of {block:g} fs give {total} block(s) in {len(series)} series; a statistical error "
                        f"needs at least {MIN_BLOCKS}: use --block {(min(len(s) for s in series) - lag) * dt / MIN_BLOCKS:g} "
                        f"or less (with a depth of at most half of it), or longer or more series")
    return d, [b] * len(series), True


def _channel_sums(x: np.ndarray, groups: list[np.ndarray], depth: int) -> np.ndarray:
    """Lagged products (depth+1, ..., n_channels) of x (n, ..., m) with the time mean removed,
    summed over the components of each group (batch axes between time and components)."""
    x = x - x.mean(axis=0)
    return np.stack([correlation.correlation_sums(x[..., g], depth) for g in groups], axis=-1)


def _density(sums: np.ndarray, counts: np.ndarray, dt: float, window: str, pad: int, form: str):
    """``(nu (n_nu,), ω²G (n_nu, ...))``, the spectral density of the derivative in [x]²/fs from
    lagged-product sums (depth+1, ...) and their pair counts (depth+1,)."""
    shape = (-1,) + (1,) * (sums.ndim - 1)
    nu, g = correlation.spectral_density(sums / counts.reshape(shape), dt, window, pad)
    omega = 2.0 * np.pi * correlation.C_CM_PER_FS * nu  # rad/fs
    if form == "derivative":
        sinc = np.sinc(omega * dt / 2.0 / np.pi)  # |transfer function| of the forward (midpoint) difference / ω
        return nu, g / (sinc**2).reshape(shape)
    return nu, g * (omega**2).reshape(shape)


def _derivative_spectra(series: list[np.ndarray], groups: list[np.ndarray], dt: float, depth: int,
                        window: str, pad: int, form: str, lengths: list[int],
                        samples: list[np.ndarray] | None = None):
    """Spectral densities of the time derivative, ``ω²G`` in [x]²/fs, per channel.

    ``series`` (n_i, m) each; ``lengths``: block length (frames) per series; ``samples``:
    posterior draws (n_samples, n_i, m) per series, or None. Returns ``(nu (n_nu,), F (n_nu,
    n_channels), F_blocks (n_blocks, n_nu, n_channels) or None, F_samples (n_nu, n_samples,
    n_channels) or None)``: blocks only when there are at least ``MIN_BLOCKS``; every draw's
    spectrum from one FFT per batch of draws.
    """
    prepared = [np.diff(s, axis=0) / dt if form == "derivative" else s for s in series]
    counts = sum(correlation.pair_counts(len(c), depth) for c in prepared)
    nu, f = _density(sum(_channel_sums(c, groups, depth) for c in prepared), counts, dt, window, pad, form)
    blocks = []
    for c, length in zip(prepared, lengths):
        for sl in correlation.split_blocks(len(c), length):
            part = c[sl]
            blocks.append(_density(_channel_sums(part, groups, depth), correlation.pair_counts(len(part), depth),
                                   dt, window, pad, form)[1])
    f_blocks = np.array(blocks) if len(blocks) >= MIN_BLOCKS else None
    f_samples = None
    if samples is not None:
        n_samples = samples[0].shape[0]
        sums = np.zeros((depth + 1, n_samples, len(groups)))
        for draw in samples:
            x = np.diff(draw, axis=1) / dt if form == "derivative" else draw
            step = max(1, _SAMPLE_BATCH_VALUES // max(x.shape[1] * x.shape[2], 1))
            for a in range(0, n_samples, step):
                sums[:, a : a + step] += _channel_sums(np.moveaxis(x[a : a + step], 0, 1), groups, depth)
        f_samples = _density(sums, counts, dt, window, pad, form)[1]
    return nu, f, f_blocks, f_samples


def _stderr(blocks: np.ndarray) -> np.ndarray:
    """Standard error of the mean of block spectra (n_blocks, ...): ``std/√n_blocks``."""
    return blocks.std(axis=0, ddof=1) / np.sqrt(len(blocks))


def _percentiles(values: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    """(2, n) percentiles ``band`` over the sample axis 1 of ``values`` (n, n_samples); a row with a
    NaN (the depolarization ratio where VV vanishes: every draw) gives NaN."""
    return np.percentile(values, band, axis=1)


def _check_band(band) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in band)
    except (TypeError, ValueError):
        raise ConfigError(f"the model band is two percentiles (low, high), got {band!r}") from None
    if not 0.0 <= lo < hi <= 100.0:
        raise ConfigError(f"the model band's percentiles must satisfy 0 <= low < high <= 100, got {lo:g}, {hi:g}")
    return lo, hi


def _check_samples(samples, series: list[np.ndarray], names: list[str], convert) -> list[np.ndarray] | None:
    """Posterior draws per series, (n_samples, n_i, ...) each, converted by ``convert`` (one draw's
    series -> (n_i, m)); the same number of draws for every series."""
    if samples is None:
        return None
    if len(samples) != len(series):
        raise DataError(f"{len(samples)} sets of posterior samples for {len(series)} series (one per series)")
    out = []
    for i, (draws, s) in enumerate(zip(samples, series)):
        a = np.asarray(draws, dtype=float)
        if a.ndim < 2 or a.shape[1] != len(s):
            raise DataError(f"{names[i]}: posterior samples have shape {a.shape}, expected (n_samples, {len(s)}, ...)"
                            f" (one value per frame of the series)")
        if not np.all(np.isfinite(a)):
            raise DataError(f"{names[i]}: posterior samples contain NaN or inf")
        out.append(np.stack([convert(x, f"{names[i]}, sample {k}") for k, x in enumerate(a)]))
    if len({a.shape[0] for a in out}) > 1:
        raise DataError("every series needs the same number of posterior samples "
                        f"(got {', '.join(str(a.shape[0]) for a in out)})")
    if out[0].shape[0] < 2:
        raise DataError(f"a model band needs at least 2 posterior samples, got {out[0].shape[0]}")
    return out


def _limit(nu: np.ndarray, max_wavenumber: float | None) -> np.ndarray:
    if max_wavenumber is None:
        return np.ones(nu.shape, bool)
    if not max_wavenumber > 0:
        raise ConfigError(f"maximum wavenumber must be positive, got {max_wavenumber!r}")
    return nu <= max_wavenumber


def _meta(series, dt, depth, lengths, window, form, correction, temperature, pad, f_blocks, f_samples, band) -> dict:
    meta = dict(dt=float(dt), depth=int(depth), depth_fs=float(depth * dt), window=window, form=form,
                correction=correction, temperature=float(temperature), pad=int(pad),
                n_series=len(series), n_frames=int(sum(len(s) for s in series)),
                block=int(min(lengths)), n_blocks=0 if f_blocks is None else len(f_blocks))
    if f_samples is not None:
        meta.update(n_samples=int(f_samples.shape[1]), band=[float(b) for b in band])
    return meta


# ----------------------------------------------------------------------------------------------
# IR


def ir_spectrum(series: list[np.ndarray], dt: float, temperature: float, depth: float | None = None,
                window: str = "hann", form: str = "derivative", correction: str = "harmonic",
                pad: int = 4, block: float | None = None, max_wavenumber: float | None = None,
                names: list[str] | None = None, blocks: int | None = None,
                samples: list[np.ndarray] | None = None, band: tuple[float, float] = DEFAULT_BAND) -> SpectrumResult:
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
    block : block length for the statistical error, fs (default twice the depth; no error
        estimate, and no ``errors``, when that gives fewer than 3 blocks).
    blocks : instead of ``block``, cut every series into this many equal blocks (1: each series
        is one block, for independent replicas); too few frames per block (less than twice the
        depth) or fewer than 3 blocks in all is a :class:`DataError` saying what would work.
    max_wavenumber : cut the grid at this wavenumber (cm⁻¹); default the Nyquist wavenumber.
    names : how error messages call the series (e.g. file names); default "series i".
    samples : posterior draws of the dipoles, one (n_samples, n_frames_i, 3) array per series
        (a model's ``sample_predictions`` on the same frames; draw k of every series must come
        from the same model draw): the model band.
    band : percentiles (%) of the model band, default (5, 95).

    Returns
    -------
    SpectrumResult with components ``ir`` (total) and ``ir_x, ir_y, ir_z`` in km mol⁻¹ per cm⁻¹,
    their statistical ``errors`` and, with ``samples``, their model ``bands``.
    """
    names = _names(names, series)
    series = [_as_dipoles(s, n) for s, n in zip(series, names)]
    samples = _check_samples(samples, series, names, _as_dipoles)
    band = _check_band(band)
    correction = factors.check_correction(correction)
    _check_temperature(temperature)
    d, lengths, _ = _check_common(series, dt, depth, block, blocks, form, pad, names)
    groups = [np.array([0]), np.array([1]), np.array([2])]
    nu, f, f_blocks, f_samples = _derivative_spectra(series, groups, dt, d, window, pad, form, lengths, samples)

    def convert(arr):
        scale = factors.KM_MOL_PER_E2_AMU * factors.correction_ratio(nu, temperature, correction)
        return factors.harmonic_density(nu, arr, temperature) * scale.reshape((-1,) + (1,) * (arr.ndim - 1))

    def split(arr):  # (n_nu, ..., 3) -> components
        return {"ir": arr.sum(axis=-1), "ir_x": arr[..., 0], "ir_y": arr[..., 1], "ir_z": arr[..., 2]}

    keep = _limit(nu, max_wavenumber)
    comps = split(convert(f))
    errs = {}
    if f_blocks is not None:
        per_block = split(np.stack([convert(fb) for fb in f_blocks]))  # (n_blocks, n_nu)
        errs = {k: _stderr(v)[keep] for k, v in per_block.items()}
    bands = {}
    if f_samples is not None:
        bands = {k: _percentiles(v, band)[:, keep] for k, v in split(convert(f_samples)).items()}
    unit = "km mol^-1 (cm^-1)^-1"
    return SpectrumResult(
        kind="ir", wavenumber=nu[keep], components={k: v[keep] for k, v in comps.items()},
        errors=errs, units={k: unit for k in comps},
        meta=_meta(series, dt, d, lengths, window, form, correction, temperature, pad, f_blocks, f_samples, band),
        bands=bands)


# ----------------------------------------------------------------------------------------------
# Raman


def _raman_channels(a: np.ndarray) -> np.ndarray:
    """Polarizabilities (..., 3, 3) -> channels (..., 10): ᾱ, then β = α − ᾱ·1 (of the
    symmetrised α) row-major."""
    a = 0.5 * (a + np.swapaxes(a, -1, -2))
    mean = np.trace(a, axis1=-2, axis2=-1) / 3.0
    beta = a - mean[..., None, None] * np.eye(3)
    return np.concatenate([mean[..., None], beta.reshape(beta.shape[:-2] + (9,))], axis=-1)


def raman_spectrum(series: list[np.ndarray], dt: float, temperature: float, depth: float | None = None,
                   window: str = "hann", form: str = "derivative", correction: str = "harmonic",
                   pad: int = 4, block: float | None = None, max_wavenumber: float | None = None,
                   laser: float | None = None, bose: bool = False, names: list[str] | None = None,
                   blocks: int | None = None, samples: list[np.ndarray] | None = None,
                   band: tuple[float, float] = DEFAULT_BAND) -> SpectrumResult:
    """Raman spectra from polarizability series.

    Parameters are those of :func:`ir_spectrum` plus ``laser`` (excitation wavenumber, cm⁻¹:
    multiplies by ``((ν̃_L − ν̃)/ν̃_L)⁴``) and ``bose`` (multiplies by ``n(ω) + 1``);
    ``series`` are (n_frames_i, 3, 3) or (n_frames_i, 9) polarizabilities in Å³, ``samples``
    (n_samples, n_frames_i, 3, 3) or (n_samples, n_frames_i, 9) per series.

    Returns
    -------
    SpectrumResult with components ``unpolarized`` (VV + VH), ``vv``, ``vh``, ``isotropic``,
    ``anisotropic`` in Å⁴ amu⁻¹ per cm⁻¹ and ``depolarization`` (VH/VV, dimensionless, NaN where
    VV is below 10⁻⁶ of its maximum), their statistical ``errors`` and model ``bands``.
    """
    names = _names(names, series)
    tensors = [_as_polarizabilities(s, n) for s, n in zip(series, names)]
    samples = _check_samples(samples, tensors, names, _as_polarizabilities)
    band = _check_band(band)
    correction = factors.check_correction(correction)
    _check_temperature(temperature)
    # channels: column 0 = ᾱ, columns 1..9 = β (traceless part, row-major)
    flat = [_raman_channels(a) for a in tensors]
    flat_samples = None if samples is None else [_raman_channels(a) for a in samples]
    d, lengths, _ = _check_common(flat, dt, depth, block, blocks, form, pad, names)
    groups = [np.array([0]), np.arange(1, 10)]
    nu, f, f_blocks, f_samples = _derivative_spectra(flat, groups, dt, d, window, pad, form, lengths, flat_samples)

    extra = factors.correction_ratio(nu, temperature, correction)
    if laser is not None:
        extra = extra * factors.laser_factor(nu, laser)
    if bose:
        extra = extra * factors.bose_factor(nu, temperature)

    def combos(arr, ref=None):  # (n_nu, ..., 2) -> components (n_nu, ...)
        dens = factors.harmonic_density(nu, arr, temperature) * extra.reshape((-1,) + (1,) * (arr.ndim - 1))
        iso = 45.0 * dens[..., 0]
        aniso = 10.5 * dens[..., 1]
        vv = iso + 4.0 / 7.0 * aniso
        vh = 3.0 / 7.0 * aniso
        out = {"unpolarized": vv + vh, "vv": vv, "vh": vh, "isotropic": iso, "anisotropic": aniso}
        out["depolarization"] = _ratio(vh, vv, vv if ref is None else ref)
        return out

    comps = combos(f)
    keep = _limit(nu, max_wavenumber)
    errs = {}
    if f_blocks is not None:
        vv_ref = comps["vv"]
        per_block = [combos(fb, vv_ref) for fb in f_blocks]
        errs = {k: _stderr(np.array([p[k] for p in per_block]))[keep] for k in comps}
    bands = {}
    if f_samples is not None:
        per_sample = combos(f_samples, comps["vv"][:, None])
        bands = {k: _percentiles(v, band)[:, keep] for k, v in per_sample.items()}
    unit = "angstrom^4 amu^-1 (cm^-1)^-1"
    units = {k: unit for k in comps}
    units["depolarization"] = "1"
    meta = _meta(tensors, dt, d, lengths, window, form, correction, temperature, pad, f_blocks, f_samples, band)
    meta.update(laser=laser, bose=bool(bose))
    return SpectrumResult(
        kind="raman", wavenumber=nu[keep], components={k: v[keep] for k, v in comps.items()},
        errors=errs, units=units, meta=meta, bands=bands)


def _ratio(num: np.ndarray, den: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``num/den`` where the reference ``ref`` (broadcastable) is above 10⁻⁶ of its maximum, NaN elsewhere."""
    top = np.max(ref) if np.size(ref) else 0.0
    ok = np.broadcast_to(ref > 1e-6 * top if top > 0 else np.zeros(np.shape(ref), bool), np.shape(num))
    out = np.full(np.shape(num), np.nan)
    out[ok] = np.asarray(num)[ok] / np.broadcast_to(den, np.shape(num))[ok]
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
