"""Class-id masks: placing a mask in the letterboxed model input and taking the model's logits back to
the original image, exactly; and the wire formats (single-channel PNG, COCO RLE, a JPEG overlay).

Masks are ``HxW uint8`` class ids (0 = background); logits are ``(C, h, w) float32`` over the model
input, ``h = w = input_size / stride``. Coordinates are continuous (pixel ``(i, j)`` covers
``[i, i + 1)``), as everywhere in ``app.vision``.
"""

from __future__ import annotations

import cv2
import numpy as np

from app.vision.letterbox import Letterbox, letterbox_geometry

IGNORE = 255   # mask value outside the image (letterbox padding): no class, left out of losses and metrics


def letterbox_mask(mask: np.ndarray, size: int, fill: int = IGNORE) -> tuple[np.ndarray, Letterbox]:
    """Place an ``HxW uint8`` mask in a ``size x size`` canvas as ``letterbox`` places its image, with
    nearest-neighbour resizing (class ids never blend) and ``fill`` in the padding."""
    h, w = mask.shape
    geo = letterbox_geometry(w, h, size)
    x1, y1, x2, y2 = geo.content
    canvas = np.full((size, size), fill, dtype=np.uint8)
    canvas[y1:y2, x1:x2] = cv2.resize(mask, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST) \
        if (x2 - x1, y2 - y1) != (w, h) else mask
    return canvas, geo


def _to_original(geo: Letterbox, stride: int) -> np.ndarray:
    """The ``(2, 3)`` map from an original pixel (OpenCV index) to the logit map (OpenCV index): the
    pixel's centre ``i + 0.5`` goes to input ``(i + 0.5) * scale + pad``, that to logit-map
    continuous coordinate ``/ stride``, and that to an OpenCV index ``- 0.5``."""
    k = geo.scale / stride
    return np.array([[k, 0.0, (0.5 * geo.scale + geo.pad_x) / stride - 0.5],
                     [0.0, k, (0.5 * geo.scale + geo.pad_y) / stride - 0.5]], dtype=np.float64)


BAND_PIXELS = 1 << 20   # original pixels read back per band: bounds the float scratch memory of a request


def logits_to_mask(logits: np.ndarray, geo: Letterbox, stride: int = 1) -> np.ndarray:
    """``(C, h, w)`` logits over the letterboxed input → ``(H, W) uint8`` class ids at the original
    resolution. Each original pixel reads the logits bilinearly at its own centre, so the padding never
    reaches the mask and boundaries stay as smooth as the model drew them. Bands of rows are read one
    at a time, so a 40-megapixel photo needs a few MB of scratch, not a float plane of its own size."""
    matrix = _to_original(geo, stride)
    planes = [np.ascontiguousarray(p, dtype=np.float32) for p in logits]
    mask = np.zeros((geo.height, geo.width), dtype=np.uint8)
    rows = max(1, BAND_PIXELS // max(1, geo.width))
    for top in range(0, geo.height, rows):
        band = matrix.copy()
        band[:, 2] += matrix[:, 1] * top          # the band's row 0 is the photo's row ``top``
        size = (geo.width, min(rows, geo.height - top))
        best = np.full(size[::-1], -np.inf, dtype=np.float32)
        out = mask[top:top + size[1]]
        for c, plane in enumerate(planes):     # one plane at a time: warpAffine takes at most 4 channels
            read = cv2.warpAffine(plane, band, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REPLICATE)
            better = read > best
            best[better] = read[better]
            out[better] = c
    return mask


def class_pixels(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels of each class id ``0 .. num_classes - 1``."""
    return np.bincount(mask.ravel(), minlength=num_classes)[:num_classes]


def encode_png(mask: np.ndarray) -> bytes:
    """A single-channel 8-bit PNG whose pixel values are the class ids."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(mask, dtype=np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def rle_counts(binary: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE of an ``HxW`` boolean mask: run lengths over the pixels in column-major
    order, starting with a run of zeros (possibly empty)."""
    flat = np.asarray(binary, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return []
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def rle_string(counts: list[int]) -> str:
    """COCO's compressed RLE string (``maskApi.c`` ``rleToString``): each count, less the count two
    places before it from the third on, in 5-bit groups with a continuation bit, offset by 48."""
    out = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5   # arithmetic shift: negative differences end at -1
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | 0x20 if more else c) + 48))
    return "".join(out)


def encode_rle(binary: np.ndarray) -> dict[str, object]:
    """``{"size": [H, W], "counts": str}``: what ``pycocotools.mask.decode`` reads."""
    h, w = binary.shape
    return {"size": [int(h), int(w)], "counts": rle_string(rle_counts(binary))}


def overlay_jpeg(image: np.ndarray, mask: np.ndarray, colors: list[tuple[int, int, int]], alpha: float = 0.5,
                 quality: int = 85) -> bytes:
    """The ``HxWx3 uint8 RGB`` photo with every non-background class painted in its RGB colour at
    ``alpha``, and class outlines drawn solid; JPEG bytes."""
    palette = np.asarray(colors, dtype=np.uint8)
    colour = palette[mask]                                     # (H, W, 3) uint8, no float copy of the photo
    out = cv2.addWeighted(image, 1 - alpha, colour, alpha, 0.0)
    fg = mask > 0
    np.copyto(out, image, where=~fg[..., None])                # the background keeps the photo
    edges = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    edges &= fg
    out[edges] = colour[edges]
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
