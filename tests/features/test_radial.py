"""featomic's radial spline: what the engine evaluates, how it is kept, how it maps older models.

The spline comes from featomic's public ``SoapSpliner``; featomic given it back reproduces the
engine (tests/features/test_expansion.py). Here: featomic's native ``Gto`` expansion (the hypers
older model files name) agrees with the splined one to the spline's accuracy, the spline's cubics
are its Hermite form, and the disk cache returns the same numbers, rebuilds damaged files and can be
switched off.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule

import mdplugin.features.radial as radial
from mdplugin.core.errors import ConfigError
from mdplugin.features.expansion import SphericalExpansion

TINY = (3.0, 1, 1, 0.3, 0.5)  # cheap to build (about a second)


def test_native_gto_featomic_agrees_with_the_splined_engine():
    """Older model files name featomic's Gto basis; the engine's spline of the same integral gives
    the same expansion to ~1e-9 (values) and ~1e-8 (gradients), far below any model's error."""
    import featomic

    water = molecule("H2O")
    water.cell = [[3.1, 0, 0], [0.4, 3.3, 0], [-0.2, 0.3, 3.6]]  # periodic, atoms see their images
    water.pbc = True
    calc = SphericalExpansion([1, 8], cutoff=5.0, max_radial=4, max_angular=3)
    native = featomic.SphericalExpansion(**calc.hypers()).compute(water, gradients=["positions"])
    ours = calc.featomic_reference().compute(water, gradients=["positions"])
    scale = max(np.abs(block.values).max() for block in native.blocks())
    gscale = max(np.abs(block.gradient("positions").values).max() for block in native.blocks())
    for key, block in native.items():
        other = ours.block(key)
        assert np.abs(block.values - other.values).max() <= 1e-8 * scale
        g, h = block.gradient("positions").values, other.gradient("positions").values
        assert np.abs(g - h).max() <= 1e-7 * gscale


def test_cubics_are_the_hermite_spline():
    spline = radial.radial_spline(*TINY)
    cubics, inverse_steps, n_intervals = spline.coefficients()
    t = np.linspace(0, 1, 7)
    powers = t[:, None] ** np.arange(4)
    h00, h10, h01, h11 = 2 * t**3 - 3 * t**2 + 1, t**3 - 2 * t**2 + t, -2 * t**3 + 3 * t**2, t**3 - t**2
    for l in range(spline.max_angular + 1):
        v, d, h = spline.values[l], spline.derivatives[l], 1.0 / inverse_steps[l]
        assert n_intervals[l] == len(v) - 1
        for k in (0, len(v) // 2, len(v) - 2):
            hermite = (h00[:, None] * v[k] + h10[:, None] * h * d[k] + h01[:, None] * v[k + 1]
                       + h11[:, None] * h * d[k + 1])
            np.testing.assert_allclose(powers @ cubics[l, k].T, hermite, rtol=1e-12, atol=1e-14)


def test_disk_cache_returns_the_same_spline(tmp_path, monkeypatch):
    monkeypatch.setenv("MDPLUGIN_CACHE", str(tmp_path))
    monkeypatch.setattr(radial, "_SPLINES", {})
    fresh = radial.radial_spline(*TINY)
    files = list(tmp_path.glob("radial-spline-*.npz"))
    assert len(files) == 1
    monkeypatch.setattr(radial, "_SPLINES", {})
    monkeypatch.setattr(radial, "_build", lambda *a: pytest.fail("rebuilt although cached"))
    loaded = radial.radial_spline(*TINY)
    for name in ("positions", "values", "derivatives"):
        for a, b in zip(getattr(loaded, name), getattr(fresh, name), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign"])
def test_a_damaged_cache_file_is_rebuilt(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("MDPLUGIN_CACHE", str(tmp_path))
    monkeypatch.setattr(radial, "_SPLINES", {})
    fresh = radial.radial_spline(*TINY)
    path = next(tmp_path.glob("radial-spline-*.npz"))
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(b"not an npz")
    else:
        with np.load(path) as data:
            arrays = dict(data)
        arrays["identity"] = np.array("another")
        np.savez(path, **arrays)
    monkeypatch.setattr(radial, "_SPLINES", {})
    again = radial.radial_spline(*TINY)
    np.testing.assert_array_equal(again.values[1], fresh.values[1])
    monkeypatch.setattr(radial, "_SPLINES", {})
    monkeypatch.setattr(radial, "_build", lambda *a: pytest.fail("the rebuilt file was not kept"))
    radial.radial_spline(*TINY)


def test_cache_off_and_unwritable(tmp_path, monkeypatch):
    monkeypatch.setenv("MDPLUGIN_CACHE", "off")
    assert radial.cache_dir() is None
    monkeypatch.setattr(radial, "_SPLINES", {})
    radial.radial_spline(*TINY)
    blocked = tmp_path / "file"
    blocked.write_text("a file where the folder should be")
    monkeypatch.setenv("MDPLUGIN_CACHE", str(blocked / "sub"))
    monkeypatch.setattr(radial, "_SPLINES", {})
    radial.radial_spline(*TINY)  # not kept, no error


@pytest.mark.parametrize("bad, words", [
    (dict(cutoff=0.0), "cutoff"), (dict(max_radial=-1), "max_radial"), (dict(gaussian_width=0.0), "gaussian_width"),
    (dict(smoothing_width=9.0), "smoothing_width"),
])
def test_bad_hypers_are_named(bad, words):
    hypers = dict(zip(("cutoff", "max_radial", "max_angular", "gaussian_width", "smoothing_width"), TINY))
    hypers.update(bad)
    with pytest.raises(ConfigError, match=words):
        radial.radial_spline(**hypers)
