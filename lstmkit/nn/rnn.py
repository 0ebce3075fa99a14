"""``Recurrent`` and its PyTorch faces ``LSTM``, ``GRU``, ``RNN``.

Shapes (``D = 2`` if bidirectional else 1, ``P = proj_size or hidden_size``):

=============================  =====================  =====================  =================
input                          h_0 / h_n              c_0 / c_n (LSTM)       output
=============================  =====================  =====================  =================
``(L, N, H_in)``               ``(D*layers, N, P)``   ``(D*layers, N, H)``   ``(L, N, D*P)``
``(N, L, H_in)`` batch_first   ``(D*layers, N, P)``   ``(D*layers, N, H)``   ``(N, L, D*P)``
``(L, H_in)`` unbatched        ``(D*layers, P)``      ``(D*layers, H)``      ``(L, D*P)``
``PackedSequence``             ``(D*layers, N, P)``   ``(D*layers, N, H)``   ``PackedSequence``
=============================  =====================  =====================  =================

``h_n[layer * D + direction]``; ``batch_first`` never changes ``h``/``c``.
"""
from __future__ import annotations

import warnings

import numpy as np

from .. import engine
from ..registry import get_backend, get_cell
from ..utils.rnn import PackedSequence
from . import _checks as checks
from .module import Module, ParameterGuard, as_float_dtype, as_generator, owned


class Recurrent(Module):
    """A multi-layer recurrent network of any registered cell, PyTorch's ``RNNBase``.

    ``Recurrent("lstm", 10, 20, num_layers=2)`` is ``LSTM(10, 20, num_layers=2)``.
    Arguments as in ``torch.nn.LSTM``; keyword-only ``dtype`` (float32 default,
    or float64), ``backend`` (``"auto"``: the fastest available; ``"cython"``,
    ``"numpy"``, or a plugin's), ``seed`` (int or ``numpy.random.Generator``:
    parameter initialisation and dropout masks draw from it) and
    ``cell_options`` (a dict for cells that take options, validated by the
    cell's options model).

    Parameters are drawn from ``U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))``.
    """

    def __init__(
        self,
        cell,
        input_size,
        hidden_size,
        num_layers=1,
        bias=True,
        batch_first=False,
        dropout=0.0,
        bidirectional=False,
        proj_size=0,
        *,
        dtype=np.float32,
        backend="auto",
        seed=None,
        cell_options=None,
    ):
        super().__init__()
        self.cell = get_cell(cell, cell_options)
        self.cell_options = dict(cell_options) if cell_options else None  # as given, for repr
        if proj_size != 0 and not self.cell.supports_proj:
            if self.cell.torch_mode in ("GRU", "RNN_TANH", "RNN_RELU"):
                raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
            raise ValueError(f"proj_size argument is not supported by the {self.cell.name!r} cell")
        dropout = checks.check_dropout(dropout)
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero "
                "dropout expects num_layers greater than 1, but got "
                f"dropout={dropout} and num_layers={num_layers}",
                stacklevel=3 if type(self) is not Recurrent else 2,
            )
        checks.check_bool("bias", bias)
        checks.check_bool("batch_first", batch_first)
        input_size = checks.check_size("input_size", input_size)
        hidden_size = checks.check_size("hidden_size", hidden_size)
        # PyTorch type-checks neither of these; we do (documented deviation).
        num_layers = checks.check_size("num_layers", num_layers)
        checks.check_bool("bidirectional", bidirectional)
        if not isinstance(proj_size, int) or isinstance(proj_size, bool):
            raise TypeError(f"proj_size should be of type int, got: {type(proj_size).__name__}")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")

        self.mode = self.cell.torch_mode or self.cell.name
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = dropout
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self._dtype = as_float_dtype(dtype)
        self.backend = get_backend(backend)
        self.generator = as_generator(seed)

        num_dirs = 2 if bidirectional else 1
        out = self.cell.state_sizes(hidden_size, proj_size)[0]  # width of h: proj_size or hidden_size
        # _names[layer][direction]: [(base name, state-dict name), ...] in torch's order.
        self._names = []
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else num_dirs * out
            per_dir = []
            for direction in range(num_dirs):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                shapes = self.cell.parameter_shapes(layer_in, hidden_size, proj_size, bias)
                per_dir.append([(base, base + suffix) for base, _ in shapes])
                for base, shape in shapes:
                    self._register_parameter(base + suffix, np.empty(shape, dtype=self._dtype))
            self._names.append(per_dir)
        self.reset_parameters()

    # -- parameters -----------------------------------------------------------
    def reset_parameters(self) -> None:
        """Draw every parameter from ``U(-k, k)``, ``k = 1/sqrt(hidden_size)``, in order."""
        self._reset_uniform(1.0 / np.sqrt(self.hidden_size))

    def flatten_parameters(self) -> None:
        """No-op (PyTorch's is a no-op on CPU too); kept for API compatibility."""

    @property
    def _flat_weights_names(self) -> list[str]:
        return list(self._parameters)

    @property
    def all_weights(self) -> list[list[np.ndarray]]:
        """The parameters grouped per (layer, direction), as in PyTorch."""
        return [[self._parameters[n] for _, n in names] for per_dir in self._names for names in per_dir]

    def _layer_params(self) -> list[list[dict[str, np.ndarray]]]:
        """``[layer][direction] -> {base name: array}``, on the backend's device."""
        to_device = self.backend.xp.asarray
        return [
            [{base: to_device(self._parameters[n]) for base, n in names} for names in per_dir]
            for per_dir in self._names
        ]

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    # -- forward --------------------------------------------------------------
    def __call__(self, input, hx=None):
        return self.forward(input, hx)

    def forward(self, input, hx=None):
        """Run the network.  LSTM returns ``output, (h_n, c_n)``; others ``output, h_n``."""
        output, state, _ = self._run(input, hx, keep_cache=False)
        return output, state

    def forward_train(self, input, hx=None, *, recompute=None):
        """Forward that keeps what backward needs: ``output, state, backward``.

        ``backward(d_output=None, d_state=None)`` returns ``(d_input, d_hx,
        d_params)``: ``d_input`` shaped like the input (like its ``.data`` for
        a ``PackedSequence``), ``d_hx`` with the structure of ``hx`` (also when
        ``hx`` was ``None``), ``d_params`` keyed like ``state_dict()``.
        ``None`` gradients count as zeros.  The gradients are those of this
        forward: changing a parameter in place before ``backward`` (an
        optimizer step) makes ``backward`` raise torch's "modified by an
        inplace operation" error.

        ``recompute`` trades time for memory on long sequences: ``None`` (default)
        keeps every step's activations; an int ``k`` keeps only each layer's input and
        the state every ``k`` time steps, and ``backward`` reruns the forward one
        segment of ``k`` steps at a time (about one more forward pass); ``"auto"`` is
        ``k = ceil(sqrt(T))``.  Results equal the plain path's up to rounding
        (parameter gradients are summed per segment; float64: ~1e-15 relative).
        """
        guard = ParameterGuard(self._parameters)
        output, state, saved = self._run(input, hx, keep_cache=True, recompute=recompute)
        layout, cache, params, finish = saved
        xp = self.backend.xp
        width = self.num_directions * self.cell.state_sizes(self.hidden_size, self.proj_size)[0]

        def backward(d_output=None, d_state=None):
            guard.check()
            d_y = layout.grad_rows(d_output, width, self._dtype, xp)
            if isinstance(d_state, (tuple, list)) and isinstance(state, tuple) and len(d_state) == len(state):
                # A None part of d_state counts as zeros.
                d_state = tuple(np.zeros_like(s) if d is None else d for d, s in zip(d_state, state))
            d_state_n = self._internal_state(layout, self._state_parts(layout, d_state, "d_state"), "d_state")
            d_x, d_state0, d_layers = engine.stack_backward(
                self.cell, self.backend, params, cache, d_y, d_state_n
            )
            d_params = {}
            for names, grads in zip(
                (n for per_dir in self._names for n in per_dir),
                (g for per_dir in d_layers for g in per_dir),
            ):
                d_params.update({full: grads[base] for base, full in names})
            d_params = {name: finish(d_params[name]) for name in self._parameters}
            return finish(layout.input_grad(d_x)), self._caller_state(layout, d_state0, finish), d_params

        return output, state, backward

    def _run(self, input, hx, keep_cache, recompute=None):
        # PyTorch's order: input rank, hx structure and rank, then dtype and sizes.
        layout = self._check_input(input)
        hx_parts = self._state_parts(layout, hx, "hx")
        data = input.data if isinstance(input, PackedSequence) else input
        checks.check_dtype("RNN", "input", data, self._dtype)
        if data.shape[-1] != self.input_size:
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got {data.shape[-1]}"
            )
        state0 = self._internal_state(layout, hx_parts, "hx")
        if layout.steps == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        segment = engine.segment_length(recompute, layout.steps)
        xp = self.backend.xp
        x, batch_sizes = layout.rows(input, self._dtype, xp)
        if keep_cache:
            callers = [data] + (hx_parts or [])
            x = owned(xp, x, callers)
            state0 = tuple(owned(xp, s, callers) for s in state0)
        # Host (NumPy) input with a device backend: results come back to the host once.
        on_host = isinstance(data, np.ndarray) and xp is not np
        finish = self.backend.to_host if on_host else _identity
        params = self._layer_params()
        y, state_n, cache = engine.stack_forward(
            self.cell,
            self.backend,
            params,
            x,
            batch_sizes,
            state0,
            dropout=self.dropout,
            training=self.training,
            keep_cache=keep_cache,
            rng=self.generator,
            recompute=segment,
        )
        output = layout.output(finish(y))
        return output, self._caller_state(layout, state_n, finish), (layout, cache, params, finish)

    # -- input and state checks (PyTorch's order and wording) -------------------
    @property
    def _label(self) -> str:
        return type(self).__name__

    def _check_input(self, input) -> engine.SequenceLayout:
        if isinstance(input, PackedSequence):
            data = input.data
            checks.check_array(self._label, "input", data)
            if data.ndim != 2:
                raise RuntimeError(f"input must have 2 dimensions, got {data.ndim}")
        else:
            checks.check_array(self._label, "input", input)
            if input.ndim not in (2, 3):
                tensor = " tensor" if self.mode.startswith("RNN") else ""
                raise ValueError(
                    f"{self._label}: Expected input to be 2D or 3D, got {input.ndim}D{tensor} instead"
                )
        return engine.SequenceLayout.of(input, self.batch_first)

    def _state_shapes(self, batch: int) -> list[tuple[int, int, int]]:
        rows = self.num_layers * self.num_directions
        return [(rows, batch, w) for w in self.cell.state_sizes(self.hidden_size, self.proj_size)]

    def _state_parts(self, layout, state, what):
        """The caller's ``hx`` (or ``d_state``) as a list of arrays, structure and rank checked."""
        if state is None:
            return None
        tensors = self._unpack_state(state, what)
        want = 2 if layout.unbatched else 3
        dims = [t.ndim for t in tensors]
        if any(d != want for d in dims):
            kind = "unbatched 2-D" if layout.unbatched else "batched 3-D"
            if len(tensors) == 1:
                raise RuntimeError(f"For {kind} input, {what} should also be {want}-D but got {dims[0]}-D tensor")
            got = ", ".join(f"{d}-D" for d in dims)
            raise RuntimeError(f"For {kind} input, hx and cx should also be {want}-D but got ({got}) tensors")
        return tensors

    def _internal_state(self, layout, tensors, what):
        """Checked parts (or ``None``: zeros) -> tuple of internal ``(L*D, B, w)`` arrays."""
        shapes = self._state_shapes(layout.batch)
        xp = self.backend.xp
        if tensors is None:
            return tuple(xp.zeros(s, dtype=self._dtype) for s in shapes)
        if layout.unbatched:
            tensors = [t[:, None, :] for t in tensors]
        for i, (t, shape) in enumerate(zip(tensors, shapes)):
            if t.shape != shape:
                which = f"hidden[{i}]" if len(shapes) > 1 else "hidden"
                raise RuntimeError(f"Expected {which} size {shape}, got {checks.shape_list(t.shape)}")
            checks.check_dtype(self._label, what, t, self._dtype)
        return tuple(xp.ascontiguousarray(xp.asarray(layout.state_in(t))) for t in tensors)

    def _unpack_state(self, state, what):
        n = len(self.cell.state_names)
        if n == 1:
            checks.check_array(self._label, what, state)
            return [state]
        if not isinstance(state, (tuple, list)):
            raise TypeError(
                f"{self._label}: {what} should be a tuple ({', '.join(s + '_0' for s in self.cell.state_names)}) "
                f"of numpy arrays, got {type(state).__name__}"
            )
        if len(state) != n:
            raise RuntimeError(f"{self.cell.name} expects {'two' if n == 2 else n} hidden states")
        for t in state:
            checks.check_array(self._label, what, t)
        return list(state)

    def _caller_state(self, layout, state, finish):
        tensors = [layout.state_out(finish(s)) for s in state]
        if layout.unbatched:
            tensors = [t[:, 0, :] for t in tensors]
        return tensors[0] if len(tensors) == 1 else tuple(tensors)

    # -- presentation ---------------------------------------------------------
    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        if self._dtype != np.float32:
            s += f", dtype={self._dtype}"
        if self.cell_options:
            s += f", cell_options={self.cell_options!r}"
        return s

    def __repr__(self) -> str:
        if type(self) is Recurrent:
            return f"Recurrent({self.cell.name!r}, {self.extra_repr()})"
        return super().__repr__()


class LSTM(Recurrent):
    """PyTorch's ``nn.LSTM``: ``output, (h_n, c_n) = LSTM(...)(input, (h_0, c_0))``.

    Per layer and direction, gate rows ``[i | f | g | o]``::

        i = σ(W_ii x + b_ii + W_hi h + b_hi)     f = σ(W_if x + b_if + W_hf h + b_hf)
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)  o = σ(W_io x + b_io + W_ho h + b_ho)
        c' = f ⊙ c + i ⊙ g                       h' = o ⊙ tanh(c')   (then W_hr h' if proj_size > 0)
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, *, dtype=np.float32,
                 backend="auto", seed=None):
        super().__init__("lstm", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, proj_size, dtype=dtype, backend=backend, seed=seed)


class GRU(Recurrent):
    """PyTorch's ``nn.GRU``: ``output, h_n = GRU(...)(input, h_0)``; gate rows ``[r | z | n]``::

        r = σ(W_ir x + b_ir + W_hr h + b_hr)    z = σ(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))    h' = (1 - z) ⊙ n + z ⊙ h
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, dtype=np.float32, backend="auto",
                 seed=None, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if kwargs:
            raise TypeError(f"GRU.__init__() got an unexpected keyword argument '{next(iter(kwargs))}'")
        super().__init__("gru", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, dtype=dtype, backend=backend, seed=seed)


class RNN(Recurrent):
    """PyTorch's ``nn.RNN``: ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``, ``act`` tanh or relu.

    ``nonlinearity`` is the 4th positional argument, as in PyTorch.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, *, dtype=np.float32,
                 backend="auto", seed=None, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if kwargs:
            raise TypeError(f"RNN.__init__() got an unexpected keyword argument '{next(iter(kwargs))}'")
        self.nonlinearity = checks.check_nonlinearity(nonlinearity)
        super().__init__("rnn_" + nonlinearity, input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, dtype=dtype, backend=backend, seed=seed)

    def extra_repr(self) -> str:
        # PyTorch omits nonlinearity here; we show it when not the default.
        s = super().extra_repr()
        return s + (", nonlinearity='relu'" if self.nonlinearity == "relu" else "")


def _identity(array):
    return array
