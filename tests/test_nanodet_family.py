"""The ``nanodet-gfl`` family (NanoDet's GFL head, the default COCO detector's layout):

- ``decode_gfl`` against a deliberately simple reference that walks every cell and side in loops,
  at score thresholds set exactly at and just below a cell's score;
- a graph that emits a known output through ``load_model`` and ``Detector.detect``: a box put in
  known cells comes back in the photo's own pixels, through the letterbox, at non-square sizes;
- a file whose output does not match its metadata is refused when loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from app.models import load_model
from app.models.anchor_detector import DetectParams
from app.models.metadata import MetadataError, validate_metadata
from app.models.nanodet import NanoDetDetector, cell_centres, decode_gfl
from app.runtime import ModelLoadError
from app.vision.letterbox import letterbox_geometry

SIZE, STRIDES, REG_MAX, CLASSES = 64, [8, 16, 32], 7, ["person", "car", "cat"]
COLUMNS = len(CLASSES) + 4 * (REG_MAX + 1)
ROWS = sum((SIZE // s) ** 2 for s in STRIDES)


def reference_decode(raw: np.ndarray, conf: float, offset: float) -> list[tuple[float, ...]]:
    """One ``(x1, y1, x2, y2, score, class)`` per cell whose best class scores above ``conf``."""
    out, row = [], 0
    for s in STRIDES:
        for y in range(SIZE // s):
            for x in range(SIZE // s):
                scores = raw[row, :len(CLASSES)]
                best = int(np.argmax(scores))
                if scores[best] > conf:
                    sides = []
                    for k in range(4):
                        logits = raw[row, len(CLASSES) + k * (REG_MAX + 1): len(CLASSES) + (k + 1) * (REG_MAX + 1)]
                        p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
                        sides.append(sum(i * p[i] for i in range(REG_MAX + 1)) * s)
                    cx, cy = (x + offset) * s, (y + offset) * s
                    out.append((cx - sides[0], cy - sides[1], cx + sides[2], cy + sides[3], float(scores[best]), best))
                row += 1
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_decode_matches_the_loop_at_the_threshold(seed: int, offset: float) -> None:
    rng = np.random.default_rng(seed)
    raw = rng.normal(0, 2, (ROWS, COLUMNS)).astype(np.float32)
    raw[:, :len(CLASSES)] = rng.uniform(0, 1, (ROWS, len(CLASSES))).astype(np.float32)
    centres, strides = cell_centres(SIZE, STRIDES, offset)
    at = float(np.sort(raw[:, :len(CLASSES)].max(axis=1))[ROWS // 2])    # one cell's score exactly
    for conf in (at, float(np.nextafter(np.float32(at), np.float32(0)))):
        boxes, scores, ids = decode_gfl(raw, centres, strides, len(CLASSES), REG_MAX, conf)
        want = reference_decode(raw, conf, offset)
        assert len(boxes) == len(want) and len(want) > 0
        np.testing.assert_allclose(boxes, np.array([w[:4] for w in want]), atol=1e-4)
        np.testing.assert_array_equal(scores, np.array([w[4] for w in want], np.float32))
        np.testing.assert_array_equal(ids, [w[5] for w in want])
    # the cell scored exactly ``at`` is out at conf=at and in just below it
    assert len(decode_gfl(raw, centres, strides, len(CLASSES), REG_MAX, at)[0]) + 1 == \
        len(decode_gfl(raw, centres, strides, len(CLASSES), REG_MAX, float(np.nextafter(np.float32(at), np.float32(0))))[0])


def metadata(**change) -> dict:
    meta = {"name": "nanodet-test", "task": "detection", "family": "nanodet-gfl", "version": "1", "input_size": SIZE,
            "fixed_size": True, "normalization": {"color": "BGR", "mean": [0.4, 0.45, 0.5], "std": [0.2, 0.2, 0.2]},
            "class_names": CLASSES, "strides": STRIDES, "reg_max": REG_MAX, "center_offset": 0.0}
    return {**meta, **change}


def constant_graph(path: Path, output: np.ndarray, meta: dict) -> Path:
    """A graph that emits ``output`` (plus 0 x the input's mean, so the input is read) for any input."""
    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(output.astype(np.float32)))
    nodes = [const, helper.make_node("ReduceMean", ["input"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"]), helper.make_node("Add", ["c", "z"], ["output"])]
    graph = helper.make_graph(nodes, "nanodet", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                               [1, 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(output.shape))],
                              [numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(model, path)
    return path


def load(path: Path) -> NanoDetDetector:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    raw = {p: json.loads(v) for p, v in session.get_modelmeta().custom_metadata_map.items()}
    model = load_model(session, raw, path)
    assert isinstance(model, NanoDetDetector)
    return model


def one_box_output(row: int, cls: int, score: float, sides: tuple[int, int, int, int]) -> np.ndarray:
    """Every cell scores 0.01 except ``row``; its distributions are one-hot (logit 30) at ``sides`` strides."""
    out = np.full((1, ROWS, COLUMNS), -30.0, np.float32)
    out[0, :, :len(CLASSES)] = 0.01
    out[0, row, cls] = score
    for k, d in enumerate(sides):
        out[0, row, len(CLASSES) + k * (REG_MAX + 1) + d] = 30.0
    return out


@pytest.mark.parametrize("width,height", [(200, 120), (90, 300), (64, 64)])
def test_a_known_box_comes_back_in_photo_pixels(tmp_path: Path, width: int, height: int) -> None:
    # stride 16's grid starts after stride 8's 64 cells; cell (x=2, y=1) of stride 16 is row 64 + 1*4 + 2
    row, stride, (cx, cy) = 64 + 4 + 2, 16, (32.0, 16.0)
    sides = (1, 0, 2, 3)
    detector = load(constant_graph(tmp_path / "n.onnx", one_box_output(row, 2, 0.9, sides), metadata()))
    dets, _ = detector.detect(np.zeros((height, width, 3), np.uint8), DetectParams(conf=0.3))
    geo = letterbox_geometry(width, height, SIZE)
    box_in = np.array([cx - sides[0] * stride, cy - sides[1] * stride, cx + sides[2] * stride, cy + sides[3] * stride])
    x1, y1 = geo.content[:2]
    want = np.clip((box_in - [x1, y1, x1, y1]) / geo.scale, 0, [width, height, width, height])
    assert dets.class_ids.tolist() == [2] and detector.meta.class_names[2] == "cat"
    np.testing.assert_allclose(dets.boxes[0], want, atol=1e-3)
    assert dets.scores[0] == pytest.approx(0.9)
    assert len(detector.detect(np.zeros((height, width, 3), np.uint8), DetectParams(conf=0.95))[0].boxes) == 0


def test_output_unlike_its_metadata_is_refused(tmp_path: Path) -> None:
    wrong = np.zeros((1, ROWS, COLUMNS + 1), np.float32)
    with pytest.raises(ModelLoadError, match="output shape"):
        load(constant_graph(tmp_path / "n.onnx", wrong, metadata()))


def test_strides_must_divide_the_input() -> None:
    with pytest.raises(MetadataError, match="multiple of every stride"):
        validate_metadata(metadata(input_size=60))
