"""Choose the serving input size of an exported detector (any detection task) on validation data:
mAP@[.5:.95] through the serving decoder and ``ObjectDetector`` in-process, at each candidate size
(the method and its reason: ``training.input_size``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from training.input_size import search_input_size

METRIC = "map50_95"
OUTPUT_AXES = {1: "rows"}   # (B, rows, 5 + classes): one row per anchor, so as many as the input size gives


def tune_input_size(model: Path, val: Path, sizes: Sequence[int] | None = None, out: Path | None = None,
                    limit: int | None = None) -> dict[str, object]:
    """Score ``model`` on ``val`` at each size with the serving code, write the best into ``out``
    (default: ``model`` itself) and return the search: chosen size and every score."""
    from training.detect.evaluate import evaluate_predictor
    from training.detect.heldout import serving_predictor

    def score(trial: Path) -> dict[str, float]:
        metrics = evaluate_predictor(serving_predictor(trial), _coco(val), limit=limit)
        return {k: metrics[k] for k in ("map50", METRIC, "map_small", "map_large")}

    images = limit or len(json.loads(_coco(val).read_text())["images"])
    return search_input_size(model, score, METRIC, sizes, out, output_axes=OUTPUT_AXES,
                             describe={"val_images": images})


def _coco(data: Path) -> Path:
    data = Path(data)
    return data / "annotations.json" if data.is_dir() else data
