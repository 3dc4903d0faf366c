"""640x480 test JPEGs (Pillow, quality 90): synthetic scenes when training.synth is importable,
structured random images otherwise."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 640, 480
QUALITY = 90


def _scene_image(seed: int, i: int) -> np.ndarray:
    """A 640x640 synthetic scene, centre-cropped to 640x480."""
    from training.synth.scenes import SceneConfig, render_scene

    cfg = SceneConfig(min_side=WIDTH, max_side=WIDTH, min_objects=2, max_objects=10)
    image = render_scene(np.random.default_rng([seed, i]), cfg).image
    top = (image.shape[0] - HEIGHT) // 2
    return image[top:top + HEIGHT, :WIDTH]


def _structured_image(seed: int, i: int) -> np.ndarray:
    """Gradient background with random filled rectangles and a little noise."""
    rng = np.random.default_rng([seed, i])
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    base = rng.uniform(0, 255, 3) + np.stack([xx / 5, yy / 4, (xx + yy) / 9], axis=-1)
    image = np.mod(base, 256)
    for _ in range(int(rng.integers(3, 12))):
        x0, y0 = int(rng.integers(0, WIDTH - 40)), int(rng.integers(0, HEIGHT - 40))
        w, h = (int(v) for v in rng.integers(20, 200, 2))
        image[y0:y0 + h, x0:x0 + w] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def encode_jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=QUALITY)
    return buf.getvalue()


def make_jpegs(count: int, seed: int) -> tuple[list[bytes], str]:
    """``count`` 640x480 JPEGs and the name of what drew them."""
    if not _has_scenes():
        return [encode_jpeg(_structured_image(seed, i)) for i in range(count)], "structured random images"
    return [encode_jpeg(_scene_image(seed, i)) for i in range(count)], "training.synth.scenes.render_scene"


PHONE = (4032, 3024)


def make_phone_jpeg(seed: int) -> bytes:
    """A 12-megapixel JPEG (a phone camera's 4032x3024): a test image enlarged 6.3x, with a little
    sensor-like noise so that it does not compress unrealistically well."""
    return enlarge_to_phone(_scene_image(seed, 999) if _has_scenes() else _structured_image(seed, 999), seed)


def enlarge_to_phone(rgb: np.ndarray, seed: int) -> bytes:
    """``rgb`` padded with grey to 4:3, enlarged to a phone camera's 4032x3024, with a little
    sensor-like noise, as a JPEG."""
    import cv2

    h, w = rgb.shape[:2]
    ph, pw = max(h, -(-w * 3 // 4)), max(w, -(-h * 4 // 3))
    y, x = (ph - h) // 2, (pw - w) // 2
    rgb = cv2.copyMakeBorder(rgb, y, ph - h - y, x, pw - w - x, cv2.BORDER_CONSTANT, value=(128, 128, 128))
    big = cv2.resize(rgb, PHONE, interpolation=cv2.INTER_CUBIC).astype(np.float32)
    big += np.random.default_rng([seed, 999]).normal(0, 3, big.shape).astype(np.float32)
    return encode_jpeg(np.clip(big, 0, 255).astype(np.uint8))


def _has_scenes() -> bool:
    try:
        import training.synth.scenes  # noqa: F401
    except ImportError:
        return False
    return True
