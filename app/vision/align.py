"""Face geometry shared by training and serving: the square crop around a detected box that the
landmark model reads, and the alignment of 5 landmarks onto a canonical template that the
embedder reads.

Points are ``(5, 2) float32`` pixel coordinates in the order left eye, right eye, nose tip, left
mouth corner, right mouth corner (left/right as seen in the image). Coordinates are continuous:
pixel ``(i, j)`` covers ``[i, i + 1) x [j, j + 1)``, so its centre is ``(i + 0.5, j + 0.5)``. That is
COCO's convention for keypoints and boxes, and the detector's. Transforms are ``(2, 3)`` affine
matrices between such coordinates; ``warp`` converts them to OpenCV's convention (pixel centres at
integers) for ``cv2.warpAffine``. Images are ``HxWx3 uint8 RGB``.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

LANDMARK_NAMES = ("left_eye", "right_eye", "nose_tip", "left_mouth", "right_mouth")

# Canonical positions of the 5 points as fractions of the aligned crop's side: eyes level, the face
# centred, with room for the forehead and chin. The crop is (size x size) pixels.
FACE_TEMPLATE = np.array([[0.33, 0.40], [0.67, 0.40], [0.50, 0.57], [0.37, 0.73], [0.63, 0.73]], dtype=np.float32)

BORDER = 114  # grey fill where a crop reaches outside the image, as the letterbox pad

MIRROR = (1, 0, 2, 4, 3)  # under a horizontal flip the left and right points swap


def mirror_points(points: np.ndarray, width: int) -> np.ndarray:
    """``(..., 5, 2)`` points in pixels of an image ``width`` pixels wide → the same points in the
    horizontally flipped image (``image[:, ::-1]``), left and right swapped: ``x`` goes to
    ``width - x`` (continuous coordinates)."""
    out = np.array(points, dtype=np.float32, copy=True)
    out[..., 0] = width - out[..., 0]
    return out[..., list(MIRROR), :]


def mirror_average(points: np.ndarray, flipped: np.ndarray, width: int) -> np.ndarray:
    """Test-time flip: the mean of the points read on a crop and those read on its mirror image."""
    return (np.asarray(points, dtype=np.float32) + mirror_points(flipped, width)) / 2


def with_mirror(crops: np.ndarray) -> np.ndarray:
    """``(B, S, S, 3)`` crops followed by their mirror images: the one batch a flip test reads."""
    return np.concatenate([crops, crops[:, :, ::-1]])


def average_mirror_reading(points: np.ndarray, width: int) -> np.ndarray:
    """Points read on ``with_mirror(crops)`` (``(2B, 5, 2)`` in crop pixels) → the two readings of
    each crop averaged (the landmark model's flip test)."""
    n = len(points) // 2
    return mirror_average(points[:n], points[n:], width)


def read_with_mirror(read: Callable[[np.ndarray], np.ndarray], crops: np.ndarray) -> np.ndarray:
    """``read`` (``(B, S, S, 3)`` crops → ``(B, 5, 2)`` points in crop pixels) on the crops and on their
    mirror images in one batch; the two readings averaged."""
    return average_mirror_reading(read(with_mirror(crops)), crops.shape[2])


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    v = np.asarray(vectors, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def sum_mirror_embeddings(embeddings: np.ndarray) -> np.ndarray:
    """Embeddings of ``with_mirror(crops)`` (``(2B, D)``) → each crop's two unit embeddings summed and
    scaled back to unit length (the embedder's flip test: the template is symmetric, so a mirrored
    aligned crop is the aligned crop of the mirrored face)."""
    out = unit(embeddings)
    n = len(out) // 2
    return unit(out[:n] + out[n:])


def embed_with_mirror(embed: Callable[[np.ndarray], np.ndarray], crops: np.ndarray) -> np.ndarray:
    """``embed`` (``(B, S, S, 3)`` aligned crops → ``(B, D)`` embeddings) on the crops and on their
    mirror images in one batch, summed (``sum_mirror_embeddings``)."""
    return sum_mirror_embeddings(embed(with_mirror(crops)))


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The least-squares similarity (rotation, uniform scale, translation; no reflection) taking
    ``src (N, 2)`` onto ``dst (N, 2)`` (Umeyama, 1991). Returns a ``(2, 3)`` float64 matrix."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s ** 2).sum() / len(src)
    if var_s < 1e-12:
        raise ValueError("landmarks are all at one point; no transform fits them")
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    flip = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ flip @ vt
    scale = float((sig * np.diag(flip)).sum() / var_s)
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine ``matrix`` to ``(N, 2)`` points."""
    pts = np.asarray(points, dtype=np.float64)
    return (pts @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def alignment_transform(landmarks: np.ndarray, size: int, template: np.ndarray = FACE_TEMPLATE,
                        points: list[int] | None = None) -> np.ndarray:
    """The similarity taking the 5 ``landmarks`` onto ``template`` (fractions) of a ``size``-pixel crop,
    fitted to the ``points`` among them (all 5 by default)."""
    idx = list(range(5)) if points is None else points
    return similarity_transform(np.asarray(landmarks)[idx], np.asarray(template, dtype=np.float64)[idx] * size)


def opencv_matrix(matrix: np.ndarray) -> np.ndarray:
    """A transform between continuous coordinates → the same transform between OpenCV's pixel
    indices (``p_cv = p - 0.5`` on both sides)."""
    m = np.array(matrix, dtype=np.float64, copy=True)
    m[:, 2] += m[:, :2] @ np.array([0.5, 0.5]) - 0.5
    return m


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The ``size x size`` crop through ``matrix`` (continuous coordinates), by ``cv2.warpAffine``,
    without aliasing when it shrinks: a shrink by more than 2x first reduces the image by an integer
    factor with area averaging."""
    matrix = opencv_matrix(matrix)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    factor = int(1.0 / scale) if scale > 0 else 1
    if factor >= 2:
        h, w = image.shape[:2]
        small = cv2.resize(image, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=cv2.INTER_AREA)
        sx, sy = w / small.shape[1], h / small.shape[0]
        # pixel centres: p + 0.5 = s (q + 0.5) between original p and reduced q
        matrix = matrix @ np.array([[sx, 0.0, (sx - 1) / 2], [0.0, sy, (sy - 1) / 2], [0.0, 0.0, 1.0]])
        image = small
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(BORDER, BORDER, BORDER))


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int, template: np.ndarray = FACE_TEMPLATE,
               points: list[int] | None = None) -> np.ndarray:
    """The ``size x size`` aligned face: eyes level, at the template's places (fitted to ``points``)."""
    return warp(image, alignment_transform(landmarks, size, template, points), size)


def box_crop_transform(box: np.ndarray, size: int, margin: float) -> np.ndarray:
    """Scale and shift taking the square of side ``margin x`` the longer side of ``box`` (xyxy),
    centred on it, onto a ``size``-pixel crop."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) * margin
    scale = size / side
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return np.array([[scale, 0.0, size / 2 - scale * cx], [0.0, scale, size / 2 - scale * cy]])


def crop_box(image: np.ndarray, box: np.ndarray, size: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The square crop the landmark model reads, and the transform from image to crop pixels."""
    matrix = box_crop_transform(box, size, margin)
    return warp(image, matrix, size), matrix
