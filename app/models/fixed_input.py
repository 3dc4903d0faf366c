"""The base of the face detectors whose graph decodes its own anchors at a fixed input (``ssd-boxes``,
``scrfd``): the photo placed in the square input as the model's authors did (``pad``), one model
run for several images (the tiles of a photo, ``app.faces.tiled_detect_steps``), and each family's
decoding of its output rows into ``Detections`` in the image's own pixels."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from app.models.anchor_detector import Detector
from app.models.base import normalise
from app.models.metadata import FixedDetectorMeta
from app.vision.letterbox import Letterbox, letterbox, letterbox_corner
from app.vision.postprocess import Detections


class FixedInputDetector(Detector):
    """A face detector run at ``meta.input_size`` only; the face pipeline tiles a large photo for it
    down to ``meta.min_face``. ``gives_landmarks``: its detections carry the 5 landmarks."""

    gives_landmarks: ClassVar[bool] = False
    meta: FixedDetectorMeta

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """``HxWx3 uint8 RGB`` → ``(1, 3, S, S) float32`` and where the image lies in it (at the top
        left, black beyond it, for ``pad="bottom_right"``; centred on grey for ``"centre"``)."""
        size = self.meta.input_size
        canvas, geo = letterbox_corner(image, size) if self.meta.pad == "bottom_right" else letterbox(image, size)
        return normalise(canvas[None], self.meta.normalization), geo
