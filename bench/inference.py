"""Raw ONNX Runtime throughput of the detector on preprocessed tensors."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from app.models.anchor_detector import Detector
from bench.stats import summarize_ms, time_calls


def make_batch(tensors: list[np.ndarray], batch: int) -> np.ndarray:
    """``(batch, 3, S, S)`` from preprocessed ``(1, 3, S, S)`` tensors, cycling through them."""
    return np.ascontiguousarray(np.concatenate([tensors[i % len(tensors)] for i in range(batch)], axis=0))


def bench_raw(detector: Detector, tensors: list[np.ndarray], batch: int, iterations: int,
              warmup: int) -> dict:
    """``detector.run`` on one fixed batch: per-call ms, images/s (from the median call) and this
    process's CPU time per image (every ONNX Runtime thread's)."""
    x = make_batch(tensors, batch)
    time_calls(lambda: detector.run(x), 0, warmup)
    cpu0 = time.process_time()
    summary = summarize_ms(time_calls(lambda: detector.run(x), iterations, 0))
    cpu = time.process_time() - cpu0
    return {"batch": batch, "warmup": warmup, **summary,
            "images_per_s": batch * 1000.0 / summary["median_ms"],
            "images_per_s_mean": batch * 1000.0 / summary["mean_ms"],
            "cpu_ms_per_image": cpu * 1000 / (iterations * batch)}


def bench_raw_bound(detector: Detector, tensors: list[np.ndarray], batch: int, iterations: int, warmup: int,
                    io_binding: bool) -> dict:
    """``bench_raw`` with the runner's IO binding set as asked (restored afterwards), which the figures
    name."""
    served, detector.runner.io_binding = detector.runner.io_binding, io_binding
    try:
        return {**bench_raw(detector, tensors, batch, iterations, warmup), "io_binding": io_binding}
    finally:
        detector.runner.io_binding = served


def bench_raw_side_by_side(detector: Detector, tensors: list[np.ndarray], batch: int, runs: int,
                           iterations: int, warmup: int) -> dict:
    """``runs`` threads each calling ``detector.run`` on its own fixed batch ``iterations`` times at
    once (the server's instances): images/s over the wall time of all of them, and this process's
    CPU time per image (ONNX Runtime's own cost, to set against the server's)."""
    x = [make_batch(tensors[k:] + tensors[:k], batch) for k in range(runs)]
    with ThreadPoolExecutor(runs) as pool:
        for _ in range(warmup):
            list(pool.map(detector.run, x))
        t0, cpu0 = time.perf_counter(), time.process_time()
        list(pool.map(lambda b: [detector.run(b) for _ in range(iterations)], x))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    images = runs * iterations * batch
    return {"batch": batch, "runs": runs, "iterations": iterations, "warmup": warmup, "seconds": wall,
            "images_per_s": images / wall, "cpu_ms_per_image": cpu * 1000 / images}
