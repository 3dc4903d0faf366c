import cv2
import numpy as np
import pytest

from app.vision.letterbox import AREA_BELOW_SCALE, letterbox, letterbox_boxes, letterbox_geometry, to_tensor, unletterbox_boxes


@pytest.mark.parametrize("w,h", [(640, 480), (480, 640), (300, 300), (1000, 200), (241, 637), (100, 90)])
def test_round_trip_boxes(w, h):
    rng = np.random.default_rng(w * h)
    xy = rng.uniform(0, [w - 10, h - 10], (20, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 10, (20, 2))], 1).astype(np.float32)
    geo = letterbox_geometry(w, h, 320)
    back = unletterbox_boxes(letterbox_boxes(boxes, geo), geo)
    np.testing.assert_allclose(back, boxes, atol=1e-3)


def test_content_is_centred_and_padded():
    img = np.full((100, 200, 3), 7, np.uint8)
    canvas, geo = letterbox(img, 320)
    assert canvas.shape == (320, 320, 3)
    x1, y1, x2, y2 = geo.content
    assert (x1, x2) == (0, 320) and (y1, y2) == (80, 240)
    assert (canvas[y1:y2, x1:x2] == 7).all()
    assert (canvas[:y1] == 114).all() and (canvas[y2:] == 114).all()


def test_pixel_lands_where_the_box_map_says():
    img = np.zeros((200, 400, 3), np.uint8)
    img[50:70, 100:140] = 255  # a white block: box (100, 50, 140, 70)
    canvas, geo = letterbox(img, 320)
    box = letterbox_boxes(np.array([[100, 50, 140, 70]], np.float32), geo)[0]
    ys, xs = np.nonzero(canvas[..., 0] > 127)
    assert abs(xs.min() - box[0]) <= 1 and abs(xs.max() + 1 - box[2]) <= 1
    assert abs(ys.min() - box[1]) <= 1 and abs(ys.max() + 1 - box[3]) <= 1


def test_strong_downscale_averages_instead_of_aliasing():
    """A 1-pixel checkerboard shrunk 3x must come out grey everywhere (each output pixel averages a
    3x3 block: 4 or 5 white pixels of 9, 113 or 142), where bilinear sampling keeps near-black and
    near-white pixels."""
    board = np.repeat(((np.indices((300, 300)).sum(0) % 2) * 255).astype(np.uint8)[:, :, None], 3, 2)
    canvas, geo = letterbox(board, 100)
    assert geo.scale < AREA_BELOW_SCALE
    assert canvas.min() >= 113 and canvas.max() <= 142
    sampled = cv2.resize(board, (100, 100), interpolation=cv2.INTER_LINEAR)
    assert sampled.min() < 60 and sampled.max() > 200


@pytest.mark.parametrize("size", [416, 320])
def test_mild_downscale_stays_close_to_the_area_average(size):
    """Above half size the cheaper bilinear resize is used; on a photo-like image (smooth shapes,
    edges, noise) it differs from the area average by about a grey level on average."""
    rng = np.random.default_rng(size)
    img = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 1.0)
    cv2.rectangle(img, (100, 80), (300, 260), (250, 20, 20), -1)
    canvas, geo = letterbox(img, size)
    assert AREA_BELOW_SCALE <= geo.scale < 1
    x1, y1, x2, y2 = geo.content
    area = cv2.resize(img, (x2 - x1, y2 - y1), interpolation=cv2.INTER_AREA).astype(float)
    assert np.abs(canvas[y1:y2, x1:x2] - area).mean() < 2.0


def test_unletterbox_clips_to_image():
    geo = letterbox_geometry(200, 100, 320)
    out = unletterbox_boxes(np.array([[-50, -50, 400, 400]], np.float32), geo)
    assert out.tolist() == [[0, 0, 200, 100]]


def test_to_tensor_layout_and_normalisation():
    x = to_tensor(np.full((2, 4, 4, 3), 255, np.uint8), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert x.shape == (2, 3, 4, 4) and x.dtype == np.float32
    np.testing.assert_allclose(x, 1.0)


@pytest.mark.parametrize("shape", [(1, 7, 5, 3), (3, 64, 48, 3), (0, 8, 8, 3)])
def test_to_tensor_matches_plain_numpy(shape):
    """OpenCV's blob path against the formula written out: per channel, non-square, mirrored views."""
    rng = np.random.default_rng(sum(shape))
    images = rng.integers(0, 256, shape, dtype=np.uint8)[:, :, ::-1]          # a non-contiguous view
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    want = ((images.astype(np.float64) / 255 - mean) / std).transpose(0, 3, 1, 2)
    got = to_tensor(images, mean, std)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_to_tensor_refuses_other_layouts():
    with pytest.raises(ValueError, match="uint8"):
        to_tensor(np.zeros((2, 4, 4, 3), np.float32), (0, 0, 0), (1, 1, 1))
