"""The LSTM time loop as bare cuBLAS calls and one CUDA kernel per step, replayed as a CUDA graph.

Measured on an H200 (``gpu_check.py``), the array-level loop of
:mod:`lstmkit_cupy.backend` spent 90–170 µs of Python per time step (a CuPy
``matmul``, a 16-argument ``ElementwiseKernel``, a dozen views, a copy) while
the GPU needed 5–20 µs: every shape was bound by the host.  This module does
the same step with two calls and no allocation:

* forward: ``G_t += h_{t-1} W_hhᵀ`` (``gemm`` with ``beta = 1`` into the step's
  rows of the input projection, which already holds ``x_t W_ihᵀ + b``), then
  :data:`SOURCE`'s ``lstmkit_lstm_step``: gates, ``c``, ``h`` and the step's
  output rows; in training it also keeps ``h_{t-1}``, ``c_{t-1}``, ``tanh c``
  and writes the activated gates over ``G_t`` (each thread owns its four);
* backward: ``lstmkit_lstm_step_backward`` (the four gate gradients and
  ``dc_{t-1}``), then ``dh_{t-1} = dG_t W_hh`` (``gemm``, ``beta = 0``).

Because the loop allocates nothing, :class:`GraphCache` can capture a whole
forward loop once per shape (a CUDA graph) and replay it: the host then issues
one launch per call instead of two per step.  Replays need fixed addresses, so
a captured loop owns its buffers (a :class:`Workspace`); each call copies its
inputs in and its results out on the same stream.

:class:`CudaOps` issues the calls on CuPy.  :class:`HostOps` is the same
contract on NumPy (column-major GEMMs on strided views, the kernels as array
code), so the loop's offsets and leading dimensions are tested on the CPU.
"""
from __future__ import annotations

import ctypes
from collections import OrderedDict

import numpy as np

from lstmkit.cells import sigmoid

# One thread per (row, unit) of a step.  Offsets are in elements; a base array
# plus an offset keeps the launch free of view objects.
SOURCE = r"""
template <typename T> __device__ __forceinline__ T lk_sigmoid(T x) {
    const T half = 0.5;
    return tanh(x * half) * half + half;
}

template <typename T>
__global__ void lstmkit_lstm_step(
        const int live, const int hid, const int train,
        T* g, const long long g_off,        // (live, 4H): pre-activations in; activated gates out (train)
        T* h, T* c,                         // (live, H) state rows, updated
        T* y, const long long y_off,        // (live, H) this step's output rows
        T* tc, const long long tc_off,      // tanh(c_t)       (train)
        T* hp, const long long hp_off,      // h_{t-1} kept    (train)
        T* cp, const long long cp_off) {    // c_{t-1} kept    (train)
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)live * hid) return;
    const long long r = idx / hid, j = idx - r * hid;
    T* gr = g + g_off + r * 4 * hid;
    const T s_i = lk_sigmoid(gr[j]);
    const T s_f = lk_sigmoid(gr[hid + j]);
    const T t_g = tanh(gr[2 * hid + j]);
    const T s_o = lk_sigmoid(gr[3 * hid + j]);
    const T c_old = c[idx];
    const T c_new = s_f * c_old + s_i * t_g;
    const T t_c = tanh(c_new);
    const T h_new = s_o * t_c;
    if (train) {
        hp[hp_off + idx] = h[idx];
        cp[cp_off + idx] = c_old;
        tc[tc_off + idx] = t_c;
        gr[j] = s_i;
        gr[hid + j] = s_f;
        gr[2 * hid + j] = t_g;
        gr[3 * hid + j] = s_o;
    }
    c[idx] = c_new;
    h[idx] = h_new;
    y[y_off + idx] = h_new;
}

template <typename T>
__global__ void lstmkit_lstm_step_backward(
        const int live, const int hid,
        const T* acts, const long long a_off,   // (live, 4H) activated gates i, f, g, o
        const T* tc, const long long tc_off,    // tanh(c_t)
        const T* cp, const long long cp_off,    // c_{t-1}
        const T* dy, const long long dy_off,    // d out of this step's rows
        const T* dh,                            // (live, H) dh carried from step t + 1
        T* dc,                                  // (live, H) dc carried, updated to dc_{t-1}
        T* dg, const long long dg_off) {        // (live, 4H) gate pre-activation gradients out
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)live * hid) return;
    const long long r = idx / hid, j = idx - r * hid;
    const T* ar = acts + a_off + r * 4 * hid;
    const T s_i = ar[j], s_f = ar[hid + j], t_g = ar[2 * hid + j], s_o = ar[3 * hid + j];
    const T t_c = tc[tc_off + idx];
    const T c_old = cp[cp_off + idx];
    const T one = 1;
    const T dh_v = dh[idx] + dy[dy_off + idx];
    const T dc_t = dc[idx] + dh_v * s_o * (one - t_c * t_c);
    T* dr = dg + dg_off + r * 4 * hid;
    dr[j] = dc_t * t_g * s_i * (one - s_i);
    dr[hid + j] = dc_t * c_old * s_f * (one - s_f);
    dr[2 * hid + j] = dc_t * s_i * (one - t_g * t_g);
    dr[3 * hid + j] = dh_v * t_c * s_o * (one - s_o);
    dc[idx] = dc_t * s_f;
}
"""

KERNELS = ("lstmkit_lstm_step", "lstmkit_lstm_step_backward")
CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
BLOCK = 256
OP_N, OP_T = 0, 1  # cublasOperation_t


def _load_cublas():
    """The cuBLAS library CuPy loaded, through ctypes (CuPy's own bindings refuse graph capture)."""
    names = []
    try:
        with open("/proc/self/maps") as maps:  # the very file CuPy loaded
            names = sorted({line.split()[-1] for line in maps if "/libcublas.so" in line})
    except OSError:
        pass
    names += ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"]
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise OSError("libcublas not found")


class _Cublas:
    """One cuBLAS handle of our own, driven through ctypes: calls CUDA graphs can capture."""

    TF32_TENSOR_OP_MATH = 3  # cublasMath_t
    WORKSPACE = 32 << 20  # bytes; a fixed workspace keeps cuBLAS from allocating inside a capture

    def __init__(self, cupy, tf32: bool):
        lib = _load_cublas()
        handle = ctypes.c_void_p()
        self._check(lib.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate_v2")
        self.handle = handle
        self._workspace = cupy.empty(self.WORKSPACE, dtype=np.uint8)
        self._check(lib.cublasSetWorkspace_v2(handle, ctypes.c_void_p(self._workspace.data.ptr),
                                              ctypes.c_size_t(self.WORKSPACE)), "cublasSetWorkspace_v2")
        if tf32:
            self._check(lib.cublasSetMathMode(handle, self.TF32_TENSOR_OP_MATH), "cublasSetMathMode")
        self._set_stream = lib.cublasSetStream_v2
        self._gemm = {np.dtype(np.float32): lib.cublasSgemm_v2, np.dtype(np.float64): lib.cublasDgemm_v2}
        for function in self._gemm.values():
            function.argtypes = [ctypes.c_void_p] + [ctypes.c_int] * 5 + [
                ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]

    @staticmethod
    def _check(status, what):
        if status != 0:
            raise RuntimeError(f"{what} failed: cublasStatus_t {status}")

    def bind(self, stream_ptr: int):
        self._check(self._set_stream(self.handle, ctypes.c_void_p(stream_ptr)), "cublasSetStream_v2")
        return self

    def gemm(self, dt, *args):
        self._check(self._gemm[dt](self.handle, *args), "cublas gemm")


class CudaOps:
    """The loop's two calls on CuPy: cuBLAS ``gemm`` (column-major, host scalars) and the step kernels.

    ``tf32=True`` lets the float32 products of :mod:`lstmkit_cupy.steps` use TF32 tensor cores
    (``torch.backends.cudnn.allow_tf32``, on by default in torch, does the same for cuDNN):
    about 10 mantissa bits per product instead of 23.
    """

    def __init__(self, cupy, tf32: bool = False):
        self.xp = cupy
        names = [f"{k}<{t}>" for k in KERNELS for t in CTYPES.values()]
        module = cupy.RawModule(code=SOURCE, options=("--std=c++14",), name_expressions=names)
        # Compiled and loaded here, never inside a graph capture.
        self._kernels = {(k, dt): module.get_function(f"{k}<{t}>") for k in KERNELS for dt, t in CTYPES.items()}
        self._scalars = {dt: (np.zeros(1, dt), np.ones(1, dt)) for dt in CTYPES}
        self.graphs = True
        try:
            self._cublas = _Cublas(cupy, tf32)
        except Exception as exc:  # no ctypes cuBLAS: CuPy's bindings, which cannot be captured
            if tf32:
                raise
            from cupy_backends.cuda.libs import cublas

            self._cublas = None
            self._cupy_gemm = {np.dtype(np.float32): cublas.sgemm, np.dtype(np.float64): cublas.dgemm}
            self.graphs = f"cuBLAS through ctypes: {type(exc).__name__}: {exc}"

    @staticmethod
    def address(a) -> int:
        return a.data.ptr

    def handle(self):
        """A cuBLAS handle bound to the current stream."""
        if self._cublas is not None:
            return self._cublas.bind(self.xp.cuda.get_current_stream().ptr)
        return self.xp.cuda.device.get_cublas_handle()  # CuPy binds it to the current stream

    def gemm(self, handle, dt, transa, transb, m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
        """``C = op(A) op(B) + beta C``, column-major, on base arrays plus element offsets."""
        size = dt.itemsize
        scalars = self._scalars[dt]
        args = (transa, transb, m, n, k, scalars[1].ctypes.data, a.data.ptr + a_off * size, lda,
                b.data.ptr + b_off * size, ldb, scalars[beta].ctypes.data, c.data.ptr + c_off * size, ldc)
        if self._cublas is not None:
            handle.gemm(dt, *args)
        else:
            self._cupy_gemm[dt](handle, *args)

    def lstm_step(self, live, hid, train, g, g_off, h, c, y, y_off, tc, tc_off, hp, hp_off, cp, cp_off):
        i64 = np.int64
        blocks = (live * hid + BLOCK - 1) // BLOCK
        self._kernels["lstmkit_lstm_step", g.dtype]((blocks,), (BLOCK,), (
            np.int32(live), np.int32(hid), np.int32(train), g, i64(g_off), h, c, y, i64(y_off),
            tc, i64(tc_off), hp, i64(hp_off), cp, i64(cp_off)))

    def lstm_step_backward(self, live, hid, acts, a_off, tc, tc_off, cp, cp_off, dy, dy_off, dh, dc, dg, dg_off):
        i64 = np.int64
        blocks = (live * hid + BLOCK - 1) // BLOCK
        self._kernels["lstmkit_lstm_step_backward", acts.dtype]((blocks,), (BLOCK,), (
            np.int32(live), np.int32(hid), acts, i64(a_off), tc, i64(tc_off), cp, i64(cp_off),
            dy, i64(dy_off), dh, dc, dg, i64(dg_off)))

    def capture(self, issue):
        """``issue()`` captured on a side stream as a CUDA graph; returns a function that replays it."""
        cupy = self.xp
        side = cupy.cuda.Stream(non_blocking=True)  # the legacy default stream cannot capture
        with side:
            side.begin_capture()
            try:
                issue()
            finally:
                graph = side.end_capture()
        return lambda: graph.launch(stream=cupy.cuda.get_current_stream())


class HostOps:
    """:class:`CudaOps`'s contract on NumPy: the same offsets, leading dimensions and formulas."""

    graphs = True  # "capture" records the function; a replay calls it again on the same buffers

    def __init__(self, xp=np):
        self.xp = xp

    @staticmethod
    def address(a) -> int:
        return a.ctypes.data

    def handle(self):
        return None

    @staticmethod
    def _colmajor(a, off, rows, cols, ld):
        flat = a.reshape(-1)[off:]
        assert rows <= ld and (cols - 1) * ld + rows <= flat.size, "a view past the end of its buffer"
        return np.lib.stride_tricks.as_strided(flat, (rows, cols), (a.itemsize, ld * a.itemsize))

    def gemm(self, handle, dt, transa, transb, m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
        op_a = self._colmajor(a, a_off, *((m, k) if transa == OP_N else (k, m)), lda)
        op_b = self._colmajor(b, b_off, *((k, n) if transb == OP_N else (n, k)), ldb)
        out = self._colmajor(c, c_off, m, n, ldc)
        prod = (op_a if transa == OP_N else op_a.T) @ (op_b if transb == OP_N else op_b.T)
        out[...] = out + prod if beta else prod

    def lstm_step(self, live, hid, train, g, g_off, h, c, y, y_off, tc, tc_off, hp, hp_off, cp, cp_off):
        xp, n = self.xp, live * hid
        gr = g.reshape(-1)[g_off:g_off + 4 * n].reshape(live, 4 * hid)
        s_i, s_f = sigmoid(xp, gr[:, :hid]), sigmoid(xp, gr[:, hid:2 * hid])
        t_g, s_o = xp.tanh(gr[:, 2 * hid:3 * hid]), sigmoid(xp, gr[:, 3 * hid:])
        h_rows, c_rows = h.reshape(-1)[:n].reshape(live, hid), c.reshape(-1)[:n].reshape(live, hid)
        c_new = s_f * c_rows + s_i * t_g
        t_c = xp.tanh(c_new)
        if train:
            hp.reshape(-1)[hp_off:hp_off + n] = h_rows.reshape(-1)
            cp.reshape(-1)[cp_off:cp_off + n] = c_rows.reshape(-1)
            tc.reshape(-1)[tc_off:tc_off + n] = t_c.reshape(-1)
            gr[...] = xp.concatenate([s_i, s_f, t_g, s_o], axis=1)
        c_rows[...] = c_new
        h_rows[...] = s_o * t_c
        y.reshape(-1)[y_off:y_off + n] = h_rows.reshape(-1)

    def lstm_step_backward(self, live, hid, acts, a_off, tc, tc_off, cp, cp_off, dy, dy_off, dh, dc, dg, dg_off):
        n = live * hid

        def rows(a, off, width=hid):
            return a.reshape(-1)[off:off + live * width].reshape(live, width)

        ar = rows(acts, a_off, 4 * hid)
        s_i, s_f, t_g, s_o = ar[:, :hid], ar[:, hid:2 * hid], ar[:, 2 * hid:3 * hid], ar[:, 3 * hid:]
        t_c, c_old = rows(tc, tc_off), rows(cp, cp_off)
        dh_v = rows(dh, 0) + rows(dy, dy_off)
        dc_rows = dc.reshape(-1)[:n].reshape(live, hid)
        dc_t = dc_rows + dh_v * s_o * (1 - t_c * t_c)
        rows(dg, dg_off, 4 * hid)[...] = np.concatenate([
            dc_t * t_g * s_i * (1 - s_i), dc_t * c_old * s_f * (1 - s_f),
            dc_t * s_i * (1 - t_g * t_g), dh_v * t_c * s_o * (1 - s_o)], axis=1)
        dc_rows[...] = dc_t * s_f

    def capture(self, issue):
        return issue


# -- the loops ----------------------------------------------------------------------------
def input_projection(ops, x, w_ih, bias, out):
    """``out`` (N, 4H) ``= x W_ihᵀ + bias``: one GEMM, into the bias rows when there is a bias."""
    n, k = x.shape
    m = w_ih.shape[0]
    if bias is not None:
        out[...] = bias
    ops.gemm(ops.handle(), w_ih.dtype, OP_T, OP_N, m, n, k, w_ih, 0, k, x, 0, k, int(bias is not None), out, 0, m)


def weight_gradient(ops, dg, inp, out):
    """``out`` (M, K) ``= dgᵀ inp`` for ``dg`` (N, M) and ``inp`` (N, K): a whole-sequence GEMM."""
    n, m = dg.shape
    k = inp.shape[1]
    ops.gemm(ops.handle(), dg.dtype, OP_N, OP_T, k, m, n, inp, 0, k, dg, 0, m, 0, out, 0, k)


def input_gradient(ops, dg, w, out):
    """``out`` (N, K) ``= dg w`` for ``dg`` (N, M) and ``w`` (M, K): a whole-sequence GEMM."""
    n, m = dg.shape
    k = w.shape[1]
    ops.gemm(ops.handle(), dg.dtype, OP_N, OP_N, k, n, m, w, 0, k, dg, 0, m, 0, out, 0, k)


def lstm_forward_steps(ops, steps, w_hh, g, h, c, y, train, tc=None, hp=None, cp=None):
    """Issue every step of one LSTM layer-direction (see the module docstring).

    ``steps``: ``[(t, row_lo, row_hi, live)]`` in processing order.  ``g`` (N, 4H)
    holds ``x W_ihᵀ + b`` and ends as the activated gates (training) or scratch.
    ``h``, ``c`` (B, H) hold the initial state and end as the final one.
    """
    hid = w_hh.shape[1]
    g4 = 4 * hid
    handle, dt = ops.handle(), w_hh.dtype
    if not train:
        tc = hp = cp = h  # never touched (train = 0)
    for _t, lo, _hi, live in steps:
        ops.gemm(handle, dt, OP_T, OP_N, g4, live, hid, w_hh, 0, hid, h, 0, hid, 1, g, lo * g4, g4)
        off = lo * hid
        ops.lstm_step(live, hid, int(train), g, lo * g4, h, c, y, off,
                      tc, off if train else 0, hp, off if train else 0, cp, off if train else 0)


def lstm_backward_steps(ops, steps, w_hh, acts, tc, cp, dy, dh, dc, dg):
    """Issue every step of one LSTM layer-direction's backward, last processed step first.

    ``dh``, ``dc`` (B, H) hold the gradients of the final state and end as those
    of the initial state; ``dg`` (N, 4H) receives the gate pre-activation gradients.
    """
    hid = w_hh.shape[1]
    g4 = 4 * hid
    handle, dt = ops.handle(), w_hh.dtype
    for _t, lo, _hi, live in reversed(steps):
        off = lo * hid
        ops.lstm_step_backward(live, hid, acts, lo * g4, tc, off, cp, off, dy, off, dh, dc, dg, lo * g4)
        ops.gemm(handle, dt, OP_N, OP_N, hid, live, g4, w_hh, 0, hid, dg, lo * g4, g4, 0, dh, 0, hid)


# -- captured loops ---------------------------------------------------------------------------
class Workspace:
    """The fixed buffers of a captured forward loop (the graph's addresses)."""

    def __init__(self, xp, dt, n, rows, hid, train):
        self.w_hh = xp.empty((4 * hid, hid), dt)
        self.g = xp.empty((n, 4 * hid), dt)
        self.h = xp.empty((rows, hid), dt)
        self.c = xp.empty((rows, hid), dt)
        self.y = xp.empty((n, hid), dt)
        self.train = train
        self.tc = xp.empty((n, hid), dt) if train else None
        self.hp = xp.empty((n, hid), dt) if train else None
        self.cp = xp.empty((n, hid), dt) if train else None


class GraphCache:
    """Captured forward loops by shape, schedule and stream; least recently used first out.

    The first call of a shape runs the loop directly (fresh buffers, which warms
    cuBLAS and the kernels up); the second captures it, and later calls replay.
    A capture that fails turns graphs off for this cache, with the reason in
    :attr:`disabled`, and every call runs the loop directly.
    """

    def __init__(self, ops, capacity: int = 4):
        self.ops = ops
        self.capacity = capacity
        self.entries: OrderedDict = OrderedDict()
        self.seen: set = set()
        self.disabled: str | None = None if ops.graphs is True else (ops.graphs or "not supported by these ops")
        self.replays = 0

    def key(self, steps, dt, n, rows, hid, train):
        stream = getattr(getattr(self.ops.xp, "cuda", None), "get_current_stream", None)
        return (tuple(steps), dt, n, rows, hid, train, stream().ptr if stream else 0)

    def lookup(self, key, make):
        """The ``(workspace, replay)`` of ``key``; ``None`` on its first call or with graphs off."""
        if self.disabled:
            return None
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
            self.replays += 1
            return entry
        if key not in self.seen:
            if len(self.seen) > 1024:  # many one-off schedules (packed batches): forget them
                self.seen.clear()
            self.seen.add(key)
            return None
        try:
            workspace, issue = make()
            entry = (workspace, self.ops.capture(issue))
        except Exception as exc:  # a driver or library that cannot capture: run directly from now on
            self.disabled = f"{type(exc).__name__}: {exc}"
            return None
        self.entries[key] = entry
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)
        self.replays += 1
        return entry
