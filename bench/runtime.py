"""Section 9: the serving runtime. One run, one machine, loopback, 640x480 JPEGs on ``POST /detect``:

- closed-loop clients (``bench.rawhttp``: lean, so that the client leaves the cores to the server;
  each keeps its connection alive between requests, as a connection pool does)
  at each concurrency against the server as configured (dynamic batching), the same server with
  batching off (``SIGHTLINE_MAX_BATCH=1``), and the same server with one model run at a time on all
  cores (``SIGHTLINE_INFERENCE_INSTANCES=1``, the default before runs side by side): images/s, p50
  and p99 latency, and the mean batch the batcher formed (from ``/metrics``);
- the raw ONNX Runtime upper bound: the detector alone on preprocessed tensors, at the batch sizes
  the batcher formed, in this process, the faster of the server's thread plan and one run at a time
  on all cores;
- overload: open-loop arrivals at ``overload_factor`` x the batched server's throughput at 16
  clients; the latency of the requests admitted against the unloaded p99 (one client), and how fast
  the rest are refused; once with the fixed concurrency limit the levels ran with, once with the
  server's default, adaptive one (``app.admission``);
- a soak: the batched server under load for ``soak_seconds``, its resident memory sampled.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from app.detector import ObjectDetector
from app.imaging import decode_image
from app.runtime import thread_plan
from app.settings import Settings
from bench.inference import bench_raw, bench_raw_side_by_side
from bench.rawhttp import Result, closed_loop, multipart_post, open_loop
from bench.server import Server, process_cpu_seconds, uvicorn_server
from bench.stats import summarize_ms

# the levels compare batching at fixed concurrencies: the concurrency limit stays SIGHTLINE_MAX_IN_FLIGHT
FIXED_LIMIT = {"SIGHTLINE_LATENCY_TOLERANCE": "0"}


def batch_totals(server: Server) -> tuple[float, float]:
    """``(rows, runs)`` of the detector's batcher so far, from ``/metrics`` (prometheus-client's parser)."""
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    found = {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
             if s.labels.get("model") == "detector"}
    return found.get("sightline_batch_size_sum", 0.0), found.get("sightline_batch_size_count", 0.0)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _requests(server: Server, jpegs: list[bytes], keep_alive: bool = True) -> tuple[str, int, list[bytes]]:
    """``POST /detect`` of each JPEG: kept alive for the closed loop, ``Connection: close`` for
    open-loop arrivals."""
    host, port = server.base_url.removeprefix("http://").split(":")
    return host, int(port), [multipart_post(host, int(port), "/detect", j, keep_alive) for j in jpegs]


def _summary(results: list[Result], wall: float) -> dict:
    ok = [r.seconds for r in results if r.status == 200]
    return {"requests": len(results), "ok": len(ok),
            "errors": dict(Counter(str(r.status) for r in results if r.status != 200)),
            "images_per_s": len(ok) / wall, "latency": summarize_ms(ok)}


def measure_levels(server: Server, jpegs: list[bytes], clients: tuple[int, ...], seconds: float,
                   warmup_s: float) -> list[dict]:
    """Closed loop at each concurrency (``bench.rawhttp``), with the batcher's mean batch from /metrics."""
    host, port, requests = _requests(server, jpegs)
    levels = []
    for c in clients:
        if warmup_s > 0:
            asyncio.run(closed_loop(host, port, requests, c, warmup_s))
        rows0, runs0 = batch_totals(server)
        cpu0, t0 = process_cpu_seconds(server.pid), time.perf_counter()
        results = asyncio.run(closed_loop(host, port, requests, c, seconds))
        wall = time.perf_counter() - t0
        level = {"clients": c, **_summary(results, wall),
                 "server_cpu_cores": (process_cpu_seconds(server.pid) - cpu0) / wall}
        rows1, runs1 = batch_totals(server)
        level["mean_batch"] = (rows1 - rows0) / (runs1 - runs0) if runs1 > runs0 else 0.0
        levels.append(level)
    return levels


def overload(server: Server, jpegs: list[bytes], rate: float, seconds: float) -> dict:
    """Open-loop arrivals at ``rate``, each on a fresh connection: the latency of those admitted and
    of those refused (503)."""
    host, port, requests = _requests(server, jpegs, keep_alive=False)
    results = asyncio.run(open_loop(host, port, requests, rate, seconds))
    ok = [r.seconds for r in results if r.status == 200]
    refused = [r.seconds for r in results if r.status == 503]
    return {"rate_per_s": rate, "seconds": seconds, "sent": len(results), "ok": len(ok), "refused": len(refused),
            "other": len(results) - len(ok) - len(refused), "admitted_latency": summarize_ms(ok),
            "refused_latency": summarize_ms(refused)}


async def _soak_load(host: str, port: int, requests: list[bytes], clients: int, seconds: float, pid: int,
                     every: float) -> list[tuple[float, float]]:
    samples: list[tuple[float, float]] = []
    t0 = time.perf_counter()

    async def sampler() -> None:
        while time.perf_counter() < t0 + seconds:
            samples.append((time.perf_counter() - t0, rss_mb(pid)))
            await asyncio.sleep(every)
        samples.append((time.perf_counter() - t0, rss_mb(pid)))

    await asyncio.gather(sampler(), closed_loop(host, port, requests, clients, seconds))
    return samples


def soak(server: Server, jpegs: list[bytes], clients: int, seconds: float) -> dict:
    host, port, requests = _requests(server, jpegs)
    every = max(1.0, seconds / 60)
    samples = asyncio.run(_soak_load(host, port, requests, clients, seconds, server.pid, every))
    t = np.array([s[0] for s in samples])
    mb = np.array([s[1] for s in samples])
    half = len(mb) // 2
    slope = float(np.polyfit(t[half:], mb[half:], 1)[0] * 60) if len(mb) >= 4 else 0.0
    return {"clients": clients, "seconds": seconds, "rss_mb_start": float(mb[0]), "rss_mb_end": float(mb[-1]),
            "rss_mb_max": float(mb.max()), "rss_mb_after_first_minute": float(mb[t >= min(60.0, t[-1])][0]),
            "rss_mb_per_min_second_half": slope, "samples": [[round(a, 1), round(b, 1)] for a, b in samples]}


def bench_runtime(models_dir: Path, jpegs: list[bytes], clients: tuple[int, ...], seconds: float, warmup_s: float,
                  overload_factor: float, overload_seconds: float, soak_seconds: float) -> dict:
    t0 = time.perf_counter()
    modes = {}
    for mode, env in (("batched", FIXED_LIMIT), ("unbatched", {**FIXED_LIMIT, "SIGHTLINE_MAX_BATCH": "1"}),
                      ("batched_one_run", {**FIXED_LIMIT, "SIGHTLINE_INFERENCE_INSTANCES": "1"})):
        with uvicorn_server(models_dir, settings=env) as server:
            modes[mode] = {"levels": measure_levels(server, jpegs, clients, seconds, warmup_s)}
            if mode == "batched":
                top = next(x for x in modes[mode]["levels"] if x["clients"] == 16) \
                    if 16 in clients else modes[mode]["levels"][-1]
                rate = overload_factor * top["images_per_s"]
                modes[mode]["overload"] = overload(server, jpegs, rate, overload_seconds)
                modes[mode]["soak"] = soak(server, jpegs, 16, soak_seconds) if soak_seconds > 0 else None
    with uvicorn_server(models_dir) as server:      # the defaults: the adaptive concurrency limit
        host, port, requests = _requests(server, jpegs)
        alone = asyncio.run(closed_loop(host, port, requests, 1, max(seconds / 2, warmup_s)))   # it learns them
        modes["batched"]["overload_adaptive"] = {**overload(server, jpegs, rate, overload_seconds),
                                                 "unloaded_latency": summarize_ms([r.seconds for r in alone
                                                                                   if r.status == 200])}
    settings = Settings()
    sizes = sorted({1, *(max(1, math.ceil(x["mean_batch"])) for x in modes["batched"]["levels"])})
    raw = bench_raw_bound(models_dir / "detector.onnx", settings, jpegs, sizes)
    for level in modes["batched"]["levels"]:
        level["raw_images_per_s_at_mean_batch"] = raw[max(1, math.ceil(level["mean_batch"]))]["images_per_s"]
    return {"settings": {"max_batch": settings.max_batch, "max_delay_ms": settings.max_delay_ms,
                         "max_queue": settings.max_queue, "max_in_flight": settings.max_in_flight,
                         "min_in_flight": settings.min_in_flight, "latency_tolerance": settings.latency_tolerance,
                         "request_timeout_ms": settings.request_timeout_ms, **asdict(thread_plan(settings))},
            "seconds": seconds, "warmup_s": warmup_s, **modes, "raw": list(raw.values()),
            "elapsed_s": time.perf_counter() - t0}


def bench_raw_bound(model: Path, settings: Settings, jpegs: list[bytes], sizes: list[int]) -> dict[int, dict]:
    """The detector alone on preprocessed tensors at each batch size, in the two ways the cores can
    run it: the server's thread plan (its instances side by side, each on its intra-op threads) and
    one run at a time on all cores; the upper bound is the faster of the two."""
    plan = thread_plan(settings)
    side = ObjectDetector.load(model, settings)
    whole = ObjectDetector.load(model, settings.model_copy(update={"inference_instances": 1, "intra_op_threads": 0}))
    tensors = [side.preprocess(decode_image(j, settings.max_pixels).rgb)[0] for j in jpegs]
    raw = {}
    for b in sizes:
        calls = max(20, 400 // b)
        one = bench_raw(whole, tensors, b, calls, 3)
        both = bench_raw_side_by_side(side, tensors, b, plan.instances, max(10, calls // plan.instances), 2)
        raw[b] = {"batch": b, "one_run_images_per_s": one["images_per_s"],
                  "side_by_side_images_per_s": both["images_per_s"], "runs_side_by_side": plan.instances,
                  "side_by_side_cpu_ms_per_image": both["cpu_ms_per_image"],
                  "images_per_s": max(one["images_per_s"], both["images_per_s"])}
    return raw


def runtime_ratios(r: dict) -> dict:
    """At 16 clients (or the top level): batched against raw ONNX Runtime, against unbatched, and
    against one model run at a time."""
    def at(levels: list[dict]) -> dict:
        return next((x for x in levels if x["clients"] == 16), levels[-1])

    b, u = at(r["batched"]["levels"]), at(r["unbatched"]["levels"])
    out = {"clients": b["clients"], "batched_over_raw": b["images_per_s"] / b["raw_images_per_s_at_mean_batch"],
           "batched_over_unbatched": b["images_per_s"] / u["images_per_s"]}
    if "batched_one_run" in r:
        out["batched_over_one_run"] = b["images_per_s"] / at(r["batched_one_run"]["levels"])["images_per_s"]
    return out
