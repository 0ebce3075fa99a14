"""The two directions of a bidirectional layer run in two Python threads (lstmkit/engine.py)
when the thread ceiling allows two, the kernel releases the GIL and the work pays for the
hand-off; results are those of the sequential run.  No timings here (docs/performance.md)."""
import threading

import numpy as np
import pytest

import lstmkit
from lstmkit import _threads, engine
from lstmkit.backends.cython import CythonBackend


@pytest.fixture
def spy(monkeypatch):
    """``(call, reverse, thread name)`` of each cython layer_forward/layer_backward."""
    seen = []
    forward, backward = CythonBackend.layer_forward, CythonBackend.layer_backward

    def layer_forward(self, *args):
        seen.append(("forward", args[4], threading.current_thread().name))
        return forward(self, *args)

    def layer_backward(self, *args):
        seen.append(("backward", args[2].reverse, threading.current_thread().name))
        return backward(self, *args)

    monkeypatch.setattr(CythonBackend, "layer_forward", layer_forward)
    monkeypatch.setattr(CythonBackend, "layer_backward", layer_backward)
    _quiet(monkeypatch)
    return seen


def _quiet(monkeypatch):
    """4 CPUs and nothing else running, whatever this machine is."""
    monkeypatch.setattr(_threads, "usable_cpus", lambda: 4)
    monkeypatch.setattr(_threads, "_other_load", lambda: 0.0)


def _run(module, x, hx):
    out, state, backward = module.forward_train(x, hx)
    d_out = np.random.default_rng(1).standard_normal(out.shape).astype(out.dtype)
    return (out, *state, *backward(d_out, None)[:2])


def _flat(value):
    """Every array in nested tuples/lists/dicts, in order."""
    if isinstance(value, dict):
        return [a for v in value.values() for a in _flat(v)]
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in _flat(v)]
    return [value]


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_concurrent_equals_sequential(kind, spy, monkeypatch):
    rng = np.random.default_rng(0)
    m = getattr(lstmkit, kind)(6, 8, num_layers=2, bidirectional=True, seed=3)
    x = rng.standard_normal((7, 3, 6)).astype(np.float32)
    nstates = 2 if kind == "LSTM" else 1
    hx = tuple(rng.standard_normal((4, 3, 8)).astype(np.float32) for _ in range(nstates))
    hx = hx if kind == "LSTM" else hx[0]
    with lstmkit.threads(2):
        monkeypatch.setattr(engine, "CONCURRENT_WORK", 1 << 62)
        sequential = (m(x, hx), _run(m, x, hx))
        assert {name for *_, name in spy} == {threading.current_thread().name}
        spy.clear()
        monkeypatch.setattr(engine, "CONCURRENT_WORK", 1)
        together = (m(x, hx), _run(m, x, hx))
    # every layer's reverse direction ran in the helper thread, forward and backward
    main = threading.current_thread().name
    # 2 layers: inference and training forward 4 calls each, backward 4
    expected = [("forward", False, main), ("forward", True, "lstmkit-direction")] * 4 \
        + [("backward", False, main), ("backward", True, "lstmkit-direction")] * 2
    assert sorted(spy) == sorted(expected)
    sequential, together = _flat(sequential), _flat(together)
    assert len(sequential) == len(together) > 8
    for a, b in zip(sequential, together):
        np.testing.assert_array_equal(a, b)


def test_sequential_at_one_thread_or_small_work(spy, monkeypatch):
    m = lstmkit.LSTM(4, 5, bidirectional=True, seed=0)
    x = np.ones((3, 2, 4), np.float32)
    monkeypatch.setattr(engine, "CONCURRENT_WORK", 1)
    with lstmkit.threads(1):
        m(x)
    monkeypatch.setattr(engine, "CONCURRENT_WORK", 1 << 62)
    with lstmkit.threads(2):
        m(x)
    assert [name for *_, name in spy] == [threading.current_thread().name] * 4


def test_sequential_while_another_python_thread_is_in_the_core(spy, monkeypatch):
    m = lstmkit.LSTM(4, 5, bidirectional=True, seed=0)
    x = np.ones((3, 2, 4), np.float32)
    monkeypatch.setattr(engine, "CONCURRENT_WORK", 1)
    monkeypatch.setattr(_threads, "in_core", lambda: 1)  # a user's other thread, say
    with lstmkit.threads(2):
        m(x)
    assert [name for *_, name in spy] == [threading.current_thread().name] * 2


def test_not_for_other_backends_or_unidirectional(monkeypatch):
    _quiet(monkeypatch)
    monkeypatch.setattr(engine, "CONCURRENT_WORK", 1)
    with lstmkit.threads(2):
        bi = lstmkit.LSTM(4, 5, bidirectional=True)
        numpy_bi = lstmkit.LSTM(4, 5, bidirectional=True, backend="numpy")
        layer = [{"weight_ih": np.ones((20, 4)), "weight_hh": np.ones((20, 5))}] * 2
        assert engine.concurrent_directions(bi.cell, bi.backend, layer, 10)
        assert not engine.concurrent_directions(numpy_bi.cell, numpy_bi.backend, layer, 10)
        assert not engine.concurrent_directions(bi.cell, bi.backend, layer[:1], 10)
        monkeypatch.setattr(_threads, "_other_load", lambda: 2.5)  # a busy machine: 1.5 CPUs free
        assert not engine.concurrent_directions(bi.cell, bi.backend, layer, 10)
        monkeypatch.setattr(_threads, "_other_load", lambda: None)  # not known yet
        assert not engine.concurrent_directions(bi.cell, bi.backend, layer, 10)


def test_run_directions_raises_either_error():
    def boom():
        raise ZeroDivisionError("second")

    assert engine.run_directions([lambda: 1, lambda: 2], True) == [1, 2]
    with pytest.raises(ZeroDivisionError, match="second"):
        engine.run_directions([lambda: 1, boom], True)
    with pytest.raises(KeyError):
        engine.run_directions([lambda: {}[0], boom], True)  # the first's error wins


def test_concurrent_directions_use_one_thread_each(monkeypatch):
    """Whichever direction entered the core first used to take the second CPU for its own
    two-thread loop (work per step >= SPLIT_MIN_WORK), so three threads shared two CPUs
    (T200 B8 H128 bidirectional at 2 threads: 23 ms, against 17 with one thread each)."""
    _quiet(monkeypatch)
    from lstmkit import _core
    from lstmkit.backends import cython as cython_backend

    if not _core.lk_panels_used(np.float32):
        pytest.skip("no two-thread loops on this CPU/build")
    monkeypatch.setattr(engine, "CONCURRENT_WORK", 1)
    monkeypatch.setattr(_threads, "SPLIT_MIN_WORK", 1)
    granted = []
    split = cython_backend._split_threads

    def spy_split(work):
        granted.append(split(work))
        return granted[-1]

    monkeypatch.setattr(cython_backend, "_split_threads", spy_split)
    m = lstmkit.LSTM(8, 40, bidirectional=True, seed=0)
    x = np.random.default_rng(0).standard_normal((6, 16, 8)).astype(np.float32)
    with lstmkit.threads(2):
        before = _core._stall_worker_at(-1)[0]
        _run(m, x, None)
        teams = _core._stall_worker_at(-1)[0] - before
        assert granted and set(granted) == {1} and teams == 0
        one = lstmkit.LSTM(8, 40, seed=0)  # one direction alone still gets its two threads
        granted.clear()
        _run(one, x, None)
        assert set(granted) == {2} and _core._stall_worker_at(-1)[0] - before == 2


# -- the partner thread (lstmkit._threads.run_pair) -----------------------------------------

def _affinity_known():
    return _threads.cpu_halves() is not None


def test_run_pair_runs_the_second_in_one_persistent_thread():
    names = []
    for _ in range(3):
        assert _threads.run_pair(lambda: 1, lambda: names.append(threading.current_thread()) or 2) == [1, 2]
    assert len({id(t) for t in names}) == 1 and names[0].name == "lstmkit-direction"
    assert names[0] is not threading.current_thread() and names[0].daemon


@pytest.mark.skipif(not _affinity_known(), reason="needs Linux CPU affinity and two CPUs")
def test_run_pair_holds_the_two_on_disjoint_cpus_and_restores_the_caller():
    import os

    before = os.sched_getaffinity(0)
    seen = _threads.run_pair(lambda: os.sched_getaffinity(0), lambda: os.sched_getaffinity(0))
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert seen[0] | seen[1] == before
    assert os.sched_getaffinity(0) == before
    # an error in either still restores the caller's CPUs
    with pytest.raises(ZeroDivisionError):
        _threads.run_pair(lambda: 1 / 0, lambda: 2)
    assert os.sched_getaffinity(0) == before


def test_run_pair_inside_run_pair_runs_in_turn():
    """A second user of the partner (another Python thread, or a nested call) does not wait
    for it: its two calls run one after the other in its own thread."""
    main = threading.current_thread()

    def nested():
        return _threads.run_pair(lambda: threading.current_thread(), lambda: threading.current_thread())

    inner, other = _threads.run_pair(nested, lambda: 0)
    assert inner == [main, main] and other == 0


def test_run_pair_in_a_forked_child():
    """The partner thread does not survive fork (and its lock may be held then): a child
    starts its own."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    _threads.run_pair(lambda: 1, lambda: 2)  # the parent's partner exists
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_child_pair)
    child.start()
    child.join(30)
    assert child.exitcode == 0


def _child_pair():
    import os

    ok = _threads.run_pair(lambda: 1, lambda: threading.current_thread().name) == [1, "lstmkit-direction"]
    os._exit(0 if ok else 1)


def test_an_interrupt_while_waiting_waits_for_the_helper_and_restores_the_cpus():
    """Ctrl-C (here a SIGALRM handler raising KeyboardInterrupt) during the wait: the helper's
    call still finishes before the caller goes on, the caller's CPUs come back, and the next
    pair gets its own result, not the interrupted one's."""
    import os
    import signal
    import time

    if not hasattr(signal, "setitimer"):
        pytest.skip("no interval timer on this platform")
    partner = _threads._Partner()
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    finished = []

    def slow():
        time.sleep(0.3)
        finished.append(time.monotonic())
        return "old"

    def interrupt(*_):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(KeyboardInterrupt):
            partner.run(lambda: "first", slow)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert finished  # the helper was waited for
    if before is not None:
        assert os.sched_getaffinity(0) == before
    assert partner.run(lambda: 1, lambda: "new") == [1, "new"]
    with pytest.raises(KeyboardInterrupt):  # raised by the first call, after the second finished
        partner.run(lambda: (_ for _ in ()).throw(KeyboardInterrupt), slow)
    assert len(finished) == 2
    assert partner.run(lambda: 2, lambda: "newer") == [2, "newer"]


def test_a_helper_that_cannot_start_leaves_the_partner_usable(monkeypatch):
    partner = _threads._Partner()
    start = threading.Thread.start

    def fail(self):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", fail)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        partner.run(lambda: 1, lambda: 2)
    monkeypatch.setattr(threading.Thread, "start", start)
    assert partner.run(lambda: 1, lambda: 2) == [1, 2]


def test_an_idle_helper_exits_and_a_new_one_starts(monkeypatch):
    """No thread is kept for a process that stopped using bidirectional layers (Python 3.12
    warns when a process with threads forks)."""
    monkeypatch.setattr(_threads._Partner, "IDLE_S", 0.05)
    partner = _threads._Partner()
    assert partner.run(lambda: 1, lambda: 2) == [1, 2]
    helper = partner.thread
    helper.join(5)
    assert not helper.is_alive() and partner.thread is None
    second = partner.run(lambda: 1, lambda: threading.current_thread())[1]
    assert second is partner.thread and second is not helper and second.is_alive()


def test_a_backend_without_scratch_runs_a_bidirectional_stack():
    """``scratch`` is optional in the backend contract (docs/plugins.md): a duck-typed backend
    without it trains a bidirectional stack to the same results as the reference backend."""
    from lstmkit.backends import ReferenceBackend

    ref = ReferenceBackend()

    class Duck:
        name, xp = "duck", np

        def layer_forward(self, *args):
            return ref.layer_forward(*args)

        def layer_backward(self, *args):
            return ref.layer_backward(*args)

    m = lstmkit.LSTM(5, 6, num_layers=2, bidirectional=True, dtype=np.float64, seed=0,
                     backend="numpy")
    params = m._layer_params()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7 * 3, 5))
    bs = np.full(7, 3, np.int64)
    state0 = (np.zeros((4, 3, 6)), np.zeros((4, 3, 6)))
    d_y = rng.standard_normal((21, 12))
    d_state = (np.zeros((4, 3, 6)), np.zeros((4, 3, 6)))
    results = []
    for backend in (ref, Duck()):
        y, state_n, cache = engine.stack_forward(m.cell, backend, params, x, bs, state0,
                                                 training=True, keep_cache=True)
        d_x, d_state0, d_params = engine.stack_backward(m.cell, backend, params, cache, d_y,
                                                        d_state)
        results.append([y, *state_n, d_x, *d_state0,
                        *(g for layer in d_params for d in layer for g in d.values())])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
