"""``python -m bench`` (``make bench``): measure the detector on this machine in one run; print a
report, write the figures to ``--out`` (JSON) and ``--md`` (markdown tables for the README)."""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from app.models import load_detector
from app.models.anchor_detector import Detector
from app.imaging import decode_image
from app.settings import Settings
from bench.gallery_search import DEFAULT_RUNS as GALLERY_RUNS
from bench.gallery_search import QUICK_RUNS as GALLERY_QUICK_RUNS
from bench.gallery_search import bench_gallery_search
from bench.faces_http import bench_faces
from bench.segment_http import bench_segment
from bench.http_load import bench_level, server_provider
from bench.images import HEIGHT, PHONE, QUALITY, WIDTH, make_jpegs, make_phone_jpeg
from bench.inference import bench_raw_bound
from bench.machine import describe_machine, describe_model, load_average
from bench.nms import bench_nms
from bench.pipeline import bench_large_photo, bench_pipeline
from bench.report import format_markdown, format_text
from bench.runtime import FIXED_LIMIT, bench_runtime, runtime_ratios
from bench.server import ROOT, uvicorn_server


@dataclass(frozen=True)
class Profile:
    """How much of everything to run; ``--quick`` proves the code paths in a few seconds."""

    name: str
    images: int = 24
    raw_calls: tuple[tuple[int, int, int], ...] = ((1, 500, 20), (8, 80, 5))  # (batch, calls, warm-up)
    pipeline_images: int = 200
    pipeline_warmup: int = 10
    large_photo_runs: int = 7
    http_clients: tuple[int, ...] = (1, 4, 16)
    http_seconds: float = 30.0
    http_warmup_s: float = 5.0
    nms_runs: tuple[tuple[int, int, int], ...] = ((1000, 50, 3), (10000, 7, 1))  # (boxes, reps, warm-up)
    gallery_runs: tuple[tuple[int, int, int], ...] = GALLERY_RUNS  # (faces, 1-query calls, batch calls)
    face_rounds: int = 4          # each real-photo /verify pair and /identify photo, this many times
    face_clients: tuple[int, ...] = (1, 4)
    segment_requests: int = 40    # per answer format, after 3 untimed
    runtime_clients: tuple[int, ...] = (1, 4, 16, 64)
    runtime_seconds: float = 20.0
    runtime_warmup_s: float = 3.0
    runtime_rounds: int = 4       # turns per server and level (section 9's servers take turns)
    overload_factor: float = 2.0  # open-loop arrivals at this many times the batched throughput at 16 clients
    overload_seconds: float = 20.0
    soak_seconds: float = 600.0
    mixed_seconds: float = 15.0   # light load of mixed photo sizes (0: not measured)


DEFAULT = Profile("default")
QUICK = Profile("quick", images=3, raw_calls=((1, 5, 1), (8, 2, 1)), pipeline_images=5, pipeline_warmup=1,
                large_photo_runs=1, http_clients=(1, 2), http_seconds=1.0, http_warmup_s=0.3,
                nms_runs=((1000, 2, 0), (10000, 1, 0)),
                gallery_runs=GALLERY_QUICK_RUNS, face_rounds=1, face_clients=(1,),
                segment_requests=2, runtime_clients=(1, 4), runtime_seconds=1.0, runtime_warmup_s=0.3,
                runtime_rounds=2, overload_seconds=1.0, soak_seconds=3.0, mixed_seconds=1.0)
# every section at every level, in a few minutes: for a machine lent for a short while (a GPU)
BRIEF = Profile("brief", raw_calls=((1, 300, 20), (8, 100, 10), (16, 100, 10)), pipeline_images=100,
                large_photo_runs=5, http_seconds=8.0, http_warmup_s=2.0, gallery_runs=GALLERY_QUICK_RUNS,
                face_rounds=2, segment_requests=20, runtime_seconds=8.0, runtime_warmup_s=2.0,
                runtime_rounds=2, overload_seconds=10.0, soak_seconds=60.0, mixed_seconds=8.0)


def _model_info(detector: Detector, path: Path) -> dict:
    m = detector.meta
    return {"name": m.name, "version": m.version, "input_size": m.input_size, "class_names": m.class_names,
            **describe_model(path)}


def _in_process(model: Path, jpegs: list[bytes], p: Profile, settings: Settings) -> dict:
    """Sections 1 and 2, with the detector loaded here and dropped afterwards."""
    detector = load_detector(model, settings)
    tensors = [detector.preprocess(decode_image(j, settings.max_pixels).rgb)[0] for j in jpegs]
    served = detector.runner.io_binding
    raw = [bench_raw_bound(detector, tensors, b, calls, warm, served) for b, calls, warm in p.raw_calls]
    out = {"machine": describe_machine(detector.provider), "model": _model_info(detector, model), "raw": raw,
           "pipeline": bench_pipeline(detector, jpegs, p.pipeline_images, p.pipeline_warmup, settings.max_pixels),
           "large_photo": bench_large_photo(detector, make_phone_jpeg(0), PHONE, p.large_photo_runs,
                                            settings.max_pixels)}
    if detector.runner.device == "cuda":   # the same calls with IO binding the other way (SIGHTLINE_IO_BINDING)
        out["raw_other_binding"] = [bench_raw_bound(detector, tensors, b, calls, warm, not served)
                                    for b, calls, warm in p.raw_calls]
    del detector
    gc.collect()
    return out


def _detectors(models: list[Path], jpegs: list[bytes], p: Profile, settings: Settings) -> list[dict]:
    """Section 1b: each detector's raw batch-1 run and in-process pipeline, one after another."""
    out = []
    for path in models:
        detector = load_detector(path, settings)
        tensors = [detector.preprocess(decode_image(j, settings.max_pixels).rgb)[0] for j in jpegs]
        calls, warm = p.raw_calls[0][1:]
        raw = bench_raw_bound(detector, tensors, 1, calls, warm, detector.runner.io_binding)
        pipe = bench_pipeline(detector, jpegs, p.pipeline_images, p.pipeline_warmup, settings.max_pixels)
        out.append({"model": _model_info(detector, path), "family": detector.meta.family,
                    "raw_batch1": raw, "pipeline": pipe})
        del detector
        gc.collect()
    return out


def _http(model: Path, jpegs: list[bytes], p: Profile) -> dict:
    with uvicorn_server(model.parent, settings=FIXED_LIMIT) as server:   # 16 clients: no adaptive refusals
        levels = [bench_level(server, jpegs, c, p.http_seconds, p.http_warmup_s) for c in p.http_clients]
        provider = server_provider(server)
        faces = (bench_faces(server, p.face_rounds, p.face_clients)
                 if (model.parent / "face_embedder.onnx").is_file() else None)
        segment = (bench_segment(server, jpegs, p.segment_requests, 3)
                   if any((model.parent / n).is_file() for n in ("segmenter.onnx", "person_segmenter.onnx")) else None)
    return {"provider": provider, "seconds": p.http_seconds, "warmup_s": p.http_warmup_s, "levels": levels,
            "faces": faces, "segment": segment}


def _ratios(r: dict) -> dict:
    top = r["http"]["levels"][-1]
    raw = {x["batch"]: x["images_per_s"] for x in r["raw"]}
    out = {f"HTTP at {top['clients']} clients / raw batch {b}": top["images_per_s"] / ips for b, ips in raw.items()}
    out["in-process pipeline / raw batch 1"] = r["pipeline"]["images_per_s"] / raw[min(raw)]
    return out


def run(model: Path, p: Profile, seed: int, compare: list[Path] | None = None) -> dict:
    compare = [c for c in (compare or []) if c.is_file() and c.resolve() != model]
    t0 = time.perf_counter()

    def step(what: str) -> None:        # progress on stderr: the report itself comes at the end
        print(f"[{time.perf_counter() - t0:5.0f} s] {what}", file=sys.stderr, flush=True)

    jpegs, source = make_jpegs(p.images, seed)
    r = {"profile": p.name, "config": asdict(p), "seed": seed,
         "images": {"count": len(jpegs), "size": f"{WIDTH}x{HEIGHT}", "quality": QUALITY, "source": source,
                    "bytes_mean": sum(map(len, jpegs)) / len(jpegs)}}
    step("1-2: raw ONNX Runtime and the in-process pipeline")
    r.update(_in_process(model, jpegs, p, Settings(inference_instances=1)))   # one run at a time, all cores
    step("1b: the served detector beside the others asked for")
    r["detectors"] = _detectors([model, *compare], jpegs, p, Settings(inference_instances=1))
    step("3, 7, 8: HTTP /detect, faces, segmentation")
    r["http"] = _http(model, jpegs, p)
    r["ratios"] = _ratios(r)
    step("5-6: NMS, face-gallery search")
    r["nms"] = [bench_nms(n, reps, warm, seed) for n, reps, warm in p.nms_runs]
    r["gallery"] = bench_gallery_search(p.gallery_runs, seed)
    step(f"9-10: serving runtime, {len(p.runtime_clients)} levels, overload, {p.soak_seconds:g} s soak")
    r["runtime"] = bench_runtime(model, jpegs, p.runtime_clients, p.runtime_seconds, p.runtime_warmup_s,
                                 p.runtime_rounds, p.overload_factor, p.overload_seconds, p.soak_seconds,
                                 p.mixed_seconds)
    r["runtime_ratios"] = runtime_ratios(r["runtime"])
    r["load_average_end"] = load_average()
    r["elapsed_s"] = time.perf_counter() - t0
    return r


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny iteration counts, 1 and 2 clients (seconds)")
    size.add_argument("--brief", action="store_true",
                      help="every section and level, shorter (a few minutes; for a GPU lent for a while)")
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "object_detector.onnx",
                    help="detector to measure (default: the served one); the HTTP server serves this file's folder")
    ap.add_argument("--compare", type=Path, nargs="*", default=[ROOT / "models" / "synthetic" / "detector.onnx"],
                    help="other detectors measured beside it in section 1b (default: the project's own)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json", help="JSON figures")
    ap.add_argument("--md", type=Path, default=ROOT / "bench" / "results.md", help="markdown tables")
    ap.add_argument("--seed", type=int, default=0, help="seed for the test images and NMS boxes")
    ap.add_argument("--soak-seconds", type=float, default=None,
                    help="how long section 10 holds the server under load watching its memory (default 600)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.model.is_file():
        print(f"no detector at {args.model}; run `make models` or pass --model", file=sys.stderr)
        return 2
    profile = QUICK if args.quick else BRIEF if args.brief else DEFAULT
    if args.soak_seconds is not None:
        profile = replace(profile, soak_seconds=args.soak_seconds)
    results = run(args.model.resolve(), profile, args.seed, [c.resolve() for c in args.compare])
    print(format_text(results), end="")
    for path, text in ((args.out, json.dumps(results, indent=2) + "\n"), (args.md, format_markdown(results))):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"\nwrote {args.out} and {args.md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
