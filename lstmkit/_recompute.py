"""Recomputation for memory: one layer-direction run in segments of time steps.

A training forward normally keeps, for every time step, what the backward
needs (gates, previous states, ...: several times the layer's output).  With
segments of ``k`` steps, the forward keeps only the recurrent state at the
start of each segment; the backward reruns one segment at a time in training
mode from its saved state, backpropagates through it, and carries the state
gradient to the previous segment.  Peak memory per layer-direction is then
about ``T/k`` states plus one segment's cache instead of ``T`` steps' cache
(``k = sqrt(T)`` minimises the sum), for the price of one more forward.

The engine (:mod:`lstmkit.engine`) decides per layer which path runs; this
module only splits and rejoins a packed sequence (see
:mod:`lstmkit.backends.base`).  Step ``t`` holds the first ``batch_sizes[t]``
sequences, so a segment starting at step ``a`` runs on those rows only:

* forward direction: the state entering it is rows ``:batch_sizes[a]`` of the
  running ``(B, w)`` state; sequences that ended earlier keep theirs;
* reverse direction (segments processed last to first): rows
  ``:batch_sizes[a]`` of the running state are the state from the later
  segment for sequences that reach it, and still ``state0`` for sequences
  whose last step lies in this segment — exactly what the backend expects.

Either way the segment's ``state0`` is ``running[:batch_sizes[a]]`` and its
final state is written back there; the backward mirrors this with the state
gradients.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .backends import Backend
from .backends.base import step_offsets
from .cells import CellType

__all__ = ["segment_length", "Segments", "segmented_forward", "segmented_backward"]


def segment_length(recompute, steps: int) -> int | None:
    """Time steps per segment for ``recompute`` over a ``steps``-step sequence, or ``None``
    for the plain path (``recompute`` ``None``/``False``, or segments as long as the sequence).

    ``"auto"``: ``ceil(sqrt(steps))``; an int ``k >= 1``: ``k``.
    """
    if recompute is None or recompute is False:
        return None
    if isinstance(recompute, str):
        if recompute != "auto":
            raise ValueError(f"recompute should be 'auto', a positive int or None, got {recompute!r}")
        k = math.isqrt(max(steps - 1, 0)) + 1  # ceil(sqrt(steps)) for steps >= 1
    else:
        if isinstance(recompute, (bool, np.bool_)):
            raise TypeError(f"recompute should be 'auto', a positive int or None, got {recompute!r}")
        try:
            k = operator.index(recompute)
        except TypeError:
            raise TypeError(
                f"recompute should be 'auto', a positive int or None, got {type(recompute).__name__}"
            ) from None
        if k < 1:
            raise ValueError(f"recompute should be a positive number of time steps per segment, got {k}")
    return k if k < steps else None


@dataclass
class Segments:
    """What :func:`segmented_backward` needs: the layer input and each segment's entry state."""

    x: Any  # (N, I) the layer-direction's input rows
    batch_sizes: np.ndarray
    reverse: bool
    length: int  # k, time steps per segment
    starts: list  # first step of each segment, in time order
    entry: dict  # first step -> tuple of (batch_sizes[first], w) state arrays entering the segment


def _span(batch_sizes, offsets, a: int, k: int):
    b = min(a + k, len(batch_sizes))
    return b, slice(int(offsets[a]), int(offsets[b])), int(batch_sizes[a])


def segmented_forward(
    cell: CellType,
    backend: Backend,
    params: dict[str, Any],
    x,
    batch_sizes: np.ndarray,
    reverse: bool,
    state0: Sequence[Any],
    length: int,
):
    """:meth:`Backend.layer_forward` for training, keeping only segment entry states.

    Returns ``(y (N, P), state_n, Segments)`` like ``layer_forward`` (``state_n`` new arrays).
    The segments run in inference mode (nothing to keep; ~25% faster than training mode on
    the cython backend), whose outputs are those of training mode on the built-in backends.
    """
    xp = backend.xp
    offsets = step_offsets(batch_sizes)
    starts = list(range(0, len(batch_sizes), length))
    running = [xp.array(s, copy=True) for s in state0]
    y, entry = None, {}
    for a in reversed(starts) if reverse else starts:
        b, rows, live = _span(batch_sizes, offsets, a, length)
        entry[a] = tuple(xp.array(r[:live], copy=True) for r in running)
        y_seg, final, _ = backend.layer_forward(cell, params, x[rows], batch_sizes[a:b], reverse, entry[a], False)
        if y is None:
            y = xp.empty((x.shape[0], y_seg.shape[1]), dtype=y_seg.dtype)
        y[rows] = y_seg
        for r, f in zip(running, final):
            r[:live] = f
    return y, tuple(running), Segments(x, batch_sizes, bool(reverse), length, starts, entry)


def segmented_backward(
    cell: CellType,
    backend: Backend,
    params: dict[str, Any],
    segments: Segments,
    d_y,
    d_state_n: Sequence[Any],
):
    """:meth:`Backend.layer_backward` of :func:`segmented_forward`: reruns each segment's
    forward in training mode and backpropagates through it, last processed first.

    Returns ``(d_x, d_state0, d_params)``, those of the plain path up to rounding:
    ``d_params`` is the sum of the segments' parameter gradients where the plain path sums
    over all steps at once, and a matrix product over a segment's rows may round a few
    ulp differently from the same rows inside the whole sequence's (BLAS picks its kernel
    by size), so results agree bit for bit only mostly.
    """
    xp = backend.xp
    s = segments
    offsets = step_offsets(s.batch_sizes)
    d_running = [xp.array(d, copy=True) for d in d_state_n]
    d_x, d_params = None, None
    for a in s.starts if s.reverse else reversed(s.starts):
        b, rows, live = _span(s.batch_sizes, offsets, a, s.length)
        _, _, cache = backend.layer_forward(cell, params, s.x[rows], s.batch_sizes[a:b], s.reverse, s.entry[a],
                                            True)
        d_x_seg, d_entry, d_p = backend.layer_backward(
            cell, params, cache, d_y[rows], tuple(d[:live] for d in d_running)
        )
        del cache  # one segment's cache at a time
        if d_x is None:
            d_x = xp.empty((s.x.shape[0], d_x_seg.shape[1]), dtype=d_x_seg.dtype)
        d_x[rows] = d_x_seg
        for d, v in zip(d_running, d_entry):
            d[:live] = v
        if d_params is None:
            d_params = dict(d_p)
        else:
            for name, g in d_p.items():
                d_params[name] = d_params[name] + g
    return d_x, tuple(d_running), d_params
