"""A dense numpy spherical expansion for molecules that reproduces featomic's numbers.

For a few small molecules featomic's ``SphericalExpansion`` is dominated by per-call overhead
(building a ``TensorMap`` of 45 blocks, then copying it into dense arrays), not by arithmetic.
This engine computes the same dense :class:`~mdplugin.features.expansion.Expansion` directly
with vectorised numpy, for NON-periodic frames only.

How it stays equal to featomic
------------------------------
A coefficient of centre ``i`` from neighbour ``j`` at ``d = r_j − r_i`` (``r = |d|``) is
``f(r) · G_nl(r) · Y_lm(d / r)``, where ``f`` is the shifted-cosine cutoff function, ``G_nl`` the
radial integral of the Gaussian density on the GTO basis and ``Y_lm`` featomic's real spherical
harmonics (orthonormal, ``m = −l..l``, for ``l = 1`` the order ``(y, z, x)``).

* ``G_nl`` is **tabulated from featomic itself**: featomic evaluates it as a cubic Hermite spline
  on a uniform grid of ``10·2^k`` intervals of ``[0, cutoff]`` (refined by bisection until its
  ``spline_accuracy``).  We run featomic once (per set of hyper-parameters, lazily, cached for
  the process) on two-atom probes (centre at the origin, neighbour at ``(0, 0, r)``, step cutoff)
  at the knots and mid-points of a uniform grid, refining it the same way until our own Hermite
  spline predicts featomic's values at the mid-points to 1e-13 of the largest value: our grid then
  refines featomic's, and a cubic Hermite spline through exact values and derivatives of a
  piecewise cubic reproduces it exactly (to rounding).  The end intervals take their end-point data
  from the cubic through two interior probes (featomic gives no gradient at ``r = 0`` and no pair
  at ``r = cutoff``).
* The centre's own Gaussian (featomic's ``center_atom_weight`` term: ``l = 0``, centre species
  slot, no gradient) comes from a one-atom probe.
* ``f`` and its derivative are featomic's formulas; pairs are ordered pairs ``i ≠ j`` of a frame with
  ``|d|² < cutoff²`` (featomic's neighbour-list test), and the gradient pairs are those plus every
  self pair ``(i, i)`` — exactly the set featomic reports.  ``dc_i/dr_i = −Σ_j dc_i/dr_j``.
* ``Y_lm`` are real solid harmonics evaluated on the unit vector (signs and normalisation checked
  against featomic and by quadrature in the tests): all monomials of ``û`` once, then one matrix
  product with a coefficient table.

The table is also kept **on disk** (:func:`radial_table`: a plain ``.npz`` under
``$MDPLUGIN_CACHE``, default ``~/.cache/mdplugin``, keyed by the hyper-parameters, the table's
format version and featomic's version), so that later processes load it in milliseconds without
importing featomic (≈ 0.5 s saved at the start of every command and of every MPI rank).

Agreement with featomic: ~1e-15 relative in the values, ~3e-14 in the gradients
(``tests/features/test_tabulated_expansion.py``).  Should the probe grid fail to reproduce featomic's
spline (a spline finer than 5120 intervals), :attr:`TabulatedExpansion.exact` is false and
:class:`~mdplugin.features.expansion.SphericalExpansion` uses featomic.

How it is fast
--------------
Per batch: one ``(F, 3, N, N)`` distance step per group of equal-size frames; per pair the
radial values ``(g, g', g/r)`` from its cubic piece (one batched product), the monomials of
``û`` and one product with a table giving, per ``l``, the ``(3, 4(2l+1))`` matrix that turns
``(g, g', g/r)`` into the gradient ``(x, y, z)`` and minus the value; one small product per ``l``
and pair; the sums over neighbours of each (centre, species) — the values and the self-pair
gradients — as ONE product with a sparse 0/1 matrix (sums in pair order: a frame's numbers do
not depend on its batch); and two
scatters into one output buffer.  Where every number goes (the "layout") depends only on the
pair set and is cached between the MD steps of one molecule.  For one 1,2-dichloroethane
(8 atoms) with gradients this takes ~0.6 ms against ~5 ms for featomic plus the copy into dense
arrays (``benchmarks/bench_expansion.py``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import tempfile
import threading
import warnings
from pathlib import Path
from dataclasses import dataclass
from collections.abc import Sequence

import numpy as np

__all__ = ["RadialTable", "TabulatedExpansion", "cache_dir", "radial_table", "solid_harmonic_tables"]

#: relative agreement (to the largest |G_l|) at which the probe grid is accepted as refining featomic's
_GRID_TOLERANCE = 1e-13
_MAX_REFINEMENTS = 7  # grids of 40·2^k intervals, up to 5120
_PROBES_PER_SYSTEM = 256


# --------------------------------------------------------------------------------------------
# angular part: real solid harmonics as homogeneous polynomials
# --------------------------------------------------------------------------------------------


def _monomial_exponents(max_degree: int) -> np.ndarray:
    """``(n_mono, 3)`` exponents (a, b, c) of x^a y^b z^c, every degree 0..max_degree."""
    return np.array(
        [(a, b, d - a - b) for d in range(max_degree + 1) for a in range(d, -1, -1) for b in range(d - a, -1, -1)],
        dtype=np.int64,
    ).reshape(-1, 3)


def solid_harmonic_tables(max_angular: int) -> tuple[np.ndarray, np.ndarray]:
    """Monomial exponents and coefficient tables of orthonormal real solid harmonics.

    Returns ``(exponents, tables)``: ``exponents`` ``(n_mono, 3)``; ``tables`` ``(n_mono, 4, n_lm)``
    with ``n_lm = (max_angular + 1)²`` columns ordered ``l = 0..L``, ``m = −l..l``: ``tables[:, 0]``
    gives ``r^l Y_lm`` and ``tables[:, 1 + x]`` its derivative along ``x``, both as coefficients of
    the monomials (``S = monomials @ tables[:, 0]``).  Helgaker, Jørgensen & Olsen, *Molecular
    Electronic-Structure Theory*, eq. 6.4.47–6.4.50, times ``√((2l+1)/4π)``; the signs are
    featomic's (checked by the tests).
    """
    exps = _monomial_exponents(max_angular)
    where = {tuple(int(v) for v in e): k for k, e in enumerate(exps)}
    n_lm = (max_angular + 1) ** 2
    table = np.zeros((len(exps), n_lm))
    for l in range(max_angular + 1):
        norm_l = math.sqrt((2 * l + 1) / (4 * math.pi))
        for m in range(-l, l + 1):
            am = abs(m)
            n_s = math.sqrt(2 * math.factorial(l + am) * math.factorial(l - am) / (2 if m == 0 else 1))
            n_s /= 2**am * math.factorial(l)
            twice_vm = 0 if m >= 0 else 1  # v runs over v_m, v_m + 1, ... with v_m = 0 or 1/2
            for t in range((l - am) // 2 + 1):
                for u in range(t + 1):
                    twice_v = twice_vm
                    while twice_v <= 2 * (math.floor(am / 2 - twice_vm / 2)) + twice_vm:
                        sign = (-1) ** (t + (twice_v - twice_vm) // 2)
                        c = sign * 0.25**t * math.comb(l, t) * math.comb(l - t, am + t) * math.comb(t, u) \
                            * math.comb(am, twice_v)
                        a = 2 * t + am - 2 * u - twice_v
                        b = 2 * u + twice_v
                        table[where[(a, b, l - 2 * t - am)], l * l + m + l] += norm_l * n_s * c
                        twice_v += 2
    tables = np.zeros((len(exps), 4, n_lm))
    tables[:, 0] = table
    for k, e in enumerate(exps):
        for x in range(3):
            if e[x] > 0:
                lower = e.copy()
                lower[x] -= 1
                tables[where[tuple(int(v) for v in lower)], 1 + x] += e[x] * table[k]
    return exps, tables


# --------------------------------------------------------------------------------------------
# radial part: featomic's splined radial integral, read back through probes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RadialTable:
    """Cubic pieces of ``G_nl(r)`` on ``n_intervals`` equal intervals of ``[0, cutoff]``.

    Attributes
    ----------
    cutoff, smoothing_width : float
        Å.
    step : float
        Interval length, Å.
    coefficients : np.ndarray
        ``(n_intervals, n_radial * (max_angular + 1), 4)``: on interval ``k``,
        ``G(r) = Σ_q coefficients[k, :, q] t^q`` with ``t = r / step − k`` (n outer, l inner).
    self_contribution : np.ndarray
        ``(n_radial,)``: the centre's own ``l = 0`` coefficients (its species slot).
    grid_error : float
        Largest mid-point mismatch against featomic when the grid was accepted, relative to the
        largest |G| of the same l.
    value_and_derivative : np.ndarray
        ``(4, 8)``: ``[1, t, t², t³] @ value_and_derivative``, reshaped ``(4, 2)``, are the weights
        of the 4 coefficients for the value (column 0) and the derivative per Å (column 1).
    """

    cutoff: float
    smoothing_width: float
    step: float
    coefficients: np.ndarray
    self_contribution: np.ndarray
    grid_error: float
    value_and_derivative: np.ndarray

    @property
    def n_intervals(self) -> int:
        return int(self.coefficients.shape[0])


class _DropCloseAtomWarnings(logging.Filter):
    """featomic warns about atoms closer than 0.03 Å: the probes near r = 0 are meant to be."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "very close to one another" not in record.getMessage()


def _probe(calculator, cutoff: float, radii: np.ndarray, max_angular: int, y_l0: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """featomic's ``G_nl(r)`` and ``G'_nl(r)`` at ``radii`` (all in (0, cutoff)): ``(len, L+1, n)`` each.

    A featomic system holds up to ``_PROBES_PER_SYSTEM`` probes (an H at ``(k·s, 0, 0)`` and a C
    at ``(k·s, 0, r_k)``, ``s`` = 2 × cutoff + 1 Å, so that no two probes see each other): a system
    per probe costs a millisecond of featomic overhead each, and featomic's neighbour search in a
    molecule is quadratic in its atoms."""
    from ase import Atoms

    spacing = 2.0 * cutoff + 1.0
    n = len(radii)
    systems = []
    for start in range(0, n, _PROBES_PER_SYSTEM):
        r = radii[start : start + _PROBES_PER_SYSTEM]
        positions = np.zeros((2 * len(r), 3))
        positions[0::2, 0] = positions[1::2, 0] = np.arange(len(r)) * spacing
        positions[1::2, 2] = r
        systems.append(Atoms(numbers=np.tile([1, 6], len(r)), positions=positions))
    root = logging.getLogger()
    quiet = _DropCloseAtomWarnings()
    root.addFilter(quiet)
    try:
        tensor = calculator.compute(systems, gradients=["positions"])
    finally:
        root.removeFilter(quiet)
    values, derivs = [], []
    for l in range(max_angular + 1):
        block = tensor.block({"o3_lambda": l, "center_type": 1, "neighbor_type": 6})
        samples = np.asarray(block.samples.values)  # (system, atom): atom 2k is the centre of probe k
        if samples.shape[0] != n or not np.array_equal(samples[:, 0] * _PROBES_PER_SYSTEM + samples[:, 1] // 2,
                                                         np.arange(n)):
            raise RuntimeError("featomic probe: unexpected samples (a neighbour missing or extra)")
        v = np.asarray(block.values)[:, l, :]  # m = 0 sits at index l
        grad = block.gradient("positions")
        gs = np.asarray(grad.samples.values)  # (sample, system, atom)
        sel = gs[:, 2] % 2 == 1  # d / d(neighbour position)
        d = np.zeros_like(v)
        d[gs[sel, 0]] = np.asarray(grad.values)[sel][:, 2, l, :]  # z component, m = 0
        values.append(v / y_l0[l])
        derivs.append(d / y_l0[l])
    return np.stack(values, axis=1), np.stack(derivs, axis=1)


def _build_table(hypers: dict, max_angular: int, n_radial: int) -> RadialTable:
    """Probe featomic on refining grids until our spline reproduces its spline (see module doc)."""
    import copy

    import featomic
    from ase import Atoms
    from scipy.interpolate import CubicHermiteSpline

    cutoff = float(hypers["cutoff"]["radius"])
    smoothing = float(hypers["cutoff"]["smoothing"]["width"])
    step_hypers = copy.deepcopy(hypers)
    step_hypers["cutoff"]["smoothing"] = {"type": "Step"}
    probe_calc = featomic.SphericalExpansion(**step_hypers)
    _, tables = solid_harmonic_tables(max_angular)
    # Y_l0 at z-hat: the coefficient of z^l in S_l0
    exps = _monomial_exponents(max_angular)
    y_l0 = np.array([
        tables[np.flatnonzero((exps[:, 2] == l) & (exps[:, :2].sum(1) == 0))[0], 0, l * l + l]
        for l in range(max_angular + 1)
    ])

    n = 40
    knots_r = np.arange(1, n) * (cutoff / n)
    kv, kd = _probe(probe_calc, cutoff, knots_r, max_angular, y_l0)
    error = np.inf
    for attempt in range(_MAX_REFINEMENTS + 1):
        h = cutoff / n
        mids_r = (np.arange(n) + 0.5) * h
        mv, md = _probe(probe_calc, cutoff, mids_r, max_angular, y_l0)
        # end-point data from the cubic through (h/2, h) and (cutoff − h, cutoff − h/2)
        first = CubicHermiteSpline([h / 2, h], np.stack([mv[0], kv[0]]), np.stack([md[0], kd[0]]))
        last = CubicHermiteSpline([cutoff - h, cutoff - h / 2], np.stack([kv[-1], mv[-1]]),
                                  np.stack([kd[-1], md[-1]]))
        pv = np.concatenate([first(0.0)[None], kv, last(cutoff)[None]])  # (n + 1, L+1, nr) at k·h
        pd = np.concatenate([first(0.0, 1)[None], kd, last(cutoff, 1)[None]])
        spline = CubicHermiteSpline(np.arange(n + 1) * h, pv, pd)
        predicted = spline(mids_r)
        scale = np.maximum(np.abs(pv).max(axis=(0, 2)), 1e-300)[None, :, None]
        error = float((np.abs(predicted - mv) / scale)[1:-1].max(initial=0.0))
        if error <= _GRID_TOLERANCE or attempt == _MAX_REFINEMENTS:
            break
        # refine: the mid-points become knots
        merged_v = np.empty((2 * n - 1,) + kv.shape[1:])
        merged_d = np.empty_like(merged_v)
        merged_v[1::2], merged_d[1::2] = kv, kd
        merged_v[0::2], merged_d[0::2] = mv, md
        kv, kd, n = merged_v, merged_d, 2 * n
    if error > _GRID_TOLERANCE:
        warnings.warn(f"the tabulated spherical expansion could not reproduce featomic's radial spline "
                      f"(mismatch {error:.1e} on {n} intervals); featomic computes these expansions",
                      RuntimeWarning, stacklevel=3)
    h = cutoff / n
    # scipy's piecewise coefficients of (r − r_k)^(3−m), as coefficients of t^q (t = (r − r_k)/h)
    coefficients = np.stack([spline.c[3 - q] * h**q for q in range(4)], axis=1)
    coefficients = np.ascontiguousarray(coefficients.transpose(0, 3, 2, 1).reshape(n, n_radial * (max_angular + 1), 4))

    # the centre's own density: one isolated atom, l = 0 block of its own species
    real_calc = featomic.SphericalExpansion(**hypers)
    alone = real_calc.compute([Atoms(numbers=[1], positions=[[0.0, 0.0, 0.0]])])
    own = np.asarray(alone.block({"o3_lambda": 0, "center_type": 1, "neighbor_type": 1}).values)[0, 0, :].copy()
    weights = np.zeros((4, 4, 2))  # [1, t, t², t³] @ weights -> (coefficient q, value | derivative)
    weights[0, 0, 0] = weights[1, 1, 0] = weights[2, 2, 0] = weights[3, 3, 0] = 1.0
    weights[0, 1, 1], weights[1, 2, 1], weights[2, 3, 1] = 1.0 / h, 2.0 / h, 3.0 / h
    weights = weights.reshape(4, 8)
    return RadialTable(cutoff=cutoff, smoothing_width=smoothing, step=h, coefficients=coefficients,
                       self_contribution=own, grid_error=error, value_and_derivative=weights)


_TABLES: dict = {}
_TABLES_LOCK = threading.Lock()

#: format version of the tables kept on disk: bump it whenever :func:`_build_table` changes
_TABLE_VERSION = 2
_TABLE_FIELDS = ("cutoff", "smoothing_width", "step", "coefficients", "self_contribution", "grid_error",
                 "value_and_derivative")


def cache_dir() -> Path | None:
    """The folder of mdplugin's disk cache: ``$MDPLUGIN_CACHE``, else ``~/.cache/mdplugin``;
    ``None`` when ``MDPLUGIN_CACHE`` is ``off`` (nothing is read or written)."""
    value = os.environ.get("MDPLUGIN_CACHE", "").strip()
    if value.lower() in ("off", "none", "0", "false"):
        return None
    return Path(value).expanduser() if value else Path.home() / ".cache" / "mdplugin"


def _featomic_version() -> str:
    """featomic's installed version, read from its package metadata (without importing it)."""
    from importlib import metadata

    try:
        return metadata.version("featomic")
    except metadata.PackageNotFoundError:
        return "absent"


def _table_identity(hypers: dict) -> str:
    """Everything a table depends on, as canonical JSON: the hypers, the table's format version,
    the probe grid's acceptance rule and featomic's version."""
    return json.dumps({"hypers": hypers, "version": _TABLE_VERSION, "tolerance": _GRID_TOLERANCE,
                       "refinements": _MAX_REFINEMENTS, "featomic": _featomic_version()},
                      sort_keys=True, separators=(",", ":"), default=str)


def _table_path(folder: Path, identity: str) -> Path:
    digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
    return folder / f"radial-table-{digest}.npz"


def _load_table(path: Path, identity: str, max_angular: int, n_radial: int) -> RadialTable | None:
    """The table stored at ``path`` for ``identity``, or ``None`` when the file is absent,
    unreadable, of another identity or malformed (then it is rebuilt and overwritten)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["identity"][()]) != identity:
                return None
            fields = {name: np.array(data[name]) for name in _TABLE_FIELDS}
    except Exception:  # missing, truncated, corrupt, foreign: rebuild
        return None
    coefficients = fields["coefficients"]
    if (coefficients.dtype != np.float64 or coefficients.ndim != 3 or coefficients.shape[0] < 1
            or coefficients.shape[1:] != (n_radial * (max_angular + 1), 4)
            or fields["self_contribution"].shape != (n_radial,)
            or fields["value_and_derivative"].shape != (4, 8)
            or not all(np.all(np.isfinite(v)) for v in fields.values())):
        return None
    scalars = {name: float(fields[name]) for name in ("cutoff", "smoothing_width", "step", "grid_error")}
    return RadialTable(coefficients=np.ascontiguousarray(coefficients),
                       self_contribution=fields["self_contribution"].astype(np.float64),
                       value_and_derivative=fields["value_and_derivative"].astype(np.float64), **scalars)


def _store_table(path: Path, identity: str, table: RadialTable) -> None:
    """Write ``table`` to ``path`` atomically (a temporary file in the same folder, then
    ``os.replace``: concurrent processes, e.g. MPI ranks, never see a partial file). Any
    failure (read-only home, full disk) leaves the cache alone: the table is merely not kept."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
        try:
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
            with os.fdopen(fd, "wb") as out:
                np.savez(out, identity=np.array(identity),
                         **{name: np.asarray(getattr(table, name)) for name in _TABLE_FIELDS})
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass


def radial_table(hypers: dict) -> RadialTable:
    """The :class:`RadialTable` for featomic ``SphericalExpansion`` hyper-parameters ``hypers``
    (dict of JSON values).

    Cached for the process, and on disk (see :func:`cache_dir`; ``MDPLUGIN_CACHE=off`` disables
    it): a table tabulated once (≈ 0.5 s with the import of featomic) is loaded by every later
    process, bit for bit the same, without importing featomic. A missing, corrupt or foreign
    cache file is rebuilt; only tables that reproduce featomic's spline are stored."""
    basis = hypers["basis"]
    max_angular, n_radial = int(basis["max_angular"]), int(basis["radial"]["max_radial"]) + 1
    key = repr(sorted((k, repr(v)) for k, v in hypers.items()))
    table = _TABLES.get(key)
    if table is None:
        with _TABLES_LOCK:
            table = _TABLES.get(key)
            if table is None:
                folder = cache_dir()
                identity = _table_identity(hypers) if folder is not None else ""
                path = _table_path(folder, identity) if folder is not None else None
                if path is not None:
                    table = _load_table(path, identity, max_angular, n_radial)
                if table is None:
                    table = _build_table(hypers, max_angular, n_radial)
                    if path is not None and table.grid_error <= _GRID_TOLERANCE:
                        _store_table(path, identity, table)
                _TABLES[key] = table
    return table


# --------------------------------------------------------------------------------------------
# the expansion
# --------------------------------------------------------------------------------------------


@dataclass
class _Angular:
    """Monomial tables of the real spherical harmonics for one ``max_angular`` (L).

    ``exponents`` ``(n_mono, 3)``: every monomial of degree ≤ L + 1 (the first ``n_values`` are
    those of degree ≤ L).  ``value_table`` ``(n_values, n_lm)``: monomials → ``Y_lm(û)``.
    ``q_table`` ``(n_mono, 12·n_lm)``: monomials → per l the ``(3, 4, 2l+1)`` matrix ``Q_l``
    (rows: the radial factor g, g' or g/r; columns: x, y, z, value; then m) with
    ``Q[g', x] = û_x Y``, ``Q[g/r, x] = ∂_x S − l Y û_x`` and ``Q[g, value] = −Y`` at a unit vector
    ``û`` (``S = r^l Y``: ``∇_d Y(d/r) = (∂S − l Y û) / r``), zero elsewhere.
    ``columns`` ``(4·n_lm,)``: the (l, x, m) order of the products, as positions ``x·n_lm + lm``.
    """

    exponents: np.ndarray
    n_values: int
    value_table: np.ndarray
    q_table: np.ndarray
    l_of_lm: np.ndarray
    columns: np.ndarray


_ANGULAR: dict = {}


def _angular(max_angular: int) -> _Angular:
    got = _ANGULAR.get(max_angular)
    if got is not None:
        return got
    exps_l, tables = solid_harmonic_tables(max_angular)  # (n_values, 4, n_lm)
    exps = _monomial_exponents(max_angular + 1)
    where = {tuple(int(v) for v in e): k for k, e in enumerate(exps)}
    n_values, n_lm = len(exps_l), tables.shape[2]
    l_of_lm = np.repeat(np.arange(max_angular + 1), 2 * np.arange(max_angular + 1) + 1)
    gradient_table = np.zeros((len(exps), 7, n_lm))
    for k, e in enumerate(exps_l):
        for x in range(3):
            up = e.copy()
            up[x] += 1
            kx = where[tuple(int(v) for v in up)]
            gradient_table[kx, x] += tables[k, 0]  # û_x Y
            gradient_table[kx, 3 + x] -= l_of_lm * tables[k, 0]  # − l Y û_x
            gradient_table[k, 3 + x] += tables[k, 1 + x]  # ∂_x S
        gradient_table[k, 6] -= tables[k, 0]  # −Y
    # per l, the (3, 4, 2l+1) block Q_l: rows k (g, g', g/r), columns x (x, y, z, value) then m
    q_table = np.zeros((len(exps), 12 * n_lm))
    for l in range(max_angular + 1):
        lms = slice(l * l, (l + 1) ** 2)
        block = q_table[:, 12 * l * l : 12 * (l + 1) ** 2].reshape(len(exps), 3, 4, 2 * l + 1)
        block[:, 1, :3, :] = gradient_table[:, 0:3, lms]  # û Y · g'
        block[:, 2, :3, :] = gradient_table[:, 3:6, lms]  # (∂S − l Y û) · g/r
        block[:, 0, 3, :] = gradient_table[:, 6, lms]  # −Y · g
    # column (l, x, m) of a pair's (4·n_lm) result -> position x·n_lm + lm
    columns = np.concatenate([
        (np.arange(4)[:, None] * n_lm + np.arange(l * l, (l + 1) ** 2)[None, :]).ravel()
        for l in range(max_angular + 1)
    ])
    got = _ANGULAR[max_angular] = _Angular(
        exponents=exps, n_values=n_values, value_table=np.ascontiguousarray(tables[:, 0]),
        q_table=q_table, l_of_lm=l_of_lm, columns=columns)
    return got


_PAIR_CHUNK = 1_000_000  # atom pairs per (F, N, N) distance step


def _segment_sum_matrix(key: np.ndarray, n_keys: int, value: float = 1.0):
    """``(n_keys, len(key))`` scipy CSR matrix ``M`` with ``M[key[p], p] = value``: ``M @ X`` sums the
    rows of ``X`` by key, each sum in the rows' order (so a frame's numbers do not depend on the
    batch it is computed in, unlike a dense BLAS product; ``np.add.reduceat`` and ``np.add.at``
    are several times slower here)."""
    from scipy import sparse

    n = len(key)
    order = np.argsort(key, kind="stable")
    indptr = np.searchsorted(key[order], np.arange(n_keys + 1))
    return sparse.csr_matrix((np.full(n, value), order, indptr), shape=(n_keys, n))


def _neighbour_pairs(frames: Sequence, offsets: np.ndarray, cutoff: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All ordered pairs ``i ≠ j`` within the cutoff (``|d|² < cutoff²``, featomic's test), sorted
    by global ``(i, j)``.

    Frames are grouped by atom count; per group one ``(F, N, N)`` distance step (no loop over
    frames or atoms).  Returns ``(i, j, d, d2)``: global atom indices ``(n_pairs,)``, the vectors
    ``d = r_j − r_i`` ``(n_pairs, 3)`` in Å and ``|d|²`` ``(n_pairs,)`` in Å²."""
    cutoff2 = cutoff * cutoff
    if len(frames) == 1 and len(frames[0]) <= _ALL_PAIRS_MAX_ATOMS:  # an MD step of a small molecule
        pos = np.ascontiguousarray(np.asarray(frames[0].positions, dtype=np.float64).T)  # (3, N)
        a, b = _all_pairs(pos.shape[1])
        d = pos[:, b] - pos[:, a]  # (3, N(N−1)): r_j − r_i
        d2 = d[0] * d[0]
        d2 += d[1] * d[1]
        d2 += d[2] * d[2]
        inside = d2 < cutoff2
        if inside.all():
            return a, b, d.T, d2
        keep = np.flatnonzero(inside)
        return a[keep], b[keep], d[:, keep].T, d2[keep]
    if len(frames) == 1:  # one larger frame: 2-D arrays, no frame axis
        pos = np.ascontiguousarray(np.asarray(frames[0].positions, dtype=np.float64).T)  # (3, N)
        size = pos.shape[1]
        d = pos[:, None, :] - pos[:, :, None]  # d[x, i, j] = (r_j − r_i)_x
        d2 = d[0] * d[0]
        d2 += d[1] * d[1]
        d2 += d[2] * d[2]
        d2.ravel()[:: size + 1] = np.inf
        a, b = np.nonzero(d2 < cutoff2)
        return a, b, d[:, a, b].T, d2[a, b]
    sizes = offsets[1:] - offsets[:-1]
    parts = []
    for size in np.unique(sizes):
        size = int(size)
        if size < 2:
            continue
        same = np.flatnonzero(sizes == size)
        chunk = max(1, _PAIR_CHUNK // (size * size))  # bounded (F, N, N, 3) temporaries
        for start in range(0, len(same), chunk):
            members = same[start : start + chunk]
            parts.append(_group_pairs([frames[int(k)] for k in members], offsets[members], size, cutoff2))
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros(0)
    if len(parts) == 1:
        return parts[0]
    i, j, d, d2 = (np.concatenate([p[k] for p in parts]) for k in range(4))
    order = np.argsort(i * int(offsets[-1]) + j, kind="stable")
    return i[order], j[order], d[order], d2[order]


_ALL_PAIRS_MAX_ATOMS = 64
_ALL_PAIRS: dict = {}


def _all_pairs(size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(i, j)`` of every ordered pair ``i ≠ j`` of ``size`` atoms, sorted (cached per size)."""
    got = _ALL_PAIRS.get(size)
    if got is None:
        i, j = np.nonzero(~np.eye(size, dtype=bool))
        got = _ALL_PAIRS[size] = (i, j)
        i.flags.writeable = j.flags.writeable = False
    return got


def _group_pairs(frames: Sequence, bases: np.ndarray, size: int, cutoff2: float) -> tuple:
    """:func:`_neighbour_pairs` of frames with ``size`` atoms each (first global atom ``bases``)."""
    pos = np.stack([np.asarray(atoms.positions, dtype=np.float64).T for atoms in frames])  # (F, 3, N)
    d = pos[:, :, None, :] - pos[:, :, :, None]  # d[f, x, i, j] = (r_j − r_i)_x
    d2 = d[:, 0] * d[:, 0]
    d2 += d[:, 1] * d[:, 1]
    d2 += d[:, 2] * d[:, 2]
    diagonal = np.arange(size)
    d2[:, diagonal, diagonal] = np.inf
    f, a, b = np.nonzero(d2 < cutoff2)
    base = bases[f]
    return base + a, base + b, d[f, :, a, b], d2[f, a, b]


class _Layout:
    """Where the numbers go for one set of pairs (cached between MD steps of one molecule).

    * ``summer @ X`` sums the rows of a per-pair ``X`` per (centre, neighbour species)
      (``minus_summer``: the negative sums);
    * ``values_source`` gathers the per-l value arrays from sums shaped ``(n_c, S, nr, n_lm)``
      and ``self_values`` ``(n_c·S·nr,)`` is the centres' own density in the l = 0 array;
    * with gradients, ONE buffer holds ``[gradients | values | scratch]``: the per-pair block
      ``(n_pairs, nr, 4, n_lm)`` (x, y, z gradient, then minus the value) is scattered by
      ``pair_dest`` (its value part into the scratch), and the negative sums
      ``(n_c, S, nr, 4, n_lm)`` by ``sum_dest`` (the self-pair gradients and the values);
    * ``pairs`` ``(n_rows, 2)``: neighbour pairs and self pairs, sorted by (i, j).
    """

    def __init__(self, i, j, slot, n_centres: int, n_species: int, n_radial: int, l_of_lm: np.ndarray,
                 columns: np.ndarray, self_contribution: np.ndarray):
        self.i, self.j, self.slot = i, j, slot
        self.n_centres, self.n_species, self.n_radial = n_centres, n_species, n_radial
        self.l_of_lm, self.columns = l_of_lm, columns
        n_lm = len(l_of_lm)
        self.summer = _segment_sum_matrix(i * n_species + slot[j], n_centres * n_species)
        self.minus_summer = -self.summer
        index = np.arange(n_centres * n_species * n_radial * n_lm).reshape(n_centres, n_species, n_radial, n_lm)
        self.values_source = np.concatenate([
            index[:, :, :, l * l : (l + 1) ** 2].transpose(0, 3, 1, 2).ravel() for l in range(l_of_lm[-1] + 1)
        ])
        own = np.zeros((n_centres, n_species, n_radial))
        own[np.arange(n_centres), slot, :] = self_contribution
        self.self_values = own.ravel()
        self._gradient_part = None
        self._pair_rows = None
        self._force_scatter = None
        self._force_gathers = None

    def force_gathers(self) -> tuple[np.ndarray, np.ndarray]:
        """Flat indices (built on first use) for :meth:`PairGradients.forces`: into ∂E/∂c
        ``(n_c, n_lm, S, nr)`` of ``∂E/∂c_i[species of j]`` ``(n_pairs, nr, n_lm)``, and into the
        per-pair blocks ``(n_pairs, nr, 4·n_lm)`` of their x, y, z gradients ``(n_pairs, 3, nr, n_lm)``."""
        if self._force_gathers is None:
            n_s, n_r, n_lm = self.n_species, self.n_radial, len(self.l_of_lm)
            lm, r = np.meshgrid(np.arange(n_lm), np.arange(n_r))  # (nr, n_lm)
            centre = (self.i * (n_lm * n_s * n_r) + self.slot[self.j] * n_r)[:, None, None]
            de_dc = (centre + lm * (n_s * n_r) + r).ravel()
            columns = _gradient_columns(int(self.l_of_lm[-1]), n_r)
            gradient = ((np.arange(len(self.i)) * (n_r * 4 * n_lm))[:, None] + columns).ravel()
            self._force_gathers = (de_dc, gradient)
        return self._force_gathers

    def force_scatter(self, e: np.ndarray) -> np.ndarray:
        """Forces (n_centres, 3) from per-pair ``e_p`` (n_pairs, 3) (:meth:`PairGradients.forces`):
        ``F_i = Σ_(p: i_p = i) e_p − Σ_(p: j_p = i) e_p``, two ``bincount`` sums in pair order (a
        frame's numbers do not depend on its batch; a third of scipy's sparse product's time)."""
        if self._force_scatter is None:
            self._force_scatter = ((self.i[:, None] * 3 + np.arange(3)).ravel(),
                                   (self.j[:, None] * 3 + np.arange(3)).ravel())
        plus, minus = self._force_scatter
        size, flat = 3 * self.n_centres, e.ravel()
        return (np.bincount(plus, flat, size) - np.bincount(minus, flat, size)).reshape(self.n_centres, 3)

    def pair_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(pairs, row, self_row)`` (built on first use): ``pairs`` ``(n_pairs + n_centres, 2)`` the
        neighbour and self pairs sorted by (i, j), and the rows of the neighbour pairs and of the
        centres' self pairs in it."""
        if self._pair_rows is None:
            i, j, n_c = self.i, self.j, self.n_centres
            centres = np.arange(n_c)
            row = np.arange(len(i)) + i + (j > i)  # neighbour pairs among the self pairs, by (i, j)
            self_row = np.searchsorted(i * n_c + j, centres * (n_c + 1)) + centres
            pairs = np.empty((len(i) + n_c, 2), dtype=np.int64)
            pairs[row, 0], pairs[row, 1] = i, j
            pairs[self_row, 0] = pairs[self_row, 1] = centres
            self._pair_rows = (pairs, row, self_row)
        return self._pair_rows

    def split_values(self, sums: np.ndarray) -> list:
        """The per-l value arrays ``(n_centres, 2l+1, S·nr)`` from the neighbour sums ``(n_c·S,
        nr·n_lm)`` (plus the centres' own density)."""
        n_c, sr = self.n_centres, self.n_species * self.n_radial
        buffer = sums.ravel()[self.values_source]
        buffer[: n_c * sr] += self.self_values
        values, start = [], 0
        for l in range(self.l_of_lm[-1] + 1):
            size = n_c * (2 * l + 1) * sr
            values.append(buffer[start : start + size].reshape(n_c, 2 * l + 1, sr))
            start += size
        return values

    def gradient_part(self) -> tuple:
        """``(pair_dest, sum_dest, n_rows, buffer_size)`` for :class:`PairGradients`' dense arrays
        (built on first use): where the per-pair blocks and their negative per-centre sums go in
        one buffer."""
        if self._gradient_part is None:
            i, j, slot = self.i, self.j, self.slot
            n_c, n_s, n_r, l_of_lm = self.n_centres, self.n_species, self.n_radial, self.l_of_lm
            n_lm, n_pairs = len(l_of_lm), len(i)
            n_rows = n_pairs + n_c
            centres = np.arange(n_c)
            _, row, self_row = self.pair_rows()
            # regions: gradients per l (n_rows, 3, 2l+1, S, nr) at n_rows·3·S·nr·l²; values per l
            # (n_c, 2l+1, S, nr) at values_start + n_c·S·nr·l²; scratch (n_pairs, nr, n_lm).
            # Every destination = a per-(pair or centre, species) part + a per-(n, column) part;
            # columns c = (x, lm) in the products' (l, x, m) order.
            sr = n_s * n_r
            values_start = n_rows * 3 * n_lm * sr
            scratch_start = values_start + n_c * n_lm * sr
            col = self.columns
            x, lm = col // n_lm, col % n_lm
            l = l_of_lm[lm]
            l2, m, width = l * l, lm - l * l, 2 * l + 1
            gradient = x < 3
            radial = np.arange(n_r)[:, None]
            # per (n, column): (nr, 4·n_lm)
            fixed = np.where(gradient, n_rows * 3 * sr * l2 + (x * width + m) * sr, 0)[None, :] + radial
            pair_fixed = np.where(gradient, fixed, scratch_start + radial * n_lm + lm)
            sum_fixed = np.where(gradient, fixed, values_start + n_c * sr * l2 + m * sr + radial)
            # per pair / per (centre, species): (n_pairs, 4·n_lm), (n_c, S, 4·n_lm)
            pair_part = np.where(gradient, row[:, None] * (3 * width * sr) + (slot[j] * n_r)[:, None],
                                 np.arange(n_pairs)[:, None] * (n_r * n_lm))
            species = (np.arange(n_s) * n_r)[None, :, None]
            sum_part = np.where(gradient, (self_row[:, None] * (3 * width * sr))[:, None, :],
                                (centres[:, None] * (width * sr))[:, None, :]) + species
            pair_dest = pair_part[:, None, :] + pair_fixed[None]  # (n_pairs, nr, 4·n_lm)
            sum_dest = sum_part[:, :, None, :] + sum_fixed[None, None]  # (n_c, S, nr, 4·n_lm)
            self._gradient_part = (pair_dest.ravel(), sum_dest.ravel(), n_rows, scratch_start + n_pairs * n_r * n_lm)
        return self._gradient_part


@functools.lru_cache(maxsize=None)
def _value_columns(max_angular: int) -> np.ndarray:
    """Columns of a pair block ``(.., 4·n_lm)`` (order (l, x, m)) holding minus the value, in lm order."""
    return np.concatenate([4 * l * l + 3 * (2 * l + 1) + np.arange(2 * l + 1) for l in range(max_angular + 1)])


@functools.lru_cache(maxsize=None)
def _gradient_columns(max_angular: int, n_radial: int) -> np.ndarray:
    """Flat indices into a pair's block ``(nr, 4·n_lm)`` (columns (l, x, m)) of its x, y, z
    gradients, in (x, radial, lm) order: ``(3·nr·n_lm,)``."""
    n_lm = (max_angular + 1) ** 2
    columns = np.stack([
        np.concatenate([4 * l * l + x * (2 * l + 1) + np.arange(2 * l + 1) for l in range(max_angular + 1)])
        for x in range(3)
    ])  # (3, n_lm)
    return (columns[:, None, :] + (4 * n_lm * np.arange(n_radial))[None, :, None]).ravel()


class PairGradients(Sequence):
    """Position gradients of a tabulated expansion, kept as the per-pair blocks they are computed
    from (only the neighbour's species is non-zero in a pair's gradient).

    As a sequence it is :attr:`Expansion.gradient_values <mdplugin.features.expansion.Expansion>`:
    item ``l`` is the dense ``(n_pairs + n_centres, 3, 2l+1, n_species·n_radial)`` array, all built
    on first indexing (bit for bit what the dense path gave). :meth:`forces` contracts the
    gradients with ``∂E/∂c`` without building them, which is what an MD step needs.
    """

    def __init__(self, block: np.ndarray, layout: "_Layout", max_angular: int):
        self._block, self._layout, self._max_angular = block, layout, max_angular
        self._dense: list | None = None

    def __len__(self) -> int:
        return self._max_angular + 1

    def __getitem__(self, l):
        return self._dense_arrays()[l]

    def _dense_arrays(self) -> list:
        if self._dense is None:
            layout, block = self._layout, self._block
            pair_dest, sum_dest, n_rows, size = layout.gradient_part()
            sr = layout.n_species * layout.n_radial
            sums = layout.minus_summer @ block.reshape(len(block), -1)  # (n_c·S, nr·4·n_lm)
            out = np.zeros(size)
            out[pair_dest] = block.ravel()
            out[sum_dest] = sums.ravel()
            dense, start = [], 0
            for l in range(self._max_angular + 1):
                chunk = n_rows * 3 * (2 * l + 1) * sr
                dense.append(out[start : start + chunk].reshape(n_rows, 3, 2 * l + 1, sr))
                start += chunk
            self._dense = dense
        return self._dense

    def forces(self, energy_gradient: Sequence[np.ndarray]) -> np.ndarray:
        """``−Σ_i (∂E/∂c_i)·(∂c_i/∂r_j)`` (n_centres, 3), from ``energy_gradient[l]`` = ∂E/∂c^l
        ``(n_centres, 2l+1, n_species·n_radial)``.

        A pair p = (i, j) moves c_i by its block when r_j moves and by minus it when r_i moves
        (the centre's own gradient is minus the sum over its pairs), so with
        ``e_p = ∂E/∂c_i[species of j] · block_p``: ``F_j = −Σ_(p: j_p = j) e_p + Σ_(p: i_p = j) e_p``."""
        layout = self._layout
        n_pairs, width = len(layout.i), layout.n_radial * (self._max_angular + 1) ** 2
        if n_pairs == 0:
            return np.zeros((layout.n_centres, 3))
        into_de_dc, into_block = layout.force_gathers()
        per_pair = np.concatenate(energy_gradient, axis=1).ravel()[into_de_dc]  # ∂E/∂c_i[species of j]
        gradient = self._block.ravel()[into_block]  # (n_pairs, 3, nr, n_lm)
        e = np.matmul(gradient.reshape(n_pairs, 3, width), per_pair.reshape(n_pairs, width, 1))[:, :, 0]
        return layout.force_scatter(e)  # (n_c, 3)


class TabulatedExpansion:
    """The dense spherical expansion of molecules, equal to featomic's (see the module doc).

    Parameters
    ----------
    hypers : dict
        featomic ``SphericalExpansion`` hyper-parameters (ShiftedCosine cutoff, Gaussian density,
        TensorProduct GTO basis), as :meth:`SphericalExpansion.hypers` gives them.
    species : sequence of int
        Neighbour-species slots (atomic numbers; sorted here).

    The radial table is built on the first :meth:`compute` (about 0.3 s plus importing featomic;
    milliseconds when an earlier process left it in the disk cache, see :func:`radial_table`)
    and shared by every instance with equal hypers.
    """

    _MAX_LAYOUTS = 8
    _CACHED_PAIRS = 2048  # layouts of larger batches are not kept (~3 kB per pair with gradients)

    def __init__(self, hypers: dict, species: Sequence[int]):
        self.hypers = hypers
        self.species = np.asarray(sorted(int(z) for z in species), dtype=np.int64)
        self.max_angular = int(hypers["basis"]["max_angular"])
        self.n_radial = int(hypers["basis"]["radial"]["max_radial"]) + 1
        self._table = None
        self._weights = None
        self._layouts: dict = {}
        lookup = np.full(int(self.species.max(initial=0)) + 1, -1, dtype=np.int64)
        lookup[self.species] = np.arange(len(self.species))
        self._lookup = lookup

    @property
    def exact(self) -> bool:
        """Whether the radial table reproduces featomic's spline (to 1e-13 of the largest value);
        if not (a featomic spline finer than 5120 intervals), callers should use featomic."""
        return self.table.grid_error <= _GRID_TOLERANCE

    @property
    def table(self) -> RadialTable:
        if self._table is None:
            table = radial_table(self.hypers)
            # [1, t, t², t³, 1/r, t/r, t²/r, t³/r] @ weights -> (coefficient q, g | g' | g/r)
            weights = np.zeros((8, 4, 3))
            for q in range(4):
                weights[q, q, 0] = 1.0
                weights[4 + q, q, 2] = 1.0
            for q in range(1, 4):
                weights[q - 1, q, 1] = q / table.step
            self._weights = weights.reshape(8, 12)
            self._table = table
        return self._table

    def _layout(self, i, j, slot, n_centres: int) -> _Layout:
        ang = _angular(self.max_angular)
        args = (i, j, slot, n_centres, len(self.species), self.n_radial, ang.l_of_lm, ang.columns,
                self.table.self_contribution)
        if len(i) > self._CACHED_PAIRS:
            return _Layout(*args)
        key = (n_centres, i.tobytes(), j.tobytes(), slot.tobytes())
        layout = self._layouts.get(key)
        if layout is None:
            if len(self._layouts) >= self._MAX_LAYOUTS:
                self._layouts.clear()
            layout = self._layouts[key] = _Layout(*args)
        return layout

    def compute(self, frames: Sequence, offsets: np.ndarray, centre_species: np.ndarray, gradients: bool
                ) -> tuple[list, np.ndarray | None, list | None]:
        """Dense expansion values (and pair gradients) of NON-periodic ``frames``.

        Parameters
        ----------
        frames : ``ase.Atoms`` (cells and pbc ignored: molecules); every element in ``species``.
        offsets : ``(n_frames + 1,)`` int, first global atom index of each frame.
        centre_species : ``(n_centres,)`` int, atomic numbers of all atoms in order.
        gradients : also compute position gradients.

        Returns
        -------
        ``(values, pairs, gradient_values)`` in the layout of
        :class:`~mdplugin.features.expansion.Expansion`: ``values[l]`` ``(n_centres, 2l+1,
        n_species * n_radial)``; ``pairs`` ``(n_pairs, 2)`` and ``gradient_values[l]`` ``(n_pairs,
        3, 2l+1, n_species * n_radial)`` (``None`` without gradients).
        """
        table = self.table
        ang = _angular(self.max_angular)
        l_of_lm = ang.l_of_lm
        n_l, n_lm, n_r = self.max_angular + 1, len(l_of_lm), self.n_radial
        n_centres = int(offsets[-1])
        slot = self._lookup[centre_species]  # species slot of every atom

        i, j, d, r2 = _neighbour_pairs(frames, offsets, table.cutoff)
        n_pairs = len(i)
        layout = self._layout(i, j, slot, n_centres)

        # radial part: the cubic piece of each pair, [1, t, t², t³] (and / r)
        r = np.sqrt(r2)
        if n_pairs and r.min() < 1e-6:  # coincident atoms: featomic's direction, +z seen from the lower index
            tiny = r < 1e-6
            z = np.zeros((n_pairs, 3))
            z[:, 2] = np.where(i < j, 1.0, -1.0)
            r_safe = np.where(tiny, 1.0, r)
            u = np.where(tiny[:, None], z, d / r_safe[:, None])
        else:
            r_safe = r
            u = d / r[:, None]
        x = r * (1.0 / table.step)
        k = x.astype(np.int64)
        np.minimum(k, table.n_intervals - 1, out=k)
        powers_t = np.empty((n_pairs, 8 if gradients else 4))
        powers_t[:, 0] = 1.0
        np.subtract(x, k, out=powers_t[:, 1])
        np.multiply(powers_t[:, 1], powers_t[:, 1], out=powers_t[:, 2])
        np.multiply(powers_t[:, 2], powers_t[:, 1], out=powers_t[:, 3])
        if gradients:
            np.multiply(powers_t[:, :4], (1.0 / r_safe)[:, None], out=powers_t[:, 4:])
            weights = (powers_t @ self._weights).reshape(n_pairs, 4, 3)
        else:
            weights = powers_t[:, :, None]
        gd = table.coefficients[k] @ weights  # (n_pairs, nr·(L+1), 1|3): g, g', g/r
        rc, width = table.cutoff, table.smoothing_width
        if n_pairs and r.max() > rc - width:  # shifted-cosine cutoff: f·G, f'·G + f·G', f·G/r
            smooth = r > rc - width
            s = np.pi * (np.where(smooth, r, rc - width) - rc + width) / width
            fc = np.where(smooth, 0.5 * (1.0 + np.cos(s)), 1.0)[:, None]
            if gradients:
                gd[:, :, 1] *= fc
                gd[:, :, 1] += gd[:, :, 0] * np.where(smooth, -0.5 * np.pi * np.sin(s) / width, 0.0)[:, None]
                gd[:, :, 2] *= fc
            gd[:, :, 0] *= fc

        # angular part: monomials of û (degree ≤ L, or L + 1 with gradients), one product with a table
        n_mono = len(ang.exponents) if gradients else ang.n_values
        e = ang.exponents[:n_mono]
        top = n_l + 1 if gradients else n_l
        powers = np.empty((3, n_pairs, top))
        powers[:, :, 0] = 1.0
        ut = u.T
        for p in range(1, top):
            np.multiply(powers[:, :, p - 1], ut, out=powers[:, :, p])
        mono = powers[0][:, e[:, 0]]
        mono *= powers[1][:, e[:, 1]]
        mono *= powers[2][:, e[:, 2]]  # (n_pairs, n_mono)

        if not gradients:
            y = mono @ ang.value_table  # (n_pairs, n_lm)
            contrib = gd.reshape(n_pairs, n_r, n_l).transpose(1, 0, 2)[:, :, l_of_lm]  # (nr, n_pairs, n_lm)
            contrib *= y
            sums = layout.summer @ contrib.transpose(1, 0, 2).reshape(n_pairs, n_r * n_lm)  # (n_c·S, nr·n_lm)
            return layout.split_values(sums), None, None

        # per pair and l, (nr, 4, 2l+1) = H_l (nr, 3) @ Q_l (3, 4·(2l+1)): x, y, z of
        # dc/dd = g' û Y + (g / r) (∂S − l Y û), then −c = −g Y
        q = mono @ ang.q_table  # (n_pairs, 12·n_lm)
        h = gd.reshape(n_pairs, n_r, n_l, 3)
        block = np.empty((n_pairs, n_r, 4 * n_lm))  # columns (l, x, m)
        for l in range(n_l):
            w = 4 * (2 * l + 1)
            np.matmul(h[:, :, l, :], q[:, 12 * l * l : 12 * (l + 1) ** 2].reshape(n_pairs, 3, w),
                      out=block[:, :, 4 * l * l : 4 * (l + 1) ** 2])

        # the values: the negative sums of the blocks' value columns (the same sums, bit for bit, as
        # in the dense gradient buffer); the gradients stay per pair until someone indexes them
        value_part = block[:, :, _value_columns(self.max_angular)].reshape(n_pairs, n_r * n_lm)
        values = layout.split_values(layout.minus_summer @ value_part)
        return values, layout.pair_rows()[0], PairGradients(block, layout, self.max_angular)
