"""The base of every served model: an ONNX Runtime session, its validated metadata and its runner.

A family module subclasses ``OnnxModel`` with its preprocessing and decoding; ``load_model``
(``app.models``) picks the subclass from the metadata's ``family``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort

from app.models.metadata import MetadataError, ModelMeta, Normalization, validate_metadata
from app.runtime import ModelLoadError, SessionRunner
from app.vision.letterbox import to_tensor


def normalise(images: np.ndarray, norm: Normalization) -> np.ndarray:
    """``(B, S, S, 3) uint8`` RGB → ``(B, 3, S, S) float32`` in the model's colour order, with its
    mean and std (of x / 255)."""
    if norm.color == "BGR":
        images = images[..., ::-1]
    return to_tensor(images, norm.mean, norm.std)


class OnnxModel(ABC):
    """One model file, thread-safe like its session. Subclasses name the families they decode and
    check, once at load, that the graph's output matches what the metadata declares."""

    families: ClassVar[tuple[str, ...]] = ()
    meta: ModelMeta

    def __init__(self, session: ort.InferenceSession, meta: ModelMeta, path: Path) -> None:
        self.session, self.meta, self.path = session, meta, path
        self.runner = SessionRunner(session)
        self.raw_metadata: dict[str, Any] = {}

    @classmethod
    def from_session(cls, session: ort.InferenceSession, raw: dict[str, Any], path: Path):
        try:
            meta = validate_metadata(raw, path.name)
        except MetadataError as exc:
            raise ModelLoadError(str(exc)) from exc
        if meta.family not in cls.families:
            raise ModelLoadError(f"{path.name}: a {meta.family} model is not served by {cls.__name__}")
        model = cls(session, meta, path)
        model.raw_metadata = raw
        model.check_output()
        return model

    def check_output(self) -> None:
        """Run a zero input; ``ModelLoadError`` when the output is not what the metadata implies."""
        size = self.meta.input_size
        out = self.run(np.zeros((1, 3, size, size), np.float32))
        expected = self.expected_output()
        if out.shape != expected:
            raise ModelLoadError(f"{self.path.name}: output shape {out.shape} != {expected} from its metadata")

    @abstractmethod
    def expected_output(self) -> tuple[int, ...]:
        """The output shape of a one-row batch, as the metadata implies."""

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.runner.run(batch)
