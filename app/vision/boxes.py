"""Box maths on ``(N, 4) float32 xyxy`` boxes in continuous pixel coordinates.

Areas are ``(x2 - x1) * (y2 - y1)`` with no ``+1``. Every function here is pure numpy
and is used alike by serving (app/) and by training's evaluation (training/).
"""

from __future__ import annotations

import numpy as np


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas of ``(N, 4)`` xyxy boxes, ``(N,)``; degenerate boxes have area 0."""
    w = np.clip(boxes[:, 2] - boxes[:, 0], 0, None)
    h = np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    return w * h


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes, ``(N, M)`` float32."""
    a = np.asarray(a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)


def wh_iou(wh_a: np.ndarray, wh_b: np.ndarray) -> np.ndarray:
    """IoU of ``(N, 2)`` and ``(M, 2)`` box shapes (width, height) sharing one centre, ``(N, M)``.

    Used to match boxes to anchors and to cluster anchors (YOLOv2's 1 - IoU distance).
    """
    wh_a = np.asarray(wh_a, dtype=np.float32).reshape(-1, 2)
    wh_b = np.asarray(wh_b, dtype=np.float32).reshape(-1, 2)
    inter = np.minimum(wh_a[:, None, 0], wh_b[None, :, 0]) * np.minimum(wh_a[:, None, 1], wh_b[None, :, 1])
    union = (wh_a[:, 0] * wh_a[:, 1])[:, None] + (wh_b[:, 0] * wh_b[:, 1])[None, :] - inter
    return (inter / np.maximum(union, 1e-12)).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression over ``(N, 4)`` xyxy boxes, class-agnostic.

    Returns the indices kept, ``(K,) int64``, by decreasing score. A box is suppressed when its
    IoU with a kept, higher-scoring box is strictly greater than ``iou_threshold`` (torchvision's
    rule). Ties in score keep the lower index first. Never truncates: the caller caps the count.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float32), kind="stable")
    areas = box_area(boxes)
    keep: list[int] = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        lt = np.maximum(boxes[i, :2], boxes[rest, :2])
        rb = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        wh = np.clip(rb - lt, 0, None)
        inter = wh[:, 0] * wh[:, 1]
        union = areas[i] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def nms_per_class_numpy(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
                        iou_threshold: float, max_det: int | None = None) -> np.ndarray:
    """Class-aware NMS in numpy: boxes of different classes never suppress each other.

    Uses the coordinate-offset trick (each class moved to its own far-away region) so one greedy
    pass serves every class. Returns kept indices ``(K,) int64`` by decreasing score, at most
    ``max_det`` of them when given. The simple reference that :func:`nms_per_class` is tested
    and benchmarked against.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if boxes.shape[0] == 0:
        return np.zeros((0,), dtype=np.int64)
    span = float(boxes.max() - min(float(boxes.min()), 0.0)) + 1.0
    offsets = np.asarray(class_ids, dtype=np.float32)[:, None] * span
    keep = nms(boxes + offsets, scores, iou_threshold)
    return keep if max_det is None else keep[:max_det]


def nms_per_class(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
                  iou_threshold: float, max_det: int | None = None) -> np.ndarray:
    """Class-aware NMS, the one serving and evaluation use: OpenCV's ``NMSBoxesBatched``.

    Same contract as :func:`nms_per_class_numpy` (kept indices by decreasing score, ties by lower
    index, suppression when IoU > threshold); ``make bench`` measured OpenCV 3-9x faster. OpenCV
    takes ``[x, y, w, h]`` boxes.
    """
    import cv2

    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if boxes.shape[0] == 0:
        return np.zeros((0,), dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).astype(np.float64)
    idx = cv2.dnn.NMSBoxesBatched(xywh, scores, np.asarray(class_ids, np.int32), -np.inf, float(iou_threshold))
    keep = np.asarray(idx, dtype=np.int64).reshape(-1)
    keep = keep[np.lexsort((keep, -scores[keep]))]
    return keep if max_det is None else keep[:max_det]


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip ``(N, 4)`` xyxy boxes to an image of ``width`` x ``height`` pixels (new array)."""
    out = np.asarray(boxes, dtype=np.float32).copy()
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, width)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, height)
    return out
