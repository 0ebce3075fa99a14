"""Gate traces: what every gate, ``c`` and ``h`` did at every time step, and how the gradient flowed back.

:func:`trace_module` runs a :class:`~lstmkit.Recurrent` (any cell) on one
sequence; :func:`trace_model` a :class:`~lstmkit.SequenceModel` (what ``lstmkit
run`` trains) on one sequence of its task, with one training step's backward;
:func:`trace_run` does that for a run folder (trained weights) or a config (the
freshly initialised model the run would start from).  :func:`plot_trace`
draws a :class:`Trace` (heatmaps of the gates, ``c`` and ``h`` over time, and
gradient norms ``‖∂L/∂h_t‖`` per layer over time); :mod:`lstmkit.viz` is the
public face.

How it records: the module runs once more on the ``numpy`` reference backend
with its cell wrapped so that each ``forward_step`` and ``backward_step`` is
seen (the engine and the cell's equations are unchanged), in eval mode (no
dropout), on a shallow copy that shares the weights and changes nothing.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Trace", "trace_module", "trace_model", "trace_run", "plot_trace", "plot_grad_norms", "save_figure"]


@dataclass
class Trace:
    """One sequence through a recurrent stack, for each ``(layer, direction)`` key, in time order ``t = 0..T-1``:

    ``gates[key][name]`` ``(T, H)`` gate activations (``i f g o`` for LSTM, ``r z n`` for GRU; none for
    cells whose gates lstmkit does not know); ``states[key][name]`` ``(T, width)`` the state *after* step
    ``t`` (``h``, ``c``); ``grad_norms[key]`` ``(T,)`` ``‖∂L/∂h_t‖`` for the loss ``loss_text`` (``None``
    without a backward).  ``labels``: one text per time step (the characters of a char_lm input) or ``None``.
    """

    cell: str
    num_layers: int
    num_directions: int
    steps: int
    gates: dict = field(default_factory=dict)
    states: dict = field(default_factory=dict)
    grad_norms: dict | None = None
    loss_text: str = ""
    source: str = ""
    labels: list[str] | None = None

    def keys(self) -> list[tuple[int, int]]:
        return [(layer, d) for layer in range(self.num_layers) for d in range(self.num_directions)]

    def summary(self) -> str:
        """A few lines: where the weights come from, and how ‖∂L/∂h_t‖ changes from the last step back to the first."""
        lines = [f"{self.cell}: {self.num_layers} layer(s), {self.num_directions} direction(s), "
                 f"{self.steps} time steps"] + ([self.source] if self.source else [])
        if self.grad_norms:
            lines.append(f"gradient norms ‖∂L/∂h_t‖ ({self.loss_text}):")
            for (layer, d), norms in self.grad_norms.items():
                name = f"layer {layer}" + (" backward" if d else (" forward" if self.num_directions > 1 else ""))
                first, last = float(norms[0]), float(norms[-1])
                lines.append(f"  {name:<18} t=0: {first:.3g}   t={self.steps - 1}: {last:.3g}")
        return "\n".join(lines)


#: Where a built-in cell's step cache keeps its gate activations (see lstmkit/cells/*.py).
def _gate_slots(cell) -> dict[str, int]:
    from ..cells import GRUCellType, LSTMCellType

    if type(cell) is LSTMCellType:
        return {"i": 2, "f": 3, "g": 4, "o": 5}
    if type(cell) is GRUCellType:
        return {"r": 1, "z": 2, "n": 3}
    return {}


class _Recorder:
    """A cell that is ``cell`` and also keeps every step's new state, cache and incoming ``d_state``."""

    def __init__(self, cell):
        self._cell = cell
        self.forward: list = []
        self.backward: list = []

    def __getattr__(self, name):
        return getattr(self._cell, name)

    def forward_step(self, xp, p, gi, state):
        new_state, cache = self._cell.forward_step(xp, p, gi, state)
        self.forward.append((tuple(np.array(s[0]) for s in new_state), cache))
        return new_state, cache

    def backward_step(self, xp, p, cache, d_state, grads):
        self.backward.append(float(np.linalg.norm(d_state[0][0])))
        return self._cell.backward_step(xp, p, cache, d_state, grads)


def _recording_copy(rnn):
    """A shallow copy of the ``Recurrent`` ``rnn`` on the reference backend with a recording cell, eval mode."""
    from ..backends.reference import ReferenceBackend

    rec = copy.copy(rnn)
    recorder = _Recorder(rnn.cell)
    rec.cell, rec.backend, rec.training = recorder, ReferenceBackend(), False
    return rec, recorder


def _collect(trace: Trace, rnn, recorder: _Recorder) -> None:
    """Split the recorder's calls into ``(layer, direction)`` blocks of ``T`` steps (the engine's order:
    layers, then directions; the reverse direction runs ``t = T-1 .. 0``; backward visits them the other way)."""
    T, slots, names = trace.steps, _gate_slots(rnn.cell), rnn.cell.state_names
    keys = trace.keys()
    for n, key in enumerate(keys):
        calls = recorder.forward[n * T:(n + 1) * T]
        if key[1] == 1:
            calls = calls[::-1]
        trace.states[key] = {name: np.stack([c[0][k] for c in calls]) for k, name in enumerate(names)}
        trace.gates[key] = {g: np.stack([np.array(c[1][s][0]) for c in calls]) for g, s in slots.items()}
    if recorder.backward:
        trace.grad_norms = {}
        order = [(layer, d) for layer in range(trace.num_layers - 1, -1, -1) for d in range(trace.num_directions)]
        for n, key in enumerate(order):
            norms = recorder.backward[n * T:(n + 1) * T]
            trace.grad_norms[key] = np.array(norms if key[1] == 1 else norms[::-1])
    trace.grad_norms = {k: trace.grad_norms[k] for k in keys} if trace.grad_norms else None


def trace_module(module, x, *, d_out: str | np.ndarray = "last", source: str = "") -> Trace:
    """Trace a :class:`~lstmkit.Recurrent` on one sequence ``x`` ``(T, input_size)``.

    ``d_out``: the gradient fed into ``out`` for the backward pass: ``"last"``
    (the loss is the sum of the last step's output, ``L = Σ out[T-1]``: how
    far back the last output reaches), an array shaped like ``out`` ``(T,
    D*P)``, or ``None`` (no backward).
    """
    from ..nn import Recurrent
    from ..utils.rnn import PackedSequence

    if not isinstance(module, Recurrent):
        raise TypeError(f"trace_module: expected a Recurrent module (LSTM, GRU, RNN, a plugin cell's Recurrent), "
                        f"got {type(module).__name__}")
    if isinstance(x, PackedSequence):
        raise ValueError(f"trace_module: x should be one sequence (seq_len, {module.input_size}), got a "
                         f"PackedSequence (trace one of unpack_sequence(x))")
    x = np.asarray(x, dtype=module.dtype)
    if x.ndim != 2 or x.shape[1] != module.input_size:
        raise ValueError(f"trace_module: x should be one sequence (seq_len, {module.input_size}), got {x.shape}")
    rnn, recorder = _recording_copy(module)
    rnn.batch_first = False
    out, _, backward = rnn.forward_train(x[:, None, :])
    trace = Trace(module.cell.name, module.num_layers, module.num_directions, x.shape[0], source=source)
    if d_out is not None:
        if isinstance(d_out, str):
            if d_out != "last":
                raise ValueError(f"d_out should be 'last', an array or None, got {d_out!r}")
            grad = np.zeros(out.shape, dtype=out.dtype)
            grad[-1] = 1.0
            trace.loss_text = "L = sum of the last step's output"
        else:
            grad = np.asarray(d_out, dtype=out.dtype)
            if grad.shape != (out.shape[0], out.shape[2]):
                raise ValueError(f"trace_module: d_out should have out's shape {(out.shape[0], out.shape[2])}, "
                                 f"got {grad.shape}")
            grad = grad[:, None, :]
            trace.loss_text = "the given d_out"
        backward(grad)
    _collect(trace, module, recorder)
    return trace


def trace_model(model, task, inputs, targets=None, *, source: str = "") -> Trace:
    """Trace a :class:`~lstmkit.SequenceModel` on one sequence and one training step's backward.

    ``inputs``: ``(T,)`` token ids or ``(T, F)`` features; ``targets``: the
    task's targets of that sequence (the loss is then the task's loss), or
    ``None`` (the loss is the sum of the outputs at the last step).  The
    model's weights and mode are left as they are.
    """
    from ..train.losses import LOSSES

    inputs = np.asarray(inputs)
    if np.issubdtype(inputs.dtype, np.floating):
        inputs = inputs.astype(model.dtype)
    batch = np.ascontiguousarray(inputs[None])
    m = copy.copy(model)
    m.rnn, recorder = _recording_copy(model.rnn)
    m.training = False
    outputs, _, backward = m.forward_train(batch)
    trace = Trace(model.rnn.cell.name, model.rnn.num_layers, model.rnn.num_directions, batch.shape[1], source=source)
    if targets is not None:
        loss, d_outputs = LOSSES[task.loss](outputs, np.asarray(targets)[None])
        trace.loss_text = f"the task's {task.loss} loss on this sequence, {loss:.4g}"
    else:
        d_outputs = np.zeros(outputs.shape, dtype=outputs.dtype)
        if outputs.ndim == 3:
            d_outputs[:, -1] = 1.0
        else:
            d_outputs[...] = 1.0
        trace.loss_text = "L = sum of the model's output at the last step"
    backward(d_outputs)
    _collect(trace, model.rnn, recorder)
    if getattr(task, "decode", None) is not None and inputs.ndim == 1:
        trace.labels = [repr(task.decode([i]))[1:-1] for i in inputs]
    return trace


def trace_run(path, input_file=None, *, checkpoint: str = "auto", split: str = "valid", index: int = 0,
              gradient_of: str = "loss") -> Trace:
    """:func:`trace_model` for a run folder (its trained weights) or a config file (the freshly initialised
    model ``lstmkit run`` would start from, with the same seed).

    The sequence is the first of ``input_file`` (read like ``lstmkit predict``
    reads it; no targets) or sequence ``index`` of the task's ``split`` (with its
    targets), cut to its length.  ``gradient_of``: ``"loss"`` (the task's loss on
    those targets) or ``"last"`` (the sum of the last step's output: how far back
    it reaches; always so for ``input_file``).  Errors are
    :class:`~lstmkit.config.errors.LstmkitError`.
    """
    if gradient_of not in ("loss", "last"):
        raise ValueError(f"gradient_of should be 'loss' or 'last', got {gradient_of!r}")
    from ..config.errors import ExitCode, LstmkitError

    path = Path(path)
    if path.is_dir():
        from ..run.session import open_run

        loaded, task, data, model, ckpt = open_run(path, checkpoint)
        source = f"trained weights from {ckpt}"
    else:
        from ..config.loader import load_config
        from ..run.session import build_model, build_task, seed_generators

        loaded = load_config(path)
        task, data = build_task(loaded)
        model = build_model(loaded, task, seed_generators(loaded.config.seed)[0])
        source = f"an untrained model: the freshly initialised weights of {path.name} (seed {loaded.config.seed})"
    if input_file is not None:
        try:
            inputs, lengths = task.read_inputs(Path(input_file))
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            raise LstmkitError(f"cannot read {input_file}: {exc}", ExitCode.RUN_FAILED) from None
        n = inputs.shape[1] if lengths is None else int(lengths[0])
        trace = trace_model(model, task, inputs[0, :n], None, source=f"{source}; input: first sequence of {input_file}")
        trace.loss_text += " (an input file has no targets)"
        return trace
    part = data.get(split)
    if part is None or len(part) == 0:
        part, split = data["train"], "train"
    if not 0 <= index < len(part):
        raise LstmkitError(f"--sequence {index}: the {split} split has {len(part)} sequences (0..{len(part) - 1})",
                           ExitCode.USAGE)
    n = part.inputs.shape[1] if part.lengths is None else int(part.lengths[index])
    targets = part.targets[index, :n] if task.target == "sequence" else part.targets[index]
    if gradient_of == "last":
        targets = None
    return trace_model(model, task, part.inputs[index, :n], targets,
                       source=f"{source}; input: {split} sequence {index}")


# -- drawing ---------------------------------------------------------------------------------
def _figure(**kwargs):
    """A new ``Figure``: through pyplot when the caller already uses pyplot (a notebook, the docs build: the
    figure then shows inline), else a standalone one on the Agg canvas (scripts, the CLI: no GUI backend)."""
    import sys

    if "matplotlib.pyplot" in sys.modules:
        return sys.modules["matplotlib.pyplot"].figure(**kwargs)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("drawing needs matplotlib: pip install matplotlib (or lstmkit[plot])") from None
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _direction_name(trace: Trace, key) -> str:
    layer, d = key
    return f"layer {layer}" + ((" backward" if d else " forward") if trace.num_directions > 1 else "")


def plot_trace(trace: Trace, max_units: int = 32):
    """A matplotlib ``Figure``: one row per (layer, direction) with heatmaps (units × time) of each gate, ``c``
    and ``h`` after each step, and a last panel with ``‖∂L/∂h_t‖`` over time per layer (log scale)."""
    keys = trace.keys()
    first = keys[0]
    panels = [("gate", g) for g in trace.gates[first]] + [("state", s) for s in trace.states[first]]
    rows = len(keys) + (1 if trace.grad_norms else 0)
    fig = _figure(figsize=(2.6 * len(panels) + 1, 2.1 * rows + 0.8), dpi=100)
    grid = fig.add_gridspec(rows, len(panels))
    for r, key in enumerate(keys):
        for col, (kind, name) in enumerate(panels):
            data = (trace.gates[key][name] if kind == "gate" else trace.states[key][name])[:, :max_units]
            ax = fig.add_subplot(grid[r, col])
            bounded = kind == "gate" and name in "ifozr"
            image = ax.imshow(data.T, aspect="auto", interpolation="nearest", cmap="viridis" if bounded else "RdBu_r",
                              vmin=0 if bounded else -max(1e-9, float(np.abs(data).max())),
                              vmax=1 if bounded else max(1e-9, float(np.abs(data).max())))
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
            ax.set_title(f"{_direction_name(trace, key)}: {name}" if col == 0 else name, fontsize=9)
            ax.set_xlabel("t", fontsize=8)
            ax.yaxis.get_major_locator().set_params(integer=True)  # units are whole: no "unit 2.5"
            if col == 0:
                units = (trace.gates[key][name] if kind == "gate" else trace.states[key][name]).shape[1]
                ax.set_ylabel("unit" if units <= max_units else f"unit (first {max_units} of {units})", fontsize=8)
            if trace.labels is not None and trace.steps <= 60:
                ax.set_xticks(range(trace.steps))
                ax.set_xticklabels(trace.labels, fontsize=6)
            ax.tick_params(labelsize=7)
    if trace.grad_norms:
        ax = fig.add_subplot(grid[len(keys), :])
        _draw_norms(ax, {_direction_name(trace, k): v for k, v in trace.grad_norms.items()})
        ax.set_title(f"‖∂L/∂h_t‖ for one training step ({trace.loss_text})", fontsize=9)
    fig.suptitle(f"{trace.cell}: {trace.source}" if trace.source else trace.cell, fontsize=9)
    fig.tight_layout()
    return fig


def _draw_norms(ax, series: dict) -> None:
    positive = any(np.any(np.asarray(v) > 0) for v in series.values())
    for label, norms in series.items():
        norms = np.asarray(norms, dtype=np.float64)
        # Exact zeros (steps the loss cannot see) are left out of a log plot rather than drawn at -inf.
        ax.plot(np.arange(len(norms)), np.where(norms > 0, norms, np.nan) if positive else norms, marker=".",
                label=label)
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("time step t")
    ax.set_ylabel("‖∂L/∂h_t‖")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def plot_grad_norms(traces: dict):
    """A ``Figure`` comparing ``‖∂L/∂h_t‖`` of the first layer's forward direction for several traces,
    ``{label: Trace}`` (e.g. an Elman RNN against an LSTM: vanishing gradients)."""
    fig = _figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    _draw_norms(ax, {label: t.grad_norms[(0, 0)] for label, t in traces.items()})
    ax.set_title("how far back the gradient reaches (layer 0)")
    fig.tight_layout()
    return fig


def save_figure(fig, path) -> None:
    """Write ``fig`` to ``path`` in the format its extension names (``.png``, ``.pdf``, ``.svg``, ...; PNG
    without one) through a temporary file beside it, then renamed.  An extension matplotlib cannot write
    is a ``ValueError`` naming the ones it can."""
    import os

    from .._atomic import atomic_open

    suffix = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    supported = fig.canvas.get_supported_filetypes()
    if suffix and suffix not in supported:
        raise ValueError(f"cannot write {path}: expected a file name ending in one of "
                         f"{', '.join('.' + k for k in sorted(supported))}, got '.{suffix}'")
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format=suffix or "png")
