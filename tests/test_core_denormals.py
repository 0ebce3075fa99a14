"""The core's denormals switch: off by default (denormal states survive, as in
PyTorch); on, flush-to-zero/denormals-are-zero hold inside the kernel call only."""
from __future__ import annotations

import platform

import numpy as np
import pytest

pytest.importorskip("lstmkit._core", reason="the compiled core is not built")

from lstmkit.backends import cython as cython_backend  # noqa: E402
from lstmkit.backends.cython import CythonBackend  # noqa: E402
from lstmkit.registry import get_cell  # noqa: E402

CY = CythonBackend()
X86 = platform.machine().lower() in ("x86_64", "amd64")


def _decay(dtype, training=False):
    """Zero weights and input: f = i = o = 1/2, g = 0, so c_1 = c_0 / 2 (denormal)."""
    cell = get_cell("lstm")
    params = {k: np.zeros(shape, dtype) for k, shape in cell.parameter_shapes(3, 4, 0, True)}
    tiny = np.finfo(dtype).smallest_normal / 4  # a denormal
    state0 = (np.zeros((2, 4), dtype), np.full((2, 4), tiny, dtype))
    x = np.zeros((2, 3), dtype)
    _, (h, c), _ = CY.layer_forward(cell, params, x, np.array([2], np.int64), False, state0,
                                    training)
    return tiny, c


@pytest.mark.parametrize("training", [False, True], ids=["infer", "train"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_denormals_kept_by_default_and_flushed_on_request(dtype, training, monkeypatch):
    tiny, c = _decay(dtype, training)
    np.testing.assert_array_equal(c, np.full_like(c, tiny / 2))  # IEEE: kept
    monkeypatch.setattr(cython_backend, "FLUSH_DENORMALS", True)
    _, c = _decay(dtype, training)
    if X86:
        np.testing.assert_array_equal(c, np.zeros_like(c))
    else:  # no control register to set: documented as no effect
        np.testing.assert_array_equal(c, np.full_like(c, tiny / 2))
    monkeypatch.setattr(cython_backend, "FLUSH_DENORMALS", False)
    # the calling thread's setting was restored: NumPy and the next call see denormals
    assert np.asarray(tiny, dtype) / 2 != 0
    _, c = _decay(dtype, training)
    np.testing.assert_array_equal(c, np.full_like(c, tiny / 2))
