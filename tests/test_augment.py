"""Boxes (and masks) follow every geometric change; checked on images whose boxes are drawn in."""

import numpy as np
import pytest

from training.augment import augment_detection, color_shift, crop, hflip, pca_color


def scene(rng):
    img = np.zeros((120, 160, 3), np.uint8)
    mask = np.zeros((120, 160), np.uint8)
    boxes = []
    for k in range(3):  # one object per horizontal band, so none covers another
        x, y = rng.integers(0, 120), 40 * k + rng.integers(0, 10)
        w, h = rng.integers(8, 40), rng.integers(8, 30)
        img[y:y + h, x:x + w] = 255
        mask[y:y + h, x:x + w] = k + 1
        boxes.append([x, y, min(x + w, 160), min(y + h, 120)])
    return img, np.array(boxes, np.float32), mask


def box_of(mask, k):
    ys, xs = np.nonzero(mask == k)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.mark.parametrize("seed", range(5))
def test_hflip_moves_boxes_with_pixels(seed):
    img, boxes, mask = scene(np.random.default_rng(seed))
    _, out, m2 = hflip(img, boxes, mask)
    for k in range(3):
        assert box_of(mask, k + 1) == boxes[k].tolist()
        assert box_of(m2, k + 1) == out[k].tolist()


@pytest.mark.parametrize("seed", range(5))
def test_crop_shifts_and_clips(seed):
    rng = np.random.default_rng(seed)
    img = np.zeros((100, 100, 3), np.uint8)
    mask = np.zeros((100, 100), np.uint8)
    mask[40:60, 30:80] = 1
    boxes = np.array([[30, 40, 80, 60]], np.float32)
    window = (int(rng.integers(0, 30)), int(rng.integers(0, 30)), 90, 95)
    _, out, kept, m2 = crop(img, boxes, window, mask, min_kept=0.0)
    assert kept.tolist() == [0]
    assert box_of(m2, 1) == out[0].tolist()


def test_crop_drops_mostly_cut_boxes():
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    _, out, kept, _ = crop(np.zeros((100, 100, 3), np.uint8), boxes, (8, 8, 100, 100), min_kept=0.4)
    assert kept.tolist() == [1]
    assert out.tolist() == [[42, 42, 52, 52]]


@pytest.mark.parametrize("seed", range(8))
def test_full_recipe_keeps_boxes_on_their_pixels(seed):
    rng = np.random.default_rng(seed)
    img = np.zeros((120, 160, 3), np.uint8)
    img[20:50, 30:70] = 255
    img[70:110, 100:150] = 255
    boxes = np.array([[30, 20, 70, 50], [100, 70, 150, 110]], np.float32)
    labels = np.array([0, 1])
    out_img, out_boxes, out_labels, _ = augment_detection(rng, img, boxes, labels, crop_p=1.0, flip_p=0.5)
    assert len(out_boxes) == len(out_labels)
    bright = out_img.mean(axis=2) > 100
    for b in out_boxes.astype(int):
        inside = bright[b[1]:b[3], b[0]:b[2]]
        assert inside.mean() > 0.95  # the box still sits on its object


def test_photometric_changes_colour_only():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (30, 40, 3)).astype(np.uint8)
    for out in (color_shift(rng, img), pca_color(rng, img)):
        assert out.shape == img.shape and out.dtype == np.uint8
        assert not np.array_equal(out, img)
