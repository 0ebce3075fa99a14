"""The cython backend against the NumPy reference backend, and its own checks.

Every built-in cell, forward and reverse, packed and dense, with and without
bias (and projection for LSTM), float64 to ~1e-12 and float32 to ~1e-5: outputs,
final states and every gradient; float64 central differences of the compiled
backward; NaN-poisoned workspaces; inputs never mutated; random shapes.
"""
from __future__ import annotations

import numpy as np
import pytest

_core = pytest.importorskip("lstmkit._core", reason="the compiled core is not built")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lstmkit.backends import cython as cython_backend  # noqa: E402
from lstmkit.backends.base import Backend  # noqa: E402
from lstmkit.backends.cython import CythonBackend  # noqa: E402
from lstmkit.backends.reference import ReferenceBackend  # noqa: E402
from lstmkit.cells import LSTMCellType  # noqa: E402
from lstmkit.registry import get_cell  # noqa: E402
from lstmkit.testing import numeric_gradient  # noqa: E402

CY = CythonBackend()
REF = ReferenceBackend()
TOL = {np.float64: 1e-12, np.float32: 1e-5}

# (cell name, proj_size)
CELLS = [("lstm", 0), ("lstm", 3), ("gru", 0), ("rnn_tanh", 0), ("rnn_relu", 0)]
LAYOUTS = {
    "packed": [4, 4, 3, 1],
    "packed_steps": [3, 2, 2, 1, 1],
    "dense": [3, 3, 3],
    "batch1": [1, 1, 1, 1],
}


# -- helpers ------------------------------------------------------------------

def make_problem(name, proj, bias, batch_sizes, dtype, seed=0, input_size=5, hidden=4):
    """Random parameters, packed input and initial state for one layer-direction."""
    rng = np.random.default_rng(seed)
    cell = get_cell(name)
    params = {
        k: (rng.standard_normal(shape) * 0.6).astype(dtype)
        for k, shape in cell.parameter_shapes(input_size, hidden, proj, bias)
    }
    bs = np.asarray(batch_sizes, dtype=np.int64)
    n, b = int(bs.sum()), (int(bs[0]) if len(bs) else 0)
    x = rng.standard_normal((n, input_size)).astype(dtype)
    state0 = tuple(
        (rng.standard_normal((b, w)) * 0.5).astype(dtype) for w in cell.state_sizes(hidden, proj)
    )
    return cell, params, x, bs, state0


def upstream(y, state, seed=1):
    """Random gradients for ``y`` and the final state."""
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal(y.shape).astype(y.dtype),
        tuple(rng.standard_normal(s.shape).astype(s.dtype) for s in state),
    )


def rel_err(actual, expected):
    """max |actual - expected| scaled by max(1, max |expected|)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    if actual.size == 0:
        return 0.0
    return float(np.max(np.abs(actual - expected)) / max(1.0, float(np.max(np.abs(expected)))))


def run_both(backend, cell, params, x, bs, reverse, state0, d_y=None, d_state=None):
    """Forward (training) and backward on ``backend``."""
    y, state, cache = backend.layer_forward(cell, params, x, bs, reverse, state0, True)
    if d_y is None:
        d_y, d_state = upstream(y, state)
    d_x, d_state0, d_params = backend.layer_backward(cell, params, cache, d_y, d_state)
    return y, state, d_x, d_state0, d_params


def assert_matches_reference(cell, params, x, bs, reverse, state0, tol):
    ours = run_both(CY, cell, params, x, bs, reverse, state0)
    d_y, d_state = upstream(ours[0], ours[1])
    ref = run_both(REF, cell, params, x, bs, reverse, state0, d_y, d_state)
    ours = run_both(CY, cell, params, x, bs, reverse, state0, d_y, d_state)
    y, state, d_x, d_state0, d_params = ours
    ry, rstate, rd_x, rd_state0, rd_params = ref
    errors = {"y": rel_err(y, ry), "d_x": rel_err(d_x, rd_x)}
    assert len(state) == len(rstate) and len(d_state0) == len(rd_state0)
    for i, (a, b) in enumerate(zip(state, rstate)):
        errors[f"state_n[{i}]"] = rel_err(a, b)
    for i, (a, b) in enumerate(zip(d_state0, rd_state0)):
        errors[f"d_state0[{i}]"] = rel_err(a, b)
    assert list(d_params) == list(params), (list(d_params), list(params))
    for k in params:
        errors[f"d_{k}"] = rel_err(d_params[k], rd_params[k])
    bad = {k: v for k, v in errors.items() if not v <= tol}
    assert not bad, bad
    # inference matches the training forward
    yi, si, cache = CY.layer_forward(cell, params, x, bs, reverse, state0, False)
    assert cache is None
    np.testing.assert_array_equal(yi, y)
    for a, b in zip(si, state):
        np.testing.assert_array_equal(a, b)
    return errors


# -- parity with the reference --------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("name,proj", CELLS, ids=[f"{n}-p{p}" for n, p in CELLS])
def test_matches_reference(name, proj, reverse, bias, layout, dtype):
    cell, params, x, bs, state0 = make_problem(name, proj, bias, LAYOUTS[layout], dtype)
    assert_matches_reference(cell, params, x, bs, reverse, state0, TOL[dtype])


@pytest.mark.parametrize("name,proj", CELLS, ids=[f"{n}-p{p}" for n, p in CELLS])
def test_matches_reference_wider(name, proj):
    """Hidden sizes past one SIMD vector plus a remainder, more steps."""
    cell, params, x, bs, state0 = make_problem(
        name, proj, True, [6, 6, 5, 5, 3, 2, 2, 1], np.float64, input_size=7, hidden=37
    )
    for reverse in (False, True):
        assert_matches_reference(cell, params, x, bs, reverse, state0, 1e-12)


# -- gradients by central differences --------------------------------------------

def _loss(cell, params, x, bs, reverse, state0, r_y, r_state):
    y, state, _ = CY.layer_forward(cell, params, x, bs, reverse, state0, False)
    return float(np.sum(y * r_y) + sum(np.sum(s * r) for s, r in zip(state, r_state)))


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("name,proj", CELLS, ids=[f"{n}-p{p}" for n, p in CELLS])
def test_gradient_central_differences(name, proj, reverse):
    cell, params, x, bs, state0 = make_problem(
        name, proj, True, [3, 2, 2, 1], np.float64, seed=3, input_size=3, hidden=3
    )
    y, state, cache = CY.layer_forward(cell, params, x, bs, reverse, state0, True)
    r_y, r_state = upstream(y, state, seed=4)
    d_x, d_state0, d_params = CY.layer_backward(cell, params, cache, r_y, r_state)

    def numeric(arr):
        return numeric_gradient(lambda: _loss(cell, params, x, bs, reverse, state0, r_y, r_state), arr)

    checks = {"x": (d_x, numeric(x))}
    for i, s in enumerate(state0):
        checks[f"state0[{i}]"] = (d_state0[i], numeric(s))
    for k, v in params.items():
        checks[k] = (d_params[k], numeric(v))
    for what, (analytic, num) in checks.items():
        np.testing.assert_allclose(analytic, num, rtol=1e-6, atol=1e-8, err_msg=what)


# -- memory hygiene ---------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("name,proj", CELLS, ids=[f"{n}-p{p}" for n, p in CELLS])
def test_results_do_not_depend_on_workspace_contents(name, proj, bias, monkeypatch):
    """Every buffer the backend allocates starts as NaN: results are bit-identical."""
    cell, params, x, bs, state0 = make_problem(name, proj, bias, [4, 4, 3, 1], np.float64)
    for reverse in (False, True):
        clean = run_both(CY, cell, params, x, bs, reverse, state0)
        d_y, d_state = upstream(clean[0], clean[1])
        clean = run_both(CY, cell, params, x, bs, reverse, state0, d_y, d_state)
        monkeypatch.setattr(cython_backend, "POISON_WORKSPACES", True)
        poisoned = run_both(CY, cell, params, x, bs, reverse, state0, d_y, d_state)
        inference = CY.layer_forward(cell, params, x, bs, reverse, state0, False)
        step = CY.cell_step(cell, params, x[:4], tuple(s[:4] for s in state0))
        monkeypatch.setattr(cython_backend, "POISON_WORKSPACES", False)
        flat_clean = _flatten(clean)
        flat_poisoned = _flatten(poisoned)
        assert len(flat_clean) == len(flat_poisoned)
        for a, b in zip(flat_clean, flat_poisoned):
            assert not np.isnan(b).any()
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(inference[0], clean[0])
        ref_step = Backend.cell_step(CY, cell, params, x[:4], tuple(s[:4] for s in state0))
        for a, b in zip(step, ref_step):
            np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)


def _flatten(result):
    y, state, d_x, d_state0, d_params = result
    return [y, *state, d_x, *d_state0, *d_params.values()]


@pytest.mark.parametrize("name,proj", CELLS, ids=[f"{n}-p{p}" for n, p in CELLS])
def test_inputs_not_mutated(name, proj):
    cell, params, x, bs, state0 = make_problem(name, proj, True, [4, 4, 3, 1], np.float32)
    snapshot = [a.copy() for a in (x, bs, *state0, *params.values())]
    y, state, cache = CY.layer_forward(cell, params, x, bs, True, state0, True)
    d_y, d_state = upstream(y, state)
    d_snapshot = [a.copy() for a in (d_y, *d_state)]
    CY.layer_backward(cell, params, cache, d_y, d_state)
    if not proj:
        CY.cell_step(cell, params, x[:4], tuple(s[:4] for s in state0))
    for before, after in zip(snapshot, (x, bs, *state0, *params.values())):
        np.testing.assert_array_equal(before, after)
    for before, after in zip(d_snapshot, (d_y, *d_state)):
        np.testing.assert_array_equal(before, after)
    # outputs are new arrays, not views of the inputs
    for out in (y, *state):
        assert not any(np.shares_memory(out, a) for a in (x, *state0))


# -- odd shapes and layouts --------------------------------------------------------

@pytest.mark.parametrize("batch_sizes", [[], [0], [0, 0, 0]], ids=["T0", "T1", "T3"])
@pytest.mark.parametrize("name,proj", CELLS, ids=[f"{n}-p{p}" for n, p in CELLS])
def test_empty_batch(name, proj, batch_sizes):
    """B = 0 rows: empty outputs, zero weight gradients, like the reference."""
    cell, params, x, bs, state0 = make_problem(name, proj, True, batch_sizes, np.float64)
    assert x.shape[0] == 0 and state0[0].shape[0] == 0
    y, state, d_x, d_state0, d_params = run_both(CY, cell, params, x, bs, False, state0)
    p_width = proj or 4
    assert y.shape == (0, p_width) and d_x.shape == x.shape
    assert [s.shape for s in state] == [s.shape for s in state0]
    assert [s.shape for s in d_state0] == [s.shape for s in state0]
    for k, v in params.items():
        assert d_params[k].shape == v.shape
        np.testing.assert_array_equal(d_params[k], 0)


def test_no_steps_keeps_state():
    """T = 0 with B > 0: the final state is the initial state (new arrays)."""
    cell, params, _, _, state0 = make_problem("lstm", 0, True, [2, 1], np.float64)
    x = np.zeros((0, 5))
    y, state, cache = CY.layer_forward(cell, params, x, np.zeros(0, np.int64), False, state0, True)
    assert y.shape == (0, 4)
    for a, b in zip(state, state0):
        np.testing.assert_array_equal(a, b)
        assert a is not b
    d_x, d_state0, _ = CY.layer_backward(cell, params, cache, y, state0)
    for a, b in zip(d_state0, state0):
        np.testing.assert_array_equal(a, b)


def test_non_contiguous_and_mixed_layout_inputs():
    cell, params, x, bs, state0 = make_problem("lstm", 3, True, [4, 4, 3, 1], np.float64)
    wide = np.zeros((x.shape[0], 2 * x.shape[1]))
    wide[:, ::2] = x
    x_strided = wide[:, ::2]
    params_f = {k: np.asfortranarray(v) for k, v in params.items()}
    state_f = tuple(np.asfortranarray(s) for s in state0)
    expected = run_both(CY, cell, params, x, bs, True, state0)
    d_y, d_state = upstream(expected[0], expected[1])
    expected = run_both(CY, cell, params, x, bs, True, state0, d_y, d_state)
    got = run_both(
        CY, cell, params_f, x_strided, bs.astype(np.int32), True, state_f,
        np.asfortranarray(d_y), d_state,
    )
    for a, b in zip(_flatten(got), _flatten(expected)):
        np.testing.assert_array_equal(a, b)


def test_readonly_inputs():
    cell, params, x, bs, state0 = make_problem("gru", 0, True, [4, 3, 1], np.float32)
    for a in (x, bs, *state0, *params.values()):
        a.flags.writeable = False
    run_both(CY, cell, params, x, bs, False, state0)
    CY.cell_step(cell, params, x[:4], state0)


def test_nan_inf_and_huge_inputs():
    """Saturated gates match the reference; NaN/inf propagate like it, no crash."""
    for name, proj in CELLS:
        cell, params, x, bs, state0 = make_problem(name, proj, True, [4, 4, 3, 1], np.float64)
        big = x * 1e4
        y, state, _ = CY.layer_forward(cell, params, big, bs, False, state0, False)
        ry, rstate, _ = REF.layer_forward(cell, params, big, bs, False, state0, False)
        assert rel_err(y, ry) <= 1e-12
        x = x.copy()
        x[0, 0], x[5, 1], x[9, 2] = np.nan, np.inf, -np.inf
        y, state, _ = CY.layer_forward(cell, params, x, bs, False, state0, False)
        with np.errstate(invalid="ignore", over="ignore"):
            ry, rstate, _ = REF.layer_forward(cell, params, x, bs, False, state0, False)
            np.testing.assert_allclose(y, ry, rtol=1e-12, atol=1e-12, equal_nan=True)
            for a, b in zip(state, rstate):
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_bad_batch_sizes_are_rejected():
    cell, params, x, _, state0 = make_problem("lstm", 0, True, [4, 4, 3, 1], np.float64)
    with pytest.raises(ValueError, match="non-increasing"):
        CY.layer_forward(cell, params, x, np.array([1, 3, 4, 4]), False, state0, False)
    with pytest.raises(ValueError, match="sum to"):
        CY.layer_forward(cell, params, x, np.array([4, 4, 3]), False, state0, False)
    with pytest.raises(ValueError, match="non-increasing"):
        CY.layer_forward(cell, params, x, np.array([5, 4, 2, 1]), False, state0, False)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("training", [False, True])
def test_wrong_weight_ih_width_is_rejected(name, training):
    """A weight_ih of the wrong width would make the input GEMM read out of bounds."""
    cell, params, x, bs, state0 = make_problem(name, 0, True, [2, 1], np.float64)
    for width in (x.shape[1] - 1, x.shape[1] + 5):
        bad = dict(params, weight_ih=np.zeros((params["weight_ih"].shape[0], width)))
        with pytest.raises(ValueError, match="weight_ih"):
            CY.layer_forward(cell, bad, x, bs, False, state0, training)


def test_unsupported_dtype_is_rejected():
    cell, params, x, bs, state0 = make_problem("lstm", 0, True, [2, 1], np.float16)
    with pytest.raises(TypeError, match="float32 or float64"):
        CY.layer_forward(cell, params, x, bs, False, state0, False)
    with pytest.raises(TypeError, match="float32 or float64"):
        CY.cell_step(cell, params, x[:2], state0)


# -- one step (LSTMCell & co.) ----------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("name,proj", CELLS, ids=[f"{n}-p{p}" for n, p in CELLS])
def test_cell_step_matches_reference(name, proj, bias, batch, dtype):
    cell, params, x, _, state0 = make_problem(name, proj, bias, [batch, batch], dtype)
    x = x[:batch]
    got = CY.cell_step(cell, params, x, state0)
    expected = REF.cell_step(cell, params, x, state0)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert rel_err(a, b) <= TOL[dtype]
    # non-contiguous input and state take the converting path
    got2 = CY.cell_step(cell, params, np.asfortranarray(x), tuple(np.asfortranarray(s) for s in state0))
    for a, b in zip(got2, got):
        np.testing.assert_array_equal(a, b)


def test_cell_steps_chain_like_a_sequence():
    """T single steps carrying the state equal one T-step forward (karpathy's check)."""
    cell, params, x, bs, state0 = make_problem("lstm", 0, True, [3, 3, 3, 3], np.float64)
    y, state, _ = CY.layer_forward(cell, params, x, bs, False, state0, False)
    s = state0
    for t in range(4):
        s = CY.cell_step(cell, params, x[3 * t : 3 * t + 3], s)
        np.testing.assert_allclose(s[0], y[3 * t : 3 * t + 3], rtol=1e-13, atol=1e-14)
    for a, b in zip(s, state):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)


# -- plugin cells fall back to the reference ---------------------------------------

class _PluginLSTM(LSTMCellType):
    name = "plugin_lstm"


def test_unknown_cell_falls_back_to_reference():
    cell = _PluginLSTM()
    _, params, x, bs, state0 = make_problem("lstm", 0, True, [4, 4, 3, 1], np.float64)
    ours = run_both(CY, cell, params, x, bs, True, state0)
    d_y, d_state = upstream(ours[0], ours[1])
    ours = run_both(CY, cell, params, x, bs, True, state0, d_y, d_state)
    ref = run_both(REF, cell, params, x, bs, True, state0, d_y, d_state)
    for a, b in zip(_flatten(ours), _flatten(ref)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(CY.cell_step(cell, params, x[:4], state0), REF.cell_step(cell, params, x[:4], state0)):
        np.testing.assert_array_equal(a, b)


# -- random shapes ------------------------------------------------------------------

@st.composite
def problems(draw):
    name, proj = draw(st.sampled_from(CELLS + [("lstm", 1)]))
    hidden = draw(st.integers(1, 9))
    if proj:
        proj = draw(st.integers(1, hidden))
    lengths = sorted(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)), reverse=True)
    batch_sizes = [sum(1 for n in lengths if n > t) for t in range(lengths[0])]
    return dict(
        name=name, proj=proj, hidden=hidden, batch_sizes=batch_sizes,
        input_size=draw(st.integers(1, 6)), bias=draw(st.booleans()),
        reverse=draw(st.booleans()), seed=draw(st.integers(0, 2**16)),
        dtype=draw(st.sampled_from([np.float64, np.float32])),
    )


@settings(max_examples=30, deadline=None)
@given(problems())
def test_random_shapes_match_reference(p):
    cell, params, x, bs, state0 = make_problem(
        p["name"], p["proj"], p["bias"], p["batch_sizes"], p["dtype"], seed=p["seed"],
        input_size=p["input_size"], hidden=p["hidden"],
    )
    assert_matches_reference(cell, params, x, bs, p["reverse"], state0, TOL[p["dtype"]])


# -- the C helpers through their test twins --------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_tanh_and_sigmoid_twins(dtype):
    rng = np.random.default_rng(0)
    x = np.concatenate([
        rng.uniform(-30, 30, 5000), rng.uniform(-1, 1, 5000), rng.uniform(-1e-4, 1e-4, 1000),
        [0.0, -0.0, 1e-30, -1e-30, 8.9, 9.1, 19.0, 21.0, 1e5, -1e5],
    ]).astype(dtype)
    out = np.empty_like(x)
    _core.tanh_array(x, out)
    exact = np.tanh(x.astype(np.float64))
    ulp = np.spacing(np.abs(exact).astype(dtype)).astype(np.float64)
    assert np.max(np.abs(out - exact) / ulp) <= 4
    assert np.signbit(out[x == 0]).tolist() == np.signbit(x[x == 0]).tolist()
    _core.sigmoid_array(x, out)
    with np.errstate(over="ignore"):
        exact_sig = 1 / (1 + np.exp(-x.astype(np.float64)))
    assert np.max(np.abs(out - exact_sig)) <= 4 * np.finfo(dtype).eps
    special = np.array([np.nan, np.inf, -np.inf, -1e4], dtype=dtype)
    res = np.empty_like(special)
    _core.tanh_array(special, res)
    assert np.isnan(res[0]) and res[1] == 1 and res[2] == -1 and res[3] == -1
    _core.sigmoid_array(special, res)
    assert np.isnan(res[0]) and res[1] == 1 and res[2] == 0 and res[3] == 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("m,n,k", [(5, 7, 3), (1, 6, 4), (4, 1, 2), (3, 4, 0), (1, 1, 1)])
def test_gemm_twin(m, n, k, dtype):
    rng = np.random.default_rng(0)
    gemm = _core.gemm["float" if dtype is np.float32 else "double"]
    for ta in (False, True):
        for tb in (False, True):
            a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
            b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
            expected = 0.5 * ((a.T if ta else a) @ (b.T if tb else b))
            c = np.full((m, n), np.nan, dtype)  # beta = 0 must not read C
            gemm(ta, tb, 0.5, a, b, 0.0, c)
            np.testing.assert_allclose(c, expected, rtol=TOL[dtype], atol=TOL[dtype])
            c0 = rng.standard_normal((m, n)).astype(dtype)
            c = c0.copy()
            gemm(ta, tb, 0.5, a, b, 2.0, c)
            np.testing.assert_allclose(c, expected + 2 * c0, rtol=TOL[dtype], atol=TOL[dtype])


def test_kernel_entry_points_check_shapes():
    """The C code trusts its shapes: the def wrappers must reject wrong ones."""
    x = np.zeros((3, 2))
    w_ih, w_hh = np.zeros((8, 2)), np.zeros((8, 2))
    h0 = np.zeros((3, 2))
    bs = np.array([3], np.int64)
    good = dict(h=np.empty((3, 2)), c=np.empty((3, 2)), y=np.empty((3, 2)), gates=np.empty((3, 8)))
    _core.lstm_forward(x, w_ih, w_hh, None, None, None, bs, False, h0, h0, **good, hcell=None)
    for key, bad in [("y", np.empty((2, 2))), ("gates", np.empty((3, 7))), ("c", np.empty((2, 2)))]:
        kwargs = dict(good, **{key: bad})
        with pytest.raises(ValueError, match=key):
            _core.lstm_forward(x, w_ih, w_hh, None, None, None, bs, False, h0, h0, **kwargs, hcell=None)
    with pytest.raises(ValueError, match="weight_hh"):
        _core.lstm_forward(x, w_ih, np.zeros((8, 3)), None, None, None, bs, False, h0, h0,
                           **good, hcell=None)


def test_step_entry_points_check_their_arguments():
    x, h0 = np.zeros((2, 3)), np.zeros((2, 4))
    w_ih, w_hh = np.zeros((16, 3)), np.zeros((16, 4))
    h, c = np.empty((2, 4)), np.empty((2, 4))
    _core.lstm_step(x, w_ih, w_hh, None, None, h0, h0, h, c)
    np.testing.assert_array_equal(h, 0)
    with pytest.raises(ValueError, match="h0"):
        _core.lstm_step(x, w_ih, w_hh, None, None, np.zeros((3, 4)), h0, h, c)
    with pytest.raises(ValueError, match="weight_hh"):
        _core.lstm_step(x, w_ih, w_hh.astype(np.float32), None, None, h0, h0, h, c)
    with pytest.raises(ValueError, match="bias_ih"):
        _core.lstm_step(x, w_ih, w_hh, np.zeros(15), None, h0, h0, h, c)
    with pytest.raises(ValueError, match="input: ndarray is not C-contiguous"):
        _core.lstm_step(np.zeros((3, 2)).T, w_ih, w_hh, None, None, h0, h0, h, c)
    with pytest.raises(ValueError, match="input"):
        _core.gru_step(x.astype(np.int64), w_ih[:12], w_hh[:12], None, None, h0, h)
    with pytest.raises(ValueError, match="weight_ih"):
        _core.rnn_step(x, np.zeros((4, 2)), w_hh[:4], None, None, False, h0, h)
