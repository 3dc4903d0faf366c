"""Segmentation datasets and the torch Dataset that augments and letterboxes them.

Three sources, one shape: a list of samples, each an image and its ``HxW uint8`` class-id mask
(0 = background, ``IGNORE`` = 255 = left out of the loss and the metrics), and the class names
(index = class id, ``class_names[0]`` the background).

- a folder of images with class-id PNG masks, VOC style: ``DIR/images/<stem>.<ext>`` and
  ``DIR/masks/<stem>.png`` (8-bit grey or palette PNGs, whose indices are the class ids); class names
  from ``DIR/classes.txt`` (one per line, the background first), or from ``DIR/annotations.json``'s
  categories (what ``python -m training.synth scenes`` writes: category ``k`` is mask value ``k``);
- a COCO json with polygon or RLE ``segmentation``s: each image's annotations are painted in file
  order (a later one covers an earlier), class id = 1 + the category's rank by id; crowd regions are
  ``IGNORE``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from app.vision.letterbox import letterbox, to_tensor
from app.vision.masks import IGNORE, letterbox_mask
from training.augment import augment_segmentation
from training.detect.data import IMAGE_SUFFIXES, images_root, read_rgb

NORM_MEAN, NORM_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)   # of x / 255 (ImageNet's)


@dataclass(frozen=True)
class SegSample:
    image: Path
    mask: Path | None = None                          # a class-id PNG, or
    annotations: tuple[dict, ...] = field(default=())  # COCO annotations to paint
    width: int = 0
    height: int = 0


@dataclass
class SegmentationData:
    samples: list[SegSample]
    class_names: list[str]

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``i`` as ``(HxWx3 uint8 RGB, HxW uint8 class ids)``."""
        s = self.samples[i]
        image = read_rgb(s.image)
        mask = read_mask(s.mask) if s.mask is not None else paint_coco(s.annotations, image.shape[0], image.shape[1])
        if mask.shape != image.shape[:2]:
            raise ValueError(f"{s.mask or s.image}: mask {mask.shape} and image {image.shape[:2]} differ in size")
        return image, mask


def read_mask(path: Path) -> np.ndarray:
    """A class-id PNG: grey values or palette indices, as stored (never converted to colours)."""
    from PIL import Image

    with Image.open(path) as img:
        if img.mode not in ("L", "P", "I;16", "I"):
            raise ValueError(f"{path}: a class-id mask must be a grey or palette PNG, not {img.mode}")
        mask = np.asarray(img)
    if mask.max(initial=0) > 255:
        raise ValueError(f"{path}: class ids above 255")
    return mask.astype(np.uint8)


def paint_coco(annotations: tuple[dict, ...], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygon or RLE segmentations (``_class`` already set on each) into class ids."""
    from pycocotools import mask as mask_api

    mask = np.zeros((height, width), np.uint8)
    for ann in annotations:
        seg = ann["segmentation"]
        if isinstance(seg, list):                       # polygons
            rle = mask_api.merge(mask_api.frPyObjects(seg, height, width))
        elif isinstance(seg.get("counts"), list):      # uncompressed RLE
            rle = mask_api.frPyObjects(seg, height, width)
        else:
            rle = seg
        mask[mask_api.decode(rle).astype(bool)] = IGNORE if ann.get("iscrowd") else ann["_class"]
    return mask


def _category_names(doc: dict) -> list[str]:
    return ["background", *[c["name"] for c in sorted(doc["categories"], key=lambda c: c["id"])]]


def load_folder(root: Path) -> SegmentationData:
    root = Path(root)
    if (root / "classes.txt").exists():
        names = [n.strip() for n in (root / "classes.txt").read_text().splitlines() if n.strip()]
    elif (root / "annotations.json").exists():
        doc = json.loads((root / "annotations.json").read_text())
        cats = sorted(doc["categories"], key=lambda c: c["id"])
        if [c["id"] for c in cats] != list(range(1, len(cats) + 1)):
            raise ValueError(f"{root}/annotations.json: category ids must be 1..N to be mask values")
        names = _category_names(doc)
    else:
        raise FileNotFoundError(f"{root}: no classes.txt (class names, background first) or annotations.json")
    samples = []
    for path in sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        mask = root / "masks" / f"{path.stem}.png"
        if not mask.exists():
            raise FileNotFoundError(f"{path}: no mask {mask}")
        samples.append(SegSample(path, mask))
    if not samples:
        raise FileNotFoundError(f"{root}/images holds no images")
    return SegmentationData(samples, names)


def load_coco_segmentation(json_path: Path, images_dir: Path | None = None) -> SegmentationData:
    json_path = Path(json_path)
    images_dir = Path(images_dir or images_root(json_path))
    doc = json.loads(json_path.read_text())
    class_of = {c["id"]: k + 1 for k, c in enumerate(sorted(doc["categories"], key=lambda c: c["id"]))}
    per_image: dict[int, list[dict]] = {}
    for ann in doc.get("annotations", []):
        if ann.get("segmentation"):
            per_image.setdefault(ann["image_id"], []).append({**ann, "_class": class_of[ann["category_id"]]})
    samples = [SegSample(images_dir / img["file_name"], None, tuple(per_image.get(img["id"], ())),
                         img["width"], img["height"]) for img in doc["images"]]
    return SegmentationData(samples, _category_names(doc))


def load_segmentation(path: Path) -> SegmentationData:
    """A folder with ``images/`` and ``masks/`` (VOC style or synthetic scenes), or a COCO json."""
    path = Path(path)
    if path.is_file():
        return load_coco_segmentation(path)
    if (path / "masks").is_dir():
        return load_folder(path)
    if (path / "annotations.json").exists():
        return load_coco_segmentation(path / "annotations.json")
    raise FileNotFoundError(f"{path}: neither a folder with images/ and masks/ nor a COCO json")


def _window_start(rng: np.random.Generator, lo: int, hi: int, crop: int, size: int) -> int:
    """Where a ``crop``-long window starts on an axis of ``size`` whose content spans ``[lo, hi)``:
    anywhere inside the content when it is longer than the window, else anywhere covering all of it."""
    if hi - lo >= crop:
        return int(rng.integers(lo, hi - crop + 1))
    return int(np.clip(rng.integers(hi - crop, lo + 1), 0, size - crop))


def object_pixels(target: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``(ys, xs)`` of every foreground class present in a letterboxed target."""
    return {int(c): np.nonzero(target == c) for c in np.unique(target) if c not in (0, IGNORE)}


def _object_window(rng: np.random.Generator, pixels: dict[int, tuple[np.ndarray, np.ndarray]], crop: int,
                   size: int) -> tuple[int, int] | None:
    """The top-left corner of a ``crop`` window centred (give or take a quarter window) on a pixel
    of a class drawn uniformly from those present (``object_pixels``), so that thin and rare
    classes are seen as often as large ones; ``None`` when there is no foreground."""
    if not pixels:
        return None
    ys, xs = pixels[int(rng.choice(list(pixels)))]
    k = int(rng.integers(len(ys)))
    jitter = rng.integers(-(crop // 4), crop // 4 + 1, size=2)
    sx = int(np.clip(xs[k] - crop // 2 + jitter[0], 0, size - crop))
    sy = int(np.clip(ys[k] - crop // 2 + jitter[1], 0, size - crop))
    return sx, sy


class SegmentationDataset(torch.utils.data.Dataset):
    """Yields ``(image (3, s, s) float32, mask (s, s) int64)``: augmented (random crop, mirror, colour)
    when ``augment``, then letterboxed at ``input_size`` as served (the padding ``IGNORE``), then, with
    ``crop``, a ``crop x crop`` window of that input over the image's content: the network is fully
    convolutional, so it trains on windows at the serving scale and serves the whole input. With
    probability ``object_p`` a window is centred on an object (``_object_window``), else anywhere
    in the content: in sparse scenes most random windows hold background only. ``windows`` > 1 cuts
    that many windows from each image read (shapes ``(windows, 3, crop, crop)``, ``(windows, crop,
    crop)``), sharing the cost of decoding and augmenting it."""

    def __init__(self, data: SegmentationData, input_size: int, augment: bool, seed: int = 0,
                 crop: int | None = None, object_p: float = 0.0, windows: int = 1) -> None:
        if crop and crop > input_size:
            raise ValueError(f"crop {crop} is larger than the input {input_size}")
        if not 0.0 <= object_p <= 1.0:
            raise ValueError(f"object_p {object_p} is not a probability")
        if windows < 1 or (windows > 1 and not crop):
            raise ValueError("windows > 1 needs crop")
        self.data, self.size, self.augment, self.seed, self.crop = data, input_size, augment, seed, crop
        self.object_p, self.windows = object_p, windows
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.data.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.data.read(i)
        rng = np.random.default_rng([self.seed, self.epoch, i])
        if self.augment:
            image, mask = augment_segmentation(rng, image, mask)
        canvas, geo = letterbox(image, self.size)
        target, _ = letterbox_mask(mask, self.size)
        if not self.crop or self.crop >= self.size:
            return self._tensors(canvas, target)
        pixels = None
        images, targets = [], []
        for _ in range(self.windows):
            corner = None
            if rng.random() < self.object_p:
                pixels = object_pixels(target) if pixels is None else pixels
                corner = _object_window(rng, pixels, self.crop, self.size)
            if corner is None:
                x1, y1, x2, y2 = geo.content
                corner = (_window_start(rng, x1, x2, self.crop, self.size),
                          _window_start(rng, y1, y2, self.crop, self.size))
            sx, sy = corner
            images.append(canvas[sy:sy + self.crop, sx:sx + self.crop])
            targets.append(target[sy:sy + self.crop, sx:sx + self.crop])
        if self.windows == 1:
            return self._tensors(images[0], targets[0])
        return self._tensors(np.stack(images), np.stack(targets))

    @staticmethod
    def _tensors(canvas: np.ndarray, target: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(..., H, W, 3) uint8``, ``(..., H, W)`` → normalised ``(..., 3, H, W)``, int64 class ids."""
        flat = canvas.reshape(-1, *canvas.shape[-3:])
        x = to_tensor(flat, NORM_MEAN, NORM_STD).reshape(*canvas.shape[:-3], 3, *canvas.shape[-3:-1])
        return torch.from_numpy(x), torch.from_numpy(target.astype(np.int64))
