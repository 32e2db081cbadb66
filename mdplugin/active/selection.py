"""Which candidates of a segment (or pool) to label: ``max``, ``density`` and ``ivr``.

* ``max`` and ``density`` (:func:`select_candidates`) work on the candidates' uncertainty ratios and
  a structure distance (sorted interatomic distances, :func:`_distance_signature`).
* ``ivr`` (integrated variance reduction) uses the models' own Gaussian-process posterior: the
  candidate whose label most reduces the summed predictive variance over the *whole* candidate
  pool (which follows what the dynamics visit) is labelled; for a batch the posterior is updated
  with that label and the next one chosen (greedy). It prefers a structure that is uncertain
  *and* correlated with many uncertain pool structures over an isolated outlier.

IVR works on :class:`PosteriorGroup` objects, one per independent GP output (the dipole's λ = 1
GPR, each λ of the polarizability, the local energies of the energy model): the posterior
covariance ``C`` (R, R) of the group's pool outputs given the training data, the rows ``rows[x]``
that labelling candidate ``x`` observes and their noise variance ``σ²``. Labelling ``x`` (rows
``r``) lowers the summed pool variance by::

    gain(x) = tr(C[:, r] (C[r, r] + σ² I)⁻¹ C[r, :])

and the posterior becomes ``C − C[:, r] (C[r, r] + σ² I)⁻¹ C[r, :]``. The score of ``x`` sums the
groups' gains, each divided by the group's current summed pool variance ``tr C`` (targets in
different units become fractions of what is left to learn) and multiplied by its ``weight``
(1 for every target in :func:`select_candidates`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ase import Atoms
from scipy.linalg import cho_factor, cho_solve, solve_triangular

from ..core.errors import ConfigError
from ..structures.neighbours import pair_distances

__all__ = ["PosteriorGroup", "conditioned_group", "ivr_order", "select_candidates"]


def _distance_signature(positions: np.ndarray, template: Atoms | None = None) -> np.ndarray:
    """Sorted interatomic distances (Å) of the structure at ``positions`` with the cell of
    ``template`` (minimum image; none given: a molecule): a rotation-, reflection-,
    permutation- and (in a cell) wrap-invariant signature.

    Dense on purpose (:func:`~mdplugin.structures.neighbours.pair_distances`): the signature
    compares whole structures, so every pair counts, not only neighbours within a cutoff (whose
    number changes from structure to structure); it is computed once per candidate when a batch
    is picked, never in an MD step."""
    atoms = Atoms(positions=positions)
    if template is not None:
        atoms.cell, atoms.pbc = template.cell, template.pbc
    return np.sort(pair_distances(atoms))


@dataclass
class PosteriorGroup:
    """One GP output group of the candidate pool (see the module docstring).

    cov : (R, R) posterior covariance of the pool's outputs given the training data (any units).
    rows : per candidate, the indices (into R) of the outputs its label observes.
    noise : noise variance of one observed output, same units as ``cov``.
    weight : multiplies the group's fractional variance reduction in the score.
    name : label for messages (e.g. ``"dipole"``).
    """

    cov: np.ndarray
    rows: list[np.ndarray]
    noise: float
    weight: float = 1.0
    name: str = ""


def conditioned_group(prior: np.ndarray, n_train_rows: int, noise: float, rows: Sequence[np.ndarray],
                      weight: float = 1.0, name: str = "", jitter: float = 1e-10) -> PosteriorGroup:
    """A :class:`PosteriorGroup` from the joint prior covariance of training and pool outputs.

    ``prior`` (T + R, T + R): the first ``n_train_rows`` = T rows are the observed training
    outputs (noise variance ``noise``), the other R the pool's; ``rows`` index the pool's R rows.
    The pool posterior is ``K_pp − K_pt (K_tt + σ² I)⁻¹ K_tp``; ``jitter`` (relative to the mean
    prior variance) floors σ² so that noise-free data stay well conditioned.
    """
    prior = 0.5 * (prior + prior.T)
    t = int(n_train_rows)
    scale = float(np.mean(np.diag(prior))) if len(prior) else 1.0
    noise_eff = max(float(noise), jitter * max(scale, 1e-300))
    k_pp = prior[t:, t:]
    if t:
        k_tt = prior[:t, :t] + noise_eff * np.eye(t)
        factor = _cholesky(k_tt, scale * jitter)
        v = solve_triangular(factor, prior[:t, t:], lower=True, check_finite=False)
        cov = k_pp - v.T @ v
    else:
        cov = k_pp.copy()
    return PosteriorGroup(cov=0.5 * (cov + cov.T), rows=[np.asarray(r, dtype=int) for r in rows],
                          noise=noise_eff, weight=float(weight), name=name)


def _cholesky(matrix: np.ndarray, eps: float) -> np.ndarray:
    """Lower Cholesky factor, adding ``eps`` (×10 per failure) to the diagonal until it works."""
    eps = max(eps, 1e-300)
    for _ in range(12):
        try:
            return np.linalg.cholesky(matrix)
        except np.linalg.LinAlgError:
            matrix = matrix + eps * np.eye(len(matrix))
            eps *= 10.0
    raise np.linalg.LinAlgError("covariance is not positive definite even with jitter")


def _gains(group: PosteriorGroup, eligible: np.ndarray) -> np.ndarray:
    """Summed pool-variance reduction of labelling each eligible candidate (one group)."""
    cov, out = group.cov, np.zeros(len(eligible))
    for i, x in enumerate(eligible):
        r = group.rows[x]
        if len(r) == 0:
            continue
        g = cov[:, r]  # (R, |r|)
        b = cov[np.ix_(r, r)] + group.noise * np.eye(len(r))
        try:
            out[i] = float(np.sum(g * cho_solve(cho_factor(b, lower=True), g.T).T))
        except np.linalg.LinAlgError:
            out[i] = 0.0
    return out


def _update(group: PosteriorGroup, x: int) -> None:
    """Condition the group's posterior on a label of candidate ``x``."""
    r = group.rows[x]
    if len(r) == 0:
        return
    g = group.cov[:, r]
    b = group.cov[np.ix_(r, r)] + group.noise * np.eye(len(r))
    group.cov = group.cov - g @ cho_solve(cho_factor(b, lower=True), g.T)
    group.cov = 0.5 * (group.cov + group.cov.T)


def ivr_order(groups: Sequence[PosteriorGroup], eligible: Sequence[int], n: int) -> list[int]:
    """Greedy integrated-variance-reduction picks: up to ``n`` indices of ``eligible`` candidates,
    each maximising ``Σ_groups weight · gain(x) / tr(cov)`` under the posterior updated with the
    picks before it (the groups' covariances are updated in place)."""
    eligible = np.asarray(list(eligible), dtype=int)
    picked: list[int] = []
    for _ in range(min(int(n), len(eligible))):
        score = np.zeros(len(eligible))
        for g in groups:
            total = float(np.trace(g.cov))
            if total > 0 and g.weight > 0:
                score += g.weight * _gains(g, eligible) / total
        score[np.isin(eligible, picked)] = -np.inf
        best = int(eligible[int(np.argmax(score))])
        picked.append(best)
        for g in groups:
            _update(g, best)
    return picked


def select_candidates(candidates: list[dict], n: int, selection: str = "max", learner=None,
                      numbers: np.ndarray | None = None, template: Atoms | None = None) -> list[dict]:
    """Up to ``n`` of the candidates over their threshold (``ratio`` > 1).

    ``selection="max"``: the most uncertain first, then each the farthest (distance between
    sorted interatomic distances, :func:`_distance_signature`) from those already picked.

    ``selection="density"``: the candidate x over its threshold that maximises
    ``sum_c r_c² k(c, x)`` over *all* candidates c, with r = ratio (max over targets of
    uncertainty / threshold) and
    ``k = exp(-d²/2h²)`` (d: signature distance, h: twice the median nearest-neighbour distance
    among the candidates) — a proxy of the variance that labelling x removes from what the
    dynamics visit (uncertain *and* representative, where ``max`` favours rare outliers). For
    a batch, each pick scales the others' r² by ``1 - k(c, x)²`` (the GP variance update with
    the correlation approximated by k) before the next.

    ``selection="ivr"``: integrated variance reduction with the models' own posterior over all
    the candidates (module docstring); needs ``learner`` (a fitted
    :class:`~mdplugin.active.learner.Learner`) and the atomic ``numbers`` (n_atoms,) of the
    candidates' structures. Without a GP model (no group from
    :meth:`~mdplugin.active.learner.Learner.posterior_groups`) it falls back to ``density``.

    ``template``: a structure of the run (its atomic numbers, cell and periodicity are the
    candidates'); in a cell the signature takes minimum-image distances.
    """
    r = np.array([c["ratio"] for c in candidates], dtype=float)
    over = np.flatnonzero(r > 1.0)
    if n <= 0 or not len(over):
        return []
    if selection == "ivr":
        if template is not None and numbers is None:
            numbers = template.numbers
        if learner is None or numbers is None:
            raise ConfigError("active: selection 'ivr' needs the learner and the atomic numbers")
        frames = [Atoms(numbers=numbers, positions=c["positions"]) for c in candidates]
        if template is not None:
            for frame in frames:
                frame.cell, frame.pbc = template.cell, template.pbc
        groups = learner.posterior_groups(frames)
        if groups:
            return [candidates[i] for i in ivr_order(groups, over, n)]
        selection = "density"  # no target has a GP posterior (e.g. RPR models only)
    sig = np.array([_distance_signature(c["positions"], template) for c in candidates])
    if selection == "density":
        d = np.linalg.norm(sig[:, None] - sig[None], axis=-1)
        if len(sig) > 1:
            nn = np.sort(d, axis=1)[:, 1]
            h = 2.0 * float(np.median(nn))
        else:
            h = 1.0
        k = np.exp(-0.5 * (d / max(h, 1e-12)) ** 2)
        weight = r**2
        picked: list[int] = []
        for _ in range(min(n, len(over))):
            gain = k[over] @ weight
            gain[np.isin(over, picked)] = -np.inf
            best = int(over[int(np.argmax(gain))])
            picked.append(best)
            weight = weight * (1.0 - k[best] ** 2)
        return [candidates[i] for i in picked]
    order = over[np.argsort(-r[over], kind="stable")]
    sig = sig[order]
    chosen = [0]
    dmin = np.linalg.norm(sig - sig[0], axis=1)
    while len(chosen) < min(n, len(order)):
        dmin[chosen] = -1.0
        i = int(np.argmax(dmin))
        if dmin[i] <= 0:
            break
        chosen.append(i)
        dmin = np.minimum(dmin, np.linalg.norm(sig - sig[i], axis=1))
    return [candidates[int(order[i])] for i in chosen]
