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
"""

from __future__ import annotations

import numpy as np

__all__ = ["farthest_starts"]


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
