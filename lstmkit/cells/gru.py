"""The GRU cell, exactly as ``torch.nn.GRU`` computes it (gate order r, z, n).

.. math::

    r &= \\sigma(W_{ir} x + b_{ir} + W_{hr} h + b_{hr}) \\\\
    z &= \\sigma(W_{iz} x + b_{iz} + W_{hz} h + b_{hz}) \\\\
    n &= \\tanh(W_{in} x + b_{in} + r \\odot (W_{hn} h + b_{hn})) \\\\
    h' &= (1 - z) \\odot n + z \\odot h

Note ``r`` multiplies ``b_hn`` too (PyTorch's and cuDNN's variant, not the
paper's), so ``b_ih`` and ``b_hh`` are not interchangeable for the ``n`` gate.
"""
from __future__ import annotations

from .base import CellType, sigmoid


class GRUCellType(CellType):
    name = "gru"
    num_gates = 3
    state_names = ("h",)
    torch_mode = "GRU"
    description = "Gated recurrent unit (Cho et al.), PyTorch's nn.GRU."

    def forward_step(self, xp, p, gi, state):
        (h_prev,) = state
        hidden = h_prev.shape[-1]
        gh = h_prev @ p["weight_hh"].T
        if "bias_hh" in p:
            gh = gh + p["bias_hh"]
        r = sigmoid(xp, gi[:, :hidden] + gh[:, :hidden])
        z = sigmoid(xp, gi[:, hidden : 2 * hidden] + gh[:, hidden : 2 * hidden])
        gh_n = gh[:, 2 * hidden :]
        n = xp.tanh(gi[:, 2 * hidden :] + r * gh_n)
        h = n + z * (h_prev - n)
        return (h,), (h_prev, r, z, n, gh_n)

    def backward_step(self, xp, p, cache, d_state, grads):
        h_prev, r, z, n, gh_n = cache
        (d_h,) = d_state
        d_n_pre = d_h * (1 - z) * (1 - n * n)
        d_r_pre = d_n_pre * gh_n * r * (1 - r)
        d_z_pre = d_h * (h_prev - n) * z * (1 - z)
        d_gi = xp.concatenate([d_r_pre, d_z_pre, d_n_pre], axis=1)
        d_gh = xp.concatenate([d_r_pre, d_z_pre, d_n_pre * r], axis=1)
        grads["weight_hh"] += d_gh.T @ h_prev
        if "bias_hh" in grads:
            grads["bias_hh"] += d_gh.sum(axis=0)
        return d_gi, (d_h * z + d_gh @ p["weight_hh"],)
