"""Constructor validation, attributes, parameters and repr: PyTorch's behaviour and messages."""
import re
import warnings

import numpy as np
import pytest

import lstmkit
from lstmkit import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell


def raises(exc, message):
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        (dict(dropout=None), TypeError, "float() argument must be a string or a real number, not 'NoneType'"),
        *[
            (dict(dropout=d), ValueError,
             "dropout should be a number in range [0, 1] representing the probability of an element being zeroed")
            for d in (-0.1, 1.5, True, "0.5")
        ],
        (dict(bias=1), TypeError, "bias should be of type bool, got: int"),
        (dict(batch_first=1), TypeError, "batch_first should be of type bool, got: int"),
        (dict(input_size=10.0), TypeError, "input_size should be of type int, got: float"),
        (dict(input_size=np.int64(10)), TypeError, "input_size should be of type int, got: int64"),
        (dict(input_size=0), ValueError, "input_size must be greater than zero"),
        (dict(hidden_size=20.0), TypeError, "hidden_size should be of type int, got: float"),
        (dict(hidden_size=-1), ValueError, "hidden_size must be greater than zero"),
        (dict(num_layers=0), ValueError, "num_layers must be greater than zero"),
        (dict(num_layers=2.0), TypeError, "num_layers should be of type int, got: float"),
        (dict(bidirectional="yes"), TypeError, "bidirectional should be of type bool, got: str"),
        (dict(proj_size=-1), ValueError, "proj_size should be a positive integer or zero to disable projections"),
        (dict(proj_size=20), ValueError, "proj_size has to be smaller than hidden_size"),
        (dict(proj_size=5.0), TypeError, "proj_size should be of type int, got: float"),
        (dict(dtype=np.int32), TypeError, "dtype must be float32 or float64, got <class 'numpy.int32'>"),
        (dict(backend="gpu"), ValueError, None),
        (dict(seed="x"), TypeError, "seed must be None, an int or a numpy.random.Generator, got str"),
    ],
)
def test_lstm_constructor_errors(kwargs, exc, message):
    args = dict(input_size=10, hidden_size=20)
    args.update(kwargs)
    if message is None:
        with pytest.raises(exc, match="valid backends: auto"):
            LSTM(**args)
    else:
        with raises(exc, message):
            LSTM(**args)


def test_validation_order_dropout_before_bias():
    with pytest.raises(ValueError, match="dropout"):
        LSTM(10, 20, bias=1, dropout=2.0)


@pytest.mark.parametrize("cls", [GRU, RNN])
def test_proj_size_only_for_lstm(cls):
    with raises(ValueError, "proj_size argument is only supported for LSTM, not RNN or GRU"):
        cls(10, 20, proj_size=0)
    with raises(ValueError, "proj_size argument is only supported for LSTM, not RNN or GRU"):
        lstmkit.Recurrent("gru", 10, 20, proj_size=5)


def test_rnn_nonlinearity():
    assert RNN(10, 20, 2, "relu").nonlinearity == "relu"  # 4th positional, as in torch
    assert RNN(10, 20, 2, "relu").mode == "RNN_RELU"
    assert RNN(10, 20).mode == "RNN_TANH"
    with raises(ValueError, "Unknown nonlinearity 'sigmoid'. Select from 'tanh' or 'relu'."):
        RNN(10, 20, nonlinearity="sigmoid")
    with raises(ValueError, "Unknown nonlinearity 'Tanh'. Select from 'tanh' or 'relu'."):
        RNNCell(10, 20, nonlinearity="Tanh")


def test_unknown_keyword():
    with pytest.raises(TypeError, match="unexpected keyword argument 'foo'"):
        GRU(10, 20, foo=1)
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        LSTMCell(10, 20, proj_size=5)


def test_dropout_warning_single_layer():
    message = (
        "dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
        "expects num_layers greater than 1, but got dropout=0.5 and num_layers=1"
    )
    with pytest.warns(UserWarning, match=re.escape(message)) as record:
        LSTM(10, 20, dropout=0.5)
    assert record[0].filename == __file__  # stacklevel points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LSTM(10, 20, num_layers=2, dropout=0.5)


def test_attributes():
    m = LSTM(10, 20, 2, False, True, 0.25, True, 5)
    assert (m.mode, m.input_size, m.hidden_size, m.num_layers, m.bias, m.batch_first) == (
        "LSTM", 10, 20, 2, False, True)
    assert (m.dropout, m.bidirectional, m.proj_size) == (0.25, True, 5)
    assert isinstance(m.dropout, float) and LSTM(10, 20, num_layers=2, dropout=1).dropout == 1.0
    assert m.training and not m.eval().training and m.train().training
    assert LSTM(True, 20).input_size == 1  # bool is an int, as in torch


def test_parameter_names_shapes_order():
    m = LSTM(10, 20, num_layers=2, bidirectional=True, proj_size=5)
    names = [n for n, _ in m.named_parameters()]
    per = ["weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"]
    expected = [f"{p}_l{l}{s}" for l in range(2) for s in ("", "_reverse") for p in per]
    assert names == expected == list(m.state_dict()) == m._flat_weights_names
    shapes = {n: v.shape for n, v in m.named_parameters()}
    assert shapes["weight_ih_l0"] == (80, 10)
    assert shapes["weight_hh_l0"] == (80, 5)
    assert shapes["weight_ih_l1"] == (80, 10)  # D * proj_size
    assert shapes["weight_hr_l1_reverse"] == (5, 20)
    assert shapes["bias_ih_l0"] == (80,)
    assert len(m.all_weights) == 4 and len(m.all_weights[0]) == 5
    g = GRU(7, 16, num_layers=3, bidirectional=True)
    assert g.weight_ih_l2.shape == (48, 32) and g.weight_hh_l0_reverse.shape == (48, 16)
    nb = RNN(7, 16, bias=False)
    assert [n for n, _ in nb.named_parameters()] == ["weight_ih_l0", "weight_hh_l0"]
    assert not hasattr(nb, "bias_ih_l0")


def test_cell_parameters():
    c = LSTMCell(10, 20)
    assert [(n, v.shape) for n, v in c.named_parameters()] == [
        ("weight_ih", (80, 10)), ("weight_hh", (80, 20)), ("bias_ih", (80,)), ("bias_hh", (80,))]
    nb = GRUCell(10, 20, bias=False)
    assert nb.bias_ih is None and nb.bias_hh is None
    assert [n for n, _ in nb.named_parameters()] == ["weight_ih", "weight_hh"]
    assert LSTMCell(np.int64(3), np.int32(4)).hidden_size == 4  # numpy ints accepted for cells
    with raises(TypeError, "input_size should be of type int, got: float"):
        LSTMCell(10.0, 20)
    with raises(ValueError, "input_size must be greater than zero"):
        LSTMCell(-1, 20)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_init_uniform_bounds_and_dtype(dtype):
    m = LSTM(8, 25, num_layers=2, proj_size=3, dtype=dtype, seed=0)
    values = np.concatenate([v.ravel() for v in m.parameters()])
    assert all(v.dtype == dtype and v.flags.c_contiguous for v in m.parameters())
    assert np.abs(values).max() <= 1 / 5
    assert values.min() < -0.19 and values.max() > 0.19  # the whole range is used
    assert abs(values.mean()) < 0.01 and abs(values.var() - (0.4**2) / 12) < 0.002


def test_seed_reproducible_and_generator_accepted():
    a, b = LSTM(4, 6, seed=3), LSTM(4, 6, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    c = LSTM(4, 6, seed=np.random.default_rng(3))
    assert all(np.array_equal(x, y) for x, y in zip(a.parameters(), c.parameters()))
    assert not np.array_equal(LSTM(4, 6, seed=4).weight_ih_l0, a.weight_ih_l0)


@pytest.mark.parametrize(
    "module, text",
    [
        (LSTM(10, 20), "LSTM(10, 20)"),
        (LSTM(10, 20, proj_size=5, num_layers=2, bidirectional=True),
         "LSTM(10, 20, proj_size=5, num_layers=2, bidirectional=True)"),
        (LSTM(10, 20, num_layers=3, bias=False, batch_first=True, dropout=0.2, bidirectional=True),
         "LSTM(10, 20, num_layers=3, bias=False, batch_first=True, dropout=0.2, bidirectional=True)"),
        (GRU(3, 4, dtype=np.float64), "GRU(3, 4, dtype=float64)"),
        (lstmkit.Recurrent("gru", 3, 4, num_layers=2), "Recurrent('gru', 3, 4, num_layers=2)"),
        (LSTMCell(10, 20), "LSTMCell(10, 20)"),
        (RNNCell(10, 20, nonlinearity="relu"), "RNNCell(10, 20, nonlinearity=relu)"),
        (GRUCell(10, 20, bias=False), "GRUCell(10, 20, bias=False)"),
    ],
)
def test_repr(module, text):
    assert repr(module) == text


def test_state_dict_round_trip_and_copies():
    a, b = LSTM(4, 6, num_layers=2, seed=0), LSTM(4, 6, num_layers=2, seed=1)
    sd = a.state_dict()
    sd["weight_ih_l0"][...] = 0  # a copy: the module is unchanged
    assert not np.all(a.weight_ih_l0 == 0)
    b.load_state_dict(a.state_dict())
    assert all(np.array_equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    source = a.state_dict()
    b.load_state_dict(source)
    source["weight_hh_l1"][...] = 7  # loading copies too
    assert not np.any(b.weight_hh_l1 == 7)


def test_load_state_dict_errors_name_keys_and_shapes():
    m = LSTM(4, 6)
    sd = m.state_dict()
    del sd["bias_hh_l0"]
    sd["weight_hr_l0"] = np.zeros((2, 6))
    sd["weight_ih_l0"] = np.zeros((24, 5))
    before = m.state_dict()
    with pytest.raises(RuntimeError) as info:
        m.load_state_dict(sd)
    text = str(info.value)
    assert 'Missing key(s) in state_dict: "bias_hh_l0".' in text
    assert 'Unexpected key(s) in state_dict: "weight_hr_l0".' in text
    assert "size mismatch for weight_ih_l0: copying a param with shape (24, 5) from checkpoint, " \
           "the shape in current model is (24, 4)." in text
    assert all(np.array_equal(before[k], v) for k, v in m.state_dict().items())  # nothing loaded
    sd = before.copy()
    del sd["bias_hh_l0"]
    m.load_state_dict(sd, strict=False)  # missing keys allowed when not strict


def test_parameter_assignment_checks_shape_and_copies():
    m = LSTM(4, 6)
    new = np.ones((24, 4))
    m.weight_ih_l0 = new
    assert m.weight_ih_l0.dtype == np.float32 and np.all(m.weight_ih_l0 == 1)
    new[...] = 2
    assert np.all(m.weight_ih_l0 == 1)
    with pytest.raises(ValueError, match=re.escape("size mismatch for weight_ih_l0: expected shape (24, 4), got (3,)")):
        m.weight_ih_l0 = np.ones(3)


def test_to_double():
    m = LSTM(4, 6).double()
    assert m.dtype == np.float64 and all(p.dtype == np.float64 for p in m.parameters())
    out, _ = m(np.zeros((2, 1, 4)))
    assert out.dtype == np.float64
