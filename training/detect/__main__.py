"""``python -m training.detect train|convert|eval|export|tune-size``: the detector's command line.

  train      train on a COCO/YOLO dataset, validating each epoch (run dir: checkpoints, curves, history);
             --init-from starts from a checkpoint, a Sightline detector or a converted real model
             (--backbone mobilenetv1 --init-from models/face_detector.onnx: face-api's SSD MobileNetV1)
  convert    write an Ultralytics YOLO, Pascal VOC or COCO dataset as the COCO layout train reads
  export     write a checkpoint to ONNX with its metadata and check ONNX Runtime against PyTorch
  tune-size  pick an ONNX file's serving input size on a validation set (written into its metadata)
  eval    score a checkpoint, an ONNX file, or a running server (POST /detect) with pycocotools
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BACKBONES = ("mobilenetv2", "mobilenetv1")   # training.detect.model.BACKBONES, without importing torch here


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
    p.add_argument("--backbone", choices=BACKBONES, default="mobilenetv2",
                   help="mobilenetv2 (default), or mobilenetv1: the trunk of face-api's SSD "
                        "(models/face_detector.onnx), whose 27 convolutions --init-from can copy")
    p.add_argument("--width", type=float, default=None,
                   help="channel multiplier (default 0.5 for mobilenetv2, 1.0 for mobilenetv1)")
    p.add_argument("--depth", type=float, default=0.67, help="repeat multiplier (mobilenetv2)")
    p.add_argument("--resolution", type=float, default=1.0, help="input side multiplier over --base-size")
    p.add_argument("--base-size", type=int, default=320)
    p.add_argument("--expansion", type=int, default=4, help="bottleneck expansion cap (mobilenetv2; MobileNetV2: 6)")
    p.add_argument("--val-limit", type=int, default=200)
    p.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--init-from", type=Path, default=None,
                   help="checkpoint (.pt), or ONNX file (a Sightline detector, or models/face_detector.onnx "
                        "with --backbone mobilenetv1) whose matching weights start the model; it prints what it kept")
    p.add_argument("--freeze", choices=["backbone", "none"], default="none")


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="write a YOLO / VOC / COCO dataset as DIR/annotations.json + DIR/images/")
    p.add_argument("--from", dest="fmt", choices=["yolo", "voc", "coco"], required=True,
                   help="yolo: a data.yaml, or a folder with images/ and labels/; voc: a folder with Annotations/ "
                        "and JPEGImages/ (or .xml files beside the images); coco: a json (with --images)")
    p.add_argument("source", type=Path)
    p.add_argument("--out", type=Path, required=True, help="folder to write (annotations.json, images/)")
    p.add_argument("--split", default=None,
                   help="yolo: the data.yaml key (train, val, test) or images/<split>; voc: ImageSets/Main/<split>.txt")
    p.add_argument("--names", default=None,
                   help="class names, comma-separated, in class-id order (default: data.yaml, classes.txt, or "
                        "for VOC every name in the folder's annotations, sorted)")
    p.add_argument("--images", type=Path, default=None, help="coco: the folder its file_names start from")
    p.add_argument("--skip-difficult", action="store_true", help="voc: leave out objects marked difficult")
    p.add_argument("--copy", action="store_true", help="copy the images (default: hard links where possible)")


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
    _add_convert(sub)
    _add_export(sub)
    _add_eval(sub)
    _add_tune_size(sub)
    args = parser.parse_args(argv)
    if args.command == "train":
        from training.detect.train import DatasetMismatch, TrainOptions, train
        from training.detect.transfer import TransferError

        opts = TrainOptions(**{k: v for k, v in vars(args).items() if k != "command"})
        try:
            result = train(opts)
        except (TransferError, DatasetMismatch, FileNotFoundError) as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 2
        print(f"best val mAP@[.5:.95] {result['best_map50_95']:.4f}; checkpoints in {args.out}")
    elif args.command == "convert":
        from training.detect.formats import FormatError, convert

        names = [n.strip() for n in args.names.split(",") if n.strip()] if args.names else None
        try:
            summary = convert(args.fmt, args.source, args.out, split=args.split, names=names, images=args.images,
                              skip_difficult=args.skip_difficult, link=not args.copy)
        except (FormatError, FileNotFoundError) as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 2
        print(summary)
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
