"""Face datasets: COCO keypoints json with an ``identity`` per face (what ``python -m training.synth
faces`` writes; real sets converted to it), and the in-memory crops the landmark regressor and the
embedder train on.

Crops are cut once (decoding each photo once) and augmented from memory afterwards:
- landmark crops: a square of ``PRE_MARGIN`` x the box's longer side around each face, at
  ``PRE_SIZE`` px, with the transform from photo pixels to crop pixels kept, so that a jittered
  box can be re-cut from it exactly;
- aligned crops: each face aligned on the template by its landmarks, on a canvas ``PAD`` px
  larger on every side than the embedder's input, so that a jittered alignment stays filled.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from app.vision.align import alignment_transform, box_crop_transform, warp
from app.vision.letterbox import to_tensor
from training.detect.data import read_rgb

PRE_SIZE, PRE_MARGIN = 128, 2.0
NORM_MEAN, NORM_STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)   # of x / 255, for the landmark model and the embedder


@dataclass(frozen=True)
class FaceSample:
    path: Path
    image_id: int
    box: np.ndarray         # (4,) float32 xyxy, photo pixels
    landmarks: np.ndarray   # (5, 2) float32, photo pixels
    identity: str | None    # None: a stranger in somebody else's photo


@dataclass
class FaceSet:
    samples: list[FaceSample]
    coco_path: Path

    def identities(self) -> list[str]:
        return sorted({s.identity for s in self.samples if s.identity is not None})

    def subjects(self) -> list[FaceSample]:
        """The faces whose identity is known (strangers left out)."""
        return [s for s in self.samples if s.identity is not None]


def load_faces(root: Path) -> FaceSet:
    """Read ``root/annotations.json`` (or a json path): COCO keypoints, 5 points per face."""
    path = Path(root)
    coco = path if path.is_file() else path / "annotations.json"
    doc = json.loads(coco.read_text())
    images = {img["id"]: img for img in doc["images"]}
    samples = []
    for ann in doc["annotations"]:
        kp = np.asarray(ann.get("keypoints", []), dtype=np.float32).reshape(-1, 3)
        if len(kp) != 5 or (kp[:, 2] == 0).any():
            continue   # a face without its 5 landmarks trains the detector only
        x, y, w, h = ann["bbox"]
        img = images[ann["image_id"]]
        samples.append(FaceSample(coco.parent / img["file_name"], ann["image_id"],
                                  np.array([x, y, x + w, y + h], dtype=np.float32), kp[:, :2].copy(),
                                  ann.get("identity")))
    return FaceSet(samples, coco)


def _by_image(samples: Iterable[FaceSample]) -> dict[Path, list[tuple[int, FaceSample]]]:
    groups: dict[Path, list[tuple[int, FaceSample]]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(s.path, []).append((i, s))
    return groups


def cut_crops(samples: list[FaceSample], cut: Callable[[np.ndarray, FaceSample], np.ndarray],
              workers: int = 2) -> list[np.ndarray]:
    """``cut(photo, sample)`` for every sample, decoding each photo once (threads: OpenCV frees the GIL)."""
    out: list[np.ndarray | None] = [None] * len(samples)

    def one(item: tuple[Path, list[tuple[int, FaceSample]]]) -> None:
        photo = read_rgb(item[0])
        for i, s in item[1]:
            out[i] = cut(photo, s)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, _by_image(samples).items()))
    return out  # type: ignore[return-value]


def landmark_precrop(photo: np.ndarray, s: FaceSample) -> np.ndarray:
    return warp(photo, box_crop_transform(s.box, PRE_SIZE, PRE_MARGIN), PRE_SIZE)


def aligned_canvas_transform(landmarks: np.ndarray, size: int, pad: int) -> np.ndarray:
    """Photo → canvas of ``size + 2 pad`` px whose centre ``size`` px are the aligned face."""
    m = alignment_transform(landmarks, size)
    m[:, 2] += pad
    return m


def to_input(crops: np.ndarray) -> torch.Tensor:
    """``(B, S, S, 3) uint8`` → normalised ``(B, 3, S, S) float32``: the serving preprocessing, shared."""
    return torch.from_numpy(to_tensor(crops, NORM_MEAN, NORM_STD))


def batches(indices: np.ndarray, batch: int) -> Iterator[np.ndarray]:
    for start in range(0, len(indices), batch):
        yield indices[start:start + batch]
