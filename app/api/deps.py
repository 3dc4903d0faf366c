"""Typed dependencies: routes ask for what they need, tests override it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, TypeVar

from fastapi import Depends, Request

from app.detector import ObjectDetector
from app.errors import Unavailable
from app.faces import FaceAnalyzer
from app.gallery import Gallery
from app.registry import ModelRegistry
from app.segmenter import Segmenter
from app.settings import Settings

T = TypeVar("T")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def get_detector(request: Request) -> ObjectDetector:
    return get_registry(request).detector()


def get_segmenter(request: Request) -> Segmenter:
    return get_registry(request).segmentation()


def get_faces(request: Request) -> FaceAnalyzer:
    """The face detector and landmarks (``/faces/detect``)."""
    return get_registry(request).faces(embedding=False)


def get_faces_embed(request: Request) -> FaceAnalyzer:
    """The whole face pipeline, embedder included (verify, identify, enroll)."""
    return get_registry(request).faces(embedding=True)


def get_gallery(request: Request) -> Gallery:
    get_registry(request).faces(embedding=True)   # the gallery opens once the embedder is in
    gallery = getattr(request.app.state, "gallery", None)
    if gallery is None:
        raise Unavailable("the face gallery is not open; see the server log", code="gallery_unavailable")
    return gallery


class Offload:
    """Runs blocking work (decode, ONNX Runtime, FAISS) on the app's thread pool, off the event loop."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool = pool

    async def __call__(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)


def get_offload(request: Request) -> Offload:
    return Offload(request.app.state.pool)


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
DetectorDep = Annotated[ObjectDetector, Depends(get_detector)]
SegmenterDep = Annotated[Segmenter, Depends(get_segmenter)]
OffloadDep = Annotated[Offload, Depends(get_offload)]
FacesDep = Annotated[FaceAnalyzer, Depends(get_faces)]
FacesEmbedDep = Annotated[FaceAnalyzer, Depends(get_faces_embed)]
GalleryDep = Annotated[Gallery, Depends(get_gallery)]
