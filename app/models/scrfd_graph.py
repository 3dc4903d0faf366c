"""The import command's rewrite of an InsightFace SCRFD graph (``det_*.onnx``) into the ``scrfd``
family's one output, decoded in the graph (needs the ``onnx`` package: the import command only).

SCRFD has 9 outputs: for each stride 8, 16 and 32, per anchor (``anchors`` per feature cell, row by
row) a score ``(.., 1)``, a box as distances from the anchor point ``(.., 4)`` (left, top, right,
bottom) and 5 keypoints as offsets from it ``(.., 10)``, both in units of the stride. Exports differ
in whether the outputs carry the batch axis (``(1, N, c)``) or not (``(N, c)``). The rewrite adds
the batch axis where it is missing (``Unsqueeze``), decodes boxes and keypoints into input pixels
from the anchor points (constants computed for the file's input size) and concatenates everything
into one ``(B, N, 15)`` output: ``x1, y1, x2, y2, score, x0, y0, ..., x4, y4``.

Coordinates: the anchor point of cell ``(i, j)`` is the cell's centre, InsightFace's pixel
``(j * stride, i * stride)`` (SCRFD's 3x3 stride-2 convolutions padded by 1 centre output ``j`` on
input pixel ``2 j``). InsightFace hands its coordinates to OpenCV as pixel indices; Sightline's are
continuous (pixel ``k`` covers ``[k, k + 1)``), so the anchor points are put at ``j * stride + 0.5``:
every decoded coordinate is InsightFace's plus 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

STRIDES = (8, 16, 32)
KEYPOINTS = 5
OUTPUT = "detections"
PREFIX = "sightline_scrfd"


class NotScrfd(ValueError):
    """A graph whose outputs are not SCRFD's (with keypoints)."""


def anchor_points(size: int, stride: int, anchors: int) -> np.ndarray:
    """``(N, 2) float32`` anchor points of one stride in continuous input pixels, ``N = (size /
    stride)^2 * anchors``: cells row by row, each cell's point (its centre pixel's centre) repeated
    ``anchors`` times."""
    cells = size // stride
    ys, xs = np.mgrid[:cells, :cells]
    points = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride + 0.5
    return np.repeat(points, anchors, axis=0)


@dataclass(frozen=True)
class ScrfdLayout:
    """Which output is which, per stride (8, 16, 32), and how many anchors each stride has."""

    scores: tuple[str, str, str]
    boxes: tuple[str, str, str]
    keypoints: tuple[str, str, str]
    rows: tuple[int, int, int]
    anchors: int             # per feature cell
    batched: bool            # the outputs carry the batch axis

    @property
    def total(self) -> int:
        return sum(self.rows)


def read_layout(shapes: dict[str, tuple[int, ...]], size: int) -> ScrfdLayout:
    """The layout of a graph whose outputs, run on one ``size`` x ``size`` image, have ``shapes``
    (name → shape, in the graph's order); ``NotScrfd`` saying why otherwise."""
    described = ", ".join(f"{name} {list(shape)}" for name, shape in shapes.items())
    if len(shapes) == 6:
        raise NotScrfd(f"its 6 outputs ({described}) are an SCRFD without keypoints; Sightline serves SCRFD "
                       "with its 5 keypoints (the *_kps / bnkps models, 9 outputs)")
    if len(shapes) != 9:
        raise NotScrfd(f"it has {len(shapes)} output(s) ({described}); an SCRFD graph has 9 (score, bbox and "
                       "kps at strides 8, 16, 32)")
    ranks = {len(s) for s in shapes.values()}
    if ranks not in ({2}, {3}) or (ranks == {3} and any(s[0] != 1 for s in shapes.values())):
        raise NotScrfd(f"its outputs ({described}) are neither (N, c) nor (1, N, c) as SCRFD's are")
    by_width: dict[int, list[tuple[int, str]]] = {1: [], 4: [], 2 * KEYPOINTS: []}
    for name, shape in shapes.items():
        if shape[-1] not in by_width:
            raise NotScrfd(f"output {name} {list(shape)} is none of SCRFD's score (.., 1), bbox (.., 4), kps (.., 10)")
        by_width[shape[-1]].append((shape[-2], name))
    cells = [(size // s) ** 2 for s in STRIDES]
    most = max((rows for rows, _ in by_width[1]), default=0)
    anchors = most // cells[0] if most % cells[0] == 0 else 0
    expected = sorted((c * anchors for c in cells), reverse=True)
    for found in by_width.values():
        found.sort(reverse=True)                         # the most rows first: stride 8
        if anchors < 1 or [rows for rows, _ in found] != expected:
            raise NotScrfd(f"its outputs ({described}) do not have SCRFD's rows at {size} px: score, bbox and kps "
                           f"with (size / stride)^2 x anchors rows for strides 8, 16, 32")
    scores, boxes, keypoints = (tuple(name for _, name in by_width[w]) for w in (1, 4, 2 * KEYPOINTS))
    return ScrfdLayout(scores, boxes, keypoints, tuple(expected), anchors, ranks == {3})  # type: ignore[arg-type]


def _opset(proto: onnx.ModelProto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)


def rewrite(proto: onnx.ModelProto, layout: ScrfdLayout, size: int, batch: int | str) -> onnx.ModelProto:
    """A copy of ``proto`` with one output ``(batch, N, 15)`` decoded in the graph for ``size`` x
    ``size`` inputs (its input set to that shape, ``batch`` rows: 1 or a dimension name)."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    dims = graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, (batch, 3, size, size)):
        if isinstance(value, int):
            dim.Clear()
            dim.dim_value = value
        else:
            dim.Clear()
            dim.dim_param = value

    def const(name: str, value: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(value, f"{PREFIX}_{name}"))
        return f"{PREFIX}_{name}"

    def node(op: str, inputs: list[str], name: str, **attrs: object) -> str:
        graph.node.append(helper.make_node(op, inputs, [f"{PREFIX}_{name}"], name=f"{PREFIX}_{name}", **attrs))
        return f"{PREFIX}_{name}"

    def batched(name: str) -> str:
        if layout.batched:
            return name
        if _opset(out) >= 13:
            return node("Unsqueeze", [name, const(f"axis0_{name}", np.array([0], np.int64))], f"unsqueeze_{name}")
        return node("Unsqueeze", [name], f"unsqueeze_{name}", axes=[0])

    parts = []
    for k, stride in enumerate(STRIDES):
        points = anchor_points(size, stride, layout.anchors)[None]                       # (1, N, 2)
        scale = np.array([-stride, -stride, stride, stride], np.float32)
        corners = node("Add", [node("Mul", [batched(layout.boxes[k]), const(f"box_scale_{stride}", scale)],
                                    f"box_mul_{stride}"),
                               const(f"box_points_{stride}", np.concatenate([points, points], axis=-1))],
                       f"boxes_{stride}")
        keypoints = node("Add", [node("Mul", [batched(layout.keypoints[k]),
                                              const(f"kps_scale_{stride}", np.array(stride, np.float32))],
                                      f"kps_mul_{stride}"),
                                 const(f"kps_points_{stride}", np.tile(points, (1, 1, KEYPOINTS)))],
                         f"keypoints_{stride}")
        parts.append(node("Concat", [corners, batched(layout.scores[k]), keypoints], f"rows_{stride}", axis=2))
    graph.node.append(helper.make_node("Concat", parts, [OUTPUT], name=f"{PREFIX}_{OUTPUT}", axis=1))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT,
                                                      [batch, layout.total, 4 + 1 + 2 * KEYPOINTS]))
    return out
