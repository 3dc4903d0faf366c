"""COCO mAP with pycocotools (never by hand), over any predictor that maps an RGB image to
:class:`app.vision.postprocess.Detections`, so training's validation, the exported ONNX model and
the HTTP API are all scored by the same code."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from app.vision.postprocess import Detections

EVAL_CONF = 0.001  # score threshold for mAP (low, as COCO evaluation expects ranked lists)


def coco_results(image_id: int, det: Detections, category_ids: list[int]) -> list[dict]:
    """Detections of one image as COCO result dicts (bbox ``[x, y, w, h]``)."""
    out = []
    for box, score, cls in zip(det.boxes, det.scores, det.class_ids):
        x1, y1, x2, y2 = (float(v) for v in box)
        out.append({"image_id": int(image_id), "category_id": int(category_ids[int(cls)]),
                    "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    return out


def coco_map(gt: COCO, results: list[dict], image_ids: Iterable[int] | None = None) -> dict[str, float]:
    """``{"map50", "map50_95", "map_small", ...}`` of ``results`` against ``gt`` (pycocotools)."""
    if not results:
        return {"map50_95": 0.0, "map50": 0.0, "map75": 0.0, "map_small": 0.0, "map_medium": 0.0,
                "map_large": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = [max(0.0, float(v)) for v in ev.stats]
    return {"map50_95": s[0], "map50": s[1], "map75": s[2], "map_small": s[3], "map_medium": s[4],
            "map_large": s[5]}


def load_gt(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def evaluate_predictor(predict: Callable[[Path], Detections], coco_json: Path, images_dir: Path | None = None,
                       limit: int | None = None) -> dict[str, float]:
    """Run ``predict`` on each image of a COCO set and score it."""
    gt = load_gt(coco_json)
    from training.detect.data import images_root

    images_dir = Path(images_dir) if images_dir else images_root(Path(coco_json))
    category_ids = sorted(gt.getCatIds())
    ids = sorted(gt.getImgIds())[:limit]
    results: list[dict] = []
    for image_id in ids:
        info = gt.loadImgs(image_id)[0]
        results += coco_results(image_id, predict(images_dir / info["file_name"]), category_ids)
    return coco_map(gt, results, ids)


def write_results(path: Path, metrics: dict[str, float]) -> None:
    Path(path).write_text(json.dumps({k: round(float(v), 4) if isinstance(v, (float, np.floating)) else v
                                      for k, v in metrics.items()}, indent=2))
