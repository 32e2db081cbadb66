"""``hamiltonian``: an equivariant model of a molecule's minimal-basis Hamiltonian, and the orbital
energies, HOMO–LUMO gap, dipole and polarizability that follow from it.

The AO Hamiltonian (a Fock matrix, or a projected larger-basis Hamiltonian; see
:mod:`mdplugin.oracles.hamiltonian`) is cut into shell blocks (:mod:`.hamiltonian_blocks`), each
block into parts of rotational order λ and parity σ, and each part is a linear function of
N-centre features of the same (λ, σ) (:mod:`mdplugin.features.ncentre`): one-centre features for
the on-site blocks, two-centre features for the off-site ones, exchange-symmetric and
antisymmetric combinations for pairs of one element. The weights come from a Bayesian ridge
regression per feature kind (:mod:`mdplugin.learn.bayesian_ridge`; the regularisation and noise
are set per block type by maximising the evidence), so the prediction is rotation-, reflection-
and permutation-equivariant by construction (``H' = D H Dᵀ`` under a rotation, blocks permuted
with the atoms) and comes with a posterior.

What follows from H (with the overlap S and the AO dipole integrals r, cheap one-electron
integrals from PySCF; :mod:`mdplugin.core.orbitals`): orbital energies (``H C = S C ε``), the gap,
the dipole of the closed-shell density matrix plus the nuclei, and the polarizability as the
response of the orbitals of ``H + F·r`` to a field (sum over states, without self-consistent
response). The uncertainty of each comes from ``n_samples`` Hamiltonians drawn from the weights'
posterior (fixed seed): the standard deviation over the samples.

Used as a dipole or polarizability model (``MLCalculator(dipole="H.npz")``,
``mdplugin md --dipole H.npz``) it gives these derived quantities.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np
from ase import Atoms

from ..core import orbitals as orb
from ..core.errors import ConfigError, DataError
from ..features.ncentre import NCentreFeaturizer, NCentreFeatures
from ..learn.bayesian_ridge import NormalEquations, fit_bayesian_ridge
from ..structures.aobasis import AOBasis
from ..structures.hamiltonians import HamiltonianSet
from .base import Model, check_species, fingerprint, register
from .contract import Prediction
from .hamiltonian_blocks import BatchLayout, BlockType, block_types, from_coupled, to_coupled
from .hamiltonian_response import coupled_polarizability

#: what a fitted model derives from its Hamiltonians (besides the matrices)
DERIVED = ("orbital_energies", "gap", "dipole", "polarizability")
#: feature columns whose root-mean-square over the training rows is below this fraction of the
#: largest are dropped (features of element pairs absent from the data are exactly zero)
_DROP_COLUMN = 1e-8


def frame_electrons(atoms: Atoms, where: str) -> int:
    """Doubly occupied orbitals of a closed-shell frame: (Σ Z − charge) / 2, charge from the
    frame's ``charge`` info (default 0). An odd count is a :class:`DataError` naming ``where``."""
    charge = int(round(float((getattr(atoms, "info", None) or {}).get("charge", 0))))
    n = int(np.sum(atoms.numbers)) - charge
    if n <= 0 or n % 2:
        raise DataError(f"{where}: {atoms.get_chemical_formula()} with charge {charge} has {n} electrons; "
                        f"the hamiltonian model describes closed shells (an even number of electrons)")
    return n // 2


def _as_hamiltonians(targets: Any) -> HamiltonianSet:
    if isinstance(targets, HamiltonianSet):
        return targets
    if isinstance(targets, Mapping) and isinstance(targets.get("hamiltonian"), HamiltonianSet):
        return targets["hamiltonian"]
    value = getattr(targets, "hamiltonian", None)
    if isinstance(value, HamiltonianSet):
        return value
    raise DataError("the hamiltonian model trains on a HamiltonianSet (read_hamiltonians(...)), given "
                    f"{type(targets).__name__}")


@register("hamiltonian")
class HamiltonianModel(Model):
    """Equivariant minimal-basis Hamiltonian (see the module docstring).

    Parameters
    ----------
    target : ``"hamiltonian"``.
    cutoff, max_radial, max_angular, density_width : the pair expansion and atom-centred density of
        the features (Å; ``max_radial + 1`` radial functions); atoms farther apart than ``cutoff``
        get zero off-site blocks.
    pair_max_angular : highest l of the pair expansion in the two-centre features.
    density_channels : principal channels of the density kept for the products (species and
        radial functions mixed; :meth:`NCentreFeaturizer.fit_projection` on up to 200 training
        frames); 0 keeps them all.
    response : the polarizability from ``"sos"``, the orbitals' response to ``H + F·r`` (sum over
        states, no self-consistency: fast, but the minimal basis's uncoupled response is far below
        the SCF's), or ``"coupled"``, the self-consistent response of the predicted density with
        the labelling method's kernel (:mod:`.hamiltonian_response`; the SCF's own polarizability
        for exact orbitals, ~50 ms per ethanol step for the two-electron integrals). Its
        uncertainty is the spread of the uncoupled response over the posterior Hamiltonians.
    n_samples : posterior Hamiltonians drawn for the uncertainties.
    chunk_size : frames featurised at once while fitting (memory).
    seed : seed of the posterior samples.
    """

    targets_supported = ("hamiltonian",)
    derived_targets = ("dipole", "polarizability")

    def __init__(self, target: str = "hamiltonian", cutoff: float = 5.0, max_radial: int = 7, max_angular: int = 4,
                 density_width: float = 0.2, pair_max_angular: int = 4, density_channels: int = 8,
                 response: str = "sos", n_samples: int = 32, chunk_size: int = 50, seed: int = 0) -> None:
        self.target = target
        self.cutoff = cutoff
        self.max_radial = max_radial
        self.max_angular = max_angular
        self.density_width = density_width
        self.pair_max_angular = pair_max_angular
        self.density_channels = density_channels
        self.response = response
        self.n_samples = n_samples
        self.chunk_size = chunk_size
        self.seed = seed

    # -- features --------------------------------------------------------------------------
    def featurizer(self) -> NCentreFeaturizer:
        """The N-centre featurizer of the fitted model's species (λ up to twice the basis's l)."""
        self._check_fitted()
        if getattr(self, "_featurizer", None) is None:
            self._featurizer = self._make_featurizer(self.species_, self._max_lambda(), self.projection_,
                                                     self.splines_)
        return self._featurizer

    def _make_featurizer(self, species, max_lambda: int, projection=None, splines=None) -> NCentreFeaturizer:
        return NCentreFeaturizer(species, cutoff=self.cutoff, max_radial=self.max_radial,
                                 max_angular=self.max_angular, pair_max_angular=self.pair_max_angular,
                                 density_width=self.density_width, max_lambda=max_lambda, projection=projection,
                                 splines=splines)

    def _max_lambda(self) -> int:
        return max(bt.lam for bt in self.block_types_)

    @staticmethod
    def _design(features: NCentreFeatures, key: tuple, rows: np.ndarray | None = None):
        """Features (n, 2λ+1, p) of one feature kind: of its rows (:func:`_rows`) when ``rows`` is
        given, else ``(features, first atoms, second atoms)`` of all its rows."""
        selected, first, second = _rows(features, key) if rows is None else (rows, None, None)
        kind, z, lam, sigma = key
        if kind == "onsite":
            x = features.onsite.get((lam, sigma), np.zeros((features.n_atoms, 2 * lam + 1, 0)))[selected]
            if lam == 0 and sigma == 1:
                x = np.concatenate([np.ones((len(selected), 1, 1)), x], axis=2)  # the element's baseline
        else:
            empty = np.zeros((features.n_pairs, 2 * lam + 1, 0))
            a = features.pair_ij.get((lam, sigma), empty)[selected]
            b = features.pair_ji.get((lam, sigma), empty)[selected]
            x = np.concatenate([a, b], axis=2) if kind == "pair" else a + b if kind == "pair+" else a - b
        return x if rows is not None else (x, first, second)

    # -- fit -------------------------------------------------------------------------------
    def fit(self, frames: Sequence[Atoms], targets, *, comm=None) -> "HamiltonianModel":
        """Fit on ``frames`` and their Hamiltonians (a :class:`HamiltonianSet`, or ``Targets`` /
        a mapping holding one as ``hamiltonian``). ``comm`` (mpi4py) splits the frames over ranks
        and sums the normal equations; every rank ends with the same model."""
        self._check_target()
        if self.response not in ("sos", "coupled"):
            raise ConfigError(f"response must be 'sos' or 'coupled', not {self.response!r}")
        frames = list(frames)
        data = _as_hamiltonians(targets)
        data.check_frames(frames)
        for i in range(len(data)):
            if data.fock[i].shape[0] != 1:
                raise DataError(f"{data.source}: frame {i}: open shell (spin {data.spin[i]}); the hamiltonian "
                                f"model learns closed-shell Hamiltonians")
        if not frames:
            raise DataError("no training frames")
        basis = AOBasis(data.basis)
        species = sorted({int(z) for a in frames for z in a.numbers})
        btypes = block_types(basis, species)
        groups: dict[tuple, list[BlockType]] = defaultdict(list)
        for bt in btypes:
            groups[bt.feature_key].append(bt)
        self.block_types_ = btypes
        featurizer = self._make_featurizer(species, max(bt.lam for bt in btypes))
        self.splines_ = featurizer.expansion.spline_arrays()
        self.projection_ = None
        if self.density_channels:  # the same frames (hence projection) on every rank
            self.projection_ = featurizer.fit_projection(frames[:200], int(self.density_channels))
        rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
        equations: dict[tuple, NormalEquations] = {}
        mine = np.arange(len(frames))[rank::size]
        for start in range(0, len(mine), max(int(self.chunk_size), 1)):
            idx = mine[start:start + int(self.chunk_size)]
            chunk = [frames[i] for i in idx]
            features = featurizer.compute(chunk)
            layout = BatchLayout(basis, [a.numbers for a in chunk])
            flat = layout.flatten([data.fock[i][0] for i in idx])
            for key, bts in groups.items():
                x, first, second = self._design(features, key)
                if key not in equations:
                    equations[key] = NormalEquations.zeros(x.shape[2], len(bts))
                if not len(first):
                    continue
                y = np.stack([_block_targets(layout, flat, first, second, bt) for bt in bts], axis=-1)
                equations[key].add(x.reshape(-1, x.shape[2]), y.reshape(-1, len(bts)))
        if comm is not None and size > 1:  # every rank must hold every key, in one order
            keys = sorted(groups)
            for key in keys:
                if key not in equations:
                    n_feat = self._design(featurizer.compute(frames[:1]), key)[0].shape[2]
                    equations[key] = NormalEquations.zeros(n_feat, len(groups[key]))
                equations[key].allreduce(comm)
        self.basis_ = data.basis
        self.method_ = data.method
        self.species_ = np.array(species, dtype=int)
        self._fits = {}
        for key, eq in sorted(equations.items()):
            if eq.n_rows == 0:
                continue
            self._fits[key] = _fit_key(eq, intercept=key[0] == "onsite" and key[2:] == (0, 1))
        self.n_train_ = len(frames)
        self.training_fingerprint_ = fingerprint(frames)
        self.is_fitted_ = True
        self._reset_caches()
        return self

    def _reset_caches(self) -> None:
        self._featurizer = None
        self._basis = None
        self._table_cache = None
        self._plans = None
        self._derived_cache = None

    # -- predict ---------------------------------------------------------------------------
    def _aobasis(self) -> AOBasis:
        if getattr(self, "_basis", None) is None:
            self._basis = AOBasis(self.basis_)
        return self._basis

    def _groups(self) -> dict[tuple, list[BlockType]]:
        groups: dict[tuple, list[BlockType]] = defaultdict(list)
        for bt in self.block_types_:
            groups[bt.feature_key].append(bt)
        return groups

    def _weight_samples(self, key: tuple) -> np.ndarray:
        """Posterior weight samples (p, k, n_samples) of one feature kind (fixed seed): the mean plus
        ``Σ_j v_j z_j / sqrt(β e_j + α)`` over the kept directions of XᵀX and the prior's ``z / sqrt(α)``
        in the rest (see :func:`_fit_key`); with a baseline, it moves by ``−x̄·δw``."""
        fit = self._fits[key]
        rng = np.random.default_rng([int(self.seed), *map(_stable_int, _flat_key(key))])
        v = np.asarray(fit["eigvecs"], dtype=float)  # (p, K)
        k, n_s = fit["coef"].shape[1], int(self.n_samples)
        z_kept = rng.standard_normal((v.shape[1], k, n_s))
        z_rest = rng.standard_normal((v.shape[0], k, n_s))
        z_rest -= np.einsum("pj,jks->pks", v, np.einsum("pj,pks->jks", v, z_rest))
        d = np.sqrt(np.outer(fit["eigvals"], fit["beta"]) + fit["alpha"])  # (K, k)
        delta = np.einsum("pj,jks->pks", v, z_kept / d[:, :, None]) + z_rest / np.sqrt(fit["alpha"])[None, :, None]
        if len(fit["coef"]) == len(delta) + 1:  # the baseline row first
            delta = np.concatenate([-np.einsum("p,pks->ks", fit["x_mean"], delta)[None], delta])
        return fit["coef"][:, :, None] + delta

    def _tables(self, features: NCentreFeatures) -> dict[tuple, dict]:
        """Per feature table — ``("onsite", λ, σ)`` or ``("pair", λ, σ)`` — the weights of every
        feature kind reading it, side by side: ``columns`` [(key, n_outputs)], ``first`` (p, K) on the
        table's features of the row (pair: of (first, second)), ``second`` (p, K) on those of
        (second, first) (pairs), ``bias`` (K,), and their posterior samples (``…_samples``:
        (p, K·n_samples), ``bias_samples`` (K·n_samples,)) and ``noise`` (K,), each kind's residual
        scale 1/√β. One product per table then predicts
        every block kind (a row's other kinds get zero weight in the assembly)."""
        if getattr(self, "_table_cache", None) is not None:
            return self._table_cache
        tables: dict[tuple, dict] = {}
        n_s = int(self.n_samples)
        widths = {("onsite", *k): v.shape[2] for k, v in features.onsite.items()}
        widths.update({("pair", *k): v.shape[2] for k, v in features.pair_ij.items()})
        for key in sorted(self._fits, key=_flat_key):
            kind, _, lam, sigma = key
            table = ("onsite" if kind == "onsite" else "pair", lam, sigma)
            p = widths.get(table, 0)
            fit = self._fits[key]
            k = fit["coef"].shape[1]
            width = p + 1 if kind == "onsite" and (lam, sigma) == (0, 1) else 2 * p if kind == "pair" else p
            full = np.zeros((width, k))
            full_s = np.zeros(full.shape + (n_s,))
            full[fit["columns"]] = fit["coef"] / fit["scale"][:, None]
            full_s[fit["columns"]] = self._weight_samples(key) / fit["scale"][:, None, None]
            bias, bias_s = np.zeros(k), np.zeros((k, n_s))
            if kind == "onsite" and (lam, sigma) == (0, 1):  # column 0 is the constant
                bias, bias_s, full, full_s = full[0], full_s[0], full[1:], full_s[1:]
            first, second = full, None
            first_s, second_s = full_s, None
            if kind == "pair":
                first, second, first_s, second_s = full[:p], full[p:], full_s[:p], full_s[p:]
            elif kind in ("pair+", "pair-"):
                sign = 1.0 if kind == "pair+" else -1.0
                second, second_s = sign * full, sign * full_s
            t = tables.setdefault(table, {"columns": [], "first": [], "second": [], "bias": [], "first_samples": [],
                                          "second_samples": [], "bias_samples": [], "noise": []})
            t["columns"].append((key, k))
            t["noise"].append(1.0 / np.sqrt(fit["beta"]))
            t["first"].append(first)
            t["first_samples"].append(first_s)
            t["bias"].append(bias)
            t["bias_samples"].append(bias_s)
            zero = np.zeros_like(first)
            t["second"].append(zero if second is None else second)
            t["second_samples"].append(np.zeros_like(first_s) if second_s is None else second_s)
        for t in tables.values():
            for name in ("first", "second", "bias"):
                t[name] = np.concatenate(t[name], axis=-1 if name != "bias" else 0)
            for name in ("first_samples", "second_samples"):  # (p, K, S) -> (p, K·S), K outer
                t[name] = np.concatenate(t[name], axis=1).reshape(len(t["first"]), -1)
            t["bias_samples"] = np.concatenate(t["bias_samples"]).reshape(-1)
            t["noise"] = np.concatenate(t["noise"])
        self._table_cache = tables
        return tables

    def predict_flat(self, frames: Sequence[Atoms], features: NCentreFeatures | None = None,
                     samples: bool = False) -> tuple[BatchLayout, np.ndarray, np.ndarray | None]:
        """The batch layout, the predicted Hamiltonians flattened (total,) eV, and with ``samples``
        posterior Hamiltonians (n_samples, total)."""
        self._check_fitted()
        frames = list(frames)
        check_species(frames, self.species_, "hamiltonian model")
        if features is None:
            features = self.featurizer().compute(frames)
        layout, plan = self._plan(frames, features)
        tables = self._tables(features)
        mean = np.zeros(int(layout.offset[-1]))
        draws = np.zeros((int(self.n_samples), len(mean))) if samples else None
        for table, assemble in plan:
            t = tables[table]
            suffixes = ("", "_samples") if samples else ("",)
            for suffix in suffixes:
                if table[0] == "onsite":
                    y = features.onsite[table[1:]] @ t["first" + suffix] + t["bias" + suffix]
                else:
                    y = features.pair_ij[table[1:]] @ t["first" + suffix] + features.pair_ji[table[1:]] @ t["second" + suffix]
                if suffix:  # the fit's residual scale (1/√β) as independent noise on every part
                    noise = np.random.default_rng(int(self.seed)).standard_normal(y.shape).reshape(
                        y.shape[0], y.shape[1], -1, int(self.n_samples)) * t["noise"][:, None]
                    draws += (assemble @ (y + noise.reshape(y.shape)).reshape(-1, int(self.n_samples))).T
                else:
                    mean += assemble @ y.ravel()
        return layout, mean, draws

    def _plan(self, frames: Sequence[Atoms], features: NCentreFeatures):
        """The batch layout and, per feature table, the sparse map from every row's predicted
        (λ, σ) parts of every block kind to the flattened matrices (only the kinds of the row's
        elements enter); kept for the last few batches (an MD run asks for one molecule at every
        step)."""
        tag = (tuple(len(a) for a in frames), features.atom_species.tobytes(), features.pair_first.tobytes(),
               features.pair_second.tobytes())
        if getattr(self, "_plans", None) is None:
            self._plans = {}
        if tag not in self._plans:
            layout = BatchLayout(self._aobasis(), [a.numbers for a in frames])
            groups = self._groups()
            plan = []
            for table, t in self._tables(features).items():
                n_rows = features.n_atoms if table[0] == "onsite" else features.n_pairs
                n_out = sum(k for _, k in t["columns"])
                pieces, start = [], 0
                for key, k in t["columns"]:
                    rows, first, second = _rows(features, key)
                    if len(rows):
                        part = _assembly(layout, first, second, groups[key]).tocoo()
                        # part's columns (row r of the kind, μ, o) -> (table row, μ, start + o)
                        r, rest = np.divmod(part.col, (2 * table[1] + 1) * k)
                        mu, o = np.divmod(rest, k)
                        col = (rows[r] * (2 * table[1] + 1) + mu) * n_out + start + o
                        pieces.append((part.row, col, part.data))
                    start += k
                if pieces:
                    import scipy.sparse

                    r, c, v = (np.concatenate(x) for x in zip(*pieces))
                    shape = (int(layout.offset[-1]), n_rows * (2 * table[1] + 1) * n_out)
                    plan.append((table, scipy.sparse.csr_matrix((v, (r, c)), shape=shape)))
            if len(self._plans) >= 4:
                self._plans.pop(next(iter(self._plans)))
            self._plans[tag] = (layout, plan)
        return self._plans[tag]

    def predict(self, frames: Sequence[Atoms], return_std: bool = False):
        """Hamiltonians: a list of (n_ao, n_ao) eV (PySCF's AO order in the model's basis); with
        ``return_std`` also their element-wise standard deviations (same shapes)."""
        layout, mean, draws = self.predict_flat(frames, samples=return_std)
        h = layout.unflatten(mean)
        if not return_std:
            return h
        return h, layout.unflatten(draws.std(axis=0))

    def predict_properties(self, frames: Sequence[Atoms], properties: Sequence[str] = DERIVED,
                           return_std: bool = False, features: NCentreFeatures | None = None) -> dict[str, Any]:
        """Orbital energies (list of (n_ao,) eV), ``gap`` (n,) eV, ``dipole`` (n, 3) e·Å and
        ``polarizability`` (n, 3, 3) Å³ of closed-shell molecules from their predicted Hamiltonians;
        with ``return_std`` also ``<name>_std`` (the spread over posterior Hamiltonians)."""
        unknown = [p for p in properties if p not in DERIVED]
        if unknown:
            raise ConfigError(f"the hamiltonian model derives {', '.join(DERIVED)}, not {', '.join(unknown)}")
        frames = list(frames)
        n_occ = [frame_electrons(a, f"frame {i}") for i, a in enumerate(frames)]
        layout, mean, draws = self.predict_flat(frames, features=features, samples=return_std)
        h_mean = layout.unflatten(mean)
        h_draws = layout.unflatten(draws) if return_std else [None] * len(frames)
        basis = self._aobasis()
        out: dict[str, list] = defaultdict(list)
        for i, atoms in enumerate(frames):  # one eigenproblem per frame (an MD step has one frame)
            s = basis.overlap(atoms.numbers, atoms.positions)
            need_r = "dipole" in properties or "polarizability" in properties
            r = basis.dipole_integrals(atoms.numbers, atoms.positions) if need_r else None
            stack = h_mean[i][None] if h_draws[i] is None else np.concatenate([h_mean[i][None], h_draws[i]])
            values = _derive(stack, s, r, n_occ[i], atoms, properties)
            if self.response == "coupled" and "polarizability" in properties:
                # the self-consistent response of the mean; the samples keep their uncoupled spread
                eps, c = orb.orbitals(h_mean[i], s)
                coupled = coupled_polarizability(basis.molecule(atoms.numbers, atoms.positions), self.method_,
                                                 eps, c, n_occ[i])
                values["polarizability"] = values["polarizability"] - values["polarizability"][:1] + coupled
            for name, v in values.items():
                out[name].append(v[0])
                if return_std:
                    out[f"{name}_std"].append(v[1:].std(axis=0))
        result: dict[str, Any] = {}
        for name, v in out.items():
            result[name] = v if name.startswith("orbital_energies") else np.array(v)
        return result

    # -- the model contract ------------------------------------------------------------------
    def predict_from_features(self, features: NCentreFeatures, *, return_std: bool = False, forces: bool = False,
                              stress: bool = False, precision: str = "double", target: str | None = None) -> Prediction:
        """The :class:`Prediction` of ``target`` — ``"dipole"`` (n, 3) e·Å, ``"polarizability"``
        (n, 3, 3) Å³, or the matrices (``"hamiltonian"``, the default: a list of (n_ao, n_ao) eV) —
        for the structures of ``features``; ``extras`` hold ``orbital_energies`` (list of (n_ao,) eV)
        and ``gap`` (n,) eV (with their ``*_std``). The derived quantities of one set of features are
        computed once for every slot that asks (``precision`` is not used: all in double)."""
        self._check_fitted()
        self._check_asked(forces, stress)
        target = target or self.target_
        if target == "hamiltonian":
            out = self.predict(features.frames, return_std=return_std)
            values, std = out if return_std else (out, None)
            return Prediction("hamiltonian", values, std)
        if target not in self.derived_targets:
            raise ConfigError(f"the hamiltonian model gives {', '.join(('hamiltonian',) + self.derived_targets)}, "
                              f"not {target!r}")
        kept = getattr(self, "_derived_cache", None)
        if kept is None or kept[0] is not features or (return_std and not kept[1]):
            kept = (features, return_std,
                    self.predict_properties(features.frames, return_std=return_std, features=features))
            self._derived_cache = kept
        derived = kept[2]
        extras = {k: derived[k] for k in ("orbital_energies", "gap", "orbital_energies_std", "gap_std")
                  if k in derived and (return_std or not k.endswith("_std"))}
        return Prediction(target, derived[target], derived.get(f"{target}_std") if return_std else None,
                          extras=extras)

    def evaluate_dataset(self, data) -> dict:
        """Errors on a :class:`~mdplugin.structures.data.Dataset` with Hamiltonians (eV): ``rmse``,
        ``mae`` of the matrix elements, ``orbital_energies_rmse``/``_mae`` of the occupied and lowest
        virtual orbitals, ``homo_rmse``, ``lumo_rmse``, ``gap_rmse``, and where the data have them
        ``dipole_rmse`` (e·Å) and ``polarizability_rmse`` (Å³) of the derived ones."""
        from ..learn.metrics import regression_metrics

        ref = data.get("hamiltonian")
        frames = data.frames
        if ref.basis.lower() != self.basis_.lower():
            raise DataError(f"{ref.source}: Hamiltonians in basis {ref.basis!r}, the model's is {self.basis_!r}")
        features = self.featurizer().compute(frames)
        h = self.predict(frames)
        derived = self.predict_properties(frames, features=features)
        elements = np.concatenate([(p - r[0]).ravel() for p, r in zip(h, ref.fock)])
        orbital, homo, lumo, gap = [], [], [], []
        for i, (eps, ref_eps) in enumerate(zip(derived["orbital_energies"], ref.mo_energy)):
            n_occ = ref.n_electrons(i) // 2
            err = eps[:n_occ + 1] - ref_eps[0, :n_occ + 1]
            orbital.append(err)
            homo.append(err[n_occ - 1])
            lumo.append(err[n_occ])
            gap.append(err[n_occ] - err[n_occ - 1])
        orbital = np.concatenate(orbital)
        rms = lambda x: float(np.sqrt(np.mean(np.square(x))))  # noqa: E731
        result = {"target": "hamiltonian", "n": len(frames), "rmse": rms(elements), "mae": float(np.mean(np.abs(elements))),
                  "orbital_energies_rmse": rms(orbital), "orbital_energies_mae": float(np.mean(np.abs(orbital))),
                  "homo_rmse": rms(homo), "lumo_rmse": rms(lumo), "gap_rmse": rms(gap)}
        for name in ("dipole", "polarizability"):
            if getattr(data, name, None) is not None:
                m = regression_metrics(np.asarray(getattr(data, name)), derived[name])
                result[f"{name}_rmse"] = m["rmse"]
                result[f"{name}_rmse_percent_of_std"] = m["rmse_percent_of_std"]
        return result

    def predict_dataset(self, data):
        """A :class:`~mdplugin.structures.data.Dataset` of ``data``'s structures with the derived
        ``dipole``, ``polarizability``, ``gap`` and their ``*_std``, and the predicted matrices as
        its ``hamiltonian`` (:class:`HamiltonianSet`; ``mdplugin predict`` writes it beside the
        output)."""
        from ..structures.data import Dataset

        frames = data.frames
        features = self.featurizer().compute(frames)
        derived = self.predict_properties(frames, return_std=True, features=features)
        h = self.predict(frames)
        basis = self._aobasis()
        overlaps = [basis.overlap(a.numbers, a.positions) for a in frames]
        layouts = [basis.layout(a.numbers) for a in frames]
        labels = [np.array([" ".join(x.split()) for x in basis.molecule(a.numbers, a.positions).ao_labels()])
                  for a in frames]
        charges = np.array([int(round(float(a.info.get("charge", 0)))) for a in frames])
        out = Dataset(frames=frames, source=data.source, dipole=derived["dipole"],
                      polarizability=derived["polarizability"])
        out.extras = {"dipole_std": derived["dipole_std"], "polarizability_std": derived["polarizability_std"].reshape(len(frames), 9),
                      "gap": derived["gap"], "gap_std": derived["gap_std"]}
        out.hamiltonian = HamiltonianSet(
            basis=self.basis_, method=f"hamiltonian model ({self.training_fingerprint_})", fock=[x[None] for x in h],
            overlap=overlaps, mo_energy=[e[None] for e in derived["orbital_energies"]], ao_atom=[lay.ao_atom for lay in layouts],
            ao_label=labels,
            numbers=[a.numbers.copy() for a in frames], positions=[a.positions.copy() for a in frames],
            charge=charges, spin=np.zeros(len(frames), int), scf_energy=np.full(len(frames), np.nan),
            scf_basis=self.basis_, source=data.source)
        return out

    # -- state -----------------------------------------------------------------------------
    def _get_state(self) -> dict[str, np.ndarray]:
        arrays = {
            "basis": np.array(self.basis_),
            "method": np.array(self.method_),
            **{f"projection_{l}": p for l, p in enumerate(self.projection_ or [])},
            **{f"spline_{l}_{part}": a for l, spline in enumerate(self.splines_)
               for part, a in zip(("positions", "values", "derivatives"), spline)},
            "block_types": np.array([_encode(bt) for bt in self.block_types_], dtype=np.int64).reshape(-1, 10),
        }
        for k, (key, fit) in enumerate(sorted(self._fits.items())):
            arrays[f"key_{k}"] = np.array(_flat_key(key), dtype=np.int64)
            for name, value in fit.items():
                arrays[f"fit_{k}_{name}"] = np.asarray(value)
        return arrays

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.basis_ = str(arrays["basis"])
        self.method_ = str(arrays["method"])
        self.splines_ = tuple(tuple(arrays[f"spline_{l}_{part}"] for part in ("positions", "values", "derivatives"))
                              for l in range(self.max_angular + 1))
        self.projection_ = [arrays[f"projection_{l}"] for l in range(self.max_angular + 1)] \
            if "projection_0" in arrays else None
        self.block_types_ = [_decode(row) for row in np.asarray(arrays["block_types"]).reshape(-1, 10)]
        self._fits = {}
        k = 0
        while f"key_{k}" in arrays:
            key = _unflat_key(arrays[f"key_{k}"])
            self._fits[key] = {name: arrays[f"fit_{k}_{name}"]
                               for name in ("columns", "scale", "coef", "alpha", "beta", "eigvecs", "eigvals", "x_mean")}
            k += 1
        self._reset_caches()


# ------------------------------------------------------------------------------------------
_KINDS = ("onsite", "pair", "pair+", "pair-")


def _flat_key(key: tuple) -> tuple[int, ...]:
    kind, z, lam, sigma = key
    return (_KINDS.index(kind), int(z[0]), int(z[1]), int(lam), int(sigma))


def _unflat_key(values) -> tuple:
    k, z1, z2, lam, sigma = (int(v) for v in values)
    return (_KINDS[k], (z1, z2), lam, sigma)


def _stable_int(v: int) -> int:
    return int(v) % (2**31)


def _encode(bt: BlockType) -> list[int]:
    return [_KINDS.index(bt.kind), *bt.z, *bt.shells, *bt.l, bt.lam, bt.sigma, 0]


def _decode(row) -> BlockType:
    k, z1, z2, a, b, la, lb, lam, sigma, _ = (int(v) for v in row)
    return BlockType(_KINDS[k], (z1, z2), (a, b), (la, lb), lam, sigma)


def _rows(features: NCentreFeatures, key: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of one feature kind: indices into the atoms (on-site) or pairs, and their (first,
    second) atoms."""
    kind, z = key[0], key[1]
    if kind == "onsite":
        rows = np.flatnonzero(features.atom_species == z[0])
        return rows, rows, rows
    zf = features.atom_species[features.pair_first]
    zs = features.atom_species[features.pair_second]
    rows = np.flatnonzero((zf == z[0]) & (zs == z[1]))
    return rows, features.pair_first[rows], features.pair_second[rows]


def _assembly(layout: BatchLayout, first: np.ndarray, second: np.ndarray, bts: Sequence[BlockType]):
    """Sparse (total, n·(2λ+1)·k) map from the (λ, σ) parts ``y`` (n, 2λ+1, k) of the blocks of
    types ``bts`` (one feature kind) to the flattened matrices: the blocks and their transposes (see
    :func:`_scatter`, of which this is the matrix)."""
    import scipy.sparse

    n, k = len(first), len(bts)
    rows, cols, vals = [], [], []
    for o, bt in enumerate(bts):
        lam = bt.lam
        m = from_coupled(np.eye(2 * lam + 1), bt)  # (2λ+1, A, B): the block of each unit part
        col = (np.arange(n)[:, None] * (2 * lam + 1) + np.arange(2 * lam + 1)[None, :]) * k + o  # (n, 2λ+1)

        def place(index, factor, transpose):
            values = np.swapaxes(m, 1, 2) if transpose else m  # (2λ+1, …) matching index (n, …)
            rows.append(np.broadcast_to(index[:, None], (n, 2 * lam + 1) + index.shape[1:]).ravel())
            cols.append(np.broadcast_to(col.reshape(n, 2 * lam + 1, 1, 1), (n, 2 * lam + 1) + index.shape[1:]).ravel())
            vals.append(np.broadcast_to(factor * values[None], (n, 2 * lam + 1) + index.shape[1:]).ravel())

        same_shell = bt.shells[0] == bt.shells[1]
        if bt.kind in ("onsite", "pair"):
            place(layout.indices(first, second, bt), 1.0, False)
            if not (bt.kind == "onsite" and same_shell):
                place(layout.indices(first, second, bt, swap=True), 1.0, True)
            continue
        sign = 1.0 if bt.kind == "pair+" else -1.0
        place(layout.indices(first, second, bt), 0.5, False)
        place(layout.indices(second, first, bt), 0.5 * sign, False)
        if not same_shell:
            place(layout.indices(first, second, bt, swap=True), 0.5, True)
            place(layout.indices(second, first, bt, swap=True), 0.5 * sign, True)
    total = int(layout.offset[-1])
    return scipy.sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                                   shape=(total, n * (2 * bts[0].lam + 1) * k))


def _block_targets(layout: BatchLayout, flat: np.ndarray, first: np.ndarray, second: np.ndarray,
                   bt: BlockType) -> np.ndarray:
    """The order-λ parts (n, 2λ+1) of the blocks of type ``bt`` (see :mod:`.hamiltonian_blocks`)."""
    blocks = flat[layout.indices(first, second, bt)]
    if bt.kind == "pair+":
        blocks = blocks + flat[layout.indices(second, first, bt)]
    elif bt.kind == "pair-":
        blocks = blocks - flat[layout.indices(second, first, bt)]
    return to_coupled(blocks, bt)


def _scatter(layout: BatchLayout, flat: np.ndarray, first: np.ndarray, second: np.ndarray, bt: BlockType,
             coupled: np.ndarray) -> None:
    """Add the blocks rebuilt from order-λ parts ``coupled`` (…, n, 2λ+1) into ``flat`` (…, total),
    with their transposes (the matrix is symmetric)."""
    blocks = from_coupled(coupled, bt)  # (…, n, 2la+1, 2lb+1)
    swapped = np.swapaxes(blocks, -1, -2)
    same_shell = bt.shells[0] == bt.shells[1]
    if bt.kind in ("onsite", "pair"):
        _add(flat, layout.indices(first, second, bt), blocks)
        if not (bt.kind == "onsite" and same_shell):
            _add(flat, layout.indices(first, second, bt, swap=True), swapped)
        return
    sign = 1.0 if bt.kind == "pair+" else -1.0  # B_ij = (T+ + T-)/2, B_ji = (T+ - T-)/2
    _add(flat, layout.indices(first, second, bt), 0.5 * blocks)
    _add(flat, layout.indices(second, first, bt), 0.5 * sign * blocks)
    if not same_shell:
        _add(flat, layout.indices(first, second, bt, swap=True), 0.5 * swapped)
        _add(flat, layout.indices(second, first, bt, swap=True), 0.5 * sign * swapped)


def _add(flat: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    # every block position is written by one (atom pair, shell pair) only: plain assignment-add
    flat[..., index] += values


def _fit_key(eq: NormalEquations, intercept: bool) -> dict[str, np.ndarray]:
    """Bayesian ridge on the columns that vary, scaled to unit root-mean-square.

    ``intercept``: column 0 is the constant (the element's baseline of an invariant on-site part);
    it is fitted unpenalised, by centring the other columns and the targets (a penalised baseline of
    hundreds of eV would make the evidence choose almost no regularisation for every feature).

    The posterior is kept as the directions of XᵀX the data inform (``β e > α / 100`` for some
    output; float32, enough for uncertainties): in the others the posterior is the prior to 0.5 %,
    and the model file stays a few MB per feature kind instead of p² doubles.
    """
    n_rows = max(eq.n_rows, 1)
    first = 1 if intercept else 0
    xtx, xty, yty = eq.xtx[first:, first:], eq.xty[first:], eq.yty.copy()
    x_mean = np.zeros(len(xtx))
    if intercept:
        x_mean = eq.xtx[0, first:] / n_rows
        y_mean = eq.xty[0] / n_rows
        xtx = xtx - n_rows * np.outer(x_mean, x_mean)
        xty = xty - n_rows * np.outer(x_mean, y_mean)
        yty = np.clip(yty - n_rows * y_mean**2, 0.0, None)
    rms = np.sqrt(np.clip(np.diag(xtx), 0.0, None) / n_rows)
    columns = np.flatnonzero(rms > _DROP_COLUMN * max(rms.max(initial=0.0), 1e-300))
    scale = rms[columns]
    fit = fit_bayesian_ridge(NormalEquations(xtx[np.ix_(columns, columns)] / np.outer(scale, scale),
                                             xty[columns] / scale[:, None], yty, eq.n_rows))
    kept = np.any(np.outer(fit.eigvals, fit.beta) > 1e-2 * fit.alpha, axis=1)
    coef = fit.coef
    x_mean = x_mean[columns] / scale
    if intercept:  # the constant column back in front: weight ȳ − x̄·w
        coef = np.vstack([(y_mean - x_mean @ coef)[None], coef])
        columns = np.r_[0, columns + 1]
        scale = np.r_[1.0, scale]
    return {"columns": columns, "scale": scale, "coef": coef, "alpha": fit.alpha, "beta": fit.beta,
            "eigvecs": fit.eigvecs[:, kept].astype(np.float32), "eigvals": fit.eigvals[kept], "x_mean": x_mean}


def _derive(h: np.ndarray, s: np.ndarray, r: np.ndarray | None, n_occ: int, atoms: Atoms,
            properties: Sequence[str]) -> dict[str, np.ndarray]:
    """Derived properties of a stack of Hamiltonians (m, n, n) of one structure."""
    if n_occ >= h.shape[-1]:
        raise DataError(f"{atoms.get_chemical_formula()}: {n_occ} occupied orbitals fill the whole basis; no gap")
    eps, c = orb.orbitals(h, s[None])
    out = {}
    if "orbital_energies" in properties:
        out["orbital_energies"] = eps
    if "gap" in properties:
        out["gap"] = orb.homo_lumo_gap(eps, n_occ)
    if "dipole" in properties:
        out["dipole"] = orb.dipole(c, n_occ, r[None], atoms.numbers, atoms.positions)
    if "polarizability" in properties:
        out["polarizability"] = orb.polarizability(eps, c, n_occ, r[None])
    return out
