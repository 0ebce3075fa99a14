"""Packed sequences on NumPy arrays, matching ``torch.nn.utils.rnn`` (PyTorch 2.13).

Shapes use torch's notation: ``T`` is the (padded) sequence length, ``B`` the
batch size and ``*`` any number of trailing dimensions (including none).
Functions take and return ``numpy.ndarray``; every returned array is a new
C-contiguous array (inputs are never mutated), the dtype of the data is kept,
lengths and indices are ``int64``. Exception types and messages are torch's.

Deliberate deviations from torch
--------------------------------
* ``pack_padded_sequence`` with a length greater than ``T`` raises
  ``ValueError`` naming that length and ``T``; torch silently returns an
  inconsistent ``PackedSequence`` (``batch_sizes`` summing to more rows than
  ``data`` holds).
* ``pack_padded_sequence(..., enforce_sorted=False)`` checks ``len(lengths)``
  against the batch size before sorting and raises torch's usual
  ``Expected `len(lengths)` to be equal to batch_size ...`` error; torch
  silently drops batch entries when ``lengths`` is shorter and fails with an
  unrelated indexing error when it is longer or not 1-D.
* ``enforce_sorted=False`` sorts with a stable sort, so sequences of equal
  length always keep their original relative order. torch's sort gives the
  same order for up to 16 sequences (``[2, 3, 2, 3, 1, 3]`` ->
  ``sorted_indices [1, 3, 5, 0, 2, 4]``) but is unstable above that, so for
  larger batches with ties ``sorted_indices`` and the column order of ``data``
  may differ from torch's; ``batch_sizes`` and every unpacked result are equal.
* ``unpad_sequence(..., batch_first=False)`` does not mutate the caller's
  array; torch transposes it in place (``transpose_(0, 1)``).
* ``PackedSequence`` validates that ``batch_sizes`` is a 1-D integer array
  (``ValueError``) and stores it as ``int64``; torch accepts anything there and
  fails later in ``pad_packed_sequence``. The "must be on CPU" check has no
  NumPy counterpart.
* A ``PackedSequence`` is checked for consistency (:func:`check_packed_sequence`)
  by ``pad_packed_sequence`` and by the recurrent modules: ``batch_sizes``
  positive, non-increasing, summing to ``len(data)``; ``sorted_indices`` a
  permutation and ``unsorted_indices`` its inverse.  torch runs such objects
  and returns uninitialised rows, or drops rows (``[2, 0, 1]``), silently.
* ``invert_permutation`` refuses a repeated or out-of-range index
  (``ValueError``); torch leaves entries uninitialised.
* ``unpad_sequence`` also accepts ``lengths`` as a list (torch requires a
  tensor). The 1-D check on ``lengths`` in ``pack_padded_sequence`` says
  ``should be a 1D int64 array, but got a 2D array`` instead of torch's
  ``should be a 1D CPU int64 tensor, but got 2D cpu Long tensor``.
* A ``padding_value`` that an integer ``dtype`` cannot hold raises torch's
  ``value cannot be converted to type ... without overflow`` with the NumPy
  dtype name (``int32``) instead of the C++ type name (``int``).
* 0-D inputs: ``pack_padded_sequence`` raises torch's 1-D message
  (``IndexError: Dimension out of range ...``) and ``pad_sequence`` raises
  ``IndexError: Dimension specified as 0 but tensor has no dimensions`` for a
  0-D sequence in any position (torch: a ``RuntimeError`` about ``ArrayRef``
  when it is the first one).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, Optional

import numpy as np

__all__ = [
    "PackedSequence",
    "check_batch_sizes",
    "check_packed_sequence",
    "invert_permutation",
    "pack_padded_sequence",
    "pad_packed_sequence",
    "pad_sequence",
    "unpad_sequence",
    "pack_sequence",
    "unpack_sequence",
]


class _PackedSequenceFields(NamedTuple):
    data: np.ndarray
    batch_sizes: np.ndarray
    sorted_indices: Optional[np.ndarray]
    unsorted_indices: Optional[np.ndarray]


class PackedSequence(_PackedSequenceFields):
    """Data and ``batch_sizes`` of a packed batch of variable-length sequences.

    ``data`` is ``(sum(lengths), *)``: rows ``0:batch_sizes[0]`` are time step 0
    of the length-sorted batch, the next ``batch_sizes[1]`` rows time step 1,
    and so on. ``batch_sizes`` is int64 ``(T,)``, non-increasing:
    ``batch_sizes[t]`` is the number of sequences longer than ``t``. For
    sequences ``abc`` and ``x``, ``data`` is ``axbc`` and ``batch_sizes`` is
    ``[2, 1, 1]``. ``sorted_indices`` (int64 ``(B,)`` or ``None``) says which
    original batch entry each sorted column came from; ``unsorted_indices`` is
    its inverse and is computed with :func:`invert_permutation` when omitted.

    Create instances with :func:`pack_padded_sequence` or :func:`pack_sequence`.
    ``PackedSequence((data, batch_sizes), sorted_indices)`` is also accepted.
    """

    __slots__ = ()

    def __new__(cls, data, batch_sizes=None, sorted_indices=None, unsorted_indices=None):
        if batch_sizes is None:
            if not (isinstance(data, (list, tuple)) and len(data) == 2):
                raise AssertionError("Expected data to be a list or tuple of length 2")
            data, batch_sizes = data
        batch_sizes = np.asarray(batch_sizes)
        _check_batch_sizes_type(batch_sizes)
        if sorted_indices is not None:
            sorted_indices = np.asarray(sorted_indices).astype(np.int64, copy=False)
        if unsorted_indices is None:
            unsorted_indices = invert_permutation(sorted_indices)
        else:
            unsorted_indices = np.asarray(unsorted_indices).astype(np.int64, copy=False)
        return super().__new__(
            cls, np.asarray(data), batch_sizes.astype(np.int64, copy=False),
            sorted_indices, unsorted_indices,
        )

    def to(self, dtype):
        """Convert ``data`` to ``dtype``; returns ``self`` if it already has it."""
        data = self.data.astype(dtype, copy=False)
        return self if data is self.data else self._replace(data=data)

    def cpu(self):
        """Return ``self`` (NumPy data always lives in host memory)."""
        return self

    @property
    def is_cuda(self):
        """``False``: NumPy data is never on a GPU."""
        return False

    def is_pinned(self):
        """``False``: NumPy data is never in pinned memory."""
        return False

    # Defined last: inside the class body these names shadow the builtins.
    def double(self):
        """``data`` as float64."""
        return self.to(np.float64)

    def float(self):
        """``data`` as float32."""
        return self.to(np.float32)

    def half(self):
        """``data`` as float16."""
        return self.to(np.float16)

    def long(self):
        """``data`` as int64."""
        return self.to(np.int64)

    def int(self):
        """``data`` as int32."""
        return self.to(np.int32)

    def short(self):
        """``data`` as int16."""
        return self.to(np.int16)

    def char(self):
        """``data`` as int8."""
        return self.to(np.int8)

    def byte(self):
        """``data`` as uint8."""
        return self.to(np.uint8)


def invert_permutation(permutation):
    """Inverse of a permutation ``(n,)``: ``out[permutation[i]] = i``.

    Returns int64 ``(n,)``; ``None`` gives ``None``.  Anything but a 1-D
    permutation of ``0..n-1`` (a duplicate, a value out of range) is a
    ``ValueError``; torch leaves such entries uninitialised.
    """
    if permutation is None:
        return None
    array = np.asarray(permutation)
    if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
        raise ValueError(f"expected a 1D integer permutation, got a {array.ndim}D {array.dtype} array")
    array = array.astype(np.int64, copy=False)
    n = array.size
    output = np.full(n, -1, dtype=np.int64)
    if n and (array.min() < 0 or array.max() >= n):
        raise ValueError(f"expected a permutation of 0..{n - 1}, got {_preview(array)}")
    output[array] = np.arange(n)
    if n and output.min() < 0:
        raise ValueError(f"expected a permutation of 0..{n - 1}, got {_preview(array)} (a repeated index)")
    return output


def check_batch_sizes(batch_sizes, rows, positive: bool = True) -> None:
    """``batch_sizes``: a non-empty 1-D int64 array, positive, non-increasing, summing to ``rows``.

    Raises ``ValueError`` naming the first offending entry (``RuntimeError``
    with torch's message when empty).  ``rows`` is ``len(data)`` (``None``
    for 0-D data).  ``positive=False`` admits zeros (a dense batch of 0
    sequences, which backends run) but never negative sizes.
    """
    if not isinstance(batch_sizes, np.ndarray):
        raise ValueError(f"batch_sizes should be a numpy array, got {type(batch_sizes).__name__}")
    _check_batch_sizes_type(batch_sizes)
    if batch_sizes.dtype != np.int64:  # torch: "expected scalar type Long but found Int"
        raise ValueError(f"batch_sizes should be an int64 array, got {batch_sizes.dtype}")
    if batch_sizes.shape[0] == 0:
        raise RuntimeError("batch_sizes can not be empty")
    if batch_sizes.min() < int(positive):
        bad = int(np.argmax(batch_sizes < int(positive)))
        raise ValueError(
            f"batch_sizes should be {'positive' if positive else 'non-negative'}, but batch_sizes[{bad}] is {batch_sizes[bad]} "
            f"(batch_sizes={_preview(batch_sizes)})"
        )
    rises = np.flatnonzero(batch_sizes[1:] > batch_sizes[:-1])
    if rises.size:
        t = int(rises[0])
        raise ValueError(
            f"batch_sizes should be non-increasing, but batch_sizes[{t + 1}] = {batch_sizes[t + 1]} "
            f"> batch_sizes[{t}] = {batch_sizes[t]} (batch_sizes={_preview(batch_sizes)})"
        )
    total = int(batch_sizes.sum())
    if rows != total:
        raise ValueError(
            f"batch_sizes sum to {total}, but data has {'no rows (0-D)' if rows is None else f'{rows} rows'}; "
            "they should be equal"
        )


def check_packed_sequence(sequence) -> None:
    """Check that a ``PackedSequence`` is consistent; raise ``ValueError`` otherwise
    (torch's ``RuntimeError`` for empty ``batch_sizes``).

    The one validation every consumer runs (the recurrent modules before any
    backend sees the rows, :func:`pad_packed_sequence`), so a hand-built
    ``PackedSequence`` is refused the same way everywhere: ``batch_sizes`` a
    non-empty 1-D int64 array of positive, non-increasing sizes summing to
    ``len(data)``; ``sorted_indices`` ``None`` or a permutation of
    ``0..batch_sizes[0]-1``; ``unsorted_indices`` its inverse (``None`` with it).
    torch checks none of this and returns rows of uninitialised memory or
    wrong states for some of these inputs.
    """
    data, batch_sizes, sorted_indices, unsorted_indices = sequence
    check_batch_sizes(batch_sizes, np.shape(data)[0] if np.ndim(data) else None)
    batch = int(batch_sizes[0])
    if sorted_indices is None:
        if unsorted_indices is not None:
            raise ValueError("unsorted_indices should be None when sorted_indices is None")
        return
    for name, value in (("sorted_indices", sorted_indices), ("unsorted_indices", unsorted_indices)):
        if not isinstance(value, np.ndarray) or value.shape != (batch,) or value.dtype != np.int64:
            raise ValueError(
                f"{name} should be an int64 array of shape ({batch},) (batch_sizes[0]), got "
                + (f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__)
            )
    try:
        inverse = invert_permutation(sorted_indices)
    except ValueError as exc:
        raise ValueError(f"sorted_indices: {exc}") from None
    if not np.array_equal(inverse, unsorted_indices):
        raise ValueError(
            f"unsorted_indices should be the inverse of sorted_indices, {_preview(inverse)}, "
            f"got {_preview(unsorted_indices)}"
        )


def pack_padded_sequence(input, lengths, batch_first=False, enforce_sorted=True):
    """Pack a padded batch ``(T, B, *)`` (``(B, T, *)`` if ``batch_first``) into a PackedSequence.

    ``lengths`` (list or array, ``(B,)``) holds each sequence's length, all in
    ``1..T``. With ``enforce_sorted=True`` they must be non-increasing and the
    indices are ``None``; otherwise the batch is sorted by decreasing length
    (stable: ties keep their order) and ``sorted_indices`` records the order.
    Returns ``PackedSequence(data (sum(lengths), *), batch_sizes (max(lengths),), ...)``.
    """
    x = np.asarray(input)
    lengths = np.asarray(lengths).astype(np.int64)
    if x.size == 0:
        raise RuntimeError("Cannot pack empty tensors.")
    if x.ndim < 2:
        raise IndexError("Dimension out of range (expected to be in range of [-1, 0], but got 1)")
    if batch_first:
        x = x.swapaxes(0, 1)
    if lengths.ndim != 1:
        raise RuntimeError(
            f"'lengths' argument should be a 1D int64 array, but got a {lengths.ndim}D array"
        )
    if lengths.shape[0] != x.shape[1]:
        raise RuntimeError(
            f"Expected `len(lengths)` to be equal to batch_size, but got {lengths.shape[0]} "
            f"(batch_size={x.shape[1]})"
        )
    sorted_indices = None
    if not enforce_sorted:
        sorted_indices = np.argsort(-lengths, kind="stable")
        lengths = lengths[sorted_indices]
    if lengths[-1] <= 0:
        raise RuntimeError(
            "Length of all samples has to be greater than 0, but found an element "
            "in 'lengths' that is <= 0"
        )
    if np.any(lengths[1:] > lengths[:-1]):
        raise RuntimeError(
            "`lengths` array must be sorted in decreasing order when `enforce_sorted` is "
            "True. You can pass `enforce_sorted=False` to pack_padded_sequence and/or "
            "pack_sequence to sidestep this requirement if you do not need ONNX exportability."
        )
    if lengths[0] > x.shape[0]:
        raise ValueError(
            f"Length of all samples has to be at most the padded sequence length "
            f"T={x.shape[0]}, but found an element in 'lengths' equal to {lengths[0]}"
        )
    batch_sizes = (lengths > np.arange(lengths[0])[:, None]).sum(axis=1, dtype=np.int64)
    t, b = _packed_positions(batch_sizes)
    if sorted_indices is not None:
        b = sorted_indices[b]
    return PackedSequence(np.ascontiguousarray(x[t, b]), batch_sizes, sorted_indices, None)


def pad_packed_sequence(sequence, batch_first=False, padding_value=0.0, total_length=None):
    """Inverse of :func:`pack_padded_sequence`; returns ``(padded, lengths)``.

    ``padded`` is ``(T, B, *)`` (``(B, T, *)`` if ``batch_first``) with
    ``T = total_length`` if given, else ``len(batch_sizes)``, in the original
    batch order, ``padding_value`` at padded positions, ``data``'s dtype.
    ``lengths`` is int64 ``(B,)``, in the original order.
    """
    check_packed_sequence(sequence)  # torch checks nothing: uninitialised rows or an unrelated error
    data, batch_sizes = np.asarray(sequence.data), sequence.batch_sizes
    max_seq_length = batch_sizes.shape[0]
    if total_length is not None:
        if total_length < max_seq_length:
            raise ValueError(
                "Expected total_length to be at least the length of the longest sequence "
                f"in input, but got total_length={total_length} and max sequence length "
                f"being {max_seq_length}"
            )
        max_seq_length = total_length
    batch_size = int(batch_sizes[0])
    lengths = (batch_sizes[:, None] > np.arange(batch_size)).sum(axis=0, dtype=np.int64)
    t, b = _packed_positions(batch_sizes)
    if sequence.unsorted_indices is not None:
        b = invert_permutation(sequence.unsorted_indices)[b]
        lengths = lengths[sequence.unsorted_indices]
    shape = (batch_size, max_seq_length) if batch_first else (max_seq_length, batch_size)
    padded = _full(shape + data.shape[1:], padding_value, data.dtype)
    padded[(b, t) if batch_first else (t, b)] = data
    return padded, lengths


def pad_sequence(sequences, batch_first=False, padding_value=0.0, padding_side="right"):
    """Stack sequences ``(L_i, *)`` into ``(T, B, *)`` (``(B, T, *)`` if ``batch_first``).

    ``T = max(L_i)``; positions past a sequence are ``padding_value``, after it
    (``padding_side='right'``) or before it (``'left'``). The dtype and trailing
    dims are those of ``sequences[0]``; the others are broadcast into them.
    """
    if not isinstance(sequences, Iterable):
        raise RuntimeError(
            "pad_sequence: Expected iterable for input sequences, but got arg of type: "
            f"{type(sequences)}"
        )
    sequences = [np.asarray(s) for s in sequences]
    if not sequences:
        raise RuntimeError("received an empty list of sequences")
    if padding_side not in ("left", "right"):
        raise RuntimeError(
            f"Expected padding_side to be one of left or right, but got {padding_side}."
        )
    lengths = [_length(s) for s in sequences]
    max_len = max(lengths)
    shape = (len(sequences), max_len) if batch_first else (max_len, len(sequences))
    out = _full(shape + sequences[0].shape[1:], padding_value, sequences[0].dtype)
    for i, (seq, length) in enumerate(zip(sequences, lengths)):
        start = max_len - length if padding_side == "left" else 0
        steps = slice(start, start + length)
        _copy_into(out[i, steps] if batch_first else out[steps, i], seq)
    return out


def unpad_sequence(padded_sequences, lengths, batch_first=False):
    """Split a padded batch into ``B`` arrays ``(L_i, *)``.

    ``padded_sequences`` is ``(T, B, *)`` (``(B, T, *)`` if ``batch_first``),
    ``lengths`` is ``(B,)``; row ``t`` of sequence ``b`` is kept if
    ``t < lengths[b]``. The caller's array is not modified (torch's
    ``unpad_sequence`` transposes it in place).
    """
    padded = np.asarray(padded_sequences)
    if not batch_first:
        padded = padded.swapaxes(0, 1)
    steps = np.arange(padded.shape[1])
    return [seq[steps < length] for seq, length in zip(padded, np.asarray(lengths), strict=True)]


def pack_sequence(sequences, enforce_sorted=True):
    """Pack sequences ``(L_i, *)``: :func:`pad_sequence`, then :func:`pack_padded_sequence`.

    ``[1, 2, 3], [4, 5], [6]`` gives ``data=[1, 4, 6, 2, 5, 3]``, ``batch_sizes=[3, 2, 1]``.
    """
    lengths = [_length(np.asarray(s)) for s in sequences]
    return pack_padded_sequence(pad_sequence(sequences), lengths, enforce_sorted=enforce_sorted)


def unpack_sequence(packed_sequences):
    """Inverse of :func:`pack_sequence`: ``B`` arrays ``(L_i, *)`` in the original order."""
    padded, lengths = pad_packed_sequence(packed_sequences, batch_first=True)
    return unpad_sequence(padded, lengths, batch_first=True)


def _packed_positions(batch_sizes):
    """``(t, b)`` index arrays of every row of a PackedSequence's ``data``, in order."""
    return np.nonzero(np.arange(batch_sizes[0]) < batch_sizes[:, None])


def _check_batch_sizes_type(batch_sizes) -> None:
    if batch_sizes.ndim != 1 or not np.issubdtype(batch_sizes.dtype, np.integer):
        raise ValueError(
            f"batch_sizes should be a 1D integer array, but got a {batch_sizes.ndim}D "
            f"{batch_sizes.dtype} array. Instances of PackedSequence should never be "
            "created manually. They should be instantiated by functions like "
            "pack_sequence and pack_padded_sequence in lstmkit.utils.rnn."
        )


def _preview(array, limit: int = 10) -> str:
    """``[a, b, ...]``: at most ``limit`` entries of a 1-D array, for error messages."""
    items = [str(v) for v in array[:limit].tolist()]
    return "[" + ", ".join(items) + (", ...]" if array.size > limit else "]")


def _length(seq):
    if seq.ndim == 0:
        raise IndexError("Dimension specified as 0 but tensor has no dimensions")
    return seq.shape[0]


def _full(shape, fill_value, dtype):
    """``np.full``, refusing like torch a value that an integer ``dtype`` cannot hold."""
    if np.issubdtype(dtype, np.integer):
        info, value = np.iinfo(dtype), float(fill_value)
        if not (np.isfinite(value) and info.min <= value <= info.max):
            raise RuntimeError(
                f"value cannot be converted to type {np.dtype(dtype).name} without overflow"
            )
    return np.full(shape, fill_value, dtype=dtype)


def _copy_into(dst, src):
    """``dst[...] = src`` with torch's ``copy_`` broadcasting rule and error messages."""
    ndim = max(dst.ndim, src.ndim)
    a = (1,) * (ndim - dst.ndim) + dst.shape
    b = (1,) * (ndim - src.ndim) + src.shape
    for dim in reversed(range(ndim)):
        if a[dim] != b[dim] and 1 not in (a[dim], b[dim]):
            raise RuntimeError(
                f"The size of tensor a ({a[dim]}) must match the size of tensor b "
                f"({b[dim]}) at non-singleton dimension {dim}"
            )
    shape = tuple(y if x == 1 else x for x, y in zip(a, b))
    if shape != dst.shape:
        raise RuntimeError(
            f"output with shape {list(dst.shape)} doesn't match the broadcast shape {list(shape)}"
        )
    np.copyto(dst, src, casting="unsafe")
