"""MPI helpers over mpi4py; everything works unchanged without MPI (one rank).

``get_comm()`` returns ``MPI.COMM_WORLD`` when mpi4py is importable and the job has more than one
rank, else a serial stand-in with the same small interface (rank, size, allreduce, Allreduce,
bcast, gather, allgather, Barrier).

The models' ``fit(..., comm=...)`` use the helpers below to share work by *blocks of frames*
(the same blocks a serial fit uses, so every per-frame number is computed by identical code):

* :func:`local_blocks` – the block start indices a rank handles (contiguous, in order);
* :func:`allgather_blocks` – every rank's per-block results, concatenated in block order;
* :func:`sum_over_ranks` – element-wise sums (``Allreduce``) of float arrays / scalars;
* :func:`share_tasks` – independent tasks (factorisations, SVDs) each run on one rank, results
  on every rank;
* :func:`rank_offset` – where this rank's rows start in the rank-ordered concatenation;
* :func:`allgather_array` – a small float array from every rank, waiting without spinning;
* :func:`gather_rows` – chosen rows of arrays whose rows are spread over the ranks, as raw buffers;
* :class:`TreeSum` – a sum over blocks that is bit for bit the serial one on any number of ranks.

With :class:`SerialComm` the gathers and sums are no-ops that return their input, so a serial fit
runs the same operations as it would without MPI.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

__all__ = [
    "SerialComm",
    "get_comm",
    "resolve_comm",
    "split_indices",
    "local_blocks",
    "allgather_blocks",
    "sum_over_ranks",
    "gather_rows",
    "assign_tasks",
    "share_tasks",
    "rank_offset",
    "allgather_array",
    "TreeSum",
    "max_rss_mib",
    "PhaseTimer",
    "CpuLedger",
    "wait_quietly",
]


class SerialComm:
    """The one-rank communicator used when MPI is absent."""

    rank = 0
    size = 1

    def Get_rank(self) -> int:
        return 0

    def Get_size(self) -> int:
        return 1

    def allreduce(self, value, op=None):
        return value

    def Allreduce(self, sendbuf, recvbuf, op=None):
        recvbuf[...] = sendbuf

    def bcast(self, value, root: int = 0):
        return value

    def gather(self, value, root: int = 0):
        return [value]

    def allgather(self, value):
        return [value]

    def Barrier(self) -> None:
        return None

    barrier = Barrier


def get_comm():
    """MPI.COMM_WORLD if running under mpiexec with > 1 rank, else :class:`SerialComm`."""
    try:
        from mpi4py import MPI
    except ImportError:
        return SerialComm()
    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() > 1 else SerialComm()


def resolve_comm(comm: Any = None):
    """``comm`` itself, or a :class:`SerialComm` for ``None`` (the models' default: serial)."""
    return SerialComm() if comm is None else comm


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


def wait_quietly(comm: Any) -> None:
    """Wait, sleeping, until every rank of ``comm`` has called this (a nonblocking barrier
    polled with short sleeps). Called before the collectives where one rank can wait long for
    another (shared factorisations, the ordered sums, the gathers after uneven work): MPICH
    busy-polls inside a blocking call, so without it a waiting rank burns its core (CPU time that
    other jobs on a shared node lose) until the slower rank arrives. No-op on one rank or without
    ``Ibarrier``."""
    if comm.size == 1 or not hasattr(comm, "Ibarrier"):
        return
    request = comm.Ibarrier()
    pause = 1e-5
    while not request.Test():
        time.sleep(pause)
        pause = min(2.0 * pause, 1e-3)


def max_rss_mib() -> float:
    """Peak resident memory of this process in MiB (``getrusage``; kB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


class PhaseTimer:
    """CPU and wall time of the phases of a fit on this rank (for finding waits and imbalance).

    Enabled by the environment variable ``MDPLUGIN_FIT_TIMES`` (any non-empty value; otherwise
    every call is a no-op): ``timer("phase")`` closes the phase that started at the previous call
    (or at construction) and :meth:`report` prints one line per phase to stderr::

        fit-times <label> rank r/P <phase> cpu <s> wall <s> faults <minor page faults>

    Phases with the same name add up. CPU time is ``time.process_time`` (user + system): a rank
    that waits in a blocking MPI call (MPICH busy-polls) shows cpu ≈ wall there, a rank that is
    descheduled by other jobs shows wall > cpu.
    """

    def __init__(self, comm: Any, label: str = "fit"):
        self.enabled = bool(os.environ.get("MDPLUGIN_FIT_TIMES"))
        self.rank, self.size, self.label = int(comm.rank), int(comm.size), label
        self.phases: dict[str, list[float]] = {}
        self._last = self._now() if self.enabled else None

    @staticmethod
    def _now() -> tuple[float, float, float]:
        return time.process_time(), time.perf_counter(), float(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)

    def __call__(self, phase: str) -> None:
        if not self.enabled:
            return
        now = self._now()
        got = self.phases.setdefault(phase, [0.0, 0.0, 0.0])
        for i in range(3):
            got[i] += now[i] - self._last[i]
        self._last = now

    def report(self) -> None:
        if not self.enabled:
            return
        total = [sum(v[i] for v in self.phases.values()) for i in range(3)]
        for phase, (cpu, wall, faults) in [*self.phases.items(), ("total", total)]:
            print(f"fit-times {self.label} rank {self.rank}/{self.size} {phase:<24} cpu {cpu:7.2f} "
                  f"wall {wall:7.2f} faults {faults:9.0f}", file=sys.stderr, flush=True)


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
        _wait_sleeping(requests)
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
    _wait_sleeping([request for *_, request in incoming])
    for positions, key, rows, _ in incoming:
        out[key][positions] = rows
    return out


def _wait_sleeping(requests: list) -> None:
    """Complete the nonblocking MPI ``requests``, polling with sleeps of at most 0.2 ms."""
    pause = 1e-5
    for request in requests:
        while not request.Test():
            time.sleep(pause)
            pause = min(2.0 * pause, 2e-4)


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
