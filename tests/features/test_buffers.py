"""The expansion engine's buffer pool lends an array again only once every view of it is gone."""

from __future__ import annotations

import gc

import numpy as np

from mdplugin.features.buffers import BufferPool


def test_a_buffer_is_lent_again_only_when_no_view_of_it_lives():
    pool = BufferPool(growth=1.5)
    first = pool.lend("y", (100, 16))
    assert first.flags["C_CONTIGUOUS"] and first.flags["WRITEABLE"] and first.shape == (100, 16)
    assert first.ctypes.data == pool.address("y") and not pool.is_free("y")
    first[:] = 1.0
    derived = first[10:20].reshape(-1)[5:]  # a view of a view: it keeps the loan too
    del first
    gc.collect()
    busy = pool.lend("y", (100, 16))  # the view is alive: a new array, the old numbers untouched
    assert busy.ctypes.data != pool.address("y")
    busy[:] = 2.0
    assert np.all(derived == 1.0)
    del busy
    assert not pool.is_free("y")
    del derived
    assert pool.is_free("y")
    again = pool.lend("y", (80, 16))  # smaller: the same memory
    assert again.ctypes.data == pool.address("y")
    kept = pool.address("y")
    del again
    bigger = pool.lend("y", (200, 16))  # too small: replaced by 1.5 × the request
    assert bigger.shape == (200, 16) and pool.address("y") != kept
    assert pool._storage["y"].size == int(1.5 * 200 * 16)
    other = pool.lend("radial", (2, 0, 4, 5))  # names are independent; empty requests work
    assert other.shape == (2, 0, 4, 5) and pool.is_free("y") is False
