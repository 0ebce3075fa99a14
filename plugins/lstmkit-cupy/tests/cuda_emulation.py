"""Run the CUDA source of the fused gate kernels on the CPU, as CuPy would run it.

``cupy.ElementwiseKernel`` turns ``in_params``/``out_params``/``operation``
into a ``__global__`` function whose loop body is, per element::

    typedef float T;                      // or double: one binary per dtype
    <preamble>
    ...
    const T &xi = _raw_xi[_ind.get()];    // inputs: const references
    T &gate_i = _raw_gate_i[_ind.get()];  // outputs: references
    <operation>

This module builds the same thing as host C++ (``__device__`` defined away),
one ``extern "C"`` loop per kernel and dtype, compiles it with the system C++
compiler and calls it through ctypes on NumPy arrays: broadcasting is done by
NumPy, an output that is the very same object as an input shares its buffer
(as it does on the GPU).  So the kernel *text* — formulas, argument order,
read-before-write, the typedef/template preamble — is checked without a GPU.
What it cannot check: NVRTC itself, device math accuracy, launch machinery.
"""
from __future__ import annotations

import atexit
import ctypes
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from lstmkit_cupy.kernels import KERNELS, PREAMBLE

_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

HEADER = r"""
#include <cmath>
#include <cstddef>
using std::tanh;
#define __device__
#define __forceinline__ inline
"""


def compiler() -> str | None:
    for name in ("c++", "g++", "clang++"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _names(params: str) -> list[str]:
    return [p.split()[-1] for p in params.split(",")]


def source() -> str:
    """One C++ translation unit with every kernel for float and double."""
    parts = [HEADER]
    for ctype in ("float", "double"):
        parts.append(f"namespace k_{ctype} {{\ntypedef {ctype} T;\n{PREAMBLE}\n")
        for key, spec in KERNELS.items():
            ins, outs = _names(spec["in_params"]), _names(spec["out_params"])
            args = [f"const T* _raw_{n}" for n in ins] + [f"T* _raw_{n}" for n in outs]
            binds = [f"const T &{n} = _raw_{n}[_k];" for n in ins]
            binds += [f"T &{n} = _raw_{n}[_k];" for n in outs]
            parts.append(
                f'extern "C" void {key}_{ctype}(std::ptrdiff_t _n, {", ".join(args)}) {{\n'
                f"  for (std::ptrdiff_t _k = 0; _k < _n; ++_k) {{\n"
                f"    {' '.join(binds)}\n{spec['operation']}\n  }}\n}}\n"
            )
        parts.append("}\n")
    return "\n".join(parts)


_LIBRARY = None


def library():
    """The compiled emulation library (compiled once per process)."""
    global _LIBRARY
    if _LIBRARY is None:
        cxx = compiler()
        if cxx is None:
            raise RuntimeError("no C++ compiler found")
        code = source()
        tag = hashlib.sha256(code.encode()).hexdigest()[:16]
        folder = Path(tempfile.mkdtemp(prefix="lstmkit_cupy_emul_"))
        atexit.register(shutil.rmtree, folder, True)
        src, lib = folder / f"k_{tag}.cpp", folder / f"k_{tag}.so"
        src.write_text(code)
        subprocess.run(
            [cxx, "-O1", "-shared", "-fPIC", "-std=c++11", "-Wall", "-Werror", "-o", str(lib), str(src)],
            check=True, capture_output=True, text=True,
        )
        _LIBRARY = ctypes.CDLL(str(lib))
    return _LIBRARY


class EmulatedGateKernels:
    """Drop-in for :class:`lstmkit_cupy.kernels.CudaGateKernels` on NumPy arrays."""

    fused = True

    def __init__(self):
        self.lib = library()
        for key, spec in KERNELS.items():
            setattr(self, key, self._kernel(key, len(_names(spec["in_params"])),
                                            len(_names(spec["out_params"]))))

    def _kernel(self, key, nin, nout):
        lib = self.lib

        def call(*args):
            assert len(args) == nin + nout, (key, len(args))
            ins, outs = args[:nin], args[nin:]
            dtype = np.dtype(outs[0].dtype)
            assert all(np.dtype(a.dtype) == dtype for a in args), "ElementwiseKernel T: one dtype"
            shape = np.broadcast_shapes(*(a.shape for a in args))
            assert all(o.shape == shape for o in outs), "Out shape is mismatched"
            buffers = {}  # id(array) -> contiguous buffer (an output aliased by an input shares it)
            for a in outs:
                buffers[id(a)] = np.array(a, dtype=dtype, order="C", copy=True)
            pointers = []
            for a in ins:
                buf = buffers.get(id(a))
                if buf is None:
                    buf = np.ascontiguousarray(np.broadcast_to(a, shape), dtype=dtype)
                    buffers[id(a)] = buf
                pointers.append(buf)
            pointers += [buffers[id(o)] for o in outs]
            function = getattr(lib, f"{key}_{_CTYPES[dtype]}")
            size = int(np.prod(shape))
            function(ctypes.c_ssize_t(size), *(ctypes.c_void_p(b.ctypes.data) for b in pointers))
            for o in outs:
                o[...] = buffers[id(o)]

        return call
