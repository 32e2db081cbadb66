"""Scheduling independent tasks (factorisations, SVDs) over the ranks: each task runs on one rank,
longest first to the least loaded one, and every rank gets every result."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from .comm import wait_quietly

__all__ = ["assign_tasks", "CpuLedger", "share_tasks"]


def assign_tasks(costs: Sequence[float], size: int, start: np.ndarray | None = None) -> np.ndarray:
    """The rank (0 … size−1) that runs each task: longest task first, to the least loaded rank
    (ties: the lowest rank). ``start`` (size,): the loads the ranks already carry (same units as
    ``costs``, e.g. the CPU seconds of :class:`CpuLedger`). Depends only on ``costs``, ``size`` and
    ``start``, so every rank computes the same assignment."""
    loads = np.zeros(max(int(size), 1)) if start is None else np.array(start, dtype=float)
    owner = np.zeros(len(costs), dtype=int)
    for i in sorted(range(len(costs)), key=lambda i: (-float(costs[i]), i)):
        owner[i] = int(np.argmin(loads))
        loads[owner[i]] += float(costs[i])
    return owner


class CpuLedger:
    """The CPU time every rank has spent since a common start (e.g. the start of a fit), as the
    starting loads of :func:`share_tasks`: a round's tasks then go first to the ranks that have
    done least so far (uneven earlier rounds, jitter retries, a slower core even out).

    Task costs are given in floating-point operations and turned into seconds with
    ``flops_per_second`` (one core's rate on dense linear algebra; only the balance depends on it,
    never the results). The loads are gathered (:meth:`loads`), so every rank computes the same
    assignment.
    """

    def __init__(self, comm: Any, flops_per_second: float = 3e10):
        self.comm = comm
        self.rate = float(flops_per_second)
        self.start = time.process_time()

    def loads(self) -> np.ndarray:
        """CPU seconds of every rank since the start (size,): the same array on every rank."""
        mine = time.process_time() - self.start
        if self.comm.size == 1:
            return np.array([mine])
        wait_quietly(self.comm)
        return np.array(self.comm.allgather(float(mine)), dtype=float)

    def assign(self, costs: Sequence[float]) -> np.ndarray:
        """:func:`assign_tasks` of tasks costing ``costs`` flops, from the ranks' loads now
        (collective: every rank must call it)."""
        seconds = np.asarray(costs, dtype=float) / self.rate
        return assign_tasks(seconds, self.comm.size, self.loads())


def share_tasks(comm: Any, costs: Sequence[float], run: Callable[[int], Any], ledger: CpuLedger | None = None,
                owner: np.ndarray | None = None) -> list:
    """``[run(0), run(1), …]`` on every rank, each task run by one rank only.

    ``costs`` (one per task, any units) balance the ranks (:func:`assign_tasks`). ``ledger``
    (a :class:`CpuLedger`; ``costs`` then in flops): the tasks go first to the ranks that have
    spent the least CPU time so far. ``owner``: the assignment itself (e.g. from
    ``ledger.assign`` called earlier to gather each task's input on its rank). Results travel
    in one ``allgather`` (pickled, so any object), except numpy arrays of more than 64 kB, which
    are broadcast from their rank as raw buffers (``Bcast``: no pickling copies; same values,
    shape and memory order). ``run(i)`` must depend only on data every rank holds (or that the
    caller gathered on the task's rank) and be deterministic: its result is then bit for bit the
    serial one, whichever rank computes it. Serial: the tasks in order, in this process.
    """
    if comm.size == 1:
        return [run(i) for i in range(len(costs))]
    if owner is None:
        owner = ledger.assign(costs) if ledger is not None else assign_tasks(costs, comm.size)
    mine = {i: run(i) for i in range(len(costs)) if owner[i] == comm.rank}
    light = {}
    for i, value in mine.items():
        if isinstance(value, np.ndarray) and value.nbytes > 65536:
            if not (value.flags.c_contiguous or value.flags.f_contiguous):
                value = mine[i] = np.ascontiguousarray(value)
            order = "C" if value.flags.c_contiguous else "F"
            light[i] = _Buffer(value.shape, value.dtype.str, order)
        else:
            light[i] = value
    out: list = [None] * len(costs)
    wait_quietly(comm)
    for part in comm.allgather(light):
        for i, value in part.items():
            out[i] = value
    for i, value in enumerate(out):
        if isinstance(value, _Buffer):
            buf = mine[i] if owner[i] == comm.rank else np.empty(value.shape, dtype=value.dtype, order=value.order)
            comm.Bcast(np.ravel(buf, order="K"), root=int(owner[i]))
            out[i] = buf
    return out


class _Buffer:
    """Placeholder for an array result of :func:`share_tasks` that follows as a raw buffer."""

    def __init__(self, shape: tuple, dtype: str, order: str):
        self.shape, self.dtype, self.order = shape, dtype, order
