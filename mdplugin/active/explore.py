"""Where an exploring run starts its segments (``ActiveConfig.explore``, the default).

One trajectory from one start stays in the basin it starts in for picoseconds, so its candidates
(and labels) describe that basin only. An exploring run starts every segment — every replica,
one per MPI rank — afresh from the structure that is **farthest from all earlier segment
starts** among the structures it knows: the labelled frames and the pool's candidates (those
below ``stop_factor`` × their threshold, which the models still trust to run from). The farthest
known structures lie on the edge of what has been visited, so each segment pushes outwards and
the next start is chosen from what it found: a chain of short replicas that walks across barriers
one segment would rarely cross, with diverse starts by construction. The distance is the one of
the selection (:func:`mdplugin.active.selection._distance_signature`: sorted interatomic
distances, invariant under rotations, reflections, permutations and, in a cell, wrapping).

Only **thermally accessible** structures are starts (:func:`thermal_window`): the farthest known
structures are otherwise the most distorted ones (a hot segment on a young model stretches bonds
or presses two hydrogens together), and a chain of starts from them walks off into chemistry the
run's temperature never visits instead of across the barriers it does.

Neither is a structure that lies in a **hole of a young energy model** labelled or fitted
(:func:`short_contact`, :func:`bond_graph`, :func:`above_label_window`): hot segments on a model
trained on a few frames run, within a few steps of a start, into structures the model puts far
too low — two hydrogens 0.2–0.4 Å apart, a C–H bond stretched to 2 Å, the molecule falling apart;
labelled, such frames lie 3–320 eV above the others, and fitted, they spoil the models (and,
through the errors recorded, the relative thresholds) so that the next segments find more holes.
A structure with two atoms nearer than ``explore_contact`` × the sum of their covalent radii, or
whose bonds (pairs nearer than ``explore_bonds`` × that sum) differ from those of its segment's
start, ends its segment before any oracle call: at the temperatures of the run no bond breaks or
forms (a barrier of eV against kT = 0.09 eV at 1000 K), so such a structure is the model's error,
not chemistry to learn. A labelled frame whose oracle energy lies far above the label window at
the hottest temperature of the run is kept apart (``refused.xyz``, counted as an oracle call,
never fitted).
"""

from __future__ import annotations

import numpy as np

__all__ = ["above_label_window", "bond_graph", "farthest_starts", "short_contact", "thermal_window"]

#: Boltzmann constant, eV/K
K_B = 8.617333262e-5


def farthest_starts(signatures: np.ndarray, earlier: np.ndarray, n: int) -> list[int]:
    """Greedy farthest-point choice of ``n`` starts.

    Parameters
    ----------
    signatures : (m, d) signatures of the structures to start from (Å, sorted distances).
    earlier : (k, d) signatures of the earlier starts (k may be 0).
    n : number of starts (one per replica).

    Returns the indices (into ``signatures``) of the ``n`` picks, each the structure whose smallest
    distance to the earlier starts and the picks before it is largest (ties: the first). With
    ``m < n`` indices repeat (cycled) so that every replica gets a start.
    """
    signatures = np.asarray(signatures, dtype=float)
    m = len(signatures)
    if m == 0:
        raise ValueError("no structure to start a segment from")
    earlier = np.asarray(earlier, dtype=float).reshape(-1, signatures.shape[1])
    if len(earlier):
        nearest = np.min(np.linalg.norm(signatures[:, None, :] - earlier[None, :, :], axis=2), axis=1)
    else:
        nearest = np.full(m, np.inf)
    picks: list[int] = []
    for _ in range(min(n, m)):
        i = int(np.argmax(nearest))
        picks.append(i)
        nearest = np.minimum(nearest, np.linalg.norm(signatures - signatures[i], axis=1))
        nearest[i] = -1.0
    return [picks[j % len(picks)] for j in range(n)]


def thermal_window(energies: np.ndarray, reference: float, n_atoms: int, temperature: float,
                   width: float) -> np.ndarray:
    """Which structures are thermally accessible starts at ``temperature``.

    Parameters
    ----------
    energies : (m,) potential energies, eV (NaN: unknown, never accepted).
    reference : the lowest known potential energy, eV (of the labelled frames).
    n_atoms : atoms per structure.
    temperature : K (the thermostat's, without the hot-segment factor).
    width : how many standard deviations above the mean are accepted.

    Returns a boolean mask (m,): ``-width sqrt(d/2) kT <= E - reference <= kT (d/2 + width sqrt(d/2))``
    with ``d = 3 n_atoms`` — the classical potential energy of ``d`` harmonic degrees of freedom has
    mean ``d kT / 2`` and standard deviation ``sqrt(d/2) kT`` above the minimum, so a structure beyond
    the upper bound is one the dynamics at ``temperature`` visit rarely; one that far *below* the
    lowest labelled energy (a model's energy of a candidate) is a hole of the model, not a basin.
    """
    energies = np.asarray(energies, dtype=float)
    half_dof = 1.5 * int(n_atoms)
    spread = K_B * float(temperature) * float(width) * np.sqrt(half_dof)
    upper = K_B * float(temperature) * half_dof + spread
    with np.errstate(invalid="ignore"):
        excess = energies - float(reference)
        return np.isfinite(energies) & (excess <= upper) & (excess >= -spread)


def short_contact(atoms, factor: float) -> tuple[int, int, float] | None:
    """The closest pair of atoms nearer than ``factor`` × the sum of their covalent radii (ASE's
    ``covalent_radii``; images count in a cell): ``(i, j, distance Å)``, or ``None`` when there is
    none. With ``factor`` 0.7 the limits are 0.43 Å for H–H, 0.75 Å for C–H, 0.68 Å for O–H and
    1.07 Å for C–C: bonds at 1000 K come nowhere near them (a C–H bond pressed to 0.75 Å costs
    ~3 eV), while a young energy model's holes press two hydrogens to 0.2–0.4 Å."""
    from ase.data import covalent_radii

    from ..structures.neighbours import neighbour_pairs

    if len(atoms) < 2:
        return None
    radii = covalent_radii[np.asarray(atoms.numbers)]
    cutoff = float(factor) * 2.0 * float(radii.max())
    pairs = neighbour_pairs(atoms, cutoff, full_list=False)
    if len(pairs) == 0:
        return None
    ratio = np.asarray(pairs.distances) / (float(factor) * (radii[pairs.i] + radii[pairs.j]))
    k = int(np.argmin(ratio))
    if ratio[k] >= 1.0:
        return None
    return int(pairs.i[k]), int(pairs.j[k]), float(pairs.distances[k])


def bond_graph(atoms, factor: float) -> frozenset[tuple[int, int]]:
    """The bonds of a structure: the pairs ``(i, j)``, ``i < j``, nearer than ``factor`` × the sum of
    their covalent radii (ASE's ``covalent_radii``; images count in a cell, a pair bonded through
    any image is bonded). With ``factor`` 1.3 a C–H bond (1.09 Å) breaks at 1.39 Å (about 6 of its
    1000 K standard deviations), C–Cl (1.79 Å) at 2.31 Å, O–H at 1.26 Å (a hydrogen bond is 1.8 Å),
    and two hydrogens bond below 0.81 Å."""
    from ase.data import covalent_radii

    from ..structures.neighbours import neighbour_pairs

    if len(atoms) < 2:
        return frozenset()
    radii = covalent_radii[np.asarray(atoms.numbers)]
    pairs = neighbour_pairs(atoms, float(factor) * 2.0 * float(radii.max()), full_list=False)
    if len(pairs) == 0:
        return frozenset()
    i, j = np.asarray(pairs.i), np.asarray(pairs.j)
    bonded = np.asarray(pairs.distances) < float(factor) * (radii[i] + radii[j])
    lo, hi = np.minimum(i, j)[bonded], np.maximum(i, j)[bonded]
    return frozenset(zip(lo.tolist(), hi.tolist()))


def label_window_top(n_atoms: int, temperature: float, width: float) -> float:
    """The highest potential energy above the lowest labelled one (eV) a label may carry:
    ``kT (3N/2 + width sqrt(3N/2))`` with ``T`` the hottest temperature of the run (K), N atoms —
    the mean classical potential energy of 3N harmonic degrees of freedom plus ``width`` standard
    deviations (the upper bound of :func:`thermal_window`, at the hot segments' temperature)."""
    half_dof = 1.5 * int(n_atoms)
    return K_B * float(temperature) * (half_dof + float(width) * np.sqrt(half_dof))


def above_label_window(energy: float, reference: float, n_atoms: int, temperature: float,
                       width: float) -> bool:
    """Whether a labelled frame's oracle energy ``energy`` (eV) lies above the label window
    (:func:`label_window_top`) over ``reference``, the lowest labelled energy (eV) of the same
    composition. NaN energies are not judged (``False``). Below the window is never refused: the
    oracle's energy far below the others is a new basin, not a hole (a model's could be one)."""
    excess = float(energy) - float(reference)
    return bool(np.isfinite(excess) and excess > label_window_top(n_atoms, temperature, width))
