"""The image parts of a request: one or several ``image`` fields, up to ``SIGHTLINE_MAX_IMAGES``."""

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
    note_images(len(files))
    return [await f.read() for f in files]
