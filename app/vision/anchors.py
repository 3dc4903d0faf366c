"""YOLO-style anchor grids and the decoding of a detector's raw output.

Output layout (written into every detector's ONNX metadata as ``output_layout``): one tensor
``(B, N, 5 + C)`` of raw values, rows ordered by scale (strides ascending), then grid row ``y``,
column ``x``, anchor ``a``; columns ``t_obj, t_x, t_y, t_w, t_h, class logits (C)``. Decoded:

- ``p_c = sigmoid(t_obj)``; class probabilities ``softmax(logits)``; score ``p_c * p(class)``;
- ``b_x = sigmoid(t_x)`` and ``b_y = sigmoid(t_y)`` are relative to the cell (0 to 1), so the centre
  in input pixels is ``(x + b_x) * stride``;
- ``b_w = exp(t_w)`` and ``b_h = exp(t_h)`` are relative to the anchor (may exceed 1), so the width
  in input pixels is ``anchor_w * b_w``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OUTPUT_LAYOUT = (
    "raw (B, N, 5+C); rows: scale (strides ascending), grid y, grid x, anchor; "
    "cols: t_obj, t_x, t_y, t_w, t_h, class logits; "
    "p_c=sigmoid(t_obj), cx=(x+sigmoid(t_x))*stride, cy=(y+sigmoid(t_y))*stride, "
    "w=anchor_w*exp(t_w), h=anchor_h*exp(t_h), score=p_c*softmax(logits)[c]"
)
MAX_LOG_SCALE = 6.0  # exp(6) ~ 400 x the anchor: keeps exp() finite on garbage logits


@dataclass(frozen=True)
class AnchorGrid:
    """Per-row constants of the output for one input size: cell offsets, strides and anchor shapes.

    Every array is ``(N,) float32``, aligned with the rows of the model output.
    """

    cell_x: np.ndarray
    cell_y: np.ndarray
    stride: np.ndarray
    anchor_w: np.ndarray
    anchor_h: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.stride.shape[0])


def anchor_grid(input_size: int, strides: list[int], anchors: list[list[list[float]]]) -> AnchorGrid:
    """Build the grid for a square ``input_size`` input; ``anchors[s]`` holds stride s's ``[w, h]``s."""
    parts: list[list[np.ndarray]] = [[], [], [], [], []]
    for stride, shapes in zip(strides, anchors, strict=True):
        cells = input_size // stride
        shapes_arr = np.asarray(shapes, dtype=np.float32).reshape(-1, 2)
        n_anchor = shapes_arr.shape[0]
        gy, gx, ga = np.meshgrid(np.arange(cells), np.arange(cells), np.arange(n_anchor), indexing="ij")
        parts[0].append(gx.reshape(-1))
        parts[1].append(gy.reshape(-1))
        parts[2].append(np.full(gx.size, stride))
        parts[3].append(shapes_arr[ga.reshape(-1), 0])
        parts[4].append(shapes_arr[ga.reshape(-1), 1])
    cx, cy, st, aw, ah = (np.concatenate(p).astype(np.float32) for p in parts)
    return AnchorGrid(cell_x=cx, cell_y=cy, stride=st, anchor_w=aw, anchor_h=ah)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def decode_anchors(raw: np.ndarray, grid: AnchorGrid, conf_threshold: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one image's raw output ``(N, 5 + C)`` into candidates whose score passes the threshold.

    Returns ``boxes (K, 4) float32 xyxy`` in model-input pixels, ``scores (K,) float32`` and
    ``class_ids (K,) int64`` (the best class of each anchor). Only rows whose objectness alone
    could pass are decoded, which keeps this cheap on mostly-empty outputs.
    """
    if raw.shape[0] != grid.rows:
        raise ValueError(f"output has {raw.shape[0]} rows, the anchor grid {grid.rows}")
    obj = sigmoid(raw[:, 0])
    rows = np.flatnonzero(obj > conf_threshold)
    logits = raw[rows, 5:]
    logits = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    class_ids = probs.argmax(axis=1)
    scores = obj[rows] * probs[np.arange(rows.size), class_ids]
    passed = scores > conf_threshold
    rows, scores, class_ids = rows[passed], scores[passed], class_ids[passed]
    t = raw[rows, 1:5]
    st = grid.stride[rows]
    cx = (grid.cell_x[rows] + sigmoid(t[:, 0])) * st
    cy = (grid.cell_y[rows] + sigmoid(t[:, 1])) * st
    w = grid.anchor_w[rows] * np.exp(np.minimum(t[:, 2], MAX_LOG_SCALE))
    h = grid.anchor_h[rows] * np.exp(np.minimum(t[:, 3], MAX_LOG_SCALE))
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
    return boxes, scores.astype(np.float32), class_ids.astype(np.int64)
