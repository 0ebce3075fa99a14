"""Backpropagation through time: float64 central differences through the whole module.

Each check perturbs every input, initial state and parameter element, so the
sizes are small; they cover every cell, both directions, several layers,
projection, packed unequal lengths, unbatched input, dropout masks, and cells.
"""
import numpy as np
import pytest

import lstmkit
from lstmkit.testing import numeric_gradient
from lstmkit.utils.rnn import PackedSequence, pack_padded_sequence

def assert_close(analytic, numeric, what):
    scale = max(1.0, np.abs(numeric).max())
    err = np.abs(analytic - numeric).max() / scale
    assert err < 1e-7, f"{what}: max error {err:.2e}"


def state_list(state):
    return list(state) if isinstance(state, tuple) else [state]


def check_module_gradients(module, x, hx, seed=0):
    """Compare forward_train/backward with central differences of a random linear loss."""
    rng = np.random.default_rng(seed)

    def run():
        module.generator = np.random.default_rng(99)  # the same dropout masks every call
        return module.forward_train(x, hx)

    out, state, backward = run()
    out_data = out.data if isinstance(out, PackedSequence) else out
    w_out = rng.standard_normal(out_data.shape)
    w_state = [rng.standard_normal(s.shape) for s in state_list(state)]

    def loss():
        o, s, _ = run()
        o = o.data if isinstance(o, PackedSequence) else o
        return float((o * w_out).sum() + sum((a * w).sum() for a, w in zip(state_list(s), w_state)))

    d_state = tuple(w_state) if isinstance(state, tuple) else w_state[0]
    d_x, d_hx, d_params = backward(w_out, d_state)
    x_data = x.data if isinstance(x, PackedSequence) else x
    assert_close(d_x, numeric_gradient(loss, x_data), "d_input")
    if hx is not None:
        for i, (h, d_h) in enumerate(zip(state_list(hx), state_list(d_hx))):
            assert_close(d_h, numeric_gradient(loss, h), f"d_hx[{i}]")
    for name, value in module.named_parameters():
        assert_close(d_params[name], numeric_gradient(loss, value), name)
    assert list(d_params) == list(module.state_dict())


CASES = [
    ("lstm", dict(num_layers=2, bidirectional=True)),
    ("lstm", dict(proj_size=2, bidirectional=True)),
    ("lstm", dict(num_layers=2, bias=False, batch_first=True)),
    ("gru", dict(num_layers=2, bidirectional=True)),
    ("gru", dict(bias=False)),
    ("rnn_tanh", dict(num_layers=2, bidirectional=True)),
    ("rnn_relu", dict(bidirectional=True)),
]


@pytest.mark.parametrize("cell, kwargs", CASES, ids=[f"{c}-{'-'.join(k)}" for c, k in CASES])
def test_dense_gradients(backend, cell, kwargs):
    rng = np.random.default_rng(1)
    m = lstmkit.Recurrent(cell, 3, 4, dtype=np.float64, backend=backend, seed=0, **kwargs)
    batch, steps = 2, 3
    shape = (batch, steps, 3) if kwargs.get("batch_first") else (steps, batch, 3)
    x = rng.standard_normal(shape)
    hx = tuple(rng.standard_normal(s) for s in m._state_shapes(batch))
    check_module_gradients(m, x, hx if cell == "lstm" else hx[0])


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_packed_gradients(backend, cell, enforce_sorted):
    rng = np.random.default_rng(2)
    kwargs = dict(proj_size=2) if cell == "lstm" else {}
    m = lstmkit.Recurrent(cell, 2, 3, num_layers=2, bidirectional=True, dtype=np.float64,
                          backend=backend, seed=0, **kwargs)
    lengths = [4, 2, 3] if not enforce_sorted else [4, 3, 1]
    packed = pack_padded_sequence(rng.standard_normal((4, 3, 2)), lengths, enforce_sorted=enforce_sorted)
    hx = tuple(rng.standard_normal(s) for s in m._state_shapes(3))
    check_module_gradients(m, packed, hx if cell == "lstm" else hx[0])


def test_unbatched_gradients_with_hx_none(backend):
    rng = np.random.default_rng(3)
    m = lstmkit.LSTM(3, 4, num_layers=2, dtype=np.float64, backend=backend, seed=0)
    check_module_gradients(m, rng.standard_normal((3, 3)), None)
    out, (h, c), backward = m.forward_train(rng.standard_normal((3, 3)))
    d_x, (d_h0, d_c0), _ = backward(np.ones_like(out))
    assert d_x.shape == (3, 3) and d_h0.shape == h.shape == (2, 4) and d_c0.shape == (2, 4)


def test_dropout_gradients(backend):
    rng = np.random.default_rng(4)
    m = lstmkit.GRU(3, 4, num_layers=3, dropout=0.4, bidirectional=True, dtype=np.float64,
                    backend=backend, seed=0)
    check_module_gradients(m, rng.standard_normal((3, 2, 3)), rng.standard_normal((6, 2, 4)))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("unbatched", [False, True])
def test_cell_gradients(backend, cell, unbatched):
    rng = np.random.default_rng(5)
    c = lstmkit.RecurrentCell(cell, 3, 4, dtype=np.float64, backend=backend, seed=0)
    lead = () if unbatched else (2,)
    x = rng.standard_normal(lead + (3,))
    hx = tuple(rng.standard_normal(lead + (4,)) for _ in c.cell.state_names)
    hx = hx if cell == "lstm" else hx[0]
    result, backward = c.forward_train(x, hx)
    ws = [rng.standard_normal(r.shape) for r in state_list(result)]

    def loss():
        r, _ = c.forward_train(x, hx)
        return float(sum((a * w).sum() for a, w in zip(state_list(r), ws)))

    d_x, d_hx, d_params = backward(tuple(ws) if cell == "lstm" else ws[0])
    assert_close(d_x, numeric_gradient(loss, x), "d_input")
    for h, d_h in zip(state_list(hx), state_list(d_hx)):
        assert_close(d_h, numeric_gradient(loss, h), "d_hx")
    for name, value in c.named_parameters():
        assert_close(d_params[name], numeric_gradient(loss, value), name)


def test_forward_train_matches_forward_and_none_gradients(backend):
    rng = np.random.default_rng(6)
    m = lstmkit.LSTM(3, 4, num_layers=2, bidirectional=True, backend=backend, seed=0)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    out, (h, c) = m(x)
    out_t, (h_t, c_t), backward = m.forward_train(x)
    assert np.array_equal(out, out_t) and np.array_equal(h, h_t) and np.array_equal(c, c_t)
    d_x, (d_h0, d_c0), d_params = backward()  # no gradient in: all zero
    assert not d_x.any() and not d_h0.any() and not any(v.any() for v in d_params.values())
    assert d_x.dtype == np.float32 and all(v.dtype == np.float32 for v in d_params.values())
    with pytest.raises(ValueError, match=r"d_out should have the output's shape \(5, 2, 8\), got \(5, 2, 4\)"):
        backward(np.zeros((5, 2, 4), np.float32))


def test_backward_leaves_arguments_alone(backend):
    rng = np.random.default_rng(7)
    m = lstmkit.LSTM(3, 4, backend=backend, dtype=np.float64)
    x = rng.standard_normal((4, 2, 3))
    out, (h, c), backward = m.forward_train(x)
    d_out, d_h = rng.standard_normal(out.shape), rng.standard_normal(h.shape)
    copies = [a.copy() for a in (x, d_out, d_h)]
    backward(d_out, (d_h, None))
    assert all(np.array_equal(a, b) for a, b in zip((x, d_out, d_h), copies))


@pytest.mark.parametrize("make", [
    lambda b: lstmkit.LSTM(3, 4, num_layers=2, dtype=np.float64, backend=b, seed=0),
    lambda b: lstmkit.GRU(3, 4, dtype=np.float64, backend=b, seed=0),
    lambda b: lstmkit.LSTMCell(3, 4, dtype=np.float64, backend=b, seed=0),
    lambda b: lstmkit.GRUCell(3, 4, dtype=np.float64, backend=b, seed=0),
], ids=["LSTM", "GRU", "LSTMCell", "GRUCell"])
def test_backward_ignores_later_changes_to_the_inputs(backend, make):
    """The training cache owns its inputs: editing x or hx in place after forward_train changes nothing."""
    rng = np.random.default_rng(8)
    m = make(backend)
    is_cell = isinstance(m, lstmkit.RecurrentCell)
    lead = (2,) if is_cell else (m.num_layers, 2)
    x = rng.standard_normal((2, 3) if is_cell else (5, 2, 3))
    hx = tuple(rng.standard_normal(lead + (4,)) for _ in m.cell.state_names)
    hx = hx if len(hx) == 2 else hx[0]

    def grads():
        if is_cell:
            result, backward = m.forward_train(x, hx)
            ones = tuple(np.ones_like(r) for r in result) if isinstance(result, tuple) else np.ones_like(result)
            return backward, (ones,)
        out, _, backward = m.forward_train(x, hx)
        return backward, (np.ones_like(out),)

    backward, args = grads()
    expected = backward(*args)
    backward, args = grads()
    x[...] = 7.0
    for h in (hx if isinstance(hx, tuple) else (hx,)):
        h[...] = -3.0
    got = backward(*args)
    for name in expected[2]:
        np.testing.assert_array_equal(got[2][name], expected[2][name])
    np.testing.assert_array_equal(got[0], expected[0])


def test_load_state_dict_keeps_the_parameter_arrays():
    a, b = lstmkit.LSTM(3, 4, seed=0), lstmkit.LSTM(3, 4, seed=1)
    held = dict(a.named_parameters())  # what an optimizer holds
    a.load_state_dict(b.state_dict())
    assert all(held[k] is v for k, v in a.named_parameters())
    assert np.array_equal(held["weight_ih_l0"], b.weight_ih_l0)
    assert a.to(np.float32).weight_ih_l0 is held["weight_ih_l0"]  # same dtype: nothing replaced
