"""Reading an uploaded file part into bytes."""

from __future__ import annotations

from fastapi import UploadFile

from app.errors import InvalidImage


async def read_upload(upload: UploadFile) -> bytes:
    """The part's bytes; an empty part is a client error, not an image."""
    data = await upload.read()
    if not data:
        raise InvalidImage(f"the upload {upload.filename or ''!s} is empty; send the image bytes in the "
                           "multipart field 'image'", code="empty_image")
    return data
