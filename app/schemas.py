"""Pydantic response models: the API contract."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Box(BaseModel):
    """Pixels of the original image (display orientation), continuous coordinates."""

    x1: float
    y1: float
    x2: float
    y2: float


class ModelRef(BaseModel):
    name: str
    version: str


class ImageSize(BaseModel):
    width: int
    height: int


class Detection(BaseModel):
    box: Box
    score: float = Field(ge=0, le=1)
    class_id: int
    label: str


class DetectTimings(BaseModel):
    decode: float
    preprocess: float
    inference: float
    postprocess: float


class DetectResponse(BaseModel):
    model: ModelRef
    image: ImageSize
    detections: list[Detection]
    timings_ms: DetectTimings


class ModelInfo(BaseModel):
    name: str
    task: str
    version: str
    file: str
    execution_provider: str
    metadata: dict[str, Any]


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class Status(BaseModel):
    status: str


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail
