"""How a layer's two threads should share the work: by batch rows, by hidden units, or as the
core's rule picks (``lstmkit._core._force_split``), in one process, alternating.

    PYTHONPATH=. python benchmarks/bench_split.py                       # LSTM inference
    PYTHONPATH=. python benchmarks/bench_split.py --mode backward --cell GRU
    PYTHONPATH=. python benchmarks/bench_split.py --shapes "100,4,128,512;100,12,64,256"

Each shape ``T,B,I,H[,L]`` runs with the layer's two threads granted whatever its size and
the machine's load (the threads policy is bypassed; BLAS limited to two threads by
``threadpoolctl``), every split in turn, ``--rounds`` times two samples, each after a 30 ms
pause; the table gives the median and the minimum milliseconds, ``units / rows`` (> 1: rows
faster) and the split the rule took.  All splits give the same bits.  A split that cannot
run for a shape falls back (units: to columns where H is not a multiple of 64; rows: to
units or columns for an odd batch; the backward has no split by units), and the last
column says which loops each setting ran.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from lstmkit import _core
from lstmkit import nn as lnn
from lstmkit.backends import cython as cython_backend

SHAPES = "100,16,64,128;100,32,128,256;50,32,128,512;100,64,128,256,2;100,8,64,128;100,4,128,512"
SPLITS = {"rows": 2, "units": 1, "rule": -1}


def _parse(shapes):
    out = []
    for item in shapes.split(";"):
        v = [int(p) for p in item.split(",")]
        if len(v) not in (4, 5):
            raise SystemExit(f"--shapes: {item!r} is not T,B,I,H[,L]")
        out.append(tuple(v) if len(v) == 5 else (*v, 1))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=SHAPES, help='"T,B,I,H[,L];..." (default: %(default)s)')
    ap.add_argument("--cell", default="LSTM", choices=["LSTM", "GRU", "RNN"])
    ap.add_argument("--mode", default="inference", choices=["inference", "training", "backward"],
                    help="time m(x), forward_train + backward, or the backward alone")
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args(argv)
    print(f"| {args.cell} {args.mode}, 2 threads | " + " | ".join(
        f"{k} ms (median / min)" for k in SPLITS) + " | units / rows | loops run (units, rows) |")
    print("|---|" + "---:|" * (len(SPLITS) + 1) + "---|")
    old = _core._force_split()
    policy = cython_backend._split_threads
    cython_backend._split_threads = lambda work: 2
    try:
        with threadpool_limits(2):
            for T, B, I, H, L in _parse(args.shapes):
                m = getattr(lnn, args.cell)(I, H, L)
                x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
                out, _, backward = m.forward_train(x)
                grad = np.ones_like(out)

                def sample():
                    if args.mode == "inference":
                        t0 = time.perf_counter()
                        m(x)
                        return time.perf_counter() - t0
                    t0 = time.perf_counter()
                    _, _, bw = m.forward_train(x)
                    if args.mode == "backward":
                        t0 = time.perf_counter()
                    bw(grad)
                    return time.perf_counter() - t0

                times = {k: [] for k in SPLITS}
                loops = {}
                for _ in range(args.rounds):
                    for name, split in SPLITS.items():
                        _core._force_split(split)
                        before = _core._stall_worker_at(-1)
                        sample()
                        after = _core._stall_worker_at(-1)
                        if after[0] == before[0]:
                            raise SystemExit(f"T{T} B{B} I{I} H{H}: no two-thread loop ran "
                                             "(batch 1 or over 64 rows, or no panel kernel)")
                        loops[name] = (after[2] - before[2], after[3] - before[3])
                        for _ in range(2):
                            time.sleep(0.03)
                            times[name].append(sample())
                med = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
                cells = " | ".join(f"{med[k]:.2f} / {1e3 * min(v):.2f}" for k, v in times.items())
                ran = ", ".join(f"{k} {u}/{r}" for k, (u, r) in loops.items())
                print(f"| T{T} B{B} I{I} H{H} L{L} | {cells} | {med['units'] / med['rows']:.3f} "
                      f"| {ran} |")
    finally:
        _core._force_split(old)
        cython_backend._split_threads = policy


if __name__ == "__main__":
    main()
