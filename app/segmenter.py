"""The semantic segmenter as served: the U-Net's preprocessing contract (input size, normalisation,
output stride, class names and colours) read from its own metadata, ONNX Runtime inference, then
the logits taken back to the original image (``app.vision.masks``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from pydantic import BaseModel, ConfigDict, model_validator

from app.detector import Normalization, StageTimes
from app.imaging import DecodedImage, decode_image
from app.pipeline import Infer, Steps, run_steps
from app.runtime import ModelLoadError, SessionRunner, parse_metadata
from app.vision.letterbox import letterbox, to_tensor
from app.vision.masks import logits_to_mask

SEGMENTATION = "segmentation"


class SegmenterMeta(BaseModel):
    """What a segmentation model file must declare about itself."""

    model_config = ConfigDict(extra="allow")

    name: str
    task: str
    version: str
    class_names: list[str]              # index = class id; 0 is the background
    colors: list[tuple[int, int, int]]  # RGB per class, for overlays
    input_size: int
    output_stride: int = 1              # logits are (C, input_size / stride, input_size / stride)
    normalization: Normalization

    @model_validator(mode="after")
    def _one_colour_per_class(self) -> SegmenterMeta:
        if len(self.colors) != len(self.class_names):
            raise ValueError(f"{len(self.colors)} colours for {len(self.class_names)} classes")
        if not 1 < len(self.class_names) <= 255:
            raise ValueError("a segmenter has 2 to 255 classes (class ids are one byte; 255 is reserved)")
        if self.input_size % self.output_stride:
            raise ValueError(f"input_size {self.input_size} is not a multiple of output_stride {self.output_stride}")
        return self


@dataclass(frozen=True)
class Segmentation:
    mask: np.ndarray   # (H, W) uint8 class ids at the original resolution
    times: StageTimes


class Segmenter:
    """One segmentation model. Thread-safe: ONNX Runtime sessions may be run concurrently."""

    def __init__(self, session: ort.InferenceSession, meta: SegmenterMeta, path: Path) -> None:
        self.session, self.meta, self.path = session, meta, path
        self.runner = SessionRunner(session)
        self.raw_metadata: dict[str, Any] = {}

    @classmethod
    def from_session(cls, session: ort.InferenceSession, raw: dict[str, Any], path: Path) -> Segmenter:
        meta = parse_metadata(SegmenterMeta, raw, path, "a segmenter")
        model = cls(session, meta, path)
        model.raw_metadata = raw
        size, side = meta.input_size, meta.input_size // meta.output_stride
        out = model.run(np.zeros((1, 3, size, size), np.float32))
        if out.shape != (1, len(meta.class_names), side, side):
            raise ModelLoadError(f"{path.name}: output shape {out.shape} != {(1, len(meta.class_names), side, side)} "
                                 "from its metadata")
        return model

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    @property
    def num_classes(self) -> int:
        return len(self.meta.class_names)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """``(B, 3, S, S) float32`` → logits ``(B, C, S / stride, S / stride)``."""
        return self.runner.run(batch)

    def segment_steps(self, image: np.ndarray) -> Steps[Segmentation]:
        """``HxWx3 uint8 RGB`` → class ids at the image's own resolution (``app.pipeline`` steps)."""
        return self._steps(image, 1, None)

    def decode(self, data: bytes, max_pixels: int, full: bool = False) -> DecodedImage:
        """An upload decoded for this segmenter: a large JPEG comes already shrunk towards the input
        size in its DCT (``app.imaging``, rule 7), unless ``full`` (an overlay draws on every pixel)."""
        return decode_image(data, max_pixels, fit=None if full else self.meta.input_size)

    def photo_steps(self, image: DecodedImage) -> Steps[Segmentation]:
        """``segment_steps`` on a decoded upload: the mask at the photo's own resolution, however
        shrunk ``image.rgb`` was decoded."""
        return self._steps(image.rgb, image.reduction, (image.photo_width, image.photo_height))

    def _steps(self, image: np.ndarray, reduction: int, photo: tuple[int, int] | None) -> Steps[Segmentation]:
        t0 = time.perf_counter()
        canvas, geo = letterbox(image, self.meta.input_size)
        norm = self.meta.normalization
        batch = to_tensor(canvas[None], norm.mean, norm.std)
        t1 = time.perf_counter()
        logits = (yield Infer(self, batch))[0]
        t2 = time.perf_counter()
        if reduction != 1 and photo is not None:
            # photo pixel X is decoded coordinate X / reduction (DCT scaling): the photo's own letterbox
            geo = replace(geo, scale=geo.scale / reduction, width=photo[0], height=photo[1])
        mask = logits_to_mask(logits, geo, self.meta.output_stride)
        t3 = time.perf_counter()
        return Segmentation(mask, StageTimes((t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000))

    def segment(self, image: np.ndarray) -> Segmentation:
        return run_steps(self.segment_steps(image))
