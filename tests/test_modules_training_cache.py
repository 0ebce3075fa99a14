"""The training cache owns what it needs (issue 8, Modules items 3-5).

* inputs of any ndarray subclass (``np.memmap``, masked arrays) are not aliased;
* a parameter changed in place between ``forward_train`` and ``backward`` makes
  ``backward`` raise torch's error; the optimizer step *after* backward is normal;
* ``load_state_dict`` checks every value before writing any.
"""
import re

import numpy as np
import pytest

import lstmkit
from lstmkit.model import SequenceModel
from lstmkit.nn.layers import Embedding, Linear
from lstmkit.train.optim import SGD

INPLACE = "one of the variables needed for gradient computation has been modified by an inplace operation"

MODULES = {
    "LSTM": lambda b: lstmkit.LSTM(3, 4, num_layers=2, dtype=np.float64, backend=b, seed=0),
    "GRU": lambda b: lstmkit.GRU(3, 4, bidirectional=True, dtype=np.float64, backend=b, seed=0),
    "LSTMCell": lambda b: lstmkit.LSTMCell(3, 4, dtype=np.float64, backend=b, seed=0),
    "RNNCell": lambda b: lstmkit.RNNCell(3, 4, dtype=np.float64, backend=b, seed=0),
}


def train_step(m, x):
    """``backward`` of one forward_train on ``x`` with fixed upstream gradients."""
    if isinstance(m, lstmkit.RecurrentCell):
        result, backward = m.forward_train(x)
        ones = tuple(np.ones_like(r) for r in result) if isinstance(result, tuple) else np.ones_like(result)
        return lambda: backward(ones)
    out, _, backward = m.forward_train(x)
    return lambda: backward(np.ones_like(out))


def input_for(m, rng):
    return rng.standard_normal((2, 3) if isinstance(m, lstmkit.RecurrentCell) else (5, 2, 3))


def assert_same(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    for name in a[2]:
        np.testing.assert_array_equal(a[2][name], b[2][name])


@pytest.mark.parametrize("kind", ["memmap", "masked"])
@pytest.mark.parametrize("name", list(MODULES))
def test_ndarray_subclass_inputs_are_not_aliased(backend, name, kind, tmp_path):
    m = MODULES[name](backend)
    plain = input_for(m, np.random.default_rng(0))
    if kind == "memmap":
        x = np.memmap(tmp_path / "x.dat", dtype=np.float64, mode="w+", shape=plain.shape)
        x[...] = plain
    else:
        x = np.ma.masked_array(plain.copy(), mask=np.zeros(plain.shape, bool))
    expected = train_step(m, plain)()
    backward = train_step(m, x)
    x[...] = 5.0  # after forward_train: must not reach the gradients
    assert_same(backward(), expected)


def test_linear_and_embedding_own_their_inputs(tmp_path):
    rng = np.random.default_rng(1)
    layer = Linear(3, 2, dtype=np.float64, seed=0)
    x = np.memmap(tmp_path / "x.dat", dtype=np.float64, mode="w+", shape=(4, 3))
    x[...] = rng.standard_normal((4, 3))
    expected = layer.forward_train(np.array(x))[1](np.ones((4, 2)))
    y, backward = layer.forward_train(x)
    x[...] = 0.0
    got = backward(np.ones((4, 2)))
    np.testing.assert_array_equal(got[1]["weight"], expected[1]["weight"])
    emb = Embedding(5, 2, seed=0)
    ids = np.array([[0, 1], [2, 3]])
    _, backward = emb.forward_train(ids)
    ids[...] = 4
    assert np.count_nonzero(backward(np.ones((2, 2, 2), np.float32))[1]["weight"][:4].sum(axis=1)) == 4


@pytest.mark.parametrize("name", list(MODULES))
def test_in_place_parameter_change_before_backward_raises(backend, name):
    m = MODULES[name](backend)
    x = input_for(m, np.random.default_rng(2))
    for param in dict(m.named_parameters()):
        backward = train_step(m, x)
        getattr(m, param)[0] += 0.5  # what an optimizer step before backward does
        with pytest.raises(RuntimeError, match=re.escape(INPLACE) + f": {param} \\["):
            backward()
        getattr(m, param)[0] -= 0.5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sign_flips_before_backward_raise(backend, dtype):
    # A float64's sign is bit 63 of its word: flipping an even number of signs added 2**63 an even
    # number of times, which a wrapping sum of the words did not see (`w *= -1` went unnoticed).
    m = lstmkit.LSTM(3, 4, dtype=dtype, backend=backend, seed=0)
    x = input_for(m, np.random.default_rng(4)).astype(dtype)
    for flip in (lambda w: w.__imul__(-1), lambda w: w[:2].__imul__(-1)):
        backward = train_step(m, x)
        flip(m.weight_hh_l0)
        with pytest.raises(RuntimeError, match=re.escape(INPLACE) + ": weight_hh_l0"):
            backward()
    m.weight_hh_l0[0, 0] = np.nan  # a diverged model: unchanged NaNs are no change
    train_step(m, x)()


def test_load_state_dict_before_backward_raises(backend):
    m = MODULES["LSTM"](backend)
    backward = train_step(m, input_for(m, np.random.default_rng(3)))
    m.load_state_dict(MODULES["LSTM"]("numpy").state_dict() | {"bias_hh_l1": np.zeros(16)})
    with pytest.raises(RuntimeError, match=re.escape(INPLACE) + ": bias_hh_l1 \\[16\\] float64 changed"):
        backward()


def test_assigning_a_new_parameter_array_keeps_the_old_gradients(backend):
    """Assignment replaces the array; the cache still holds the one the forward read."""
    m = MODULES["GRU"](backend)
    x = input_for(m, np.random.default_rng(4))
    expected = train_step(m, x)()
    backward = train_step(m, x)
    m.weight_hh_l0 = np.zeros_like(m.weight_hh_l0)
    assert_same(backward(), expected)


def test_optimizer_step_after_backward_is_normal(backend):
    m = lstmkit.LSTM(3, 4, dtype=np.float64, backend=backend, seed=0)
    opt = SGD(dict(m.named_parameters()), lr=0.1)
    x = np.random.default_rng(5).standard_normal((5, 2, 3))
    before = m(x)[0]
    out, _, backward = m.forward_train(x)
    _, _, grads = backward(np.ones_like(out))
    again = backward(np.ones_like(out))[2]  # backward is repeatable before the step
    opt.step(grads)  # in place, after backward
    after = m(x)[0]
    assert not np.allclose(before, after)
    out2, _, backward2 = m.forward_train(x)  # a new forward sees the new weights
    np.testing.assert_array_equal(out2, after)
    backward2(np.ones_like(out2))
    assert all(np.array_equal(again[k], grads[k]) for k in grads)
    with pytest.raises(RuntimeError, match=re.escape(INPLACE)):
        backward(np.ones_like(out))  # the old forward's weights are gone


def test_sequence_model_guards_every_part():
    m = SequenceModel(vocab_size=7, hidden_size=4, output_size=3, seed=0, dtype=np.float64)
    ids = np.array([[1, 2, 3], [4, 5, 6]])
    for name in ("head.weight", "rnn.weight_ih_l0"):
        y, _, backward = m.forward_train(ids)
        dict(m.named_parameters())[name][...] *= 2
        with pytest.raises(RuntimeError, match=re.escape(INPLACE)):
            backward(np.ones_like(y))
    y, _, backward = m.forward_train(ids)
    dict(m.named_parameters())["embedding.weight"][...] *= 2  # its backward reads no weight
    assert set(backward(np.ones_like(y))) == set(m.state_dict())


# -- load_state_dict: everything checked before anything is written -----------------------

BAD_VALUES = [
    (np.array([None] * 16, dtype=object), "expected an array of real numbers, got dtype object"),
    (None, "expected an array of numbers, got None"),
    (np.array(["x"] * 16), "expected an array of real numbers, got dtype <U1"),
    (np.zeros(16, np.complex128), "expected an array of real numbers, got dtype complex128"),
]


@pytest.mark.parametrize("value, reason", BAD_VALUES)
def test_load_state_dict_is_all_or_nothing(value, reason):
    m = lstmkit.LSTM(3, 4, seed=0)
    before = m.state_dict()
    new = lstmkit.LSTM(3, 4, seed=1).state_dict()
    new["bias_hh_l0"] = value  # the last parameter: the others would be written first
    message = (f'Error(s) in loading state_dict for LSTM:\n\tWhile copying the parameter named "bias_hh_l0", '
               f"{reason}.")
    with pytest.raises(RuntimeError, match="^" + re.escape(message) + "$"):
        m.load_state_dict(new)
    assert all(np.array_equal(v, before[k]) for k, v in m.state_dict().items())


def test_load_state_dict_reports_every_problem_and_accepts_numbers():
    m = lstmkit.GRU(2, 3, seed=0)
    before = m.state_dict()
    bad = dict(before, weight_ih_l0=[[1, 2]], bias_ih_l0=None, extra=np.ones(1))
    del bad["weight_hh_l0"]
    with pytest.raises(RuntimeError) as info:
        m.load_state_dict(bad)
    assert str(info.value).split("\n\t")[1:] == [
        'Missing key(s) in state_dict: "weight_hh_l0".',
        'Unexpected key(s) in state_dict: "extra".',
        "size mismatch for weight_ih_l0: copying a param with shape (1, 2) from checkpoint, "
        "the shape in current model is (9, 2).",
        'While copying the parameter named "bias_ih_l0", expected an array of numbers, got None.',
    ]
    assert all(np.array_equal(v, before[k]) for k, v in m.state_dict().items())
    with pytest.raises(TypeError, match=r"^Expected state_dict to be dict-like, got <class 'list'>\.$"):
        m.load_state_dict([])
    # Lists, ints and bools are numbers: cast like torch's copy_.
    m.load_state_dict({k: v.astype(np.int64).tolist() for k, v in before.items()} | {"bias_hh_l0": np.ones(9, bool)})
    assert m.bias_hh_l0.dtype == np.float32 and np.all(m.bias_hh_l0 == 1)


def test_assignment_refuses_what_is_not_real_numbers():
    m = lstmkit.GRU(2, 3, seed=0)
    before = m.bias_hh_l0.copy()
    with pytest.raises(TypeError, match=r"^cannot assign to parameter bias_hh_l0: expected an array of real "
                                        r"numbers, got dtype object$"):
        m.bias_hh_l0 = np.array([None] * 9, dtype=object)  # NumPy would cast None to NaN
    with pytest.raises(TypeError, match=r"^cannot assign to parameter bias_hh_l0: expected an array of numbers, got None$"):
        m.bias_hh_l0 = None
    np.testing.assert_array_equal(m.bias_hh_l0, before)
    m.bias_hh_l0 = [1] * 9
    assert m.bias_hh_l0.dtype == np.float32 and np.all(m.bias_hh_l0 == 1)


def test_load_state_dict_returns_the_incompatible_keys_like_torch():
    # torch returns a named tuple: `missing, unexpected = m.load_state_dict(sd, strict=False)` is common.
    m = lstmkit.LSTM(3, 4, seed=0)
    sd = m.state_dict()
    result = m.load_state_dict({"weight_ih_l0": sd["weight_ih_l0"], "extra": np.zeros(2)}, strict=False)
    missing, unexpected = result
    assert missing == ["weight_hh_l0", "bias_ih_l0", "bias_hh_l0"] and unexpected == ["extra"]
    assert result.missing_keys == missing and result.unexpected_keys == unexpected
    complete = m.load_state_dict(sd)
    assert tuple(complete) == ([], []) and repr(complete) == "<All keys matched successfully>"
