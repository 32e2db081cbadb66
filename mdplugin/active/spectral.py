"""Active learning aimed at a spectrum: the model band of the IR in a frequency window, and the
frames whose labels most narrow it (``ActiveConfig.spectrum_window``).

The dipole model's posterior draws along a trajectory (``model.sample_predictions``: correlated in
time as the model's errors are) give one dipole series per draw, ``μᵏ(t)`` (S draws, T frames
``dt`` fs apart). The IR line shape is the power spectrum of the dipole's time derivative, so the
**window intensity** of a series is

    P[μ] = Σ_{ν ∈ W} |F[ẋ](ν)|²,   ẋ = forward differences of μ / dt,

(a Hann taper over the series; ``F`` the discrete Fourier transform, ``W`` the bins of the
window). Smooth prefactors (the quantum correction, units) multiply every draw alike and drop out
of the relative band used here.

* **The band** (:func:`window_band`): ``(P₉₅ − P₅) / mean`` over the draws ``P[μᵏ]``: the
  relative width of the 5-95 % model band of the spectrum integrated over the window. A run stops
  when it falls to ``spectrum_tolerance``.
* **The choice** (:func:`spectral_order`): the window intensity changes with the dipole of frame
  ``t`` as ``g(t) = ∂P/∂μ(t)`` (at the mean series), so the draws' spread of the intensity is, to
  first order, ``δPᵏ = Σ_t g(t)·δμᵏ(t)`` with ``δμᵏ = μᵏ − mean``. Labelling frame ``t`` observes
  ``μ(t)`` (noise variance σ²); conditioning the draws' Gaussian on it lowers the variance of
  ``δP`` by ``c_tᵀ (Σ_t + σ² I)⁻¹ c_t`` with ``c_t = cov(δμ(t), δP)`` and ``Σ_t = cov(δμ(t))``
  (3 × 3) over the draws. The frame with the largest reduction is picked; for a batch the draws
  are conditioned on it (the same linear update, applied to every frame) before the next pick.
  A frame whose dipole is uncertain but does not move the window's intensity (or whose
  uncertainty other picks already remove, through the correlations of the draws) is not chosen.

Only numpy: this module is the active layer's own (``spectra/`` sits beside ``active/`` and is
not imported). ``tests/active/test_active_spectral.py`` checks that a line inside the window
counts and one outside does not, the gradient against finite differences, and the choice.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import ConfigError

__all__ = ["check_window", "window_band", "window_gradient", "window_intensity", "spectral_order"]

#: speed of light in cm/fs (wavenumber ν̃ = f / c)
C_CM_PER_FS = 2.99792458e-5


def check_window(window, dt: float, n_frames: int, what: str = "the spectrum") -> tuple[float, float]:
    """``window`` as ``(low, high)`` cm⁻¹ if it lies inside the range of a series of ``n_frames``
    frames ``dt`` fs apart (0 to the Nyquist wavenumber) and is wider than its resolution; else a
    one-line :class:`ConfigError` giving the range."""
    try:
        lo, hi = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ConfigError(f"spectrum window {window!r}: give two wavenumbers LOW:HIGH in cm^-1") from None
    nyquist = 1.0 / (2.0 * dt * C_CM_PER_FS)
    resolution = 1.0 / (max(n_frames - 1, 1) * dt * C_CM_PER_FS)
    if not (0.0 <= lo < hi):
        raise ConfigError(f"spectrum window {lo:g}:{hi:g} cm^-1: needs 0 <= LOW < HIGH")
    if hi > nyquist:
        raise ConfigError(f"spectrum window {lo:g}:{hi:g} cm^-1 is outside the range 0-{nyquist:.0f} cm^-1 "
                          f"of {what} (frames {dt:g} fs apart); sample more often or choose a lower window")
    if hi - lo < resolution:
        raise ConfigError(f"spectrum window {lo:g}:{hi:g} cm^-1 is narrower than the resolution "
                          f"{resolution:.0f} cm^-1 of {what} ({n_frames} frames {dt:g} fs apart); widen it or run longer")
    return lo, hi


def _mask(n_diff: int, dt: float, window: tuple[float, float]) -> np.ndarray:
    """Real-FFT bins (of a derivative series of ``n_diff`` values) inside the window."""
    nu = np.fft.rfftfreq(n_diff, d=dt) / C_CM_PER_FS
    return (nu >= window[0]) & (nu <= window[1])


def window_intensity(series: np.ndarray, dt: float, window: tuple[float, float]) -> np.ndarray:
    """Window intensity ``P`` of dipole series ``(..., T, 3)`` (e·Å, frames ``dt`` fs apart):
    shape ``(...)``, in (e·Å/fs)² (see the module docstring)."""
    x = np.asarray(series, dtype=float)
    d = np.diff(x, axis=-2) / dt
    taper = np.hanning(d.shape[-2])[:, None]
    spec = np.fft.rfft(d * taper, axis=-2)
    mask = _mask(d.shape[-2], dt, window)
    return np.sum(np.abs(spec[..., mask, :]) ** 2, axis=(-2, -1))


def window_gradient(series: np.ndarray, dt: float, window: tuple[float, float]) -> np.ndarray:
    """``∂P/∂μ(t)`` of :func:`window_intensity` at one series ``(T, 3)``: ``(T, 3)``."""
    x = np.asarray(series, dtype=float)
    n = len(x) - 1
    taper = np.hanning(n)[:, None]
    mask = _mask(n, dt, window)
    spec = np.fft.rfft(np.diff(x, axis=0) / dt * taper, axis=0)
    # P = Σ_{k ∈ W} |X_k|², X = rfft(y): ∂P/∂y_j = 2 Re Σ_{k ∈ W} X_k e^{2πi jk/n} = 2 n Re ifft(Z)_j with
    # Z the masked rfft bins placed in a full-length spectrum (no conjugate mirror)
    full = np.zeros((n, 3), dtype=complex)
    full[: len(spec)] = np.where(mask[:, None], spec, 0.0)
    grad_d = 2.0 * n * np.fft.ifft(full, axis=0).real
    grad_d *= taper / dt
    grad = np.zeros_like(x)
    grad[1:] += grad_d
    grad[:-1] -= grad_d
    return grad


def window_band(draws: np.ndarray, dt: float, window: tuple[float, float],
                percentiles: tuple[float, float] = (5.0, 95.0)) -> float:
    """Relative width of the model band of the window intensity: ``(P_high − P_low) / mean`` over
    the draws ``(S, T, 3)``."""
    p = window_intensity(draws, dt, window)
    lo, hi = np.percentile(p, percentiles)
    return float((hi - lo) / max(np.mean(p), 1e-300))


def spectral_order(mean: np.ndarray, draws: np.ndarray, dt: float, window: tuple[float, float], n: int,
                   allowed: np.ndarray | None = None, noise: float = 0.0) -> list[int]:
    """The ``n`` frames whose labels most lower the draws' variance of the window intensity
    (greedy, the draws conditioned on each pick; see the module docstring).

    mean : (T, 3) mean dipoles; draws : (S, T, 3) posterior draws (S ≥ 2); ``allowed``: (T,) bool,
    frames that may be picked (default all); ``noise``: label noise variance, (e·Å)².
    """
    mean = np.asarray(mean, dtype=float)
    dev = np.asarray(draws, dtype=float) - mean[None]
    s = dev.shape[0]
    if s < 2:
        raise ConfigError("aiming at a spectrum needs at least 2 posterior draws")
    g = window_gradient(mean, dt, window)
    allowed = np.ones(len(mean), bool) if allowed is None else np.asarray(allowed, bool).copy()
    floor = 1e-12 * max(float(np.mean(dev ** 2)), 1e-300)
    picks: list[int] = []
    for _ in range(min(n, int(allowed.sum()))):
        dp = np.einsum("ktc,tc->k", dev, g)  # (S,) linearised intensity deviations
        c = np.einsum("ktc,k->tc", dev, dp) / (s - 1)  # cov(δμ(t), δP), (T, 3)
        cov = np.einsum("ktc,ktd->tcd", dev, dev) / (s - 1) + (noise + floor) * np.eye(3)
        gain = np.einsum("tc,tc->t", c, np.linalg.solve(cov, c[..., None])[..., 0])
        gain[~allowed] = -np.inf
        t = int(np.argmax(gain))
        picks.append(t)
        allowed[t] = False
        # condition the draws on an observation of frame t: δμ ← δμ − cov(δμ, δμ_t) Σ_t⁻¹ δμ_t
        cross = np.einsum("ksc,kd->scd", dev, dev[:, t]) / (s - 1)  # (T, 3, 3)
        solved = np.linalg.solve(cov[t], dev[:, t].T).T  # (S, 3)
        dev = dev - np.einsum("scd,kd->ksc", cross, solved)
    return picks
