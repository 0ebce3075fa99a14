"""The one owner of threads (lstmkit/_threads.py): the size policy, the ceiling, restoring the pools,
a BLAS loaded after threadpool_limits was entered, two Python threads in the core at once.

No timings here: speed is measured by benchmarks/bench_run.py (docs/performance.md).
"""
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import lstmkit
from lstmkit import _threads
from lstmkit._threads import WORK_PER_THREAD, decide, kernel

BIG = 8 * WORK_PER_THREAD  # a per-step product that earns more than one thread


@pytest.fixture
def pools():
    p = _threads._pools()
    if p.set is None:
        pytest.skip("the core's BLAS exposes no thread control here")
    before = (p.get(), p.numpy_get() if p.numpy_get else None, _threads._C.explicit)
    yield p
    assert (p.get(), p.numpy_get() if p.numpy_get else None, _threads._C.explicit) == before, \
        "a test left the thread pools changed"


@pytest.fixture
def quiet(monkeypatch):
    """A machine with 4 CPUs and nothing else running, whatever this one is."""
    monkeypatch.setattr(_threads, "_other_load", lambda: 0.0)
    monkeypatch.setattr(_threads, "usable_cpus", lambda: 4)


def _during(work):
    """The core pool's thread count inside ``kernel(work)``."""
    p = _threads._pools()
    with kernel(work):
        return p.get()


# -- the rule ---------------------------------------------------------------------------------------
def test_decide_small_work_runs_on_one_thread(quiet):
    assert decide(0, 8) == 1
    assert decide(2 * WORK_PER_THREAD - 1, 8) == 1
    assert decide(2 * WORK_PER_THREAD, 8) == 2
    assert decide(3 * WORK_PER_THREAD, 8) == 3


def test_decide_respects_the_ceiling_and_the_free_cpus(quiet, monkeypatch):
    assert decide(100 * WORK_PER_THREAD, 1) == 1
    assert decide(100 * WORK_PER_THREAD, 3) == 3
    assert decide(100 * WORK_PER_THREAD, 16) == 4  # 4 usable CPUs
    assert decide(100 * WORK_PER_THREAD, 16, others=1.0) == 3  # one busy with another process
    assert decide(100 * WORK_PER_THREAD, 16, others=3.5) == 1
    assert decide(100 * WORK_PER_THREAD, 16, others=None) == 1  # load not known yet: don't gamble


def test_other_load_counts_other_processes_not_this_one():
    _threads._Load.wall = _threads._Load.others = None  # as at start-up
    assert _threads._other_load() is None  # no interval yet
    _threads._Load.wall -= 1.0  # pretend the first sample is a second old
    others = _threads._other_load()
    assert others is None or 0.0 <= others <= _threads.usable_cpus() + 1


# -- the ceiling and restoring --------------------------------------------------------------------
def test_kernel_sizes_the_core_pool_per_call_and_restores_it(pools, quiet):
    with lstmkit.threads(3, others=2):
        assert pools.get() == 2  # between calls: `others`
        assert _during(10) == 1
        assert _during(BIG) == 3  # the ceiling
        assert pools.get() == 2
        with lstmkit.threads(1):
            assert _during(BIG) == 1
            assert lstmkit.get_threads() == 1
        assert lstmkit.get_threads() == 3
        assert pools.numpy_get() == 2


def test_threads_limits_numpy_blas_and_restores_it(pools):
    with lstmkit.threads(2, others=1):
        assert pools.numpy_get() == 1
        assert lstmkit.get_threads() == 2
    with lstmkit.threads(None):
        assert lstmkit.get_threads() == _threads.usable_cpus()


def test_threads_as_a_setter(pools):
    setting = lstmkit.threads(1)
    try:
        assert lstmkit.get_threads() == 1 and pools.numpy_get() == 1
    finally:
        setting.restore()
    setting.restore()  # once only: a second restore changes nothing


def test_kernel_restores_after_an_error(pools, quiet):
    with lstmkit.threads(2):
        with pytest.raises(RuntimeError):
            with kernel(10):
                assert pools.get() == 1
                raise RuntimeError("boom")
        assert pools.get() == 2 and _threads._C.active == 0


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_threads_rejects_what_is_not_a_positive_integer(bad):
    with pytest.raises(ValueError, match=f"got {bad!r}"):
        lstmkit.threads(bad)


def test_outside_threads_the_ceiling_follows_threadpool_limits(pools, quiet):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        assert lstmkit.get_threads() == 1
        assert _during(BIG) == 1
    with threadpool_limits(2):
        assert _during(BIG) == 2


# -- a model really runs under the policy ---------------------------------------------------------
def _probe(monkeypatch, seen, barrier=None, split=None):
    """Record the core pool's threads while each layer kernel runs (and in ``split`` the
    threads of the core's own two-thread loop)."""
    from lstmkit.backends.cython import CythonBackend

    inner = CythonBackend._layer_forward
    p = _threads._pools()

    def probe(self, *args):
        if barrier is not None:
            barrier.wait(timeout=30)
        seen.append(p.get())
        if split is not None:
            split.append(args[-1])
        return inner(self, *args)

    monkeypatch.setattr(CythonBackend, "_layer_forward", probe)


def test_a_model_call_uses_one_thread_for_small_work_and_more_for_large(pools, quiet, monkeypatch):
    from lstmkit import _core

    seen, split = [], []
    _probe(monkeypatch, seen, split=split)
    monkeypatch.setattr(_threads, "free_threads", lambda: 2)
    small = lstmkit.LSTM(8, 16, seed=0)
    with lstmkit.threads(2):
        small(np.zeros((3, 2, 8), np.float32))
        assert (seen, split) == ([1], [1])
        # per-step 64 x 2048 x 512 = 64 Mi multiply-adds: the LSTM, GRU and RNN run their own two
        # threads (BLAS stays at one); an LSTM with a projection and 65 rows (past the panel path)
        # use BLAS's
        big = lstmkit.LSTM(8, 512, seed=0)
        big(np.zeros((1, 64, 8), np.float32))
        lstmkit.GRU(8, 512, seed=0)(np.zeros((1, 64, 8), np.float32))
        lstmkit.RNN(8, 512, seed=0)(np.zeros((1, 64, 8), np.float32))
        lstmkit.LSTM(8, 512, proj_size=256, seed=0)(np.zeros((1, 64, 8), np.float32))
        big(np.zeros((1, 65, 8), np.float32))
        two = 2 if _core.lk_panels_used(np.float32) else 1
        assert (seen, split) == ([1] + [3 - two] * 3 + [2, 2], [1, two, two, two, 1, 1])


def test_two_python_threads_in_the_core_each_get_one_thread(pools, quiet, monkeypatch):
    models = [lstmkit.LSTM(8, 512, seed=s) for s in (0, 1)]
    x = np.random.default_rng(0).standard_normal((2, 64, 8)).astype(np.float32)
    alone = [m(x)[0] for m in models]
    seen = []
    _probe(monkeypatch, seen, threading.Barrier(2))  # both calls are inside the core at once
    out = [None, None]

    def work(i):
        out[i] = models[i](x)[0]

    with lstmkit.threads(2):
        runners = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
        for t in runners:
            t.start()
        for t in runners:
            t.join(60)
        assert pools.get() == 2  # the last one out restored the pool
    assert seen == [1, 1]
    for a, b in zip(alone, out):
        np.testing.assert_array_equal(a, b)


def _allowed_cpus():
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, set(cpus))  # a container may forbid setting it
    except (AttributeError, OSError):
        pytest.skip("no CPU affinity here")
    if len(cpus) < 2 or _threads._GETCPU is None:
        pytest.skip("needs two CPUs and sched_getcpu")
    return cpus


def _in_core(entered, leave, seen, nested=False):
    """A Python thread that enters the core (``kernel``) and records its CPU mask inside (and in
    and after a call nested in it) and after."""
    with kernel(0):
        seen.append(("in", os.sched_getaffinity(0)))
        if nested:
            with kernel(0):
                seen.append(("nested", os.sched_getaffinity(0)))
            seen.append(("after nested", os.sched_getaffinity(0)))
        entered.set()
        leave.wait(30)
    seen.append(("out", os.sched_getaffinity(0)))


def _two_in_core(on, nested=False):
    """Two Python threads in the core at once, the first entering on CPU ``on[0]`` (as
    ``sched_getcpu`` tells it), the second on ``on[1]`` (with a nested call if ``nested``):
    what each saw of its CPU mask."""
    cpu = iter(on)
    seen = ([], [])
    leave = threading.Event()
    runners = []
    for i in (0, 1):
        entered = threading.Event()
        where = next(cpu)
        # each thread's own sched_getcpu reads this while it enters
        _threads._GETCPU = lambda where=where: where
        t = threading.Thread(target=_in_core, args=(entered, leave, seen[i], nested and i == 1))
        t.start()
        runners.append(t)
        assert entered.wait(30)
    leave.set()
    for t in runners:
        t.join(30)
    return seen


def test_a_second_thread_entering_the_core_on_a_busy_cpu_moves_off_it_until_it_leaves(pools, monkeypatch):
    cpus = _allowed_cpus()
    monkeypatch.setattr(_threads, "_GETCPU", _threads._GETCPU)
    monkeypatch.setattr(_threads, "_cpu_of", lambda native, entered: entered)  # still there
    first, second = _two_in_core([cpus[0], cpus[0]])
    assert first == [("in", set(cpus)), ("out", set(cpus))]  # alone on its CPU: not moved
    # the second found the first on its CPU: held to the others while inside, its mask back after
    assert second == [("in", set(cpus[1:])), ("out", set(cpus))]
    assert _threads._C.cpus == {}


def test_a_moved_thread_keeps_its_cpus_through_a_nested_call(pools, monkeypatch):
    cpus = _allowed_cpus()
    monkeypatch.setattr(_threads, "_GETCPU", _threads._GETCPU)
    monkeypatch.setattr(_threads, "_cpu_of", lambda native, entered: entered)
    _, second = _two_in_core([cpus[0], cpus[0]], nested=True)
    away = set(cpus[1:])
    assert second == [("in", away), ("nested", away), ("after nested", away), ("out", set(cpus))]
    assert _threads._C.cpus == {}


def test_threads_on_different_cpus_are_not_moved(pools, monkeypatch):
    cpus = _allowed_cpus()
    monkeypatch.setattr(_threads, "_GETCPU", _threads._GETCPU)
    monkeypatch.setattr(_threads, "_cpu_of", lambda native, entered: entered)
    first, second = _two_in_core([cpus[0], cpus[1]])
    assert first == [("in", set(cpus)), ("out", set(cpus))]
    assert second == [("in", set(cpus)), ("out", set(cpus))]
    assert _threads._C.cpus == {}


def test_a_thread_that_moved_since_it_entered_is_looked_up(pools, monkeypatch):
    """The first thread entered on cpus[0] and runs on cpus[1] now: the second, entering on
    cpus[0], stays where it is."""
    cpus = _allowed_cpus()
    monkeypatch.setattr(_threads, "_GETCPU", _threads._GETCPU)
    monkeypatch.setattr(_threads, "_cpu_of", lambda native, entered: cpus[1])
    _, second = _two_in_core([cpus[0], cpus[0]])
    assert second == [("in", set(cpus)), ("out", set(cpus))]
    assert _threads._C.cpus == {}


def test_a_thread_that_moved_onto_this_cpu_since_it_entered_is_looked_up(pools, monkeypatch):
    """The first thread entered on cpus[1] and runs on cpus[0] now: the second, entering on
    cpus[0], moves off it (a record that names another CPU is looked up too)."""
    cpus = _allowed_cpus()
    monkeypatch.setattr(_threads, "_GETCPU", _threads._GETCPU)
    monkeypatch.setattr(_threads, "_cpu_of", lambda native, entered: cpus[0])
    _, second = _two_in_core([cpus[1], cpus[0]])
    assert second == [("in", set(cpus[1:])), ("out", set(cpus))]
    assert _threads._C.cpus == {}


def test_cpu_of_reads_this_threads_cpu():
    cpus = _allowed_cpus()
    native = threading.get_native_id()
    assert _threads._cpu_of(native, -1) in cpus
    assert _threads._cpu_of(2 ** 31 - 1, -7) == -7  # no such thread


def test_a_mask_changed_during_the_call_is_left_alone(pools, monkeypatch):
    cpus = _allowed_cpus()
    monkeypatch.setattr(_threads, "_GETCPU", _threads._GETCPU)
    monkeypatch.setattr(_threads, "_cpu_of", lambda native, entered: entered)
    seen = []

    def repinned(entered, leave):
        try:
            with kernel(0):
                os.sched_setaffinity(0, {cpus[0]})  # the user's own choice, mid-call
                entered.set()
                leave.wait(30)
            seen.append(os.sched_getaffinity(0))
        finally:
            os.sched_setaffinity(0, set(cpus))

    leave = threading.Event()
    entered, entered2 = threading.Event(), threading.Event()
    _threads._GETCPU = lambda: cpus[0]
    a = threading.Thread(target=_in_core, args=(entered, leave, []))
    a.start()
    assert entered.wait(30)
    b = threading.Thread(target=repinned, args=(entered2, leave))
    b.start()
    assert entered2.wait(30)
    leave.set()
    a.join(30)
    b.join(30)
    assert seen == [{cpus[0]}]  # not put back to all CPUs
    assert _threads._C.cpus == {}


def test_an_interrupt_while_entering_leaves_nothing_behind(pools, monkeypatch):
    """Ctrl-C right after the move: the thread gets its mask back and is no longer counted."""
    cpus = _allowed_cpus()
    monkeypatch.setattr(_threads, "_cpu_of", lambda native, entered: entered)
    real = os.sched_setaffinity
    raised = []

    def set_then_interrupt(pid, mask):
        real(pid, mask)
        if not raised:
            raised.append(mask)
            raise KeyboardInterrupt

    leave = threading.Event()
    entered = threading.Event()
    monkeypatch.setattr(_threads, "_GETCPU", lambda: cpus[0])
    a = threading.Thread(target=_in_core, args=(entered, leave, []))
    a.start()
    assert entered.wait(30)
    try:
        monkeypatch.setattr(_threads.os, "sched_setaffinity", set_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            with kernel(0):
                pass
        monkeypatch.setattr(_threads.os, "sched_setaffinity", real)
        assert raised == [set(cpus[1:])]
        assert os.sched_getaffinity(0) == set(cpus)
        assert threading.get_ident() not in _threads._C.cpus
    finally:
        monkeypatch.setattr(_threads.os, "sched_setaffinity", real)
        real(0, set(cpus))
        leave.set()
        a.join(30)
    assert _threads._C.cpus == {} and _threads._C.active == 0


def test_a_thread_held_to_one_cpu_stays_there(pools, monkeypatch):
    cpus = _allowed_cpus()
    monkeypatch.setattr(_threads, "_GETCPU", lambda: cpus[0])
    monkeypatch.setattr(_threads, "_cpu_of", lambda native, entered: entered)
    seen = []

    def pinned(entered, leave):
        os.sched_setaffinity(0, {cpus[0]})  # the user's choice: never moved off it
        _in_core(entered, leave, seen)

    entered, leave, entered2 = threading.Event(), threading.Event(), threading.Event()
    a = threading.Thread(target=_in_core, args=(entered, leave, []))
    a.start()
    assert entered.wait(30)
    b = threading.Thread(target=pinned, args=(entered2, leave))
    b.start()
    assert entered2.wait(30)
    leave.set()
    a.join(30)
    b.join(30)
    assert seen == [("in", {cpus[0]}), ("out", {cpus[0]})]
    assert _threads._C.cpus == {}


# -- a BLAS loaded after the limit was set ----------------------------------------------------------
def test_threadpool_limits_before_the_core_is_loaded_limits_it():
    code = """
import sys, numpy as np, lstmkit
from threadpoolctl import threadpool_limits
assert "lstmkit._core" not in sys.modules
from lstmkit import _threads
_threads._other_load = lambda: 0.0
_threads.usable_cpus = lambda: 4
with threadpool_limits(1):
    m = lstmkit.LSTM(8, 512, seed=0)  # loads the core's BLAS now, inside the limit
    p = _threads._pools()
    with _threads.kernel(64 * 4 * 512 * 512):
        inside = p.get()
with _threads.kernel(64 * 4 * 512 * 512):
    after = p.get()
print(inside, after, p.numpy_get())
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    if out[2] == "1":
        pytest.skip("NumPy's BLAS has one thread here: nothing to limit")
    assert out == ["1", out[2], out[2]]  # limited inside, the libraries' width after


# -- the command line -----------------------------------------------------------------------------
def test_run_thread_limit_puts_numpy_blas_on_one_thread(pools):
    from lstmkit.run.build import thread_limit

    with thread_limit(None):
        assert pools.numpy_get() == 1
        assert lstmkit.get_threads() == _threads.usable_cpus()
    with thread_limit(1):
        assert lstmkit.get_threads() == 1


def test_info_prints_the_policy_and_each_pool():
    from click.testing import CliRunner

    from lstmkit.cli import make_cli

    result = CliRunner().invoke(make_cli(), ["info"])
    assert result.exit_code == 0, result.output
    assert "runtime.threads" in result.output
    assert f"1 per {WORK_PER_THREAD}" in result.output
    assert "(core)" in result.output or "(core+numpy)" in result.output


def test_policy_is_json_and_names_the_core_pool():
    pol = _threads.policy()
    json.dumps(pol)
    assert any(pool["role"] in ("core", "core+numpy") for pool in pol["pools"])


def test_without_the_compiled_core_the_policy_still_runs():
    code = """
import sys
sys.modules["lstmkit._core"] = None  # importing it raises ImportError, as in an install without the build
from lstmkit import _threads
assert _threads.describe()
p = _threads._pools()
with _threads.threads(None, others=1):
    assert p.numpy_get is None or p.numpy_get() == 1
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["ok"], out.stderr


def test_other_load_sees_a_spinning_process():
    import time

    if not __import__("os").path.exists("/proc/stat"):
        pytest.skip("no /proc/stat")
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        _threads._Load.wall = None
        _threads._other_load()
        time.sleep(0.5)  # this process sleeps: the busy time is the spinner's (and anyone else's)
        others = _threads._other_load()
    finally:
        spin.kill()
        spin.wait()
    assert others is not None and others >= 0.5
    if _threads.usable_cpus() <= 2:  # a 2-CPU machine with one CPU taken: no second BLAS thread
        assert decide(100 * WORK_PER_THREAD, 2, others) == 1
