"""The pictures of the docs, drawn by code so they stay true.

Each public function returns a matplotlib ``Figure`` (created through pyplot,
so a notebook shows it and ``plt.close(fig)`` frees it). Wherever a picture
states a shape, an order or a fact, it is read from a real lstmkit run made
inside the function (a module, ``pack_padded_sequence``, a backward pass), not
typed in, so changing the code changes the picture.

Concept diagrams: :func:`lstm_step`, :func:`gru_step`, :func:`weight_blocks`,
:func:`unrolled`, :func:`h_n_grid`, :func:`backward_timeline`,
:func:`batch_first`, :func:`cell_loop`, :func:`packing`,
:func:`padding_backward`, :func:`truncated_bptt`.
Measurements: :func:`gradient_norms`, :func:`training_curve` (gates over
time are drawn by :mod:`lstmkit.viz`).
"""
from __future__ import annotations

import numpy as np

try:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "lstmkit.learn.figures needs matplotlib: python -m pip install 'lstmkit[plot]'"
    ) from error

#: One colour per gate, the same on every picture: LSTM ``[i|f|g|o]``, GRU ``[r|z|n]``.
GATE_COLORS = {
    "i": "#4C72B0", "f": "#DD8452", "g": "#55A868", "o": "#C44E52",
    "r": "#8172B3", "z": "#2A9D8F", "n": "#937860",
}
GATE_NAMES = {"i": "input gate", "f": "forget gate", "g": "cell candidate", "o": "output gate",
              "r": "reset gate", "z": "update gate", "n": "new gate"}
STATE_COLOR = "#6C757D"
GRAD_COLOR = "#D62728"
BELT_COLOR = "#E9C46A"

__all__ = [
    "GATE_COLORS", "lstm_step", "gru_step", "weight_blocks", "unrolled", "h_n_grid",
    "backward_timeline", "batch_first", "cell_loop", "packing", "padding_backward",
    "truncated_bptt", "gradient_norms", "training_curve", "FIGURES",
]


# ---------------------------------------------------------------- drawing kit

def _canvas(width, height, xlim, ylim):
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def _box(ax, x, y, w, h, text, color="white", text_color="black", size=10, edge="black", alpha=1.0, **kw):
    """A rounded box centred at ``(x, y)``."""
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                facecolor=color, edgecolor=edge, linewidth=1.2, alpha=alpha))
    ax.text(x, y, text, ha="center", va="center", fontsize=size, color=text_color, **kw)


def _op(ax, x, y, symbol, r=0.28, color="white"):
    """A round operator node (⊙, +, tanh)."""
    ax.add_patch(Circle((x, y), r, facecolor=color, edgecolor="black", linewidth=1.2, zorder=3))
    ax.text(x, y, symbol, ha="center", va="center", fontsize=11 if len(symbol) == 1 else 7, zorder=4)


def _arrow(ax, start, end, color="black", width=1.4, style="-|>", ls="-", rad=0.0, **kw):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=12, color=color, linewidth=width,
                                 linestyle=ls, connectionstyle=f"arc3,rad={rad}", shrinkA=2, shrinkB=2, **kw))


def _line(ax, xs, ys, color="black", width=1.4, **kw):
    ax.plot(xs, ys, color=color, linewidth=width, solid_capstyle="round", **kw)


def _gate(ax, x, y, letter, act):
    _box(ax, x, y, 0.9, 0.7, f"{letter}\n{act}", color=GATE_COLORS[letter], text_color="white", size=10,
         fontweight="bold")


# ---------------------------------------------------------------- concept diagrams

def lstm_step():
    """One LSTM step as data flow: four gates feed the ``c`` conveyor belt.

    ``[x_t, h_{t-1}]`` feeds the four gates ``[i|f|g|o]``; the belt carries
    ``c_{t-1}`` to ``c_t = f ⊙ c_{t-1} + i ⊙ g``, touched only by a product and
    a sum; ``h_t = o ⊙ tanh(c_t)`` is read off it.
    """
    fig, ax = _canvas(10, 6.2, (-0.6, 12.6), (-0.9, 7.2))
    belt_y, gate_y, bus_y = 6.0, 2.6, 1.2
    # the conveyor belt
    ax.add_patch(Rectangle((0.4, belt_y - 0.22), 11.0, 0.44, facecolor=BELT_COLOR, edgecolor="none", alpha=0.55))
    ax.text(0.0, belt_y, "$c_{t-1}$", ha="right", va="center", fontsize=13)
    ax.text(12.4, belt_y, "$c_t$", ha="right", va="center", fontsize=13)
    ax.text(6.0, belt_y + 0.75, "the cell state c: a conveyor belt (only ⊙ f and + i ⊙ g touch it)",
            ha="center", fontsize=9, style="italic")
    _arrow(ax, (0.2, belt_y), (2.72, belt_y), width=2.5)
    _op(ax, 3.0, belt_y, "×")
    _arrow(ax, (3.28, belt_y), (5.47, belt_y), width=2.5)
    _op(ax, 5.75, belt_y, "+")
    _arrow(ax, (6.03, belt_y), (11.6, belt_y), width=2.5)
    # the inputs and the bus that feeds every gate
    ax.text(0.3, -0.55, "$x_t$", ha="center", fontsize=13)
    ax.text(1.5, -0.55, "$h_{t-1}$", ha="center", fontsize=13)
    _line(ax, [0.3, 0.3], [-0.25, bus_y])
    _line(ax, [1.5, 1.5], [-0.25, bus_y])
    _line(ax, [0.3, 9.5], [bus_y, bus_y], width=2)
    ax.text(4.8, bus_y - 0.5, "gates = $x_t W_{ih}^T + b_{ih} + h_{t-1} W_{hh}^T + b_{hh}$   (N, 4H): rows [i | f | g | o]",
            ha="center", fontsize=8.5)
    for x, letter, act in ((3.0, "f", "σ"), (4.9, "i", "σ"), (6.6, "g", "tanh"), (9.5, "o", "σ")):
        _arrow(ax, (x, bus_y), (x, gate_y - 0.37))
        _gate(ax, x, gate_y, letter, act)
    # forget: f multiplies the belt
    _arrow(ax, (3.0, gate_y + 0.37), (3.0, belt_y - 0.3))
    ax.text(3.15, 4.2, "keep\n(f ≈ 1)\nor erase", fontsize=8, va="center")
    # write: i ⊙ g added to the belt
    _op(ax, 5.75, 4.3, "×")
    _arrow(ax, (4.9, gate_y + 0.37), (5.55, 4.1))
    _arrow(ax, (6.6, gate_y + 0.37), (5.95, 4.1))
    _arrow(ax, (5.75, 4.58), (5.75, belt_y - 0.3))
    ax.text(6.05, 4.85, "write i ⊙ g", fontsize=8)
    # read: h_t = o ⊙ tanh(c_t)
    _line(ax, [8.3, 8.3], [belt_y, 5.0])
    _op(ax, 8.3, 4.7, "tanh")
    _arrow(ax, (8.58, 4.45), (9.25, 3.95))
    _op(ax, 9.5, 3.75, "×")
    _arrow(ax, (9.5, gate_y + 0.37), (9.5, 3.47))
    _arrow(ax, (9.78, 3.75), (11.5, 3.75), width=2)
    ax.text(11.6, 3.75, "$h_t$", va="center", fontsize=13)
    ax.text(9.9, 3.15, "read: o ⊙ tanh(c_t)", fontsize=8)
    ax.text(6.0, -0.9, "$c_t = f \\odot c_{t-1} + i \\odot g$        $h_t = o \\odot \\tanh(c_t)$",
            ha="center", fontsize=11)
    ax.set_title("One LSTM step (lstmkit.LSTMCell, one layer of lstmkit.LSTM)", fontsize=11)
    return fig


def gru_step():
    """One GRU step as PyTorch computes it: ``n = tanh(gi_n + r ⊙ gh_n)``, ``h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}``.

    ``r`` multiplies the whole recurrent part of the new gate, ``b_hn``
    included (the paper multiplies ``h_{t-1}`` before ``W_hn``).
    """
    fig, ax = _canvas(10, 5.8, (-0.6, 12.6), (-0.9, 6.8))
    top = 5.8
    ax.text(0.0, top, "$h_{t-1}$", ha="right", va="center", fontsize=13)
    _arrow(ax, (0.2, top), (8.72, top), width=2.5)
    _op(ax, 9.0, top, "mix")
    _arrow(ax, (9.28, top), (11.6, top), width=2.5)
    ax.text(11.7, top, "$h_t$", va="center", fontsize=13)
    ax.text(0.3, -0.55, "$x_t$", ha="center", fontsize=13)
    _line(ax, [0.3, 0.3], [-0.25, 1.2])
    _line(ax, [1.2, 1.2], [top, 1.2], ls=":")
    _line(ax, [0.3, 7.8], [1.2, 1.2], width=2)
    ax.text(4.2, 0.55, "gi = $x_t W_{ih}^T + b_{ih}$,  gh = $h_{t-1} W_{hh}^T + b_{hh}$   (N, 3H) each: rows [r | z | n]",
            ha="center", fontsize=8.5)
    for x, letter, act in ((2.8, "r", "σ"), (5.0, "z", "σ")):
        _arrow(ax, (x, 1.2), (x, 2.23))
        _box(ax, x, 2.6, 0.9, 0.7, f"{letter}\n{act}", color=GATE_COLORS[letter], text_color="white",
             fontweight="bold")
    # n = tanh(gi_n + r * gh_n)
    _op(ax, 4.0, 3.9, "×")
    _arrow(ax, (2.8, 2.97), (3.78, 3.72))
    ax.text(2.3, 4.2, "r ⊙ gh_n\n(b_hn included)", fontsize=8, ha="center")
    _line(ax, [7.3, 7.3], [1.2, 2.4])
    _box(ax, 7.3, 3.9, 1.1, 0.7, "n\ntanh", color=GATE_COLORS["n"], text_color="white", fontweight="bold")
    _arrow(ax, (7.3, 2.4), (7.3, 3.53))
    _arrow(ax, (4.28, 3.9), (6.73, 3.9))
    ax.text(5.5, 4.1, "gi_n + r ⊙ gh_n", fontsize=8, ha="center")
    _arrow(ax, (7.3, 4.27), (8.8, 5.55))
    _arrow(ax, (5.0, 2.97), (8.85, 5.5), rad=-0.25)
    ax.text(8.2, 4.55, "× (1 − z)", fontsize=8, ha="right")
    ax.text(5.25, 3.25, "× z", fontsize=8)
    ax.text(9.4, 4.8, "z keeps $h_{t-1}$,\n1 − z takes n", fontsize=8)
    ax.text(6.0, -0.9, "$h_t = (1 - z) \\odot n + z \\odot h_{t-1}$", ha="center", fontsize=11)
    ax.set_title("One GRU step (PyTorch's variant: r multiplies W_hn h + b_hn)", fontsize=11)
    return fig


def weight_blocks(input_size: int = 3, hidden_size: int = 4, seed: int = 0):
    """``weight_ih_l0`` (4H, I) and ``weight_hh_l0`` (4H, H) of a real ``LSTM`` as four row blocks ``[i|f|g|o]``.

    Each block is ``hidden_size`` rows: ``weight_ih_l0[k*H:(k+1)*H]`` feeds gate ``k``.
    """
    import lstmkit

    lstm = lstmkit.LSTM(input_size, hidden_size, seed=seed)
    weights = {"weight_ih_l0": lstm.weight_ih_l0, "weight_hh_l0": lstm.weight_hh_l0}
    H = hidden_size
    fig, axes = plt.subplots(1, 2, figsize=(9, 5.2), gridspec_kw={"width_ratios": [input_size + 4, H + 4]})
    bound = 1 / np.sqrt(H)
    for ax, (name, w) in zip(axes, weights.items()):
        ax.imshow(w, cmap="Greys", vmin=-bound, vmax=bound, aspect="equal",
                  extent=(0, w.shape[1], w.shape[0], 0))
        for k, letter in enumerate("ifgo"):
            ax.add_patch(Rectangle((0, k * H), w.shape[1], H, facecolor=GATE_COLORS[letter], alpha=0.45,
                                   edgecolor=GATE_COLORS[letter], linewidth=2))
            ax.text(w.shape[1] + 0.3, k * H + H / 2, f"{letter}: {name}[{k * H}:{(k + 1) * H}]\n({GATE_NAMES[letter]})",
                    va="center", fontsize=8.5, color=GATE_COLORS[letter], fontweight="bold")
        ax.set_xlim(0, w.shape[1] + 4.2)
        ax.set_xticks(np.arange(w.shape[1]) + 0.5, [str(j) for j in range(w.shape[1])], fontsize=7)
        ax.set_yticks(np.arange(w.shape[0]) + 0.5, [str(j) for j in range(w.shape[0])], fontsize=7)
        ax.set_title(f"{name}  {tuple(w.shape)}", fontsize=10, loc="left")
        ax.set_xlabel("columns: " + ("input features (input_size)" if "ih" in name else "h units (hidden_size)"),
                      fontsize=8, loc="left")
        for side in ("top", "right", "bottom"):
            ax.spines[side].set_visible(False)
    axes[0].set_ylabel(f"rows: 4 * hidden_size = {4 * H}", fontsize=8)
    fig.suptitle(f"lstmkit.LSTM({input_size}, {hidden_size}): four gates stacked as row blocks [i | f | g | o]",
                 fontsize=11)
    fig.tight_layout()
    return fig


def unrolled(seq_len: int = 4, num_layers: int = 2, batch: int = 3, input_size: int = 10, hidden_size: int = 20):
    """A multi-layer LSTM unrolled over time, with shapes read from a real run.

    ``out`` is read from the top layer at every step; ``h_n[k]``/``c_n[k]``
    from layer ``k`` after the last step.
    """
    import lstmkit

    lstm = lstmkit.LSTM(input_size, hidden_size, num_layers=num_layers, seed=0)
    x = np.zeros((seq_len, batch, input_size), np.float32)
    out, (h_n, c_n) = lstm(x)
    T, L = seq_len, num_layers
    fig, ax = _canvas(1.9 * T + 4.5, 1.5 * L + 3.2, (-2.4, 2.2 * T + 2.6), (-1.6, 1.8 * L + 1.8))
    for k in range(L):
        y = 1.8 * k + 0.6
        ax.text(-2.3, y, f"layer {k}", va="center", fontsize=9, color=STATE_COLOR)
        ax.text(-1.2, y, "$h_0, c_0$" + f"\n[{k}]", ha="center", va="center", fontsize=8)
        for t in range(T):
            x0 = 2.2 * t + 0.8
            _box(ax, x0, y, 1.1, 0.8, "LSTM", color="#DCE6F2")
            start = (x0 - 1.65, y) if t else (-0.75, y)
            _arrow(ax, start, (x0 - 0.58, y), color=STATE_COLOR)
            below = (x0, y - 1.8 + 0.42) if k else (x0, -0.55)
            _arrow(ax, below, (x0, y - 0.42))
            if k == 0:
                ax.text(x0, -0.85, f"x[{t}]", ha="center", fontsize=9)
            if k == L - 1:
                _arrow(ax, (x0, y + 0.42), (x0, y + 1.1), color=GATE_COLORS["o"])
                ax.text(x0, y + 1.25, f"out[{t}]", ha="center", fontsize=9, color=GATE_COLORS["o"])
        xe = 2.2 * (T - 1) + 0.8
        _arrow(ax, (xe + 0.58, y), (xe + 1.3, y), color=GATE_COLORS["f"])
        ax.text(xe + 1.4, y, f"h_n[{k}], c_n[{k}]", va="center", fontsize=9, color=GATE_COLORS["f"])
    ax.text(-2.3, -1.45, f"input {tuple(x.shape)} = (seq_len, batch, input_size): x[t] is {tuple(x[0].shape)}",
            fontsize=9)
    ax.text(-2.3, 1.8 * L + 1.35, f"out {tuple(out.shape)} = (seq_len, batch, hidden_size): the top layer, every step",
            fontsize=9, color=GATE_COLORS["o"])
    ax.text(xe + 1.4, -0.6, f"h_n, c_n {tuple(h_n.shape)}\n= (num_layers, batch, hidden_size):\nevery layer, last step",
            fontsize=9, color=GATE_COLORS["f"], va="top")
    ax.set_title(f"lstmkit.LSTM({input_size}, {hidden_size}, num_layers={L}) unrolled over {T} steps; "
                 "grey arrows carry (h, c)", fontsize=10)
    return fig


def h_n_grid(num_layers: int = 3, batch: int = 3, hidden_size: int = 20):
    """Which entry of a bidirectional ``h_n`` is which: ``h_n[layer * 2 + direction]``.

    The labels are checked against a real run: ``h_n.reshape(L, 2, B, H)[l, d]``
    is ``h_n[l * 2 + d]``, and the last layer's forward/backward finals sit in
    ``out[-1, :, :H]`` / ``out[0, :, H:]``.
    """
    import lstmkit

    lstm = lstmkit.LSTM(5, hidden_size, num_layers=num_layers, bidirectional=True, seed=0)
    x = np.random.default_rng(0).standard_normal((4, batch, 5), dtype=np.float32)
    out, (h_n, _) = lstm(x)
    H = hidden_size
    per_layer = h_n.reshape(num_layers, 2, batch, H)
    assert np.array_equal(h_n[-2], out[-1, :, :H]) and np.array_equal(h_n[-1], out[0, :, H:])
    fig, ax = _canvas(7.5, 1.1 * num_layers + 2.2, (-2.6, 6.4), (-1.2, 1.2 * num_layers + 0.9))
    for d, name in enumerate(("forward (d = 0)", "backward (d = 1)")):
        ax.text(1.2 + 3 * d, 1.2 * num_layers + 0.35, name, ha="center", fontsize=10, fontweight="bold")
    for layer in range(num_layers):
        y = 1.2 * layer
        ax.text(-2.5, y, f"layer {layer}", va="center", fontsize=10)
        for d in range(2):
            index = layer * 2 + d
            assert np.array_equal(per_layer[layer, d], h_n[index])
            color = GATE_COLORS["i"] if d == 0 else GATE_COLORS["f"]
            _box(ax, 1.2 + 3 * d, y, 2.8, 0.85, f"h_n[{index}] = h_n[{layer}*2+{d}]", color=color,
                 text_color="white", size=9, fontweight="bold", alpha=0.9)
    ax.text(-2.5, -0.95, f"h_n {tuple(h_n.shape)} = (num_layers * 2, batch, hidden_size); "
            f"h_n.reshape({num_layers}, 2, {batch}, {H})[layer, d] is h_n[layer*2+d]", fontsize=8.5)
    ax.set_title(f"LSTM(..., num_layers={num_layers}, bidirectional=True): the {2 * num_layers} entries of h_n",
                 fontsize=10)
    return fig


def backward_timeline(seq_len: int = 5):
    """The two directions of a bidirectional layer over time: the backward one *ends* at ``t = 0``.

    ``out[t] = [forward h_t | backward h_t]``, so ``out[-1]``'s second half is
    the backward direction after one step, and its final state is ``out[0, :, H:]``.
    """
    import lstmkit

    H = 4
    lstm = lstmkit.LSTM(3, H, bidirectional=True, seed=0)
    x = np.random.default_rng(1).standard_normal((seq_len, 2, 3), dtype=np.float32)
    out, (h_n, _) = lstm(x)
    forward_final = int(np.flatnonzero([np.array_equal(out[t, :, :H], h_n[0]) for t in range(seq_len)])[0])
    backward_final = int(np.flatnonzero([np.array_equal(out[t, :, H:], h_n[1]) for t in range(seq_len)])[0])
    T = seq_len
    fig, ax = _canvas(1.6 * T + 4.6, 4.4, (-3.3, 1.8 * T + 1.6), (-1.5, 3.6))
    rows = ((2.0, "forward", GATE_COLORS["i"], forward_final), (0.5, "backward", GATE_COLORS["f"], backward_final))
    for y, name, color, final in rows:
        ax.text(-3.2, y, name, va="center", fontsize=10, color=color, fontweight="bold")
        for t in range(T):
            xt = 1.8 * t
            _box(ax, xt, y, 1.0, 0.7, f"t={t}", color=color, text_color="white", alpha=0.85 if t == final else 0.45)
            if t < T - 1:
                if name == "forward":
                    _arrow(ax, (xt + 0.52, y), (xt + 1.28, y), color=color)
                else:
                    _arrow(ax, (xt + 1.28, y), (xt + 0.52, y), color=color)
        if name == "forward":
            _arrow(ax, (1.8 * (T - 1) + 0.52, y), (1.8 * T - 0.4, y), color=color, width=2)
            ax.text(1.8 * T - 0.3, y, f"h_n[0]\n= out[{final - T}, :, :H]", va="center", fontsize=8.5, color=color)
            ax.text(-1.2, y + 0.5, "starts", fontsize=8, color=color)
        else:
            _arrow(ax, (-0.52, y), (-1.3, y), color=color, width=2)
            ax.text(-1.35, y - 0.75, f"h_n[1] = out[{final}, :, H:]", fontsize=8.5, color=color)
            ax.text(1.8 * (T - 1) + 0.1, y - 0.6, "starts here", fontsize=8, color=color, ha="center")
    ax.add_patch(Rectangle((1.8 * (T - 1) - 0.65, 0.05), 1.3, 2.4, fill=False, edgecolor="black", ls="--"))
    ax.text(1.8 * (T - 1), 2.65, "out[-1] = [forward final | backward after 1 step]", ha="center", fontsize=8.5)
    ax.set_title("Bidirectional LSTM: out[t] = [forward h_t | backward h_t]; the backward direction ends at t = 0",
                 fontsize=10)
    return fig


def batch_first(seq_len: int = 5, batch: int = 3, input_size: int = 10, hidden_size: int = 20,
                num_layers: int = 2):
    """``batch_first`` swaps the first two axes of ``input`` and ``out`` only; ``h_n``/``c_n`` are unchanged.

    The shapes come from two real modules with the same weights, and the
    picture states whether their ``h_n`` are equal (they are).
    """
    import lstmkit

    tm = lstmkit.LSTM(input_size, hidden_size, num_layers=num_layers, seed=0)
    bf = lstmkit.LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=True, seed=0)
    x = np.random.default_rng(0).standard_normal((seq_len, batch, input_size), dtype=np.float32)
    out_t, (h_t, _) = tm(x)
    out_b, (h_b, _) = bf(x.transpose(1, 0, 2))
    same = bool(np.array_equal(h_t, h_b))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    panels = ((axes[0], "batch_first=False (default)", x.shape, out_t.shape, h_t.shape, ("time", "batch")),
              (axes[1], "batch_first=True", (batch, seq_len, input_size), out_b.shape, h_b.shape, ("batch", "time")))
    for ax, title, in_shape, out_shape, h_shape, (rows, cols) in panels:
        ax.set_xlim(0, 10)
        ax.set_ylim(0, 7)
        ax.axis("off")
        ax.set_title(title, fontsize=11)
        for x0, (label, shape, color, axes_names) in zip(
            (0.3, 3.7, 7.1),
            (("input", in_shape, GATE_COLORS["i"], (rows, cols)), ("out", out_shape, GATE_COLORS["o"], (rows, cols)),
             ("h_n, c_n", h_shape, STATE_COLOR, ("layer", "batch")))):
            n_rows, n_cols = shape[0], shape[1]
            cell = 2.6 / max(n_rows, n_cols, 5)
            for r in range(n_rows):
                for c in range(n_cols):
                    ax.add_patch(Rectangle((x0 + c * cell, 5.2 - (r + 1) * cell), cell, cell, facecolor=color,
                                           edgecolor="white", alpha=0.75))
            ax.text(x0, 5.45, f"{label}\n{tuple(shape)}", fontsize=9, va="bottom")
            ax.text(x0 - 0.1, 5.2 - n_rows * cell / 2, axes_names[0], rotation=90, ha="right", va="center", fontsize=8)
            ax.text(x0 + n_cols * cell / 2, 5.1 - n_rows * cell - 0.15, axes_names[1], ha="center", va="top", fontsize=8)
    fig.text(0.5, 0.06, f"Same weights, same data: h_n identical in both layouts: {same}. "
             "h_0, c_0, h_n, c_n are always (D * num_layers, batch, hidden).", ha="center", fontsize=9)
    fig.suptitle("batch_first swaps the first two axes of input and out, and nothing else", fontsize=11)
    return fig


def cell_loop(seq_len: int = 2, batch: int = 3, input_size: int = 10, hidden_size: int = 20):
    """The article's ``LSTMCell`` loop: one call per step, each ``hx`` appended, stacked into ``out``."""
    import lstmkit

    cell = lstmkit.LSTMCell(input_size, hidden_size, seed=0)
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((seq_len, batch, input_size), dtype=np.float32)
    hx = cx = np.zeros((batch, hidden_size), np.float32)
    steps = []
    for x_t in inputs:
        hx, cx = cell(x_t, (hx, cx))
        steps.append(hx)
    out = np.stack(steps)
    T = seq_len
    fig, ax = _canvas(2.3 * T + 4.6, 4.6, (-2.4, 2.6 * T + 2.4), (-1.6, 4.0))
    ax.text(-2.3, 1.0, f"hx, cx\n{tuple(hx.shape)}", va="center", fontsize=9)
    for t in range(T):
        xt = 2.6 * t + 0.8
        _box(ax, xt, 1.0, 1.4, 0.8, "LSTMCell", color="#DCE6F2")
        _arrow(ax, (xt - 1.85 if t else -1.0, 1.0), (xt - 0.73, 1.0), color=STATE_COLOR)
        _arrow(ax, (xt, -0.7), (xt, 0.58))
        ax.text(xt, -1.0, f"input[{t}]  {tuple(inputs[t].shape)}", ha="center", fontsize=8.5)
        _arrow(ax, (xt, 1.42), (xt, 2.35), color=GATE_COLORS["o"])
        _box(ax, xt, 2.7, 1.9, 0.6, f"output[{t}] = hx", color=GATE_COLORS["o"], text_color="white", size=8.5,
             alpha=0.85)
    xe = 2.6 * (T - 1) + 0.8
    _arrow(ax, (xe + 0.73, 1.0), (xe + 1.5, 1.0), color=STATE_COLOR)
    ax.text(xe + 1.6, 1.0, "final hx, cx\n= LSTM's h_n[0], c_n[0]", va="center", fontsize=9)
    ax.text(0.8 + 1.3 * (T - 1), 3.45, f"np.stack(output) → {tuple(out.shape)} = LSTM's out", ha="center",
            fontsize=10, color=GATE_COLORS["o"], fontweight="bold")
    ax.set_title("for i in range(seq_len): hx, cx = cell(input[i], (hx, cx)); output.append(hx)", fontsize=10,
                 family="monospace")
    return fig


def _sequence_cmap(n):
    return [plt.get_cmap("tab10")(k % 10) for k in range(n)]


def packing(lengths=(6, 4, 4, 1)):
    """A padded ``(T, B)`` grid next to the packed ``data`` order with its ``batch_sizes``.

    The packed order is read from a real ``pack_padded_sequence`` of the
    cells' labels: step 0 of every sequence, then step 1 of those still
    running, and so on.
    """
    from lstmkit.utils.rnn import pack_padded_sequence

    lengths = list(lengths)
    T, B = max(lengths), len(lengths)
    ids = np.full((T, B), -1, np.int64)
    for b, n in enumerate(lengths):
        ids[:n, b] = b * 100 + np.arange(n)
    packed = pack_padded_sequence(ids, lengths, enforce_sorted=False)
    colors = _sequence_cmap(B)
    total = int(sum(lengths))
    fig, ax = _canvas(max(9, 0.55 * total + 4), 0.62 * T + 3.2, (-1.2, max(B + 1.5, 0) + 0.62 * total + 1.6),
                      (-2.6, T + 0.9))
    # padded grid: rows = time, columns = batch
    for t in range(T):
        ax.text(-0.3, T - t - 0.5, f"t={t}", ha="right", va="center", fontsize=8)
        for b in range(B):
            real = t < lengths[b]
            ax.add_patch(Rectangle((b, T - t - 1), 1, 1, facecolor=colors[b] if real else "#EEEEEE",
                                   edgecolor="white", hatch=None if real else "//", alpha=0.85 if real else 1))
            ax.text(b + 0.5, T - t - 0.5, f"{'abcdefghij'[b % 10]}{t}" if real else "pad", ha="center",
                    va="center", fontsize=8, color="white" if real else "#999999")
    for b in range(B):
        ax.text(b + 0.5, T + 0.2, f"len {lengths[b]}", ha="center", fontsize=8)
    ax.text(B / 2, -0.6, f"padded {ids.shape}: (T, B)", ha="center", fontsize=9)
    # packed data, left to right, grouped by time step
    x0 = B + 1.5
    w = 0.62
    position = 0
    for t, size in enumerate(packed.batch_sizes):
        for j in range(size):
            label = int(packed.data[position])
            b, step = divmod(label, 100)
            ax.add_patch(Rectangle((x0 + position * w, T / 2 - 0.5), w, 1, facecolor=colors[b], edgecolor="white",
                                   alpha=0.85))
            ax.text(x0 + (position + 0.5) * w, T / 2, f"{'abcdefghij'[b % 10]}{step}", ha="center", va="center",
                    fontsize=8, color="white")
            position += 1
        start = x0 + (position - size) * w
        _line(ax, [start + 0.05, position * w + x0 - 0.05], [T / 2 - 0.7] * 2, width=2)
        ax.text((start + x0 + position * w) / 2, T / 2 - 1.1, f"t={t}\n{size}", ha="center", va="top", fontsize=8)
    ax.text(x0, T / 2 + 0.8, f"packed.data ({total},): every step 0, then every step 1, ...", fontsize=9)
    ax.text(x0, T / 2 - 2.2, f"batch_sizes = {packed.batch_sizes.tolist()}   (how many sequences are still running at each t)",
            fontsize=9)
    ax.set_title(f"pack_padded_sequence(padded, lengths={lengths}, enforce_sorted=False)", fontsize=10)
    return fig


def padding_backward(lengths=(6, 4, 4, 1), seed: int = 0):
    """Where a bidirectional layer's backward direction starts: in the padding (padded input) vs at each end (packed).

    Beneath each panel: whether each sequence's backward ``h_n`` equals
    running that sequence alone, measured on a real ``LSTM``.
    """
    import lstmkit
    from lstmkit.utils.rnn import pack_padded_sequence, pad_sequence

    lengths = list(lengths)
    T, B, H = max(lengths), len(lengths), 5
    rng = np.random.default_rng(seed)
    seqs = [rng.standard_normal((n, 3), dtype=np.float32) for n in lengths]
    lstm = lstmkit.LSTM(3, H, bidirectional=True, seed=seed)
    padded = pad_sequence(seqs)
    _, (h_dense, _) = lstm(padded)
    _, (h_packed, _) = lstm(pack_padded_sequence(padded, lengths, enforce_sorted=False))
    alone = [lstm(s)[1][0][1] for s in seqs]  # backward h_n of each sequence run alone
    ok_dense = [bool(np.allclose(h_dense[1, b], alone[b], atol=1e-6)) for b in range(B)]
    ok_packed = [bool(np.allclose(h_packed[1, b], alone[b], atol=1e-6)) for b in range(B)]
    colors = _sequence_cmap(B)
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.6 * T + 2.6))
    for ax, title, packed_mode, ok in ((axes[0], "lstm(padded)", False, ok_dense),
                                       (axes[1], "lstm(packed)", True, ok_packed)):
        ax.set_xlim(-1.2, B + 0.3)
        ax.set_ylim(-1.4, T + 0.8)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(f"{title}: the backward direction", fontsize=10)
        for b, n in enumerate(lengths):
            for t in range(T):
                real = t < n
                ax.add_patch(Rectangle((b, T - t - 1), 1, 1, facecolor=colors[b] if real else "#EEEEEE",
                                       edgecolor="white", hatch=None if real else "//", alpha=0.5 if real else 1))
            start = (T - 1) if not packed_mode else (n - 1)
            polluted = start >= n
            _arrow(ax, (b + 0.5, T - start - 0.5), (b + 0.5, T - 0.6), width=2,
                   color=GRAD_COLOR if polluted else "black")
            ax.plot([b + 0.5], [T - start - 0.5], "o", color=GRAD_COLOR if polluted else "black")
            ax.text(b + 0.5, -0.5, "✓" if ok[b] else "✗", ha="center", fontsize=14,
                    color="#2A9D8F" if ok[b] else GRAD_COLOR)
        for t in range(T):
            ax.text(-0.2, T - t - 0.5, f"t={t}", ha="right", va="center", fontsize=8)
        ax.text(B / 2, -1.25, "backward h_n equals the sequence run alone", ha="center", fontsize=8)
    fig.suptitle("A padded batch starts the backward direction in the padding (red); packing starts it at "
                 "each sequence's own end", fontsize=10)
    return fig


def truncated_bptt(num_chunks: int = 3, chunk_len: int = 4):
    """Truncated BPTT: the state crosses chunk boundaries, gradients stop at them.

    Each chunk is one ``forward_train`` call started from the previous chunk's
    ``(h_n, c_n)``; its ``backward`` reaches back only to the chunk's start.
    """
    T = num_chunks * chunk_len
    fig, ax = _canvas(0.9 * T + 2.5, 3.6, (-1.5, 1.2 * T + 0.6), (-1.9, 2.7))
    for k in range(num_chunks):
        x0 = 1.2 * k * chunk_len - 0.5
        ax.add_patch(Rectangle((x0, -0.7), 1.2 * chunk_len - 0.2, 1.4, facecolor=GATE_COLORS["i"], alpha=0.08,
                               edgecolor=GATE_COLORS["i"]))
        ax.text(x0 + 0.6 * chunk_len - 0.1, 2.35, f"chunk {k}: forward_train(x[{k * chunk_len}:{(k + 1) * chunk_len}], "
                f"state)", ha="center", fontsize=8)
    for t in range(T):
        xt = 1.2 * t
        _box(ax, xt, 0, 0.7, 0.6, f"{t}", color="#DCE6F2", size=8)
        if t < T - 1:
            crossing = (t + 1) % chunk_len == 0
            _arrow(ax, (xt + 0.37, 0.12), (xt + 0.83, 0.12), color=STATE_COLOR, width=2.2 if crossing else 1.2)
            if not crossing:
                _arrow(ax, (xt + 0.83, -0.15), (xt + 0.37, -0.15), color=GRAD_COLOR, width=1.2, ls="--")
            else:
                ax.text(xt + 0.6, -0.55, "✕", ha="center", fontsize=13, color=GRAD_COLOR, fontweight="bold")
                ax.text(xt + 0.6, 1.0, "(h_n, c_n) →\nnext h_0, c_0", ha="center", fontsize=7.5, color=STATE_COLOR)
    ax.text(-1.4, -1.3, "grey: the state flows forward through every boundary;  red dashed: gradients flow "
            "back only inside a chunk (✕: backward ends there, d_hx is dropped)", fontsize=8)
    ax.set_title(f"Truncated BPTT over {num_chunks} chunks of {chunk_len} steps", fontsize=10)
    return fig


# ---------------------------------------------------------------- measurements

def _last_step_gradients(module, x):
    """``‖∂L/∂h_t‖`` for every ``t``, where ``L = Σ out[T-1]`` (the loss reads only the last step), from a gate trace."""
    from .trace import trace_module

    return trace_module(module, x[:, 0, :], d_out="last").grad_norms[(0, 0)]


def gradient_norms(seq_len: int = 60, hidden_size: int = 32, seed: int = 0, forget_bias: float = 3.0):
    """Gradient norms ``‖∂L/∂h_t‖`` over time for a loss on the last step, measured by a gate trace's backward.

    Four float64 models on the same random input: an Elman RNN (tanh) as
    initialised (gradients vanish geometrically), an Elman RNN (relu) with
    ``W_hh = 1.15 I`` and every unit active (they explode), an LSTM as initialised
    (``f ≈ σ(0) = 0.5``: ``dc_{t-1} = dc_t ⊙ f`` halves each step) and an LSTM
    whose forget-gate bias is ``forget_bias`` (``f ≈ σ(3) ≈ 0.95``: the
    additive path through ``c`` carries the gradient far back).
    Returns the figure; the curves are in ``fig.lstmkit_norms`` (name → array).
    """
    import lstmkit

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((seq_len, 1, 1)) * 0.5
    H = hidden_size
    rnn_tanh = lstmkit.RNN(1, H, dtype=np.float64, seed=seed)
    rnn_relu = lstmkit.RNN(1, H, nonlinearity="relu", dtype=np.float64, seed=seed)
    rnn_relu.weight_hh_l0 = 1.15 * np.eye(H)  # every unit kept active by the bias: the gradient grows 1.15x a step
    rnn_relu.bias_ih_l0 = np.full(H, 0.1)
    rnn_relu.bias_hh_l0 = np.zeros(H)
    lstm = lstmkit.LSTM(1, H, dtype=np.float64, seed=seed)
    lstm_open = lstmkit.LSTM(1, H, dtype=np.float64, seed=seed)
    lstm_open.bias_ih_l0[H:2 * H] = forget_bias
    lstm_open.bias_hh_l0[H:2 * H] = 0.0
    norms = {
        "RNN (tanh), default init: vanishes": _last_step_gradients(rnn_tanh, x),
        "RNN (relu), W_hh = 1.15·I: explodes": _last_step_gradients(rnn_relu, x),
        "LSTM, default init (f ≈ 0.5)": _last_step_gradients(lstm, x),
        f"LSTM, forget bias {forget_bias:g} (f ≈ {1 / (1 + np.exp(-forget_bias)):.2f})": _last_step_gradients(lstm_open, x),
    }
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    steps_back = np.arange(seq_len)[::-1]  # t = T-1 is 0 steps back
    styles = [("#7F7F7F", "-"), (GRAD_COLOR, "-"), (GATE_COLORS["i"], "--"), (GATE_COLORS["f"], "-")]
    for (label, values), (color, ls) in zip(norms.items(), styles):
        ax.semilogy(steps_back, np.maximum(values, 1e-300), label=label, color=color, ls=ls, linewidth=2)
    ax.set_xlabel("steps between h_t and the loss (T - 1 - t)")
    ax.set_ylabel("‖∂L/∂h_t‖  (log scale)")
    ax.set_ylim(1e-14, None)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8.5, loc="lower left")
    ax.set_title(f"Gradient reaching each step from a loss on the last step (seq_len={seq_len}, hidden={H})",
                 fontsize=10)
    fig.tight_layout()
    fig.lstmkit_norms = norms
    return fig


def training_curve(losses, title: str = "Training loss", baseline: float | None = None):
    """The loss at every step (log scale), with an optional ``baseline`` (e.g. the loss of predicting 0)."""
    losses = np.asarray(losses, dtype=float)
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    ax.semilogy(np.arange(len(losses)), losses, color=GATE_COLORS["i"], linewidth=1.5, label="loss")
    if baseline is not None:
        ax.axhline(baseline, color=STATE_COLOR, ls="--", linewidth=1, label=f"baseline {baseline:.2f}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (log scale)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


#: Every picture that needs no argument, by name (the tests draw them all).
FIGURES = {
    "lstm_step": lstm_step, "gru_step": gru_step, "weight_blocks": weight_blocks, "unrolled": unrolled,
    "h_n_grid": h_n_grid, "backward_timeline": backward_timeline, "batch_first": batch_first,
    "cell_loop": cell_loop, "packing": packing, "padding_backward": padding_backward,
    "truncated_bptt": truncated_bptt, "gradient_norms": gradient_norms,
}
