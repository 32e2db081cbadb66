"""Read the blocks of a metatensor ``TensorMap`` into numpy arrays, fast.

featomic returns a spherical expansion as a ``TensorMap`` with one block per (l, centre species,
neighbour species): 45 blocks for a three-element molecule, each with values, sample labels and,
for forces, a gradient block. metatensor's Python accessors cost tens of microseconds per array
(DLPack capsules, wrapper objects, ``len`` of labels extracting every value), which made turning
one frame's expansion into arrays take three times as long as featomic's own calculation.
:class:`BlockReader` reads the same data through metatensor's public C API
(``mts_tensormap_keys``, ``mts_tensormap_block_by_id``, ``mts_block_data``, ``mts_block_labels``,
``mts_block_gradient``, ``mts_labels_values_cpu`` and the array's ``as_dlpack``), one copy per array
and no wrapper objects, and only what the caller asks for.

If anything in that path is not as expected (another metatensor version, a non-CPU or non-float64
array), it falls back to metatensor's Python API, which gives the same arrays
(``tests/test_expansion.py`` checks that both paths agree exactly).
"""

from __future__ import annotations

import ctypes

import numpy as np

__all__ = ["BlockReader"]


class _View:
    """An object numpy can copy from: a raw pointer with shape, strides and type."""

    __slots__ = ("__array_interface__",)

    def __init__(self, pointer: int, shape: tuple, typestr: str, strides: tuple | None = None):
        self.__array_interface__ = {
            "data": (pointer, True),
            "shape": shape,
            "typestr": typestr,
            "strides": strides,
            "version": 3,
        }


class _CApi:
    """metatensor C-API reads; every method returns numpy copies."""

    def __init__(self, tensor) -> None:
        from ctypes_dlpack import DLDevice, DLDeviceType, DLManagedTensorVersioned, DLPackVersion
        from metatensor._c_api import c_uintptr_t, mts_array_t, mts_block_t
        from metatensor._c_lib import _get_library

        self.tensor = tensor  # keeps the TensorMap alive
        self.pointer = tensor._ptr
        self.lib = _get_library()
        self.cpu = DLDevice(device_type=DLDeviceType.kDLCPU, device_id=0)
        self.version = DLPackVersion(major=1, minor=0)
        self.managed = ctypes.POINTER(DLManagedTensorVersioned)()
        self.block_pointer = ctypes.POINTER(mts_block_t)()
        self.gradient_pointer = ctypes.POINTER(mts_block_t)()
        self.data = mts_array_t()
        self.data_ref = ctypes.byref(self.data)
        self.managed_ref = ctypes.byref(self.managed)
        self.checked = False
        self.int_pointer = ctypes.POINTER(ctypes.c_int32)()
        self.count = c_uintptr_t()
        self.size = c_uintptr_t()

    def _array(self, block) -> np.ndarray:
        self.lib.mts_block_data(block, self.data_ref)
        data = self.data
        if data.as_dlpack(data.ptr, self.managed_ref, self.cpu, None, self.version) != 0:
            raise RuntimeError("as_dlpack failed")
        managed = self.managed.contents
        try:
            tensor = managed.dl_tensor
            if not self.checked:  # every array of a featomic output has the same device and type
                if tensor.device.device_type != 1 or tensor.dtype.code != 2 or tensor.dtype.bits != 64:
                    raise TypeError("not a CPU float64 array")
                self.checked = True
            ndim = tensor.ndim
            shape = tuple(tensor.shape[:ndim])
            if 0 in shape:
                return np.zeros(shape)
            if tensor.strides:
                strides = tuple(tensor.strides[:ndim])
                compact, step = [], 1
                for n in reversed(shape):
                    compact.append(step)
                    step *= n
                compact = tuple(reversed(compact))
                if strides != compact:  # not row-major: let numpy follow the strides
                    return np.array(_View(tensor.data + tensor.byte_offset, shape, "<f8",
                                          tuple(8 * s for s in strides)))
            out = np.empty(shape)  # compact row-major: one memcpy
            ctypes.memmove(out.__array_interface__["data"][0], tensor.data + tensor.byte_offset, out.nbytes)
            return out
        finally:
            if managed.deleter:  # DLPack allows a null deleter
                managed.deleter(self.managed)

    def _labels(self, labels) -> np.ndarray:
        try:
            self.lib.mts_labels_values_cpu(
                labels, ctypes.byref(self.int_pointer), ctypes.byref(self.count), ctypes.byref(self.size)
            )
            shape = (self.count.value, self.size.value)
            if 0 in shape:
                return np.zeros(shape, dtype=np.int32)
            address = ctypes.cast(self.int_pointer, ctypes.c_void_p).value
            return np.array(_View(address, shape, "<i4"))
        finally:
            self.lib.mts_labels_free(labels)

    def _block(self, index: int):
        self.lib.mts_tensormap_block_by_id(self.pointer, ctypes.byref(self.block_pointer), index)
        return self.block_pointer

    def keys(self) -> np.ndarray:
        return self._labels(self.lib.mts_tensormap_keys(self.pointer))

    def all_gradients(self, n_blocks: int, name: str, with_samples=None) -> list[tuple]:
        """(samples, values) of gradient ``name`` of blocks 0 … n_blocks−1, in one loop; samples
        only where ``with_samples[i]`` (default: all), ``None`` elsewhere."""
        lib, pointer, block, gradient = self.lib, self.pointer, self.block_pointer, self.gradient_pointer
        block_ref, gradient_ref, label_values = ctypes.byref(block), ctypes.byref(gradient), self._labels
        array, block_labels, name = self._array, lib.mts_block_labels, name.encode()
        out = []
        for index in range(n_blocks):
            lib.mts_tensormap_block_by_id(pointer, block_ref, index)
            lib.mts_block_gradient(block, name, gradient_ref)
            wanted = with_samples is None or with_samples[index]
            out.append((label_values(block_labels(gradient, 0)) if wanted else None, array(gradient)))
        return out

    def all_values(self, n_blocks: int) -> list[np.ndarray]:
        """Values of blocks 0 … n_blocks−1 (one tight loop: this is the per-step hot path)."""
        lib, pointer, block, array = self.lib, self.pointer, self.block_pointer, self._array
        block_ref = ctypes.byref(block)
        out = []
        for index in range(n_blocks):
            lib.mts_tensormap_block_by_id(pointer, block_ref, index)
            out.append(array(block))
        return out


    def samples(self, index: int) -> np.ndarray:
        return self._labels(self.lib.mts_block_labels(self._block(index), 0))

    def gradient(self, index: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        self.lib.mts_block_gradient(self._block(index), name.encode(), ctypes.byref(self.gradient_pointer))
        samples = self._labels(self.lib.mts_block_labels(self.gradient_pointer, 0))
        return samples, self._array(self.gradient_pointer)


class _PythonApi:
    """The same reads through metatensor's Python API (the reference)."""

    def __init__(self, tensor) -> None:
        self.tensor = tensor

    def keys(self) -> np.ndarray:
        return np.array(self.tensor.keys.values)

    def all_values(self, n_blocks: int) -> list[np.ndarray]:
        return [np.array(block.values) for block in self.tensor.blocks()][:n_blocks]

    def samples(self, index: int) -> np.ndarray:
        return np.array(self.tensor.block_by_id(index).samples.values)

    def gradient(self, index: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        g = self.tensor.block_by_id(index).gradient(name)
        return np.array(g.samples.values), np.array(g.values)

    def all_gradients(self, n_blocks: int, name: str, with_samples=None) -> list[tuple]:
        return [self.gradient(index, name) for index in range(n_blocks)]


class BlockReader:
    """Numpy copies of a ``TensorMap``'s keys and of its blocks' values, samples and gradients.

    Parameters
    ----------
    tensor : metatensor.TensorMap
    fast : read through metatensor's C API (default); ``False`` uses the Python API only.

    Methods return: ``keys()`` (n_blocks, n_key_dims) int32; ``all_values(n)`` the float64 values of
    blocks 0 … n−1; ``samples(i)`` (n_samples, n_sample_dims) int32; ``gradient(i, name)`` the
    gradient's samples (g, n_dims) int32 and values (g, ...) float64 (``all_gradients(n, name)``: a
    list for blocks 0 … n−1).
    """

    def __init__(self, tensor, fast: bool = True) -> None:
        self._api = _PythonApi(tensor)
        self.fast = False
        if fast:
            try:
                self._api = _CApi(tensor)
                self.fast = True
            except Exception:  # noqa: BLE001 - no usable C path: the Python API
                pass

    def _call(self, method: str, *args):
        if self.fast:
            try:
                return getattr(self._api, method)(*args)
            except Exception:  # noqa: BLE001 - any surprise in the C path: fall back for good
                self._api = _PythonApi(self._api.tensor)
                self.fast = False
        return getattr(self._api, method)(*args)

    def keys(self) -> np.ndarray:
        return self._call("keys")

    def all_values(self, n_blocks: int) -> list[np.ndarray]:
        """Values of every block, in block order (``n_blocks`` = ``len(keys())``)."""
        return self._call("all_values", n_blocks)

    def samples(self, index: int) -> np.ndarray:
        return self._call("samples", index)

    def gradient(self, index: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        return self._call("gradient", index, name)

    def all_gradients(self, n_blocks: int, name: str, with_samples=None) -> list[tuple]:
        """``gradient(i, name)`` of every block, in block order; the samples may be ``None`` where
        ``with_samples[i]`` is false (the C path skips reading them there)."""
        return self._call("all_gradients", n_blocks, name, with_samples)
