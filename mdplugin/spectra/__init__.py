"""IR and Raman spectra from dipole and polarizability time series.

Public API::

    from mdplugin.spectra import read_series, ir_spectrum, raman_spectrum, write_csv, plot_spectra
    mu = read_series("traj.xyz", "dipole")                  # (n, 3) e·Å
    ir = ir_spectrum([mu], dt=2.0, temperature=300.0)       # km mol⁻¹ (cm⁻¹)⁻¹
    write_csv(ir, "ir.csv"); plot_spectra([ir], "ir.png")

and :func:`spectrum_command`, the ``mdplugin spectrum ir|raman`` command. Formulas and units:
docs/spectra.md and :mod:`mdplugin.spectra.compute`.
"""

from __future__ import annotations

import os
from typing import Any

from ..core.errors import ConfigError
from .compute import FORMS, SpectrumResult, ir_spectrum, raman_spectrum
from .correlation import autocorrelation, spectral_density
from .factors import CORRECTIONS
from .output import read_csv, write_csv
from .plot import plot_spectra
from .readers import read_series

__all__ = [
    "CORRECTIONS", "FORMS", "SpectrumResult", "autocorrelation", "ir_spectrum", "plot_spectra",
    "raman_spectrum", "read_csv", "read_series", "spectral_density", "spectrum_command", "write_csv",
]

#: options of :func:`spectrum_command` besides the fixed arguments, with their defaults
OPTIONS = dict(depth=None, window="hann", form="derivative", correction="harmonic", pad=4, block=None,
               max_wavenumber=None, laser=None, bose=False, key=None, units="ase", cell_dipole=None)


def spectrum_command(kind: str, series: list[str], dt: float, output: str, plot: str | None,
                     temperature: float | None, **options: Any) -> SpectrumResult:
    """``mdplugin spectrum ir|raman``: read the series, compute the spectrum, write CSV (and PNG);
    returns the :class:`SpectrumResult`.

    ``options`` (all optional): ``depth`` (fs), ``window``, ``form`` (derivative|omega2),
    ``correction`` (none|harmonic|standard|schofield), ``pad`` (zero-padding factor),
    ``block`` (fs), ``max_wavenumber`` (cm⁻¹), ``key`` (name of the quantity in the files),
    ``units`` (ase|atomic, for XYZ and array files), ``cell_dipole`` (total|polarization: the
    dipole of a periodic trajectory whose cell changes, :func:`read_series`) and, for Raman,
    ``laser`` (cm⁻¹) and ``bose``.
    Unknown options raise a :class:`ConfigError`; ``None`` values mean the default.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"unknown spectrum option(s): {', '.join(unknown)}")
    opts = {k: (options.get(k) if options.get(k) is not None else v) for k, v in OPTIONS.items()}
    if kind not in ("ir", "raman"):
        raise ConfigError(f"unknown spectrum kind {kind!r} (use ir or raman)")
    if kind == "ir" and (opts["laser"] is not None or opts["bose"]):
        raise ConfigError("--laser and --bose apply to Raman spectra only")
    quantity = "dipole" if kind == "ir" else "polarizability"
    data = [read_series(p, quantity, key=opts["key"], units=opts["units"], cell_dipole=opts["cell_dipole"])
            for p in series]
    common = dict(depth=opts["depth"], window=opts["window"], form=opts["form"],
                  correction=opts["correction"], pad=opts["pad"], block=opts["block"],
                  max_wavenumber=opts["max_wavenumber"], names=[os.fspath(p) for p in series])
    if kind == "ir":
        result = ir_spectrum(data, dt, temperature, **common)
    else:
        result = raman_spectrum(data, dt, temperature, laser=opts["laser"], bose=opts["bose"], **common)
    result.meta["sources"] = [os.fspath(p) for p in series]
    write_csv(result, output)
    if plot:
        plot_spectra([result], plot)
    return result
