"""Command line for the synthetic data generators: `python -m training.synth <subcommand> ...`.

Each subcommand is registered by an `_add_<name>(subparsers)` function that builds its parser and
sets two defaults: `config`, the generator's frozen config dataclass, whose fields become `--flag`s
(defaults and help from the dataclass, see `add_config_flags`), and `run(args, cfg) -> exit code`.
`main` builds the config from the flags (a config that fails validation is a usage error) and runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path


def add_config_flags(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """One `--field-name` flag per dataclass field, typed and defaulted from the field."""
    group = parser.add_argument_group(f"{config_cls.__name__} knobs")
    for f in dataclasses.fields(config_cls):
        group.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                           help=f"{f.metadata.get('help', '')} (default: {f.default})")


def config_from_args(config_cls: type, args: argparse.Namespace):
    return config_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)})


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--count", type=int, required=True, help="number of samples to generate")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes; the output does not depend on it (default: CPU count)")


def _run_scenes(args: argparse.Namespace, cfg) -> int:
    from training.synth.scenes import write_scenes

    start = time.perf_counter()
    path = write_scenes(args.out, args.count, args.seed, cfg, args.workers)
    took = time.perf_counter() - start
    print(f"wrote {args.count} scenes to {args.out} in {took:.1f} s ({path.name})", file=sys.stderr)
    return 0


def _add_scenes(subparsers) -> None:
    from training.synth.scenes import SceneConfig

    p = subparsers.add_parser("scenes", help="detection scenes: COCO json, images and class-id masks")
    _add_output_flags(p)
    add_config_flags(p, SceneConfig)
    p.set_defaults(config=SceneConfig, run=_run_scenes)


def _run_faces(args: argparse.Namespace, cfg) -> int:
    from training.synth.faces import write_faces

    start = time.perf_counter()
    path = write_faces(args.out, args.identities, args.per_identity, args.seed, cfg, args.workers,
                       args.first_identity)
    took = time.perf_counter() - start
    n = args.identities * args.per_identity
    print(f"wrote {n} face photos to {args.out} in {took:.1f} s ({path.name})", file=sys.stderr)
    return 0


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"need a whole number >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"need a whole number >= 1, got {text}")
    return value


def _add_faces(subparsers) -> None:
    from training.synth.faces import FaceConfig

    p = subparsers.add_parser("faces", help="face photos per identity: COCO keypoints json with identities")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--identities", type=_positive_int, required=True, help="number of identities")
    p.add_argument("--per-identity", type=_positive_int, required=True, help="photos per identity")
    p.add_argument("--first-identity", type=_non_negative_int, default=0,
                   help="index of the first identity, so that splits hold different people (default: 0)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default: 0)")
    p.add_argument("--workers", type=_positive_int, default=os.cpu_count() or 1,
                   help="worker processes; the output does not depend on it (default: CPU count)")
    add_config_flags(p, FaceConfig)
    p.set_defaults(config=FaceConfig, run=_run_faces)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.synth", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_scenes(subparsers)
    _add_faces(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args.config, args)
    except ValueError as e:
        parser.error(str(e))
    return args.run(args, cfg)


if __name__ == "__main__":
    sys.exit(main())
