"""How often this machine takes a CPU away from a running thread, and for how long.

One process per usable CPU, pinned to it, spins reading the clock for ``--seconds`` and
reports every gap between two reads longer than ``--min-ms`` (the host descheduling the
vCPU, an interrupt storm, a page fault, another process).  The core's two-thread loops
meet at a barrier hundreds of times per call, so such a gap on either CPU delays both
(docs/performance.md, "What the core does", item 5).

    python benchmarks/cpu_gaps.py --seconds 5
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import time


def _spin(cpu: int, seconds: float, min_gap: float, out) -> None:
    os.sched_setaffinity(0, {cpu})
    gaps = []
    clock = time.perf_counter
    prev = clock()
    end = prev + seconds
    while prev < end:
        now = clock()
        if now - prev > min_gap:
            gaps.append(now - prev)
        prev = now
    out.put((cpu, gaps))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--min-ms", type=float, default=1.0)
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    out = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_spin, args=(c, args.seconds, args.min_ms / 1e3, out)) for c in cpus]
    for p in procs:
        p.start()
    results = sorted(out.get() for _ in procs)
    for p in procs:
        p.join()
    for cpu, gaps in results:
        ms = sorted(g * 1e3 for g in gaps)
        worst = f", longest {ms[-1]:.2f} ms, median {ms[len(ms) // 2]:.2f} ms" if ms else ""
        print(f"CPU {cpu}: {len(ms)} gaps over {args.min_ms:g} ms in {args.seconds:g} s "
              f"({len(ms) / args.seconds:.1f}/s){worst}")


if __name__ == "__main__":
    main()
