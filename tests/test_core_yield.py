"""A layer call yields its CPU once on entering the core's time loop (``_let_waiting_run`` in
lstmkit/_core.pyx), so that a Python thread woken on this CPU (the one waiting for the GIL the
call just released) runs now instead of after the call.  Calls below ~10 us of work do not."""
import os
import statistics
import threading
import time

import numpy as np
import pytest

import lstmkit

core = pytest.importorskip("lstmkit._core")


@pytest.fixture
def yields():
    """The number of calls that have yielded so far, read through the test switch."""
    was, _ = core._use_yield(True)
    yield lambda: core._use_yield(True)[1]
    core._use_yield(was)


@pytest.mark.parametrize("kind", [lstmkit.LSTM, lstmkit.GRU, lstmkit.RNN])
def test_each_layer_call_with_enough_work_yields_once(yields, kind):
    m = kind(32, 64, seed=0)  # 320 rows x 64 x (32 + 64): 2^20 for the RNN, more for the others
    x = np.ones((40, 8, 32), np.float32)
    before = yields()
    out, _, backward = m.forward_train(x)
    assert yields() == before + 1
    backward(np.ones_like(out))
    assert yields() == before + 2


def test_a_small_call_does_not_yield(yields):
    m = lstmkit.LSTM(4, 8, seed=0)
    before = yields()
    m(np.ones((3, 1, 4), np.float32))
    assert yields() == before


def test_the_switch_turns_it_off(yields):
    m = lstmkit.LSTM(16, 32, seed=0)
    before = yields()
    core._use_yield(False)
    m(np.ones((20, 4, 16), np.float32))
    assert core._use_yield(True)[1] == before


def test_a_thread_woken_on_the_same_cpu_runs_before_the_call_ends():
    """Everything on one CPU: a thread woken just before a ~10 ms call into the core runs
    right after the call releases the GIL, not when the scheduler next preempts the call
    (1.7-5 ms later on these VMs, measured without the yield)."""
    try:
        allowed = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(allowed)})
    except (AttributeError, OSError):
        pytest.skip("no CPU affinity here")
    from threadpoolctl import threadpool_limits

    m = lstmkit.LSTM(64, 128, seed=0).eval()
    x = np.ones((300, 16, 64), np.float32)
    delays = []
    try:
        with threadpool_limits(1):
            m(x)
            for _ in range(7):
                go, seen = threading.Event(), []
                waiter = threading.Thread(target=lambda: (go.wait(), seen.append(time.perf_counter())))
                waiter.start()
                time.sleep(0.005)  # waiting in go.wait()
                go.set()  # runnable now, on this CPU, and wanting the GIL this thread holds
                start = time.perf_counter()
                m(x)
                end = time.perf_counter()
                waiter.join(30)
                delays.append((seen[0] - start, end - start))
    finally:
        os.sched_setaffinity(0, allowed)
    # (the waiter's own wake-up and the Python before the core: ~0.05-0.25 ms measured)
    assert statistics.median(d for d, _ in delays) < 1.5e-3, delays
    assert all(d < total for d, total in delays), delays
