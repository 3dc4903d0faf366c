"""The in-process pipeline per image: decode → preprocess → inference → postprocess, each timed."""

from __future__ import annotations

import time

import numpy as np

from app.models.anchor_detector import DetectParams, Detector
from app.imaging import decode_image
from app.pipeline import run_steps
from bench.stats import summarize_ms

STAGES = ("decode", "preprocess", "inference", "postprocess")


def _one(detector: Detector, data: bytes, max_pixels: int, params: DetectParams,
         shrink: bool = True) -> tuple[list[float], int]:
    """Seconds of each stage for one JPEG, and the number of detections; ``shrink``: decoded as
    ``POST /detect`` decodes it (a large JPEG already shrunk), else at full size."""
    t0 = time.perf_counter()
    image = detector.decode(data, max_pixels) if shrink else decode_image(data, max_pixels)
    decode_s = time.perf_counter() - t0
    dets, times = run_steps(detector.photo_steps(image, params))  # the serving path, timed per stage
    stages_s = [times.preprocess_ms / 1000, times.inference_ms / 1000, times.postprocess_ms / 1000]
    return [decode_s, *stages_s], len(dets.scores)


def bench_pipeline(detector: Detector, jpegs: list[bytes], iterations: int, warmup: int,
                   max_pixels: int) -> dict:
    """Median ms per stage (and in total) over ``iterations`` images, cycling through ``jpegs``."""
    params = DetectParams()
    for i in range(warmup):
        _one(detector, jpegs[i % len(jpegs)], max_pixels, params)
    rows, counts = [], []
    for i in range(iterations):
        times, n = _one(detector, jpegs[i % len(jpegs)], max_pixels, params)
        rows.append(times)
        counts.append(n)
    per_stage = np.asarray(rows)
    total = summarize_ms(per_stage.sum(axis=1))
    stages = {name: summarize_ms(per_stage[:, k]) for k, name in enumerate(STAGES)}
    return {"iterations": iterations, "params": {"conf": params.conf, "iou": params.iou, "max_det": params.max_det},
            "stages": stages, "total": total, "images_per_s": 1000.0 / total["median_ms"],
            "detections_per_image_mean": float(np.mean(counts)),
            "jpeg_bytes_mean": float(np.mean([len(j) for j in jpegs]))}


def bench_large_photo(detector: Detector, data: bytes, size: tuple[int, int], iterations: int,
                      max_pixels: int) -> dict:
    """One large JPEG (a phone photo's size) through the pipeline, decoded as ``POST /detect`` does
    (already shrunk in the JPEG's DCT) and at full size: median ms per stage, and how many
    detections each way gives."""
    params, out = DetectParams(), {"size": f"{size[0]}x{size[1]}", "jpeg_bytes": len(data), "iterations": iterations}
    for way, shrink in (("shrunk", True), ("full", False)):
        _one(detector, data, max_pixels, params, shrink)
        runs = [_one(detector, data, max_pixels, params, shrink) for _ in range(iterations)]
        per_stage = np.asarray([t for t, _ in runs])
        out[way] = {"stages_ms": {name: float(np.median(per_stage[:, k]) * 1000) for k, name in enumerate(STAGES)},
                    "total_ms": float(np.median(per_stage.sum(axis=1)) * 1000), "detections": runs[0][1]}
    return out
