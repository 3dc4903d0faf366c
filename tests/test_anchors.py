import numpy as np
import pytest

from app.vision.anchors import anchor_grid, decode_anchors
from training.anchors import best_possible_recall, kmeans_anchors, split_by_stride


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_recovers_known_clusters(seed):
    rng = np.random.default_rng(seed)
    true = np.array([[10, 30], [40, 20], [80, 80]], dtype=np.float32)
    wh = np.concatenate([t * rng.uniform(0.95, 1.05, (200, 2)) for t in true])
    found = kmeans_anchors(wh, 3, seed=seed)
    np.testing.assert_allclose(found, true, rtol=0.05)
    assert best_possible_recall(wh, found, 0.8) == 1.0


def test_kmeans_needs_enough_boxes():
    with pytest.raises(ValueError):
        kmeans_anchors(np.ones((2, 2)), 3)


def test_split_by_stride_smallest_first():
    anchors = np.array([[i + 1, i + 1] for i in range(9)], dtype=np.float32)
    groups = split_by_stride(anchors, 3)
    assert [g[0][0] for g in groups] == [1, 4, 7] and all(len(g) == 3 for g in groups)


def test_grid_row_order_and_decode_by_hand():
    anchors = [[[10, 20], [30, 15]], [[50, 60], [70, 40]]]
    grid = anchor_grid(64, [16, 32], anchors)
    assert grid.rows == 4 * 4 * 2 + 2 * 2 * 2
    raw = np.full((grid.rows, 5 + 2), -20.0, dtype=np.float32)
    # Stride 16, cell (x=2, y=1), anchor 1: row = (1 * 4 + 2) * 2 + 1.
    row = (1 * 4 + 2) * 2 + 1
    raw[row] = [10.0, 0.0, 0.0, np.log(2.0), 0.0, -3.0, 3.0]
    boxes, scores, classes = decode_anchors(raw, grid, 0.25)
    cx, cy, w, h = (2 + 0.5) * 16, (1 + 0.5) * 16, 30 * 2.0, 15 * 1.0
    np.testing.assert_allclose(boxes, [[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]], atol=1e-4)
    assert classes.tolist() == [1]
    expected = 1 / (1 + np.exp(-10)) * np.exp(3) / (np.exp(3) + np.exp(-3))
    np.testing.assert_allclose(scores, [expected], rtol=1e-5)


def test_decode_rejects_mismatched_output():
    grid = anchor_grid(64, [32], [[[10, 10]]])
    with pytest.raises(ValueError):
        decode_anchors(np.zeros((5, 6), np.float32), grid, 0.5)
