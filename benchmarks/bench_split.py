"""How a layer's two threads should share the work: by batch rows, by hidden units, or as the
core's rule picks (``lstmkit._core._force_split``), in one process, alternating.

    PYTHONPATH=. python benchmarks/bench_split.py                       # LSTM inference
    PYTHONPATH=. python benchmarks/bench_split.py --mode backward --cell GRU
    PYTHONPATH=. python benchmarks/bench_split.py --shapes "100,4,128,512;100,12,64,256"

Each shape ``T,B,I,H[,L]`` runs at two threads (``threadpoolctl``), every split in turn,
``--rounds`` times two samples, each after a 30 ms pause; the table gives the median and the
minimum milliseconds and ``units / rows`` (> 1: rows faster).  All splits give the same bits;
a split that cannot run for a shape (units: H not a multiple of 64) falls back to columns.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from lstmkit import _core
from lstmkit import nn as lnn

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
        f"{k} ms (median / min)" for k in SPLITS) + " | units / rows |")
    print("|---|" + "---:|" * (len(SPLITS) + 1))
    old = _core._force_split()
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
                for _ in range(args.rounds):
                    for name, split in SPLITS.items():
                        _core._force_split(split)
                        sample()
                        for _ in range(2):
                            time.sleep(0.03)
                            times[name].append(sample())
                med = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
                cells = " | ".join(f"{med[k]:.2f} / {1e3 * min(v):.2f}" for k, v in times.items())
                print(f"| T{T} B{B} I{I} H{H} L{L} | {cells} | {med['units'] / med['rows']:.3f} |")
    finally:
        _core._force_split(old)


if __name__ == "__main__":
    main()
