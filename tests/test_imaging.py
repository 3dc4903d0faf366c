"""app.imaging: what uploads decode to, and what each kind of bad upload is rejected as."""

from __future__ import annotations

import io
import time

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from app.errors import ApiError, ImageTooLarge, InvalidImage, UnsupportedFormat
from app.imaging import SUPPORTED_FORMATS, DecodedImage, decode_image, pil_to_rgb
from tests.images import (
    BACKGROUND, BLUE, CORNER, RED, animated, bmp_claiming, cmyk_jpeg, encode, exif_rotated,
    gif_claiming, gif_frame_claiming, gradient_rgb, gray16_gradient, gray16_png, jpeg_bytes,
    jpeg_claiming, jpeg_with_broken_exif, la_png, mpo_jpeg, mutations,
    palette_png_with_transparency, png_bytes, png_claiming, random_bytes, rgb16_png, rgba_png,
    small_jpeg, small_png, solid_webp, truncated_jpeg, truncated_png, unsupported_image,
)

LIMIT = 10_000_000
WHITE = (255, 255, 255)


def decode(data: bytes, max_pixels: int = LIMIT) -> DecodedImage:
    return decode_image(data, max_pixels)


def assert_close(pixel: np.ndarray, expected: tuple[int, ...], tol: int) -> None:
    diff = np.abs(pixel.astype(int) - np.array(expected)).max()
    assert diff <= tol, f"{pixel.tolist()} != {expected} (tolerance {tol})"


# --- the output contract -------------------------------------------------------------------

def test_output_is_contiguous_readonly_uint8_rgb() -> None:
    out = decode(small_png())
    assert out.rgb.dtype == np.uint8 and out.rgb.shape == (48, 64, 3)
    assert out.rgb.flags.c_contiguous and not out.rgb.flags.writeable
    assert (out.width, out.height, out.format) == (64, 48, "png")
    assert SUPPORTED_FORMATS == {"jpeg", "png", "webp", "bmp", "gif"}


def test_pillow_guards_are_set_as_the_module_needs() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # or truncated files decode half grey
    assert Image.MAX_IMAGE_PIXELS is None            # our limit replaces Pillow's bomb guard


# --- accepted formats ----------------------------------------------------------------------

@pytest.mark.parametrize(("fmt", "kwargs", "ours", "tol"), [
    ("PNG", {}, "png", 0),
    ("WEBP", {"lossless": True}, "webp", 0),
    ("BMP", {}, "bmp", 0),
    ("JPEG", {"quality": 95}, "jpeg", 8),
])
def test_decodes_each_format(fmt: str, kwargs: dict, ours: str, tol: int) -> None:
    rgb = gradient_rgb()
    out = decode(encode(Image.fromarray(rgb), fmt, **kwargs))
    assert out.format == ours and (out.width, out.height) == (64, 48)
    assert np.abs(out.rgb.astype(int) - rgb).max() <= tol


def test_gif_decodes_to_its_palette_colours() -> None:
    out = decode(encode(Image.new("RGB", (8, 4), BLUE), "GIF"))
    assert out.format == "gif" and (out.width, out.height) == (8, 4)
    assert (out.rgb == BLUE).all()


def test_mpo_multi_picture_jpeg_is_a_jpeg_and_gives_its_first_picture() -> None:
    assert Image.open(io.BytesIO(mpo_jpeg())).format == "MPO"  # what Pillow calls it
    out = decode(mpo_jpeg())
    assert out.format == "jpeg"
    assert_close(out.rgb.reshape(-1, 3).mean(axis=0).round(), RED, tol=3)


@pytest.mark.parametrize(("fmt", "ours"), [("GIF", "gif"), ("PNG", "png"), ("WEBP", "webp")])
def test_animation_gives_its_first_frame(fmt: str, ours: str) -> None:
    data = animated(fmt, (RED, BLUE), **({"lossless": True} if fmt == "WEBP" else {}))
    with Image.open(io.BytesIO(data)) as img:
        assert getattr(img, "n_frames", 1) == 2  # it really is animated
    out = decode(data)
    assert out.format == ours
    assert (out.rgb == RED).all()


# --- rejected bytes ------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "words"), [
    (b"", "empty"),
    (b"hello, this is a plain text upload\n" * 20, "not an image"),
    (b"<html><body>404 Not Found</body></html>", "not an image"),
    (random_bytes(4096, seed=0), "not an image"),
    (random_bytes(7, seed=1), "not an image"),
    (b"\x89PNG\r\n\x1a\n", "not an image"),  # a signature and nothing else
])
def test_non_images_are_invalid(data: bytes, words: str) -> None:
    with pytest.raises(InvalidImage, match=words) as info:
        decode(data)
    assert info.value.status == 400 and info.value.code == "invalid_image"
    assert "JPEG" in info.value.message or "'image'" in info.value.message  # says what to send


@pytest.mark.parametrize("make", [truncated_jpeg, truncated_png], ids=["jpeg", "png"])
def test_truncated_files_are_invalid(make) -> None:
    with pytest.raises(InvalidImage, match="truncated or corrupt"):
        decode(make())


@pytest.mark.parametrize("fmt", ["TIFF", "ICO", "PPM", "TGA", "PCX", "SGI"])
def test_other_real_formats_are_unsupported(fmt: str) -> None:
    with pytest.raises(UnsupportedFormat) as info:
        decode(unsupported_image(fmt))
    assert info.value.status == 415
    assert fmt in info.value.message and "JPEG, PNG, WebP, BMP or GIF" in info.value.message


# --- the pixel limit -----------------------------------------------------------------------

@pytest.fixture
def no_pixel_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any image's pixels are decoded."""
    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError(f"pixels of a {self.size} {self.format} were decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def test_png_claiming_30000_squared_is_rejected_from_its_header(no_pixel_decoding: None) -> None:
    start = time.perf_counter()
    with pytest.raises(ImageTooLarge) as info:
        decode(png_claiming(30000, 30000), max_pixels=LIMIT)
    assert time.perf_counter() - start < 0.5
    assert info.value.status == 413
    assert "30000x30000" in info.value.message and "900000000" in info.value.message
    assert str(LIMIT) in info.value.message


@pytest.mark.parametrize("make", [jpeg_claiming, gif_claiming, gif_frame_claiming, bmp_claiming,
                                  png_claiming], ids=["jpeg", "gif", "gif-frame", "bmp", "png"])
def test_every_format_is_checked_before_decoding(make, no_pixel_decoding: None) -> None:
    with pytest.raises(ImageTooLarge, match="20000x15000"):
        decode(make(20000, 15000))


def test_real_webp_bomb_is_rejected_before_decoding(no_pixel_decoding: None) -> None:
    data = solid_webp(4000, 4000)  # ~40 bytes, 16 M pixels
    assert len(data) < 200
    with pytest.raises(ImageTooLarge, match="4000x4000"):
        decode(data, max_pixels=LIMIT)


@pytest.mark.parametrize(("max_pixels", "ok"), [(64 * 48, True), (64 * 48 - 1, False)])
def test_limit_is_inclusive(max_pixels: int, ok: bool) -> None:
    if ok:
        assert decode(small_png(), max_pixels).width == 64
    else:
        with pytest.raises(ImageTooLarge):
            decode(small_png(), max_pixels)


# --- EXIF orientation ----------------------------------------------------------------------

# Where the stored top-left CORNER block shows, per the EXIF spec's description of each value.
EXPECTED_CORNER = {
    1: ("top", "left"), 2: ("top", "right"), 3: ("bottom", "right"), 4: ("bottom", "left"),
    5: ("top", "left"), 6: ("top", "right"), 7: ("bottom", "right"), 8: ("bottom", "left"),
}


def block(rgb: np.ndarray, vertical: str, horizontal: str, side: int = 8) -> np.ndarray:
    rows = slice(0, side) if vertical == "top" else slice(-side, None)
    cols = slice(0, side) if horizontal == "left" else slice(-side, None)
    return rgb[rows, cols].reshape(-1, 3).mean(axis=0).round()


def opposite(vertical: str, horizontal: str) -> tuple[str, str]:
    return ("bottom" if vertical == "top" else "top", "right" if horizontal == "left" else "left")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_gives_display_orientation(orientation: int) -> None:
    out = decode(exif_rotated(orientation, "JPEG"))
    swapped = orientation >= 5
    assert (out.width, out.height) == ((40, 60) if swapped else (60, 40))
    where = EXPECTED_CORNER[orientation]
    assert_close(block(out.rgb, *where), CORNER, tol=6)
    assert_close(block(out.rgb, *opposite(*where)), BACKGROUND, tol=6)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_exif_orientation_in_png_and_webp(fmt: str) -> None:
    out = decode(exif_rotated(6, fmt))
    assert (out.width, out.height) == (40, 60)
    assert_close(block(out.rgb, "top", "right"), CORNER, tol=0)


def test_broken_exif_still_decodes_and_orients() -> None:
    data = jpeg_with_broken_exif(orientation=6)
    with pytest.raises(TypeError):  # why the module does not use it
        ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    out = decode(data)
    assert (out.width, out.height) == (40, 60)
    assert_close(block(out.rgb, "top", "right"), CORNER, tol=6)


# --- colour modes --------------------------------------------------------------------------

def test_gray16_png_keeps_the_high_byte() -> None:
    gray = gray16_gradient()
    out = decode(gray16_png(gray))
    expected = (gray >> 8).astype(np.uint8)
    assert (out.rgb == expected[:, :, None]).all()
    assert out.rgb.min() == 0 and out.rgb.max() == 255 and len(np.unique(out.rgb)) == 256


def test_gray16_png_colour_key_is_white() -> None:
    gray = np.array([[0x1000, 0x2000, 0x3000]], dtype=np.uint16)
    out = decode(gray16_png(gray, transparent=0x2000))
    assert out.rgb[0, :, 0].tolist() == [0x10, 255, 0x30]


def test_rgb16_png_keeps_the_high_bytes() -> None:
    wide = np.array([[[0x1234, 0xABCD, 0xFF00], [0x0080, 0x7F7F, 0xFFFF]]], dtype=np.uint16)
    out = decode(rgb16_png(wide))
    assert out.rgb.tolist() == [[[0x12, 0xAB, 0xFF], [0x00, 0x7F, 0xFF]]]


@pytest.mark.parametrize(("cmyk", "rgb"), [
    ((0, 255, 255, 0), RED), ((255, 0, 255, 0), (0, 255, 0)), ((255, 255, 0, 0), BLUE),
    ((0, 0, 0, 0), WHITE), ((0, 0, 0, 255), (0, 0, 0)),
])
def test_cmyk_jpeg_is_converted(cmyk: tuple[int, int, int, int], rgb: tuple[int, int, int]) -> None:
    data = cmyk_jpeg(cmyk)
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == "CMYK" and "adobe" in img.info  # stored Adobe-inverted
    out = decode(data)
    assert out.format == "jpeg"
    assert_close(out.rgb[16, 16], rgb, tol=6)


@pytest.mark.parametrize(("alpha", "expected"), [(0, WHITE), (255, RED), (128, (255, 127, 127))])
def test_rgba_png_is_composited_over_white(alpha: int, expected: tuple[int, int, int]) -> None:
    out = decode(rgba_png(RED, alpha))
    assert_close(out.rgb[0, 0], expected, tol=1)


def test_gray_alpha_png_is_composited_over_white() -> None:
    out = decode(la_png(gray=100, alpha=128))
    assert_close(out.rgb[0, 0], (177, 177, 177), tol=1)  # 100 * 128/255 + 255 * 127/255


def test_palette_png_transparency_is_white() -> None:
    out = decode(palette_png_with_transparency())
    assert (out.rgb[:, :4] == WHITE).all() and (out.rgb[:, 4:] == BLUE).all()


@pytest.mark.parametrize(("mode", "value", "expected", "tol"), [
    ("1", 1, WHITE, 0),
    ("L", 100, (100, 100, 100), 0),
    ("P", 0, (0, 0, 0), 0),
    ("RGB", (1, 2, 3), (1, 2, 3), 0),
    ("LA", (100, 255), (100, 100, 100), 0),
    ("LA", (100, 0), WHITE, 0),
    ("La", (64, 128), (191, 191, 191), 2),        # premultiplied: 127.5 straight, over white
    ("PA", (0, 0), WHITE, 0),
    ("RGBA", (255, 0, 0, 128), (255, 127, 127), 1),
    ("RGBa", (128, 0, 0, 128), (255, 127, 127), 2),  # premultiplied red at half alpha
    ("CMYK", (0, 255, 255, 0), RED, 0),
    ("YCbCr", (76, 85, 255), RED, 3),
    ("I;16", 0xABCD, (0xAB,) * 3, 0),
    ("I;16B", 0xABCD, (0xAB,) * 3, 0),
    ("I;16L", 0x00FF, (0,) * 3, 0),                 # high byte, not a clip to 255
    ("I", 0xABCD, (0xAB,) * 3, 0),
    ("I", 70000, WHITE, 0),
    ("I", -5, (0, 0, 0), 0),
    ("F", 100.6, (101,) * 3, 0),
    ("F", 300.0, WHITE, 0),
    ("F", -1.0, (0, 0, 0), 0),
])
def test_pil_to_rgb_every_mode(mode: str, value, expected: tuple[int, int, int], tol: int) -> None:
    rgb = pil_to_rgb(Image.new(mode, (5, 3), value))
    assert rgb.dtype == np.uint8 and rgb.shape == (3, 5, 3) and rgb.flags.c_contiguous
    assert_close(rgb[1, 2], expected, tol)
    assert (rgb == rgb[0, 0]).all()


# --- fuzz ----------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [small_jpeg, small_png, lambda: jpeg_bytes(gradient_rgb(), 80)],
                         ids=["jpeg", "png", "jpeg-q80"])
def test_damaged_files_raise_only_api_errors(make) -> None:
    outcomes = {"ok": 0, "rejected": 0}
    for data in mutations(make(), count=100, seed=1234):
        try:
            out = decode(data)
        except ApiError:
            outcomes["rejected"] += 1
        else:
            assert out.rgb.ndim == 3 and out.rgb.shape[2] == 3 and out.rgb.dtype == np.uint8
            outcomes["ok"] += 1
    assert outcomes["rejected"] > 20  # the damage is real, not all cosmetic


def test_random_bytes_are_invalid() -> None:
    for seed in range(100):
        data = random_bytes(64 + 37 * seed, seed=seed)
        with pytest.raises(InvalidImage):
            decode(data)


def test_png_bytes_roundtrip_sanity() -> None:
    """The builders themselves: a PNG of an array decodes back to the array."""
    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    assert (decode(png_bytes(rgb)).rgb == rgb).all()


# --- rule 7: a large JPEG decoded already shrunk towards a model input ----------------------

def _big_jpeg(width: int, height: int, orientation: int = 1) -> tuple[bytes, np.ndarray]:
    """A smooth ``width`` x ``height`` JPEG (stored orientation) with a coloured block near one corner."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([xx * 255 / width, yy * 255 / height, np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    rgb[height // 10:height // 5, width // 10:width // 5] = (250, 20, 20)
    img = Image.fromarray(rgb)
    exif = img.getexif()
    if orientation != 1:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92, exif=exif.tobytes())
    return buf.getvalue(), rgb


@pytest.mark.parametrize("size,fit,reduction", [((2000, 1500), 416, 4), ((1664, 1248), 416, 4),
                                                ((1700, 1000), 416, 4), ((4032, 3024), 416, 8),
                                                ((832, 624), 416, 2), ((831, 600), 416, 1),
                                                ((640, 480), 416, 1), ((2000, 1500), 1024, 1)])
def test_large_jpeg_decodes_shrunk_never_below_what_fitting_needs(size, fit, reduction) -> None:
    data, stored = _big_jpeg(*size)
    out = decode_image(data, 40_000_000, fit=fit)
    assert out.reduction == reduction
    assert (out.photo_width, out.photo_height) == size
    assert (out.width, out.height) == (-(-size[0] // reduction), -(-size[1] // reduction))
    scale = min(fit / size[0], fit / size[1])
    assert out.width >= round(size[0] * scale) and out.height >= round(size[1] * scale)
    full = decode_image(data, 40_000_000)
    assert full.reduction == 1 and (full.width, full.height) == size
    # the same picture as the full decode shrunk by area averaging, to a grey level or two
    shrunk = cv2.resize(np.asarray(full.rgb), (out.width, out.height), interpolation=cv2.INTER_AREA)
    assert np.abs(shrunk.astype(int) - out.rgb.astype(int)).mean() < 2.0


@pytest.mark.parametrize("size", [(2000, 1500), (2001, 1499)])
@pytest.mark.parametrize("reduction", [1, 2, 4, 8])
def test_a_jpeg_decodes_at_the_reduction_asked(size, reduction) -> None:
    """Odd sizes too: Pillow's draft divides down, so asking for ceil(side / r) would reduce less."""
    data, _ = _big_jpeg(*size)
    out = decode_image(data, LIMIT, reduction=reduction)
    assert out.reduction == reduction and (out.photo_width, out.photo_height) == size
    assert (out.width, out.height) == (-(-size[0] // reduction), -(-size[1] // reduction))


def test_a_reduction_is_one_of_the_dct_scales_and_never_beside_fit() -> None:
    data, _ = _big_jpeg(2000, 1500)
    for bad in ({"reduction": 3}, {"reduction": 0}, {"reduction": 2, "fit": 416}):
        with pytest.raises(ValueError):
            decode_image(data, LIMIT, **bad)
    png = encode(Image.fromarray(np.zeros((1500, 2000, 3), np.uint8)), "PNG")
    assert decode_image(png, LIMIT, reduction=4).reduction == 1      # only a JPEG shrinks in decoding


def test_shrunk_decode_keeps_display_orientation_and_the_photos_size() -> None:
    data, _ = _big_jpeg(2000, 1500, orientation=6)        # viewers turn it upright: 1500 x 2000
    out = decode_image(data, LIMIT, fit=416)
    assert out.reduction == 4 and (out.width, out.height) == (375, 500)
    assert (out.photo_width, out.photo_height) == (1500, 2000)
    full = decode_image(data, LIMIT)
    shrunk = cv2.resize(np.asarray(full.rgb), (375, 500), interpolation=cv2.INTER_AREA)
    assert np.abs(shrunk.astype(int) - out.rgb.astype(int)).mean() < 2.0


def test_only_jpeg_is_shrunk_and_the_pixel_limit_still_reads_the_header() -> None:
    rgb = np.zeros((1500, 2000, 3), np.uint8)
    out = decode_image(encode(Image.fromarray(rgb), "PNG"), LIMIT, fit=416)
    assert out.reduction == 1 and (out.width, out.height) == (2000, 1500)
    data, _ = _big_jpeg(2000, 1500)
    with pytest.raises(ImageTooLarge):
        decode_image(data, 2000 * 1500 - 1, fit=416)


def test_boxes_map_back_to_the_photos_pixels() -> None:
    data, _ = _big_jpeg(2001, 1500)                       # 2001 / 4 rounds up: 501 decoded columns
    out = decode_image(data, LIMIT, fit=416)
    assert out.reduction == 4 and out.width == 501
    boxes = np.array([[10.0, 20.0, 30.5, 40.0], [480.0, 300.0, 501.0, 375.0]], np.float32)
    np.testing.assert_allclose(out.to_photo(boxes), [[40, 80, 122, 160], [1920, 1200, 2001, 1500]])
    plain = decode_image(data, LIMIT)
    assert plain.to_photo(boxes) is boxes


def test_a_truncated_large_jpeg_is_invalid_when_shrunk_too() -> None:
    data, _ = _big_jpeg(2000, 1500)
    with pytest.raises(InvalidImage):
        decode_image(data[: len(data) * 2 // 3], 40_000_000, fit=416)
