"""Anchor shapes by k-means on the training boxes with ``1 - IoU`` as the distance (YOLOv2's
dimension clusters), and the best possible recall a set of anchors allows."""

from __future__ import annotations

import numpy as np

from app.vision.boxes import wh_iou


def kmeans_anchors(wh: np.ndarray, k: int, seed: int = 0, iters: int = 300) -> np.ndarray:
    """Cluster ``(N, 2)`` box shapes into ``k`` anchors ``(k, 2)``, sorted by area.

    Assignment uses the highest shape IoU (lowest ``1 - IoU``); centres are the median of their
    members (robust to outliers, as in YOLOv2's implementations). k-means++ style seeding.
    """
    wh = np.asarray(wh, dtype=np.float32).reshape(-1, 2)
    if wh.shape[0] < k:
        raise ValueError(f"need at least {k} boxes to fit {k} anchors, got {wh.shape[0]}")
    rng = np.random.default_rng(seed)
    centres = [wh[rng.integers(wh.shape[0])]]
    for _ in range(1, k):
        dist = 1.0 - wh_iou(wh, np.asarray(centres)).max(axis=1)
        prob = dist ** 2 / max(float((dist ** 2).sum()), 1e-12)
        centres.append(wh[rng.choice(wh.shape[0], p=prob)])
    centres_arr = np.asarray(centres, dtype=np.float32)
    assign = np.full(wh.shape[0], -1)
    for _ in range(iters):
        new_assign = wh_iou(wh, centres_arr).argmax(axis=1)
        if np.array_equal(new_assign, assign):
            break
        assign = new_assign
        for j in range(k):
            members = wh[assign == j]
            if members.size:
                centres_arr[j] = np.median(members, axis=0)
    return centres_arr[np.argsort(centres_arr[:, 0] * centres_arr[:, 1])]


def mean_best_iou(wh: np.ndarray, anchors: np.ndarray) -> float:
    """Average over boxes of the IoU with their best anchor."""
    return float(wh_iou(wh, anchors).max(axis=1).mean())


def best_possible_recall(wh: np.ndarray, anchors: np.ndarray, threshold: float = 0.25) -> float:
    """Fraction of boxes whose best anchor has shape IoU above ``threshold`` (matchable boxes)."""
    return float((wh_iou(wh, anchors).max(axis=1) > threshold).mean())


def split_by_stride(anchors: np.ndarray, n_scales: int) -> list[list[list[float]]]:
    """Sorted ``(k, 2)`` anchors → ``n_scales`` groups, smallest anchors to the finest stride."""
    groups = np.array_split(anchors, n_scales)
    return [[[round(float(w), 2), round(float(h), 2)] for w, h in g] for g in groups]
