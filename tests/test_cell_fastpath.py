"""The fast path of a cell step (lstmkit/nn/cell.py): a batched NumPy input and state of the
cell's dtype and shapes go straight to the fused kernel, skipping the thread-policy wrapper
when it would change nothing; anything else takes the checked path, with the same results
and PyTorch's errors.  No timings here (docs/performance.md)."""
import copy
import pickle

import numpy as np
import pytest

import lstmkit
from lstmkit import _threads
from lstmkit.backends.cython import CythonBackend
from lstmkit.nn.cell import RecurrentCell

CELLS = [("LSTMCell", 2), ("GRUCell", 1), ("RNNCell", 1)]


def _make(name, backend="cython", dtype=np.float32):
    return getattr(lstmkit, name)(5, 7, dtype=dtype, backend=backend, seed=1)


def _hx(n, batch, rng, dtype=np.float32):
    states = tuple(rng.standard_normal((batch, 7)).astype(dtype) for _ in range(n))
    return states if n == 2 else states[0]


@pytest.fixture
def checked(monkeypatch):
    """The cells whose checked path (``_prepare``) ran, once per call."""
    calls = []
    prepare = RecurrentCell._prepare

    def counting(self, *args, **kwargs):
        calls.append(self)
        return prepare(self, *args, **kwargs)

    monkeypatch.setattr(RecurrentCell, "_prepare", counting)
    return calls


@pytest.mark.parametrize("name,n", CELLS)
@pytest.mark.parametrize("batch", [1, 4])
def test_fast_path_matches_reference(name, n, batch, checked):
    rng = np.random.default_rng(batch)
    cell, ref = _make(name), _make(name, backend="numpy")
    x = rng.standard_normal((batch, 5)).astype(np.float32)
    hx = _hx(n, batch, rng)
    before = [a.copy() for a in (x, *(hx if n == 2 else (hx,)))]
    for state in (hx, None):
        got, want = cell(x, state), ref(x, state)
        for g, w in zip(got if n == 2 else (got,), want if n == 2 else (want,)):
            assert type(g) is np.ndarray and g.dtype == np.float32 and g.shape == (batch, 7)
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert cell not in checked  # both went the fast way
    for a, b in zip(before, (x, *(hx if n == 2 else (hx,)))):
        np.testing.assert_array_equal(a, b)  # the caller's arrays are untouched


@pytest.mark.parametrize("name,n", CELLS)
def test_other_inputs_take_the_checked_path_with_the_same_result(name, n, checked):
    rng = np.random.default_rng(0)
    cell = _make(name)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    hx = _hx(n, 3, rng)
    want = cell(x, hx)
    assert checked == []
    variants = [
        (np.asfortranarray(x), hx),                                  # not C-contiguous
        (x, [hx[0], hx[1]] if n == 2 else hx[:, ::-1].copy()[:, ::-1]),  # a list / a strided view
    ]
    for xv, hv in variants:
        with lstmkit.threads(1):  # the kernel is called directly and rejects a strided array
            got = cell(xv, hv)
        for g, w in zip(got if n == 2 else (got,), want if n == 2 else (want,)):
            np.testing.assert_array_equal(g, w)
    assert checked == [cell] * len(variants)
    one = cell(x[0], tuple(h[0] for h in hx) if n == 2 else hx[0])  # unbatched
    for g, w in zip(one if n == 2 else (one,), want if n == 2 else (want,)):
        np.testing.assert_allclose(g, w[0], rtol=1e-6)


@pytest.mark.parametrize("name,n", CELLS)
def test_errors_are_unchanged(name, n):
    rng = np.random.default_rng(0)
    cell = _make(name)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    with pytest.raises(RuntimeError, match="input has inconsistent input_size: got 4 expected 5"):
        cell(x[:, :4], _hx(n, 3, rng))
    with pytest.raises(RuntimeError, match="Input batch size 3 doesn't match hidden0 batch size 2"):
        cell(x, _hx(n, 2, rng))
    bad = _hx(n, 3, rng)
    bad = (bad[0], bad[1][:, :6]) if n == 2 else bad[:, :6]
    with pytest.raises(RuntimeError, match=f"hidden{n - 1} has inconsistent hidden_size: got 6, expected 7"):
        cell(x, bad)
    with pytest.raises((TypeError, RuntimeError, ValueError), match="float64|Double|dtype"):
        cell(x.astype(np.float64), _hx(n, 3, rng))


def test_thread_wrapper_skipped_only_when_it_changes_nothing(monkeypatch):
    calls = []
    step = CythonBackend._cell_step  # under the policy wrapper (cell_step): counted

    def counting(self, cell, params, x, state):
        calls.append(len(x))
        return step(self, cell, params, x, state)

    monkeypatch.setattr(CythonBackend, "_cell_step", counting)
    cell = _make("LSTMCell")
    x = np.ones((2, 5), np.float32)
    want = cell(x)  # the pools exist after the first core call
    p = _threads._pools()
    if p.set is None:
        pytest.skip("the core's BLAS exposes no thread control here")
    big = np.ones((4 * _threads.WORK_PER_THREAD // cell._row_work + 1, 5), np.float32)
    ref = _make("LSTMCell", backend="numpy")
    with lstmkit.threads(1):
        calls.clear()
        got = cell(x)
        cell(big)  # a ceiling of 1: big work gets 1 thread too
        assert calls == [] and _threads.kernel_unneeded(10)
    with lstmkit.threads(2, others=2):  # the core pool at 2 between calls
        calls.clear()
        got2 = cell(x)  # a small step that calls no BLAS needs no wrapper
        assert not _threads.kernel_unneeded(10)
        assert calls == [] if cell._step(x) is not False else calls == [2]
        assert p.get() == 2
    with lstmkit.threads(2, others=1):  # lstmkit run: small work skips, big work is sized
        assert _threads.kernel_unneeded(10)
        assert not _threads.kernel_unneeded(4 * _threads.WORK_PER_THREAD)
        calls.clear()
        cell(x)
        assert calls == []
        for g, w in zip(cell(big), ref(big)):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
        assert calls == [len(big)]
    for a, b, c in zip(want, got, got2):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_a_replaced_backend_cell_step_is_honoured(monkeypatch):
    """The compiled step stands in for the backend's ``cell_step``: a replacement (a wrapper,
    a spy) runs instead."""
    cell = _make("GRUCell")
    x = np.ones((2, 5), np.float32)
    want = cell(x)
    seen = []
    original = cell.backend.cell_step

    def spy(*args):
        seen.append(args[2])
        return original(*args)

    monkeypatch.setattr(cell.backend, "cell_step", spy)
    np.testing.assert_array_equal(cell(x), want)
    assert len(seen) == 1 and seen[0] is x
    monkeypatch.undo()
    monkeypatch.setattr(CythonBackend, "cell_step", lambda self, *args: spy(*args))
    np.testing.assert_array_equal(cell(x), want)
    assert len(seen) == 2


def test_backend_change_pickle_and_new_parameters():
    rng = np.random.default_rng(2)
    cell = _make("LSTMCell")
    x = rng.standard_normal((2, 5)).astype(np.float32)
    want = cell(x)
    for other in (pickle.loads(pickle.dumps(cell)), copy.deepcopy(cell)):
        for g, w in zip(other(x), want):
            np.testing.assert_array_equal(g, w)
    cell.backend = lstmkit.registry.get_backend("numpy")
    for g, w in zip(cell(x), want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    cell.backend = lstmkit.registry.get_backend("cython")
    cell.weight_ih = np.zeros_like(cell.weight_ih)  # a new parameter is used by the next step
    ref = _make("LSTMCell", backend="numpy")
    ref.load_state_dict(cell.state_dict())
    for g, w in zip(cell(x), ref(x)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_float64_cell_uses_the_fast_path(checked):
    cell = _make("GRUCell", dtype=np.float64)
    ref = _make("GRUCell", backend="numpy", dtype=np.float64)
    x = np.linspace(-1, 1, 10).reshape(2, 5)
    np.testing.assert_allclose(cell(x, np.ones((2, 7))), ref(x, np.ones((2, 7))), rtol=1e-12)
    assert cell not in checked


def test_cell_pickled_before_the_fast_path_still_runs():
    cell = _make("LSTMCell")
    x = np.ones((2, 5), np.float32)
    state = cell.__getstate__()
    del state["_step"], state["_step_for"], state["_row_work"]  # what an older lstmkit pickled
    old = RecurrentCell.__new__(type(cell))
    old.__setstate__(state)
    for g, w in zip(old(x), cell(x)):
        np.testing.assert_array_equal(g, w)
