"""The one metadata contract of a Sightline model file.

Every ``models/*.onnx`` carries, JSON-encoded in ``metadata_props``, what is needed to run it: its
task, its ``family`` (which module decodes it), input size, colour order and normalisation, and the
family's own fields (anchors, class names, landmark points, template, threshold...), with where the
weights came from and under which licence. The exporters of ``training/``, the converters of
``training/pretrained/`` and the import command (``python -m app.models import``) all validate
through ``validate_metadata`` before they write a file, so a bad file is refused when it is
written; the server validates again when it loads it, and never guesses from shapes or names.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DETECTION, SEGMENTATION = "detection", "segmentation"
FACE_DETECTION, FACE_LANDMARKS, FACE_EMBEDDING = "face_detection", "face_landmarks", "face_embedding"
TASKS = (DETECTION, SEGMENTATION, FACE_DETECTION, FACE_LANDMARKS, FACE_EMBEDDING)


class MetadataError(ValueError):
    """A model file's metadata that does not describe a model Sightline can serve."""


class Normalization(BaseModel):
    """Input tensor = ``(x / 255 - mean) / std`` per channel, channels in ``color`` order."""

    color: Literal["RGB", "BGR"] = "RGB"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class ModelMeta(BaseModel):
    """What every model file declares. ``extra`` keys (training figures, cards) are kept as they are."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    task: Literal["detection", "segmentation", "face_detection", "face_landmarks", "face_embedding"]
    family: str
    version: str
    input_size: int = Field(gt=0)        # side of the square input the model is run at
    fixed_size: bool = False             # True: the graph takes only input_size (letterboxed or tiled to it)
    normalization: Normalization
    license: str | None = None           # of the weights, e.g. "CC0-1.0"; None = trained by Sightline
    source: str | None = None            # where the weights came from (package, file, version)
    weights_sha256: str | None = None    # of the original weights file, where converted


class AnchorDetectorMeta(ModelMeta):
    """``anchor-yolo``: Sightline's own YOLO-style anchor detector; raw ``(B, N, 5 + C)`` output."""

    family: Literal["anchor-yolo"]
    class_names: list[str] = Field(min_length=1)
    anchors: list[list[list[float]]]
    strides: list[int]
    output_layout: str


class FixedDetectorMeta(ModelMeta):
    """A face detector whose graph decodes its own anchors at a fixed input (``input_size``): rows of
    ``x1, y1, x2, y2`` in input pixels and the face probability first. A photo is placed in the
    input as the model's authors did (``pad``); one too large for its small faces is tiled by the
    face pipeline down to ``min_face``."""

    boxes: int = Field(gt=0)             # rows of the output (anchors)
    min_face: float = Field(gt=0)        # the smallest face (input pixels) it finds reliably: sets tiling
    score_threshold: float = 0.5         # the authors' default operating point
    pad: Literal["bottom_right", "centre"] = "bottom_right"   # how a photo is placed in the square input


class BoxesDetectorMeta(FixedDetectorMeta):
    """``ssd-boxes``: ``(B, N, 5)`` rows of ``x1, y1, x2, y2`` in input pixels and the face
    probability (face-api's SSD MobileNetV1)."""

    family: Literal["ssd-boxes"]
    class_names: list[str] = Field(min_length=1, max_length=1)


class ScrfdMeta(FixedDetectorMeta):
    """``scrfd``: InsightFace's SCRFD face detectors, their 9 outputs (score, box distances and
    keypoint offsets at strides 8, 16, 32) rewritten by the import command into one ``(B, N, 15)``
    output decoded in the graph: per anchor ``x1, y1, x2, y2``, the score, then the 5 landmarks'
    ``x, y`` (left eye, right eye, nose tip, left mouth corner, right mouth corner, as seen in the
    image), all in continuous input pixels. The landmarks come with the boxes: no landmark model."""

    family: Literal["scrfd"]
    class_names: list[str] = Field(default=["face"], min_length=1, max_length=1)
    landmarks: Literal[True] = True      # the output carries the 5 points (a file without keypoints is refused)


class LandmarkMeta(ModelMeta):
    """``crop-landmarks``: points regressed on a square crop around a face box, as fractions of the
    crop side. ``point_groups`` reduce the model's points to the 5 of the API (left eye, right eye,
    nose tip, left mouth corner, right mouth corner, as seen in the image): each of the 5 is the mean
    of the points listed (a 68-point model: the 6 points of each eye, the nose tip, the mouth corners)."""

    family: Literal["crop-landmarks"]
    points: int = 5
    point_groups: list[list[int]] | None = None
    crop_margin: float = Field(gt=0)     # crop side = box's longer side * crop_margin, centred on the box
    flip_test: bool = False              # average with the mirrored crop's points

    @model_validator(mode="after")
    def _five_points(self) -> LandmarkMeta:
        groups = self.point_groups
        if groups is None and self.points != 5:
            raise ValueError(f"a {self.points}-point model needs point_groups mapping its points to the 5 served")
        if groups is not None and self.flip_test:
            raise ValueError("the flip test averages 5-point readings; a model with point_groups cannot use it")
        if groups is not None and (len(groups) != 5 or any(not g or min(g) < 0 or max(g) >= self.points
                                                           for g in groups)):
            raise ValueError(f"point_groups must be 5 non-empty lists of indices below {self.points}")
        return self


class VerificationMeta(BaseModel):
    model_config = ConfigDict(extra="allow")

    threshold: float = Field(gt=0)       # squared L2 distance of unit embeddings
    target_far: float | None = None      # the false-accept rate it was set at, where it was
    method: str | None = None            # how the threshold was set (published operating point, calibration)
    roc: list[dict[str, float]] | None = None   # [{"far", "tar", "threshold"}, ...]


class HeadMeta(BaseModel):
    weights: list[float]
    bias: float


class EmbedderMeta(ModelMeta):
    """A face embedder fed a face aligned onto ``template`` (5 points, input pixels) by a similarity
    transform; its output is made unit length. Families: ``sightline-facenet`` (trained here),
    ``dlib-resnet`` (dlib's ResNet, 150 px chips), ``arcface`` (InsightFace's 112 px template)."""

    family: Literal["sightline-facenet", "dlib-resnet", "arcface"]
    embedding_dim: int = Field(gt=0)
    template: list[tuple[float, float]] = Field(min_length=5, max_length=5)   # fractions of the input side
    align_points: list[int] | None = None   # which of the 5 points the similarity is fitted to (None: all)
    distance: Literal["squared_l2"] = "squared_l2"
    verification: VerificationMeta
    verification_head: HeadMeta | None = None
    flip_test: bool = False

    @model_validator(mode="after")
    def _alignable(self) -> EmbedderMeta:
        points = self.align_points
        if points is not None and (len(set(points)) < 2 or not all(0 <= i < 5 for i in points)):
            raise ValueError("align_points must name at least 2 distinct points of the 5 (indices 0-4)")
        return self


class SegmenterMeta(ModelMeta):
    """``unet``: per-pixel class logits ``(B, C, S / stride, S / stride)``."""

    family: Literal["unet"]
    class_names: list[str]              # index = class id; 0 is the background
    colors: list[tuple[int, int, int]]  # RGB per class, for overlays
    output_stride: int = 1

    @model_validator(mode="after")
    def _one_colour_per_class(self) -> SegmenterMeta:
        if len(self.colors) != len(self.class_names):
            raise ValueError(f"{len(self.colors)} colours for {len(self.class_names)} classes")
        if not 1 < len(self.class_names) <= 255:
            raise ValueError("a segmenter has 2 to 255 classes (class ids are one byte; 255 is reserved)")
        if self.input_size % self.output_stride:
            raise ValueError(f"input_size {self.input_size} is not a multiple of output_stride {self.output_stride}")
        return self


class NanoDetMeta(ModelMeta):
    """``nanodet-gfl``: an anchor-free GFL detector (NanoDet); raw ``(B, N, C + 4 (reg_max + 1))``,
    one row per cell of each stride, class scores already sigmoid (``app.models.nanodet``)."""

    family: Literal["nanodet-gfl"]
    class_names: list[str] = Field(min_length=1)
    strides: list[int] = Field(min_length=1)
    reg_max: int = Field(gt=0)           # each side's distance is a distribution over 0..reg_max strides
    center_offset: float = 0.0           # a cell's centre is (x + offset, y + offset) strides

    @model_validator(mode="after")
    def _strides_divide_input(self) -> NanoDetMeta:
        if any(self.input_size % s for s in self.strides):
            raise ValueError(f"input_size {self.input_size} is not a multiple of every stride {self.strides}")
        return self


class ForegroundMaskMeta(SegmenterMeta):
    """``foreground-mask``: one output plane ``(B, 1, S / stride, S / stride)``, the probability of
    ``class_names[1]`` (e.g. MediaPipe's selfie segmentation: person); the rest is class 0."""

    family: Literal["foreground-mask"]  # type: ignore[assignment]
    threshold: float = Field(0.5, gt=0, lt=1)
    # A foreground model marks the main subject whatever it is (the selfie model calls a cat 97 %
    # person). With ``box_gate`` set to a label of the served detector, its pixels count only inside
    # that label's boxes (score >= box_gate_score, each side grown by box_gate_margin of the box).
    box_gate: str | None = None
    box_gate_score: float = Field(0.3, gt=0, lt=1)
    box_gate_margin: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _two_classes(self) -> ForegroundMaskMeta:
        if len(self.class_names) != 2:
            raise ValueError("a foreground-mask model has two classes: background and the one it finds")
        return self


class YoloMeta(ModelMeta):
    """``yolov5`` and ``yolov8`` (YOLOv8 and YOLO11): Ultralytics' YOLO exports as they come, one
    output of ``boxes`` candidates: ``yolov5`` rows ``(B, N, 5 + C)`` of ``cx, cy, w, h`` (input
    pixels), objectness and C class scores (score = objectness x class score); ``yolov8`` columns
    ``(B, 4 + C, N)`` of ``cx, cy, w, h`` and C class scores (``app.models.yolo``)."""

    family: Literal["yolov5", "yolov8"]
    class_names: list[str] = Field(min_length=1)
    boxes: int = Field(gt=0)             # candidates (N) in the output at input_size
    stride: int | None = None            # the coarsest stride, as Ultralytics' metadata gives it


class YoloSegMeta(YoloMeta):
    """``yolov5-seg`` and ``yolov8-seg``: Ultralytics' instance-segmentation exports, their two outputs
    (the detection layout of ``yolov5``/``yolov8`` with ``mask_channels`` mask coefficients after
    the class scores, and ``(B, mask_channels, proto_size, proto_size)`` prototypes) flattened and
    concatenated by the import command into one ``(B, K)`` output (``app.models.yolo``)."""

    family: Literal["yolov5-seg", "yolov8-seg"]  # type: ignore[assignment]
    mask_channels: int = Field(gt=0)     # coefficients per candidate = prototype planes (32)
    proto_size: int = Field(gt=0)        # side of the prototype planes (input_size / 4)

    @model_validator(mode="after")
    def _protos_within_input(self) -> YoloSegMeta:
        if self.proto_size > self.input_size:
            raise ValueError(f"proto_size {self.proto_size} is larger than input_size {self.input_size}")
        return self


# family -> its metadata class, and the tasks a file of that family may serve
FAMILIES: dict[str, tuple[type[ModelMeta], tuple[str, ...]]] = {
    "anchor-yolo": (AnchorDetectorMeta, (DETECTION, FACE_DETECTION)),
    "ssd-boxes": (BoxesDetectorMeta, (FACE_DETECTION,)),
    "scrfd": (ScrfdMeta, (FACE_DETECTION,)),
    "crop-landmarks": (LandmarkMeta, (FACE_LANDMARKS,)),
    "sightline-facenet": (EmbedderMeta, (FACE_EMBEDDING,)),
    "dlib-resnet": (EmbedderMeta, (FACE_EMBEDDING,)),
    "arcface": (EmbedderMeta, (FACE_EMBEDDING,)),
    "unet": (SegmenterMeta, (SEGMENTATION,)),
    "nanodet-gfl": (NanoDetMeta, (DETECTION,)),
    "foreground-mask": (ForegroundMaskMeta, (SEGMENTATION,)),
    "yolov5": (YoloMeta, (DETECTION,)),
    "yolov8": (YoloMeta, (DETECTION,)),
    "yolov5-seg": (YoloSegMeta, (DETECTION,)),
    "yolov8-seg": (YoloSegMeta, (DETECTION,)),
}


def validate_metadata(raw: dict[str, Any], where: str = "model") -> ModelMeta:
    """``raw`` (JSON-decoded ``metadata_props``) as the metadata class of its family; a
    ``MetadataError`` naming ``where`` and what is wrong otherwise."""
    family, task = raw.get("family"), raw.get("task")
    if family not in FAMILIES:
        raise MetadataError(f"{where}: family {family!r} is not one Sightline serves "
                            f"(one of {', '.join(sorted(FAMILIES))})")
    meta_class, tasks = FAMILIES[family]
    if task not in tasks:
        raise MetadataError(f"{where}: a {family} model serves {' or '.join(tasks)}, not task {task!r}")
    try:
        return meta_class.model_validate(raw)
    except ValidationError as exc:
        raise MetadataError(f"{where}: its metadata does not describe a {family} model: {exc}") from exc
