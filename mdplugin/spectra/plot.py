"""Figures of IR and Raman spectra (matplotlib, Agg backend): one panel per spectrum kind.

IR: absorption in km mol⁻¹ (cm⁻¹)⁻¹. Raman: unpolarized, VV and VH activities in Å⁴ amu⁻¹
(cm⁻¹)⁻¹, and below it the depolarization ratio where the band is significant. Peaks are marked
with their wavenumber (and ρ for Raman).

The two uncertainties are drawn differently: the **model band** (percentiles of the spectra of
the model's posterior draws) as a shaded area, the **statistical error** (±1 standard error from
blocks of the trajectory) as thin dashed lines on either side of the curve.
"""

from __future__ import annotations

import os

import numpy as np

from .compute import SpectrumResult

IR_COLOR = "#b2182b"
RAMAN_COLORS = {"unpolarized": "#2166ac", "vv": "#4393c3", "vh": "#f4a582"}


def _xmax(results: list[SpectrumResult]) -> float:
    top = 0.0
    for r in results:
        y = np.nan_to_num(r.total)
        big = np.nonzero(y > 1e-2 * y.max())[0] if y.max() > 0 else []  # above 1 %: bands, not noise
        if len(big):
            top = max(top, r.wavenumber[big[-1]])
    nyquist = min(r.wavenumber[-1] for r in results)
    return float(min(nyquist, max(500.0, np.ceil(top * 1.1 / 250.0) * 250.0)))


def _annotate(ax, result: SpectrumResult, name: str, xmax: float, color: str, with_rho: bool = False) -> float:
    """Mark the peaks of ``name`` with their wavenumber (and ρ). A label closer than 7 % of the
    axis to the one before it is put above that one, so that neighbouring labels never overlap
    (each stays centred on its peak).
    Returns the top of the highest label (data units), for the axis limits."""
    nu = result.wavenumber
    y = result.components[name]
    shown = nu <= xmax
    y_top = float(np.nanmax(y[shown])) if shown.any() else 1.0
    pad, height = 0.03 * y_top, (0.17 if with_rho else 0.09) * y_top
    last_x, last_top, top = -np.inf, -np.inf, y_top
    for p in sorted(p for p in result.peaks(name) if p <= xmax):
        i = int(np.argmin(np.abs(nu - p)))
        label = f"{p:.0f}"
        if with_rho:
            rho = result.components["depolarization"][i]
            if np.isfinite(rho):
                label += f"\nρ={rho:.2f}"
        at = y[i] + pad
        if p - last_x < 0.07 * xmax:
            at = max(at, last_top + 0.2 * pad)
        side = "left" if p < 0.03 * xmax else "right" if p > 0.97 * xmax else "center"  # inside the axes
        # no leader line: it would cross the labels stacked below; the label is centred on its peak
        ax.annotate(label, (p, y[i]), xytext=(p, at), textcoords="data", ha=side, va="bottom",
                    fontsize=8, color=color)
        ax.plot([p], [y[i]], "v", color=color, ms=4)
        last_x, last_top = p, at + height
        top = max(top, last_top)
    return top


def _band(ax, result: SpectrumResult, name: str, color: str, label: bool = True) -> None:
    """The model band (shaded) and the statistical error (dashed) of component ``name``."""
    nu, y = result.wavenumber, result.components[name]
    band = result.bands.get(name)
    if band is not None:
        lo, hi = result.meta["band"]
        ax.fill_between(nu, band[0], band[1], color=color, alpha=0.3, lw=0,
                        label=(f"model band {lo:g}–{hi:g} % ({result.meta['n_samples']} posterior draws)"
                               if label else None))
    err = result.errors.get(name)
    if err is not None and np.isfinite(err).any():
        for sign in (-1.0, 1.0):
            ax.plot(nu, y + sign * err, color=color, lw=0.6, ls="--", alpha=0.8,
                    label=(f"statistical error ±1 s.e. ({result.meta['n_blocks']} blocks)"
                           if label and sign > 0 else None))


def plot_spectra(results: list[SpectrumResult] | SpectrumResult, path: str | os.PathLike,
                 title: str | None = None, xmax: float | None = None) -> None:
    """Write a PNG with an IR panel and/or a Raman panel (plus its depolarization ratio)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(results, SpectrumResult):
        results = [results]
    ir = [r for r in results if r.kind == "ir"]
    raman = [r for r in results if r.kind == "raman"]
    xmax = xmax or _xmax(results)
    heights = [3.0] * len(ir) + [3.0, 1.3] * len(raman)
    fig, axes = plt.subplots(len(heights), 1, figsize=(8, sum(heights) + 1.0), sharex=True,
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    axes = list(axes[:, 0])
    label_tops: dict = {}
    for r in ir:
        ax = axes.pop(0)
        _band(ax, r, "ir", IR_COLOR)
        ax.plot(r.wavenumber, r.components["ir"], color=IR_COLOR, lw=1.2, label="IR absorption")
        label_tops[ax] = _annotate(ax, r, "ir", xmax, IR_COLOR)
        if r.bands or r.errors:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        ax.set_ylabel("IR absorption κ\n[km mol⁻¹ (cm⁻¹)⁻¹]")
        ax.set_title(f"IR  (T = {r.meta['temperature']:g} K, {r.meta['correction']} correction, "
                     f"depth {r.meta['depth_fs']:g} fs, {r.meta['window']} window)", fontsize=10)
    for r in raman:
        ax = axes.pop(0)
        for name, label in (("unpolarized", "unpolarized (VV+VH)"), ("vv", "VV"), ("vh", "VH")):
            _band(ax, r, name, RAMAN_COLORS[name], label=name == "unpolarized")
            ax.plot(r.wavenumber, r.components[name], color=RAMAN_COLORS[name],
                    lw=1.4 if name == "unpolarized" else 1.0, label=label)
        label_tops[ax] = _annotate(ax, r, "unpolarized", xmax, RAMAN_COLORS["unpolarized"], with_rho=True)
        factored = r.meta.get("laser") or r.meta.get("bose")
        ax.set_ylabel(("Raman intensity\n(activity × factors)" if factored else "Raman activity")
                      + "\n[Å⁴ amu⁻¹ (cm⁻¹)⁻¹]")
        extra = []
        if r.meta.get("laser"):
            extra.append(f"laser {r.meta['laser']:g} cm⁻¹")
        if r.meta.get("bose"):
            extra.append("Bose factor")
        ax.set_title(f"Raman  (T = {r.meta['temperature']:g} K, {r.meta['correction']} correction, "
                     f"depth {r.meta['depth_fs']:g} fs, {r.meta['window']} window"
                     + ")" + ("\n" + ", ".join(extra) if extra else ""), fontsize=10)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)  # beside the peaks
        axr = axes.pop(0)
        rho = r.components["depolarization"]
        strong = np.nan_to_num(r.total) > 0.02 * np.nanmax(r.total)
        axr.plot(r.wavenumber, np.where(strong, rho, np.nan), color="k", lw=1.0)
        axr.axhline(0.75, color="0.5", ls="--", lw=0.8)
        axr.text(0.995, 0.75, "0.75 ", transform=axr.get_yaxis_transform(), ha="right", va="bottom",
                 fontsize=8, color="0.4")
        axr.set_ylim(0, 1)
        axr.set_ylabel("depolarization\nratio ρ")
    for ax in fig.axes:
        ax.set_xlim(0, xmax)
        ax.grid(alpha=0.3, lw=0.5)
        lo, hi = ax.get_ylim()
        if ax in label_tops:  # room for the peak labels
            ax.set_ylim(min(0.0, lo), max(hi * 1.12, label_tops[ax] * 1.03))
    fig.axes[-1].set_xlabel("wavenumber [cm⁻¹]")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
