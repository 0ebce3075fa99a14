#!/usr/bin/env python
"""GPU check of the lstmkit ``cupy`` backend: parity with ``cython`` and timings.

Run on a machine with an NVIDIA GPU, CuPy (``pip install cupy-cuda12x``),
lstmkit with its compiled core, and this plugin (installed, or found next to
this file)::

    python plugins/lstmkit-cupy/gpu_check.py            # about 5 minutes
    python plugins/lstmkit-cupy/gpu_check.py --quick    # about 1 minute

1. Plumbing: the backend is registered and available, CuPy arrays in give
   CuPy arrays out, NumPy in gives NumPy out.
2. Parity: random layer-direction configurations (every built-in cell, LSTM
   with projection, a plugin-style cell that takes the reference fallback;
   packed or dense, forward or reverse, with or without bias; float32 and
   float64) run on ``cupy`` (fused CUDA kernels) and on ``cupy`` with
   ``fused=False`` (the same code with array ops), forward (training and
   inference) and backward, against the ``cython`` backend; then whole
   modules (multi-layer, bidirectional, packed, ``batch_first``, dropout,
   cells).  Pass: ``max|gpu - cpu| <= rtol * max(1, max|cpu|)`` for every
   output, state and gradient, ``rtol`` 1e-4 (float32) and 1e-10 (float64).
3. Timing: one-layer float32 modules over a grid of sizes, ``cython`` on the
   CPU against ``cupy`` (median wall time; device arrays in and out, and
   NumPy in and out, which includes the copies).

Exit status: 0 all parity checks passed; 1 some failed (listed); 2 the check
could not run (no CuPy, no GPU, no compiled core).  ``--xp numpy`` runs the
whole script on the CPU with ``CupyBackend(xp=numpy)`` (a dry run of the
script itself, used by the plugin's tests); its timings mean nothing.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}

# (T, B, I, H) of the timing grid; --quick keeps the first four.
GRID = [
    (50, 1, 32, 32),
    (100, 16, 64, 64),
    (100, 32, 128, 256),
    (50, 64, 256, 512),
    (50, 128, 512, 1024),
    (100, 256, 512, 1024),
]


def _import_plugin():
    try:
        import lstmkit_cupy  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(HERE))  # run from a checkout: the plugin sits beside this file
    import lstmkit_cupy

    return lstmkit_cupy


# -- helpers ------------------------------------------------------------------------------
class Device:
    """The array module under test and how to wait for it."""

    def __init__(self, xp_name: str):
        if xp_name == "cupy":
            import cupy

            self.xp = cupy
            self.sync = cupy.cuda.Device().synchronize
            self.dry_run = False
        else:
            self.xp = np
            self.sync = lambda: None
            self.dry_run = True

    def host(self, a):
        return a if isinstance(a, np.ndarray) else self.xp.asnumpy(a)


def rel_error(actual, expected) -> float:
    """``max|actual - expected| / max(1, max|expected|)`` (inf if shapes differ or not finite)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        return float("inf")
    if actual.size == 0:
        return 0.0
    if not np.all(np.isfinite(actual)):
        return float("inf")
    return float(np.max(np.abs(actual - expected)) / max(1.0, float(np.max(np.abs(expected)))))


class Tally:
    """Parity results: worst error per (backend variant, dtype), and the failures."""

    def __init__(self):
        self.worst: dict[tuple[str, str], float] = {}
        self.failures: list[str] = []
        self.count = 0

    def compare(self, variant: str, label: str, quantity: str, actual, expected, dtype) -> None:
        dtype = np.dtype(dtype)
        err = rel_error(actual, expected)
        key = (variant, dtype.name)
        self.worst[key] = max(self.worst.get(key, 0.0), err)
        self.count += 1
        if not err <= RTOL[dtype]:
            self.failures.append(f"{variant} {label}: {quantity} error {err:.2e} > {RTOL[dtype]:.0e}")

    def error(self, variant: str, label: str, exc: BaseException) -> None:
        self.failures.append(f"{variant} {label}: raised {type(exc).__name__}: {exc}")


def fallback_cell():
    """A plugin-style cell: an LSTM subclass, so no fused kernel knows it (reference path)."""
    from lstmkit.cells import LSTMCellType

    class FallbackLSTM(LSTMCellType):
        name = "lstm_fallback"

    return FallbackLSTM()


# -- 1. plumbing -------------------------------------------------------------------------
def plumbing(dev: Device, plugin, tally: Tally) -> None:
    import lstmkit
    from lstmkit import registry

    xp = dev.xp
    if not dev.dry_run:
        ok, reason = plugin.is_available()
        if not ok:
            tally.failures.append(f"plumbing: is_available() is False: {reason}")
        reg = registry.get_registry()
        if "cupy" not in reg.specs["backend"]:  # not installed: register it in this process
            from lstmkit_cupy import plugin as hooks

            reg.register(hooks, name="lstmkit-cupy (gpu_check)")
        backend = registry.get_backend("cupy")
        if type(backend).__name__ != "CupyBackend" or not backend.fused:
            tally.failures.append(f"plumbing: get_backend('cupy') gave {backend!r}")
    backend = plugin.CupyBackend(xp=xp)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 3, 5)).astype(np.float32)
    m = lstmkit.LSTM(5, 6, num_layers=2, bidirectional=True, backend=backend, seed=0)
    out_host, (h_host, _) = m(x)
    if type(out_host) is not np.ndarray or type(h_host) is not np.ndarray:
        tally.failures.append(f"plumbing: NumPy in gave {type(out_host).__name__} out")
    out_dev, (h_dev, _) = m(xp.asarray(x))
    if not isinstance(out_dev, xp.ndarray) or not isinstance(h_dev, xp.ndarray):
        tally.failures.append(f"plumbing: device arrays in gave {type(out_dev).__name__} out")
    tally.compare("cupy", "plumbing", "device-in output", dev.host(out_dev), out_host, np.float32)


# -- 2. parity -----------------------------------------------------------------------------
def random_layer_case(rng):
    from lstmkit.registry import get_cell

    choice = rng.integers(6)
    name, proj = [("lstm", 0), ("lstm", 1), ("gru", 0), ("rnn_tanh", 0), ("rnn_relu", 0), ("fallback", 0)][choice]
    cell = fallback_cell() if name == "fallback" else get_cell(name)
    dtype = np.dtype(np.float32 if rng.random() < 0.5 else np.float64)
    steps, batch = int(rng.integers(1, 41)), int(rng.integers(1, 17))
    inp, hid = int(rng.integers(1, 65)), int(rng.integers(2, 97))
    if proj:
        proj = int(rng.integers(1, hid))
    bias = bool(rng.random() < 0.8)
    if rng.random() < 0.5:  # packed: random lengths, sorted longest first
        lengths = np.sort(rng.integers(1, steps + 1, size=batch))[::-1]
        lengths[0] = steps
        batch_sizes = np.array([(lengths > t).sum() for t in range(steps)], dtype=np.int64)
        layout = "packed"
    else:
        batch_sizes = np.full(steps, batch, dtype=np.int64)
        layout = "dense"
    reverse = bool(rng.random() < 0.5)
    scale = 1.0 / np.sqrt(hid)
    params = {k: rng.uniform(-scale, scale, size=s).astype(dtype)
              for k, s in cell.parameter_shapes(inp, hid, proj, bias)}
    n = int(batch_sizes.sum())
    x = rng.standard_normal((n, inp)).astype(dtype)
    state0 = tuple((0.5 * rng.standard_normal((batch, w))).astype(dtype) for w in cell.state_sizes(hid, proj))
    label = (f"{cell.name}{f'(proj={proj})' if proj else ''} {dtype.name} T={steps} B={batch} I={inp} H={hid} "
             f"{layout}{' reverse' if reverse else ''}{'' if bias else ' bias=False'}")
    return cell, params, x, batch_sizes, reverse, state0, dtype, label


def layer_parity(dev: Device, variants, reference, tally: Tally, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(count):
        cell, params, x, bs, reverse, state0, dtype, label = random_layer_case(rng)
        y_r, st_r, cache_r = reference.layer_forward(cell, params, x, bs, reverse, state0, True)
        d_y = rng.standard_normal(y_r.shape).astype(dtype)
        d_st = tuple(rng.standard_normal(s.shape).astype(dtype) for s in st_r)
        dx_r, ds0_r, dp_r = reference.layer_backward(cell, params, cache_r, d_y, d_st)
        y_ri, st_ri, _ = reference.layer_forward(cell, params, x, bs, reverse, state0, False)
        for variant, backend in variants:
            # three calls of each: the first runs the steps directly, the second captures a CUDA
            # graph of them, the third replays it (CupyBackend(graphs=True)); each is compared
            for call in range(3 if getattr(backend, "graphs", None) is not None else 1):
                _compare_layer(dev, backend, variant, tally,
                               (cell, params, x, bs, reverse, state0, dtype, label + f" (call {call + 1})"),
                               (y_r, st_r, dx_r, ds0_r, dp_r, y_ri, st_ri, d_y, d_st))


def _compare_layer(dev: Device, backend, variant, tally: Tally, case, want) -> None:
    """One layer-direction, training forward, backward and inference forward, against ``want``."""
    xp = dev.xp
    cell, params, x, bs, reverse, state0, dtype, label = case
    y_r, st_r, dx_r, ds0_r, dp_r, y_ri, st_ri, d_y, d_st = want
    try:
        p_dev = {k: xp.asarray(v) for k, v in params.items()}
        args = (xp.asarray(x), bs, reverse, tuple(xp.asarray(s) for s in state0))
        y, st, cache = backend.layer_forward(cell, p_dev, *args, True)
        dx, ds0, dp = backend.layer_backward(cell, p_dev, cache, xp.asarray(d_y),
                                             tuple(xp.asarray(d) for d in d_st))
        y_i, st_i, _ = backend.layer_forward(cell, p_dev, *args, False)
        dev.sync()
    except Exception as exc:  # report and go on
        tally.error(variant, label, exc)
        return
    tally.compare(variant, label, "y", dev.host(y), y_r, dtype)
    for k, (a, b) in enumerate(zip(st, st_r)):
        tally.compare(variant, label, f"state_n[{k}]", dev.host(a), b, dtype)
    tally.compare(variant, label, "y (inference)", dev.host(y_i), y_ri, dtype)
    for k, (a, b) in enumerate(zip(st_i, st_ri)):
        tally.compare(variant, label, f"state_n[{k}] (inference)", dev.host(a), b, dtype)
    tally.compare(variant, label, "d_x", dev.host(dx), dx_r, dtype)
    for k, (a, b) in enumerate(zip(ds0, ds0_r)):
        tally.compare(variant, label, f"d_state0[{k}]", dev.host(a), b, dtype)
    if list(dp) != list(dp_r):
        tally.failures.append(f"{variant} {label}: gradient keys {list(dp)} != {list(dp_r)}")
    for k in dp_r:
        tally.compare(variant, label, f"d_{k}", dev.host(dp[k]), dp_r[k], dtype)


MODULE_CASES = [
    ("LSTM", dict(num_layers=2, bidirectional=True), "dense"),
    ("LSTM", dict(num_layers=2, bidirectional=True, proj_size=3, batch_first=True), "dense"),
    ("LSTM", dict(num_layers=3, dropout=0.3), "dense"),
    ("LSTM", dict(bidirectional=True), "packed"),
    ("GRU", dict(num_layers=2, bidirectional=True, bias=False), "dense"),
    ("GRU", dict(num_layers=2, bidirectional=True), "packed"),
    ("RNN", dict(num_layers=2, nonlinearity="relu", bidirectional=True), "packed"),
    ("RNN", dict(num_layers=2, batch_first=True), "unbatched"),
]


def module_parity(dev: Device, backend, tally: Tally, seed: int) -> None:
    import lstmkit
    from lstmkit.utils.rnn import pack_padded_sequence

    xp = dev.xp
    for dtype in (np.float32, np.float64):
        for case, (cls_name, cfg, kind) in enumerate(MODULE_CASES):
            label = f"module {cls_name}({cfg}) {kind} {np.dtype(dtype).name}"
            rng = np.random.default_rng(seed + case)
            steps, batch, inp, hid = 9, 4, 7, 8
            cls = getattr(lstmkit, cls_name)
            ref = cls(inp, hid, backend="cython", dtype=dtype, seed=1, **cfg)
            gpu = cls(inp, hid, backend=backend, dtype=dtype, seed=1, **cfg)
            x = rng.standard_normal((steps, batch, inp)).astype(dtype)
            if cfg.get("batch_first"):
                x = np.ascontiguousarray(x.transpose(1, 0, 2))
            if kind == "packed":
                lengths = [9, 3, 6, 1]
                run = pack_padded_sequence(x, lengths, batch_first=bool(cfg.get("batch_first")),
                                           enforce_sorted=False)
            elif kind == "unbatched":
                run = x[0] if cfg.get("batch_first") else x[:, 0]
            else:
                run = x
            try:
                outs = []
                for module in (ref, gpu):
                    module.generator = np.random.default_rng(7)  # the same dropout masks
                    out, state, backward = module.forward_train(run)
                    data = out.data if hasattr(out, "batch_sizes") else out
                    w = np.random.default_rng(8).standard_normal(data.shape).astype(dtype)
                    grads = backward(w)
                    outs.append((data, state, grads))
                dev.sync()
            except Exception as exc:
                tally.error("cupy", label, exc)
                continue
            (o_r, s_r, g_r), (o, s, g) = outs
            tally.compare("cupy", label, "output", o, o_r, dtype)
            for k, (a, b) in enumerate(zip(_flat(s), _flat(s_r))):
                tally.compare("cupy", label, f"state[{k}]", a, b, dtype)
            tally.compare("cupy", label, "d_input", g[0], g_r[0], dtype)
            for k, (a, b) in enumerate(zip(_flat(g[1]), _flat(g_r[1]))):
                tally.compare("cupy", label, f"d_hx[{k}]", a, b, dtype)
            for name in g_r[2]:
                tally.compare("cupy", label, f"d_{name}", g[2][name], g_r[2][name], dtype)
            if kind == "dense" and not dev.dry_run:  # CuPy arrays in: CuPy arrays out, same numbers
                gpu.eval()
                ref.eval()
                out_d, _ = gpu(xp.asarray(run))
                out_h, _ = ref(run)
                if not isinstance(out_d, xp.ndarray):
                    tally.failures.append(f"cupy {label}: device input gave {type(out_d).__name__} output")
                tally.compare("cupy", label, "output (device input)", dev.host(out_d), out_h, dtype)
        for cls_name in ("LSTMCell", "GRUCell", "RNNCell"):
            label = f"{cls_name} {np.dtype(dtype).name}"
            rng = np.random.default_rng(seed)
            cls = getattr(lstmkit, cls_name)
            ref, gpu = cls(5, 6, backend="cython", dtype=dtype, seed=2), cls(5, 6, backend=backend, dtype=dtype, seed=2)
            x = rng.standard_normal((3, 5)).astype(dtype)
            try:
                a, b = ref(x), gpu(x)
                res_r, bw_r = ref.forward_train(x)
                res, bw = gpu.forward_train(x)
                g_r, g = bw_r(res_r), bw(res)
                dev.sync()
            except Exception as exc:
                tally.error("cupy", label, exc)
                continue
            for k, (u, v) in enumerate(zip(_flat(b), _flat(a))):
                tally.compare("cupy", label, f"step state[{k}]", u, v, dtype)
            tally.compare("cupy", label, "d_input", g[0], g_r[0], dtype)
            for name in g_r[2]:
                tally.compare("cupy", label, f"d_{name}", g[2][name], g_r[2][name], dtype)


def _flat(state):
    return list(state) if isinstance(state, (tuple, list)) else [state]


# -- 3. timing -----------------------------------------------------------------------------
def _median_time(fn, sync, min_total=0.3, max_runs=7) -> float:
    fn()
    sync()  # warm-up: compiles kernels, fills the memory pool
    times = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < 3 or time.perf_counter() - start < min_total):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
        if times[-1] > 2.0:  # a slow size: one run is enough
            break
    return statistics.median(times)


def timing(dev: Device, backend, grid, budget: float) -> list[tuple]:
    import lstmkit

    xp = dev.xp
    rows = []
    start = time.perf_counter()
    for cell in ("lstm", "gru"):
        for steps, batch, inp, hid in grid:
            if time.perf_counter() - start > budget:
                rows.append((cell, steps, batch, inp, hid, None))
                continue
            rng = np.random.default_rng(0)
            x = rng.standard_normal((steps, batch, inp)).astype(np.float32)
            cpu = lstmkit.Recurrent(cell, inp, hid, backend="cython", seed=0)
            gpu = lstmkit.Recurrent(cell, inp, hid, backend=backend, seed=0)
            x_dev = xp.asarray(x)
            d_out = rng.standard_normal((steps, batch, hid)).astype(np.float32)
            d_out_dev = xp.asarray(d_out)

            def train(module, inp_, d_):
                _, _, backward = module.forward_train(inp_)
                backward(d_)

            t = dict(
                cpu_fwd=_median_time(lambda: cpu(x), lambda: None),
                gpu_fwd_dev=_median_time(lambda: gpu(x_dev), dev.sync),
                gpu_fwd_host=_median_time(lambda: gpu(x), dev.sync),
                cpu_train=_median_time(lambda: train(cpu, x, d_out), lambda: None),
                gpu_train_dev=_median_time(lambda: train(gpu, x_dev, d_out_dev), dev.sync),
            )
            rows.append((cell, steps, batch, inp, hid, t))
    return rows


def print_timing(rows, out) -> None:
    ms = lambda s: f"{1e3 * s:9.2f}"  # noqa: E731
    out(f"{'cell':5} {'T':>4} {'B':>4} {'I':>5} {'H':>5} | {'cython fwd':>10} {'cupy fwd':>9} "
        f"{'(np io)':>9} {'speedup':>7} | {'cython f+b':>10} {'cupy f+b':>9} {'speedup':>7}   [ms]")
    for cell, steps, batch, inp, hid, t in rows:
        head = f"{cell:5} {steps:4d} {batch:4d} {inp:5d} {hid:5d} |"
        if t is None:
            out(head + " skipped (time budget)")
            continue
        out(f"{head} {ms(t['cpu_fwd']):>10} {ms(t['gpu_fwd_dev'])} {ms(t['gpu_fwd_host'])} "
            f"{t['cpu_fwd'] / t['gpu_fwd_dev']:6.1f}x | {ms(t['cpu_train']):>10} {ms(t['gpu_train_dev'])} "
            f"{t['cpu_train'] / t['gpu_train_dev']:6.1f}x")


# -- 4. against torch's cuDNN LSTM ---------------------------------------------------------
# (T, B, I, H): batch >= 64, where the plugin's target is >= 0.5x cuDNN.
TORCH_GRID = [
    (100, 64, 256, 256),
    (100, 64, 512, 512),
    (100, 128, 512, 512),
    (100, 256, 1024, 1024),
    (200, 64, 128, 128),
]


def _enqueue_time(fn, sync, runs=5) -> float:
    """Median host time to *issue* ``fn`` (the device may still be busy): the Python floor."""
    times = []
    for _ in range(runs):
        sync()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        sync()
    return statistics.median(times)


def against_torch(dev: Device, backend, grid, out, layer_variants=()) -> list[dict]:
    """One-layer float32 LSTM, inference and forward + backward, lstmkit ``cupy`` against cuDNN.

    torch is timed twice: at its default (cuDNN may use TF32 tensor cores for float32,
    ``torch.backends.cudnn.allow_tf32``) and with ``allow_tf32=False`` (plain float32, the
    arithmetic CuPy's cuBLAS GEMMs do).  lstmkit is timed as a module on device arrays (each
    call uploads the module's NumPy weights) and as one layer with device weights (no upload);
    ``layer_variants`` (``[(label, backend)]``) are timed as one layer too, for comparison.
    """
    import torch

    import lstmkit
    from lstmkit.registry import get_cell

    xp = dev.xp
    cuda = torch.device("cuda")
    sync = torch.cuda.synchronize
    cell = get_cell("lstm")
    rows = []
    default_tf32 = torch.backends.cudnn.allow_tf32
    for steps, batch, inp, hid in grid:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((steps, batch, inp)).astype(np.float32)
        d_out = rng.standard_normal((steps, batch, hid)).astype(np.float32)
        ours = lstmkit.LSTM(inp, hid, backend=backend, seed=0)
        theirs = torch.nn.LSTM(inp, hid).to(cuda)
        with torch.no_grad():  # the same weights
            for name, param in theirs.named_parameters():
                param.copy_(torch.from_numpy(np.asarray(getattr(ours, name))))
        x_t, d_t = torch.from_numpy(x).to(cuda), torch.from_numpy(d_out).to(cuda)
        x_d, d_d = xp.asarray(x), xp.asarray(d_out)
        p_dev = {k: xp.asarray(getattr(ours, f"{k}_l0")) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        flat_x, flat_d = x_d.reshape(steps * batch, inp), d_d.reshape(steps * batch, hid)
        sizes = np.full(steps, batch, np.int64)
        zeros = (xp.zeros((batch, hid), np.float32), xp.zeros((batch, hid), np.float32))

        def torch_inference():
            with torch.no_grad():
                theirs(x_t)

        def torch_train():
            theirs.zero_grad(set_to_none=True)
            o, _ = theirs(x_t)
            o.backward(d_t)

        def module_inference():
            ours(x_d)

        def module_train():
            _, _, backward = ours.forward_train(x_d)
            backward(d_d)

        def layer_inference(backend=backend):
            backend.layer_forward(cell, p_dev, flat_x, sizes, False, zeros, False)

        def layer_train(backend=backend):
            _, _, cache = backend.layer_forward(cell, p_dev, flat_x, sizes, False, zeros, True)
            backend.layer_backward(cell, p_dev, cache, flat_d, zeros)

        ours.eval()
        row = dict(T=steps, B=batch, I=inp, H=hid)
        with torch.no_grad():
            ref, _ = theirs(x_t)
        torch.backends.cudnn.allow_tf32 = False
        with torch.no_grad():
            ref_strict, _ = theirs(x_t)
        mine, _ = ours(x_d)
        mine = dev.host(mine)
        row["err_vs_tf32"] = float(np.max(np.abs(mine - ref.cpu().numpy())))
        row["err_vs_fp32"] = float(np.max(np.abs(mine - ref_strict.cpu().numpy())))
        for tf32 in (True, False):
            torch.backends.cudnn.allow_tf32 = tf32
            tag = "tf32" if tf32 else "fp32"
            row[f"torch_{tag}_inf"] = _median_time(torch_inference, sync, max_runs=11)
            row[f"torch_{tag}_train"] = _median_time(torch_train, sync, max_runs=11)
        torch.backends.cudnn.allow_tf32 = default_tf32
        row["module_inf"] = _median_time(module_inference, dev.sync, max_runs=11)
        row["module_train"] = _median_time(module_train, dev.sync, max_runs=11)
        row["layer_inf"] = _median_time(layer_inference, dev.sync, max_runs=11)
        row["layer_train"] = _median_time(layer_train, dev.sync, max_runs=11)
        row["layer_inf_issue"] = _enqueue_time(layer_inference, dev.sync)
        row["layer_train_issue"] = _enqueue_time(layer_train, dev.sync)
        want = _layer_results(backend, cell, p_dev, flat_x, sizes, zeros, flat_d, dev)
        for label, other in layer_variants:
            row[f"{label}_inf"] = _median_time(lambda: layer_inference(other), dev.sync, max_runs=11)
            row[f"{label}_train"] = _median_time(lambda: layer_train(other), dev.sync, max_runs=11)
            got = _layer_results(other, cell, p_dev, flat_x, sizes, zeros, flat_d, dev)
            row[f"{label}_err"] = max(rel_error(got[k], want[k]) for k in want)
        rows.append(row)
        print_torch_row(row, out, [label for label, _ in layer_variants])
    return rows


def _layer_results(backend, cell, params, x, sizes, state0, d_y, dev) -> dict:
    """Output, input gradient and weight gradients of one layer on the host (to compare variants)."""
    y, _, cache = backend.layer_forward(cell, params, x, sizes, False, state0, True)
    d_x, _, grads = backend.layer_backward(cell, params, cache, d_y, state0)
    return {"y": dev.host(y), "d_x": dev.host(d_x), **{k: dev.host(v) for k, v in grads.items()}}


def print_torch_row(r, out, variants=()) -> None:
    ms = lambda s: f"{1e3 * s:8.2f}"  # noqa: E731
    head = f"T{r['T']} B{r['B']} I{r['I']} H{r['H']}"
    for mode, name in (("inf", "inference"), ("train", "fwd+bwd")):
        out(f"{head:24} {name:9} torch tf32 {ms(r[f'torch_tf32_{mode}'])}  fp32 {ms(r[f'torch_fp32_{mode}'])} | "
            f"cupy module {ms(r[f'module_{mode}'])}  layer {ms(r[f'layer_{mode}'])} "
            f"(issue {ms(r[f'layer_{mode}_issue'])}) | torch/cupy-module: tf32 "
            f"{r[f'torch_tf32_{mode}'] / r[f'module_{mode}']:.2f}x fp32 {r[f'torch_fp32_{mode}'] / r[f'module_{mode}']:.2f}x"
            f" [ms]")
    for label in variants:
        out(f"{'':24} layer, {label}: inference {ms(r[f'{label}_inf'])}, fwd+bwd {ms(r[f'{label}_train'])} [ms]"
            f" (output and gradients within {r[f'{label}_err']:.1e} of the default's)")
    out(f"{'':24} max|out - torch|: {r['err_vs_tf32']:.1e} (tf32), {r['err_vs_fp32']:.1e} (fp32)")


# -- main ------------------------------------------------------------------------------------
def environment(dev: Device, out) -> None:
    import lstmkit

    out(f"python {platform.python_version()}, numpy {np.__version__}, lstmkit {lstmkit.__version__}, "
        f"platform {platform.platform()}")
    if dev.dry_run:
        out("DRY RUN on the CPU (--xp numpy): CupyBackend(xp=numpy); timings are not GPU timings")
        return
    import cupy

    runtime = cupy.cuda.runtime
    props = runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    out(f"cupy {cupy.__version__}, CUDA runtime {runtime.runtimeGetVersion()}, driver {runtime.driverGetVersion()}, "
        f"device {name} ({props['totalGlobalMem'] / 2**30:.0f} GiB)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--xp", choices=("cupy", "numpy"), default="cupy",
                        help="array module of the backend under test (numpy: a CPU dry run)")
    parser.add_argument("--quick", action="store_true", help="fewer configurations, smaller timing grid")
    parser.add_argument("--configs", type=int, default=None, help="random layer configurations (default 120, quick 24)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--no-parity", action="store_true", help="skip sections 1 and 2")
    parser.add_argument("--torch", choices=("auto", "yes", "no"), default="auto",
                        help="section 4, against torch's cuDNN LSTM (auto: when torch sees a CUDA GPU)")
    parser.add_argument("--json", type=Path, default=None, help="also write section 4's rows here")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the timing grid (default 180, quick 30); sizes past it are skipped")
    args = parser.parse_args(argv)
    out = lambda line="": print(line, flush=True)  # noqa: E731
    t_start = time.perf_counter()

    try:
        plugin = _import_plugin()
    except Exception as exc:
        out(f"cannot run: lstmkit or lstmkit_cupy does not import ({type(exc).__name__}: {exc})")
        return 2
    reference = None
    if not (args.no_parity and args.no_timing):  # sections 2 and 3 compare with the compiled core
        try:
            from lstmkit.backends.cython import CythonBackend

            reference = CythonBackend()
        except Exception as exc:
            out(f"cannot run: the cython backend is not available ({exc})")
            return 2
    if args.xp == "cupy":
        ok, reason = plugin.is_available()
        if not ok:
            out(f"cannot run: the cupy backend is unavailable: {reason}")
            return 2
    try:
        dev = Device(args.xp)
        environment(dev, out)
        variants = [("cupy", plugin.CupyBackend(xp=dev.xp)),
                    ("cupy graphs=False", plugin.CupyBackend(xp=dev.xp, graphs=False)),
                    ("cupy fused=False", plugin.CupyBackend(xp=dev.xp, fused=False))]
        out(f"backend under test: {variants[0][1]!r}; reference: cython")
    except Exception:
        out("cannot run:\n" + traceback.format_exc())
        return 2

    tally = Tally()
    if not args.no_parity:
        out("\n== plumbing")
        try:
            plumbing(dev, plugin, tally)
        except Exception as exc:
            tally.error("cupy", "plumbing", exc)
        count = args.configs if args.configs is not None else (24 if args.quick else 120)
        out(f"== parity: {count} random layer configurations x {len(variants)} variants, then modules and cells")
        t0 = time.perf_counter()
        layer_parity(dev, variants, reference, tally, count, args.seed)
        module_parity(dev, variants[0][1], tally, args.seed)
        out(f"{tally.count} comparisons in {time.perf_counter() - t0:.1f} s; worst relative error "
            "(max|gpu - cpu| / max(1, max|cpu|)):")
        for (variant, dtype), err in sorted(tally.worst.items()):
            out(f"  {variant:18} {dtype:8} {err:.2e}  (tolerance {RTOL[np.dtype(dtype)]:.0e})")
        graphs = getattr(variants[0][1], "graphs", None)
        if graphs is not None:
            out(f"  ({variants[0][0]}: {graphs.launches + variants[0][1].backward_graphs.launches} launches of "
                "captured CUDA graphs among them; "
                f"capture {'off: ' + graphs.disabled if graphs.disabled else 'on'})")

    if not args.no_timing:
        grid = GRID[:4] if args.quick else GRID
        if dev.dry_run:
            grid = [(5, 2, 4, 6)]
        budget = args.budget if args.budget is not None else (30.0 if args.quick else 180.0)
        out(f"\n== timing: one-layer float32 modules, median wall time (budget {budget:.0f} s)")
        try:
            print_timing(timing(dev, variants[0][1], grid, budget), out)
        except Exception:
            out("timing failed:\n" + traceback.format_exc())
        out("cython: CPU, this process's BLAS threads; cupy fwd: CuPy arrays in and out; (np io): NumPy "
            "in and out (copies included); f+b: forward_train + backward, device arrays")

    if args.torch != "no" and not dev.dry_run:
        try:
            import torch

            has_gpu = torch.cuda.is_available()
        except ImportError:
            has_gpu = False
        if not has_gpu and args.torch == "yes":
            tally.failures.append("section 4: torch with a CUDA GPU is not available")
        if has_gpu:
            import json

            out(f"\n== against torch {torch.__version__} (cuDNN {torch.backends.cudnn.version()}): one-layer "
                "float32 LSTM, median wall time")
            try:
                others = [("steps, no graphs", variants[1][1]),
                          ("array ops (before)", plugin.CupyBackend(xp=dev.xp, steps=None)),
                          ("tf32=True", plugin.CupyBackend(xp=dev.xp, tf32=True))]
                rows = against_torch(dev, variants[0][1], TORCH_GRID[:3] if args.quick else TORCH_GRID, out, others)
                for row in rows:  # TF32 keeps ~10 mantissa bits of each product's inputs
                    for label, _ in others:
                        limit = 1e-2 if label.startswith("tf32") else RTOL[np.dtype(np.float32)]
                        if not row[f"{label}_err"] <= limit:
                            tally.failures.append(f"section 4 T{row['T']} B{row['B']} H{row['H']}: {label} "
                                                  f"differs from the default by {row[f'{label}_err']:.1e} > {limit:.0e}")
                graphs = variants[0][1].graphs
                backward = variants[0][1].backward_graphs
                out(f"backend after section 4: {variants[0][1]!r}; {graphs.launches + backward.launches} launches of "
                    f"captured graphs, {len(graphs.entries) + len(backward.entries)} kept")
                if args.json:
                    args.json.write_text(json.dumps(rows, indent=1))
            except Exception:
                tally.failures.append("section 4 failed:\n" + traceback.format_exc())

    out(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    if tally.failures:
        out(f"\nFAILED: {len(tally.failures)} parity problem(s)")
        for line in tally.failures[:50]:
            out("  " + line)
        return 1
    out("PASSED: every parity check within tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
