"""Tiling a photo for a detector with a fixed input: the scales to look at and the overlapping
windows at each, so that faces far smaller than the whole photo's letterbox can resolve are found.

A detector finds faces down to ``min_face`` pixels at its input. The whole photo letterboxed into
the input is one look; when the smallest face wanted needs a finer scale, the photo is also read at
finer scales, each at most ``ratio`` times the previous, cut into ``tile``-pixel windows that
overlap by ``overlap`` pixels: a face smaller than the overlap lies whole in some window, and a
face larger than it at that scale is at least ``overlap / ratio`` pixels one scale coarser. Boxes
cut by an inner window edge are dropped (their face is whole in a neighbour); all the scales'
boxes then go through one NMS. Boxes are ``(N, 4) float32 xyxy``.
"""

from __future__ import annotations

import math

import numpy as np


def look_scales(long_side: int, tile: int, min_face: float, smallest: float, ratio: float = 4.0,
                most: float = 1.0) -> list[float]:
    """Scales (input pixels per photo pixel) to read a photo whose longer side is ``long_side`` at,
    coarsest first: the whole photo in one ``tile`` (``tile / long_side``), then finer, each at most
    ``ratio`` times the previous, down to faces of ``smallest`` photo pixels appearing as
    ``min_face`` input pixels; never finer than ``most``."""
    whole = tile / long_side
    finest = min(most, min_face / smallest)
    scales = [whole]
    while scales[-1] < finest * 0.999:
        scales.append(min(finest, scales[-1] * ratio))
    return scales


def window_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of windows of ``tile`` pixels covering ``length``, overlapping by at least ``overlap``,
    spread evenly (the first at 0, the last ending at ``length``)."""
    if length <= tile:
        return [0]
    count = math.ceil((length - tile) / (tile - overlap)) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def windows(width: int, height: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """``(x1, y1, x2, y2)`` windows of at most ``tile`` pixels covering a ``width x height`` image."""
    return [(x, y, min(x + tile, width), min(y + tile, height))
            for y in window_starts(height, tile, overlap) for x in window_starts(width, tile, overlap)]


def cut_by_inner_edge(boxes: np.ndarray, window: tuple[int, int, int, int], width: int, height: int,
                      margin: float = 2.0) -> np.ndarray:
    """``(N,)`` bool: which boxes (image pixels) reach within ``margin`` of an edge of ``window`` that
    is not an edge of the ``width x height`` image, i.e. may be cut off by the window."""
    x1, y1, x2, y2 = window
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    cut = np.zeros(len(b), bool)
    if x1 > 0:
        cut |= b[:, 0] <= x1 + margin
    if y1 > 0:
        cut |= b[:, 1] <= y1 + margin
    if x2 < width:
        cut |= b[:, 2] >= x2 - margin
    if y2 < height:
        cut |= b[:, 3] >= y2 - margin
    return cut
