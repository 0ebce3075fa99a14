"""The backend interface: how one layer-direction of a recurrent net is run.

The engine splits a network into layer-directions and hands each one to a
backend as a *packed* sequence: ``x`` holds the rows of all time steps stacked
(``(N, I)``, ``N = sum(batch_sizes)``), step ``t`` being the ``batch_sizes[t]``
rows after the previous steps' rows.  Sequences are sorted longest first, so
step ``t`` holds the first ``batch_sizes[t]`` sequences.  A dense ``(T, B, I)``
batch is the special case ``batch_sizes = [B] * T``.

* Forward direction: steps ``0 .. T-1``; a sequence that ends keeps its state,
  so the final state of row ``b`` is its state after its own last step.
* Reverse direction (``reverse=True``): steps ``T-1 .. 0``; row ``b`` starts
  from ``state0[b]`` at its own last step and ends after its step 0.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..cells import CellType, GRUCellType, LSTMCellType, RNNReluCellType, RNNTanhCellType

#: The built-in cells, for which a fast backend has fused kernels (any other cell runs its
#: reference step).
FUSED_CELLS = (LSTMCellType, GRUCellType, RNNTanhCellType, RNNReluCellType)
#: The dtypes a backend computes in.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class Backend:
    """Base class of a compute backend (see the module docstring).

    ``name``: registry name.  ``xp``: the array module the backend computes
    with (``numpy``; ``cupy`` for a GPU backend).
    """

    name: str = ""
    xp: Any = np

    def layer_forward(
        self,
        cell: CellType,
        params: dict[str, Any],
        x,
        batch_sizes: np.ndarray,
        reverse: bool,
        state0: Sequence[Any],
        training: bool,
    ) -> tuple[Any, tuple[Any, ...], Any]:
        """Run one layer-direction over a packed sequence.

        ``params``: the layer-direction's parameters by base name
        (``"weight_ih"``, ...).  ``x``: ``(N, I)`` C-contiguous.
        ``batch_sizes``: int64 ``(T,)``, non-increasing.  ``state0``: one
        ``(B, width)`` array per state tensor, not modified.  Returns
        ``(y, state_n, cache)``: ``y`` ``(N, P)`` the outputs ``h`` of every
        row, ``state_n`` new arrays like ``state0``, and ``cache`` for
        :meth:`layer_backward` (``None`` unless ``training``).
        """
        raise NotImplementedError

    def layer_backward(
        self,
        cell: CellType,
        params: dict[str, Any],
        cache: Any,
        d_y,
        d_state_n: Sequence[Any],
    ) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        """Backward through time of :meth:`layer_forward`.

        ``d_y``: ``(N, P)`` gradient w.r.t. ``y``; ``d_state_n``: gradients
        w.r.t. ``state_n`` (neither is modified).  Returns ``(d_x, d_state0,
        d_params)`` with ``d_params`` keyed like ``params``.
        """
        raise NotImplementedError

    def cell_step(self, cell: CellType, params: dict[str, Any], x, state: Sequence[Any]):
        """One step of a cell, inference only: ``x`` ``(B, I)`` -> new state tuple.

        The default runs :meth:`layer_forward` on a one-step sequence; a fast
        backend overrides it to keep the per-call cost of a Python loop over
        ``LSTMCell`` low.
        """
        batch_sizes = np.array([x.shape[0]], dtype=np.int64)
        _, state_n, _ = self.layer_forward(cell, params, x, batch_sizes, False, state, False)
        return state_n

    def to_host(self, array) -> np.ndarray:
        """A NumPy copy of a backend array (identity for NumPy backends)."""
        return array

    def scratch(self, shape, dtype):
        """An uninitialised, writable, C-contiguous ``xp`` array of exactly ``shape`` and
        ``dtype`` for the engine's own temporaries, never handed to the caller (a bidirectional
        layer's joined outputs between layers, each direction's half of the output gradient, the
        summed input gradient between layers).  The default is ``xp.empty``; a backend with a
        memory pool returns pool memory, so that a training loop does not hand the same
        megabytes to the system and fault them back in at every step."""
        return self.xp.empty(shape, dtype)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def step_offsets(batch_sizes: np.ndarray) -> np.ndarray:
    """Row offset of each step in the packed data: ``[0, b0, b0+b1, ...]`` (T+1)."""
    offsets = np.zeros(len(batch_sizes) + 1, dtype=np.int64)
    np.cumsum(batch_sizes, out=offsets[1:])
    return offsets


def float_dtype(dtype, backend: str) -> np.dtype:
    """``dtype`` as a ``numpy.dtype`` if it is float32 or float64, else a TypeError naming ``backend``."""
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"the {backend} backend computes in float32 or float64; got arrays of dtype {dtype}")
    return dtype


def keyed_grads(params: dict[str, Any], grads: dict[str, Any]) -> dict[str, Any]:
    """``grads`` in the key order of ``params`` (``d_params`` of :meth:`Backend.layer_backward`)."""
    return {name: grads[name] for name in params if name in grads}
