"""``fakecupy``: a strict stand-in for CuPy's array module, on the CPU.

It catches, without a GPU, the mistakes a real device module punishes:

* ``ascontiguousarray`` refuses host (NumPy) arrays, as ``cupy.ascontiguousarray`` does;
* ufuncs (``+``, ``*``, ``@``, ``tanh``, ...) refuse to mix device and host arrays,
  as CuPy raises ``TypeError`` for ``cupy_array + numpy_array``;
* ``asarray``/``array`` of a host array make a device copy; ``asnumpy`` copies back
  and returns a plain ``numpy.ndarray``;
* ``asarray``/``ascontiguousarray`` of a device array in the right dtype and
  layout return that very object (no copy), as CuPy does.

Device arrays are :class:`DeviceArray`, a ``numpy.ndarray`` subclass (so
``isinstance(a, numpy.ndarray)`` is true, unlike CuPy: lstmkit's modules
therefore treat them as host input and copy results back — the computation
still runs on "device" arrays, which is what these tests look at).  Counters
record host->device and device->host copies.
"""
from __future__ import annotations

import types

import numpy as np


class DeviceArray(np.ndarray):
    """An array "on the device"."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        for a in inputs + (out or ()):
            if isinstance(a, np.ndarray) and not isinstance(a, DeviceArray):
                raise TypeError(
                    f"fakecupy: {ufunc.__name__} mixes a device array with a host numpy.ndarray"
                )
        args = [a.view(np.ndarray) if isinstance(a, DeviceArray) else a for a in inputs]
        if out:
            kwargs["out"] = tuple(o.view(np.ndarray) for o in out)
        result = getattr(ufunc, method)(*args, **kwargs)
        if out:
            return out[0] if len(out) == 1 else out
        if isinstance(result, tuple):
            return tuple(_wrap(r) for r in result)
        return _wrap(result)


def _wrap(value):
    if isinstance(value, np.ndarray) and not isinstance(value, DeviceArray):
        return value.view(DeviceArray)
    return value


class _Module(types.ModuleType):
    """The array module: NumPy's functions, results wrapped as device arrays."""

    ndarray = DeviceArray

    def __init__(self):
        super().__init__("fakecupy")
        self.host_to_device = 0
        self.device_to_host = 0

    def __getattr__(self, name):
        target = getattr(np, name)
        if not callable(target) or isinstance(target, type):
            return target

        def call(*args, **kwargs):
            return _wrap(target(*args, **kwargs))

        call.__name__ = name
        return call

    # -- transfers and the strict functions ---------------------------------------
    def asarray(self, a, dtype=None, order=None):
        if isinstance(a, DeviceArray):
            if dtype is None or np.dtype(dtype) == a.dtype:
                if order is None or order == "K" or a.flags.c_contiguous:
                    return a
            return np.array(a.view(np.ndarray), dtype=dtype, order=order or "K").view(DeviceArray)
        self.host_to_device += 1
        return np.array(a, dtype=dtype, order=order or "K", copy=True).view(DeviceArray)

    def array(self, a, dtype=None, order="K", copy=True):
        if not isinstance(a, DeviceArray):
            self.host_to_device += 1
        host = a.view(np.ndarray) if isinstance(a, DeviceArray) else a
        return np.array(host, dtype=dtype, order=order, copy=copy).view(DeviceArray)

    def ascontiguousarray(self, a, dtype=None):
        if not isinstance(a, DeviceArray):
            raise TypeError(
                "fakecupy.ascontiguousarray: Argument 'a' has incorrect type "
                f"(expected a device array, got {type(a).__name__})"
            )
        if a.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a.dtype):
            return a
        return np.ascontiguousarray(a.view(np.ndarray), dtype=dtype).view(DeviceArray)

    def asnumpy(self, a):
        if isinstance(a, DeviceArray):
            self.device_to_host += 1
            return np.array(a.view(np.ndarray), copy=True)
        return np.asarray(a)


def make() -> _Module:
    """A fresh ``fakecupy`` module (fresh counters)."""
    return _Module()
