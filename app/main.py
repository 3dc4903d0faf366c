"""The app factory: wiring only. Models load in the lifespan, in the background, so that
``/healthz`` answers at once and ``/readyz`` says 503 until every model is in."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType

import cv2
from fastapi import FastAPI

from app.admission import AdaptiveLimit
from app.api import admin, detect, faces, health, segment, subjects
from app.batching import BatchSettings
from app.errors import install_error_handlers
from app.gallery import Gallery
from app.limits import BodyLimitMiddleware
from app.models.metadata import VerificationMeta
from app.observability import MULTIPROC_ENV, Metrics, RequestMiddleware
from app.pipeline import Engine
from app.registry import ModelRegistry, load_models
from app.runtime import thread_plan
from app.services.calibration import CalibrationStore
from app.settings import Settings

log = logging.getLogger("sightline")


class _GalleryFailed(RuntimeError):
    """The face gallery could not be opened (the message is the cause's)."""


def _start(app: FastAPI) -> None:
    """Load the models, then open the gallery for the embedder they hold (blocking: off the loop)."""
    settings, registry = app.state.settings, app.state.registry
    load_models(settings, registry)
    if registry.embedder is not None:
        try:
            app.state.gallery = Gallery.open(settings.data_dir, registry.embedder.fingerprint,
                                             registry.embedder.meta.embedding_dim)
        except Exception as exc:
            raise _GalleryFailed(str(exc)) from exc
        saved = CalibrationStore(settings.data_dir).load(registry.embedder.fingerprint)
        if saved is not None:   # a threshold calibrated through POST /admin/calibration for these weights
            registry.embedder.use_verification(VerificationMeta.model_validate(saved))
            log.info("verification threshold %.4f from %s/calibration.json", saved["threshold"], settings.data_dir)


async def _load(app: FastAPI) -> None:
    registry = app.state.registry
    try:
        await asyncio.get_running_loop().run_in_executor(app.state.pool, _start, app)
    except Exception as exc:  # a model or gallery that cannot be served: keep answering, say why in /readyz
        registry.error = str(exc)
        if isinstance(exc, _GalleryFailed):
            registry.error_code = "gallery_unavailable"
        log.error("start-up failed: %s", registry.error_message)
        return
    for model in registry.describe():          # one batcher per model, started on this loop
        app.state.engine.add(model, model.meta.name)
    registry.ready = True


def _drain_on_sigterm(app: FastAPI) -> None:
    """On SIGTERM, turn /readyz 503 at once (load balancers stop sending); after
    ``SIGHTLINE_DRAIN_SECONDS`` hand the signal on to the server, which stops accepting, lets the
    requests in flight finish, and exits."""
    if threading.current_thread() is not threading.main_thread():
        return   # signals reach the main thread only (a test client runs the app elsewhere)
    previous = signal.getsignal(signal.SIGTERM)
    loop = asyncio.get_running_loop()
    drain = app.state.settings.drain_seconds

    def stop(signum: int, frame: FrameType | None) -> None:
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:           # nobody else listens: die as SIGTERM would have
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    def handler(signum: int, frame: FrameType | None) -> None:
        if app.state.draining:
            stop(signum, frame)                    # a second SIGTERM: stop now
            return
        app.state.draining = True
        log.info("SIGTERM: /readyz answers 503; closing in %.1f s, requests in flight finish", drain)
        if drain > 0:
            loop.call_soon_threadsafe(loop.call_later, drain, stop, signum, None)
        else:
            stop(signum, frame)

    signal.signal(signal.SIGTERM, handler)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    plan = thread_plan(settings)
    log.info("threads: %d pool workers; per model %d run(s) side by side, %d ONNX Runtime thread(s) each%s",
             plan.workers, plan.instances, plan.intra_op,
             f", a run alone on {plan.lone}" if plan.lone_session else "")
    # The pool already spreads requests over the cores: OpenCV's own parallel loops inside one call
    # would only oversubscribe them (alone, 0.91 against 0.60 CPU ms per 640x480 letterbox + tensor; in
    # the server at 16 clients its helper threads took 0.14-0.18 CPU ms per photo for no more throughput)
    cv2.setNumThreads(1)
    app.state.pool = ThreadPoolExecutor(max_workers=plan.workers, thread_name_prefix="sightline")
    app.state.registry = ModelRegistry()
    app.state.gallery = None
    app.state.draining = False
    app.state.engine = Engine(app.state.pool, BatchSettings(
        max_batch=settings.max_batch, max_delay_ms=settings.max_delay_ms, max_queue=settings.max_queue,
        instances=plan.instances),
        app.state.metrics)
    _drain_on_sigterm(app)
    loading = asyncio.create_task(_load(app))
    try:
        yield
    finally:
        app.state.draining = True
        loading.cancel()
        await app.state.engine.stop()
        app.state.pool.shutdown(wait=True, cancel_futures=True)
        if app.state.gallery is not None:
            app.state.gallery.close()
        app.state.metrics.process_ended()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = FastAPI(title="Sightline", version="0.1.0", lifespan=lifespan,
                  description="Self-hosted computer vision: detection, segmentation, faces.")
    app.state.settings = settings
    app.state.registry = ModelRegistry()
    app.state.gallery = None
    app.state.draining = False
    app.state.metrics = Metrics()
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.state.limiter = AdaptiveLimit(min(settings.min_in_flight, settings.max_in_flight), settings.max_in_flight,
                                      settings.latency_tolerance)
    app.add_middleware(RequestMiddleware, metrics=app.state.metrics, timeout_ms=settings.request_timeout_ms,
                       limiter=app.state.limiter, standing_after=settings.standing_after)
    app.include_router(health.router)
    app.include_router(detect.router)
    app.include_router(segment.router)
    app.include_router(faces.router)
    app.include_router(subjects.router)
    app.include_router(admin.router)
    return app


def _metrics_dir(workers: int) -> str | None:
    """With several server processes, give prometheus-client a folder for their values (before any
    process imports it): ``PROMETHEUS_MULTIPROC_DIR`` if set, emptied of an earlier run's files, else
    a new temporary one, returned (removed when the server exits)."""
    if workers <= 1:
        return None
    folder = os.environ.get(MULTIPROC_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for stale in Path(folder).glob("*.db"):
            stale.unlink()
        return None
    os.environ[MULTIPROC_ENV] = created = tempfile.mkdtemp(prefix="sightline-metrics-")
    return created


def main() -> None:
    """``python -m app``: serve on SIGHTLINE_HOST:SIGHTLINE_PORT with SIGHTLINE_WORKERS processes."""
    import uvicorn

    settings = Settings()
    created = _metrics_dir(settings.workers)
    try:
        uvicorn.run("app.main:create_app", factory=True, host=settings.host, port=settings.port,
                    workers=settings.workers, log_level=settings.log_level.lower())
    finally:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
