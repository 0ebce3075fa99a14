#!/usr/bin/env python
"""Where the time of one lstmkit LSTM forward goes, per regime (float32, 1 thread).

Usage (from the repository root)::

    PYTHONPATH=. python benchmarks/profile_rnn.py

For each configuration (one layer, one direction) it times, as medians of
interleaved rounds: the whole ``lstmkit.LSTM`` inference call; the input
projection alone (the core's GEMM, ``_core.gemm``, over all T*B rows); the T
per-step recurrent products alone, through the path the kernel takes for that
batch size (gemv at one row, the packed-panel kernel with its one packing for
2-64 rows, BLAS above); and BLAS's ``('T','N')`` call for the same products,
the path before the panel kernel.  The rest of the call is the fused gate loop,
the copies of ``h`` into the output and the Python around the kernel.
"""
from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import lstmkit  # noqa: E402
from lstmkit import _core  # noqa: E402

CONFIGS = [  # T, B, I, H
    (1000, 1, 16, 32),
    (100, 1, 32, 64),
    (100, 4, 64, 128),
    (100, 16, 64, 128),
    (200, 8, 64, 128),
    (100, 64, 128, 256),
    (50, 32, 128, 512),
    (400, 64, 128, 512),
]


def median_times(fns, rounds=9):
    """Interleaved rounds: the median seconds of each function."""
    for f in fns:
        f()
    samples = [[] for _ in fns]
    for r in range(rounds):
        for i in list(range(r % len(fns), len(fns))) + list(range(r % len(fns))):
            t0 = time.perf_counter()
            fns[i]()
            samples[i].append(time.perf_counter() - t0)
    return [statistics.median(s) for s in samples]


def profile(T, B, I, H):
    rng = np.random.default_rng(0)
    f32 = np.float32
    m = lstmkit.LSTM(I, H, dtype=f32, seed=0).eval()
    x = rng.standard_normal((T, B, I)).astype(f32)
    w_ih = rng.standard_normal((4 * H, I)).astype(f32)
    w_hh = rng.standard_normal((4 * H, H)).astype(f32)
    xs = x.reshape(T * B, I)
    proj = np.empty((T * B, 4 * H), f32)
    h = rng.standard_normal((B, H)).astype(f32)
    out = np.empty((B, 4 * H), f32)
    gemm, panel = _core.gemm["float"], _core.panel_gemm["float"]

    def recurrent_kernel_path():
        if B == 1 or B > 64:
            for _ in range(T):
                gemm(False, True, 1.0, h, w_hh, 1.0, out)
        else:
            panel(h, w_hh, True, out, True, T)

    def recurrent_blas_tn():
        for _ in range(T):
            gemm(False, True, 1.0, h, w_hh, 1.0, out)

    total, p, r, r_tn = median_times([
        lambda: m(x),
        lambda: gemm(False, True, 1.0, xs, w_ih, 0.0, proj),
        recurrent_kernel_path,
        recurrent_blas_tn,
    ])
    flop = 2.0 * T * B * 4 * H * (I + H)
    return {"total": total, "proj": p, "rec": r, "rec_tn": r_tn, "gflops": flop / total / 1e9}


def main():
    print("| config | total ms | GFLOP/s | input projection | recurrent products "
          "| gate loop + rest | recurrent via BLAS ('T','N') |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with threadpool_limits(1):
        for T, B, I, H in CONFIGS:
            d = profile(T, B, I, H)
            tot = d["total"]
            rest = max(0.0, tot - d["proj"] - d["rec"])
            print(f"| T{T} B{B} I{I} H{H} | {tot * 1e3:.2f} | {d['gflops']:.1f} "
                  f"| {d['proj'] * 1e3:.2f} ms ({100 * d['proj'] / tot:.0f}%) "
                  f"| {d['rec'] * 1e3:.2f} ms ({100 * d['rec'] / tot:.0f}%) "
                  f"| {rest * 1e3:.2f} ms ({100 * rest / tot:.0f}%) "
                  f"| {d['rec_tn'] * 1e3:.2f} ms |", flush=True)


if __name__ == "__main__":
    main()
