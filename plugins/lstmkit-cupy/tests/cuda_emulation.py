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
from lstmkit_cupy.steps import CTYPES as _CTYPES


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


_LIBRARIES: dict = {}


def _compiled(code: str) -> ctypes.CDLL:
    """``code`` compiled as a shared library with -Wall -Werror (once per process and source)."""
    tag = hashlib.sha256(code.encode()).hexdigest()[:16]
    if tag not in _LIBRARIES:
        cxx = compiler()
        if cxx is None:
            raise RuntimeError("no C++ compiler found")
        folder = Path(tempfile.mkdtemp(prefix="lstmkit_cupy_emul_"))
        atexit.register(shutil.rmtree, folder, True)
        src, lib = folder / f"k_{tag}.cpp", folder / f"k_{tag}.so"
        src.write_text(code)
        subprocess.run(
            [cxx, "-O1", "-shared", "-fPIC", "-std=c++14", "-Wall", "-Werror", "-o", str(lib), str(src)],
            check=True, capture_output=True, text=True,
        )
        _LIBRARIES[tag] = ctypes.CDLL(str(lib))
    return _LIBRARIES[tag]


def library():
    """The compiled emulation library of the gate kernels."""
    return _compiled(source())


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


# -- the step kernels of lstmkit_cupy.steps (whole __global__ functions) --------------------------
STEP_HEADER = HEADER + r"""
#define __global__
struct lk_dim3 { unsigned x; };
static lk_dim3 blockIdx, threadIdx, blockDim;
"""

# (kernel, C parameter list after the launch shape, argument names): the kernel runs once per
# (block, thread) of the launch, as the GPU would run it, one thread after another.
_STEP_SIGNATURES = {
    "lstmkit_lstm_step": (
        "int live, int hid, int train, T* g, long long g_off, T* h, T* c, T* y, long long y_off, "
        "T* tc, long long tc_off, T* hp, long long hp_off, T* cp, long long cp_off",
        "live, hid, train, g, g_off, h, c, y, y_off, tc, tc_off, hp, hp_off, cp, cp_off"),
    "lstmkit_lstm_step_backward": (
        "int live, int hid, const T* acts, long long a_off, const T* tc, long long tc_off, "
        "const T* cp, long long cp_off, const T* dy, long long dy_off, const T* dh, T* dc, T* dg, long long dg_off",
        "live, hid, acts, a_off, tc, tc_off, cp, cp_off, dy, dy_off, dh, dc, dg, dg_off"),
}


def step_source() -> str:
    from lstmkit_cupy.steps import SOURCE

    parts = [STEP_HEADER, SOURCE]
    for name, (params, args) in _STEP_SIGNATURES.items():
        for ctype in ("float", "double"):
            parts.append(
                f'extern "C" void {name}_{ctype}(unsigned grid, unsigned block, '
                f'{params.replace("T*", ctype + "*")}) {{\n'
                f"  blockDim.x = block;\n"
                f"  for (unsigned b = 0; b < grid; ++b) for (unsigned t = 0; t < block; ++t) {{\n"
                f"    blockIdx.x = b; threadIdx.x = t; {name}<{ctype}>({args});\n  }}\n}}\n")
    return "\n".join(parts)


def step_library():
    """The compiled emulation library of the step kernels."""
    return _compiled(step_source())


def _within(array, off, count):
    """The kernel will touch ``array``'s elements ``[off, off + count)``: they must exist."""
    assert array.flags.c_contiguous, "a step kernel takes whole C-contiguous buffers"
    assert 0 <= off and off + count <= array.size, f"elements [{off}, {off + count}) of a buffer of {array.size}"
    return ctypes.c_void_p(array.ctypes.data)


class EmulatedStepOps:
    """:class:`lstmkit_cupy.steps.HostOps` with the CUDA source of the step kernels, compiled for the CPU."""

    def __new__(cls):
        from lstmkit_cupy.steps import BLOCK, HostOps

        lib = step_library()

        class Ops(HostOps):
            def lstm_step(self, live, hid, train, g, g_off, h, c, y, y_off, tc, tc_off, hp, hp_off, cp, cp_off):
                n, ll = live * hid, ctypes.c_longlong
                kept = n if train else 0
                getattr(lib, f"lstmkit_lstm_step_{_CTYPES[g.dtype]}")(
                    ctypes.c_uint((n + BLOCK - 1) // BLOCK), ctypes.c_uint(BLOCK), ctypes.c_int(live),
                    ctypes.c_int(hid), ctypes.c_int(train), _within(g, g_off, 4 * n), ll(g_off),
                    _within(h, 0, n), _within(c, 0, n), _within(y, y_off, n), ll(y_off),
                    _within(tc, tc_off, kept), ll(tc_off), _within(hp, hp_off, kept), ll(hp_off),
                    _within(cp, cp_off, kept), ll(cp_off))

            def lstm_step_backward(self, live, hid, acts, a_off, tc, tc_off, cp, cp_off, dy, dy_off, dh, dc,
                                   dg, dg_off):
                n, ll = live * hid, ctypes.c_longlong
                getattr(lib, f"lstmkit_lstm_step_backward_{_CTYPES[acts.dtype]}")(
                    ctypes.c_uint((n + BLOCK - 1) // BLOCK), ctypes.c_uint(BLOCK), ctypes.c_int(live),
                    ctypes.c_int(hid), _within(acts, a_off, 4 * n), ll(a_off), _within(tc, tc_off, n), ll(tc_off),
                    _within(cp, cp_off, n), ll(cp_off), _within(dy, dy_off, n), ll(dy_off), _within(dh, 0, n),
                    _within(dc, 0, n), _within(dg, dg_off, 4 * n), ll(dg_off))

        return Ops()
