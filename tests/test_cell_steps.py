"""The compiled cell step (``_core.CellStep``, ``lstmkit/nn/cell.py``'s fast path): every
built-in cell at batch 1-64, float32/float64, with and without ``hx`` and biases, against
the NumPy reference backend and torch; the checked path computes the same bits; weights
are read at every step (in-place updates are seen); nothing the caller passes is written.
No timings here (docs/performance.md)."""
import threading

import numpy as np
import pytest

import lstmkit
from lstmkit import _core
from lstmkit.backends import cython as cython_backend
from lstmkit.nn.cell import RecurrentCell

CELLS = [("LSTMCell", {}), ("GRUCell", {}), ("RNNCell", {}), ("RNNCell", {"nonlinearity": "relu"})]
BATCHES = [1, 2, 3, 4, 5, 16, 64, 100]  # few-row kernel, packed weights (32-64), BLAS
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}


def _make(name, kw, dtype, bias=True, backend="cython", sizes=(13, 21)):
    return getattr(lstmkit, name)(*sizes, bias=bias, dtype=dtype, backend=backend, seed=3, **kw)


def _state(name, batch, hidden, dtype, rng):
    states = tuple(rng.standard_normal((batch, hidden)).astype(dtype) for _ in range(2))
    return states if name == "LSTMCell" else states[0]


def _strided(x):
    """``x``'s values in a view that is not C-contiguous at any batch."""
    out = np.empty((x.shape[0], 2 * x.shape[1]), x.dtype)[:, ::2]
    out[...] = x
    return out


def _flat(result):
    return result if isinstance(result, tuple) else (result,)


@pytest.fixture
def checked(monkeypatch):
    """The cells whose checked path (``_prepare``) ran."""
    calls = []
    prepare = RecurrentCell._prepare

    def counting(self, *args, **kwargs):
        calls.append(self)
        return prepare(self, *args, **kwargs)

    monkeypatch.setattr(RecurrentCell, "_prepare", counting)
    return calls


@pytest.fixture(params=["threads(1)", "default"])
def policy(request):
    """``threads(1)``: the core's BLAS at 1 thread; default: at the CPU count between calls
    (a step that calls BLAS then runs inside the thread policy, the backend's ``cell_step``)."""
    if request.param == "default":
        yield False
    else:
        with lstmkit.threads(1):
            yield True


@pytest.mark.parametrize("name,kw", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_every_batch_matches_the_reference_and_the_checked_path(name, kw, dtype, bias, checked, policy):
    rng = np.random.default_rng(7)
    cell, ref = _make(name, kw, dtype, bias), _make(name, kw, dtype, bias, backend="numpy")
    for batch in BATCHES:
        x = rng.standard_normal((batch, 13)).astype(dtype)
        hx = _state(name, batch, 21, dtype, rng)
        before = [a.copy() for a in (x, *_flat(hx))]
        for state in (hx, None):
            got = cell(x, state)
            if policy:  # the compiled step itself answered
                alone = cell._step(x, state)
                assert alone is not None and alone is not False
                for g, a in zip(_flat(got), _flat(alone)):
                    np.testing.assert_array_equal(g, a)
            want = ref(x, state)
            assert type(got) is type(want)
            for g, w in zip(_flat(got), _flat(want)):
                assert type(g) is np.ndarray and g.dtype == dtype and g.shape == (batch, 21)
                assert g.flags.c_contiguous and g.flags.writeable and g.flags.owndata
                np.testing.assert_allclose(g, w, **TOL[dtype])
            assert cell not in checked
            # a strided input takes the checked path: the same arithmetic, the same bits
            # (up to 31 rows; from 32 the compiled step keeps the weights packed)
            slow = cell(_strided(x), state)
            assert checked.pop() is cell
            for g, s in zip(_flat(got), _flat(slow)):
                if batch < 32:
                    np.testing.assert_array_equal(g, s)
                else:
                    np.testing.assert_allclose(g, s, **TOL[dtype])
        for a, b in zip(before, (x, *_flat(hx))):
            np.testing.assert_array_equal(a, b)  # the caller's arrays are untouched


@pytest.mark.parametrize("name,kw", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_steps_match_torch(name, kw, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    cell = _make(name, kw, dtype)
    tcls = {"LSTMCell": torch.nn.LSTMCell, "GRUCell": torch.nn.GRUCell, "RNNCell": torch.nn.RNNCell}[name]
    tcell = tcls(13, 21, **kw).to(torch.float32 if dtype == np.float32 else torch.float64)
    tcell.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in cell.state_dict().items()})
    for batch in BATCHES:
        x = rng.standard_normal((6, batch, 13)).astype(dtype)
        h = c = np.zeros((batch, 21), dtype)
        th = tc = torch.zeros(batch, 21, dtype=tcell.weight_ih.dtype)
        with torch.no_grad():
            for t in range(6):  # a Python loop feeding each step's output back, like a user's
                if name == "LSTMCell":
                    h, c = cell(x[t], (h, c))
                    th, tc = tcell(torch.from_numpy(x[t]), (th, tc))
                else:
                    h = cell(x[t], h)
                    th = tcell(torch.from_numpy(x[t]), th)
        np.testing.assert_allclose(h, th.numpy(), **TOL[dtype])
        if name == "LSTMCell":
            np.testing.assert_allclose(c, tc.numpy(), **TOL[dtype])


@pytest.mark.parametrize("batch", [3, 64])  # weights read in place / kept packed
def test_in_place_weight_updates_and_assignments_are_seen_by_the_next_step(checked, policy, batch):
    rng = np.random.default_rng(1)
    cell = _make("LSTMCell", {}, np.float32)
    ref = _make("LSTMCell", {}, np.float32, backend="numpy")
    x = rng.standard_normal((batch, 13)).astype(np.float32)
    hx = _state("LSTMCell", batch, 21, np.float32, rng)
    cell(x, hx)
    cell.weight_hh -= 0.25  # what an optimizer step does: in place
    cell.bias_ih[5] = 3.0
    cell.weight_ih = np.ones_like(cell.weight_ih)  # a new array
    ref.load_state_dict(cell.state_dict())
    for g, w in zip(cell(x, hx), ref(x, hx)):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)
    cell.load_state_dict({k: v * 0.5 for k, v in cell.state_dict().items()})
    ref.load_state_dict(cell.state_dict())
    for g, w in zip(cell(x, hx), ref(x, hx)):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)
    cell.weight_hh[-1, -1] += 1.0  # one value of one weight, in place
    ref.load_state_dict(cell.state_dict())
    for g, w in zip(cell(x, hx), ref(x, hx)):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)
    assert cell not in checked


def test_a_new_dtype_gets_its_own_compiled_step(checked):
    cell = _make("GRUCell", {}, np.float32)
    x = np.linspace(-1, 1, 26).reshape(2, 13)
    cell(x.astype(np.float32))
    cell.double()
    ref = _make("GRUCell", {}, np.float64, backend="numpy")
    ref.load_state_dict(cell.state_dict())
    np.testing.assert_allclose(cell(x), ref(x), rtol=1e-12)
    assert cell not in checked


@pytest.mark.parametrize("make", [
    lambda x, hx: (x.astype(np.float64), hx),                      # another dtype: PyTorch's error
    lambda x, hx: (x[:, :5], hx),                                  # another width: PyTorch's error
    lambda x, hx: (x[0], tuple(h[0] for h in hx)),                 # unbatched
    lambda x, hx: (x[:0], tuple(h[:0] for h in hx)),               # no rows
    lambda x, hx: (x[::2], tuple(h[::2] for h in hx)),             # strided rows
    lambda x, hx: (x, [hx[0], hx[1]]),                             # a list
    lambda x, hx: (x.view(np.matrix), hx),                         # an ndarray subclass
    lambda x, hx: (x, (hx[0].astype(np.float64), hx[1])),          # a state of another dtype
])
def test_anything_but_the_plain_case_is_left_to_the_checked_path(make):
    rng = np.random.default_rng(5)
    cell = _make("LSTMCell", {}, np.float32)
    x = rng.standard_normal((4, 13)).astype(np.float32)
    hx = _state("LSTMCell", 4, 21, np.float32, rng)
    cell(x, hx)
    step = cell._step
    assert isinstance(step, _core.CellStep)
    args = make(x, hx)
    assert step(*args) is None
    try:
        want = cell(*args)
    except Exception as exc:  # the checked path's (PyTorch's) error, not the step's
        assert "CellStep" not in str(exc)
    else:
        assert want is not None


def test_a_changed_backend_is_noticed():
    cell = _make("RNNCell", {}, np.float32)
    x = np.ones((2, 13), np.float32)
    want = cell(x)
    step = cell._step
    cell.backend = lstmkit.registry.get_backend("numpy")
    assert step(x) is None  # the step belongs to the cython backend
    np.testing.assert_allclose(cell(x), want, rtol=2e-5, atol=2e-6)
    cell.backend = lstmkit.registry.get_backend("cython")
    np.testing.assert_array_equal(cell(x), want)


@pytest.mark.parametrize("shared", [False, True], ids=["alone", "shared"])
def test_poisoned_workspace_and_outputs_change_nothing(monkeypatch, policy, shared):
    """Workspaces and outputs filled with NaN first: every value read is one written. Shared:
    a step of 32-64 rows offered two threads hands rows to the helper, into its own workspace."""
    if shared:
        monkeypatch.setattr(cython_backend, "_split_threads", lambda work: 2)
    posts = _core._helper_threads()[1]
    rng = np.random.default_rng(9)
    for name, kw in CELLS:
        for bias in (True, False):
            cell = _make(name, kw, np.float32, bias)
            for batch in (1, 4, 16, 40, 64):
                x = rng.standard_normal((batch, 13)).astype(np.float32)
                hx = _state(name, batch, 21, np.float32, rng)
                clean = [cell(x, hx), cell(x)]
                monkeypatch.setattr(cython_backend, "POISON_WORKSPACES", True)
                poisoned = [cell(x, hx), cell(x)]
                monkeypatch.setattr(cython_backend, "POISON_WORKSPACES", False)
                for a, b in zip(clean, poisoned):
                    for g, w in zip(_flat(a), _flat(b)):
                        np.testing.assert_array_equal(g, w)
    if shared and _core.lk_panels_used(np.float32):
        assert _core._helper_threads()[1] > posts  # rows went to the helper


@pytest.mark.parametrize("batch", [4, 40])
def test_two_python_threads_on_one_cell(policy, batch):
    rng = np.random.default_rng(4)
    cell = _make("LSTMCell", {}, np.float32, sizes=(64, 128))
    xs = [rng.standard_normal((5, batch, 64)).astype(np.float32) for _ in range(2)]

    def run(x):
        h = c = np.zeros((batch, 128), np.float32)
        for x_t in x:
            h, c = cell(x_t, (h, c))
        return h, c

    want = [run(x) for x in xs]
    got = [None, None]

    def worker(i):
        for _ in range(20):
            got[i] = run(xs[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, w in zip(got, want):  # a thread finding the workspace busy reads the weights in place
        for a, b in zip(g, w):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nt_gemm_twin(dtype):
    rng = np.random.default_rng(2)
    for m, n, k in [(1, 1, 1), (1, 5, 7), (2, 33, 8), (3, 64, 17), (4, 31, 64), (5, 70, 130),
                    (9, 100, 3), (64, 37, 200)]:
        a = rng.standard_normal((m, k)).astype(dtype)
        w = rng.standard_normal((n, k)).astype(dtype)
        out = np.full((m, n), np.nan, dtype)
        _core.nt_gemm(a, w, out)
        tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out, a @ w.T, **tol)
        _core.nt_gemm(a, w, out, accumulate=True)
        np.testing.assert_allclose(out, 2 * (a @ w.T), **tol)
    with pytest.raises(ValueError, match="inner dimensions differ"):
        _core.nt_gemm(np.ones((2, 3), dtype), np.ones((4, 5), dtype), np.ones((2, 4), dtype))


def test_the_step_checks_the_ndarray_layout_it_reads():
    for a in (np.ones((3, 4), np.float32), np.ones((4, 3))[:, ::2], np.asfortranarray(np.ones((2, 5))),
              np.ones(7, np.float32), np.frombuffer(b"\0" * 16, np.float32).reshape(2, 2)):
        assert _core.cellstep_layout_ok(a)


def test_entry_points_through_blas_match():
    """``blas=True`` (what the thread policy asks for when it gives a step threads)."""
    rng = np.random.default_rng(8)
    cell, ref = _make("LSTMCell", {}, np.float32), _make("LSTMCell", {}, np.float32, backend="numpy")
    p = cell._parameters
    for batch in (1, 5, 40):
        x = rng.standard_normal((batch, 13)).astype(np.float32)
        h0, c0 = _state("LSTMCell", batch, 21, np.float32, rng)
        h, c = np.empty_like(h0), np.empty_like(c0)
        _core.lstm_step(x, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"], h0, c0, h, c,
                        blas=True)
        for g, w in zip((h, c), ref(x, (h0, c0))):
            np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)


def test_a_cell_is_freed_without_the_cycle_collector(policy):
    """The compiled step holds its cell weakly (it may hold megabytes of packed weights)."""
    import gc
    import weakref

    cell = _make("LSTMCell", {}, np.float32)
    cell(np.ones((40, 13), np.float32))
    assert isinstance(cell._step, _core.CellStep)
    ref = weakref.ref(cell)
    was = gc.isenabled()
    gc.disable()
    try:
        del cell
        assert ref() is None
    finally:
        if was:
            gc.enable()


@pytest.mark.parametrize("name,kw", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_rows_shared_with_the_helper_thread_give_the_bits_of_one(name, kw, dtype, bias, monkeypatch):
    """Over packed panels (32-64 rows) a step offered two threads hands its last rows to the
    core's helper thread: each row is summed as on one thread, so the bits are the same, with
    and without ``hx``; and the helper took one call per step."""
    rng = np.random.default_rng(11)
    cell = _make(name, kw, dtype, bias, sizes=(40, 64))
    for batch in (32, 33, 40, 64):
        x = rng.standard_normal((batch, 40)).astype(dtype)
        hx = _state(name, batch, 64, dtype, rng)
        monkeypatch.setattr(cython_backend, "_split_threads", lambda work: 1)
        posts = _core._helper_threads()[1]
        one = [cell(x, hx), cell(x)]
        assert _core._helper_threads()[1] == posts
        monkeypatch.setattr(cython_backend, "_split_threads", lambda work: 2)
        two = [cell(x, hx), cell(x)]
        shared = _core._helper_threads()[1] - posts
        if _core.lk_panels_used(dtype):
            assert shared == 2
        for a, b in zip(one, two):
            for g, w in zip(_flat(a), _flat(b)):
                np.testing.assert_array_equal(g, w)


def test_two_python_threads_sharing_steps_keep_their_rows(monkeypatch):
    """Two Python loops offered two threads at once: one step holds the helper, the other runs
    all its rows itself (never a thread started for one step); results as on one thread."""
    monkeypatch.setattr(cython_backend, "_split_threads", lambda work: 2)
    rng = np.random.default_rng(13)
    cells = [_make("LSTMCell", {}, np.float32, sizes=(64, 128)) for _ in range(2)]
    xs = [rng.standard_normal((6, 48, 64)).astype(np.float32) for _ in range(2)]

    def run(cell, x):
        state = None
        for x_t in x:
            state = cell(x_t, state)
        return state

    want = [run(c, x) for c, x in zip(cells, xs)]
    got, errors = [None, None], []

    def worker(i):
        try:
            for _ in range(30):
                got[i] = run(cells[i], xs[i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    started = _core._helper_threads()[0]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert _core._helper_threads()[0] - started <= 1
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            np.testing.assert_array_equal(a, b)


def test_a_bias_free_step_over_panels_keeps_the_sign_of_zero(checked):
    """Without biases the products are added to rows of +0, as on the checked path: an
    accumulator stored as it is would be -0 where every product underflowed below zero."""
    cell = _make("RNNCell", {}, np.float32, bias=False, sizes=(40, 64))
    cell.weight_ih[...] = -1e-30
    x = np.full((32, 40), 1e-30, np.float32)  # each product -1e-60: -0 in float32
    fast, slow = cell(x), cell(_strided(x))
    assert checked == [cell]  # the strided input took the checked path
    assert not np.signbit(slow).any()
    np.testing.assert_array_equal(np.signbit(fast), np.signbit(slow))
