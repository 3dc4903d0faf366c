"""Intersection over union from a confusion matrix accumulated over every pixel of a data set (the
VOC and Cityscapes convention: a class's IoU pools all images, so large objects weigh more)."""

from __future__ import annotations

import numpy as np

from app.vision.masks import IGNORE


def confusion(truth: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C, C)`` pixel counts, rows the true class, columns the predicted; ``IGNORE`` truth left out."""
    if truth.shape != pred.shape:
        raise ValueError(f"truth {truth.shape} and prediction {pred.shape} differ in size")
    keep = truth != IGNORE
    t, p = truth[keep].astype(np.int64), pred[keep].astype(np.int64)
    if len(t) and (t.max() >= num_classes or p.max() >= num_classes):
        raise ValueError(f"class ids beyond {num_classes - 1}")
    return np.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def iou_per_class(matrix: np.ndarray) -> np.ndarray:
    """``TP / (TP + FP + FN)`` per class; NaN for a class neither present nor predicted."""
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def summarize(matrix: np.ndarray, class_names: list[str]) -> dict[str, object]:
    iou = iou_per_class(matrix)
    return {"miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
            "iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, iou)},
            "pixel_accuracy": float(np.diag(matrix).sum() / max(matrix.sum(), 1))}
