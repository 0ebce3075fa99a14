#!/usr/bin/env python
"""Peak memory and time of one LSTM training step: plain, with recomputation, and torch.

Usage (from the repository root)::

    PYTHONPATH=. python benchmarks/bench_memory.py              # both shapes, markdown table
    PYTHONPATH=. python benchmarks/bench_memory.py --rounds 7 --json results.json
    PYTHONPATH=. python benchmarks/bench_memory.py --shapes "100,16,64,128,1;200,8,64,128,2,bi" --variants plain,torch --rounds 30

Each (shape, variant) runs in a fresh process, as a training loop would, at 1
thread (threadpoolctl limit 1, ``lstmkit.set_threads(1)``,
``torch.set_num_threads(1)``).  Memory: the peak RSS growth of its first training
step (``forward_train`` + ``backward(ones)``; torch: ``out.sum().backward()`` with
``input.requires_grad``) over the RSS just before it, as ``bench_rnn.py`` measures
"train".  Time: the median wall and CPU time (``time.process_time``; on a busy
machine it leaves out the time spent waiting for a CPU) of ``--rounds`` further
steps.  (Variants are not timed in one process: the plain path's large arrays
change what the allocator does for the others and the other way round.)  Variants: ``plain`` (every step's activations kept), ``k=<n>`` (segments
of n steps; ``forward_train(..., recompute=n)``), ``torch``.  The output alone is
listed for scale (float32, ``T*B*H*4`` bytes).  ``--shapes`` takes ``T,B,I,H,L`` or
``T,B,I,H,L,bi`` (bidirectional) separated by ``;``; with ``--variants plain,torch`` the
table's last column compares a plain training loop of each library, step for step.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time

import numpy as np

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    sys.exit("bench_memory.py needs threadpoolctl: python -m pip install threadpoolctl")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

#: (T, B, I, H, L): issue 7's memory shape, and a long two-layer sequence.
SHAPES = [(400, 64, 128, 512, 1), (1000, 32, 128, 256, 2)]


def variants(steps: int) -> list[str]:
    root = math.isqrt(steps - 1) + 1  # ceil(sqrt(T)), what recompute="auto" picks
    return ["plain", f"k={root}", f"k={4 * root}", "torch"]


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(field)


def _step_fn(shape, variant, x):
    """A function running one training step of ``variant`` on ``x`` (the module built here)."""
    T, B, I, H, L = shape[:5]
    bi = len(shape) > 5 and shape[5] == "bi"
    if variant == "torch":
        import torch

        torch.manual_seed(0)
        m = torch.nn.LSTM(I, H, L, bidirectional=bi)
        xt = torch.from_numpy(x).requires_grad_()

        def step():
            out, _ = m(xt)
            out.sum().backward()
            return out
        return step
    import lstmkit

    m = lstmkit.LSTM(I, H, L, dtype=np.float32, seed=0, bidirectional=bi)
    ones = np.ones((T, B, (2 if bi else 1) * H), np.float32)
    recompute = None if variant == "plain" else int(variant[2:])

    def step():
        out, _, backward = m.forward_train(x, recompute=recompute)
        return out, backward(ones)
    return step


def _one_thread(torch_too):
    threadpool_limits(1)
    import lstmkit

    lstmkit.set_threads(1)
    if torch_too:
        import torch

        torch.set_num_threads(1)


def child(shape, variant, rounds):
    """In this fresh process: the peak RSS growth (MB) of the first training step of ``variant``,
    then the median wall and CPU seconds of ``rounds`` more steps."""
    _one_thread(variant == "torch")
    x = np.random.default_rng(1).standard_normal(shape[:2] + shape[2:3]).astype(np.float32)
    step = _step_fn(shape, variant, x)
    gc.collect()
    base = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS
        f.write("5")
    result = step()
    peak = _status_kb("VmHWM")
    del result
    wall, cpu = [], []
    for _ in range(rounds):
        gc.collect()
        start, start_cpu = time.perf_counter(), time.process_time()
        result = step()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        del result
    print(json.dumps({"peak_mb": (peak - base) / 1024, "step_s": statistics.median(wall),
                      "step_cpu_s": statistics.median(cpu)}))


def _shape(text: str) -> tuple:
    """``"T,B,I,H,L"`` or ``"T,B,I,H,L,bi"`` -> a shape tuple."""
    parts = text.strip().split(",")
    if len(parts) not in (5, 6) or (len(parts) == 6 and parts[5] != "bi"):
        raise SystemExit(f"bench_memory.py: a shape is T,B,I,H,L or T,B,I,H,L,bi; got {text!r}")
    return tuple(int(v) for v in parts[:5]) + tuple(parts[5:])


def _child(args: list[str]):
    proc = subprocess.run([sys.executable, os.path.abspath(__file__)] + args, capture_output=True, text=True,
                          check=False)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        print(f"child {args} failed: {proc.stderr[-800:]}", file=sys.stderr)
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="timed steps after the first (median reported)")
    ap.add_argument("--no-torch", action="store_true", help="leave torch out")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--shapes", help='"T,B,I,H,L[,bi];..." (default: the two memory shapes)')
    ap.add_argument("--variants", help="comma-separated subset of plain, k=<n>, torch (default: all)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        shape, name = args.child.split("/")
        child(_shape(shape), name, args.rounds)
        return
    shapes = [_shape(v) for v in args.shapes.split(";")] if args.shapes else SHAPES
    wanted = set(args.variants.split(",")) if args.variants else None
    results = []
    for shape in shapes:
        for name in variants(shape[0]):
            if (args.no_torch and name == "torch") or (wanted is not None and name not in wanted):
                continue
            record = _child(["--rounds", str(args.rounds), "--child", ",".join(map(str, shape)) + "/" + name])
            results.append({"shape": shape, "variant": name, "peak_mb": None, "step_s": None, "step_cpu_s": None,
                            **(record or {})})
            print(f"  {results[-1]}", file=sys.stderr, flush=True)
    print("| LSTM float32, 1 thread (T, B, I, H, layers) | variant | peak RSS growth (MB) | one step, wall (ms) "
          "| one step, CPU (ms) | CPU / plain |")
    print("|---|---|---|---|---|---|")

    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    for r in results:
        plain = next((p for p in results if p["shape"] == r["shape"] and p["variant"] == "plain"), {})
        T, B, I, H, L = r["shape"][:5]
        bi = " bi" if len(r["shape"]) > 5 else ""
        ms = {k: None if r[k] is None else 1e3 * r[k] for k in ("step_s", "step_cpu_s")}
        ratio = r["step_cpu_s"] / plain["step_cpu_s"] if r["step_cpu_s"] and plain.get("step_cpu_s") else None
        print(f"| T{T} B{B} I{I} H{H} L{L}{bi} (output {T * B * H * 4 * (2 if bi else 1) / 2**20:.0f} MB) "
              f"| {r['variant']} | {fmt(r['peak_mb'], '.0f')} | {fmt(ms['step_s'], '.2f')} "
              f"| {fmt(ms['step_cpu_s'], '.2f')} | {fmt(ratio, '.2f')} |")
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=1)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
