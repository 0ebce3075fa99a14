"""Linear, Embedding and SequenceModel: shapes, torch-compatible names, and float64 gradient checks."""
import numpy as np
import pytest

import lstmkit
from lstmkit import Embedding, Linear, SequenceModel
from lstmkit.testing import numeric_gradient

try:
    import torch
except ImportError:  # the gradient checks and key-name tests still run
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not importable")
def assert_close(analytic, numeric, what):
    scale = max(1.0, np.abs(numeric).max())
    err = np.abs(analytic - numeric).max() / scale
    assert err < 1e-7, f"{what}: max error {err:.2e}"


# -- Linear and Embedding ---------------------------------------------------------------
def test_linear_forward_init_and_gradients(rng):
    layer = Linear(4, 3, dtype=np.float64, seed=0)
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    assert layer.weight.shape == (3, 4) and np.abs(layer.weight).max() <= 0.5
    x = rng.standard_normal((2, 5, 4))
    y, backward = layer.forward_train(x)
    np.testing.assert_allclose(y, x @ layer.weight.T + layer.bias)
    assert np.array_equal(y, layer(x))
    w = rng.standard_normal(y.shape)
    d_x, grads = backward(w)

    def loss():
        return float((layer(x) * w).sum())

    assert_close(d_x, numeric_gradient(loss, x), "d_x")
    for name, value in layer.named_parameters():
        assert_close(grads[name], numeric_gradient(loss, value), name)


def test_linear_without_bias_and_errors():
    layer = Linear(2, 3, bias=False)
    assert list(layer.state_dict()) == ["weight"] and layer.bias is None
    _, backward = layer.forward_train(np.ones((4, 2), np.float32))
    assert set(backward(np.ones((4, 3), np.float32))[1]) == {"weight"}
    with pytest.raises(RuntimeError, match=r"mat1 and mat2 shapes cannot be multiplied \(4x3 and 2x3\)"):
        layer(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        layer(np.ones((4, 2)))  # float64 input, float32 weights


def test_embedding_forward_gradients_and_errors(rng):
    emb = Embedding(5, 3, dtype=np.float64, seed=0)
    ids = np.array([[0, 4, 4], [2, 0, 1]])
    y, backward = emb.forward_train(ids)
    assert y.shape == (2, 3, 3) and np.array_equal(y[0, 1], emb.weight[4])
    w = rng.standard_normal(y.shape)
    d_none, grads = backward(w)
    assert d_none is None
    assert_close(grads["weight"], numeric_gradient(lambda: float((emb(ids) * w).sum()), emb.weight), "weight")
    assert not grads["weight"][3].any()  # id 3 unused
    with pytest.raises(RuntimeError, match="indices"):
        emb(np.zeros((2, 2)))
    with pytest.raises(IndexError, match="index 5 is out of range"):
        emb(np.array([5]))


def test_layer_init_is_torchs_distribution():
    w = Linear(100, 400, seed=0).weight
    assert np.abs(w).max() <= 0.1 and np.abs(w).max() > 0.099
    e = Embedding(400, 100, seed=0).weight
    assert abs(e.mean()) < 0.02 and abs(e.std() - 1) < 0.02


@needs_torch
def test_layers_match_torch(rng):
    layer = Linear(4, 3, dtype=np.float64, seed=1)
    ref = torch.nn.Linear(4, 3, dtype=torch.float64)
    ref.load_state_dict({k: torch.tensor(v) for k, v in layer.state_dict().items()})
    x = rng.standard_normal((2, 5, 4))
    xt = torch.tensor(x, requires_grad=True)
    w = rng.standard_normal((2, 5, 3))
    (ref(xt) * torch.tensor(w)).sum().backward()
    y, backward = layer.forward_train(x)
    d_x, grads = backward(w)
    np.testing.assert_allclose(y, ref(xt).detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(d_x, xt.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(grads["weight"], ref.weight.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(grads["bias"], ref.bias.grad.numpy(), rtol=1e-12)
    assert repr(Linear(4, 3)) == repr(torch.nn.Linear(4, 3))


# -- SequenceModel ---------------------------------------------------------------------
GRAD_CASES = [
    # (cell, kwargs, tokens, lengths, with_state)
    ("lstm", dict(num_layers=2, bidirectional=True, target="sequence"), False, [4, 2, 3], False),
    ("lstm", dict(bidirectional=True, proj_size=2, target="last"), False, [3, 4, 1], True),
    ("gru", dict(bidirectional=True, target="last"), True, [2, 4, 3], False),
    ("rnn_tanh", dict(num_layers=2, target="sequence"), True, None, True),
    ("lstm", dict(target="last"), True, None, False),
    ("gru", dict(num_layers=2, dropout=0.5, bidirectional=True, target="sequence"), True, [4, 1, 3], False),
]


def make_inputs(model, tokens, rng, batch=3, steps=4):
    if tokens:
        return rng.integers(0, model.vocab_size, (batch, steps))
    return rng.standard_normal((batch, steps, model.input_size))


@pytest.mark.parametrize("cell, kwargs, tokens, lengths, with_state", GRAD_CASES,
                         ids=[f"{c[0]}-{c[1]['target']}-{'tok' if c[2] else 'feat'}-{'packed' if c[3] else 'dense'}"
                              for c in GRAD_CASES])
def test_sequence_model_gradients(backend, cell, kwargs, tokens, lengths, with_state):
    rng = np.random.default_rng(11)
    sizes = dict(vocab_size=5, embedding_size=3) if tokens else dict(input_size=2)
    m = SequenceModel(cell=cell, hidden_size=3, output_size=2, dtype=np.float64, backend=backend, seed=0,
                      **sizes, **kwargs)
    x = make_inputs(m, tokens, rng)
    lengths = None if lengths is None else np.array(lengths)
    state = None
    if with_state:
        shapes = m.rnn._state_shapes(3)
        state = tuple(rng.standard_normal(s) for s in shapes)
        state = state if cell == "lstm" else state[0]

    def run():
        m.rnn.generator = np.random.default_rng(5)  # the same dropout masks on every call
        return m.forward_train(x, lengths, state)

    out, _, backward = run()
    w = rng.standard_normal(out.shape)
    d_params = backward(w)
    assert list(d_params) == list(m.state_dict())

    def loss():
        return float((run()[0] * w).sum())

    for name, value in m.named_parameters():
        assert_close(d_params[name], numeric_gradient(loss, value), name)
    if not tokens:
        assert np.array_equal(x, make_inputs(m, tokens, np.random.default_rng(11)))  # inputs untouched


@pytest.mark.parametrize("target", ["sequence", "last"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_batch_equals_each_sequence_alone(target, bidirectional, rng):
    m = SequenceModel(input_size=2, hidden_size=4, num_layers=2, bidirectional=bidirectional,
                      output_size=3, target=target, dtype=np.float64, seed=1)
    x = rng.standard_normal((3, 5, 2))
    lengths = np.array([2, 5, 3])
    out, state = m(x, lengths, return_state=True)
    for b, n in enumerate(lengths):
        alone, alone_state = m(x[b : b + 1, :n], return_state=True)
        got = out[b] if target == "last" else out[b, :n]
        np.testing.assert_allclose(got, alone[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(state[0][:, b], alone_state[0][:, 0], rtol=1e-12, atol=1e-14)
    if target == "sequence":
        assert not out[0, 2:].any() and not out[2, 3:].any()  # zeros at padding


def test_forward_train_matches_forward_and_shapes(rng):
    m = SequenceModel(vocab_size=7, hidden_size=4, output_size=7, bidirectional=True, seed=0)
    ids = rng.integers(0, 7, (2, 6))
    out, (h, c), backward = m.forward_train(ids, np.array([6, 3]))
    assert out.shape == (2, 6, 7) and out.dtype == np.float32 and h.shape == (2, 2, 4)
    assert np.array_equal(out, m(ids, np.array([6, 3])))
    grads = backward(np.ones_like(out))
    assert all(grads[k].dtype == np.float32 and grads[k].shape == v.shape for k, v in m.named_parameters())
    with pytest.raises(ValueError, match=r"d_outputs should have the outputs' shape \(2, 6, 7\)"):
        backward(np.ones((2, 6, 3)))
    last = SequenceModel(input_size=3, hidden_size=4, output_size=2, target="last", seed=0)
    assert last(rng.standard_normal((5, 8, 3))).shape == (5, 2)


def test_truncated_bptt_state_carries_across_chunks(rng):
    m = SequenceModel(input_size=2, hidden_size=5, num_layers=2, output_size=1, dtype=np.float64, seed=3)
    x = rng.standard_normal((4, 10, 2))
    full = m(x)
    first, state, _ = m.forward_train(x[:, :6])
    second, _, backward = m.forward_train(x[:, 6:], state=state)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), full, rtol=1e-12)
    assert set(backward(np.ones_like(second))) == set(m.state_dict())


def test_state_dict_keys_load_in_place_and_errors():
    m = SequenceModel(vocab_size=5, embedding_size=3, hidden_size=4, output_size=5, seed=0)
    keys = list(m.state_dict())
    assert keys == ["embedding.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0",
                    "rnn.bias_hh_l0", "head.weight", "head.bias"]
    assert m.describe() == [(k, v.shape) for k, v in m.state_dict().items()]
    assert m.num_parameters() == sum(v.size for v in m.state_dict().values())
    arrays = dict(m.named_parameters())
    other = SequenceModel(vocab_size=5, embedding_size=3, hidden_size=4, output_size=5, seed=9)
    m.load_state_dict(other.state_dict())
    assert all(arrays[k] is v for k, v in m.named_parameters())  # in place: an optimizer's arrays stay valid
    assert all(np.array_equal(v, other.state_dict()[k]) for k, v in m.named_parameters())
    bad = other.state_dict()
    bad.pop("head.bias")
    bad["head.weight"] = np.zeros((2, 2))
    bad["extra"] = np.zeros(1)
    before = m.state_dict()
    with pytest.raises(RuntimeError, match=r'(?s)Missing key\(s\).*"head.bias".*Unexpected key\(s\).*"extra".*size mismatch for head.weight'):
        m.load_state_dict(bad)
    assert all(np.array_equal(v, before[k]) for k, v in m.named_parameters())


def test_modes_dtype_seed_and_constructor_errors():
    m = SequenceModel(input_size=2, hidden_size=3, num_layers=2, dropout=0.2, output_size=1, seed=4)
    assert m.eval() is m and not m.rnn.training and not m.head.training
    m.train()
    assert m.rnn.training
    assert all(v.dtype == np.float64 for v in m.to(np.float64).parameters())
    same = SequenceModel(input_size=2, hidden_size=3, num_layers=2, dropout=0.2, output_size=1, seed=4)
    assert all(np.array_equal(a, b.astype(np.float64)) for a, b in zip(m.parameters(), same.parameters()))
    assert m.rnn.generator is m.generator and m.head.generator is m.generator
    with pytest.raises(ValueError, match="exactly one of input_size"):
        SequenceModel(input_size=2, vocab_size=3, hidden_size=3, output_size=1)
    with pytest.raises(ValueError, match="exactly one of input_size"):
        SequenceModel(hidden_size=3, output_size=1)
    with pytest.raises(ValueError, match="embedding_size applies to token inputs"):
        SequenceModel(input_size=2, embedding_size=3, hidden_size=3, output_size=1)
    with pytest.raises(ValueError, match="target must be one of sequence, last"):
        SequenceModel(input_size=2, hidden_size=3, output_size=1, target="first")
    with pytest.raises(lstmkit.registry.LookupFailed, match="valid cells"):
        SequenceModel(cell="nope", input_size=2, hidden_size=3, output_size=1)
    tokens = SequenceModel(vocab_size=4, hidden_size=3, output_size=1)
    assert tokens.embedding.embedding_dim == 3  # default embedding_size = hidden_size
    with pytest.raises(ValueError, match="token inputs should be an integer array"):
        tokens(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"feature inputs should be \(batch, time, 2\)"):
        m(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"lengths should lie in 1\.\.3"):
        m(np.zeros((2, 3, 2)), np.array([4, 1]))


@needs_torch
@pytest.mark.parametrize("tokens", [False, True])
def test_state_dict_loads_into_the_equivalent_torch_module(tokens, rng):
    class TorchModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            if tokens:
                self.embedding = torch.nn.Embedding(6, 3)
            self.rnn = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True)
            self.head = torch.nn.Linear(8, 2)

        def forward(self, x):
            if tokens:
                x = self.embedding(x)
            return self.head(self.rnn(x)[0])

    sizes = dict(vocab_size=6, embedding_size=3) if tokens else dict(input_size=3)
    m = SequenceModel(hidden_size=4, num_layers=2, bidirectional=True, output_size=2, dtype=np.float64, seed=0, **sizes)
    ref = TorchModel().double()
    ref.load_state_dict({k: torch.tensor(v) for k, v in m.state_dict().items()})
    x = rng.integers(0, 6, (2, 5)) if tokens else rng.standard_normal((2, 5, 3))
    np.testing.assert_allclose(m(x), ref(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12)
