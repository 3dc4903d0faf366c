"""The image parts of a request: one or several ``image`` fields, up to ``SIGHTLINE_MAX_IMAGES``, or
named single-photo fields."""

from __future__ import annotations

from typing import Annotated

from fastapi import File, UploadFile

from app.admission import note_images
from app.errors import InvalidRequest

ImageFiles = Annotated[list[UploadFile], File(description=(
    "the photo: JPEG, PNG, WebP, BMP or GIF; repeat the field for several photos (one result each, in order)"))]


async def read_images(files: list[UploadFile], limit: int) -> list[bytes]:
    if len(files) > limit:
        raise InvalidRequest(f"{len(files)} images in one request; at most {limit} (SIGHTLINE_MAX_IMAGES)",
                             code="too_many_images")
    return await read_photos(*files)


async def read_photos(*files: UploadFile) -> list[bytes]:
    """Each file's bytes; the admission limit notes how many photos and how many bytes the request
    carries, to judge its latency against requests like it (``app.admission.kind``)."""
    data = [await f.read() for f in files]
    note_images(len(data), sum(map(len, data)))
    return data
