"""Detection datasets in the formats users bring, written as the COCO layout ``train`` reads
(``python -m training.detect convert``): ``OUT/annotations.json`` and ``OUT/images/``.

- Ultralytics YOLO: a ``data.yaml`` (``path``, ``train``/``val``/``test`` as folders, lists of
  folders or ``.txt`` lists of images, ``names`` as a list or an ``id: name`` map), or a folder with
  ``images/`` (or ``images/<split>/``) and ``labels/``. An image's labels are at its path with the
  last ``images`` folder replaced by ``labels`` and the suffix by ``.txt``; each line is ``class cx
  cy w h`` normalised to 0..1, or ``class x1 y1 x2 y2 ...`` (a segmentation polygon, whose extent is
  the box, as Ultralytics reads it). No label file: an image without objects.
- Pascal VOC: a folder with ``Annotations/*.xml`` and ``JPEGImages/`` (the VOCdevkit layout, splits
  from ``ImageSets/Main/<split>.txt``), or ``.xml`` files beside their images (labelImg, CVAT).
  VOC's corners are 1-based pixel indices, both ends inside the box: ``(xmin, ymin, xmax, ymax)``
  becomes ``(xmin - 1, ymin - 1, xmax, ymax)`` in continuous pixels (as Detectron2 reads VOC).
- COCO: a json whose images are elsewhere (``--images``, e.g. ``train2017/``), written to the layout.

Boxes are ``(N, 4) float32 xyxy`` in pixels of the image as decoded (EXIF orientation applied, as
``cv2.imread`` does in training). Class order: ``names`` given, else the dataset's own list, else
(VOC) every name in the folder's annotations, sorted, so that separately converted splits agree.
The data.yaml reader understands the subset Ultralytics' files use (top-level keys, ``names`` as a
block or inline list or map); pass ``names`` for anything else.
"""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.detect.data import IMAGE_SUFFIXES, images_root, load_coco


class FormatError(ValueError):
    """A dataset that cannot be read as the format named."""


@dataclass
class Item:
    """One image: where it is, its name inside ``OUT/images``, its size and its boxes."""

    path: Path
    name: str                 # relative file_name in the COCO file
    width: int
    height: int
    boxes: np.ndarray         # (N, 4) float32 xyxy, pixels
    labels: np.ndarray        # (N,) int64, index into the class names


@dataclass
class Dataset:
    items: list[Item]
    class_names: list[str]
    notes: list[str] = field(default_factory=list)   # what was skipped or adjusted, for the summary


# ---- image size as decoded ----------------------------------------------------------------------

def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of the image as decoded with its EXIF orientation applied (what
    ``cv2.imread`` returns), read from the header only."""
    from PIL import Image

    with Image.open(path) as img:
        w, h = img.size
        try:
            orientation = img.getexif().get(0x0112, 1)
        except Exception:  # noqa: BLE001 - a broken EXIF block: the stored orientation
            orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


# ---- Ultralytics YOLO ---------------------------------------------------------------------------

def _scalar(text: str) -> object:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text.startswith("[") and text.endswith("]"):
        return [_scalar(t) for t in _split_inline(text[1:-1])]
    if text.startswith("{") and text.endswith("}"):
        pairs = [t.split(":", 1) for t in _split_inline(text[1:-1])]
        return {_scalar(k): _scalar(v) for k, v in pairs}
    try:
        return int(text)
    except ValueError:
        return text


def _split_inline(text: str) -> list[str]:
    parts, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    return [p for p in (*parts, cur) if p.strip()]


def _strip_comment(line: str) -> str:
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line.rstrip()


def read_data_yaml(path: Path) -> dict:
    """The top-level keys of an Ultralytics ``data.yaml``: scalars, inline lists, and block lists or
    maps under a key (``names:`` then ``  0: person`` or ``  - person``); other blocks (a
    ``download:`` script) are skipped."""
    doc: dict[str, object] = {}
    key = None
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = _strip_comment(raw)
        if not line.strip():
            continue
        if not line[0].isspace():
            key, _, value = line.partition(":")
            key = key.strip()
            value = value.strip()
            doc[key] = _scalar(value) if value and value not in ("|", ">", "|-", ">-") else None
            if value in ("|", ">", "|-", ">-"):
                key = None      # a block scalar: its lines are not ours to read
            continue
        if key is None:
            continue
        item = line.strip()
        if item.startswith("- "):
            current = doc.get(key) if isinstance(doc.get(key), list) else []
            doc[key] = [*current, _scalar(item[2:])]
        elif ":" in item:
            k, _, v = item.partition(":")
            current = doc.get(key) if isinstance(doc.get(key), dict) else {}
            doc[key] = {**current, _scalar(k): _scalar(v)}
    return doc


def _names_of(value: object, where: Path) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, dict):
        ids = sorted(int(k) for k in value)
        if ids != list(range(len(ids))):
            raise FormatError(f"{where}: names' ids must be 0..{len(ids) - 1}, got {ids}")
        return [str(value.get(i, value.get(str(i)))) for i in ids]
    raise FormatError(f"{where}: no class names (give names: in it, or --names)")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder of the path becomes ``labels``, the suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")       # no images/ folder: the label file sits beside the image


def _yolo_rows(path: Path, width: int, height: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    boxes, labels = [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        values = line.split()
        if not values:
            continue
        try:
            cls, coords = int(float(values[0])), [float(v) for v in values[1:]]
        except ValueError as exc:
            raise FormatError(f"{path}:{number}: not numbers: {line!r}") from exc
        if not 0 <= cls < classes:
            raise FormatError(f"{path}:{number}: class {cls} is not one of the {classes} names")
        if len(coords) == 4:
            cx, cy, w, h = coords
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        elif len(coords) >= 6 and len(coords) % 2 == 0:       # a polygon: its extent
            xs, ys = coords[0::2], coords[1::2]
            x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        else:
            raise FormatError(f"{path}:{number}: expected 'class cx cy w h' or a polygon, got {line!r}")
        boxes.append([x1 * width, y1 * height, x2 * width, y2 * height])
        labels.append(cls)
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)


def _list_file(path: Path, root: Path) -> list[Path]:
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            p = Path(line.strip())
            out.append(p if p.is_absolute() else (path.parent / p if line.startswith("./") else root / p))
    return out


def read_yolo(source: Path, split: str | None = None, names: list[str] | None = None) -> Dataset:
    """An Ultralytics YOLO dataset (see the module's docstring)."""
    source = Path(source)
    if source.is_file():
        doc = read_data_yaml(source)
        if split is None:
            splits = ", ".join(k for k in ("train", "val", "test") if doc.get(k))
            raise FormatError(f"{source}: give --split (one of {splits})")
        if not doc.get(split):
            raise FormatError(f"{source}: no {split!r} entry")
        base = Path(str(doc["path"])) if doc.get("path") else source.parent
        root = next((r for r in (source.parent / base, Path.cwd() / base) if r.is_dir()), source.parent / base)
        entries = doc[split] if isinstance(doc[split], list) else [doc[split]]
        images: list[tuple[Path, Path]] = []       # (image, the folder its name is relative to)
        for entry in entries:
            where = Path(str(entry)) if Path(str(entry)).is_absolute() else root / str(entry)
            if where.is_dir():
                images += [(p, where) for p in _images_in(where)]
            elif where.is_file() and where.suffix == ".txt":
                images += [(p, root) for p in _list_file(where, root)]
            else:
                raise FormatError(f"{source}: {split} entry {entry!r} is neither a folder nor a .txt list ({where})")
        class_names = names or _names_of(doc.get("names"), source)
    else:
        folder = source / "images" / split if split else source / "images"
        if not folder.is_dir():
            raise FormatError(f"{source}: no {folder.relative_to(source)}/ folder (a YOLO folder holds images/ "
                              "and labels/, or give its data.yaml)")
        images = [(p, folder) for p in _images_in(folder)]
        if names:
            class_names = names
        elif (source / "classes.txt").is_file():
            class_names = [n.strip() for n in (source / "classes.txt").read_text().splitlines() if n.strip()]
        elif (source / "data.yaml").is_file():
            class_names = _names_of(read_data_yaml(source / "data.yaml").get("names"), source / "data.yaml")
        else:
            raise FormatError(f"{source}: no class names (classes.txt, data.yaml, or --names)")
    items, unlabelled = [], 0
    for image, base in images:
        if not image.is_file():
            raise FormatError(f"{image}: listed but missing")
        width, height = image_size(image)
        labels_file = label_path(image)
        if labels_file.is_file():
            boxes, labels = _yolo_rows(labels_file, width, height, len(class_names))
        else:
            boxes, labels = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
            unlabelled += 1
        items.append(Item(image, image.relative_to(base).as_posix(), width, height, boxes, labels))
    notes = [f"{unlabelled} images without a label file (no objects)"] if unlabelled else []
    return Dataset(items, list(class_names), notes)


# ---- Pascal VOC ---------------------------------------------------------------------------------

def _voc_layout(source: Path) -> tuple[Path, Path]:
    """(folder of the .xml files, folder of the images)."""
    if (source / "Annotations").is_dir():
        return source / "Annotations", source / "JPEGImages" if (source / "JPEGImages").is_dir() else source
    return source, source


def _parse_voc(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise FormatError(f"{path}: not XML ({exc})") from exc


def read_voc(source: Path, split: str | None = None, names: list[str] | None = None,
             skip_difficult: bool = False) -> Dataset:
    """A Pascal VOC dataset (see the module's docstring)."""
    source = Path(source)
    if not source.is_dir():
        raise FormatError(f"{source}: not a folder (VOC: Annotations/ and JPEGImages/, or .xml beside images)")
    ann_dir, img_dir = _voc_layout(source)
    every = sorted(ann_dir.glob("*.xml"))
    if not every:
        raise FormatError(f"{ann_dir}: no .xml annotations")
    if split:
        listing = source / "ImageSets" / "Main" / f"{split}.txt"
        if not listing.is_file():
            raise FormatError(f"{source}: no ImageSets/Main/{split}.txt")
        ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
        files = [ann_dir / f"{i}.xml" for i in ids]
    else:
        files = every
    roots = {f: _parse_voc(f) for f in files}
    if names:
        class_names = list(names)
    elif (source / "classes.txt").is_file():
        class_names = [n.strip() for n in (source / "classes.txt").read_text().splitlines() if n.strip()]
    else:   # every name in the folder, not only this split's, so that train and val agree
        class_names = sorted({(o.findtext("name") or "").strip() for f in every
                              for o in (roots[f] if f in roots else _parse_voc(f)).iter("object")} - {""})
    index = {n: i for i, n in enumerate(class_names)}
    items, difficult, resized = [], 0, 0
    for f, root in roots.items():
        filename = (root.findtext("filename") or "").strip()
        candidates = [img_dir / filename] if filename else []
        candidates += [img_dir / f"{f.stem}{s}" for s in (".jpg", ".jpeg", ".png", ".JPG", ".bmp", ".webp")]
        image = next((c for c in candidates if c.is_file()), None)
        if image is None:
            raise FormatError(f"{f}: its image {filename or f.stem} is not in {img_dir}")
        width, height = image_size(image)
        try:
            stated = (int(float(root.findtext("size/width"))), int(float(root.findtext("size/height"))))
        except (TypeError, ValueError):
            stated = (0, 0)                                   # no size given: nothing to compare
        resized += stated != (0, 0) and stated != (width, height)
        boxes, labels = [], []
        for obj in root.iter("object"):
            name = (obj.findtext("name") or "").strip()
            if name not in index:
                raise FormatError(f"{f}: class {name!r} is not one of the names {class_names}")
            if skip_difficult and (obj.findtext("difficult") or "0").strip() == "1":
                difficult += 1
                continue
            box = obj.find("bndbox")
            if box is None:
                raise FormatError(f"{f}: an object {name!r} without a bndbox")
            try:
                xmin, ymin, xmax, ymax = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (TypeError, ValueError) as exc:
                raise FormatError(f"{f}: object {name!r}: bndbox needs numeric xmin, ymin, xmax, ymax") from exc
            boxes.append([xmin - 1, ymin - 1, xmax, ymax])    # 1-based inclusive corners → continuous pixels
            labels.append(index[name])
        items.append(Item(image, image.relative_to(img_dir).as_posix(), width, height,
                          np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)))
    notes = []
    if difficult:
        notes.append(f"{difficult} difficult objects left out")
    if resized:
        notes.append(f"{resized} annotations give a size other than their image's (the image's is used)")
    return Dataset(items, class_names, notes)


# ---- COCO elsewhere -----------------------------------------------------------------------------

def read_coco(source: Path, images: Path | None = None) -> Dataset:
    """A COCO json whose ``file_name``s start at ``images`` (default: as ``train`` looks for them)."""
    source = Path(source)
    if not source.is_file():
        raise FormatError(f"{source}: no such COCO json")
    base = Path(images) if images else images_root(source)
    data = load_coco(source, base)
    items = []
    for s in data.samples:
        if not s.path.is_file():
            raise FormatError(f"{s.path}: missing (give --images, the folder the file_names start from)")
        items.append(Item(s.path, s.path.relative_to(base).as_posix(), s.width, s.height, s.boxes, s.labels))
    return Dataset(items, data.class_names)


# ---- writing ------------------------------------------------------------------------------------

def _place(src: Path, dst: Path, link: bool) -> str:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        if dst.samefile(src):
            return "linked"
        dst.unlink()
    if link:
        try:
            os.link(src, dst)
            return "linked"
        except OSError:
            pass
    shutil.copy2(src, dst)
    return "copied"


def write_coco(dataset: Dataset, out: Path, link: bool = True) -> dict:
    """``out/annotations.json`` (categories 1..C in class order, boxes ``[x, y, w, h]`` rounded to
    1/1000 px) and the images under ``out/images/`` (hard links where possible); returns the counts."""
    out = Path(out)
    names = [it.name for it in dataset.items]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise FormatError(f"two images would both be images/{dup}; convert their folders separately")
    images, annotations, how = [], [], set()
    degenerate = 0
    for image_id, it in enumerate(dataset.items, 1):
        how.add(_place(it.path, out / "images" / it.name, link))
        images.append({"id": image_id, "file_name": it.name, "width": it.width, "height": it.height})
        for box, label in zip(it.boxes.tolist(), it.labels.tolist()):
            x1, y1, x2, y2 = (round(v, 3) for v in box)
            if x2 <= x1 or y2 <= y1:
                degenerate += 1
                continue
            w, h = round(x2 - x1, 3), round(y2 - y1, 3)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                                "bbox": [x1, y1, w, h], "area": round(w * h, 3), "iscrowd": 0})
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(dataset.class_names)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "annotations.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                      "categories": categories}))
    if degenerate:
        dataset.notes.append(f"{degenerate} boxes of zero width or height left out")
    return {"images": len(images), "empty": sum(len(it.boxes) == 0 for it in dataset.items),
            "boxes": len(annotations), "classes": dataset.class_names, "placed": "/".join(sorted(how)) or "none"}


def convert(fmt: str, source: Path, out: Path, split: str | None = None, names: list[str] | None = None,
            images: Path | None = None, skip_difficult: bool = False, link: bool = True) -> str:
    """Read ``source`` as ``fmt`` (yolo, voc, coco), write the COCO layout to ``out``; a summary line."""
    if fmt == "yolo":
        dataset = read_yolo(source, split, names)
    elif fmt == "voc":
        dataset = read_voc(source, split, names, skip_difficult)
    elif fmt == "coco":
        dataset = read_coco(source, images)
    else:
        raise FormatError(f"unknown format {fmt!r} (yolo, voc, coco)")
    if not dataset.items:
        raise FormatError(f"{source}: no images found")
    counts = write_coco(dataset, out, link)
    line = (f"wrote {Path(out) / 'annotations.json'}: {counts['images']} images ({counts['empty']} without objects), "
            f"{counts['boxes']} boxes, {len(counts['classes'])} classes {counts['classes']}; images {counts['placed']} "
            f"into {Path(out) / 'images'}")
    return "\n".join([line, *(f"  note: {n}" for n in dataset.notes)])
