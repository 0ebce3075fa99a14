"""The one owner of threads: how many BLAS threads each piece of lstmkit's work gets.

A process running lstmkit holds several thread pools: SciPy's OpenBLAS (the
compiled core's BLAS, through ``scipy.linalg.cython_blas``), NumPy's OpenBLAS
(a second copy, used by ``@``, linear heads, losses and optimizers) and any
OpenMP pool another library brings.  Each keeps its workers spinning for a
while after a parallel call; on a 2-CPU machine two pools at full width starve
each other, and a small threaded BLAS call costs milliseconds instead of
microseconds (``docs/performance.md``).  The rules:

- **A ceiling** ``n`` from :func:`threads` (a setter that is also a context
  manager) or ``runtime.threads`` in a config.  Outside :func:`threads` the
  ceiling is NumPy's BLAS limit, the one ``threadpool_limits``,
  ``OPENBLAS_NUM_THREADS`` and the like always reach (NumPy's BLAS is loaded
  before lstmkit's core, SciPy's may not be yet).
- **Per call into the core**, its BLAS gets :func:`decide` threads: one for
  small per-step work (a threaded per-step GEMM only adds wake-ups and
  spinning), up to the ceiling once each thread gets at least
  :data:`WORK_PER_THREAD` multiply-adds per step, and never more than the CPUs
  other processes left free (a worker sharing a CPU with another process
  stalls every step).  The setter is a cached ``openblas_set_num_threads``
  (well under a microsecond); nothing is enumerated per call.
- **A recurrent layer's own two threads**: a call the core can run on two threads of
  its own (:func:`split_threads`, from :data:`SPLIT_MIN_WORK` multiply-adds per
  step) keeps its BLAS at one; the results are the same bits as on one thread.
- **Between calls** the core's pool is back at what it was (``others`` inside
  :func:`threads`), so SciPy's own functions are unaffected.
- **Two Python threads** inside the core at once each run single-threaded
  BLAS (the Python threads are the parallelism; one OpenBLAS pool shared by
  both would serialise them); the pool is restored when the last one leaves.
  A thread that enters the core on the CPU where another one there runs is
  held to the other CPUs until it leaves (:func:`_place`); while another
  Python thread is in the core, a bidirectional layer's directions run one
  after the other.
- **The two directions of a layer** (:func:`run_pair`) run in the calling
  thread and one helper thread (kept while in use), each held to its own half of the
  CPUs while they run.

The thread counts are process-wide state of the BLAS libraries: this module
mirrors what it set and puts it back.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
import time

__all__ = ["threads", "set_threads", "get_threads", "decide", "policy", "describe", "kernel", "split_threads",
           "WORK_PER_THREAD", "SPLIT_MIN_WORK"]

#: Multiply-adds per time step (rows x gate rows x hidden of the recurrent
#: product) that one more BLAS thread needs before it pays; a call with less
#: than twice this runs on one thread.  Measured with OpenBLAS 0.3.30 on the
#: project's 2-vCPU machines: ``docs/performance.md``, "Threads".
WORK_PER_THREAD = 1 << 21

_LOCK = threading.Lock()


class _Calls:
    """What lstmkit has set (guarded by ``_LOCK``)."""

    __slots__ = ("explicit", "rest", "active", "saved", "now", "cpus")

    def __init__(self):
        self.explicit = None  # ceiling of the innermost threads(...), or None
        self.rest = None      # the core pool's value between calls inside threads(...)
        self.active = 0       # Python threads inside a core call right now
        self.saved = None     # the core pool's value when the first of them entered
        self.now = None       # its value while they run
        self.cpus = {}        # thread ident -> where it runs the core (see _place)


_C = _Calls()


class _Pools:
    """This process's thread pools, enumerated once (threadpoolctl takes milliseconds to do it)
    and again by :func:`threads` and :func:`policy` only when new modules were loaded since."""

    def __init__(self):
        import numpy  # noqa: F401  (its BLAS must be loaded to be enumerated)
        from threadpoolctl import ThreadpoolController

        try:
            from . import _core  # noqa: F401  (loads SciPy's BLAS: limits apply only to loaded libraries)
        except ImportError:  # no compiled core (numpy backend only): NumPy's BLAS is all there is to set
            pass

        self.controller = ThreadpoolController()
        self.modules = len(sys.modules)
        blas = [lc for lc in self.controller.lib_controllers if lc.user_api == "blas"]
        scipys = [lc for lc in blas if _belongs(lc.filepath, "scipy")]
        numpys = [lc for lc in blas if _belongs(lc.filepath, "numpy")]
        # One BLAS shared by both (a conda or system build): it is the core's and NumPy's at once.
        self.core = scipys[0] if scipys else (blas[0] if len(blas) == 1 else None)
        self.numpy = numpys[0] if numpys else self.core
        self.others = [lc for lc in self.controller.lib_controllers if lc is not self.core]
        self.get, self.set = _accessors(self.core) if self.core is not None else (None, None)
        self.numpy_get = _accessors(self.numpy)[0] if self.numpy is not None else None


_POOLS: _Pools | None = None


def _pools(refresh: bool = False) -> _Pools:
    global _POOLS
    if _POOLS is None or (refresh and len(sys.modules) != _POOLS.modules):
        _POOLS = _Pools()
    return _POOLS


def _belongs(path: str, package: str) -> bool:
    """Is the library at ``path`` shipped inside ``package`` (its folder, or the wheel's ``<package>.libs``)?"""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return False
    root = os.path.realpath(list(spec.submodule_search_locations)[0])
    path = os.path.realpath(path)
    return any(path.startswith(d + os.sep) for d in (root, root + ".libs"))


def _accessors(lc):
    """``(get, set)`` of a pool's thread count.  Raw ctypes for pthreads OpenBLAS (~0.1 µs a call;
    threadpoolctl's own setter resolves the symbol each time and ignores all but one Python thread)."""
    import ctypes

    if lc.internal_api == "openblas" and lc.threading_layer != "openmp":
        prefix, suffix = getattr(lc, "_symbol_prefix", ""), getattr(lc, "_symbol_suffix", "")
        get = getattr(lc.dynlib, f"{prefix}openblas_get_num_threads{suffix}", None)
        set_ = getattr(lc.dynlib, f"{prefix}openblas_set_num_threads{suffix}", None)
        if get is not None and set_ is not None:
            get.restype, get.argtypes = ctypes.c_int, []
            set_.restype, set_.argtypes = None, [ctypes.c_int]
            return get, set_
    return lc.get_num_threads, lc.set_num_threads


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class _Load:
    """CPUs' worth of other processes lately on this process's CPUs: their busy time in ``/proc/stat``
    minus this process's CPU time, over the last interval of at least ``_LOAD_INTERVAL`` s (sampled only
    for calls big enough to thread; ``None`` until one interval has passed)."""

    wall = cpu = own = None
    others = None


_LOAD_INTERVAL = 0.2
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _other_load() -> float | None:
    now = time.monotonic()
    if _Load.wall is not None and now - _Load.wall < _LOAD_INTERVAL:
        return _Load.others
    try:
        cpus = os.sched_getaffinity(0)
        busy = 0
        with open("/proc/stat", "rb") as f:
            for line in f:  # the CPUs this process may use, not the whole host
                name, *fields = line.split()
                if name[:3] == b"cpu" and name[3:].isdigit() and int(name[3:]) in cpus:
                    fields = [int(v) for v in fields[:8]]
                    busy += sum(fields) - fields[3] - fields[4]  # all but idle and iowait; steal counts
        busy /= _TICK
    except (AttributeError, OSError, ValueError):
        return None
    own = time.process_time()
    if _Load.wall is not None:
        span = now - _Load.wall
        _Load.others = max(0.0, (busy - _Load.cpu) - (own - _Load.own)) / span
    _Load.wall, _Load.cpu, _Load.own = now, busy, own
    return _Load.others


def decide(work: int, ceiling: int, others: float | None = 0.0) -> int:
    """BLAS threads for one core call whose per-step product is ``work`` multiply-adds.

    1 while ``work < 2 * WORK_PER_THREAD``; else one per ``WORK_PER_THREAD``, at most
    ``ceiling`` and at most the CPUs that ``others`` (CPUs busy with other processes;
    ``None``: not known yet, assume busy) leave free.
    """
    if ceiling <= 1 or work < 2 * WORK_PER_THREAD:
        return 1
    if others is None:
        return 1
    free = int(usable_cpus() - others + 0.2)  # a CPU 80% free still takes a worker
    return max(1, min(ceiling, work // WORK_PER_THREAD, free))


class kernel:
    """``with kernel(work):`` around one call into the compiled core, ``work`` = rows x gate rows x
    hidden of its per-step product: the core's BLAS runs it on :func:`decide` threads (1 while another
    Python thread is inside the core too) and is restored when the last caller leaves.  (Written flat:
    it wraps every ``LSTMCell`` step, so each Python call here costs a measurable share of one.)"""

    __slots__ = ("work",)

    def __init__(self, work: int):
        self.work = work

    def __enter__(self):
        p = _POOLS or _pools()
        if p.set is None:
            return self
        c = _C
        with _LOCK:
            c.active += 1
            placing = False
            try:
                if c.active == 1:
                    c.saved = c.now = p.get()
                    if self.work < 2 * WORK_PER_THREAD:
                        want = 1
                    else:
                        ceiling = c.explicit if c.explicit is not None else (
                            p.numpy_get() if p.numpy_get is not None else c.saved)
                        want = decide(self.work, ceiling, _other_load())
                else:
                    want = 1
                if want != c.now:
                    p.set(want)
                    c.now = want
                placing = True
                _place(c)
            except BaseException:  # an interrupt here: __exit__ will not run, undo what it would
                if placing:
                    _unplace(c)
                _leave(p, c)
                raise
        return self

    def __exit__(self, *exc):
        p = _POOLS
        if p is None or p.set is None:
            return
        c = _C
        with _LOCK:
            try:
                _unplace(c)
            finally:
                _leave(p, c)


def _leave(p, c) -> None:
    """One Python thread's call leaves the core (``_LOCK`` held): the last one out restores the pool."""
    c.active -= 1
    if c.active == 0 and c.now != c.saved:
        p.set(c.saved)
        c.now = c.saved


_HERE = threading.local()  # this thread's native id, once looked up


def _place(c) -> None:
    """On a Python thread's outermost entry into the core (``_LOCK`` held): note the CPU it
    runs on, and if another Python thread in the core is on that CPU, hold this one to the
    allowed CPUs the others are not on until it leaves.  Left to the scheduler, a thread woken
    beside another on a 2-vCPU VM often time-shared that CPU for the whole call while the other
    CPU idled (two Python threads at T100 B16 H128: 0.84-1.09x the throughput of one, where a
    pair on two CPUs gives 1.8x); once apart, each is woken where it last ran.  Only where the
    core's BLAS thread count can be set (:class:`kernel` counts the threads in the core)."""
    me = threading.get_ident()
    mine = c.cpus.get(me)  # [cpu, depth of nested calls, mask to restore, mask set] or None
    if mine is not None:
        mine[1] += 1
        return
    cpu = _GETCPU() if _GETCPU is not None else -1
    try:
        native = _HERE.native
    except AttributeError:  # get_native_id is a system call (~0.2 us): once per thread
        native = _HERE.native = threading.get_native_id()
    mine = c.cpus[me] = [cpu, 1, None, None, native]
    if c.active < 2 or cpu < 0:
        return
    others = [rec for rec in c.cpus.values() if rec is not mine]
    for rec in others:  # where is it now?  It may have moved since (onto this CPU too)
        rec[0] = _cpu_of(rec[4], rec[0])
    busy = {rec[0] for rec in others}
    if cpu not in busy:
        return
    try:
        allowed = os.sched_getaffinity(0)
        free = allowed - busy
        if free:
            mine[2], mine[3] = allowed, free  # before the call: an interrupt after it restores
            os.sched_setaffinity(0, free)
            mine[0] = _GETCPU()  # the call moved this thread before returning
    except OSError:  # a container or policy that forbids it: run where the scheduler puts it
        mine[2] = mine[3] = None


def _cpu_of(native_id: int, default: int) -> int:
    """The CPU thread ``native_id`` of this process last ran on (``/proc``), else ``default``."""
    try:
        with open(f"/proc/self/task/{native_id}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[36])  # field 39, "processor"; fields[0] is field 3
    except (OSError, IndexError, ValueError):
        return default


def _unplace(c) -> None:
    """On the outermost exit (``_LOCK`` held): forget the thread's CPU and give it its mask back,
    unless something else changed the mask meanwhile (then that stays)."""
    me = threading.get_ident()
    mine = c.cpus.get(me)
    if mine is None:
        return
    mine[1] -= 1
    if mine[1]:
        return
    del c.cpus[me]
    if mine[2] is not None:
        try:
            if os.sched_getaffinity(0) == mine[3]:
                os.sched_setaffinity(0, mine[2])
        except OSError:
            pass


def in_core() -> int:
    """Calls of Python threads inside the core right now (read without the lock: a hint)."""
    return _C.active


def kernel_unneeded(work: int) -> bool:
    """May a core call of ``work`` skip :class:`kernel`?  Yes when kernel would change nothing:
    no other Python thread is in the core, the call would get 1 thread (small work, or a
    ceiling of 1) and the core's BLAS is already at 1 (``lstmkit run``, ``threads(1)``).
    ``_core.CellStep`` decides the same way without calling Python (keep the two in step)."""
    p = _POOLS
    if p is None:
        return False
    c = _C
    if p.set is None:
        return True
    if c.active:
        return False
    if work >= 2 * WORK_PER_THREAD:
        ceiling = c.explicit if c.explicit is not None else (p.numpy_get() if p.numpy_get is not None else 2)
        if ceiling > 1:
            return False
    return p.get() == 1


def _positive(name: str, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"threads: {name} must be a positive integer or None, got {value!r}")


class threads:
    """Set the ceiling on lstmkit's threads; as a context manager, restore it afterwards.

    ``with lstmkit.threads(1): ...`` scopes it; ``lstmkit.threads(2)`` alone keeps it.

    - ``n``: the most BLAS threads one call into the compiled core may use (small work uses
      one, see :func:`decide`); ``None``: auto, the CPUs this process may use.
    - ``others``: threads of every other pool meanwhile (NumPy's BLAS, OpenMP, and SciPy's
      BLAS between core calls); default ``n``.  The command line uses
      ``threads(runtime.threads, others=1)`` so that the NumPy work around the core (embedding,
      head, loss, optimizer) never spins against it.

    The settings are process-wide, as the libraries' pools are; nested blocks restore in order.
    """

    def __init__(self, n: int | None = None, *, others: int | None = None):
        _positive("n", n)
        _positive("others", others)
        p = _pools(refresh=True)
        ceiling = usable_cpus() if n is None else n
        rest = ceiling if others is None else others
        self._undo = []
        for lc in p.others:  # NumPy's BLAS, OpenMP, ...
            get, set_ = _accessors(lc)
            before = get()
            if before is not None:
                self._undo.append((set_, before))
                set_(rest)
        with _LOCK:
            self._undo.append((None, (_C.explicit, _C.rest)))
            _C.explicit, _C.rest = ceiling, rest
            if p.set is not None:
                self._undo.append((p.set, p.get()))
                p.set(rest)
                if _C.active:  # a core call in flight restores to the new value
                    _C.saved = rest

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.restore()

    def restore(self) -> None:
        """Put the pools and the ceiling back as they were before this call (once)."""
        with _LOCK:
            for set_, value in reversed(self._undo):
                if set_ is None:
                    _C.explicit, _C.rest = value
                elif set_ is (_POOLS.set if _POOLS else None) and _C.active:
                    _C.saved = value
                else:
                    set_(value)
            self._undo = []


def set_threads(n: int | None, *, others: int | None = None) -> None:
    """``lstmkit.threads(n, others=...)`` as a plain setter: the setting stays until changed."""
    threads(n, others=others)


def get_threads() -> int:
    """The ceiling in force: that of :func:`threads`, else NumPy's BLAS limit."""
    if _C.explicit is not None:
        return _C.explicit
    p = _pools()
    return max(1, p.numpy_get()) if p.numpy_get is not None else 1


def free_threads() -> int:
    """Python threads lstmkit may run in the core at once now (the two directions of a
    bidirectional layer): the ceiling, at most the CPUs other processes leave free (1 while
    that is not known; a thread waiting for a busy CPU stalls the other at the join)."""
    ceiling = get_threads()
    if ceiling <= 1:
        return 1
    others = _other_load()
    if others is None:
        return 1
    return max(1, min(ceiling, int(usable_cpus() - others + 0.2)))


def policy() -> dict:
    """The thread policy now: ceiling, its source, the rule, and every pool with its threads
    (what ``lstmkit info`` prints and a run's ``meta.json`` records)."""
    p = _pools(refresh=True)
    pools = []
    for lc in p.controller.lib_controllers:
        role = "core+numpy" if lc is p.core and lc is p.numpy else (
            "core" if lc is p.core else "numpy" if lc is p.numpy else "other")
        pools.append({"role": role, "user_api": lc.user_api, "internal_api": lc.internal_api,
                      "version": lc.version, "architecture": getattr(lc, "architecture", None),
                      "num_threads": lc.get_num_threads(), "filepath": lc.filepath})
    return {"ceiling": get_threads(), "source": "threads()" if _C.explicit is not None else "NumPy's BLAS limit",
            "between_calls": _C.rest, "usable_cpus": usable_cpus(), "work_per_thread": WORK_PER_THREAD,
            "split_min_work": SPLIT_MIN_WORK,
            "rule": f"a recurrent layer of a built-in cell (an LSTM without projection; 2-64 rows) runs its "
                    f"own 2 threads from {SPLIT_MIN_WORK} "
                    "multiply-adds per step (BLAS at 1); other core calls run on 1 BLAS thread unless "
                    f"their per-step product has >= {2 * WORK_PER_THREAD} multiply-adds, then 1 per "
                    f"{WORK_PER_THREAD}; always up to the ceiling and the CPUs other processes leave free",
            "pools": pools}


def describe() -> list[str]:
    """``lstmkit info``'s lines: what ``lstmkit run`` does with threads, and every pool now."""
    pol = policy()
    lines = [f"threads: lstmkit run caps the core's BLAS at runtime.threads (null: auto = {pol['usable_cpus']} "
             "usable CPUs) and runs NumPy's BLAS and OpenMP on 1 thread",
             f"threads: {pol['rule']}",
             f"threads: now (this process): ceiling {pol['ceiling']} ({pol['source']})"]
    for pool in pol["pools"]:
        arch = f" {pool['architecture']}" if pool["architecture"] else ""
        lines.append(f"{pool['internal_api']} ({pool['role']}): {pool['version']}{arch} "
                     f"threads={pool['num_threads']} ({pool['filepath']})")
    return lines


#: Multiply-adds per time step from which the core's own two-thread loop (a
#: step splits its product columns and hidden units) pays: its threads meet once per
#: step (~1 us), not once per BLAS call.  docs/performance.md, "Two threads".
SPLIT_MIN_WORK = 1 << 19


def split_threads(work: int) -> int:
    """Threads a core call with its own parallel loop may use (a layer's time loop, a cell step
    of 32-64 rows over packed weights; call it just before entering :class:`kernel`): :func:`free_threads` for ``work`` >= :data:`SPLIT_MIN_WORK` multiply-adds per
    step, else 1; 1 while another Python thread is in the core (the two directions of a layer, a
    user's threads)."""
    if work < SPLIT_MIN_WORK or _C.active > 0 or get_threads() <= 1:
        return 1
    return free_threads()


def _cpu_getter():
    """``sched_getcpu`` (the CPU the calling thread runs on), or None where libc has none."""
    try:
        import ctypes

        getcpu = ctypes.CDLL(None).sched_getcpu
    except (AttributeError, OSError, TypeError):
        return None
    getcpu.restype, getcpu.argtypes = ctypes.c_int, []
    return getcpu


_GETCPU = _cpu_getter() if hasattr(os, "sched_setaffinity") else None


def cpu_halves() -> tuple[set, set] | None:
    """The CPUs the calling thread may use, split in two disjoint halves, the first holding the CPU it
    runs on now; None where there is no second CPU or affinity cannot be read (not Linux)."""
    if _GETCPU is None:
        return None
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except OSError:
        return None
    here = _GETCPU()
    if len(allowed) < 2 or here not in allowed:
        return None
    rest = [c for c in allowed if c != here]
    mine = {here, *rest[:len(allowed) // 2 - 1]}
    return mine, set(allowed) - mine


class _Job:
    """One call for the helper thread, with its own result slot and event: a caller that stopped
    waiting (an interrupt) can never be handed another call's result."""

    __slots__ = ("call", "result", "error", "done")

    def __init__(self, call):
        self.call, self.result, self.error = call, None, None
        self.done = threading.Event()

    def run(self):
        try:
            self.result = self.call()
        except BaseException as exc:  # re-raised in the caller's thread
            self.error = exc
        finally:
            self.call = None
            self.done.set()

    def wait(self):
        """Until the helper is done, even through a KeyboardInterrupt (it writes into arrays the
        caller owns), which is raised afterwards."""
        interrupted = None
        while not self.done.is_set():
            try:
                self.done.wait()
            except KeyboardInterrupt as exc:
                interrupted = exc
        if interrupted is not None:
            raise interrupted


class _Partner:
    """A daemon helper thread that runs the second of two calls while the caller runs the first
    (:func:`run_pair`).  Kept between calls (starting a thread per call cost ~0.2 ms a layer) until
    it has idled :attr:`IDLE_S` seconds, so that a process does not keep a thread it no longer
    uses (Python 3.12 warns when a process with threads forks).  Each of the two is held to its own
    half of the CPUs while they run: left to the scheduler, after the machine idled a while the GIL
    hand-offs between them woke one beside the other, and the two time-shared one CPU for most of
    the call (T200 B8 H128 L2 bidirectional after a 0.15 s pause: 22 ms against 13-15 held apart)."""

    IDLE_S = 1.0

    def __init__(self):
        self.lock = threading.Lock()  # held by the one caller using the partner, or an exiting helper
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = None
        self.tid = None

    def _loop(self, started):
        self.tid = threading.get_native_id()
        started.set()
        while True:
            try:
                job = self.jobs.get(timeout=self.IDLE_S)
            except queue.Empty:
                # exit only while no caller is in run(): a job is posted under the lock
                if self.lock.acquire(blocking=False):
                    try:
                        if self.jobs.empty():
                            self.thread = self.tid = None
                            return
                    finally:
                        self.lock.release()
                continue
            job.run()

    def _start(self):
        started = threading.Event()
        thread = threading.Thread(target=self._loop, args=(started,), name="lstmkit-direction",
                                  daemon=True)
        thread.start()  # may raise (no more threads): then there is still no helper
        self.thread = thread
        started.wait()

    def run(self, first, second) -> list | None:
        """``[first(), second()]``, ``second`` in the helper; None (nothing run) when another
        Python thread is using the partner."""
        if not self.lock.acquire(blocking=False):
            return None
        try:
            if self.thread is None:
                self._start()
            job, posted, saved = _Job(second), False, None
            try:
                halves = cpu_halves() if self.tid is not None else None
                if halves is not None:
                    try:
                        os.sched_setaffinity(self.tid, halves[1])
                        saved = os.sched_getaffinity(0)
                        os.sched_setaffinity(0, halves[0])
                    except OSError:  # a container or policy that forbids it: run unheld
                        pass
                self.jobs.put(job)
                posted = True
                mine = first()
            finally:
                try:
                    if posted:
                        job.wait()
                finally:
                    if saved is not None:
                        try:
                            os.sched_setaffinity(0, saved)
                        except OSError:
                            pass
            if job.error is not None:
                raise job.error
            return [mine, job.result]
        finally:
            self.lock.release()


_PARTNER = _Partner()


def _after_fork():  # the partner thread does not exist in a forked child; its lock may be held
    global _PARTNER
    _PARTNER = _Partner()
    mine = _C.cpus.get(threading.get_ident())  # the forking thread's own record stays
    _C.cpus.clear()  # the other threads that were in the core do not exist in the child
    if mine is not None:
        _C.cpus[threading.get_ident()] = mine


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def run_pair(first, second) -> list:
    """``[first(), second()]`` at once: ``second`` in the partner's helper thread, ``first`` in
    this one, each held to its own half of the CPUs meanwhile (:class:`_Partner`); one after the
    other when another Python thread has the partner.  An exception in either is raised here,
    the first's first."""
    pair = _PARTNER.run(first, second)
    return [first(), second()] if pair is None else pair
