"""The compiled core's small-batch paths: the packed-panel GEMM kernel, the
per-step choice between it, gemv and BLAS, and inference's blocked input
projection.  Each path is compared with the others and with the reference
backend on shapes that hit its tails (rows not a multiple of the row block,
widths not a multiple of the panel width, packed batches that cross the
panel/BLAS row limit, batch 1)."""
from __future__ import annotations

import functools
import tracemalloc

import numpy as np
import pytest

_core = pytest.importorskip("lstmkit._core", reason="the compiled core is not built")

from lstmkit.backends import cython as cython_backend  # noqa: E402
from lstmkit.backends.cython import CythonBackend  # noqa: E402
from lstmkit.backends.reference import ReferenceBackend  # noqa: E402
from lstmkit.registry import get_cell  # noqa: E402

CY = CythonBackend()
REF = ReferenceBackend()
CTYPE = {np.float32: "float", np.float64: "double"}
TOL = {np.float32: 2e-5, np.float64: 1e-12}
KERNELS = ("lstm_forward", "lstm_backward", "gru_forward", "gru_backward", "rnn_forward",
           "rnn_backward")


def _rel(a, b):
    return float(np.max(np.abs(a - b), initial=0) / max(1.0, float(np.max(np.abs(b), initial=0))))


# -- the panel kernel ------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("trans", [True, False], ids=["bT", "b"])
@pytest.mark.parametrize("n,k", [(1, 1), (5, 3), (32, 17), (33, 8), (70, 31), (148, 37)])
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 7, 9])
def test_panel_gemm_matches_numpy(m, n, k, trans, dtype):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans else (k, n)).astype(dtype)
    want = a.astype(np.float64) @ (b.T if trans else b).astype(np.float64)
    out = np.full((m, n), np.nan, dtype)
    _core.panel_gemm[CTYPE[dtype]](a, b, trans, out)
    assert _rel(out, want) < TOL[dtype] * 10
    start = rng.standard_normal((m, n)).astype(dtype)
    acc = start.copy()
    _core.panel_gemm[CTYPE[dtype]](a, b, trans, acc, True, 3)  # accumulate 3 times
    assert _rel(acc, start + 3 * want) < TOL[dtype] * 30


@pytest.fixture
def fetch_ahead():
    """``fetch_ahead(True)``: every product of more than 4 rows takes the panel kernel's
    path that fetches the next panel ahead (by default only a ``b`` larger than L2)."""
    def switch(on):
        _core._panel_ahead_from(1 if on else 1 << 62)
    yield switch
    _core._panel_ahead_from(0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("m,n,k", [(5, 33, 8), (8, 64, 37), (13, 148, 37), (33, 70, 64)])
def test_fetching_the_next_panel_ahead_changes_no_bits(m, n, k, dtype, fetch_ahead):
    rng = np.random.default_rng(m + n + k)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((n, k)).astype(dtype)
    outs = []
    for on in (False, True):
        fetch_ahead(on)
        out = np.full((m, n), np.nan, dtype)
        _core.panel_gemm[CTYPE[dtype]](a, b, True, out)
        acc = np.ones((m, n), dtype)
        _core.panel_gemm[CTYPE[dtype]](a, b, True, acc, True, 2)
        outs.append((out, acc))
    for plain, ahead in zip(*outs):
        np.testing.assert_array_equal(plain, ahead)
    want = a.astype(np.float64) @ b.T.astype(np.float64)
    assert _rel(outs[1][0], want) < TOL[dtype] * 10


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["lstm", "gru", "rnn_tanh"])
def test_a_layer_with_panels_fetched_ahead_gives_the_same_bits(name, dtype, fetch_ahead):
    problem = _problem(name, 0, LAYOUTS["packed"], dtype)  # steps of 70 rows down to 1
    runs = []
    for on in (False, True):
        fetch_ahead(on)
        runs.append(_run(CY, *problem[:4], False, problem[4]))
    for plain, ahead in zip(*runs):
        np.testing.assert_array_equal(plain, ahead)


@pytest.fixture
def rows8():
    """``rows8(True)``: float rows of the panel kernel in blocks of 8 (by default on
    x86-64-v4 CPUs only; elsewhere correct but slower)."""
    yield lambda on: _core._use_rows8(int(on))
    _core._use_rows8(-1)


@pytest.mark.parametrize("ahead", [False, True], ids=["near", "ahead"])
@pytest.mark.parametrize("m", [5, 8, 9, 12, 13, 16, 17, 31, 70])
def test_float_rows_in_blocks_of_8_change_no_bits(m, ahead, rows8, fetch_ahead):
    rng = np.random.default_rng(m)
    n, k = 70, 37
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((n, k)).astype(np.float32)
    fetch_ahead(ahead)
    outs = []
    for on in (False, True):
        rows8(on)
        out = np.full((m, n), np.nan, np.float32)
        _core.panel_gemm[CTYPE[np.float32]](a, b, True, out)
        bias = np.ones((m, n), np.float32)
        _core.panel_gemm[CTYPE[np.float32]](a, b, True, bias, True, 2)
        outs.append((out, bias))
    for four, eight in zip(*outs):
        np.testing.assert_array_equal(four, eight)
    assert _rel(outs[1][0], a.astype(np.float64) @ b.T.astype(np.float64)) < TOL[np.float32] * 10


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn_tanh"])
def test_a_float_layer_in_blocks_of_8_rows_gives_the_same_bits(name, rows8):
    problem = _problem(name, 0, LAYOUTS["packed"], np.float32)  # steps of 70 rows down to 1
    runs = []
    for on in (False, True):
        rows8(on)
        runs.append(_run(CY, *problem[:4], False, problem[4]))
    for four, eight in zip(*runs):
        np.testing.assert_array_equal(four, eight)


def test_panel_gemm_checks_shapes():
    a, b = np.ones((2, 3)), np.ones((4, 3))
    with pytest.raises(ValueError, match="inner dimensions differ: 3 and 4"):
        _core.panel_gemm[CTYPE[np.float64]](a, b, False, np.empty((2, 3)))
    with pytest.raises(ValueError, match=r"out: expected shape \(2, 4\)"):
        _core.panel_gemm[CTYPE[np.float64]](a, b, True, np.empty((4, 2)))


# -- the kernels' paths agree ------------------------------------------------------

# (cell, proj_size); batch sizes cross the panel row limit (64) and end at one row
CELLS = [("lstm", 0), ("lstm", 5), ("gru", 0), ("rnn_tanh", 0), ("rnn_relu", 0)]
LAYOUTS = {
    "packed": [70, 66, 64, 9, 5, 4, 2, 1],
    "dense6": [6] * 7,
    "batch1": [1] * 9,
    "batch2": [2] * 5,
}


def _problem(name, proj, batch_sizes, dtype, hidden=37, input_size=11):
    rng = np.random.default_rng(len(batch_sizes) + hidden)
    cell = get_cell(name)
    params = {k: (rng.standard_normal(shape) * 0.3).astype(dtype)
              for k, shape in cell.parameter_shapes(input_size, hidden, proj, True)}
    bs = np.asarray(batch_sizes, dtype=np.int64)
    x = rng.standard_normal((int(bs.sum()), input_size)).astype(dtype)
    state0 = tuple((rng.standard_normal((int(bs[0]), w)) * 0.5).astype(dtype)
                   for w in cell.state_sizes(hidden, proj))
    return cell, params, x, bs, state0


def _run(backend, cell, params, x, bs, reverse, state0):
    yi, si, _ = backend.layer_forward(cell, params, x, bs, reverse, state0, False)
    y, s, cache = backend.layer_forward(cell, params, x, bs, reverse, state0, True)
    rng = np.random.default_rng(7)
    d_y = rng.standard_normal(y.shape).astype(y.dtype)
    d_s = tuple(rng.standard_normal(a.shape).astype(a.dtype) for a in s)
    d_x, d_s0, d_p = backend.layer_backward(cell, params, cache, d_y, d_s)
    return [yi, *si, y, *s, d_x, *d_s0, *(d_p[k] for k in sorted(d_p))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name,proj", CELLS, ids=[f"{n}-p{p}" for n, p in CELLS])
def test_panels_blas_and_blocks_agree(name, proj, layout, reverse, dtype, monkeypatch):
    problem = _problem(name, proj, LAYOUTS[layout], dtype)
    fast = _run(CY, *problem[:4], reverse, problem[4])
    ref = _run(REF, *problem[:4], reverse, problem[4])
    # every per-step product on BLAS/gemv, and one time step per projected block
    kernels = cython_backend._KERNELS[np.dtype(dtype)]
    for kname in KERNELS:
        monkeypatch.setattr(kernels, kname,
                            functools.partial(getattr(kernels, kname), panels=False))
    monkeypatch.setattr(cython_backend, "GATE_BLOCK_BYTES", 1)
    plain = _run(CY, *problem[:4], reverse, problem[4])
    assert len(fast) == len(ref) == len(plain)
    for i, (a, b, c) in enumerate(zip(fast, plain, ref)):
        assert _rel(a, c) < TOL[dtype], (i, "panels vs reference", _rel(a, c))
        assert _rel(b, c) < TOL[dtype], (i, "BLAS vs reference", _rel(b, c))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name,proj", CELLS, ids=[f"{n}-p{p}" for n, p in CELLS])
def test_panels_false_keeps_every_product_on_blas(name, proj, dtype, monkeypatch):
    """``panels=False`` on a call puts all of it on BLAS, the backward's weight gradients
    included: the same bits as with the whole-sequence panels switched off as well
    (361 rows: the panel path would sum two blocks)."""
    problem = _problem(name, proj, [64] * 5 + [33, 9, 1, 1, 1, 1], dtype)
    kernels = cython_backend._KERNELS[np.dtype(dtype)]
    for kname in KERNELS:
        monkeypatch.setattr(kernels, kname,
                            functools.partial(getattr(kernels, kname), panels=False))
    per_call = _run(CY, *problem[:4], False, problem[4])
    old = _core._use_projection_panels(False)
    try:
        switched_off = _run(CY, *problem[:4], False, problem[4])
    finally:
        _core._use_projection_panels(old)
    for i, (a, b) in enumerate(zip(per_call, switched_off)):
        np.testing.assert_array_equal(a, b, err_msg=f"output {i}")


# -- inference memory ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["lstm", "gru", "rnn_tanh"])
def test_inference_does_not_hold_the_whole_gate_buffer(name):
    """Peak memory of a long inference: outputs + one gate block, not T*B*G."""
    cell, params, x, bs, state0 = _problem(name, 0, [8] * 2000, np.float32, hidden=64,
                                           input_size=16)
    g = params["weight_ih"].shape[0]
    whole = x.shape[0] * g * 4
    y_bytes = x.shape[0] * 64 * 4
    tracemalloc.start()
    try:
        y, _, _ = CY.layer_forward(cell, params, x, bs, False, state0, False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert y.shape == (x.shape[0], 64)
    block = cython_backend.GATE_BLOCK_BYTES + (1 << 19)
    assert block < whole
    assert peak < y_bytes + block, (peak, y_bytes, whole)


def test_gate_workspace_must_hold_the_largest_step():
    cell, params, x, bs, state0 = _problem("rnn_tanh", 0, [3, 2], np.float64, hidden=4)
    h = np.empty((3, 4))
    with pytest.raises(ValueError, match=r"gates: expected shape \(R, 4\) with R >= 3"):
        _core.rnn_forward[CTYPE[np.float64]](
            x, params["weight_ih"], params["weight_hh"], None, None, bs, False, False,
            state0[0], h, None, np.empty((2, 4)))
    with pytest.raises(ValueError, match=r"gates: expected shape \(5, 4\)"):  # training
        _core.rnn_forward[CTYPE[np.float64]](
            x, params["weight_ih"], params["weight_hh"], None, None, bs, False, False,
            state0[0], h, None, np.empty((3, 4)), np.empty((5, 4)))


# -- a few rows through gemv (the cells' step) -------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("m", [2, 3, 4, 5])
@pytest.mark.parametrize("beta", [0.0, 1.0, 0.5])
def test_gemm_few_rows_times_transposed(m, beta, dtype):
    """m x 512 outputs (> 1200: the gemv-per-row branch for m <= 4), any beta."""
    rng = np.random.default_rng(m)
    a = rng.standard_normal((m, 37)).astype(dtype)
    b = rng.standard_normal((512, 37)).astype(dtype)
    c0 = rng.standard_normal((m, 512)).astype(dtype)
    c = c0.copy()
    _core.gemm[CTYPE[dtype]](False, True, 1.0, a, b, beta, c)
    want = a.astype(np.float64) @ b.T.astype(np.float64) + beta * c0
    assert _rel(c, want) < TOL[dtype] * 10


# -- the input projection through the panel kernel -------------------------------------

def _forward_both_ways(name, proj, bs, input_size, bias, threads, reverse, monkeypatch,
                       dtype=np.float32):
    """One layer's inference and training forward, and the backward, with the whole-sequence
    products (the input projection, ``dx``, the weight gradients) on the panel kernel and on
    BLAS (the per-step products on panels both times)."""
    cell, params, x, bs, state0 = _problem(name, proj, bs, dtype, hidden=37,
                                           input_size=input_size)
    if not bias:  # as the backend passes bias=False: the GRU keeps a zero bias_hh
        params = {k: (np.zeros_like(v) if k == "bias_hh" else v)
                  for k, v in params.items()
                  if not k.startswith("bias") or (name == "gru" and k == "bias_hh")}
    monkeypatch.setattr(cython_backend, "_team_threads", lambda *a: threads)
    runs = []
    for on in (True, False):
        old = _core._use_projection_panels(on)
        try:
            run = [a for training in (False, True)
                   for a in CY._layer_forward(cell, params, x, bs, reverse, state0,
                                              training, threads)[:2]]
            y, s, cache = CY._layer_forward(cell, params, x, bs, reverse, state0, True, threads)
            rng = np.random.default_rng(3)
            d_y = rng.standard_normal(y.shape).astype(y.dtype)
            d_s = tuple(rng.standard_normal(a.shape).astype(a.dtype) for a in s)
            d_x, d_s0, d_p = CY._layer_backward(cell, params, cache, d_y, d_s, threads)
            runs.append(run + [d_x, d_s0] + [d_p[k] for k in sorted(d_p)])
        finally:
            _core._use_projection_panels(old)
    return runs


SHORT = [64, 60, 33, 9, 5, 4, 2, 1, 1, 1]


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("input_size", [1, 11, 700])  # 700: chunks of 92 rows
@pytest.mark.parametrize("name,proj", CELLS, ids=[f"{n}-p{p}" for n, p in CELLS])
@pytest.mark.parametrize("bs", [SHORT, [64] * 6 + SHORT], ids=["180rows", "564rows"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_projection_on_panels_matches_blas(dtype, bs, name, proj, input_size, bias, threads,
                                           reverse, monkeypatch):
    """The whole-sequence products on the panel kernel (input projection, ``dx``, the
    weight gradients: 564 rows sum three blocks of 256) against BLAS."""
    if not _core.projection_panels_used(dtype):
        pytest.skip("this CPU or build keeps the whole-sequence products on BLAS")
    panels, blas = _forward_both_ways(name, proj, bs, input_size, bias, threads, reverse,
                                      monkeypatch, dtype)
    flat = lambda run: [a for part in run for a in (part if isinstance(part, tuple) else (part,))]
    for i, (a, b) in enumerate(zip(flat(panels), flat(blas))):
        assert a.shape == b.shape
        assert _rel(a, b) < TOL[dtype], (i, _rel(a, b))


def test_projection_switch_reports_and_restores():
    old = _core._use_projection_panels(False)
    try:
        assert not _core.projection_panels_used(np.float32)
        assert _core._use_projection_panels(True) is False
    finally:
        _core._use_projection_panels(old)
    # one rule for both dtypes: the kernel beats OpenBLAS on AVX-512 in float64 too
    assert _core.projection_panels_used(np.float64) == _core.projection_panels_used(np.float32)
