"""Exercises that grade themselves: the learner writes NumPy, lstmkit checks it against its reference.

Each ``check_*`` function calls the learner's function on several float64
cases, compares with lstmkit's modules (``LSTMCell``, ``LSTM``, ``GRUCell``,
``pack_padded_sequence``) and returns an :class:`ExerciseResult`: ``ok``, and a
diagnosis that says what is wrong — which output, which gate block, which time
step, which shape — and, for the usual slips (gate order, a missing bias,
sigmoid on ``g``, packing batch by batch), what the slip is.

=============================  =================================================================
``check_lstm_step(fn)``        ``fn(x, h, c, W_ih, W_hh, b_ih, b_hh) -> (h_new, c_new)``
``check_lstm_forward(fn)``     ``fn(x, h0, c0, W_ih, W_hh, b_ih, b_hh) -> (out, (h_n, c_n))``
``check_lstm_step_backward``   ``fn(dh_new, dc_new, x, h, c, W_ih, W_hh, b_ih, b_hh) -> dict`` of
                               ``dx, dh, dc, dW_ih, dW_hh, db_ih, db_hh``
``check_lstm_backward(fn)``    ``fn(d_out, x, h0, c0, W_ih, W_hh, b_ih, b_hh) -> dict`` of
                               ``dx, dh0, dc0, dW_ih, dW_hh, db_ih, db_hh`` (through time)
``check_gru_step(fn)``         ``fn(x, h, W_ih, W_hh, b_ih, b_hh) -> h_new``
``check_pack(fn)``             ``fn(padded, lengths) -> (data, batch_sizes)``
=============================  =================================================================

Shapes: ``x (B, I)`` (``(T, B, I)`` for a sequence), ``h, c (B, H)``,
``W_ih (G*H, I)``, ``W_hh (G*H, H)``, ``b_* (G*H,)`` with PyTorch's gate
blocks ``[i|f|g|o]`` (LSTM, G = 4) and ``[r|z|n]`` (GRU, G = 3);
``padded (T, B, F)`` time-major with ``lengths`` in any order.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["ExerciseResult", "check_lstm_step", "check_lstm_forward", "check_lstm_step_backward",
           "check_lstm_backward", "check_gru_step", "check_pack"]

TOL = 1e-6  # a right float64 answer agrees to ~1e-15, a float32 one to ~1e-7; slips differ by ~1e-2 and more
LSTM_GATES, GRU_GATES = "ifgo", "rzn"


@dataclass
class ExerciseResult:
    """The verdict on one exercise: ``ok`` and, if not, ``problem`` (what is wrong, in words)."""

    exercise: str
    cases: int
    reference: str
    problem: str | None = None
    case: str = ""
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def __bool__(self) -> bool:  # `assert check_lstm_step(my_step)` fails on a wrong answer
        return self.ok

    def __str__(self) -> str:
        if self.ok:
            return f"{self.exercise}: correct - {self.cases} cases agree with {self.reference}."
        lines = [f"{self.exercise}: not yet - {self.case}:", f"  {self.problem}"]
        return "\n".join(lines + [f"  {d}" for d in self.details])

    __repr__ = __str__

    def _repr_pretty_(self, printer, cycle):
        printer.text(str(self))


class _Wrong(Exception):
    """Raised inside a check with the diagnosis of the first failing case."""

    def __init__(self, problem: str, *details: str):
        super().__init__(problem)
        self.problem, self.details = problem, [d for d in details if d]


# -- helpers shared by every exercise ------------------------------------------------------
def _grade(name: str, reference: str, cases: list[tuple[str, dict]], run_case) -> ExerciseResult:
    for label, case in cases:
        try:
            run_case(case)
        except _Wrong as wrong:
            return ExerciseResult(name, len(cases), reference, wrong.problem, label, wrong.details)
    return ExerciseResult(name, len(cases), reference)


def _call(fn: Callable, args: dict):
    """``fn(*args.values())``, with an exception or an in-place change of an argument reported as a problem."""
    copies = {k: np.array(v, copy=True) for k, v in args.items()}
    try:
        result = fn(*args.values())
    except Exception as exc:  # the learner's code: any error is a diagnosis, not a crash
        shapes = ", ".join(f"{k} {np.shape(v)}" for k, v in args.items())
        raise _Wrong(f"your function raised {type(exc).__name__}: {exc}", f"it was called with {shapes}.",
                     _layout_hint(args)) from None
    for k, v in args.items():
        if not np.array_equal(np.asarray(v), copies[k]):
            raise _Wrong(f"your function changed its argument {k} in place; leave the arguments as they are and "
                         f"return new arrays (c_new = f * c + i * g, not c *= ...; sorted(lengths), not lengths.sort())")
    return result


def _layout_hint(args: dict) -> str:
    if "W_ih" not in args:
        return ""
    rows, cols = np.shape(args["W_ih"])
    return (f"W_ih is ({rows}, {cols}) = (gates x hidden_size, input_size), PyTorch's layout: one row per gate unit, "
            f"so the gates are x @ W_ih.T + b_ih + h @ W_hh.T + b_hh.")


def _array(value, what: str, shape: tuple, meaning: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        hint = "; np.stack(...) makes one array of a list of arrays" if isinstance(value, (list, tuple)) else ""
        raise _Wrong(f"{what} should be a numpy array of shape {shape} = {meaning}, got {type(value).__name__}{hint}")
    if value.shape != shape:
        hint = "; transposed?" if value.shape == shape[::-1] and len(shape) == 2 else ""
        raise _Wrong(f"{what} has shape {value.shape}, expected {shape} = {meaning}{hint}")
    if not np.all(np.isfinite(value)):
        raise _Wrong(f"{what} has non-finite values (nan or inf)")
    return value.astype(np.float64)


def _close(a, b) -> bool:
    return a.shape == b.shape and float(np.max(np.abs(a - b), initial=0.0)) <= TOL * max(1.0, float(np.max(np.abs(b), initial=0.0)))


def _where(a, b) -> str:
    err = np.abs(a - b)
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(err)), err.shape))
    return f"largest difference {float(err[index]):.3g} at index {list(index)} (yours {a[index]:.6g}, expected {b[index]:.6g})"


def _params(rng, gates: int, I: int, H: int) -> dict:
    k = 1 / np.sqrt(H)
    return {"W_ih": rng.uniform(-k, k, (gates * H, I)) * 3, "W_hh": rng.uniform(-k, k, (gates * H, H)) * 3,
            "b_ih": rng.uniform(-1, 1, gates * H), "b_hh": rng.uniform(-1, 1, gates * H)}


def _cell(kind: str, p: dict):
    """lstmkit's float64 ``LSTMCell``/``GRUCell`` with the parameters ``p`` (the reference)."""
    import lstmkit

    H = p["W_hh"].shape[1]
    cell = getattr(lstmkit, kind)(p["W_ih"].shape[1], H, dtype=np.float64, backend="numpy")
    cell.load_state_dict({"weight_ih": p["W_ih"], "weight_hh": p["W_hh"], "bias_ih": p["b_ih"], "bias_hh": p["b_hh"]})
    return cell


_SIZES = [("batch 2, input_size 3, hidden_size 4", 2, 3, 4), ("batch 1, input_size 2, hidden_size 3", 1, 2, 3),
          ("batch 3, input_size 5, hidden_size 2", 3, 5, 2)]


def _step_cases(gates: int, states: int) -> list[tuple[str, dict]]:
    rng = np.random.default_rng(9)
    cases = []
    for label, B, I, H in _SIZES:
        case = {"x": rng.standard_normal((B, I)), "h": rng.standard_normal((B, H)) * 0.5}
        if states == 2:
            case["c"] = rng.standard_normal((B, H))
        cases.append((label, {**case, **_params(rng, gates, I, H)}))
    return cases


# -- the LSTM step ---------------------------------------------------------------------------
def _sig(z):
    return 0.5 * np.tanh(0.5 * z) + 0.5


def _lstm_variant(a: dict, blocks=(0, 1, 2, 3), acts="sstS", bias_ih=True, bias_hh=True, tanh_c=True,
                  new_c=lambda i, f, g, c: f * c + i * g):
    """A deliberately wrong LSTM step, for recognising a learner's slip (``acts``: s sigmoid, t tanh)."""
    H = a["h"].shape[1]
    z = a["x"] @ a["W_ih"].T + a["h"] @ a["W_hh"].T + (a["b_ih"] if bias_ih else 0) + (a["b_hh"] if bias_hh else 0)
    pre = [z[:, k * H:(k + 1) * H] for k in blocks]
    i, f, g, o = [(_sig if act in "sS" else np.tanh)(p) for act, p in zip(acts.replace("S", "s"), pre)]
    c_new = new_c(i, f, g, a["c"])
    return o * (np.tanh(c_new) if tanh_c else c_new), c_new


def _lstm_slips():
    slips = []
    for perm in itertools.permutations(range(4)):
        if perm == (0, 1, 2, 3):
            continue
        layout = ["?"] * 4
        for gate, block in zip(LSTM_GATES, perm):
            layout[block] = gate
        layout = "|".join(layout)
        karpathy = " (karpathy's IFOG order)" if layout == "i|f|o|g" else ""
        slips.append((dict(blocks=perm),
                       f"the gate blocks are in the wrong order: you read the rows as [{layout}]{karpathy}; PyTorch "
                       f"stacks the rows of W_ih, W_hh, b_ih and b_hh as [i|f|g|o]: rows 0:H are i, H:2H f, 2H:3H g, "
                       f"3H:4H o"))
    gates = "gates = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh"
    slips += [
        (dict(bias_hh=False), f"bias_hh is missing: PyTorch adds two bias vectors, {gates}"),
        (dict(bias_ih=False), f"bias_ih is missing: PyTorch adds two bias vectors, {gates}"),
        (dict(bias_ih=False, bias_hh=False), f"both biases are missing: {gates}"),
        (dict(acts="ssss"), "gate g uses sigmoid: the candidate g = tanh(...) (values in (-1, 1)); only i, f and o "
                            "are sigmoids"),
        (dict(acts="tstS"), "gate i uses tanh: i, f and o are sigmoids (values in (0, 1)); only g is a tanh"),
        (dict(acts="sttS"), "gate f uses tanh: i, f and o are sigmoids (values in (0, 1)); only g is a tanh"),
        (dict(acts="sstt"), "gate o uses tanh: i, f and o are sigmoids (values in (0, 1)); only g is a tanh"),
        (dict(tanh_c=False), "h_new = o * c_new: the tanh is missing, h_new = o * tanh(c_new)"),
        (dict(new_c=lambda i, f, g, c: f * c + g), "c_new forgets the input gate: c_new = f * c + i * g"),
        (dict(new_c=lambda i, f, g, c: c + i * g), "c_new forgets the forget gate: c_new = f * c + i * g"),
        (dict(new_c=lambda i, f, g, c: i * c + f * g), "i and f are swapped in c_new: c_new = f * c + i * g "
                                                       "(f decides how much of c to keep)"),
    ]
    return slips


def _diagnose_lstm(a: dict, h, c, h_ref, c_ref):
    for kwargs, message in _lstm_slips():
        h_v, c_v = _lstm_variant(a, **kwargs)
        if _close(h, h_v) and _close(c, c_v):
            raise _Wrong(message)
    if _close(h, c_ref) and _close(c, h_ref):
        raise _Wrong("h_new and c_new are swapped: return (h_new, c_new)")
    if _close(c, c_ref):
        raise _Wrong("c_new is right but h_new is wrong, so i, f and g are right: look at gate o and "
                     "h_new = o * tanh(c_new)", _where(h, h_ref))
    raise _Wrong("c_new is wrong (and so h_new): look at gates i, f, g and c_new = f * c + i * g",
                 "c_new: " + _where(c, c_ref), "h_new: " + _where(h, h_ref))


def check_lstm_step(fn: Callable) -> ExerciseResult:
    """Grade ``fn(x, h, c, W_ih, W_hh, b_ih, b_hh) -> (h_new, c_new)``, one LSTM step (PyTorch's equations)::

        gates = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh        # (B, 4H), blocks [i|f|g|o]
        i, f, o = sigmoid(...), g = tanh(...);  c_new = f * c + i * g;  h_new = o * tanh(c_new)
    """

    def run(a):
        B, H = a["h"].shape
        result = _call(fn, a)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise _Wrong(f"your function should return (h_new, c_new), got {type(result).__name__}"
                         + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else ""))
        h = _array(result[0], "h_new", (B, H), "(batch, hidden_size)")
        c = _array(result[1], "c_new", (B, H), "(batch, hidden_size)")
        h_ref, c_ref = _cell("LSTMCell", a)(a["x"], (a["h"], a["c"]))
        if not (_close(h, h_ref) and _close(c, c_ref)):
            _diagnose_lstm(a, h, c, h_ref, c_ref)

    return _grade("check_lstm_step", "lstmkit.LSTMCell", _step_cases(4, 2), run)


# -- the LSTM over a sequence ------------------------------------------------------------------
def check_lstm_forward(fn: Callable) -> ExerciseResult:
    """Grade ``fn(x, h0, c0, W_ih, W_hh, b_ih, b_hh) -> (out, (h_n, c_n))``: one LSTM layer over
    ``x (T, B, I)`` — the ``LSTMCell`` loop — with ``out (T, B, H)`` the ``h`` after each step and
    ``h_n, c_n (B, H)`` the state after the last one.  Compared with ``lstmkit.LSTM``."""
    import lstmkit

    rng = np.random.default_rng(11)
    cases = []
    for (label, B, I, H), T in zip(_SIZES, (5, 3, 4)):
        case = {"x": rng.standard_normal((T, B, I)), "h0": rng.standard_normal((B, H)) * 0.5,
                "c0": rng.standard_normal((B, H))}
        cases.append((f"seq_len {T}, {label}", {**case, **_params(rng, 4, I, H)}))

    def run(a):
        T, B, _ = a["x"].shape
        H = a["h0"].shape[1]
        result = _call(fn, a)
        if not (isinstance(result, (tuple, list)) and len(result) == 2 and isinstance(result[1], (tuple, list))
                and len(result[1]) == 2):
            raise _Wrong("your function should return (out, (h_n, c_n)), as nn.LSTM does")
        out = result[0]
        if isinstance(out, np.ndarray) and out.shape == (T + 1, B, H):
            raise _Wrong(f"out has {T + 1} steps for a sequence of {T}: out[t] is h after step t; h0 is not part "
                         f"of out")
        if isinstance(out, np.ndarray) and out.shape == (B, T, H) and B != T:
            raise _Wrong(f"out has shape {out.shape} = (batch, seq_len, hidden_size); without batch_first it is "
                         f"time-major, {(T, B, H)}")
        out = _array(out, "out", (T, B, H), "(seq_len, batch, hidden_size)")
        h_n = _array(result[1][0], "h_n", (B, H), "(batch, hidden_size)")
        c_n = _array(result[1][1], "c_n", (B, H), "(batch, hidden_size)")
        lstm = lstmkit.LSTM(a["x"].shape[2], H, dtype=np.float64, backend="numpy")
        lstm.load_state_dict({"weight_ih_l0": a["W_ih"], "weight_hh_l0": a["W_hh"], "bias_ih_l0": a["b_ih"],
                              "bias_hh_l0": a["b_hh"]})
        out_ref, (h_ref, c_ref) = lstm(a["x"], (a["h0"][None], a["c0"][None]))
        for t in range(T):
            if _close(out[t], out_ref[t]):
                continue
            if t == 0 and _close(out[0], a["h0"]):
                raise _Wrong("out[0] is h0: out[t] is the h after step t, so store the new h after each step")
            if t == 0:
                raise _Wrong("out[0] is wrong already: the first step starts from h0 and c0 (check your step with "
                             "check_lstm_step)", _where(out[0], out_ref[0]))
            raise _Wrong(f"out is right up to time step {t - 1} and first wrong at time step {t}: does each step "
                         f"start from the h and c the previous step returned (both of them)?",
                         _where(out[t], out_ref[t]))
        if not _close(h_n, h_ref[0]):
            raise _Wrong("out is right but h_n is not: h_n is the h after the last step, out[-1]")
        if not _close(c_n, c_ref[0]):
            raise _Wrong("out and h_n are right but c_n is not: c_n is the c after the last step",
                         _where(c_n, c_ref[0]))

    return _grade("check_lstm_forward", "lstmkit.LSTM", cases, run)


# -- the LSTM step's backward ----------------------------------------------------------------
_GATE_HINTS = {
    "i": "d i = dc * g, and sigmoid'(z) = i * (1 - i)",
    "f": "d f = dc * c (the previous c), and sigmoid'(z) = f * (1 - f)",
    "g": "d g = dc * i, and tanh'(z) = 1 - g**2",
    "o": "d o = dh_new * tanh(c_new), and sigmoid'(z) = o * (1 - o)",
}
_GRAD_KEYS = ("dx", "dh", "dc", "dW_ih", "dW_hh", "db_ih", "db_hh")


def check_lstm_step_backward(fn: Callable) -> ExerciseResult:
    """Grade ``fn(dh_new, dc_new, x, h, c, W_ih, W_hh, b_ih, b_hh) -> dict``: the gradients of one LSTM step.

    Given the loss's gradients ``dh_new, dc_new (B, H)`` w.r.t. the step's outputs, return
    ``{"dx": (B, I), "dh": (B, H), "dc": (B, H), "dW_ih": (4H, I), "dW_hh": (4H, H), "db_ih": (4H,),
    "db_hh": (4H,)}`` (recompute the gates from the inputs).  Compared with ``LSTMCell.forward_train``'s
    backward; a wrong weight gradient is located by gate block."""
    rng = np.random.default_rng(13)
    cases = []
    for label, a in _step_cases(4, 2):
        B, H = a["h"].shape
        grads = {"dh_new": rng.standard_normal((B, H)), "dc_new": rng.standard_normal((B, H))}
        cases.append((label, {**grads, **a}))

    def run(a):
        B, H = a["h"].shape
        I = a["x"].shape[1]
        result = _call(fn, a)
        if not isinstance(result, dict):
            raise _Wrong(f"your function should return a dict with keys {', '.join(_GRAD_KEYS)}, "
                         f"got {type(result).__name__}")
        missing = [k for k in _GRAD_KEYS if k not in result]
        if missing:
            raise _Wrong(f"the dict lacks {', '.join(missing)} (expected keys: {', '.join(_GRAD_KEYS)})")
        shapes = {"dx": ((B, I), "(batch, input_size), like x"), "dh": ((B, H), "(batch, hidden_size), like h"),
                  "dc": ((B, H), "(batch, hidden_size), like c"),
                  "dW_ih": ((4 * H, I), "(4*hidden_size, input_size), like W_ih"),
                  "dW_hh": ((4 * H, H), "(4*hidden_size, hidden_size), like W_hh"),
                  "db_ih": ((4 * H,), "(4*hidden_size,), like b_ih"), "db_hh": ((4 * H,), "(4*hidden_size,), like b_hh")}
        got = {k: _array(result[k], k, *shapes[k]) for k in _GRAD_KEYS}
        step = {k: a[k] for k in ("x", "h", "c", "W_ih", "W_hh", "b_ih", "b_hh")}
        _, backward = _cell("LSTMCell", step).forward_train(a["x"], (a["h"], a["c"]))
        d_x, (d_h, d_c), d_p = backward((a["dh_new"], a["dc_new"]))
        ref = {"dx": d_x, "dh": d_h, "dc": d_c, "dW_ih": d_p["weight_ih"], "dW_hh": d_p["weight_hh"],
               "db_ih": d_p["bias_ih"], "db_hh": d_p["bias_hh"]}
        wrong = [k for k in _GRAD_KEYS if not _close(got[k], ref[k])]
        if not wrong:
            return
        blocks = set()
        for k in ("dW_ih", "dW_hh", "db_ih", "db_hh"):
            for n, gate in enumerate(LSTM_GATES):
                if not _close(got[k][n * H:(n + 1) * H], ref[k][n * H:(n + 1) * H]):
                    blocks.add(gate)
        if blocks:
            names = [g for g in LSTM_GATES if g in blocks]
            rows = ", ".join(f"{g} (rows {LSTM_GATES.index(g) * H}:{(LSTM_GATES.index(g) + 1) * H})" for g in names)
            weights = [k for k in ("dW_ih", "dW_hh", "db_ih", "db_hh") if k in wrong]
            message = f"{', '.join(weights)} are wrong in the gate block{'s' if len(names) > 1 else ''} {rows}"
            right = [g for g in LSTM_GATES if g not in blocks]
            if right:
                message += f"; {', '.join(right)} {'is' if len(right) == 1 else 'are'} right"
            if set(names) == {"i", "f", "g"}:
                hint = ("i, f and g all go through dc: the total dc = dc_new + dh_new * o * (1 - tanh(c_new)**2) "
                        "(c_new reaches the loss through h_new too)")
            else:
                hint = "; ".join(f"gate {g}: {_GATE_HINTS[g]}" for g in names)
            if {"db_ih", "db_hh"} & set(wrong) and not {"dW_ih", "dW_hh"} & set(wrong):
                hint = "both biases get the same gradient: d_gates summed over the batch (axis 0)"
            raise _Wrong(message, hint)
        hints = {"dx": "dx = d_gates @ W_ih", "dh": "dh (to the previous h) = d_gates @ W_hh",
                 "dc": "dc (to the previous c) = (total dc) * f"}
        raise _Wrong(f"the weight and bias gradients are right, so d_gates is right; wrong: {', '.join(wrong)}",
                     *(hints[k] + "; " + _where(got[k], ref[k]) for k in wrong))

    return _grade("check_lstm_step_backward", "lstmkit.LSTMCell.forward_train's backward", cases, run)


# -- backpropagation through time ---------------------------------------------------------------
_BPTT_KEYS = ("dx", "dh0", "dc0", "dW_ih", "dW_hh", "db_ih", "db_hh")


def _bptt(a: dict, all_outputs=True, carry_h=True, carry_c=True, sum_weights=True) -> dict:
    """BPTT through ``LSTMCell`` steps, optionally with a learner's slip (for recognising it)."""
    cell = _cell("LSTMCell", a)
    state, steps = (a["h0"], a["c0"]), []
    for x_t in a["x"]:
        state, backward = cell.forward_train(x_t, state)
        steps.append(backward)
    T = len(steps)
    dh, dc = np.zeros_like(a["h0"]), np.zeros_like(a["c0"])
    out = {"dx": np.zeros_like(a["x"])}
    names = {"weight_ih": "dW_ih", "weight_hh": "dW_hh", "bias_ih": "db_ih", "bias_hh": "db_hh"}
    for t in range(T - 1, -1, -1):
        d_out = a["d_out"][t] if all_outputs or t == T - 1 else 0.0
        dx, (dh, dc), dp = steps[t]((d_out + (dh if carry_h else 0.0), dc if carry_c else np.zeros_like(dc)))
        out["dx"][t] = dx
        for k, v in dp.items():
            out[names[k]] = v + (out.get(names[k], 0.0) if sum_weights else 0.0)
    out["dh0"], out["dc0"] = dh, dc
    return out


def check_lstm_backward(fn: Callable) -> ExerciseResult:
    """Grade ``fn(d_out, x, h0, c0, W_ih, W_hh, b_ih, b_hh) -> dict``: backpropagation through time of one
    LSTM layer (``check_lstm_forward``'s function) for the loss gradient ``d_out (T, B, H)`` w.r.t. ``out``.

    Return ``{"dx": (T, B, I), "dh0": (B, H), "dc0": (B, H), "dW_ih", "dW_hh", "db_ih", "db_hh"}`` (the
    weights' gradients summed over the steps).  Compared with ``LSTM.forward_train``'s backward; a wrong
    ``dx`` is located at its time step, counting back from the last."""
    import lstmkit

    rng = np.random.default_rng(19)
    cases = []
    for (label, B, I, H), T in zip(_SIZES, (4, 3, 5)):
        case = {"d_out": rng.standard_normal((T, B, H)), "x": rng.standard_normal((T, B, I)),
                "h0": rng.standard_normal((B, H)) * 0.5, "c0": rng.standard_normal((B, H))}
        cases.append((f"seq_len {T}, {label}", {**case, **_params(rng, 4, I, H)}))

    def run(a):
        T, B, I = a["x"].shape
        H = a["h0"].shape[1]
        result = _call(fn, a)
        if not isinstance(result, dict) or any(k not in result for k in _BPTT_KEYS):
            raise _Wrong(f"your function should return a dict with keys {', '.join(_BPTT_KEYS)}")
        shapes = {"dx": (T, B, I), "dh0": (B, H), "dc0": (B, H), "dW_ih": (4 * H, I), "dW_hh": (4 * H, H),
                  "db_ih": (4 * H,), "db_hh": (4 * H,)}
        got = {k: _array(result[k], k, shapes[k], f"the shape of {k[1:]}") for k in _BPTT_KEYS}
        lstm = lstmkit.LSTM(I, H, dtype=np.float64, backend="numpy")
        lstm.load_state_dict({"weight_ih_l0": a["W_ih"], "weight_hh_l0": a["W_hh"], "bias_ih_l0": a["b_ih"],
                              "bias_hh_l0": a["b_hh"]})
        _, _, backward = lstm.forward_train(a["x"], (a["h0"][None], a["c0"][None]))
        d_x, (d_h0, d_c0), d_p = backward(a["d_out"])
        ref = {"dx": d_x, "dh0": d_h0[0], "dc0": d_c0[0], "dW_ih": d_p["weight_ih_l0"], "dW_hh": d_p["weight_hh_l0"],
               "db_ih": d_p["bias_ih_l0"], "db_hh": d_p["bias_hh_l0"]}
        if all(_close(got[k], ref[k]) for k in _BPTT_KEYS):
            return
        slips = [(dict(all_outputs=False), f"you used only d_out[{T - 1}]: every step's output reaches the loss, so "
                                           f"at step t the gradient into h is d_out[t] + the dh from step t+1"),
                 (dict(carry_c=False), "dc is not carried back: the dc a step returns (for its previous c) goes "
                                       "into the step before it, like dh"),
                 (dict(carry_h=False), "dh is not carried back: at step t the gradient into h is d_out[t] + the dh "
                                       "that step t+1 returned"),
                 (dict(sum_weights=False), "the weight and bias gradients are those of step 0 only: every step uses "
                                           "the same weights, so their gradients are summed over t")]
        signature = ("dx", "dW_ih", "dW_hh", "db_ih", "db_hh")  # dh0/dc0 depend on where the slip sits
        for kwargs, message in slips:
            variant = _bptt(a, **kwargs)
            if all(_close(got[k], variant[k]) for k in signature):
                raise _Wrong(message)
        for t in range(T - 1, -1, -1):
            if not _close(got["dx"][t], ref["dx"][t]):
                if t == T - 1:
                    text = ("dx is wrong at the last time step already: check the step's backward with "
                            "check_lstm_step_backward")
                else:
                    later = f"step {T - 1}" if t + 1 == T - 1 else f"steps {t + 1}..{T - 1}"
                    text = (f"dx is right at {later} and first wrong at time step {t} (backpropagation runs from the "
                            f"last step back): look at what passes from step {t + 1} back to step {t} (dh and dc)")
                raise _Wrong(text, _where(got["dx"][t], ref["dx"][t]))
        wrong = [k for k in _BPTT_KEYS if not _close(got[k], ref[k])]
        raise _Wrong(f"dx is right at every step, but {', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} wrong",
                     "dh0 and dc0 are what step 0 returns for its previous state; the weight gradients are the sum "
                     "of every step's")

    return _grade("check_lstm_backward", "lstmkit.LSTM.forward_train's backward", cases, run)


# -- the GRU step ------------------------------------------------------------------------------
def _gru_variant(a: dict, blocks=(0, 1, 2), paper=False, z_swapped=False, bias_hh=True):
    H = a["h"].shape[1]
    gi = a["x"] @ a["W_ih"].T + a["b_ih"]
    gh = a["h"] @ a["W_hh"].T + (a["b_hh"] if bias_hh else 0)
    gi = [gi[:, k * H:(k + 1) * H] for k in blocks]
    gh = [gh[:, k * H:(k + 1) * H] for k in blocks]
    r, z = _sig(gi[0] + gh[0]), _sig(gi[1] + gh[1])
    if paper:  # n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)
        W_hn = a["W_hh"][blocks[2] * H:(blocks[2] + 1) * H]
        b_hn = a["b_hh"][blocks[2] * H:(blocks[2] + 1) * H] if bias_hh else 0
        n = np.tanh(gi[2] + (r * a["h"]) @ W_hn.T + b_hn)
    else:
        n = np.tanh(gi[2] + r * gh[2])
    return z * n + (1 - z) * a["h"] if z_swapped else (1 - z) * n + z * a["h"]


def check_gru_step(fn: Callable) -> ExerciseResult:
    """Grade ``fn(x, h, W_ih, W_hh, b_ih, b_hh) -> h_new``, one GRU step as PyTorch computes it::

        r = sigmoid(x W_ir.T + b_ir + h W_hr.T + b_hr);  z = sigmoid(x W_iz.T + b_iz + h W_hz.T + b_hz)
        n = tanh(x W_in.T + b_in + r * (h W_hn.T + b_hn));  h_new = (1 - z) * n + z * h
    """

    def run(a):
        B, H = a["h"].shape
        h = _array(_call(fn, a), "h_new", (B, H), "(batch, hidden_size)")
        ref = _cell("GRUCell", a)(a["x"], a["h"])
        if _close(h, ref):
            return
        slips = [(dict(paper=True), "you used the paper's n = tanh(W_in x + b_in + W_hn (r * h) + b_hn); PyTorch "
                                    "applies r after the product: n = tanh(W_in x + b_in + r * (W_hn h + b_hn))"),
                 (dict(z_swapped=True), "z is used the other way round: PyTorch's h_new = (1 - z) * n + z * h "
                                        "(z close to 1 keeps the old h)"),
                 (dict(bias_hh=False), "bias_hh is missing: r and z add b_hr, b_hz, and n has r * (W_hn h + b_hn)")]
        for perm in itertools.permutations(range(3)):
            if perm != (0, 1, 2):
                layout = ["?"] * 3
                for gate, block in zip(GRU_GATES, perm):
                    layout[block] = gate
                slips.append((dict(blocks=perm), f"the gate blocks are in the wrong order: you read the rows as "
                                                 f"[{'|'.join(layout)}]; PyTorch stacks them as [r|z|n]"))
        for kwargs, message in slips:
            if _close(h, _gru_variant(a, **kwargs)):
                raise _Wrong(message)
        raise _Wrong("h_new is wrong", _where(h, ref))

    return _grade("check_gru_step", "lstmkit.GRUCell", _step_cases(3, 1), run)


# -- packing -------------------------------------------------------------------------------------
def check_pack(fn: Callable) -> ExerciseResult:
    """Grade ``fn(padded, lengths) -> (data, batch_sizes)``: ``pack_padded_sequence(padded, lengths,
    enforce_sorted=False)`` by hand.  ``padded (T, B, F)`` time-major; ``data (sum(lengths), F)`` holds step 0
    of every sequence (longest first), then step 1 of those still running, ...; ``batch_sizes[t]`` is how
    many sequences are longer than ``t``."""
    from ..utils.rnn import pack_padded_sequence

    rng = np.random.default_rng(17)
    cases = []
    for lengths, F in (([2, 4, 3], 2), ([1, 3, 2, 5], 1), ([4, 2, 1], 3), ([3], 2), ([2, 3, 2, 1], 1)):
        T, B = max(lengths), len(lengths)
        padded = np.round(rng.standard_normal((T, B, F)), 2)
        for b, n in enumerate(lengths):
            padded[n:, b] = 0.0
        cases.append((f"lengths {lengths}, {F} feature{'s' if F > 1 else ''}", {"padded": padded, "lengths": lengths}))

    def run(a):
        padded, lengths = a["padded"], a["lengths"]
        T, B, F = padded.shape
        result = _call(fn, {"padded": padded, "lengths": list(lengths)})
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise _Wrong("your function should return (data, batch_sizes)")
        ref = pack_padded_sequence(padded, lengths, enforce_sorted=False)
        order = [int(i) for i in ref.sorted_indices]
        sizes = np.asarray(result[1]).reshape(-1)
        if sizes.tolist() != ref.batch_sizes.tolist():
            hint = ""
            if sorted(sizes.tolist(), reverse=True) == sorted(lengths, reverse=True):
                hint = "those are the lengths; batch_sizes counts sequences per time step"
            raise _Wrong(f"batch_sizes should be {ref.batch_sizes.tolist()} (batch_sizes[t] = how many sequences "
                         f"are longer than t), got {sizes.tolist()}", hint)
        data = np.asarray(result[0])
        rows = sum(lengths)
        if data.ndim == 2 and data.shape[0] == T * B and rows != T * B:
            raise _Wrong(f"data has T * B = {T * B} rows: the padding is included; packed data holds only the "
                         f"sum(lengths) = {rows} real steps")
        data = _array(data, "data", (rows, F), "(sum(lengths), features)")
        if _close(data, ref.data):
            return
        by_sequence = lambda cols: np.concatenate([padded[:n, b] for b, n in ((c, lengths[c]) for c in cols)])  # noqa: E731
        time_major = lambda cols: np.concatenate([padded[t, [c for c in cols if lengths[c] > t]] for t in range(T)])  # noqa: E731
        if _close(data, by_sequence(order)) or _close(data, by_sequence(range(B))):
            raise _Wrong("you stacked the sequences one after another; packed data is time-major: step 0 of every "
                         "sequence (longest first), then step 1 of those still running, and so on")
        if _close(data, time_major(range(B))):
            raise _Wrong(f"the steps are in the batch's order; within each time step the rows go longest sequence "
                         f"first (sorted_indices = {order})")
        if _close(data, time_major(order[::-1])):
            raise _Wrong(f"the rows of each time step go shortest first; packed data goes longest first "
                         f"(sorted_indices = {order})")
        if _close(data, time_major(sorted(range(B), key=lambda b: (-lengths[b], -b)))):
            raise _Wrong(f"sequences of equal length must keep their batch order (a stable sort, as PyTorch's "
                         f"for small batches): sorted_indices = {order}")
        positions = [(t, c) for t in range(T) for c in order if lengths[c] > t]
        row = next(r for r in range(rows) if not _close(data[r], ref.data[r]))
        t, c = positions[row]
        raise _Wrong(f"data[{row}] should be step {t} of sequence {c} (padded[{t}, {c}] = {padded[t, c].tolist()}), "
                     f"got {data[row].tolist()}")

    return _grade("check_pack", "lstmkit.utils.rnn.pack_padded_sequence", cases, run)
