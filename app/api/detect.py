"""``POST /detect``: objects in a photo."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from app.api.deps import DetectorDep, EngineDep, SettingsDep
from app.api.images import ImageFiles, read_images
from app.models.anchor_detector import DetectParams, Detector
from app.models.yolo import InstanceDetections, YoloSegDetector
from app.errors import InvalidRequest
from app.pipeline import Steps
from app.schemas import (Box, DetectBatchResponse, Detection, DetectResponse, DetectTimings, ErrorResponse, ImageSize,
                         ModelRef, Rle)
from app.vision.postprocess import Detections

router = APIRouter(tags=["detection"])

ERRORS = {code: {"model": ErrorResponse} for code in (400, 413, 415, 422, 503)}
MaskFormat = Literal["rle", "polygon"]
Polygons = list[list[tuple[float, float]]]


def _classes(detector: Detector, classes: str | None) -> frozenset[int] | None:
    if classes is None:
        return None
    labels = [c.strip() for c in classes.split(",") if c.strip()]
    if not labels:
        raise InvalidRequest("classes is empty; give comma-separated labels, e.g. classes=car,pedestrian")
    try:
        return detector.class_ids(labels)
    except KeyError as exc:
        known = ", ".join(detector.meta.class_names)
        raise InvalidRequest(f"unknown class {exc.args[0]!r}; this model knows: {known}",
                             code="unknown_class") from None


def _mask_format(detector: Detector, mask_format: MaskFormat | None) -> MaskFormat | None:
    """How an instance-segmentation detector's masks are answered (RLE unless asked otherwise);
    None for another detector, which refuses the parameter."""
    if isinstance(detector, YoloSegDetector):
        return mask_format or "rle"
    if mask_format is not None:
        raise InvalidRequest(f"mask_format: the detector {detector.meta.name!r} ({detector.meta.family}) gives no "
                             f"instance masks; leave mask_format out")
    return None


def _masks(dets: Detections, fmt: MaskFormat | None, width: int, height: int
           ) -> list[tuple[Rle | None, Polygons | None]]:
    """Each detection's mask as answered: COCO RLE or polygons in the photo's pixels, or nothing."""
    if fmt is None or not isinstance(dets, InstanceDetections):
        return [(None, None)] * len(dets.scores)
    if fmt == "polygon":
        return [(None, m.polygons()) for m in dets.masks()]
    return [(Rle(**m.rle(width, height)), None) for m in dets.masks()]


def _detect(detector: Detector, data: bytes, max_pixels: int, params: DetectParams,
            mask_format: MaskFormat | None = None) -> Steps[DetectResponse]:
    t0 = time.perf_counter()
    image = detector.decode(data, max_pixels)
    decode_ms = (time.perf_counter() - t0) * 1000
    dets, times = yield from detector.photo_steps(image, params)
    t1 = time.perf_counter()
    masks = _masks(dets, mask_format, image.photo_width, image.photo_height)
    postprocess_ms = times.postprocess_ms + (time.perf_counter() - t1) * 1000
    names = detector.meta.class_names
    return DetectResponse(
        model=ModelRef(name=detector.meta.name, version=detector.meta.version),
        image=ImageSize(width=image.photo_width, height=image.photo_height),
        detections=[Detection(box=Box(**{k: round(float(v), 2) for k, v in zip(("x1", "y1", "x2", "y2"), b)}),
                              score=round(float(s), 4), class_id=int(c), label=names[int(c)], mask=rle,
                              polygons=polygons)
                    for b, s, c, (rle, polygons) in zip(dets.boxes, dets.scores, dets.class_ids, masks)],
        timings_ms=DetectTimings(decode=round(decode_ms, 3), preprocess=round(times.preprocess_ms, 3),
                                 inference=round(times.inference_ms, 3), postprocess=round(postprocess_ms, 3)),
    )


@router.post("/detect", response_model=DetectResponse | DetectBatchResponse, responses=ERRORS,
             response_model_exclude_none=True)
async def detect(
    detector: DetectorDep,
    settings: SettingsDep,
    engine: EngineDep,
    image: ImageFiles,
    conf: Annotated[float, Query(ge=0.0, le=1.0, description="minimum score")] = 0.25,
    iou: Annotated[float, Query(ge=0.0, le=1.0, description="NMS IoU threshold, per class")] = 0.45,
    max_det: Annotated[int, Query(ge=1, le=1000, description="most detections returned")] = 100,
    classes: Annotated[str | None, Query(description="comma-separated labels to keep, e.g. car,pedestrian")] = None,
    mask_format: Annotated[MaskFormat | None, Query(description=(
        "instance-segmentation detectors only: each detection's mask as COCO RLE (rle, the default) or as "
        "polygons (polygon)"))] = None,
) -> DetectResponse | DetectBatchResponse:
    """Detect objects; boxes are in the original image's pixels (after EXIF orientation). Several
    ``image`` parts give ``{"results": [...]}``, one per image in order. An instance-segmentation
    detector (``yolov5-seg``, ``yolov8-seg``) adds each detection's ``mask`` (or ``polygons``);
    other detectors answer no mask fields."""
    params = DetectParams(conf=conf, iou=iou, max_det=max_det, classes=_classes(detector, classes))
    fmt = _mask_format(detector, mask_format)
    blobs = await read_images(image, settings.max_images)
    results = await engine.run_all([_detect(detector, data, settings.max_pixels, params, fmt) for data in blobs])
    return results[0] if len(results) == 1 else DetectBatchResponse(results=results)
