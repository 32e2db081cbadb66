"""A thread-backed stand-in for an mpi4py communicator, to test collective algorithms serially.

``run_ranks(size, fn)`` runs ``fn(comm)`` on ``size`` threads, each with its own ``ThreadComm``
(``rank``, ``size``, ``allgather``, ``allreduce``, ``Allreduce``, ``gather``, ``bcast``, ``Bcast``, ``Iallgather``,
``send``/``recv``, ``Send``/``Recv``, ``Isend``/``Irecv``, ``Barrier``), and returns the results in rank order. Every rank calls the collectives in the same
order, as with MPI. Numpy releases the GIL little here, so this checks logic, not speed.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

import numpy as np


class _Shared:
    def __init__(self, size: int):
        self.size = size
        self.slots: list = [None] * size
        self.barrier = threading.Barrier(size, timeout=60)
        self.lock = threading.Lock()
        self.queues: dict = {}

    def queue(self, source: int, dest: int, tag: int) -> queue.Queue:
        with self.lock:
            return self.queues.setdefault((source, dest, tag), queue.Queue())


class _Done:
    """A request that has completed."""

    def Test(self) -> bool:
        return True

    def Wait(self) -> None:
        return None


class _Receive:
    """A nonblocking receive: complete once a matching message is in the queue (requests of one
    (source, tag) must be tested in the order they were posted, as MPI matches them)."""

    def __init__(self, box: queue.Queue, buf):
        self.box, self.buf, self.done = box, buf, False

    def Test(self) -> bool:
        if not self.done:
            try:
                data = self.box.get_nowait()
            except queue.Empty:
                return False
            self.buf[...] = data
            self.done = True
        return True

    def Wait(self) -> None:
        data = None if self.done else self.box.get(timeout=60)
        if not self.done:
            self.buf[...] = data
            self.done = True


class ThreadComm:
    """One rank's view of a communicator whose ranks are threads of this process."""

    def __init__(self, shared: _Shared, rank: int):
        self._shared = shared
        self.rank = rank
        self.size = shared.size

    def Get_rank(self) -> int:
        return self.rank

    def Get_size(self) -> int:
        return self.size

    def allgather(self, value) -> list:
        shared = self._shared
        shared.slots[self.rank] = value
        shared.barrier.wait()
        out = list(shared.slots)
        shared.barrier.wait()  # nobody overwrites a slot before every rank has read it
        return out

    def gather(self, value, root: int = 0):
        out = self.allgather(value)
        return out if self.rank == root else None

    def bcast(self, value, root: int = 0):
        return self.allgather(value)[root]

    def Bcast(self, buf, root: int = 0) -> None:
        """Copy the numpy array ``buf`` of rank ``root`` into every other rank's ``buf``."""
        data = self.allgather(buf if self.rank == root else None)[root]
        if self.rank != root:
            buf[...] = data

    def allreduce(self, value):
        """The sum over ranks (in rank order) of a Python number."""
        return sum(self.allgather(value))

    def Allreduce(self, sendbuf, recvbuf) -> None:
        """The element-wise sum over ranks (in rank order) of ``sendbuf`` into ``recvbuf``."""
        parts = self.allgather(np.array(sendbuf))
        total = parts[0].copy()
        for part in parts[1:]:
            total += part
        recvbuf[...] = total

    def Iallgather(self, sendbuf, recvbuf):
        """Every rank's ``sendbuf`` into ``recvbuf`` (size, ...); returns a completed request."""
        recvbuf[...] = np.stack(self.allgather(np.array(sendbuf)))
        return _Done()

    def send(self, value, dest: int, tag: int = 0) -> None:
        self._shared.queue(self.rank, dest, tag).put(value)

    def recv(self, source: int, tag: int = 0):
        return self._shared.queue(source, self.rank, tag).get(timeout=60)

    def Send(self, buf, dest: int, tag: int = 0) -> None:
        self.send(np.array(buf), dest, tag)

    def Recv(self, buf, source: int, tag: int = 0) -> None:
        buf[...] = self.recv(source, tag)

    def Isend(self, buf, dest: int, tag: int = 0):
        self.Send(buf, dest, tag)
        return _Done()

    def Irecv(self, buf, source: int, tag: int = 0):
        return _Receive(self._shared.queue(source, self.rank, tag), buf)

    def Barrier(self) -> None:
        self._shared.barrier.wait()

    barrier = Barrier


def run_ranks(size: int, fn: Callable[[ThreadComm], Any]) -> list:
    """``[fn(comm_0), …, fn(comm_{size-1})]``, the ranks running concurrently on threads."""
    shared = _Shared(size)
    results: list = [None] * size
    errors: list = []

    def work(rank: int) -> None:
        try:
            results[rank] = fn(ThreadComm(shared, rank))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)
            shared.barrier.abort()

    threads = [threading.Thread(target=work, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
