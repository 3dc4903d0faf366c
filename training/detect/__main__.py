"""``python -m training.detect train|eval|export|tune-size``: the detector's command line.

  train      train on a COCO/YOLO dataset, validating each epoch (run dir: checkpoints, curves, history)
  export     write a checkpoint to ONNX with its metadata and check ONNX Runtime against PyTorch
  tune-size  pick an ONNX file's serving input size on a validation set (written into its metadata)
  eval    score a checkpoint, an ONNX file, or a running server (POST /detect) with pycocotools
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a detector")
    p.add_argument("--data", type=Path, required=True, help="training set: COCO json, folder with annotations.json, or YOLO folder")
    p.add_argument("--val", type=Path, required=True, help="validation set (COCO)")
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--box-weight", type=float, default=5.0, help="weight of the box (1 - CIoU) loss")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=float, default=0.5, help="channel multiplier")
    p.add_argument("--depth", type=float, default=0.67, help="repeat multiplier")
    p.add_argument("--resolution", type=float, default=1.0, help="input side multiplier over --base-size")
    p.add_argument("--base-size", type=int, default=320)
    p.add_argument("--expansion", type=int, default=4, help="bottleneck expansion cap (MobileNetV2: 6)")
    p.add_argument("--val-limit", type=int, default=200)
    p.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--init-from", type=Path, default=None,
                   help="checkpoint (.pt) or exported detector (.onnx) whose matching weights start the model")
    p.add_argument("--freeze", choices=["backbone", "none"], default="none")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--name", default="detector")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--task", default="detection")


def _add_tune_size(sub) -> None:
    p = sub.add_parser("tune-size", help="choose the serving input size on validation data")
    p.add_argument("--model", type=Path, required=True, help="an exported detector (.onnx), rewritten in place")
    p.add_argument("--val", type=Path, required=True, help="validation set (COCO); never the held-out set")
    p.add_argument("--sizes", default=None,
                   help="comma-separated sizes, multiples of 32 (default: training size to 1.3x it)")
    p.add_argument("--limit", type=int, default=None)


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="COCO mAP of a checkpoint, an ONNX model, or a server")
    p.add_argument("--data", type=Path, required=True, help="COCO set to score on (held out)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="a training checkpoint (PyTorch)")
    src.add_argument("--model", type=Path, help="an ONNX file, served in-process through the HTTP API")
    src.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="write the metrics here as JSON")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.detect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_export(sub)
    _add_eval(sub)
    _add_tune_size(sub)
    args = parser.parse_args(argv)
    if args.command == "train":
        from training.detect.train import TrainOptions, train

        opts = TrainOptions(**{k: v for k, v in vars(args).items() if k != "command"})
        result = train(opts)
        print(f"best val mAP@[.5:.95] {result['best_map50_95']:.4f}; checkpoints in {args.out}")
    elif args.command == "export":
        from training.detect.export import export_detector

        path, diff = export_detector(args.checkpoint, args.out, args.name, args.version, args.task)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB); ONNX Runtime vs PyTorch max abs diff {diff:.2e}")
        if diff > 1e-4:
            print("parity check failed (> 1e-4)", file=sys.stderr)
            return 1
    elif args.command == "tune-size":
        from training.detect.input_size import tune_input_size

        sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
        if sizes and any(s % 32 for s in sizes):
            parser.error("--sizes must be multiples of 32 (the largest stride)")
        tune_input_size(args.model, args.val, sizes, limit=args.limit)
    else:
        from training.detect.heldout import evaluate

        metrics = evaluate(args.data, checkpoint=args.checkpoint, model=args.model, url=args.url, limit=args.limit)
        from training.reports import print_and_write

        print_and_write(metrics, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
