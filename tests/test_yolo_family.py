"""The ``yolov5``, ``yolov8`` (YOLOv8 and YOLO11) and ``-seg`` families: Ultralytics' YOLO exports.

- box for box: small ONNX graphs emit each exact layout (v5 and v8/11 detection, v5 and v8
  segmentation) with known boxes, scores, mask coefficients and prototypes, carrying
  Ultralytics' own metadata_props; they go through the real import command and ``load_model``, and
  the served detections are a deliberately simple reference's (per-candidate loop, greedy NMS per
  class, the letterbox undone by its formula) at non-square photo sizes, with scores exactly at
  the threshold dropped (Ultralytics keeps scores above it);
- masks pixel for pixel against a per-pixel loop of bilinear reads of ``coefficients @
  prototypes``, and by IoU against Ultralytics' own pipeline (crop, upsample to the input, undo the
  letterbox) written here with torch;
- Sightline's own anchor detector exported into the YOLOv5 layout by ONNX nodes appended to its
  graph: the ``yolov5`` decoder on it gives the ``anchor-yolo`` decoder's detections on scenes;
- over HTTP: an imported ``yolov8-seg`` graph serving ``/detect`` with COCO RLE masks (pycocotools
  reads them back) and polygons, a JPEG decoded shrunk still masked at the photo's size; the bundled
  detector's answers carry no mask fields;
- files refused at import and at load, each with its reason.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from pycocotools import mask as coco_mask

from app.main import create_app
from app.models import load_model
from app.models.__main__ import main as import_command
from app.models.anchor_detector import DetectParams, ObjectDetector
from app.models.metadata import validate_metadata
from app.models.yolo import (InstanceDetections, InstanceMask, NotYolo, YoloDetector, YoloSegDetector, class_names,
                             image_size)
from app.runtime import ModelLoadError, read_metadata
from app.settings import Settings
from app.vision.anchors import anchor_grid
from tests.conftest import SYNTHETIC, wait_ready
from training.synth.scenes import SceneConfig, render_scene

SIZE, PROTO, MASKS = 64, 16, 32           # input side, prototype side (SIZE / 4), mask coefficients
CELLS = sum((SIZE // s) ** 2 for s in (8, 16, 32))   # YOLOv8's candidates at 64 px: 84 (YOLOv5's: 3 x 84)
NAMES = ["person", "bicycle", "car"]
LICENSE = "AGPL-3.0 License (https://ultralytics.com/license)"


# ---- candidates with known values, in each family's exact layout ----

@dataclass
class Truth:
    """Per candidate: ``boxes (N, 4)`` cx, cy, w, h in input pixels, ``obj (N,)`` (YOLOv5 only),
    ``cls (N, C)`` class scores, ``coeffs (N, M)``; ``protos (M, P, P)`` (segmentation only)."""

    v5: bool
    boxes: np.ndarray
    obj: np.ndarray
    cls: np.ndarray
    coeffs: np.ndarray
    protos: np.ndarray | None

    def outputs(self) -> list[np.ndarray]:
        """The export's outputs for one image: detections ``(1, N, F)`` (v5) or ``(1, F, N)`` (v8),
        then the prototypes ``(1, M, P, P)`` for segmentation."""
        parts = [self.boxes, *([self.obj[:, None]] if self.v5 else []), self.cls]
        if self.protos is not None:
            parts.append(self.coeffs)
        rows = np.concatenate(parts, axis=1).astype(np.float32)
        det = rows[None] if self.v5 else rows.T[None]
        return [np.ascontiguousarray(det)] + ([self.protos[None].astype(np.float32)] if self.protos is not None else [])


def make_truth(v5: bool, seg: bool, seed: int, conf: float = 0.25, smooth: bool = False) -> Truth:
    """``3 x CELLS`` (v5) or ``CELLS`` (v8) candidates: most score below 0.2, a third up to 1; one
    scores exactly ``conf`` (as float32, what it is compared as) and one the float32 just above."""
    rng = np.random.default_rng(seed)
    n = CELLS * (3 if v5 else 1)
    centres = rng.uniform(0, SIZE, (n, 2))
    sides = rng.uniform(4, SIZE / 3, (n, 2))
    cls = rng.uniform(0, 0.2, (n, len(NAMES))).astype(np.float32)
    live = rng.choice(n, n // 3, replace=False)
    cls[live, rng.integers(0, len(NAMES), len(live))] = rng.uniform(0.2, 1.0, len(live))
    obj = (rng.uniform(0.5, 1.0, n) if v5 else np.ones(n)).astype(np.float32)
    at = np.float32(conf)                       # scores are float32: conf is compared as one
    edge = rng.choice(np.setdiff1d(np.arange(n), live), 2, replace=False)
    cls[edge], obj[edge] = 0.0, 1.0
    cls[edge[0], 0], cls[edge[1], 1] = at, np.nextafter(at, np.float32(1))
    coeffs = rng.normal(0, 0.3, (n, MASKS)).astype(np.float32)
    protos = rng.normal(0, 1, (MASKS, PROTO, PROTO)).astype(np.float32) if seg else None
    if seg and smooth:          # candidate i's mask: blob i % M, a disc well inside the candidate's box
        protos, discs = blobs(rng)
        coeffs[:] = 0
        coeffs[np.arange(n), np.arange(n) % MASKS] = 8.0
        centres, sides = discs[np.arange(n) % MASKS, :2], discs[np.arange(n) % MASKS, 2:] * 3.0
    return Truth(v5, np.concatenate([centres, sides], axis=1).astype(np.float32), obj, cls, coeffs, protos)


def blobs(rng) -> tuple[np.ndarray, np.ndarray]:
    """``(M, P, P)`` smooth prototypes, ``gaussian - 0.5``: each a disc of logit > 0 somewhere; and
    each disc's ``cx, cy, d, d`` (centre, diameter) in input pixels, ``(M, 4)``."""
    yy, xx = np.mgrid[0:PROTO, 0:PROTO] + 0.5
    planes, discs = [], []
    for _ in range(MASKS):
        cx, cy, sigma = rng.uniform(4, PROTO - 4), rng.uniform(4, PROTO - 4), rng.uniform(1.2, 2.5)
        planes.append(np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2)) - 0.5)
        radius = sigma * math.sqrt(2 * math.log(2)) * SIZE / PROTO          # where the gaussian is 0.5
        discs.append([cx * SIZE / PROTO, cy * SIZE / PROTO, 2 * radius, 2 * radius])
    return np.array(planes, np.float32), np.array(discs, np.float32)


def emit_graph(path: Path, outputs: list[np.ndarray], props: dict[str, str], batch: str = "fixed",
               input_hw: tuple[int | str, int | str] = (SIZE, SIZE), opset: int = 17) -> None:
    """An ONNX file whose outputs (``output0``, ``output1``, as Ultralytics names them) are
    ``outputs`` for every image: ``batch`` "fixed": input ``(1, 3, h, w)``; "free": ``(batch, 3, h,
    w)``, every row of the batch getting the values. ``props`` are its metadata_props as is."""
    side = [1 if batch == "fixed" else "batch", 3, *input_hw]
    nodes = [helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=0),   # (B,)
             helper.make_node("Mul", ["mean", "zero"], ["nothing"])]
    inits = [numpy_helper.from_array(np.array(0, np.float32), "zero")]
    outs = []
    for k, value in enumerate(outputs):
        name = f"output{k}"
        inits += [numpy_helper.from_array(value, f"{name}_value"),
                  numpy_helper.from_array(np.array([-1] + [1] * (value.ndim - 1), np.int64), f"{name}_rows")]
        nodes += [helper.make_node("Reshape", ["nothing", f"{name}_rows"], [f"{name}_zero"]),
                  helper.make_node("Add", [f"{name}_zero", f"{name}_value"], [name])]
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [side[0], *value.shape[1:]]))
    graph = helper.make_graph(nodes, "ultralytics_like", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                                        side)], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    for key, value in props.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(model, str(path))


def ultralytics_props(task: str = "detect", names: list[str] = NAMES, imgsz: list[int] | None = None,
                      model: str = "YOLOv8n") -> dict[str, str]:
    """The metadata_props an Ultralytics export writes (each value ``str()`` of a Python value)."""
    meta = {"description": f"Ultralytics {model}{'-seg' if task == 'segment' else ''} model trained on coco.yaml",
            "author": "Ultralytics", "date": "2024-11-02T10:12:41.220539", "version": "8.3.27", "license": LICENSE,
            "docs": "https://docs.ultralytics.com", "stride": 32, "task": task, "batch": 1,
            "imgsz": imgsz or [SIZE, SIZE], "names": dict(enumerate(names)),
            "args": {"batch": 1, "half": False, "dynamic": False, "simplify": True, "opset": None}}
    return {k: str(v) for k, v in meta.items()}


def yolov5_props(names: list[str] = NAMES) -> dict[str, str]:
    """What YOLOv5's export.py writes: stride and names only."""
    return {"stride": "32", "names": str(dict(enumerate(names)))}


LAYOUTS = {"yolov5": (True, False), "yolov8": (False, False), "yolov5-seg": (True, True), "yolov8-seg": (False, True)}


def export(tmp_path: Path, family: str, seed: int = 0, batch: str = "fixed", **kw) -> tuple[Path, Truth]:
    """A fake export of ``family``'s exact layout and its truth; YOLOv5's with YOLOv5's metadata."""
    v5, seg = LAYOUTS[family]
    truth = make_truth(v5, seg, seed, **kw)
    props = yolov5_props() if v5 else ultralytics_props("segment" if seg else "detect")
    path = tmp_path / f"{family}-{seed}.onnx"
    emit_graph(path, truth.outputs(), props, batch=batch, input_hw=(SIZE, SIZE))
    return path, truth


def imported(tmp_path: Path, source: Path, family: str, *extra: str) -> Path:
    target = tmp_path / f"{source.stem}-served.onnx"
    assert import_command(["import", "--family", family, str(source), str(target), *extra]) == 0
    return target


def served(path: Path):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return load_model(session, read_metadata(session), path)


# ---- a deliberately simple reference ----

def simple_iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


@dataclass
class Placement:
    """Where a ``width`` x ``height`` image lies in the ``SIZE`` input, by the letterbox's formula."""

    width: int
    height: int

    @property
    def scale(self) -> float:
        return min(SIZE / self.width, SIZE / self.height)

    @property
    def pad(self) -> tuple[int, int]:
        return (SIZE - round(self.width * self.scale)) // 2, (SIZE - round(self.height * self.scale)) // 2


def reference_detections(truth: Truth, conf: float, iou: float, max_det: int, place: Placement,
                         reduction: int = 1, classes: set[int] | None = None
                         ) -> list[tuple[list[float], float, int, int]]:
    """``(box xyxy in photo pixels, score, class, candidate)`` one candidate at a time: score =
    objectness x class score (v5) or the class score, its best class, above ``conf`` (in float32)
    and of ``classes``; greedy NMS within each class, best first; the letterbox undone, boxes
    clipped to the image, then times ``reduction``."""
    found = []
    for i in range(len(truth.boxes)):
        scores = [np.float32(truth.obj[i]) * np.float32(s) if truth.v5 else np.float32(s) for s in truth.cls[i]]
        c = int(np.argmax(scores))
        if scores[c] > np.float32(conf) and (classes is None or c in classes):
            cx, cy, w, h = (float(v) for v in truth.boxes[i])
            found.append(([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], float(scores[c]), c, i))
    found.sort(key=lambda f: -f[1])
    kept: list = []
    for f in found:
        if all(k[2] != f[2] or simple_iou(k[0], f[0]) <= iou for k in kept):
            kept.append(f)
    out = []
    (px, py), s = place.pad, place.scale
    for box, score, c, i in kept[:max_det]:
        x1, x2 = (min(max((v - px) / s, 0), place.width) * reduction for v in (box[0], box[2]))
        y1, y2 = (min(max((v - py) / s, 0), place.height) * reduction for v in (box[1], box[3]))
        out.append(([x1, y1, x2, y2], score, c, i))
    return out


def reference_mask(truth: Truth, i: int, box, place: Placement, photo: tuple[int, int], reduction: int = 1
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Candidate ``i``'s mask in a ``photo`` (width, height) and where its logit is within 1e-4 of 0
    (float rounding may go either way there), pixel by pixel: a pixel whose centre lies in ``box``
    reads ``coeffs @ protos`` bilinearly (half-pixel centres, clamped at the edges) at its centre
    taken into the input, and is in the mask where that is above 0."""
    plane = np.tensordot(truth.coeffs[i].astype(np.float64), truth.protos.astype(np.float64), axes=1)
    width, height = photo
    mask, unsure = np.zeros((height, width), bool), np.zeros((height, width), bool)
    cell = SIZE / PROTO
    (px, py), s = place.pad, place.scale
    for y in range(max(0, math.floor(box[1]) - 1), min(height, math.ceil(box[3]) + 1)):
        for x in range(max(0, math.floor(box[0]) - 1), min(width, math.ceil(box[2]) + 1)):
            if not (box[0] <= x + 0.5 < box[2] and box[1] <= y + 0.5 < box[3]):
                continue
            u = min(max(((x + 0.5) / reduction * s + px) / cell - 0.5, 0), PROTO - 1)
            v = min(max(((y + 0.5) / reduction * s + py) / cell - 0.5, 0), PROTO - 1)
            j, k = math.floor(u), math.floor(v)
            j1, k1 = min(j + 1, PROTO - 1), min(k + 1, PROTO - 1)
            fu, fv = u - j, v - k
            value = ((1 - fv) * ((1 - fu) * plane[k, j] + fu * plane[k, j1])
                     + fv * ((1 - fu) * plane[k1, j] + fu * plane[k1, j1]))
            mask[y, x], unsure[y, x] = value > 0, abs(value) < 1e-4
    return mask, unsure


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def assert_same_detections(dets, want) -> None:
    assert len(dets.boxes) == len(want), (len(dets.boxes), len(want))
    np.testing.assert_allclose(dets.boxes, [w[0] for w in want], rtol=0, atol=1e-3)
    np.testing.assert_allclose(dets.scores, [w[1] for w in want], rtol=0, atol=1e-6)
    assert dets.class_ids.tolist() == [w[2] for w in want]


def assert_same_mask(got: np.ndarray, want: np.ndarray, unsure: np.ndarray) -> None:
    wrong = (got != want) & ~unsure
    assert not wrong.any(), f"{wrong.sum()} pixels differ, e.g. at {np.argwhere(wrong)[:3].tolist()}"


PHOTOS = [(150, 110), (90, 160), (64, 64)]


# ---- detection, box for box ----

@pytest.mark.parametrize("family", ["yolov5", "yolov8"])
@pytest.mark.parametrize("width, height", PHOTOS)
@pytest.mark.parametrize("conf", [0.25, 0.5])
def test_served_detections_are_the_references(tmp_path, family, width, height, conf):
    source, truth = export(tmp_path, family, seed=width + int(conf * 10), conf=conf)
    model = served(imported(tmp_path, source, family))
    assert isinstance(model, YoloDetector) and not isinstance(model, YoloSegDetector)
    params = DetectParams(conf=conf, iou=0.45, max_det=300)
    dets, _ = model.detect(photo(width, height), params)
    want = reference_detections(truth, conf, 0.45, 300, Placement(width, height))
    assert_same_detections(dets, want)
    assert np.float32(conf) not in dets.scores                           # at the threshold: dropped
    assert len(want) > 5 and len(set(dets.class_ids.tolist())) > 1
    assert not isinstance(dets, InstanceDetections)


@pytest.mark.parametrize("family", ["yolov5", "yolov8"])
def test_max_det_and_classes(tmp_path, family):
    source, truth = export(tmp_path, family, seed=7)
    model = served(imported(tmp_path, source, family))
    place = Placement(150, 110)
    image = photo(150, 110)
    few, _ = model.detect(image, DetectParams(conf=0.25, iou=0.45, max_det=3))
    assert_same_detections(few, reference_detections(truth, 0.25, 0.45, 3, place))
    cars, _ = model.detect(image, DetectParams(conf=0.25, iou=0.45, max_det=300, classes=frozenset({2})))
    assert_same_detections(cars, reference_detections(truth, 0.25, 0.45, 300, place, classes={2}))
    assert set(cars.class_ids.tolist()) == {2}


def test_the_written_metadata_is_read_from_the_export(tmp_path):
    source, _ = export(tmp_path, "yolov8")
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    target = imported(tmp_path, source, "yolov8")
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before
    raw = read_metadata(ort.InferenceSession(str(target), providers=["CPUExecutionProvider"]))
    meta = validate_metadata(raw)
    assert (meta.family, meta.task, meta.input_size, meta.fixed_size) == ("yolov8", "detection", SIZE, True)
    assert raw["class_names"] == NAMES and raw["boxes"] == CELLS and raw["stride"] == 32
    assert meta.license == LICENSE
    assert meta.source.startswith("Ultralytics YOLOv8n model trained on coco.yaml (author Ultralytics, version 8.3.27")
    assert meta.normalization.model_dump() == {"color": "RGB", "mean": (0, 0, 0), "std": (1, 1, 1)}
    assert not {"names", "imgsz", "args", "docs", "batch", "date"} & set(raw)    # Ultralytics' keys, translated
    again = imported(tmp_path, target, "yolov8", "--name", "again")             # a Sightline file imported anew
    assert read_metadata(ort.InferenceSession(str(again), providers=["CPUExecutionProvider"]))["class_names"] == NAMES


def test_a_free_batch_export_serves_batches(tmp_path):
    source, truth = export(tmp_path, "yolov8", batch="free")
    model = served(imported(tmp_path, source, "yolov8"))
    assert model.runner.fixed_batch is None and model.meta.fixed_size      # its side fixed, its batch free
    out = model.run(np.zeros((3, 3, SIZE, SIZE), np.float32))
    assert out.shape == (3, 4 + len(NAMES), CELLS)
    np.testing.assert_array_equal(out[2], truth.outputs()[0][0])


# ---- instance segmentation ----

@pytest.mark.parametrize("family, asked", [("yolov5-seg", "yolov5"), ("yolov8-seg", "yolov8"),
                                           ("yolov8-seg", "yolov8-seg")])
@pytest.mark.parametrize("width, height", PHOTOS[:2])
def test_served_masks_are_the_reference_pixel_for_pixel(tmp_path, family, asked, width, height):
    source, truth = export(tmp_path, family, seed=width)
    model = served(imported(tmp_path, source, asked))
    assert isinstance(model, YoloSegDetector) and model.meta.family == family
    assert (model.meta.mask_channels, model.meta.proto_size) == (MASKS, PROTO)
    assert [o.name for o in model.session.get_outputs()] == ["sightline_detections_and_protos"]
    dets, _ = model.detect(photo(width, height), DetectParams(conf=0.25, iou=0.45, max_det=300))
    place = Placement(width, height)
    want = reference_detections(truth, 0.25, 0.45, 300, place)
    assert_same_detections(dets, want)
    masks = dets.masks()
    assert len(masks) == len(want) > 5
    filled = 0
    for mask, (box, _, _, i) in zip(masks, want):
        ref, unsure = reference_mask(truth, i, box, place, (width, height))
        assert_same_mask(mask.full(width, height), ref, unsure)
        filled += ref.any()
    assert filled >= len(want) // 2                          # masks that hold pixels, not only empty ones


def ultralytics_mask(truth: Truth, i: int, box_input, place: Placement) -> np.ndarray:
    """Ultralytics' masks as its predictor draws them: ``process_mask`` (logits cropped to the box
    at the prototypes' resolution, upsampled bilinearly to the input, above 0), then the letterbox
    undone (``scale_masks``: the content cut out, resized bilinearly, above 0.5)."""
    protos = torch.from_numpy(truth.protos)
    logits = (torch.from_numpy(truth.coeffs[i])[None] @ protos.view(MASKS, -1)).view(1, PROTO, PROTO)
    x1, y1, x2, y2 = (v * PROTO / SIZE for v in box_input)
    r = torch.arange(PROTO)[None, None, :]
    c = torch.arange(PROTO)[None, :, None]
    logits = logits * ((r >= x1) * (r < x2) * (c >= y1) * (c < y2))
    up = F.interpolate(logits[None], (SIZE, SIZE), mode="bilinear", align_corners=False)[0, 0] > 0
    (px, py), s = place.pad, place.scale
    content = up[py:py + round(place.height * s), px:px + round(place.width * s)].float()
    return (F.interpolate(content[None, None], (place.height, place.width), mode="bilinear",
                          align_corners=False)[0, 0] > 0.5).numpy()


@pytest.mark.parametrize("family", ["yolov5-seg", "yolov8-seg"])
def test_masks_agree_with_ultralytics_pipeline(tmp_path, family):
    width, height = 200, 130
    source, truth = export(tmp_path, family, seed=3, smooth=True)
    model = served(imported(tmp_path, source, family))
    dets, _ = model.detect(photo(width, height), DetectParams(conf=0.25, iou=0.45, max_det=300))
    place = Placement(width, height)
    want = reference_detections(truth, 0.25, 0.45, 300, place)
    assert_same_detections(dets, want)
    ious = []
    for mask, (box, _, _, i) in zip(dets.masks(), want):
        cx, cy, w, h = truth.boxes[i]
        theirs = ultralytics_mask(truth, i, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), place)
        ours = mask.full(width, height)
        if theirs.sum() + ours.sum() >= 50:
            ious.append((theirs & ours).sum() / (theirs | ours).sum())
    assert len(ious) >= 5 and min(ious) > 0.8 and np.mean(ious) > 0.9, ious


def test_a_fixed_batch_seg_export_runs_the_batchers_rows(tmp_path):
    """Ultralytics' default export takes one image: the runner runs 3 rows one by one and each gets
    the flattened detections and prototypes."""
    source, truth = export(tmp_path, "yolov8-seg")
    model = served(imported(tmp_path, source, "yolov8"))
    assert model.runner.fixed_batch == 1
    out = model.run(np.zeros((3, 3, SIZE, SIZE), np.float32))
    det, protos = truth.outputs()
    assert out.shape == (3, det.size + protos.size)
    for row in out:
        rows, planes = model.layout.split(row)
        np.testing.assert_array_equal(rows, det[0].T)
        np.testing.assert_array_equal(planes, protos[0])


@pytest.mark.parametrize("seed", range(4))
def test_instance_rle_is_pycocotools_encoding(seed):
    rng = np.random.default_rng(seed)
    width, height = int(rng.integers(5, 40)), int(rng.integers(5, 40))
    for _ in range(20):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(0, width - x + 1)), int(rng.integers(0, height - y + 1))
        pixels = rng.random((h, w)) < rng.choice([0.0, 0.3, 1.0])
        mask = InstanceMask(x, y, pixels)
        full = mask.full(width, height)
        ours = mask.rle(width, height)
        theirs = coco_mask.encode(np.asfortranarray(full.astype(np.uint8)))
        assert ours == {"size": [height, width], "counts": theirs["counts"].decode()}
        np.testing.assert_array_equal(coco_mask.decode({"size": [height, width], "counts": ours["counts"]}), full)


def test_polygons_outline_the_mask():
    canvas = np.zeros((30, 40), np.uint8)
    cv2.circle(canvas, (15, 14), 9, 1, -1)
    canvas[2:5, 33:38] = 1
    pixels = canvas.astype(bool)
    polygons = InstanceMask(100, 50, pixels).polygons()
    assert len(polygons) == 2 and all(len(p) >= 3 for p in polygons)
    drawn = np.zeros((30, 40), np.uint8)
    for p in polygons:
        cv2.fillPoly(drawn, [np.round(np.array(p) - [100.5, 50.5]).astype(np.int32)], 1)
    assert (drawn.astype(bool) == pixels).all()                  # vertices at outline pixels' centres
    assert InstanceMask(0, 0, np.zeros((4, 4), bool)).polygons() == []


# ---- Sightline's own detector in the YOLOv5 layout ----

def sightline_detector_as_yolov5(path: Path) -> None:
    """``models/synthetic/detector.onnx`` (``anchor-yolo``: raw t_obj, t_x, t_y, t_w, t_h, class logits) with
    ONNX nodes appended that decode its anchors at 416 px into YOLOv5's ``(B, N, 5 + C)``: ``cx, cy,
    w, h`` in input pixels, ``sigmoid(t_obj)``, ``softmax(logits)``; Sightline's metadata replaced by
    YOLOv5's (stride and names)."""
    model = onnx.load(str(SYNTHETIC / "detector.onnx"))
    meta = {p.key: json.loads(p.value) for p in model.metadata_props}
    grid = anchor_grid(meta["input_size"], meta["strides"], meta["anchors"])
    classes = len(meta["class_names"])
    raw = model.graph.output[0].name
    consts = {"cells": np.stack([grid.cell_x, grid.cell_y], axis=1), "strides": grid.stride[:, None],
              "anchors": np.stack([grid.anchor_w, grid.anchor_h], axis=1), "cap": np.array(6.0, np.float32),
              "split": np.array([1, 2, 2, classes], np.int64)}
    model.graph.initializer.extend(numpy_helper.from_array(v.astype(v.dtype if v.dtype == np.int64 else np.float32), k)
                                   for k, v in consts.items())
    model.graph.node.extend([
        helper.make_node("Split", [raw, "split"], ["t_obj", "t_xy", "t_wh", "t_cls"], axis=2),
        helper.make_node("Sigmoid", ["t_obj"], ["obj"]),
        helper.make_node("Sigmoid", ["t_xy"], ["s_xy"]),
        helper.make_node("Add", ["s_xy", "cells"], ["cell_xy"]),
        helper.make_node("Mul", ["cell_xy", "strides"], ["xy"]),
        helper.make_node("Min", ["t_wh", "cap"], ["t_wh_capped"]),
        helper.make_node("Exp", ["t_wh_capped"], ["e_wh"]),
        helper.make_node("Mul", ["e_wh", "anchors"], ["wh"]),
        helper.make_node("Softmax", ["t_cls"], ["cls"], axis=-1),
        helper.make_node("Concat", ["xy", "wh", "obj", "cls"], ["output0"], axis=2)])
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("output0", TensorProto.FLOAT,
                                                            ["batch", grid.rows, 5 + classes]))
    del model.metadata_props[:]
    for key, value in yolov5_props(meta["class_names"]).items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_sightline_detector_exported_as_yolov5_gives_the_same_detections(tmp_path):
    sightline_detector_as_yolov5(tmp_path / "as_v5.onnx")
    yolo = served(imported(tmp_path, tmp_path / "as_v5.onnx", "yolov5", "--input-size", "416"))
    assert isinstance(yolo, YoloDetector) and yolo.meta.class_names == ["pedestrian", "car", "motorcycle"]
    anchor = served(SYNTHETIC / "detector.onnx")
    assert isinstance(anchor, ObjectDetector)
    params = DetectParams(conf=0.25, iou=0.45, max_det=100)
    total = 0
    for i in range(6):
        scene = render_scene(np.random.default_rng([4242, i]), SceneConfig())
        for image in (scene.image, scene.image[: scene.image.shape[0] // 2 + 7]):      # and a wide crop
            want, _ = anchor.detect(image, params)
            got, _ = yolo.detect(image, params)
            assert len(got.boxes) == len(want.boxes)
            np.testing.assert_allclose(got.boxes, want.boxes, rtol=0, atol=2e-3)
            np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-5)
            assert got.class_ids.tolist() == want.class_ids.tolist()
            total += len(want.boxes)
    assert total >= 20


# ---- over HTTP ----

@pytest.fixture(scope="module")
def seg_server(tmp_path_factory):
    """The app serving an imported yolov8-seg graph as its only model, and that graph's truth."""
    folder = tmp_path_factory.mktemp("yolo-models")
    source, truth = export(tmp_path_factory.mktemp("yolo-src"), "yolov8-seg", seed=11)
    assert import_command(["import", "--family", "yolov8", str(source), str(folder / "detector.onnx")]) == 0
    data = tmp_path_factory.mktemp("yolo-data")
    with TestClient(create_app(Settings(models_dir=folder, data_dir=data))) as client:
        wait_ready(client)
        yield client, truth


def encoded(image: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def test_detect_answers_instance_masks_as_rle(seg_server):
    client, truth = seg_server
    width, height = 150, 110
    r = client.post("/detect", files={"image": ("p.png", encoded(photo(width, height), "PNG"))})
    assert r.status_code == 200, r.text
    body = r.json()
    place = Placement(width, height)
    want = reference_detections(truth, 0.25, 0.45, 100, place)
    assert len(body["detections"]) == len(want) > 5
    for d, (box, score, c, i) in zip(body["detections"], want):
        assert set(d) == {"box", "score", "class_id", "label", "mask"}
        np.testing.assert_allclose([d["box"][k] for k in ("x1", "y1", "x2", "y2")], box, atol=0.01)
        assert d["class_id"] == c and d["label"] == NAMES[c] and abs(d["score"] - score) < 1e-4
        assert d["mask"]["size"] == [height, width]
        got = coco_mask.decode({"size": d["mask"]["size"], "counts": d["mask"]["counts"]}).astype(bool)
        ref, unsure = reference_mask(truth, i, box, place, (width, height))
        assert_same_mask(got, ref, unsure)


def test_detect_answers_polygons_when_asked(seg_server):
    client, truth = seg_server
    width, height = 90, 160
    r = client.post("/detect", files={"image": ("p.png", encoded(photo(width, height), "PNG"))},
                    params={"mask_format": "polygon"})
    assert r.status_code == 200, r.text
    place = Placement(width, height)
    want = reference_detections(truth, 0.25, 0.45, 100, place)
    outlined = 0
    for d, (box, _, _, i) in zip(r.json()["detections"], want):
        assert "mask" not in d and isinstance(d["polygons"], list)
        ref, _ = reference_mask(truth, i, box, place, (width, height))
        drawn = np.zeros((height, width), np.uint8)
        for p in d["polygons"]:
            cv2.fillPoly(drawn, [np.round(np.array(p) - 0.5).astype(np.int32)], 1)
        if ref.sum() >= 20:
            outlined += 1
            assert (drawn.astype(bool) & ref).sum() / (drawn.astype(bool) | ref).sum() > 0.8
    assert outlined >= 3
    bad = client.post("/detect", files={"image": ("p.png", encoded(photo(20, 20), "PNG"))},
                      params={"mask_format": "bitmap"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"


def test_a_jpeg_decoded_shrunk_is_masked_at_the_photos_size(seg_server):
    """A 1200 x 880 JPEG is decoded 8 times smaller for a 64 px input (its DCT): boxes and masks
    come back in the photo's own pixels, read through the shrunk decode's letterbox."""
    client, truth = seg_server
    width, height = 1200, 880
    detector = client.app.state.registry.detector()
    data = encoded(photo(width, height), "JPEG")
    decoded = detector.decode(data, 10**8)
    assert decoded.reduction == 8 and (decoded.width, decoded.height) == (150, 110)
    r = client.post("/detect", files={"image": ("p.jpg", data)})
    assert r.status_code == 200, r.text
    place = Placement(decoded.width, decoded.height)
    want = reference_detections(truth, 0.25, 0.45, 100, place, reduction=8)
    assert len(r.json()["detections"]) == len(want)
    for d, (box, _, _, i) in list(zip(r.json()["detections"], want))[:4]:
        np.testing.assert_allclose([d["box"][k] for k in ("x1", "y1", "x2", "y2")], box, atol=0.05)
        got = coco_mask.decode({"size": d["mask"]["size"], "counts": d["mask"]["counts"]}).astype(bool)
        assert got.shape == (height, width)
        ref, unsure = reference_mask(truth, i, box, place, (width, height), reduction=8)
        assert_same_mask(got, ref, unsure)


def test_a_plain_detector_answers_no_mask_fields(client):
    """The bundled anchor detector: the answer is what it always was, and masks cannot be asked of it."""
    image = render_scene(np.random.default_rng([4242, 0]), SceneConfig()).image
    r = client.post("/detect", files={"image": ("s.png", encoded(image, "PNG"))}, params={"conf": 0.05})
    assert r.status_code == 200 and r.json()["detections"]
    assert all(set(d) == {"box", "score", "class_id", "label"} for d in r.json()["detections"])
    bad = client.post("/detect", files={"image": ("s.png", encoded(image, "PNG"))}, params={"mask_format": "rle"})
    assert bad.status_code == 422 and "no instance masks" in bad.json()["error"]["message"]


# ---- refusals ----

def refused(capsys, argv: list[str], *words: str) -> str:
    assert import_command(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("refused: ") and "\n" not in err, err
    for word in words:
        assert word in err, err
    return err


def test_names_of_another_class_count_are_refused_at_import(tmp_path, capsys):
    """Three names over an 80-class output (4 + 80 rows)."""
    det = np.zeros((1, 4 + 80, CELLS), np.float32)
    emit_graph(tmp_path / "coco.onnx", [det], ultralytics_props())
    refused(capsys, ["import", "--family", "yolov8", str(tmp_path / "coco.onnx"), str(tmp_path / "out.onnx")],
            "coco.onnx", "84 values per candidate", "80 class scores", "names list 3 classes")
    assert not (tmp_path / "out.onnx").exists()


def test_names_of_another_class_count_are_refused_at_load(tmp_path):
    """The same file given Sightline metadata by hand (3 class names): refused when it is loaded."""
    det = np.zeros((1, 4 + 80, CELLS), np.float32)
    emit_graph(tmp_path / "coco.onnx", [det], {})
    model = onnx.load(str(tmp_path / "coco.onnx"))
    raw = {"name": "coco", "task": "detection", "family": "yolov8", "version": "1", "input_size": SIZE,
           "fixed_size": True, "normalization": {"mean": [0, 0, 0], "std": [1, 1, 1]}, "class_names": NAMES,
           "boxes": CELLS}
    validate_metadata(raw)                                   # the metadata alone is complete
    for key, value in raw.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, json.dumps(value)
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(ModelLoadError, match=r"output shape \(1, 84, 84\) != \(1, 7, 84\).*3 class scores "
                                             r"\(3 class names\)"):
        served(tmp_path / "bad.onnx")


@pytest.mark.parametrize("case, words", [
    ("no-names", ("carries no class names", "--set")),
    ("names-not-literal", ("not a Python literal",)),
    ("names-code", ("not a Python literal",)),
    ("names-gap", ("not 0 to 2",)),
    ("rectangular-input", ("384 x 640", "square imgsz")),
    ("rectangular-imgsz", ("imgsz is [384, 640]", "--input-size")),
    ("rank-2-output", ("its outputs are [[1, 7]]",)),
    ("three-outputs", ("its outputs are",)),
    ("v8-as-v5", ("the yolov8 layout", "--family yolov8")),
    ("v5-as-v8", ("the yolov5 layout", "--family yolov5")),
    ("nms-in-graph", ("NMS in the graph",)),
    ("pose", ("'pose' export",)),
    ("segment-without-protos", ("task 'segment'", "no prototype output")),
    ("seg-asked-of-detect", ("no prototype output", "import it as yolov8")),
    ("stride", ("not a multiple of its stride 32",)),
])
def test_what_cannot_be_served_is_refused(tmp_path, capsys, case, words):
    family, props, outputs = "yolov8", ultralytics_props(), make_truth(False, False, 0).outputs()
    input_hw: tuple = (SIZE, SIZE)
    extra: list[str] = []
    if case == "no-names":
        props.pop("names")
    elif case == "names-not-literal":
        props["names"] = "{0: person, 1: bicycle, 2: car}"
    elif case == "names-code":
        props["names"] = "__import__('os').remove('precious')"
    elif case == "names-gap":
        props["names"] = "{0: 'person', 1: 'bicycle', 3: 'car'}"
    elif case == "rectangular-input":
        input_hw = (384, 640)
    elif case == "rectangular-imgsz":
        input_hw, props["imgsz"] = ("height", "width"), "[384, 640]"
    elif case == "rank-2-output":
        outputs = [np.zeros((1, 7), np.float32)]
    elif case == "three-outputs":
        outputs = [*make_truth(False, True, 0).outputs(), np.zeros((1, 2, 2, 2, 2), np.float32)]
    elif case == "v8-as-v5":
        family, props = "yolov5", yolov5_props()
    elif case == "v5-as-v8":
        outputs = make_truth(True, False, 0).outputs()
    elif case == "nms-in-graph":
        outputs = [np.zeros((1, 300, 6), np.float32)]
    elif case == "pose":                         # YOLOv8-pose: 1 class, 17 keypoints x 3 after it
        props, outputs = ultralytics_props("pose", ["person"]), [np.zeros((1, 4 + 1 + 51, CELLS), np.float32)]
    elif case == "segment-without-protos":
        props["task"] = "segment"
    elif case == "seg-asked-of-detect":
        family = "yolov8-seg"
    elif case == "stride":
        input_hw, props["imgsz"], extra = ("height", "width"), "[640, 640]", ["--input-size", "80"]
    emit_graph(tmp_path / "x.onnx", outputs, props, input_hw=input_hw)
    refused(capsys, ["import", "--family", family, str(tmp_path / "x.onnx"), str(tmp_path / "out.onnx"), *extra],
            *words)
    assert not (tmp_path / "out.onnx").exists()


def test_a_free_side_export_takes_its_imgsz_or_the_size_given(tmp_path):
    truth = make_truth(False, False, 0)
    props = ultralytics_props(imgsz=[384, 640])
    emit_graph(tmp_path / "free.onnx", truth.outputs(), props, batch="free", input_hw=("height", "width"))
    target = imported(tmp_path, tmp_path / "free.onnx", "yolov8", "--input-size", str(SIZE))
    assert served(target).meta.input_size == SIZE
    emit_graph(tmp_path / "free2.onnx", truth.outputs(), ultralytics_props(), batch="free", input_hw=("h", "w"))
    assert served(imported(tmp_path, tmp_path / "free2.onnx", "yolov8")).meta.input_size == SIZE


def test_names_given_on_the_command_line_serve_a_file_without_them(tmp_path, capsys):
    truth = make_truth(False, False, 0)
    props = ultralytics_props()
    props.pop("names")
    emit_graph(tmp_path / "nameless.onnx", truth.outputs(), props)
    given = imported(tmp_path, tmp_path / "nameless.onnx", "yolov8", "--set", 'class_names=["a", "b", "c"]')
    assert served(given).meta.class_names == ["a", "b", "c"]
    refused(capsys, ["import", "--family", "yolov8", str(tmp_path / "nameless.onnx"), str(tmp_path / "two.onnx"),
                     "--set", 'class_names=["a", "b"]'], "names list 2 classes")


@pytest.mark.parametrize("value, names", [
    ("{0: 'person', 1: 'bicycle'}", ["person", "bicycle"]),
    ("['person', 'bicycle']", ["person", "bicycle"]),
    ({"0": "person", "1": "bicycle"}, ["person", "bicycle"]),
    (["person"], ["person"]),
])
def test_class_names_are_read_as_literals(value, names):
    assert class_names(value) == names


@pytest.mark.parametrize("value", ["{0: 'a', 0: 'b', 2: 'c'}", "{'a': 'b'}", "[1, 2]", "[]", "open('x')", 3])
def test_other_names_are_not_class_names(value):
    with pytest.raises(NotYolo):
        class_names(value)


def test_image_sizes():
    assert image_size([640, 640]) == (640, 640) and image_size(320) == (320, 320)
    assert image_size("[384, 640]") == (384, 640)
    with pytest.raises(NotYolo):
        image_size([1, 2, 3])
