"""Image decoding for the server: upload bytes to an ``HxWx3 uint8 RGB`` array, with Pillow.

The rules, in the order they are applied:

1. Identify. Pillow reads only the header (``Image.open`` is lazy). Bytes it cannot identify
   (empty, text, random, a header broken beyond recognition) are :class:`InvalidImage` (400).
2. Format. JPEG (MPO, the multi-picture JPEG many phones write, counts as JPEG), PNG (APNG too),
   WebP, BMP and GIF are accepted. Any other real image Pillow recognises (TIFF, ICO, PSD, PPM,
   TGA, ...) is :class:`UnsupportedFormat` (415), naming the format.
3. Size. The header's width x height is checked against ``max_pixels`` *before* any pixel is
   decoded; over it is :class:`ImageTooLarge` (413). Pillow's own decompression-bomb guard is
   switched off at import (``Image.MAX_IMAGE_PIXELS = None``) because this check replaces it and
   must be the one that fires, with our message and our limit.
4. Decode. Only the first frame of an animated GIF, APNG or WebP. Truncated or corrupt pixel data
   is :class:`InvalidImage`; Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay False (its
   default), or truncated files would decode as half-grey images.
5. Orientation. The EXIF orientation tag is applied, so ``rgb`` is in display orientation (what a
   browser shows) and ``width``/``height`` are of the result. EXIF that cannot be parsed is
   ignored, as browsers do, rather than rejecting pixels that decoded fine.
6. Colour. Every mode becomes 8-bit RGB: CMYK (Adobe-inverted JPEGs are un-inverted by Pillow's
   reader) and YCbCr by Pillow's conversion; 16-bit and 32-bit grayscale (``I;16*``, ``I``) keep
   their high byte (``>> 8``, never clipped); float ``F`` is read on the 0..255 scale, rounded
   and clipped. Images with transparency (alpha band, palette alpha or a ``tRNS`` colour key) are
   composited over a white background, the way a viewer shows them on a white page.

7. Shrinking (only when the caller gives ``fit``, the side of the square model input the photo will
   be letterboxed into). A JPEG at least twice as large as fitting needs is decoded already shrunk
   by 2, 4 or 8 in its DCT (libjpeg's scaled decoding, Pillow's ``draft``), never below the size
   fitting needs: a 12-megapixel phone photo for a 416 input decodes at 504x378 in 21 ms, against
   111 ms for the full photo and 37 ms more to shrink it (the model inputs differ by 1 grey level
   on average). ``reduction`` says by how much; ``photo_width``/``photo_height`` keep the photo's
   own size and ``to_photo`` maps boxes back to it. A caller that knows the detail it needs
   (the face routes, after finding the faces in a shrunk decode) asks for a ``reduction`` itself.

``rgb`` is read-only (it shares no memory with anything, but the dataclass is frozen and the
array follows suit): copy it before drawing on it.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image

from app.errors import ImageTooLarge, InvalidImage, UnsupportedFormat

# Our pixel limit replaces Pillow's decompression-bomb guard (see rule 3 above).
Image.MAX_IMAGE_PIXELS = None

# Pillow's format name -> ours. MPO is a JPEG with extra pictures appended (phones write it).
_FORMATS = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "GIF": "gif"}
SUPPORTED_FORMATS: frozenset[str] = frozenset(_FORMATS.values())
_SUPPORTED_LIST = "JPEG, PNG, WebP, BMP or GIF"

# What Pillow's readers raise on malformed input. Fuzzing (~400k damaged JPEG, PNG, GIF, WebP,
# BMP, MPO files and random bytes) saw OSError (UnidentifiedImageError, "image file is
# truncated", "broken data stream"), SyntaxError and ValueError; the others are what its parsers
# raise on short data, which Image.open turns into SyntaxError but load() may not.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError,
                  struct.error, ZeroDivisionError, OverflowError)

_WIDE_GRAY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_WHITE = (255, 255, 255)
_QUARTER_TURNS = frozenset({5, 6, 7, 8})   # EXIF orientations that swap width and height
_TRANSPOSE = {  # EXIF orientation -> the transpose that brings the image to display orientation
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


REDUCTIONS = (1, 2, 4, 8)   # the DCT scales a JPEG can be decoded at (rule 7)


@dataclass(frozen=True)
class DecodedImage:
    """A decoded upload: ``rgb`` is ``HxWx3 uint8`` RGB, C-contiguous, read-only, in display
    orientation; ``width``/``height`` are of ``rgb``; ``format`` is one of SUPPORTED_FORMATS.
    ``rgb`` is the photo shrunk ``reduction`` times (rule 7), whose own size is ``photo_width`` x
    ``photo_height``."""

    rgb: np.ndarray
    format: str
    width: int
    height: int
    reduction: int
    photo_width: int
    photo_height: int

    def to_photo(self, boxes: np.ndarray) -> np.ndarray:
        """``(N, 4)`` xyxy boxes in ``rgb``'s pixels → in the photo's. Pixel ``i`` of a DCT-shrunk
        decode covers the photo's pixels ``[i r, (i + 1) r)``, so coordinates scale by ``r``."""
        if self.reduction == 1:
            return boxes
        out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * self.reduction
        return np.minimum(out, np.array([self.photo_width, self.photo_height] * 2, dtype=np.float32))


def decode_image(data: bytes, max_pixels: int, fit: int | None = None, reduction: int = 1) -> DecodedImage:
    """Decode the first frame of an uploaded image to display-oriented 8-bit RGB; with ``fit``, a
    large JPEG comes already shrunk towards a ``fit`` x ``fit`` model input, with ``reduction``
    (2, 4 or 8) a JPEG comes shrunk that many times (rule 7).

    Transparent pixels are composited over white. Raises :class:`InvalidImage` (400) for bytes
    that are not a decodable image, :class:`UnsupportedFormat` (415) for a real image in a format
    other than JPEG, PNG, WebP, BMP or GIF, and :class:`ImageTooLarge` (413) when the header's
    width x height exceeds ``max_pixels``, checked before any pixel is decoded.
    """
    if reduction not in REDUCTIONS or (fit is not None and reduction != 1):
        raise ValueError(f"reduction {reduction}: must be one of {REDUCTIONS}, and 1 when fit is given")
    if not data:
        raise InvalidImage(
            "the upload is empty; send the image bytes in the multipart field 'image'")
    with _open(data) as img:
        fmt = _check_format(img)
        _check_size(img, max_pixels)
        stored = img.size
        if fmt == "jpeg" and fit is not None:
            _shrink_while_decoding(img, fit)
        elif fmt == "jpeg" and reduction > 1:
            # draft picks the largest scale with stored // asked >= scale: floor, so odd sizes still reduce
            img.draft(img.mode, (max(1, stored[0] // reduction), max(1, stored[1] // reduction)))
        _load(img)
        shrunk_by = _reduction(stored[0], img.size[0])
        orientation = _exif_orientation(img)
        rgb = pil_to_rgb(_display_oriented(img, orientation))
    rgb.flags.writeable = False
    height, width = rgb.shape[:2]
    photo_w, photo_h = stored[::-1] if orientation in _QUARTER_TURNS else stored
    return DecodedImage(rgb=rgb, format=fmt, width=width, height=height, reduction=shrunk_by,
                        photo_width=photo_w, photo_height=photo_h)


def _shrink_while_decoding(img: Image.Image, fit: int) -> None:
    """Ask the JPEG decoder for the smallest DCT scale (1/2, 1/4, 1/8) still at least the size a
    letterbox into ``fit`` x ``fit`` needs (Pillow's draft never goes below the size asked)."""
    width, height = img.size
    scale = min(fit / width, fit / height)
    if scale <= 0.5:
        img.draft(img.mode, (math.ceil(width * scale), math.ceil(height * scale)))


def _reduction(stored_width: int, decoded_width: int) -> int:
    """The DCT scale a decode was shrunk by: ``decoded = ceil(stored / r)`` with r in 1, 2, 4, 8."""
    return next((r for r in REDUCTIONS if math.ceil(stored_width / r) == decoded_width), 1)


def _open(data: bytes) -> Image.Image:
    """Identify the image from its header; no pixels are decoded yet."""
    try:
        return Image.open(io.BytesIO(data))
    except _DECODE_ERRORS as exc:
        raise InvalidImage(
            f"the upload ({len(data)} bytes, starting {data[:8]!r}) is not an image this service "
            f"can read; send a {_SUPPORTED_LIST} file") from exc


def _check_format(img: Image.Image) -> str:
    fmt = _FORMATS.get(img.format or "")
    if fmt is None:
        raise UnsupportedFormat(
            f"the image is {img.format} ({img.format_description}), which this service does not "
            f"accept; convert it to one of: {_SUPPORTED_LIST}")
    return fmt


def _check_size(img: Image.Image, max_pixels: int) -> None:
    width, height = img.size  # Pillow has already refused a zero or negative size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels} pixels; downscale it and send it again")


def _load(img: Image.Image) -> None:
    """Decode the pixels of the current (first) frame; truncated or corrupt data raises."""
    try:
        img.load()
    except _DECODE_ERRORS as exc:
        raise InvalidImage(f"the image data is truncated or corrupt ({exc}); "
                           "send the complete file again") from exc


def _exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1..8), or 1 when absent or when the EXIF block is unreadable."""
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
    except _DECODE_ERRORS:
        return 1
    return value if isinstance(value, int) else 1


def _display_oriented(img: Image.Image, orientation: int) -> Image.Image:
    """``img`` turned the way its EXIF ``orientation`` says a viewer shows it (the same table as
    ``ImageOps.exif_transpose``, which is not used because it rewrites the EXIF block and so
    fails on the broken EXIF that viewers ignore)."""
    method = _TRANSPOSE.get(orientation)
    return img if method is None else img.transpose(method)


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """``HxWx3 uint8`` C-contiguous RGB of a loaded Pillow image of any mode (see rule 6 in the
    module docstring); transparency is composited over white. The array may be read-only."""
    if img.mode in _WIDE_GRAY_MODES:
        return _wide_gray_to_rgb(img)
    if img.mode == "F":
        return _gray_to_rgb(np.clip(np.rint(np.asarray(img)), 0, 255).astype(np.uint8))
    if img.has_transparency_data:
        return np.asarray(_over_white(img))
    if img.mode == "RGB":
        return np.asarray(img)
    return np.asarray(img.convert("RGB"))


def _wide_gray_to_rgb(img: Image.Image) -> np.ndarray:
    """16-bit (``I;16*``) or 32-bit (``I``, read as 16-bit range) gray: keep the high byte.
    A ``tRNS`` colour key (16-bit gray PNG) makes those pixels white."""
    wide = np.asarray(img)
    if img.mode == "I":
        wide = np.clip(wide, 0, 0xFFFF)
    gray = (wide >> 8).astype(np.uint8)
    key = img.info.get("transparency")
    if isinstance(key, int):
        gray[wide == key] = 255
    return _gray_to_rgb(gray)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


def _over_white(img: Image.Image) -> Image.Image:
    """Composite an image with transparency over a white RGB background."""
    # Pillow converts premultiplied La only to LA; RGBa, LA, PA, P and tRNS keys go to RGBA.
    rgba = (img.convert("LA") if img.mode == "La" else img).convert("RGBA")
    background = Image.new("RGB", img.size, _WHITE)
    background.paste(rgba, mask=rgba)
    return background
