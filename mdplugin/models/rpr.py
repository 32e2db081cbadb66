"""RPR, rotate–predict–rotate (Martinka et al., JCP 161, 2024): dipoles and polarizabilities.

Each structure is rotated to the principal axes of its inertia tensor
(:mod:`mdplugin.features.inertia`), the vector/tensor components are learned there with a
kernel regressor on the atoms' body coordinates (their coordinates along the principal axes),
and the prediction is rotated back. RPR assumes **one molecule with a fixed atom order** (as
along an MD trajectory): every structure must have the atomic numbers of the training
structures in the same order.

Why the naive version is poor, and what this one does
-----------------------------------------------------
The eigenvectors of the inertia tensor have arbitrary signs, and the order (and the directions)
of two of them are ill-defined when their moments are (nearly) equal: in anti
1,2-dichloroethane the two large moments differ by 3 % and cross all the time at 300–600 K. A
fixed sign rule (third moments) and a sorted order make the body components of the target jump
inside an MD trajectory (``frame="naive"``, kept for comparison).

The default ``frame="axial"`` uses only what is well defined: **one** principal axis, the one
with the largest relative gap to its neighbour (``λ1`` for prolate, ``λ3`` for oblate tops), and
a kernel that is *exactly* equivariant under the whole residual ambiguity group of that axis —
every rotation about it, the reflections through planes containing it, and its sign flip
(the group O(1)×O(2)), analytic for the Gaussian kernel on body coordinates
(:mod:`mdplugin.learn.axial_kernel` has the formula and the code). Consequences:

* predictions do not depend on the eigenvector signs nor on the directions of the two other axes,
  so they are exactly covariant under rotations *and* reflections, and continuous wherever the
  chosen axis is defined — including through a crossing of the two other moments;
* near ``g12 ≈ g23`` (asymmetric tops, e.g. water) the two candidate axes are blended smoothly:
  ``K = Σ_c √(p_c p'_c) K_c`` with a C¹ partition of unity ``p_1 + p_3 = 1`` in
  ``t = g12/(g12 + g23)`` (both axes are well defined there);
* optionally (``full_gap=(lo, hi)``) a third component uses all three axes, averaged over their
  8 sign choices only, with weight ``smoothstep(min(g12, g23))``; it is off by default because
  the one-axis kernel was more accurate on 1,2-dichloroethane and water (its in-plane axes turn
  fast wherever ``g23`` is small, which hurts fixed axes);
* the axes of a structure are **ill-defined** only when all three moments are nearly equal
  (spherical top): ``axes_quality = max(g12, g23) < degenerate_tol``; ``predict`` then warns
  (:class:`IllDefinedAxesWarning`) and :meth:`RPRModel.axes_quality` gives the number per structure.

The model is a Gaussian process (``regressor="gpr"``, default) with that matrix-valued kernel,
normalised to unit prior variance of the λ = 0 part; the signal variance is the maximum-
likelihood value for the given regulariser. ``predict(return_std=True)`` rotates the posterior
covariance of the body components back (``D Σ Dᵀ``) and returns the standard deviation of every
Cartesian component. ``regressor="krr"`` is the same mean without the variance. Dipoles are
learned as Cartesian vectors, polarizabilities as their λ = 0 (trace) and λ = 2 parts
(:mod:`mdplugin.core.tensors`); the mean trace is subtracted. When one axis serves every training
structure (all prolate, or all oblate), the kernel is block-diagonal in the |m| = 0, 1, 2
subspaces of rotations about that axis and the GP is solved block by block, exactly (7× cheaper
for the polarizability).

Any scikit-learn regressor can be used in memory (``regressor=<estimator>``): the training set is
symmetry-completed over the 8 sign choices of the sorted principal axes (features: flattened
body coordinates) and predictions are averaged over the same 8 sign choices, which makes them
exactly covariant but only approximately continuous near degenerate moments. Such a model
cannot be saved (model files never pickle).

The hyper-parameter ``frame`` (``"axial"`` or ``"naive"``) keeps its name: model files store it.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from scipy.linalg import cho_solve, cholesky, solve_triangular

from ..core.errors import ConfigError, DataError, ModelFileError
from ..core.tensors import L0_BASIS, L2_BASIS, spherical_to_symmetric, symmetric_to_spherical
from ..features.inertia import InertiaFeatures, PrincipalAxes, refuse_cells, stack_positions
from ..learn.axial_kernel import (
    CHANNEL_DIMS,
    SIGN_CHOICES,
    AxialInputs,
    block_bases,
    kernel_block,
    representation,
    self_kernels,
)
from .base import Model, fingerprint, register
from .contract import Prediction

__all__ = ["RPRModel", "IllDefinedAxesWarning", "IllDefinedFrameWarning"]


class IllDefinedAxesWarning(UserWarning):
    """Some structures have (nearly) equal moments of inertia: no principal axis is well defined."""


#: the former name of :class:`IllDefinedAxesWarning`
IllDefinedFrameWarning = IllDefinedAxesWarning


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------


@register("rpr")
class RPRModel(Model):
    """Rotate–predict–rotate model of dipoles (n, 3) e·Å or polarizabilities (n, 3, 3) Å³.

    Parameters
    ----------
    target : ``"dipole"`` or ``"polarizability"``.
    regressor : ``"gpr"`` (Gaussian process, default, gives an uncertainty), ``"krr"`` (same
        mean, no uncertainty), or a scikit-learn regressor instance (in memory only).
    frame : ``"axial"`` (default, see the module docstring) or ``"naive"`` (sorted axes,
        third-moment signs, Gaussian kernel ridge on inverse distances; for comparison).
    length_scale : Gaussian length scale, Å per atom: the kernel is
        ``exp(−|x − x'|² / (2 n_atoms ℓ²))`` on body coordinates (axial), or
        ``exp(−|d − d'|² / (2 ℓ²))`` on inverse distances in 1/Å (naive; ``None`` = median
        heuristic).
    regularizer : noise-to-signal variance ratio λ added to the kernel diagonal.
    blend : ``(lo, hi)`` range of ``t = g12/(g12+g23)`` over which the two candidate axes are blended.
    full_gap : ``(lo, hi)`` range of ``min(g12, g23)`` over which the three-axis component is
        switched on, or ``None`` (default: one-axis kernel only).
    mass_power : weight the body coordinates in the kernel by ``(m_a / mean m)^p``.
    degenerate_tol : structures with ``max(g12, g23)`` below this have ill-defined axes (reported).
    """

    targets_supported = ("dipole", "polarizability")

    def __init__(self, target: str = "dipole", regressor="gpr", frame: str = "axial",
                 length_scale: float | None = 0.9, regularizer: float = 1e-6,
                 blend: tuple[float, float] = (0.35, 0.65), full_gap: tuple[float, float] | None = None,
                 mass_power: float = 0.0, degenerate_tol: float = 1e-2):
        self.target = target
        self.regressor = regressor
        self.frame = frame
        self.length_scale = length_scale
        self.regularizer = regularizer
        self.blend = blend
        self.full_gap = full_gap
        self.mass_power = mass_power
        self.degenerate_tol = degenerate_tol

    # --- helpers -------------------------------------------------------------------------------
    def _channels(self) -> list[str]:
        return ["vector"] if self.target == "dipole" else ["l0", "l2"]

    def _check_options(self) -> None:
        self._check_target()
        if self.frame not in ("axial", "naive"):
            raise ConfigError(f"rpr: unknown frame {self.frame!r} (axial or naive)")
        if isinstance(self.regressor, str) and self.regressor not in ("gpr", "krr"):
            raise ConfigError(f"rpr: unknown regressor {self.regressor!r} (gpr, krr or a scikit-learn estimator)")
        if not isinstance(self.regressor, str) and not hasattr(self.regressor, "fit"):
            raise ConfigError("rpr: regressor must be 'gpr', 'krr' or a scikit-learn estimator")
        if self.frame == "axial" and not (self.length_scale is not None and float(self.length_scale) > 0):
            raise ConfigError(f"rpr: length_scale must be > 0, got {self.length_scale}")
        if not (self.regularizer > 0):
            raise ConfigError(f"rpr: regularizer must be > 0, got {self.regularizer}")
        lo, hi = self.blend
        if not 0.0 <= lo < hi <= 1.0:
            raise ConfigError(f"rpr: blend must satisfy 0 <= lo < hi <= 1, got {self.blend}")

    @property
    def _builtin(self) -> bool:
        return isinstance(self.regressor, str)

    def _positions(self, frames: Sequence[Atoms], training: bool) -> np.ndarray:
        if len(frames) == 0:
            raise DataError("rpr: no frames given")
        numbers = np.asarray(frames[0].numbers) if training else self.numbers_
        for i, atoms in enumerate(frames):
            refuse_cells(atoms, i, "training frame" if training else "frame")
            if len(atoms) != len(numbers) or not np.array_equal(atoms.numbers, numbers):
                want = "".join(chemical_symbols[z] for z in numbers)
                got = "".join(chemical_symbols[z] for z in atoms.numbers)
                where = "training frame" if training else "frame"
                raise DataError(
                    f"{where} {i}: atoms {got} differ in number or order from the RPR model's molecule {want} "
                    "(RPR needs one molecule with a fixed atom order)"
                )
        if len(numbers) < 2:
            raise DataError("rpr: a molecule needs at least two atoms")
        return stack_positions(frames)[0]

    def _prepare(self, positions: np.ndarray | InertiaFeatures) -> AxialInputs:
        """Kernel inputs of stacked positions (n, n_atoms, 3) Å of the model's molecule, or of
        their inertia features (the calculator's, :meth:`featurizer`)."""
        if not isinstance(positions, InertiaFeatures):
            positions = InertiaFeatures.of(positions, self.numbers_)
        return AxialInputs(positions, *self.blend, full_gap=self.full_gap, naive=self.frame == "naive",
                       mass_power=0.0 if self.frame == "naive" else self.mass_power)

    def _targets_to_channels(self, y: np.ndarray, fr: AxialInputs) -> dict[str, np.ndarray]:
        """Lab targets -> channel arrays (n, d) of their body components."""
        if self.target == "dipole":
            return {"vector": np.einsum("nij,ni->nj", fr.axes, y)}
        body = np.einsum("nia,nij,njb->nab", fr.axes, y, fr.axes)
        l0, l2 = symmetric_to_spherical(body)
        return {"l0": l0, "l2": l2}

    def _channels_to_targets(self, ch: dict[str, np.ndarray], fr: AxialInputs) -> np.ndarray:
        """Channel arrays of body components -> lab targets."""
        if self.target == "dipole":
            return np.einsum("nij,nj->ni", fr.axes, ch["vector"])
        body = spherical_to_symmetric(ch["l0"], ch["l2"])
        return np.einsum("nia,nab,njb->nij", fr.axes, body, fr.axes)

    # --- fit ---------------------------------------------------------------------------------
    def fit(self, frames: Sequence[Atoms], targets, *, comm=None) -> "RPRModel":
        """Fit on frames of one molecule and their lab dipoles (n, 3) or polarizabilities
        (n, 3, 3): ``targets`` a :class:`~mdplugin.models.contract.Targets`, a mapping with the
        target's key, or the array itself. ``comm`` is accepted for the common contract; the fit
        (seconds) runs whole on every rank, with the same result on each."""
        self._check_options()
        y = np.asarray(getattr(self._targets(targets), self.target), dtype=float)
        want = (3,) if self.target == "dipole" else (3, 3)
        if y.shape != (len(frames),) + want:
            raise DataError(f"rpr: {self.target} targets must have shape (n, {', '.join(map(str, want))}), got {y.shape}")
        if not np.all(np.isfinite(y)):
            raise DataError(f"rpr: {self.target} targets contain NaN or inf")
        if self.target == "polarizability":
            y = 0.5 * (y + y.transpose(0, 2, 1))
        self.numbers_ = np.asarray(frames[0].numbers, dtype=int) if len(frames) else np.zeros(0, int)
        positions = self._positions(frames, training=True)
        self.species_ = np.unique(self.numbers_)
        fr = self._prepare(positions)
        if np.any(fr.quality < self.degenerate_tol):
            bad = np.flatnonzero(fr.quality < self.degenerate_tol)
            warnings.warn(f"rpr: {len(bad)} training frame(s) have ill-defined principal axes "
                          f"(first: {bad[:5].tolist()})", IllDefinedAxesWarning, stacklevel=2)
        targets = self._targets_to_channels(y, fr)
        self.mean_l0_ = float(targets["l0"].mean()) if "l0" in targets else 0.0
        if "l0" in targets:
            targets["l0"] = targets["l0"] - self.mean_l0_
        self.train_positions_ = positions
        if not self._builtin:
            self._fit_estimator(fr, targets)
        elif self.frame == "naive":
            self._fit_naive(fr, targets)
        else:
            self._fit_axial(fr, targets)
        self.training_fingerprint_ = fingerprint(frames, y)
        self.n_train_ = len(frames)
        self.is_fitted_ = True
        return self

    def _fit_axial(self, fr: AxialInputs, targets: dict[str, np.ndarray]) -> None:
        n_atoms = fr.body.shape[1]
        self.inv_l2_ = 1.0 / (n_atoms * float(self.length_scale) ** 2)
        self._cache = {"inputs": fr}
        self.weights_, self.signal_var_ = {}, {}
        factors = self._train_factors()
        for kind in self._channels():
            y = targets[kind]
            weights = np.zeros_like(y)
            fit = 0.0
            for u, factor in factors[kind]:
                yb = y @ u  # (n, d_b) in the block's basis
                alpha = cho_solve((factor, True), yb.ravel(), check_finite=False).reshape(yb.shape)
                weights += alpha @ u.T
                fit += float(yb.ravel() @ alpha.ravel())
            self.weights_[kind] = weights
            self.signal_var_[kind] = max(fit / y.size, np.finfo(float).tiny)

    def _kappa(self, fr: AxialInputs) -> dict:
        """The kernel's normalising self-kernels κ_c (n,) of ``fr`` per component."""
        return self_kernels(fr, self.inv_l2_)

    def _train_inputs(self) -> AxialInputs:
        if "inputs" not in self._cache:
            self._cache["inputs"] = self._prepare(self.train_positions_)
        return self._cache["inputs"]

    def _train_kappa(self) -> dict:
        if "kappa" not in self._cache:
            self._cache["kappa"] = self._kappa(self._train_inputs())
        return self._cache["kappa"]

    def _blocks(self, kind: str) -> list[np.ndarray]:
        """Bases of the independent blocks of the channel's GP on the training structures
        (:func:`~mdplugin.learn.axial_kernel.block_bases`)."""
        return block_bases(self._train_inputs(), kind)

    def _train_factors(self) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
        """Per channel, a list of (basis (d, d_b), Cholesky factor (n d_b, n d_b) of K_b + λ I) on the
        training set (cached; rebuilt after loading a model file)."""
        if "factors" not in self._cache:
            fr = self._train_inputs()
            n = len(fr.body)
            idx = np.arange(n)
            kap = self._train_kappa()
            kinds = self._channels()
            bases = {kind: self._blocks(kind) for kind in kinds}
            ks = {(kind, b): np.empty((n, u.shape[1], n, u.shape[1]))
                  for kind in kinds for b, u in enumerate(bases[kind])}
            for start in range(0, n, 256):
                rows = idx[start:start + 256]
                blocks = kernel_block(fr, rows, fr, idx, kinds, self.inv_l2_, kap, kap, bases=bases)
                for kind in kinds:
                    for b, u in enumerate(bases[kind]):
                        ks[kind, b][rows] = blocks[kind, b].transpose(0, 2, 1, 3)
                del blocks
            factors = {kind: [] for kind in kinds}
            for kind in kinds:
                for b, u in enumerate(bases[kind]):
                    size = n * u.shape[1]
                    k = ks.pop((kind, b)).reshape(size, size)
                    k[np.diag_indices_from(k)] += self.regularizer
                    factor = cholesky(k, lower=True, overwrite_a=True, check_finite=False)
                    factors[kind].append((u, np.asfortranarray(factor)))  # LAPACK order: no copy per solve
            self._cache["factors"] = factors
        return self._cache["factors"]

    # --- naive ---------------------------------------------------------------------------------
    @staticmethod
    def _inverse_distances(body: np.ndarray) -> np.ndarray:
        i, j = np.triu_indices(body.shape[1], k=1)
        return 1.0 / np.linalg.norm(body[:, i] - body[:, j], axis=-1)

    def _naive_kernel(self, da: np.ndarray, db: np.ndarray) -> np.ndarray:
        sq = (da**2).sum(1)[:, None] + (db**2).sum(1)[None, :] - 2.0 * da @ db.T
        return np.exp(-0.5 * np.maximum(sq, 0.0) / self.naive_sigma_**2)

    def _fit_naive(self, fr: AxialInputs, targets: dict[str, np.ndarray]) -> None:
        desc = self._inverse_distances(fr.body)
        if self.length_scale is None:
            sub = desc[:: max(1, len(desc) // 300)]
            sq = ((sub[:, None] - sub[None]) ** 2).sum(-1)
            self.naive_sigma_ = float(np.sqrt(np.median(sq[sq > 0]))) if np.any(sq > 0) else 1.0
        else:
            self.naive_sigma_ = float(self.length_scale)
        k = self._naive_kernel(desc, desc)
        k[np.diag_indices_from(k)] += self.regularizer
        factor = cholesky(k, lower=True, check_finite=False)
        self._cache = {"naive_factor": factor}
        self.weights_, self.signal_var_ = {}, {}
        for kind in self._channels():
            alpha = cho_solve((factor, True), targets[kind], check_finite=False)
            self.weights_[kind] = alpha
            self.signal_var_[kind] = np.maximum(np.einsum("nd,nd->d", targets[kind], alpha) / len(alpha),
                                                np.finfo(float).tiny)

    # --- any scikit-learn estimator --------------------------------------------------------------
    def _flip_channels(self, ch: dict[str, np.ndarray], signs: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v @ representation(np.diag(signs), k).T for k, v in ch.items()}

    def _fit_estimator(self, fr: AxialInputs, targets: dict[str, np.ndarray]) -> None:
        from sklearn.base import clone

        x_aug, y_aug = [], []
        for signs in SIGN_CHOICES:
            x_aug.append((fr.body * signs).reshape(len(fr.body), -1))
            flipped = self._flip_channels(targets, signs)
            y_aug.append(np.concatenate([flipped[k] for k in self._channels()], axis=1))
        self.estimator_ = clone(self.regressor).fit(np.concatenate(x_aug), np.concatenate(y_aug))

    def _predict_estimator(self, fr: AxialInputs, return_std: bool):
        sizes = [CHANNEL_DIMS[k] for k in self._channels()]
        total = {k: 0.0 for k in self._channels()}
        var_total = {k: 0.0 for k in self._channels()}
        for signs in SIGN_CHOICES:
            x = (fr.body * signs).reshape(len(fr.body), -1)
            if return_std:
                try:
                    out, std = self.estimator_.predict(x, return_std=True)
                except TypeError:
                    raise ConfigError(f"rpr: {type(self.regressor).__name__} gives no uncertainty (return_std)") from None
                std = np.asarray(std).reshape(len(x), -1)
            else:
                out = self.estimator_.predict(x)
            out = np.asarray(out).reshape(len(x), -1)
            parts = np.split(out, np.cumsum(sizes)[:-1], axis=1)
            ch = self._flip_channels(dict(zip(self._channels(), parts)), signs)
            for k in ch:
                total[k] = total[k] + ch[k] / len(SIGN_CHOICES)
            if return_std:
                std = np.broadcast_to(std, out.shape) if std.shape[1] == 1 else std
                sparts = np.split(std, np.cumsum(sizes)[:-1], axis=1)
                for k, s in zip(self._channels(), sparts):
                    rep = representation(np.diag(signs), k)
                    cov = np.einsum("ij,nj,kj->nik", rep, s**2, rep)
                    var_total[k] = var_total[k] + cov / len(SIGN_CHOICES)
        return total, (var_total if return_std else None)

    # --- predict -------------------------------------------------------------------------------
    def axes_quality(self, frames: Sequence[Atoms]) -> np.ndarray:
        """``max(g12, g23)`` per structure (n,): relative gap of the best-defined principal axis.

        Below ``degenerate_tol`` the structure's axes are ill-defined (all moments nearly equal).
        """
        self._check_fitted()
        return self._prepare(self._positions(frames, training=False)).quality

    def frame_quality(self, frames: Sequence[Atoms]) -> np.ndarray:
        """The former name of :meth:`axes_quality`."""
        return self.axes_quality(frames)

    def featurizer(self) -> PrincipalAxes:
        """The principal axes of the model's molecule (the dipole and polarizability RPR
        models of one molecule share them in an MD step)."""
        self._check_fitted()
        return PrincipalAxes(self.numbers_)

    def predict_from_features(self, features: InertiaFeatures, *, return_std: bool = False, forces: bool = False,
                              stress: bool = False, precision: str = "double") -> Prediction:
        """:meth:`predict` from the principal axes made by :meth:`featurizer`, as a
        :class:`~mdplugin.models.contract.Prediction` (``forces``/``stress``: a :class:`ConfigError`;
        ``precision`` is ignored, always double)."""
        self._check_fitted()
        self._check_asked(forces, stress)
        y, std = self._predict_inputs(self._prepare(features), return_std)
        return Prediction(self.target, y, std)

    def predict(self, frames: Sequence[Atoms], return_std: bool = False, return_quality: bool = False):
        """Lab predictions (n, 3) e·Å or (n, 3, 3) Å³; with ``return_std`` also the standard
        deviation of every Cartesian component (same shape); with ``return_quality`` also
        :meth:`axes_quality` (n,). Warns :class:`IllDefinedAxesWarning` for structures with ill-defined
        axes.
        """
        self._check_fitted()
        fr = self._prepare(self._positions(frames, training=False))
        y, std = self._predict_inputs(fr, return_std)
        out = [y] + ([std] if return_std else []) + ([fr.quality] if return_quality else [])
        return out[0] if len(out) == 1 else tuple(out)

    def _predict_inputs(self, fr: AxialInputs, return_std: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Lab predictions of prepared structures, and the std (None without ``return_std``)."""
        if return_std and self.regressor == "krr":
            raise ConfigError("rpr: regressor 'krr' gives no uncertainty; use regressor 'gpr'")
        bad = np.flatnonzero(fr.quality < self.degenerate_tol)
        if len(bad):
            warnings.warn(f"rpr: {len(bad)} frame(s) have ill-defined principal axes (nearly equal moments; "
                          f"first: {bad[:5].tolist()})", IllDefinedAxesWarning, stacklevel=3)
        if not self._builtin:
            ch, cov = self._predict_estimator(fr, return_std)
        elif self.frame == "naive":
            ch, cov = self._predict_naive(fr, return_std)
        else:
            ch, cov = self._predict_axial(fr, return_std)
        if "l0" in ch:
            ch["l0"] = ch["l0"] + self.mean_l0_
        return self._channels_to_targets(ch, fr), (self._cartesian_std(cov, fr) if return_std else None)

    def sample_predictions(self, frames: Sequence[Atoms], n_samples: int, seed=None, return_mean: bool = False,
                           tol: float = 1e-2, max_rows: int = 3000):
        """Correlated draws of the GP posterior: ``n_samples`` plausible models, each evaluated on every
        frame: (n_samples, n, 3) dipoles or (n_samples, n, 3, 3) polarizabilities (with
        ``return_mean`` also the mean, ``predict(frames)``).

        RPR is a full GP on the training frames with no explicit kernel features, so a draw is made
        where its uncertainty is built, in the body frame, with the exact posterior covariance
        ``C(x, x') = s² [K(x, x') − K(x, X)(K + λI)⁻¹ K(X, x')]`` between frames: anchors are the
        rows (frame, component) of largest remaining posterior variance among up to ``max_rows``
        candidate rows (all frames, or frames evenly spread in time), chosen by a pivoted Cholesky
        factorisation (:func:`~mdplugin.learn.posterior.pivoted_cholesky`) until no candidate has
        more than ``tol²`` of the largest posterior variance left; the posterior is drawn jointly on
        the anchors and extended to every frame by its conditional mean (kriging with ``C``).
        Every draw is then rotated back with its frame's axes. The draws' covariance is the
        posterior's up to that remainder (at most ``tol²`` of the largest variance on the
        candidates; frames between candidates are as close as a trajectory's neighbours are).
        Draws are of the latent function: ``predict``'s variance also holds the label noise
        ``λ s²`` (√λ ≈ 0.1 % of ``s`` by default), which the draws leave out.

        Only the default GP (``regressor="gpr"``, ``frame="axial"``) can draw samples; other
        settings raise a one-line :class:`ConfigError`."""
        from ..learn.posterior import check_n_samples, pivoted_cholesky

        self.check_sampling()
        n_samples = check_n_samples(n_samples)
        fr = self._prepare(self._positions(frames, training=False))
        bad = np.flatnonzero(fr.quality < self.degenerate_tol)
        if len(bad):
            warnings.warn(f"rpr: {len(bad)} frame(s) have ill-defined principal axes (nearly equal moments; "
                          f"first: {bad[:5].tolist()})", IllDefinedAxesWarning, stacklevel=2)
        rng = np.random.default_rng(seed)
        kinds = self._channels()
        n = len(fr.body)
        kap = self._kappa(fr)
        width = max(CHANNEL_DIMS[k] for k in kinds)
        candidates = np.arange(n) if n * width <= max_rows else np.unique(
            np.linspace(0, n - 1, max(1, max_rows // width)).round().astype(int))
        v_cand = self._train_solves(fr, candidates, kap)[1]
        k_cand = self._frame_kernel(fr, candidates, candidates, kap)
        anchors, coefficients, top = {}, {}, {}
        for kind in kinds:
            d = CHANNEL_DIMS[kind]
            cov = self._posterior_block(kind, k_cand[kind], v_cand[kind], v_cand[kind])
            cov = cov.reshape(len(candidates) * d, len(candidates) * d)
            pivots, factor = pivoted_cholesky(cov, tol)
            frames_used = np.unique(pivots // d)  # positions in ``candidates``
            columns = np.searchsorted(frames_used, pivots // d) * d + pivots % d
            xi = rng.standard_normal((len(pivots), n_samples))
            anchors[kind] = (frames_used, columns, factor[pivots])
            top[kind] = float(np.max(np.diag(cov), initial=0.0))
            # e(x) = C_xT C_TT⁻¹ e_T with e_T = L_TT ξ:  C_xT L_TT⁻ᵀ ξ
            coefficients[kind] = solve_triangular(factor[pivots], xi, lower=True, trans="T", check_finite=False)
        mean = {k: np.empty((n, CHANNEL_DIMS[k])) for k in kinds}
        draws = {k: np.empty((n_samples, n, CHANNEL_DIMS[k])) for k in kinds}
        remainder = {k: 0.0 for k in kinds}
        for start in range(0, n, 256):
            rows = np.arange(start, min(start + 256, n))
            kxs, v_rows = self._train_solves(fr, rows, kap)
            for kind in kinds:
                d = CHANNEL_DIMS[kind]
                mean[kind][rows] = kxs[kind].transpose(0, 2, 1, 3).reshape(len(rows) * d, -1) \
                    .dot(self.weights_[kind].ravel()).reshape(len(rows), d)
                used, columns, _ = anchors[kind]
                if not len(used):  # no posterior variance left anywhere: the draws are the mean
                    draws[kind][:, rows] = mean[kind][rows]
                    continue
                k_rows = self._frame_kernel(fr, rows, candidates[used], kap, kinds=[kind])[kind]
                v_used = [v.reshape(v.shape[0], len(candidates), -1)[:, used].reshape(v.shape[0], -1)
                          for v in v_cand[kind]]
                cross = self._posterior_block(kind, k_rows, v_rows[kind], v_used).reshape(len(rows) * d, -1)
                error = (cross[:, columns] @ coefficients[kind]).reshape(len(rows), d, n_samples)
                draws[kind][:, rows] = mean[kind][rows][None] + np.moveaxis(error, 2, 0)
                # the variance the anchors leave out, frame by frame (a trajectory's frames between
                # candidates; zero on the candidates up to tol²)
                own = self._posterior_block(kind, self._frame_kernel(fr, rows, rows, kap, kinds=[kind])[kind],
                                            v_rows[kind], v_rows[kind]).reshape(len(rows) * d, -1)
                explained = solve_triangular(anchors[kind][2], cross[:, columns].T, lower=True, check_finite=False)
                left = np.diag(own) - np.einsum("ij,ij->j", explained, explained)
                remainder[kind] = max(remainder[kind], float(left.max()))
                top[kind] = max(top[kind], float(np.diag(own).max()))
        for kind in kinds:
            if remainder[kind] > (3.0 * tol) ** 2 * max(top[kind], np.finfo(float).tiny):
                warnings.warn(f"rpr: the posterior draws miss up to {100 * np.sqrt(remainder[kind] / top[kind]):.0f} % "
                              f"of the largest posterior standard deviation at frames between the {len(candidates)} "
                              f"candidate frames (the draws' spread is too small there); a larger max_rows (now {max_rows}) covers more frames",
                              stacklevel=2)
        if "l0" in mean:
            mean["l0"] = mean["l0"] + self.mean_l0_
            draws["l0"] = draws["l0"] + self.mean_l0_
        y = self._channels_to_targets(mean, fr)
        if self.target == "dipole":
            samples = np.einsum("nij,snj->sni", fr.axes, draws["vector"])
        else:
            body = spherical_to_symmetric(draws["l0"], draws["l2"])
            samples = np.einsum("nia,snab,njb->snij", fr.axes, body, fr.axes)
        return (y, samples) if return_mean else samples

    def check_sampling(self) -> None:
        """A fitted GP (regressor ``"gpr"``, frame ``"axial"``) can draw posterior samples; other
        settings raise a one-line :class:`ConfigError`."""
        self._check_fitted()
        if not (self._builtin and self.regressor == "gpr" and self.frame == "axial"):
            what = (type(self.regressor).__name__ if not self._builtin else f"regressor {self.regressor!r}"
                    if self.regressor != "gpr" else f"frame {self.frame!r}")
            raise ConfigError(f"this rpr model ({what}) cannot draw posterior samples: only regressor 'gpr' with "
                              f"frame 'axial' (the defaults) has a posterior to sample")

    def _frame_kernel(self, fr: AxialInputs, rows: np.ndarray, cols: np.ndarray, kap: dict, kinds=None,
                      block: int = 128) -> dict:
        """Body-frame prior kernels between frames ``rows`` and ``cols`` of ``fr``: ``{kind: (r, d, c, d)}``."""
        kinds = kinds or self._channels()
        out = {k: np.empty((len(rows), CHANNEL_DIMS[k], len(cols), CHANNEL_DIMS[k])) for k in kinds}
        for start in range(0, len(rows), block):
            part = rows[start : start + block]
            k = kernel_block(fr, part, fr, cols, kinds, self.inv_l2_, kap, kap)
            for kind in kinds:
                out[kind][start : start + len(part)] = k[kind].transpose(0, 2, 1, 3)
        return out

    def _train_solves(self, fr: AxialInputs, rows: np.ndarray, kap: dict) -> tuple[dict, dict]:
        """Kernels of frames ``rows`` with the training frames, ``{kind: (r, n_train, d, d)}``, and per
        kind and training block ``b`` the solves ``V_b = L_b⁻¹ (u_bᵀ K(X, x) u_b)`` (n_train·d_b, r·d_b)
        (``L_b``: Cholesky factor of the block's ``K + λI``), as ``predict`` forms them."""
        train = self._train_inputs()
        factors = self._train_factors()
        kinds = self._channels()
        it = np.arange(len(train.body))
        kxs = kernel_block(fr, rows, train, it, kinds, self.inv_l2_, kap, self._train_kappa(),
                            bases={k: [u for u, _ in factors[k]] for k in kinds})
        solves = {}
        for kind in kinds:
            solves[kind] = []
            for b, (u, factor) in enumerate(factors[kind]):
                db = u.shape[1]
                kx = kxs[kind, b].transpose(0, 2, 1, 3).reshape(len(rows) * db, len(it) * db)
                solves[kind].append(solve_triangular(factor, kx.T, lower=True, check_finite=False))
        return kxs, solves

    def _posterior_block(self, kind: str, prior: np.ndarray, v_rows: list, v_cols: list) -> np.ndarray:
        """Posterior covariance (r, d, c, d) of the latent body-frame channel ``kind`` between two
        sets of frames, from their prior kernel ``prior`` (r, d, c, d) and training solves
        (:meth:`_train_solves`): ``s² [K − Σ_b u_b (V_bᵀ V_b') u_bᵀ]``."""
        r, d, c, _ = prior.shape
        post = prior.copy()
        for (u, _), va, vb in zip(self._train_factors()[kind], v_rows, v_cols):
            db = u.shape[1]
            inner = (va.T @ vb).reshape(r, db, c, db)
            post -= np.einsum("ip,apbq,jq->aibj", u, inner, u)
        return self.signal_var_[kind] * post

    def _predict_naive(self, fr: AxialInputs, return_std: bool):
        train = self._inverse_distances(self._train_body_naive())
        k = self._naive_kernel(self._inverse_distances(fr.body), train)
        ch = {kind: k @ w for kind, w in self.weights_.items()}
        cov = None
        if return_std:
            factor = self._naive_factor(train)
            v = solve_triangular(factor, k.T, lower=True, check_finite=False)
            var = np.maximum(1.0 - np.einsum("ij,ij->j", v, v), 0.0) + self.regularizer
            cov = {kind: np.einsum("n,d,de->nde", var, np.atleast_1d(self.signal_var_[kind]), np.eye(CHANNEL_DIMS[kind]))
                   for kind in self.weights_}
        return ch, cov

    def _train_body_naive(self) -> np.ndarray:
        if not hasattr(self, "_cache"):
            self._cache = {}
        if "naive_body" not in self._cache:
            self._cache["naive_body"] = self._prepare(self.train_positions_).body
        return self._cache["naive_body"]

    def _naive_factor(self, train_desc: np.ndarray) -> np.ndarray:
        if "naive_factor" not in self._cache:
            k = self._naive_kernel(train_desc, train_desc)
            k[np.diag_indices_from(k)] += self.regularizer
            self._cache["naive_factor"] = cholesky(k, lower=True, check_finite=False)
        return self._cache["naive_factor"]

    def _predict_axial(self, fr: AxialInputs, return_std: bool, block: int = 256):
        train = self._train_inputs()
        kap_t = self._train_kappa()
        kap_x = self._kappa(fr)
        n, n_train = len(fr.body), len(train.body)
        it = np.arange(n_train)
        kinds = self._channels()
        factors = self._train_factors() if return_std else None
        ch = {k: np.empty((n, CHANNEL_DIMS[k])) for k in kinds}
        cov = {k: np.empty((n, CHANNEL_DIMS[k], CHANNEL_DIMS[k])) for k in kinds} if return_std else None
        for start in range(0, n, block):
            rows = np.arange(start, min(start + block, n))
            kxs = kernel_block(fr, rows, train, it, kinds, self.inv_l2_, kap_x, kap_t,
                                bases={k: [u for u, _ in factors[k]] for k in kinds} if return_std else None)
            priors = (kernel_block(fr, rows, fr, rows, kinds, self.inv_l2_, kap_x, kap_x, paired=True)
                      if return_std else None)
            for kind in kinds:
                d = CHANNEL_DIMS[kind]
                ch[kind][rows] = kxs[kind].transpose(0, 2, 1, 3).reshape(len(rows) * d, n_train * d) \
                    .dot(self.weights_[kind].ravel()).reshape(len(rows), d)
                if return_std:
                    post = priors[kind] + self.regularizer * np.eye(d)
                    for b, (u, factor) in enumerate(factors[kind]):
                        db = u.shape[1]
                        kx = kxs[kind, b].transpose(0, 2, 1, 3).reshape(len(rows) * db, n_train * db)
                        v = solve_triangular(factor, kx.T, lower=True, check_finite=False)
                        v = v.reshape(n_train * db, len(rows), db)
                        post -= np.matmul(np.matmul(u, np.einsum("knc,knd->ncd", v, v)), u.T)
                    cov[kind][rows] = self.signal_var_[kind] * post
        return ch, cov

    def _cartesian_std(self, cov: dict[str, np.ndarray], fr: AxialInputs) -> np.ndarray:
        """Channel covariances of body components -> std of every lab Cartesian component."""
        if self.target == "dipole":
            lab = np.einsum("nia,nab,njb->nij", fr.axes, cov["vector"], fr.axes)
            return np.sqrt(np.maximum(np.einsum("nii->ni", lab), 0.0))
        d2 = representation(fr.axes, "l2")
        lab2 = np.einsum("nia,nab,njb->nij", d2, cov["l2"], d2)
        b0 = L0_BASIS[0]
        var = cov["l0"][:, 0, 0][:, None, None] * b0[None] ** 2 + np.einsum("kij,nkl,lij->nij", L2_BASIS, lab2, L2_BASIS)
        return np.sqrt(np.maximum(var, 0.0))

    # --- state ---------------------------------------------------------------------------------
    def _get_state(self) -> dict[str, np.ndarray]:
        if not self._builtin:
            raise ModelFileError(
                f"rpr: a model with a custom scikit-learn regressor ({type(self.regressor).__name__}) cannot be "
                "saved (model files never pickle); use regressor 'gpr' or 'krr'"
            )
        state = {
            "numbers": self.numbers_,
            "train_positions": self.train_positions_,
            "mean_l0": np.array(self.mean_l0_),
        }
        if self.frame == "naive":
            state["naive_sigma"] = np.array(self.naive_sigma_)
        else:
            state["inv_l2"] = np.array(self.inv_l2_)
        for kind in self._channels():
            state[f"weights_{kind}"] = np.asarray(self.weights_[kind])
            state[f"signal_var_{kind}"] = np.asarray(self.signal_var_[kind])
        return state

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._check_options()
        if not self._builtin:
            raise ValueError("custom regressor in a model file")
        self.numbers_ = np.asarray(arrays["numbers"], dtype=int)
        self.train_positions_ = np.asarray(arrays["train_positions"], dtype=float)
        self.mean_l0_ = float(arrays["mean_l0"])
        if self.frame == "naive":
            self.naive_sigma_ = float(arrays["naive_sigma"])
        else:
            self.inv_l2_ = float(arrays["inv_l2"])
        self.weights_, self.signal_var_ = {}, {}
        for kind in self._channels():
            w = np.asarray(arrays[f"weights_{kind}"], dtype=float)
            if self.frame != "naive" and w.shape != (len(self.train_positions_), CHANNEL_DIMS[kind]):
                raise ValueError(f"weights_{kind} has shape {w.shape}")
            self.weights_[kind] = w
            sv = np.asarray(arrays[f"signal_var_{kind}"], dtype=float)
            self.signal_var_[kind] = float(sv) if sv.ndim == 0 else sv
        self._cache = {}
