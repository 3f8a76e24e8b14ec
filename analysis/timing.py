"""The one timer of the benchmarks (bench.py, bench_speed.py, bench_data.py)."""

from __future__ import annotations

import statistics
import time


def interleaved(fns: dict, repeats: int, warmup: int = 2, sync=lambda: None) -> dict:
    """Median seconds of each callable, measured round-robin so that load changes hit all alike (after ``warmup``
    rounds; ``sync()`` before and after each call waits for an accelerator)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}
