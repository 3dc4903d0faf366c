"""``make models``: rebuild the project's own models from scratch on synthetic data, then score them
on held-out data through the HTTP API and write their model cards next to them, all in ``--out``
(default ``models/synthetic``): the object detector, the segmenter and the three face models.
``models/`` itself holds the real pretrained models served by default (``make import-models``);
``SIGHTLINE_MODELS_DIR=models/synthetic:models`` serves these synthetic ones instead.

Seeds: training scenes 1, validation scenes 2, held-out test scenes 3 (never trained or tuned on);
the detector and the segmenter train on the same scenes (boxes and masks of the same objects).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

TRAIN_SEED, VAL_SEED, HELDOUT_SEED = 1, 2, 3


def _scenes(out: Path, count: int, seed: int) -> Path:
    from training.synth.__main__ import main as synth_main

    ann = out / "annotations.json"
    if not ann.exists() or len(json.loads(ann.read_text())["images"]) != count:
        synth_main(["scenes", "--out", str(out), "--count", str(count), "--seed", str(seed)])
    return out


# The bundled detector's recipe. Measured alternatives (same 6000 scenes, held-out seed unseen):
# 320 px, width 0.5, lr 2e-3, box weight 5, 12 epochs -> val mAP@0.5 0.872, mAP@[.5:.95] 0.530;
# 416 px, width 0.35, 7 epochs (same time budget) -> 0.823 / 0.482 after 6 of 7 epochs;
# 320 px, lr 3e-3, box weight 7.5, 13 epochs -> 0.906 / 0.574 (held-out 0.902 / 0.585);
# 320 px, lr 4e-3, box weight 10, 13 epochs (this recipe) -> 0.903 / 0.579 (held-out 0.905 / 0.593);
# the same weights served at the size chosen on validation (416) -> held-out 0.942 / 0.633.
DETECTOR_RECIPE = {"width": 0.5, "depth": 0.67, "resolution": 1.0, "expansion": 4, "lr": 4e-3, "box_weight": 10.0}


def build_detector(work: Path, models: Path, train_count: int, val_count: int, epochs: int) -> dict:
    from training.detect.export import export_detector
    from training.detect.input_size import tune_input_size
    from training.detect.train import TrainOptions, train

    train_dir = _scenes(work / "scenes-train", train_count, TRAIN_SEED)
    val_dir = _scenes(work / "scenes-val", val_count, VAL_SEED)
    started = time.time()
    train(TrainOptions(data=train_dir, val=val_dir, out=work / "detector-run", epochs=epochs, resume=True,
                       **DETECTOR_RECIPE))
    train_seconds = time.time() - started
    path, diff = export_detector(work / "detector-run" / "best.pt", models / "detector.onnx")
    print(f"exported {path}; ONNX Runtime vs PyTorch max abs diff {diff:.2e}")
    tune_input_size(path, val_dir)  # the serving size, chosen on validation scenes; recorded in the file
    return {"train_seconds_this_call": round(train_seconds), "parity_max_abs_diff": diff}


# The bundled segmenter's recipe (U-Net; see training/segment/model.py).
# The contracting path is the detector's backbone, started from the detector this build has just
# trained (models/synthetic/detector.onnx): MobileNetV2 at the detector's width, repeats and expansion.
# Served at 384 (perfect logits read back from 384 would score 0.992 on these scenes), trained on
# two 192 px windows per image read, half of them centred on an object of a class drawn uniformly.
SEGMENTER_RECIPE = {"encoder": "mobilenetv2", "width": round(16 * DETECTOR_RECIPE["width"]), "depth": 5,
                    "repeats": DETECTOR_RECIPE["depth"], "expansion": DETECTOR_RECIPE["expansion"],
                    "input_size": 384, "crop": 192, "windows": 2, "object_p": 0.5, "batch": 8, "lr": 3e-3,
                    "boundary_weight": 4.0}
SEGMENTER_HELDOUT = 300   # held-out scenes scored through POST /segment (the first of the held-out seed's)


def build_segmenter(work: Path, models: Path, train_count: int, val_count: int, epochs: int,
                    images: int | None) -> dict:
    """Train the U-Net on the training scenes' masks (the first ``images`` of them), its contracting path
    started from ``<models>/detector.onnx`` (the detector of this build), and export it."""
    from training.segment.export import export_segmenter
    from training.segment.input_size import tune_segmenter_size
    from training.segment.train import SegmentTrainOptions, train_segmenter

    detector = models / "detector.onnx"
    if not detector.exists():
        raise SystemExit(f"{detector}: the segmenter starts from the detector's backbone; build it first "
                         "(--tasks detection,segmentation) or copy a detector there")
    train_dir = _scenes(work / "scenes-train", train_count, TRAIN_SEED)
    val_dir = _scenes(work / "scenes-val", val_count, VAL_SEED)
    started = time.time()
    train_segmenter(SegmentTrainOptions(data=train_dir, val=val_dir, out=work / "segmenter-run", epochs=epochs,
                                        limit=images, resume=True, init_from=detector,
                                        **SEGMENTER_RECIPE))
    train_seconds = time.time() - started
    path, diff = export_segmenter(work / "segmenter-run" / "best.pt", models / "segmenter.onnx")
    print(f"exported {path}; ONNX Runtime vs PyTorch max abs diff {diff:.2e}")
    tune_segmenter_size(path, val_dir)  # the serving size, chosen on validation scenes; recorded in the file
    return {"train_seconds_this_call": round(train_seconds), "parity_max_abs_diff": diff,
            "initialised_from": str(detector)}


def heldout_segmenter(work: Path, models: Path, count: int) -> dict:
    from training.segment.heldout import evaluate_segmenter

    heldout_dir = _scenes(work / "scenes-heldout", count, HELDOUT_SEED)
    metrics = evaluate_segmenter(heldout_dir, models=models, limit=min(count, SEGMENTER_HELDOUT))
    print(json.dumps(metrics, indent=2))
    return metrics


def heldout_detector(work: Path, models: Path, count: int) -> dict:
    from training.detect.heldout import evaluate

    heldout_dir = _scenes(work / "scenes-heldout", count, HELDOUT_SEED)
    metrics = evaluate(heldout_dir, model=models / "detector.onnx")
    print(json.dumps(metrics, indent=2))
    return metrics


def write_card(models: Path, name: str, heldout: dict, extra: dict) -> Path:
    """``<models>/<name>.card.json``: what docs/models.md's model card is written from."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(models / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    card = {"file": f"{name}.onnx", "size_mb": round((models / f"{name}.onnx").stat().st_size / 1e6, 2),
            "version": meta["version"], "architecture": meta["architecture"], "training": meta["training"],
            "input_size": meta["input_size"], "input_size_search": meta.get("input_size_search"),
            "heldout": heldout, **extra}
    path = models / f"{name}.card.json"
    if path.exists():  # a --heldout-only run keeps what the training run recorded
        card = {**json.loads(path.read_text()), **{k: v for k, v in card.items() if v or k == "heldout"}}
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


def write_faces_card(models: Path, heldout: dict, extra: dict) -> Path:
    """``<models>/faces.card.json``: the three face models' architecture, training and held-out figures."""
    from training.onnx_export import file_metadata

    card: dict = {"heldout": heldout, **extra, "models": {}}
    for name in ("face_detector", "landmarks", "embedder"):
        meta = file_metadata(models / f"{name}.onnx")
        card["models"][name] = {"file": f"{name}.onnx", "size_mb": round((models / f"{name}.onnx").stat().st_size / 1e6, 2),
                                "version": meta["version"], "input_size": meta["input_size"],
                                "architecture": meta["architecture"], "training": meta["training"],
                                **({"verification": meta["verification"]} if "verification" in meta else {})}
    path = models / "faces.card.json"
    if path.exists():
        old = json.loads(path.read_text())
        card = {**old, **{k: v for k, v in card.items() if v or k == "heldout"}}
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    from training.faces.build import FaceBuild

    parser = argparse.ArgumentParser(prog="python -m training.build_models", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("models/synthetic"),
                        help="where the .onnx files and their cards go")
    parser.add_argument("--work", type=Path, default=Path("runs/build"), help="datasets and training runs")
    parser.add_argument("--train-scenes", type=int, default=6000)
    parser.add_argument("--val-scenes", type=int, default=300)
    parser.add_argument("--heldout-scenes", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=13)
    parser.add_argument("--heldout-only", action="store_true", help="only score the models already in --out")
    parser.add_argument("--tasks", default="detection,faces,segmentation",
                        help="comma-separated: detection, faces (faces start from the detector's checkpoint), "
                             "segmentation")
    seg = parser.add_argument_group("segmentation")
    seg.add_argument("--segment-epochs", type=int, default=5)
    seg.add_argument("--segment-images", type=int, default=5000, help="train on the first N training scenes")
    faces = parser.add_argument_group("faces")
    defaults = FaceBuild()
    for field in defaults.__dataclass_fields__:
        faces.add_argument(f"--faces-{field.replace('_', '-')}", type=int, default=getattr(defaults, field))
    args = parser.parse_args(argv)
    tasks = {t.strip() for t in args.tasks.split(",") if t.strip()}
    if not tasks or tasks - {"detection", "faces", "segmentation"}:
        parser.error("--tasks takes detection, faces and/or segmentation")
    args.out.mkdir(parents=True, exist_ok=True)
    if "detection" in tasks:
        extra = {} if args.heldout_only else build_detector(args.work, args.out, args.train_scenes,
                                                            args.val_scenes, args.epochs)
        metrics = heldout_detector(args.work, args.out, args.heldout_scenes)
        print(f"card: {write_card(args.out, 'detector', metrics, extra)}")
    if "faces" in tasks:
        from training.faces.build import build_faces, heldout_faces

        cfg = FaceBuild(**{f: getattr(args, f"faces_{f}") for f in defaults.__dataclass_fields__})
        if args.heldout_only:   # the build's own record, when this work folder holds one
            summary = args.work / "faces-build.json"
            extra = json.loads(summary.read_text()) if summary.exists() else {}
        else:
            extra = build_faces(args.work, args.out, cfg, args.work / "detector-run" / "best.pt")
        print(f"card: {write_faces_card(args.out, heldout_faces(args.work, args.out, cfg), extra)}")
    if "segmentation" in tasks:
        extra = {} if args.heldout_only else build_segmenter(args.work, args.out, args.train_scenes, args.val_scenes,
                                                             args.segment_epochs, args.segment_images)
        metrics = heldout_segmenter(args.work, args.out, args.heldout_scenes)
        print(f"card: {write_card(args.out, 'segmenter', metrics, extra)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
