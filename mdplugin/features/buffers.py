"""Scratch arrays an engine lends out at every MD step and takes back when nothing uses them.

An MD step asks the expansion engine for the same large per-pair arrays at every step (the
harmonics' gradients, the pairs' radial values: 19 and 12.6 MB for a 1536-atom water box). Fresh
arrays of that size come from the kernel as new pages at every step (glibc hands memory above its
32 MB reuse limit straight back), and the page faults cost up to half a step. A
:class:`BufferPool` keeps one buffer per name and lends views of it; the expansion that receives
them may live on (a user keeps it, the calculator holds the previous structure's), so a buffer is
lent again only once every view of the last loan is gone — while a loan is out, the pool hands out
new arrays instead.

How a loan is known to be returned: the lent array is made from a small :class:`_Loan` object
(``__array_interface__``), which numpy keeps as the ``base`` of the array and of every view made
from it (numpy collapses view chains to the first base that is not a view). The pool holds the
loan only through a weak reference: when the last view dies, so does the loan.
"""

from __future__ import annotations

import weakref

import numpy as np

__all__ = ["BufferPool"]


class _Loan:
    """The owner numpy sees behind a lent array: the first ``shape`` elements of ``storage``."""

    __slots__ = ("storage", "__array_interface__", "__weakref__")

    def __init__(self, storage: np.ndarray, shape: tuple):
        self.storage = storage  # keeps the memory alive while a view is out
        self.__array_interface__ = {"shape": tuple(int(s) for s in shape), "typestr": storage.dtype.str,
                                    "data": (storage.ctypes.data, False), "version": 3}


class BufferPool:
    """Named scratch buffers, lent as C-contiguous arrays and reused once every view of the last loan
    is gone (see the module doc).

    Parameters
    ----------
    growth : float
        A buffer too small for a request is replaced by one ``growth`` times the request (room for
        the number of pairs to grow between steps).
    """

    def __init__(self, growth: float = 1.25):
        self.growth = float(growth)
        self._storage: dict[str, np.ndarray] = {}
        self._loans: dict[str, weakref.ref] = {}

    def is_free(self, name: str) -> bool:
        """Whether buffer ``name`` exists and no view of its last loan is alive."""
        loan = self._loans.get(name)
        return name in self._storage and (loan is None or loan() is None)

    def lend(self, name: str, shape: tuple, dtype=np.float64) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` and ``dtype``: a view of buffer ``name``
        when it is free (grown when too small), else a new array that the pool does not track."""
        dtype = np.dtype(dtype)
        size = int(np.prod(shape, dtype=np.int64))
        if name in self._storage and not self.is_free(name):
            return np.empty(shape, dtype)  # the last loan is still in use: never overwrite it
        storage = self._storage.get(name)
        if storage is None or storage.dtype != dtype or storage.size < size:
            storage = np.empty(max(1, int(self.growth * size)), dtype)
            self._storage[name] = storage
        loan = _Loan(storage, shape)
        self._loans[name] = weakref.ref(loan)
        return np.asarray(loan)

    def address(self, name: str) -> int | None:
        """The memory address of buffer ``name`` (None when there is none): what a test compares
        with a lent array's ``ctypes.data`` (a reference to the buffer would hold it)."""
        storage = self._storage.get(name)
        return None if storage is None else int(storage.ctypes.data)
