"""The object detector as served: preprocessing contract and anchors read from the model's own
metadata, ONNX Runtime inference, then the shared numpy post-processing."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from pydantic import BaseModel, ConfigDict

from app.imaging import DecodedImage, decode_image
from app.pipeline import Infer, Steps, run_steps
from app.runtime import ModelLoadError, SessionRunner, create_session, parse_metadata, read_metadata
from app.settings import Settings
from app.vision.anchors import anchor_grid
from app.vision.letterbox import Letterbox, letterbox, to_tensor
from app.vision.postprocess import Detections, postprocess_detections


class Normalization(BaseModel):
    color: str = "RGB"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class DetectorMeta(BaseModel):
    """What a detection model file must declare about itself."""

    model_config = ConfigDict(extra="allow")

    name: str
    task: str
    version: str
    class_names: list[str]
    input_size: int
    normalization: Normalization
    anchors: list[list[list[float]]]
    strides: list[int]
    output_layout: str


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


class ObjectDetector:
    """One detection model. Thread-safe: ONNX Runtime sessions may be run concurrently."""

    def __init__(self, session: ort.InferenceSession, meta: DetectorMeta, path: Path) -> None:
        self.session, self.meta, self.path = session, meta, path
        self.runner = SessionRunner(session)
        self.grid = anchor_grid(meta.input_size, meta.strides, meta.anchors)
        self.raw_metadata: dict[str, Any] = {}

    @classmethod
    def load(cls, path: Path, settings: Settings) -> ObjectDetector:
        session = create_session(path, settings)
        det = cls.from_session(session, read_metadata(session), path)
        det.runner.follow(settings)
        return det

    @classmethod
    def from_session(cls, session: ort.InferenceSession, raw: dict[str, Any], path: Path) -> ObjectDetector:
        det = cls(session, parse_metadata(DetectorMeta, raw, path, "a detector"), path)
        det.raw_metadata = raw
        det._check_layout()
        return det

    def _check_layout(self) -> None:
        """Refuse a file whose output does not match what its metadata declares."""
        size = self.meta.input_size
        out = self.run(np.zeros((1, 3, size, size), dtype=np.float32))
        expected = (1, self.grid.rows, 5 + len(self.meta.class_names))
        if out.shape != expected:
            raise ModelLoadError(f"{self.path.name}: output shape {out.shape} != {expected} from its metadata")

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """``HxWx3 uint8 RGB`` → ``(1, 3, S, S) float32`` and the letterbox geometry."""
        canvas, geo = letterbox(image, self.meta.input_size)
        norm = self.meta.normalization
        return to_tensor(canvas[None], norm.mean, norm.std), geo

    def run(self, batch: np.ndarray) -> np.ndarray:
        """``(B, 3, S, S) float32`` → raw ``(B, N, 5 + C)``."""
        return self.runner.run(batch)

    def postprocess(self, raw: np.ndarray, geo: Letterbox, params: DetectParams) -> Detections:
        return postprocess_detections(raw, self.grid, geo, params.conf, params.iou, params.max_det, params.classes)

    def detect_steps(self, image: np.ndarray, params: DetectParams) -> Steps[tuple[Detections, StageTimes]]:
        """The detection pipeline (``app.pipeline``); inference time includes any wait for a batch."""
        t0 = time.perf_counter()
        batch, geo = self.preprocess(image)
        t1 = time.perf_counter()
        raw = yield Infer(self, batch)
        t2 = time.perf_counter()
        dets = self.postprocess(raw[0], geo, params)
        return dets, StageTimes((t1 - t0) * 1000, (t2 - t1) * 1000, _ms(t2))

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
