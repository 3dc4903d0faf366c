"""The base of the face detectors whose graph decodes its own anchors at a fixed input (``ssd-boxes``,
``scrfd``): the photo placed in the square input as the model's authors did (``pad``), one model
run for several images (the tiles of a photo, ``app.faces.tiled_detect_steps``), and each family's
decoding of its output rows into ``Detections`` in the image's own pixels."""

from __future__ import annotations

import time
from abc import abstractmethod
from typing import ClassVar

import numpy as np

from app.imaging import DecodedImage, decode_image
from app.models.anchor_detector import DetectParams, StageTimes
from app.models.base import OnnxModel, normalise
from app.models.metadata import FixedDetectorMeta
from app.pipeline import Infer, Steps, run_steps
from app.vision.letterbox import Letterbox, letterbox, letterbox_corner
from app.vision.postprocess import Detections


class FixedInputDetector(OnnxModel):
    """A face detector run at ``meta.input_size`` only; the face pipeline tiles a large photo for it
    down to ``meta.min_face``. ``gives_landmarks``: its detections carry the 5 landmarks."""

    gives_landmarks: ClassVar[bool] = False
    meta: FixedDetectorMeta

    @abstractmethod
    def decode_rows(self, raw: np.ndarray, geo: Letterbox, params: DetectParams) -> Detections:
        """``raw`` (the output rows of one image) → detections in the image's own pixels."""

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """``HxWx3 uint8 RGB`` → ``(1, 3, S, S) float32`` and where the image lies in it (at the top
        left, black beyond it, for ``pad="bottom_right"``; centred on grey for ``"centre"``)."""
        size = self.meta.input_size
        canvas, geo = letterbox_corner(image, size) if self.meta.pad == "bottom_right" else letterbox(image, size)
        return normalise(canvas[None], self.meta.normalization), geo

    def detect_many_steps(self, images: list[np.ndarray], params: DetectParams) -> Steps[list[Detections]]:
        """Detections of several images (tiles of a photo) in one model run, each in its own pixels."""
        prepared = [self.preprocess(image) for image in images]
        raw = yield Infer(self, np.concatenate([batch for batch, _ in prepared]))
        return [self.decode_rows(out, geo, params) for out, (_, geo) in zip(raw, prepared)]

    def detect_steps(self, image: np.ndarray, params: DetectParams) -> Steps[tuple[Detections, StageTimes]]:
        t0 = time.perf_counter()
        batch, geo = self.preprocess(image)
        t1 = time.perf_counter()
        raw = yield Infer(self, batch)
        t2 = time.perf_counter()
        dets = self.decode_rows(raw[0], geo, params)
        return dets, StageTimes((t1 - t0) * 1000, (t2 - t1) * 1000, (time.perf_counter() - t2) * 1000)

    def detect(self, image: np.ndarray, params: DetectParams) -> tuple[Detections, StageTimes]:
        return run_steps(self.detect_steps(image, params))

    def decode(self, data: bytes, max_pixels: int) -> DecodedImage:
        return decode_image(data, max_pixels, fit=self.meta.input_size)
