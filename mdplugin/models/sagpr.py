"""λ-SOAP symmetry-adapted sparse GPR (SA-GPR) for dipoles and polarizabilities.

Grisafi, Wilkins, Csányi, Ceriotti, PRL 120, 036002 (2018), as a sparse (projected-process)
Gaussian process on atom-centred contributions:

* Features: λ-SOAP ``X^λ_i (2λ+1, F_λ)`` of every atom (:mod:`mdplugin.descriptors.lambda_soap`)
  from one featomic spherical expansion, normalised by their full Frobenius norm.
* Kernel between atoms ``i`` and ``j`` of the same centre species (zero otherwise)::

      K^λ_{μν}(i, j) = [X̂^λ_i X̂^λ_jᵀ]_{μν} · (x̂⁰_i · x̂⁰_j)^(ζ-1)

  and between structures the sum over their atoms. It is exactly equivariant:
  ``K(RA, B) = D^λ(R) K(A, B)`` for rotations and reflections ``R``.
* Compression: per centre species and λ the features are projected on the leading
  principal directions (over the feature index, which commutes with rotations) of the
  representative environments' features; the normalisation uses the full features. Because
  the kernel rows only see the span of the representative environments, this loses almost
  nothing while making every kernel evaluation ``F_λ / n_components`` times cheaper.
* Representative environments: per centre species by farthest-point sampling on the
  normalised invariant features; ``n_sparse`` of them for λ > 0 and ``n_sparse_l0`` (a
  superset: FPS orders are nested) for the scalar λ = 0 GPR, whose sparse dimension is
  ``2λ+1`` times smaller.
* Targets: dipole = λ = 1 (components ``(y, z, x)``); polarizability = λ = 0 (trace part, a
  per-species composition baseline removed first) + λ = 2 (symmetric traceless part), each
  a separate GPR with its own regulariser, rebuilt to a symmetric 3×3 tensor with
  :mod:`mdplugin.tensors`.
* Scales: targets are divided by their training standard deviation and each kernel by the
  mean prior variance of a training structure, so the regularisers are dimensionless noise-
  to-signal variance ratios; by default each λ's regulariser is chosen from a small grid
  (then refined between the best value and its neighbours) by the error on every 5th
  training frame held out of the normal equations: the hold-out costs one Cholesky
  factorisation per candidate (``K_MM`` is factorised once), not extra kernels. The signal
  variance is the maximum-likelihood value for the given
  regulariser; ``predict(return_std=True)`` returns the posterior standard deviation of every
  Cartesian component, shapes ``(n, 3)`` (dipole) and ``(n, 3, 3)`` (polarizability), in
  the target's units (it includes the Nyström residual, i.e. the prior variance the
  representative environments cannot explain).

Memory: ``fit`` keeps the full λ-SOAP features of the training set in memory (about 100 kB per
atom with the default hyper-parameters) and processes kernels in chunks of ``chunk_size`` frames.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms
from scipy.linalg import solve_triangular

from ..descriptors.expansion import Expansion
from ..descriptors.lambda_contract import contract_lambda_soap
from ..descriptors.lambda_soap import lambda_soap, n_features, shared_inverse_norms, shared_lambda_soap
from ..errors import ConfigError, DataError
from ..tensors import (
    L0_BASIS,
    L2_BASIS,
    spherical_to_symmetric,
    spherical_to_vector,
    symmetric_to_spherical,
    vector_to_spherical,
)
from ..parallel import (
    CpuLedger,
    PhaseTimer,
    TreeSum,
    allgather_blocks,
    assign_tasks,
    gather_rows,
    local_blocks,
    resolve_comm,
    share_tasks,
    sum_over_ranks,
)
from .shared_expansion import SharedExpansionMixin
from .base import TENSOR_PRECISIONS, Model, check_species, fingerprint, register
from .gpr import (
    ProjectedProcess,
    _stable_cholesky,
    distributed_farthest_point_sampling_groups,
    factor_sparse_kernel,
    held_out_weights,
    scaled_symmetric_part,
    solve_projected_process_factored,
)

__all__ = ["SAGPRModel"]


def _normalise_rows(x: np.ndarray, in_place: bool = False) -> np.ndarray:
    """Divide every centre's features (n, ...) by their Frobenius norm: a new array, or ``x``
    itself with ``in_place`` (then in cache-sized runs of rows, read from memory once)."""
    flat = x.reshape(len(x), -1)
    if not in_place:
        norms = np.sqrt(np.vecdot(flat, flat))
        return x / np.maximum(norms, 1e-300).reshape((-1,) + (1,) * (x.ndim - 1))
    if not np.shares_memory(flat, x):
        raise ValueError("in-place normalisation needs rows that are contiguous in memory")
    step = max(1, (1 << 19) // max(flat.shape[1] * flat.itemsize, 1))
    for start in range(0, len(flat), step):
        rows = flat[start : start + step]
        norms = np.sqrt(np.vecdot(rows, rows))
        rows /= np.maximum(norms, 1e-300)[:, None]
    return x


def _project_rows(x: np.ndarray, rows: np.ndarray, basis: np.ndarray, out: np.ndarray) -> None:
    """``out[rows] = x[rows] @ basis`` over the last axis, for ``x`` (n, ..., F), ``basis`` (F, k),
    ``out`` (n, ..., k), in runs of rows that fit in a core's cache (the gathered rows are read
    back from cache by the product, not from memory). The runs depend only on ``rows``."""
    width = int(np.prod(x.shape[1:-1], dtype=int))
    step = max(1, (1 << 20) // max(width * x.shape[-1] * x.itemsize, 1))
    buf = np.empty((min(step, len(rows)),) + x.shape[1:])
    for start in range(0, len(rows), step):
        r = rows[start : start + step]
        xs = np.take(x, r, axis=0, out=buf[: len(r)])
        out[r] = (xs.reshape(-1, x.shape[-1]) @ basis).reshape((len(r),) + out.shape[1:])


def _frame_groups(frame: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by frame: start index of every run and the frame of that run."""
    if len(frame) == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    starts = np.flatnonzero(np.r_[True, frame[1:] != frame[:-1]])
    return starts, frame[starts]


def _sum_by_frame(values: np.ndarray, frame: np.ndarray, n_frames: int) -> np.ndarray:
    """Sum rows (n, ...) sorted by frame into (n_frames, ...)."""
    out = np.zeros((n_frames,) + values.shape[1:])
    if len(frame):
        starts, frames = _frame_groups(frame, n_frames)
        sizes = np.diff(np.r_[starts, len(frame)])
        if np.all(sizes == sizes[0]):
            # every frame has as many rows (one MD step; a batch of one molecule): a reshaped sum,
            # 10-30x faster than np.add.reduceat over the first axis
            out[frames] = values.reshape((len(starts), int(sizes[0])) + values.shape[1:]).sum(axis=1)
        else:
            out[frames] = np.add.reduceat(values, starts, axis=0)
    return out


def _same_species_pairs(frame: np.ndarray, species: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All ordered pairs (i, j) of centres in the same frame with the same species."""
    if len(frame) == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    key = frame.astype(np.int64) * 256 + species
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    sizes = np.diff(np.r_[starts, len(key)])
    sq = sizes * sizes
    group = np.repeat(np.arange(len(sizes)), sq)
    within = np.arange(sq.sum()) - np.repeat(np.cumsum(sq) - sq, sq)
    g = sizes[group]
    i = order[starts[group] + within // g]
    j = order[starts[group] + within % g]
    return i, j


@register("lsoap")
class SAGPRModel(SharedExpansionMixin, Model):
    """Sparse λ-SOAP SA-GPR for ``target="dipole"`` or ``"polarizability"``.

    Parameters
    ----------
    target : ``"dipole"`` (y (n, 3)) or ``"polarizability"`` (y (n, 3, 3)); any units (the
        predictions come back in the units of ``y``; mdplugin uses e·Å and Å³).
    cutoff : neighbour cutoff, Å.
    max_radial : featomic ``max_radial`` (``max_radial + 1`` GTO radial functions).
    max_angular : highest l of the spherical expansion.
    gaussian_width, smoothing_width : atomic Gaussian width and cutoff smoothing width, Å.
    zeta : ζ, the power of the invariant kernel is ζ − 1 (ζ = 1: linear λ-SOAP kernel).
    n_sparse : representative environments per centre species (FPS) of the λ = 1, 2 GPRs.
    n_sparse_l0 : representative environments per centre species of the λ = 0 GPR.
    n_components : feature dimensions kept per centre species and λ after the principal-
        component compression (``0``: no compression).
    regularizer_l0, regularizer_l1, regularizer_l2 : noise-to-signal variance ratio of the
        λ = 0, 1, 2 GPRs (dimensionless; targets and kernels are normalised). ``None``
        (default) chooses it from ``regularizer_grid`` by the RMSE on every 5th training
        frame held out of the normal equations, then tries the geometric midpoints between
        the best value and its grid neighbours, and refits on all frames; the chosen values
        are in ``regularizer_`` (λ -> value).
    regularizer_grid : candidate regularisers of the automatic choice (the default spans
        noise-free reference data, ~1e-10, to noisy data, ~1e-2).
    jitter : relative diagonal jitter of the Cholesky factorisations (raised tenfold until the
        factorisation succeeds). It floors the effective regularisation: on nearly noise-free
        data 1e-10 doubles the error of 1e-13.
    chunk_size : frames per block when building kernels (memory).
    """

    targets_supported = ("dipole", "polarizability")

    def __init__(
        self,
        target: str = "dipole",
        cutoff: float = 4.5,
        max_radial: int = 6,
        max_angular: int = 4,
        gaussian_width: float = 0.3,
        smoothing_width: float = 0.5,
        zeta: int = 2,
        n_sparse: int = 250,
        n_sparse_l0: int = 500,
        n_components: int = 128,
        regularizer_l0: float | None = None,
        regularizer_l1: float | None = None,
        regularizer_l2: float | None = None,
        regularizer_grid: tuple = (1e-10, 1e-8, 1e-6, 1e-4, 1e-2),
        jitter: float = 1e-13,
        chunk_size: int = 200,
    ):
        self.target = target
        self.cutoff = cutoff
        self.max_radial = max_radial
        self.max_angular = max_angular
        self.gaussian_width = gaussian_width
        self.smoothing_width = smoothing_width
        self.zeta = zeta
        self.n_sparse = n_sparse
        self.n_sparse_l0 = n_sparse_l0
        self.n_components = n_components
        self.regularizer_l0 = regularizer_l0
        self.regularizer_l1 = regularizer_l1
        self.regularizer_l2 = regularizer_l2
        self.regularizer_grid = regularizer_grid
        self.jitter = jitter
        self.chunk_size = chunk_size

    # ------------------------------------------------------------------------------------------
    # targets
    # ------------------------------------------------------------------------------------------
    def _lambdas(self) -> tuple[int, ...]:
        return (1,) if self.target == "dipole" else (0, 2)

    def _n_sparse(self, lam: int) -> int:
        return int(self.n_sparse_l0 if lam == 0 else self.n_sparse)

    def _sparse_columns(self, lam: int) -> np.ndarray:
        """Indices (into the stored representative environments) used by the λ GPR."""
        return np.flatnonzero(self.sparse_rank_ < self._n_sparse(lam))

    def _regularizer(self, lam: int) -> float | None:
        value = {0: self.regularizer_l0, 1: self.regularizer_l1, 2: self.regularizer_l2}[lam]
        return None if value is None else float(value)

    def _solve(self, a_fit, b_fit, kmm, reg, comm=None, held_out=None, timer=None, ledger=None) -> tuple[ProjectedProcess, float]:
        """The λ GPR (and its regulariser) from the summed normal equations ``a_fit`` (m, m),
        ``b_fit`` (m,) and the symmetric scaled ``kmm`` (m, m).

        ``held_out`` None: ``a_fit``, ``b_fit`` hold every row and ``reg`` (or 1e-4) is used as
        given. Otherwise ``(a_val, b_val, blocks, n_val)``: the normal equations of the held-out
        rows (every rank), this rank's held-out kernel rows and targets ``[(k_val (v_b, m),
        y_val (v_b,))]`` one pair per local block in block order, and the number of held-out
        rows of all ranks; ``a_fit``, ``b_fit`` then hold the other rows. ``reg`` None: chosen
        by the RMSE on the held-out rows of the fits without them: every value of
        ``regularizer_grid``, then the geometric midpoints between the best one and its
        neighbours in the grid; then refitted on all rows (``a_fit`` is overwritten by
        ``a_fit + a_val``).

        With an MPI ``comm`` the Cholesky factorisations are shared among the ranks
        (:func:`~mdplugin.parallel.share_tasks`): the grid candidates together with ``K_MM``'s
        factor, then the midpoints; every rank then solves the final system. The held-out errors
        are summed block by block, each block's on the rank that holds its rows (the held-out
        rows never travel). Each is the computation a serial fit does, so the model is the
        serial one. ``ledger``: a :class:`~mdplugin.parallel.CpuLedger` (task costs in
        floating-point operations, a factorisation ``m³/3``).
        """
        comm = resolve_comm(comm)
        timer = timer or (lambda phase: None)
        jitter = self.jitter
        cost = float(len(kmm)) ** 3 / 3.0
        if held_out is None:
            reg = 1e-4 if reg is None else float(reg)
            # K_MM's factor (for the variance) and the final system are independent
            kmm_factor, gpr = share_tasks(
                comm, [cost, cost],
                lambda t: _stable_cholesky(kmm, jitter) if t == 0
                else solve_projected_process_factored(a_fit, b_fit, kmm, None, reg, jitter),
                ledger,
            )
            gpr.kmm_factor = kmm_factor
            timer("solve")
            return gpr, reg
        a_val, b_val, blocks, n_val = held_out

        def scores(values: list, weights: list) -> dict:
            """Mean squared held-out error of each candidate (None: no positive-definite system)."""
            ok = [i for i, w in enumerate(weights) if w is not None]
            if not ok:
                return {value: None for value in values}
            w = np.stack([weights[i] for i in ok], axis=1)  # (m, candidates)
            # per block, on the rank that holds it; summed in block order (any number of ranks)
            sse = allgather_blocks(comm, [np.sum((kv @ w - yv[:, None]) ** 2, axis=0) for kv, yv in blocks])
            total = np.zeros(len(ok))
            for part in sse:
                total += part
            out = {value: None for value in values}
            out.update({values[i]: float(total[j] / max(n_val, 1)) for j, i in enumerate(ok)})
            return out

        def best_of(errors: dict) -> float | None:
            best, best_err = None, np.inf
            for value in sorted(errors):
                if errors[value] is not None and errors[value] < best_err:
                    best, best_err = value, errors[value]
            return best

        grid = sorted({float(r) for r in self.regularizer_grid})
        for value in grid:
            if not value > 0:
                raise ConfigError(f"sagpr: regularizer_grid values must be > 0, got {value}")
        # one scratch buffer for this rank's candidate systems (no new (m, m) arrays), which
        # finally holds the factor of the final system
        scratch: list = []

        def weights(value: float) -> np.ndarray | None:
            if not scratch:
                scratch.append(np.empty(a_fit.shape, order="F"))
            return held_out_weights(a_fit, b_fit, kmm, value, jitter, work=scratch[0])

        # one round: every grid candidate and K_MM's factor (all the size of one factorisation)
        done = share_tasks(
            comm, [cost] * (len(grid) + 1),
            lambda t: weights(grid[t]) if t < len(grid) else _stable_cholesky(kmm, jitter),
            ledger,
        )
        kmm_factor = done[-1]
        errors = scores(grid, done[:-1])
        timer("regulariser grid")
        best = best_of(errors)
        if best is None:
            raise ConfigError("no regulariser of regularizer_grid gives a positive-definite system")
        i = grid.index(best)
        refine = [float(np.sqrt(best * grid[j])) for j in (i - 1, i + 1) if 0 <= j < len(grid)]
        errors.update(scores(refine, share_tasks(comm, [cost] * len(refine), lambda t: weights(refine[t]), ledger)))
        reg = best_of(errors)
        timer("regulariser midpoints")
        a_fit += a_val  # every row
        work = scratch[0] if scratch else None
        gpr = solve_projected_process_factored(a_fit, b_fit + b_val, kmm, kmm_factor, reg, jitter, work=work)
        timer("solve")
        return gpr, reg

    def _to_spherical(self, y, n: int) -> dict[int, np.ndarray]:
        y = np.asarray(y, dtype=float)
        if self.target == "dipole":
            if y.shape != (n, 3):
                raise DataError(f"dipoles must have shape ({n}, 3), got {y.shape}")
            return {1: vector_to_spherical(y)}
        if y.shape == (n, 9):
            y = y.reshape(n, 3, 3)
        if y.shape != (n, 3, 3):
            raise DataError(f"polarizabilities must have shape ({n}, 3, 3), got {y.shape}")
        l0, l2 = symmetric_to_spherical(0.5 * (y + y.transpose(0, 2, 1)))
        return {0: l0, 2: l2}

    def _composition(self, species: np.ndarray, frame: np.ndarray, n_frames: int) -> np.ndarray:
        n_species = len(self.species_)
        cell = frame * n_species + np.searchsorted(self.species_, species)
        return np.bincount(cell, minlength=n_frames * n_species).reshape(n_frames, n_species).astype(float)

    # ------------------------------------------------------------------------------------------
    # features
    # ------------------------------------------------------------------------------------------

    def _raw_features(self, exp: Expansion, shared: bool = False, out: dict | None = None) -> dict:
        """Normalised full features: ``0`` (n, F0) invariant, and every target λ (n, 2λ+1, F).
        ``shared``: take the λ-SOAP features from (and leave them in) the expansion's cache
        (:func:`~mdplugin.descriptors.lambda_soap.shared_lambda_soap`), for predictions.
        ``out`` (not with ``shared``): ``{λ: (n, 2λ+1, F)}`` arrays (e.g. rows of the fit's
        feature arrays) to compute and normalise the features in, without new arrays."""
        lams = tuple(sorted(set(self._lambdas()) | {0}))
        if out is not None:
            feats = lambda_soap(exp, lams, out={lam: out[lam] for lam in lams})
            result = {lam: _normalise_rows(feats[lam], in_place=True) for lam in lams}
        else:
            feats = shared_lambda_soap(exp, lams) if shared else lambda_soap(exp, lams)
            result = {lam: _normalise_rows(feats[lam]) for lam in lams}
        result[0] = result[0][:, 0, :]
        return result

    def _fit_features(self, frames: list, calc, comm, timer) -> tuple:
        """This rank's share of the training features: the normalised full features ``raw``
        {0: (n_local, F0), λ: (n_local, 2λ+1, F)} of its blocks (computed straight into one array
        per λ: no per-block copies), their species and frames (n_local,), and the row range
        (first, stop) of every local block."""
        lams = tuple(sorted(set(self._lambdas()) | {0}))
        starts = local_blocks(len(frames), self.chunk_size, comm)
        n_atoms = sum(len(a) for start in starts for a in frames[start : start + self.chunk_size])
        raw_full, raw = None, {}
        species_parts, frame_parts, spans = [], [], []
        pos = 0
        for start in starts:
            exp = calc.compute(frames[start : start + self.chunk_size])
            n = len(exp.centre_species)
            timer("expansion")
            if raw_full is None:
                widths = {lam: n_features(lam, exp.max_angular, exp.values[0].shape[-1]) for lam in lams}
                raw_full = {lam: np.empty((max(n_atoms, n), 2 * lam + 1, widths[lam])) for lam in lams}
            if pos + n > len(raw_full[0]):  # more centres than atoms: grow (never with featomic)
                raw_full = {lam: np.concatenate([x, np.empty((pos + n - len(x),) + x.shape[1:])])
                            for lam, x in raw_full.items()}
            self._raw_features(exp, out={lam: x[pos : pos + n] for lam, x in raw_full.items()})
            species_parts.append(exp.centre_species)
            frame_parts.append(exp.centre_frame + start)
            spans.append((pos, pos + n))
            pos += n
            timer("features")
        if raw_full is not None:
            raw = {lam: x[:pos] for lam, x in raw_full.items()}
            raw[0] = raw[0][:, 0, :]
        species_loc = np.concatenate(species_parts) if species_parts else np.zeros(0, dtype=int)
        frame_loc = np.concatenate(frame_parts) if frame_parts else np.zeros(0, dtype=int)
        return raw, species_loc, frame_loc, spans

    def _project(self, raw: dict, species: np.ndarray, spans: list | None = None) -> dict:
        """Compressed features: ``0`` (n, k0) and λ (n, 2λ+1, kλ) (one basis per species), from the
        normalised full features ``raw`` with centre species ``species`` (n,). Block by block
        (``spans``: row ranges, default all rows) in cache-sized runs (:func:`_project_rows`): the
        same numbers on any number of ranks, without a copy of the features."""
        spans = [(0, len(species))] if spans is None else spans
        out = {}
        for lam, x in raw.items():
            k = self.projections_[lam][0].shape[1]
            z = out[lam] = np.empty(x.shape[:-1] + (k,))
            for lo, hi in spans:
                for s_index, s in enumerate(self.species_):
                    rows = lo + np.flatnonzero(species[lo:hi] == s)
                    if len(rows):
                        _project_rows(x, rows, self.projections_[lam][s_index], z)
        return out

    def _fit_projections(self, raw: dict, sparse: np.ndarray, species: np.ndarray, offset: int, comm=None,
                         ledger=None) -> None:
        """Principal directions (over the feature index) of the representative environments.

        ``raw`` {λ: (n_local, F) for λ = 0, (n_local, 2λ+1, F) otherwise}: this rank's normalised
        features (global rows ``offset …``; ``{}`` without rows), ``sparse`` the global indices of
        the representative environments, ``species`` (n,) the species of all centres. One
        randomised SVD per λ and species, of that species' representative environments in FPS
        order; with an MPI ``comm`` they are shared among the ranks, each rank gathering only the
        rows of its own SVDs (``ledger``: a :class:`~mdplugin.parallel.CpuLedger`; costs in
        floating-point operations, ≈ 12 n F (k + 16) per randomised SVD)."""
        comm = resolve_comm(comm)
        n_local = len(next(iter(raw.values()))) if raw else 0
        widths = {lam: x.shape[-1] for lam, x in raw.items()}
        if comm.size > 1:
            widths = {lam: w for part in comm.allgather(widths) for lam, w in part.items()}
        jobs = []  # (λ, rows of the species, rows·(2λ+1), F, kept components)
        for lam in sorted(widths):
            for s in self.species_:
                rows = sparse[species[sparse] == s]
                n_feat = widths[lam]
                k = n_feat if not self.n_components else min(int(self.n_components), n_feat)
                jobs.append((lam, rows, len(rows) * (2 * lam + 1), n_feat, k))
        svd = [i for i, job in enumerate(jobs) if job[4] < job[3]]
        costs = [12.0 * n * f * (min(k, n, f) + 16) for _, _, n, f, k in (jobs[i] for i in svd)]
        owner = ledger.assign(costs) if ledger is not None else assign_tasks(costs, comm.size)
        inputs = {}
        for t, i in enumerate(svd):
            lam, rows, _, n_feat, _ = jobs[i]
            got = gather_rows(comm, {lam: raw[lam]} if n_local else {}, rows, offset, n_local, root=int(owner[t]))
            if got is not None:
                inputs[t] = got[lam].reshape(-1, n_feat)  # (rows·(2λ+1), F)
        found = dict(zip(svd, share_tasks(
            comm, costs, lambda t: self._principal_directions(inputs.pop(t), jobs[svd[t]][4]), owner=owner)))
        self.projections_ = {}
        for lam in sorted(widths):
            bases = [found[i] if i in found else np.eye(jobs[i][3]) for i in range(len(jobs)) if jobs[i][0] == lam]
            width = max(b.shape[1] for b in bases)
            self.projections_[lam] = [np.pad(b, ((0, 0), (0, width - b.shape[1]))) for b in bases]

    def _representative_environments(self, raw0, species_loc, species, comm) -> list:
        """Global indices of the representative environments, one array per centre species in FPS
        order: farthest-point sampling on the normalised invariant features, distributed over the
        ranks of ``comm`` (:func:`~mdplugin.models.gpr.distributed_farthest_point_sampling`; each
        rank keeps its rows, a step exchanges only each rank's farthest row), so the choice is the
        serial one on any number of ranks.

        ``raw0`` (n_local, F0) are this rank's invariant features (None: no rows), ``species_loc``
        (n_local,) their species, ``species`` (n,) the species of all centres in rank order."""
        n_select = max(self._n_sparse(lam) for lam in self._lambdas())
        width = raw0.shape[1] if raw0 is not None else 0
        width = max(comm.allgather(width)) if comm.size > 1 else width
        xs = [raw0[species_loc == s] if raw0 is not None else np.zeros((0, width)) for s in self.species_]
        chosen = distributed_farthest_point_sampling_groups(xs, n_select, comm)  # one exchange per step
        return [np.flatnonzero(species == s)[c] for s, c in zip(self.species_, chosen)]

    @staticmethod
    def _principal_directions(xs: np.ndarray, k: int) -> np.ndarray:
        """Leading right singular vectors (F, k) of ``xs`` (r, F), uncentred (so the projection
        commutes with rotations); randomised SVD with a fixed seed (deterministic)."""
        from sklearn.utils.extmath import randomized_svd

        k_eff = min(k, *xs.shape)
        _, sv, vt = randomized_svd(xs, k_eff, n_oversamples=16, n_iter=2, random_state=0)
        basis = vt.T[:, sv > 1e-10 * max(sv.max(), 1e-300)]
        if basis.shape[1] < k:
            basis = np.pad(basis, ((0, 0), (0, k - basis.shape[1])))
        return np.ascontiguousarray(basis)

    # ------------------------------------------------------------------------------------------
    # kernels
    # ------------------------------------------------------------------------------------------
    def _sparse_blocks(self, lam: int) -> list:
        """Per centre species ``s``: (s, cols, x⁰ (m, k0), x^λ (m·(2λ+1), kλ)) of the representative
        environments the λ GPR uses, contiguous copies built once per fitted/loaded model (copying
        them on every call made up most of a one-frame prediction)."""
        cache = self.__dict__.setdefault("_sparse_block_cache", {})  # emptied by fit and _set_state
        if lam not in cache:
            n_max = self._n_sparse(lam)
            blocks = []
            for s in self.species_:
                cols = np.flatnonzero((self.sparse_species_ == s) & (self.sparse_rank_ < n_max))
                b0 = np.ascontiguousarray(self.sparse_[0][cols])
                b = np.ascontiguousarray(self.sparse_[lam][cols].reshape(len(cols) * (2 * lam + 1), -1)) if lam else None
                blocks.append((s, cols, b0, b))
            cache[lam] = blocks
        return cache[lam]

    def _atom_kernel_blocks(self, z: dict, species: np.ndarray, lam: int):
        """Yield (rows, cols, K) with K (len(rows), 2λ+1, len(cols), 2λ+1): kernel of the
        centres ``rows`` with the representative environments ``cols`` of their species."""
        zeta = self.zeta
        for s, cols, b0, b in self._sparse_blocks(lam):
            rows = np.flatnonzero(species == s)
            if len(rows) == 0 or len(cols) == 0:
                continue
            k0 = z[0][rows] @ b0.T  # (r, m)
            if lam == 0:
                k = (k0**zeta)[:, None, :, None]
            else:
                d = 2 * lam + 1
                a = z[lam][rows].reshape(len(rows) * d, -1)
                k = (a @ b.T).reshape(len(rows), d, len(cols), d)
                if zeta != 1:
                    k *= (k0 ** (zeta - 1))[:, None, :, None]
            yield rows, cols, k

    def _contracted_weights(self, lam: int) -> list:
        """Per centre species (in the order of :attr:`species_`): Q, the GPR weights folded into the
        representative environments and the projections, so that a mean prediction needs no
        kernel row and no projected λ features (ζ = 1 or 2 only). With the projected features
        ``z = Pᵀ x`` of the kernel (:meth:`_project`) the λ GPR's mean is::

            ζ = 2:  y_μ = Σ_i z^λ_iμ · T_s z⁰_i,   T_s = Σ_(c,ν) w_cν b^λ_cν ⊗ b⁰_c   (k_λ, k_0)
            ζ = 1:  y_μ = Σ_i z^λ_iμ · t_s,        t_s = Σ_(c,ν) w_cν b^λ_cν          (k_λ,)

        (for λ = 0, ``z^λ = z⁰``), scaled by ``y_scale / kernel_scale``. Regrouped on the full
        normalised features ``x``: ζ = 2, λ > 0: ``y_μ = x^λ_iμ · (z⁰_i Q)`` with
        ``Q = (P^λ T_s)ᵀ`` (k_0, F_λ); ζ = 2, λ = 0: ``y = z⁰_i · (z⁰_i T_s)`` with ``Q = T_s``;
        ζ = 1: ``y_μ = x^λ_iμ · Q`` with ``Q = P^λ t_s`` (F_λ,). The same sum as the kernel
        prediction, at about ``F_λ (k_0 + 2λ+1)`` operations per atom instead of
        ``(2λ+1)² M_s k_λ``; built once per fitted/loaded model."""
        cache = self.__dict__.setdefault("_sparse_block_cache", {})  # emptied by fit and _set_state
        key = ("contracted", lam)
        if key not in cache:
            d = 2 * lam + 1
            used = self._sparse_columns(lam)
            position = np.full(len(self.sparse_species_), -1)
            position[used] = np.arange(len(used))
            weights = self.gpr_[lam].weights.reshape(len(used), d) * (self.y_scale_[lam] / self.kernel_scale_[lam])
            out = []
            for s_index, (_, cols, b0, b) in enumerate(self._sparse_blocks(lam)):  # species order
                w = weights[position[cols]]  # (m_s, d)
                bl = b0[:, None, :] if lam == 0 else b.reshape(len(cols), d, -1)  # (m_s, d, k_λ)
                projection = self.projections_[lam][s_index]  # (F_λ, k_λ)
                if self.zeta == 1:
                    q = projection @ np.einsum("cn,cnk->k", w, bl)
                else:
                    t = np.einsum("cn,cnk,cj->kj", w, bl, b0, optimize=True)
                    q = t if lam == 0 else (projection @ t).T
                out.append(np.ascontiguousarray(q))
            cache[key] = out
        return cache[key]

    def _contraction_plan(self, precision: str) -> tuple:
        """``(lambdas, species, projections, weights)`` for :meth:`_predict_contracted` in
        ``precision``: the λ of the model's GPRs, the species as Python ints, the invariant
        projections per species (ζ = 2) and ``{λ: Q per species}``; built once per fitted/loaded
        model and precision (an MD step then makes no cache lookups of its own; ``"single"`` keeps
        float32 copies of the projections and of Q)."""
        cache = self.__dict__.setdefault("_sparse_block_cache", {})  # emptied by fit and _set_state
        key = ("plan", precision)
        if key not in cache:
            dtype = TENSOR_PRECISIONS[precision]
            lams = self._lambdas()
            projections = [p.astype(dtype, copy=False) for p in self.projections_[0]] if self.zeta == 2 else None
            weights = {lam: [q.astype(dtype, copy=False) for q in self._contracted_weights(lam)] for lam in lams}
            cache[key] = (lams, tuple(int(s) for s in self.species_), projections, weights)
        return cache[key]

    def _predict_contracted(self, exp: Expansion, precision: str = "double") -> dict:
        """Every λ GPR's mean prediction ``{λ: (n_frames, 2λ+1)}`` through
        :meth:`_contracted_weights`, from the expansion's shared λ = 0 features: each centre's
        weights ``w_i = Q_s z⁰_i`` are contracted with its λ > 0 features without forming them
        (:func:`~mdplugin.descriptors.lambda_contract.contract_lambda_soap`), and the
        normalisation is applied to each centre's result (``1/|x^λ_i|``, ``1/|x⁰_i|``, shared
        by the models of the step).

        ``precision="single"``: the two products with the model's large matrices (the invariant
        projection and Q, which an MD step reads from memory) run in float32 on float32 copies;
        the features, norms and the final contraction stay float64. Relative error ~1e-6.

        Only the products with the per-species matrices loop over species; the contraction with
        the features and the normalisation run once over all centres (an MD step of a small
        molecule is dominated by the number of numpy calls, not by their size)."""
        lams, species, projections, weights = self._contraction_plan(precision)
        x0 = shared_lambda_soap(exp, (0,))[0][:, 0, :]  # (n, F_0), read-only
        inv0 = shared_inverse_norms(exp, 0)
        rows_of = exp.centre_rows()
        groups = [(s_index, rows_of[z]) for s_index, z in enumerate(species) if z in rows_of]
        n = exp.n_centres
        one_frame = exp.n_frames == 1
        if self.zeta == 2:  # the projected invariant features (unnormalised), shared by every λ
            x0 = x0.astype(TENSOR_PRECISIONS[precision], copy=False)
            z0 = np.empty((n, projections[0].shape[1]), x0.dtype)
            for s_index, rows in groups:
                z0[rows] = x0[rows] @ projections[s_index]
        sph = {}
        for lam in lams:
            q = weights[lam]
            # per centre: the weights w_i of its features, y_iμ = x^λ_iμ · w_i / |x^λ_i| (/ |x⁰_i| for ζ = 2)
            if self.zeta == 1:
                w = np.empty((n, len(q[0])))
                for s_index, rows in groups:
                    w[rows] = q[s_index]
                scale = shared_inverse_norms(exp, lam)
            else:
                w = np.empty((n, q[0].shape[1]), z0.dtype)  # z⁰_i Q_s: (n, k_0) for λ = 0, else (n, F_λ)
                for s_index, rows in groups:
                    w[rows] = z0[rows] @ q[s_index]
                scale = inv0 * (inv0 if lam == 0 else shared_inverse_norms(exp, lam))
            if lam == 0:  # ζ = 2: y = z⁰ᵀ Q z⁰ / |x⁰|², ζ = 1: y = x⁰ · q / |x⁰|
                per_atom = np.vecdot(w, z0 if self.zeta == 2 else x0)[:, None] * scale[:, None]
            else:  # the λ features are not formed (lambda_contract)
                per_atom = contract_lambda_soap(exp, lam, w) * scale[:, None]
            sph[lam] = (per_atom.sum(axis=0, keepdims=True) if one_frame
                        else _sum_by_frame(per_atom, exp.centre_frame, exp.n_frames))
        return sph

    def _structure_kernel(self, z: dict, species, frame, n_frames: int, lam: int) -> np.ndarray:
        """K_xM (n_frames·(2λ+1), M·(2λ+1)), unscaled."""
        d = 2 * lam + 1
        position = np.full(len(self.sparse_species_), -1)
        used = self._sparse_columns(lam)
        position[used] = np.arange(len(used))
        out = np.zeros((n_frames, d, len(used), d))
        for rows, cols, k in self._atom_kernel_blocks(z, species, lam):
            out[:, :, position[cols], :] = _sum_by_frame(k, frame[rows], n_frames)
        return out.reshape(n_frames * d, len(used) * d)

    def _sparse_kernel(self, lam: int) -> np.ndarray:
        """K_MM (M·(2λ+1), M·(2λ+1)), unscaled."""
        d = 2 * lam + 1
        used = self._sparse_columns(lam)
        position = np.full(len(self.sparse_species_), -1)
        position[used] = np.arange(len(used))
        sp = {key: v[used] for key, v in self.sparse_.items()}
        out = np.zeros((len(used), d, len(used), d))
        for rows, cols, k in self._atom_kernel_blocks(sp, self.sparse_species_[used], lam):
            out[np.ix_(rows, np.arange(d), position[cols], np.arange(d))] = k
        return out.reshape(len(used) * d, len(used) * d)

    def _structure_self_kernel(self, z: dict, species, frame, n_frames: int, lam: int) -> np.ndarray:
        """K_AA (n_frames, 2λ+1, 2λ+1): prior covariance of every structure, unscaled."""
        i, j = _same_species_pairs(frame, species)
        k0 = np.einsum("pk,pk->p", z[0][i], z[0][j])
        if lam == 0:
            k = (k0**self.zeta)[:, None, None]
        else:
            k = np.einsum("pak,pbk->pab", z[lam][i], z[lam][j])
            if self.zeta != 1:
                k *= (k0 ** (self.zeta - 1))[:, None, None]
        order = np.argsort(frame[i], kind="stable")
        return _sum_by_frame(k[order], frame[i][order], n_frames)

    # ------------------------------------------------------------------------------------------
    # fit
    # ------------------------------------------------------------------------------------------
    def fit(self, frames: Sequence[Atoms], y, comm=None) -> "SAGPRModel":
        """Fit on ``frames`` (list of ``ase.Atoms``) and targets ``y`` ((n, 3) or (n, 3, 3)).

        ``comm`` (an mpi4py communicator, default serial): every rank passes all frames; each
        computes λ-SOAP features and kernel blocks for its share of the ``chunk_size`` blocks.
        The invariant features are gathered for FPS and the representative environments' rows
        for the PCA projections (same choices as serial), the normal equations and held-out rows
        are summed / gathered across ranks; every rank ends with the same model.
        """
        comm = resolve_comm(comm)
        timer = PhaseTimer(comm, f"sagpr-{self.target}")
        ledger = CpuLedger(comm)  # the shared SVDs and factorisations go to the ranks that did least so far
        self._check_target()
        self.__dict__.pop("_sparse_block_cache", None)
        frames = list(frames)
        if len(frames) == 0:
            raise DataError("no training frames")
        targets = self._to_spherical(y, len(frames))
        if int(self.zeta) < 1:
            raise ConfigError(f"zeta must be a positive integer, got {self.zeta}")
        self.species_ = np.array(sorted({int(z) for a in frames for z in a.numbers}), dtype=int)
        calc = self._expansion()
        timer("setup")

        # raw, species_loc, frame_loc: this rank's centres; species, frame: all centres
        raw, species_loc, frame_loc, spans = self._fit_features(frames, calc, comm, timer)
        species = np.concatenate(allgather_blocks(comm, [species_loc]))
        frame = np.concatenate(allgather_blocks(comm, [frame_loc]))
        offset = int(np.searchsorted(frame, frame_loc[0])) if len(frame_loc) else 0
        n_frames = len(frames)
        timer("gather species")

        # representative environments (FPS per species) and the PCA projections of their features
        sparse = self._representative_environments(raw.get(0), species_loc, species, comm)
        self.sparse_rank_ = np.concatenate([np.arange(len(chosen)) for chosen in sparse])
        sparse = np.concatenate(sparse)
        self.sparse_species_ = species[sparse].astype(int)
        timer("fps")
        self._fit_projections(raw, sparse, species, offset, comm, ledger)
        timer("pca")
        z = self._project(raw, species_loc, spans)
        del raw
        timer("project")
        self.sparse_ = {
            lam: np.ascontiguousarray(v) for lam, v in gather_rows(comm, z, sparse, offset, len(species_loc)).items()
        }
        timer("gather sparse")

        # composition baseline of the λ = 0 part
        comp = self._composition(species, frame, n_frames)
        self.baseline_ = np.zeros(len(self.species_))
        if 0 in targets:
            ridge = 1e-8 * max(np.trace(comp.T @ comp), 1.0)
            self.baseline_ = np.linalg.solve(
                comp.T @ comp + ridge * np.eye(len(self.species_)), comp.T @ targets[0][:, 0]
            )
            targets[0] = targets[0] - (comp @ self.baseline_)[:, None]

        self.gpr_ = {}
        self.y_scale_ = {}
        self.kernel_scale_ = {}
        self.signal_variance_ = {}
        self.regularizer_ = {}
        chunk = max(int(self.chunk_size), 1)
        n_blocks = -(-n_frames // chunk)
        for lam in self._lambdas():
            d = 2 * lam + 1
            yl = targets[lam]
            scale = float(np.sqrt(np.mean(yl**2)))
            self.y_scale_[lam] = scale if scale > 0 else 1.0
            yl = yl / self.y_scale_[lam]
            kaa = self._structure_self_kernel(z, species_loc, frame_loc, n_frames, lam) if z else np.zeros((n_frames, d, d))
            # every frame lives on one rank: the sum over ranks adds exact zeros elsewhere
            kscale = float(np.mean(sum_over_ranks(comm, np.trace(kaa, axis1=1, axis2=2))) / d)
            self.kernel_scale_[lam] = kscale if kscale > 0 else 1.0
            timer("self kernel")
            m = len(self._sparse_columns(lam)) * d
            reg = self._regularizer(lam)
            # every 5th frame held out of a_fit, b_fit to choose the regulariser (a_val, b_val:
            # their own sums, whether or not ``reg`` is given, so that the model depends only on
            # the regulariser; the held-out rows stay on their rank). Sums in a fixed tree over
            # the blocks, the same on any number of ranks (bit-identical model)
            split = n_frames >= 10
            hold = reg is None and split  # keep the held-out rows to score the candidates
            held_out = np.zeros(n_frames, dtype=bool)
            held_out[::5] = split
            a_fit, b_fit = TreeSum(comm, (m, m), n_blocks), TreeSum(comm, m, n_blocks)
            a_val, b_val = (TreeSum(comm, (m, m), n_blocks), TreeSum(comm, m, n_blocks)) if split else (None, None)
            yy = TreeSum(comm, (), n_blocks)
            val_blocks = []
            for start in local_blocks(n_frames, chunk, comm):
                stop = min(n_frames, start + chunk)
                sel = slice(np.searchsorted(frame_loc, start), np.searchsorted(frame_loc, stop))
                zc = {key: v[sel] for key, v in z.items()}
                k = self._structure_kernel(zc, species_loc[sel], frame_loc[sel] - start, stop - start, lam)
                k /= self.kernel_scale_[lam]
                yc = yl[start:stop].reshape(-1)
                block = start // chunk
                yy.add(block, float(yc @ yc))
                if split:
                    rows = np.repeat(held_out[start:stop], d)
                    k_val, y_val = k[rows], yc[rows]
                    k, yc = k[~rows], yc[~rows]
                    a_val.add(block, k_val.T @ k_val)
                    b_val.add(block, k_val.T @ y_val)
                    if hold:
                        val_blocks.append((k_val, y_val))
                    del k_val
                a_fit.add(block, k.T @ k)
                b_fit.add(block, k.T @ yc)
                del k
            timer("kernel + normal eqs")
            a_fit, b_fit, yy = a_fit.result(), b_fit.result(), float(yy.result())
            held, b_vec = None, b_fit
            if split:
                a_val, b_val = a_val.result(), b_val.result()
                b_vec = b_fit + b_val
                if hold:
                    held = (a_val, b_val, val_blocks, int(held_out.sum()) * d)
                else:  # every row
                    a_fit += a_val
                    b_fit = b_vec
                del a_val
            timer("tree sums")
            kmm = scaled_symmetric_part(self._sparse_kernel(lam), self.kernel_scale_[lam])
            timer("K_MM")
            gpr, reg = self._solve(a_fit, b_fit, kmm, reg, comm=comm, held_out=held, timer=timer, ledger=ledger)  # no held-out rows: 1e-4
            del a_fit, held, val_blocks
            self.regularizer_[lam] = reg
            self.gpr_[lam] = gpr
            # maximum-likelihood signal variance for this regulariser (in units of y_scale²)
            n_obs = n_frames * d
            self.signal_variance_[lam] = max((yy - float(b_vec @ gpr.weights)) / (reg * n_obs), 1e-12)

        timer.report()
        self.training_fingerprint_ = fingerprint(frames, np.asarray(y, dtype=float))
        self.n_train_ = len(frames)
        self.is_fitted_ = True
        return self

    # ------------------------------------------------------------------------------------------
    # predict
    # ------------------------------------------------------------------------------------------
    def _predict_kernel(self, raw: dict, species: np.ndarray, frame: np.ndarray, n: int,
                        return_std: bool) -> tuple[dict, dict]:
        """Every λ GPR's mean ``{λ: (n, 2λ+1)}`` (scaled, no baseline) and, with ``return_std``,
        posterior covariance ``{λ: (n, 2λ+1, 2λ+1)}``, through the kernel rows."""
        z = self._project(raw, species)
        sph, cov = {}, {}
        for lam in self._lambdas():
            d = 2 * lam + 1
            k = self._structure_kernel(z, species, frame, n, lam) / self.kernel_scale_[lam]
            gpr: ProjectedProcess = self.gpr_[lam]
            sph[lam] = (k @ gpr.weights).reshape(n, d) * self.y_scale_[lam]
            if return_std:
                kaa = self._structure_self_kernel(z, species, frame, n, lam) / self.kernel_scale_[lam]
                v = solve_triangular(gpr.factor, k.T, lower=True, check_finite=False)
                u = solve_triangular(gpr.kmm_factor, k.T, lower=True, check_finite=False)
                v = v.reshape(-1, n, d)
                u = u.reshape(-1, n, d)
                c = gpr.regularizer * np.einsum("kna,knb->nab", v, v)
                # Nyström residual (PSD in exact arithmetic; variances are clipped at 0 below)
                c += kaa - np.einsum("kna,knb->nab", u, u)
                cov[lam] = c * self.signal_variance_[lam] * self.y_scale_[lam] ** 2
        return sph, cov

    def predict_from_expansion(self, exp: Expansion, return_std: bool = False, precision: str = "double"):
        """Predictions (and std) from a precomputed expansion with this model's hypers.

        ``precision``: ``"double"`` (default) or ``"single"``, the mean through float32 copies of
        the model's large matrices (about twice faster in an MD step, where they are read from
        memory; relative error ~1e-6, far below any model's error). The uncertainty
        (``return_std=True``) is always computed in double precision, and so is then the mean."""
        self._check_fitted()
        if precision not in TENSOR_PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(TENSOR_PRECISIONS)}, got {precision!r}")
        species, frame, n = exp.centre_species, exp.centre_frame, exp.n_frames
        if not return_std and self.zeta in (1, 2):
            sph, cov = self._predict_contracted(exp, precision), {}
        else:
            sph, cov = self._predict_kernel(self._raw_features(exp, shared=True), species, frame, n, return_std)
        if 0 in sph:
            comp = self._composition(species, frame, n)
            sph[0] = sph[0] + (comp @ self.baseline_)[:, None]
        if self.target == "dipole":
            y = spherical_to_vector(sph[1])
            if not return_std:
                return y
            std = spherical_to_vector(np.sqrt(np.maximum(np.diagonal(cov[1], axis1=1, axis2=2), 0)))
            return y, std
        y = spherical_to_symmetric(sph[0], sph[2])
        if not return_std:
            return y
        var = cov[0][:, 0, 0, None, None] * L0_BASIS[0] ** 2
        var = var + np.einsum("kij,nkl,lij->nij", L2_BASIS, cov[2], L2_BASIS)
        return y, np.sqrt(np.maximum(var, 0.0))

    def predict(self, frames: Sequence[Atoms], return_std: bool = False):
        """Dipoles (n, 3) or polarizabilities (n, 3, 3) in the units of the training targets;
        with ``return_std`` also the posterior standard deviation of every component (same
        shape). An element absent from the training set raises :class:`DataError` naming it."""
        self._check_fitted()
        frames = list(frames)
        check_species(frames, self.species_, f"{self.target} model")
        calc = self._expansion()
        ys, stds = [], []
        for start in range(0, len(frames), self.chunk_size):
            out = self.predict_from_expansion(
                calc.compute(frames[start : start + self.chunk_size]), return_std
            )
            if return_std:
                ys.append(out[0])
                stds.append(out[1])
            else:
                ys.append(out)
        y = np.concatenate(ys)
        return (y, np.concatenate(stds)) if return_std else y

    def prior_covariance(self, frames: Sequence[Atoms]) -> dict[int, tuple[np.ndarray, float]]:
        """Prior covariance between the structures of ``frames`` under this fitted model's kernel
        (for integrated-variance-reduction selection, :mod:`mdplugin.active.selection`).

        Returns ``{λ: (K, noise)}`` for every λ GPR of the target: ``K`` (n·(2λ+1), n·(2λ+1)) the
        structure kernel (sum over same-species atom pairs, the compressed features of ``predict``)
        in units of the λ GPR's signal variance (divided by ``kernel_scale_``; rows are frame-major,
        components in the spherical order), and ``noise`` the regulariser λ (noise-to-signal
        variance ratio), so that a full GP with prior ``K`` and noise ``noise`` has the model's
        posterior when its representative environments are all the training environments.
        """
        self._check_fitted()
        frames = list(frames)
        check_species(frames, self.species_, f"{self.target} model")
        n = len(frames)
        calc = self._expansion()
        zs, species, frame = [], [], []
        for start in range(0, n, self.chunk_size):
            exp = calc.compute(frames[start : start + self.chunk_size])
            zs.append(self._project(self._raw_features(exp), exp.centre_species))
            species.append(exp.centre_species)
            frame.append(exp.centre_frame + start)
        z = {lam: np.concatenate([p[lam] for p in zs]) for lam in zs[0]}
        species, frame = np.concatenate(species), np.concatenate(frame)
        out = {}
        for lam in self._lambdas():
            d = 2 * lam + 1
            cov = np.zeros((n, d, n, d))
            for s in self.species_:
                rows = np.flatnonzero(species == s)
                if len(rows) == 0:
                    continue
                k0 = z[0][rows] @ z[0][rows].T
                if lam == 0:
                    k = (k0**self.zeta)[:, None, :, None]
                else:
                    a = z[lam][rows].reshape(len(rows) * d, -1)
                    k = (a @ a.T).reshape(len(rows), d, len(rows), d)
                    if self.zeta != 1:
                        k = k * (k0 ** (self.zeta - 1))[:, None, :, None]
                onehot = np.zeros((n, len(rows)))
                onehot[frame[rows], np.arange(len(rows))] = 1.0
                k = np.tensordot(onehot, k, axes=(1, 0))  # (n, d, r, d)
                cov += np.tensordot(k, onehot, axes=(2, 1)).transpose(0, 1, 3, 2)
            out[lam] = (cov.reshape(n * d, n * d) / self.kernel_scale_[lam], float(self.gpr_[lam].regularizer))
        return out

    # ------------------------------------------------------------------------------------------
    # state
    # ------------------------------------------------------------------------------------------
    def _get_state(self) -> dict[str, np.ndarray]:
        state = {
            "baseline": self.baseline_,
            "sparse_species": self.sparse_species_,
            "sparse_rank": self.sparse_rank_,
        }
        for lam in self.projections_:
            state[f"projections_l{lam}"] = np.stack(self.projections_[lam])
            state[f"sparse_l{lam}"] = self.sparse_[lam]
        for lam in self._lambdas():
            state[f"scales_l{lam}"] = np.array(
                [self.y_scale_[lam], self.kernel_scale_[lam], self.signal_variance_[lam]]
            )
            gpr = self.gpr_[lam].to_packed_arrays(prefix=f"gpr_l{lam}")
            # K_MM's factor is recomputed from the representative environments at load time
            del gpr[f"gpr_l{lam}_kmm_factor_packed"]
            state.update(gpr)
        return state

    def _kmm_factor(self, lam: int) -> np.ndarray:
        """Cholesky factor of the scaled K_MM of the λ GPR, exactly as ``fit`` computes it."""
        return factor_sparse_kernel(self._sparse_kernel(lam) / self.kernel_scale_[lam], self.jitter)[1]

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.__dict__.pop("_sparse_block_cache", None)
        self.baseline_ = np.asarray(arrays["baseline"], dtype=float)
        self.sparse_species_ = np.asarray(arrays["sparse_species"], dtype=int)
        self.sparse_rank_ = np.asarray(arrays["sparse_rank"], dtype=int)
        self.projections_, self.sparse_ = {}, {}
        for lam in sorted(set(self._lambdas()) | {0}):
            self.projections_[lam] = list(np.asarray(arrays[f"projections_l{lam}"], dtype=float))
            self.sparse_[lam] = np.asarray(arrays[f"sparse_l{lam}"], dtype=float)
        self.gpr_, self.y_scale_, self.kernel_scale_, self.signal_variance_ = {}, {}, {}, {}
        self.regularizer_ = {}
        self.species_ = np.unique(self.sparse_species_)  # every species has representative environments
        arrays = dict(arrays)
        for lam in self._lambdas():
            scales = np.asarray(arrays[f"scales_l{lam}"], dtype=float)
            self.y_scale_[lam], self.kernel_scale_[lam], self.signal_variance_[lam] = map(float, scales)
            prefix = f"gpr_l{lam}"
            if not any(key in arrays for key in (f"{prefix}_kmm_factor", f"{prefix}_kmm_factor_packed")):
                arrays[f"{prefix}_kmm_factor"] = self._kmm_factor(lam)
            self.gpr_[lam] = ProjectedProcess.from_arrays(arrays, prefix=prefix)
            self.regularizer_[lam] = float(self.gpr_[lam].regularizer)
