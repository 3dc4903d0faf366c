"""The app factory: wiring only. Models load in the lifespan, in the background, so that
``/healthz`` answers at once and ``/readyz`` says 503 until every model is in."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api import detect, faces, health, segment, subjects
from app.errors import install_error_handlers
from app.gallery import Gallery, GalleryLocked
from app.limits import BodyLimitMiddleware
from app.registry import ModelRegistry, load_models
from app.settings import Settings

log = logging.getLogger("sightline")


def _start(app: FastAPI) -> None:
    """Load the models, then open the gallery for the embedder they hold; ready after both."""
    settings, registry = app.state.settings, app.state.registry
    load_models(settings, registry)
    if registry.embedder is not None:
        app.state.gallery = Gallery.open(settings.data_dir, registry.embedder.fingerprint,
                                         registry.embedder.meta.embedding_dim)
    registry.ready = True


async def _load(app: FastAPI) -> None:
    try:
        await asyncio.get_running_loop().run_in_executor(app.state.pool, _start, app)
    except Exception as exc:  # a model or gallery that cannot be served: keep answering, say why in /readyz
        registry = app.state.registry
        registry.error = str(exc)
        if isinstance(exc, GalleryLocked):
            registry.error_code = "gallery_unavailable"
        log.error("start-up failed: %s", registry.error_message)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    workers = settings.worker_threads or (os.cpu_count() or 1) + 2
    app.state.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sightline")
    app.state.registry = ModelRegistry()
    app.state.gallery = None
    loading = asyncio.create_task(_load(app))
    try:
        yield
    finally:
        loading.cancel()
        app.state.pool.shutdown(wait=True, cancel_futures=True)
        if app.state.gallery is not None:
            app.state.gallery.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = FastAPI(title="Sightline", version="0.1.0", lifespan=lifespan,
                  description="Self-hosted computer vision: detection, segmentation, faces.")
    app.state.settings = settings
    app.state.registry = ModelRegistry()
    app.state.gallery = None
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.include_router(health.router)
    app.include_router(detect.router)
    app.include_router(segment.router)
    app.include_router(faces.router)
    app.include_router(subjects.router)
    return app


def main() -> None:
    """``python -m app``: serve on SIGHTLINE_HOST:SIGHTLINE_PORT."""
    import uvicorn

    settings = Settings()
    uvicorn.run("app.main:create_app", factory=True, host=settings.host, port=settings.port,
                log_level=settings.log_level.lower())
