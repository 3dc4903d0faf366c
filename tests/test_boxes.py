"""Box maths and NMS against deliberately simple references, with boxes built to sit just above
and just below the IoU threshold."""

import itertools

import numpy as np
import pytest

from app.vision.boxes import box_iou, nms, nms_per_class, nms_per_class_numpy, wh_iou

PER_CLASS = [nms_per_class, nms_per_class_numpy]


def iou_ref(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms_ref(boxes, scores, thr):
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        if all(iou_ref(boxes[i], boxes[k]) <= thr for k in keep):
            keep.append(i)
    return keep


def pair_with_iou(target: float, width: float = 100.0) -> np.ndarray:
    """Two 100x100 boxes shifted horizontally so their IoU is exactly ``target``."""
    # IoU = (w - d) / (w + d)  =>  d = w (1 - t) / (1 + t)
    d = width * (1 - target) / (1 + target)
    return np.array([[0, 0, width, width], [d, 0, width + d, width]], dtype=np.float64)


def test_box_iou_matches_reference():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 50, (20, 2)); a = np.concatenate([a, a + rng.uniform(1, 40, (20, 2))], 1)
    b = rng.uniform(0, 50, (15, 2)); b = np.concatenate([b, b + rng.uniform(1, 40, (15, 2))], 1)
    got = box_iou(a, b)
    want = np.array([[iou_ref(x, y) for y in b] for x in a])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_wh_iou_is_centred_iou():
    wh = np.array([[10, 20], [30, 5]], dtype=np.float32)
    boxes = np.concatenate([-wh / 2, wh / 2], 1)
    np.testing.assert_allclose(wh_iou(wh, wh), box_iou(boxes, boxes), atol=1e-6)


@pytest.mark.parametrize("impl", [nms, *PER_CLASS])
@pytest.mark.parametrize("thr", [0.3, 0.45, 0.5, 0.7])
@pytest.mark.parametrize("delta", [0.01, 0.002, -0.002, -0.01])
def test_nms_threshold_edge(impl, thr, delta):
    boxes = pair_with_iou(thr + delta)
    assert abs(iou_ref(*boxes) - (thr + delta)) < 1e-9
    scores = np.array([0.8, 0.9])  # the second box is the stronger one
    keep = impl(boxes, scores, thr) if impl is nms else impl(boxes, scores, np.zeros(2, int), thr)
    # Above the threshold the weaker box goes; below it both stay.
    assert keep.tolist() == ([1] if delta > 0 else [1, 0])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.65])
def test_nms_matches_reference(seed, thr):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 200, (8, 2))
    boxes = []
    for c in centres:  # clusters of jittered boxes, so many pairs sit near any threshold
        for _ in range(rng.integers(1, 8)):
            wh = rng.uniform(20, 60, 2)
            xy = c + rng.normal(0, 6, 2)
            boxes.append(np.concatenate([xy - wh / 2, xy + wh / 2]))
    boxes = np.array(boxes)
    scores = rng.uniform(0, 1, len(boxes))
    scores[:3] = scores[3]  # ties keep the lower index first
    assert nms(boxes, scores, thr).tolist() == nms_ref(boxes.tolist(), scores.tolist(), thr)


@pytest.mark.parametrize("impl", PER_CLASS)
@pytest.mark.parametrize("seed", range(4))
def test_nms_per_class_equals_nms_per_class_loop(impl, seed):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 300, (80, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(10, 80, (80, 2))], 1)
    scores = rng.uniform(0, 1, 80)
    classes = rng.integers(0, 3, 80)
    got = impl(boxes, scores, classes, 0.45)
    want = []
    for c in range(3):
        idx = np.flatnonzero(classes == c)
        want += idx[nms_ref(boxes[idx].tolist(), scores[idx].tolist(), 0.45)].tolist()
    want.sort(key=lambda i: -scores[i])
    assert got.tolist() == want


@pytest.mark.parametrize("impl", PER_CLASS)
def test_identical_boxes_of_other_classes_both_kept(impl):
    boxes = np.array([[0, 0, 10, 10]] * 2, dtype=np.float32)
    keep = impl(boxes, np.array([0.9, 0.8]), np.array([0, 1]), 0.5)
    assert sorted(keep.tolist()) == [0, 1]


@pytest.mark.parametrize("impl", PER_CLASS)
def test_max_det_caps_after_ranking(impl):
    boxes = np.array([[i * 20, 0, i * 20 + 10, 10] for i in range(10)], dtype=np.float32)
    scores = np.linspace(0.1, 1.0, 10)
    keep = impl(boxes, scores, np.zeros(10, int), 0.5, max_det=3)
    assert keep.tolist() == [9, 8, 7]


def test_empty_inputs():
    empty = np.zeros((0, 4), np.float32)
    assert nms(empty, np.zeros(0), 0.5).shape == (0,)
    for impl in PER_CLASS:
        assert impl(empty, np.zeros(0), np.zeros(0, int), 0.5).shape == (0,)
    assert list(itertools.chain(box_iou(empty, empty).shape)) == [0, 0]


@pytest.mark.parametrize("seed", range(3))
def test_per_class_ties_and_fractional_coordinates(seed):
    """Equal scores keep the lower index first; sub-pixel boxes are not rounded to integers."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 5, (30, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0.5, 3, (30, 2))], 1)
    scores = np.round(rng.uniform(0, 1, 30), 1)  # many ties
    classes = rng.integers(0, 2, 30)
    assert nms_per_class(boxes, scores, classes, 0.5).tolist() == \
        nms_per_class_numpy(boxes, scores, classes, 0.5).tolist()
