"""Synthetic face photos: determinism, identities, COCO keypoints validity, strangers, rotation, CLI."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.synth.__main__ import main
from training.synth.face_parts import FaceIdentity, Look, draw_person, identity_params
from training.synth.faces import CATEGORY, FaceConfig, box_iou, render_face_photo, write_faces

SMALL = FaceConfig(max_side=260, stranger_prob=0.6)
# no photometric nuisance, no accessories, neutral expression: landmarks can be checked on pixels
CLEAN = FaceConfig(min_face=110, max_face_frac=0.7, min_side=220, max_side=300, lighting=0, blur_prob=0,
                   max_noise=0, face_light=0, color_temp=0, expression=0, glasses_prob=0, hat_prob=0,
                   hand_prob=0, stranger_prob=0)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faces")
    write_faces(out, identities=3, per_identity=3, seed=5, cfg=SMALL, workers=1)
    return out


def test_same_seed_same_bytes_and_workers_do_not_matter(dataset, tmp_path):
    write_faces(tmp_path, identities=3, per_identity=3, seed=5, cfg=SMALL, workers=2)
    assert _files(tmp_path) == _files(dataset)
    assert (tmp_path / "annotations.json").read_text() == (dataset / "annotations.json").read_text()


def test_different_seed_differs():
    a, _ = render_face_photo(np.random.default_rng([1, 0, 0]), identity_params(1, 0), SMALL)
    b, _ = render_face_photo(np.random.default_rng([2, 0, 0]), identity_params(2, 0), SMALL)
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_identity_does_not_depend_on_the_data_set_size(dataset, tmp_path):
    assert identity_params(5, 1) == identity_params(5, 1)
    assert identity_params(5, 1) != identity_params(5, 2) and identity_params(5, 1) != identity_params(6, 1)
    # identity 1 alone (first_identity=1) is drawn exactly as inside the 3-identity data set
    write_faces(tmp_path, identities=1, per_identity=2, seed=5, cfg=SMALL, workers=1, first_identity=1)
    ref = _files(dataset)
    assert _files(tmp_path) == {k: ref[k] for k in ("id00001/0.png", "id00001/1.png")}
    doc = json.loads((tmp_path / "annotations.json").read_text())
    assert doc["info"]["first_identity"] == 1 and [i["identity"] for i in doc["images"]] == ["id00001"] * 2


def test_identities_have_many_continuous_dimensions_and_differ():
    vectors = np.stack([identity_params(0, i).vector() for i in range(50)])
    assert vectors.shape[1] >= 25
    assert (vectors.std(axis=0) > 0).all()  # every dimension varies across people
    ranges = [f.metadata["range"] for f in dataclasses.fields(FaceIdentity) if "range" in f.metadata]
    lo, hi = np.array(ranges).T
    assert ((vectors >= lo) & (vectors <= hi)).all()


def test_coco_keypoints_file_is_valid(dataset):
    from pycocotools.coco import COCO

    coco = COCO(str(dataset / "annotations.json"))
    doc = json.loads((dataset / "annotations.json").read_text())
    assert doc["categories"] == [CATEGORY] and CATEGORY["keypoints"] == [
        "left_eye", "right_eye", "nose_tip", "left_mouth", "right_mouth"]
    assert doc["info"]["seed"] == 5 and doc["info"]["identities"] == 3 and doc["info"]["per_identity"] == 3
    assert doc["info"]["config"] == dataclasses.asdict(SMALL)
    assert sorted(coco.getImgIds()) == list(range(1, 10))
    names = [img["file_name"] for img in coco.loadImgs(sorted(coco.getImgIds()))]
    assert names == [f"id{i:05d}/{k}.png" for i in range(3) for k in range(3)]
    ann_ids = [a["id"] for a in doc["annotations"]]
    assert ann_ids == list(range(1, len(ann_ids) + 1))
    for img in coco.loadImgs(coco.getImgIds()):
        image = cv2.imread(str(dataset / img["file_name"]), cv2.IMREAD_UNCHANGED)
        w, h = img["width"], img["height"]
        assert image.shape == (h, w, 3) and img["identity"] == img["file_name"].split("/")[0]
        assert SMALL.min_side <= w <= SMALL.max_side and SMALL.min_side <= h <= SMALL.max_side
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        subjects = [a for a in anns if a["identity"] == img["identity"]]
        assert len(subjects) == 1 and all(a["identity"] is None for a in anns if a is not subjects[0])
        for a in anns:
            x, y, bw, bh = a["bbox"]
            assert a["category_id"] == 1 and a["iscrowd"] == 0 and a["area"] > 0
            assert 0 <= x and 0 <= y and bw > 0 and bh > 0 and x + bw <= w + 1e-6 and y + bh <= h + 1e-6
            kps = np.array(a["keypoints"], np.float64).reshape(5, 3)
            assert a["num_keypoints"] == int((kps[:, 2] > 0).sum()) and set(kps[:, 2]) <= {0, 1, 2}
            assert (kps[kps[:, 2] == 0, :2] == 0).all()
            seen = kps[kps[:, 2] > 0]
            assert ((seen[:, 0] >= 0) & (seen[:, 0] <= w) & (seen[:, 1] >= 0) & (seen[:, 1] <= h)).all()
        s = subjects[0]
        kps = np.array(s["keypoints"], np.float64).reshape(5, 3)
        x, y, bw, bh = s["bbox"]
        assert s["num_keypoints"] == 5 and (kps[:, 2] >= 1).all()
        assert ((kps[:, 0] >= x) & (kps[:, 0] <= x + bw) & (kps[:, 1] >= y) & (kps[:, 1] <= y + bh)).all()
        assert kps[0, 0] < kps[1, 0] and kps[3, 0] < kps[4, 0]  # left eye / mouth corner has the smaller x
        assert max(bw, bh) >= 0.8 * SMALL.min_face


def test_strangers_are_nobody_and_keep_off_the_subject():
    cfg = dataclasses.replace(SMALL, stranger_prob=1.0, max_strangers=3, min_side=300, max_side=400)
    strangers = 0
    for k in range(12):
        image, anns = render_face_photo(np.random.default_rng([3, 0, k]), identity_params(3, 0), cfg)
        h, w = image.shape[:2]
        assert anns[0].subject and not any(a.subject for a in anns[1:])
        for a in anns[1:]:
            strangers += 1
            assert box_iou(a.box, anns[0].box) < cfg.max_stranger_iou
            assert a.area >= 0.5 * cfg.stranger_visible * (a.box[2] - a.box[0]) * (a.box[3] - a.box[1])
        x0, y0, x1, y1 = anns[0].box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert strangers >= 6  # the check above was not vacuous


@pytest.mark.parametrize("visible", [0.5, 0.6, 0.75])
def test_stranger_is_dropped_exactly_when_too_little_stays_in_view(visible):
    """A stranger slid out over the left edge is kept while its outline's share in view >= visible."""
    from training.synth.faces import _composite, _face_at

    cfg = dataclasses.replace(CLEAN, stranger_visible=visible)
    w, h = 400, 300
    subject = _face_at(identity_params(0, 0), Look(), 100.0, 0.0, (330.0, 150.0), w, h)
    outcomes = []
    for cx in np.linspace(-15.0, 45.0, 25):
        stranger = _face_at(identity_params(0, 1), Look(), 100.0, 10.0, (cx, 150.0), w, h)
        # reference: rasterise the outline 8x finer on a canvas reaching far past the left edge
        big = np.zeros((h * 8, (w + 200) * 8), np.uint8)
        pts = (stranger.outline + (200.5, 0.5)) * 8  # continuous coordinates, 200 px of room on the left
        cv2.fillPoly(big, [np.round(pts).astype(np.int32)], 1)
        share = big[:, 200 * 8:].sum() / big.sum()
        if abs(share - visible) < 0.02:
            continue  # too close to call at the implementation's one-sample-per-pixel resolution
        anns = _composite(np.zeros((h, w, 3), np.float32), subject, [stranger], cfg)
        assert (len(anns) == 2) == (share >= visible), (cx, share)
        outcomes.append(len(anns) == 2)
    assert len(outcomes) >= 20 and set(outcomes) == {True, False}


def test_strangers_get_identity_null_in_the_json(tmp_path):
    cfg = dataclasses.replace(SMALL, stranger_prob=1.0, max_strangers=3, min_side=300, max_side=400)
    write_faces(tmp_path, identities=2, per_identity=2, seed=3, cfg=cfg, workers=1)
    doc = json.loads((tmp_path / "annotations.json").read_text())
    identity_of = {img["id"]: img["identity"] for img in doc["images"]}
    nulls = [a for a in doc["annotations"] if a["identity"] is None]
    assert nulls and len(doc["annotations"]) == len(nulls) + 4
    assert all(a["identity"] in (None, identity_of[a["image_id"]]) for a in doc["annotations"])


@pytest.mark.parametrize("max_rotation", [25.0, 8.0])
def test_rotation_range_is_respected(max_rotation):
    cfg = dataclasses.replace(SMALL, max_rotation=max_rotation)
    angles = []
    for k in range(24):
        _, anns = render_face_photo(np.random.default_rng([4, k % 3, k]), identity_params(4, k % 3), cfg)
        (lx, ly), (rx, ry) = anns[0].landmarks[:2]
        angles.append(math.degrees(math.atan2(ry - ly, rx - lx)))
    assert max(abs(a) for a in angles) <= max_rotation + 0.5
    assert max(abs(a) for a in angles) >= 0.6 * max_rotation  # the range is used, not just respected


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eye_landmarks_sit_on_the_pupils(seed):
    """Without nuisance the eye landmarks land on the dark pupil, through rotation and warping."""
    for k in range(3):
        image, anns = render_face_photo(np.random.default_rng([seed, 0, k]), identity_params(seed, 0), CLEAN)
        for x, y in anns[0].landmarks[:2]:
            assert image[int(y), int(x)].max() < 60, (k, x, y)  # continuous coordinates: pixel = floor
    person = draw_person(identity_params(seed, 0), Look(), 200.0)
    for x, y in person.landmarks[:2]:  # canvas pixels, OpenCV convention: pixel = round
        assert person.rgba[round(y), round(x), :3].max() < 40


def test_sunglasses_mark_the_eyes_covered():
    cfg = dataclasses.replace(CLEAN, glasses_prob=1.0, sunglasses_frac=1.0)
    for k in range(3):
        _, anns = render_face_photo(np.random.default_rng([7, 0, k]), identity_params(7, 0), cfg)
        assert anns[0].visibility.tolist() == [1, 1, 2, 2, 2]
    _, anns = render_face_photo(np.random.default_rng([7, 0, 0]), identity_params(7, 0), CLEAN)
    assert anns[0].visibility.tolist() == [2] * 5


def test_cli_writes_the_same_data_set(dataset, tmp_path):
    flags = ["--max-side", "260", "--stranger-prob", "0.6"]
    assert main(["faces", "--out", str(tmp_path), "--identities", "2", "--per-identity", "3", "--seed", "5",
                 "--workers", "1", *flags]) == 0
    ref = json.loads((dataset / "annotations.json").read_text())
    got = json.loads((tmp_path / "annotations.json").read_text())
    assert got["images"] == ref["images"][:6]
    assert got["annotations"] == [a for a in ref["annotations"] if a["image_id"] <= 6]
    assert _files(tmp_path) == {k: v for k, v in _files(dataset).items() if not k.startswith("id00002")}


@pytest.mark.parametrize("flags", [
    ["--min-side", "500", "--max-side", "300"],
    ["--max-rotation", "-1"],
    ["--glasses-prob", "1.5"],
    ["--min-face", "200", "--max-side", "250", "--min-side", "200"],
    ["--identities", "0"],
    ["--seed", "-1"],
])
def test_cli_rejects_bad_arguments_as_a_usage_error(tmp_path, flags):
    args = {"--identities": "1"}
    args.update(dict(zip(flags[::2], flags[1::2])))
    with pytest.raises(SystemExit) as exc:
        main(["faces", "--out", str(tmp_path), "--per-identity", "1", *[v for kv in args.items() for v in kv]])
    assert exc.value.code == 2
    assert not (tmp_path / "annotations.json").exists()


def test_config_validation_messages():
    with pytest.raises(ValueError, match="max_side"):
        FaceConfig(min_side=300, max_side=200)
    with pytest.raises(ValueError, match="stranger_visible"):
        FaceConfig(stranger_visible=0)
