"""Synthetic scene generator: determinism, mask/annotation consistency, COCO validity."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.synth.__main__ import main
from training.synth.scenes import CATEGORIES, SceneConfig, _Composer, _Patch, render_scene, write_scenes

SMALL = SceneConfig(min_side=200, max_side=320, max_objects=8)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scenes")
    write_scenes(out, 12, seed=3, cfg=SMALL, workers=1)
    return out


def test_same_seed_same_bytes_and_workers_do_not_matter(dataset, tmp_path):
    write_scenes(tmp_path, 12, seed=3, cfg=SMALL, workers=2)
    assert _files(tmp_path) == _files(dataset)
    assert (tmp_path / "annotations.json").read_text() == (dataset / "annotations.json").read_text()


def test_different_seed_differs():
    a = render_scene(np.random.default_rng([1, 1]), SMALL)
    b = render_scene(np.random.default_rng([2, 1]), SMALL)
    assert a.image.shape != b.image.shape or not np.array_equal(a.image, b.image)


def test_cli_writes_the_same_data_set(dataset, tmp_path):
    flags = ["--min-side", "200", "--max-side", "320", "--max-objects", "8"]
    assert main(["scenes", "--out", str(tmp_path), "--count", "3", "--seed", "3", "--workers", "1", *flags]) == 0
    ref = json.loads((dataset / "annotations.json").read_text())
    got = json.loads((tmp_path / "annotations.json").read_text())
    assert got["images"] == ref["images"][:3]
    assert got["annotations"] == [a for a in ref["annotations"] if a["image_id"] <= 3]
    assert _files(tmp_path) == {k: v for k, v in _files(dataset).items() if int(k[-10:-4]) <= 3}


@pytest.mark.parametrize("seed", [0, 7, 11])
def test_boxes_sit_on_visible_pixels_and_areas_add_up(seed):
    cfg = SceneConfig(min_side=240, max_side=400, min_objects=6, max_objects=10, max_rotation=10)
    for i in range(4):
        scene = render_scene(np.random.default_rng([seed, i]), cfg)
        h, w = scene.mask.shape
        assert scene.image.shape == (h, w, 3) and scene.image.dtype == np.uint8
        assert cfg.min_side <= h <= cfg.max_side and cfg.min_side <= w <= cfg.max_side
        assert len(scene.objects) <= cfg.max_objects
        for cat, box, area in scene.objects:
            x0, y0, x1, y1 = box.tolist()
            assert box.dtype == np.float32 and all(v == int(v) for v in (x0, y0, x1, y1))
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            inside = scene.mask[int(y0):int(y1), int(x0):int(x1)] == cat
            assert inside.sum() >= area > 0
            # tight: every edge row/column of the box holds a pixel of this category
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        for cat in (1, 2, 3):
            expected = sum(o.area for o in scene.objects if o.category_id == cat)
            assert int((scene.mask == cat).sum()) == expected
        assert set(np.unique(scene.mask).tolist()) <= {0, 1, 2, 3}


def _square(n: int) -> _Patch:
    return _Patch(np.full((n, n, 3), 200, np.float32), np.ones((n, n), np.float32), np.ones((n, n), bool))


@pytest.mark.parametrize("min_visible", [0.5, 0.6, 0.75])
def test_occluder_is_refused_exactly_when_too_little_stays_visible(min_visible):
    """A 10x10 object; an occluder covering c of its columns leaves (10 - c) / 10 visible."""
    for cover in range(1, 10):
        comp = _Composer(np.zeros((40, 40, 3), np.float32), min_visible)
        assert comp.try_place(_square(10), 10, 10, is_object=True)
        ok = comp.try_place(_square(10), 20 - cover, 10, is_object=False)
        assert ok == ((10 - cover) / 10 >= min_visible)
        assert comp.visible[1] == (100 - 10 * cover if ok else 100)
        assert (comp.owner == 1).sum() == comp.visible[1]


def test_object_counts_and_sizes_in_range():
    cfg = SceneConfig(min_side=240, max_side=480, min_objects=2, max_objects=5, max_distractors=0,
                      min_object_size=20, max_object_frac=0.3, max_rotation=0)
    sides = []
    for i in range(10):
        scene = render_scene(np.random.default_rng([9, i]), cfg)
        assert len(scene.objects) <= 5
        short = min(scene.mask.shape)
        for o in scene.objects:
            longer = float(max(o.box[2] - o.box[0], o.box[3] - o.box[1]))
            assert longer <= cfg.max_object_frac * short + 2
            sides.append(longer)
    assert min(sides) >= 0.6 * cfg.min_object_size  # occlusion may hide an end of a box


def test_coco_json_loads_with_pycocotools(dataset):
    from pycocotools.coco import COCO

    coco = COCO(str(dataset / "annotations.json"))
    assert coco.loadCats(coco.getCatIds()) == [
        {"id": 1, "name": "pedestrian", "supercategory": "object"},
        {"id": 2, "name": "car", "supercategory": "object"},
        {"id": 3, "name": "motorcycle", "supercategory": "object"},
    ] == list(CATEGORIES)
    assert sorted(coco.getImgIds()) == list(range(1, 13))
    for img in coco.loadImgs(coco.getImgIds()):
        image = cv2.imread(str(dataset / "images" / img["file_name"]), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(dataset / "masks" / img["file_name"]), cv2.IMREAD_UNCHANGED)
        assert image.shape == (img["height"], img["width"], 3) and mask.shape == image.shape[:2]
        assert mask.dtype == np.uint8
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
            x, y, w, h = ann["bbox"]
            assert ann["iscrowd"] == 0 and ann["area"] > 0 and w > 0 and h > 0
            region = mask[int(y):int(y + h), int(x):int(x + w)] == ann["category_id"]
            assert region[0].any() and region[-1].any() and region[:, 0].any() and region[:, -1].any()
    assert len(coco.getAnnIds()) > 0


def test_cli_rejects_an_invalid_config_as_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["scenes", "--out", str(tmp_path), "--count", "1", "--min-side", "500", "--max-side", "300"])
    assert exc.value.code == 2
    assert not (tmp_path / "annotations.json").exists()
