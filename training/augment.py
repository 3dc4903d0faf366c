"""Training augmentation in numpy/OpenCV. Geometric changes move the boxes (and a mask, when one is
given) with the image; photometric ones touch the image only.

Images are ``HxWx3 uint8 RGB``; boxes ``(N, 4) float32 xyxy`` in pixels; masks ``HxW uint8``.
"""

from __future__ import annotations

import cv2
import numpy as np

# Eigen decomposition of natural-image RGB covariance (AlexNet's PCA colour augmentation), RGB order.
PCA_EIGVAL = np.array([0.2175, 0.0188, 0.0045], dtype=np.float32)
PCA_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                       [-0.5808, -0.0045, -0.8140],
                       [-0.5836, -0.6948, 0.4203]], dtype=np.float32)


def hflip(image: np.ndarray, boxes: np.ndarray, mask: np.ndarray | None = None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Mirror left-right: ``x -> W - x`` for every box edge."""
    w = image.shape[1]
    out = boxes.copy()
    out[:, 0], out[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
    return image[:, ::-1].copy(), out, None if mask is None else mask[:, ::-1].copy()


def crop(image: np.ndarray, boxes: np.ndarray, window: tuple[int, int, int, int],
         mask: np.ndarray | None = None, min_kept: float = 0.4
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Cut ``window = (x1, y1, x2, y2)`` out of the image; boxes are shifted and clipped to it.

    A box keeping less than ``min_kept`` of its area is dropped. Returns the crop, the kept boxes,
    the indices of the kept boxes (to carry their labels) and the cropped mask.
    """
    x1, y1, x2, y2 = window
    out = boxes - np.array([x1, y1, x1, y1], dtype=np.float32)
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, x2 - x1)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, y2 - y1)
    before = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    after = (out[:, 2] - out[:, 0]) * (out[:, 3] - out[:, 1])
    kept = np.flatnonzero((after >= min_kept * np.maximum(before, 1e-6)) & (after > 0))
    cut_mask = None if mask is None else mask[y1:y2, x1:x2].copy()
    return image[y1:y2, x1:x2].copy(), out[kept], kept, cut_mask


def random_crop_window(rng: np.random.Generator, width: int, height: int, min_scale: float = 0.5
                       ) -> tuple[int, int, int, int]:
    """A random window covering ``min_scale`` to 1 of each side, anywhere inside the image."""
    cw = int(round(width * rng.uniform(min_scale, 1.0)))
    ch = int(round(height * rng.uniform(min_scale, 1.0)))
    x1 = int(rng.integers(0, width - cw + 1))
    y1 = int(rng.integers(0, height - ch + 1))
    return x1, y1, x1 + cw, y1 + ch


def _affine_color(image: np.ndarray, matrix: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``out = matrix @ rgb + offset`` per pixel, saturated to uint8, in one OpenCV pass."""
    m = np.concatenate([matrix, offset.reshape(3, 1)], axis=1).astype(np.float32)
    return cv2.transform(image, m)


def color_shift(rng: np.random.Generator, image: np.ndarray, strength: float = 0.25) -> np.ndarray:
    """Random saturation, contrast, brightness and per-channel gain, as one affine colour map."""
    sat = rng.uniform(1 - strength, 1 + strength)
    contrast = rng.uniform(1 - strength, 1 + strength)
    brightness = rng.uniform(1 - strength, 1 + strength)
    gains = rng.uniform(1 - strength / 3, 1 + strength / 3, size=3)
    mean = float(np.mean(cv2.mean(image)[:3]))
    # saturation: x -> g + s (x - g) with g the channel mean of the pixel
    sat_m = sat * np.eye(3) + (1 - sat) / 3 * np.ones((3, 3))
    # contrast around the image mean, then brightness, then per-channel gain
    scale = (gains * brightness * contrast)[:, None]
    offset = gains * brightness * (1 - contrast) * mean
    return _affine_color(image, scale * sat_m, offset)


def pca_color(rng: np.random.Generator, image: np.ndarray, std: float = 0.1) -> np.ndarray:
    """AlexNet's PCA colour augmentation: add ``eigvec @ (alpha * eigval)`` to every pixel."""
    alpha = rng.normal(0.0, std, size=3).astype(np.float32)
    delta = PCA_EIGVEC @ (alpha * PCA_EIGVAL) * 255.0
    return _affine_color(image, np.eye(3), delta)


def augment_detection(rng: np.random.Generator, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                      mask: np.ndarray | None = None, crop_p: float = 0.5, flip_p: float = 0.5
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """The training recipe: random crop, mirror, colour shift, PCA colour. Labels follow the boxes."""
    if rng.random() < crop_p:
        window = random_crop_window(rng, image.shape[1], image.shape[0])
        image, boxes, kept, mask = crop(image, boxes, window, mask)
        labels = labels[kept]
    if rng.random() < flip_p:
        image, boxes, mask = hflip(image, boxes, mask)
    image = color_shift(rng, image)
    image = pca_color(rng, image)
    return image, boxes, labels, mask


def augment_segmentation(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, crop_p: float = 0.5,
                         flip_p: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The detection recipe for a class-id mask: random crop and mirror move the mask with the image
    (pixel for pixel); colour shift and PCA colour touch the image only."""
    no_boxes = np.zeros((0, 4), np.float32)
    if rng.random() < crop_p:
        window = random_crop_window(rng, image.shape[1], image.shape[0])
        image, _, _, mask = crop(image, no_boxes, window, mask)
    if rng.random() < flip_p:
        image, _, mask = hflip(image, no_boxes, mask)
    image = color_shift(rng, image)
    image = pca_color(rng, image)
    return image, mask
