"""``ssd-boxes``: a detector whose graph decodes its own anchors (face-api's SSD MobileNetV1 face
detector, converted): one output ``(B, N, 5)``, per anchor ``x1, y1, x2, y2`` in input pixels and
the face probability. The input is fixed (``input_size``); the photo is placed in it as the
model's authors did (``pad``), and a photo too large for its small faces is tiled by the face
pipeline (``app.vision.tiles``, ``min_face`` from the metadata)."""

from __future__ import annotations

import time

import numpy as np

from app.imaging import DecodedImage, decode_image
from app.models.anchor_detector import DetectParams, StageTimes
from app.models.base import OnnxModel, normalise
from app.models.metadata import BoxesDetectorMeta
from app.pipeline import Infer, Steps, run_steps
from app.vision.boxes import nms
from app.vision.letterbox import Letterbox, letterbox, letterbox_corner, unletterbox_boxes
from app.vision.postprocess import Detections


def decode_boxes(raw: np.ndarray, geo: Letterbox, params: DetectParams) -> Detections:
    """``raw (N, 5)`` of one image → at most ``params.max_det`` boxes above ``params.conf`` after NMS,
    best first, in the original image's pixels."""
    keep = raw[:, 4] >= params.conf
    boxes, scores = raw[keep, :4].astype(np.float32), raw[keep, 4].astype(np.float32)
    order = nms(boxes, scores, params.iou)[:params.max_det]
    return Detections(unletterbox_boxes(boxes[order], geo), scores[order], np.zeros(len(order), np.int64))


class BoxesDetector(OnnxModel):
    families = ("ssd-boxes",)
    meta: BoxesDetectorMeta

    def expected_output(self) -> tuple[int, ...]:
        return (1, self.meta.boxes, 5)

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """``HxWx3 uint8 RGB`` → ``(1, 3, S, S) float32`` and where the image lies in it."""
        size = self.meta.input_size
        canvas, geo = letterbox_corner(image, size) if self.meta.pad == "bottom_right" else letterbox(image, size)
        return normalise(canvas[None], self.meta.normalization), geo

    def detect_many_steps(self, images: list[np.ndarray], params: DetectParams) -> Steps[list[Detections]]:
        """Boxes of several images (tiles of a photo) in one model run, each in its own pixels."""
        prepared = [self.preprocess(image) for image in images]
        raw = yield Infer(self, np.concatenate([batch for batch, _ in prepared]))
        return [decode_boxes(out, geo, params) for out, (_, geo) in zip(raw, prepared)]

    def detect_steps(self, image: np.ndarray, params: DetectParams) -> Steps[tuple[Detections, StageTimes]]:
        t0 = time.perf_counter()
        batch, geo = self.preprocess(image)
        t1 = time.perf_counter()
        raw = yield Infer(self, batch)
        t2 = time.perf_counter()
        dets = decode_boxes(raw[0], geo, params)
        return dets, StageTimes((t1 - t0) * 1000, (t2 - t1) * 1000, (time.perf_counter() - t2) * 1000)

    def detect(self, image: np.ndarray, params: DetectParams) -> tuple[Detections, StageTimes]:
        return run_steps(self.detect_steps(image, params))

    def decode(self, data: bytes, max_pixels: int) -> DecodedImage:
        return decode_image(data, max_pixels, fit=self.meta.input_size)
