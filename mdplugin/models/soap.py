"""Invariant SOAP energy model: sparse GPR on atomic environments, exact analytic forces.

Model (registry name ``"soap"``, target ``"energy"``)::

    E(A) = Σ_i e0[Z_i] + Σ_i Σ_M w_M k(x_i, x_M),      k(x, x') = δ(Z, Z') (x̂ · x̂')^ζ

* ``x_i`` is the invariant SOAP power spectrum of atom ``i`` (the λ = 0 λ-SOAP features of
  :func:`mdplugin.features.lambda_soap.power_spectrum`, built in numpy from ONE featomic
  ``SphericalExpansion`` call); ``x̂ = x/|x|``.
* ``x_M`` are M representative environments chosen by farthest-point sampling per species.
* ``e0`` is a per-species baseline fitted jointly with the weights (unpenalised: eliminated from the
  energy rows of the normal equations). Fitted before and apart from the GPR, the baseline left the
  constant part of the atomic energies to weights set by thousands of force rows, and a liquid's
  energies came out worse than their mean (water boxes: 320 % of the spread, docs/condensed.md).
* Forces are the exact negative gradients ``F_j = −Σ_i (∂E/∂x_i)·(∂x_i/∂r_j)`` through the
  position gradients of the expansion; the force rows of ``K_NM`` used in training are the same
  derivatives, so energies and forces are fitted jointly by the projected-process solver of
  :mod:`mdplugin.learn.gpr` (noise-weighted rows: energy noise ``energy_noise·√N`` eV per structure,
  force noise ``force_noise`` eV/Å per component, prior std of an atomic energy ``signal_std`` eV).
* The predictive standard deviation of the energy (eV) is the GPR posterior std of the sum of
  atomic terms (Nyström residual included).

Periodic cells work (featomic handles the images); the stress is not implemented yet.

The ASE calculator shares one spherical expansion per structure between the models whose
:meth:`~mdplugin.models.shared_expansion.SharedExpansionMixin.featurizer` are equal and predicts with
:meth:`SoapEnergyModel.predict_from_features`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import scipy.sparse
from ase import Atoms

from ..features.cache import FeatureCache, as_feature_cache
from ..features.expansion import Expansion
from ..features.lambda_contract import times_unfolded
from ..features.lambda_soap import power_spectrum, real_clebsch_gordan, unfold_index
from ..core.errors import DataError
from .base import Model, check_species, fingerprint, register
from .contract import Prediction
from ..learn.lambda_kernels import structure_self_kernel
from .shared_expansion import SharedExpansionMixin
from ..learn.baseline import composition, fit_baseline
from ..learn.parallel import PhaseTimer, TreeSum, gather_rows, local_blocks, resolve_comm
from ..learn.gpr import (
    ProjectedProcess,
    distributed_farthest_point_sampling_groups,
    normal_equations,
    solve_projected_process,
)

__all__ = ["SoapEnergyModel"]


def _normalise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-normalised features (n, F) and the norms (n,)."""
    norms = np.sqrt(np.vecdot(x, x))
    norms = np.maximum(norms, 1e-300)
    return x / norms[:, None], norms


def _baseline_inverse(comp: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """``H⁺`` (n_s, n_s) for ``H = Cᵀ Σ⁻¹ C`` of the compositions ``comp`` (n_frames, n_s) and the
    energy noise ``sigma`` (n_frames,) eV: the inverse on the compositions that occur, zero on
    combinations of species that never vary independently (one molecule: only the sum over its
    species is determined; the ridge of :func:`~mdplugin.learn.baseline.fit_baseline` then fixes
    the rest)."""
    h = comp.T @ (comp / sigma[:, None] ** 2)
    return np.linalg.pinv(h, rcond=1e-10, hermitian=True)


def _power_spectrum(features: FeatureCache) -> tuple[np.ndarray, np.ndarray]:
    """Invariant power spectrum (n, F) of :func:`~mdplugin.features.lambda_soap.power_spectrum`
    (the λ = 0 features) and the inverse norms ``1/|x_i|`` (n,), both shared through the
    feature cache with the λ-SOAP models of the same step; read-only."""
    return features.power_spectrum(), features.inverse_norms(0)


@lru_cache(maxsize=None)
def _symmetric_unfold(n_prop: int, n_blocks: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Index (n_blocks·P²,) into ``n_blocks`` consecutive folded upper triangles (one per l) and
    weights such that ``g[:, index] * weights`` is ``G + Gᵀ`` (flattened (n_blocks, P, P)) for
    ``G`` the matrices whose folded form is ``g`` (off-diagonal entries carry √2, see
    :func:`~mdplugin.features.lambda_soap.unfold_index`)."""
    index, weights = unfold_index(n_prop)
    diagonal = np.arange(n_prop * n_prop) % (n_prop + 1) == 0
    factor = np.where(diagonal, 2.0, 1.0) * weights
    width = n_prop * (n_prop + 1) // 2
    return (np.concatenate([index + block * width for block in range(n_blocks)]), np.tile(factor, n_blocks))


@lru_cache(maxsize=None)
def _symmetric_unfold_cg(n_prop: int, n_l: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_symmetric_unfold` for the blocks l = 0 … n_l−1, each block's weights times its λ = 0
    Clebsch–Gordan value ``C^{ll0}_{mm0}`` (the same for every m)."""
    index, factor = _symmetric_unfold(n_prop, n_l)
    cg = np.repeat([real_clebsch_gordan(l, l, 0)[0, 0, 0] for l in range(n_l)], n_prop * n_prop)
    return index, factor * cg


def _backward_forces(features: FeatureCache, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forces (n, 3) = −Σ_pairs (∂E/∂c_i)·(∂c_i/∂r_j) and the strain derivative ∂E/∂ε
    (n_frames, 3, 3) from ``g = ∂E/∂x`` (n, F): per l, ``∂E/∂c^l_i = C^{ll0} c^l_i (G^l_i + G^lᵀ_i)``
    with ``G^l_i`` the (P, P) matrix of ``g``'s block l (one compiled pass over the centres,
    :func:`~mdplugin.features.lambda_contract.times_unfolded`), contracted with the expansion's pair
    derivatives in one pass (:meth:`~mdplugin.features.expansion.PairGradients.forces_and_strain`)."""
    exp = features.expansion
    n_prop = exp.values[0].shape[2]
    index, factor = _symmetric_unfold_cg(n_prop, len(exp.values))
    de_dc = times_unfolded(features.padded()[0], g, index, factor)
    return exp.pair_gradients.forces_and_strain(de_dc)


@register("soap")
class SoapEnergyModel(SharedExpansionMixin, Model):
    """Sparse GPR energy model on the invariant SOAP power spectrum (see the module docstring).

    Parameters
    ----------
    target : must be ``"energy"``.
    cutoff : neighbour cutoff, Å.
    max_radial, max_angular : featomic basis sizes (``max_radial + 1`` radial functions).
    gaussian_width, smoothing_width : atomic density width and cutoff smoothing width, Å.
    zeta : exponent of the polynomial kernel on normalised features.
    n_sparse : representative environments per species (FPS).
    energy_noise : energy noise per atom, eV (a structure of N atoms gets ``energy_noise·√N``).
    force_noise : force noise per component, eV/Å.
    signal_std : prior std of an atomic energy, eV (1 eV, as in GAP-style models); ``None``
        estimates it from the training energies (std of the baseline-corrected energies / √N, at
        least 1 meV).

    The defaults (ζ = 2, l_max = 3, 5 radial functions, 5 Å, force noise 5 meV/Å) were chosen on
    GFN2-xTB 1,2-dichloroethane for accuracy at a cost that fits an MD step of a few ms; 1000
    sparse environments per species (200 before) and an energy noise of 1 meV/atom (10 before) on
    liquid water, where 200 left the forces at 40 % of their spread and 10 meV/atom let the
    thousands of force rows override the energies (docs/condensed.md). With ζ = 2 the MD step's cost does not grow with
    ``n_sparse`` (the weights fold into one (F, F) matrix per species); the fit's does (M²).
    use_forces : fit the forces as well as the energies (when given).
    chunk_size : frames per block of the normal equations (memory).
    """

    targets_supported = ("energy",)
    gives_stress = True

    def __init__(
        self,
        target: str = "energy",
        cutoff: float = 5.0,
        max_radial: int = 4,
        max_angular: int = 3,
        gaussian_width: float = 0.3,
        smoothing_width: float = 0.5,
        zeta: int = 2,
        n_sparse: int = 1000,
        energy_noise: float = 0.001,
        force_noise: float = 0.005,
        signal_std: float | None = 1.0,
        use_forces: bool = True,
        chunk_size: int = 50,
    ):
        self.target = target
        self.cutoff = cutoff
        self.max_radial = max_radial
        self.max_angular = max_angular
        self.gaussian_width = gaussian_width
        self.smoothing_width = smoothing_width
        self.zeta = zeta
        self.n_sparse = n_sparse
        self.energy_noise = energy_noise
        self.force_noise = force_noise
        self.signal_std = signal_std
        self.use_forces = use_forces
        self.chunk_size = chunk_size

    # ------------------------------------------------------------------------------------------
    # kernel pieces
    # ------------------------------------------------------------------------------------------
    def _species_blocks(self) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """Per species: (Z, indices of its sparse points, their features (M_Z, F), weights (M_Z,));
        cached for the current fit."""
        cache = getattr(self, "_blocks_cache", None)
        if cache is None or cache[0] is not self.gpr_:
            blocks = []
            for sp in np.unique(self.sparse_species_):
                idx = np.flatnonzero(self.sparse_species_ == sp)
                blocks.append((int(sp), idx, np.ascontiguousarray(self.sparse_features_[idx]),
                               np.ascontiguousarray(self.gpr_.weights[idx])))
            cache = (self.gpr_, blocks, {})
            self._blocks_cache = cache
        return cache[1]

    def _folded_weights(self, sp: int, xs: np.ndarray, ws: np.ndarray) -> np.ndarray | None:
        """ζ = 2: ``A = Σ_M w_M x_M x_Mᵀ`` (F, F) of species ``sp``'s sparse points, so that
        ``v_i = Σ_M w_M (x̂_i·x_M) x_M = A x̂_i`` costs F² per atom instead of 2·M·F; None when that
        is not cheaper (2·M ≤ F) or ζ ≠ 2. Cached with the blocks of :meth:`_species_blocks`."""
        if self.zeta != 2 or 2 * len(xs) <= xs.shape[1]:
            return None
        self._species_blocks()
        folded = self._blocks_cache[2]
        if sp not in folded:
            folded[sp] = np.ascontiguousarray(xs.T @ (ws[:, None] * xs))
        return folded[sp]

    def _kmm(self) -> np.ndarray:
        s = self.sparse_features_ @ self.sparse_features_.T
        s *= self.sparse_species_[:, None] == self.sparse_species_[None, :]
        return s**self.zeta

    # ------------------------------------------------------------------------------------------
    # fit
    # ------------------------------------------------------------------------------------------
    def fit(self, frames: Sequence[Atoms], targets, *, comm=None) -> "SoapEnergyModel":
        """Fit the energies (n,) eV and, when ``targets`` has them (and ``use_forces``), the forces
        (list of (n_atoms, 3) eV/Å): ``targets`` a :class:`~mdplugin.models.contract.Targets`, a
        mapping ``{"energy": ..., "forces": ...}`` or the energies alone.

        ``comm`` (an mpi4py communicator, default serial): every rank passes all frames; each
        computes features and normal-equation blocks for its share of the ``chunk_size`` blocks.
        The FPS is distributed over the ranks' features and only the chosen rows are gathered
        (the serial sparse points); the blocks' normal equations are summed in a fixed tree
        (:class:`~mdplugin.learn.parallel.TreeSum`), so every rank ends with bit for bit the serial model.
        """
        comm = resolve_comm(comm)
        timer = PhaseTimer(comm, "soap-energy")  # MDPLUGIN_FIT_TIMES=1: CPU/wall per phase to stderr
        self._check_target()
        labels = self._targets(targets)
        frames = list(frames)
        energies = np.asarray(labels.energy, dtype=float).reshape(-1)
        forces = labels.forces
        if len(frames) == 0:
            raise DataError("no training frames")
        if len(energies) != len(frames):
            raise DataError(f"{len(energies)} energies for {len(frames)} frames")
        if forces is not None and self.use_forces:
            forces = [np.asarray(f, dtype=float) for f in forces]
            if len(forces) != len(frames) or any(f.shape != (len(a), 3) for f, a in zip(forces, frames)):
                raise DataError("forces must be one (n_atoms, 3) array per frame")
        else:
            forces = None
        self.species_ = np.array(sorted({int(z) for a in frames for z in a.numbers}), dtype=int)
        self.featurizer()  # bad hypers raise here on every rank, before any collective

        # per-species baseline by ridge least squares on the composition
        sizes = [len(a) for a in frames]
        comp = composition(np.concatenate([a.numbers for a in frames]), np.repeat(np.arange(len(frames)), sizes),
                           len(frames), self.species_)
        n_atoms = comp.sum(axis=1)
        self.baseline_ = fit_baseline(comp, energies)
        resid = energies - comp @ self.baseline_
        if self.signal_std is None:
            self.signal_std_ = float(max(np.std(resid / np.sqrt(n_atoms)), 1e-3))
        else:
            self.signal_std_ = float(self.signal_std)

        # sparse points: FPS per species on the normalised features of all training atoms. Each
        # rank keeps the rows of its blocks (the distributed FPS exchanges one row per step) and
        # the chosen rows then travel as raw buffers: the serial choice on any number of ranks
        chunk = max(int(self.chunk_size), 1)
        starts = local_blocks(len(frames), chunk, comm)
        timer("setup")
        xn, offset = self._local_features(frames, starts, chunk)
        timer("features")
        zs = np.concatenate([a.numbers for a in frames]).astype(int)  # every atom, blocks in order
        zs_local = zs[offset : offset + len(xn)]
        chosen = distributed_farthest_point_sampling_groups(
            [xn[zs_local == z] for z in self.species_], self.n_sparse, comm
        )
        sparse_idx = np.concatenate([np.flatnonzero(zs == z)[c] for z, c in zip(self.species_, chosen)])
        timer("fps")
        rows = gather_rows(comm, {"x": xn} if len(xn) else {}, sparse_idx, offset, len(xn))
        self.sparse_features_ = np.ascontiguousarray(rows["x"])
        self.sparse_species_ = zs[sparse_idx]
        del xn, rows
        timer("gather sparse")

        m = len(sparse_idx)
        # one term per block (its energy and force rows), summed in a fixed tree over the blocks:
        # the same additions on any number of ranks (bit-identical model)
        n_blocks = len(range(0, len(frames), chunk))
        n_s = len(self.species_)
        a_mat, b_vec = TreeSum(comm, (m, m), n_blocks), TreeSum(comm, m, n_blocks)
        g_mat = TreeSum(comm, (n_s, m), n_blocks)  # Cᵀ Σ_E⁻¹ K_E: couples the baseline and the weights
        sigma_all = self.energy_noise * np.sqrt(n_atoms)
        for start in starts:
            chunk_frames = frames[start : start + chunk]
            sl = slice(start, start + len(chunk_frames))
            k_e, k_f = self._design_rows(chunk_frames, with_forces=forces is not None)
            sigma_e = sigma_all[sl]
            a, b = normal_equations(k_e / sigma_e[:, None], resid[sl] / sigma_e)
            g_mat.add(start // chunk, (comp[sl] / sigma_e[:, None] ** 2).T @ k_e)
            if k_f is not None:
                f = np.concatenate(forces[sl]).reshape(-1)
                a_f, b_f = normal_equations(k_f / self.force_noise, f / self.force_noise)
                a += a_f
                b += b_f
            a_mat.add(start // chunk, a)
            b_vec.add(start // chunk, b)
        timer("normal equations")
        a_mat, b_vec, g_mat = a_mat.result(), b_vec.result(), g_mat.result()
        timer("tree sums")
        # the baseline e0 is fitted jointly with the weights, unpenalised: eliminating it from the
        # energy rows (E − C e0 − K_E w) leaves the normal equations less Gᵀ H⁺ G (H = Cᵀ Σ_E⁻¹ C)
        h_plus = _baseline_inverse(comp, sigma_all)
        a_mat -= g_mat.T @ h_plus @ g_mat
        a_mat = 0.5 * (a_mat + a_mat.T)
        w_resid = comp.T @ (resid / sigma_all**2)  # Cᵀ Σ_E⁻¹ (E − C e0_start)
        b_vec -= g_mat.T @ (h_plus @ w_resid)
        self.gpr_ = solve_projected_process(a_mat, b_vec, self._kmm(), regularizer=1.0 / self.signal_std_**2)
        self.baseline_ = self.baseline_ + h_plus @ (w_resid - g_mat @ self.gpr_.weights)
        timer("solve")
        timer.report()
        self.n_train_ = len(frames)
        self.training_fingerprint_ = fingerprint(frames, energies)
        self.is_fitted_ = True
        return self

    def _local_features(self, frames: list, starts: list, chunk: int) -> tuple[np.ndarray, int]:
        """Normalised invariant features (n_local, F) of the atoms of the blocks ``starts`` (this
        rank's contiguous run of blocks of ``chunk`` frames, in order), and the global index of
        their first atom (atoms of all frames in frame order). No blocks: an empty (0, 0) array."""
        if not starts:
            return np.zeros((0, 0)), 0
        offset = int(sum(len(a) for a in frames[: starts[0]]))
        parts = [_normalise(power_spectrum(self.featurizer().compute(frames[s : s + chunk])))[0] for s in starts]
        return (parts[0] if len(parts) == 1 else np.concatenate(parts)), offset

    def _design_rows(self, frames: Sequence[Atoms], with_forces: bool):
        """Energy rows (n_frames, M) and force rows (3·n_atoms, M) of K_NM for ``frames``.

        Force rows are ``−∂/∂r_{jα} Σ_i k(x_i, x_M)`` (the model's force is ``K_F w``).
        """
        exp = self.featurizer().compute(list(frames), gradients=with_forces)
        if with_forces:
            x, dx, pairs = power_spectrum(exp, gradients=True)
        else:
            x = power_spectrum(exp)
        xn, norms = _normalise(x)
        species = exp.centre_species
        n, z = len(x), self.zeta
        offsets = np.concatenate([[0], np.cumsum([len(a) for a in frames])])
        k = np.zeros((n, len(self.sparse_species_)))
        k_f = np.zeros((n * 3, len(self.sparse_species_))) if with_forces else None
        # the kernel is zero across species: work per species block of sparse points
        for sp in np.unique(self.sparse_species_):
            idx = np.flatnonzero(self.sparse_species_ == sp)
            xs = self.sparse_features_[idx]
            rows = np.flatnonzero(species == sp)
            if len(rows) == 0:
                continue
            s_at = xn[rows] @ xs.T  # (n_sp, M_sp)
            k[rows[:, None], idx[None, :]] = s_at**z
            if not with_forces:
                continue
            local = np.zeros(n, dtype=int)
            local[rows] = np.arange(len(rows))
            sel = np.flatnonzero(species[pairs[:, 0]] == sp)
            if len(sel) == 0:
                continue
            # pairs in slices of at most ~2·10⁷ numbers of (pairs, 3, M_sp): bounded memory for
            # thousands of sparse points (a 50-box block of liquid water has ~3·10⁵ pairs)
            step = max(1, int(2e7) // (3 * len(idx)))
            block = np.zeros((n * 3, len(idx)))
            for lo in range(0, len(sel), step):
                part = sel[lo : lo + step]
                i, j = pairs[part, 0], pairs[part, 1]
                d = dx[part]  # (nb, 3, F)
                nb = len(part)
                s_p = s_at[local[i]]  # (nb, M_sp)
                dm = (d.reshape(nb * 3, -1) @ xs.T).reshape(nb, 3, -1)
                dxi = np.einsum("kaf,kf->ka", d, xn[i])  # (nb, 3)
                coef = z * s_p ** (z - 1) / norms[i][:, None]
                grad = coef[:, None, :] * (dm - s_p[:, None, :] * dxi[:, :, None])  # dk(x_i, x_M)/dr_j
                scatter = scipy.sparse.csr_matrix((np.ones(nb), (j, np.arange(nb))), shape=(n, nb))
                block -= (scatter @ grad.reshape(nb, -1)).reshape(n * 3, len(idx))
            k_f[:, idx] = block
        k_e = np.add.reduceat(k, offsets[:-1], axis=0)
        return k_e, k_f

    # ------------------------------------------------------------------------------------------
    # predict
    # ------------------------------------------------------------------------------------------
    def predict_from_features(self, features: FeatureCache | Expansion, *, return_std: bool = False,
                              forces: bool = False, stress: bool = False, precision: str = "double") -> Prediction:
        """Energies (and forces, stress, std) from an expansion made by :meth:`featurizer` (or the
        :class:`~mdplugin.features.cache.FeatureCache` around it that the models of an MD step share).

        Returns a :class:`~mdplugin.models.contract.Prediction`: ``values`` (n_frames,) eV; with
        ``forces`` or ``stress`` (the expansion must have gradients) ``forces`` (n_centres, 3) eV/Å
        in the expansion's atom order and ``stress`` (n_frames, 3, 3) eV/Å³, ``(1/V) ∂E/∂ε`` under a
        homogeneous strain ε of positions and cell (ASE's sign: positive under tension; ``nan`` for
        frames not periodic in all three directions); with ``return_std`` ``std`` (n_frames,) eV.
        ``precision`` is ignored (always double).

        The forces and the stress are back-propagated to the expansion coefficients
        (``∂E/∂c^l_i = (G_i + G_iᵀ) h^l_i``) and contracted with the expansion's pair derivatives
        in one pass, never forming the (pairs, 3, F) feature gradients.
        """
        self._check_fitted()
        features = as_feature_cache(features)
        exp = features.expansion
        forces = forces or stress
        x, inverse_norms = _power_spectrum(features)
        xn = x * inverse_norms[:, None]
        species = exp.centre_species
        frame = exp.centre_frame
        n, z = len(x), self.zeta
        one_frame = exp.n_frames == 1
        # per centre species: only the sparse points of that species (the kernel is zero across)
        # with forces: v_i = Σ_M w S^(ζ-1) x_M, and then e_i = Σ_M w S^ζ = x̂_i · v_i in one product
        v = np.zeros_like(xn) if forces else None
        e_loc = None if forces else np.zeros(n)
        k = np.zeros((n, len(self.sparse_species_))) if return_std else None
        groups = features.centre_rows()
        for sp, idx, xs, ws in self._species_blocks():
            rows = groups.get(sp)
            if rows is None:
                continue
            folded = None if return_std else self._folded_weights(sp, xs, ws)
            if folded is not None:  # ζ = 2, v_i = A x̂_i: one (F, F) product, no kernel row
                vs = xn[rows] @ folded
                if forces:
                    v[rows] = vs
                else:
                    e_loc[rows] = np.vecdot(vs, xn[rows])
                continue
            s = xn[rows] @ xs.T
            sw = s * ws if z == 2 else s ** (z - 1) * ws
            if forces:
                v[rows] = sw @ xs
            else:
                e_loc[rows] = np.einsum("im,im->i", sw, s)  # Σ_M w S^ζ
            if return_std:
                k[np.arange(n)[rows][:, None], idx[None, :]] = s**z
        if forces:
            e_loc = np.vecdot(v, xn)
        atomic = e_loc + self.baseline_[np.searchsorted(self.species_, species)]
        energy = np.array([atomic.sum()]) if one_frame else np.bincount(frame, weights=atomic, minlength=exp.n_frames)
        out = Prediction("energy", energy)
        if forces:
            g = (z * inverse_norms)[:, None] * (v - e_loc[:, None] * xn)  # dE/dx_i (n, F)
            out.forces, strain = _backward_forces(features, g)
            if stress:
                strain = 0.5 * (strain + strain.transpose(0, 2, 1))  # exact for a rotation-invariant energy
                out.stress = strain / exp.volumes[:, None, None]
        if return_std:
            if one_frame:
                k_struct = k.sum(axis=0, keepdims=True)
            else:
                onehot = (frame[None, :] == np.arange(exp.n_frames)[:, None]).astype(float)
                k_struct = onehot @ k
            # Σ over same-species atom pairs of each structure, linear in the atoms of a large one
            kxx = structure_self_kernel({0: xn}, species, frame, exp.n_frames, 0, self.zeta)[:, 0, 0]
            var = self.gpr_.variance(k_struct, kxx)
            out.std = self.signal_std_ * np.sqrt(np.maximum(var, 0.0))
        return out

    def _predict_all(self, frames: Sequence[Atoms], return_std: bool, forces: bool, stress: bool = False) -> Prediction:
        """:meth:`predict_from_features` of ``frames`` in blocks of ``chunk_size``, concatenated."""
        self._check_fitted()
        frames = list(frames)
        check_species(frames, self.species_, "energy model")
        parts = []
        for start in range(0, len(frames), self.chunk_size):
            chunk = frames[start : start + self.chunk_size]
            exp = self.featurizer().compute(chunk, gradients=forces or stress)
            parts.append(self.predict_from_features(exp, return_std=return_std, forces=forces, stress=stress))
        return Prediction("energy", np.concatenate([p.values for p in parts]),
                          std=np.concatenate([p.std for p in parts]) if return_std else None,
                          forces=np.concatenate([p.forces for p in parts]) if forces else None,
                          stress=np.concatenate([p.stress for p in parts]) if stress else None)

    def predict(self, frames: Sequence[Atoms], return_std: bool = False):
        """Energies (n,) eV, and their predictive std (n,) eV with ``return_std``."""
        out = self._predict_all(frames, return_std, forces=False)
        return (out.values, out.std) if return_std else out.values

    def predict_forces(self, frames: Sequence[Atoms]) -> list[np.ndarray]:
        """Forces, one (n_atoms, 3) array in eV/Å per frame."""
        frames = list(frames)
        f = self._predict_all(frames, return_std=False, forces=True).forces
        return np.split(f, np.cumsum([len(a) for a in frames])[:-1])

    def environment_covariance(self, frames: Sequence[Atoms]) -> tuple[np.ndarray, np.ndarray, float]:
        """Prior covariance of the atomic energies of ``frames`` under this fitted model's kernel
        (for integrated-variance-reduction selection, :mod:`mdplugin.active.selection`).

        Returns ``K`` (n_atoms, n_atoms) = ``δ(Z, Z') (x̂ · x̂')^ζ`` in units of ``signal_std_²``
        (eV²), the frame of every atom (n_atoms,) in the order of ``frames``, and the energy noise
        of one atom in the same units, ``(energy_noise / signal_std_)²``.
        """
        self._check_fitted()
        frames = list(frames)
        check_species(frames, self.species_, "energy model")
        xs, species, frame = [], [], []
        for start in range(0, len(frames), self.chunk_size):
            exp = self.featurizer().compute(frames[start : start + self.chunk_size])
            xs.append(_normalise(power_spectrum(exp))[0])
            species.append(exp.centre_species)
            frame.append(exp.centre_frame + start)
        xn, species, frame = np.concatenate(xs), np.concatenate(species), np.concatenate(frame)
        k = ((xn @ xn.T) * (species[:, None] == species[None, :])) ** self.zeta
        return k, frame, float((self.energy_noise / self.signal_std_) ** 2)

    # ------------------------------------------------------------------------------------------
    # state
    # ------------------------------------------------------------------------------------------
    def _get_state(self) -> dict[str, np.ndarray]:
        return {
            "baseline": self.baseline_,
            "signal_std": np.array(self.signal_std_),
            "sparse_features": self.sparse_features_,
            "sparse_species": self.sparse_species_,
            **self.gpr_.to_arrays(),
        }

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.baseline_ = np.asarray(arrays["baseline"], dtype=float)
        self.signal_std_ = float(arrays["signal_std"])
        self.sparse_features_ = np.ascontiguousarray(arrays["sparse_features"], dtype=float)
        self.sparse_species_ = np.asarray(arrays["sparse_species"], dtype=int)
        self.gpr_ = ProjectedProcess.from_arrays(arrays)
