"""``CupyBackend``: lstmkit's layer-direction contract on an array module (CuPy on a GPU).

One layer-direction over a packed sequence (see :mod:`lstmkit.backends.base`):

1. the input projection of every step at once, one GEMM (cuBLAS on CuPy):
   ``gx = x @ W_ih.T + b`` with ``b = b_ih + b_hh`` (LSTM, RNN) or ``b_ih`` (GRU,
   whose ``b_hn`` sits inside ``r * (.)``);
2. per step ``t``: one GEMM ``h_{t-1} @ W_hh.T`` for the live rows, then one
   fused elementwise kernel for the gates and the new state (LSTM, GRU; see
   :mod:`lstmkit_cupy.kernels`), or two array ops (RNN tanh/ReLU); the state
   stays on the device, updated in place row-block by row-block;
3. backward: per step the fused gate backward and one GEMM ``dG_t @ W_hh``;
   after the loop the weight and bias gradients and ``d_x`` as whole-sequence
   GEMMs and sums (``dW_ih = dGᵀ x``, ``dW_hh = dGᵀ H_prev``, ``d_x = dG W_ih``).

Any other cell (a plugin's) runs through
``ReferenceBackend(xp=self.xp)``: the cell's own ``forward_step``/``backward_step``
on the device.  Packed sequences: ``batch_sizes`` is read on the host, the rows
of a step are a contiguous block, the batch shrinks (forward) or grows
(``reverse``) over time and a finished row keeps its state.

The whole class is written against ``self.xp``: ``CupyBackend()`` imports CuPy
and uses the CUDA kernels; ``CupyBackend(xp=numpy)`` runs the same code on the
CPU with the array-op version of the gate math (the test path).  Arrays of
another array module are moved in once per call (NumPy -> device copies);
arrays already on the device in the right dtype and layout are used as they
are.  Nothing the caller passes is modified.
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np

from lstmkit.backends.base import FUSED_CELLS, Backend, float_dtype, keyed_grads, step_offsets
from lstmkit.backends.reference import ReferenceBackend
from lstmkit.cells import GRUCellType, LSTMCellType, RNNReluCellType, RNNTanhCellType

from .kernels import gate_math
from .steps import (CudaOps, GraphCache, Workspace, input_gradient, input_projection, lstm_backward_steps,
                    lstm_forward_steps, weight_gradient)


class _Cache:
    """What :meth:`CupyBackend.layer_backward` needs from a training forward."""

    __slots__ = ("cell_type", "dtype", "steps", "x", "arrays")

    def __init__(self, cell_type, dtype, steps, x, arrays):
        self.cell_type = cell_type
        self.dtype = dtype
        self.steps = steps  # [(t, row_lo, row_hi, live)] in forward processing order
        self.x = x
        self.arrays = arrays


def _host_int64(batch_sizes) -> np.ndarray:
    if hasattr(batch_sizes, "get") and not isinstance(batch_sizes, np.ndarray):
        batch_sizes = batch_sizes.get()  # a CuPy array: batch sizes are read on the host
    return np.asarray(batch_sizes, dtype=np.int64)


def _schedule(batch_sizes: np.ndarray, reverse: bool) -> list[tuple[int, int, int, int]]:
    """``[(t, row_lo, row_hi, live), ...]`` in the order the forward pass visits the steps."""
    offsets = step_offsets(batch_sizes).tolist()
    sizes = batch_sizes.tolist()
    order = range(len(sizes) - 1, -1, -1) if reverse else range(len(sizes))
    return [(t, offsets[t], offsets[t + 1], sizes[t]) for t in order]


def _blocks(a, count: int, width: int):
    """The ``count`` column blocks of width ``width`` of ``a`` (views)."""
    return [a[:, k * width:(k + 1) * width] for k in range(count)]


class CupyBackend(Backend):
    """The reference numerics with cuBLAS GEMMs and fused CUDA gate kernels.

    ``CupyBackend()`` computes with CuPy on the current CUDA device.
    ``CupyBackend(xp=numpy)`` runs the same code with NumPy (the CPU test
    path).  ``fused=False`` replaces the ``ElementwiseKernel``\\ s with the
    equivalent array operations (for cross-checking the kernels on a GPU).
    """

    name = "cupy"

    def __init__(self, xp: Any = None, *, fused: bool = True, steps: Any = "auto", graphs: bool = True,
                 tf32: bool = False):
        if xp is None:
            import cupy as xp  # the only place CuPy is imported
        self.xp = xp
        self.gates = gate_math(xp, fused)
        self.reference = ReferenceBackend(xp=xp, name=self.name)
        if steps == "auto":  # the LSTM step loop of bare cuBLAS calls and kernels (lstmkit_cupy.steps)
            steps = CudaOps(xp, tf32=tf32) if self.gates.fused else None
        if tf32 and not getattr(steps, "tf32", False):
            raise ValueError("tf32=True needs the CUDA step loop: CupyBackend() on CuPy, fused, steps='auto'")
        self.tf32 = bool(getattr(steps, "tf32", False))
        self.steps = steps
        # Captured forward loops keep their buffers (a few shapes); captured backward loops keep
        # nothing but addresses (one per layer-direction of a model).
        self.graphs = GraphCache(steps, capacity=4) if steps is not None and graphs else None
        self.backward_graphs = GraphCache(steps, capacity=32) if self.graphs is not None else None
        self._graph_lock = threading.Lock()  # the caches' bookkeeping

    @property
    def fused(self) -> bool:
        """Whether the LSTM and GRU gates run as CUDA ``ElementwiseKernel``\\ s."""
        return self.gates.fused

    def __repr__(self) -> str:
        graphs = None if self.graphs is None else (self.graphs.disabled or self.backward_graphs.disabled or True)
        return (f"<CupyBackend xp={self.xp.__name__} fused={self.fused} "
                f"steps={type(self.steps).__name__ if self.steps is not None else None} graphs={graphs!r}>")

    # -- arrays -------------------------------------------------------------------
    def to_host(self, array) -> np.ndarray:
        """A NumPy array of ``array`` (a device -> host copy on CuPy)."""
        if self.xp is np:
            return array
        return self.xp.asnumpy(array)

    def _dev(self, a, dtype):
        """``a`` as a C-contiguous ``dtype`` array of ``xp`` (no copy when it already is one)."""
        xp = self.xp
        return xp.ascontiguousarray(xp.asarray(a), dtype=dtype)

    def _dev_copy(self, a, dtype):
        """A new C-contiguous ``dtype`` array of ``xp`` holding ``a`` (state buffers)."""
        return self.xp.array(a, dtype=dtype, order="C", copy=True)

    @staticmethod
    def _dtype(x) -> np.dtype:
        return float_dtype(x.dtype, "cupy")

    # -- the contract -----------------------------------------------------------------
    def layer_forward(self, cell, params, x, batch_sizes, reverse, state0, training):
        dt = self._dtype(x)
        x = self._dev(x, dt)
        p = {k: self._dev(v, dt) for k, v in params.items()}
        bs = _host_int64(batch_sizes)
        kind = type(cell)
        if kind not in FUSED_CELLS:
            state0 = tuple(self._dev(s, dt) for s in state0)
            return self.reference.layer_forward(cell, p, x, bs, reverse, state0, training)
        steps = _schedule(bs, bool(reverse))
        if kind is LSTMCellType:
            if self._step_loop(p):
                return self._lstm_forward_steps(p, x, steps, state0, training, dt)
            return self._lstm_forward(p, x, steps, state0, training, dt)
        if kind is GRUCellType:
            return self._gru_forward(p, x, steps, state0, training, dt)
        return self._rnn_forward(p, x, steps, state0, training, dt, kind is RNNReluCellType)

    def layer_backward(self, cell, params, cache, d_y, d_state_n):
        kind = type(cell)
        if kind not in FUSED_CELLS:
            dt = self._dtype(d_y)
            p = {k: self._dev(v, dt) for k, v in params.items()}
            d_state_n = tuple(self._dev(d, dt) for d in d_state_n)
            return self.reference.layer_backward(cell, p, cache, self._dev(d_y, dt), d_state_n)
        if not isinstance(cache, _Cache) or cache.cell_type is not kind:
            raise TypeError(
                "layer_backward needs the cache of a training-mode layer_forward of the "
                f"cupy backend for this cell; got {type(cache).__name__}"
            )
        dt = cache.dtype
        p = {k: self._dev(v, dt) for k, v in params.items()}
        d_y = self._dev(d_y, dt)
        if kind is LSTMCellType:
            return self._lstm_backward(params, p, cache, d_y, d_state_n, dt)
        if kind is GRUCellType:
            return self._gru_backward(params, p, cache, d_y, d_state_n, dt)
        return self._rnn_backward(params, p, cache, d_y, d_state_n, dt, kind is RNNReluCellType)

    # -- LSTM -------------------------------------------------------------------------
    def _lstm_forward(self, p, x, steps, state0, training, dt):
        xp, gates = self.xp, self.gates
        w_ih, w_hh, w_hr = p["weight_ih"], p["weight_hh"], p.get("weight_hr")
        n, g4, out = x.shape[0], w_ih.shape[0], w_hh.shape[1]
        hid = g4 // 4
        # Input projection of the whole sequence, both biases folded in: one GEMM.
        gx = x @ w_ih.T
        if "bias_ih" in p:
            gx += p["bias_ih"] + p["bias_hh"]
        h = self._dev_copy(state0[0], dt)
        c = self._dev_copy(state0[1], dt)
        y = xp.empty((n, out), dt)
        if training:
            acts = xp.empty((n, g4), dt)  # i, f, g, o after their nonlinearities
            tanh_c = xp.empty((n, hid), dt)
            h_prev = xp.empty((n, out), dt)
            c_prev = xp.empty((n, hid), dt)
            h_cell = xp.empty((n, hid), dt) if w_hr is not None else None
        else:
            rows = h.shape[0]
            acts_buf = xp.empty((rows, g4), dt)
            tanh_buf = xp.empty((rows, hid), dt)
            hcell_buf = xp.empty((rows, hid), dt) if w_hr is not None else None
        w_hh_t = w_hh.T
        w_hr_t = None if w_hr is None else w_hr.T
        for _t, lo, hi, live in steps:
            h_live, c_live = h[:live], c[:live]
            gh = h_live @ w_hh_t  # (live, 4H): the step's one GEMM
            if training:
                h_prev[lo:hi] = h_live
                c_prev[lo:hi] = c_live
                a, tc, cp = acts[lo:hi], tanh_c[lo:hi], c_prev[lo:hi]
                hc = y[lo:hi] if w_hr is None else h_cell[lo:hi]
            else:
                a, tc, cp = acts_buf[:live], tanh_buf[:live], c_live  # c updated in place
                hc = y[lo:hi] if w_hr is None else hcell_buf[:live]
            gates.lstm_forward(*_blocks(gx[lo:hi], 4, hid), *_blocks(gh, 4, hid), cp,
                               *_blocks(a, 4, hid), tc, c_live, hc)
            if w_hr is not None:
                y[lo:hi] = hc @ w_hr_t
            h[:live] = y[lo:hi]
        cache = None
        if training:
            cache = _Cache(LSTMCellType, dt, steps, x, (acts, tanh_c, h_prev, c_prev, h_cell))
        return y, (h, c), cache

    def _lstm_backward(self, params, p, cache, d_y, d_state_n, dt):
        if self._step_loop(p):
            return self._lstm_backward_steps(params, p, cache, d_y, d_state_n, dt)
        xp, gates = self.xp, self.gates
        acts, tanh_c, h_prev, c_prev, h_cell = cache.arrays
        x = cache.x
        w_ih, w_hh, w_hr = p["weight_ih"], p["weight_hh"], p.get("weight_hr")
        n, g4, out = x.shape[0], w_ih.shape[0], w_hh.shape[1]
        hid = g4 // 4
        dh = self._dev_copy(d_state_n[0], dt)
        dc = self._dev_copy(d_state_n[1], dt)
        d_gates = xp.empty((n, g4), dt)
        dh_total = xp.empty((n, out), dt) if w_hr is not None else None
        for _t, lo, hi, live in reversed(cache.steps):
            dh_t = dh[:live] + d_y[lo:hi]
            if w_hr is not None:
                dh_total[lo:hi] = dh_t
                dh_t = dh_t @ w_hr  # gradient w.r.t. h_cell = o * tanh(c)
            dc_live = dc[:live]
            dg = d_gates[lo:hi]
            gates.lstm_backward(*_blocks(acts[lo:hi], 4, hid), tanh_c[lo:hi], c_prev[lo:hi],
                                dh_t, dc_live, *_blocks(dg, 4, hid), dc_live)
            dh[:live] = dg @ w_hh
        grads = {"weight_ih": d_gates.T @ x, "weight_hh": d_gates.T @ h_prev}
        if "bias_ih" in p:
            grads["bias_ih"] = d_gates.sum(axis=0)
            grads["bias_hh"] = grads["bias_ih"].copy()
        if w_hr is not None:
            grads["weight_hr"] = dh_total.T @ h_cell
        d_x = d_gates @ w_ih
        return d_x, (dh, dc), keyed_grads(params, grads)

    # -- LSTM through lstmkit_cupy.steps (no projection) --------------------------------
    def _step_loop(self, p) -> bool:
        """Does this LSTM layer run through :mod:`lstmkit_cupy.steps`?  (Not with a projection.)"""
        return self.steps is not None and "weight_hr" not in p

    def _lstm_forward_steps(self, p, x, steps, state0, training, dt):
        xp, ops = self.xp, self.steps
        w_ih, w_hh = p["weight_ih"], p["weight_hh"]
        n, hid, rows = x.shape[0], w_hh.shape[1], state0[0].shape[0]
        bias = p["bias_ih"] + p["bias_hh"] if "bias_ih" in p else None
        h0, c0 = self._dev(state0[0], dt), self._dev(state0[1], dt)
        if self.graphs is not None:
            def make():
                ws = Workspace(xp, dt, n, rows, hid, training)
                return ws, lambda: lstm_forward_steps(ops, steps, ws.w_hh, ws.g, ws.h, ws.c, ws.y,
                                                      training, ws.tc, ws.hp, ws.cp)

            with self._graph_lock:
                entry = self.graphs.lookup(self.graphs.key(tuple(steps), dt, n, rows, hid, training), make)
                if entry is not None:  # the captured loop on its own buffers: inputs in, results out
                    ws, replay = entry
                    input_projection(ops, x, w_ih, bias, ws.g)
                    ws.w_hh[...] = w_hh
                    ws.h[...] = h0
                    ws.c[...] = c0
                    replay()
                    y, h, c = ws.y.copy(), ws.h.copy(), ws.c.copy()
                    cache = None
                    if training:
                        kept = (ws.g.copy(), ws.tc.copy(), ws.hp.copy(), ws.cp.copy(), None)
                        cache = _Cache(LSTMCellType, dt, steps, x, kept)
                    return y, (h, c), cache
        # the steps directly: fresh buffers are the results
        g = xp.empty((n, 4 * hid), dt)
        input_projection(ops, x, w_ih, bias, g)
        h, c, y = h0.copy(), c0.copy(), xp.empty((n, hid), dt)
        kept = tuple(xp.empty((n, hid), dt) for _ in range(3)) if training else (None, None, None)
        lstm_forward_steps(ops, steps, w_hh, g, h, c, y, training, *kept)
        cache = _Cache(LSTMCellType, dt, steps, x, (g, *kept, None)) if training else None
        return y, (h, c), cache

    def _lstm_backward_steps(self, params, p, cache, d_y, d_state_n, dt):
        xp, ops = self.xp, self.steps
        acts, tanh_c, h_prev, c_prev, _ = cache.arrays
        x, w_ih, w_hh = cache.x, p["weight_ih"], p["weight_hh"]
        dh = self._dev_copy(d_state_n[0], dt)
        dc = self._dev_copy(d_state_n[1], dt)
        d_gates = xp.empty(acts.shape, dt)
        arrays = (w_hh, acts, tanh_c, c_prev, d_y, dh, dc, d_gates)

        def issue():
            lstm_backward_steps(ops, cache.steps, *arrays)

        entry = None
        if self.backward_graphs is not None:
            # Keyed by the very addresses: a graph replays only on this call's own arrays (in a
            # training loop CuPy's memory pool hands the same blocks back call after call).
            key = self.backward_graphs.key(tuple(cache.steps), dt, acts.shape, dh.shape,
                                           *(ops.address(a) for a in arrays))
            with self._graph_lock:
                entry = self.backward_graphs.lookup(key, lambda: (None, issue))
                if entry is not None:
                    entry[1]()
        if entry is None:
            issue()
        # The whole-sequence products through the same cuBLAS handle (tf32 applies to them too).
        grads = {"weight_ih": xp.empty(w_ih.shape, dt), "weight_hh": xp.empty(w_hh.shape, dt)}
        weight_gradient(ops, d_gates, x, grads["weight_ih"])
        weight_gradient(ops, d_gates, h_prev, grads["weight_hh"])
        if "bias_ih" in p:
            grads["bias_ih"] = d_gates.sum(axis=0)
            grads["bias_hh"] = grads["bias_ih"].copy()
        d_x = xp.empty(x.shape, dt)
        input_gradient(ops, d_gates, w_ih, d_x)
        return d_x, (dh, dc), keyed_grads(params, grads)

    # -- GRU --------------------------------------------------------------------------
    def _gru_forward(self, p, x, steps, state0, training, dt):
        xp, gates = self.xp, self.gates
        w_ih, w_hh = p["weight_ih"], p["weight_hh"]
        n, g3 = x.shape[0], w_ih.shape[0]
        hid = g3 // 3
        gx = x @ w_ih.T  # one GEMM for every step; b_hh stays apart (r multiplies b_hn)
        if "bias_ih" in p:
            gx += p["bias_ih"]
        b_hh = p["bias_hh"] if "bias_hh" in p else xp.zeros(g3, dt)
        b_blocks = [b_hh[k * hid:(k + 1) * hid] for k in range(3)]
        h = self._dev_copy(state0[0], dt)
        y = xp.empty((n, hid), dt)
        if training:
            acts = xp.empty((n, g3), dt)  # r, z, n
            gh_n = xp.empty((n, hid), dt)  # W_hn h + b_hn
            h_prev = xp.empty((n, hid), dt)
        else:
            rows = h.shape[0]
            acts_buf = xp.empty((rows, g3), dt)
            ghn_buf = xp.empty((rows, hid), dt)
        w_hh_t = w_hh.T
        for _t, lo, hi, live in steps:
            h_live = h[:live]
            gh = h_live @ w_hh_t
            if training:
                h_prev[lo:hi] = h_live
                a, ghn, hp = acts[lo:hi], gh_n[lo:hi], h_prev[lo:hi]
            else:
                a, ghn, hp = acts_buf[:live], ghn_buf[:live], h_live
            gates.gru_forward(*_blocks(gx[lo:hi], 3, hid), *_blocks(gh, 3, hid), *b_blocks, hp,
                              *_blocks(a, 3, hid), ghn, y[lo:hi])
            h[:live] = y[lo:hi]
        cache = None
        if training:
            cache = _Cache(GRUCellType, dt, steps, x, (acts, gh_n, h_prev))
        return y, (h,), cache

    def _gru_backward(self, params, p, cache, d_y, d_state_n, dt):
        xp, gates = self.xp, self.gates
        acts, gh_n, h_prev = cache.arrays
        x = cache.x
        w_ih, w_hh = p["weight_ih"], p["weight_hh"]
        n, g3 = x.shape[0], w_ih.shape[0]
        hid = g3 // 3
        dh = self._dev_copy(d_state_n[0], dt)
        d_gx = xp.empty((n, g3), dt)  # w.r.t. x W_ih^T + b_ih
        d_gh = xp.empty((n, g3), dt)  # w.r.t. h W_hh^T + b_hh
        for _t, lo, hi, live in reversed(cache.steps):
            dh_t = dh[:live] + d_y[lo:hi]
            dh_live = dh[:live]
            dgh = d_gh[lo:hi]
            gates.gru_backward(*_blocks(acts[lo:hi], 3, hid), gh_n[lo:hi], h_prev[lo:hi], dh_t,
                               *_blocks(d_gx[lo:hi], 3, hid), *_blocks(dgh, 3, hid), dh_live)
            dh_live += dgh @ w_hh
        grads = {"weight_ih": d_gx.T @ x, "weight_hh": d_gh.T @ h_prev}
        if "bias_ih" in p:
            grads["bias_ih"] = d_gx.sum(axis=0)
            grads["bias_hh"] = d_gh.sum(axis=0)
        d_x = d_gx @ w_ih
        return d_x, (dh,), keyed_grads(params, grads)

    # -- Elman RNN (plain array ops: two per step) ------------------------------------
    def _rnn_forward(self, p, x, steps, state0, training, dt, relu):
        xp = self.xp
        w_ih, w_hh = p["weight_ih"], p["weight_hh"]
        n, hid = x.shape[0], w_ih.shape[0]
        gx = x @ w_ih.T
        if "bias_ih" in p:
            gx += p["bias_ih"] + p["bias_hh"]
        h = self._dev_copy(state0[0], dt)
        y = xp.empty((n, hid), dt)
        h_prev = xp.empty((n, hid), dt) if training else None
        w_hh_t = w_hh.T
        for _t, lo, hi, live in steps:
            h_live = h[:live]
            if training:
                h_prev[lo:hi] = h_live
            pre = gx[lo:hi] + h_live @ w_hh_t
            if relu:
                xp.maximum(pre, 0, out=y[lo:hi])
            else:
                xp.tanh(pre, out=y[lo:hi])
            h[:live] = y[lo:hi]
        cache = None
        if training:
            kind = RNNReluCellType if relu else RNNTanhCellType
            # A copy of the outputs: the caller owns y and may change it.
            cache = _Cache(kind, dt, steps, x, (y.copy(), h_prev))
        return y, (h,), cache

    def _rnn_backward(self, params, p, cache, d_y, d_state_n, dt, relu):
        xp = self.xp
        h_all, h_prev = cache.arrays
        x = cache.x
        w_ih, w_hh = p["weight_ih"], p["weight_hh"]
        n, hid = x.shape[0], w_ih.shape[0]
        dh = self._dev_copy(d_state_n[0], dt)
        d_pre = xp.empty((n, hid), dt)
        for _t, lo, hi, live in reversed(cache.steps):
            dh_t = dh[:live] + d_y[lo:hi]
            h_t = h_all[lo:hi]
            dp = d_pre[lo:hi]
            if relu:
                dp[...] = dh_t * (h_t > 0)
            else:
                dp[...] = dh_t * (1 - h_t * h_t)
            dh[:live] = dp @ w_hh
        grads = {"weight_ih": d_pre.T @ x, "weight_hh": d_pre.T @ h_prev}
        if "bias_ih" in p:
            grads["bias_ih"] = d_pre.sum(axis=0)
            grads["bias_hh"] = grads["bias_ih"].copy()
        d_x = d_pre @ w_ih
        return d_x, (dh,), keyed_grads(params, grads)
