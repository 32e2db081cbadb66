"""MPI helpers over mpi4py; everything works unchanged without MPI (one rank).

``get_comm()`` returns ``MPI.COMM_WORLD`` when mpi4py is importable and the job has more than one
rank, else a serial stand-in with the same small interface (rank, size, allreduce, bcast, gather).
"""

from __future__ import annotations

import numpy as np


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


def split_indices(n: int, rank: int, size: int) -> np.ndarray:
    """The contiguous block of ``range(n)`` that rank ``rank`` of ``size`` handles."""
    bounds = np.linspace(0, n, size + 1).round().astype(int)
    return np.arange(bounds[rank], bounds[rank + 1])
