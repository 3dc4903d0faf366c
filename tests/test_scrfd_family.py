"""The ``scrfd`` family: InsightFace's SCRFD face detector rewritten by the import command into one
decoded output, served with its 5 landmarks (no landmark model).

- the rewritten graph decodes every anchor as a deliberately simple loop over SCRFD's algorithm
  does, on fake SCRFD graphs of each export layout (outputs with and without the batch axis, old
  and new opsets), and the served detections are the loop's at thresholds set on float32 scores
  exactly at and just below them;
- box for box on real photos: the real SCRFD file of the ``scrfd`` sdist (InsightFace's weights,
  non-commercial research only: used from the package cache, never bundled) imported and served
  against the ``scrfd`` package's own decoding (its ``SCRFDBase.forward`` and ``nms``, read from the
  same pinned sdist) of the ORIGINAL file's 9 outputs, on the same letterboxed input;
- its fixed batch of 1 behind the dynamic batcher's multi-row batches;
- tiles carrying the landmarks; the whole stack over HTTP with dlib's embedder and no landmark model.

Coordinates: InsightFace's are OpenCV pixel indices (the anchor point of cell ``j`` is pixel ``j *
stride``); Sightline's are continuous, so every reference coordinate below is InsightFace's + 0.5.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper

from app.batching import BatchObserver, BatchSettings, DynamicBatcher
from app.faces import FaceAnalyzer
from app.main import create_app
from app.models import load_model
from app.models.__main__ import main as import_command
from app.models.anchor_detector import DetectParams
from app.models.scrfd import ScrfdDetector
from app.models.scrfd_graph import NotScrfd, read_layout
from app.runtime import read_metadata
from app.settings import Settings
from app.vision.letterbox import letterbox_corner
from tests.conftest import MODELS, wait_ready
from training.pretrained.packages import FACE_RECOGNITION, SCRFD, fetch
from training.pretrained.realphotos import real_photos

STRIDES = (8, 16, 32)


# ---- a deliberately simple reference: SCRFD's decoding, one anchor at a time ----

def reference_rows(outputs: list[np.ndarray], size: int, anchors: int) -> np.ndarray:
    """SCRFD's 9 outputs (InsightFace's order: scores, boxes, keypoints, each at strides 8, 16, 32)
    → ``(N, 15)`` rows ``x1, y1, x2, y2, score, 5 x (x, y)`` in continuous input pixels."""
    rows = []
    for k, stride in enumerate(STRIDES):
        score, box, kps = (outputs[k + 3 * g].reshape(-1, width) for g, width in enumerate((1, 4, 10)))
        n = 0
        for i in range(size // stride):
            for j in range(size // stride):
                for _ in range(anchors):
                    cx, cy = j * stride + 0.5, i * stride + 0.5
                    left, top, right, bottom = box[n] * stride
                    points = [(cx + kps[n, 2 * p] * stride, cy + kps[n, 2 * p + 1] * stride) for p in range(5)]
                    rows.append([cx - left, cy - top, cx + right, cy + bottom, score[n, 0], *np.ravel(points)])
                    n += 1
    return np.array(rows, np.float64)


def simple_iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def reference_detect(rows: np.ndarray, conf: float, iou: float, scale: float, width: int, height: int
                     ) -> list[np.ndarray]:
    """Rows scoring at least ``conf``, greedy NMS best first, back to image pixels (boxes clipped)."""
    kept: list[np.ndarray] = []
    for row in sorted((r for r in rows if np.float32(r[4]) >= conf), key=lambda r: -r[4]):
        if all(simple_iou(row[:4], k[:4]) <= iou for k in kept):
            kept.append(row)
    out = []
    for row in kept:
        r = row.copy()
        r[:4] /= scale
        r[5:] /= scale
        r[[0, 2]] = np.clip(r[[0, 2]], 0, width)
        r[[1, 3]] = np.clip(r[[1, 3]], 0, height)
        out.append(r)
    return out


# ---- fake SCRFD graphs in each export layout ----

def fake_outputs(size: int, anchors: int, seed: int, at: float, below: float) -> list[np.ndarray]:
    """SCRFD-shaped outputs: small boxes (at most a stride wide), keypoints within 2 strides; most
    scores 0; at stride 8, 6 anchors of distinct cells score exactly ``at`` and 6 ``below``; at
    stride 32 a few score anything."""
    rng = np.random.default_rng(seed)
    outs = []
    rows = [(size // s) ** 2 * anchors for s in STRIDES]
    scores = [np.zeros((n, 1), np.float32) for n in rows]
    cells = rng.permutation(rows[0] // anchors)[:12] * anchors
    scores[0][cells[:6], 0], scores[0][cells[6:], 0] = at, below
    scores[2][:, 0] = np.where(rng.random(rows[2]) < 0.5, rng.random(rows[2]), 0).astype(np.float32)
    outs += scores
    outs += [rng.uniform(0.3, 0.5, (n, 4)).astype(np.float32) for n in rows]
    outs += [rng.uniform(-2, 2, (n, 10)).astype(np.float32) for n in rows]
    return outs


def fake_scrfd(path: Path, size: int, anchors: int, batch: str, opset: int, seed: int,
               at: float = 0.5, below: float = 0.4) -> list[np.ndarray]:
    """An ONNX file with SCRFD's 9 outputs (names and order as InsightFace's exports) whose values are
    ``fake_outputs`` for every image: ``batch`` "fixed": ``(1, N, c)`` for a fixed ``(1, 3, size,
    size)`` input (the scrfd sdist's file); "none": ``(N, c)`` for a free input side (as
    det_10g.onnx); "free": ``(B, N, c)`` for ``(B, 3, size, size)``. Returns the outputs."""
    outs = fake_outputs(size, anchors, seed, at, below)
    names = [f"{kind}_{s}" for kind in ("score", "bbox", "kps") for s in STRIDES]
    side = {"fixed": [1, 3, size, size], "none": [1, 3, "height", "width"], "free": ["batch", 3, size, size]}[batch]
    if batch == "free":              # (B,) means, as (B, 1, 1): every image gets the outputs
        nodes = [helper.make_node("ReduceMean", ["input.1"], ["mean"], axes=[1, 2, 3], keepdims=0),
                 helper.make_node("Reshape", ["mean", "column"], ["means"]),
                 helper.make_node("Mul", ["means", "zero"], ["nothing"])]
    else:
        nodes = [helper.make_node("ReduceMean", ["input.1"], ["mean"], keepdims=0),
                 helper.make_node("Mul", ["mean", "zero"], ["nothing"])]
    inits = [numpy_helper.from_array(np.array(0, np.float32), "zero"),
             numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "column")]
    values = [value if batch == "none" else value[None] for value in outs]
    for name, value in zip(names, values):
        inits.append(numpy_helper.from_array(value, f"{name}_value"))
        nodes.append(helper.make_node("Add", ["nothing", f"{name}_value"], [name]))
    shapes = [v.shape if batch != "free" else ("batch", *v.shape[1:]) for v in values]
    graph = helper.make_graph(nodes, "fake_scrfd", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, side)],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in zip(names, shapes)],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7)
    onnx.save(model, str(path))
    return outs


def served(path: Path) -> ScrfdDetector:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = load_model(session, read_metadata(session), path)
    assert isinstance(model, ScrfdDetector)
    return model


LAYOUTS = [pytest.param("fixed", 11, 2, id="batch1-opset11"), pytest.param("none", 11, 2, id="no-batch-axis-opset11"),
           pytest.param("none", 17, 2, id="no-batch-axis-opset17"), pytest.param("free", 13, 2, id="free-batch"),
           pytest.param("fixed", 17, 1, id="one-anchor")]


@pytest.mark.parametrize("batch, opset, anchors", LAYOUTS)
def test_the_rewritten_graph_decodes_every_anchor_as_the_reference(tmp_path, batch, opset, anchors):
    size = 96
    outs = fake_scrfd(tmp_path / "fake.onnx", size, anchors, batch, opset, seed=opset)
    extra = ["--input-size", str(size)] if batch == "none" else []
    assert import_command(["import", "--family", "scrfd", str(tmp_path / "fake.onnx"), str(tmp_path / "det.onnx"),
                           *extra]) == 0
    model = served(tmp_path / "det.onnx")
    assert model.meta.boxes == sum((size // s) ** 2 for s in STRIDES) * anchors
    assert model.runner.fixed_batch == (None if batch == "free" else 1)
    assert model.session.get_inputs()[0].shape == ["batch" if batch == "free" else 1, 3, size, size]
    got = model.run(np.zeros((3, 3, size, size), np.float32))
    assert got.shape == (3, model.meta.boxes, 15)
    for rows in got:
        np.testing.assert_allclose(rows, reference_rows(outs, size, anchors), rtol=0, atol=1e-4)


def scrfd_shapes(size: int, anchors: int = 2, batched: bool = True, widths=(1, 4, 10)) -> dict[str, tuple]:
    shapes = {}
    for kind, width in zip(("score", "bbox", "kps"), widths):
        for s in STRIDES:
            rows = (size // s) ** 2 * anchors
            shapes[f"{kind}_{s}"] = (1, rows, width) if batched else (rows, width)
    return shapes


def test_the_layout_is_read_from_the_shapes_in_any_order():
    shapes = scrfd_shapes(640)
    layout = read_layout(dict(reversed(list(shapes.items()))), 640)
    assert layout.scores == ("score_8", "score_16", "score_32") and layout.keypoints[0] == "kps_8"
    assert (layout.rows, layout.anchors, layout.batched) == ((12800, 3200, 800), 2, True)
    assert read_layout(scrfd_shapes(320, anchors=1, batched=False), 320).total == 2100


@pytest.mark.parametrize("shapes, words", [
    ({k: v for k, v in scrfd_shapes(640).items() if not k.startswith("kps")}, "without keypoints"),
    ({"boxes": (1, 5118, 5)}, "1 output(s)"),
    (scrfd_shapes(640, widths=(1, 4, 136)), "none of SCRFD's"),
    (scrfd_shapes(608), "rows at 640 px"),
    ({**scrfd_shapes(640), "score_8": (12800, 1)}, "neither (N, c) nor (1, N, c)"),
])
def test_other_outputs_are_not_scrfd(shapes, words):
    with pytest.raises(NotScrfd, match=re.escape(words)):
        read_layout(shapes, 640)


def _at_and_below(conf: float) -> tuple[np.float32, np.float32]:
    """The smallest float32 score a threshold of ``conf`` keeps, and the float32 just below it."""
    at = np.float32(conf)
    at = at if at >= conf else np.nextafter(at, np.float32(1))
    return at, np.nextafter(at, np.float32(0))


@pytest.mark.parametrize("conf", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("seed", [0, 1])
def test_served_faces_are_the_references_at_the_threshold(tmp_path, conf, seed):
    size, width, height = 128, 256, 200          # the photo scaled by 1/2, black below it
    at, below = _at_and_below(conf)
    outs = fake_scrfd(tmp_path / "fake.onnx", size, 2, "fixed", 11, seed, at=float(at), below=float(below))
    assert import_command(["import", "--family", "scrfd", str(tmp_path / "fake.onnx"), str(tmp_path / "d.onnx")]) == 0
    model = served(tmp_path / "d.onnx")
    image = np.zeros((height, width, 3), np.uint8)
    dets, _ = model.detect(image, DetectParams(conf=conf, iou=0.4, max_det=1000))
    want = reference_detect(reference_rows(outs, size, 2), conf, 0.4, size / width, width, height)
    assert len(dets.boxes) == len(want)
    assert np.float32(at) in dets.scores and np.float32(below) not in dets.scores   # at the threshold: kept
    np.testing.assert_allclose(dets.scores, [w[4] for w in want], rtol=0, atol=1e-6)
    np.testing.assert_allclose(dets.boxes, [w[:4] for w in want], rtol=0, atol=1e-3)
    np.testing.assert_allclose(dets.landmarks, [w[5:].reshape(5, 2) for w in want], rtol=0, atol=1e-3)


# ---- the real SCRFD file (InsightFace's weights, from the scrfd sdist in the package cache) ----

@pytest.fixture(scope="module")
def sdist() -> Path:
    return fetch(SCRFD) / "scrfd-0.3.0"


@pytest.fixture(scope="module")
def imported(sdist, tmp_path_factory) -> Path:
    """The sdist's scrfd.onnx imported into a models folder of its own; the source left as it was."""
    source = sdist / "models" / "scrfd.onnx"
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    target = tmp_path_factory.mktemp("scrfd") / "face_detector.onnx"
    assert import_command(["import", "--family", "scrfd", str(source), str(target)]) == 0
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before
    return target


@pytest.fixture(scope="module")
def package(sdist):
    """The ``scrfd`` package's own decoding (``scrfd.base.SCRFDBase``), from the pinned sdist's
    source: its dependencies (numpy, onnxruntime, pillow, pydantic) are Sightline's own."""
    sys.path.insert(0, str(sdist / "src"))
    try:
        base = importlib.import_module("scrfd.base")
    finally:
        sys.path.remove(str(sdist / "src"))
    return base.SCRFDBase(ort.InferenceSession(str(sdist / "models" / "scrfd.onnx"),
                                               providers=["CPUExecutionProvider"]))


def photo(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def package_faces(package, image: np.ndarray, conf: float, iou: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The package's detections of ``image`` letterboxed as Sightline does (top left, black), in
    image pixels: its ``forward`` (the original file's 9 outputs decoded) and its ``nms``."""
    canvas, geo = letterbox_corner(image, 640)
    scores, boxes, points = package.forward(canvas, conf)
    scores, boxes, points = np.vstack(scores).ravel(), np.vstack(boxes), np.vstack(points)
    order = scores.argsort()[::-1]
    dets = np.hstack([boxes, scores[:, None]]).astype(np.float32)[order]
    keep = package.nms(dets, iou)
    return (dets[keep, :4] + 0.5) / geo.scale, dets[keep, 4], (points[order][keep] + 0.5) / geo.scale


PHOTOS = {"solvay": lambda s: s / "images" / "solvay_conference_1927.jpg",
          "gauss": lambda s: s / "images" / "gauss.png",
          "obama": lambda s: fetch(FACE_RECOGNITION) / "face_recognition-1.3.0" / "tests" / "test_images" / "obama.jpg"}


@pytest.mark.parametrize("name", list(PHOTOS))
def test_served_scrfd_matches_the_package_box_for_box(imported, package, sdist, name):
    image = photo(PHOTOS[name](sdist))
    dets, _ = served(imported).detect(image, DetectParams(conf=0.5, iou=0.4, max_det=1000))
    boxes, scores, points = package_faces(package, image, 0.5, 0.4)
    assert len(dets.boxes) == len(boxes) >= (29 if name == "solvay" else 1)
    for box, score, pts in zip(dets.boxes, dets.scores, dets.landmarks):
        ious = [simple_iou(box, b) for b in boxes]
        j = int(np.argmax(ious))
        assert ious[j] > 0.99, (name, box, boxes[j])
        assert abs(score - scores[j]) < 1e-5
        assert np.abs(pts - points[j]).max() < 0.5, (name, pts, points[j])


def test_a_batch_of_one_model_serves_the_batchers_batches(imported, sdist):
    """SCRFD's input takes exactly one image: the runner runs a batch of several row by row, and
    requests the batcher stacks get their own rows back."""
    model = served(imported)
    assert model.session.get_inputs()[0].shape[0] == 1 and model.runner.fixed_batch == 1
    images = [photo(PHOTOS[n](sdist)) for n in PHOTOS] + [np.zeros((480, 640, 3), np.uint8)]
    rows = [model.preprocess(image)[0] for image in images]
    alone = [model.run(r) for r in rows]
    np.testing.assert_allclose(model.run(np.concatenate(rows[:3])), np.concatenate(alone[:3]), atol=1e-4)

    class Sizes(BatchObserver):
        def __init__(self) -> None:
            self.rows: list[int] = []

        def batch(self, name: str, rows: int, requests: int, seconds: float) -> None:
            self.rows.append(rows)

    async def requests(seen: Sizes) -> list[np.ndarray]:
        batcher = DynamicBatcher("scrfd", model.run, BatchSettings(max_batch=8, max_delay_ms=200, max_queue=16), seen,
                                 stack=model.runner.stack)
        batcher.start()
        asks = [rows[0], np.concatenate(rows[1:3]), rows[3], rows[0]]
        answers = await asyncio.gather(*(batcher.infer(a) for a in asks))
        await batcher.stop()
        return answers

    seen = Sizes()
    answers = asyncio.run(requests(seen))
    for got, want in zip(answers, [alone[0], np.concatenate(alone[1:3]), alone[3], alone[0]]):
        np.testing.assert_allclose(got, want, atol=1e-4)
    assert max(seen.rows) > 1                     # several requests' rows in one batch


def test_tiles_carry_the_landmarks_with_their_faces(imported, sdist):
    """Faces down to 20 px make finer looks in tiles: every face's landmarks still lie in its box,
    in the image's order (eyes left to right above the nose, above the mouth corners)."""
    image = photo(PHOTOS["solvay"](sdist))
    faces = FaceAnalyzer(served(imported), None, None, min_face=20).detect(image, conf=0.5, max_faces=100)
    truth = real_photos().group_faces
    assert len(faces) >= 29
    matched = sum(any(simple_iou(f.box, t) > 0.3 for f in faces) for t in truth)
    assert matched == 29
    for f in faces:
        (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = f.landmarks
        x1, y1, x2, y2 = f.box
        assert (f.landmarks[:, 0] > x1).all() and (f.landmarks[:, 0] < x2).all(), f
        assert (f.landmarks[:, 1] > y1).all() and (f.landmarks[:, 1] < y2).all(), f
        assert lx < rx and mlx < mrx and max(ly, ry) < ny < min(mly, mry), f


def test_the_whole_stack_with_scrfd_and_no_landmark_model(imported, tmp_path):
    """SCRFD (its own landmarks) and dlib's embedder, nothing else: faces with landmarks in the
    API's order, the same man verified, another rejected, the group photo's 29 faces."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "face_detector.onnx").symlink_to(imported)
    (folder / "face_embedder.onnx").symlink_to(MODELS / "face_embedder.onnx")
    photos = real_photos()
    send = lambda path: (path.name, path.read_bytes())   # noqa: E731
    with TestClient(create_app(Settings(models_dir=folder, data_dir=tmp_path / "data"))) as client:
        wait_ready(client)
        assert client.app.state.registry.landmarks is None
        r = client.post("/faces/detect", files={"image": send(photos.portraits["obama"])})
        assert r.status_code == 200, r.text
        [face] = r.json()["faces"]
        (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = face["landmarks"]
        box = face["box"]
        assert box["x1"] < lx < rx < box["x2"] and box["x1"] < mlx < mrx < box["x2"]
        assert box["y1"] < max(ly, ry) < ny < min(mly, mry) < box["y2"]
        same = client.post("/verify", files={"image1": send(photos.portraits["obama"]),
                                             "image2": send(photos.portraits["obama2"])})
        assert same.status_code == 200 and same.json()["verified"] is True, same.text
        other = client.post("/verify", files={"image1": send(photos.portraits["obama"]),
                                              "image2": send(photos.portraits["biden"])})
        assert other.status_code == 200 and other.json()["verified"] is False, other.text
        group = client.post("/faces/detect", files={"image": send(photos.group)}).json()["faces"]
        boxes = [[f["box"][k] for k in ("x1", "y1", "x2", "y2")] for f in group]
        assert sum(any(simple_iou(b, t) > 0.3 for b in boxes) for t in photos.group_faces) == 29
        assert len(group) <= 30
