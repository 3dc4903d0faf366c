"""``anchor-yolo``: Sightline's own YOLO-style anchor detector (objects, or faces with one class):
preprocessing contract and anchors read from the model's own metadata, ONNX Runtime inference,
then the shared numpy post-processing (decode anchors, NMS, undo the letterbox)."""

from __future__ import annotations

import time
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnxruntime as ort

from app.imaging import DecodedImage, decode_image
from app.models.base import OnnxModel, normalise
from app.models.metadata import AnchorDetectorMeta
from app.pipeline import Infer, Steps, run_steps
from app.runtime import create_session, read_metadata
from app.settings import Settings
from app.vision.anchors import anchor_grid
from app.vision.letterbox import Letterbox, letterbox
from app.vision.postprocess import Detections, postprocess_detections


@dataclass(frozen=True)
class DetectParams:
    conf: float = 0.25
    iou: float = 0.45
    max_det: int = 100
    classes: frozenset[int] | None = None


@dataclass(frozen=True)
class StageTimes:
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class Detector(OnnxModel):
    """What every detection family shares: its own ``preprocess`` (photo → input rows and where the
    photo lies in them) and ``postprocess`` (one image's output rows → detections in its pixels),
    and the pipeline steps built on them."""

    @abstractmethod
    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """``HxWx3 uint8 RGB`` → ``(1, 3, S, S) float32`` and the letterbox geometry."""

    @abstractmethod
    def postprocess(self, raw: np.ndarray, geo: Letterbox, params: DetectParams) -> Detections:
        """``raw`` (the output rows of one image) → detections in the image's own pixels."""

    def detect_steps(self, image: np.ndarray, params: DetectParams) -> Steps[tuple[Detections, StageTimes]]:
        """The detection pipeline (``app.pipeline``); inference time includes any wait for a batch."""
        t0 = time.perf_counter()
        batch, geo = self.preprocess(image)
        t1 = time.perf_counter()
        raw = yield Infer(self, batch)
        t2 = time.perf_counter()
        dets = self.postprocess(raw[0], geo, params)
        return dets, StageTimes((t1 - t0) * 1000, (t2 - t1) * 1000, _ms(t2))

    def detect_many_steps(self, images: list[np.ndarray], params: DetectParams) -> Steps[list[Detections]]:
        """``detect_steps`` for several images (tiles of a photo) in one model run, boxes in each
        image's own pixels."""
        prepared = [self.preprocess(image) for image in images]
        raw = yield Infer(self, np.concatenate([batch for batch, _ in prepared]))
        return [self.postprocess(out, geo, params) for out, (_, geo) in zip(raw, prepared)]

    def detect(self, image: np.ndarray, params: DetectParams) -> tuple[Detections, StageTimes]:
        return run_steps(self.detect_steps(image, params))

    def decode(self, data: bytes, max_pixels: int) -> DecodedImage:
        """An upload decoded for this detector: a large JPEG comes already shrunk towards the input
        size in its DCT (``app.imaging``, rule 7), which its letterbox would shrink it to anyway."""
        return decode_image(data, max_pixels, fit=self.meta.input_size)

    def photo_steps(self, image: DecodedImage, params: DetectParams) -> Steps[tuple[Detections, StageTimes]]:
        """``detect_steps`` on a decoded upload, boxes in the photo's own pixels."""
        dets, times = yield from self.detect_steps(image.rgb, params)
        return Detections(image.to_photo(dets.boxes), dets.scores, dets.class_ids), times

    def detect_upload(self, data: bytes, max_pixels: int, params: DetectParams) -> Detections:
        """What ``POST /detect`` answers for one upload, without HTTP (evaluation, scripts)."""
        return run_steps(self.photo_steps(self.decode(data, max_pixels), params))[0]

    def class_ids(self, labels: list[str]) -> frozenset[int]:
        """Indices of ``labels``; raises ``KeyError`` naming the first unknown one."""
        index = {name: i for i, name in enumerate(self.meta.class_names)}
        return frozenset(index[label] for label in labels)



class ObjectDetector(Detector):
    """One anchor detection model. Thread-safe: ONNX Runtime sessions may be run concurrently."""

    families = ("anchor-yolo",)
    gives_landmarks: ClassVar[bool] = False     # boxes only: the face pipeline reads landmarks with its model
    meta: AnchorDetectorMeta

    def __init__(self, session: ort.InferenceSession, meta: AnchorDetectorMeta, path: Path) -> None:
        super().__init__(session, meta, path)
        self.grid = anchor_grid(meta.input_size, meta.strides, meta.anchors)

    @classmethod
    def load(cls, path: Path, settings: Settings) -> ObjectDetector:
        session = create_session(path, settings)
        det = cls.from_session(session, read_metadata(session), path)
        det.runner.follow(settings)
        return det

    def expected_output(self) -> tuple[int, ...]:
        return (1, self.grid.rows, 5 + len(self.meta.class_names))

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """``HxWx3 uint8 RGB`` → ``(1, 3, S, S) float32`` and the letterbox geometry."""
        canvas, geo = letterbox(image, self.meta.input_size)
        return normalise(canvas[None], self.meta.normalization), geo

    def postprocess(self, raw: np.ndarray, geo: Letterbox, params: DetectParams) -> Detections:
        return postprocess_detections(raw, self.grid, geo, params.conf, params.iou, params.max_det, params.classes)

