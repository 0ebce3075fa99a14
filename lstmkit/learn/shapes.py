"""Every tensor of a recurrent module with its shape and what each dimension means.

The shapes come from a real run of :class:`lstmkit.Recurrent` (any registered
cell, plugins included), not from a formula: the module is built, run on a zero
input with ``hx=None`` and again with an explicit zero ``hx`` of the reported
``h_0``/``c_0`` shapes, and the arrays it holds and returns are measured.
Notation: ``T`` seq_len, ``B`` batch, ``I`` input_size, ``H`` hidden_size,
``P`` proj_size or H (the width of ``h``), ``D`` 2 if bidirectional else 1,
``L`` num_layers, ``G`` num_gates.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["TensorShape", "ShapeReport", "describe_shapes", "gate_names"]


@dataclass
class TensorShape:
    """One tensor: ``name``, ``role`` (parameter/input/state/output), ``shape`` and one meaning per dimension."""

    name: str
    role: str
    shape: tuple[int, ...]
    dims: list[str]
    note: str = ""


@dataclass
class ShapeReport:
    """What :func:`describe_shapes` measured; ``str()`` is the ``lstmkit shapes`` table, ``to_json()`` its ``--json``."""

    module: str
    settings: dict
    tensors: list[TensorShape] = field(default_factory=list)

    def __getitem__(self, name: str) -> TensorShape:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(f"no tensor {name!r}; there are: {', '.join(t.name for t in self.tensors)}")

    def to_json(self) -> dict:
        return {"module": self.module, "settings": self.settings,
                "tensors": [{**asdict(t), "shape": list(t.shape)} for t in self.tensors]}

    def __str__(self) -> str:
        s = self.settings
        head = (f"{self.module}\nshapes measured on a real run: "
                + ("unbatched, " if s["unbatched"] else f"batch {s['batch']}, ")
                + f"seq_len {s['seq_len']}, hx=None (zeros) and an explicit zero hx")
        width = max(len(t.name) for t in self.tensors) + 2
        swidth = max(len(str(t.shape)) for t in self.tensors) + 2
        lines, role = [head], None
        for t in self.tensors:
            if t.role != role:
                role = t.role
                lines.append(f"\n{_ROLE_TITLES[role]}")
            lines.append(f"  {t.name:<{width}}{str(t.shape):<{swidth}}"
                         + "; ".join(f"{n} = {d}" for n, d in zip(t.shape, t.dims)))
            if t.note:
                lines.append(f"  {'':<{width}}{'':<{swidth}}({t.note})")
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle):  # IPython shows the table
        printer.text(str(self))


_ROLE_TITLES = {"parameter": "parameters (l = layer, _reverse = the backward direction):",
                "input": "input:", "state": "states (index of the first dimension = layer * D + direction):",
                "output": "outputs:"}


def gate_names(cell) -> list[str] | None:
    """The gate blocks of ``weight_ih``'s rows in order (``["i", "f", "g", "o"]`` for LSTM), or ``None`` if unknown."""
    from ..cells import GRUCellType, LSTMCellType, RNNReluCellType, RNNTanhCellType

    if isinstance(cell, LSTMCellType):
        return ["i", "f", "g", "o"]
    if isinstance(cell, GRUCellType):
        return ["r", "z", "n"]
    if isinstance(cell, (RNNTanhCellType, RNNReluCellType)):
        return ["h"]
    return None


def describe_shapes(cell: str = "lstm", input_size: int = 10, hidden_size: int = 20, num_layers: int = 1, *,
                    bidirectional: bool = False, batch_first: bool = False, proj_size: int = 0, bias: bool = True,
                    batch: int = 3, seq_len: int = 5, unbatched: bool = False,
                    cell_options: dict | None = None) -> ShapeReport:
    """Build ``Recurrent(cell, input_size, hidden_size, num_layers, ...)``, run it, report every tensor's shape.

    ``batch`` is ignored when ``unbatched`` (input ``(T, I)``).  Raises what the
    module raises for invalid arguments (PyTorch's messages).
    """
    from ..nn import Recurrent

    for name, value in (("batch", batch), ("seq_len", seq_len)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} should be a positive integer, got {value!r}")
    module = Recurrent(cell, input_size, hidden_size, num_layers, bias, batch_first, 0.0, bidirectional, proj_size,
                       seed=0, cell_options=cell_options)
    if unbatched:
        shape = (seq_len, input_size)
    else:
        shape = (batch, seq_len, input_size) if batch_first else (seq_len, batch, input_size)
    x = np.zeros(shape, dtype=module.dtype)
    out, state_n = module(x)
    states_n = list(state_n) if isinstance(state_n, tuple) else [state_n]
    hx = [np.zeros_like(s) for s in states_n]
    out2, _ = module(x, tuple(hx) if len(hx) > 1 else hx[0])  # the zero state of these shapes is accepted
    assert out2.shape == out.shape

    cell_type = module.cell
    D, L, H = module.num_directions, num_layers, hidden_size
    P = cell_type.state_sizes(hidden_size, proj_size)[0]
    gates = gate_names(cell_type)
    G = cell_type.num_gates
    rows = (f"{G} gate blocks [{'|'.join(gates) if gates else '...'}] × hidden_size {H}" if G > 1
            else "hidden_size")
    p_name = "proj_size" if proj_size else "hidden_size"
    settings = dict(cell=cell_type.name, input_size=input_size, hidden_size=hidden_size, num_layers=num_layers,
                    bidirectional=bidirectional, batch_first=batch_first, proj_size=proj_size, bias=bias,
                    batch=None if unbatched else batch, seq_len=seq_len, unbatched=unbatched)
    report = ShapeReport(_module_label(module), settings)

    for name, value in module.named_parameters():
        m = re.fullmatch(r"(\w+?)_l(\d+)(_reverse)?", name)
        base, layer = (m.group(1), int(m.group(2))) if m else (name, 0)
        in_width = ("input_size" if layer == 0 else
                    f"D {D} × {p_name} {P} (layer {layer - 1}'s output, both directions)" if D > 1
                    else f"{p_name} (layer {layer - 1}'s output)")
        meaning = {
            "weight_ih": [rows, in_width],
            "weight_hh": [rows, f"{p_name} (h of the previous step)"],
            "bias_ih": [rows], "bias_hh": [rows],
            "weight_hr": ["proj_size", "hidden_size"],
        }.get(base)
        note = ""
        if meaning is None or len(meaning) != value.ndim:
            meaning = ["?"] * value.ndim  # a plugin's own parameter: its meaning is the cell's business
            note = f"a parameter of the {cell_type.name!r} cell"
        report.tensors.append(TensorShape(name, "parameter", tuple(value.shape), meaning, note))

    in_dims = (["seq_len", "input_size"] if unbatched else
               ["batch", "seq_len", "input_size"] if batch_first else ["seq_len", "batch", "input_size"])
    report.tensors.append(TensorShape("input", "input", tuple(x.shape), in_dims,
                                      "batch_first=True puts the batch first" if batch_first else ""))
    names = cell_type.state_names
    first = f"num_layers {L} × D {D}" if D > 1 else "num_layers"
    for when, arrays in (("0", hx), ("n", states_n)):
        for sname, arr in zip(names, arrays):
            dims = [first] + ([] if unbatched else ["batch"]) + [p_name if sname == names[0] else "hidden_size"]
            note = ("zeros when hx is None" if when == "0" else
                    f"{sname} after each direction's last step; the backward direction ends at t = 0"
                    if D > 1 else f"{sname} after the last step")
            if batch_first and not unbatched:
                note += "; batch_first never changes it"
            report.tensors.append(TensorShape(f"{sname}_{when}", "state", tuple(arr.shape), dims, note))
    width = f"D {D} × {p_name} {P}" if D > 1 else p_name
    out_dims = (["seq_len", width] if unbatched else
                ["batch", "seq_len", width] if batch_first else ["seq_len", "batch", width])
    report.tensors.append(TensorShape("out", "output", tuple(out.shape), out_dims,
                                      f"{names[0]} of the last layer at every step"
                                      + (", [forward | backward] halves" if D > 1 else "")))
    report.tensors.sort(key=lambda t: ["parameter", "input", "state", "output"].index(t.role))
    return report


def _module_label(module) -> str:
    """``LSTM(10, 20, num_layers=3)`` for PyTorch's cells, the ``Recurrent(...)`` repr for the others."""
    face = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}.get(module.cell.torch_mode)
    if face is None:
        return repr(module)
    relu = ", nonlinearity='relu'" if module.cell.torch_mode == "RNN_RELU" else ""
    return f"{face}({module.extra_repr()}{relu})"
