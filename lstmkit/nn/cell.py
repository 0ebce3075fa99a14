"""``RecurrentCell`` and its PyTorch faces ``LSTMCell``, ``GRUCell``, ``RNNCell``: one time step.

Input ``(N, H_in)`` or unbatched ``(H_in,)``; state ``(N, H)`` or ``(H,)``.
``LSTMCell`` returns ``(h_1, c_1)``, the others ``h_1``.  A Python loop over a
cell reproduces the module::

    h, c = h0, c0
    for x_t in x:
        h, c = cell(x_t, (h, c))     # h is output[t] of LSTM with the same weights
"""
from __future__ import annotations

import numpy as np

from ..registry import get_backend, get_cell
from . import _checks as checks
from .module import Module, ParameterGuard, as_float_dtype, as_generator, owned


class RecurrentCell(Module):
    """One step of any registered cell, PyTorch's ``RNNCellBase``.

    Parameters ``weight_ih (G, H_in)``, ``weight_hh (G, H)``, ``bias_ih (G,)``,
    ``bias_hh (G,)`` (``None`` when ``bias=False``), drawn from
    ``U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))``.  Keyword-only ``dtype``,
    ``backend`` and ``seed`` as for :class:`~lstmkit.Recurrent`.
    """

    def __init__(self, cell, input_size, hidden_size, bias=True, *, dtype=np.float32,
                 backend="auto", seed=None, cell_options=None):
        super().__init__()
        self.cell = get_cell(cell, cell_options)
        self.cell_options = dict(cell_options) if cell_options else None  # as given, for repr
        # PyTorch's cells validate nothing; we check like the modules do and
        # also accept NumPy integers (documented deviation).
        self.input_size = checks.check_size("input_size", input_size, allow_numpy=True)
        self.hidden_size = checks.check_size("hidden_size", hidden_size, allow_numpy=True)
        checks.check_bool("bias", bias)
        self.bias = bias
        self._dtype = as_float_dtype(dtype)
        self.backend = get_backend(backend)
        self.generator = as_generator(seed)
        for name, shape in self.cell.parameter_shapes(self.input_size, self.hidden_size, 0, bias):
            self._register_parameter(name, np.empty(shape, dtype=self._dtype))
        if not bias:
            object.__setattr__(self, "bias_ih", None)
            object.__setattr__(self, "bias_hh", None)
        self._num_states = len(self.cell.state_names)
        self._widths = self.cell.state_sizes(self.hidden_size)
        # multiply-adds per batch row of one step, for the thread policy
        self._row_work = sum(p.size for n, p in self._parameters.items() if n.startswith("weight"))
        self._step = None      # the compiled step of the fast path (_make_step), or None
        self._step_for = None  # (backend, dtype) _step was made for (None: not looked for yet)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw every parameter from ``U(-k, k)``, ``k = 1/sqrt(hidden_size)``, in order."""
        self._reset_uniform(1.0 / np.sqrt(self.hidden_size))

    @property
    def _label(self) -> str:
        return type(self).__name__

    # -- forward --------------------------------------------------------------
    def forward(self, input, hx=None):
        """One step: ``(h_1, c_1)`` for LSTM, ``h_1`` otherwise."""
        # Fast path (a Python loop's usual step): the compiled step takes a batched
        # C-contiguous input and state of the module's dtype and shapes, checks and
        # allocates in C and runs the fused step; it answers None for anything else
        # (including every error), which takes the checked path below.
        step = self._step
        if step is not None:
            new = step(input, hx)
            if new is not None:
                if new is not False:
                    return new
                # False: the plain case, but the thread policy must size the core's BLAS
                # around this step: the backend's cell_step does (same arithmetic)
                if hx is None:
                    hx = tuple(np.zeros((input.shape[0], w), self._dtype) for w in self._widths)
                new = self.backend.cell_step(self.cell, self._parameters, input,
                                             hx if type(hx) is tuple else (hx,))
                return new if self._num_states > 1 else new[0]
        if self._step_for != (self.backend, self._dtype):  # first call, or backend/dtype changed
            self._step_for = (self.backend, self._dtype)
            self._step = self._make_step()
            if self._step is not None:
                return self.forward(input, hx)
        x, state, unbatched = self._prepare(input, hx)
        backend = self.backend
        if backend.xp is np:
            return self._result(backend.cell_step(self.cell, self._parameters, x, state), unbatched)
        x, state, params, finish = self._on_device(input, x, state)
        return self._result(finish(backend.cell_step(self.cell, params, x, state)), unbatched)

    __call__ = forward  # no extra call per step in a Python loop

    def forward_train(self, input, hx=None):
        """One step that keeps what backward needs: ``result, backward``.

        ``result`` is what :meth:`forward` returns; ``backward(d_result)``
        (same structure; ``None`` counts as zeros) returns ``(d_input, d_hx,
        d_params)`` with ``d_hx`` structured like ``hx`` and ``d_params`` keyed
        like ``state_dict()``.  Changing a parameter in place before
        ``backward`` makes it raise, as for :meth:`Recurrent.forward_train`.
        """
        x, state, unbatched = self._prepare(input, hx, contiguous=True)
        batch_sizes = np.array([x.shape[0]], dtype=np.int64)
        xp = self.backend.xp
        params, finish = dict(self._parameters), tuple
        guard = ParameterGuard(params)
        if xp is not np:
            x, state, params, finish = self._on_device(input, x, state)
        callers = (input,) + (tuple(hx) if isinstance(hx, (tuple, list)) else (hx,))
        x = owned(xp, x, callers)
        state = tuple(owned(xp, s, callers) for s in state)
        _, new_state, cache = self.backend.layer_forward(
            self.cell, params, x, batch_sizes, False, state, True
        )

        def backward(d_result=None):
            guard.check()
            if d_result is None:
                d_state = tuple(xp.zeros_like(s) for s in new_state)
            else:
                d_state = self._gradient_state(d_result, new_state, unbatched)
            d_y = xp.zeros_like(new_state[0])
            d_x, d_state0, d_params = self.backend.layer_backward(
                self.cell, params, cache, d_y, d_state
            )
            names = list(self._parameters)
            d_params = dict(zip(names, finish(d_params[name] for name in names)))
            d_x = d_x[0] if unbatched else d_x
            (d_x,) = finish((d_x,))
            return d_x, self._result(finish(d_state0), unbatched), d_params

        return self._result(finish(new_state), unbatched), backward

    def _make_step(self):
        """The compiled step of the fast path (``_core.CellStep``) when the backend is
        ``cython`` and the cell a built-in one, else ``None``."""
        from ..backends.base import FUSED_CELLS

        backend = self.backend
        if backend.xp is not np or type(self.cell) not in FUSED_CELLS or "weight_hr" in self._parameters:
            return None
        try:
            from ..backends.cython import CythonBackend, cell_stepper
        except ImportError:  # the compiled core is not built
            return None
        if type(backend) is not CythonBackend:
            return None
        return cell_stepper(self, self.cell, self.input_size, self.hidden_size, self._dtype, self._parameters,
                            backend)

    def __getstate__(self):
        state = super().__getstate__()
        state["_step"] = state["_step_for"] = None  # made again on first use (compiled, holds this cell)
        return state

    def __setstate__(self, state):
        state = dict(state)
        state.pop("_fast", None)  # pickled by lstmkit 0.x before CellStep
        super().__setstate__(state)
        self._step = self._step_for = None
        if "_row_work" not in self.__dict__:  # pickled before the fast path existed
            self._row_work = sum(p.size for n, p in self._parameters.items() if n.startswith("weight"))

    def _on_device(self, input, x, state):
        """For a device backend (``backend.xp`` is not NumPy, e.g. CuPy): the
        step's input, state and parameters as ``xp`` arrays (NumPy ones copied
        in), and ``finish(arrays) -> tuple`` that copies results back to NumPy
        when the caller passed NumPy (else leaves them on the device)."""
        backend = self.backend
        xp = backend.xp
        x = xp.ascontiguousarray(xp.asarray(x))
        state = tuple(xp.ascontiguousarray(xp.asarray(s)) for s in state)
        params = {name: xp.asarray(value) for name, value in self._parameters.items()}
        if isinstance(input, np.ndarray):
            to_host = backend.to_host
            return x, state, params, lambda arrays: tuple(to_host(a) for a in arrays)
        return x, state, params, tuple

    def _prepare(self, input, hx, contiguous=False):
        """Check ``input``/``hx`` in PyTorch's order; return ``(x (B, I), state, unbatched)``.

        This runs on every step of a Python loop, so it stays lean: cached
        widths, no copies unless ``contiguous`` (training) asks for them.
        """
        if type(input) is not np.ndarray:
            checks.check_array(self._label, "input", input)
        ndim = input.ndim
        if ndim != 2 and ndim != 1:
            raise ValueError(f"{self._label}: Expected input to be 1D or 2D, got {ndim}D instead")
        tensors = None if hx is None else self._unpack_hx(hx)
        if tensors is not None:
            for i, t in enumerate(tensors):
                if t.ndim != ndim and t.ndim not in (1, 2):
                    what = f"hx[{i}]" if self._num_states > 1 else "hidden"
                    raise ValueError(f"{self._label}: Expected {what} to be 1D or 2D, got {t.ndim}D instead")
        unbatched = ndim == 1
        x = input[None, :] if unbatched else input
        batch = x.shape[0]
        # PyTorch's order: input width, then each hx's batch and width, then dtypes.
        if x.shape[1] != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {x.shape[1]} expected {self.input_size}")
        dtype = self._dtype
        if tensors is None:
            if x.dtype != dtype:
                checks.check_dtype(self._label, "input", x, dtype)
            zeros = self.backend.xp.zeros  # on the backend's device
            state = tuple(zeros((batch, w), dtype=dtype) for w in self._widths)
            return (np.ascontiguousarray(x) if contiguous else x), state, unbatched
        state = []
        widths = self._widths
        for i, t in enumerate(tensors):
            if unbatched:
                t = t[None]
            shape = t.shape
            if not (len(shape) == 2 and shape[0] == batch and shape[1] == widths[i]):
                if shape[0] != batch:
                    raise RuntimeError(f"Input batch size {batch} doesn't match hidden{i} batch size {shape[0]}")
                got = shape[1] if len(shape) > 1 else shape
                raise RuntimeError(f"hidden{i} has inconsistent hidden_size: got {got}, expected {widths[i]}")
            state.append(t)
        if x.dtype != dtype:
            checks.check_dtype(self._label, "input", x, dtype)
        for t in state:
            if t.dtype != dtype:
                checks.check_dtype(self._label, "hx", t, dtype)
        if contiguous:
            return np.ascontiguousarray(x), tuple(np.ascontiguousarray(t) for t in state), unbatched
        return x, tuple(state), unbatched

    def _unpack_hx(self, hx):
        if type(hx) is tuple and len(hx) == self._num_states == 2 and type(hx[0]) is np.ndarray \
                and type(hx[1]) is np.ndarray:
            return hx  # the common LSTMCell case, checked cheaply
        if self._num_states == 1:
            if type(hx) is np.ndarray:
                return (hx,)
            checks.check_array(self._label, "hx", hx)
            return (hx,)
        if not isinstance(hx, (tuple, list)):
            raise TypeError(
                f"{self.cell.name}_cell(): argument 'hx' (position 2) must be tuple of arrays, "
                f"not {type(hx).__name__}"
            )
        if len(hx) != self._num_states:
            raise RuntimeError(f"{self.cell.name}_cell expects two hidden states")
        for t in hx:
            checks.check_array(self._label, "hx", t)
        return tuple(hx)

    def _gradient_state(self, d_result, state, unbatched):
        parts = (d_result,) if self._num_states == 1 else tuple(d_result)
        if len(parts) != self._num_states:
            raise ValueError(f"d_result should have {self._num_states} arrays, got {len(parts)}")
        out = []
        xp = self.backend.xp
        for d, s in zip(parts, state):
            d = xp.zeros_like(s) if d is None else xp.asarray(d, dtype=self._dtype)
            d = d[None] if unbatched and d.ndim == 1 else d
            if d.shape != s.shape:
                raise ValueError(f"gradient has shape {d.shape}; expected {s.shape[1:] if unbatched else s.shape}")
            out.append(xp.ascontiguousarray(d))
        return tuple(out)

    def _result(self, state, unbatched):
        if unbatched:
            state = tuple(s[0] for s in state)
        return state[0] if self._num_states == 1 else tuple(state)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self._dtype != np.float32:
            s += f", dtype={self._dtype}"
        if self.cell_options:
            s += f", cell_options={self.cell_options!r}"
        return s

    def __repr__(self) -> str:
        if type(self) is RecurrentCell:
            return f"RecurrentCell({self.cell.name!r}, {self.extra_repr()})"
        return super().__repr__()


class LSTMCell(RecurrentCell):
    """PyTorch's ``nn.LSTMCell``: ``h_1, c_1 = cell(input, (h_0, c_0))`` — one step of :class:`~lstmkit.LSTM`."""

    def __init__(self, input_size, hidden_size, bias=True, *, dtype=np.float32, backend="auto", seed=None):
        super().__init__("lstm", input_size, hidden_size, bias, dtype=dtype, backend=backend, seed=seed)


class GRUCell(RecurrentCell):
    """PyTorch's ``nn.GRUCell``: ``h_1 = cell(input, h_0)`` — one step of :class:`~lstmkit.GRU`."""

    def __init__(self, input_size, hidden_size, bias=True, *, dtype=np.float32, backend="auto", seed=None):
        super().__init__("gru", input_size, hidden_size, bias, dtype=dtype, backend=backend, seed=seed)


class RNNCell(RecurrentCell):
    """PyTorch's ``nn.RNNCell``: ``h_1 = act(W_ih x + b_ih + W_hh h + b_hh)``, one step of :class:`~lstmkit.RNN`."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", *, dtype=np.float32,
                 backend="auto", seed=None):
        self.nonlinearity = checks.check_nonlinearity(nonlinearity)
        super().__init__("rnn_" + nonlinearity, input_size, hidden_size, bias, dtype=dtype,
                         backend=backend, seed=seed)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (f", nonlinearity={self.nonlinearity}" if self.nonlinearity != "tanh" else "")
