"""Image inputs for tests, built in code: good, odd and broken uploads as bytes.

Shared by the decoder's unit tests and the API tests, so both run the same corpus. Every builder
is deterministic. Colours that tests check against are exported as constants.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Iterator

import numpy as np
from PIL import Image

RED = (255, 0, 0)
BLUE = (0, 0, 255)
CORNER = (255, 0, 0)      # the distinctive top-left corner of `landscape_with_corner`
BACKGROUND = (0, 128, 0)  # the rest of it
ORIENTATION = 0x0112      # the EXIF orientation tag


# --- encoding ------------------------------------------------------------------------------

def encode(img: Image.Image, fmt: str, **save_kwargs: object) -> bytes:
    """``img`` saved in Pillow format ``fmt`` (``"JPEG"``, ``"PNG"``, ``"TIFF"``, ...)."""
    buf = io.BytesIO()
    img.save(buf, fmt, **save_kwargs)
    return buf.getvalue()


def jpeg_bytes(rgb: np.ndarray, quality: int = 95, **save_kwargs: object) -> bytes:
    """An ``HxWx3 uint8`` RGB array as a JPEG."""
    return encode(Image.fromarray(rgb, "RGB"), "JPEG", quality=quality, **save_kwargs)


def png_bytes(array: np.ndarray) -> bytes:
    """A uint8 (HxW, HxWx3, HxWx4) or uint16 (HxW) array as a PNG."""
    return encode(Image.fromarray(array), "PNG")


def gradient_rgb(width: int = 64, height: int = 48) -> np.ndarray:
    """A smooth ``HxWx3 uint8`` test picture (compresses well, survives JPEG)."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    return np.stack([np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)),
                     np.full((height, width), 128, np.float32)], axis=2).astype(np.uint8)


def small_jpeg() -> bytes:
    return jpeg_bytes(gradient_rgb())


def small_png() -> bytes:
    return png_bytes(gradient_rgb())


def solid(color: tuple[int, int, int], size: tuple[int, int] = (16, 16)) -> Image.Image:
    return Image.new("RGB", size, color)


# --- hand-written PNGs ---------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload, CRC-32 of type + payload."""
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_from_rows(width: int, height: int, bit_depth: int, color_type: int, raw: bytes,
                  extra_chunks: bytes = b"") -> bytes:
    """A PNG from already filtered scanlines ``raw`` (each row: filter byte + samples)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + extra_chunks
            + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))


def png_claiming(width: int, height: int) -> bytes:
    """A valid-looking 8-bit RGB PNG whose IHDR claims ``width`` x ``height`` but whose IDAT
    holds one short row: a decompression bomb's header without the bomb."""
    return png_from_rows(width, height, 8, 2, b"\x00" + b"\x00" * 3)


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose SOF0 header is patched to claim ``width`` x ``height``."""
    data = bytearray(jpeg_bytes(gradient_rgb(), quality=95))
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height, width
    data[sof + 5: sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_claiming(width: int, height: int) -> bytes:
    """A small GIF whose logical screen descriptor claims ``width`` x ``height``."""
    data = bytearray(encode(solid(RED), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def gif_frame_claiming(width: int, height: int) -> bytes:
    """A 16x16 GIF whose first frame's image descriptor claims ``width`` x ``height`` (Pillow
    grows the canvas to hold the frame, at open time)."""
    data = bytearray(encode(solid(RED), "GIF"))
    descriptor = data.index(b"\x2c")  # separator, left, top, width, height (LE 16-bit)
    data[descriptor + 5: descriptor + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def bmp_claiming(width: int, height: int) -> bytes:
    """A small BMP whose info header claims ``width`` x ``height`` (no pixel data for it)."""
    data = bytearray(encode(solid(RED), "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def solid_webp(width: int, height: int, color: tuple[int, int, int] = RED) -> bytes:
    """A real lossless solid-colour WebP: a few dozen bytes that decode to width x height
    pixels, a genuine decompression bomb at large sizes (4000x4000 takes ~0.15 s to encode)."""
    return encode(Image.new("RGB", (width, height), color), "WEBP", lossless=True, method=0)


def _rows16(samples: np.ndarray) -> bytes:
    """Big-endian 16-bit samples (HxW or HxWxC) as unfiltered PNG scanlines."""
    big = samples.astype(">u2")
    return b"".join(b"\x00" + row.tobytes() for row in big)


def gray16_gradient(width: int = 256, height: int = 4) -> np.ndarray:
    """``HxW uint16`` with every column a different 16-bit value, spanning 0..65535."""
    row = np.linspace(0, 65535, width).round().astype(np.uint16)
    return np.repeat(row[None, :], height, axis=0)


def gray16_png(gray: np.ndarray | None = None, transparent: int | None = None) -> bytes:
    """A 16-bit grayscale PNG (Pillow opens it as mode ``I;16``), optionally with a ``tRNS``
    chunk making the 16-bit value ``transparent`` fully transparent."""
    gray = gray16_gradient() if gray is None else gray
    trns = b"" if transparent is None else png_chunk(b"tRNS", struct.pack(">H", transparent))
    return png_from_rows(gray.shape[1], gray.shape[0], 16, 0, _rows16(gray), trns)


def rgb16_png(rgb: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG from an ``HxWx3 uint16`` array (Pillow cannot write one)."""
    return png_from_rows(rgb.shape[1], rgb.shape[0], 16, 2, _rows16(rgb))


# --- odd modes and animations --------------------------------------------------------------

def cmyk_jpeg(cmyk: tuple[int, int, int, int] = (0, 255, 255, 0)) -> bytes:
    """A solid CMYK JPEG (libjpeg writes the Adobe marker, so the file stores inverted CMYK).
    The default is pure magenta + yellow: red."""
    return encode(Image.new("CMYK", (32, 32), cmyk), "JPEG", quality=95)


def rgba_png(rgb: tuple[int, int, int] = RED, alpha: int = 128) -> bytes:
    """A solid RGBA PNG with partial alpha."""
    return encode(Image.new("RGBA", (8, 8), (*rgb, alpha)), "PNG")


def palette_png_with_transparency() -> bytes:
    """An 8x8 palette PNG: left half index 0 (transparent), right half index 1 (blue)."""
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, *BLUE] + [0] * (256 - 2) * 3)
    img.paste(1, (4, 0, 8, 8))
    return encode(img, "PNG", transparency=0)


def la_png(gray: int = 100, alpha: int = 128) -> bytes:
    """A solid gray + alpha PNG."""
    return encode(Image.new("LA", (8, 8), (gray, alpha)), "PNG")


def mpo_jpeg() -> bytes:
    """A multi-picture JPEG (MPO, what many phones write): a RED picture, then a BLUE one."""
    return encode(solid(RED), "MPO", save_all=True, append_images=[solid(BLUE)], quality=95)


def animated(fmt: str, colors: tuple[tuple[int, int, int], ...] = (RED, BLUE),
             **save_kwargs: object) -> bytes:
    """A solid-colour animation, one frame per colour, in "GIF", "PNG" (APNG) or "WEBP"."""
    frames = [solid(c) for c in colors]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0,
                  **save_kwargs)


def animated_gif() -> bytes:
    return animated("GIF")


def landscape_with_corner(width: int = 60, height: int = 40, corner: int = 10) -> Image.Image:
    """A landscape picture: BACKGROUND with a ``corner`` x ``corner`` CORNER block top-left."""
    img = Image.new("RGB", (width, height), BACKGROUND)
    img.paste(CORNER, (0, 0, corner, corner))
    return img


def exif_rotated(orientation: int, fmt: str = "JPEG") -> bytes:
    """`landscape_with_corner` stored as is, tagged with EXIF ``orientation`` (1..8), in Pillow
    format ``fmt`` (JPEG, PNG and WebP carry EXIF)."""
    img = landscape_with_corner()
    exif = img.getexif()
    exif[ORIENTATION] = orientation
    lossless = {"JPEG": {"quality": 95, "subsampling": 0}, "WEBP": {"lossless": True}}.get(fmt, {})
    return encode(img, fmt, exif=exif.tobytes(), **lossless)


def exif_rotated_jpeg(orientation: int) -> bytes:
    return exif_rotated(orientation, "JPEG")


def jpeg_with_broken_exif(orientation: int = 6) -> bytes:
    """`landscape_with_corner` as a JPEG whose EXIF holds a valid orientation tag next to an
    XResolution stored as ASCII instead of RATIONAL. Pillow reads it (and the orientation) but
    cannot write it back, so ``ImageOps.exif_transpose`` raises TypeError on this file."""
    entries = (struct.pack(">HHIHH", ORIENTATION, 3, 1, orientation, 0)     # SHORT, inline
               + struct.pack(">HHI", 0x011A, 2, 4) + b"abc\x00")            # ASCII, inline
    tiff = b"MM\x00*" + struct.pack(">IH", 8, 2) + entries + struct.pack(">I", 0)
    return encode(landscape_with_corner(), "JPEG", quality=95, subsampling=0,
                  exif=b"Exif\x00\x00" + tiff)


def unsupported_image(fmt: str) -> bytes:
    """A small real image in a format the service does not accept (TIFF, ICO, PPM, TGA, ...)."""
    return encode(solid(RED), fmt)


# --- broken bytes --------------------------------------------------------------------------

def truncated(data: bytes, keep: float = 0.6) -> bytes:
    return data[: int(len(data) * keep)]


def truncated_jpeg() -> bytes:
    return truncated(small_jpeg())


def truncated_png() -> bytes:
    return truncated(small_png())


def random_bytes(n: int = 4096, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def mutations(data: bytes, count: int, seed: int) -> Iterator[bytes]:
    """``count`` damaged copies of ``data``: truncations, bit flips and both (fixed ``seed``)."""
    rng = random.Random(seed)
    for i in range(count):
        out = bytearray(data[: rng.randrange(1, len(data))] if i % 3 != 1 else data)
        if i % 3 != 0:
            for _ in range(rng.randint(1, 8)):
                pos = rng.randrange(len(out))
                out[pos] ^= 1 << rng.randrange(8)
        yield bytes(out)
