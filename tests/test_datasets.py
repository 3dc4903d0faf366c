"""COCO and YOLO loaders read the same boxes (xyxy pixels) and labels."""

import json

import cv2
import numpy as np

from training.detect.data import load_coco, load_dataset, load_yolo


def test_yolo_and_coco_agree(tmp_path):
    img = np.zeros((100, 200, 3), np.uint8)
    for root in ("yolo", "coco"):
        (tmp_path / root / "images").mkdir(parents=True)
        cv2.imwrite(str(tmp_path / root / "images" / "a.png"), img)
    (tmp_path / "yolo" / "labels").mkdir()
    (tmp_path / "yolo" / "labels" / "a.txt").write_text("1 0.5 0.5 0.2 0.4\n0 0.1 0.1 0.1 0.1\n")
    (tmp_path / "yolo" / "classes.txt").write_text("cat\ndog\n")
    coco = {"images": [{"id": 7, "file_name": "a.png", "width": 200, "height": 100}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 5, "bbox": [80, 30, 40, 40], "iscrowd": 0},
                            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [10, 5, 20, 10], "iscrowd": 0},
                            {"id": 3, "image_id": 7, "category_id": 3, "bbox": [0, 0, 9, 9], "iscrowd": 1}],
            "categories": [{"id": 3, "name": "cat"}, {"id": 5, "name": "dog"}]}
    (tmp_path / "coco" / "annotations.json").write_text(json.dumps(coco))
    y = load_yolo(tmp_path / "yolo")
    c = load_coco(tmp_path / "coco" / "annotations.json")
    assert y.class_names == c.class_names == ["cat", "dog"]
    np.testing.assert_allclose(y.samples[0].boxes, [[80, 30, 120, 70], [10, 5, 30, 15]], atol=1e-4)
    np.testing.assert_allclose(c.samples[0].boxes, y.samples[0].boxes, atol=1e-4)  # crowd box skipped
    assert c.samples[0].labels.tolist() == y.samples[0].labels.tolist() == [1, 0]
    assert (c.samples[0].width, c.samples[0].height) == (y.samples[0].width, y.samples[0].height) == (200, 100)
    assert load_dataset(tmp_path / "yolo").class_names == ["cat", "dog"]
    assert load_dataset(tmp_path / "coco").samples[0].image_id == 7
