#!/usr/bin/env python
"""Time lstmkit (``cython`` and ``numpy`` backends) against PyTorch in one run.

Usage (from the repository root)::

    PYTHONPATH=. python benchmarks/bench_rnn.py                 # full grid, 1 and 2 threads
    PYTHONPATH=. python benchmarks/bench_rnn.py --quick         # three configs, cells at B1/B4
    PYTHONPATH=. python benchmarks/bench_rnn.py --markdown --json results.json
    PYTHONPATH=. python benchmarks/bench_rnn.py --threads 1 --cases lstm32,cell32

What is measured (see ``docs/performance.md`` for a recorded run):

* cases ``lstm32`` / ``lstm64`` / ``gru32`` / ``rnn32``: ``module(x)`` inference
  (LSTM float32 / float64, GRU, RNN tanh; torch: ``torch.inference_mode()``);
* ``packed32``: LSTM float32 inference on a ``PackedSequence`` (lengths from T
  down to T/2), against torch's ``pack_padded_sequence``;
* ``train32`` / ``gru_train32`` / ``rnn_train32``: float32 ``forward_train`` +
  ``backward(ones)`` against torch's ``out.sum().backward()`` in train mode with
  ``input.requires_grad``;
* ``cell32`` / ``gcell32``: an ``LSTMCell`` / ``GRUCell`` called in a Python loop
  over the steps, inference, against the same loop over torch's cell, at batch
  1, 4, 16 and 64 (``CELL_GRID``);
* peak memory (``MEMORY_CONFIG``, each call in a fresh process: RSS growth) and
  two Python threads each running inference on its own module, against one
  thread running both calls (``--no-memory`` / ``--no-pythreads`` skip them);
* the cython backend at 2 threads against itself at 1 on every case, both
  sampled alike after a pause (``--no-scaling`` skips it);
* issue 7's targets evaluated on the run (ratios, % of GEMM peak, 2-thread
  speed-up, never slower at 2 threads than at 1).

Every number comes from one process: for each (configuration, case, thread
count) the implementations are warmed up, then timed in interleaved rounds
(each round times every implementation once, in a rotating order) so that
machine noise hits them alike; the median of the rounds is reported
(>= 7 rounds; more for small cases, within a time budget; each round of a
tiny case runs the call several times and divides).  Threads: a threadpoolctl
limit of n (it limits NumPy's and SciPy's OpenBLAS alike, and OpenMP) and
``torch.set_num_threads(n)``.  Ratios are torch time / lstmkit time (> 1 means
lstmkit is faster).  GFLOP/s uses ``2*T*B*G*(I_layer + H)`` per layer and
direction (``G`` = 4H for LSTM, 3H for GRU; training counts 3x the forward),
and "% peak" divides by the best GEMM GFLOP/s of the same dtype measured in the
same run at the same thread count (n = 1024).  Results are checked against
torch (max |lstmkit - torch| over outputs, states and, for training, every
gradient) so that a fast but wrong kernel cannot pass unnoticed.

torch is optional: without it only lstmkit numbers (and cython-vs-numpy
differences) are printed.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np
import scipy
import scipy.linalg.blas as scipy_blas  # loads SciPy's OpenBLAS so threadpoolctl sees it
try:
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError:  # pragma: no cover
    sys.exit("bench_rnn.py needs threadpoolctl to set the BLAS thread count:"
             " python -m pip install threadpoolctl")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import lstmkit  # noqa: E402
from lstmkit.registry import available_backends  # noqa: E402

try:  # the compiled core also links SciPy's BLAS; import it before threadpoolctl looks
    from lstmkit import _core  # noqa: F401,E402
except ImportError:  # pragma: no cover - source checkout without a build
    _core = None


# ----------------------------------------------------------------------------
# grid

@dataclass(frozen=True)
class Config:
    T: int
    B: int
    I: int
    H: int
    L: int
    bi: bool = False

    @property
    def label(self) -> str:
        s = f"T{self.T} B{self.B} I{self.I} H{self.H} L{self.L}"
        return s + " bi" if self.bi else s

    def flops(self, gates: int) -> float:
        """Forward FLOPs: ``2*T*B*G*(I_layer + H)`` summed over layers and directions."""
        d = 2 if self.bi else 1
        total = 0.0
        for layer in range(self.L):
            i_l = self.I if layer == 0 else d * self.H
            total += d * 2.0 * self.T * self.B * gates * self.H * (i_l + self.H)
        return total


GRID = [
    Config(100, 1, 32, 64, 1),
    Config(100, 16, 64, 128, 1),
    Config(100, 64, 128, 256, 2),
    Config(50, 32, 128, 512, 1),
    Config(200, 8, 64, 128, 2, bi=True),
    Config(1000, 1, 16, 32, 1),
]
QUICK = [0, 1, 5]  # the configurations the floors name
# cell loops: issue 7 asks for batch 1, 4, 16 and 64 (one layer, I64 H128)
CELL_GRID = [Config(100, b, 64, 128, 1) for b in (1, 4, 16, 64)]

CASES = {
    "lstm32": "LSTM float32 inference",
    "lstm64": "LSTM float64 inference",
    "gru32": "GRU float32 inference",
    "rnn32": "RNN (tanh) float32 inference",
    "packed32": "LSTM float32 inference on a PackedSequence (lengths T down to T/2)",
    "train32": "LSTM float32 training (forward + backward)",
    "gru_train32": "GRU float32 training (forward + backward)",
    "rnn_train32": "RNN (tanh) float32 training (forward + backward)",
    "cell32": "LSTMCell Python loop, float32 inference",
    "gcell32": "GRUCell Python loop, float32 inference",
}
# case -> (cell kind, dtype, mode); cell loops run on CELL_GRID
SPEC = {
    "lstm32": ("lstm", np.float32, "infer"),
    "lstm64": ("lstm", np.float64, "infer"),
    "gru32": ("gru", np.float32, "infer"),
    "rnn32": ("rnn", np.float32, "infer"),
    "packed32": ("lstm", np.float32, "packed"),
    "train32": ("lstm", np.float32, "train"),
    "gru_train32": ("gru", np.float32, "train"),
    "rnn_train32": ("rnn", np.float32, "train"),
    "cell32": ("lstm", np.float32, "cell"),
    "gcell32": ("gru", np.float32, "cell"),
}
GATES = {"lstm": 4, "gru": 3, "rnn": 1}

# max |lstmkit - torch| / max(1, max |torch|) per array, flagged above these
TOLERANCE = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}
TOLERANCE_TRAIN32 = 1e-4  # gradients sum T*B terms in float32

# seconds to let other libraries' spinning BLAS/OpenMP workers go to sleep
# before each sample at more than one thread (see measure())
QUIESCE_S = 0.15


# ----------------------------------------------------------------------------
# timing

class Impl:
    """One implementation of a case: ``fn()`` runs it; ``outputs(result)`` -> arrays."""

    def __init__(self, name, fn, outputs):
        self.name = name
        self.fn = fn
        self.outputs = outputs
        self.samples: list[float] = []
        self.number = 1
        self.setup = None  # untimed, before each sample (the scaling check sets threads here)


def _time_once(fn, number):
    gc_was = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - t0) / number
    finally:
        if gc_was:
            gc.enable()


def _cpu_snapshot():
    """(wall s, CPU s used by the whole machine incl. steal, CPU s used by this process)."""
    busy = float("nan")
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal ...: all but idle/iowait
        busy = (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), busy, ru.ru_utime + ru.ru_stime


def foreign_load(before, after):
    """CPUs' worth of work by other processes (and the hypervisor's steal) in between."""
    wall = after[0] - before[0]
    if wall <= 0:
        return float("nan")
    return max(0.0, ((after[1] - before[1]) - (after[2] - before[2])) / wall)


def measure(impls, *, min_rounds=7, max_rounds=41, budget_s=1.5, min_sample_s=0.002,
            quiesce_s=0.0):
    """Interleaved timing: median seconds per call for each implementation.

    Also returns, under the key ``None``, how many CPUs' worth of other work
    ran on the machine meanwhile (a noise gauge: with 2 CPUs, 2-thread numbers
    are unreliable whenever it is well above 0).

    ``quiesce_s`` (use it with more than one thread): before each sample,
    sleep that long and make one untimed call.  NumPy's OpenBLAS, SciPy's
    OpenBLAS (the cython backend's) and torch's OpenMP pool each keep their
    worker threads spinning for a while after a call; on a 2-CPU machine the
    next library's worker then waits for the spinner's time slice, and a
    0.15 ms call takes 5-15 ms.  Interleaving without the pause measures that
    fight, not the code.  An implementation's ``setup`` (if any) runs first, untimed.
    """
    def settle(im):
        if im.setup is not None:
            im.setup()
        if quiesce_s > 0:
            time.sleep(quiesce_s)
            im.fn()

    for im in impls:  # warm-up (the check call already ran each once) and calibration
        settle(im)
        t = _time_once(im.fn, 1)
        if t < min_sample_s:
            im.number = max(1, min(1000, int(math.ceil(min_sample_s / max(t, 1e-7)))))
            t = _time_once(im.fn, im.number)
        im.est = t * im.number
    per_round = sum(im.est for im in impls) + len(impls) * quiesce_s  # pauses count too
    rounds = int(max(min_rounds, min(max_rounds, budget_s / max(per_round, 1e-9))))
    snap = _cpu_snapshot()
    for r in range(rounds):
        order = impls[r % len(impls):] + impls[: r % len(impls)]
        for im in order:
            settle(im)
            im.samples.append(_time_once(im.fn, im.number))
    out = {None: foreign_load(snap, _cpu_snapshot())}
    for im in impls:
        s = sorted(im.samples)
        med = statistics.median(s)
        q1, q3 = s[len(s) // 4], s[(3 * len(s)) // 4]
        out[im.name] = {"median_s": med, "iqr_pct": 100.0 * (q3 - q1) / med,
                        "rounds": len(s), "number": im.number, "samples": list(im.samples)}
    return out


def measure_quietest(impls, args, threads, budget, quiesce_s, **kw):
    """:func:`measure`, again (up to ``args.retries`` times, after 2 s) while other processes
    used more CPUs than ``threads`` leave idle: ``(results, other load, attempt)`` of the
    quietest attempt (``kw``: more of :func:`measure`'s arguments)."""
    max_load = (args.max_load if args.max_load is not None
                else max(0.25, (os.cpu_count() or 1) - threads - 0.25))
    best = None
    for attempt in range(1 + max(0, args.retries)):
        if attempt:  # other processes were busy: wait, then try again
            time.sleep(2.0)
            for im in impls:
                im.samples = []
        res = measure(impls, budget_s=budget, quiesce_s=quiesce_s, **kw)
        load = res.pop(None)
        if best is None or load < best[1]:
            best = (res, load, attempt)
        if load <= max_load:
            break
    return best


# ----------------------------------------------------------------------------
# building the cases

def _np(t):
    return t.detach().cpu().numpy()


def _rng_input(cfg, dtype, seed=1):
    return np.random.default_rng(seed).standard_normal((cfg.T, cfg.B, cfg.I)).astype(dtype)


def _err(a, ref):
    a = np.asarray(a, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if a.shape != ref.shape:
        return float("inf")
    scale = max(1.0, float(np.max(np.abs(ref))) if ref.size else 1.0)
    return float(np.max(np.abs(a - ref))) / scale if a.size else 0.0


def lengths_of(cfg):
    """Packed case: sequence lengths from T down to T/2, longest first."""
    return np.linspace(cfg.T, max(1, cfg.T // 2), cfg.B).astype(np.int64)


def useful_fraction(case, cfg):
    """Share of the T*B rows a case computes (packed sequences skip the padding)."""
    if SPEC[case][2] != "packed":
        return 1.0
    return float(lengths_of(cfg).sum()) / (cfg.T * cfg.B)


def _flat(res):
    out, st = res
    if hasattr(out, "batch_sizes"):
        out = out.data  # a PackedSequence (lstmkit's or torch's)
    st = st if isinstance(st, tuple) else (st,)
    return [out, *st]


def build(case, cfg, backends, torch):
    """``(impls, dtype)`` for one case and configuration (None: not run there)."""
    kind, dtype, mode = SPEC[case]
    dtype = np.dtype(dtype)
    if mode == "cell" and cfg.bi:
        return None
    x = _rng_input(cfg, dtype)
    impls = []
    lk_cls = {"lstm": lstmkit.LSTM, "gru": lstmkit.GRU, "rnn": lstmkit.RNN}[kind]

    # weights: drawn by torch when it is there (so both hold the same numbers)
    if torch is not None:
        torch.manual_seed(0)
        tcls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind]
        tm = tcls(cfg.I, cfg.H, cfg.L, bidirectional=cfg.bi)
        if dtype == np.float64:
            tm = tm.double()
        state = {k: _np(v).copy() for k, v in tm.state_dict().items()}
    else:
        tm = None
        state = lk_cls(cfg.I, cfg.H, cfg.L, bidirectional=cfg.bi, dtype=dtype, seed=0,
                       backend="numpy").state_dict()

    def lk_module(backend):
        m = lk_cls(cfg.I, cfg.H, cfg.L, bidirectional=cfg.bi, dtype=dtype, backend=backend,
                   seed=0)
        m.load_state_dict(state)
        return m

    if mode == "packed":
        from lstmkit.utils.rnn import pack_padded_sequence

        lengths = lengths_of(cfg)
        xp = pack_padded_sequence(x, lengths)
        for be in backends:
            m = lk_module(be).eval()
            impls.append(Impl(be, lambda m=m: m(xp), _flat))
        if tm is not None:
            tm.eval()
            xpt = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x),
                                                          torch.from_numpy(lengths))

            def run_torch_packed():
                with torch.inference_mode():
                    return tm(xpt)

            impls.append(Impl("torch", run_torch_packed,
                              lambda r: [_np(a) for a in _flat(r)]))

    elif mode == "infer":
        flat = _flat

        for be in backends:
            m = lk_module(be).eval()
            impls.append(Impl(be, lambda m=m: m(x), flat))
        if tm is not None:
            tm.eval()
            xt = torch.from_numpy(x)

            def run_torch():
                with torch.inference_mode():
                    return tm(xt)

            impls.append(Impl("torch", run_torch, lambda r: [_np(a) for a in flat(r)]))

    elif mode == "train":
        names = list(state)

        for be in backends:
            m = lk_module(be).train()
            ones = np.ones((cfg.T, cfg.B, (2 if cfg.bi else 1) * cfg.H), dtype)

            def run_lk(m=m, ones=ones):
                out, st, backward = m.forward_train(x)
                d_x, _, d_params = backward(ones)
                return out, d_x, d_params

            impls.append(Impl(be, run_lk,
                              lambda r: [r[0], r[1], *(r[2][n] for n in names)]))
        if tm is not None:
            tm.train()
            xt = torch.from_numpy(x).requires_grad_(True)
            params = dict(tm.named_parameters())

            def run_torch():
                xt.grad = None
                for p in params.values():
                    p.grad = None
                out, _ = tm(xt)
                out.sum().backward()
                return out, xt.grad, [params[n].grad for n in names]

            impls.append(Impl("torch", run_torch,
                              lambda r: [_np(r[0]), _np(r[1]), *(_np(g) for g in r[2])]))

    elif mode == "cell":
        lstm = kind == "lstm"

        def layer_state(layer):
            return {k: state[f"{k}_l{layer}"] for k in
                    ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}

        def loop(cells, x, zeros):
            """The user's loop: each layer's cell at every step -> (outputs, h's, c's)."""
            hs = [zeros] * len(cells)
            cs = [zeros] * len(cells)
            outs = []
            for t in range(cfg.T):
                inp = x[t]
                for j, cell in enumerate(cells):
                    if lstm:
                        hs[j], cs[j] = cell(inp, (hs[j], cs[j]))
                    else:
                        hs[j] = cell(inp, hs[j])
                    inp = hs[j]
                outs.append(inp)
            return outs, hs, (cs if lstm else [])

        lk_cell = lstmkit.LSTMCell if lstm else lstmkit.GRUCell
        for be in backends:
            cells = []
            for layer in range(cfg.L):
                c = lk_cell(cfg.I if layer == 0 else cfg.H, cfg.H, dtype=dtype, backend=be,
                            seed=0)
                c.load_state_dict(layer_state(layer))
                cells.append(c)
            zeros = np.zeros((cfg.B, cfg.H), dtype)
            impls.append(Impl(be, lambda cells=cells, zeros=zeros: loop(cells, x, zeros),
                              lambda r: [np.stack(r[0]), *r[1], *r[2]]))
        if tm is not None:
            tcells = []
            for layer in range(cfg.L):
                c = (torch.nn.LSTMCell if lstm else torch.nn.GRUCell)(
                    cfg.I if layer == 0 else cfg.H, cfg.H)
                c.load_state_dict({k: torch.from_numpy(v) for k, v in layer_state(layer).items()})
                tcells.append(c.eval())
            xt = torch.from_numpy(x)
            tzeros = torch.zeros(cfg.B, cfg.H)

            def run_tcells():
                with torch.inference_mode():
                    return loop(tcells, xt, tzeros)

            impls.append(Impl("torch", run_tcells,
                              lambda r: [_np(torch.stack(r[0])), *(_np(a) for a in r[1]),
                                         *(_np(a) for a in r[2])]))
    else:  # pragma: no cover
        raise ValueError(case)
    return impls, dtype


def check(impls, case, dtype):
    """Run each implementation once; errors of lstmkit against torch (or cython vs numpy)."""
    results = {im.name: [np.asarray(a) for a in im.outputs(im.fn())] for im in impls}
    ref_name = "torch" if "torch" in results else ("numpy" if "numpy" in results else None)
    errs = {}
    tol = TOLERANCE_TRAIN32 if SPEC[case][2] == "train" else TOLERANCE[dtype]
    for name, arrs in results.items():
        if name == ref_name or ref_name is None:
            continue
        ref = results[ref_name]
        e = max((_err(a, r) for a, r in zip(arrs, ref)), default=0.0)
        if len(arrs) != len(ref):
            e = float("inf")
        errs[name] = {"err": e, "vs": ref_name, "ok": bool(e <= tol), "tol": tol}
    return errs


# ----------------------------------------------------------------------------
# peak memory (each measurement in a fresh process) and two Python threads

MEMORY_CONFIG = Config(400, 64, 128, 512, 1)  # issue 7's memory case
PYTHREAD_CONFIGS = [Config(100, 16, 64, 128, 1), Config(50, 32, 128, 512, 1)]


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(field)


def memory_child(impl, mode):
    """Print the peak RSS growth (MB) of one LSTM call on MEMORY_CONFIG, 1 thread."""
    cfg = MEMORY_CONFIG
    x = _rng_input(cfg, np.float32)
    threadpool_limits(1)
    if impl == "torch":
        import torch

        torch.set_num_threads(1)
        torch.manual_seed(0)
        m = torch.nn.LSTM(cfg.I, cfg.H, cfg.L)
        xt = torch.from_numpy(x)

        def run():
            if mode == "infer":
                with torch.inference_mode():
                    return m(xt)
            out, _ = m(xt)
            out.sum().backward()
            return out
    else:
        m = lstmkit.LSTM(cfg.I, cfg.H, cfg.L, dtype=np.float32, backend=impl, seed=0)
        ones = np.ones((cfg.T, cfg.B, cfg.H), np.float32)

        def run():
            if mode == "infer":
                return m(x)
            out, _, backward = m.forward_train(x)
            return out, backward(ones)
    gc.collect()
    base = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS
        f.write("5")
    result = run()
    peak = _status_kb("VmHWM")
    del result
    print(json.dumps({"peak_mb": (peak - base) / 1024}))


def peak_memory(backends, torch):
    """``{mode: {impl: MB}}``: peak RSS growth of one call, each in its own process."""
    import subprocess

    out = {}
    impls = list(backends) + (["torch"] if torch is not None else [])
    for mode in ("infer", "train"):
        out[mode] = {}
        for impl in impls:
            proc = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--memory-child", f"{impl}:{mode}"],
                capture_output=True, text=True, check=False)
            try:
                out[mode][impl] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_mb"]
            except (IndexError, ValueError, KeyError):
                print(f"memory child {impl}:{mode} failed: {proc.stderr[-500:]}", file=sys.stderr)
    return out


def python_threads(backends, torch, budget):
    """Two Python threads, each running inference on its own module (1 BLAS thread):
    throughput relative to one thread running both calls in turn."""
    from concurrent.futures import ThreadPoolExecutor

    out = []
    pool = ThreadPoolExecutor(2)
    with threadpool_limits(1):
        if torch is not None:
            torch.set_num_threads(1)
        for cfg in PYTHREAD_CONFIGS:
            x = _rng_input(cfg, np.float32)
            impls = []
            for be in backends:
                ms = [lstmkit.LSTM(cfg.I, cfg.H, cfg.L, backend=be, seed=s).eval()
                      for s in (0, 1)]
                impls.append((be, [lambda m=m: m(x) for m in ms]))
            if torch is not None:
                xt = torch.from_numpy(x)
                tms = [torch.nn.LSTM(cfg.I, cfg.H, cfg.L).eval() for _ in range(2)]

                def tcall(m):
                    with torch.inference_mode():
                        return m(xt)

                impls.append(("torch", [lambda m=m: tcall(m) for m in tms]))
            timed = []
            for name, (f1, f2) in impls:
                timed.append(Impl(f"{name} 1 thread", lambda f1=f1, f2=f2: (f1(), f2()), None))
                timed.append(Impl(f"{name} 2 threads", lambda f1=f1, f2=f2: [
                    fut.result() for fut in (pool.submit(f1), pool.submit(f2))], None))
            for im in timed:
                im.fn()
            res = measure(timed, budget_s=budget)
            load = res.pop(None)
            for name, _ in impls:
                one, two = res[f"{name} 1 thread"], res[f"{name} 2 threads"]
                out.append({"config": cfg.label, "impl": name, "one_ms": 1e3 * one["median_s"],
                            "two_ms": 1e3 * two["median_s"],
                            "scaling": one["median_s"] / two["median_s"], "other_load": load})
    pool.shutdown()
    return out


# 2 threads may measure up to this much slower than 1 and count as "not slower": the spread
# between medians of the same code in one run on this VM (see docs/performance.md)
SCALING_SLACK = 1.05


def scaling(pairs, args, budget):
    """The cython backend against itself at 1 and at 2 threads, interleaved, each sample after
    the same pause (issue 7: never slower at 2 threads than at 1 for any shape in the grid).
    The main passes cannot tell: only their 2-thread samples follow a pause."""
    out = []
    with threadpool_limits(limits=2):  # restores the caller's limits at the end
        for cfg, case in pairs:
            built = build(case, cfg, ["cython"], None)
            if built is None:
                continue
            (lk,), _ = built
            pair = []
            for n in (1, 2):
                im = Impl(f"{n}T", lk.fn, lk.outputs)
                im.setup = lambda n=n: threadpool_limits(limits=n)
                pair.append(im)
            # samples of >= 20 ms and >= 15 rounds: a 2 ms sample right after the pause
            # spreads 30-60% (IQR) on this VM, too much to tell 5%
            res, load, attempt = measure_quietest(pair, args, 2, budget, args.quiesce,
                                                  min_rounds=15, min_sample_s=0.02)
            one, two = res["1T"], res["2T"]
            # the median of each round's own ratio: a round's two samples are seconds apart at
            # most, so slower phases of the machine (steal, clock) cancel in it
            paired = statistics.median(b / a for a, b in zip(one["samples"], two["samples"]))
            out.append({"case": case, "config": cfg.label, "one_ms": 1e3 * one["median_s"],
                        "two_ms": 1e3 * two["median_s"], "time_ratio": paired,
                        "iqr_pct": [one["iqr_pct"], two["iqr_pct"]], "other_load": load,
                        "attempts": attempt + 1})
            print(f"[scaling] {case:11} {cfg.label:24} 1T={_fmt_ms(one['median_s'])}ms"
                  f" 2T={_fmt_ms(two['median_s'])}ms 2T/1T={out[-1]['time_ratio']:.2f}"
                  f" other-load={load:.2f}", file=sys.stderr, flush=True)
    return out


# ----------------------------------------------------------------------------
# GEMM peak

def gemm_peaks(threads, torch, n=1024):
    rng = np.random.default_rng(0)
    out = {}
    for dt in (np.float32, np.float64):
        a = rng.standard_normal((n, n)).astype(dt)
        b = rng.standard_normal((n, n)).astype(dt)
        c = np.empty((n, n), dt)
        af, bf = np.asfortranarray(a), np.asfortranarray(b)
        sp = scipy_blas.sgemm if dt == np.float32 else scipy_blas.dgemm
        impls = [
            Impl("numpy", lambda a=a, b=b, c=c: np.matmul(a, b, out=c), None),
            Impl("scipy", lambda af=af, bf=bf, sp=sp: sp(1.0, af, bf), None),
        ]
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            tc = torch.empty(n, n, dtype=ta.dtype)
            impls.append(Impl("torch", lambda ta=ta, tb=tb, tc=tc: torch.mm(ta, tb, out=tc), None))
        for im in impls:
            im.fn()
        res = measure(impls, budget_s=0.5, quiesce_s=QUIESCE_S if threads > 1 else 0.0)
        res.pop(None)
        flop = 2.0 * n ** 3
        out[np.dtype(dt).name] = {k: flop / v["median_s"] / 1e9 for k, v in res.items()}
    return out


# ----------------------------------------------------------------------------
# environment

def environment(torch):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    fl = line.split(":", 1)[1].split()
                    flags = " ".join(x for x in ("avx2", "fma", "avx512f", "avx512_bf16")
                                     if x in fl)
                    break
    except OSError:
        pass
    env = {
        "cpu": cpu,
        "cpu_flags": flags,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "lstmkit_backends": available_backends(),
        "torch": None if torch is None else torch.__version__,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
        "blas": [
            {k: d.get(k) for k in ("user_api", "internal_api", "prefix", "version",
                                   "architecture", "threading_layer", "num_threads")}
            | {"filepath": os.path.basename(d.get("filepath", ""))}
            for d in threadpool_info()
        ],
    }
    if torch is not None:
        env["torch_onednn"] = bool(torch.backends.mkldnn.is_available())
        env["torch_mkl"] = bool(torch.backends.mkl.is_available())
    return env


# ----------------------------------------------------------------------------
# formatting

def _fmt_ms(s):
    ms = s * 1e3
    return f"{ms:.3f}" if ms < 1 else (f"{ms:.2f}" if ms < 100 else f"{ms:.1f}")


def _fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}"


def _fmt_err(e):
    if e is None:
        return "-"
    return f"{e['err']:.1e} {'ok' if e['ok'] else 'FAIL'}"


def targets(records, scaled=()):
    """Issue 7's targets, evaluated on this run: ``(what, case, config, threads, op, needed,
    measured)`` rows, met when ``measured op needed`` (ratios torch / cython, % of GEMM peak,
    2-thread speed-up; with ``scaled``, from :func:`scaling`, 2-thread time / 1-thread time)."""
    out = []

    def rec(case, label, threads):
        for r in records:
            if r["case"] == case and r["config"] == label and r["threads"] == threads:
                return r
        return None

    for r in records:
        kind, dtype, mode = SPEC[r["case"]]
        cfg = next((c for c in GRID + CELL_GRID if c.label == r["config"]), None)
        got = r["ratio"].get("cython")
        if cfg is None or got is None:
            continue
        small = cfg.B * cfg.H
        if mode == "cell":
            need = 5.0 if cfg.B <= 4 else 1.5
        elif r["case"] == "lstm32":
            need = 1.5 if small <= 512 else 1.0
        elif r["case"] == "train32":
            need = 1.5 if small <= 512 else 1.1
        else:  # GRU, RNN, float64 LSTM, packed
            need = 2.0 if small <= 2048 else 1.5
        out.append(("x torch", r["case"], r["config"], r["threads"], ">=", need, got))
        if small >= 8192 and mode in ("infer", "train") and r["case"] in ("lstm32", "train32"):
            out.append(("% GEMM peak", r["case"], r["config"], r["threads"], ">=",
                        90.0 if mode == "infer" else 85.0, r["pct_peak"]["cython"]))
            if r["threads"] == 2:
                one = rec(r["case"], r["config"], 1)
                if one is not None:
                    out.append(("2T / 1T speed-up", r["case"], r["config"], 2, ">=", 1.7,
                                one["ms"]["cython"] / r["ms"]["cython"]))
    for r in scaled:
        out.append(("2T / 1T time", r["case"], r["config"], 2, "<=", SCALING_SLACK,
                    r["time_ratio"]))
    return out


def met(op, need, got):
    return got >= need if op == ">=" else got <= need


def render(env, peaks, records, markdown, threads_list, extras=None):
    extras = extras or {}
    lines = []
    p = lines.append
    p("# lstmkit benchmark" if markdown else "lstmkit benchmark")
    p("")
    p(f"CPU: {env['cpu']} ({env['cpus']} logical CPUs; {env['cpu_flags']}); "
      f"Python {env['python']}, NumPy {env['numpy']}, SciPy {env['scipy']}, "
      f"torch {env['torch'] or 'not installed'}"
      + (f" (oneDNN {'on' if env.get('torch_onednn') else 'off'})" if env["torch"] else "")
      + f"; lstmkit backends available: {', '.join(env['lstmkit_backends'])}")
    p(f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']}, OPENBLAS_L2_SIZE={env['OPENBLAS_L2_SIZE']}"
      " (not set by this script)")
    p("")
    p("threadpoolctl (libraries loaded in this process):")
    p("")
    if markdown:
        p("| user_api | internal_api | library | version | architecture | threading |")
        p("|---|---|---|---|---|---|")
    for b in env["blas"]:
        row = [b["user_api"], b["internal_api"], b["filepath"], b["version"] or "-",
               b["architecture"] or "-", b["threading_layer"] or "-"]
        p("| " + " | ".join(map(str, row)) + " |" if markdown else "  " + "  ".join(map(str, row)))
    p("")
    p("GEMM peak, n=1024, GFLOP/s (median):")
    p("")
    hdr = ["threads", "dtype"] + sorted({k for t in peaks.values() for d in t.values() for k in d})
    if markdown:
        p("| " + " | ".join(hdr) + " |")
        p("|" + "---|" * len(hdr))
    else:
        p("  " + "  ".join(f"{h:>8}" for h in hdr))
    for n in threads_list:
        for dt, d in peaks[n].items():
            row = [str(n), dt] + [f"{d[k]:.1f}" if k in d else "-" for k in hdr[2:]]
            p("| " + " | ".join(row) + " |" if markdown else "  " + "  ".join(f"{c:>8}" for c in row))
    p("")
    p(f"timing: median of >= 7 interleaved rounds per case (budget {env['budget_s']} s);"
      f" at > 1 thread each sample follows a {env['quiesce_s']} s pause and an untimed call"
      " (thread pools of different libraries must not fight over the CPUs).")
    p("")
    ref = "torch" if env["torch"] else "the numpy backend"
    p("ratio = torch time / lstmkit time (> 1: lstmkit faster). GFLOP/s and % peak: the cython"
      " backend, % of the best GEMM of the same dtype at the same thread count."
      f" err = max |x - ref| / max(1, max |ref|) over outputs, states (and gradients), ref = {ref}."
      " IQR: spread of the rounds, % of the median. other load: CPUs' worth of other processes'"
      " work (and steal) on the machine during the case; 2-thread rows with load well above 0"
      " measure the scheduler more than the code (a case is re-measured up to"
      f" {env['retries']} times when it is above {env['max_load'] or 'the CPUs it leaves idle - 0.25'};"
      " the quietest attempt is kept).")

    by_case = {}
    for r in records:
        by_case.setdefault(r["case"], []).append(r)
    for case, rows in by_case.items():
        p("")
        p(("## " if markdown else "== ") + CASES[case])
        p("")
        have_np = any("numpy" in r["ms"] for r in rows)
        have_t = any("torch" in r["ms"] for r in rows)
        cols = ["config", "thr"]
        if have_t:
            cols += ["torch ms"]
        cols += ["cython ms"] + (["numpy ms"] if have_np else [])
        if have_t:
            cols += ["ratio cython"] + (["ratio numpy"] if have_np else [])
        if SPEC[case][2] == "cell":
            cols += ["us/step cython"] + (["us/step torch"] if have_t else [])
        cols += ["GFLOP/s", "% peak"]
        if have_t:
            cols += ["GFLOP/s torch"]
        cols += ["err cython"] + (["err numpy"] if have_np else [])
        cols += ["IQR cy/torch", "other load"]
        table = []
        for r in rows:
            ms = r["ms"]
            row = [r["config"], str(r["threads"])]
            if have_t:
                row.append(_fmt_ms(ms["torch"]) if "torch" in ms else "-")
            row.append(_fmt_ms(ms["cython"]) if "cython" in ms else "-")
            if have_np:
                row.append(_fmt_ms(ms["numpy"]) if "numpy" in ms else "-")
            if have_t:
                row.append(_fmt_ratio(r["ratio"].get("cython")))
                if have_np:
                    row.append(_fmt_ratio(r["ratio"].get("numpy")))
            if SPEC[case][2] == "cell":
                row.append(f"{r['us_per_step'].get('cython', float('nan')):.1f}")
                if have_t:
                    row.append(f"{r['us_per_step'].get('torch', float('nan')):.1f}")
            row.append(f"{r['gflops'].get('cython', float('nan')):.1f}")
            row.append(f"{r['pct_peak'].get('cython', float('nan')):.0f}%")
            if have_t:
                row.append(f"{r['gflops'].get('torch', float('nan')):.1f}")
            row.append(_fmt_err(r["err"].get("cython")))
            if have_np:
                row.append(_fmt_err(r["err"].get("numpy")))
            iq = r["iqr_pct"]
            row.append(f"{iq.get('cython', float('nan')):.0f}%/"
                       + (f"{iq['torch']:.0f}%" if "torch" in iq else "-"))
            row.append(f"{r['other_load']:.2f}")
            table.append(row)
        if markdown:
            p("| " + " | ".join(cols) + " |")
            p("|" + "---|" * len(cols))
            for row in table:
                p("| " + " | ".join(row) + " |")
        else:
            widths = [max(len(c), *(len(row[i]) for row in table)) for i, c in enumerate(cols)]
            p("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
            for row in table:
                p("  ".join(c.rjust(w) for c, w in zip(row, widths)))

    if any("torch" in r["ms"] for r in records):
        # summary: ratio torch / cython per case x config x threads
        cases = list(by_case)
        p("")
        p(("## " if markdown else "== ") + "Summary: torch time / lstmkit cython time")
        p("")
        cols = ["config"] + [f"{c} {n}T" for n in threads_list for c in cases]
        table = []
        labels = []
        for r in records:
            if r["config"] not in labels:
                labels.append(r["config"])
        for lab in labels:
            row = [lab]
            for n in threads_list:
                for c in cases:
                    hit = [r for r in records if r["config"] == lab and r["case"] == c
                           and r["threads"] == n]
                    row.append(_fmt_ratio(hit[0]["ratio"].get("cython")) if hit else "-")
            table.append(row)
        if markdown:
            p("| " + " | ".join(cols) + " |")
            p("|" + "---|" * len(cols))
            for row in table:
                p("| " + " | ".join(row) + " |")
        else:
            widths = [max(len(c), *(len(row[i]) for row in table)) for i, c in enumerate(cols)]
            p("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
            for row in table:
                p("  ".join(c.rjust(w) for c, w in zip(row, widths)))

    # (the "x torch" rows need torch; the 2T / 1T rows do not)
    tg = targets(records, extras.get("scaling", ()))
    if tg:
        p("")
        p(("## " if markdown else "== ") + "Targets (issue 7, cython backend)")
        p("")
        if markdown:
            p("| measure | case | config | threads | needed | measured | |")
            p("|---|---|---|---|---|---|---|")
        for what, case, label, n, op, need, got in tg:
            verdict = "pass" if met(op, need, got) else "FAIL"
            if markdown:
                p(f"| {what} | {case} | {label} | {n} | {op} {need:g} | {got:.2f} | {verdict} |")
            else:
                p(f"  {what:16} {case:11} {label:24} {n}T {op} {need:<4g} {got:7.2f}  {verdict}")
        fails = sum(1 for *_, op, need, got in tg if not met(op, need, got))
        p("")
        p(f"targets met: {len(tg) - fails} of {len(tg)}")
    h = "## " if markdown else "== "
    if extras.get("memory"):
        cfg = MEMORY_CONFIG
        p("")
        p(h + f"Peak memory: LSTM float32 {cfg.label}, 1 thread, RSS growth of one call (MB)")
        p("")
        mem = extras["memory"]
        impls = list(next(iter(mem.values())))
        p("| mode | " + " | ".join(impls) + " |" if markdown else "  mode    " + "  ".join(
            f"{i:>8}" for i in impls))
        if markdown:
            p("|---|" + "---|" * len(impls))
        for mode, d in mem.items():
            cells = [f"{d[i]:.0f}" if i in d else "-" for i in impls]
            p(f"| {mode} | " + " | ".join(cells) + " |" if markdown else f"  {mode:7} "
              + "  ".join(f"{c:>8}" for c in cells))
        p("")
        p(f"(the output alone is {cfg.T * cfg.B * cfg.H * 4 / 2**20:.0f} MB)")
    if extras.get("pythreads"):
        p("")
        p(h + "Two Python threads, each running inference on its own LSTM (1 BLAS thread each)")
        p("")
        p("| config | impl | both calls in one thread ms | the two in two threads ms | "
          "throughput x | other load |" if markdown else
          "  config                  impl       1 thread ms  2 threads ms  throughput x  load")
        if markdown:
            p("|---|---|---|---|---|---|")
        for r in extras["pythreads"]:
            cells = [r["config"], r["impl"], _fmt_ms(r["one_ms"] / 1e3), _fmt_ms(r["two_ms"] / 1e3),
                     f"{r['scaling']:.2f}", f"{r['other_load']:.2f}"]
            p("| " + " | ".join(cells) + " |" if markdown else "  " + "  ".join(cells))
    if extras.get("scaling"):
        p("")
        p(h + "lstmkit (cython) at 2 threads against itself at 1, interleaved, every sample after"
          " the same pause")
        p("")
        p(f"2T / 1T time: the median over rounds of each round's 2-thread sample / 1-thread"
          f" sample; above {SCALING_SLACK:g} counts as slower at 2 threads.")
        p("")
        p("| config | case | 1T ms | 2T ms | 2T / 1T time | IQR 1T/2T | other load |"
          if markdown else "  config                  case         1T ms    2T ms  2T/1T  IQR  load")
        if markdown:
            p("|---|---|---|---|---|---|---|")
        for r in extras["scaling"]:
            cells = [r["config"], r["case"], _fmt_ms(r["one_ms"] / 1e3), _fmt_ms(r["two_ms"] / 1e3),
                     f"{r['time_ratio']:.2f}",
                     "/".join(f"{q:.0f}%" for q in r["iqr_pct"]), f"{r['other_load']:.2f}"]
            p("| " + " | ".join(cells) + " |" if markdown else "  " + "  ".join(cells))
    bad = [(r["case"], r["config"], r["threads"], k) for r in records
           for k, e in r["err"].items() if not e["ok"]]
    p("")
    p("numerics: " + ("all within tolerance" if not bad else f"OUT OF TOLERANCE: {bad}"))
    return "\n".join(lines)


# ----------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="only the configurations the floors name (T100 B1, T100 B16, T1000 B1)"
                         " and a shorter time budget")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--cases", default=",".join(CASES),
                    help=f"comma-separated, from {', '.join(CASES)} (default all)")
    ap.add_argument("--configs", default=None,
                    help="comma-separated 1-based indices into the grid (default all)")
    ap.add_argument("--backends", default="cython,numpy",
                    help="lstmkit backends to time (default cython,numpy)")
    ap.add_argument("--no-torch", action="store_true", help="do not import torch")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds of timing per case and thread count (default 1.5; quick 0.8)")
    ap.add_argument("--quiesce", type=float, default=QUIESCE_S,
                    help="seconds of pause (then an untimed call) before each sample at more"
                         f" than one thread, so thread pools do not fight (default {QUIESCE_S})")
    ap.add_argument("--max-load", type=float, default=None,
                    help="re-measure a case when other processes used more CPUs than this"
                         " meanwhile (default: the CPUs the case leaves idle minus 0.25,"
                         " at least 0.25)")
    ap.add_argument("--retries", type=int, default=2,
                    help="re-measurements per case at most; the quietest attempt is kept"
                         " (default 2)")
    ap.add_argument("--markdown", action="store_true", help="print markdown tables")
    ap.add_argument("--json", metavar="FILE", help="also write all results as JSON")
    ap.add_argument("--no-memory", action="store_true",
                    help="skip the peak-memory measurement (fresh processes)")
    ap.add_argument("--no-pythreads", action="store_true",
                    help="skip the two-Python-threads measurement")
    ap.add_argument("--no-scaling", action="store_true",
                    help="skip lstmkit at 2 threads against itself at 1 (run when --threads"
                         " has 1 and 2)")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        impl, mode = args.memory_child.split(":")
        memory_child(impl, mode)
        return 0

    threads_list = [int(t) for t in args.threads.split(",") if t.strip()]
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in cases:
        if c not in CASES:
            ap.error(f"unknown case {c!r}; choose from {', '.join(CASES)}")
    if args.configs:
        idx = [int(i) - 1 for i in args.configs.split(",")]
    else:
        idx = QUICK if args.quick else list(range(len(GRID)))
    configs = [GRID[i] for i in idx]
    cell_grid = CELL_GRID[:2] if args.quick else CELL_GRID
    pairs = [(cfg, case) for cfg in configs for case in cases if SPEC[case][2] != "cell"]
    pairs += [(cfg, case) for cfg in cell_grid for case in cases if SPEC[case][2] == "cell"]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    avail = available_backends()
    for b in backends:
        if b not in avail:
            print(f"warning: backend {b!r} not available here ({avail}); skipped", file=sys.stderr)
    backends = [b for b in backends if b in avail]
    budget = args.budget if args.budget is not None else (0.8 if args.quick else 1.5)

    torch = None
    if not args.no_torch:
        try:
            import torch  # noqa: F811
        except ImportError:
            print("torch is not installed: lstmkit-only numbers", file=sys.stderr)
            torch = None

    env = environment(torch)
    env["quiesce_s"] = args.quiesce
    env["budget_s"] = budget
    env["retries"] = args.retries
    env["max_load"] = args.max_load
    records = []
    peaks = {}
    t_start = time.perf_counter()
    for n in threads_list:
        with threadpool_limits(limits=n):
            if torch is not None:
                torch.set_num_threads(n)
            peaks[n] = gemm_peaks(n, torch)
            for cfg, case in pairs:
                built = build(case, cfg, backends, torch)
                if built is None:
                    continue
                impls, dtype = built
                errs = check(impls, case, dtype)
                res, load, attempt = measure_quietest(impls, args, n, budget,
                                                      args.quiesce if n > 1 else 0.0)
                kind, _, mode = SPEC[case]
                flop = (cfg.flops(GATES[kind]) * useful_fraction(case, cfg)
                        * (3 if mode == "train" else 1))
                peak = max(peaks[n][dtype.name].values())
                rec = {
                    "case": case, "config": cfg.label, "threads": n, "dtype": dtype.name,
                    "mflop": flop / 1e6,
                    "ms": {k: v["median_s"] for k, v in res.items()},
                    "iqr_pct": {k: v["iqr_pct"] for k, v in res.items()},
                    "rounds": {k: v["rounds"] for k, v in res.items()},
                    "gflops": {k: flop / v["median_s"] / 1e9 for k, v in res.items()},
                    "pct_peak": {k: 100 * flop / v["median_s"] / 1e9 / peak
                                 for k, v in res.items()},
                    "us_per_step": {k: 1e6 * v["median_s"] / cfg.T for k, v in res.items()},
                    "ratio": ({k: res["torch"]["median_s"] / v["median_s"]
                               for k, v in res.items() if k != "torch"}
                              if "torch" in res else {}),
                    "err": errs,
                    "other_load": load,
                    "attempts": attempt + 1,
                }
                records.append(rec)
                rt = rec["ratio"].get("cython")
                print(f"[{time.perf_counter() - t_start:6.1f}s] {n}T {case:8} {cfg.label:24}"
                      + "".join(f" {k}={_fmt_ms(v)}ms" for k, v in rec["ms"].items())
                      + (f" ratio={rt:.2f}" if rt is not None else "")
                      + f" other-load={load:.2f}",
                      file=sys.stderr, flush=True)
    extras = {}
    if not args.no_memory:
        extras["memory"] = peak_memory([b for b in backends if b == "cython"], torch)
    if not args.no_scaling and {1, 2} <= set(threads_list) and "cython" in backends:
        extras["scaling"] = scaling(pairs, args, budget)
    if not args.no_pythreads:
        extras["pythreads"] = python_threads([b for b in backends if b == "cython"], torch,
                                             budget)
    # threadpoolctl's view while limited differs; report the library list afterwards
    text = render(env, peaks, records, args.markdown, threads_list, extras)
    print(text)
    print(f"\n(total {time.perf_counter() - t_start:.0f} s)")
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump({"environment": env, "gemm_peak_gflops": peaks, "records": records,
                       "extras": extras, "argv": sys.argv[1:]}, f, indent=1, default=str)
        os.replace(args.json + ".tmp", args.json)
    bad = [r for r in records for e in r["err"].values() if not e["ok"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
