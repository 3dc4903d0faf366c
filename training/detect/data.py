"""Detection datasets: COCO JSON and YOLO txt loaders, and the torch Dataset that augments,
letterboxes and batches them. Class ids are 0-based inside training; COCO category ids are
mapped in the order of the categories list."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from app.vision.letterbox import letterbox, letterbox_boxes, to_tensor
from training.augment import augment_detection
from training.detect.model import NORM_MEAN, NORM_STD

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass
class Sample:
    path: Path
    boxes: np.ndarray   # (N, 4) float32 xyxy, pixels
    labels: np.ndarray  # (N,) int64, 0-based class index
    image_id: int
    width: int
    height: int


@dataclass
class DetectionData:
    samples: list[Sample]
    class_names: list[str]
    coco_path: Path | None = None  # ground truth for pycocotools when the source is COCO


def images_root(json_path: Path) -> Path:
    """Where a COCO file's ``file_name``s start: ``<json dir>/images`` when that folder exists, else
    the json's own folder (the face sets' ``<identity>/<k>.png``)."""
    folder = Path(json_path).parent
    return folder / "images" if (folder / "images").is_dir() else folder


def load_coco(json_path: Path, images_dir: Path | None = None) -> DetectionData:
    """Read a COCO detection file; images are looked up in ``images_dir`` (default: ``images_root``)."""
    json_path = Path(json_path)
    images_dir = images_dir or images_root(json_path)
    doc = json.loads(json_path.read_text())
    cats = sorted(doc["categories"], key=lambda c: c["id"])
    index_of = {c["id"]: i for i, c in enumerate(cats)}
    per_image: dict[int, list[dict]] = {}
    for ann in doc.get("annotations", []):
        if not ann.get("iscrowd", 0):
            per_image.setdefault(ann["image_id"], []).append(ann)
    samples = []
    for img in doc["images"]:
        anns = per_image.get(img["id"], [])
        xywh = np.asarray([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        labels = np.asarray([index_of[a["category_id"]] for a in anns], dtype=np.int64)
        samples.append(Sample(Path(images_dir) / img["file_name"], boxes, labels, img["id"], img["width"], img["height"]))
    return DetectionData(samples, [c["name"] for c in cats], json_path)


def load_yolo(root: Path) -> DetectionData:
    """Read a YOLO txt dataset: ``root/images/*``, ``root/labels/<stem>.txt`` with lines
    ``class cx cy w h`` (normalised 0..1), and ``root/classes.txt`` (one name per line)."""
    root = Path(root)
    names = [n.strip() for n in (root / "classes.txt").read_text().splitlines() if n.strip()]
    samples = []
    paths = sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    for image_id, path in enumerate(paths, start=1):
        label_file = root / "labels" / f"{path.stem}.txt"
        rows = np.loadtxt(label_file, dtype=np.float32, ndmin=2) if label_file.exists() else np.zeros((0, 5))
        rows = rows.reshape(-1, 5)
        h, w = _image_size(path)
        cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1).astype(np.float32)
        samples.append(Sample(path, boxes, rows[:, 0].astype(np.int64), image_id, w, h))
    return DetectionData(samples, names)


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        return img.height, img.width


def load_dataset(path: Path) -> DetectionData:
    """A COCO JSON file, a folder holding ``annotations.json`` (COCO), or a YOLO folder."""
    path = Path(path)
    if path.is_file():
        return load_coco(path)
    if (path / "annotations.json").exists():
        return load_coco(path / "annotations.json")
    if (path / "classes.txt").exists():
        return load_yolo(path)
    raise FileNotFoundError(f"{path}: neither a COCO json, a folder with annotations.json, nor a YOLO folder "
                            "(images/, labels/, classes.txt); write other layouts (a data.yaml, Pascal VOC) as COCO "
                            "with python -m training.detect convert")


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class DetectionDataset(torch.utils.data.Dataset):
    """Yields ``(image (3, S, S) float32, boxes (N, 4) input pixels, labels (N,), index)``."""

    def __init__(self, data: DetectionData, input_size: int, augment: bool, seed: int = 0,
                 cache: bool = True, norm: tuple[tuple, tuple] = (NORM_MEAN, NORM_STD)) -> None:
        self.data, self.size, self.augment, self.seed = data, input_size, augment, seed
        self.mean, self.std = norm   # the model's input normalisation, of x / 255
        self.epoch = 0
        self._cache: dict[int, np.ndarray] = {} if cache else None  # type: ignore[assignment]

    def __len__(self) -> int:
        return len(self.data.samples)

    def _image(self, i: int) -> np.ndarray:
        if self._cache is None:
            return read_rgb(self.data.samples[i].path)
        if i not in self._cache:
            self._cache[i] = read_rgb(self.data.samples[i].path)
        return self._cache[i]

    def __getitem__(self, i: int):
        s = self.data.samples[i]
        image, boxes, labels = self._image(i), s.boxes, s.labels
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            image, boxes, labels, _ = augment_detection(rng, image, boxes, labels)
        canvas, geo = letterbox(image, self.size)
        x = to_tensor(canvas[None], self.mean, self.std)[0]
        return torch.from_numpy(x), letterbox_boxes(boxes, geo), labels, i


def collate(batch):
    images = torch.stack([b[0] for b in batch])
    return images, [b[1] for b in batch], [b[2] for b in batch], [b[3] for b in batch]
