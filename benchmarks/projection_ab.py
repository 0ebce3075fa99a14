#!/usr/bin/env python
"""The input projection on the panel kernel against BLAS, in one process (1 thread).

Usage (from the repository root)::

    PYTHONPATH=. python benchmarks/projection_ab.py

For LSTM, GRU and RNN inference, float32, it times one layer with the core's
input projection on the packed-panel kernel (the default on AVX-512) and on
BLAS (``_core._use_projection_panels(False)``, a test switch), as medians of
interleaved rounds, and prints a markdown table.  On CPUs where the panel
projection is not used both columns run the same code.
"""
from __future__ import annotations

import os
import sys

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import lstmkit  # noqa: E402
from lstmkit import _core  # noqa: E402
from profile_rnn import median_times  # noqa: E402  (this folder: interleaved rounds)

CONFIGS = [(100, 1, 32, 64), (100, 16, 64, 128), (200, 8, 64, 128), (100, 64, 128, 256),
           (50, 32, 128, 512)]  # T, B, I, H


def main():
    print("| cell | T, B, I, H | inference ms, BLAS → panels | speed-up |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(0)
    try:
        for kind in ("LSTM", "GRU", "RNN"):
            for T, B, I, H in CONFIGS:
                m = getattr(lstmkit, kind)(I, H, dtype=np.float32, seed=0).eval()
                x = rng.standard_normal((T, B, I)).astype(np.float32)

                def run(on, m=m, x=x):
                    def call():
                        _core._use_projection_panels(on)
                        m(x)
                    return call

                with threadpool_limits(1):
                    blas, panels = median_times([run(False), run(True)], rounds=21)
                print(f"| {kind} | {T}, {B}, {I}, {H} | {blas * 1e3:.2f} → {panels * 1e3:.2f} "
                      f"| {blas / panels:.2f}× |", flush=True)
    finally:
        _core._use_projection_panels(True)


if __name__ == "__main__":
    main()
