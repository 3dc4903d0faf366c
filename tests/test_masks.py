"""Masks in and out of the letterboxed model input, the wire formats (PNG, COCO RLE checked with
pycocotools), the IoU code against a plain reference, and augmentation moving masks with images."""

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_api

import training.augment as augment
from app.vision.letterbox import letterbox_geometry
from app.vision.masks import (IGNORE, class_pixels, encode_png, encode_rle, letterbox_mask, logits_to_mask,
                              overlay_jpeg, rle_counts)
from training.segment.metrics import confusion, iou_per_class, summarize


def _blocks(h: int, w: int, block: int, classes: int, seed: int) -> np.ndarray:
    """A mask of ``block x block`` squares of random classes (a hand-made mask with hard edges)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, classes, ((h + block - 1) // block, (w + block - 1) // block), dtype=np.uint8)
    return np.kron(coarse, np.ones((block, block), np.uint8))[:h, :w]


def _one_hot_logits(canvas: np.ndarray, classes: int, stride: int) -> np.ndarray:
    """Logits that say the letterboxed mask, at ``1 / stride`` resolution; the padding says a class
    that is in no mask (``classes``), so any leak of the padding shows in the result."""
    small = canvas[::stride, ::stride]
    logits = np.zeros((classes + 1, *small.shape), np.float32)
    for c in range(classes):
        logits[c][small == c] = 1.0
    logits[classes][small == IGNORE] = 1.0
    return logits


@pytest.mark.parametrize("h, w, size, block, stride", [
    (100, 50, 200, 1, 1),     # tall, scaled up 2x, padded left and right
    (30, 90, 180, 1, 1),      # wide, scaled up 2x, padded top and bottom
    (400, 400, 200, 2, 1),    # scaled down 2x: 2 x 2 blocks survive
    (300, 200, 150, 2, 1),    # scaled down 2x and padded
    (64, 64, 64, 2, 2),       # the logits at half resolution (output stride 2)
    (128, 64, 128, 2, 2),     # stride 2 and padding
])
def test_letterbox_and_back_is_exact_on_a_hand_made_mask(h, w, size, block, stride):
    mask = _blocks(h, w, block, 3, seed=h + w)
    canvas, geo = letterbox_mask(mask, size)
    assert canvas.shape == (size, size) and geo == letterbox_geometry(w, h, size)
    x1, y1, x2, y2 = geo.content
    assert (canvas[:y1] == IGNORE).all() and (canvas[y2:] == IGNORE).all()
    assert (canvas[:, :x1] == IGNORE).all() and (canvas[:, x2:] == IGNORE).all()
    back = logits_to_mask(_one_hot_logits(canvas, 3, stride), geo, stride)
    assert back.shape == (h, w) and back.dtype == np.uint8
    np.testing.assert_array_equal(back, mask)   # exact, and the padding's class never appears


def test_png_is_a_single_channel_mask_of_class_ids():
    mask = _blocks(37, 53, 3, 5, seed=1)
    decoded = cv2.imdecode(np.frombuffer(encode_png(mask), np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.ndim == 2 and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, mask)


@pytest.mark.parametrize("seed", range(6))
def test_rle_decodes_back_with_pycocotools(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 60, size=2)
    binary = _blocks(int(h), int(w), int(rng.integers(1, 5)), 2, seed) == 1
    rle = encode_rle(binary)
    assert rle["size"] == [h, w]
    np.testing.assert_array_equal(mask_api.decode({"size": rle["size"], "counts": rle["counts"].encode()}), binary)
    # the same string pycocotools itself writes
    assert rle["counts"] == mask_api.encode(np.asfortranarray(binary.astype(np.uint8)))["counts"].decode()


@pytest.mark.parametrize("binary", [np.zeros((4, 3), bool), np.ones((4, 3), bool), np.eye(5, dtype=bool),
                                    np.array([[True]]), np.array([[False]])])
def test_rle_edge_cases(binary):
    rle = encode_rle(binary)
    np.testing.assert_array_equal(mask_api.decode({"size": rle["size"], "counts": rle["counts"].encode()}), binary)
    counts = rle_counts(binary)
    assert sum(counts) == binary.size and (counts[0] == 0) == bool(binary.flat[0])   # a run of zeros first


def test_class_pixels_and_overlay():
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 5:20] = 2
    np.testing.assert_array_equal(class_pixels(mask, 4), [600 - 75, 0, 75, 0])
    image = np.full((20, 30, 3), 200, np.uint8)
    jpeg = overlay_jpeg(image, mask, [(0, 0, 0), (255, 0, 0), (0, 0, 255), (0, 255, 0)])
    shown = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert shown.shape == (20, 30, 3)
    assert shown[7, 12, 2] > shown[7, 12, 0] + 50          # class 2 painted blue over the grey
    assert np.abs(shown[15, 25].astype(int) - 200).max() < 12   # the background untouched


def _reference_iou(truth: np.ndarray, pred: np.ndarray, classes: int) -> list[float]:
    out = []
    for c in range(classes):
        valid = truth != IGNORE
        t, p = (truth == c) & valid, (pred == c) & valid
        union = (t | p).sum()
        out.append(float((t & p).sum() / union) if union else float("nan"))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_iou_against_a_plain_reference(seed):
    rng = np.random.default_rng(seed)
    truths = [rng.integers(0, 4, (20, 25), dtype=np.uint8) for _ in range(3)]
    preds = [np.where(rng.random(t.shape) < 0.7, t, rng.integers(0, 4, t.shape)).astype(np.uint8) for t in truths]
    truths[0][:3] = IGNORE                      # ignored pixels count for nobody
    matrix = sum(confusion(t, p, 4) for t, p in zip(truths, preds))
    pooled_t, pooled_p = np.concatenate([t.ravel() for t in truths]), np.concatenate([p.ravel() for p in preds])
    np.testing.assert_allclose(iou_per_class(matrix), _reference_iou(pooled_t, pooled_p, 4))
    summary = summarize(matrix, ["a", "b", "c", "d"])
    assert summary["miou"] == pytest.approx(np.mean(_reference_iou(pooled_t, pooled_p, 4)))


def test_iou_of_an_absent_class_is_left_out_of_the_mean():
    truth = np.array([[0, 0, 1, 1]], np.uint8)
    matrix = confusion(truth, truth, 3)
    summary = summarize(matrix, ["bg", "x", "never"])
    assert summary["iou"] == {"bg": 1.0, "x": 1.0, "never": None} and summary["miou"] == 1.0


@pytest.mark.parametrize("seed", range(8))
def test_augmentation_moves_the_mask_with_the_image(seed, monkeypatch):
    """With the colour changes switched off, an image whose pixels spell out their own mask value and
    position still does after random crops and mirrors: the mask followed every geometric change."""
    monkeypatch.setattr(augment, "color_shift", lambda rng, image: image)
    monkeypatch.setattr(augment, "pca_color", lambda rng, image: image)
    mask = _blocks(60, 80, 3, 4, seed)
    ys, xs = np.mgrid[0:60, 0:80]
    image = np.stack([mask * 60, xs * 3, ys * 4], axis=-1).astype(np.uint8)
    out, out_mask = augment.augment_segmentation(np.random.default_rng(seed), image, mask, crop_p=0.7, flip_p=0.5)
    assert out.shape[:2] == out_mask.shape
    np.testing.assert_array_equal(out[..., 0], out_mask * 60)
    # and the mask is the original's at the positions the pixels came from
    np.testing.assert_array_equal(mask[out[..., 2] // 4, out[..., 1] // 3], out_mask)


def test_reading_back_in_bands_equals_one_pass(monkeypatch):
    """Bands of rows (bounded memory) give exactly the mask of a single pass over the photo."""
    import app.vision.masks as masks

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(4, 32, 32)).astype(np.float32)
    geo = letterbox_geometry(203, 157, 64)
    whole = logits_to_mask(logits, geo, stride=2)
    monkeypatch.setattr(masks, "BAND_PIXELS", 203 * 7)    # 7 rows per band, the last one short
    np.testing.assert_array_equal(logits_to_mask(logits, geo, stride=2), whole)
