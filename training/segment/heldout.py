"""The segmenter scored the way users reach it: every held-out image POSTed to ``/segment`` (in
process, or a running server with ``url``), the returned PNG mask decoded and compared with the
ground truth at the original resolution; IoU pooled over all pixels per class."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import cv2
import numpy as np

from training.detect.heldout import api_client
from training.segment.data import load_segmentation
from training.segment.metrics import confusion, summarize


def decode_mask_png(data: bytes) -> np.ndarray:
    mask = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if mask is None or mask.ndim != 2:
        raise ValueError("the mask is not a single-channel PNG")
    return mask


def evaluate_segmenter(data: Path, models: Path | None = None, url: str | None = None,
                       limit: int | None = None) -> dict[str, object]:
    dataset = load_segmentation(data)
    samples = dataset.samples[:limit] if limit else dataset.samples
    names = dataset.class_names
    matrix = np.zeros((len(names), len(names)), np.int64)
    started = time.time()
    with api_client(models, url) as client:
        for i, s in enumerate(samples):
            _, truth = dataset.read(i)
            r = client.post("/segment", files={"image": (s.image.name, s.image.read_bytes(), "image/png")})
            if r.status_code != 200:
                raise RuntimeError(f"/segment {s.image}: {r.status_code} {r.text}")
            body = r.json()
            served = [c["label"] for c in body["classes"]]
            if set(served) - set(names):
                raise RuntimeError(f"the server's classes {served} are not the data set's {names}")
            matrix += confusion(truth, decode_mask_png(base64.b64decode(body["mask"]["data"])), len(names))
    return {**summarize(matrix, names), "images": len(samples), "seconds": round(time.time() - started, 1),
            "source": url or str(models)}
