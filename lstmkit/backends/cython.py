"""The ``cython`` backend: the fused kernels of :mod:`lstmkit._core`.

The built-in cells (LSTM with or without projection, GRU, RNN tanh/ReLU) run
in one compiled kernel per layer-direction; any other cell (a plugin's) runs on
:class:`~lstmkit.backends.reference.ReferenceBackend`.  Arrays are float32 or
float64; they are made C-contiguous (a copy only when needed) at this boundary.
Nothing the caller passes is modified.
"""
from __future__ import annotations

import numpy as np

from .. import _core, _threads
from .._threads import kernel as _sized
from .._threads import split_threads as _split_threads
from ..cells import GRUCellType, LSTMCellType, RNNReluCellType, RNNTanhCellType
from .base import FUSED_CELLS, Backend, float_dtype, keyed_grads
from .reference import ReferenceBackend

#: Debug switch: when true, every array this backend allocates (outputs,
#: caches, workspaces) starts filled with NaN instead of ``np.empty`` garbage,
#: so a kernel that reads memory before writing it shows up in the results.
POISON_WORKSPACES = False

#: Run the layer kernels with flush-to-zero and denormals-are-zero set on the
#: calling thread (x86-64; restored after each call).  Off by default, as in
#: PyTorch (``torch.set_flush_denormal(False)``): results then match torch's
#: in the denormal range.  On, values below ~1.2e-38 (float32) / ~2.2e-308
#: (float64) become 0, which avoids the slow microcode path when states decay
#: into that range (docs/performance.md, "Denormals").
FLUSH_DENORMALS = False

_REFERENCE = ReferenceBackend()
_KERNEL_NAMES = (
    "lstm_forward", "lstm_backward", "gru_forward", "gru_backward", "rnn_forward",
    "rnn_backward",
)


class _Kernels:
    """One dtype's specialisations of the fused kernels, picked once (calling a
    fused function directly would re-dispatch on every call)."""

    __slots__ = _KERNEL_NAMES

    def __init__(self, ctype: str):
        for name in _KERNEL_NAMES:
            setattr(self, name, getattr(_core, name)[ctype])


_KERNELS = {np.dtype(np.float32): _Kernels("float"), np.dtype(np.float64): _Kernels("double")}


class _Cache:
    """What :meth:`CythonBackend.layer_backward` needs from a training forward."""

    __slots__ = ("dtype", "batch_sizes", "reverse", "x", "arrays")

    def __init__(self, dtype, batch_sizes, reverse, x, arrays):
        self.dtype = dtype
        self.batch_sizes = batch_sizes
        self.reverse = reverse
        self.x = x
        self.arrays = arrays


def _empty(shape, dtype):
    if POISON_WORKSPACES:
        return np.full(shape, np.nan, dtype)
    return np.empty(shape, dtype)


def _scratch(shape, dtype):
    """Like :func:`_empty`, on the core's workspace pool (``_core.workspace``): for caches and
    workspaces that never reach the caller, so that the next call reuses their pages."""
    a = _core.workspace(shape, dtype)
    if POISON_WORKSPACES:
        a.fill(np.nan)
    return a


#: Inference projects the input a block of time steps at a time into a gate
#: workspace of about this size (never less than one step's rows), so memory
#: does not grow with T*B*G; the block stays in L2 between its GEMM and use
#: (half of Zen 4's 1 MB: 2-7% faster than 2 MB blocks once the panel kernel
#: took the projection, which needs no large blocks to run at speed).
GATE_BLOCK_BYTES = 512 << 10


def _gate_rows(n, g, batch_sizes, dtype, training):
    """Rows of the gate workspace: all ``n`` when training (backward reads them)."""
    if training or n == 0:
        return n
    per_block = max(1, GATE_BLOCK_BYTES // (g * np.dtype(dtype).itemsize))
    return min(n, max(int(batch_sizes[0]), per_block))


def _kernels(dtype):
    return _KERNELS[float_dtype(dtype, "cython")]


def _arr(a, dtype):
    return np.ascontiguousarray(a, dtype=dtype)


def _opt(a, dtype):
    return None if a is None else np.ascontiguousarray(a, dtype=dtype)


_PANELS_USED = {}


def _team_threads(cell, params, rows, work):
    """Threads the core's own two-thread loop gets for this call (1: none): every built-in
    cell (LSTM without projection)."""
    if type(cell) not in FUSED_CELLS:
        return 1
    if "weight_hr" in params or not 1 < rows <= _core.PANEL_MAX_ROWS:
        return 1
    dtype = params["weight_hh"].dtype
    if dtype not in _PANELS_USED:
        _PANELS_USED[dtype] = _core.lk_panels_used(dtype)
    return _split_threads(work) if _PANELS_USED[dtype] else 1


class CythonBackend(Backend):
    """Compiled BLAS + SIMD kernels (``lstmkit._core``); the default backend."""

    name = "cython"

    # -- forward ----------------------------------------------------------------
    # The core's BLAS threads are sized per call by the per-step work (lstmkit/_threads.py).
    # A call the core can run on two threads of its own (a built-in cell, an LSTM without
    # projection; 2-64 rows, the panel path) keeps BLAS at one thread: an OpenBLAS worker spins for a
    # while after each call and would take the second CPU.  Other calls size BLAS.
    def layer_forward(self, cell, params, x, batch_sizes, reverse, state0, training):
        work = len(state0[0]) * params["weight_hh"].size
        split = _team_threads(cell, params, len(state0[0]), work)
        with _sized(0 if split > 1 else work):
            return self._layer_forward(cell, params, x, batch_sizes, reverse, state0, training,
                                       split)

    def layer_backward(self, cell, params, cache, d_y, d_state_n):
        work = len(d_state_n[0]) * params["weight_hh"].size
        split = _team_threads(cell, params, len(d_state_n[0]), work)
        with _sized(0 if split > 1 else work):
            return self._layer_backward(cell, params, cache, d_y, d_state_n, split)

    def scratch(self, shape, dtype):
        return _scratch(shape, dtype)

    def cell_step(self, cell, params, x, state):
        with _sized(len(x) * (params["weight_ih"].size + params["weight_hh"].size)):
            return self._cell_step(cell, params, x, state)

    def _layer_forward(self, cell, params, x, batch_sizes, reverse, state0, training, threads=1):
        kind = type(cell)
        if kind not in FUSED_CELLS:
            return _REFERENCE.layer_forward(
                cell, params, x, batch_sizes, reverse, state0, training
            )
        dt = np.asarray(x).dtype
        k = _kernels(dt)
        x = _arr(x, dt)
        bs = np.ascontiguousarray(batch_sizes, dtype=np.int64)
        reverse = bool(reverse)
        w_ih = _arr(params["weight_ih"], dt)
        w_hh = _arr(params["weight_hh"], dt)
        b_ih = _opt(params.get("bias_ih"), dt)
        b_hh = _opt(params.get("bias_hh"), dt)
        h0 = _arr(state0[0], dt)
        n, g, p, b = x.shape[0], w_ih.shape[0], w_hh.shape[1], h0.shape[0]
        h = _empty((b, p), dt)
        y = _empty((n, p), dt)
        gates = _scratch((_gate_rows(n, g, bs, dt, training), g), dt)

        if kind is LSTMCellType:
            hid = g // 4
            c0 = _arr(state0[1], dt)
            w_hr = _opt(params.get("weight_hr"), dt)
            c = _empty((b, hid), dt)
            if not training:
                hcell = None if w_hr is None else _empty((b, hid), dt)
                k.lstm_forward(x, w_ih, w_hh, b_ih, b_hh, w_hr, bs, reverse, h0, c0,
                               h, c, y, gates, hcell,
                               flush_denormals=FLUSH_DENORMALS, threads=threads)
                return y, (h, c), None
            hcell = None if w_hr is None else _scratch((n, hid), dt)
            hprev, cprev, tanhc = _scratch((n, p), dt), _scratch((n, hid), dt), _scratch((n, hid), dt)
            k.lstm_forward(x, w_ih, w_hh, b_ih, b_hh, w_hr, bs, reverse, h0, c0,
                           h, c, y, gates, hcell, hprev, cprev, tanhc,
                           flush_denormals=FLUSH_DENORMALS, threads=threads)
            cache = _Cache(dt, bs, reverse, x, (gates, hprev, cprev, tanhc, hcell))
            return y, (h, c), cache

        if kind is GRUCellType:
            if b_hh is None:  # the kernel adds b_hn inside r * (.): zeros stand in
                b_hh = np.zeros(g, dt)
            gh = _empty((b, g), dt)
            if not training:
                k.gru_forward(x, w_ih, w_hh, b_ih, b_hh, bs, reverse, h0, h, y, gates, gh,
                              flush_denormals=FLUSH_DENORMALS, threads=threads)
                return y, (h,), None
            hprev, ghn = _scratch((n, p), dt), _scratch((n, p), dt)
            k.gru_forward(x, w_ih, w_hh, b_ih, b_hh, bs, reverse, h0, h, y, gates, gh,
                          hprev, ghn,
                          flush_denormals=FLUSH_DENORMALS, threads=threads)
            return y, (h,), _Cache(dt, bs, reverse, x, (gates, hprev, ghn))

        relu = kind is RNNReluCellType
        if not training:
            k.rnn_forward(x, w_ih, w_hh, b_ih, b_hh, bs, reverse, relu, h0, h, y, gates,
                          flush_denormals=FLUSH_DENORMALS, threads=threads)
            return y, (h,), None
        hprev = _scratch((n, p), dt)
        k.rnn_forward(x, w_ih, w_hh, b_ih, b_hh, bs, reverse, relu, h0, h, y, gates, hprev,
                      flush_denormals=FLUSH_DENORMALS, threads=threads)
        return y, (h,), _Cache(dt, bs, reverse, x, (gates, hprev))

    # -- backward ---------------------------------------------------------------
    def _layer_backward(self, cell, params, cache, d_y, d_state_n, threads=1):
        kind = type(cell)
        if kind not in FUSED_CELLS:
            return _REFERENCE.layer_backward(cell, params, cache, d_y, d_state_n)
        if not isinstance(cache, _Cache):
            raise TypeError(
                "layer_backward needs the cache of a training-mode layer_forward of the "
                f"cython backend; got {type(cache).__name__}"
            )
        dt = cache.dtype
        k = _KERNELS[dt]
        x, bs, reverse = cache.x, cache.batch_sizes, cache.reverse
        w_ih = _arr(params["weight_ih"], dt)
        w_hh = _arr(params["weight_hh"], dt)
        d_y = _arr(d_y, dt)
        dhn = _arr(d_state_n[0], dt)
        n, i, g, p, b = x.shape[0], x.shape[1], w_ih.shape[0], w_hh.shape[1], dhn.shape[0]
        has_bias = "bias_ih" in params
        grads = {
            "weight_ih": _empty((g, i), dt),
            "weight_hh": _empty((g, p), dt),
        }
        if has_bias:
            grads["bias_ih"] = _empty(g, dt)
            grads["bias_hh"] = _empty(g, dt)
        db_ih, db_hh = grads.get("bias_ih"), grads.get("bias_hh")
        dx = _empty((n, i), dt)
        dh0 = _empty((b, p), dt)

        if kind is LSTMCellType:
            hid = g // 4
            gates, hprev, cprev, tanhc, hcell = cache.arrays
            w_hr = _opt(params.get("weight_hr"), dt)
            dcn = _arr(d_state_n[1], dt)
            dc0 = _empty((b, hid), dt)
            if w_hr is None:
                dw_hr = dhtot = dhcell = None
            else:
                dw_hr = grads["weight_hr"] = _empty((p, hid), dt)
                dhtot, dhcell = _scratch((n, p), dt), _empty((b, hid), dt)
            k.lstm_backward(x, w_ih, w_hh, w_hr, bs, reverse, gates, hprev, cprev, tanhc,
                            hcell, d_y, dhn, dcn, dh0, dc0, _scratch((n, g), dt), dhtot,
                            dhcell, dx, grads["weight_ih"], grads["weight_hh"], db_ih,
                            db_hh, dw_hr,
                            flush_denormals=FLUSH_DENORMALS, threads=threads)
            return dx, (dh0, dc0), keyed_grads(params, grads)

        if kind is GRUCellType:
            gates, hprev, ghn = cache.arrays
            k.gru_backward(x, w_ih, w_hh, bs, reverse, gates, hprev, ghn, d_y, dhn, dh0,
                           _scratch((n, g), dt), _scratch((n, p), dt), dx, grads["weight_ih"],
                           grads["weight_hh"], db_ih, db_hh,
                           flush_denormals=FLUSH_DENORMALS, threads=threads)
            return dx, (dh0,), keyed_grads(params, grads)

        gates, hprev = cache.arrays
        k.rnn_backward(x, w_ih, w_hh, bs, reverse, kind is RNNReluCellType, gates, hprev,
                       d_y, dhn, dh0, _scratch((n, g), dt), dx, grads["weight_ih"],
                       grads["weight_hh"], db_ih, db_hh,
                       flush_denormals=FLUSH_DENORMALS, threads=threads)
        return dx, (dh0,), keyed_grads(params, grads)

    # -- one step ---------------------------------------------------------------
    def _cell_step(self, cell, params, x, state):
        """One inference step ``x`` (B, I) -> new state tuple; the ``LSTMCell`` hot path.

        The arrays go straight to the kernel, whose buffer checks reject a
        wrong dtype or layout; only then are they converted and the call retried.
        """
        kind = type(cell)
        if kind not in FUSED_CELLS or "weight_hr" in params:
            return Backend.cell_step(self, cell, params, x, state)
        args = (x, params["weight_ih"], params["weight_hh"], params.get("bias_ih"),
                params.get("bias_hh"))
        try:
            return _step(kind, args, state, x.dtype)
        except ValueError:  # wrong dtype or not C-contiguous: convert, retry
            dt = np.asarray(x).dtype
            _kernels(dt)
            args = tuple(_opt(a, dt) for a in args)
            return _step(kind, args, tuple(_arr(s, dt) for s in state), dt)


def _step(kind, args, state, dt):
    """Run one step of a built-in cell: new state arrays.  Inside ``_sized`` (the thread
    policy): when it gave the core's BLAS threads, the products use them."""
    shape = (args[0].shape[0], state[0].shape[1])
    poison = POISON_WORKSPACES
    pools = _threads._POOLS
    blas = pools is not None and pools.get is not None and shape[0] > 4 and pools.get() > 1
    h = np.full(shape, np.nan, dt) if poison else np.empty(shape, dt)
    if kind is LSTMCellType:
        c = np.full(shape, np.nan, dt) if poison else np.empty(shape, dt)
        _core.lstm_step(*args, state[0], state[1], h, c, poison, blas)
        return h, c
    if kind is GRUCellType:
        _core.gru_step(*args, state[0], h, poison, blas)
    else:
        _core.rnn_step(*args, kind is RNNReluCellType, state[0], h, poison, blas)
    return (h,)


_STEP_KINDS = {LSTMCellType: 0, GRUCellType: 1, RNNTanhCellType: 2, RNNReluCellType: 3}


def cell_stepper(module, cell, input_size, hidden_size, dtype, params, backend):
    """The compiled step of a ``LSTMCell``/``GRUCell``/``RNNCell`` Python loop
    (``_core.CellStep``): ``step(input, hx)`` -> the new state, ``None`` when the
    arguments are not the plain case, ``False`` when the thread policy must run
    around it.  ``params``: the module's live parameter dict (read at every step);
    the step stays valid while ``module.backend`` is ``backend``.  ``None`` for
    other cells, or where the step cannot read this NumPy's arrays directly."""
    kind = _STEP_KINDS.get(type(cell))
    if kind is None or np.dtype(dtype) not in _KERNELS:
        return None
    try:
        return _core.CellStep(kind, input_size, hidden_size, dtype, params, module, backend,
                              globals(), _threads)
    except RuntimeError:  # an ndarray layout the step does not know
        return None
