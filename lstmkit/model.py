"""``SequenceModel``: optional embedding -> recurrent stack -> linear head.

The model ``lstmkit run`` trains.  Inputs are batch-first::

    features  x (B, T, input_size) float      tokens  ids (B, T) int  -> Embedding -> (B, T, E)
    rnn       out (B, T, D*P)                 (D = 2 if bidirectional, P = proj_size or hidden_size)
    head      target="sequence": y (B, T, output_size) = out Wᵀ + b
              target="last":     y (B, output_size)    = [out[b, len_b-1, :P] | out[b, 0, P:]] Wᵀ + b

With ``lengths`` the batch is packed for the recurrent stack (each sequence
stops at its own length, ``state_n`` is each sequence's state after its last
valid step) and outputs at padded positions are 0.  For ``"last"`` the
reverse direction's summary is its output at step 0: it has read the whole
valid sequence.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from .nn.layers import Embedding, Linear
from .nn.module import Module, as_float_dtype, as_generator
from .nn.rnn import Recurrent
from .train.losses import sequence_mask
from .utils.rnn import pack_padded_sequence, pad_packed_sequence

TARGETS = ("sequence", "last")


class SequenceModel(Module):
    """Embedding (token inputs only) -> ``Recurrent`` -> ``Linear`` head.

    Give ``input_size`` for float feature inputs ``(B, T, input_size)``, or
    ``vocab_size`` for integer token inputs ``(B, T)`` (then
    ``embedding_size``, default ``hidden_size``, is the embedding width).
    ``cell``, ``cell_options``, ``hidden_size``, ``num_layers``,
    ``bidirectional``, ``dropout`` (between recurrent layers, as in
    ``nn.LSTM``), ``proj_size`` and ``backend`` go to :class:`~lstmkit.Recurrent`.
    ``seed`` (int or Generator) makes one ``numpy.random.Generator`` shared by
    every part: initialisation draws embedding, recurrent stack, head in that
    order, and the recurrent dropout masks come from it too (its state,
    ``model.generator.bit_generator.state``, is what a resumed run restores).

    Parameter names are those of a torch module with submodules
    ``embedding``, ``rnn``, ``head``: ``embedding.weight``,
    ``rnn.weight_ih_l0``, ..., ``head.weight``, ``head.bias``.
    """

    def __init__(
        self,
        *,
        cell="lstm",
        cell_options=None,
        input_size=None,
        vocab_size=None,
        embedding_size=None,
        hidden_size,
        num_layers=1,
        bidirectional=False,
        dropout=0.0,
        proj_size=0,
        output_size,
        target="sequence",
        dtype=np.float32,
        backend="auto",
        seed=None,
    ):
        super().__init__()
        if (input_size is None) == (vocab_size is None):
            raise ValueError("give exactly one of input_size (float feature inputs) and vocab_size (token inputs)")
        if vocab_size is None and embedding_size is not None:
            raise ValueError("embedding_size applies to token inputs (vocab_size) only")
        if target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
        self.target = target
        self._dtype = as_float_dtype(dtype)
        self.generator = as_generator(seed)
        self.embedding = None
        if vocab_size is not None:
            embedding_size = hidden_size if embedding_size is None else embedding_size
            self.embedding = Embedding(vocab_size, embedding_size, dtype=self._dtype, seed=self.generator)
            input_size = self.embedding.embedding_dim
        self.rnn = Recurrent(
            cell, input_size, hidden_size, num_layers, True, True, dropout, bidirectional, proj_size,
            dtype=self._dtype, backend=backend, seed=self.generator, cell_options=cell_options,
        )
        self.width = self.rnn.cell.state_sizes(self.rnn.hidden_size, self.rnn.proj_size)[0]  # P
        self.head = Linear(self.rnn.num_directions * self.width, output_size, dtype=self._dtype, seed=self.generator)
        self.input_size = None if self.embedding is not None else self.rnn.input_size
        self.vocab_size = None if self.embedding is None else self.embedding.num_embeddings
        self.output_size = self.head.out_features

    # -- parameters -----------------------------------------------------------
    def _children(self) -> Iterator[tuple[str, Module]]:
        if self.embedding is not None:
            yield "embedding", self.embedding
        yield "rnn", self.rnn
        yield "head", self.head

    def named_parameters(self) -> Iterator[tuple[str, np.ndarray]]:
        """``("embedding.weight", array), ("rnn.weight_ih_l0", array), ..., ("head.bias", array)``."""
        for prefix, child in self._children():
            for name, value in child.named_parameters():
                yield f"{prefix}.{name}", value

    def num_parameters(self) -> int:
        """Total number of parameter elements."""
        return int(sum(v.size for v in self.parameters()))

    def describe(self) -> list[tuple[str, tuple[int, ...]]]:
        """``[(name, shape), ...]`` for every parameter, in ``state_dict`` order."""
        return [(name, tuple(value.shape)) for name, value in self.named_parameters()]

    def train(self, mode: bool = True) -> "SequenceModel":
        """Training mode (recurrent dropout active) for the model and its parts.  Returns ``self``."""
        super().train(mode)
        for _, child in self._children():
            child.train(mode)
        return self

    def to(self, dtype) -> "SequenceModel":
        """Convert every part to ``dtype`` (float32 or float64).  Returns ``self``."""
        self._dtype = as_float_dtype(dtype)
        for _, child in self._children():
            child.to(self._dtype)
        return self

    # -- forward --------------------------------------------------------------
    def __call__(self, inputs, lengths=None, state=None, return_state=False):
        return self.forward(inputs, lengths, state, return_state)

    def forward(self, inputs, lengths=None, state=None, return_state=False):
        """Outputs ``(B, T, output_size)`` (target ``"sequence"``) or ``(B, output_size)`` (``"last"``).

        ``lengths`` (B,) ints in ``1..T`` or ``None`` (all ``T``); ``state`` the
        recurrent stack's ``hx`` (``(h_0, c_0)`` for LSTM, ``h_0`` otherwise;
        ``None``: zeros).  With ``return_state``: ``(outputs, state_n)``.
        """
        outputs, state_n, _ = self._run(inputs, lengths, state, train=False)
        return (outputs, state_n) if return_state else outputs

    def forward_train(self, inputs, lengths=None, state=None, *, recompute=None):
        """``(outputs, state_n, backward)``; ``backward(d_outputs) -> d_params`` keyed like ``state_dict()``.

        No gradient flows into ``state`` (truncated BPTT: pass ``state_n`` as
        the next chunk's ``state``).  ``recompute`` (``None``, ``"auto"`` or steps
        per segment) trades time for memory in the recurrent stack, see
        :meth:`lstmkit.Recurrent.forward_train`.
        """
        return self._run(inputs, lengths, state, train=True, recompute=recompute)

    def _inputs(self, inputs) -> np.ndarray:
        if not isinstance(inputs, np.ndarray):
            raise TypeError(f"SequenceModel: expected inputs to be a numpy.ndarray, got {type(inputs).__name__}")
        if self.embedding is not None:
            if inputs.ndim != 2 or not np.issubdtype(inputs.dtype, np.integer):
                raise ValueError(
                    f"SequenceModel: token inputs should be an integer array (batch, time), "
                    f"got a {inputs.ndim}-D {inputs.dtype} array"
                )
            return inputs
        if inputs.ndim != 3 or inputs.shape[-1] != self.input_size:
            raise ValueError(
                f"SequenceModel: feature inputs should be (batch, time, {self.input_size}), got {inputs.shape}"
            )
        if not (np.issubdtype(inputs.dtype, np.floating) or np.issubdtype(inputs.dtype, np.integer)):
            raise ValueError(f"SequenceModel: feature inputs should be numbers, got {inputs.dtype}")
        return np.ascontiguousarray(inputs, dtype=self._dtype)

    def _lengths(self, lengths, batch: int, steps: int):
        if lengths is None:
            return None
        lengths = np.asarray(lengths)
        if lengths.shape != (batch,) or not np.issubdtype(lengths.dtype, np.integer):
            raise ValueError(f"lengths should be an integer array of shape ({batch},), got {lengths.dtype} {lengths.shape}")
        if lengths.min() < 1 or lengths.max() > steps:
            raise ValueError(f"lengths should lie in 1..{steps} (the inputs' time steps), got {lengths.min()}..{lengths.max()}")
        return None if np.all(lengths == steps) else lengths.astype(np.int64)

    def _run(self, inputs, lengths, state, train: bool, recompute=None):
        inputs = self._inputs(inputs)
        batch, steps = inputs.shape[:2]
        given = lengths
        lengths = self._lengths(lengths, batch, steps)  # None when every sequence has all T steps
        ends = np.full(batch, steps - 1) if given is None else np.asarray(given, dtype=np.int64) - 1
        if self.embedding is not None:
            x, emb_backward = self.embedding.forward_train(inputs) if train else (self.embedding(inputs), None)
        else:
            x, emb_backward = inputs, None

        rnn_in = x if lengths is None else pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        if train:
            out, state_n, rnn_backward = self.rnn.forward_train(rnn_in, state, recompute=recompute)
        else:
            (out, state_n), rnn_backward = self.rnn(rnn_in, state), None
        packed_out = out if lengths is not None else None
        if lengths is not None:
            out = pad_packed_sequence(out, batch_first=True, total_length=steps)[0]

        P, rows, mask = self.width, np.arange(batch), None
        if self.target == "sequence":
            feats = out
            mask = None if lengths is None else sequence_mask(lengths, steps)[..., None]
        else:
            feats = out[rows, ends, :P]
            if self.rnn.bidirectional:
                feats = np.concatenate([feats, out[:, 0, P:]], axis=1)
        if not train:
            y = self.head(feats)
            return (y if mask is None else y * mask), state_n, None
        y, head_backward = self.head.forward_train(feats)
        if mask is not None:
            y = y * mask

        def backward(d_outputs):
            d_outputs = np.asarray(d_outputs, dtype=self._dtype)
            if d_outputs.shape != y.shape:
                raise ValueError(f"d_outputs should have the outputs' shape {y.shape}, got {d_outputs.shape}")
            if mask is not None:
                d_outputs = d_outputs * mask
            d_feats, d_head = head_backward(d_outputs)
            if self.target == "sequence":
                d_out = d_feats
            else:
                d_out = np.zeros(out.shape, dtype=self._dtype)
                d_out[rows, ends, :P] = d_feats[:, :P]
                if self.rnn.bidirectional:
                    d_out[:, 0, P:] += d_feats[:, P:]
            if lengths is not None:
                d_out = pack_padded_sequence(d_out, lengths, batch_first=True, enforce_sorted=False)
            d_x, _, d_rnn = rnn_backward(d_out, None)
            grads = {}
            if emb_backward is not None:
                if lengths is not None:  # packed rows -> (B, T, E), zeros at padding
                    d_x = pad_packed_sequence(packed_out._replace(data=d_x), batch_first=True, total_length=steps)[0]
                grads.update({f"embedding.{k}": v for k, v in emb_backward(d_x)[1].items()})
            grads.update({f"rnn.{k}": v for k, v in d_rnn.items()})
            grads.update({f"head.{k}": v for k, v in d_head.items()})
            return grads

        return y, state_n, backward

    # -- presentation ---------------------------------------------------------
    def __repr__(self) -> str:
        parts = [f"  ({name}): {child!r}" for name, child in self._children()]
        return "SequenceModel(\n" + "\n".join(parts) + f"\n  target={self.target!r}\n)"

