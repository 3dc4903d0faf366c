"""Face geometry: the similarity fit against known transforms, alignment onto the template, crops."""

import cv2
import numpy as np
import pytest

from app.vision.align import (FACE_TEMPLATE, align_face, alignment_transform, box_crop_transform, crop_box,
                              embed_with_mirror, invert_affine, mirror_average, mirror_points, similarity_transform,
                              transform_points, unit, warp)


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


@pytest.mark.parametrize("angle,scale,tx,ty", [(0, 1, 0, 0), (25, 2.5, 40, -7), (-25, 0.3, 100, 200), (90, 1.7, 3, 3)])
def test_similarity_recovers_a_known_transform(angle, scale, tx, ty):
    src = np.random.default_rng(0).uniform(0, 100, size=(5, 2))
    want = _similarity(angle, scale, tx, ty)
    got = similarity_transform(src, transform_points(src, want))
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_similarity_never_reflects():
    src = np.random.default_rng(1).uniform(0, 100, size=(5, 2))
    m = similarity_transform(src, src * [-1, 1])   # a mirror image: the fit rotates, never reflects
    assert np.linalg.det(m[:, :2]) > 0


def test_degenerate_landmarks_are_refused():
    with pytest.raises(ValueError):
        similarity_transform(np.ones((5, 2)), FACE_TEMPLATE)


@pytest.mark.parametrize("seed", range(3))
def test_alignment_maps_the_landmarks_onto_the_template(seed):
    rng = np.random.default_rng(seed)
    size = 96
    # the template placed in a photo by a random similarity, then noise-free landmarks aligned back
    placed = transform_points(FACE_TEMPLATE * 50, _similarity(rng.uniform(-25, 25), rng.uniform(0.8, 4), 120, 90))
    m = alignment_transform(placed, size)
    np.testing.assert_allclose(transform_points(placed, m), FACE_TEMPLATE * size, atol=1e-3)


def test_aligned_crop_puts_the_marked_pixels_at_the_template():
    """Draw dots at the landmarks of a rotated face; after alignment the dots sit at the template."""
    size, image = 112, np.zeros((400, 400, 3), np.uint8)
    placed = transform_points(FACE_TEMPLATE * 112, _similarity(20, 1.6, 150, 60))
    for x, y in placed:
        cv2.circle(image, (round(float(x)), round(float(y))), 4, (255, 255, 255), -1)
    crop = align_face(image, placed, size)
    for tx, ty in FACE_TEMPLATE * size:
        assert crop[round(float(ty)), round(float(tx))].min() > 200


def test_box_crop_is_centred_and_covers_the_margin():
    m = box_crop_transform(np.array([100, 50, 140, 130]), 64, 1.25)   # 40 x 80 box, longer side 80
    centre = transform_points(np.array([[120, 90]]), m)[0]
    np.testing.assert_allclose(centre, [32, 32], atol=1e-6)
    assert m[0, 0] == pytest.approx(64 / 100)
    back = transform_points(transform_points(np.array([[7.0, 9.0]]), m), invert_affine(m))
    np.testing.assert_allclose(back, [[7.0, 9.0]], atol=1e-5)


@pytest.mark.parametrize("shrink", [1.0, 3.0, 7.5])
def test_warp_keeps_geometry_when_it_shrinks(shrink):
    """A bright square must land at the same crop pixels whether or not the image is pre-reduced."""
    image = np.zeros((600, 600, 3), np.uint8)
    image[200:400, 240:360] = 255
    size = 64
    m = box_crop_transform(np.array([240, 200, 360, 400]), size, shrink * 200 / 64 * 64 / 200)
    crop = warp(image, m, size)
    x1, y1 = transform_points(np.array([[240, 200]]), m)[0]
    x2, y2 = transform_points(np.array([[360, 400]]), m)[0]
    ys, xs = np.nonzero(crop[..., 0] > 127)
    assert abs(xs.min() - x1) <= 1 and abs(xs.max() + 1 - x2) <= 1
    assert abs(ys.min() - y1) <= 1 and abs(ys.max() + 1 - y2) <= 1


def test_crop_box_fills_outside_with_grey():
    crop, _ = crop_box(np.zeros((50, 50, 3), np.uint8), np.array([0, 0, 50, 50]), 32, 2.0)
    assert crop[0, 0].tolist() == [114, 114, 114] and crop[16, 16].tolist() == [0, 0, 0]


def test_mirror_points_follow_the_pixels_of_a_flipped_image():
    pixels = np.array([[10, 12], [40, 11], [25, 30], [14, 44], [37, 45]])
    points = pixels + 0.5                                 # continuous: a pixel's centre is at +0.5
    img = np.zeros((64, 57, 3), np.uint8)
    for k, (x, y) in enumerate(pixels):
        img[y, x] = (k + 1) * 40                          # point k marked by its own value
    flipped = img[:, ::-1]
    got = mirror_points(points, img.shape[1])
    for k, (x, y) in enumerate(got):
        # after the flip, left and right swap: the point now called k was marked as MIRROR[k]
        assert flipped[int(np.floor(y)), int(np.floor(x)), 0] == ([1, 0, 2, 4, 3][k] + 1) * 40
        assert x % 1 == 0.5 and y % 1 == 0.5              # still a pixel's centre
    np.testing.assert_allclose(mirror_points(got, img.shape[1]), points)
    np.testing.assert_allclose(mirror_average(points, got, img.shape[1]), points)


def test_warp_reads_matrices_in_continuous_coordinates():
    """x -> W - x is the horizontal flip in continuous coordinates: warp must give image[:, ::-1]
    exactly (OpenCV's own convention would shift it by a pixel)."""
    img = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    flip = np.array([[-1.0, 0.0, 32.0], [0.0, 1.0, 0.0]])
    np.testing.assert_array_equal(warp(img, flip, 32), img[:, ::-1])
    # a crop of the box [8, 24) at 16 px is the sub-array, pixel for pixel
    np.testing.assert_array_equal(crop_box(img, np.array([8, 8, 24, 24]), 16, 1.0)[0], img[8:24, 8:24])


def test_embed_with_mirror_averages_unit_readings_in_one_batch():
    """A toy embedder reading the left and right halves: the crop and its mirror image answer
    swapped halves, each is scaled to unit length, summed, and the sum scaled to unit length."""
    crops = np.random.default_rng(1).integers(0, 255, (3, 8, 8, 3), dtype=np.uint8)
    calls = []

    def embed(batch):
        calls.append(len(batch))
        return np.stack([batch[:, :, :4].reshape(len(batch), -1).mean(1),
                         3 * batch[:, :, 4:].reshape(len(batch), -1).mean(1)], axis=1)

    got = embed_with_mirror(embed, crops)
    assert calls == [6]                                   # one run for the crops and their mirrors
    left, right = crops[:, :, :4].reshape(3, -1).mean(1), crops[:, :, 4:].reshape(3, -1).mean(1)
    a, b = np.stack([left, 3 * right], 1), np.stack([right, 3 * left], 1)
    expected = unit(unit(a) + unit(b))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-6)
