"""The communicator: MPI's ``COMM_WORLD`` under ``mpiexec``, else a one-rank stand-in; and waiting
without spinning.

``get_comm()`` returns ``MPI.COMM_WORLD`` when mpi4py is importable and the job has more than one
rank, else :class:`SerialComm`, with the same small interface (rank, size, allreduce, Allreduce,
bcast, gather, allgather, Barrier). The models take ``comm=None`` for serial
(:func:`resolve_comm`).

MPICH busy-polls inside a blocking call, so a rank that waits for a slower one burns its core:
:func:`wait_quietly` (a nonblocking barrier polled with short sleeps) and :func:`wait_sleeping`
(nonblocking requests completed the same way) wait instead.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["SerialComm", "get_comm", "resolve_comm", "wait_quietly", "wait_sleeping"]


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


def wait_sleeping(requests: list) -> None:
    """Complete the nonblocking MPI ``requests``, polling with sleeps of at most 0.2 ms."""
    pause = 1e-5
    for request in requests:
        while not request.Test():
            time.sleep(pause)
            pause = min(2.0 * pause, 2e-4)
