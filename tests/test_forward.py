"""Forward semantics: shapes, h_n layout, batch_first, unbatched, packed, errors, dropout."""
import re

import numpy as np
import pytest

import lstmkit
from lstmkit import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from lstmkit.utils.rnn import pack_padded_sequence, pad_packed_sequence


def raises(exc, message):
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


def randn(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


# -- the article's statements ----------------------------------------------------
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_article_shapes(backend, rng, num_layers, bidirectional):
    d = 2 if bidirectional else 1
    lstm = LSTM(10, 20, num_layers=num_layers, bidirectional=bidirectional, backend=backend, seed=0)
    x = randn(rng, 5, 3, 10)
    out, (h_n, c_n) = lstm(x)
    assert out.shape == (5, 3, d * 20)
    assert h_n.shape == c_n.shape == (d * num_layers, 3, 20)
    assert out.dtype == h_n.dtype == np.float32
    # h_0 and c_0 default to zeros
    out0, (h0n, c0n) = lstm(x, (np.zeros((d * num_layers, 3, 20), np.float32),) * 2)
    assert np.array_equal(out, out0) and np.array_equal(h_n, h0n) and np.array_equal(c_n, c0n)


def test_projection_shapes(backend, rng):
    m = LSTM(7, 20, num_layers=2, bidirectional=True, proj_size=6, backend=backend)
    out, (h, c) = m(randn(rng, 5, 3, 7))
    assert out.shape == (5, 3, 12) and h.shape == (4, 3, 6) and c.shape == (4, 3, 20)


def test_h_n_layout_and_bidirectional_output(backend, rng):
    m = GRU(4, 5, num_layers=2, bidirectional=True, backend=backend, seed=1)
    out, h_n = m(randn(rng, 6, 2, 4))
    assert np.array_equal(h_n[-2], out[-1, :, :5])  # last layer, forward
    assert np.array_equal(h_n[-1], out[0, :, 5:])  # last layer, reverse: after step 0
    assert not np.allclose(h_n[-1], out[-1, :, 5:])
    view = h_n.reshape(2, 2, 2, 5)  # (num_layers, D, N, H)
    assert np.array_equal(view[1, 0], h_n[2])
    u = RNN(4, 5, num_layers=3, backend=backend)
    out, h_n = u(randn(rng, 6, 2, 4))
    assert np.array_equal(h_n[-1], out[-1])


def test_batch_first_changes_input_and_output_only(backend, rng):
    m = LSTM(4, 5, num_layers=2, backend=backend, seed=0)
    mb = LSTM(4, 5, num_layers=2, batch_first=True, backend=backend)
    mb.load_state_dict(m.state_dict())
    x = randn(rng, 6, 3, 4)
    h0 = (randn(rng, 2, 3, 5), randn(rng, 2, 3, 5))
    out, (h, c) = m(x, h0)
    outb, (hb, cb) = mb(x.transpose(1, 0, 2), h0)  # states stay (layers, batch, hidden)
    assert outb.shape == (3, 6, 5)
    assert np.array_equal(outb, out.transpose(1, 0, 2))
    assert np.array_equal(h, hb) and np.array_equal(c, cb)


def test_unbatched_equals_batch_of_one(backend, rng):
    m = LSTM(4, 5, num_layers=2, bidirectional=True, proj_size=3, backend=backend, batch_first=True)
    x = randn(rng, 6, 4)
    hx = (randn(rng, 4, 3), randn(rng, 4, 5))
    out, (h, c) = m(x, hx)
    assert out.shape == (6, 6) and h.shape == (4, 3) and c.shape == (4, 5)
    m.batch_first = False
    outb, (hb, cb) = m(x[:, None], (hx[0][:, None], hx[1][:, None]))
    assert np.array_equal(out, outb[:, 0]) and np.array_equal(h, hb[:, 0]) and np.array_equal(c, cb[:, 0])


def test_batch_invariance(backend, rng):
    m = LSTM(4, 8, num_layers=2, bidirectional=True, backend=backend)
    x = randn(rng, 7, 16, 4)
    out, (h, _) = m(x)
    out0, (h0, _) = m(x[:, :1])
    np.testing.assert_allclose(out0[:, 0], out[:, 0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(h0[:, 0], h[:, 0], rtol=1e-6, atol=1e-7)


def test_non_contiguous_input_and_no_mutation(backend, rng):
    m = GRU(4, 5, backend=backend)
    big = randn(rng, 6, 3, 8)
    x = big[:, :, ::2]
    h0 = randn(rng, 1, 3, 5)
    x_before, h_before = x.copy(), h0.copy()
    out, h = m(x, h0)
    out2, h2 = m(np.ascontiguousarray(x), h0.copy())
    assert np.array_equal(out, out2) and np.array_equal(h, h2)
    assert np.array_equal(x, x_before) and np.array_equal(h0, h_before)


def test_batch_zero_works_and_seq_len_zero_raises(backend):
    m = LSTM(4, 5, num_layers=2, backend=backend)
    out, (h, c) = m(np.zeros((3, 0, 4), np.float32))
    assert out.shape == (3, 0, 5) and h.shape == (2, 0, 5)
    with raises(RuntimeError, "Expected sequence length to be larger than 0 in RNN"):
        m(np.zeros((0, 2, 4), np.float32))
    with raises(RuntimeError, "Expected sequence length to be larger than 0 in RNN"):
        m(np.zeros((0, 4), np.float32))


# -- packed sequences --------------------------------------------------------------
@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_packed_equals_each_sequence_alone(backend, rng, enforce_sorted, cls):
    lengths = [6, 4, 4, 1] if enforce_sorted else [4, 6, 1, 4]
    m = cls(3, 5, num_layers=2, bidirectional=True, backend=backend, dtype=np.float64, seed=2)
    x = rng.standard_normal((6, 4, 3))
    n_states = 2 if cls is LSTM else 1
    hx = tuple(rng.standard_normal((4, 4, 5)) for _ in range(n_states))
    packed = pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
    out, state = m(packed, hx if cls is LSTM else hx[0])
    padded, out_lengths = pad_packed_sequence(out)
    assert list(out_lengths) == lengths
    states = state if cls is LSTM else (state,)
    for b, length in enumerate(lengths):
        hx_b = tuple(s[:, b : b + 1] for s in hx)
        out_b, state_b = m(x[:length, b : b + 1], hx_b if cls is LSTM else hx_b[0])
        np.testing.assert_allclose(padded[:length, b], out_b[:, 0], rtol=1e-12, atol=1e-12)
        assert np.all(padded[length:, b] == 0)
        for s, sb in zip(states, state_b if cls is LSTM else (state_b,)):
            np.testing.assert_allclose(s[:, b], sb[:, 0], rtol=1e-12, atol=1e-12)


def test_packed_output_keeps_indices(backend, rng):
    m = RNN(3, 4, backend=backend)
    packed = pack_padded_sequence(randn(rng, 5, 3, 3), [2, 5, 3], enforce_sorted=False)
    out, h = m(packed)
    assert np.array_equal(out.batch_sizes, packed.batch_sizes)
    assert np.array_equal(out.sorted_indices, packed.sorted_indices)
    assert out.data.shape == (10, 4) and h.shape == (1, 3, 4)


def test_packed_input_is_validated_like_dense(rng):
    m = LSTM(3, 5)
    packed = pack_padded_sequence(randn(rng, 5, 3, 3), [5, 3, 2])
    with raises(RuntimeError, "Expected hidden[0] size (1, 3, 5), got [1, 4, 5]"):
        m(packed, (np.zeros((1, 4, 5), np.float32), np.zeros((1, 3, 5), np.float32)))
    with raises(RuntimeError, "input.size(-1) must be equal to input_size. Expected 4, got 3"):
        LSTM(4, 5)(packed)


# -- forward errors (PyTorch's wording) ------------------------------------------------------
def test_lstm_forward_errors():
    m = LSTM(10, 20, num_layers=2)
    f32 = lambda *s: np.zeros(s, np.float32)  # noqa: E731
    with raises(ValueError, "LSTM: Expected input to be 2D or 3D, got 4D instead"):
        m(f32(1, 2, 3, 10))
    with raises(RuntimeError, "For batched 3-D input, hx and cx should also be 3-D but got (2-D, 3-D) tensors"):
        m(f32(5, 3, 10), (f32(2, 20), f32(2, 3, 20)))
    with raises(RuntimeError, "For unbatched 2-D input, hx and cx should also be 2-D but got (3-D, 3-D) tensors"):
        m(f32(5, 10), (f32(2, 1, 20), f32(2, 1, 20)))
    with raises(RuntimeError, "lstm expects two hidden states"):
        m(f32(5, 3, 10), (f32(2, 3, 20),) * 3)
    with pytest.raises(TypeError, match=r"LSTM: hx should be a tuple \(h_0, c_0\)"):
        m(f32(5, 3, 10), f32(2, 3, 20))
    with raises(
        ValueError,
        "RNN input dtype (float64) does not match weight dtype (float32). Convert input: "
        "input.astype(np.float32), or convert model: model.to(np.float64)",
    ):
        m(np.zeros((5, 3, 10)))
    with pytest.raises(ValueError, match=r"RNN input dtype \(int64\) does not match weight dtype \(float32\)\. Convert input: input.astype\(np.float32\)$"):
        m(np.zeros((5, 3, 10), np.int64))
    with raises(RuntimeError, "input.size(-1) must be equal to input_size. Expected 10, got 5"):
        m(f32(5, 3, 5))
    with raises(RuntimeError, "input.size(-1) must be equal to input_size. Expected 10, got 5"):
        m(f32(5, 5))
    with raises(RuntimeError, "Expected hidden[0] size (2, 3, 20), got [1, 3, 20]"):
        m(f32(5, 3, 10), (f32(1, 3, 20), f32(2, 3, 20)))
    with raises(RuntimeError, "Expected hidden[1] size (2, 3, 20), got [2, 3, 19]"):
        m(f32(5, 3, 10), (f32(2, 3, 20), f32(2, 3, 19)))
    with raises(RuntimeError, "Expected hidden[0] size (2, 1, 20), got [3, 1, 20]"):
        m(f32(5, 10), (f32(3, 20), f32(2, 20)))
    with pytest.raises(ValueError, match=r"LSTM hx dtype \(float64\) does not match weight dtype \(float32\)"):
        m(f32(5, 3, 10), (np.zeros((2, 3, 20)), f32(2, 3, 20)))
    with pytest.raises(TypeError, match="LSTM: expected input to be a numpy.ndarray, got list"):
        m([[1.0] * 10])
    with raises(RuntimeError, "Expected hidden[0] size (1, 3, 5), got [1, 3, 20]"):
        LSTM(10, 20, proj_size=5)(f32(5, 3, 10), (f32(1, 3, 20), f32(1, 3, 20)))
    with raises(RuntimeError, "Expected hidden[0] size (1, 3, 20), got [3, 1, 20]"):
        LSTM(10, 20, batch_first=True)(f32(3, 5, 10), (f32(3, 1, 20), f32(1, 3, 20)))


def test_gru_rnn_forward_errors():
    f32 = lambda *s: np.zeros(s, np.float32)  # noqa: E731
    with raises(ValueError, "GRU: Expected input to be 2D or 3D, got 4D instead"):
        GRU(10, 20)(f32(1, 2, 3, 10))
    with raises(ValueError, "RNN: Expected input to be 2D or 3D, got 4D tensor instead"):
        RNN(10, 20)(f32(1, 2, 3, 10))
    with raises(RuntimeError, "For batched 3-D input, hx should also be 3-D but got 2-D tensor"):
        GRU(10, 20)(f32(5, 3, 10), f32(3, 20))
    with raises(RuntimeError, "For unbatched 2-D input, hx should also be 2-D but got 3-D tensor"):
        RNN(10, 20)(f32(5, 10), f32(1, 1, 20))
    with raises(RuntimeError, "Expected hidden size (2, 3, 20), got [1, 3, 20]"):
        GRU(10, 20, num_layers=2)(f32(5, 3, 10), f32(1, 3, 20))
    with pytest.raises(TypeError, match="GRU: expected hx to be a numpy.ndarray, got tuple"):
        GRU(10, 20)(f32(5, 3, 10), (f32(1, 3, 20),))


def test_cell_forward_errors():
    f32 = lambda *s: np.zeros(s, np.float32)  # noqa: E731
    c = LSTMCell(10, 20)
    with raises(ValueError, "LSTMCell: Expected input to be 1D or 2D, got 3D instead"):
        c(f32(1, 3, 10))
    with raises(ValueError, "LSTMCell: Expected input to be 1D or 2D, got 0D instead"):
        c(np.array(1.0, dtype=np.float32))
    with raises(ValueError, "LSTMCell: Expected hx[0] to be 1D or 2D, got 3D instead"):
        c(f32(3, 10), (f32(1, 3, 20), f32(3, 20)))
    with raises(ValueError, "LSTMCell: Expected hx[1] to be 1D or 2D, got 3D instead"):
        c(f32(3, 10), (f32(3, 20), f32(1, 3, 20)))
    with raises(ValueError, "GRUCell: Expected hidden to be 1D or 2D, got 3D instead"):
        GRUCell(10, 20)(f32(3, 10), f32(1, 3, 20))
    with raises(ValueError, "RNNCell: Expected hidden to be 1D or 2D, got 3D instead"):
        RNNCell(10, 20)(f32(3, 10), f32(1, 3, 20))
    with raises(RuntimeError, "input has inconsistent input_size: got 5 expected 10"):
        c(f32(3, 5))
    with raises(RuntimeError, "Input batch size 3 doesn't match hidden0 batch size 2"):
        c(f32(3, 10), (f32(2, 20), f32(3, 20)))
    with raises(RuntimeError, "Input batch size 3 doesn't match hidden1 batch size 2"):
        c(f32(3, 10), (f32(3, 20), f32(2, 20)))
    with raises(RuntimeError, "hidden0 has inconsistent hidden_size: got 19, expected 20"):
        c(f32(3, 10), (f32(3, 19), f32(3, 20)))
    with raises(RuntimeError, "hidden1 has inconsistent hidden_size: got 19, expected 20"):
        c(f32(3, 10), (f32(3, 20), f32(3, 19)))
    with raises(RuntimeError, "lstm_cell expects two hidden states"):
        c(f32(3, 10), (f32(3, 20),) * 3)
    with raises(TypeError, "lstm_cell(): argument 'hx' (position 2) must be tuple of arrays, not ndarray"):
        c(f32(3, 10), f32(3, 20))
    # batchedness is decided by the input only, as in torch
    with raises(RuntimeError, "hidden0 has inconsistent hidden_size: got 1, expected 20"):
        GRUCell(10, 20)(f32(10), f32(1, 20))
    with raises(RuntimeError, "Input batch size 3 doesn't match hidden0 batch size 20"):
        GRUCell(10, 20)(f32(3, 10), f32(20))
    with pytest.raises(ValueError, match=r"LSTMCell input dtype \(float64\) does not match weight dtype"):
        c(np.zeros((3, 10)))


def test_cell_shapes_and_batch_zero(backend, rng):
    c = LSTMCell(4, 6, backend=backend)
    h, cc = c(randn(rng, 3, 4))
    assert h.shape == cc.shape == (3, 6)
    h, cc = c(randn(rng, 4))
    assert h.shape == cc.shape == (6,)
    h = GRUCell(4, 6, backend=backend)(np.zeros((0, 4), np.float32))
    assert h.shape == (0, 6)


@pytest.mark.parametrize("cls, cell_cls, kwargs", [
    (LSTM, LSTMCell, {}), (GRU, GRUCell, {}), (RNN, RNNCell, {"nonlinearity": "relu"}),
])
def test_cell_loop_equals_module(backend, rng, cls, cell_cls, kwargs):
    """The article's demo: a loop over the cell reproduces the one-layer module."""
    m = cls(10, 20, backend=backend, seed=0, **kwargs)
    cell = cell_cls(10, 20, backend=backend, **kwargs)
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in m.state_dict().items()})
    x = randn(rng, 2, 3, 10)
    if cls is LSTM:
        hx, cx = randn(rng, 3, 20), randn(rng, 3, 20)
        expected, (h_n, c_n) = m(x, (hx[None], cx[None]))
        outputs = []
        for t in range(x.shape[0]):
            hx, cx = cell(x[t], (hx, cx))
            outputs.append(hx)
        np.testing.assert_allclose(cx, c_n[0], rtol=1e-6, atol=1e-6)
    else:
        hx = randn(rng, 3, 20)
        expected, h_n = m(x, hx[None])
        outputs = []
        for t in range(x.shape[0]):
            hx = cell(x[t], hx)
            outputs.append(hx)
    np.testing.assert_allclose(np.stack(outputs), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(hx, h_n[0], rtol=1e-6, atol=1e-6)


# -- dropout -------------------------------------------------------------------------------
def test_dropout_only_between_layers_in_training(backend, rng):
    x = randn(rng, 5, 4, 3)
    m = LSTM(3, 6, num_layers=3, dropout=0.5, backend=backend, seed=0)
    m.eval()
    a, _ = m(x)
    b, _ = m(x)
    assert np.array_equal(a, b)  # eval: deterministic
    m.train()
    c, _ = m(x)
    d, _ = m(x)
    assert not np.array_equal(c, d) and not np.array_equal(a, c)


def test_dropout_mask_scale_and_p_one(rng):
    from lstmkit.engine import dropout_mask

    mask = dropout_mask(np.random.default_rng(0), (1000, 50), 0.5, np.float32)
    assert set(np.unique(mask)) == {0.0, 2.0} and abs((mask == 0).mean() - 0.5) < 0.01
    assert not np.any(dropout_mask(np.random.default_rng(0), (10, 5), 1.0, np.float64))
    # p = 1 zeroes the next layer's input: the top layer then sees only its biases.
    m = RNN(3, 4, num_layers=2, dropout=1.0, seed=0)
    out, _ = m(randn(rng, 5, 2, 3))
    ref = RNN(4, 4, seed=0)
    ref.load_state_dict({k.replace("_l1", "_l0"): v for k, v in m.state_dict().items() if "_l1" in k})
    expected, _ = ref(np.zeros((5, 2, 4), np.float32))
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_dropout_draws_from_the_module_generator(rng):
    x = randn(rng, 5, 4, 3)
    a = LSTM(3, 6, num_layers=2, dropout=0.3, seed=7)
    b = LSTM(3, 6, num_layers=2, dropout=0.3, seed=7)
    assert np.array_equal(a(x)[0], b(x)[0])


def test_single_layer_dropout_has_no_effect(rng):
    with pytest.warns(UserWarning):
        m = GRU(3, 4, dropout=0.9, seed=0)
    x = randn(rng, 5, 2, 3)
    a, _ = m(x)
    b, _ = m.eval()(x)
    assert np.array_equal(a, b)


def test_recurrent_by_name_equals_face(rng):
    a = lstmkit.Recurrent("rnn_relu", 3, 4, num_layers=2, seed=0)
    b = RNN(3, 4, 2, "relu")
    b.load_state_dict(a.state_dict())
    x = randn(rng, 5, 2, 3)
    assert np.array_equal(a(x)[0], b(x)[0])
    with pytest.raises(ValueError, match=r"unknown cell 'lstmm'; did you mean 'lstm'\?; valid cells: gru, lstm, rnn_relu, rnn_tanh"):
        lstmkit.Recurrent("lstmm", 3, 4)


def test_checks_run_in_pytorch_order():
    """hx rank is checked before the input's dtype and width, as in PyTorch."""
    f32 = lambda *s: np.zeros(s, np.float32)  # noqa: E731
    with raises(RuntimeError, "For batched 3-D input, hx and cx should also be 3-D but got (2-D, 2-D) tensors"):
        LSTM(10, 20)(f32(5, 3, 5), (f32(3, 20), f32(3, 20)))
    with raises(RuntimeError, "For batched 3-D input, hx should also be 3-D but got 2-D tensor"):
        GRU(10, 20)(np.zeros((5, 3, 10)), f32(3, 20))
    with raises(ValueError, "LSTMCell: Expected hx[0] to be 1D or 2D, got 3D instead"):
        LSTMCell(10, 20)(f32(3, 5), (f32(1, 3, 20), f32(3, 20)))
