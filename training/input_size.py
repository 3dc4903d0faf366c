"""Choose an exported model's serving input size on validation data (detectors and the segmenter).

Training crops at random and letterboxes the crop to the training size, so objects look larger in
training than in a whole photo letterboxed to the same size. Serving at a somewhat larger input than
the training one undoes that ("FixRes", Touvron et al. 2019) and recovers small objects. The models
are fully convolutional and exported with free height and width, so the serving size is metadata:
``search_input_size`` scores candidate sizes with the serving code on a validation set (never the
held-out one) and writes the best into the file's ``input_size``, with the whole search beside it.
The task modules (``training.detect.input_size``, ``training.segment.input_size``) say how to score.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import onnx

from training.onnx_export import file_metadata, set_metadata


def candidate_sizes(train_size: int, max_ratio: float = 1.3, step: int = 32) -> list[int]:
    """Sizes from the training size up to ``max_ratio`` times it, in multiples of the largest stride."""
    return list(range(train_size, int(train_size * max_ratio) + 1, step))


def with_input_size(src: Path, dst: Path, size: int, extra: dict[str, object] | None = None,
                    output_axes: dict[int, str] | None = None) -> Path:
    """Copy ``src`` to ``dst`` declaring ``size`` as its input size (graph input height and width
    made free if they were fixed; likewise the first output's ``output_axes``, the axes whose length
    follows the input size, with their names), plus any ``extra`` metadata."""
    proto = onnx.load(str(src))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    for axis, name in ((2, "height"), (3, "width")):
        dims[axis].ClearField("dim_value")
        dims[axis].dim_param = name
    out_dims = proto.graph.output[0].type.tensor_type.shape.dim
    for axis, name in (output_axes or {}).items():
        out_dims[axis].ClearField("dim_value")
        out_dims[axis].dim_param = name
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    set_metadata(proto, {"train_input_size": meta.get("train_input_size", meta["input_size"]), "input_size": size,
                         **(extra or {})})
    onnx.checker.check_model(proto)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(dst))
    return dst


def search_input_size(model: Path, score: Callable[[Path], dict[str, float]], metric: str,
                      sizes: Sequence[int] | None = None, out: Path | None = None, max_ratio: float = 1.3,
                      output_axes: dict[int, str] | None = None, describe: dict[str, object] | None = None
                      ) -> dict[str, object]:
    """Score ``model`` at each size (``score(trial file)`` → figures holding ``metric``), write the best
    into ``out`` (default: ``model`` itself) and return the search: chosen size and every score.
    Among equal scores the smaller (cheaper) size wins."""
    meta = file_metadata(model)
    train_size = int(meta.get("train_input_size", meta["input_size"]))
    sizes = sorted(set(sizes or candidate_sizes(train_size, max_ratio)))
    scores: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="sightline-size-") as tmp:
        for size in sizes:
            trial = with_input_size(model, Path(tmp) / str(size) / Path(model).name, size, output_axes=output_axes)
            scores[str(size)] = {k: round(float(v), 4) for k, v in score(trial).items()}
            print(f"input {size}: " + " ".join(f"{k} {v:.4f}" for k, v in scores[str(size)].items()), flush=True)
    best = max(sizes, key=lambda s: (scores[str(s)][metric], -s))
    search = {"train_input_size": train_size, "chosen": best, "metric": f"val {metric}", **(describe or {}),
              "scores": scores}
    with_input_size(model, out or model, best, {"input_size_search": search}, output_axes=output_axes)
    print(f"serving input size {best} (trained at {train_size})")
    return search
