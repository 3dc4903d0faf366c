"""From one image's raw detector output to final detections in original-image pixels:
decode anchors → class filter → class-aware NMS → undo the letterbox."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.vision.anchors import AnchorGrid, decode_anchors
from app.vision.boxes import nms_per_class
from app.vision.letterbox import Letterbox, unletterbox_boxes


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray      # (K, 4) float32 xyxy, original-image pixels
    scores: np.ndarray     # (K,) float32, decreasing
    class_ids: np.ndarray  # (K,) int64
    landmarks: np.ndarray | None = None   # (K, 5, 2) float32, original-image pixels, where the detector gives them


def select_detections(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, geo: Letterbox, iou: float,
                      max_det: int, classes: frozenset[int] | None = None) -> Detections:
    """Decoded candidates of one image (``boxes (N, 4) float32`` xyxy in input pixels, already above
    the score threshold) → at most ``max_det`` detections, best first, in original-image pixels.

    ``classes`` keeps only those class ids (before NMS, so other classes never suppress them); NMS
    is per class."""
    if classes is not None:
        wanted = np.isin(class_ids, list(classes))
        boxes, scores, class_ids = boxes[wanted], scores[wanted], class_ids[wanted]
    keep = nms_per_class(boxes, scores, class_ids, iou, max_det)
    return Detections(unletterbox_boxes(boxes[keep], geo), scores[keep], class_ids[keep])


def postprocess_detections(raw: np.ndarray, grid: AnchorGrid, geo: Letterbox, conf: float, iou: float,
                           max_det: int, classes: frozenset[int] | None = None) -> Detections:
    """``raw (N, 5 + C)`` for one image (Sightline's anchor layout) → at most ``max_det`` detections,
    best first (``select_detections``)."""
    boxes, scores, class_ids = decode_anchors(raw, grid, conf)
    return select_detections(boxes, scores, class_ids, geo, iou, max_det, classes)
