"""The engine: layers, directions, dropout between layers, state layout, packing.

This is the one place that knows how a multi-layer, possibly bidirectional
recurrent network is assembled from layer-directions.  Inside, every input is
a *packed* sequence (see :mod:`lstmkit.backends.base`): rows of all time steps
stacked time-major, with ``batch_sizes``.  A dense ``(T, B, F)`` batch is
``batch_sizes = [B] * T``; ``batch_first`` and unbatched input are handled by
:class:`SequenceLayout` at the edge.

Arrays belong to the backend's array module ``backend.xp`` (NumPy, or CuPy for
a GPU backend); the modules move the caller's arrays there once per call.

States are ``(num_layers * D, B, width)`` with index ``layer * D + direction``
(PyTorch's ``h_n`` layout), one such array per state tensor (``h``, ``c``).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Sequence

import numpy as np

from . import _threads
from ._recompute import Segments, segment_length, segmented_backward, segmented_forward
from .backends import Backend
from .cells import CellType
from .utils.rnn import PackedSequence, check_packed_sequence


# -- input and output layout ---------------------------------------------------
@dataclass
class SequenceLayout:
    """How the caller's input maps to packed rows, and how results map back."""

    packed: PackedSequence | None  # the caller's PackedSequence, if any
    batch_first: bool
    unbatched: bool
    steps: int  # T
    batch: int  # B

    @classmethod
    def of(cls, input, batch_first: bool) -> "SequenceLayout":
        """The layout of ``input``; a ``PackedSequence`` is validated here, before any backend."""
        if isinstance(input, PackedSequence):
            check_packed_sequence(input)
            return cls(input, False, False, len(input.batch_sizes), int(input.batch_sizes[0]))
        unbatched = input.ndim == 2
        if unbatched:
            return cls(None, False, True, input.shape[0], 1)
        t_axis, b_axis = (1, 0) if batch_first else (0, 1)
        return cls(None, batch_first, False, input.shape[t_axis], input.shape[b_axis])

    # forward direction: caller -> rows
    def rows(self, input, dtype, xp=np) -> tuple[Any, np.ndarray]:
        """``(x_rows (N, F), batch_sizes (T,))``: rows a C-contiguous ``dtype`` ``xp`` array
        (a view when possible); ``batch_sizes`` always a host int64 array."""
        if self.packed is not None:
            data = input.data
            batch_sizes = np.asarray(input.batch_sizes, dtype=np.int64)
        else:
            data = self.time_major(input)
            batch_sizes = np.full(self.steps, self.batch, dtype=np.int64)
            data = data.reshape(self.steps * self.batch, data.shape[-1])
        # asarray first: cupy.ascontiguousarray accepts only device arrays.
        return xp.ascontiguousarray(xp.asarray(data), dtype=dtype), batch_sizes

    def time_major(self, array):
        """``(T, B, F)`` view of a dense caller array shaped like the input or output."""
        if self.unbatched:
            return array[:, None, :]
        return array.transpose(1, 0, 2) if self.batch_first else array

    def output(self, y_rows: np.ndarray):
        """The caller-facing output from output rows ``(N, D*P)``."""
        if self.packed is not None:
            return self.packed._replace(data=y_rows)
        y = y_rows.reshape(self.steps, self.batch, y_rows.shape[-1])
        if self.unbatched:
            return y[:, 0, :]
        return y.transpose(1, 0, 2) if self.batch_first else y

    def output_shape(self, width: int) -> tuple[int, ...]:
        """Shape of the caller-facing dense output (or of packed ``.data``) for ``width`` features."""
        if self.packed is not None:
            return (int(np.sum(self.packed.batch_sizes)), width)
        if self.unbatched:
            return (self.steps, width)
        return (self.batch, self.steps, width) if self.batch_first else (self.steps, self.batch, width)

    def grad_rows(self, d_out, width: int, dtype, xp=np):
        """Rows ``(N, width)`` of a gradient shaped like the output (``None``: zeros)."""
        expected = self.output_shape(width)
        rows = (self.steps * self.batch, width) if self.packed is None else expected
        if d_out is None:
            return xp.zeros(rows, dtype=dtype)
        if isinstance(d_out, PackedSequence):
            d_out = d_out.data
        d_out = xp.asarray(d_out)
        if d_out.shape != expected:
            raise ValueError(f"d_out should have the output's shape {expected}, got {d_out.shape}")
        if self.packed is None:
            d_out = self.time_major(d_out).reshape(rows)
        return xp.ascontiguousarray(d_out, dtype=dtype)

    def input_grad(self, d_x_rows: np.ndarray):
        """``d_input`` shaped like the input (like its ``.data`` for packed input)."""
        if self.packed is not None:
            return d_x_rows
        return self.output(d_x_rows)

    # states: caller order <-> sorted (internal) order
    def state_in(self, state: np.ndarray) -> np.ndarray:
        """``(L*D, B, w)`` caller state -> internal order (packed: sorted by length)."""
        if self.packed is not None and self.packed.sorted_indices is not None:
            return state[:, self.packed.sorted_indices]
        return state

    def state_out(self, state: np.ndarray) -> np.ndarray:
        """Internal ``(L*D, B, w)`` state -> caller order."""
        if self.packed is not None and self.packed.unsorted_indices is not None:
            return state[:, self.packed.unsorted_indices]
        return state


# -- the layer stack -----------------------------------------------------------
@dataclass
class StackCache:
    """What :func:`stack_backward` needs from a training forward."""

    layer_caches: list  # [layer][direction] backend caches (recompute: _recompute.Segments)
    masks: list  # dropout mask applied to each layer's output (None: no dropout; recompute: a PackedMask)
    width: int  # P, one direction's output width


@dataclass
class PackedMask:
    """A dropout mask of :func:`dropout_mask` kept as one bit per element (recompute keeps
    memory low); :meth:`array` gives back the very same mask."""

    bits: np.ndarray
    shape: tuple
    scale: float
    dtype: Any

    @classmethod
    def of(cls, mask: np.ndarray, p: float) -> "PackedMask":
        return cls(np.packbits(mask != 0, axis=None), mask.shape, _dropout_scale(p), mask.dtype)

    def array(self, xp=np):
        keep = np.unpackbits(self.bits, count=int(np.prod(self.shape))).reshape(self.shape).astype(bool)
        return xp.asarray((keep * self.scale).astype(self.dtype))


def stack_forward(
    cell: CellType,
    backend: Backend,
    params: Sequence[Sequence[dict[str, Any]]],
    x: np.ndarray,
    batch_sizes: np.ndarray,
    state0: Sequence[np.ndarray],
    *,
    dropout: float = 0.0,
    training: bool = False,
    keep_cache: bool = False,
    rng: np.random.Generator | None = None,
    recompute: int | None = None,
):
    """Run ``num_layers`` layers of ``D`` directions over packed rows ``x``.

    ``params[layer][direction]``: that layer-direction's parameters by base
    name.  ``state0``: one ``(L*D, B, w)`` array per state tensor.  Dropout
    (inverted, elementwise, fresh per element) is applied to each layer's
    output except the last's, only when ``training``.  Returns ``(y, state_n,
    cache)``: ``y`` ``(N, D*P)``, ``state_n`` like ``state0``, ``cache`` a
    :class:`StackCache` when ``keep_cache`` else ``None``.

    ``recompute`` (with ``keep_cache``): segments of this many time steps (see
    :mod:`lstmkit._recompute`; :func:`lstmkit._recompute.segment_length` resolves the
    caller's option): the cache keeps each layer's input, the states entering each
    segment and the dropout masks as bits, and :func:`stack_backward` reruns each segment.
    """
    xp = backend.xp
    segmented = keep_cache and recompute is not None
    num_layers, num_dirs = len(params), len(params[0])
    state_n = [xp.empty_like(s) for s in state0]
    layer_caches, masks = [], []
    layer_input = x
    for layer in range(num_layers):
        outputs, caches = [], []
        calls = [
            partial(segmented_forward, cell, backend, params[layer][d], layer_input, batch_sizes, d == 1,
                    tuple(s[layer * num_dirs + d] for s in state0), recompute) if segmented else
            partial(backend.layer_forward, cell, params[layer][d], layer_input, batch_sizes, d == 1,
                    tuple(s[layer * num_dirs + d] for s in state0), keep_cache)
            for d in range(num_dirs)
        ]
        together = concurrent_directions(cell, backend, params[layer], len(layer_input))
        for direction, (y, final, cache) in enumerate(run_directions(calls, together)):
            index = layer * num_dirs + direction
            for out, value in zip(state_n, final):
                out[index] = value
            outputs.append(y)
            caches.append(cache)
        if num_dirs == 1:
            layer_output = outputs[0]
        elif layer == num_layers - 1:  # the caller's
            layer_output = xp.concatenate(outputs, axis=1)
        else:  # the next layer's input (and cache): the backend's scratch memory
            joined = _scratch(backend, (len(outputs[0]), sum(o.shape[1] for o in outputs)),
                              outputs[0].dtype)
            layer_output = xp.concatenate(outputs, axis=1, out=joined)
        mask = None
        if training and dropout > 0 and layer < num_layers - 1:
            # Drawn on the host from the module's generator: the same masks on every backend.
            host_mask = dropout_mask(rng, layer_output.shape, dropout, layer_output.dtype)
            mask = xp.asarray(host_mask)
            layer_output = layer_output * mask
            if segmented:
                mask = PackedMask.of(host_mask, dropout)
        layer_caches.append(caches)
        masks.append(mask)
        layer_input = layer_output
    width = layer_input.shape[1] // num_dirs
    cache = StackCache(layer_caches, masks, width) if keep_cache else None
    return layer_input, tuple(state_n), cache


def stack_backward(
    cell: CellType,
    backend: Backend,
    params: Sequence[Sequence[dict[str, Any]]],
    cache: StackCache,
    d_y: np.ndarray,
    d_state_n: Sequence[np.ndarray],
):
    """Backward of :func:`stack_forward`.

    Returns ``(d_x, d_state0, d_params)`` with ``d_params[layer][direction]``
    keyed like ``params``.
    """
    xp = backend.xp
    num_layers, num_dirs = len(params), len(params[0])
    d_state0 = [xp.empty_like(d) for d in d_state_n]
    d_params = [[None] * num_dirs for _ in range(num_layers)]
    d_layer_out = d_y
    for layer in range(num_layers - 1, -1, -1):
        d_input = None
        calls = [
            partial(_layer_backward, cell, backend, params[layer][d], cache.layer_caches[layer][d],
                    _direction_part(backend, d_layer_out, d, cache.width, num_dirs),
                    tuple(g[layer * num_dirs + d] for g in d_state_n))
            for d in range(num_dirs)
        ]
        together = concurrent_directions(cell, backend, params[layer], len(d_layer_out))
        for direction, (d_x, d_s0, d_p) in enumerate(run_directions(calls, together)):
            index = layer * num_dirs + direction
            for out, value in zip(d_state0, d_s0):
                out[index] = value
            d_params[layer][direction] = d_p
            if d_input is None:
                d_input = d_x
            elif layer:  # the layer below's output gradient: the backend's scratch memory
                d_input = xp.add(d_input, d_x, out=_scratch(backend, d_x.shape, d_x.dtype))
            else:  # the caller's
                d_input = d_input + d_x
        mask = cache.masks[layer - 1] if layer > 0 else None
        if mask is not None:
            d_input = d_input * (mask.array(xp) if isinstance(mask, PackedMask) else mask)
        d_layer_out = d_input
    return d_layer_out, tuple(d_state0), d_params


def _direction_part(backend: Backend, d_out, direction: int, width: int, num_dirs: int):
    """One direction's columns of a layer's output gradient, C-contiguous (a copy on the
    backend's scratch memory when the layer has two directions)."""
    if num_dirs == 1:
        return backend.xp.ascontiguousarray(d_out)
    part = _scratch(backend, (len(d_out), width), d_out.dtype)
    part[...] = d_out[:, direction * width:(direction + 1) * width]
    return part


def _scratch(backend: Backend, shape, dtype):
    """The backend's scratch memory for the engine's temporaries (optional in the contract)."""
    scratch = getattr(backend, "scratch", None)
    return scratch(shape, dtype) if scratch is not None else backend.xp.empty(shape, dtype)


def _layer_backward(cell: CellType, backend: Backend, params: dict, layer_cache, d_y, d_state_n):
    """One layer-direction's backward: the backend's, or the segments' rerun (recompute)."""
    if isinstance(layer_cache, Segments):
        return segmented_backward(cell, backend, params, layer_cache, d_y, d_state_n)
    return backend.layer_backward(cell, params, layer_cache, d_y, d_state_n)


#: Multiply-adds of one layer-direction (rows x gate rows x (input + hidden)) from which the two
#: directions run in two Python threads: a thread hand-off costs ~0.1 ms, this much work ~1 ms
#: on one core (docs/performance.md, "Cell steps from Python and concurrent directions").
CONCURRENT_WORK = 1 << 23


def concurrent_directions(cell: CellType, backend: Backend, layer_params: Sequence[dict], rows: int) -> bool:
    """Run a bidirectional layer's two directions at once?  Only when the backend's kernel for
    ``cell`` releases the GIL (the ``cython`` backend, a built-in cell), the thread ceiling
    (:func:`lstmkit.threads`) and the CPUs other processes leave free allow two threads (on a
    busy machine the second thread waits for a CPU and the pair is slower), and each direction has at least
    :data:`CONCURRENT_WORK` multiply-adds.  Each direction's BLAS then runs on one thread
    (the thread policy's rule for two Python threads in the core)."""
    if len(layer_params) != 2 or backend.xp is not np:
        return False
    from .backends.base import FUSED_CELLS

    if type(cell) not in FUSED_CELLS:
        return False  # a plugin's cell runs in Python, holding the GIL
    try:
        from .backends.cython import CythonBackend
    except ImportError:  # the compiled core is not built
        return False
    if type(backend) is not CythonBackend:
        return False
    weights = sum(v.size for k, v in layer_params[0].items() if k.startswith("weight"))
    if rows * weights < CONCURRENT_WORK:
        return False
    return _threads.free_threads() >= 2


def run_directions(calls: Sequence[Callable[[], Any]], concurrent: bool) -> list:
    """``[call() for call in calls]``; with ``concurrent``, the second in another Python thread
    while the first runs in this one (:func:`lstmkit._threads.run_pair`; an exception in either is
    raised here, the first's first)."""
    if not concurrent or len(calls) != 2 or _threads.in_core():
        # (another Python thread in the core: each runs on one CPU, the policy's rule)
        return [call() for call in calls]
    # counted as in the core before either starts: whichever enters first would otherwise take
    # the second CPU for its own two-thread loop or BLAS, and three threads would share two CPUs
    with _threads.kernel(0):
        return _threads.run_pair(calls[0], calls[1])


def dropout_mask(rng: np.random.Generator, shape, p: float, dtype) -> np.ndarray:
    """Inverted-dropout mask: each element 0 with probability ``p``, else ``1/(1-p)``."""
    keep = rng.random(shape) >= p
    return (keep * _dropout_scale(p)).astype(dtype)


def _dropout_scale(p: float) -> float:
    return 0.0 if p >= 1 else 1.0 / (1.0 - p)
