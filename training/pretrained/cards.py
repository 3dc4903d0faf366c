"""``docs/face-models.md`` and ``docs/object-models.md``, written from the model cards that
``make import-models`` leaves in ``models/`` (``face_*.card.json``, ``faces.card.json``,
``object_detector.card.json``, ``person_segmenter.card.json``, ``objects.card.json``): nothing in them
is typed by hand."""

from __future__ import annotations

import json
from pathlib import Path

NAMES = {"face_detector": "Face detector", "face_landmarks": "Face landmarks", "face_embedder": "Face embedder"}
OBJECT_NAMES = {"object_detector": "Object detector (COCO, 80 classes)", "person_segmenter": "Person segmenter"}


def _card_section(name: str, card: dict) -> list[str]:
    speed = card["speed_this_cpu"]
    parity = card["parity"]
    lines = [f"## {(NAMES | OBJECT_NAMES)[name]}: `models/{card['file']}`", "",
             "| | |", "|---|---|",
             f"| family | `{card['family']}` ({card['task']}), input {card['input_size']} px |",
             f"| source | {card['source']} |",
             f"| licence of the weights | {card['license']} |",
             f"| sha256 of the original weights | `{card['weights_sha256']}` |",
             f"| size | {card['size_mb']} MB |",
             f"| speed, this CPU | {speed['batch1_ms_1_threads']} ms per run at batch 1 on 1 thread, "
             f"{speed['batch1_ms_2_threads']} ms on 2 |",
             *([f"| published accuracy | {card['published']} |"] if "published" in card else []),
             *([f"| upstream | {card['upstream']} |"] if "upstream" in card else []),
             *([f"| licence evidence | {'; '.join(card['licence_sources'])} |"] if "licence_sources" in card else []),
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
    if "tolerance" in p:
        return (f"{len(p['photos'])} real photos, every output within {p['max_abs_diff']:.1e} "
                f"(relative {p['max_rel_diff']:.1e}; tolerance {p['tolerance']:.0e})")
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
    out += ["Known limit: the two painted portraits (Gauss, Newton) come out close enough to be verified as "
            "one person; dlib's own pipeline puts them at 0.601, on its published threshold of 0.6. The 1:1 "
            "threshold starts from that published operating point: calibrate it on your own people "
            "(`POST /admin/calibration`, `make calibrate`).", ""]
    for name in NAMES:
        out += _card_section(name, json.loads((models / f"{name}.card.json").read_text()))
    return "\n".join(out)


def _real_objects(figures: dict) -> list[str]:
    s, seg = figures["summary"], figures["segment"]
    lines = ["## On real photos (through HTTP, default settings)", "",
             "Photos from registry packages (`training/pretrained/scenes.py`: scikit-image's and OpenCV's "
             "sample photos, OpenCV's pedestrian video); `tests/test_real_objects.py` checks the same "
             f"figures in `make test`. A photo is named when each object anyone sees in it is found at "
             f"score ≥ {s['score']}.", "",
             "| photo | expected | found (best score) | false labels |", "|---|---|---|---|"]
    for name, r in figures["scenes"].items():
        found = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["found"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| {name} | {', '.join(r['expected'])}{' (missed: ' + ', '.join(r['missed']) + ')' if r['missed'] else ''}"
                     f" | {found or '-'} | {', '.join(r['false']) or '-'} |")
    lines += ["", f"Named: **{s['photos_named']} of {s['photos']}** photos. Photos with none of COCO's "
              f"classes ({len(figures['empty'])}): detections on "
              f"{', '.join(f'{k} ({chr(44).join(v)})' for k, v in s['empty_photos_with_detections'].items()) or 'none'}.",
              "", "| vtest.avi frame | people (boxed by eye) | found (person box at IoU ≥ 0.5) | person boxes on no one "
              "| other labels |", "|---|---|---|---|---|"]
    for index, r in figures["pedestrians"].items():
        lines.append(f"| {index} | {r['people']} | {r['found']} | {r['false_people']} | "
                     f"{', '.join(r['other_labels']) or '-'} |")
    lines += ["", f"`/segment` on `{seg['photo']}`: person mask IoU **{seg['iou']:.3f}** against the mask drawn by "
              f"hand (`tests/data/camera_person.png`); person on {seg['person_fraction']:.1%} of the pixels "
              f"(drawn: {seg['drawn_fraction']:.1%}). Person pixels on photos with no one (the selfie model marks any "
              f"main subject; the served file keeps them only inside the detector's person boxes, `box_gate`): "
              f"{', '.join(f'{k} {v:.1%}' for k, v in seg['no_person_photos_fraction'].items())}.", ""]
    return lines


def render_objects(models: Path) -> str:
    out = ["# Object detection and segmentation models", "",
           "The detector and the segmenter served by default: real pretrained weights taken from a registry "
           "package, converted to ONNX by `make import-models` (`training/pretrained/human.py`), each proven "
           "against the runtime it came from. Generated from `models/*.card.json` by "
           "`python -m training.pretrained.cards`. The project's own synthetic-trained detector and U-Net "
           "are described in [models.md](models.md).", ""]
    out += _real_objects(json.loads((models / "objects.card.json").read_text())["real_photos"])
    out += ["Known limits: NanoDet-g is a small model (COCO val2017 mAP 22.9, its v0.4.2 README) whose scores "
            "are IoU-aware quality estimates, lower than other detectors' for the same confidence (0.3 is a good "
            "cut-off); it misses the objects listed above. For more, serve a larger detector you may use "
            "([your own YOLO export](models.md#bring-your-own-yolo-export-ultralytics-yolov5-yolov8-yolo11)) or "
            "fine-tune ([fine-tuning.md](fine-tuning.md)). The selfie segmenter marks any main subject; the served "
            "file keeps its person pixels inside the detector's person boxes (`box_gate`).", ""]
    for name in OBJECT_NAMES:
        out += _card_section(name, json.loads((models / f"{name}.card.json").read_text()))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m training.pretrained.cards", description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--docs", type=Path, default=Path("docs"))
    args = parser.parse_args(argv)
    for page, write in (("face-models.md", render), ("object-models.md", render_objects)):
        (args.docs / page).write_text(write(args.models))
        print(f"wrote {args.docs / page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
