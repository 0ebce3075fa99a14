"""One validation for every PackedSequence consumer (issue 8, Modules items 1, 2, 7)."""
import re

import numpy as np
import pytest

import lstmkit
from lstmkit.utils.rnn import (
    PackedSequence,
    check_packed_sequence,
    invert_permutation,
    pack_sequence,
    pad_packed_sequence,
)


def raises(exc, message):
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


def hand_built(batch_sizes, rows, sorted_indices=None, unsorted_indices=None, width=3):
    """A PackedSequence built field by field, as ``_replace`` or ``tuple.__new__`` would."""
    data = np.ones((rows, width), np.float32)
    return PackedSequence._make((data, batch_sizes, sorted_indices, unsorted_indices))


BAD = [
    (np.array([2, 0, 1]), 3, None, None,
     "batch_sizes should be positive, but batch_sizes[1] is 0 (batch_sizes=[2, 0, 1])"),
    (np.array([2, 1, -1]), 2, None, None,
     "batch_sizes should be positive, but batch_sizes[2] is -1 (batch_sizes=[2, 1, -1])"),
    (np.array([1, 2, 1]), 4, None, None,
     "batch_sizes should be non-increasing, but batch_sizes[1] = 2 > batch_sizes[0] = 1 (batch_sizes=[1, 2, 1])"),
    (np.array([2, 1]), 4, None, None, "batch_sizes sum to 3, but data has 4 rows; they should be equal"),
    (np.array([2, 2, 1]), 4, None, None, "batch_sizes sum to 5, but data has 4 rows; they should be equal"),
    (np.array([2, 2], np.int32), 4, None, None, "batch_sizes should be an int64 array, got int32"),
    ([2, 2], 4, None, None, "batch_sizes should be a numpy array, got list"),
    (np.array([2, 2]), 4, np.array([0, 0]), np.array([1, 1]),
     "sorted_indices: expected a permutation of 0..1, got [0, 0] (a repeated index)"),
    (np.array([2, 2]), 4, np.array([0, 2]), np.array([0, 1]),
     "sorted_indices: expected a permutation of 0..1, got [0, 2]"),
    (np.array([2, 2]), 4, np.array([0, 1, 2]), np.array([0, 1, 2]),
     "sorted_indices should be an int64 array of shape (2,) (batch_sizes[0]), got int64 (3,)"),
    (np.array([2, 2]), 4, np.array([1, 0]), np.array([0, 1]),
     "unsorted_indices should be the inverse of sorted_indices, [1, 0], got [0, 1]"),
    (np.array([2, 2]), 4, np.array([1, 0]), np.array([0, 0]),
     "unsorted_indices should be the inverse of sorted_indices, [1, 0], got [0, 0]"),
    (np.array([2, 2]), 4, np.array([1, 0]), None,
     "unsorted_indices should be an int64 array of shape (2,) (batch_sizes[0]), got NoneType"),
    (np.array([2, 2]), 4, None, np.array([1, 0]), "unsorted_indices should be None when sorted_indices is None"),
]


@pytest.mark.parametrize("batch_sizes, rows, sorted_indices, unsorted_indices, message", BAD)
def test_every_consumer_refuses_an_inconsistent_packed_sequence(
        backend, batch_sizes, rows, sorted_indices, unsorted_indices, message):
    packed = hand_built(batch_sizes, rows, sorted_indices, unsorted_indices)
    with raises(ValueError, message):
        check_packed_sequence(packed)
    with raises(ValueError, message):
        pad_packed_sequence(packed)
    for module in (lstmkit.LSTM(3, 4, backend=backend), lstmkit.GRU(3, 4, backend=backend)):
        with raises(ValueError, message):
            module(packed)
        with raises(ValueError, message):
            module.forward_train(packed)


def test_empty_batch_sizes_use_torchs_message(backend):
    packed = hand_built(np.zeros(0, np.int64), 0)
    with raises(RuntimeError, "batch_sizes can not be empty"):
        lstmkit.RNN(3, 4, backend=backend)(packed)


def test_the_module_checks_before_the_backend(monkeypatch):
    """No backend sees a bad PackedSequence: the check runs in the engine's layout."""
    m = lstmkit.LSTM(3, 4, backend="numpy")
    seen = []
    monkeypatch.setattr(type(m.backend), "layer_forward", lambda *a, **k: seen.append(a))
    with pytest.raises(ValueError, match="batch_sizes sum to 3"):
        m(hand_built(np.array([2, 1]), 4))
    assert not seen


def test_reference_backend_guards_direct_calls():
    from lstmkit.backends import ReferenceBackend
    from lstmkit.registry import get_cell

    b, cell = ReferenceBackend(), get_cell("rnn_tanh")
    params = {"weight_ih": np.ones((4, 3)), "weight_hh": np.ones((4, 4))}
    with raises(ValueError, "batch_sizes sum to 3, but data has 4 rows; they should be equal"):
        b.layer_forward(cell, params, np.ones((4, 3)), np.array([2, 1]), False, (np.zeros((2, 4)),), False)
    with raises(ValueError, "batch_sizes[0] is 2, but state0 has 3 rows"):
        b.layer_forward(cell, params, np.ones((4, 3)), np.array([2, 2]), False, (np.zeros((3, 4)),), False)
    # A dense batch of zero sequences still runs (zeros allowed there, not in a PackedSequence).
    y, (h,), _ = b.layer_forward(cell, params, np.ones((0, 3)), np.array([0, 0]), False, (np.zeros((0, 4)),), False)
    assert y.shape == (0, 4) and h.shape == (0, 4)


def test_valid_hand_built_packed_sequence_runs_like_a_packed_one(backend):
    rng = np.random.default_rng(0)
    seqs = [rng.standard_normal((n, 3)) for n in (2, 4, 3)]
    packed = pack_sequence(seqs, enforce_sorted=False)
    again = hand_built(packed.batch_sizes.copy(), len(packed.data), packed.sorted_indices.copy(),
                       packed.unsorted_indices.copy())
    again = again._replace(data=packed.data.copy())
    m = lstmkit.LSTM(3, 4, dtype=np.float64, backend=backend, seed=0)
    (a, (ha, ca)), (b, (hb, cb)) = m(packed), m(again)
    assert np.array_equal(a.data, b.data) and np.array_equal(ha, hb) and np.array_equal(ca, cb)


def test_invert_permutation_refuses_non_permutations():
    with raises(ValueError, "expected a permutation of 0..1, got [0, 0] (a repeated index)"):
        invert_permutation([0, 0])
    with raises(ValueError, "expected a permutation of 0..2, got [0, 3, 1]"):
        invert_permutation([0, 3, 1])
    with raises(ValueError, "expected a permutation of 0..1, got [-1, 0]"):
        invert_permutation([-1, 0])
    with raises(ValueError, "expected a 1D integer permutation, got a 2D int64 array"):
        invert_permutation(np.zeros((1, 2), np.int64))
    assert invert_permutation([]).shape == (0,)
    # The constructor inverts sorted_indices, so a duplicate is refused when built.
    with raises(ValueError, "expected a permutation of 0..2, got [0, 0, 1] (a repeated index)"):
        PackedSequence(np.ones((3, 1)), [3], [0, 0, 1])


def test_packed_sequence_integer_casts_like_torch():
    ps = pack_sequence([np.array([1.5, 300.0]), np.array([-2.0])])
    for method, dtype in (("byte", np.uint8), ("char", np.int8), ("short", np.int16)):
        converted = getattr(ps, method)()
        assert type(converted) is PackedSequence and converted.data.dtype == dtype
        assert converted.batch_sizes is ps.batch_sizes
        np.testing.assert_array_equal(converted.data, ps.data.astype(dtype))
        assert getattr(converted, method)() is converted
