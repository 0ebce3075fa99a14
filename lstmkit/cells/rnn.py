"""The Elman RNN cell, exactly as ``torch.nn.RNN`` computes it.

.. math::

    h_t = \\text{act}(x_t W_{ih}^T + b_{ih} + h_{t-1} W_{hh}^T + b_{hh}),
    \\quad \\text{act} \\in \\{\\tanh, \\operatorname{relu}\\}
"""
from __future__ import annotations

from .base import CellType


class _ElmanCellType(CellType):
    num_gates = 1
    state_names = ("h",)

    def _pre(self, p, gi, h_prev):
        pre = gi + h_prev @ p["weight_hh"].T
        return pre + p["bias_hh"] if "bias_hh" in p else pre

    def _finish_backward(self, p, d_pre, h_prev, grads):
        grads["weight_hh"] += d_pre.T @ h_prev
        if "bias_hh" in grads:
            grads["bias_hh"] += d_pre.sum(axis=0)
        return d_pre, (d_pre @ p["weight_hh"],)


class RNNTanhCellType(_ElmanCellType):
    name = "rnn_tanh"
    torch_mode = "RNN_TANH"
    description = "Elman RNN with tanh, PyTorch's nn.RNN(nonlinearity='tanh')."

    def forward_step(self, xp, p, gi, state):
        (h_prev,) = state
        h = xp.tanh(self._pre(p, gi, h_prev))
        return (h,), (h_prev, h)

    def backward_step(self, xp, p, cache, d_state, grads):
        h_prev, h = cache
        return self._finish_backward(p, d_state[0] * (1 - h * h), h_prev, grads)


class RNNReluCellType(_ElmanCellType):
    name = "rnn_relu"
    torch_mode = "RNN_RELU"
    description = "Elman RNN with ReLU, PyTorch's nn.RNN(nonlinearity='relu')."

    def forward_step(self, xp, p, gi, state):
        (h_prev,) = state
        h = xp.maximum(self._pre(p, gi, h_prev), 0)
        return (h,), (h_prev, h)

    def backward_step(self, xp, p, cache, d_state, grads):
        h_prev, h = cache
        return self._finish_backward(p, d_state[0] * (h > 0), h_prev, grads)
