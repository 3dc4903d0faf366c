"""Pydantic response models: the API contract."""

from __future__ import annotations

from typing import Any, Literal

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


class Rle(BaseModel):
    """COCO run-length encoding (compressed string), as ``pycocotools.mask.decode`` reads it."""

    size: tuple[int, int] = Field(description="[height, width]")
    counts: str


class Detection(BaseModel):
    box: Box
    score: float = Field(ge=0, le=1)
    class_id: int
    label: str
    mask: Rle | None = Field(default=None, description=(
        "instance-segmentation detectors only (mask_format=rle, their default): the instance's pixels in the "
        "photo, as COCO RLE; absent for other detectors"))
    polygons: list[list[tuple[float, float]]] | None = Field(default=None, description=(
        "instance-segmentation detectors only, with mask_format=polygon: the outlines of the instance's "
        "pixels, [x, y] vertices at outline pixels' centres (photo pixels); absent otherwise"))


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
    io_binding: bool = Field(description=(
        "inputs kept in device buffers between runs (CUDA with SIGHTLINE_IO_BINDING=true; off by default)"))
    lone_run_threads: int = Field(description=(
        "ONNX Runtime threads of the second session a run takes when no other run of this model is in "
        "flight; 0: none (every run on the thread plan's own session)"))
    batch_sizes: list[int] | None = Field(description=(
        "the only batch sizes this model runs at, each on a session of its own, a batch padded up to the "
        "next (SIGHTLINE_FIXED_BATCH_SIZES; on CUDA by default); null: any size up to SIGHTLINE_MAX_BATCH"))
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


# ---- faces ----------------------------------------------------------------------------------

class FaceOut(BaseModel):
    box: Box
    score: float = Field(ge=0, le=1)
    landmarks: list[tuple[float, float]] = Field(
        description="left eye, right eye, nose tip, left mouth corner, right mouth corner (as seen in the image)")


class FacesDetectResponse(BaseModel):
    model: ModelRef
    image: ImageSize
    faces: list[FaceOut]


class VerifyResponse(BaseModel):
    verified: bool = Field(description="distance <= threshold")
    distance: float = Field(description="squared Euclidean distance between the unit embeddings, 0 to 4")
    similarity: float = Field(description="cosine similarity, 1 - distance / 2")
    probability: float | None = Field(description="match probability from the verification head")
    threshold: float = Field(description="distance threshold, calibrated at the embedder's target false-accept rate")
    faces: list[FaceOut] = Field(description="the largest face of image1, then of image2")


class MatchOut(BaseModel):
    subject_id: str
    name: str
    similarity: float
    distance: float


class IdentityOut(BaseModel):
    subject_id: str
    name: str


class IdentifiedFace(FaceOut):
    matches: list[MatchOut]
    identity: IdentityOut | None = Field(description="the best match when within the threshold, else null")


class IdentifyResponse(BaseModel):
    threshold: float
    faces: list[IdentifiedFace]


class SubjectCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    metadata: dict[str, Any] = Field(default_factory=dict)


class SubjectOut(BaseModel):
    id: str
    name: str
    metadata: dict[str, Any]
    created_at: str
    face_ids: list[int]


class SubjectList(BaseModel):
    subjects: list[SubjectOut]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last page")


class EnrolledFace(BaseModel):
    face_id: int
    subject_id: str
    box: Box


# ---- segmentation ---------------------------------------------------------------------------

class SegmentClass(BaseModel):
    class_id: int
    label: str
    pixels: int
    fraction: float = Field(ge=0, le=1, description="pixels / (width x height)")
    rle: Rle | None = Field(default=None, description="this class's pixels, with rle=true")


class EncodedImage(BaseModel):
    encoding: str = Field(description="png: the class-id mask, one byte per pixel; jpeg: the overlay")
    data: str = Field(description="base64 of the file")


class SegmentTimings(BaseModel):
    decode: float
    preprocess: float
    inference: float
    postprocess: float
    gate: float | None = Field(default=None, description=(
        "a foreground model gated by the detector's boxes (box_gate): the detection's milliseconds; "
        "null for other segmenters"))
    encode: float


class SegmentResponse(BaseModel):
    model: ModelRef
    image: ImageSize
    classes: list[SegmentClass] = Field(description="the classes present in the mask, by class id")
    mask: EncodedImage = Field(description="single-channel PNG of class ids at the original resolution")
    overlay: EncodedImage | None = Field(default=None, description="JPEG of the photo with the classes drawn, "
                                                                   "with overlay=true")
    timings_ms: SegmentTimings


class DetectBatchResponse(BaseModel):
    results: list[DetectResponse] = Field(description="one result per image part, in the order sent")


class FacesDetectBatchResponse(BaseModel):
    results: list[FacesDetectResponse] = Field(description="one result per image part, in the order sent")


class SegmentBatchResponse(BaseModel):
    results: list[SegmentResponse] = Field(description="one result per image part, in the order sent")


class RocPoint(BaseModel):
    far: float
    tar: float
    threshold: float


class CalibrationOut(BaseModel):
    threshold: float = Field(description="squared L2 distance of unit embeddings at or below which two faces match")
    target_far: float | None = Field(description="the false-accept rate it was set at, where it was")
    far: float | None = Field(None, description="the false-accept rate measured at the threshold")
    tar: float | None = Field(None, description="the true-accept rate measured at the threshold")
    method: str | None = Field(description="how it was set")
    genuine_pairs: int | None = None
    impostor_pairs: int | None = None
    roc: list[RocPoint]
    source: Literal["model_file", "calibration"] = Field(description=(
        "model_file: the threshold the embedder's file carries; calibration: set by POST /admin/calibration"))
    photos: int | None = Field(None, description="photos in the archive (POST only)")
    photos_without_face: int | None = Field(None, description="photos where no face was found or read (POST only)")
