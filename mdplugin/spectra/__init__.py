"""IR and Raman spectra from dipole and polarizability time series.

Public API::

    from mdplugin.spectra import read_series, ir_spectrum, raman_spectrum, write_csv, plot_spectra
    mu = read_series("traj.xyz", "dipole")                  # (n, 3) e·Å
    ir = ir_spectrum([mu], dt=2.0, temperature=300.0)       # km mol⁻¹ (cm⁻¹)⁻¹
    write_csv(ir, "ir.csv"); plot_spectra([ir], "ir.png")

    # with the model's uncertainty: posterior draws along the trajectory give the model band
    from mdplugin.spectra import model_series
    means, draws = model_series(["traj.xyz"], load_model("dipole.npz"), n_samples=64, seed=0)
    ir = ir_spectrum(means, dt=2.0, temperature=300.0, samples=draws)   # ir.bands["ir"]: (2, n)

and :func:`spectrum_command`, the ``mdplugin spectrum ir|raman`` command. Formulas and units:
docs/spectra.md and :mod:`mdplugin.spectra.compute`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from .compute import DEFAULT_BAND, FORMS, SpectrumResult, band_peak, ir_spectrum, raman_spectrum
from .correlation import autocorrelation, spectral_density
from .factors import CORRECTIONS
from .output import read_csv, write_csv
from .plot import plot_spectra
from .readers import read_series
from .uncertainty import model_series

__all__ = [
    "CORRECTIONS", "DEFAULT_BAND", "FORMS", "SpectrumResult", "autocorrelation", "band_peak", "ir_spectrum", "model_series",
    "plot_spectra", "raman_spectrum", "read_csv", "read_series", "spectral_density", "spectrum_command",
    "write_csv",
]

#: default number of posterior draws of the model band
DEFAULT_SAMPLES = 64

#: options of :func:`spectrum_command` besides the fixed arguments, with their defaults
OPTIONS = dict(depth=None, window="hann", form="derivative", correction="harmonic", pad=4, block=None,
               blocks=None, max_wavenumber=None, laser=None, bose=False, key=None, units="ase",
               cell_dipole=None, centroid=None, model=None, uncertainty=False, samples=DEFAULT_SAMPLES, band=DEFAULT_BAND, seed=0)


def spectrum_command(kind: str, series: list[str], dt: float, output: str, plot: str | None,
                     temperature: float | None, **options: Any) -> SpectrumResult:
    """``mdplugin spectrum ir|raman``: read the series, compute the spectrum, write CSV (and PNG);
    returns the :class:`SpectrumResult`.

    ``options`` (all optional): ``depth`` (fs), ``window``, ``form`` (derivative|omega2),
    ``correction`` (none|harmonic|standard|schofield), ``pad`` (zero-padding factor),
    ``block`` (fs) or ``blocks`` (number per series) for the statistical error,
    ``max_wavenumber`` (cm⁻¹), ``key`` (name of the quantity in the files),
    ``units`` (ase|atomic, for XYZ and array files), ``cell_dipole`` (total|polarization: the
    dipole of a periodic trajectory whose cell changes, :func:`read_series`), for Raman ``laser``
    (cm⁻¹) and ``bose``;
    ``centroid`` (the number of beads P: the series are the per-bead files of path-integral runs,
    P consecutive files per run, and the spectrum is the one of their bead average at every step,
    :func:`mdplugin.spectra.centroid.centroid_series`);
    ``model`` (a dipole model file for ir, a polarizability model for raman: its predictions on
    the structures of the series replace the stored values), ``uncertainty`` (the model band from
    ``samples`` posterior draws of ``model``, ``band`` percentiles, ``seed``).
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
    draws = None
    if opts["uncertainty"] and not opts["model"]:
        raise ConfigError(f"--uncertainty needs the {quantity} model whose posterior gives the band: add "
                          f"--model {quantity.upper()}_MODEL.npz")
    names = [os.fspath(p) for p in series]
    if opts["centroid"] is not None and opts["model"]:
        raise ConfigError("--centroid averages stored bead values; it does not take --model")
    if opts["centroid"] is not None:
        from .centroid import centroid_series

        data, names = centroid_series(series, quantity, opts["centroid"], key=opts["key"], units=opts["units"],
                                      cell_dipole=opts["cell_dipole"])
    elif opts["model"]:
        from ..models.base import load_model

        model = load_model(opts["model"], target=quantity)
        n_samples = opts["samples"] if opts["uncertainty"] else 0
        if opts["uncertainty"]:
            _check_samples_option(n_samples)
            model.check_sampling()  # a model that cannot sample says so before any work
        data, draws = model_series(series, model, n_samples=n_samples, seed=opts["seed"],
                                   cell_dipole=opts["cell_dipole"])
    else:
        data = [read_series(p, quantity, key=opts["key"], units=opts["units"], cell_dipole=opts["cell_dipole"])
                for p in series]
    common = dict(depth=opts["depth"], window=opts["window"], form=opts["form"],
                  correction=opts["correction"], pad=opts["pad"], block=opts["block"], blocks=opts["blocks"],
                  max_wavenumber=opts["max_wavenumber"], names=names,
                  samples=draws, band=opts["band"])
    if kind == "ir":
        result = ir_spectrum(data, dt, temperature, **common)
    else:
        result = raman_spectrum(data, dt, temperature, laser=opts["laser"], bose=opts["bose"], **common)
    result.meta["sources"] = [os.fspath(p) for p in series]
    if opts["centroid"] is not None:
        result.meta["centroid_beads"] = opts["centroid"]
    if opts["model"]:
        result.meta["model"] = os.fspath(opts["model"])
    write_csv(result, output)
    if plot:
        plot_spectra([result], plot)
    return result


def _check_samples_option(n_samples) -> None:
    if not (isinstance(n_samples, (int, np.integer)) and n_samples >= 2):
        raise ConfigError(f"--samples must be a whole number of at least 2 posterior draws, got {n_samples!r}")
