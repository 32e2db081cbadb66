"""Sparse Gaussian-process regression core (projected process / DTC), shared by all GPR models.

Notation: N observations, M representative ("sparse") points. The model works on a kernel ``k``
normalised to O(1); the signal variance ``s²`` and noise variance ``σ²`` enter only through the
regulariser ``λ = σ²/s²``. With ``A = K_NMᵀ K_NM`` and ``b = K_NMᵀ y`` (summable over blocks of
observations, so MPI ranks can Allreduce them)::

    weights  w = (A + λ K_MM)⁻¹ b
    mean     f(x) = K_xM w
    variance var f(x) / s² = (k_xx − K_xM K_MM⁻¹ K_Mx) + λ K_xM (A + λ K_MM)⁻¹ K_Mx

The first bracket (Nyström residual) is the part of the prior that the sparse points cannot
represent; it needs ``k_xx`` and is skipped when that is not given. All solves use Cholesky factors
with a small relative jitter (no explicit inverse).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_solve, lapack, solve_triangular

from .parallel import allgather_array, resolve_comm


# Farthest-point sampling: why not ``skmatter.sample_selection.FPS``. scikit-matter's FPS chooses
# the same points in the same order (tests/learn/test_gpr.py checks it, on random and on real
# features), but (1) it has no way to spread the rows over MPI ranks, which the models' fits need
# (every rank keeps its own rows; a step exchanges one row per rank), and (2) it updates every
# row at every step, where the filter below reads ~1 % of them: on the models' real features it is
# 1.0-8.9x slower, 3.8x in total (``OMP_NUM_THREADS=1 python benchmarks/bench_fps.py``, 1000 DCE
# frames and 1000 water dimers, 7 Dec 2026, commit d191885, load 1.9 on 2 cores: 1.35 s against
# 5.11 s; for the default λ-SOAP fit of 1000 DCE frames 0.85 s against 3.6 s, of a ~10 s fit). Using
# it for the one-process case would slow every serial fit and tie the serial and MPI models to two
# codes' rounding; so the library is the reference of the tests, not the code path.


def farthest_point_sampling(x: np.ndarray, n_select: int, start: int = 0) -> np.ndarray:
    """Indices of ``n_select`` rows of ``x`` (n, d) chosen by greedy farthest-point sampling.

    Deterministic: starts from row ``start`` and breaks ties by the lowest index. If
    ``n_select >= n`` all indices are returned in FPS order (the choice of
    ``skmatter.sample_selection.FPS(initialize=start)``, faster: see the note above).

    The one-process case of :func:`distributed_farthest_point_sampling`: the squared distances
    are computed row by row and a step updates only the rows that an exact lower bound (along 32
    principal directions) cannot rule out, so it reads a few percent of the rows instead of all of
    them (the DCE SOAP energy model's FPS, 600 points of 16000 rows: 4.2 s → 0.33 s, the same
    points as updating every row with a matrix-vector product).
    """
    return distributed_farthest_point_sampling(np.asarray(x, dtype=float), n_select, None, start)


def distributed_farthest_point_sampling(
    x: np.ndarray, n_select: int, comm=None, start: int = 0, n_filter: int = 32
) -> np.ndarray:
    """Greedy farthest-point sampling over rows spread across MPI ranks.

    ``x`` (n_local, d) are this rank's rows of a matrix whose rows are the concatenation of every
    rank's rows in rank order (``comm``: an mpi4py communicator, default serial). Returns the
    ``min(n_select, n)`` chosen *global* row indices (the same on every rank), starting from global
    row ``start``; ties are broken by the lowest global index, as by :func:`farthest_point_sampling`.
    :func:`distributed_farthest_point_sampling_groups` runs several such selections at once.

    The selection does not depend on the number of ranks or on how the rows are split: the squared
    distances ``(|x_i|² + |c|²) − 2 x_i·c`` are computed row by row (``einsum``; a BLAS
    matrix-vector product rounds a row differently depending on how many rows it is given), and
    every step exchanges only each rank's farthest row (distance, global index, the row: one small
    :func:`~mdplugin.learn.parallel.allgather_array`, which waits without spinning), never the rows
    themselves. It matches :func:`farthest_point_sampling` up to that rounding.

    Filter: the squared distance between the projections of two rows on ``n_filter`` orthonormal
    directions (the leading principal directions of a subsample of this rank's rows; a small
    array that stays in cache) is a lower bound of their squared distance. A row is updated only
    if that bound, less a margin far above the rounding error, is below its current distance:
    the distances, hence the selection, are exactly those of updating every row (whatever the
    directions, so each rank may use its own), while a step reads ~1 % of the rows of the DCE
    invariant features (1155 numbers each) instead of all of them.
    """
    return distributed_farthest_point_sampling_groups([x], n_select, comm, start, n_filter)[0]


def distributed_farthest_point_sampling_groups(
    xs, n_select: int, comm=None, start: int = 0, n_filter: int = 32
) -> list[np.ndarray]:
    """:func:`distributed_farthest_point_sampling` of every matrix in ``xs`` (this rank's rows of
    each, e.g. one matrix per species), as independent selections but with one exchange per step
    for all of them (fewer synchronisations of the ranks). Returns one index array per matrix."""
    comm = resolve_comm(comm)
    # each rank's filter directions from its share of a 512-row subsample (any directions keep
    # the selection exact; the subsample's SVD is then not repeated in full on every rank)
    groups = [_FPSGroup(x, n_filter, n_sample=max(2 * n_filter, 512 // comm.size)) for x in xs]
    counts = [len(g.x) for g in groups]
    peaks = [g.max_sq for g in groups]
    widths = [g.x.shape[1] for g in groups]
    if comm.size > 1:
        every = comm.allgather((counts, peaks, widths))
        offsets = [sum(c[i] for c, _, _ in every[: comm.rank]) for i in range(len(groups))]
        totals = [sum(c[i] for c, _, _ in every) for i in range(len(groups))]
        peaks = [max(p[i] for _, p, _ in every) for i in range(len(groups))]
        widths = [max(w[i] for _, _, w in every) for i in range(len(groups))]
    else:
        offsets, totals = [0] * len(groups), counts
    for g, offset, total, peak in zip(groups, offsets, totals, peaks):
        g.start(offset, total, min(int(n_select), total), start, peak)
    # one exchange per step: per group [has a candidate, distance², global index, |x|², the row]
    edges = np.cumsum([0] + [4 + w for w in widths])
    send = np.empty(edges[-1])
    for k in range(max((g.n_select for g in groups), default=0)):
        send[:] = 0.0
        for i, g in enumerate(groups):
            found = g.candidate(k) if k < g.n_select else None
            if found is not None:
                send[edges[i]] = 1.0
                send[edges[i] + 1 : edges[i] + 4] = found[:3]
                send[edges[i] + 4 : edges[i + 1]] = found[3]
        every = allgather_array(comm, send)
        for i, g in enumerate(groups):
            if k < g.n_select:
                part = every[:, edges[i] : edges[i + 1]]
                part = part[part[:, 0] == 1.0]
                best = min(range(len(part)), key=lambda r: (-part[r, 1], part[r, 2]))
                g.add(k, (part[best, 1], int(part[best, 2]), part[best, 3], part[best, 4:]))
    return [g.selected for g in groups]


class _FPSGroup:
    """One rank's state of a distributed farthest-point sampling (see
    :func:`distributed_farthest_point_sampling`)."""

    def __init__(self, x: np.ndarray, n_filter: int, n_sample: int = 512):
        self.x = np.ascontiguousarray(x, dtype=float)
        self.sq = np.einsum("ij,ij->i", self.x, self.x)
        self.max_sq = float(self.sq.max()) if len(self.x) else 0.0
        self.directions = _filter_directions(self.x, n_filter, n_sample)  # (d, k) orthonormal, or None: no filter
        if self.directions is not None:
            self.x_lead = self.x @ self.directions
            self.sq_lead = np.einsum("ij,ij->i", self.x_lead, self.x_lead)
        self.min_d = np.empty(len(self.x))

    def start(self, offset: int, n: int, n_select: int, first: int, max_sq: float) -> None:
        if n_select > 0 and not 0 <= int(first) < n:
            raise ValueError(f"start {first} is not a row index of the {n} rows")
        self.offset, self.n_select, self.first = offset, max(n_select, 0), int(first)
        self.selected = np.empty(self.n_select, dtype=int)
        # bounds the rounding error of a squared distance (~d·1e-16·max|x|²) with a wide margin
        self.tol = 1e-8 * max(max_sq, np.finfo(float).tiny)

    def candidate(self, k: int):
        """This rank's next centre: (squared distance, global index, |x|², row), or None."""
        if k == 0:
            j = self.first - self.offset
            return (np.inf, self.first, float(self.sq[j]), self.x[j]) if 0 <= j < len(self.x) else None
        if len(self.x) == 0:
            return None
        j = int(np.argmax(self.min_d))
        return (float(self.min_d[j]), self.offset + j, float(self.sq[j]), self.x[j])

    def add(self, k: int, chosen) -> None:
        """Record the k-th centre (the winning candidate) and update the distances to it."""
        _, index, sq_c, centre = chosen
        self.selected[k] = index
        x, sq, min_d = self.x, self.sq, self.min_d
        if len(x) == 0:
            return
        if k == 0:
            min_d[:] = (sq + sq_c) - 2.0 * np.einsum("ij,j->i", x, centre)
            return
        if self.directions is None:
            rows = np.arange(len(x))
        else:
            c_lead = centre @ self.directions
            bound = (self.sq_lead + float(c_lead @ c_lead)) - 2.0 * (self.x_lead @ c_lead)  # ≤ squared distance
            rows = np.flatnonzero(bound <= min_d + self.tol)
        if 2 * len(rows) > len(x):  # the filter does not pay: every row, without gathering them
            np.minimum(min_d, (sq + sq_c) - 2.0 * np.einsum("ij,j->i", x, centre), out=min_d)
        elif len(rows):
            new = (sq[rows] + sq_c) - 2.0 * np.einsum("ij,j->i", x[rows], centre)
            min_d[rows] = np.minimum(min_d[rows], new)


def _filter_directions(x: np.ndarray, k: int, n_sample: int = 512) -> np.ndarray | None:
    """``min(k, …)`` orthonormal directions (d, k) along which the rows of ``x`` (n, d) spread most:
    the leading right singular vectors of every ``n // n_sample``-th row (a thin SVD of at most
    ~2·n_sample rows: O(n_sample² d), deterministic, and no scikit-learn import, which costs every
    process ~1.7 s). ``None`` when a filter would not save work (``d <= 2k`` or fewer than 2k rows).
    Any orthonormal directions keep the filter exact; these only make it effective."""
    n, d = x.shape
    k = int(k)
    if k <= 0 or d <= 2 * k or n < 2 * k:
        return None
    sample = x[:: max(1, n // int(n_sample))]
    _, _, vt = np.linalg.svd(sample, full_matrices=False)
    return np.ascontiguousarray(vt[: min(k, *sample.shape)].T)


def scaled_symmetric_part(matrix: np.ndarray, scale: float = 1.0, tile: int = 256) -> np.ndarray:
    """``0.5 * (matrix / scale + (matrix / scale).T)`` of a square C-ordered float array (m, m),
    computed in place (and returned) in tiles that fit in a core's cache: the same numbers as
    the plain expression, without its three temporary (m, m) arrays and its strided transpose
    pass over memory."""
    m = len(matrix)
    if matrix.shape != (m, m) or not matrix.flags.c_contiguous or matrix.dtype != np.float64:
        raise ValueError("scaled_symmetric_part needs a square C-contiguous float64 array")
    scale = float(scale)
    for i0 in range(0, m, tile):
        i1 = min(m, i0 + tile)
        for j0 in range(0, i0 + 1, tile):
            j1 = min(m, j0 + tile)
            upper = matrix[i0:i1, j0:j1] / scale
            upper += matrix[j0:j1, i0:i1].T / scale
            upper *= 0.5
            matrix[i0:i1, j0:j1] = upper
            matrix[j0:j1, i0:i1] = upper.T
    return matrix


def _stable_cholesky(matrix: np.ndarray, jitter: float) -> np.ndarray:
    """Lower Cholesky factor of a symmetric PSD matrix, adding relative jitter until it works."""
    return _cholesky_of(lambda out: np.copyto(out, matrix), len(matrix), jitter)


def _cholesky_of(fill, m: int, jitter: float, work: np.ndarray | None = None, clean: bool = True) -> np.ndarray:
    """Lower Cholesky factor (m, m) of the symmetric PSD matrix that ``fill(out)`` writes into a
    C-ordered (m, m) array, adding relative jitter (× the mean diagonal) until it works.

    The matrix is built and factorised in place in ``work`` (an F-ordered (m, m) float64 buffer,
    new if None; returned, holding the factor): ``out`` is ``work.T``, so for a symmetric matrix
    the bytes are those of LAPACK's column-major copy, without a copy. ``clean`` False leaves the
    strict upper triangle unspecified (for a factor only passed to ``cho_solve``)."""
    if work is None:
        work = np.empty((m, m), order="F")
    elif work.shape != (m, m) or not work.flags.f_contiguous or work.dtype != np.float64:
        raise ValueError("work must be an F-contiguous float64 (m, m) array")
    view = work.T
    fill(view)
    diagonal = np.diag(view).copy()
    scale = max(np.sum(diagonal) / max(m, 1), np.finfo(float).tiny)
    eps = jitter
    for _ in range(8):
        np.fill_diagonal(view, diagonal + eps * scale)
        factor, info = lapack.dpotrf(work, lower=1, clean=int(clean), overwrite_a=1)
        if info == 0:
            return factor
        if info < 0:
            raise ValueError(f"dpotrf: illegal argument {-info}")
        fill(view)  # a failed factorisation leaves ``work`` partly overwritten
        eps = max(eps * 10.0, 1e-12)
    raise np.linalg.LinAlgError("matrix is not positive definite even with jitter")


@dataclass
class ProjectedProcess:
    """A solved sparse GPR: weights and the Cholesky factors needed for the variance."""

    weights: np.ndarray  # (m,) or (m, k)
    factor: np.ndarray  # (m, m) lower Cholesky of A + λ K_MM
    kmm_factor: np.ndarray  # (m, m) lower Cholesky of K_MM
    regularizer: float

    def predict(self, k_xm: np.ndarray) -> np.ndarray:
        """Posterior mean ``K_xM w``: (n,) or (n, k)."""
        return k_xm @ self.weights

    def variance(self, k_xm: np.ndarray, k_xx: np.ndarray | None = None) -> np.ndarray:
        """Posterior variance in units of the signal variance s², shape (n,).

        ``k_xm`` (n, m) kernel rows to the sparse points; ``k_xx`` (n,) prior variances (optional).
        """
        v = solve_triangular(self.factor, k_xm.T, lower=True, check_finite=False)
        var = self.regularizer * np.einsum("ij,ij->j", v, v)
        if k_xx is not None:
            u = solve_triangular(self.kmm_factor, k_xm.T, lower=True, check_finite=False)
            var = var + np.maximum(np.asarray(k_xx) - np.einsum("ij,ij->j", u, u), 0.0)
        return var

    def to_arrays(self, prefix: str = "gpr") -> dict[str, np.ndarray]:
        return {
            f"{prefix}_weights": self.weights,
            f"{prefix}_factor": self.factor,
            f"{prefix}_kmm_factor": self.kmm_factor,
            f"{prefix}_regularizer": np.array(self.regularizer),
        }

    def to_packed_arrays(self, prefix: str = "gpr") -> dict[str, np.ndarray]:
        """Like :meth:`to_arrays` with the two triangular factors packed (:func:`pack_lower`):
        half the size, same values."""
        arrays = self.to_arrays(prefix)
        for name in ("factor", "kmm_factor"):
            arrays[f"{prefix}_{name}_packed"] = pack_lower(arrays.pop(f"{prefix}_{name}"))
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "gpr") -> "ProjectedProcess":
        """Inverse of :meth:`to_arrays` and of :meth:`to_packed_arrays`."""

        def factor(name: str) -> np.ndarray:
            key = f"{prefix}_{name}"
            return unpack_lower(arrays[key + "_packed"]) if key + "_packed" in arrays else arrays[key]

        return cls(
            weights=arrays[f"{prefix}_weights"],
            factor=factor("factor"),
            kmm_factor=factor("kmm_factor"),
            regularizer=float(arrays[f"{prefix}_regularizer"]),
        )


def pack_lower(factor: np.ndarray) -> np.ndarray:
    """The lower triangle of a square matrix (m, m), row by row, as a vector (m(m+1)/2,)."""
    return factor[np.tril_indices(len(factor))]


def unpack_lower(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_lower`: a lower-triangular (m, m) matrix (column-major, as
    LAPACK returns Cholesky factors) with zeros above the diagonal."""
    packed = np.asarray(packed, dtype=float).reshape(-1)
    m = int(round((np.sqrt(8 * len(packed) + 1) - 1) / 2))
    if m * (m + 1) // 2 != len(packed):
        raise ValueError(f"{len(packed)} values are not the lower triangle of a square matrix")
    out = np.zeros((m, m), order="F")
    out[np.tril_indices(m)] = packed
    return out


def normal_equations(k_nm: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``A = K_NMᵀ K_NM`` (m, m) and ``b = K_NMᵀ y`` for one block of observations."""
    return k_nm.T @ k_nm, k_nm.T @ y


def solve_projected_process(
    a: np.ndarray,
    b: np.ndarray,
    k_mm: np.ndarray,
    regularizer: float,
    jitter: float = 1e-10,
) -> ProjectedProcess:
    """Solve the projected-process normal equations (see the module docstring).

    ``a`` (m, m) and ``b`` (m,) or (m, k) are summed over all observations; ``regularizer`` is
    λ = σ²/s² (> 0). Raises ``ValueError`` for a non-positive regulariser.
    """
    if not regularizer > 0:
        raise ValueError(f"regularizer must be > 0, got {regularizer}")
    k_mm = 0.5 * (k_mm + k_mm.T)
    return solve_projected_process_factored(a, b, k_mm, _stable_cholesky(k_mm, jitter), regularizer, jitter)


def factor_sparse_kernel(k_mm: np.ndarray, jitter: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """The symmetrised ``K_MM`` (m, m) and its lower Cholesky factor (m, m), with relative jitter.

    Factor once and pass both to :func:`solve_projected_process_factored` and
    :func:`held_out_errors` when solving for several regularisers.
    """
    k_mm = 0.5 * (k_mm + k_mm.T)
    return k_mm, _stable_cholesky(k_mm, jitter)


def solve_projected_process_factored(
    a: np.ndarray,
    b: np.ndarray,
    k_mm: np.ndarray,
    kmm_factor: np.ndarray,
    regularizer: float,
    jitter: float = 1e-10,
    work: np.ndarray | None = None,
) -> ProjectedProcess:
    """:func:`solve_projected_process` with a precomputed symmetric ``k_mm`` (m, m) and its
    Cholesky factor ``kmm_factor`` (m, m) (from :func:`factor_sparse_kernel`): one Cholesky
    factorisation (of ``a + λ k_mm``) instead of two. Raises ``ValueError`` for λ <= 0.
    ``work``: an F-ordered (m, m) buffer to build and factorise the system in (it becomes the
    returned process's ``factor``), instead of new arrays."""
    if not regularizer > 0:
        raise ValueError(f"regularizer must be > 0, got {regularizer}")
    factor = _cholesky_of(_system_filler(a, k_mm, regularizer), len(a), jitter, work=work)
    weights = cho_solve((factor, True), b, check_finite=False)
    return ProjectedProcess(weights=weights, factor=factor, kmm_factor=kmm_factor, regularizer=float(regularizer))


def _system_filler(a: np.ndarray, k_mm: np.ndarray, regularizer: float):
    """``fill(out)`` writing the regularised system ``a + λ k_mm`` (both symmetric) into ``out``
    (for :func:`_cholesky_of`)."""

    def fill(out: np.ndarray) -> None:
        np.multiply(k_mm, regularizer, out=out)
        out += a

    return fill


def held_out_weights(
    a: np.ndarray, b: np.ndarray, k_mm: np.ndarray, regularizer: float, jitter: float = 1e-10,
    work: np.ndarray | None = None,
) -> np.ndarray | None:
    """Weights ``(a + λ k_mm)⁻¹ b`` (m,) of the normal equations ``a`` (m, m), ``b`` (m,) (e.g.
    without held-out rows, to score ``λ`` on them), or ``None`` when the system is not positive
    definite even with jitter. One Cholesky factorisation; ``λ`` > 0 (else ``ValueError``).
    ``work``: an F-ordered (m, m) scratch buffer (overwritten; reuse it for several λ)."""
    regularizer = float(regularizer)
    if not regularizer > 0:
        raise ValueError(f"regularizer must be > 0, got {regularizer}")
    try:
        factor = _cholesky_of(_system_filler(a, k_mm, regularizer), len(a), jitter, work=work, clean=False)
    except np.linalg.LinAlgError:
        return None
    return cho_solve((factor, True), b, check_finite=False)


def held_out_errors(
    a: np.ndarray,
    b: np.ndarray,
    k_mm: np.ndarray,
    k_val: np.ndarray,
    y_val: np.ndarray,
    regularizers,
    jitter: float = 1e-10,
) -> dict[float, float]:
    """Mean squared error on held-out rows for every regulariser in ``regularizers``.

    ``a`` (m, m), ``b`` (m,) are the normal equations *without* the held-out rows, ``k_val``
    (v, m) and ``y_val`` (v,) the held-out kernel rows and targets, ``k_mm`` (m, m) symmetric.
    One Cholesky factorisation per regulariser (an eigendecomposition of the whitened system
    would serve all of them at once but costs ~25 factorisations here); regularisers whose
    system is not positive definite even with jitter are left out of the result.
    """
    errors = {}
    for reg in regularizers:
        w = held_out_weights(a, b, k_mm, reg, jitter)
        if w is not None:
            errors[float(reg)] = float(np.mean((k_val @ w - y_val) ** 2))
    return errors
