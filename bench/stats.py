"""Timing helpers: per-call wall times in seconds in, a summary in milliseconds out."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np


def summarize_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Count, median, p90, p99, mean and min of per-call times, in ms."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if ms.size == 0:
        return {"n": 0}
    return {"n": int(ms.size), "median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "min_ms": float(ms.min())}


def time_calls(fn: Callable[[], object], iterations: int, warmup: int) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``iterations`` times; each call's seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times
