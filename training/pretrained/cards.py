"""``docs/face-models.md``, written from the model cards that ``make import-models`` leaves in
``models/`` (``face_*.card.json``, ``faces.card.json``): nothing in it is typed by hand."""

from __future__ import annotations

import json
from pathlib import Path

NAMES = {"face_detector": "Face detector", "face_landmarks": "Face landmarks", "face_embedder": "Face embedder"}


def _card_section(name: str, card: dict) -> list[str]:
    speed = card["speed_this_cpu"]
    parity = card["parity"]
    lines = [f"## {NAMES[name]}: `models/{card['file']}`", "",
             "| | |", "|---|---|",
             f"| family | `{card['family']}` ({card['task']}), input {card['input_size']} px |",
             f"| source | {card['source']} |",
             f"| licence of the weights | {card['license']} |",
             f"| sha256 of the original weights | `{card['weights_sha256']}` |",
             f"| size | {card['size_mb']} MB |",
             f"| speed, this CPU | {speed['batch1_ms_1_threads']} ms per run at batch 1 on 1 thread, "
             f"{speed['batch1_ms_2_threads']} ms on 2 |",
             f"| published accuracy | {card['published']} |",
             f"| parity with the original runtime | {parity['reference']}: {_parity(parity)} |", ""]
    return lines


def _parity(p: dict) -> str:
    if "min_cosine" in p:
        return (f"{p['faces']} real faces, descriptor cosine ≥ {p['min_cosine']:.7f}, largest difference "
                f"{p['max_abs_diff']:.1e}")
    if "max_score_diff" in p:
        return (f"{len(p['photos'])} real photos and tiles, scores within {p['max_score_diff']:.1e}, boxes within "
                f"{p['max_box_diff_px_at_512']:.1e} px at 512, final detections "
                f"{'identical' if p['detections_match'] else 'DIFFERENT'}")
    return f"{p['crops']} real face crops, points within {p['max_diff_px_at_112']:.1e} px at 112"


def _real_photos(figures: dict) -> list[str]:
    g, ident = figures["group_photo"], figures["identify"]
    verify = figures["verify"]
    same = [v for v in verify.values() if v["same"]]
    different = [v for v in verify.values() if not v["same"]]
    portraits = figures["portraits"]
    paintings = figures.get("paintings", {})
    lines = ["## The stack on real photos (through HTTP, default settings)", "",
             "Photos from registry packages (`training/pretrained/realphotos.py`); `tests/test_real_faces.py` "
             "checks the same figures in `make test`.", "",
             "| check | result |", "|---|---|",
             f"| 1927 Solvay conference, 3000x2171, {g['faces']} faces of 78-115 px | {g['found']} found, "
             f"{g['false']} false; smallest box {g['smallest_found_px']} px |",
             f"| portraits with a face ({len(portraits)}) | {sum(1 for c in portraits.values() if c >= 1)} found |",
             f"| photos with no person ({len(figures['no_face'])}) | {sum(figures['no_face'].values())} false "
             f"face(s): {', '.join(k for k, c in figures['no_face'].items() if c) or 'none'} |",
             f"| /verify, the same man in 3 photos | {sum(v['verified'] for v in same)} of {len(same)} pairs "
             f"verified, distances {min(v['distance'] for v in same):.3f}-{max(v['distance'] for v in same):.3f} |",
             f"| /verify, different people ({len(different)} pairs of photographs) | "
             f"{sum(not v['verified'] for v in different)} rejected, closest distance "
             f"{min(v['distance'] for v in different):.3f} (threshold {ident['threshold']}) |"]
    for pair, v in paintings.items():
        lines.append(f"| /verify, two paintings ({pair}) | {'verified (wrongly)' if v['verified'] else 'rejected'}, "
                     f"distance {v['distance']:.3f} |")
    named_right = sum(ident["named"][k] == ident["expected"][k] for k in ident["expected"])
    lines += [f"| one-shot: 4 people enrolled from one photo each, {len(ident['expected'])} other photos "
              f"identified | {named_right} of {len(ident['expected'])} right |",
              f"| /identify on the group photo (nobody enrolled) | {ident['group_faces']} faces, "
              f"{len(ident['group_named'])} named |", ""]
    return lines


def render(models: Path) -> str:
    out = ["# Face models", "",
           "The face models served by default: real pretrained weights taken from registry packages, "
           "converted to ONNX by `make import-models` (`training/pretrained/`), each proven against the runtime "
           "it came from. Generated from `models/*.card.json` by `python -m training.pretrained.cards`.", ""]
    stack = json.loads((models / "faces.card.json").read_text())
    out += _real_photos(stack["real_photos"])
    for name in NAMES:
        out += _card_section(name, json.loads((models / f"{name}.card.json").read_text()))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m training.pretrained.cards", description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--out", type=Path, default=Path("docs/face-models.md"))
    args = parser.parse_args(argv)
    args.out.write_text(render(args.models))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
