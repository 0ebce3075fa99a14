"""The fused LSTM step (``lk_fused_forward``): one product ``[x_t | h] @ [W_ih | W_hh]^T``
per step with the gate math in its epilogue, on one or two threads.  Every output and
training cache is compared with the unfused path (input projection, then the recurrent
product) on shapes that hit its tails: hidden sizes that are not a multiple of the 8
units of a panel, packed batches that shrink to one row (forward) or grow (reverse), a
single panel (nothing to split), and no bias."""
from __future__ import annotations

import numpy as np
import pytest

_core = pytest.importorskip("lstmkit._core", reason="the compiled core is not built")

from lstmkit.backends.cython import CythonBackend  # noqa: E402
from lstmkit.backends.reference import ReferenceBackend  # noqa: E402
from lstmkit.registry import get_cell  # noqa: E402

CTYPE = {np.float32: "float", np.float64: "double"}
TOL = {np.float32: 2e-5, np.float64: 1e-12}
LAYOUTS = {
    "packed": [40, 33, 9, 8, 5, 2, 1],
    "dense": [6] * 7,
    "two": [2] * 5,
    "full": [64] * 3,
}


def _rel(a, b):
    return float(np.max(np.abs(a - b), initial=0) / max(1.0, float(np.max(np.abs(b), initial=0))))


def _forward(dtype, hidden, layout, reverse, train, bias, **kw):
    rng = np.random.default_rng(hidden * 7 + len(layout))
    I, H = 11, hidden
    bs = np.asarray(layout, np.int64)
    N, B = int(bs.sum()), int(bs[0])
    f = lambda *s: (rng.standard_normal(s) * 0.4).astype(dtype)  # noqa: E731
    x, w_ih, w_hh = f(N, I), f(4 * H, I), f(4 * H, H)
    b_ih, b_hh = (f(4 * H), f(4 * H)) if bias else (None, None)
    h0, c0 = f(B, H), f(B, H)
    out = dict(h=np.full((B, H), np.nan, dtype), c=np.full((B, H), np.nan, dtype),
               y=np.full((N, H), np.nan, dtype))
    if train:
        out.update(gates=np.full((N, 4 * H), np.nan, dtype), hprev=np.full((N, H), np.nan, dtype),
                   cprev=np.full((N, H), np.nan, dtype), tanhc=np.full((N, H), np.nan, dtype))
        extra = (out["hprev"], out["cprev"], out["tanhc"])
    else:
        out["gates"] = np.full((B, 4 * H), np.nan, dtype)  # one step's rows: the smallest allowed
        extra = ()
    _core.lstm_forward[CTYPE[dtype]](x, w_ih, w_hh, b_ih, b_hh, None, bs, reverse, h0, c0,
                                     out["h"], out["c"], out["y"], out["gates"], None, *extra, **kw)
    if not train:
        del out["gates"]  # a workspace
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("train", [False, True], ids=["infer", "train"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("hidden", [1, 8, 37, 64])
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_matches_unfused(threads, hidden, layout, reverse, train, dtype):
    args = (dtype, hidden, LAYOUTS[layout], reverse, train, hidden != 8)
    want = _forward(*args, fuse=0)
    got = _forward(*args, fuse=1, threads=threads)
    for k in want:
        assert not np.isnan(got[k]).any(), k
        assert _rel(got[k], want[k]) < TOL[dtype], (k, _rel(got[k], want[k]))


# backward splits whole 32-column panels of W_hh: 19 is one panel, 70 three
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("hidden", [19, 70])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_layer_forward_backward_on_two_threads_match_the_reference(reverse, threads, layout,
                                                                    hidden, dtype, monkeypatch):
    from lstmkit.backends import cython as cython_backend
    monkeypatch.setattr(cython_backend, "_split_threads", lambda work: threads)
    rng = np.random.default_rng(hidden)
    cell = get_cell("lstm")
    params = {k: (rng.standard_normal(s) * 0.3).astype(dtype)
              for k, s in cell.parameter_shapes(5, hidden, 0, True)}
    bs = np.array(LAYOUTS[layout], np.int64)
    x = rng.standard_normal((int(bs.sum()), 5)).astype(dtype)
    state0 = tuple(rng.standard_normal((int(bs[0]), hidden)).astype(dtype) for _ in range(2))
    d_y = rng.standard_normal((int(bs.sum()), hidden)).astype(dtype)
    results = []
    for backend in (CythonBackend(), ReferenceBackend()):
        y, s, cache = backend.layer_forward(cell, params, x, bs, reverse, state0, True)
        d = backend.layer_backward(cell, params, cache, d_y, (s[0] * 0.5, s[1]))
        results.append([y, *s, d[0], *d[1], *(d[2][k] for k in sorted(d[2]))])
    for i, (a, b) in enumerate(zip(*results)):
        assert _rel(a, b) < TOL[dtype] * 5, (i, _rel(a, b))


def test_split_threads_follows_the_policy(monkeypatch):
    from lstmkit import _threads

    monkeypatch.setattr(_threads, "free_threads", lambda: 2)
    big = _threads.SPLIT_MIN_WORK
    with _threads.threads(2):
        assert _threads.split_threads(big) == 2
        assert _threads.split_threads(big - 1) == 1  # too little work per step to meet
        monkeypatch.setattr(_threads._C, "active", 2)  # another Python thread in the core
        assert _threads.split_threads(big) == 1
        monkeypatch.setattr(_threads._C, "active", 0)
    with _threads.threads(1):
        assert _threads.split_threads(big) == 1


@pytest.mark.parametrize("step", [0, 2, 6])
def test_a_stalled_second_thread_hands_the_work_to_the_caller(step, monkeypatch):
    """The worker sleeps 5 ms before a step (descheduled on a busy machine): the caller
    waits past the stall limit, both switch to one thread from then on, and the
    forward and backward results are those of one thread."""
    from lstmkit.backends import cython as cython_backend
    rng = np.random.default_rng(step)
    cell = get_cell("lstm")
    params = {k: rng.standard_normal(s) * 0.3 for k, s in cell.parameter_shapes(5, 70, 0, True)}
    bs = np.array(LAYOUTS["packed"], np.int64)
    x = rng.standard_normal((int(bs.sum()), 5))
    state0 = tuple(rng.standard_normal((int(bs[0]), 70)) for _ in range(2))
    d_y = rng.standard_normal((int(bs.sum()), 70))
    results = []
    for threads in (1, 2):
        monkeypatch.setattr(cython_backend, "_split_threads", lambda work: threads)
        before = _core._stall_worker_at(step if threads == 2 else -1)
        try:
            y, s, cache = CythonBackend().layer_forward(cell, params, x, bs, False, state0, True)
            d = CythonBackend().layer_backward(cell, params, cache, d_y, s)
        finally:
            after = _core._stall_worker_at(-1)
        teams, solos = after[0] - before[0], after[1] - before[1]
        # each loop (forward, backward) started a second thread and gave up on it
        assert (teams, solos) == ((2, 2) if threads == 2 else (0, 0))
        results.append([y, *s, d[0], *d[1], *(d[2][k] for k in sorted(d[2]))])
    for i, (a, b) in enumerate(zip(*results)):
        assert _rel(a, b) < 1e-13, (i, _rel(a, b))
