"""Shared helpers for the PyTorch parity tests (committed fixtures and live torch).

A *case* is ``(cfg, arrays)``: ``cfg`` is the JSON config written by
``tests/fixtures/make_fixtures.py`` and ``arrays`` maps the per-case keys of that
script (``x``, ``h0``, ``d_out``, ``out``, ``grad/<name>``, ...) to arrays.  The live
test builds the same structure by calling the generator's torch runners directly, so
both tests compare lstmkit against torch through exactly the same code here.

Nothing in this module imports torch.
"""
from __future__ import annotations

import json
import os

import numpy as np

import lstmkit
from lstmkit.utils.rnn import PackedSequence, pack_padded_sequence

FIXTURE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
MODULES_FILE = os.path.join(FIXTURE_DIR, "torch_modules.npz")
CELLS_FILE = os.path.join(FIXTURE_DIR, "torch_cells.npz")

RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}


def backends() -> list[str]:
    from lstmkit.registry import available_backends

    return list(available_backends())


# -- loading --------------------------------------------------------------------------

def load_cases(path: str) -> list[tuple[dict, dict]]:
    """All cases of one fixture file, in the generator's order."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["__meta__"]))
        files = z.files
        cases = []
        for cid in meta["cases"]:
            prefix = cid + "/"
            cfg = json.loads(str(z[prefix + "config"]))
            arrays = {k[len(prefix):]: z[k] for k in files
                      if k.startswith(prefix) and k != prefix + "config"}
            cases.append((cfg, arrays))
    return cases


# -- building lstmkit objects ---------------------------------------------------------

def build(cfg: dict, backend: str, seed=0):
    """The lstmkit module or cell that ``cfg`` describes (parameters: random init)."""
    dtype = np.dtype(cfg["dtype"]).type
    I, H, bias = cfg["input_size"], cfg["hidden_size"], cfg["bias"]
    common = dict(dtype=dtype, backend=backend, seed=seed)
    if cfg["kind"] == "cell":
        cls = cfg["class"]
        if cls == "LSTMCell":
            return lstmkit.LSTMCell(I, H, bias=bias, **common)
        if cls == "GRUCell":
            return lstmkit.GRUCell(I, H, bias=bias, **common)
        return lstmkit.RNNCell(I, H, bias=bias, nonlinearity=cfg["nonlinearity"], **common)
    kw = dict(num_layers=cfg["num_layers"], bias=bias, batch_first=cfg["batch_first"],
              dropout=0.0, bidirectional=cfg["bidirectional"], **common)
    cls = cfg["class"]
    if cls == "LSTM":
        return lstmkit.LSTM(I, H, proj_size=cfg["proj_size"], **kw)
    if cls == "GRU":
        return lstmkit.GRU(I, H, **kw)
    return lstmkit.RNN(I, H, nonlinearity=cfg["nonlinearity"], **kw)


def build_loaded(cfg: dict, arrays: dict, backend: str):
    m = build(cfg, backend)
    m.load_state_dict({k: arrays["param/" + k] for k in cfg["param_names"]})
    return m


def is_lstm(cfg: dict) -> bool:
    return cfg["class"] in ("LSTM", "LSTMCell")


def make_input(cfg: dict, arrays: dict):
    """The ndarray input, or the PackedSequence packed by lstmkit from the padded input."""
    x = arrays["x"]
    if cfg["kind"] == "module" and cfg["input"].startswith("packed"):
        return pack_padded_sequence(x, [int(v) for v in arrays["lengths"]],
                                    batch_first=cfg["batch_first"],
                                    enforce_sorted=cfg["enforce_sorted"])
    return x


def make_hx(cfg: dict, arrays: dict):
    if not cfg["hx"]:
        return None
    if is_lstm(cfg):
        return (arrays["h0"], arrays["c0"])
    return arrays["h0"]


def upstream(cfg: dict, arrays: dict):
    """``(d_out, d_state)`` in lstmkit's calling convention."""
    if cfg["kind"] == "cell":
        d_state = (arrays["d_h"], arrays["d_c"]) if is_lstm(cfg) else arrays["d_h"]
        return None, d_state
    d_state = (arrays["d_h_n"], arrays["d_c_n"]) if is_lstm(cfg) else arrays["d_h_n"]
    return arrays["d_out"], d_state


# -- running ----------------------------------------------------------------------------

def _data(out):
    return out.data if isinstance(out, PackedSequence) else out


def forward_results(m, cfg: dict, arrays: dict) -> dict:
    """``{"out", "h_n"[, "c_n"]}`` (cells: ``{"h"[, "c"]}``) from ``m(x, hx)``."""
    x, hx = make_input(cfg, arrays), make_hx(cfg, arrays)
    res = m(x, hx) if hx is not None else m(x)
    if cfg["kind"] == "cell":
        return {"h": res[0], "c": res[1]} if is_lstm(cfg) else {"h": res}
    out, state = res
    got = {"out": out}
    if is_lstm(cfg):
        got["h_n"], got["c_n"] = state
    else:
        got["h_n"] = state
    return got


def train_results(m, cfg: dict, arrays: dict) -> dict:
    """Forward outputs and all gradients from ``forward_train``/``backward``, keyed like
    the fixture arrays (``out``/``h``..., ``d_input``, ``d_h0``[, ``d_c0``], ``grad/<name>``)."""
    x, hx = make_input(cfg, arrays), make_hx(cfg, arrays)
    d_out, d_state = upstream(cfg, arrays)
    got = {}
    if cfg["kind"] == "cell":
        # cells: ``result, backward = cell.forward_train(x, hx)``; ``backward(d_result)``
        state, backward = m.forward_train(x, hx)
        if is_lstm(cfg):
            got["h"], got["c"] = state
        else:
            got["h"] = state
        grads = backward(d_state)
    else:
        out, state, backward = m.forward_train(x, hx)
        got["out"] = out
        if is_lstm(cfg):
            got["h_n"], got["c_n"] = state
        else:
            got["h_n"] = state
        grads = backward(d_out, d_state)
    d_input, d_hx, d_params = grads
    got["d_input"] = d_input
    if is_lstm(cfg):
        got["d_h0"], got["d_c0"] = d_hx
    else:
        got["d_h0"] = d_hx
    got["d_params"] = d_params
    for k, v in d_params.items():
        got["grad/" + k] = v
    return got


# -- comparing ------------------------------------------------------------------------

def tolerances(ref: np.ndarray) -> tuple[float, float]:
    rtol = RTOL[np.dtype(ref.dtype)]
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    return rtol, rtol * max(1.0, scale)


def rel_error(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max(1, max |ref|) -- the quantity the tolerances bound."""
    if ref.size == 0:
        return 0.0
    return float(np.abs(np.asarray(ours, np.float64) - ref).max() / max(1.0, np.abs(ref).max()))


def assert_close(ours, ref: np.ndarray, what: str) -> float:
    ours = _data(ours)
    assert isinstance(ours, np.ndarray), f"{what}: expected an ndarray, got {type(ours).__name__}"
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape}, torch {ref.shape}"
    assert ours.dtype == ref.dtype, f"{what}: dtype {ours.dtype}, torch {ref.dtype}"
    rtol, atol = tolerances(ref)
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=atol, err_msg=what)
    return rel_error(ours, ref)


def compare(got: dict, arrays: dict, keys, label: str = "") -> dict[str, float]:
    """Compare ``got[k]`` with ``arrays[k]`` for each key; returns the relative errors."""
    errs = {}
    for k in keys:
        assert k in got, f"{label}{k}: missing from lstmkit's results"
        errs[k] = assert_close(got[k], arrays[k], label + k)
    return errs


def output_keys(cfg: dict) -> list[str]:
    if cfg["kind"] == "cell":
        return ["h", "c"] if is_lstm(cfg) else ["h"]
    return ["out", "h_n", "c_n"] if is_lstm(cfg) else ["out", "h_n"]


def grad_keys(cfg: dict) -> list[str]:
    keys = ["d_input", "d_h0"] + (["d_c0"] if is_lstm(cfg) else [])
    return keys + ["grad/" + k for k in cfg["param_names"]]


def check_packing(cfg: dict, arrays: dict, out=None) -> None:
    """lstmkit's packing of the padded input (and the packed output's bookkeeping)
    equals torch's: same data rows, batch_sizes, sorted_indices."""
    packed = make_input(cfg, arrays)
    assert isinstance(packed, PackedSequence)
    np.testing.assert_array_equal(np.asarray(packed.batch_sizes), arrays["batch_sizes"])
    if "sorted_indices" in arrays:
        np.testing.assert_array_equal(np.asarray(packed.sorted_indices), arrays["sorted_indices"])
    else:
        assert packed.sorted_indices is None
    np.testing.assert_array_equal(packed.data, arrays["x_data"])
    if out is not None:
        assert isinstance(out, PackedSequence), f"packed input gave {type(out).__name__}"
        np.testing.assert_array_equal(np.asarray(out.batch_sizes), arrays["batch_sizes"])
        if "sorted_indices" in arrays:
            np.testing.assert_array_equal(np.asarray(out.sorted_indices), arrays["sorted_indices"])


def check_case(cfg: dict, arrays: dict, backend: str) -> dict[str, float]:
    """The whole parity check of one case on one backend; returns relative errors."""
    # lstmkit gets its own copies; they must come back unmodified.
    pristine, arrays = arrays, {k: v.copy() for k, v in arrays.items()}
    m = build_loaded(cfg, arrays, backend)
    assert list(m.state_dict()) == cfg["param_names"]
    fwd = forward_results(m, cfg, arrays)
    errs = compare(fwd, arrays, output_keys(cfg))
    if cfg["kind"] == "module" and cfg["input"].startswith("packed"):
        check_packing(cfg, arrays, fwd["out"])
    tr = train_results(m, cfg, arrays)
    compare(tr, arrays, output_keys(cfg), "forward_train ")
    assert list(tr["d_params"]) == cfg["param_names"]
    errs.update(compare(tr, arrays, grad_keys(cfg)))
    for k, v in pristine.items():
        np.testing.assert_array_equal(arrays[k], v, err_msg=f"{k} was modified in place")
    return errs
