"""Collectives over the ranks by *blocks of frames*: the same blocks a serial fit uses, so every
per-frame number is computed by identical code on any number of ranks.

* :func:`split_indices`, :func:`local_blocks` – which frames / blocks a rank handles (contiguous,
  in order);
* :func:`allgather_blocks` – every rank's per-block results, concatenated in block order;
* :func:`sum_over_ranks` – element-wise sums (``Allreduce``) of float arrays / scalars;
* :func:`rank_offset` – where this rank's rows start in the rank-ordered concatenation;
* :func:`allgather_array` – a small float array from every rank, waiting without spinning;
* :func:`gather_rows` – chosen rows of arrays whose rows are spread over the ranks, as raw buffers;
* :class:`TreeSum` – a sum over blocks that is bit for bit the serial one on any number of ranks.

With :class:`~.comm.SerialComm` they are no-ops that return their input, so a serial fit runs the
same operations as it would without MPI.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

import numpy as np

from .comm import wait_quietly, wait_sleeping

__all__ = ["split_indices", "local_blocks", "allgather_blocks", "sum_over_ranks", "rank_offset",
           "allgather_array", "gather_rows", "TreeSum", "merge_rank_results"]


def split_indices(n: int, rank: int, size: int) -> np.ndarray:
    """The contiguous block of ``range(n)`` that rank ``rank`` of ``size`` handles."""
    bounds = np.linspace(0, n, size + 1).round().astype(int)
    return np.arange(bounds[rank], bounds[rank + 1])


def local_blocks(n_items: int, block: int, comm: Any) -> list[int]:
    """Start indices of the blocks ``range(start, start + block)`` of ``range(n_items)`` that
    this rank handles: the serial block list split into ``comm.size`` contiguous runs."""
    starts = list(range(0, n_items, max(int(block), 1)))
    return [starts[i] for i in split_indices(len(starts), comm.rank, comm.size)]


def allgather_blocks(comm: Any, parts: Sequence) -> list:
    """Concatenate every rank's list ``parts`` in rank order (= block order with
    :func:`local_blocks`). Serial: ``list(parts)`` (the same objects, no copy)."""
    if comm.size == 1:
        return list(parts)
    wait_quietly(comm)
    out: list = []
    for chunk in comm.allgather(list(parts)):
        out.extend(chunk)
    return out


def sum_over_ranks(comm: Any, value):
    """Element-wise sum over ranks of a float array (a new array) or a Python float.
    Serial: ``value`` itself (bit-for-bit, no copy)."""
    if comm.size == 1:
        return value
    if np.ndim(value) == 0 and not isinstance(value, np.ndarray):
        return comm.allreduce(value)
    send = np.ascontiguousarray(value, dtype=float)
    recv = np.empty_like(send)
    comm.Allreduce(send, recv)
    return recv


def gather_rows(comm: Any, arrays: dict, index: np.ndarray, offset: int, n_local: int, root: int | None = None):
    """Rows ``index`` (global row numbers) of arrays whose rows are spread over ranks.

    Every rank holds the rows ``offset … offset + n_local − 1`` of each array in ``arrays``
    (same keys on every rank that holds any row; ranks without rows may pass ``{}``). Returns
    ``{key: array (len(index), ...)}`` with row ``k`` = global row ``index[k]``: on every rank
    (``root`` None, an allgather) or only on rank ``root`` (a gather; the other ranks get None).
    Serial: ``{key: a[index]}``.
    """
    index = np.asarray(index, dtype=int)
    if comm.size == 1:
        return {key: a[index - offset] for key, a in arrays.items()}
    mine = np.flatnonzero((index >= offset) & (index < offset + n_local))
    # the positions and the arrays' row shapes travel pickled (small); the rows as raw buffers
    # (a pickled array costs two extra copies of itself: on a rank 4-5x the time of the transfer)
    layout = {key: (a.shape[1:], a.dtype.str) for key, a in arrays.items()} if len(mine) else {}
    wait_quietly(comm)
    every = comm.allgather((mine, layout))
    shapes: dict = {}
    for _, part in every:
        for key, shape in part.items():
            shapes.setdefault(key, shape)
    receive = root is None or comm.rank == root
    out = {key: np.zeros((len(index),) + tuple(shape), dtype=dtype) for key, (shape, dtype) in shapes.items()} \
        if receive else None
    keys = [(source, positions, key) for source, (positions, part) in enumerate(every) for key in sorted(part, key=repr)]

    def own_rows(key):
        return np.ascontiguousarray(arrays[key][index[mine] - offset])

    if root is None:  # every rank's rows to every rank, one broadcast per rank and key
        for source, positions, key in keys:
            shape, dtype = every[source][1][key]
            rows = own_rows(key) if source == comm.rank else np.empty((len(positions),) + tuple(shape), dtype=dtype)
            comm.Bcast(rows, root=source)
            out[key][positions] = rows
        return out
    if comm.rank != root:  # send this rank's rows; wait sleeping (MPI would spin until the root takes them)
        requests = [comm.Isend(own_rows(key), dest=root, tag=7311) for source, _, key in keys if source == comm.rank]
        wait_sleeping(requests)
        return None
    incoming = []  # post every receive first, so that no sender waits while the root copies its own rows
    for source, positions, key in keys:
        if source != comm.rank:
            shape, dtype = every[source][1][key]
            rows = np.empty((len(positions),) + tuple(shape), dtype=dtype)
            incoming.append((positions, key, rows, comm.Irecv(rows, source=source, tag=7311)))
    for source, positions, key in keys:
        if source == comm.rank:
            out[key][positions] = own_rows(key)
    wait_sleeping([request for *_, request in incoming])
    for positions, key, rows, _ in incoming:
        out[key][positions] = rows
    return out


def rank_offset(comm: Any, n_local: int) -> tuple[int, int]:
    """(offset, total): the first global row of this rank's ``n_local`` rows when every rank's
    rows are concatenated in rank order, and the total number of rows. Serial: ``(0, n_local)``."""
    if comm.size == 1:
        return 0, int(n_local)
    counts = comm.allgather(int(n_local))
    return int(sum(counts[: comm.rank])), int(sum(counts))


def allgather_array(comm: Any, values: np.ndarray) -> np.ndarray:
    """Every rank's float array ``values`` (same shape on every rank): (size, *shape).

    For frequent small exchanges (a step of the distributed farthest-point sampling): a
    nonblocking ``Iallgather`` polled with a few ``sched_yield`` then short sleeps (≤ 0.2 ms), so a
    rank that waits for a slower one leaves its core to other processes instead of spinning in
    MPI (MPICH busy-polls in blocking calls, which on a loaded machine turns every wait for a
    descheduled rank into CPU time).
    Serial: ``values[None]``.
    """
    send = np.ascontiguousarray(values, dtype=float)
    if comm.size == 1:
        return send[None]
    recv = np.empty((comm.size,) + send.shape)
    request = comm.Iallgather(send, recv)
    yield_core = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))
    polls, pause = 0, 2e-5
    while not request.Test():
        if polls < 16:  # the other ranks are usually microseconds away: yield a few times,
            yield_core()
            polls += 1
        else:  # then sleep (an idle core's sched_yield returns at once: spinning CPU time)
            time.sleep(pause)
            pause = min(2.0 * pause, 2e-4)
    return recv


def _tree_split(lo: int, hi: int) -> int:
    """Where :class:`TreeSum` splits the node ``[lo, hi)`` (hi − lo ≥ 2): at the rounded middle,
    as :func:`split_indices` splits ``range(n)`` between 2 ranks."""
    return lo + int(round((hi - lo) / 2))


def _is_tree_node(lo: int, hi: int, n: int) -> bool:
    """Whether ``[lo, hi)`` is a node of :class:`TreeSum`'s tree over ``[0, n)``."""
    a, b = 0, n
    while (a, b) != (lo, hi):
        if b - a < 2:
            return False
        mid = _tree_split(a, b)
        if hi <= mid:
            b = mid
        elif lo >= mid:
            a = mid
        else:
            return False
    return True


class TreeSum:
    """A sum of ``n_terms`` block terms that gives, on every rank, bit for bit the serial sum,
    with a short tail: the terms are added in a fixed binary tree over the block indices
    (node ``[lo, hi)`` = node ``[lo, mid)`` + node ``[mid, hi)``, ``mid`` the rounded middle).

    Each rank adds its terms in block order and merges every complete node as soon as both
    children are there, so it keeps at most ~log₂(blocks) partial sums; :meth:`result` sends each
    rank's complete nodes to rank 0 (one ``M × M`` matrix per rank on 2 ranks: the two halves),
    which merges them the same way and broadcasts the root. Every node is the same two numbers
    added on whichever rank, so the sum does not depend on the number of ranks.

    Why not ``Allreduce``: floating-point addition is not associative, and the regularised normal
    equations of the GPR models amplify rounding, so an ``Allreduce`` of per-rank partial sums
    would change predictions at the 1e-8–1e-6 relative level with the number of ranks (as does
    changing the number of BLAS threads in a serial fit). Unlike a sequential sum passed from rank
    to rank, the work left after the slowest rank's last block is one addition per tree level.
    ``add`` takes ownership of array terms (they are summed in place); ``shape=()`` sums scalars
    (0-d float64 arrays, the same IEEE additions as Python floats).
    """

    def __init__(self, comm: Any, shape: tuple | int, n_terms: int):
        self.comm = comm
        self.shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.n_terms = int(n_terms)
        self._stack: list = []  # complete nodes (lo, hi, value), in block order

    def add(self, index: int, term) -> None:
        """Add the term of block ``index`` (0 … n_terms − 1; each rank in increasing order)."""
        value = np.array(term, dtype=float) if np.ndim(term) == 0 else term
        self._stack.append((int(index), int(index) + 1, value))
        self._merge()

    def _merge(self) -> None:
        stack = self._stack
        while len(stack) >= 2:
            (lo, mid, left), (mid2, hi, right) = stack[-2], stack[-1]
            if mid != mid2 or _tree_split(lo, hi) != mid or not _is_tree_node(lo, hi, self.n_terms):
                return
            left += right
            stack[-2:] = [(lo, hi, left)]

    def result(self) -> np.ndarray:
        """The sum (collective: every rank must call it); a 0-d array for scalar sums."""
        comm = self.comm
        if comm.size > 1:
            wait_quietly(comm)
            if comm.rank == 0:
                for source in range(1, comm.size):
                    for lo, hi in comm.recv(source=source, tag=7302):
                        value = np.empty(self.shape)
                        comm.Recv(value, source=source, tag=7303)
                        self._stack.append((lo, hi, value))
                        self._merge()
            else:
                comm.send([(lo, hi) for lo, hi, _ in self._stack], dest=0, tag=7302)
                for _, _, value in self._stack:
                    comm.Send(np.array(value, dtype=float, order="C", copy=None), dest=0, tag=7303)
        if comm.rank == 0:
            if self.n_terms == 0:
                total = np.zeros(self.shape)
            else:
                if [(lo, hi) for lo, hi, _ in self._stack] != [(0, self.n_terms)]:
                    raise RuntimeError("TreeSum.result before every block's term was added")
                total = np.array(self._stack[0][2], dtype=float, order="C", copy=None)
        else:
            total = np.empty(self.shape)
        self._stack = []
        if comm.size > 1:
            comm.Bcast(total, root=0)
        return total


def merge_rank_results(comm, local: dict, error: str | None, error_type: type[Exception]) -> dict:
    """Every rank's ``{index: result}`` merged on every rank (``allgather``); if any rank reports an
    ``error`` (a one-line message), every rank raises ``error_type`` with the first one, so that no
    rank waits for the others. ``comm=None``: ``local`` itself (a serial run raised already)."""
    if comm is None:
        return local
    gathered = comm.allgather((local, error))
    errors = [e for _, e in gathered if e]
    if errors:
        raise error_type(errors[0])
    merged: dict = {}
    for part, _ in gathered:
        merged.update(part)
    return merged
