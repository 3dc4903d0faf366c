"""Typed dependencies: routes ask for what they need, tests override it.

Each is ``async def``: they only read the app's state, and FastAPI would run a plain ``def``
dependency on its thread pool, a thread hop per dependency per request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.models.anchor_detector import Detector
from app.errors import Unavailable
from app.faces import FaceAnalyzer
from app.gallery import Gallery
from app.pipeline import Engine
from app.registry import ModelRegistry
from app.models.segmenter import Segmenter
from app.settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def _registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def get_registry(request: Request) -> ModelRegistry:
    return _registry(request)


async def get_detector(request: Request) -> Detector:
    return _registry(request).detector()


async def get_segmenter(request: Request) -> Segmenter:
    return _registry(request).segmentation()


async def get_faces(request: Request) -> FaceAnalyzer:
    """The face detector and landmarks (``/faces/detect``)."""
    return _registry(request).faces(embedding=False)


async def get_faces_embed(request: Request) -> FaceAnalyzer:
    """The whole face pipeline, embedder included (verify, identify, enroll)."""
    return _registry(request).faces(embedding=True)


async def get_gallery(request: Request) -> Gallery:
    _registry(request).faces(embedding=True)   # the gallery opens once the embedder is in
    gallery = getattr(request.app.state, "gallery", None)
    if gallery is None:
        raise Unavailable("the face gallery is not open; see the server log", code="gallery_unavailable")
    return gallery


async def get_engine(request: Request) -> Engine:
    """Runs the pipelines: CPU work on the app's thread pool, model runs through their batchers."""
    return request.app.state.engine


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
DetectorDep = Annotated[Detector, Depends(get_detector)]
SegmenterDep = Annotated[Segmenter, Depends(get_segmenter)]
EngineDep = Annotated[Engine, Depends(get_engine)]
FacesDep = Annotated[FaceAnalyzer, Depends(get_faces)]
FacesEmbedDep = Annotated[FaceAnalyzer, Depends(get_faces_embed)]
GalleryDep = Annotated[Gallery, Depends(get_gallery)]
