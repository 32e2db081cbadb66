"""Physical prefactors: absolute units, quantum correction factors, laser and Bose factors.

The central quantity is the *harmonic intensity density* of a fluctuating quantity ``x``
(dipole in e·Å, polarizability in Å³) as a function of the wavenumber ν̃ (cm⁻¹),

    D(ν̃) = 2c · β · ω² G(ω) · Q(ω)/Q_harm(ω),        ω = 2πc ν̃,  β = 1/(k_B T),

where ``G(ω) = ∫ dt e^{-iωt} <δx(0)·δx(t)>`` is the classical spectral density and
``ω² G(ω)`` that of the time derivative ``ẋ``. For a harmonic mode ``x = x₀ + x'·Q`` with
``Q`` a mass-weighted normal coordinate, classical statistics give ``∫ D dν̃ = |x'|²`` over the
band: D is in units of ``[x]²/(Å²·amu)`` per cm⁻¹, the units of harmonic IR intensities
((e·Å)²/(Å²·amu), turned into km/mol below) and Raman activities (Å⁴/amu).

Quantum correction factors multiply the classical correlation spectrum, ``G_qm ≈ Q(ω)·G_cl``,
with ``x = βħω``: none ``Q = 1``, harmonic ``Q = x/(1−e^{−x})``, standard ``Q = 2/(1+e^{−x})``,
Schofield ``Q = e^{x/2}``. Inserted into the exact quantum expressions for absorption and
Stokes Raman scattering the harmonic factor reproduces the classical formulas above
(exact for harmonic systems), so the density is written relative to it: ``Q/Q_harm`` is 1 for
"harmonic", ``(1−e^{−x})/x`` for "none", ``(2/x)·tanh(x/2)`` for "standard" and
``(2/x)·sinh(x/2)`` for "schofield" (all → 1 when ħω ≪ k_BT).
"""

from __future__ import annotations

import numpy as np
from scipy import constants as sc

from ..core.errors import ConfigError

#: quantum correction factors understood by :func:`correction_ratio`
CORRECTIONS = ("none", "harmonic", "standard", "schofield")

#: second radiation constant h·c/k_B in cm·K: x = βħω = C2 · ν̃ / T
C2_CM_K: float = sc.h * sc.c / sc.k * 100.0

#: speed of light in cm/fs
C_CM_PER_FS: float = sc.c * 1e-13

#: km/mol per (e²/amu): integrated IR intensity N_A/(12 ε₀ c²)·|dμ/dQ|² for |dμ/dQ| = 1 e/√amu
KM_MOL_PER_E2_AMU: float = sc.N_A / (12.0 * sc.epsilon_0 * sc.c**2) * sc.e**2 / sc.atomic_mass / 1000.0

#: km/mol per (D/Å)²/amu (≈ 42.256, the factor ASE's Infrared uses)
KM_MOL_PER_D2_A2_AMU: float = KM_MOL_PER_E2_AMU * (1e-21 / sc.c / sc.e / 1e-10) ** 2


def check_correction(kind: str) -> str:
    kind = kind.lower()
    if kind not in CORRECTIONS:
        raise ConfigError(f"unknown quantum correction {kind!r} (use {', '.join(CORRECTIONS)})")
    return kind


def reduced_frequency(nu: np.ndarray, temperature: float) -> np.ndarray:
    """``x = βħω = h c ν̃ / (k_B T)`` for wavenumbers ``nu`` (cm⁻¹) at ``temperature`` (K)."""
    return C2_CM_K * np.asarray(nu, dtype=float) / temperature


def correction_ratio(nu: np.ndarray, temperature: float, kind: str = "harmonic") -> np.ndarray:
    """``Q(ω)/Q_harm(ω)`` (same shape as ``nu``) for the correction ``kind`` (see module doc).

    The Schofield factor grows like ``e^{x/2}``; its exponent is capped at 700 to stay finite.
    """
    kind = check_correction(kind)
    x = reduced_frequency(nu, temperature)
    if kind == "harmonic":
        return np.ones_like(x)
    small = x < 1e-8
    xs = np.where(small, 1.0, x)
    if kind == "none":
        r = -np.expm1(-xs) / xs
    elif kind == "standard":
        r = 2.0 / xs * np.tanh(xs / 2.0)
    else:
        half = np.minimum(xs / 2.0, 700.0)
        r = (np.exp(half) - np.exp(-half)) / xs
    return np.where(small, 1.0, r)


def bose_factor(nu: np.ndarray, temperature: float) -> np.ndarray:
    """Stokes Bose factor ``n(ω) + 1 = 1/(1 − e^{−βħω})``; 0 at ν̃ = 0 (where every density is 0)."""
    x = reduced_frequency(nu, temperature)
    out = np.zeros_like(x)
    pos = x > 0
    out[pos] = -1.0 / np.expm1(-x[pos])
    return out


def laser_factor(nu: np.ndarray, laser: float) -> np.ndarray:
    """Excitation factor ``((ν̃_L − ν̃)/ν̃_L)⁴`` for a laser at ``laser`` cm⁻¹ (0 above ν̃_L)."""
    if not laser > 0:
        raise ConfigError(f"laser wavenumber must be positive, got {laser!r} cm⁻¹")
    return np.clip((laser - np.asarray(nu, dtype=float)) / laser, 0.0, None) ** 4


def harmonic_density(nu: np.ndarray, derivative_density: np.ndarray, temperature: float) -> np.ndarray:
    """``D(ν̃) = 2c β ω² G`` in ``[x]²/(Å²·amu)`` per cm⁻¹ (no correction factor applied).

    ``derivative_density`` is ``ω²G(ω)``, the spectral density of ``ẋ`` in ``[x]²/fs``
    (shape (n_nu, ...)), on the wavenumbers ``nu`` (cm⁻¹); ``temperature`` in K.
    """
    if not temperature > 0:
        raise ConfigError(f"temperature must be positive, got {temperature!r} K")
    beta = 1.0 / (sc.k * temperature)  # 1/J
    f_si = np.asarray(derivative_density) * 1e15  # [x]²/s
    d_per_m = 2.0 * sc.c * beta * f_si  # [x]²/(kg·m) per m⁻¹
    return d_per_m * 100.0 * sc.atomic_mass * 1e-20  # [x]²/(amu·Å²) per cm⁻¹
