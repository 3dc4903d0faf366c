"""Choose the serving input size of an exported detector (any detection task) on validation data.

Training crops at random and letterboxes the crop to the training size, so objects look larger in
training than in a whole photo letterboxed to the same size. Serving at a somewhat larger input than
the training one undoes that ("FixRes", Touvron et al. 2019) and recovers small objects. The detector
is fully convolutional and exported with free height and width, so the serving size is metadata: this
module scores candidate sizes with the serving code (decoder, ``ObjectDetector``, in-process) on a
validation set (never the held-out one) and writes the best into the file's ``input_size``, with the
whole search beside it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Sequence

import onnx

from training.onnx_export import file_metadata, set_metadata

METRIC = "map50_95"


def candidate_sizes(train_size: int, max_ratio: float = 1.3, step: int = 32) -> list[int]:
    """Sizes from the training size up to ``max_ratio`` times it, in multiples of the largest stride."""
    return list(range(train_size, int(train_size * max_ratio) + 1, step))


def with_input_size(src: Path, dst: Path, size: int, extra: dict[str, object] | None = None) -> Path:
    """Copy ``src`` to ``dst`` declaring ``size`` as its input size (graph input height and width
    made free if they were fixed), plus any ``extra`` metadata."""
    proto = onnx.load(str(src))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    for axis, name in ((2, "height"), (3, "width")):
        dims[axis].ClearField("dim_value")
        dims[axis].dim_param = name
    rows = proto.graph.output[0].type.tensor_type.shape.dim[1]
    rows.ClearField("dim_value")
    rows.dim_param = "rows"
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    set_metadata(proto, {"train_input_size": meta.get("train_input_size", meta["input_size"]), "input_size": size,
                         **(extra or {})})
    onnx.checker.check_model(proto)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(dst))
    return dst


def tune_input_size(model: Path, val: Path, sizes: Sequence[int] | None = None, out: Path | None = None,
                    limit: int | None = None) -> dict[str, object]:
    """Score ``model`` on ``val`` at each size with the serving code, write the best into ``out``
    (default: ``model`` itself) and return the search: chosen size and every score."""
    from training.detect.evaluate import evaluate_predictor
    from training.detect.heldout import serving_predictor

    meta = file_metadata(model)
    train_size = int(meta.get("train_input_size", meta["input_size"]))
    sizes = sorted(set(sizes or candidate_sizes(train_size)))
    scores: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="sightline-size-") as tmp:
        for size in sizes:
            trial = with_input_size(model, Path(tmp) / str(size) / Path(model).name, size)
            metrics = evaluate_predictor(serving_predictor(trial), _coco(val), limit=limit)
            scores[str(size)] = {k: round(float(metrics[k]), 4) for k in ("map50", METRIC, "map_small", "map_large")}
            print(f"input {size}: val mAP@0.5 {metrics['map50']:.4f} mAP@[.5:.95] {metrics[METRIC]:.4f}", flush=True)
    # the best score; among equals the smaller (cheaper) size
    best = max(sizes, key=lambda s: (scores[str(s)][METRIC], -s))
    search = {"train_input_size": train_size, "chosen": best, "metric": f"val {METRIC}",
              "val_images": limit or len(json.loads(_coco(val).read_text())["images"]), "scores": scores}
    with_input_size(model, out or model, best, {"input_size_search": search})
    print(f"serving input size {best} (trained at {train_size})")
    return search


def _coco(data: Path) -> Path:
    data = Path(data)
    return data / "annotations.json" if data.is_dir() else data
