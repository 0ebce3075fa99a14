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
import threading
from collections import OrderedDict
from typing import NamedTuple

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


PER_THREAD_STREAM = 2  # cudaStreamPerThread: one pointer, a different stream in each thread


class Where(NamedTuple):
    """Where a cuBLAS call goes: the device, the stream it is issued on (a capture stream while
    capturing), and the stream whose workspace it uses (the caller's, also while capturing)."""

    device: int
    stream: int
    space: tuple


class _Cublas:
    """cuBLAS driven through ctypes, so that CUDA graphs can capture its calls.

    One handle per device, shared: each GEMM binds it to its stream and workspace and runs,
    under a lock, so no other thread can rebind it in between.  cublasSetStream resets the
    workspace to cuBLAS's own pool (which may allocate inside a capture), hence the workspace
    set after it each time, one per caller stream, as torch keeps them.  A captured graph
    holds a reference to the workspace it was captured with (:meth:`CudaOps.capture`), so
    dropping the least recently used one never frees memory a graph still uses.
    """

    TF32_TENSOR_OP_MATH = 3  # cublasMath_t
    WORKSPACE = 32 << 20  # bytes per caller stream
    SPACES = 16  # workspaces kept for direct calls (graphs keep their own alive)

    def __init__(self, cupy, tf32: bool, lib=None):
        self._cupy = cupy
        self._tf32 = tf32
        self._lib = lib if lib is not None else _load_cublas()
        self._lock = threading.Lock()
        self._handles: dict = {}
        self._spaces: OrderedDict = OrderedDict()
        self._gemm = {np.dtype(np.float32): self._lib.cublasSgemm_v2, np.dtype(np.float64): self._lib.cublasDgemm_v2}
        for function in self._gemm.values():
            function.argtypes = [ctypes.c_void_p] + [ctypes.c_int] * 5 + [
                ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        with self._lock:
            self._handle(cupy.cuda.Device().id)  # fail here, not in the middle of a loop

    @staticmethod
    def _check(status, what):
        if status != 0:
            raise RuntimeError(f"{what} failed: cublasStatus_t {status}")

    def _handle(self, device: int):
        handle = self._handles.get(device)
        if handle is None:
            handle = ctypes.c_void_p()
            self._check(self._lib.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate_v2")
            if self._tf32:
                self._check(self._lib.cublasSetMathMode(handle, self.TF32_TENSOR_OP_MATH), "cublasSetMathMode")
            self._handles[device] = handle
        return handle

    def workspace(self, device: int, space: tuple):
        """The workspace of ``space`` on ``device`` (allocated on first use, on the current stream)."""
        with self._lock:
            return self._workspace(device, space)

    def _workspace(self, device: int, space: tuple):
        key = (device, space)
        memory = self._spaces.get(key)
        if memory is None:
            memory = self._spaces[key] = self._cupy.empty(self.WORKSPACE, dtype=np.uint8)
            while len(self._spaces) > self.SPACES:
                self._spaces.popitem(last=False)
        else:
            self._spaces.move_to_end(key)
        return memory

    def gemm(self, where: Where, dt, *args):
        with self._lock:
            memory = self._workspace(where.device, where.space)
            handle = self._handle(where.device)
            self._check(self._lib.cublasSetStream_v2(handle, ctypes.c_void_p(where.stream)), "cublasSetStream_v2")
            self._check(self._lib.cublasSetWorkspace_v2(handle, ctypes.c_void_p(memory.data.ptr),
                                                        ctypes.c_size_t(self.WORKSPACE)), "cublasSetWorkspace_v2")
            self._check(self._gemm[dt](handle, *args), "cublas gemm")


class CudaOps:
    """The loop's two calls on CuPy: cuBLAS ``gemm`` (column-major, host scalars) and the step kernels.

    ``tf32=True`` lets the float32 products of :mod:`lstmkit_cupy.steps` use TF32 tensor cores
    (``torch.backends.cudnn.allow_tf32``, on by default in torch, does the same for cuDNN):
    about 10 mantissa bits per product instead of 23.
    """

    def __init__(self, cupy, tf32: bool = False):
        self.xp = cupy
        self.tf32 = bool(tf32)
        names = [f"{k}<{t}>" for k in KERNELS for t in CTYPES.values()]
        module = cupy.RawModule(code=SOURCE, options=("--std=c++14",), name_expressions=names)
        # Compiled and loaded here, never inside a graph capture.
        self._kernels = {(k, dt): module.get_function(f"{k}<{t}>") for k in KERNELS for dt, t in CTYPES.items()}
        self._scalars = {dt: (np.zeros(1, dt), np.ones(1, dt)) for dt in CTYPES}
        self._capturing = threading.local()  # the Where of a capture in progress in this thread
        self._capture_streams: dict = {}  # device -> the stream captures are recorded on
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

    def where(self) -> Where:
        """The current device and stream; the stream names the workspace (with the thread for the
        per-thread default stream, whose one pointer is a different stream in each thread)."""
        cuda = self.xp.cuda
        stream = cuda.get_current_stream().ptr
        space = (stream, threading.get_ident()) if stream == PER_THREAD_STREAM else (stream,)
        return Where(cuda.Device().id, stream, space)

    def handle(self):
        """Where this loop's cuBLAS calls go: during a capture, the capture stream with the
        caller's workspace."""
        if self._cublas is None:
            return self.xp.cuda.device.get_cublas_handle()  # CuPy binds it to the current stream
        capturing = getattr(self._capturing, "where", None)
        return capturing if capturing is not None else self.where()

    def gemm(self, handle, dt, transa, transb, m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
        """``C = op(A) op(B) + beta C``, column-major, on base arrays plus element offsets."""
        size = dt.itemsize
        scalars = self._scalars[dt]
        args = (transa, transb, m, n, k, scalars[1].ctypes.data, a.data.ptr + a_off * size, lda,
                b.data.ptr + b_off * size, ldb, scalars[beta].ctypes.data, c.data.ptr + c_off * size, ldc)
        if self._cublas is not None:
            self._cublas.gemm(handle, dt, *args)
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
        """``issue()`` captured as a CUDA graph; returns a function that replays it on the
        current stream.  Callers serialise captures (the backend holds its graph lock)."""
        cupy = self.xp
        caller = self.where()
        side = self._capture_streams.get(caller.device)
        if side is None:  # one per device: the legacy default stream cannot capture
            side = self._capture_streams[caller.device] = cupy.cuda.Stream(non_blocking=True)
        # the caller's workspace: allocated now (not inside the capture) and kept alive by the graph
        memory = self._cublas.workspace(caller.device, caller.space) if self._cublas is not None else None
        self._capturing.where = Where(caller.device, side.ptr, caller.space)
        try:
            with side:
                side.begin_capture()
                try:
                    issue()
                finally:
                    graph = side.end_capture()
        finally:
            self._capturing.where = None

        def replay():
            graph.launch(stream=cupy.cuda.get_current_stream())
            return memory

        return replay


class HostOps:
    """:class:`CudaOps`'s contract on NumPy: the same offsets, leading dimensions and formulas."""

    graphs = True  # "capture" records the calls with raw addresses, as a CUDA graph does

    def __init__(self, xp=np):
        self.xp = xp

    @staticmethod
    def address(a) -> int:
        return a.ctypes.data

    @staticmethod
    def where() -> Where:
        return Where(0, 0, (0,))

    def handle(self):
        return None

    @staticmethod
    def _colmajor(a, off, rows, cols, ld):
        flat = a.reshape(-1)[off:]
        assert ld >= max(1, rows), f"cuBLAS needs a leading dimension >= max(1, rows): {ld} < {rows}"
        assert cols == 0 or (cols - 1) * ld + rows <= flat.size, "a view past the end of its buffer"
        return np.lib.stride_tricks.as_strided(flat, (rows, cols), (a.itemsize, ld * a.itemsize))

    def gemm(self, handle, dt, transa, transb, m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
        op_a = self._colmajor(a, a_off, *((m, k) if transa == OP_N else (k, m)), lda)
        op_b = self._colmajor(b, b_off, *((k, n) if transb == OP_N else (n, k)), ldb)
        out = self._colmajor(c, c_off, m, n, ldc)
        prod = (op_a if transa == OP_N else op_a.T) @ (op_b if transb == OP_N else op_b.T)
        out[...] = out + prod if beta else prod

    def lstm_step(self, live, hid, train, g, g_off, h, c, y, y_off, tc, tc_off, hp, hp_off, cp, cp_off):
        xp, n = self.xp, live * hid
        assert n > 0, "CUDA refuses a launch of 0 blocks"
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
        assert n > 0, "CUDA refuses a launch of 0 blocks"

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

    _RECORDED = ("gemm", "lstm_step", "lstm_step_backward")

    def capture(self, issue):
        """Record ``issue()``'s calls with each array as its address, dtype and size, as a CUDA
        graph keeps raw pointers: a replay works on whatever memory is at those addresses."""
        tape = []

        def recorder(name):
            def record(*args):
                tape.append((name, tuple(_Pointer(a.ctypes.data, a.dtype, a.size) if isinstance(a, np.ndarray)
                                         else a for a in args)))
            return record

        for name in self._RECORDED:
            setattr(self, name, recorder(name))
        try:
            issue()
        finally:
            for name in self._RECORDED:
                delattr(self, name)

        def replay():
            for name, args in tape:
                getattr(self, name)(*(a.array() if isinstance(a, _Pointer) else a for a in args))

        return replay


class _Pointer(NamedTuple):
    """An array as a graph node holds it: an address, a dtype and a size."""

    address: int
    dtype: np.dtype
    size: int

    def array(self) -> np.ndarray:
        """The ``size`` elements of ``dtype`` at ``address``, whatever array owns them now."""
        buffer = (ctypes.c_char * (self.size * self.dtype.itemsize)).from_address(self.address)
        return np.frombuffer(buffer, dtype=self.dtype, count=self.size)


# -- the loops ----------------------------------------------------------------------------
def input_projection(ops, x, w_ih, bias, out):
    """``out`` (N, 4H) ``= x W_ihᵀ + bias``: one GEMM, into the bias rows when there is a bias."""
    n, k = x.shape
    m = w_ih.shape[0]
    if bias is not None:
        out[...] = bias
    if n == 0:
        return
    ops.gemm(ops.handle(), w_ih.dtype, OP_T, OP_N, m, n, k, w_ih, 0, k, x, 0, k, int(bias is not None), out, 0, m)


def weight_gradient(ops, dg, inp, out):
    """``out`` (M, K) ``= dgᵀ inp`` for ``dg`` (N, M) and ``inp`` (N, K): a whole-sequence GEMM."""
    n, m = dg.shape
    k = inp.shape[1]
    if n == 0:
        out[...] = 0
        return
    ops.gemm(ops.handle(), dg.dtype, OP_N, OP_T, k, m, n, inp, 0, k, dg, 0, m, 0, out, 0, k)


def input_gradient(ops, dg, w, out):
    """``out`` (N, K) ``= dg w`` for ``dg`` (N, M) and ``w`` (M, K): a whole-sequence GEMM."""
    n, m = dg.shape
    k = w.shape[1]
    if n == 0:
        return
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
        if live == 0:  # a batch of 0: nothing to launch
            continue
        ops.gemm(handle, dt, OP_T, OP_N, g4, live, hid, w_hh, 0, hid, h, 0, hid, 1, g, lo * g4, g4)
        off = lo * hid
        kept = off if train else 0
        ops.lstm_step(live, hid, int(train), g, lo * g4, h, c, y, off, tc, kept, hp, kept, cp, kept)


def lstm_backward_steps(ops, steps, w_hh, acts, tc, cp, dy, dh, dc, dg):
    """Issue every step of one LSTM layer-direction's backward, last processed step first.

    ``dh``, ``dc`` (B, H) hold the gradients of the final state and end as those
    of the initial state; ``dg`` (N, 4H) receives the gate pre-activation gradients.
    """
    hid = w_hh.shape[1]
    g4 = 4 * hid
    handle, dt = ops.handle(), w_hh.dtype
    for _t, lo, _hi, live in reversed(steps):
        if live == 0:
            continue
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
        self.tc = xp.empty((n, hid), dt) if train else None
        self.hp = xp.empty((n, hid), dt) if train else None
        self.cp = xp.empty((n, hid), dt) if train else None


class GraphCache:
    """Captured loops by key, the least recently used dropped first.

    A key's first call runs the loop directly (which also warms cuBLAS and the
    kernels up); its second captures it, and later calls replay.  A key names the
    shapes, the schedule, the device and the stream (and the thread, for the
    per-thread default stream), so a captured loop and its buffers serve one
    stream, in order.  A capture that fails turns graphs off for this cache,
    with the reason in :attr:`disabled`, and every call runs the loop directly;
    a key whose buffers cannot be allocated (out of memory) runs directly from
    then on.
    """

    def __init__(self, ops, capacity: int = 4):
        self.ops = ops
        self.capacity = capacity
        self.entries: OrderedDict = OrderedDict()
        self.seen: set = set()
        self.refused: set = set()  # keys whose buffers could not be allocated
        self.disabled: str | None = None if ops.graphs is True else (ops.graphs or "not supported by these ops")
        self.launches = 0  # of captured loops (the first right after its capture)

    def key(self, *parts):
        where = self.ops.where()
        return parts + (where.device, where.space)

    def lookup(self, key, make):
        """The ``(workspace, replay)`` of ``key``; ``None``: run the loop directly this time."""
        if self.disabled:
            return None
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
            self.launches += 1
            return entry
        if key in self.refused:
            return None
        if key not in self.seen:
            if len(self.seen) > 1024:  # many one-off schedules (packed batches): forget them
                self.seen.clear()
                self.refused.clear()
            self.seen.add(key)
            return None
        try:
            workspace, issue = make()
        except Exception:  # e.g. out of memory for the buffers: this key runs directly from now on
            self.refused.add(key)
            return None
        try:
            entry = (workspace, self.ops.capture(issue))
        except Exception as exc:  # a driver or library that cannot capture: run directly from now on
            self.disabled = f"{type(exc).__name__}: {exc}"
            return None
        self.entries[key] = entry
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)
        self.launches += 1
        return entry
