"""``scrfd``: InsightFace's SCRFD face detectors, as the import command (``python -m app.models
import --family scrfd``) rewrites them: one output ``(B, N, 15)``, per anchor ``x1, y1, x2, y2``,
the score and the 5 landmarks' ``x, y``, decoded in the graph in continuous input pixels
(``app.models.scrfd_graph``). The photo is placed at the top left of the fixed input on black, as
InsightFace does; each face comes with its 5 landmarks, so the face pipeline needs no landmark model.
The weights InsightFace publishes are for non-commercial research only: Sightline serves the family
and never bundles them."""

from __future__ import annotations

import numpy as np

from app.models.anchor_detector import DetectParams
from app.models.fixed_input import FixedInputDetector
from app.models.metadata import ScrfdMeta
from app.vision.boxes import nms
from app.vision.letterbox import Letterbox, unletterbox_boxes, unletterbox_points
from app.vision.postprocess import Detections

ROW = 15    # x1, y1, x2, y2, score, then 5 x (x, y)


def decode_scrfd(raw: np.ndarray, geo: Letterbox, params: DetectParams) -> Detections:
    """``raw (N, 15)`` of one image → at most ``params.max_det`` faces scoring at least ``params.conf``
    after NMS, best first: boxes ``(K, 4)`` and landmarks ``(K, 5, 2)`` in the original image's pixels."""
    keep = raw[:, 4] >= params.conf
    rows = raw[keep].astype(np.float32)
    order = nms(rows[:, :4], rows[:, 4], params.iou)[:params.max_det]
    rows = rows[order]
    return Detections(unletterbox_boxes(rows[:, :4], geo), rows[:, 4].copy(), np.zeros(len(rows), np.int64),
                      unletterbox_points(rows[:, 5:].reshape(-1, 5, 2), geo))


class ScrfdDetector(FixedInputDetector):
    families = ("scrfd",)
    gives_landmarks = True
    meta: ScrfdMeta

    def expected_output(self) -> tuple[int, ...]:
        return (1, self.meta.boxes, ROW)

    def postprocess(self, raw: np.ndarray, geo: Letterbox, params: DetectParams) -> Detections:
        return decode_scrfd(raw, geo, params)
