"""Long-range ("lode") models: local λ-SOAP + LODE + multi-scale features, charges for charged systems.

Features (:mod:`mdplugin.features.lode`): per atom and λ = 0, 1, 2 the blocks ``one`` (λ = 0),
``local`` (λ-SOAP of the first cutoff), ``local@<c>`` (further cutoffs: a multi-scale local model),
``lode`` (the potential of the distant atoms) and ``multiscale`` (local ⊗ potential, Clebsch–Gordan).
Each block is divided by its root-mean-square norm per atom over the training set and multiplied by
a block weight; a linear model on the weighted blocks is a kernel model whose kernel is the weighted
sum of the blocks' linear kernels, so the weights are the multi-scale kernel weights.

Targets (all linear in the per-species weights, solved as a ridge regression in its dual form):

* ``dipole`` of a molecule with total charge Q (``charge`` info key, default 0), about its centre of
  mass R (mdplugin's convention; docs/formats.md):

      μ = Σ_i q_i (r_i − R) + Σ_i μ_i,   q_i = x⁰_i·w_q − (1/N) Σ_j x⁰_j·w_q + Q/N,   μ_i = X¹_i w_μ

  so Σ q_i = Q exactly, whatever the weights (atomic charges constrained to the total charge, plus
  atomic dipoles). ``dipole_origin="zero"`` reports the dipole about the coordinate origin instead,
  μ + Q R: translating a charged molecule by t then changes it by exactly Q t (the features are
  translation invariant). Neutral periodic cells: μ = Σ_i μ_i (atomic dipoles of the local, LODE
  and multi-scale λ = 1 features; no charge term, which has no meaning there); a charged cell is refused.
* ``polarizability``: α = Σ_i [x⁰_i·w₀ 𝟙/√3 + (X²_i w₂ on the symmetric traceless basis)], two fits.
* ``energy``: E = Σ_i x⁰_i·w; forces −∂E/∂r by the chain rule (:meth:`LodeModel.predict_forces`):
  ∂E/∂c of the local expansions contracted with their pair derivatives, ∂E/∂V of the potential with
  its analytic (molecules) or featomic (cells) position derivatives.

The regulariser (noise-to-signal ratio) of each fit and the block weights are chosen by the error on
every 5th training structure held out (the weights by one coordinate pass over the blocks, factors
1/4, 1, 4), then the model is refitted on all structures. ``predict(..., return_std=True)``: the
posterior standard deviation of the Bayesian linear model (noise variance from the held-out error;
the weights' posterior kept in the leading ``n_posterior`` directions of the training design, the
prior elsewhere: an upper bound).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms

from ..core.errors import ConfigError, DataError
from ..core.tensors import L2_BASIS, spherical_to_symmetric, spherical_to_vector, symmetric_to_spherical
from ..features.lode import LodeFeatures, LodeFeaturizer
from ..structures.charge import frame_charges
from ..features.lambda_soap import real_clebsch_gordan
from .base import Model, check_species, fingerprint, register
from .soap import _symmetric_unfold_cg

__all__ = ["LodeModel"]

_GRID = (1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def _centre_offsets(frames: Sequence[Atoms], centre_frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per centre (n_centres, 3): r_i − R_com of its frame, minus the frame's mean of those (d_i − d̄);
    per frame (n_frames, 3): d̄ (the mean offset from the centre of mass)."""
    d = np.concatenate([a.positions - a.get_center_of_mass() for a in frames])
    counts = np.bincount(centre_frame, minlength=len(frames))
    mean = np.zeros((len(frames), 3))
    np.add.at(mean, centre_frame, d)
    mean /= counts[:, None]
    return d - mean[centre_frame], mean


def _sum_rows(rows: np.ndarray, centre_frame: np.ndarray, n_frames: int) -> np.ndarray:
    out = np.zeros((n_frames,) + rows.shape[1:])
    np.add.at(out, centre_frame, rows)
    return out


class _Fit:
    """A dual ridge solve on per-block kernels ``K = Σ_b w_b K_b`` with hold-out choices."""

    @staticmethod
    def solve(k: np.ndarray, y: np.ndarray, reg: float) -> np.ndarray:
        scale = np.trace(k) / len(k)
        return np.linalg.solve(k + reg * scale * np.eye(len(k)), y)

    @staticmethod
    def held_out_error(kernels: dict, weights: dict, y: np.ndarray, fit_rows: np.ndarray, val_rows: np.ndarray,
                       reg: float) -> float:
        k = sum(weights[b] * kb for b, kb in kernels.items())
        a = _Fit.solve(k[np.ix_(fit_rows, fit_rows)], y[fit_rows], reg)
        return float(np.mean((k[np.ix_(val_rows, fit_rows)] @ a - y[val_rows]) ** 2))


@register("lode")
class LodeModel(Model):
    """Local + long-range (LODE) multi-scale linear model for energy, dipole and polarizability.

    Parameters
    ----------
    target : ``"dipole"`` (e·Å, about the centre of mass), ``"polarizability"`` (Å³) or ``"energy"`` (eV).
    cutoffs : local cutoffs, Å; two or more make a multi-scale local model (e.g. ``(3.0, 6.0)``).
    max_radial, max_angular, gaussian_width, smoothing_width : the local expansion (Å).
    long_range : include the LODE and multi-scale blocks (``False``: the same model, local only).
    lode_widths : softening widths of the molecular potential's radial channels, Å.
    lode_max_radial, lode_radius, lode_smearing : featomic's LODE basis and smearing for cells, Å.
    dipole_origin : ``"com"`` (centre of mass, the labels' origin) or ``"zero"`` (the coordinate
        origin: μ + Q R_com) for the predictions.
    regularizer : noise-to-signal ratio (relative to the mean kernel diagonal); ``None`` chooses it.
    block_weights : ``{block: weight}``; ``None`` chooses them (multi-scale kernel weights).
    n_posterior : directions of the weights' posterior kept for the standard deviation.
    lode_square : add the V ⊗ V block (second order in the distant atoms' field).
    lode_k_cutoff : featomic's reciprocal-space cut-off for cells, Å⁻¹ (``None``: 1.2π / smearing).
    lode_box : molecules: ``None`` for the direct sum, or a cubic box side (Å) in which featomic's
        Ewald LODE (the cells' settings) computes their potential (:class:`LodeFeaturizer`).
    """

    targets_supported = ("dipole", "polarizability", "energy")

    def __init__(self, target: str = "dipole", cutoffs: Sequence[float] = (5.0,), max_radial: int = 4,
                 max_angular: int = 2, gaussian_width: float = 0.3, smoothing_width: float = 0.5,
                 long_range: bool = True, lode_widths: Sequence[float] = (1.0, 3.0), lode_max_radial: int = 2,
                 lode_radius: float = 4.0, lode_smearing: float = 4.0, dipole_origin: str = "com",
                 regularizer: float | None = None, block_weights: dict | None = None, n_posterior: int = 256,
                 lode_square: bool = False, lode_k_cutoff: float | None = None, lode_box: float | None = None):
        self.target = target
        self.cutoffs = cutoffs
        self.max_radial = max_radial
        self.max_angular = max_angular
        self.gaussian_width = gaussian_width
        self.smoothing_width = smoothing_width
        self.long_range = long_range
        self.lode_widths = lode_widths
        self.lode_max_radial = lode_max_radial
        self.lode_radius = lode_radius
        self.lode_smearing = lode_smearing
        self.dipole_origin = dipole_origin
        self.regularizer = regularizer
        self.block_weights = block_weights
        self.n_posterior = n_posterior
        self.lode_square = lode_square
        self.lode_k_cutoff = lode_k_cutoff
        self.lode_box = lode_box

    # ------------------------------------------------------------------------------------------
    def _featurizer(self, species) -> LodeFeaturizer:
        return LodeFeaturizer(species, cutoffs=tuple(self.cutoffs), max_radial=self.max_radial,
                              max_angular=self.max_angular, gaussian_width=self.gaussian_width,
                              smoothing_width=self.smoothing_width, lode_max_angular=2,
                              lode_widths=tuple(self.lode_widths), lode_max_radial=self.lode_max_radial,
                              lode_radius=self.lode_radius, lode_smearing=self.lode_smearing,
                              long_range=bool(self.long_range), lode_square=bool(self.lode_square),
                              lode_k_cutoff=self.lode_k_cutoff, lode_box=self.lode_box)

    def _parts(self) -> list[tuple[str, int]]:
        """(part name, λ) of the fits: each part is one linear solve."""
        return {"dipole": [("dipole", -1)], "polarizability": [("trace", 0), ("aniso", 2)],
                "energy": [("energy", 0)]}[self.target_]

    def _designs(self, feats: LodeFeatures, frames: Sequence[Atoms], part: str) -> dict[str, np.ndarray]:
        """Per block name the design rows of every structure (n_frames·rows_per_frame, species·F),
        already divided by the block's scale."""
        species = list(self.species_)
        onehot = (feats.centre_species[:, None] == np.array(species)[None, :]).astype(float)  # (n_c, S)
        names = self._featurizer(species).block_names()
        out: dict[str, np.ndarray] = {}

        def per_species(rows):  # (n_c, r, F) -> (n_c, r, S·F)
            return (rows[:, :, None, :] * onehot[:, None, :, None]).reshape(rows.shape[0], rows.shape[1], -1)

        if part == "dipole" and feats.periodic:  # neutral cells: Σ_i μ_i only (no charge term, no origin)
            for i, q in enumerate(frame_charges(frames)):
                if q != 0:
                    raise DataError(f"frame {i}: a charged cell (charge {q:g}) has no periodic dipole; the 'lode' "
                                    f"dipole model of cells is for neutral ones")
            for b in names[1]:
                x1 = spherical_to_vector(np.swapaxes(feats.blocks[1][b], 1, 2)).swapaxes(1, 2)
                rows = per_species(x1 / self.scales_[f"1:{b}"])
                out[b] = _sum_rows(rows, feats.centre_frame, feats.n_frames).reshape(feats.n_frames * 3, -1)
            return out
        if part == "dipole":
            offsets, _ = _centre_offsets(frames, feats.centre_frame)
            for b in sorted(set(names[0]) | set(names[1])):
                pieces = []
                if b in feats.blocks[0]:
                    x0 = feats.blocks[0][b][:, 0, :] / self.scales_[f"0:{b}"]
                    rows = offsets[:, :, None] * x0[:, None, :]  # (n_c, 3, F0)
                    pieces.append(per_species(rows))
                if b in feats.blocks[1]:
                    x1 = spherical_to_vector(np.swapaxes(feats.blocks[1][b], 1, 2)).swapaxes(1, 2)
                    pieces.append(per_species(x1 / self.scales_[f"1:{b}"]))
                rows = np.concatenate(pieces, axis=-1)
                out[b] = _sum_rows(rows, feats.centre_frame, feats.n_frames).reshape(feats.n_frames * 3, -1)
            return out
        lam = 2 if part == "aniso" else 0
        for b in names[lam]:
            rows = per_species(feats.blocks[lam][b] / self.scales_[f"{lam}:{b}"])
            out[b] = _sum_rows(rows, feats.centre_frame, feats.n_frames).reshape(feats.n_frames * (2 * lam + 1), -1)
        return out

    def _labels(self, frames, targets, part: str) -> np.ndarray:
        if part == "dipole":
            y = np.asarray(targets.dipole, dtype=float).reshape(len(frames), 3)
            if any(np.any(a.pbc) for a in frames):
                return y.reshape(-1)
            feats_frame = np.repeat(np.arange(len(frames)), [len(a) for a in frames])
            _, mean = _centre_offsets(frames, feats_frame)
            return (y - frame_charges(frames)[:, None] * mean).reshape(-1)  # minus the known Q·d̄ part
        if part == "energy":
            return np.asarray(targets.energy, dtype=float).reshape(-1)
        l0, l2 = symmetric_to_spherical(np.asarray(targets.polarizability, dtype=float).reshape(len(frames), 3, 3))
        return (l0 if part == "trace" else l2).reshape(-1)

    # ------------------------------------------------------------------------------------------
    def fit(self, frames: Sequence[Atoms], targets, *, comm=None) -> "LodeModel":
        """Fit on molecules (or cells: polarizability, energy) and their labels (ASE units)."""
        self._check_target()
        if self.dipole_origin not in ("com", "zero"):
            raise ConfigError(f"dipole_origin must be 'com' or 'zero', not {self.dipole_origin!r}")
        frames = list(frames)
        if len(frames) < 5:
            raise DataError(f"the 'lode' model needs at least 5 training structures ({len(frames)} given)")
        targets = self._targets(targets)
        frame_charges(frames, "training frame")
        self.species_ = np.array(sorted({int(z) for a in frames for z in a.numbers}), dtype=int)
        feats = self._featurizer(self.species_).compute(frames)
        self.periodic_ = bool(feats.periodic)
        self.scales_ = {}
        counts = len(feats.centre_frame)
        for lam, blocks in feats.blocks.items():
            for b, v in blocks.items():
                self.scales_[f"{lam}:{b}"] = float(np.sqrt(np.sum(v ** 2) / counts)) or 1.0
        val_frames = np.arange(len(frames)) % 5 == 4
        self.coef_, self.post_, self.reg_, self.weights_, self.noise_ = {}, {}, {}, {}, {}
        for part, _ in self._parts():
            designs = self._designs(feats, frames, part)
            y = self._labels(frames, targets, part)
            rows_per = len(y) // len(frames)
            val = np.repeat(val_frames, rows_per)
            fit_rows, val_rows = np.nonzero(~val)[0], np.nonzero(val)[0]
            kernels = {b: a @ a.T for b, a in designs.items()}
            weights = {b: 1.0 for b in designs}
            if self.block_weights is not None:
                weights.update({b: float(w) for b, w in dict(self.block_weights).items() if b in weights})
            grid = _GRID if self.regularizer is None else (float(self.regularizer),)

            def best_reg(w):
                errs = [_Fit.held_out_error(kernels, w, y, fit_rows, val_rows, r) for r in grid]
                k = int(np.argmin(errs))
                return grid[k], errs[k]

            reg, err = best_reg(weights)
            if self.block_weights is None and len(designs) > 1:
                for b in [b for b in designs if b != "one"]:
                    for factor in (0.25, 4.0):
                        trial = dict(weights, **{b: weights[b] * factor})
                        r, e = best_reg(trial)
                        if e < err:
                            weights, reg, err = trial, r, e
            a = np.concatenate([np.sqrt(weights[b]) * designs[b] for b in designs], axis=1)
            k = a @ a.T
            dual = _Fit.solve(k, y, reg)
            self.coef_[part] = a.T @ dual
            self.reg_[part], self.weights_[part] = float(reg), {b: float(w) for b, w in weights.items()}
            # Bayesian reading: w ~ N(0, s²/ρ), ρ = reg·mean diag(K); noise s² from the held-out error
            self.noise_[part] = float(err)
            rho = reg * np.trace(k) / len(k)
            _, s, vt = np.linalg.svd(a, full_matrices=False)
            keep = min(int(self.n_posterior), len(s))
            self.post_[part] = (vt[:keep].astype(np.float32), (s[:keep] ** 2).astype(float), float(rho))
        self.training_fingerprint_ = fingerprint(frames)
        self.n_train_ = len(frames)
        self.is_fitted_ = True
        return self

    # ------------------------------------------------------------------------------------------
    def _predict_part(self, feats, frames, part, return_std):
        designs = self._designs(feats, frames, part)
        w = self.weights_[part]
        a = np.concatenate([np.sqrt(w[b]) * designs[b] for b in w], axis=1)
        mean = a @ self.coef_[part]
        if not return_std:
            return mean, None
        v, s2, rho = self.post_[part]
        proj = (a @ v.T.astype(float)) ** 2
        var = proj @ (1.0 / (s2 + rho)) + (np.sum(a ** 2, axis=1) - proj.sum(axis=1)) / rho
        return mean, np.sqrt(self.noise_[part] * np.maximum(var, 0.0))

    def predict_charges(self, frames: Sequence[Atoms]) -> list[np.ndarray]:
        """Atomic charges (n_atoms,) e of each molecule (a dipole model): they sum to its charge."""
        self._check_fitted()
        if self.target_ != "dipole" or self.periodic_:
            raise ConfigError("atomic charges come from a 'lode' dipole model of molecules")
        frames = list(frames)
        check_species(frames, self.species_, "lode model")
        feats = self._featurizer(self.species_).compute(frames)
        species = list(self.species_)
        w = self.weights_["dipole"]
        coef, start, q = self.coef_["dipole"], 0, np.zeros(len(feats.centre_frame))
        slot = np.searchsorted(species, feats.centre_species)
        for b in w:  # the coefficient layout of _designs: per block [λ=0 (S·F0)] [λ=1 (S·F1)]
            f0 = feats.blocks[0][b].shape[-1] if b in feats.blocks[0] else 0
            f1 = feats.blocks[1][b].shape[-1] if b in feats.blocks[1] else 0
            if f0:
                wq = coef[start:start + len(species) * f0].reshape(len(species), f0) * np.sqrt(w[b])
                x0 = feats.blocks[0][b][:, 0, :] / self.scales_[f"0:{b}"]
                q += np.einsum("nf,nf->n", x0, wq[slot])
            start += len(species) * (f0 + f1)
        counts = np.bincount(feats.centre_frame, minlength=len(frames))
        mean = _sum_rows(q, feats.centre_frame, len(frames)) / counts
        q = q - mean[feats.centre_frame] + (frame_charges(frames) / counts)[feats.centre_frame]
        return np.split(q, np.cumsum(counts)[:-1])

    def _energy_gradients(self, feats: LodeFeatures) -> dict[str, np.ndarray]:
        """∂E/∂x⁰_b (n_centres, F_b) of every λ = 0 block b of the energy model (eV per feature unit)."""
        species = list(self.species_)
        slot = np.searchsorted(species, feats.centre_species)
        coef, start, out = self.coef_["energy"], 0, {}
        for b, w in self.weights_["energy"].items():
            f = feats.blocks[0][b].shape[-1]
            per_species = coef[start:start + len(species) * f].reshape(len(species), f)
            out[b] = per_species[slot] * np.sqrt(w) / self.scales_[f"0:{b}"]
            start += len(species) * f
        return out

    def predict_forces(self, frames: Sequence[Atoms]) -> list[np.ndarray]:
        """Forces −∂E/∂r (n_atoms, 3) eV/Å of each structure (an energy model), by the chain rule:
        ∂E/∂x of each block → ∂E/∂c (local expansions: the power spectrum's and the multi-scale
        product's derivatives) and ∂E/∂V (potential: LODE and multi-scale blocks), contracted with
        the expansions' pair derivatives and the potential's position derivatives."""
        self._check_fitted()
        if self.target_ != "energy":
            raise ConfigError(f"a {self.target_!r} model ('lode') gives no forces")
        frames = [frames] if isinstance(frames, Atoms) else list(frames)
        check_species(frames, self.species_, "lode model")
        featurizer = self._featurizer(self.species_)
        feats = featurizer.compute(frames, gradients=True)
        g = self._energy_gradients(feats)
        forces = np.zeros((len(feats.centre_frame), 3))
        names = ["local"] + [f"local@{c:g}" for c in featurizer.cutoffs[1:]]
        de_dc = []
        for name, exp in zip(names, feats.expansions):
            values = [np.asarray(v) for v in exp.values]
            n, n_prop = len(values[0]), values[0].shape[2]
            index, factor = _symmetric_unfold_cg(n_prop, len(values))
            sym = (g[name][:, index] * factor).reshape(n, len(values), n_prop, n_prop)  # C^{ll0}(G + Gᵀ)
            de_dc.append([np.matmul(c, sym[:, l]) for l, c in enumerate(values)])
        if feats.potential is not None:
            pot, local = feats.potential, [np.asarray(v) for v in feats.expansions[0].values]
            de_dv = [np.zeros_like(v) for v in pot]
            de_dv[0] += g["lode"][:, None, :]
            start = 0  # multiscale λ = 0: Σ_l C^{ll0} c^l ⊗ V^l, blocks l = 0.. in couple()'s order
            for l in range(min(len(local), len(pot))):
                p, q = local[l].shape[2], pot[l].shape[2]
                gl = g["multiscale"][:, start:start + p * q].reshape(-1, p, q)
                cg = real_clebsch_gordan(l, l, 0)[:, :, 0]
                de_dc[0][l] = de_dc[0][l] + np.einsum("ab,npq,nbq->nap", cg, gl, pot[l])
                de_dv[l] += np.einsum("ab,npq,nap->nbq", cg, gl, local[l])
                start += p * q
            if "lode2" in g:  # V ⊗ V, l1 = l2 = l, both factors
                start = 0
                for l in range(len(pot)):
                    q = pot[l].shape[2]
                    gl = g["lode2"][:, start:start + q * q].reshape(-1, q, q)
                    cg = real_clebsch_gordan(l, l, 0)[:, :, 0]
                    de_dv[l] += np.einsum("ab,npq,nbq->nap", cg, gl, pot[l]) + np.einsum("ab,npq,nap->nbq", cg, gl, pot[l])
                    start += q * q
            forces += featurizer.potential_forces(frames, de_dv)
        for exp, grads in zip(feats.expansions, de_dc):
            forces += exp.pair_gradients.forces(grads)
        return np.split(forces, np.cumsum([len(a) for a in frames])[:-1])

    def predict(self, frames: Sequence[Atoms], return_std: bool = False):
        """Predictions (n,) eV, (n, 3) e·Å or (n, 3, 3) Å³ (and their standard deviations)."""
        self._check_fitted()
        frames = [frames] if isinstance(frames, Atoms) else list(frames)
        check_species(frames, self.species_, "lode model")
        charges = frame_charges(frames)
        feats = self._featurizer(self.species_).compute(frames)
        if feats.periodic != self.periodic_:
            kind = ("periodic cells", "molecules") if self.periodic_ else ("molecules", "periodic cells")
            raise DataError(f"this 'lode' model was fitted on {kind[0]}; it cannot predict {kind[1]}")
        n = len(frames)
        if self.target_ == "dipole" and feats.periodic:
            mean, std = self._predict_part(feats, frames, "dipole", return_std)
            values, std = mean.reshape(n, 3), None if std is None else std.reshape(n, 3)
        elif self.target_ == "dipole":
            mean, std = self._predict_part(feats, frames, "dipole", return_std)
            _, dbar = _centre_offsets(frames, feats.centre_frame)
            values = mean.reshape(n, 3) + charges[:, None] * dbar
            if self.dipole_origin == "zero":
                values = values + charges[:, None] * np.array([a.get_center_of_mass() for a in frames])
            std = None if std is None else std.reshape(n, 3)
        elif self.target_ == "energy":
            values, std = self._predict_part(feats, frames, "energy", return_std)
        else:
            t, st = self._predict_part(feats, frames, "trace", return_std)
            an, sa = self._predict_part(feats, frames, "aniso", return_std)
            values = spherical_to_symmetric(t.reshape(n, 1), an.reshape(n, 5))
            if return_std:  # independent parts: variances add through the (orthonormal) bases
                var = (st.reshape(n, 1) ** 2) @ (np.eye(3).reshape(1, 9) ** 2 / 3.0) \
                    + (sa.reshape(n, 5) ** 2) @ (L2_BASIS.reshape(5, 9) ** 2)
                std = np.sqrt(var).reshape(n, 3, 3)
        return (values, std) if return_std else values

    # ------------------------------------------------------------------------------------------
    def _get_state(self) -> dict[str, np.ndarray]:
        state = {"periodic": np.array(self.periodic_),
                 "scale_names": np.array(list(self.scales_)), "scale_values": np.array(list(self.scales_.values()))}
        for part, _ in self._parts():
            v, s2, rho = self.post_[part]
            names = list(self.weights_[part])
            state.update({f"{part}_coef": self.coef_[part], f"{part}_post_v": v, f"{part}_post_s2": s2,
                          f"{part}_scalars": np.array([rho, self.reg_[part], self.noise_[part]]),
                          f"{part}_blocks": np.array(names),
                          f"{part}_weights": np.array([self.weights_[part][b] for b in names])})
        return state

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.periodic_ = bool(arrays["periodic"])
        self.scales_ = {str(k): float(v) for k, v in zip(arrays["scale_names"], arrays["scale_values"])}
        self.coef_, self.post_, self.reg_, self.weights_, self.noise_ = {}, {}, {}, {}, {}
        for part, _ in self._parts():
            rho, reg, noise = (float(x) for x in arrays[f"{part}_scalars"])
            self.coef_[part] = np.asarray(arrays[f"{part}_coef"], float)
            self.post_[part] = (np.asarray(arrays[f"{part}_post_v"], np.float32), np.asarray(arrays[f"{part}_post_s2"], float), rho)
            self.reg_[part], self.noise_[part] = reg, noise
            self.weights_[part] = {str(b): float(w) for b, w in zip(arrays[f"{part}_blocks"], arrays[f"{part}_weights"])}
