"""λ-SOAP symmetry-adapted sparse GPR (SA-GPR) for dipoles and polarizabilities.

Grisafi, Wilkins, Csányi, Ceriotti, PRL 120, 036002 (2018), as a sparse (projected-process)
Gaussian process on atom-centred contributions:

* Features: λ-SOAP ``X^λ_i (2λ+1, F_λ)`` of every atom (:mod:`mdplugin.features.lambda_soap`)
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
  :mod:`mdplugin.core.tensors`.
* Scales: targets are divided by their training standard deviation and each kernel by the
  mean prior variance of a training structure, so the regularisers are dimensionless noise-
  to-signal variance ratios; by default each λ's regulariser is chosen from a small grid
  (then refined between the best value and its neighbours) by the error on every 5th
  training frame held out of the normal equations: the hold-out costs one Cholesky
  factorisation per candidate (``K_MM`` is factorised once), not extra kernels. The signal
  variance is the one that gives the held-out frames' errors unit variance under the fit
  without them (the maximum-likelihood value for the regulariser when nothing is held out: a
  given regulariser, or fewer than 10 frames); ``predict(return_std=True)`` returns the
  posterior standard deviation of every Cartesian component, shapes ``(n, 3)`` (dipole) and
  ``(n, 3, 3)`` (polarizability), in the target's units (it includes the Nyström residual,
  i.e. the prior variance the representative environments cannot explain), and
  ``sample_predictions`` draws whole functions from the same posterior.

Stateless kernels, row helpers and the contracted mean: :mod:`mdplugin.learn.lambda_kernels`; the
solve with the regulariser choice: :mod:`mdplugin.learn.regularizer`.

Memory: ``fit`` keeps the full λ-SOAP features of the training set in memory (about 100 kB per
atom with the default hyper-parameters) and processes kernels in chunks of ``chunk_size`` frames.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from ase import Atoms
from scipy.linalg import cho_solve

from ..features.cache import FeatureCache, as_feature_cache
from ..features.expansion import Expansion
from ..features.lambda_soap import lambda_soap, n_features
from ..features.alchemical import AlchemicalChannels
from ..features.nice import NiceFeatures
from ..core.errors import ConfigError, DataError
from ..core.tensors import (
    L0_BASIS,
    L2_BASIS,
    spherical_to_symmetric,
    spherical_to_vector,
    symmetric_to_spherical,
    vector_to_spherical,
)
from ..learn.parallel import (
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
from ..core.precision import TENSOR_PRECISIONS
from .base import Model, check_species, fingerprint, register
from .contract import Prediction
from .shared_expansion import SharedExpansionMixin
from ..learn.gpr import (
    ProjectedProcess,
    distributed_farthest_point_sampling_groups,
    factor_sparse_kernel,
    scaled_symmetric_part,
)
from ..learn.baseline import composition, fit_baseline
from ..learn.lambda_kernels import (
    atom_kernel_blocks,
    contracted_means,
    fold_weights,
    normalise_rows,
    posterior_covariance,
    principal_directions,
    project_rows,
    structure_covariance,
    structure_kernel_row,
    structure_self_kernel,
    sum_by_frame,
)
from ..learn.regularizer import evidence_regularizer, held_out_signal_variance, solve_regularized
from .lsoap_sampling import prior_draws, prior_function
from ..learn.posterior import check_n_samples, weight_draws

__all__ = ["LambdaSoapModel"]


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(n, start + size)


def _centres(exp: Expansion, rows) -> Expansion:
    """The expansion of the centres ``rows`` (a slice or sorted indices) of ``exp`` alone."""
    return Expansion(species=exp.species, max_angular=exp.max_angular, values=[v[rows] for v in exp.values],
                     centre_frame=exp.centre_frame[rows], centre_atom=exp.centre_atom[rows],
                     centre_species=exp.centre_species[rows], n_frames=exp.n_frames)


class _Centres(NamedTuple):
    """The training centres of a fit (:meth:`LambdaSoapModel._fit_environments`)."""

    z: dict  #: this rank's compressed features {0: (n_local, k0), λ: (n_local, 2λ+1, kλ)}
    species_loc: np.ndarray  #: (n_local,) their centre species
    frame_loc: np.ndarray  #: (n_local,) their frames (sorted)
    species: np.ndarray  #: (n,) the species of all centres (of all ranks, in frame order)
    frame: np.ndarray  #: (n,) the frames of all centres
    n_frames: int  #: number of training frames


class _NormalEquations(NamedTuple):
    """One λ GPR's normal equations, summed over the blocks of all ranks
    (:meth:`LambdaSoapModel._normal_equations`), in the form :func:`solve_regularized` takes them."""

    a_fit: np.ndarray  #: (m, m) Kᵀ K of the rows fitted (all but the held-out ones with ``held_out``)
    b_fit: np.ndarray  #: (m,) Kᵀ y of the same rows
    held_out: tuple | None  #: (a_val, b_val, blocks, n_val) of the held-out rows, or None
    b_all: np.ndarray  #: (m,) Kᵀ y of every row
    yy: float  #: yᵀ y of every row


@register("lsoap")
class LambdaSoapModel(SharedExpansionMixin, Model):
    """Sparse λ-SOAP SA-GPR for ``target="dipole"`` or ``"polarizability"``.

    Parameters
    ----------
    target : ``"dipole"`` (y (n, 3)) or ``"polarizability"`` (y (n, 3, 3)); any units (the
        predictions come back in the units of ``y``; mdplugin uses e·Å and Å³).
    cutoff : neighbour cutoff, Å.
    max_radial : featomic ``max_radial`` (``max_radial + 1`` GTO radial functions).
    max_angular : highest l of the spherical expansion.
        The expansion defaults (5 Å, max_radial 4, max_angular 3, widths 0.3 and 0.5 Å) are the
        ``soap`` energy model's, so that the energy, dipole and polarizability models of an MD step
        share ONE expansion and its λ = 0 features (docs/models.md: accuracy and cost measured by
        ``benchmarks/bench_shared_basis.py``).
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
    regularizer_grid : candidate regularisers of the ``"held-out"`` choice (the default spans
        noise-free reference data, ~1e-10, to noisy data, ~1e-2).
    regularizer_choice : how a ``None`` regulariser is chosen, per λ: ``"held-out"`` (above), or
        ``"evidence"``, the maximum of the GPR's marginal likelihood (the signal variance at its
        optimum) over 1e-14–1e2, continuous (:func:`~mdplugin.learn.regularizer.evidence_regularizer`):
        no grid edge to end at, and every frame fits.
    body_order : ν of the features: 2 (default) the λ-SOAP power spectrum; 3 or 4 adds the NICE
        features of that body order (:class:`~mdplugin.features.nice.NiceFeatures`: iterated
        Clebsch–Gordan products of the density, compressed to ``nice_components`` per (λ, σ) block
        after each iteration, the compressions learned on up to ``nice_fit_centres`` training
        centres and saved in the model file), concatenated to the λ-SOAP ones with a weight that
        makes their mean norms equal. They resolve environments the power spectrum cannot
        (Pozdnyakov et al., PRL 125, 166001, 2020). Predictions then go through the kernel rows
        (no contracted fast path).
    alchemical_channels : 0 (default): one density channel per element; k > 0: the species
        channels mixed into k pseudo-species (:class:`~mdplugin.features.alchemical.AlchemicalChannels`,
        the mixing learned from the training expansion and saved in the model file); the λ-SOAP
        features shrink by (n_species / k)². Predictions then go through the kernel rows.
    nice_components : features kept per (λ, σ) block by each NICE compression.
    nice_fit_centres : training centres (evenly spread over the training frames) the NICE
        compressions are fitted on.
    jitter : relative diagonal jitter of the Cholesky factorisations (raised tenfold until the
        factorisation succeeds). It floors the effective regularisation: on nearly noise-free
        data 1e-10 doubles the error of 1e-13.
    chunk_size : frames per block when building kernels (memory).
    """

    targets_supported = ("dipole", "polarizability")

    def __init__(
        self,
        target: str = "dipole",
        cutoff: float = 5.0,
        max_radial: int = 4,
        max_angular: int = 3,
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
        regularizer_choice: str = "held-out",
        body_order: int = 2,
        nice_components: int = 64,
        nice_fit_centres: int = 600,
        alchemical_channels: int = 0,
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
        self.regularizer_choice = regularizer_choice
        self.body_order = body_order
        self.nice_components = nice_components
        self.nice_fit_centres = nice_fit_centres
        self.alchemical_channels = alchemical_channels
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

    # ------------------------------------------------------------------------------------------
    # features
    # ------------------------------------------------------------------------------------------
    def _raw_features(self, exp: Expansion | FeatureCache, out: dict | None = None) -> dict:
        """Normalised full features: ``0`` (n, F0) invariant, and every target λ (n, 2λ+1, F).
        A :class:`~mdplugin.features.cache.FeatureCache` ``exp``: the λ-SOAP features come from
        (and stay in) the cache shared by the models of a step.
        ``out`` (not with ``shared``): ``{λ: (n, 2λ+1, F)}`` arrays (e.g. rows of the fit's
        feature arrays) to compute and normalise the features in, without new arrays."""
        lams = tuple(sorted(set(self._lambdas()) | {0}))
        if self._own_features():
            feats = self._lambda_features(exp.expansion if isinstance(exp, FeatureCache) else exp, lams)
            if out is not None:
                for lam in lams:
                    out[lam][...] = feats[lam]
                feats = {lam: out[lam] for lam in lams}
        elif out is not None:
            feats = lambda_soap(exp, lams, out={lam: out[lam] for lam in lams})
        else:
            feats = exp.lambda_soap(lams) if isinstance(exp, FeatureCache) else lambda_soap(exp, lams)
        squared0 = np.vecdot(feats[0][:, 0], feats[0][:, 0])
        result = {lam: normalise_rows(feats[lam], in_place=out is not None, squared0=squared0 if lam else None)
                  for lam in lams}
        result[0] = result[0][:, 0, :]
        return result

    def _nice(self):
        """The fitted NICE features (body order > 2), else None."""
        return getattr(self, "nice_", None) if int(self.body_order) > 2 else None

    def _lambda_features(self, exp: Expansion, lams: tuple) -> dict:
        """Unnormalised features ``{λ: (n, 2λ+1, F)}`` of the centres of ``exp``: the λ-SOAP ones, and
        with ``body_order`` > 2 the NICE ones of that order appended (times ``nice_weight_[λ]``)."""
        exp = self._mapped(exp)
        feats = lambda_soap(exp, lams)
        nice = self._nice()
        if nice is None:
            return feats
        high = nice.transform(exp.values)
        return {lam: np.concatenate([feats[lam], self.nice_weight_[lam] * high[lam]], axis=2) for lam in lams}

    def _own_features(self) -> bool:
        """True when the features are not the shared expansion's λ-SOAP ones (NICE or alchemical
        channels): they are then computed by the model, and predictions go through the kernel rows."""
        return self._nice() is not None or self._alchemical() is not None

    def _alchemical(self):
        """The fitted alchemical channel map (``alchemical_channels`` > 0), else None."""
        return getattr(self, "alchemical_", None) if int(self.alchemical_channels) > 0 else None

    def _mapped(self, exp: Expansion) -> Expansion:
        """``exp`` with its species channels mixed into the pseudo-species, or itself."""
        alchemical = self._alchemical()
        return exp if alchemical is None else alchemical.transform(exp)

    def _n_features0(self, exp: Expansion) -> int:
        exp = self._mapped(exp)
        n = n_features(0, exp.max_angular, exp.values[0].shape[-1])
        nice = self._nice()
        return n if nice is None else n + nice.projections[nice.body_order][(0, 1)].shape[1]

    def _fit_nice(self, frames: list, calc) -> None:
        """With ``body_order`` > 2: fit the NICE compressions on up to ``nice_fit_centres`` centres of
        frames spread evenly over the training set (every rank the same), and the weights that give
        the NICE part the λ-SOAP part's mean norm (``nice_weight_``)."""
        self.nice_, self.nice_weight_, self.alchemical_ = None, {}, None
        if int(self.body_order) <= 2 and int(self.alchemical_channels) <= 0:
            return
        lams = tuple(sorted(set(self._lambdas()) | {0}))
        per_frame = max(1, int(np.mean([len(a) for a in frames])))
        n_pick = max(1, min(len(frames), int(self.nice_fit_centres) // per_frame))
        picked = [frames[i] for i in np.unique(np.linspace(0, len(frames) - 1, n_pick).astype(int))]
        exp = calc.compute(picked)
        if int(self.alchemical_channels) > 0:
            self.alchemical_ = AlchemicalChannels(exp.species, int(self.alchemical_channels)).fit(exp)
            exp = self.alchemical_.transform(exp)
        if int(self.body_order) <= 2:
            return
        self.nice_ = NiceFeatures(int(self.body_order), int(self.max_angular), lams, int(self.nice_components))
        self.nice_.fit(exp.values)
        high, low = self.nice_.transform(exp.values), lambda_soap(exp, lams)
        for lam in lams:
            a = np.mean(np.linalg.norm(low[lam].reshape(len(low[lam]), -1), axis=1))
            b = np.mean(np.linalg.norm(high[lam].reshape(len(high[lam]), -1), axis=1))
            self.nice_weight_[lam] = float(a / b) if b > 0 else 0.0

    #: centres whose λ-SOAP features are formed at once while fitting (memory: at most this many
    #: rows of full features exist; a 96-atom water box has 96)
    FIT_CENTRES_PER_CHUNK = 4096

    def _fit_features(self, frames: list, calc, comm, timer) -> tuple:
        """First pass over this rank's blocks of ``chunk_size`` frames: the normalised invariant
        features ``x0`` (n_local, F0) (the farthest-point sampling needs them all), their squared norms
        before the normalisation ``squared0`` (n_local,) (the floor of the λ > 0 ones), their species
        and frames (n_local,), and the row range (first, stop) of every local block. The λ > 0
        features are not kept (:meth:`_sparse_rows`, :meth:`_fit_project` form them again, chunk by
        chunk)."""
        starts = local_blocks(len(frames), self.chunk_size, comm)
        x0 = None
        species_parts, frame_parts, spans = [], [], []
        pos = 0
        n_atoms = sum(len(a) for start in starts for a in frames[start : start + self.chunk_size])
        for start in starts:
            exp = calc.compute(frames[start : start + self.chunk_size])
            n = exp.n_centres
            timer("expansion")
            if x0 is None:
                x0 = np.empty((n_atoms, self._n_features0(exp)))
                squared0 = np.empty(n_atoms)
            for lo, hi in _chunks(n, self.FIT_CENTRES_PER_CHUNK):
                rows = x0[pos + lo : pos + hi, None, :]
                rows[...] = self._lambda_features(_centres(exp, slice(lo, hi)), (0,))[0]
                squared0[pos + lo : pos + hi] = np.vecdot(rows[:, 0], rows[:, 0])
                normalise_rows(rows, in_place=True)
            species_parts.append(exp.centre_species)
            frame_parts.append(exp.centre_frame + start)
            spans.append((pos, pos + n))
            pos += n
            timer("features")
        species_loc = np.concatenate(species_parts) if species_parts else np.zeros(0, dtype=int)
        frame_loc = np.concatenate(frame_parts) if frame_parts else np.zeros(0, dtype=int)
        if x0 is None:
            squared0 = np.zeros(0)
        return x0, squared0, species_loc, frame_loc, spans

    def _fit_blocks(self, frames: list, calc, spans: list, comm):
        """This rank's blocks again: ``(first row, expansion)`` of each (second and third passes)."""
        for (lo, _), start in zip(spans, local_blocks(len(frames), self.chunk_size, comm)):
            yield lo, calc.compute(frames[start : start + self.chunk_size])

    def _sparse_rows(self, frames: list, calc, spans: list, x0: np.ndarray, squared0: np.ndarray, rows: np.ndarray,
                     comm) -> dict:
        """The normalised features ``{0: (r, F0), λ: (r, 2λ+1, F)}`` of this rank's local rows
        ``rows`` (sorted): the expansion of their blocks again, the λ features of those centres only."""
        out = {0: x0[rows]}
        lams = tuple(lam for lam in sorted(set(self._lambdas())) if lam)
        if not lams:
            return out
        parts = {lam: [] for lam in lams}
        for lo, exp in self._fit_blocks(frames, calc, spans, comm):
            mine = rows[(rows >= lo) & (rows < lo + exp.n_centres)] - lo
            if len(mine):
                feats = self._lambda_features(_centres(exp, mine), lams)
                for lam in lams:
                    parts[lam].append(normalise_rows(feats[lam], in_place=True, squared0=squared0[lo + mine]))
        for lam in lams:
            out[lam] = np.concatenate(parts[lam]) if parts[lam] else np.zeros((0, 2 * lam + 1, 0))
        return out

    def _fit_project(self, frames: list, calc, spans: list, x0: np.ndarray, squared0: np.ndarray,
                     species_loc: np.ndarray, comm) -> dict:
        """Third pass: the compressed features ``{0: (n_local, k0), λ: (n_local, 2λ+1, kλ)}`` of this
        rank's centres, each chunk of λ features formed, normalised and projected at once."""
        z = self._project({0: x0}, species_loc, spans)
        lams = tuple(lam for lam in sorted(set(self._lambdas())) if lam)
        for lam in lams:
            z[lam] = np.empty((len(species_loc), 2 * lam + 1, self.projections_[lam][0].shape[1]))
        if not lams:
            return z
        for lo, exp in self._fit_blocks(frames, calc, spans, comm):
            for a, b in _chunks(exp.n_centres, self.FIT_CENTRES_PER_CHUNK):
                feats = self._lambda_features(_centres(exp, slice(a, b)), lams)
                for lam in lams:
                    x = normalise_rows(feats[lam], in_place=True, squared0=squared0[lo + a : lo + b])
                    z[lam][lo + a : lo + b] = self._project({lam: x}, species_loc[lo + a : lo + b])[lam]
        return z

    def _project(self, raw: dict, species: np.ndarray, spans: list | None = None) -> dict:
        """Compressed features: ``0`` (n, k0) and λ (n, 2λ+1, kλ) (one basis per species), from the
        normalised full features ``raw`` with centre species ``species`` (n,). Block by block
        (``spans``: row ranges, default all rows) in cache-sized runs
        (:func:`~mdplugin.learn.lambda_kernels.project_rows`): the same numbers on any number of ranks, without a copy of the features."""
        spans = [(0, len(species))] if spans is None else spans
        out = {}
        for lam, x in raw.items():
            k = self.projections_[lam][0].shape[1]
            z = out[lam] = np.empty(x.shape[:-1] + (k,))
            for lo, hi in spans:
                for s_index, s in enumerate(self.species_):
                    rows = lo + np.flatnonzero(species[lo:hi] == s)
                    if len(rows):
                        project_rows(x, rows, self.projections_[lam][s_index], z)
        return out

    def _fit_projections(self, raw: dict, sparse: np.ndarray, species: np.ndarray, offset: int, comm=None,
                         ledger=None) -> None:
        """Principal directions (over the feature index) of the representative environments.

        ``raw`` {λ: (n_local, F) for λ = 0, (n_local, 2λ+1, F) otherwise}: this rank's normalised
        features (global rows ``offset …``; ``{}`` without rows), ``sparse`` the global indices of
        the representative environments, ``species`` (n,) the species of all centres. One
        randomised SVD per λ and species, of that species' representative environments in FPS
        order; with an MPI ``comm`` they are shared among the ranks, each rank gathering only the
        rows of its own SVDs (``ledger``: a :class:`~mdplugin.learn.parallel.CpuLedger`; costs in
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
            comm, costs, lambda t: principal_directions(inputs.pop(t), jobs[svd[t]][4]), owner=owner)))
        self.projections_ = {}
        for lam in sorted(widths):
            bases = [found[i] if i in found else np.eye(jobs[i][3]) for i in range(len(jobs)) if jobs[i][0] == lam]
            width = max(b.shape[1] for b in bases)
            self.projections_[lam] = [np.pad(b, ((0, 0), (0, width - b.shape[1]))) for b in bases]

    def _representative_environments(self, raw0, species_loc, species, comm) -> list:
        """Global indices of the representative environments, one array per centre species in FPS
        order: farthest-point sampling on the normalised invariant features, distributed over the
        ranks of ``comm`` (:func:`~mdplugin.learn.gpr.distributed_farthest_point_sampling`; each
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

    # ------------------------------------------------------------------------------------------
    # kernels
    # ------------------------------------------------------------------------------------------
    def _sparse_blocks(self, lam: int) -> list:
        """Per centre species ``s``: (s, cols, x⁰ (m, k0), x^λ (m·(2λ+1), kλ)) of the representative
        environments the λ GPR uses, contiguous copies built once per fitted/loaded model (copying
        them on every call made up most of a one-frame prediction)."""
        cache = self._block_cache  # a new one in fit and _set_state
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

    def _contracted_weights(self, lam: int) -> list:
        """Per centre species (in the order of :attr:`species_`): Q, the λ GPR's weights folded into
        the representative environments and the projections
        (:func:`~mdplugin.learn.lambda_kernels.fold_weights`: a mean prediction then needs no
        kernel row and no projected λ features; ζ = 1 or 2 only), scaled by ``y_scale /
        kernel_scale``; built once per fitted/loaded model."""
        cache = self._block_cache  # a new one in fit and _set_state
        key = ("contracted", lam)
        if key not in cache:
            d = 2 * lam + 1
            used = self._sparse_columns(lam)
            position = np.full(len(self.sparse_species_), -1)
            position[used] = np.arange(len(used))
            weights = self.gpr_[lam].weights.reshape(len(used), d) * (self.y_scale_[lam] / self.kernel_scale_[lam])
            cache[key] = fold_weights(weights, position, self._sparse_blocks(lam), self.projections_[lam], lam, self.zeta)
        return cache[key]

    def _contraction_plan(self, precision: str) -> tuple:
        """``(lambdas, species, projections, weights)`` for
        :func:`~mdplugin.learn.lambda_kernels.contracted_means` in
        ``precision``: the λ of the model's GPRs, the species as Python ints, the invariant
        projections per species (ζ = 2) and ``{λ: Q per species}``; built once per fitted/loaded
        model and precision (an MD step then makes no cache lookups of its own; ``"single"`` keeps
        float32 copies of the projections and of Q)."""
        cache = self._block_cache  # a new one in fit and _set_state
        key = ("plan", precision)
        if key not in cache:
            dtype = TENSOR_PRECISIONS[precision]
            lams = self._lambdas()
            projections = [p.astype(dtype, copy=False) for p in self.projections_[0]] if self.zeta == 2 else None
            weights = {lam: [q.astype(dtype, copy=False) for q in self._contracted_weights(lam)] for lam in lams}
            cache[key] = (lams, tuple(int(s) for s in self.species_), projections, weights)
        return cache[key]

    def _structure_kernel(self, z: dict, species, frame, n_frames: int, lam: int) -> np.ndarray:
        """K_xM (n_frames·(2λ+1), M·(2λ+1)), unscaled."""
        d = 2 * lam + 1
        position = np.full(len(self.sparse_species_), -1)
        used = self._sparse_columns(lam)
        position[used] = np.arange(len(used))
        out = np.zeros((n_frames, d, len(used), d))
        if n_frames == 1:  # one (large) structure: sum over its atoms first (structure_kernel_row)
            for s, cols, b0, b in self._sparse_blocks(lam):
                rows = np.flatnonzero(species == s)
                if len(rows) and len(cols):
                    out[0][:, position[cols], :] = structure_kernel_row(
                        z[0][rows], z[lam][rows] if lam else None, b0, b, lam, self.zeta)
            return out.reshape(d, len(used) * d)
        for rows, cols, k in atom_kernel_blocks(z, species, lam, self.zeta, self._sparse_blocks(lam)):
            out[:, :, position[cols], :] = sum_by_frame(k, frame[rows], n_frames)
        return out.reshape(n_frames * d, len(used) * d)

    def _sparse_kernel(self, lam: int) -> np.ndarray:
        """K_MM (M·(2λ+1), M·(2λ+1)), unscaled."""
        d = 2 * lam + 1
        used = self._sparse_columns(lam)
        position = np.full(len(self.sparse_species_), -1)
        position[used] = np.arange(len(used))
        sp = {key: v[used] for key, v in self.sparse_.items()}
        out = np.zeros((len(used), d, len(used), d))
        blocks = atom_kernel_blocks(sp, self.sparse_species_[used], lam, self.zeta, self._sparse_blocks(lam))
        for rows, cols, k in blocks:
            out[np.ix_(rows, np.arange(d), position[cols], np.arange(d))] = k
        return out.reshape(len(used) * d, len(used) * d)

    # ------------------------------------------------------------------------------------------
    # fit
    # ------------------------------------------------------------------------------------------
    def fit(self, frames: Sequence[Atoms], targets, *, comm=None) -> "LambdaSoapModel":
        """Fit on ``frames`` (list of ``ase.Atoms``) and their dipoles (n, 3) or polarizabilities
        (n, 3, 3): ``targets`` a :class:`~mdplugin.models.contract.Targets`, a mapping with the
        target's key, or the array itself.

        ``comm`` (an mpi4py communicator, default serial): every rank passes all frames; each
        computes λ-SOAP features and kernel blocks for its share of the ``chunk_size`` blocks.
        The invariant features are gathered for FPS and the representative environments' rows
        for the PCA projections (same choices as serial), the normal equations and held-out rows
        are summed / gathered across ranks; every rank ends with the same model.
        """
        comm = resolve_comm(comm)
        timer = PhaseTimer(comm, f"lsoap-{self.target}")
        ledger = CpuLedger(comm)  # the shared SVDs and factorisations go to the ranks that did least so far
        y = getattr(self._targets(targets), self.target)
        frames, targets = self._fit_inputs(frames, y)
        calc = self.featurizer()
        self._fit_nice(frames, calc)
        timer("setup")
        centres = self._fit_environments(frames, calc, comm, timer, ledger)
        targets = self._fit_baseline(targets, centres)
        self.gpr_, self.y_scale_, self.kernel_scale_, self.signal_variance_, self.regularizer_ = {}, {}, {}, {}, {}
        for lam in self._lambdas():
            self._fit_lambda(lam, targets[lam], centres, comm, timer, ledger)
        timer.report()
        self.training_fingerprint_ = fingerprint(frames, np.asarray(y, dtype=float))
        self.n_train_ = len(frames)
        self.is_fitted_ = True
        return self

    def _fit_inputs(self, frames: Sequence[Atoms], y) -> tuple[list, dict[int, np.ndarray]]:
        """The training frames as a list and their targets ``{λ: (n, 2λ+1)}``, checked; sets
        ``species_`` and forgets the cached blocks of a previous fit."""
        self._check_target()
        self._block_cache = {}  # the representative environments' blocks, built on first use
        frames = list(frames)
        if len(frames) == 0:
            raise DataError("no training frames")
        targets = self._to_spherical(y, len(frames))
        if int(self.zeta) < 1:
            raise ConfigError(f"zeta must be a positive integer, got {self.zeta}")
        if int(self.body_order) not in (2, 3, 4):
            raise ConfigError(f"lsoap: body_order must be 2, 3 or 4, got {self.body_order!r}")
        if self.regularizer_choice not in ("held-out", "evidence"):
            raise ConfigError(f"lsoap: regularizer_choice must be 'held-out' or 'evidence', got {self.regularizer_choice!r}")
        self.species_ = np.array(sorted({int(z) for a in frames for z in a.numbers}), dtype=int)
        return frames, targets

    def _fit_environments(self, frames: list, calc, comm, timer, ledger) -> _Centres:
        """The training centres (:class:`_Centres`) and the representative environments.

        This rank's share of the normalised λ-SOAP features (its ``chunk_size`` blocks of
        ``frames``, expansion ``calc``); the species and frames of all centres; the
        representative environments by FPS per species (``sparse_rank_``, ``sparse_species_``);
        the PCA projections of their features (``projections_``); this rank's compressed
        features; and the compressed rows of the representative environments (``sparse_``)."""
        # raw, species_loc, frame_loc: this rank's centres; species, frame: all centres
        x0, squared0, species_loc, frame_loc, spans = self._fit_features(frames, calc, comm, timer)
        species = np.concatenate(allgather_blocks(comm, [species_loc]))
        frame = np.concatenate(allgather_blocks(comm, [frame_loc]))
        offset = int(np.searchsorted(frame, frame_loc[0])) if len(frame_loc) else 0
        timer("gather species")
        sparse = self._representative_environments(x0, species_loc, species, comm)
        self.sparse_rank_ = np.concatenate([np.arange(len(chosen)) for chosen in sparse])
        sparse = np.concatenate(sparse)
        self.sparse_species_ = species[sparse].astype(int)
        timer("fps")
        # the principal directions need the full features of the representative environments only:
        # numbered compactly (sorted global rows; each rank's are a contiguous run), formed again
        ordered = np.sort(sparse)
        first = int(np.searchsorted(ordered, offset))
        local = ordered[first : int(np.searchsorted(ordered, offset + len(species_loc)))]
        rows = self._sparse_rows(frames, calc, spans, x0, squared0, local - offset, comm) if len(local) else {}
        timer("sparse features")
        self._fit_projections(rows, np.searchsorted(ordered, sparse), species[ordered], first, comm, ledger)
        del rows
        timer("pca")
        z = self._fit_project(frames, calc, spans, x0, squared0, species_loc, comm)
        del x0
        timer("project")
        self.sparse_ = {
            lam: np.ascontiguousarray(v) for lam, v in gather_rows(comm, z, sparse, offset, len(species_loc)).items()
        }
        timer("gather sparse")
        return _Centres(z, species_loc, frame_loc, species, frame, len(frames))

    def _fit_baseline(self, targets: dict[int, np.ndarray], centres: _Centres) -> dict[int, np.ndarray]:
        """Fit the per-species composition baseline ``baseline_`` (n_species,) of the λ = 0 target
        (zeros without one) and return ``targets`` with it removed."""
        self.baseline_ = np.zeros(len(self.species_))
        if 0 not in targets:
            return targets
        comp = composition(centres.species, centres.frame, centres.n_frames, self.species_)
        self.baseline_ = fit_baseline(comp, targets[0][:, 0])
        return {**targets, 0: targets[0] - (comp @ self.baseline_)[:, None]}

    def _fit_lambda(self, lam: int, y: np.ndarray, centres: _Centres, comm, timer, ledger) -> None:
        """Fit the λ GPR on its targets ``y`` (n_frames, 2λ+1) (baseline removed): the scales
        ``y_scale_[λ]`` (target RMS) and ``kernel_scale_[λ]`` (mean prior variance of a training
        structure), ``gpr_[λ]``, ``regularizer_[λ]`` and ``signal_variance_[λ]`` (in units of
        ``y_scale_[λ]²``): with held-out frames (the regulariser chosen automatically), the value
        that gives their errors unit variance under the fit without them
        (:func:`~mdplugin.models.lsoap_solve.held_out_signal_variance`), else the maximum-likelihood
        value for the regulariser."""
        d = 2 * lam + 1
        n_frames = centres.n_frames
        scale = float(np.sqrt(np.mean(y**2)))
        self.y_scale_[lam] = scale if scale > 0 else 1.0
        z, species_loc, frame_loc = centres.z, centres.species_loc, centres.frame_loc
        kaa = structure_self_kernel(z, species_loc, frame_loc, n_frames, lam, self.zeta) if z else np.zeros((n_frames, d, d))
        # every frame lives on one rank: the sum over ranks adds exact zeros elsewhere
        kscale = float(np.mean(sum_over_ranks(comm, np.trace(kaa, axis1=1, axis2=2))) / d)
        self.kernel_scale_[lam] = kscale if kscale > 0 else 1.0
        timer("self kernel")
        reg = self._regularizer(lam)
        eqs = self._normal_equations(lam, y / self.y_scale_[lam], centres, reg is None, comm, timer)
        kmm = scaled_symmetric_part(self._sparse_kernel(lam), self.kernel_scale_[lam])
        timer("K_MM")
        n_obs = n_frames * d
        if reg is None and self.regularizer_choice == "evidence":
            a_all = eqs.a_fit + eqs.held_out[0] if eqs.held_out is not None else eqs.a_fit.copy()
            reg = evidence_regularizer(a_all, eqs.b_all, eqs.yy, n_obs, kmm, self.jitter)
            timer("evidence")
            a_fit = eqs.a_fit
            gpr, reg = solve_regularized(a_all, eqs.b_all, kmm, reg, self.regularizer_grid, self.jitter,
                                         comm=comm, held_out=None, timer=timer, ledger=ledger)
            del a_all
        else:
            a_fit = eqs.a_fit.copy() if eqs.held_out is not None else None  # the solve adds the held-out rows
            gpr, reg = solve_regularized(  # no held-out rows and no regulariser: 1e-4
                eqs.a_fit, eqs.b_fit, kmm, reg, self.regularizer_grid, self.jitter,
                comm=comm, held_out=eqs.held_out, timer=timer, ledger=ledger,
            )
        self.regularizer_[lam] = reg
        self.gpr_[lam] = gpr
        self.signal_variance_[lam] = max((eqs.yy - float(eqs.b_all @ gpr.weights)) / (reg * n_obs), 1e-12)
        if eqs.held_out is not None:
            held = self._held_out_rows(lam, eqs.held_out[2], kaa, n_frames, comm)
            s2 = held_out_signal_variance(a_fit, eqs.b_fit, kmm, gpr.kmm_factor, reg, held, self.jitter, comm)
            if s2 is not None:
                self.signal_variance_[lam] = max(s2, 1e-12)
            timer("held-out signal variance")

    def _held_out_rows(self, lam: int, blocks: list, kaa: np.ndarray, n_frames: int, comm) -> list:
        """This rank's held-out kernel rows and targets (:meth:`_normal_equations`' ``blocks``) with
        the prior variance of every row: ``[(k_val, y_val, k_xx (v,))]`` in block order (scaled)."""
        d = 2 * lam + 1
        chunk = max(int(self.chunk_size), 1)
        out = []
        for (k_val, y_val), start in zip(blocks, local_blocks(n_frames, chunk, comm)):
            frames = np.arange(start, min(n_frames, start + chunk))
            frames = frames[frames % 5 == 0]  # the held-out frames of _normal_equations
            kxx = np.diagonal(kaa[frames], axis1=1, axis2=2).reshape(-1) / self.kernel_scale_[lam]
            if len(kxx) != len(y_val):  # pragma: no cover - the two selections are the same by construction
                raise RuntimeError("held-out rows and their prior variances do not match")
            out.append((k_val, y_val, kxx))
        return out

    def _normal_equations(self, lam: int, y: np.ndarray, centres: _Centres, choose: bool, comm,
                          timer) -> _NormalEquations:
        """The λ GPR's normal equations (:class:`_NormalEquations`) for the scaled targets ``y``
        (n_frames, 2λ+1), from the scaled kernel rows of this rank's blocks of ``chunk_size``
        frames, summed in a fixed tree over the blocks, the same on any number of ranks
        (bit-identical model).

        With 10 frames or more every 5th frame is held out of ``a_fit``, ``b_fit`` and summed on
        its own, whether or not the regulariser is to be chosen (``choose``), so that the model
        depends only on the regulariser. ``choose``: they are kept apart in ``held_out``, with
        this rank's held-out kernel rows and targets (which stay on their rank); otherwise they
        are added back."""
        d = 2 * lam + 1
        n_frames = centres.n_frames
        z, species_loc, frame_loc = centres.z, centres.species_loc, centres.frame_loc
        chunk = max(int(self.chunk_size), 1)
        n_blocks = -(-n_frames // chunk)
        m = len(self._sparse_columns(lam)) * d
        split = n_frames >= 10
        hold = choose and split  # keep the held-out rows to score the candidates
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
            yc = y[start:stop].reshape(-1)
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
        held, b_all = None, b_fit
        if split:
            a_val, b_val = a_val.result(), b_val.result()
            b_all = b_fit + b_val
            if hold:
                held = (a_val, b_val, val_blocks, int(held_out.sum()) * d)
            else:  # every row
                a_fit += a_val
                b_fit = b_all
            del a_val
        timer("tree sums")
        return _NormalEquations(a_fit, b_fit, held, b_all, yy)

    # ------------------------------------------------------------------------------------------
    # predict
    # ------------------------------------------------------------------------------------------
    def _shared_projection(self, features: FeatureCache) -> dict:
        """The compressed features ``{0: (n, k0), λ: (n, 2λ+1, kλ)}`` of the centres of ``features``:
        the λ-SOAP features of the shared cache projected, then divided by the cache's norms (the
        projection is linear: no normalised copy of the full features is made)."""
        lams = tuple(sorted(set(self._lambdas()) | {0}))
        if self._own_features():
            return self._project(self._raw_features(features.expansion), features.centre_species)
        raw = features.lambda_soap(lams)
        raw = {lam: (x[:, 0, :] if lam == 0 else x) for lam, x in raw.items()}
        z = self._project(raw, features.centre_species)
        for lam in lams:
            inverse = features.inverse_norms(lam)
            z[lam] *= inverse.reshape((-1,) + (1,) * (z[lam].ndim - 1))
        return z

    def _predict_kernel(self, raw: dict, species: np.ndarray, frame: np.ndarray, n: int,
                        return_std: bool, projected: bool = False) -> tuple[dict, dict]:
        """Every λ GPR's mean ``{λ: (n, 2λ+1)}`` (scaled, no baseline) and, with ``return_std``,
        posterior covariance ``{λ: (n, 2λ+1, 2λ+1)}``, through the kernel rows. ``raw``: the
        normalised full features, or (``projected``) the compressed ones."""
        z = raw if projected else self._project(raw, species)
        sph, cov = {}, {}
        for lam in self._lambdas():
            d = 2 * lam + 1
            k = self._structure_kernel(z, species, frame, n, lam) / self.kernel_scale_[lam]
            gpr: ProjectedProcess = self.gpr_[lam]
            sph[lam] = (k @ gpr.weights).reshape(n, d) * self.y_scale_[lam]
            if return_std:
                kaa = structure_self_kernel(z, species, frame, n, lam, self.zeta) / self.kernel_scale_[lam]
                c = posterior_covariance(gpr, k, kaa)
                cov[lam] = c * self.signal_variance_[lam] * self.y_scale_[lam] ** 2
        return sph, cov

    def predict_from_features(self, features: FeatureCache | Expansion, *, return_std: bool = False,
                              forces: bool = False, stress: bool = False, precision: str = "double") -> Prediction:
        """Predictions (and std) from an expansion made by :meth:`featurizer` (or the
        :class:`~mdplugin.features.cache.FeatureCache` around it that the models of an MD step share),
        as a :class:`~mdplugin.models.contract.Prediction`: ``values`` (n_frames, 3) or (n_frames, 3, 3)
        and with ``return_std`` ``std`` of the same shape (``forces``/``stress``: a
        :class:`ConfigError`, this model gives none).

        ``precision``: ``"double"`` (default) or ``"single"``, the mean through float32 copies of
        the model's large matrices (about twice faster in an MD step, where they are read from
        memory; relative error ~1e-6, far below any model's error). The uncertainty
        (``return_std=True``) is always computed in double precision, and so is then the mean."""
        self._check_fitted()
        self._check_asked(forces, stress)
        if precision not in TENSOR_PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(TENSOR_PRECISIONS)}, got {precision!r}")
        features = as_feature_cache(features)
        species, frame, n = features.centre_species, features.centre_frame, features.n_frames
        if not return_std and self.zeta in (1, 2) and not self._own_features():
            sph, cov = contracted_means(features, self._contraction_plan(precision), self.zeta, precision), {}
        else:
            sph, cov = self._predict_kernel(self._shared_projection(features), species, frame, n, return_std,
                                            projected=True)
        if 0 in sph:
            comp = composition(species, frame, n, self.species_)
            sph[0] = sph[0] + (comp @ self.baseline_)[:, None]
        if self.target == "dipole":
            y = spherical_to_vector(sph[1])
            if not return_std:
                return Prediction("dipole", y)
            std = spherical_to_vector(np.sqrt(np.maximum(np.diagonal(cov[1], axis1=1, axis2=2), 0)))
            return Prediction("dipole", y, std)
        y = spherical_to_symmetric(sph[0], sph[2])
        if not return_std:
            return Prediction("polarizability", y)
        var = cov[0][:, 0, 0, None, None] * L0_BASIS[0] ** 2
        var = var + np.einsum("kij,nkl,lij->nij", L2_BASIS, cov[2], L2_BASIS)
        return Prediction("polarizability", y, np.sqrt(np.maximum(var, 0.0)))

    def predict(self, frames: Sequence[Atoms], return_std: bool = False):
        """Dipoles (n, 3) or polarizabilities (n, 3, 3) in the units of the training targets;
        with ``return_std`` also the posterior standard deviation of every component (same
        shape). An element absent from the training set raises :class:`DataError` naming it."""
        self._check_fitted()
        frames = list(frames)
        check_species(frames, self.species_, f"{self.target} model")
        calc = self.featurizer()
        parts = [self.predict_from_features(calc.compute(frames[start : start + self.chunk_size]), return_std=return_std)
                 for start in range(0, len(frames), self.chunk_size)]
        y = np.concatenate([p.values for p in parts])
        return (y, np.concatenate([p.std for p in parts])) if return_std else y

    def sample_predictions(self, frames: Sequence[Atoms], n_samples: int, seed=None, return_mean: bool = False):
        """Correlated draws of the posterior: ``n_samples`` plausible models, each evaluated on every
        frame of ``frames``: (n_samples, n, 3) dipoles or (n_samples, n, 3, 3) polarizabilities, in
        the units of the training targets (with ``return_mean`` also the mean, ``predict(frames)``).

        A draw is a function, the same on every frame: ``y(x) = mean(x) + s (K_xM δw + r(x))``
        with the signal standard deviation ``s``, weights ``δw ~ N(0, λ (A + λ K_MM)⁻¹)`` from the
        stored factor (:func:`~mdplugin.learn.posterior.weight_draws`) and the **Nyström residual**
        drawn exactly, not dropped: ``r(x) = f(x) − K_xM K_MM⁻¹ f(M)`` for a function ``f`` of the
        prior drawn through the kernel's explicit features
        (:mod:`~mdplugin.models.lsoap_sampling`, ζ = 1 or 2 only). The two parts are independent,
        so the draws have the model's joint posterior covariance between any two frames (and
        components): their mean and per-frame standard deviation converge to
        ``predict(frames, return_std=True)``, and the errors of two frames are as correlated as
        their environments are similar. Frames are processed in chunks of ``chunk_size``; every
        chunk sees the same draws. ``seed``: anything :func:`numpy.random.default_rng` takes.

        Cost: a prediction with kernel rows plus, per centre and draw, ``(2λ+1)·kλ·k0``
        multiply-adds for the residual (ζ = 2). A model with another ζ raises a one-line
        :class:`ConfigError` (its kernel has no small explicit features)."""
        self.check_sampling()
        n_samples = check_n_samples(n_samples)
        frames = list(frames)
        check_species(frames, self.species_, f"{self.target} model")
        rng = np.random.default_rng(seed)
        draws = {lam: self._posterior_draws(lam, n_samples, rng) for lam in self._lambdas()}
        calc = self.featurizer()
        means, samples = [], []
        for start in range(0, len(frames), self.chunk_size):
            mean, sample = self._sample_expansion(calc.compute(frames[start : start + self.chunk_size]), draws)
            means.append(mean)
            samples.append(sample)
        if not frames:
            shape = (0, 3) if self.target == "dipole" else (0, 3, 3)
            means, samples = [np.zeros(shape)], [np.zeros((n_samples,) + shape)]
        mean, sample = np.concatenate(means), np.concatenate(samples, axis=1)
        return (mean, sample) if return_mean else sample

    def check_sampling(self) -> None:
        """A fitted model with ζ = 1 or 2 can draw posterior samples; otherwise a one-line :class:`ConfigError`."""
        self._check_fitted()
        if int(self.zeta) not in (1, 2):
            raise ConfigError(f"this lsoap model (zeta {self.zeta}) cannot draw posterior samples: sampling needs "
                              f"zeta 1 or 2 (retrain with zeta=2, the default)")

    def _posterior_draws(self, lam: int, n_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        """One λ GPR's draws, in units of its signal standard deviation and of the scaled kernel:
        ``(coefficients (M·(2λ+1), n_samples), {species: g})`` such that a draw's error on
        structures with scaled kernel rows ``K`` is ``K @ coefficients + f_g(x)/√kernel_scale``
        (``coefficients = δw − K_MM⁻¹ f_g(M)``: weights minus the Nyström projection of ``f_g``)."""
        gpr: ProjectedProcess = self.gpr_[lam]
        used = self._sparse_columns(lam)
        sparse = {key: v[used] for key, v in self.sparse_.items()}
        widths = (sparse[0].shape[1], sparse[lam].shape[-1] if lam else sparse[0].shape[1])
        g = prior_draws(self.species_, widths, lam, self.zeta, n_samples, rng)
        root = np.sqrt(self.kernel_scale_[lam])
        f_sparse = prior_function(sparse, self.sparse_species_[used], np.arange(len(used)), len(used), lam,
                                  self.zeta, g).reshape(-1, n_samples) / root
        coefficients = weight_draws(gpr, n_samples, rng) - cho_solve((gpr.kmm_factor, True), f_sparse, check_finite=False)
        return coefficients, g

    def _sample_expansion(self, exp: Expansion | FeatureCache, draws: dict) -> tuple[np.ndarray, np.ndarray]:
        """Mean (n, 3[, 3]) and draws (n_samples, n, 3[, 3]) on the frames of ``exp``."""
        features = as_feature_cache(exp)
        species, frame, n = features.centre_species, features.centre_frame, features.n_frames
        z = self._shared_projection(features)
        mean, error = {}, {}
        for lam in self._lambdas():
            d = 2 * lam + 1
            coefficients, g = draws[lam]
            k = self._structure_kernel(z, species, frame, n, lam) / self.kernel_scale_[lam]
            mean[lam] = (k @ self.gpr_[lam].weights).reshape(n, d) * self.y_scale_[lam]
            e = (k @ coefficients).reshape(n, d, -1)
            e += prior_function(z, species, frame, n, lam, self.zeta, g) / np.sqrt(self.kernel_scale_[lam])
            error[lam] = np.moveaxis(e, 2, 0) * (self.y_scale_[lam] * np.sqrt(self.signal_variance_[lam]))
        if 0 in mean:
            mean[0] = mean[0] + (composition(species, frame, n, self.species_) @ self.baseline_)[:, None]
        if self.target == "dipole":
            return spherical_to_vector(mean[1]), spherical_to_vector(mean[1][None] + error[1])
        return (spherical_to_symmetric(mean[0], mean[2]),
                spherical_to_symmetric(mean[0][None] + error[0], mean[2][None] + error[2]))

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
        calc = self.featurizer()
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
            cov = structure_covariance(z, species, frame, n, lam, self.zeta, self.species_)
            out[lam] = (cov / self.kernel_scale_[lam], float(self.gpr_[lam].regularizer))
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
        if self._alchemical() is not None:
            state["alchemical_mixing"] = self.alchemical_.mixing
        if self._nice() is not None:
            state.update(self.nice_.to_arrays())
            state["weights_nice"] = np.array([self.nice_weight_[lam] for lam in sorted(self.nice_weight_)])
        return state

    def _kmm_factor(self, lam: int) -> np.ndarray:
        """Cholesky factor of the scaled K_MM of the λ GPR, exactly as ``fit`` computes it."""
        return factor_sparse_kernel(self._sparse_kernel(lam) / self.kernel_scale_[lam], self.jitter)[1]

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._block_cache = {}  # the representative environments' blocks, built on first use
        self.nice_, self.nice_weight_, self.alchemical_ = None, {}, None
        if int(self.alchemical_channels) > 0:
            if "alchemical_mixing" not in arrays:
                raise KeyError(f"alchemical_channels={self.alchemical_channels} but no alchemical_mixing array")
            species = np.unique(np.asarray(arrays["sparse_species"], dtype=int))
            self.alchemical_ = AlchemicalChannels(species, int(self.alchemical_channels),
                                                  np.asarray(arrays["alchemical_mixing"], dtype=float))
        if int(self.body_order) > 2:
            if not any(key.startswith("nice_") for key in arrays):
                raise KeyError(f"body_order={self.body_order} but no NICE projections (nice_* arrays)")
            lams = sorted(set(self._lambdas()) | {0})
            self.nice_ = NiceFeatures(int(self.body_order), int(self.max_angular), lams, int(self.nice_components))
            self.nice_.load_arrays(arrays)
            self.nice_weight_ = dict(zip(lams, map(float, np.asarray(arrays["weights_nice"], dtype=float))))
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
