"""The cupy backend under lstmkit's modules, on the CPU.

``LSTM``/``GRU``/``RNN`` and the cells with ``backend=CupyBackend(...)`` against
the same modules on the ``numpy`` reference (and ``cython``): multi-layer,
bidirectional, projection, packed (unsorted), ``batch_first``, unbatched,
dropout, ``bias=False``; forward, ``forward_train`` and every gradient; NumPy
in gives NumPy out.  Then lstmkit's conformance kit (``lstmkit.testing``:
``check_backends``, ``check_shapes``, ``check_gradients``), when present, with
the backend registered in-process.
"""
from __future__ import annotations

import numpy as np
import pytest

import lstmkit
from lkc_helpers import TOL, VARIANTS, FallbackLSTM, rel_err
from lstmkit.registry import available_backends
from lstmkit.utils.rnn import pack_padded_sequence

DTYPES = [np.float64, np.float32]
MODULE_CASES = [
    ("LSTM", dict(num_layers=2, bidirectional=True), "dense"),
    ("LSTM", dict(num_layers=2, bidirectional=True, proj_size=3, batch_first=True), "dense"),
    ("LSTM", dict(num_layers=3, dropout=0.4), "dense"),
    ("LSTM", dict(bidirectional=True, proj_size=2), "packed"),
    ("LSTM", dict(num_layers=2), "unbatched"),
    ("GRU", dict(num_layers=2, bidirectional=True, bias=False), "dense"),
    ("GRU", dict(num_layers=2, bidirectional=True, batch_first=True), "packed"),
    ("RNN", dict(num_layers=2, nonlinearity="relu", bidirectional=True), "packed"),
    ("RNN", dict(num_layers=2, dropout=0.3, bidirectional=True), "unbatched"),
]


@pytest.fixture(params=sorted(VARIANTS))
def variant(request):
    return VARIANTS[request.param]()


def _flat(state):
    return list(state) if isinstance(state, (tuple, list)) else [state]


def _data(out):
    return out.data if hasattr(out, "batch_sizes") else out


def _run(module, run_input, hx, seed):
    module.generator = np.random.default_rng(seed)  # the same dropout masks on every backend
    out, state, backward = module.forward_train(run_input, hx)
    rng = np.random.default_rng(seed + 1)
    w_out = rng.standard_normal(_data(out).shape).astype(module.dtype)
    w_state = [rng.standard_normal(s.shape).astype(module.dtype) for s in _flat(state)]
    d_state = tuple(w_state) if isinstance(state, tuple) else w_state[0]
    d_x, d_hx, d_params = backward(w_out, d_state)
    module.eval()
    out_eval, state_eval = module(run_input, hx)
    module.train()
    return out, state, d_x, d_hx, d_params, out_eval, state_eval


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", range(len(MODULE_CASES)),
                         ids=[f"{c}-{k}-{i}" for i, (c, _, k) in enumerate(MODULE_CASES)])
def test_modules_match_the_reference(variant, case, dtype):
    cls_name, cfg, kind = MODULE_CASES[case]
    cls = getattr(lstmkit, cls_name)
    steps, batch, inp, hid = 6, 3, 5, 4
    rng = np.random.default_rng(case)
    x = rng.standard_normal((steps, batch, inp)).astype(dtype)
    if cfg.get("batch_first"):
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    if kind == "packed":
        run_input = pack_padded_sequence(x, [6, 2, 5], batch_first=bool(cfg.get("batch_first")),
                                         enforce_sorted=False)
    elif kind == "unbatched":
        run_input = x[0] if cfg.get("batch_first") else x[:, 0]
    else:
        run_input = x
    modules = {name: cls(inp, hid, backend=name, dtype=dtype, seed=3, **cfg) for name in available_backends()}
    got_module = cls(inp, hid, backend=variant, dtype=dtype, seed=3, **cfg)
    # hx given for the dense case, None otherwise
    hx = None
    if kind == "dense":
        shapes = got_module._state_shapes(batch)
        states = [rng.standard_normal(s).astype(dtype) * 0.5 for s in shapes]
        hx = states[0] if len(states) == 1 else tuple(states)
    got = _run(got_module, run_input, hx, seed=7)
    out, state, d_x, d_hx, d_params, out_eval, state_eval = got
    assert type(_data(out)) is np.ndarray and type(d_x) is np.ndarray  # NumPy in, NumPy out
    assert all(type(s) is np.ndarray for s in _flat(state))
    assert all(type(g) is np.ndarray for g in d_params.values())
    for name, module in modules.items():
        want = _run(module, run_input, hx, seed=7)
        pairs = [("output", _data(out), _data(want[0])), ("d_input", _data(d_x), _data(want[2])),
                 ("eval output", _data(out_eval), _data(want[5]))]
        pairs += [(f"state[{k}]", a, b) for k, (a, b) in enumerate(zip(_flat(state), _flat(want[1])))]
        pairs += [(f"d_hx[{k}]", a, b) for k, (a, b) in enumerate(zip(_flat(d_hx), _flat(want[3])))]
        pairs += [(f"eval state[{k}]", a, b) for k, (a, b) in enumerate(zip(_flat(state_eval), _flat(want[6])))]
        assert list(d_params) == list(want[4])
        pairs += [(f"d_{p}", d_params[p], want[4][p]) for p in d_params]
        for what, a, b in pairs:
            err = rel_err(a, b)
            assert err <= TOL[np.dtype(dtype)], f"vs {name}: {what} differs by {err:.2e}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("cls_name", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cells_match_the_reference(variant, cls_name, dtype):
    cls = getattr(lstmkit, cls_name)
    ref = cls(5, 4, backend="numpy", dtype=dtype, seed=2)
    got = cls(5, 4, backend=variant, dtype=dtype, seed=2)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5)).astype(dtype)
    n = 2 if cls_name == "LSTMCell" else 1
    hx = tuple(rng.standard_normal((3, 4)).astype(dtype) for _ in range(n))
    hx = hx if n == 2 else hx[0]
    for args in ((x,), (x, hx), (x[0],), (x[0], tuple(h[0] for h in hx) if n == 2 else hx[0])):
        a, b = _flat(got(*args)), _flat(ref(*args))
        for u, v in zip(a, b):
            assert type(u) is np.ndarray
            assert rel_err(u, v) <= TOL[np.dtype(dtype)]
        res, backward = got.forward_train(*args)
        res_r, backward_r = ref.forward_train(*args)
        d_result = res if n == 1 else (res[0], None)
        g, g_r = backward(d_result), backward_r(d_result)
        assert type(g[0]) is np.ndarray
        assert rel_err(g[0], g_r[0]) <= TOL[np.dtype(dtype)]
        for u, v in zip(_flat(g[1]), _flat(g_r[1])):
            assert type(u) is np.ndarray and rel_err(u, v) <= TOL[np.dtype(dtype)]
        for p in g_r[2]:
            assert type(g[2][p]) is np.ndarray and rel_err(g[2][p], g_r[2][p]) <= TOL[np.dtype(dtype)]


def test_a_plugin_cell_runs_in_modules_on_the_backend(variant):
    cell_r, cell = FallbackLSTM(), FallbackLSTM()
    ref = lstmkit.Recurrent(cell_r, 5, 4, num_layers=2, bidirectional=True, backend="numpy",
                            dtype=np.float64, seed=0)
    got = lstmkit.Recurrent(cell, 5, 4, num_layers=2, bidirectional=True, backend=variant,
                            dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((6, 3, 5))
    packed = pack_padded_sequence(x, [6, 2, 5], enforce_sorted=False)
    a, b = _run(got, packed, None, 1), _run(ref, packed, None, 1)
    assert rel_err(_data(a[0]), _data(b[0])) <= 1e-12
    assert rel_err(_data(a[2]), _data(b[2])) <= 1e-12
    for p in b[4]:
        assert rel_err(a[4][p], b[4][p]) <= 1e-12


# -- lstmkit's conformance kit ---------------------------------------------------------------
def _kit():
    testing = pytest.importorskip("lstmkit.testing", reason="lstmkit.testing (the conformance kit) is not available")
    for name in ("registered_plugin", "check_backends", "check_shapes"):
        if not hasattr(testing, name):
            pytest.skip(f"lstmkit.testing has no {name}")
    return testing


class _TestBackends:
    """A plugin object registering the CPU variants of the cupy backend under test names."""

    @staticmethod
    @lstmkit.hookimpl
    def register_backends(register):
        from lstmkit.specs import BackendSpec

        for name in ("array_ops", "fake_device"):
            register(BackendSpec(f"cupy-test-{name}", VARIANTS[name], priority=-100))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu", "fallback"])
def test_conformance_kit_backends_agree(cell):
    testing = _kit()
    subject = FallbackLSTM if cell == "fallback" else cell
    with testing.registered_plugin(_TestBackends(), name="lstmkit-cupy-test-backends"):
        names = ["cupy-test-array_ops", "cupy-test-fake_device"]
        testing.check_backends(subject, backends=names)
        testing.check_shapes(subject, backends=names)
        if hasattr(testing, "check_gradients"):  # float64 central differences through the modules
            testing.check_gradients(subject, backends=["cupy-test-fake_device"])


def test_a_training_loop_on_captured_loops_matches_the_reference():
    """Forward loops are captured on their second call and replayed: a few training steps of a
    2-layer bidirectional LSTM, parameters updated in place between them, match the reference."""
    backend = VARIANTS["step_graphs"]()
    ours = lstmkit.LSTM(5, 6, num_layers=2, bidirectional=True, backend=backend, seed=3, dtype=np.float64)
    ref = lstmkit.LSTM(5, 6, num_layers=2, bidirectional=True, backend="numpy", seed=3, dtype=np.float64)
    rng = np.random.default_rng(0)
    for step in range(4):
        x = rng.standard_normal((7, 3, 5))
        w = rng.standard_normal((7, 3, 12))
        grads = []
        for module in (ours, ref):
            out, _, backward = module.forward_train(x)
            grads.append((out, backward(w)[2]))
        (out, g), (out_r, g_r) = grads
        assert rel_err(out, out_r) <= TOL[np.dtype(np.float64)], f"step {step}"
        for name in g_r:
            assert rel_err(g[name], g_r[name]) <= TOL[np.dtype(np.float64)], f"step {step}: d_{name}"
        for module, gr in ((ours, g), (ref, g_r)):  # an SGD step, in place
            for name, value in gr.items():
                getattr(module, name)[...] -= 0.1 * value
    assert backend.graphs.launches >= 8  # 4 layer-directions, replayed from the second step on
