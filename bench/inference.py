"""Raw ONNX Runtime throughput of the detector on preprocessed tensors."""

from __future__ import annotations

import numpy as np

from app.detector import ObjectDetector
from bench.stats import summarize_ms, time_calls


def make_batch(tensors: list[np.ndarray], batch: int) -> np.ndarray:
    """``(batch, 3, S, S)`` from preprocessed ``(1, 3, S, S)`` tensors, cycling through them."""
    return np.ascontiguousarray(np.concatenate([tensors[i % len(tensors)] for i in range(batch)], axis=0))


def bench_raw(detector: ObjectDetector, tensors: list[np.ndarray], batch: int, iterations: int,
              warmup: int) -> dict:
    """``detector.run`` on one fixed batch: per-call ms and images/s (from the median call)."""
    x = make_batch(tensors, batch)
    summary = summarize_ms(time_calls(lambda: detector.run(x), iterations, warmup))
    return {"batch": batch, "warmup": warmup, **summary,
            "images_per_s": batch * 1000.0 / summary["median_ms"],
            "images_per_s_mean": batch * 1000.0 / summary["mean_ms"]}
