"""``ssd-boxes``: a detector whose graph decodes its own anchors (face-api's SSD MobileNetV1 face
detector, converted): one output ``(B, N, 5)``, per anchor ``x1, y1, x2, y2`` in input pixels and
the face probability. The input is fixed (``input_size``); the photo is placed in it as the
model's authors did (``pad``), and a photo too large for its small faces is tiled by the face
pipeline (``app.vision.tiles``, ``min_face`` from the metadata)."""

from __future__ import annotations

import numpy as np

from app.models.anchor_detector import DetectParams
from app.models.fixed_input import FixedInputDetector
from app.models.metadata import BoxesDetectorMeta
from app.vision.boxes import nms
from app.vision.letterbox import Letterbox, unletterbox_boxes
from app.vision.postprocess import Detections


def decode_boxes(raw: np.ndarray, geo: Letterbox, params: DetectParams) -> Detections:
    """``raw (N, 5)`` of one image → at most ``params.max_det`` boxes above ``params.conf`` after NMS,
    best first, in the original image's pixels."""
    keep = raw[:, 4] >= params.conf
    boxes, scores = raw[keep, :4].astype(np.float32), raw[keep, 4].astype(np.float32)
    order = nms(boxes, scores, params.iou)[:params.max_det]
    return Detections(unletterbox_boxes(boxes[order], geo), scores[order], np.zeros(len(order), np.int64))


class BoxesDetector(FixedInputDetector):
    families = ("ssd-boxes",)
    meta: BoxesDetectorMeta

    def expected_output(self) -> tuple[int, ...]:
        return (1, self.meta.boxes, 5)

    def postprocess(self, raw: np.ndarray, geo: Letterbox, params: DetectParams) -> Detections:
        return decode_boxes(raw, geo, params)
