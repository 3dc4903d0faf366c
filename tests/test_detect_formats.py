"""``python -m training.detect convert``: Ultralytics YOLO, Pascal VOC and COCO-elsewhere datasets
written as the COCO layout ``train`` reads, boxes round-tripping exactly in pixels."""

import json

import numpy as np
from PIL import Image

from training.detect.__main__ import main as detect_cli
from training.detect.data import load_dataset, read_rgb
from training.detect.formats import image_size, read_data_yaml

# image stem -> (width, height, [(class, x1, y1, x2, y2), ...]) in integer pixels
SCENES = {
    "a": (80, 60, [(0, 10, 5, 30, 25), (2, 40, 20, 79, 59)]),
    "b": (64, 48, [(1, 0, 0, 64, 48)]),
    "c": (50, 70, []),
}
NAMES = ["cat", "dog", "bird"]


def _image(path, width, height, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)


def _read(out):
    data = load_dataset(out)
    return data, {s.path.stem: (s.width, s.height, s.labels.tolist(), s.boxes) for s in data.samples}


def _same_boxes(got, scenes):
    for stem, (w, h, objects) in scenes.items():
        gw, gh, labels, boxes = got[stem]
        assert (gw, gh) == (w, h)
        assert labels == [o[0] for o in objects]
        np.testing.assert_array_equal(boxes, np.float32([o[1:] for o in objects]).reshape(-1, 4))   # exact


def _yolo_line(cls, x1, y1, x2, y2, w, h):
    return f"{cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"


def test_yolo_data_yaml_round_trips_boxes(tmp_path, capsys):
    root = tmp_path / "ds"
    for i, (stem, (w, h, objects)) in enumerate(SCENES.items()):
        split = "val" if stem == "b" else "train"
        _image(root / "images" / split / f"{stem}.png", w, h, i)
        if objects:
            lines = [_yolo_line(*o, w, h) for o in objects]
            if stem == "a":      # the second object as a segmentation polygon: its extent is the box
                _, x1, y1, x2, y2 = objects[1]
                lines[1] = f"2 {x1 / w:.6f} {y1 / h:.6f} {x2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {x1 / w:.6f} {y2 / h:.6f}"
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text(
        "# Ultralytics-style\npath: .  # dataset root\ntrain: images/train\nval: images/val\ntest:\n\n"
        "names:\n  0: cat\n  1: dog\n  2: bird\n\ndownload: |\n  from x import y\n  names: not ours\n")
    assert read_data_yaml(root / "data.yaml")["names"] == {0: "cat", 1: "dog", 2: "bird"}
    assert detect_cli(["convert", "--from", "yolo", str(root / "data.yaml"), "--split", "train",
                       "--out", str(tmp_path / "train")]) == 0
    assert "2 images (1 without objects), 2 boxes, 3 classes" in capsys.readouterr().out
    assert detect_cli(["convert", "--from", "yolo", str(root / "data.yaml"), "--split", "val",
                       "--out", str(tmp_path / "val")]) == 0
    train, got = _read(tmp_path / "train")
    val, got_val = _read(tmp_path / "val")
    assert train.class_names == val.class_names == NAMES
    _same_boxes({**got, **got_val}, SCENES)
    assert (tmp_path / "train" / "images" / "a.png").is_file()

    assert detect_cli(["convert", "--from", "yolo", str(root / "data.yaml"), "--out", str(tmp_path / "x")]) == 2
    assert "give --split" in capsys.readouterr().err


def test_yolo_folder_with_classes_txt_and_a_bad_class(tmp_path, capsys):
    root = tmp_path / "flat"
    for i, (stem, (w, h, objects)) in enumerate(SCENES.items()):
        _image(root / "images" / f"{stem}.png", w, h, i)
        (root / "labels").mkdir(exist_ok=True)
        (root / "labels" / f"{stem}.txt").write_text("".join(_yolo_line(*o, w, h) + "\n" for o in objects))
    (root / "classes.txt").write_text("\n".join(NAMES) + "\n")
    assert detect_cli(["convert", "--from", "yolo", str(root), "--out", str(tmp_path / "out")]) == 0
    _same_boxes(_read(tmp_path / "out")[1], SCENES)
    assert detect_cli(["convert", "--from", "yolo", str(root), "--out", str(tmp_path / "two"),
                       "--names", "cat,dog"]) == 2                          # class 2 is not one of 2 names
    assert "class 2 is not one of the 2 names" in capsys.readouterr().err


def _voc_xml(filename, w, h, objects, names, difficult=()):
    body = "".join(
        f"<object><name>{names[c]}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{int(k in difficult)}</difficult><bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for k, (c, x1, y1, x2, y2) in enumerate(objects))
    return (f"<annotation><folder>VOC</folder><filename>{filename}</filename><size><width>{w}</width>"
            f"<height>{h}</height><depth>3</depth></size><segmented>0</segmented>{body}</annotation>")


def test_voc_devkit_layout_round_trips_boxes(tmp_path, capsys):
    root = tmp_path / "VOC"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for i, (stem, (w, h, objects)) in enumerate(SCENES.items()):
        _image(root / "JPEGImages" / f"{stem}.png", w, h, i)
        (root / "Annotations" / f"{stem}.xml").write_text(_voc_xml(f"{stem}.png", w, h, objects, NAMES,
                                                                   difficult={1} if stem == "a" else ()))
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nc\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("b\n")
    assert detect_cli(["convert", "--from", "voc", str(root), "--split", "val", "--out", str(tmp_path / "val")]) == 0
    assert detect_cli(["convert", "--from", "voc", str(root), "--split", "train", "--out", str(tmp_path / "train"),
                       "--copy"]) == 0
    val, got = _read(tmp_path / "val")
    train, got_train = _read(tmp_path / "train")
    # names from every annotation in the folder, sorted: the same for both splits
    assert val.class_names == train.class_names == ["bird", "cat", "dog"]
    order = [NAMES.index(n) for n in ["bird", "cat", "dog"]]      # ours -> position in the sorted names
    resorted = {s: (w, h, [(order.index(c), *b) for c, *b in objs]) for s, (w, h, objs) in SCENES.items()}
    _same_boxes({**got, **got_train}, resorted)
    capsys.readouterr()
    assert detect_cli(["convert", "--from", "voc", str(root), "--split", "train", "--out", str(tmp_path / "easy"),
                       "--skip-difficult"]) == 0
    assert "1 difficult objects left out" in capsys.readouterr().out
    assert _read(tmp_path / "easy")[1]["a"][2] == [order.index(0)]


def test_voc_xml_beside_images_and_coco_elsewhere(tmp_path):
    flat = tmp_path / "labelimg"
    for i, (stem, (w, h, objects)) in enumerate(SCENES.items()):
        _image(flat / f"{stem}.png", w, h, i)
        (flat / f"{stem}.xml").write_text(_voc_xml(f"{stem}.png", w, h, objects, NAMES))
    assert detect_cli(["convert", "--from", "voc", str(flat), "--names", ",".join(NAMES),
                       "--out", str(tmp_path / "voc")]) == 0
    _same_boxes(_read(tmp_path / "voc")[1], SCENES)
    # a COCO file whose images live elsewhere (annotations/instances_x.json + x/), written to the layout
    doc = json.loads((tmp_path / "voc" / "annotations.json").read_text())
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    (tmp_path / "coco" / "annotations" / "instances.json").write_text(json.dumps(doc))
    assert detect_cli(["convert", "--from", "coco", str(tmp_path / "coco" / "annotations" / "instances.json"),
                       "--images", str(flat), "--out", str(tmp_path / "again")]) == 0
    _same_boxes(_read(tmp_path / "again")[1], SCENES)


def test_sizes_follow_the_exif_orientation(tmp_path):
    """A phone photo stored landscape with 'rotate 90' in its EXIF is a portrait photo once decoded
    (cv2.imread in training, the server's decoder): labels and sizes are in that frame."""
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((40, 100, 3), np.uint8)).save(path, exif=exif.tobytes())
    assert image_size(path) == (40, 100)
    assert read_rgb(path).shape[:2] == (100, 40)
