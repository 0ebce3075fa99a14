"""Inference makes no copy of a C-contiguous input of the right dtype (issue 7), and mutates nothing."""
import numpy as np
import pytest

import lstmkit
from lstmkit.utils.rnn import pack_sequence


def spy(monkeypatch, module, method):
    """Record the arguments of every call of the backend's ``method``."""
    calls = []
    original = getattr(module.backend, method)

    def record(*args):
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(module.backend, method, record)
    return calls


@pytest.mark.parametrize("form", ["dense", "unbatched", "packed"])
def test_forward_passes_the_callers_memory_to_the_backend(backend, monkeypatch, form):
    rng = np.random.default_rng(0)
    m = lstmkit.LSTM(3, 4, backend=backend, seed=0)
    if form == "packed":
        x = pack_sequence([rng.standard_normal((n, 3)).astype(np.float32) for n in (3, 2)])
        data, hx = x.data, None
    else:
        x = rng.standard_normal((5, 2, 3) if form == "dense" else (5, 3)).astype(np.float32)
        lead = (1, 2) if form == "dense" else (1,)
        hx = (rng.standard_normal(lead + (4,)).astype(np.float32), rng.standard_normal(lead + (4,)).astype(np.float32))
        data = x
    before = [a.copy() for a in (data,) + (hx or ())]
    calls = spy(monkeypatch, m, "layer_forward")
    m(x, hx)
    (_, params, rows, _, _, state0, _), = calls
    assert np.shares_memory(rows, data)  # the input itself, as (N, I) rows
    assert params["weight_ih"] is m.weight_ih_l0  # the module's own arrays, no copy
    if hx is not None:
        assert np.shares_memory(state0[0], hx[0]) and np.shares_memory(state0[1], hx[1])
    assert all(np.array_equal(a, b) for a, b in zip((data,) + (hx or ()), before))


def test_cell_step_passes_the_callers_memory_to_the_backend(backend, monkeypatch):
    rng = np.random.default_rng(1)
    cell = lstmkit.GRUCell(3, 4, backend=backend, seed=0)
    x, h = rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal((2, 4)).astype(np.float32)
    before = (x.copy(), h.copy())
    calls = spy(monkeypatch, cell, "cell_step")
    cell(x, h)
    (_, params, x_seen, state), = calls
    assert x_seen is x and state[0] is h and params["weight_hh"] is cell.weight_hh
    assert np.array_equal(x, before[0]) and np.array_equal(h, before[1])


def test_a_copy_is_made_only_when_needed(monkeypatch):
    """Wrong dtype, or a non-contiguous layout: converted once at the boundary."""
    m = lstmkit.GRU(3, 4, backend="numpy", seed=0)
    calls = spy(monkeypatch, m, "layer_forward")
    x64 = np.zeros((5, 2, 3))
    m.to(np.float64)(x64)
    assert np.shares_memory(calls[-1][2], x64)
    strided = np.zeros((5, 2, 6))[:, :, ::2]
    m(strided)
    rows = calls[-1][2]
    assert not np.shares_memory(rows, strided) and rows.flags.c_contiguous
