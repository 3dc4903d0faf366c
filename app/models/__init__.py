"""The served model families, one module each, and the one metadata contract (``metadata``).

``load_model`` reads a file's metadata and builds the class of its ``family``; nothing is guessed
from the file's name or its tensors' shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort

from app.models.anchor_detector import Detector, ObjectDetector
from app.models.base import OnnxModel
from app.models.embedder import FaceEmbedder
from app.models.landmarks import LandmarkModel
from app.models.metadata import FAMILIES
from app.models.nanodet import NanoDetDetector
from app.models.scrfd import ScrfdDetector
from app.models.segmenter import Segmenter
from app.models.ssd_detector import BoxesDetector
from app.models.yolo import YoloDetector, YoloSegDetector
from app.runtime import ModelLoadError, create_session, read_metadata
from app.settings import Settings

MODEL_CLASSES: tuple[type[OnnxModel], ...] = (ObjectDetector, NanoDetDetector, BoxesDetector, ScrfdDetector,
                                               LandmarkModel, FaceEmbedder, Segmenter, YoloDetector, YoloSegDetector)
FaceDetector = ObjectDetector | BoxesDetector | ScrfdDetector


def model_class(family: str) -> type[OnnxModel]:
    """The class that serves ``family`` (``ModelLoadError`` for one this version does not know)."""
    for cls in MODEL_CLASSES:
        if family in cls.families:
            return cls
    raise ModelLoadError(f"family {family!r} is not served by this version (known: {', '.join(sorted(FAMILIES))})")


def load_model(session: ort.InferenceSession, raw: dict[str, Any], path: Path) -> OnnxModel:
    """The served model for ``session``, whose metadata is ``raw``."""
    family = raw.get("family")
    if not isinstance(family, str):
        raise ModelLoadError(f"{path.name}: its metadata names no family (write one with python -m app.models import)")
    return model_class(family).from_session(session, raw, path)


def load_detector(path: Path, settings: Settings) -> Detector:
    """A detection model file of any family, loaded alone (benchmarks, scripts), its runs following
    ``settings``' thread plan."""
    session = create_session(path, settings)
    model = load_model(session, read_metadata(session), path)
    if not isinstance(model, Detector):
        raise ModelLoadError(f"{path.name}: a {model.meta.family} model is not an object detector")
    model.runner.follow(settings)
    return model
