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
(``tests/features/test_expansion.py`` checks that both paths agree exactly).
"""

from __future__ import annotations

import ctypes
import functools
import math
import threading

from typing import Sequence

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


@functools.lru_cache(maxsize=None)
def _raw_functions(library: str) -> tuple:
    """``mts_tensormap_block_by_id``, ``mts_block_data`` and ``mts_block_gradient`` of the metatensor
    library at ``library``, declared without metatensor's Python status checker (callers compare the
    status to 0): a call then costs about a microsecond. Loaded once per process."""
    raw = ctypes.CDLL(library)
    vp, status = ctypes.c_void_p, ctypes.c_int32
    by_id, data, gradient = raw.mts_tensormap_block_by_id, raw.mts_block_data, raw.mts_block_gradient
    by_id.argtypes, by_id.restype = [vp, vp, ctypes.c_size_t], status
    data.argtypes, data.restype = [vp, vp], status
    gradient.argtypes, gradient.restype = [vp, ctypes.c_char_p, vp], status
    return by_id, data, gradient


@functools.lru_cache(maxsize=256)
def _row_major_strides(shape: tuple) -> list:
    """Element strides of a C-contiguous array of ``shape`` (a list, as ctypes slices give)."""
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return strides[::-1]


_SCRATCH = threading.local()


def _scratch() -> dict:
    """This thread's ctypes out-parameters for :class:`_CApi` (built once per thread: making them
    for every featomic call cost as much as reading a few blocks)."""
    scratch = getattr(_SCRATCH, "value", None)
    if scratch is None:
        from ctypes_dlpack import DLDevice, DLDeviceType, DLManagedTensorVersioned, DLPackVersion
        from metatensor._c_api import c_uintptr_t, mts_array_t, mts_block_t
        from metatensor._c_lib import _get_library

        data, managed = mts_array_t(), ctypes.POINTER(DLManagedTensorVersioned)()
        scratch = _SCRATCH.value = {
            "lib": _get_library(),
            "cpu": DLDevice(device_type=DLDeviceType.kDLCPU, device_id=0),
            "version": DLPackVersion(major=1, minor=0),
            "managed": managed,
            "managed_ref": ctypes.byref(managed),
            "block_pointer": ctypes.POINTER(mts_block_t)(),
            "gradient_pointer": ctypes.POINTER(mts_block_t)(),
            "data": data,
            "data_ref": ctypes.byref(data),
            "int_pointer": ctypes.POINTER(ctypes.c_int32)(),
            "count": c_uintptr_t(),
            "size": c_uintptr_t(),
        }
    return scratch


class _CApi:
    """metatensor C-API reads; every method returns numpy copies."""

    def __init__(self, tensor) -> None:
        self.tensor = tensor  # keeps the TensorMap alive
        self.pointer = tensor._ptr
        self.__dict__.update(_scratch())  # per-thread ctypes out-parameters, built once
        self.checked = False

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

    def flat(self, n_blocks: int | Sequence[int], gradient: str | None = None, with_samples=None,
             capacity: int = 0) -> tuple[np.ndarray, list[tuple], list]:
        """The values (or the values of gradient ``gradient``) of blocks 0 … n_blocks−1 (or of the
        block indices ``n_blocks`` when it is a sequence), copied one
        after the other into ONE float64 buffer: ``(flat, shapes, samples)``; block ``i`` is the
        next ``prod(shapes[i])`` numbers of ``flat`` in row-major order. ``samples[i]`` are the
        gradient's sample labels where ``with_samples[i]`` (default: all), else ``None`` (and always
        ``None`` without ``gradient``). ``capacity``: expected total size (the buffer grows if
        needed). This is the per-step hot path: a few ctypes calls and one memmove per block."""
        by_id, block_data, block_gradient = _raw_functions(self.lib._name)
        pointer, block, grad = self.pointer, self.block_pointer, self.gradient_pointer
        block_ref, grad_ref, data_ref, managed_ref = (
            ctypes.byref(block), ctypes.byref(grad), self.data_ref, self.managed_ref)
        data, managed, cpu, version, memmove = self.data, self.managed, self.cpu, self.version, ctypes.memmove
        name = gradient.encode() if gradient is not None else None
        buffer = np.empty(max(int(capacity), 64))
        base, used, shapes, samples = buffer.__array_interface__["data"][0], 0, [], []
        for index in range(n_blocks) if isinstance(n_blocks, int) else n_blocks:
            if by_id(pointer, block_ref, index):
                raise RuntimeError(f"mts_tensormap_block_by_id failed for block {index}")
            target = block
            if name is not None:
                if block_gradient(block, name, grad_ref):
                    raise RuntimeError(f"block {index} has no gradient {gradient!r}")
                target = grad
                wanted = with_samples is None or with_samples[index]
                samples.append(self._labels(self.lib.mts_block_labels(grad, 0)) if wanted else None)
            else:
                samples.append(None)
            if block_data(target, data_ref) or data.as_dlpack(data.ptr, managed_ref, cpu, None, version):
                raise RuntimeError(f"no data for block {index}")
            content = managed.contents
            try:
                tensor = content.dl_tensor
                ndim = tensor.ndim
                shape = tuple(tensor.shape[:ndim])
                size = math.prod(shape)
                if not self.checked:  # every array of a featomic output has the same device and type
                    if tensor.device.device_type != 1 or tensor.dtype.code != 2 or tensor.dtype.bits != 64:
                        raise TypeError("not a CPU float64 array")
                    self.checked = True
                if tensor.strides and size and tensor.strides[:ndim] != _row_major_strides(shape):
                    raise TypeError("not a row-major array")  # featomic's never are
                if used + size > buffer.size:
                    grown = np.empty(2 * (used + size))
                    grown[:used] = buffer[:used]
                    buffer, base = grown, grown.__array_interface__["data"][0]
                if size:
                    memmove(base + 8 * used, tensor.data + tensor.byte_offset, 8 * size)
            finally:
                if content.deleter:  # DLPack allows a null deleter
                    content.deleter(managed)
            shapes.append(shape)
            used += size
        return buffer[:used], shapes, samples

    def samples(self, index: int) -> np.ndarray:
        return self._labels(self.lib.mts_block_labels(self._block(index), 0))

    def gradient(self, index: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        flat, shapes, samples = self.flat([index], name)
        return samples[0], flat.reshape(shapes[0])


class _PythonApi:
    """The same reads through metatensor's Python API (the reference)."""

    def __init__(self, tensor) -> None:
        self.tensor = tensor

    def keys(self) -> np.ndarray:
        return np.array(self.tensor.keys.values)

    def flat(self, n_blocks: int, gradient: str | None = None, with_samples=None,
             capacity: int = 0) -> tuple[np.ndarray, list[tuple], list]:
        blocks = [self.tensor.block_by_id(index) for index in range(n_blocks)]
        if gradient is None:
            arrays, samples = [np.asarray(block.values) for block in blocks], [None] * n_blocks
        else:
            parts = [self.gradient(index, gradient) for index in range(n_blocks)]
            arrays, samples = [values for _, values in parts], [labels for labels, _ in parts]
        flat = np.concatenate([x.ravel() for x in arrays]) if arrays else np.zeros(0)
        return flat, [x.shape for x in arrays], samples

    def samples(self, index: int) -> np.ndarray:
        return np.array(self.tensor.block_by_id(index).samples.values)

    def gradient(self, index: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        g = self.tensor.block_by_id(index).gradient(name)
        return np.array(g.samples.values), np.array(g.values)


class BlockReader:
    """Numpy copies of a ``TensorMap``'s keys and of its blocks' values, samples and gradients.

    Parameters
    ----------
    tensor : metatensor.TensorMap
    fast : read through metatensor's C API (default); ``False`` uses the Python API only.

    Methods return: ``keys()`` (n_blocks, n_key_dims) int32; ``flat(n)`` the float64 values of blocks
    0 … n−1 in one buffer with their shapes (``flat(n, name)``: their gradients', with the gradient
    sample labels); ``all_values(n)`` the same values as one array per block; ``samples(i)``
    (n_samples, n_sample_dims) int32; ``gradient(i, name)`` the gradient's samples (g, n_dims) int32
    and values (g, ...) float64.
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

    def flat(self, n_blocks: int, gradient: str | None = None, with_samples=None,
             capacity: int = 0) -> tuple[np.ndarray, list[tuple], list]:
        """Values (or gradient ``gradient``'s values) of blocks 0 … n_blocks−1 in ONE buffer:
        ``(flat, shapes, samples)``, see :meth:`_CApi.flat`."""
        return self._call("flat", n_blocks, gradient, with_samples, capacity)

    def all_values(self, n_blocks: int) -> list[np.ndarray]:
        """Values of every block, in block order (views of one :meth:`flat` buffer)."""
        flat, shapes, _ = self.flat(n_blocks)
        ends = np.cumsum([math.prod(shape) for shape in shapes])
        return [part.reshape(shape) for part, shape in zip(np.split(flat, ends[:-1]), shapes)]

    def samples(self, index: int) -> np.ndarray:
        return self._call("samples", index)

    def gradient(self, index: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        return self._call("gradient", index, name)
