"""``gradcheck``: a module's analytic gradients against float64 central differences, with a readable report.

For a loss ``L = Σ w_out ⊙ out + Σ_k w_k ⊙ state_k`` (random weights ``w``, so
every path is exercised), each element ``θ_j`` of the input, of every initial
state tensor and of every parameter is perturbed by ``±eps`` and

    numeric_j = (L(θ_j + eps) - L(θ_j - eps)) / (2 eps)

is compared with ``backward``'s analytic gradient: ``error_j = |analytic_j -
numeric_j| / max(1, |numeric_j|)``.  It runs on a float64 copy of the module
(the module itself is left as it is).  Usable from a notebook::

    report = lstmkit.testing.gradcheck(lstmkit.LSTM(3, 4, num_layers=2))
    report.ok, print(report)
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

__all__ = ["gradcheck", "GradcheckReport", "GradEntry"]


@dataclass
class GradEntry:
    """One checked tensor: its worst element ``index``, the two gradients there and their ``error``."""

    name: str
    shape: tuple[int, ...]
    error: float
    index: tuple[int, ...]
    analytic: float
    numeric: float
    ok: bool
    where: str = ""  # e.g. "gate f, unit 1" for a row of a gate-stacked weight

    def line(self) -> str:
        at = ", ".join(map(str, self.index))
        text = (f"{'ok  ' if self.ok else 'FAIL'}  {self.name:<26} {str(self.shape):<12} worst error {self.error:.1e} "
                f"at [{at}]")
        if not self.ok:
            text += f" (analytic {self.analytic:.6g}, numeric {self.numeric:.6g})"
            if self.where:
                text += f": {self.where}"
        return text


@dataclass
class GradcheckReport:
    """What :func:`gradcheck` found; ``ok`` is true when every tensor's worst error is within ``tolerance``."""

    module: str
    tolerance: float
    eps: float
    entries: list[GradEntry] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.entries)

    def __bool__(self) -> bool:  # `assert gradcheck(m)` as with torch.autograd.gradcheck's bool
        return self.ok

    @property
    def failures(self) -> list[GradEntry]:
        return [e for e in self.entries if not e.ok]

    def __getitem__(self, name: str) -> GradEntry:
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(f"no gradient {name!r}; checked: {', '.join(e.name for e in self.entries)}")

    def __str__(self) -> str:
        verdict = ("all gradients agree" if self.ok else
                   f"{len(self.failures)} of {len(self.entries)} gradients wrong: "
                   + ", ".join(e.name for e in self.failures))
        head = (f"gradcheck {self.module}: {verdict}\n"
                f"  float64 central differences (eps {self.eps:g}); error = |analytic - numeric| / max(1, |numeric|),"
                f" allowed {self.tolerance:.0e}")
        return "\n".join([head] + ["  " + e.line() for e in self.entries])

    __repr__ = __str__

    def _repr_pretty_(self, printer, cycle):
        printer.text(str(self))


def gradcheck(module, input=None, hx=None, *, batch: int = 2, seq_len: int = 3, eps: float = 1e-6,
              tolerance: float = 1e-6, seed: int = 0) -> GradcheckReport:
    """Check ``module.forward_train``'s backward (input, initial state, every parameter) by central differences.

    ``module``: a :class:`~lstmkit.Recurrent` (``LSTM``, ``GRU``, ``RNN``, any
    cell), a :class:`~lstmkit.RecurrentCell`, or a :class:`~lstmkit.SequenceModel`
    (what ``lstmkit run`` trains; its parameters only).  ``input``: as the module takes
    it (an array or a ``PackedSequence``); default a random ``(seq_len, batch,
    input_size)`` batch (``(batch, input_size)`` for a cell).  ``hx``: default a
    random non-zero state, so its gradient is checked too.  Nothing given is
    modified: the check runs on float64 copies.  Cost: two forwards per
    element checked, so use small sizes.
    """
    from ..model import SequenceModel
    from ..nn import Recurrent, RecurrentCell
    from ..utils.rnn import PackedSequence

    if isinstance(module, SequenceModel):
        return _check_model(module, input, batch, seq_len, eps, tolerance, seed)
    if not isinstance(module, (Recurrent, RecurrentCell)):
        raise TypeError(f"gradcheck: expected a Recurrent module (LSTM, GRU, RNN, ...), a RecurrentCell or a "
                        f"SequenceModel, got {type(module).__name__}")
    rng = np.random.default_rng(seed)
    m = _float64_copy(module)
    is_cell = isinstance(m, RecurrentCell)
    names = m.cell.state_names
    if input is None:
        if is_cell:
            shape = (batch, m.input_size)
        else:
            shape = (batch, seq_len, m.input_size) if m.batch_first else (seq_len, batch, m.input_size)
        input = rng.standard_normal(shape)
    if isinstance(input, PackedSequence):
        x = np.array(input.data, dtype=np.float64)
        run_input = input._replace(data=x)
        rows = int(input.batch_sizes[0])
    else:
        x = np.array(input, dtype=np.float64)
        run_input = x
        unbatched = x.ndim == (1 if is_cell else 2)
        rows = None if unbatched else x.shape[0 if is_cell or m.batch_first else 1]
    if hx is None:
        widths = m.cell.state_sizes(m.hidden_size, 0 if is_cell else m.proj_size)
        lead = () if is_cell else (m.num_layers * m.num_directions,)
        states = [0.5 * rng.standard_normal(lead + (() if rows is None else (rows,)) + (w,)) for w in widths]
    else:
        states = [np.array(s, dtype=np.float64) for s in (hx if isinstance(hx, (tuple, list)) else (hx,))]
    hx_arg = tuple(states) if len(names) > 1 else states[0]

    def run(train: bool):
        if is_cell:
            result = m.forward_train(run_input, hx_arg) if train else (m(run_input, hx_arg), None)
            out, state, backward = None, result[0], result[1]
        else:
            out, state, backward = m.forward_train(run_input, hx_arg) if train else (*m(run_input, hx_arg), None)
        return out, _parts(state), backward

    out, state, backward = run(train=True)
    w_out = None if out is None else rng.standard_normal(_data(out).shape)
    w_state = [rng.standard_normal(s.shape) for s in state]
    d_state = tuple(w_state) if len(names) > 1 else w_state[0]
    if is_cell:
        d_x, d_hx, d_params = backward(d_state)
    else:
        d_out = w_out if not isinstance(out, PackedSequence) else out._replace(data=w_out)
        d_x, d_hx, d_params = backward(d_out, d_state)

    def loss() -> float:
        o, st, _ = run(train=False)
        value = sum(float((s * w).sum()) for s, w in zip(st, w_state))
        return value + (0.0 if o is None else float((_data(o) * w_out).sum()))

    from ..testing import numeric_gradient

    from .shapes import gate_names

    gates = gate_names(m.cell)
    report = GradcheckReport(repr(module), tolerance, eps)
    checked = [("input", _data(d_x), x)]
    checked += [(f"{n}_0", d, s) for n, d, s in zip(names, _parts(d_hx), states)]
    checked += [(name, d_params[name], value) for name, value in m.named_parameters()]
    for name, analytic, target in checked:
        numeric = numeric_gradient(loss, target, eps)
        entry = _entry(name, np.asarray(analytic, dtype=np.float64), numeric, tolerance, gates, m.hidden_size)
        if not entry.ok and not entry.where and len(entry.index) >= 2:
            entry.where = _position(m, name, entry.index, is_cell, isinstance(run_input, PackedSequence))
        report.entries.append(entry)
    return report


def _position(m, name: str, index: tuple, is_cell: bool, packed: bool) -> str:
    """Words for an index of the input or of an initial state: which time step, which sequence, which layer."""
    if name == "input":
        if is_cell or packed:
            return f"row {index[0]}" + (" of the packed data" if packed else "")
        if len(index) == 2:
            return f"time step {index[0]}"
        t, b = (index[1], index[0]) if m.batch_first else (index[0], index[1])
        return f"time step {t}, sequence {b}"
    if is_cell:
        return f"sequence {index[0]}"
    layer, direction = divmod(index[0], m.num_directions)
    return f"layer {layer}" + (f", {'backward' if direction else 'forward'} direction" if m.num_directions > 1 else "")


def _check_model(model, inputs, batch, seq_len, eps, tolerance, seed) -> GradcheckReport:
    """:func:`gradcheck` of a :class:`~lstmkit.SequenceModel`: every parameter (embedding, recurrent stack,
    head) for ``L = Σ w ⊙ outputs``; its backward returns parameter gradients only, so the input is not checked."""
    from ..testing import numeric_gradient

    from .shapes import gate_names

    rng = np.random.default_rng(seed)
    m = copy.copy(model)
    for name in ("embedding", "rnn", "head"):
        if getattr(model, name) is not None:
            setattr(m, name, _float64_copy(getattr(model, name)))
    m._dtype, m.training = np.dtype(np.float64), False
    if inputs is None:
        inputs = (rng.integers(0, m.vocab_size, (batch, seq_len)) if m.embedding is not None
                  else rng.standard_normal((batch, seq_len, m.input_size)))
    inputs = np.array(inputs, dtype=np.int64 if m.embedding is not None else np.float64)
    outputs, _, backward = m.forward_train(inputs)
    w = rng.standard_normal(outputs.shape)
    grads = backward(w)
    report = GradcheckReport(repr(model).splitlines()[0].rstrip("(") + " (parameters only)", tolerance, eps)
    gates = gate_names(m.rnn.cell)
    for name, value in m.named_parameters():
        numeric = numeric_gradient(lambda: float((m(inputs) * w).sum()), value, eps)
        report.entries.append(_entry(name, np.asarray(grads[name], dtype=np.float64), numeric, tolerance,
                                     gates, m.rnn.hidden_size))
    return report


def _entry(name, analytic, numeric, tolerance, gates, hidden) -> GradEntry:
    if analytic.shape != numeric.shape:
        return GradEntry(name, numeric.shape, float("inf"), (), float("nan"), float("nan"), False,
                         f"the analytic gradient has shape {analytic.shape}, expected {numeric.shape}")
    error = np.abs(analytic - numeric) / np.maximum(1.0, np.abs(numeric))
    error = np.where(np.isfinite(error), error, np.inf)
    index = np.unravel_index(int(np.argmax(error)), error.shape) if error.size else ()
    index = tuple(int(i) for i in index)
    worst = float(error[index]) if error.size else 0.0
    where = ""
    base = name.rsplit(".", 1)[-1]  # "rnn.weight_ih_l0" in a SequenceModel
    if gates and len(gates) > 1 and base.startswith(("weight_ih", "weight_hh", "bias_ih", "bias_hh")) and index:
        if numeric.shape[0] == len(gates) * hidden:
            where = f"gate {gates[index[0] // hidden]}, unit {index[0] % hidden}"
    return GradEntry(name, numeric.shape, worst, index, float(analytic[index]) if error.size else 0.0,
                     float(numeric[index]) if error.size else 0.0, worst <= tolerance, where)


def _float64_copy(module):
    """A copy of ``module`` with its own float64 parameters, in eval mode (dropout would differ between
    the perturbed forwards); the backend and cell are shared (deepcopy cannot copy an array module)."""
    m = copy.copy(module)
    object.__setattr__(m, "_parameters", {k: v.astype(np.float64) for k, v in module.named_parameters()})
    m._dtype = np.dtype(np.float64)
    m.training = False
    return m


def _parts(state) -> list[np.ndarray]:
    return list(state) if isinstance(state, (tuple, list)) else [state]


def _data(value) -> np.ndarray:
    return value.data if hasattr(value, "batch_sizes") else value
