"""``POST /segment``: a class id for every pixel of a photo."""

from __future__ import annotations

import base64
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.api.deps import EngineDep, RegistryDep, SegmenterDep, SettingsDep
from app.api.images import ImageFiles, read_images
from app.errors import InvalidRequest
from app.pipeline import Steps
from app.schemas import (EncodedImage, ErrorResponse, ImageSize, ModelRef, Rle, SegmentBatchResponse, SegmentClass,
                         SegmentResponse, SegmentTimings)
from app.models.anchor_detector import Detector
from app.models.segmenter import Segmenter
from app.vision.masks import class_pixels, encode_png, encode_rle, overlay_jpeg

router = APIRouter(tags=["segmentation"])

ERRORS = {code: {"model": ErrorResponse} for code in (400, 413, 415, 422, 503)}
IMAGE_RESPONSES = {200: {"content": {"application/json": {}, "image/png": {}, "image/jpeg": {}},
                         "description": "JSON (format=json), the mask as PNG (format=png), or the overlay as "
                                        "JPEG (format=png with overlay=true)"}}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _segment(segmenter: Segmenter, data: bytes, max_pixels: int, fmt: str, rle: bool, overlay: bool,
             gate: Detector | None) -> Steps[SegmentResponse | Response]:
    t0 = time.perf_counter()
    image = segmenter.decode(data, max_pixels, full=overlay, at_least=gate.meta.input_size if gate else 0)
    decode_ms = (time.perf_counter() - t0) * 1000
    result = yield from segmenter.photo_steps(image)
    gate_ms = (yield from segmenter.gate_steps(image, result.mask, gate)) if gate is not None else None
    t1 = time.perf_counter()
    meta = segmenter.meta
    if fmt == "png":
        if overlay:
            return Response(overlay_jpeg(image.rgb, result.mask, meta.colors), media_type="image/jpeg")
        return Response(encode_png(result.mask), media_type="image/png")
    pixels = class_pixels(result.mask, segmenter.num_classes)
    total = float(result.mask.size)
    classes = [SegmentClass(class_id=c, label=meta.class_names[c], pixels=int(n), fraction=round(n / total, 6),
                            rle=Rle(**encode_rle(result.mask == c)) if rle else None)
               for c, n in enumerate(pixels) if n]
    mask = EncodedImage(encoding="png", data=_b64(encode_png(result.mask)))
    shown = EncodedImage(encoding="jpeg", data=_b64(overlay_jpeg(image.rgb, result.mask, meta.colors))) \
        if overlay else None
    times = result.times
    return SegmentResponse(
        model=ModelRef(name=meta.name, version=meta.version),
        image=ImageSize(width=image.photo_width, height=image.photo_height),
        classes=classes, mask=mask, overlay=shown,
        timings_ms=SegmentTimings(decode=round(decode_ms, 3), preprocess=round(times.preprocess_ms, 3),
                                  inference=round(times.inference_ms, 3), postprocess=round(times.postprocess_ms, 3),
                                  gate=None if gate_ms is None else round(gate_ms, 3),
                                  encode=round((time.perf_counter() - t1) * 1000, 3)))


@router.post("/segment", response_model=SegmentResponse | SegmentBatchResponse,
             responses={**ERRORS, **IMAGE_RESPONSES})
async def segment(
    segmenter: SegmenterDep,
    registry: RegistryDep,
    settings: SettingsDep,
    engine: EngineDep,
    image: ImageFiles,
    format: Annotated[Literal["json", "png"], Query(
        description="json: classes and the mask as base64 PNG; png: the class-id mask itself")] = "json",
    rle: Annotated[bool, Query(description="json only: add COCO RLE of each class present")] = False,
    overlay: Annotated[bool, Query(description="a JPEG of the photo with the classes in their colours: a field "
                                               "of the JSON, or the whole answer with format=png")] = False,
) -> SegmentResponse | SegmentBatchResponse | Response:
    """Segment the photo; the mask has the original image's size (after EXIF orientation). Several
    ``image`` parts (format=json) give ``{"results": [...]}``, one per image in order."""
    if rle and format != "json":
        raise InvalidRequest("rle=true adds run-length encodings to the JSON answer; use it with format=json")
    if format == "png" and len(image) > 1:
        raise InvalidRequest("format=png answers one image; send several images with format=json")
    blobs = await read_images(image, settings.max_images)
    gate = segmenter.gate_detector(list(registry.detectors.values()))
    results = await engine.run_all([_segment(segmenter, data, settings.max_pixels, format, rle, overlay, gate)
                                    for data in blobs])
    return results[0] if len(results) == 1 else SegmentBatchResponse(results=results)  # type: ignore[arg-type]
