"""Per-class NMS: the numpy greedy ``nms_per_class`` against OpenCV's ``NMSBoxesBatched``."""

from __future__ import annotations

import numpy as np

from app.vision.boxes import nms_per_class, nms_per_class_numpy
from bench.stats import summarize_ms, time_calls

IMAGE = 640.0


def clustered_boxes(rng: np.random.Generator, n: int, classes: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` xyxy boxes in ~20-box clusters around objects 16..200 px (a detector's raw output looks
    like this: many jittered boxes per object); boxes near the edges may leave the image, as raw
    decoded boxes do. Scores uniform in [0.05, 1), class ids in [0, classes)."""
    clusters = max(1, n // 20)
    centres = rng.uniform(0, IMAGE, (clusters, 2))
    sizes = np.exp(rng.uniform(np.log(16), np.log(200), (clusters, 2)))
    k = rng.integers(0, clusters, n)
    wh = sizes[k] * rng.uniform(0.8, 1.25, (n, 2))
    centre = centres[k] + rng.normal(0, 0.15, (n, 2)) * sizes[k]
    boxes = np.concatenate([centre - wh / 2, centre + wh / 2], axis=1).astype(np.float32)
    scores = rng.uniform(0.05, 1.0, n).astype(np.float32)
    return boxes, scores, rng.integers(0, classes, n).astype(np.int64)


def _agreement(a: np.ndarray, b: np.ndarray) -> dict:
    sa, sb = set(a.tolist()), set(b.tolist())
    return {"same_order": bool(np.array_equal(a, b)), "same_set": sa == sb,
            "only_numpy": len(sa - sb), "only_opencv": len(sb - sa)}


def bench_nms(n: int, reps: int, warmup: int, seed: int, iou: float = 0.45) -> dict:
    """Median ms of both implementations on the same ``n`` boxes, their ratio, and what each keeps."""
    boxes, scores, class_ids = clustered_boxes(np.random.default_rng([seed, n]), n)
    fast = nms_per_class_numpy(boxes, scores, class_ids, iou)
    ocv = nms_per_class(boxes, scores, class_ids, iou)
    t_np = summarize_ms(time_calls(lambda: nms_per_class_numpy(boxes, scores, class_ids, iou), reps, warmup))
    t_cv = summarize_ms(time_calls(lambda: nms_per_class(boxes, scores, class_ids, iou), reps, warmup))
    ratio = t_np["median_ms"] / t_cv["median_ms"]
    return {"boxes": n, "classes": 3, "iou": iou, "reps": reps, "numpy": t_np, "opencv": t_cv,
            "kept_numpy": int(fast.size), "kept_opencv": int(ocv.size),
            "numpy_over_opencv": ratio, "faster": "opencv" if ratio > 1 else "numpy",
            **_agreement(fast, ocv)}
