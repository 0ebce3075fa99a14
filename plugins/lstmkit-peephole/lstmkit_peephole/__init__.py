"""lstmkit-peephole: the peephole LSTM cell (Gers & Schmidhuber, 2000) as an lstmkit plugin.

The input and forget gates see the previous cell state ``c_{t-1}``, the
output gate sees the new one ``c_t``, each through a diagonal ("peephole")
weight vector.  Gate rows ``[i | f | g | o]`` as in ``torch.nn.LSTM``:

.. math::

    \\text{gates} &= x_t W_{ih}^T + b_{ih} + h_{t-1} W_{hh}^T + b_{hh} \\\\
    i &= \\sigma(\\text{gates}_i + w_{ci} \\odot c_{t-1}) \\\\
    f &= \\sigma(\\text{gates}_f + w_{cf} \\odot c_{t-1}) \\\\
    g &= \\tanh(\\text{gates}_g) \\\\
    c_t &= f \\odot c_{t-1} + i \\odot g \\quad (\\text{clipped to } [-\\text{cell\\_clip}, \\text{cell\\_clip}] \\text{ if set}) \\\\
    o &= \\sigma(\\text{gates}_o + w_{co} \\odot c_t) \\\\
    h_t &= o \\odot \\tanh(c_t)

Parameters per layer and direction: ``weight_ih (4H, I)``, ``weight_hh (4H, H)``,
``bias_ih (4H,)``, ``bias_hh (4H,)`` (as ``nn.LSTM``), then ``weight_ci``,
``weight_cf``, ``weight_co`` ``(H,)`` each.  All are drawn from
``U(-1/sqrt(H), 1/sqrt(H))`` like every lstmkit parameter.  With the peephole
weights at zero (and no ``cell_clip``) the cell is exactly ``nn.LSTM``'s.

The step is written against an array module ``xp`` (NumPy; CuPy runs the same
code), so every backend runs it: backends without a fused kernel for it
(``cython``) use this reference step.
"""
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

import lstmkit
from lstmkit.cells import CellType, sigmoid
from lstmkit.specs import CellSpec

__version__ = "0.1.0"

__all__ = ["PeepholeLSTMCellType", "PeepholeOptions", "register_cells"]


class PeepholeOptions(BaseModel):
    """Options of the ``peephole`` cell (``cell_options=`` / config ``model.cell_options``).

    ``cell_clip``: clip the cell state to ``[-cell_clip, cell_clip]`` after
    each update (TensorFlow's ``LSTMCell(cell_clip=...)``, used with peepholes
    in the LSTMP speech models); ``None`` (default): no clipping.  Where the
    clip is active, no gradient flows through the clipped value.
    """

    model_config = ConfigDict(extra="forbid")

    cell_clip: Optional[PositiveFloat] = Field(
        None, description="Clip the cell state to [-cell_clip, cell_clip] after each update (null: no clipping)."
    )


class PeepholeLSTMCellType(CellType):
    """The peephole LSTM cell's equations (see the module docstring)."""

    name = "peephole"
    num_gates = 4
    state_names = ("h", "c")
    supports_proj = False
    torch_mode = None
    description = "LSTM with peephole connections (Gers & Schmidhuber): gates see the cell state."

    def __init__(self, cell_clip: Optional[float] = None):
        self.cell_clip = cell_clip

    def parameter_shapes(self, input_size, hidden_size, proj_size=0, bias=True):
        shapes = super().parameter_shapes(input_size, hidden_size, proj_size, bias)
        return shapes + [("weight_ci", (hidden_size,)), ("weight_cf", (hidden_size,)),
                         ("weight_co", (hidden_size,))]

    def forward_step(self, xp, p, gi, state):
        h_prev, c_prev = state
        hidden = c_prev.shape[-1]
        gates = gi + h_prev @ p["weight_hh"].T
        if "bias_hh" in p:
            gates = gates + p["bias_hh"]
        i = sigmoid(xp, gates[:, :hidden] + p["weight_ci"] * c_prev)
        f = sigmoid(xp, gates[:, hidden : 2 * hidden] + p["weight_cf"] * c_prev)
        g = xp.tanh(gates[:, 2 * hidden : 3 * hidden])
        c = f * c_prev + i * g
        inside = None
        if self.cell_clip is not None:
            inside = xp.abs(c) <= self.cell_clip  # where the gradient passes
            c = xp.clip(c, -self.cell_clip, self.cell_clip)
        o = sigmoid(xp, gates[:, 3 * hidden :] + p["weight_co"] * c)
        tanh_c = xp.tanh(c)
        h = o * tanh_c
        return (h, c), (h_prev, c_prev, i, f, g, o, c, tanh_c, inside)

    def backward_step(self, xp, p, cache, d_state, grads):
        h_prev, c_prev, i, f, g, o, c, tanh_c, inside = cache
        d_h, d_c = d_state
        d_o = d_h * tanh_c * o * (1 - o)  # d o_pre
        # c_t reaches the loss through d_c, through h (tanh) and through o's peephole.
        d_c = d_c + d_h * o * (1 - tanh_c * tanh_c) + d_o * p["weight_co"]
        if inside is not None:
            d_c = d_c * inside
        d_i = d_c * g * i * (1 - i)  # d i_pre
        d_f = d_c * c_prev * f * (1 - f)  # d f_pre
        d_g = d_c * i * (1 - g * g)  # d g_pre
        d_gates = xp.concatenate([d_i, d_f, d_g, d_o], axis=1)
        grads["weight_hh"] += d_gates.T @ h_prev
        if "bias_hh" in grads:
            grads["bias_hh"] += d_gates.sum(axis=0)
        grads["weight_ci"] += (d_i * c_prev).sum(axis=0)
        grads["weight_cf"] += (d_f * c_prev).sum(axis=0)
        grads["weight_co"] += (d_o * c).sum(axis=0)
        d_c_prev = d_c * f + d_i * p["weight_ci"] + d_f * p["weight_cf"]
        return d_gates, (d_gates @ p["weight_hh"], d_c_prev)

    def __repr__(self) -> str:
        clip = "" if self.cell_clip is None else f"cell_clip={self.cell_clip}"
        return f"{type(self).__name__}({clip})"


@lstmkit.hookimpl
def register_cells(register):
    register(CellSpec("peephole", PeepholeLSTMCellType, options_model=PeepholeOptions,
                      description=PeepholeLSTMCellType.description))
