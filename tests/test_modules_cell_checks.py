"""Cells check their arguments in PyTorch's order: input width, each hx's batch then width, then dtypes."""
import re

import numpy as np
import pytest

import lstmkit

try:
    import torch
except ImportError:
    torch = None

F64, F32 = np.float64, np.float32

# (cell, input shape, input dtype, hx shapes, hx dtype, expected message); the module is float32.
CASES = [
    ("GRUCell", (3, 10), F64, [(3, 21)], F64, "hidden0 has inconsistent hidden_size: got 21, expected 20"),
    ("GRUCell", (3, 10), F64, [(4, 20)], F64, "Input batch size 3 doesn't match hidden0 batch size 4"),
    ("GRUCell", (3, 11), F64, [(3, 20)], F64, "input has inconsistent input_size: got 11 expected 10"),
    ("GRUCell", (3, 10), F32, [(3, 21)], F64, "hidden0 has inconsistent hidden_size: got 21, expected 20"),
    ("RNNCell", (3, 10), F64, [(3, 21)], F64, "hidden0 has inconsistent hidden_size: got 21, expected 20"),
    ("RNNCell", (10,), F64, [(21,)], F64, "hidden0 has inconsistent hidden_size: got 21, expected 20"),
    ("LSTMCell", (3, 10), F64, [(3, 20), (3, 21)], F64, "hidden1 has inconsistent hidden_size: got 21, expected 20"),
    ("LSTMCell", (3, 10), F32, [(4, 20), (3, 21)], F32, "Input batch size 3 doesn't match hidden0 batch size 4"),
    ("LSTMCell", (3, 10), F32, [(3, 21), (4, 20)], F32, "hidden0 has inconsistent hidden_size: got 21, expected 20"),
]


def _hx(shapes, dtype):
    hx = [np.zeros(s, dtype) for s in shapes]
    return hx[0] if len(hx) == 1 else tuple(hx)


@pytest.mark.parametrize("name, x_shape, x_dtype, hx_shapes, hx_dtype, message", CASES)
def test_shape_errors_come_before_dtype_errors(backend, name, x_shape, x_dtype, hx_shapes, hx_dtype, message):
    cell = getattr(lstmkit, name)(10, 20, backend=backend)
    with pytest.raises(RuntimeError, match="^" + re.escape(message) + "$"):
        cell(np.zeros(x_shape, x_dtype), _hx(hx_shapes, hx_dtype))
    with pytest.raises(RuntimeError, match="^" + re.escape(message) + "$"):
        cell.forward_train(np.zeros(x_shape, x_dtype), _hx(hx_shapes, hx_dtype))


@pytest.mark.skipif(torch is None, reason="needs torch")
@pytest.mark.parametrize("name, x_shape, x_dtype, hx_shapes, hx_dtype, message", CASES)
def test_torch_reports_the_same_error(name, x_shape, x_dtype, hx_shapes, hx_dtype, message):
    cell = getattr(torch.nn, name)(10, 20)
    as_t = {F64: torch.float64, F32: torch.float32}
    hx = [torch.zeros(s, dtype=as_t[hx_dtype]) for s in hx_shapes]
    with pytest.raises(RuntimeError, match="^" + re.escape(message) + "$"):
        cell(torch.zeros(x_shape, dtype=as_t[x_dtype]), hx[0] if len(hx) == 1 else tuple(hx))


def test_dtype_is_checked_once_the_shapes_are_right(backend):
    cell = lstmkit.GRUCell(10, 20, backend=backend)
    with pytest.raises(ValueError, match=r"^GRUCell input dtype \(float64\)"):
        cell(np.zeros((3, 10)), np.zeros((3, 20), F32))
    with pytest.raises(ValueError, match=r"^GRUCell hx dtype \(float64\)"):
        cell(np.zeros((3, 10), F32), np.zeros((3, 20)))
    with pytest.raises(ValueError, match=r"^GRUCell input dtype \(float64\)"):
        cell(np.zeros((3, 10)))
    h = cell(np.ones((3, 10), F32), np.ones((3, 20), F32))
    assert h.shape == (3, 20) and h.dtype == F32
