"""Figures of IR and Raman spectra (matplotlib, Agg backend): one panel per spectrum kind.

IR: absorption in km mol⁻¹ (cm⁻¹)⁻¹ with its error band. Raman: unpolarized, VV and VH
activities in Å⁴ amu⁻¹ (cm⁻¹)⁻¹, and below it the depolarization ratio where the band is
significant. Peaks are marked with their wavenumber (and ρ for Raman).
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
        big = np.nonzero(y > 2e-3 * y.max())[0] if y.max() > 0 else []
        if len(big):
            top = max(top, r.wavenumber[big[-1]])
    nyquist = min(r.wavenumber[-1] for r in results)
    return float(min(nyquist, max(500.0, np.ceil(top * 1.1 / 250.0) * 250.0)))


def _annotate(ax, result: SpectrumResult, name: str, xmax: float, color: str, with_rho: bool = False) -> None:
    nu = result.wavenumber
    y = result.components[name]
    for p in result.peaks(name):
        if p > xmax:
            continue
        i = int(np.argmin(np.abs(nu - p)))
        label = f"{p:.0f}"
        if with_rho:
            rho = result.components["depolarization"][i]
            if np.isfinite(rho):
                label += f"\nρ={rho:.2f}"
        ax.annotate(label, (p, y[i]), xytext=(0, 6), textcoords="offset points", ha="center",
                    va="bottom", fontsize=9, color=color)
        ax.plot([p], [y[i]], "v", color=color, ms=4)


def _band(ax, result: SpectrumResult, name: str, color: str) -> None:
    err = result.errors.get(name)
    if err is not None and np.isfinite(err).any():
        y = result.components[name]
        ax.fill_between(result.wavenumber, y - err, y + err, color=color, alpha=0.25, lw=0)


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
    for r in ir:
        ax = axes.pop(0)
        _band(ax, r, "ir", IR_COLOR)
        ax.plot(r.wavenumber, r.components["ir"], color=IR_COLOR, lw=1.2, label="IR absorption")
        _annotate(ax, r, "ir", xmax, IR_COLOR)
        ax.set_ylabel("IR absorption κ\n[km mol⁻¹ (cm⁻¹)⁻¹]")
        ax.set_title(f"IR  (T = {r.meta['temperature']:g} K, {r.meta['correction']} correction, "
                     f"depth {r.meta['depth_fs']:g} fs, {r.meta['window']} window)", fontsize=10)
    for r in raman:
        ax = axes.pop(0)
        for name, label in (("unpolarized", "unpolarized (VV+VH)"), ("vv", "VV"), ("vh", "VH")):
            _band(ax, r, name, RAMAN_COLORS[name])
            ax.plot(r.wavenumber, r.components[name], color=RAMAN_COLORS[name],
                    lw=1.4 if name == "unpolarized" else 1.0, label=label)
        _annotate(ax, r, "unpolarized", xmax, RAMAN_COLORS["unpolarized"], with_rho=True)
        ax.set_ylabel("Raman activity\n[Å⁴ amu⁻¹ (cm⁻¹)⁻¹]")
        extra = []
        if r.meta.get("laser"):
            extra.append(f"laser {r.meta['laser']:g} cm⁻¹")
        if r.meta.get("bose"):
            extra.append("Bose factor")
        ax.set_title(f"Raman  (T = {r.meta['temperature']:g} K, {r.meta['correction']} correction"
                     + "".join(", " + e for e in extra) + ")", fontsize=10)
        ax.legend(loc="upper right", fontsize=9, frameon=False)
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
        if ax.get_ylabel().startswith(("IR", "Raman")):
            ax.set_ylim(min(0.0, lo), hi * 1.18)
    fig.axes[-1].set_xlabel("wavenumber [cm⁻¹]")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
