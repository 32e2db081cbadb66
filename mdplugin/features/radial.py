"""Radial functions of the spherical expansion: featomic's own spline of the radial integral.

The expansion coefficient of a neighbour at distance ``r`` is ``f_c(r) R_nl(r) Y_lm(r̂)``, where
``R_nl`` is the radial integral of a Gaussian atomic density on featomic's GTO radial basis. This
module gets ``R_nl`` from featomic's public :class:`featomic.splines.SoapSpliner`: a cubic Hermite
spline (values and derivatives at equidistant points of ``[0, cutoff]``, refined until its mean
error is below 1e-8). The same spline, handed back to featomic as an ``Explicit`` basis with a
``DiracDelta`` density (:meth:`RadialSpline.featomic_hypers`), makes featomic compute exactly the
expansion mdplugin computes, which is how the engine is tested. featomic's native ``Gto`` hypers
spline the same integral their own way; the two agree to ~1e-9 relative in the values and ~1e-8 in
the gradients, which is how a model file naming the ``Gto`` basis maps onto this engine.

Building a spline takes featomic's quadratures 5–15 s (one per set of hyper-parameters), so it is
kept for the process and on disk: a plain ``.npz`` under ``$MDPLUGIN_CACHE`` (default
``~/.cache/mdplugin``; ``off`` disables it), written atomically, keyed by the hypers and
featomic's version; a missing, damaged or foreign file is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.atomicio import atomic_write
from ..core.errors import ConfigError

__all__ = ["RadialSpline", "radial_spline", "cache_dir"]

#: format version of the splines kept on disk: bump it when :func:`_build` changes
_FORMAT = 2


@dataclass(frozen=True)
class RadialSpline:
    """featomic's spline of ``R_nl(r)`` on ``[0, cutoff]`` and the cutoff function's parameters.

    Attributes
    ----------
    cutoff, smoothing_width, gaussian_width : float
        Å (the shifted-cosine smoothing acts over ``[cutoff − smoothing_width, cutoff]``).
    max_radial, max_angular : int
        featomic's basis sizes (``max_radial + 1`` radial functions per l).
    positions : tuple[np.ndarray, ...]
        Per l, ``(n_points_l,)`` equidistant spline points, Å, from 0 to ``cutoff`` (featomic refines
        each l's grid on its own).
    values, derivatives : tuple[np.ndarray, ...]
        Per l, ``(n_points_l, max_radial + 1)``: ``R_nl`` and ``dR_nl/dr`` (Å⁻¹) at the points.
    """

    cutoff: float
    smoothing_width: float
    gaussian_width: float
    max_radial: int
    max_angular: int
    positions: tuple
    values: tuple
    derivatives: tuple

    @property
    def n_radial(self) -> int:
        return self.max_radial + 1

    def steps(self) -> np.ndarray:
        """``(max_angular + 1,)`` the spacing of each l's points, Å."""
        return np.array([p[1] - p[0] for p in self.positions])

    def coefficients(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The cubics the engine evaluates: ``(cubics, inverse_steps, n_intervals)``.

        ``cubics`` ``(max_angular + 1, n_intervals_max, max_radial + 1, 4)``: on interval ``k`` of
        l's grid, ``R_nl = Σ_q cubics[l, k, n, q] t^q`` with ``t = r / step_l − k`` (the Hermite form
        featomic evaluates, expanded once; zero past an l's last interval); ``inverse_steps``
        ``(max_angular + 1,)`` Å⁻¹; ``n_intervals`` ``(max_angular + 1,)`` int."""
        n_max = max(len(p) for p in self.positions) - 1
        cubics = np.zeros((self.max_angular + 1, n_max, self.n_radial, 4))
        for l, (positions, values, derivatives) in enumerate(zip(self.positions, self.values, self.derivatives)):
            h = positions[1] - positions[0]
            p0, p1 = values[:-1], values[1:]
            m0, m1 = derivatives[:-1] * h, derivatives[1:] * h
            cubics[l, : len(p0)] = np.stack([p0, m0, 3 * (p1 - p0) - 2 * m0 - m1, 2 * (p0 - p1) + m0 + m1], axis=-1)
        n_intervals = np.array([len(p) - 1 for p in self.positions], dtype=np.int64)
        return cubics, 1.0 / self.steps(), n_intervals

    def self_contribution(self) -> np.ndarray:
        """The centre's own density in its l = 0 coefficients, ``(max_radial + 1,)``: ``R_n0(0) Y_00``
        (featomic's centre-atom term with weight 1)."""
        return self.values[0][0] / np.sqrt(4.0 * np.pi)

    def featomic_hypers(self) -> dict:
        """Hyper-parameters that make ``featomic.SphericalExpansion`` compute this engine's expansion
        with this very spline (an ``Explicit`` basis of ``Tabulated`` radial functions, a
        ``DiracDelta`` density, the shifted-cosine cutoff) — the reference of the tests."""
        import featomic
        from featomic.splines import Spline, SplinedRadialBasis

        by_angular = {}
        for l in range(self.max_angular + 1):
            spline = Spline(0.0, self.cutoff)
            spline.add_points(self.positions[l], self.values[l], self.derivatives[l])
            by_angular[l] = SplinedRadialBasis(spline=spline, max_radial=self.max_radial, radius=self.cutoff)
        return {
            "cutoff": featomic.cutoff.Cutoff(
                radius=self.cutoff, smoothing=featomic.cutoff.ShiftedCosine(width=self.smoothing_width)),
            "density": featomic.density.DiracDelta(center_atom_weight=1.0),
            "basis": featomic.basis.Explicit(by_angular=by_angular, spline_accuracy=None),
        }


def _check(cutoff: float, max_radial: int, max_angular: int, gaussian_width: float, smoothing_width: float) -> None:
    if not cutoff > 0:
        raise ConfigError(f"cutoff must be > 0 Å, got {cutoff}")
    if max_radial < 0 or max_angular < 0:
        raise ConfigError(f"max_radial and max_angular must be >= 0, got {max_radial} and {max_angular}")
    if not gaussian_width > 0:
        raise ConfigError(f"gaussian_width must be > 0 Å, got {gaussian_width}")
    if not 0 < smoothing_width <= cutoff:
        raise ConfigError(f"smoothing_width must be in (0, cutoff], got {smoothing_width} for cutoff {cutoff}")


def _build(cutoff: float, max_radial: int, max_angular: int, gaussian_width: float, smoothing_width: float
           ) -> RadialSpline:
    """The spline of featomic's :class:`~featomic.splines.SoapSpliner` (accuracy 1e-8, its default)."""
    import featomic
    from featomic.splines import SoapSpliner

    spliner = SoapSpliner(
        cutoff=featomic.cutoff.Cutoff(radius=cutoff, smoothing=featomic.cutoff.ShiftedCosine(width=smoothing_width)),
        density=featomic.density.Gaussian(width=gaussian_width),
        basis=featomic.basis.TensorProduct(
            max_angular=max_angular, radial=featomic.basis.Gto(max_radial=max_radial, radius=cutoff)),
    )
    bases = spliner.get_hypers()["basis"].by_angular
    splines = [bases[l].spline for l in range(max_angular + 1)]
    return RadialSpline(
        cutoff=cutoff, smoothing_width=smoothing_width, gaussian_width=gaussian_width, max_radial=max_radial,
        max_angular=max_angular, positions=tuple(np.asarray(s.positions, dtype=np.float64) for s in splines),
        values=tuple(np.ascontiguousarray(s.values, dtype=np.float64) for s in splines),
        derivatives=tuple(np.ascontiguousarray(s.derivatives, dtype=np.float64) for s in splines),
    )


def cache_dir() -> Path | None:
    """The folder of mdplugin's disk cache: ``$MDPLUGIN_CACHE``, else ``~/.cache/mdplugin``;
    ``None`` when ``MDPLUGIN_CACHE`` is ``off`` (nothing is read or written)."""
    value = os.environ.get("MDPLUGIN_CACHE", "").strip()
    if value.lower() in ("off", "none", "0", "false"):
        return None
    return Path(value).expanduser() if value else Path.home() / ".cache" / "mdplugin"


def _identity(key: tuple) -> str:
    from importlib import metadata

    try:
        version = metadata.version("featomic")
    except metadata.PackageNotFoundError:  # pragma: no cover - featomic is a dependency
        version = "absent"
    names = ("cutoff", "max_radial", "max_angular", "gaussian_width", "smoothing_width")
    return json.dumps({"hypers": dict(zip(names, key)), "format": _FORMAT, "featomic": version}, sort_keys=True)


def _load(path: Path, identity: str, key: tuple) -> RadialSpline | None:
    """The spline stored at ``path`` for ``identity``, or None (absent, damaged, foreign: rebuilt)."""
    cutoff, max_radial, max_angular, gaussian_width, smoothing_width = key
    arrays = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["identity"][()]) != identity:
                return None
            for name in ("positions", "values", "derivatives"):
                arrays[name] = tuple(np.array(data[f"{name}_l{l}"], dtype=np.float64) for l in range(max_angular + 1))
    except Exception:  # missing, truncated, corrupt: rebuild
        return None
    for positions, values, derivatives in zip(*arrays.values()):
        shape = (len(positions), max_radial + 1)
        if (positions.ndim != 1 or len(positions) < 2 or values.shape != shape or derivatives.shape != shape
                or not all(np.isfinite(a).all() for a in (positions, values, derivatives))):
            return None
    return RadialSpline(cutoff, smoothing_width, gaussian_width, max_radial, max_angular, **arrays)


def _store(path: Path, identity: str, spline: RadialSpline) -> None:
    """Keep ``spline`` on disk; any failure (read-only home, full disk) only means it is not kept."""
    try:
        with atomic_write(path, "wb") as out:
            np.savez(out, identity=np.array(identity), **{
                f"{name}_l{l}": array for name in ("positions", "values", "derivatives")
                for l, array in enumerate(getattr(spline, name))})
    except OSError:
        pass


_SPLINES: dict[tuple, RadialSpline] = {}
_LOCK = threading.Lock()


def radial_spline(cutoff: float, max_radial: int, max_angular: int, gaussian_width: float = 0.3,
                  smoothing_width: float = 0.5) -> RadialSpline:
    """featomic's spline of the GTO radial integral of a Gaussian density (see the module doc), for
    the process and from the disk cache when an earlier process built it."""
    key = (float(cutoff), int(max_radial), int(max_angular), float(gaussian_width), float(smoothing_width))
    spline = _SPLINES.get(key)
    if spline is not None:
        return spline
    _check(*key)
    with _LOCK:
        spline = _SPLINES.get(key)
        if spline is None:
            folder = cache_dir()
            identity = _identity(key)
            path = None
            if folder is not None:
                path = folder / f"radial-spline-{hashlib.sha256(identity.encode()).hexdigest()[:32]}.npz"
                spline = _load(path, identity, key)
            if spline is None:
                spline = _build(*key)
                if path is not None:
                    _store(path, identity, spline)
            _SPLINES[key] = spline
    return spline
