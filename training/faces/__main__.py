"""``python -m training.faces landmarks|embedder train|export`` and ``eigenfaces``: the face models'
command line. The face detector is the detection code with one class: ``python -m training.detect
train --data FACES --val FACES_VAL --init-from DETECTOR_CKPT`` (see the README).

  landmarks train   the 5-point regressor on COCO-keypoints face sets (validation NME per epoch)
  landmarks export  ONNX with its metadata, checked against PyTorch
  embedder train    the FaceNet-style embedder with the triplet loss (P identities x K photos per batch),
                    then the DeepFace verification head; validation TAR at FAR 1e-3 per epoch
  embedder export   ONNX with the template, the head and the validation threshold
  eigenfaces        the PCA baseline's TAR at FAR 1e-3 on held-out identities
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _common_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="training faces: a folder with annotations.json")
    p.add_argument("--val", type=Path, required=True, help="validation faces (other identities)")
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=None, help="channels of the first stage")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--limit", type=int, default=None, help="use only the first N training faces")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="bf16: bfloat16 autocast for the convolutions; auto: bf16 where the CPU has it natively")


def _export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--version", default="1.0.0")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.faces", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="model", required=True)
    lm = sub.add_parser("landmarks", help="the 5-point landmark regressor").add_subparsers(dest="command",
                                                                                          required=True)
    p = lm.add_parser("train")
    _common_train(p)
    p.add_argument("--batch", type=int, default=64)
    _export(lm.add_parser("export"))
    em = sub.add_parser("embedder", help="the FaceNet-style embedder").add_subparsers(dest="command", required=True)
    p = em.add_parser("train")
    _common_train(p)
    p.add_argument("--steps-per-epoch", type=int, default=100)
    p.add_argument("--identities-per-batch", type=int, default=32, help="P")
    p.add_argument("--photos-per-identity", type=int, default=4, help="K")
    p.add_argument("--margin", type=float, default=0.3, help="triplet margin alpha")
    p.add_argument("--mining", choices=["hard", "semihard"], default="hard")
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--no-mirror", dest="mirror", action="store_false",
                   help="no mirrored training crops and no flip test (for faces that are not left-right symmetric)")
    _export(em.add_parser("export"))
    p = sub.add_parser("eigenfaces", help="the PCA baseline on held-out identities")
    p.add_argument("--data", type=Path, required=True, help="faces to fit the PCA on")
    p.add_argument("--test", type=Path, required=True, help="faces of other identities to score")
    p.add_argument("--components", type=int, default=128)
    return parser


def _options(cls, args: argparse.Namespace):
    fields = cls.__dataclass_fields__
    return cls(**{k: v for k, v in vars(args).items() if k in fields and v is not None})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.model == "eigenfaces":
        from training.faces.data import load_faces
        from training.faces.eigenfaces import eigenfaces_baseline

        print(json.dumps(eigenfaces_baseline(load_faces(args.data).subjects(), load_faces(args.test).subjects(),
                                             components=args.components), indent=2))
        return 0
    if args.command == "export":
        if args.model == "landmarks":
            from training.faces.landmarks import export_landmarks as export
        else:
            from training.faces.embedder import export_embedder as export
        path, diff = export(args.checkpoint, args.out, args.version)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB); ONNX Runtime vs PyTorch max abs diff {diff:.2e}")
        return 0 if diff <= 1e-4 else 1
    if args.model == "landmarks":
        from training.faces.landmarks import LandmarkTrainOptions, train_landmarks

        result = train_landmarks(_options(LandmarkTrainOptions, args))
        print(f"best validation NME {result['best_val_nme']:.4f}; checkpoints in {args.out}")
    else:
        from training.faces.embedder import EmbedderTrainOptions, train_embedder

        result = train_embedder(_options(EmbedderTrainOptions, args))
        print(f"best validation TAR at FAR 1e-3 {result['best_val_tar_at_far']:.4f}; checkpoints in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
