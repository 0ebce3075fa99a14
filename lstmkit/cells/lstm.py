"""The LSTM cell, exactly as ``torch.nn.LSTM`` computes it (gate order i, f, g, o).

.. math::

    \\text{gates} &= x_t W_{ih}^T + b_{ih} + h_{t-1} W_{hh}^T + b_{hh} \\\\
    i, f, o &= \\sigma(\\text{gates}_{i,f,o}), \\quad g = \\tanh(\\text{gates}_g) \\\\
    c_t &= f \\odot c_{t-1} + i \\odot g \\\\
    h_t &= o \\odot \\tanh(c_t) \\quad (\\text{then } h_t W_{hr}^T \\text{ if proj\\_size} > 0)
"""
from __future__ import annotations

from .base import CellType, sigmoid


class LSTMCellType(CellType):
    name = "lstm"
    num_gates = 4
    state_names = ("h", "c")
    supports_proj = True
    torch_mode = "LSTM"
    description = "Long short-term memory (Hochreiter & Schmidhuber), PyTorch's nn.LSTM."

    def forward_step(self, xp, p, gi, state):
        h_prev, c_prev = state
        hidden = c_prev.shape[-1]
        gates = gi + h_prev @ p["weight_hh"].T
        if "bias_hh" in p:
            gates = gates + p["bias_hh"]
        i = sigmoid(xp, gates[:, 0 * hidden : 1 * hidden])
        f = sigmoid(xp, gates[:, 1 * hidden : 2 * hidden])
        g = xp.tanh(gates[:, 2 * hidden : 3 * hidden])
        o = sigmoid(xp, gates[:, 3 * hidden : 4 * hidden])
        c = f * c_prev + i * g
        tanh_c = xp.tanh(c)
        h_cell = o * tanh_c
        h = h_cell @ p["weight_hr"].T if "weight_hr" in p else h_cell
        return (h, c), (h_prev, c_prev, i, f, g, o, tanh_c, h_cell)

    def backward_step(self, xp, p, cache, d_state, grads):
        h_prev, c_prev, i, f, g, o, tanh_c, h_cell = cache
        d_h, d_c = d_state
        if "weight_hr" in p:
            grads["weight_hr"] += d_h.T @ h_cell
            d_h = d_h @ p["weight_hr"]
        d_o = d_h * tanh_c
        d_c = d_c + d_h * o * (1 - tanh_c * tanh_c)
        d_gates = xp.concatenate(
            [
                d_c * g * i * (1 - i),  # d i_pre
                d_c * c_prev * f * (1 - f),  # d f_pre
                d_c * i * (1 - g * g),  # d g_pre
                d_o * o * (1 - o),  # d o_pre
            ],
            axis=1,
        )
        grads["weight_hh"] += d_gates.T @ h_prev
        if "bias_hh" in grads:
            grads["bias_hh"] += d_gates.sum(axis=0)
        return d_gates, (d_gates @ p["weight_hh"], d_c * f)
