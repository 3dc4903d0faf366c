"""The models the server holds, loaded from the models directory in the app's lifespan.

Each ``*.onnx`` file says what it is in its metadata (``task``); the registry builds the matching
model class and never guesses from names or shapes. A file whose task this server does not serve
is logged and left out; a file that claims a served task but cannot be loaded stops start-up.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.errors import Unavailable
from app.faces import FaceAnalyzer
from app.models import FaceDetector, load_model
from app.models.anchor_detector import Detector
from app.models.base import OnnxModel
from app.models.embedder import FaceEmbedder
from app.models.landmarks import LandmarkModel
from app.models.metadata import DETECTION, FACE_DETECTION, FACE_EMBEDDING, FACE_LANDMARKS, SEGMENTATION, TASKS
from app.models.segmenter import Segmenter
from app.runtime import ModelLoadError, ThreadPlan, create_session, fixed_batch_sizes, read_metadata, thread_plan
from app.settings import Settings

log = logging.getLogger("sightline.registry")


@dataclass
class ModelRegistry:
    detectors: dict[str, Detector] = field(default_factory=dict)
    face_detector: FaceDetector | None = None
    landmarks: LandmarkModel | None = None
    embedder: FaceEmbedder | None = None
    segmenter: Segmenter | None = None
    ready: bool = False
    error: str | None = None  # why start-up failed, when it did
    error_code: str = "model_load_failed"
    face_min_fraction: float = 0.02
    face_min_size: float = 40.0   # the smallest face the face routes look for (SIGHTLINE_FACE_MIN_SIZE)

    @property
    def error_message(self) -> str:
        what = "the face gallery could not be opened" if self.error_code == "gallery_unavailable" else \
            "models failed to load"
        return f"{what}: {self.error}"

    def _check_ready(self) -> None:
        if self.error:
            raise Unavailable(self.error_message, code=self.error_code)
        if not self.ready:
            raise Unavailable("models are still loading; retry shortly", headers={"Retry-After": "1"})

    def detector(self) -> Detector:
        """The object detector serving ``/detect``."""
        self._check_ready()
        if not self.detectors:
            raise Unavailable("no detection model is installed in the models directory",
                              code="model_not_available")
        return next(iter(self.detectors.values()))

    def segmentation(self) -> Segmenter:
        """The segmenter serving ``/segment``."""
        self._check_ready()
        if self.segmenter is None:
            raise Unavailable("no segmentation model is installed in the models directory",
                              code="model_not_available")
        return self.segmenter

    def faces(self, embedding: bool) -> FaceAnalyzer:
        """The face pipeline; ``embedding`` when the route compares faces (verify, identify, enroll).
        A landmark model is needed only by a detector that gives no landmarks of its own."""
        self._check_ready()
        reads_landmarks = self.face_detector is None or not self.face_detector.gives_landmarks
        missing = [name for name, model, needed in (("face detection", self.face_detector, True),
                                                    ("face landmarks", self.landmarks, reads_landmarks),
                                                    ("face embedding", self.embedder, embedding))
                   if needed and model is None]
        if missing:
            raise Unavailable(f"no {' or '.join(missing)} model is installed in the models directory",
                              code="model_not_available")
        return FaceAnalyzer(self.face_detector, self.landmarks, self.embedder,  # type: ignore[arg-type]
                            self.face_min_size, self.face_min_fraction)

    def describe(self) -> list[OnnxModel]:
        others = [m for m in (self.segmenter, self.face_detector, self.landmarks, self.embedder) if m is not None]
        return [*self.detectors.values(), *others]


def load_models(settings: Settings, registry: ModelRegistry) -> None:
    """Fill ``registry`` from ``settings.models_dir`` (blocking: call it off the event loop): one
    folder, or several separated by ``os.pathsep`` (``models/synthetic:models``), where a task
    served by a file of an earlier folder is not taken from a later one."""
    folders = [Path(p) for p in str(settings.models_dir).split(os.pathsep) if p]
    for folder in folders:
        if not folder.is_dir():
            raise ModelLoadError(f"models directory {folder} does not exist (SIGHTLINE_MODELS_DIR)")
    plan = thread_plan(settings)                       # once: every session below follows it
    registry.face_min_size = settings.face_min_size
    registry.face_min_fraction = settings.face_min_fraction
    served: set[str] = set()
    for folder in folders:
        earlier = set(served)
        for path in sorted(folder.glob("*.onnx")):
            model = _load_file(path, settings, plan.intra_op, registry, earlier)
            if model is None:
                continue
            served.add(model.meta.task)
            _plan_runs(model, path, settings, plan)
    models = registry.describe()
    log.info("models loaded: %s", ", ".join(f"{m.meta.name} ({m.meta.task}, {m.meta.family})" for m in models)
             or "none")
    if settings.warmup == "on" or (settings.warmup == "auto" and any(m.runner.device == "cuda" for m in models)):
        warm_up(models, settings.max_batch)


def _load_file(path: Path, settings: Settings, intra_op: int, registry: ModelRegistry, taken: set[str]
               ) -> OnnxModel | None:
    """The model of ``path`` put in its place in ``registry``; None for a task this version does not
    serve or one an earlier folder already serves (``taken``)."""
    session = create_session(path, settings, intra_op)
    raw = read_metadata(session)
    task = raw.get("task")
    if task not in TASKS:
        log.warning("%s: task %r is not served by this version; skipped", path.name, task)
        return None
    if task in taken:
        log.info("%s: %s is served from an earlier models folder; skipped", path.name, task)
        return None
    model = load_model(session, raw, path)
    if task == DETECTION and isinstance(model, Detector):
        registry.detectors[model.meta.name] = model
    elif task == FACE_DETECTION:
        registry.face_detector = model  # type: ignore[assignment]
    elif task == FACE_LANDMARKS and isinstance(model, LandmarkModel):
        registry.landmarks = model
    elif task == FACE_EMBEDDING and isinstance(model, FaceEmbedder):
        registry.embedder = model
    elif task == SEGMENTATION and isinstance(model, Segmenter):
        registry.segmenter = model
    else:
        raise ModelLoadError(f"{path.name}: a {model.meta.family} model cannot serve {task}")
    return model


def _plan_runs(model: OnnxModel, path: Path, settings: Settings, plan: ThreadPlan) -> None:
    """The runner's sessions as the thread plan and settings ask: IO binding, a second session for
    runs alone, or one session per fixed batch size."""
    model.runner.follow(settings)
    if plan.lone_session and model.runner.device == "cpu":   # a second session for runs alone
        model.runner.use_lone(create_session(path, settings, plan.lone))
    fixed = settings.fixed_batch_sizes
    if model.runner.fixed_batch is not None:       # the graph takes one batch size only: nothing to choose
        return
    if fixed == "on" or (fixed == "auto" and model.runner.device == "cuda"):   # one input shape per session
        first, *more = fixed_batch_sizes(settings.max_batch)                   # the first on the session above
        model.runner.use_batch_sizes({first: model.session, **{s: create_session(path, settings, plan.intra_op)
                                                               for s in more}})


def warm_up(models: list[OnnxModel], max_batch: int) -> None:
    """Run each model once at every batch size it can run at (its fixed sizes, else 1..max_batch),
    so that no request pays for a first run at a new shape. On CUDA that first run is slow: ONNX
    Runtime plans every convolution for the shape (0.6-1.9 s per batch size for the detector on an
    H200). On the CPU (``SIGHTLINE_WARMUP=on``) these runs, each alone, take the lone sessions where
    there are some."""
    t0 = time.perf_counter()
    for model in models:
        size = model.meta.input_size
        fixed = model.runner.fixed_batch
        for batch in model.runner.batch_sizes or ([fixed] if fixed else range(1, max_batch + 1)):
            model.run(np.zeros((batch, 3, size, size), np.float32))
    log.info("warm-up: %d model(s) in %.1f s", len(models), time.perf_counter() - t0)
