"""The reference backend: the cell equations step by step, readable, on ``xp``.

It runs any cell through the cell's own ``forward_step``/``backward_step``,
so it is also the fallback for cells a fast backend has no kernel for.
"""
from __future__ import annotations

import importlib

import numpy as np

from ..utils.rnn import check_batch_sizes
from .base import Backend, step_offsets


class ReferenceBackend(Backend):
    """Backprop through time written out in the array module ``xp``."""

    def __init__(self, xp=np, name: str = "numpy"):
        self.xp = xp
        self.name = name

    # Pickling and deepcopy: the array module is kept by name (a module cannot be pickled).
    def __getstate__(self):
        return dict(self.__dict__, xp=self.xp.__name__)

    def __setstate__(self, state):
        self.__dict__.update(state, xp=importlib.import_module(state["xp"]))

    def layer_forward(self, cell, params, x, batch_sizes, reverse, state0, training):
        xp = self.xp
        # The modules validate first; this guards direct calls (no uninitialised output rows).
        check_batch_sizes(batch_sizes, x.shape[0], positive=False)
        if int(batch_sizes[0]) != state0[0].shape[0]:
            raise ValueError(f"batch_sizes[0] is {batch_sizes[0]}, but state0 has {state0[0].shape[0]} rows")
        offsets = step_offsets(batch_sizes)
        # The input projection of every step at once: one GEMM.
        gi_all = x @ params["weight_ih"].T
        if "bias_ih" in params:
            gi_all = gi_all + params["bias_ih"]
        state = tuple(state0)
        y = xp.empty((x.shape[0], state0[0].shape[1]), dtype=x.dtype)
        steps = range(len(batch_sizes) - 1, -1, -1) if reverse else range(len(batch_sizes))
        caches = []
        for t in steps:
            rows = slice(int(offsets[t]), int(offsets[t + 1]))
            live = int(batch_sizes[t])
            new_state, cache = cell.forward_step(
                xp, params, gi_all[rows], tuple(s[:live] for s in state)
            )
            # Never write into an earlier state array: caches may hold views of it.
            state = tuple(_merge_rows(xp, new, old) for new, old in zip(new_state, state))
            y[rows] = new_state[0]
            if training:
                caches.append((t, cache))
        cache = (x, batch_sizes, caches) if training else None
        return y, state, cache

    def layer_backward(self, cell, params, cache, d_y, d_state_n):
        xp = self.xp
        x, batch_sizes, caches = cache
        offsets = step_offsets(batch_sizes)
        grads = {k: xp.zeros_like(v) for k, v in params.items()}
        d_state = tuple(d_state_n)
        d_gi_all = xp.empty((x.shape[0], params["weight_ih"].shape[0]), dtype=x.dtype)
        for t, step_cache in reversed(caches):
            rows = slice(int(offsets[t]), int(offsets[t + 1]))
            live = int(batch_sizes[t])
            d_new = [d[:live] for d in d_state]
            d_new[0] = d_new[0] + d_y[rows]
            d_gi, d_prev = cell.backward_step(xp, params, step_cache, d_new, grads)
            d_state = tuple(_merge_rows(xp, prev, old) for prev, old in zip(d_prev, d_state))
            d_gi_all[rows] = d_gi
        # The input projection's gradients: whole-sequence GEMMs.
        grads["weight_ih"] = d_gi_all.T @ x
        if "bias_ih" in grads:
            grads["bias_ih"] = d_gi_all.sum(axis=0)
        d_x = d_gi_all @ params["weight_ih"]
        return d_x, d_state, grads


def _merge_rows(xp, head, full):
    """``full`` with its first ``len(head)`` rows replaced by ``head`` (a new array)."""
    if head.shape[0] == full.shape[0]:
        return head
    return xp.concatenate([head, full[head.shape[0]:]], axis=0)
