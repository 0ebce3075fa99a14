"""lstmkit.utils.rnn: the torch.nn.utils.rnn 2.13 contract on NumPy arrays."""

import re

import numpy as np
import pytest

from lstmkit.utils import rnn
from lstmkit.utils.rnn import (
    PackedSequence,
    invert_permutation,
    pack_padded_sequence,
    pack_sequence,
    pad_packed_sequence,
    pad_sequence,
    unpack_sequence,
    unpad_sequence,
)

SORTED_MSG = (
    "`lengths` array must be sorted in decreasing order when `enforce_sorted` is True. "
    "You can pass `enforce_sorted=False` to pack_padded_sequence and/or pack_sequence to "
    "sidestep this requirement if you do not need ONNX exportability."
)
NONPOSITIVE_MSG = (
    "Length of all samples has to be greater than 0, but found an element in 'lengths' "
    "that is <= 0"
)


def raises(exc, message):
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


def padded_batch(lengths, feature_shape=(), batch_first=False, seed=0, dtype=np.float64):
    """Random sequences with the given lengths, and their zero-padded batch."""
    rng = np.random.default_rng(seed)
    seqs = [rng.standard_normal((n, *feature_shape)).astype(dtype) for n in lengths]
    return seqs, pad_sequence(seqs, batch_first=batch_first)


def assert_same_list(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and g.flags.c_contiguous
        np.testing.assert_array_equal(g, e)


# --- docstring examples -------------------------------------------------------


def test_docstring_abc_x():
    packed = pack_sequence([np.array(list("abc")), np.array(list("x"))])
    assert "".join(packed.data) == "axbc"
    np.testing.assert_array_equal(packed.batch_sizes, [2, 1, 1])


def test_docstring_pack_sequence():
    seqs = [np.array([1, 2, 3]), np.array([4, 5]), np.array([6])]
    packed = pack_sequence(seqs)
    np.testing.assert_array_equal(packed.data, [1, 4, 6, 2, 5, 3])
    np.testing.assert_array_equal(packed.batch_sizes, [3, 2, 1])
    assert packed.batch_sizes.dtype == np.int64
    assert packed.sorted_indices is None and packed.unsorted_indices is None
    assert_same_list(unpack_sequence(packed), seqs)


def test_docstring_pad_packed_sequence_unsorted():
    seq = np.array([[1, 2, 0], [3, 0, 0], [4, 5, 6]])
    packed = pack_padded_sequence(seq, [2, 1, 3], batch_first=True, enforce_sorted=False)
    np.testing.assert_array_equal(packed.data, [4, 1, 3, 5, 2, 6])
    np.testing.assert_array_equal(packed.batch_sizes, [3, 2, 1])
    np.testing.assert_array_equal(packed.sorted_indices, [2, 0, 1])
    np.testing.assert_array_equal(packed.unsorted_indices, [1, 2, 0])
    padded, lengths = pad_packed_sequence(packed, batch_first=True)
    np.testing.assert_array_equal(padded, seq)
    np.testing.assert_array_equal(lengths, [2, 1, 3])
    assert lengths.dtype == np.int64


def test_pad_sequence_sides():
    seqs = [np.array([1, 2, 3]), np.array([4, 5]), np.array([6])]
    np.testing.assert_array_equal(
        pad_sequence(seqs, batch_first=True, padding_side="left"),
        [[1, 2, 3], [0, 4, 5], [0, 0, 6]],
    )
    np.testing.assert_array_equal(
        pad_sequence(seqs, batch_first=True), [[1, 2, 3], [4, 5, 0], [6, 0, 0]]
    )
    np.testing.assert_array_equal(
        pad_sequence(seqs, padding_value=-1), [[1, 4, 6], [2, 5, -1], [3, -1, -1]]
    )
    assert pad_sequence([np.ones((25, 300)), np.ones((22, 300)), np.ones((15, 300))]).shape == (
        25, 3, 300)


# --- round trips, ordering, layout ---------------------------------------------


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("feature_shape", [(), (3,), (2, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_round_trip_sorted(batch_first, feature_shape, dtype):
    lengths = [5, 5, 3, 1]
    seqs, padded = padded_batch(lengths, feature_shape, batch_first, dtype=dtype)
    assert padded.shape == ((4, 5) if batch_first else (5, 4)) + feature_shape
    packed = pack_padded_sequence(padded, lengths, batch_first=batch_first)
    assert packed.data.shape == (sum(lengths), *feature_shape)
    assert packed.data.dtype == dtype and packed.data.flags.c_contiguous
    np.testing.assert_array_equal(packed.batch_sizes, [4, 3, 3, 2, 2])
    np.testing.assert_array_equal(packed.data[:4], [s[0] for s in seqs])
    out, out_lengths = pad_packed_sequence(packed, batch_first=batch_first)
    assert out.dtype == dtype and out.flags.c_contiguous
    np.testing.assert_array_equal(out, padded)
    np.testing.assert_array_equal(out_lengths, lengths)
    assert_same_list(unpack_sequence(packed), seqs)
    assert_same_list(unpad_sequence(padded, lengths, batch_first=batch_first), seqs)


@pytest.mark.parametrize("batch_first", [False, True])
def test_unsorted_restores_original_order(batch_first):
    lengths = [2, 3, 2, 3, 1, 3]
    seqs, padded = padded_batch(lengths, (2,), batch_first)
    packed = pack_padded_sequence(padded, lengths, batch_first=batch_first, enforce_sorted=False)
    np.testing.assert_array_equal(packed.sorted_indices, [1, 3, 5, 0, 2, 4])  # stable ties
    np.testing.assert_array_equal(packed.unsorted_indices, [3, 0, 4, 1, 5, 2])
    assert packed.sorted_indices.dtype == packed.unsorted_indices.dtype == np.int64
    np.testing.assert_array_equal(packed.batch_sizes, [6, 5, 3])
    np.testing.assert_array_equal(packed.data[:6], [seqs[i][0] for i in [1, 3, 5, 0, 2, 4]])
    out, out_lengths = pad_packed_sequence(packed, batch_first=batch_first)
    np.testing.assert_array_equal(out, padded)
    np.testing.assert_array_equal(out_lengths, lengths)
    assert_same_list(unpack_sequence(pack_sequence(seqs, enforce_sorted=False)), seqs)


def test_padding_value_and_total_length():
    seqs, padded = padded_batch([3, 1], (2,))
    packed = pack_padded_sequence(padded, [3, 1])
    out, _ = pad_packed_sequence(packed, padding_value=-7.5, total_length=5)
    assert out.shape == (5, 2, 2)
    np.testing.assert_array_equal(out[:3, 0], seqs[0])
    np.testing.assert_array_equal(out[0, 1], seqs[1][0])
    assert (out[3:] == -7.5).all() and (out[1:, 1] == -7.5).all()
    out_bf, _ = pad_packed_sequence(packed, batch_first=True, total_length=4)
    assert out_bf.shape == (2, 4, 2)
    out, _ = pad_packed_sequence(packed, total_length=3)  # equal to the longest: fine
    assert out.shape == (3, 2, 2)


def test_lengths_forms():
    x = np.arange(12.0).reshape(4, 3)
    expected = pack_padded_sequence(x, [3, 2, 1])
    for lengths in ([3.7, 2, 1], np.array([3, 2, 1], np.int32), np.array([3.2, 2.9, 1.0]),
                    (3, 2, 1)):
        packed = pack_padded_sequence(x, lengths)
        np.testing.assert_array_equal(packed.data, expected.data)
        np.testing.assert_array_equal(packed.batch_sizes, expected.batch_sizes)


def test_non_contiguous_input():
    base = np.arange(60.0).reshape(5, 4, 3)
    x = base[::2, :, ::2].transpose(1, 0, 2)  # (4, 3, 2), strided
    assert not x.flags.c_contiguous
    packed = pack_padded_sequence(x, [4, 1, 2], batch_first=False, enforce_sorted=False)
    ref = pack_padded_sequence(np.ascontiguousarray(x), [4, 1, 2], enforce_sorted=False)
    np.testing.assert_array_equal(packed.data, ref.data)
    assert packed.data.flags.c_contiguous
    out, _ = pad_packed_sequence(packed)
    np.testing.assert_array_equal(out[:, 0], x[:, 0])
    parts = unpad_sequence(x, [4, 2, 1])
    assert all(p.flags.c_contiguous for p in parts)
    np.testing.assert_array_equal(parts[1], x[:2, 1])


def test_pad_sequence_broadcasts_like_torch():
    out = pad_sequence([np.ones((3, 3)), np.full((2, 1), 2.0), np.full((1,), 4.0)])
    assert out.shape == (3, 3, 3)
    np.testing.assert_array_equal(out[:2, 1], 2.0)
    np.testing.assert_array_equal(out[:, 2], [[4, 4, 4], [0, 0, 0], [0, 0, 0]])
    # dtype is the first sequence's; later ones are cast into it
    out = pad_sequence([np.ones(2, np.int64), np.array([1.5])])
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [[1, 1], [1, 0]])
    # zero-length sequences pad fine; a 2-D array is a sequence of rows
    assert pad_sequence([np.ones((0, 2)), np.ones((0, 2))]).shape == (0, 2, 2)
    np.testing.assert_array_equal(
        pad_sequence(np.arange(6).reshape(2, 3)), [[0, 3], [1, 4], [2, 5]])


def test_unpad_sequence_lengths():
    padded = np.arange(6.0).reshape(3, 2)
    parts = unpad_sequence(padded, np.array([-1, 3]))
    assert parts[0].shape == (0,)
    np.testing.assert_array_equal(parts[1], [1, 3, 5])
    parts = unpad_sequence(padded, [1.5, 2])  # mask `step < length`, like torch
    np.testing.assert_array_equal(parts[0], [0, 2])


# --- PackedSequence -------------------------------------------------------------


def test_packed_sequence_constructor():
    ps = PackedSequence(np.ones(3), [2, 1], np.array([1, 0]))
    assert isinstance(ps, tuple) and ps._fields == (
        "data", "batch_sizes", "sorted_indices", "unsorted_indices")
    assert ps.batch_sizes.dtype == np.int64
    np.testing.assert_array_equal(ps.unsorted_indices, [1, 0])
    ps = PackedSequence((np.ones(3), np.array([2, 1], np.int32)))
    assert ps.batch_sizes.dtype == np.int64 and ps.sorted_indices is None
    data, batch_sizes, sorted_indices, unsorted_indices = ps
    assert unsorted_indices is None
    assert repr(ps).startswith("PackedSequence(data=array(")
    with raises(AssertionError, "Expected data to be a list or tuple of length 2"):
        PackedSequence(np.ones(3))
    for bad, desc in ((np.array([2.0, 1.0]), "1D float64"), (np.array([[2, 1]]), "2D int64")):
        with pytest.raises(ValueError, match=re.escape(
                f"batch_sizes should be a 1D integer array, but got a {desc} array.")):
            PackedSequence(np.ones(3), bad)


def test_packed_sequence_conversions():
    ps = pack_sequence([np.array([1.0, 2.0]), np.array([3.0])], enforce_sorted=False)
    assert ps.double() is ps and ps.cpu() is ps
    assert not ps.is_cuda and not ps.is_pinned()
    for method, dtype in (("float", np.float32), ("half", np.float16), ("long", np.int64),
                          ("int", np.int32), ("double", np.float64)):
        converted = getattr(ps, method)()
        assert type(converted) is PackedSequence and converted.data.dtype == dtype
        assert converted.batch_sizes is ps.batch_sizes
        assert converted.sorted_indices is ps.sorted_indices
    assert ps.to(np.float32).data.dtype == np.float32


def test_invert_permutation():
    assert invert_permutation(None) is None
    perm = np.array([2, 0, 3, 1])
    inv = invert_permutation(perm)
    assert inv.dtype == np.int64
    np.testing.assert_array_equal(inv[perm], np.arange(4))
    np.testing.assert_array_equal(invert_permutation([1, 2, 0]), [2, 0, 1])


# --- errors ---------------------------------------------------------------------


def test_pack_padded_sequence_errors():
    x = np.arange(12.0).reshape(4, 3)
    with raises(RuntimeError, SORTED_MSG):
        pack_padded_sequence(x, [2, 3, 1])
    with raises(RuntimeError, SORTED_MSG):
        pack_padded_sequence(x, [0, 2, 1])  # like torch: only the last length is checked first
    with raises(RuntimeError, SORTED_MSG):
        pack_sequence([np.ones(1), np.ones(2)])
    with raises(RuntimeError, NONPOSITIVE_MSG):
        pack_padded_sequence(x, [3, 2, 0])
    with raises(RuntimeError, NONPOSITIVE_MSG):
        pack_padded_sequence(x, [0, 3, 1], enforce_sorted=False)
    with raises(RuntimeError, NONPOSITIVE_MSG):
        pack_sequence([np.ones(2), np.ones(0)])
    with raises(RuntimeError, "Expected `len(lengths)` to be equal to batch_size, but got 2 "
                              "(batch_size=3)"):
        pack_padded_sequence(x, [3, 2])
    with raises(RuntimeError, "Expected `len(lengths)` to be equal to batch_size, but got 4 "
                              "(batch_size=3)"):
        pack_padded_sequence(x, [3, 2, 1, 1])
    with raises(RuntimeError, "Expected `len(lengths)` to be equal to batch_size, but got 3 "
                              "(batch_size=4)"):
        pack_padded_sequence(x, [3, 2, 1], batch_first=True)
    for empty in (np.zeros((0, 3)), np.zeros((3, 0)), np.zeros(0)):
        with raises(RuntimeError, "Cannot pack empty tensors."):
            pack_padded_sequence(empty, [1, 1, 1])
    with raises(RuntimeError, "'lengths' argument should be a 1D int64 array, but got a 2D array"):
        pack_padded_sequence(x, [[3, 2, 1]])
    with raises(RuntimeError, "'lengths' argument should be a 1D int64 array, but got a 0D array"):
        pack_padded_sequence(x, 3)
    for batch_first in (False, True):
        with raises(IndexError,
                    "Dimension out of range (expected to be in range of [-1, 0], but got 1)"):
            pack_padded_sequence(np.arange(3.0), [1, 1, 1], batch_first=batch_first)


def test_pad_packed_sequence_errors():
    packed = pack_padded_sequence(np.ones((4, 3)), [3, 2, 1])
    with raises(ValueError, "Expected total_length to be at least the length of the longest "
                            "sequence in input, but got total_length=2 and max sequence length "
                            "being 3"):
        pad_packed_sequence(packed, total_length=2)
    with raises(RuntimeError, "batch_sizes can not be empty"):
        pad_packed_sequence(PackedSequence(np.ones(0), np.zeros(0, np.int64)))
    ints = pack_sequence([np.array([1, 2]), np.array([3])])
    np.testing.assert_array_equal(pad_packed_sequence(ints, padding_value=0.5)[0], [[1, 3], [2, 0]])
    for value in (np.nan, np.inf, 1e30):
        with raises(RuntimeError, "value cannot be converted to type int64 without overflow"):
            pad_packed_sequence(ints, padding_value=value)
    with raises(RuntimeError, "value cannot be converted to type uint8 without overflow"):
        pad_sequence([np.ones(2, np.uint8), np.ones(1, np.uint8)], padding_value=300)


def test_pad_sequence_errors():
    with raises(RuntimeError, "received an empty list of sequences"):
        pad_sequence([])
    with raises(RuntimeError, "received an empty list of sequences"):
        pad_sequence([], padding_side="middle")
    with raises(RuntimeError, "received an empty list of sequences"):
        pack_sequence([])
    with raises(RuntimeError, "Expected padding_side to be one of left or right, but got middle."):
        pad_sequence([np.ones(2)], padding_side="middle")
    with raises(RuntimeError, "pad_sequence: Expected iterable for input sequences, but got arg "
                              "of type: <class 'int'>"):
        pad_sequence(3)
    for batch_first in (False, True):
        with raises(RuntimeError, "The size of tensor a (2) must match the size of tensor b (3) "
                                  "at non-singleton dimension 1"):
            pad_sequence([np.ones((3, 2)), np.ones((2, 3))], batch_first=batch_first)
    with raises(RuntimeError, "output with shape [2, 1] doesn't match the broadcast shape [2, 3]"):
        pad_sequence([np.ones((3, 1)), np.ones((2, 3))])
    with raises(RuntimeError, "output with shape [2, 2] doesn't match the broadcast shape "
                              "[2, 2, 2]"):
        pad_sequence([np.ones((3, 2)), np.ones((2, 2, 2))])
    with raises(IndexError, "Dimension specified as 0 but tensor has no dimensions"):
        pad_sequence([np.ones(2), np.array(1.0)])


def test_unpad_sequence_length_mismatch():
    with raises(ValueError, "zip() argument 2 is longer than argument 1"):
        unpad_sequence(np.zeros((3, 2)), np.array([1, 1, 1]))


# --- deliberate deviations ------------------------------------------------------


def test_deviation_lengths_longer_than_T_raises():
    x = np.ones((4, 3))
    msg = ("Length of all samples has to be at most the padded sequence length T=4, "
           "but found an element in 'lengths' equal to 5")
    with raises(ValueError, msg):
        pack_padded_sequence(x, [5, 2, 1])
    with raises(ValueError, msg):
        pack_padded_sequence(x, [2, 5, 1], enforce_sorted=False)
    with raises(ValueError, msg):
        pack_padded_sequence(x.T, [2, 5, 1], batch_first=True, enforce_sorted=False)


def test_deviation_unsorted_length_mismatch_raises():
    x = np.ones((4, 3))
    for lengths in ([3, 2], [3, 2, 1, 1]):
        with raises(RuntimeError, f"Expected `len(lengths)` to be equal to batch_size, but got "
                                  f"{len(lengths)} (batch_size=3)"):
            pack_padded_sequence(x, lengths, enforce_sorted=False)
    with raises(RuntimeError, "'lengths' argument should be a 1D int64 array, but got a 2D array"):
        pack_padded_sequence(x, [[3, 2, 1]], enforce_sorted=False)


@pytest.mark.parametrize("batch_first", [False, True])
def test_no_caller_array_is_mutated(batch_first):
    lengths = np.array([1, 3, 2])
    seqs, padded = padded_batch(lengths, (2,), batch_first)
    snapshots = [a.copy() for a in (lengths, padded, *seqs)]
    packed = pack_padded_sequence(padded, lengths, batch_first, enforce_sorted=False)
    pack_sequence(seqs, enforce_sorted=False)
    pad_sequence(seqs, batch_first=batch_first, padding_side="left")
    parts = unpad_sequence(padded, lengths, batch_first=batch_first)
    assert padded.shape == snapshots[1].shape  # torch transposes it in place
    parts[0][...] = 99.0  # returned pieces are copies, not views of the caller's array
    out, out_lengths = pad_packed_sequence(packed, batch_first)
    out[...] = 99.0
    out_lengths[...] = 99
    snapshot_sorted = packed.sorted_indices.copy()
    pad_packed_sequence(packed, batch_first, total_length=5)
    np.testing.assert_array_equal(packed.sorted_indices, snapshot_sorted)
    for arr, snap in zip((lengths, padded, *seqs), snapshots):
        np.testing.assert_array_equal(arr, snap)


def test_module_documents_deviations():
    assert "Deliberate deviations from torch" in rnn.__doc__
    for name in rnn.__all__:
        assert getattr(rnn, name).__doc__


# --- live comparison with torch --------------------------------------------------


def _torch_cases():
    rng = np.random.default_rng(1234)
    for case in range(40):
        batch = int(rng.integers(1, 7))
        t_max = int(rng.integers(1, 6))
        lengths = rng.integers(1, t_max + 1, size=batch)
        lengths[rng.integers(batch)] = t_max  # the padded length is the longest
        feature_shape = [(), (3,), (2, 3)][case % 3]
        yield case, lengths, feature_shape, bool(case % 2), bool(case % 4 < 2)


@pytest.mark.parametrize("case,lengths,feature_shape,batch_first,enforce_sorted",
                         list(_torch_cases()))
def test_matches_torch(case, lengths, feature_shape, batch_first, enforce_sorted):
    torch = pytest.importorskip("torch")
    tnn = torch.nn.utils.rnn
    if enforce_sorted:
        lengths = np.sort(lengths)[::-1].copy()
    seqs, padded = padded_batch(lengths, feature_shape, batch_first, seed=case)
    tseqs = [torch.from_numpy(s) for s in seqs]
    for side in ("left", "right"):
        np.testing.assert_array_equal(
            pad_sequence(seqs, batch_first, -1.0, side),
            tnn.pad_sequence(tseqs, batch_first, -1.0, side).numpy())
    ours = pack_padded_sequence(padded, lengths, batch_first, enforce_sorted)
    theirs = tnn.pack_padded_sequence(torch.from_numpy(padded), torch.from_numpy(lengths),
                                      batch_first, enforce_sorted)
    for mine, ref in zip(ours, theirs):
        if ref is None:
            assert mine is None
        else:
            assert mine.dtype == ref.numpy().dtype
            np.testing.assert_array_equal(mine, ref.numpy())
    total = int(lengths.max()) + case % 3
    out, out_lengths = pad_packed_sequence(ours, batch_first, 2.5, total)
    tout, tlengths = tnn.pad_packed_sequence(theirs, batch_first, 2.5, total)
    np.testing.assert_array_equal(out, tout.numpy())
    np.testing.assert_array_equal(out_lengths, tlengths.numpy())
    assert_same_list(unpack_sequence(ours), [t.numpy() for t in tnn.unpack_sequence(theirs)])
    packed = pack_sequence(seqs, enforce_sorted)
    tpacked = tnn.pack_sequence(tseqs, enforce_sorted)
    np.testing.assert_array_equal(packed.data, tpacked.data.numpy())
    np.testing.assert_array_equal(packed.batch_sizes, tpacked.batch_sizes.numpy())


def test_matches_torch_large_batch_with_ties():
    """torch's sort is unstable above 16 elements; only the order of tied columns may differ."""
    torch = pytest.importorskip("torch")
    tnn = torch.nn.utils.rnn
    lengths = np.random.default_rng(0).integers(1, 6, size=100)
    _, padded = padded_batch(lengths, (2,))
    ours = pack_padded_sequence(padded, lengths, enforce_sorted=False)
    theirs = tnn.pack_padded_sequence(torch.from_numpy(padded), lengths, enforce_sorted=False)
    np.testing.assert_array_equal(ours.sorted_indices, np.argsort(-lengths, kind="stable"))
    np.testing.assert_array_equal(ours.batch_sizes, theirs.batch_sizes.numpy())
    np.testing.assert_array_equal(lengths[ours.sorted_indices], lengths[theirs.sorted_indices])
    for mine, ref in zip(pad_packed_sequence(ours), tnn.pad_packed_sequence(theirs)):
        np.testing.assert_array_equal(mine, ref.numpy())


def test_torch_error_messages_match():
    torch = pytest.importorskip("torch")
    tnn = torch.nn.utils.rnn
    x = np.arange(12.0).reshape(4, 3)
    ints = [np.array([1, 2]), np.array([3])]
    calls = [
        lambda m, a: m.pack_padded_sequence(a(x), [2, 3, 1]),
        lambda m, a: m.pack_padded_sequence(a(x), [0, 2, 1]),
        lambda m, a: m.pack_padded_sequence(a(x), [3, 2, 0]),
        lambda m, a: m.pack_padded_sequence(a(x), [0, 3, 1], enforce_sorted=False),
        lambda m, a: m.pack_padded_sequence(a(x), [3, 2]),
        lambda m, a: m.pack_padded_sequence(a(np.zeros((0, 3))), [1, 1, 1]),
        lambda m, a: m.pack_padded_sequence(a(np.arange(3.0)), [1, 1, 1]),
        lambda m, a: m.pad_packed_sequence(m.pack_padded_sequence(a(x), [3, 2, 1]), total_length=2),
        lambda m, a: m.pad_sequence([]),
        lambda m, a: m.pad_sequence([a(np.ones(2))], padding_side="middle"),
        lambda m, a: m.pad_sequence(3),
        lambda m, a: m.pad_sequence([a(np.ones((3, 2))), a(np.ones((2, 3)))]),
        lambda m, a: m.pad_sequence([a(np.ones((3, 1))), a(np.ones((2, 3)))]),
        lambda m, a: m.pad_sequence([a(np.ones(2)), a(np.array(1.0))]),
        lambda m, a: m.pack_sequence([a(np.ones(1)), a(np.ones(2))]),
        lambda m, a: m.unpad_sequence(a(np.zeros((3, 2))), a(np.array([1, 1, 1]))),
        lambda m, a: m.pad_sequence([a(s) for s in ints], padding_value=float("nan")),
    ]
    for i, call in enumerate(calls):
        with pytest.raises(Exception) as ref:
            call(tnn, torch.from_numpy)
        with pytest.raises(Exception) as ours:
            call(rnn, lambda a: a)
        assert ours.type is ref.type, i
        if i != len(calls) - 1:  # the overflow message names the dtype the NumPy way
            assert str(ours.value) == str(ref.value), i
