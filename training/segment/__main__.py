"""``python -m training.segment train|eval|export|tune-size``: the U-Net's command line.

  train   train on a segmentation set (a folder of images/ and class-id masks/, or a COCO json with
          polygon/RLE segmentations), validating mIoU each epoch (run dir: checkpoints, curves, history)
  export  write a checkpoint to ONNX with its metadata and check ONNX Runtime against PyTorch
  tune-size  pick an ONNX file's serving input size on a validation set (written into its metadata)
  eval    mIoU and per-class IoU of a checkpoint, an ONNX file (served in-process through POST /segment)
          or a running server, at the images' original resolution
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.segment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a U-Net")
    p.add_argument("--data", type=Path, required=True, help="training set: a folder with images/ and masks/, or COCO json")
    p.add_argument("--val", type=Path, required=True, help="validation set, same classes")
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--dice-weight", type=float, default=1.0, help="weight of the Dice loss beside cross-entropy")
    p.add_argument("--boundary-weight", type=float, default=0.0,
                   help="cross-entropy counts pixels within 2 px of a class boundary 1 + W times")
    p.add_argument("--input-size", type=int, default=256, help="letterboxed input side (multiple of 2^depth)")
    p.add_argument("--crop", type=int, default=None,
                   help="train on random CROP x CROP windows of the letterboxed input (served whole)")
    p.add_argument("--object-p", type=float, default=0.0,
                   help="share of the windows centred on an object of a class drawn uniformly (with --crop)")
    p.add_argument("--windows", type=int, default=1,
                   help="windows cut from each image read (with --crop): a step sees BATCH x WINDOWS windows")
    p.add_argument("--encoder", choices=["plain", "mobilenetv2"], default="plain",
                   help="contracting path: plain two-convolution blocks, or MobileNetV2 inverted residuals")
    p.add_argument("--width", type=int, default=16,
                   help="channels of the first level (mobilenetv2: WIDTH/16 is its channel multiplier)")
    p.add_argument("--depth", type=int, default=4, help="downsamplings in the contracting path (mobilenetv2: 5)")
    p.add_argument("--repeats", type=float, default=1.0, help="mobilenetv2: multiplier on the stages' repeats")
    p.add_argument("--expansion", type=int, default=4, help="mobilenetv2: cap on the bottlenecks' expansion")
    p.add_argument("--init-from", type=Path, default=None,
                   help="mobilenetv2: start the contracting path from a detector's backbone (its .onnx file)")
    p.add_argument("--output-stride", type=int, choices=[1, 2], default=1,
                   help="2: the U runs at half resolution and the logits are upsampled bilinearly")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-limit", type=int, default=100)
    p.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    p.add_argument("--workers", type=int, default=1, help="data-loading processes")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="bf16: bfloat16 autocast; auto: bf16 where the CPU has it natively")
    p = sub.add_parser("export", help="export a checkpoint to ONNX")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--name", default="segmenter")
    p.add_argument("--version", default="1.0.0")
    p = sub.add_parser("tune-size", help="choose the serving input size on validation data")
    p.add_argument("--model", type=Path, required=True, help="an exported segmenter (.onnx), rewritten in place")
    p.add_argument("--val", type=Path, required=True, help="validation set; never the held-out set")
    p.add_argument("--sizes", default=None,
                   help="comma-separated sizes, multiples of the model's stride (default: training size to 1.5x it)")
    p.add_argument("--limit", type=int, default=100, help="validation images scored per size")
    p = sub.add_parser("eval", help="mIoU of a checkpoint, an ONNX model, or a server")
    p.add_argument("--data", type=Path, required=True, help="segmentation set to score on (held out)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="a training checkpoint (PyTorch)")
    src.add_argument("--model", type=Path, help="an ONNX file, served in-process through POST /segment")
    src.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="write the metrics here as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train":
        from training.segment.train import SegmentTrainOptions, train_segmenter

        opts = SegmentTrainOptions(**{k: v for k, v in vars(args).items() if k != "command"})
        result = train_segmenter(opts)
        print(f"best validation mIoU {result['best_val_miou']:.4f}; checkpoints in {args.out}")
        return 0
    if args.command == "export":
        from training.segment.export import export_segmenter

        path, diff = export_segmenter(args.checkpoint, args.out, args.name, args.version)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB); ONNX Runtime vs PyTorch max abs diff {diff:.2e}")
        return 0 if diff <= 1e-4 else 1
    if args.command == "tune-size":
        from training.segment.input_size import tune_segmenter_size

        try:
            sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
        except ValueError:
            print(f"error: --sizes {args.sizes!r} is not a comma-separated list of integers", file=sys.stderr)
            return 2
        try:
            tune_segmenter_size(args.model, args.val, sizes, limit=args.limit)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if args.checkpoint:
        from training.segment.data import load_segmentation
        from training.segment.train import evaluate_model, load_segmenter

        data = load_segmentation(args.data)
        if args.limit:
            data.samples = data.samples[:args.limit]
        metrics = evaluate_model(load_segmenter(args.checkpoint)[0], data)
    else:
        from training.segment.heldout import evaluate_segmenter

        metrics = evaluate_segmenter(args.data, models=args.model, url=args.url, limit=args.limit)
    from training.reports import print_and_write

    print_and_write(metrics, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
