"""``python -m app.models import --family FAMILY SRC.onnx DST.onnx``: a model file you already have
(InsightFace's SCRFD ``det_*.onnx`` or ArcFace, face-api's, dlib's...) written as a copy that
Sightline serves, its metadata complete and checked (``app.models.importer``); the source is never
changed. A file that cannot be served is refused with one line on stderr and exit status 2.

    python -m app.models import --family scrfd det_10g.onnx models/face_detector.onnx
    python -m app.models import --family arcface w600k_r50.onnx models/face_embedder.onnx --threshold 1.2
    python -m app.models import --family crop-landmarks lm.onnx models/face_landmarks.onnx \\
        --set crop_margin=1.2 --set 'normalization={"mean": [0, 0, 0], "std": [1, 1, 1]}'
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.models.importer import IMPORTABLE, Refused, Request, import_model


def _setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE as JSON (a bare word is a string)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: give KEY=VALUE (VALUE in JSON)")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m app.models", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("import", help="write a copy of an ONNX file with Sightline's metadata")
    cmd.add_argument("--family", required=True, choices=IMPORTABLE, help="the model family (decoder) of the file")
    cmd.add_argument("source", type=Path, help="the ONNX file you have (only read)")
    cmd.add_argument("target", type=Path, help="the copy to write (e.g. into the models directory)")
    cmd.add_argument("--name", help="the model's name (default: the target's file name)")
    cmd.add_argument("--version", help="the weights' version (default: 1)")
    cmd.add_argument("--license", help="the weights' licence (InsightFace's: non-commercial research only)")
    cmd.add_argument("--source", dest="origin", help="where the weights came from")
    cmd.add_argument("--task", help="detection or face_detection (anchor-yolo only)")
    cmd.add_argument("--input-size", type=int, help="the input side, for a graph whose side is free")
    cmd.add_argument("--min-face", type=float, help="a fixed-input detector's smallest reliable face (input px)")
    cmd.add_argument("--threshold", type=float,
                     help="a detector's score threshold, or an embedder's distance threshold (squared L2)")
    cmd.add_argument("--set", dest="settings", type=_setting, action="append", default=[], metavar="KEY=JSON",
                     help="any other metadata value (repeatable)")
    cmd.add_argument("--force", action="store_true", help="replace the target if it exists")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    values: dict[str, Any] = dict(args.settings)
    for key, value in (("name", args.name), ("version", args.version), ("license", args.license),
                       ("source", args.origin), ("task", args.task), ("input_size", args.input_size),
                       ("min_face", args.min_face)):
        if value is not None:
            values[key] = value
    request = Request(args.family, args.source, args.target, values, args.threshold, args.force)
    try:
        meta = import_model(request)
    except Refused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.target}: {meta.family} model for {meta.task}, input {meta.input_size} px"
          f"{' (fixed)' if meta.fixed_size else ''}, licence {meta.license or 'not given'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
