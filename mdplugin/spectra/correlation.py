"""Time-correlation functions and their Fourier transforms (the numeric core of the spectra).

Conventions (shared with i-PI's ``i-pi-getacf``):

* a series is an array ``x`` of shape (n_frames, n_components), frames ``dt`` apart; its
  autocorrelation function sums over components, ``C(k) = <sum_c x_c(t) x_c(t + k dt)>_t``;
* the estimator is the unbiased linear one, ``C(k) = S(k) / (n - k)`` with
  ``S(k) = sum_{t=0}^{n-k-1} x(t)·x(t+k)``, computed by FFT after zero padding to at least
  ``n + depth`` points, so nothing wraps around (no circular correlation);
* the lag window is the right half of a symmetric window of length ``2·depth + 1``
  (``w(0) = 1``, ``w(depth) = 0`` for Hann), the same as i-PI's;
* the spectral density is the two-sided Fourier transform of the windowed, even-extended ACF,
  ``G(ω) = ∫ dt e^{-iωt} w(t) C(t)`` (units of ``x²·fs``), evaluated with a Hermitian FFT on a
  grid refined by zero padding the windowed ACF to ``pad · depth`` lags.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.signal

from ..core.errors import ConfigError, DataError

#: speed of light in cm/fs (turns frequencies in fs⁻¹ into wavenumbers in cm⁻¹)
C_CM_PER_FS: float = 2.99792458e-5

#: window names accepted besides any :func:`scipy.signal.get_window` name
WINDOW_ALIASES = {"none": "boxcar", "hanning": "hann", "rectangular": "boxcar"}


def lag_window(name: str, depth: int) -> np.ndarray:
    """Lag window (depth + 1,): right half of a symmetric window of length ``2·depth + 1``.

    ``name`` is ``"hann"`` (default of the package), ``"none"`` (no window), or any window
    :func:`scipy.signal.get_window` knows (``"hamming"``, ``"blackman"``, ``"bartlett"``, ...); a
    window with parameters is written ``name:p1[:p2]`` (``"kaiser:8"``, ``"tukey:0.5"``).
    """
    base, *params = name.lower().split(":")
    key = WINDOW_ALIASES.get(base, base)
    try:
        spec = (key, *(float(p) for p in params)) if params else key
        full = scipy.signal.get_window(spec, 2 * depth + 1, fftbins=False)
    except (ValueError, TypeError) as exc:
        if "must have parameters" in str(exc):
            raise ConfigError(f"window {name!r} needs its parameter(s): write it as {base}:VALUE "
                              f"(e.g. kaiser:8)") from None
        raise ConfigError(f"unknown window {name!r} ({exc}); try hann, hamming, blackman, bartlett, none "
                          f"or a window with parameters such as kaiser:8") from None
    return np.asarray(full[depth:], dtype=float)


def correlation_sums(x: np.ndarray, depth: int) -> np.ndarray:
    """Raw lagged products ``S(k) = sum_t sum_c x_c(t) x_c(t+k)`` for k = 0..depth, shape
    (depth+1,), or (depth+1, ...) for a batch of series.

    ``x`` has shape (n,), (n, n_components) or (n, ..., n_components): time along the first
    axis, components (summed) along the last, any batch axes between (e.g. posterior samples:
    all transformed by one FFT call). Zero padding to ``next_fast_len(n + depth)`` makes the FFT
    correlation linear (no wrap-around).
    """
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    n = x.shape[0]
    if depth >= n:
        raise DataError(f"series of {n} frames is shorter than the correlation depth + 1 = {depth + 1} frames")
    nfft = scipy.fft.next_fast_len(n + depth + 1, real=True)
    # transform along contiguous rows (time last): a strided transform of many series is slow
    fx = scipy.fft.rfft(np.moveaxis(x, 0, -1), n=nfft, axis=-1)  # (..., m, nfft//2+1)
    power = np.sum(fx.real**2 + fx.imag**2, axis=-2)
    return np.moveaxis(scipy.fft.irfft(power, n=nfft, axis=-1)[..., : depth + 1], -1, 0)


def pair_counts(n: int, depth: int) -> np.ndarray:
    """Number of pairs ``n - k`` entering lag k = 0..depth, shape (depth+1,)."""
    return n - np.arange(depth + 1, dtype=float)


def autocorrelation(x: np.ndarray, depth: int, subtract_mean: bool = True) -> np.ndarray:
    """Unbiased autocorrelation (depth+1,) of a series (n, n_components), summed over components.

    With ``subtract_mean`` the time average of each component is removed first (the constant
    part only contributes a delta function at zero frequency).
    """
    x = np.asarray(x, dtype=float)
    if subtract_mean:
        x = x - x.mean(axis=0)
    return correlation_sums(x, depth) / pair_counts(x.shape[0], depth)


def wavenumbers(dt: float, n_lags: int) -> np.ndarray:
    """Wavenumbers (n_lags+1,) in cm⁻¹ of :func:`spectral_density` for ``n_lags`` padded lags."""
    return np.arange(n_lags + 1) / (2.0 * n_lags * dt * C_CM_PER_FS)


def spectral_density(acf: np.ndarray, dt: float, window: str = "hann", pad: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Spectral density of an ACF: ``(wavenumber (m+1,) cm⁻¹, G (m+1,) in x²·fs)``.

    ``acf`` has shape (depth+1,) or (depth+1, k) (several ACFs at once, transformed along
    axis 0), lags ``dt`` fs apart. ``G(ω) = dt·[w₀C₀ + 2 Σ_k w_k C_k cos(ω k dt)]``, the
    two-sided Fourier transform of the windowed ACF; ``m = pad·depth`` lags after zero padding,
    frequencies from 0 to the Nyquist wavenumber ``1/(2 dt c)``. ``∫ G dω/2π = C(0)`` for
    window "none" (Parseval), so band areas are variances.
    """
    acf = np.asarray(acf, dtype=float)
    depth = acf.shape[0] - 1
    if depth < 1:
        raise DataError("the correlation depth must be at least one frame")
    if pad < 1:
        raise ConfigError(f"zero-padding factor must be >= 1, got {pad}")
    w = lag_window(window, depth)
    n_lags = pad * depth
    padded = np.zeros(acf.shape[1:] + (n_lags + 1,))  # lags last: contiguous transforms
    padded[..., : depth + 1] = np.moveaxis(acf, 0, -1) * w
    g = dt * scipy.fft.hfft(padded, n=2 * n_lags, axis=-1)[..., : n_lags + 1]
    return wavenumbers(dt, n_lags), np.moveaxis(g, -1, 0)


def split_blocks(n: int, length: int) -> list[slice]:
    """Consecutive, non-overlapping blocks of ``length`` frames covering most of ``n`` frames."""
    return [slice(i * length, (i + 1) * length) for i in range(n // length)] if length > 0 else []
