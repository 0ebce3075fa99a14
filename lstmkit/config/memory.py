"""How much memory a run needs, estimated from its config before anything large is allocated.

``estimate(cfg, task)`` adds up, in bytes of ``runtime.dtype``:

- parameters ``N`` (embedding, every layer and direction of the cell's
  ``parameter_shapes``, the linear head), their gradients (``N`` again) and
  the optimizer's state (Adam/AdamW: ``2N``; SGD with momentum: ``N``);
- the activations backpropagation through time keeps for one step of
  ``B = min(batch_size, training sequences)`` sequences of ``T`` steps
  (``T = min(tbptt, sequence length)``): per layer and direction, for every
  step, its input, the hoisted input projection and its gradient (``2G``),
  the gates (``G``), the states and their gradients (``3·S``) and the output
  (``P``), plus the embedding and head outputs; or, if larger, one
  evaluation batch (``max(batch_size, 256)`` sequences, forward only).
  With ``training.recompute`` (segments of ``k`` steps) the per-step terms
  are kept for one segment of the largest layer only; every step keeps each
  layer's input and output (``width + P``) and one layer's gradients of them,
  and every ``k``-th step the states (``S``).

It is an estimate (NumPy's temporaries come and go), meant to refuse what
cannot fit — ``hidden_size: 100000`` needs hundreds of GiB — with the
numbers, instead of an allocation error half-way.  ``check_memory`` raises
:class:`ConfigError` when the estimate exceeds :func:`available_memory`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import ConfigError, ConfigIssue

__all__ = ["MemoryEstimate", "estimate", "available_memory", "check_memory", "format_bytes"]

EVAL_BATCH = 256  # evaluate_split's batch: max(batch_size, 256)


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``; beyond EiB, ``'3.2e+12 EiB'``."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024:
            return f"{n:.0f} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB" if n < 1e6 else f"{n:.2g} EiB"


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs, by part (see the module docstring for the formula)."""

    parameters: int  # number of parameter values
    itemsize: int
    optimizer_copies: int  # optimizer state, in multiples of the parameters
    training_bytes: int  # activations kept for one step of backpropagation through time
    evaluation_bytes: int  # activations of one evaluation batch (forward only)
    steps: int
    batch: int
    eval_batch: int

    @property
    def activation_bytes(self) -> int:
        return max(self.training_bytes, self.evaluation_bytes)

    @property
    def parameter_bytes(self) -> int:
        return self.parameters * self.itemsize

    @property
    def total(self) -> int:
        return self.parameter_bytes * (2 + self.optimizer_copies) + self.activation_bytes

    def describe(self) -> str:
        """One line: the total and its parts."""
        return (f"about {format_bytes(self.total)}: parameters {format_bytes(self.parameter_bytes)} "
                f"({self.parameters:,} values) and as much again for their gradients, optimizer state "
                f"{format_bytes(self.parameter_bytes * self.optimizer_copies)}, activations "
                f"{format_bytes(self.activation_bytes)} (the larger of backpropagation through {self.steps} "
                f"steps of {self.batch} sequences, {format_bytes(self.training_bytes)}, and an evaluation batch "
                f"of {self.eval_batch}, {format_bytes(self.evaluation_bytes)})")


def _layer_widths(cell, input_size: int, m) -> tuple[int, list[tuple[int, int, int, int, int]]]:
    """``(parameters, [(input width, G, sum of state widths, output width P, how many such layers)])``:
    layer 0, then layers 1.. (all alike), so a huge ``num_layers`` costs nothing to estimate."""
    directions = 2 if m.bidirectional else 1
    count, layers, width = 0, [], input_size
    for repeat in (1, m.num_layers - 1):
        if repeat < 1:
            break
        shapes = dict(cell.parameter_shapes(width, m.hidden_size, m.proj_size))
        for shape in shapes.values():
            n = 1
            for s in shape:
                n *= s
            count += n * directions * repeat
        out = m.proj_size or m.hidden_size
        layers.append((width, shapes["weight_ih"][0], sum(cell.state_sizes(m.hidden_size, m.proj_size)), out,
                       repeat))
        width = out * directions
    return count, layers


def estimate(cfg, task, data=None) -> MemoryEstimate:
    """The memory a run of ``cfg`` (a validated :class:`~lstmkit.config.schema.Config`) on ``task`` needs.

    ``data`` defaults to ``task.data()``: its training split gives the batch and the sequence length.
    """
    from .._recompute import segment_length
    from ..registry import get_cell

    m, t = cfg.model, cfg.training
    data = task.data() if data is None else data
    train = data["train"]
    seq_len = int(train.inputs.shape[1]) if getattr(train.inputs, "ndim", 0) >= 2 else 1
    steps = min(t.tbptt, seq_len) if t.tbptt else seq_len
    batch = max(1, min(t.batch_size, len(train)))
    tokens = task.input_kind == "tokens"
    embed = (m.embedding_size or m.hidden_size) if tokens else 0
    cell = get_cell(m.cell, dict(m.cell_options) or None)
    count, layers = _layer_widths(cell, embed if tokens else int(task.input_size or 1), m)
    directions = 2 if m.bidirectional else 1
    head_in, out = layers[-1][3] * directions, int(task.output_size)
    count += head_in * out + out + (int(task.vocab_size or 0) * embed if tokens else 0)
    per_step = sum(n * directions * (width + 3 * gates + 3 * states + p) for width, gates, states, p, n in layers)
    segment = segment_length(t.recompute, steps)
    if segment is not None:  # see the module docstring
        kept = sum(n * directions * (width + p) for width, _, _, p, n in layers)
        one_layer = max(directions * (width + 3 * gates + 3 * states + p) for width, gates, states, p, _ in layers)
        entries = -(-steps // segment) * sum(n * directions * states for _, _, states, _, n in layers)
        per_step = kept + max(directions * (width + p) for width, _, _, p, _ in layers)
        per_step += (segment * one_layer + entries) / steps
    head_steps = steps if task.target == "sequence" else 1
    training = int(batch * (steps * (per_step + 2 * embed) + head_steps * 2 * out))
    eval_batch = max(t.batch_size, EVAL_BATCH)
    evaluation = eval_batch * (seq_len * sum(n * directions * (gates + 2 * p) for _, gates, _, p, n in layers)
                               + (seq_len if task.target == "sequence" else 1) * out)
    itemsize = 4 if cfg.runtime.dtype == "float32" else 8
    optimizer = t.optimizer
    copies = 2 if optimizer.name in ("adam", "adamw") else int(getattr(optimizer, "momentum", 0) > 0)
    return MemoryEstimate(count, itemsize, copies, training * itemsize, evaluation * itemsize, steps, batch,
                          eval_batch)


def available_memory() -> int | None:
    """Bytes this process may still allocate: the smaller of the system's available memory and the
    cgroup's limit minus its usage (a container); ``None`` when neither can be read."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",  # cgroup v1
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            if limit != "max" and int(limit) < 2**60:  # v1 writes a huge number for "no limit"
                with open(usage_file) as f:
                    found.append(int(limit) - int(f.read().strip()))
            break
        except (OSError, ValueError):
            continue
    return min(found) if found else None


def check_memory(loaded, task, data=None, available: int | None = None) -> MemoryEstimate:
    """:func:`estimate`, refused with a :class:`ConfigError` (exit 3) when it exceeds the available memory
    (``available``, default :func:`available_memory`; unknown: never refused)."""
    from .._recompute import segment_length

    cfg = loaded.config
    need = estimate(cfg, task, data)
    available = available_memory() if available is None else available
    if available is None or need.total <= available:
        return need
    weights = need.parameter_bytes * (2 + need.optimizer_copies)
    by_model = weights >= need.activation_bytes or need.evaluation_bytes > need.training_bytes
    size = "num_layers" if cfg.model.num_layers > 16 else "hidden_size"  # an unusual depth is the likelier slip
    key = ("model", size) if by_model else ("training", "batch_size")
    advice = ("lower model.hidden_size or model.num_layers" if key[0] == "model" else
              "lower training.batch_size" + (" or training.tbptt" if cfg.training.tbptt or need.steps > 1 else "")
              + (", or set training.recompute: auto" if cfg.training.recompute is False
                 and segment_length("auto", need.steps) is not None else ""))
    message = (f"the run needs {need.describe()}, but {format_bytes(available)} of memory is available here; "
               f"{advice}")
    raise ConfigError([ConfigIssue(".".join(key), message, loaded.where(key))],
                      str(loaded.path) if loaded.path else None)
