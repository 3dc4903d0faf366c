"""The models the server holds, loaded from the models directory in the app's lifespan.

Each ``*.onnx`` file says what it is in its metadata (``task``); the registry builds the matching
model class and never guesses from names or shapes. A file whose task this server does not serve
is logged and left out; a file that claims a served task but cannot be loaded stops start-up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from app.detector import ObjectDetector
from app.errors import Unavailable
from app.runtime import ModelLoadError, create_session, read_metadata
from app.settings import Settings

log = logging.getLogger("sightline.registry")

DETECTION = "detection"


@dataclass
class ModelRegistry:
    detectors: dict[str, ObjectDetector] = field(default_factory=dict)
    ready: bool = False
    error: str | None = None  # why loading failed, when it did

    def detector(self) -> ObjectDetector:
        """The object detector serving ``/detect``."""
        if self.error:
            raise Unavailable(f"models failed to load: {self.error}", code="model_load_failed")
        if not self.ready:
            raise Unavailable("models are still loading; retry shortly", headers={"Retry-After": "1"})
        if not self.detectors:
            raise Unavailable("no detection model is installed in the models directory",
                              code="model_not_available")
        return next(iter(self.detectors.values()))

    def describe(self) -> list[ObjectDetector]:
        return list(self.detectors.values())


def load_models(settings: Settings, registry: ModelRegistry) -> None:
    """Fill ``registry`` from ``settings.models_dir`` (blocking: call it off the event loop)."""
    models_dir = Path(settings.models_dir)
    if not models_dir.is_dir():
        raise ModelLoadError(f"models directory {models_dir} does not exist (SIGHTLINE_MODELS_DIR)")
    for path in sorted(models_dir.glob("*.onnx")):
        session = create_session(path, settings)
        meta = read_metadata(session)
        task = meta.get("task")
        if task == DETECTION:
            det = ObjectDetector.from_session(session, meta, path)
            registry.detectors[det.meta.name] = det
        else:
            log.warning("%s: task %r is not served by this version; skipped", path.name, task)
    registry.ready = True
    log.info("models ready: %s", ", ".join(registry.detectors) or "none")
