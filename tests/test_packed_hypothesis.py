"""Hand-built PackedSequence objects, valid or not, on every backend and against torch.

Every backend must refuse exactly the inconsistent ones (with the same message)
and agree on the others: output, ``h_n``/``c_n`` and ``d_input``.  Where torch
is installed, the valid ones are also run through torch with the same weights.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lstmkit
from lstmkit.registry import available_backends
from lstmkit.utils.rnn import PackedSequence

try:
    import torch
except ImportError:  # the backend comparison still runs
    torch = None

BACKENDS = available_backends()


@st.composite
def hand_built(draw):
    """``(batch_sizes, rows, sorted_indices, unsorted_indices)``, often inconsistent."""
    if draw(st.booleans()):  # from lengths: a consistent batch_sizes
        lengths = sorted(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)), reverse=True)
        batch_sizes = [sum(n > t for n in lengths) for t in range(lengths[0])]
    else:
        batch_sizes = draw(st.lists(st.integers(-1, 4), min_size=0, max_size=5))
    rows = max(0, sum(batch_sizes) + draw(st.sampled_from([0, 0, 0, -1, 1])))
    batch = max(batch_sizes[0], 0) if batch_sizes else 0
    kind = draw(st.sampled_from(["none", "none", "permutation", "permutation", "repeated", "only_unsorted"]))
    sorted_indices = unsorted_indices = None
    if kind != "none":
        perm = draw(st.permutations(range(batch))) if batch else []
        if kind == "repeated" and batch >= 2:
            perm = list(perm)
            perm[draw(st.integers(1, batch - 1))] = perm[0]
        perm = np.array(perm, dtype=np.int64)
        inverse = np.zeros(len(perm), np.int64)
        inverse[perm] = np.arange(len(perm))  # for a repeated index: some inverse, never a valid one
        if kind == "only_unsorted":
            unsorted_indices = inverse
        else:
            sorted_indices, unsorted_indices = perm, inverse
    return np.array(batch_sizes, dtype=np.int64), rows, sorted_indices, unsorted_indices


def is_consistent(batch_sizes, rows, sorted_indices, unsorted_indices) -> bool:
    """Independent statement of what a PackedSequence must satisfy."""
    bs = batch_sizes.tolist()
    if not bs or min(bs) < 1 or sum(bs) != rows:
        return False
    if any(b > a for a, b in zip(bs, bs[1:])):
        return False
    if sorted_indices is None:
        return unsorted_indices is None
    if sorted(sorted_indices.tolist()) != list(range(bs[0])):
        return False
    return all(unsorted_indices[sorted_indices[i]] == i for i in range(bs[0]))


def run(module, packed):
    """``(output data, states, d_input)`` or the ``(type, message)`` of the error."""
    try:
        out, state, backward = module.forward_train(packed)
    except Exception as exc:  # noqa: BLE001 - the error itself is compared
        return type(exc), str(exc)
    states = state if isinstance(state, tuple) else (state,)
    d_x, _, _ = backward(np.cos(out.data))
    return out.data, states, d_x


def torch_run(module, packed):
    mode = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}[module.mode]
    ref = mode(module.input_size, module.hidden_size, num_layers=module.num_layers,
               bidirectional=module.bidirectional, dtype=torch.float64)
    ref.load_state_dict({k: torch.tensor(v) for k, v in module.state_dict().items()})
    as_tensor = lambda a: None if a is None else torch.tensor(a)  # noqa: E731
    data = torch.tensor(packed.data, requires_grad=True)
    ps = torch.nn.utils.rnn.PackedSequence(data, as_tensor(packed.batch_sizes),
                                           as_tensor(packed.sorted_indices), as_tensor(packed.unsorted_indices))
    out, state = ref(ps)
    (out.data * torch.cos(out.data.detach())).sum().backward()
    states = state if isinstance(state, tuple) else (state,)
    return out.data.detach().numpy(), tuple(s.detach().numpy() for s in states), data.grad.numpy()


@settings(max_examples=80, deadline=None)
@given(hand_built(), st.sampled_from(["lstm", "gru"]), st.booleans(), st.integers(1, 2))
def test_hand_built_packed_sequences(fields, cell, bidirectional, num_layers):
    batch_sizes, rows, sorted_indices, unsorted_indices = fields
    data = np.random.default_rng(rows).standard_normal((rows, 2))
    packed = PackedSequence._make((data, batch_sizes, sorted_indices, unsorted_indices))
    modules = [lstmkit.Recurrent(cell, 2, 3, num_layers, bidirectional=bidirectional, dtype=np.float64,
                                 backend=b, seed=0) for b in BACKENDS]
    results = [run(m, packed) for m in modules]
    consistent = is_consistent(*fields)
    reference = results[0]
    for backend, result in zip(BACKENDS, results):
        refused = isinstance(result[0], type)
        assert refused == (not consistent), (backend, fields, result)
        if refused:
            assert result == reference, backend  # the same type and message everywhere
            continue
        np.testing.assert_allclose(result[0], reference[0], rtol=1e-12, atol=1e-12, err_msg=backend)
        for a, b in zip(result[1], reference[1]):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=backend)
        np.testing.assert_allclose(result[2], reference[2], rtol=1e-12, atol=1e-12, err_msg=backend)
    if consistent and torch is not None:
        out, states, d_x = torch_run(modules[0], packed)
        np.testing.assert_allclose(reference[0], out, rtol=1e-10, atol=1e-12)
        for a, b in zip(reference[1], states):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(reference[2], d_x, rtol=1e-10, atol=1e-12)


def test_the_strategy_reaches_both_sides():
    """The property above sees consistent and inconsistent objects (it can fail either way)."""
    seen = set()

    @settings(max_examples=60, deadline=None, database=None)
    @given(hand_built())
    def collect(fields):
        seen.add(is_consistent(*fields))

    collect()
    assert seen == {True, False}


@pytest.mark.skipif(torch is None, reason="needs torch")
def test_torch_silently_drops_rows_we_refuse():
    """Why the validation exists: torch returns 2 output rows for 3 input rows on [2, 0, 1]."""
    data = torch.zeros(3, 2)
    out, _ = torch.nn.LSTM(2, 3)(torch.nn.utils.rnn.PackedSequence(data, torch.tensor([2, 0, 1])))
    assert out.data.shape[0] == 2
    packed = PackedSequence._make((np.zeros((3, 2), np.float32), np.array([2, 0, 1]), None, None))
    with pytest.raises(ValueError, match=r"batch_sizes should be positive"):
        lstmkit.LSTM(2, 3)(packed)
