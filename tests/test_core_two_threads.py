"""Two threads in one layer call (``_forward_2t``/``_backward_2t``): the caller and
one worker split each step by whole panels of the recurrent product and by units of the gate
loops.  Every value is computed as on one thread, so results must be the same bits at 1 and 2
threads -- on tails (hidden sizes that are not a multiple of the 32-column panels, a single
panel, packed batches that shrink to one row or grow in reverse, no bias) and when the worker
stalls and the caller finishes alone."""
from __future__ import annotations

import platform

import numpy as np
import pytest

_core = pytest.importorskip("lstmkit._core", reason="the compiled core is not built")

from lstmkit.backends import cython as cython_backend  # noqa: E402
from lstmkit.backends.cython import CythonBackend  # noqa: E402
from lstmkit.backends.reference import ReferenceBackend  # noqa: E402
from lstmkit.registry import get_cell  # noqa: E402

LAYOUTS = {
    "packed": [40, 33, 9, 8, 5, 2, 1],
    "dense": [6] * 7,
    "two": [2] * 5,
    "full": [64] * 3,
    "long": [64] * 5 + [40, 33, 9, 1],  # 403 rows: the weight gradients sum two blocks of rows
}
TOL = {np.float32: 2e-5, np.float64: 1e-12}


def _rel(a, b):
    return float(np.max(np.abs(a - b), initial=0) / max(1.0, float(np.max(np.abs(b), initial=0))))


def _layer(threads, dtype, hidden, layout, reverse, bias=True, monkeypatch=None, stall=-1, stall_steps=-1,
           kind="lstm", input_size=11):
    """Forward (inference and training) and backward of one layer-direction on the cython
    backend with ``threads``; returns every output and how many teams started/fell back."""
    if monkeypatch is not None:
        monkeypatch.setattr(cython_backend, "_split_threads", lambda work: threads)
    rng = np.random.default_rng(hidden * 7 + len(layout))
    cell = get_cell(kind)
    params = {k: (rng.standard_normal(s) * 0.4).astype(dtype)
              for k, s in cell.parameter_shapes(input_size, hidden, 0, bias)}
    bs = np.asarray(layout, np.int64)
    x = rng.standard_normal((int(bs.sum()), input_size)).astype(dtype)
    state0 = tuple((rng.standard_normal((int(bs[0]), hidden)) * 0.5).astype(dtype)
                   for _ in ("hc" if kind == "lstm" else "h"))
    d_y = rng.standard_normal((int(bs.sum()), hidden)).astype(dtype)
    be = CythonBackend()
    before = _core._stall_worker_at(stall, stall_steps)
    try:
        yi, si, _ = be.layer_forward(cell, params, x, bs, reverse, state0, False)
        y, s, cache = be.layer_forward(cell, params, x, bs, reverse, state0, True)
        d = be.layer_backward(cell, params, cache, d_y, (s[0] * 0.5, *s[1:]))
    finally:
        after = _core._stall_worker_at(-1)
    out = [yi, *si, y, *s, *cache.arrays[:4], d[0], *d[1], *(d[2][k] for k in sorted(d[2]))]
    return out, (after[0] - before[0], after[1] - before[1]), (cell, params, x, bs, state0, d_y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("hidden", [1, 20, 37, 64, 100])
def test_two_threads_give_the_bits_of_one(hidden, layout, reverse, dtype, monkeypatch):
    one, teams1, _ = _layer(1, dtype, hidden, LAYOUTS[layout], reverse, hidden != 20, monkeypatch)
    two, teams2, _ = _layer(2, dtype, hidden, LAYOUTS[layout], reverse, hidden != 20, monkeypatch)
    assert teams1 == (0, 0)
    if cython_backend._core.lk_panels_used(dtype):
        assert teams2[0] == 3  # inference, training forward, backward each started a worker
    for i, (a, b) in enumerate(zip(one, two)):
        np.testing.assert_array_equal(a, b, err_msg=f"output {i}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("hidden", [1, 20, 37, 64, 100])
@pytest.mark.parametrize("kind", ["gru", "rnn_tanh", "rnn_relu"])
def test_gru_and_rnn_on_two_threads_give_the_bits_of_one(kind, hidden, layout, reverse, dtype, monkeypatch):
    """The GRU and the Elman RNN share their steps as the LSTM does, forward and backward."""
    one, teams1, _ = _layer(1, dtype, hidden, LAYOUTS[layout], reverse, hidden != 20, monkeypatch, kind=kind)
    two, teams2, (cell, params, x, bs, state0, d_y) = _layer(2, dtype, hidden, LAYOUTS[layout], reverse,
                                                              hidden != 20, monkeypatch, kind=kind)
    assert teams1 == (0, 0)
    if cython_backend._core.lk_panels_used(dtype):
        assert teams2[0] == 3  # inference, training forward, backward
    for i, (a, b) in enumerate(zip(one, two)):
        np.testing.assert_array_equal(a, b, err_msg=f"output {i}")
    ref = ReferenceBackend()
    y, s, _ = ref.layer_forward(cell, params, x, bs, reverse, state0, False)
    _, s, cache = ref.layer_forward(cell, params, x, bs, reverse, state0, True)
    d = ref.layer_backward(cell, params, cache, d_y, (s[0] * 0.5,))
    want = [y, s[0], d[0], d[1][0], *(d[2][k] for k in sorted(d[2]))]
    got = two[:2] + two[-len(want) + 2:]
    for i, (a, b) in enumerate(zip(got, want)):
        assert _rel(a, b) < TOL[dtype] * 5, (i, _rel(a, b))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_one_row_projection_chunks_give_the_bits_of_one(kind, reverse, dtype, monkeypatch):
    """Input size 700: the projection on panels goes 92 rows at a time, so 93 rows leave a
    one-row chunk, which takes the kernel's gemv loop while two threads split its columns."""
    one, _, _ = _layer(1, dtype, 37, [64, 29], reverse, True, monkeypatch, kind=kind,
                       input_size=700)
    two, _, _ = _layer(2, dtype, 37, [64, 29], reverse, True, monkeypatch, kind=kind,
                       input_size=700)
    for i, (a, b) in enumerate(zip(one, two)):
        np.testing.assert_array_equal(a, b, err_msg=f"output {i}")


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_wide_inputs_take_the_weight_gradients_by_column_chunks(kind, monkeypatch):
    """Input size 8192: the weight gradients' 4 MB scratch holds sums for 96 columns
    ((8192 + 64) x 96 floats), and the LSTM's halves of 128 gate columns go in two chunks
    (the GRU's and RNN's halves fit one): the same bits at one and two threads, and close
    to BLAS."""
    args = (np.float32, 64, [8] * 4, False, True, monkeypatch)
    one, _, _ = _layer(1, *args, kind=kind, input_size=8192)
    two, _, _ = _layer(2, *args, kind=kind, input_size=8192)
    for i, (a, b) in enumerate(zip(one, two)):
        np.testing.assert_array_equal(a, b, err_msg=f"output {i}")
    old = _core._use_projection_panels(False)
    try:
        blas, _, _ = _layer(1, *args, kind=kind, input_size=8192)
    finally:
        _core._use_projection_panels(old)
    for i, (a, b) in enumerate(zip(one, blas)):
        assert _rel(a, b) < TOL[np.float32], (i, _rel(a, b))


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_batch_one_starts_no_worker(kind, monkeypatch):
    """One row per step takes packed panels over 4+ steps, but never the two-thread loop,
    even when the core is offered two threads."""
    monkeypatch.setattr(cython_backend, "_team_threads", lambda *a: 2)
    cell = get_cell(kind)
    rng = np.random.default_rng(5)
    params = {k: rng.standard_normal(s).astype(np.float32)
              for k, s in cell.parameter_shapes(11, 40, 0, True)}
    x = rng.standard_normal((8, 11)).astype(np.float32)
    state0 = tuple(np.zeros((1, 40), np.float32) for _ in ("hc" if kind == "lstm" else "h"))
    bs = np.ones(8, np.int64)
    be = CythonBackend()
    before = _core._stall_worker_at(-1)
    be.layer_forward(cell, params, x, bs, False, state0, False)
    y, s, cache = be.layer_forward(cell, params, x, bs, False, state0, True)
    be.layer_backward(cell, params, cache, np.ones_like(y), s)
    after = _core._stall_worker_at(-1)
    assert after[0] == before[0]


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_two_threads_match_the_reference(dtype, reverse, monkeypatch):
    two, _, (cell, params, x, bs, state0, d_y) = _layer(2, dtype, 70, LAYOUTS["packed"], reverse,
                                                         monkeypatch=monkeypatch)
    ref = ReferenceBackend()
    y, s, _ = ref.layer_forward(cell, params, x, bs, reverse, state0, True)
    _, s, cache = ref.layer_forward(cell, params, x, bs, reverse, state0, True)
    d = ref.layer_backward(cell, params, cache, d_y, (s[0] * 0.5, s[1]))
    want = [y, *s, d[0], *d[1], *(d[2][k] for k in sorted(d[2]))]
    got = two[:3] + two[-len(want) + 3:]
    for i, (a, b) in enumerate(zip(got, want)):
        assert _rel(a, b) < TOL[dtype] * 5, (i, _rel(a, b))


# several rows at every step but the last, so that (nearly) every step's barriers judge
LONG = [40, 33, 9, 8, 5, 5, 5, 4, 3, 2, 1]


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("step", [0, 2, 4])
def test_a_stalled_worker_hands_the_work_to_the_caller(step, kind, monkeypatch):
    """The worker sleeps 5 ms before every step from ``step`` on (descheduled on a busy
    machine): barriers after equal shares (steps with several rows) see it arrive late, at the
    third time in a call both switch to the caller alone, and every result is still the bits
    of one thread."""
    one, _, _ = _layer(1, np.float64, 70, LONG, False, monkeypatch=monkeypatch, kind=kind)
    two, (teams, solos), _ = _layer(2, np.float64, 70, LONG, False, monkeypatch=monkeypatch, stall=step,
                                    kind=kind)
    if cython_backend._core.lk_panels_used(np.float64):
        assert (teams, solos) == (3, 3)
    for i, (a, b) in enumerate(zip(one, two)):
        np.testing.assert_array_equal(a, b, err_msg=f"output {i}")


def test_one_late_step_is_a_hiccup_not_a_fallback(monkeypatch):
    """A worker late at a single step (a daemon woke on its CPU) keeps its share: giving it up
    for the rest of the call cost a 2-thread training step 245 -> 340 ms."""
    one, _, _ = _layer(1, np.float64, 70, LONG, False, monkeypatch=monkeypatch)
    two, (teams, solos), _ = _layer(2, np.float64, 70, LONG, False, monkeypatch=monkeypatch, stall=2,
                                    stall_steps=1)
    if cython_backend._core.lk_panels_used(np.float64):
        assert (teams, solos) == (3, 0)
    for i, (a, b) in enumerate(zip(one, two)):
        np.testing.assert_array_equal(a, b, err_msg=f"output {i}")


def test_split_threads_follows_the_policy(monkeypatch):
    from lstmkit import _threads

    monkeypatch.setattr(_threads, "free_threads", lambda: 2)
    big = _threads.SPLIT_MIN_WORK
    with _threads.threads(2):
        assert _threads.split_threads(big) == 2
        assert _threads.split_threads(big - 1) == 1  # too little work per step to meet
        monkeypatch.setattr(_threads._C, "active", 1)  # another Python thread in the core
        assert _threads.split_threads(big) == 1
        monkeypatch.setattr(_threads._C, "active", 0)
    with _threads.threads(1):
        assert _threads.split_threads(big) == 1


# every step the same rows: the forward splits everything by hidden units (_forward_units,
# one barrier a step; each half of the units whole 32-column panels) or by batch rows
# (_forward_rows, no barrier); _force_split picks one where the rule would pick another
UNIFORM = {"dense": [6] * 7, "full": [64] * 3, "many": [5] * 40}


@pytest.fixture
def force_split():
    old = _core._force_split()
    yield _core._force_split
    _core._force_split(old)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("layout", list(UNIFORM))
@pytest.mark.parametrize("hidden", [64, 128, 192])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_the_forward_split_by_units_gives_the_bits_of_one(kind, hidden, layout, reverse, dtype,
                                                           monkeypatch, force_split):
    # counter 2: the inference and training forwards went by units
    _assert_split_gives_the_bits_of_one(force_split, 1, 2, 2, kind, dtype, hidden,
                                        UNIFORM[layout], reverse, hidden != 128, monkeypatch)


def _assert_split_gives_the_bits_of_one(force_split, split, counter, loops, kind, dtype, hidden,
                                        layout, reverse, bias, monkeypatch):
    """Forced ``split``: two threads give one thread's bits, and ``_stall_worker_at``'s
    ``counter`` shows ``loops`` loops took it (where the panel kernel serves the products).
    Loops with a barrier a step may still fall back to the caller when the machine stalls a
    thread (then the bits are the same too); loops by rows never judge a stall."""
    force_split(split)
    one, _, _ = _layer(1, dtype, hidden, layout, reverse, bias, monkeypatch, kind=kind)
    before = _core._stall_worker_at(-1)[counter]
    two, (teams, solos), _ = _layer(2, dtype, hidden, layout, reverse, bias, monkeypatch, kind=kind)
    if cython_backend._core.projection_panels_used(dtype):
        assert teams == 3
        assert solos == 0 or split != 2
        assert _core._stall_worker_at(-1)[counter] - before == loops
    for i, (a, b) in enumerate(zip(one, two)):
        np.testing.assert_array_equal(a, b, err_msg=f"output {i}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("step", [0, 3])
def test_a_stalled_worker_hands_its_units_to_the_caller(step, kind, reverse, dtype, monkeypatch,
                                                        force_split):
    """The split by units falls back as the split by columns does: the caller takes every
    unit from the next step on, and the results are still the bits of one thread."""
    force_split(1)
    one, _, _ = _layer(1, dtype, 64, [5] * 12, reverse, monkeypatch=monkeypatch, kind=kind)
    before = _core._stall_worker_at(-1)[2]
    two, (teams, solos), _ = _layer(2, dtype, 64, [5] * 12, reverse, monkeypatch=monkeypatch,
                                    stall=step, kind=kind)
    if cython_backend._core.projection_panels_used(dtype):
        assert (teams, solos) == (3, 3)
        assert _core._stall_worker_at(-1)[2] - before == 2
    for i, (a, b) in enumerate(zip(one, two)):
        np.testing.assert_array_equal(a, b, err_msg=f"output {i}")


@pytest.mark.parametrize("split", [1, 2], ids=["units", "rows"])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_relu"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_the_forward_splits_match_the_reference(split, kind, reverse, monkeypatch, force_split):
    force_split(split)
    two, _, (cell, params, x, bs, state0, d_y) = _layer(2, np.float64, 128, [7] * 9, reverse,
                                                         monkeypatch=monkeypatch, kind=kind)
    ref = ReferenceBackend()
    y, s, _ = ref.layer_forward(cell, params, x, bs, reverse, state0, False)
    for i, (a, b) in enumerate(zip(two, [y, *s])):
        assert _rel(a, b) < TOL[np.float64] * 5, (i, _rel(a, b))


ROWS = {"four": [4] * 9, "odd_share": [14] * 5, "dense": [6] * 7, "full": [64] * 3,
        "many": [8] * 30}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("layout", list(ROWS))
@pytest.mark.parametrize("hidden", [20, 37, 64, 100])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_the_forward_split_by_rows_gives_the_bits_of_one(kind, hidden, layout, reverse, dtype,
                                                          monkeypatch, force_split):
    """Each thread runs its half of the batch rows through every step, forward and backward:
    the kernel computes each row alone (each share keeps at least two rows, as one thread
    does), so the results are the bits of one thread, with any hidden size and an odd share."""
    # counter 3: the two forwards and the backward went by rows
    _assert_split_gives_the_bits_of_one(force_split, 2, 3, 3, kind, dtype, hidden, ROWS[layout],
                                        reverse, hidden != 64, monkeypatch)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_slow_worker_on_rows_delays_but_changes_nothing(kind, monkeypatch, force_split):
    """No barrier between steps: a worker descheduled at every step only makes the caller
    wait at the end, and the results are still the bits of one thread."""
    force_split(2)
    one, _, _ = _layer(1, np.float32, 64, [8] * 6, True, monkeypatch=monkeypatch, kind=kind)
    before = _core._stall_worker_at(-1)[3]
    two, (teams, solos), _ = _layer(2, np.float32, 64, [8] * 6, True, monkeypatch=monkeypatch,
                                    stall=0, kind=kind)
    if cython_backend._core.projection_panels_used(np.float32):
        assert (teams, solos) == (3, 0) and _core._stall_worker_at(-1)[3] - before == 3
    for i, (a, b) in enumerate(zip(one, two)):
        np.testing.assert_array_equal(a, b, err_msg=f"output {i}")


@pytest.mark.parametrize("batch, hidden, want", [
    (16, 128, "rows"), (64, 256, "rows"), (8, 128, "rows"), (32, 512, "rows"),
    (4, 512, "units"), (12, 256, "units"), (16, 1024, "units"), (8, 640, "units"),
    (32, 1024, "units"),
    (12, 96, "columns"),
])
def test_the_rule_picks_the_split_that_measured_faster(batch, hidden, want, monkeypatch, force_split):
    force_split(-1)
    if not cython_backend._core.projection_panels_used(np.float32):
        pytest.skip("the input projection is not on the panel kernel on this CPU")
    before = _core._stall_worker_at(-1)
    _layer(2, np.float32, hidden, [batch] * 8, False, monkeypatch=monkeypatch, input_size=16)
    after = _core._stall_worker_at(-1)
    units, rows = after[2] - before[2], after[3] - before[3]
    assert {"rows": (0, 3), "units": (2, 0), "columns": (0, 0)}[want] == (units, rows)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("batch", [30, 31], ids=["even", "odd"])
def test_rows_never_leave_one_thread_a_single_row_chunk(batch, kind, monkeypatch, force_split):
    """One thread projects 92-row chunks of a 700-wide input: 3 steps of 31 rows leave a last
    chunk of one row, which the kernel's one-row loop sums in another order than any share
    of the rows would; so an odd batch never goes by rows, even when forced."""
    force_split(2)
    one, _, _ = _layer(1, np.float32, 64, [batch] * 3, False, monkeypatch=monkeypatch, kind=kind,
                       input_size=700)
    before = _core._stall_worker_at(-1)[3]
    two, _, _ = _layer(2, np.float32, 64, [batch] * 3, False, monkeypatch=monkeypatch, kind=kind,
                       input_size=700)
    if cython_backend._core.projection_panels_used(np.float32):
        assert _core._stall_worker_at(-1)[3] - before == (3 if batch % 2 == 0 else 0)
    for i, (a, b) in enumerate(zip(one, two)):
        np.testing.assert_array_equal(a, b, err_msg=f"output {i}")


def test_force_split_rejects_an_unknown_split():
    with pytest.raises(ValueError, match="expected -1, 0, 1 or 2, got 5"):
        _core._force_split(5)


# the worker thread is the core's kept helper (lk_helper): started once, reused by every
# two-thread call, gone after idling a second; a second caller meanwhile starts its own

needs_panels = pytest.mark.skipif(not _core.lk_panels_used(np.float32),
                                  reason="no two-thread loop without the panel kernel")


def _threads_alive():
    import os

    return len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else None


@needs_panels
def test_the_worker_thread_is_kept_between_calls(monkeypatch):
    one, _, _ = _layer(1, np.float32, 64, [8] * 5, False, monkeypatch=monkeypatch)
    started, posts = _core._helper_threads()
    for _ in range(5):
        two, (teams, _), _ = _layer(2, np.float32, 64, [8] * 5, False, monkeypatch=monkeypatch)
        assert teams == 3  # forward twice and backward: every call a team
        for i, (a, b) in enumerate(zip(one, two)):
            np.testing.assert_array_equal(a, b, err_msg=f"output {i}")
    assert _core._helper_threads()[1] - posts == 15  # every team's worker was the helper
    assert _core._helper_threads()[0] - started <= 1  # none, or one if the last had exited


@needs_panels
def test_an_idle_worker_exits_and_the_next_call_starts_another(monkeypatch):
    """No thread is kept for a process that stopped calling the core (Python 3.12 warns when a
    process with threads forks)."""
    import time

    _layer(2, np.float32, 64, [8] * 5, False, monkeypatch=monkeypatch)
    with_helper = _threads_alive()
    time.sleep(1.6)  # 1 s asleep after its spin
    if with_helper is not None:
        assert _threads_alive() == with_helper - 1
    started = _core._helper_threads()[0]
    one, _, _ = _layer(1, np.float32, 64, [8] * 5, False, monkeypatch=monkeypatch)
    two, (teams, _), _ = _layer(2, np.float32, 64, [8] * 5, False, monkeypatch=monkeypatch)
    assert teams == 3 and _core._helper_threads()[0] == started + 1
    for i, (a, b) in enumerate(zip(one, two)):
        np.testing.assert_array_equal(a, b, err_msg=f"output {i}")


def _child_two_threads():
    import os

    try:
        one, _, _ = _layer(1, np.float32, 64, [8] * 5, False, monkeypatch=pytest.MonkeyPatch())
        started = _core._helper_threads()[0]
        two, (teams, _), _ = _layer(2, np.float32, 64, [8] * 5, False,
                                    monkeypatch=pytest.MonkeyPatch())
        ok = teams == 3 and _core._helper_threads()[0] == started + 1 and all(
            np.array_equal(a, b) for a, b in zip(one, two))
    except BaseException:
        ok = False
    os._exit(0 if ok else 1)


@needs_panels
def test_a_forked_child_starts_its_own_worker(monkeypatch):
    """The helper thread does not survive fork, and its lock may have been held then."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    _layer(2, np.float32, 64, [8] * 5, False, monkeypatch=monkeypatch)  # the parent's helper lives
    child = multiprocessing.get_context("fork").Process(target=_child_two_threads)
    child.start()
    child.join(60)
    if child.exitcode is None:  # hung (the lock or the thread inherited): do not leave it
        child.kill()
        child.join()
    assert child.exitcode == 0


@needs_panels
def test_two_python_threads_in_two_thread_calls_keep_their_results(monkeypatch):
    """Both offered two threads at once: one call holds the helper, the other starts a thread of
    its own; neither gets the other's results."""
    import threading

    monkeypatch.setattr(cython_backend, "_split_threads", lambda work: 2)
    want = {h: _layer(1, np.float32, h, [8] * 6, False, monkeypatch=monkeypatch)[0] for h in (64, 96)}
    monkeypatch.setattr(cython_backend, "_split_threads", lambda work: 2)
    errors = []

    def run(hidden):
        try:
            for _ in range(10):
                got, _, _ = _layer(2, np.float32, hidden, [8] * 6, False, monkeypatch=None)
                for i, (a, b) in enumerate(zip(want[hidden], got)):
                    np.testing.assert_array_equal(a, b, err_msg=f"output {i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(h,)) for h in (64, 96)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[0]


@needs_panels
@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="no denormals control register to set")
def test_the_helper_runs_each_call_with_the_callers_denormals_setting(monkeypatch):
    """The helper thread outlives the call that started it, so it takes each caller's
    flush-to-zero setting (a thread started per call inherited it): first started by a call
    that keeps denormals, then a flushing call, then one that keeps them again; each gives
    the bits of one thread with the same setting, and the setting matters here."""
    def run(threads, flush):
        monkeypatch.setattr(cython_backend, "FLUSH_DENORMALS", flush)
        monkeypatch.setattr(cython_backend, "_split_threads", lambda work: threads)
        cell = get_cell("lstm")
        rng = np.random.default_rng(3)
        params = {k: (rng.standard_normal(s) * 0.3).astype(np.float32)
                  for k, s in cell.parameter_shapes(5, 64, 0, False)}
        tiny = np.finfo(np.float32).smallest_normal / 4
        x = (rng.standard_normal((8 * 6, 5)) * tiny).astype(np.float32)  # denormal gates, c, h
        state0 = (np.zeros((8, 64), np.float32), np.zeros((8, 64), np.float32))
        y, (h, c), _ = CythonBackend().layer_forward(cell, params, x, np.full(6, 8, np.int64),
                                                     False, state0, False)
        return y, h, c

    for flush in (False, True, False):
        one, two = run(1, flush), run(2, flush)
        for a, b in zip(one, two):
            np.testing.assert_array_equal(a, b)
    kept, flushed = run(1, False), run(1, True)
    assert np.count_nonzero(kept[0]) > 0 and np.count_nonzero(flushed[0]) == 0


# a forward without a state skips its first step's recurrent product (0 @ w_hh^T adds nothing)
# from 8 rows, where w_hh is finite: the same bits as computing it, on every loop

@pytest.fixture
def zero_start():
    old, _ = _core._use_zero_start(True)
    yield _core._use_zero_start
    _core._use_zero_start(old)


def _zero_state_layer(threads, kind, layout, reverse, monkeypatch, w_hh_special=None):
    monkeypatch.setattr(cython_backend, "_split_threads", lambda work: threads)
    rng = np.random.default_rng(21)
    cell = get_cell(kind)
    params = {k: (rng.standard_normal(s) * 0.4).astype(np.float32)
              for k, s in cell.parameter_shapes(9, 64, 0, True)}
    if w_hh_special is not None:
        params["weight_hh"][3, 5] = w_hh_special
    bs = np.asarray(layout, np.int64)
    x = rng.standard_normal((int(bs.sum()), 9)).astype(np.float32)
    state0 = tuple(np.zeros((int(bs[0]), 64), np.float32) for _ in ("hc" if kind == "lstm" else "h"))
    be = CythonBackend()
    yi, si, _ = be.layer_forward(cell, params, x, bs, reverse, state0, False)
    y, s, cache = be.layer_forward(cell, params, x, bs, reverse, state0, True)
    d = be.layer_backward(cell, params, cache, np.ones_like(y), s)
    return [yi, *si, y, *s, *cache.arrays[:4], d[0], *d[1], *(d[2][k] for k in sorted(d[2]))]


@pytest.mark.parametrize("split", [-1, 0, 1, 2], ids=["rule", "columns", "units", "rows"])
@pytest.mark.parametrize("layout", [[8] * 6, [16, 16, 12, 9, 8, 3]], ids=["dense", "packed"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("kind", ["lstm", "rnn_tanh", "gru"])
def test_skipping_the_first_product_of_a_zero_state_changes_no_bit(kind, reverse, layout, split,
                                                                   monkeypatch, zero_start,
                                                                   force_split):
    """Workspaces poisoned with NaN (a product skipped where it is stored, not added, would
    leave NaN); compared bit for bit, the sign of zero included."""
    monkeypatch.setattr(cython_backend, "POISON_WORKSPACES", True)
    force_split(split)
    dense = len(set(layout)) == 1
    for threads in (1, 2):
        zero_start(False)
        want = _zero_state_layer(threads, kind, layout, reverse, monkeypatch)
        _, before = zero_start(True)
        loops = _core._stall_worker_at(-1)
        got = _zero_state_layer(threads, kind, layout, reverse, monkeypatch)
        _, after = zero_start(True)
        loops = [b - a for a, b in zip(loops, _core._stall_worker_at(-1))]
        assert after - before == (0 if kind == "gru" else 2)  # inference and training forwards
        if threads == 2 and dense and split in (1, 2) and _core.projection_panels_used(np.float32):
            assert loops[1 + split] >= 2  # both forwards took the forced split (units, rows)
        for i, (a, b) in enumerate(zip(want, got)):
            assert a.tobytes() == b.tobytes(), f"output {i}"


@pytest.mark.parametrize("special", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("kind", ["lstm", "rnn_tanh"])
def test_a_non_finite_recurrent_weight_still_poisons_the_first_step(kind, special, monkeypatch,
                                                                    zero_start):
    """0 * inf is NaN: with a non-finite w_hh the first product is computed, as torch does."""
    _, before = zero_start(True)
    got = _zero_state_layer(1, kind, [8] * 3, False, monkeypatch, w_hh_special=special)
    assert zero_start(True)[1] == before
    zero_start(False)
    want = _zero_state_layer(1, kind, [8] * 3, False, monkeypatch, w_hh_special=special)
    assert np.isnan(got[0][:8]).any()
    for i, (a, b) in enumerate(zip(want, got)):
        np.testing.assert_array_equal(a, b, err_msg=f"output {i}")


def test_a_given_state_or_a_small_batch_computes_the_first_product(monkeypatch, zero_start):
    _, before = zero_start(True)
    _layer(1, np.float32, 64, [8] * 3, False, monkeypatch=monkeypatch)  # a random state
    _zero_state_layer(1, "lstm", [7] * 3, False, monkeypatch)  # 7 rows: not worth a pass
    assert zero_start(True)[1] == before
    _zero_state_layer(1, "lstm", [8] * 3, False, monkeypatch)
    assert zero_start(True)[1] == before + 2
