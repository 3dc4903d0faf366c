"""Section 9: the serving runtime. One run, one machine, loopback, 640x480 JPEGs on ``POST /detect``:

- closed-loop clients (``bench.rawhttp``: lean, so that the client leaves the cores to the server;
  each keeps its connection alive between requests, as a connection pool does)
  at each concurrency against the server as configured (dynamic batching), the same server with
  batching off (``SIGHTLINE_MAX_BATCH=1``), and the same server with one model run at a time on all
  cores (``SIGHTLINE_INFERENCE_INSTANCES=1``, the default before runs side by side): images/s, p50
  and p99 latency, and the mean batch the batcher formed (from ``/metrics``). The three servers run
  at once (the two not measured sit idle) and take turns, ``rounds`` short turns each per
  concurrency in a rotating order, so that a shared host's drift (another tenant's load) falls on
  all three alike instead of on whichever was measured during it;
- the raw ONNX Runtime upper bound: the detector alone on preprocessed tensors, at the batch sizes
  the batcher formed, in this process, the faster of the server's thread plan and one run at a time
  on all cores; at the concurrency the targets are read at, it takes a turn in every round too, at
  the batch the batched server formed in that round;
- overload: open-loop arrivals at ``overload_factor`` x the batched server's throughput at 16
  clients; the latency of the requests admitted against the unloaded p99 (one client), and how fast
  the rest are refused; once with the fixed concurrency limit the levels ran with, once with the
  server's default, adaptive one (``app.admission``);
- light load of mixed sizes: open-loop 640x480 photos at ``MIXED_LOAD`` x the batched server's
  throughput at 16 clients, and 12-megapixel phone photos beside them (one for ``SMALL_PER_PHONE``
  small ones), each three times as long to serve: how many of each are refused, with the fixed limit
  and with the adaptive one (which must tell a large photo from a standing queue);
- a soak: the batched server under load for ``soak_seconds``, its resident memory sampled;
- the ceiling this machine sets: the CPU one served photo needs at the least (the model's run at the
  batch formed, decoding, letterbox, NMS, and the HTTP floor of a FastAPI app that only reads the
  upload, ``bench.floor_app``, with its clients' CPU), and the throughput the cores allow at that
  cost, against raw ONNX Runtime and the unbatched server (``ceilings``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from app.models import load_detector
from app.models.anchor_detector import DetectParams, Detector
from app.imaging import decode_image
from app.runtime import thread_plan
from app.settings import Settings
from bench.images import make_phone_jpeg
from bench.inference import bench_raw, bench_raw_side_by_side
from bench.machine import usable_cores
from bench.rawhttp import Result, closed_loop, multipart_post, open_loop
from bench.server import ROOT, Server, process_tree_cpu_seconds, uvicorn_server
from bench.stats import summarize_ms

# the levels compare batching at fixed concurrencies: the concurrency limit stays SIGHTLINE_MAX_IN_FLIGHT
FIXED_LIMIT = {"SIGHTLINE_LATENCY_TOLERANCE": "0"}
# the adaptive limit set for latency first (README, Serving runtime): the overload target
STRICT = {"SIGHTLINE_LATENCY_TOLERANCE": "1.25", "SIGHTLINE_STANDING_AFTER": "0"}
MIXED_LOAD = 0.2          # the mixed-size load's small photos/s, as a share of the batched images/s at 16 clients
SMALL_PER_PHONE = 7.5     # and one phone photo per this many small ones
FLOOR_APP = ("bench.floor_app:app",)   # the HTTP floor: FastAPI reading the upload, no vision
ROOT_MODELS = ROOT / "models"          # (the floor app reads none)


def batch_totals(server: Server) -> tuple[float, float]:
    """``(rows, runs)`` of the batchers so far, from ``/metrics`` (prometheus-client's parser): these
    servers answer only ``/detect`` here, so every batch counted is the detector's, whatever its name."""
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in ("sightline_batch_size_sum", "sightline_batch_size_count"):
                found[s.name] = found.get(s.name, 0.0) + s.value
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


def _closed_turn(server: Server, request: tuple[str, int, list[bytes]], clients: int, seconds: float
                 ) -> tuple[list[Result], float, float, float]:
    """Closed-loop clients for ``seconds``: the results, the wall time, and the CPU seconds of the
    server process and of this one (the clients; nothing else here runs meanwhile)."""
    host, port, requests = request
    cpu0, client0, t0 = process_tree_cpu_seconds(server.pid), time.process_time(), time.perf_counter()
    results = asyncio.run(closed_loop(host, port, requests, clients, seconds))
    return (results, time.perf_counter() - t0, process_tree_cpu_seconds(server.pid) - cpu0,
            time.process_time() - client0)


@dataclass
class _Turns:
    """One server's closed-loop turns at one concurrency, added up."""

    results: list[Result] = field(default_factory=list)
    wall: float = 0.0
    cpu: float = 0.0
    client_cpu: float = 0.0
    rows: float = 0.0
    runs: float = 0.0

    def take(self, server: Server, request: tuple[str, int, list[bytes]], clients: int, seconds: float) -> float:
        """One turn; returns the mean batch the batcher formed in it."""
        rows0, runs0 = batch_totals(server)
        results, wall, cpu, client_cpu = _closed_turn(server, request, clients, seconds)
        self.results += results
        self.wall, self.cpu, self.client_cpu = self.wall + wall, self.cpu + cpu, self.client_cpu + client_cpu
        rows1, runs1 = batch_totals(server)
        self.rows, self.runs = self.rows + rows1 - rows0, self.runs + runs1 - runs0
        return (rows1 - rows0) / (runs1 - runs0) if runs1 > runs0 else 1.0

    def level(self, clients: int) -> dict:
        return {"clients": clients, **_summary(self.results, self.wall), "server_cpu_cores": self.cpu / self.wall,
                "client_cpu_cores": self.client_cpu / self.wall,
                "mean_batch": self.rows / self.runs if self.runs else 0.0}


def measure_levels(servers: dict[str, Server], jpegs: list[bytes], clients: tuple[int, ...], seconds: float,
                   warmup_s: float, rounds: int, raw: RawBound | None = None, raw_clients: int | None = None
                   ) -> tuple[dict[str, list[dict]], list[dict]]:
    """Closed loop at each concurrency against every server, ``seconds`` each in ``rounds`` turns
    whose order rotates, with the batcher's mean batch from /metrics. At ``raw_clients``, ``raw``
    takes a turn after every round, at the batch the first server formed in it; those turns are
    returned too."""
    names = list(servers)
    requests = {m: _requests(servers[m], jpegs) for m in names}
    levels: dict[str, list[dict]] = {m: [] for m in names}
    raw_turns: list[dict] = []
    for c in clients:
        for m in names:
            if warmup_s > 0:
                host, port, reqs = requests[m]
                asyncio.run(closed_loop(host, port, reqs, c, warmup_s))
        turns = {m: _Turns() for m in names}
        for k in range(rounds):
            batches = {m: turns[m].take(servers[m], requests[m], c, seconds / rounds)
                       for m in names[k % len(names):] + names[:k % len(names)]}
            if raw is not None and c == raw_clients:
                raw_turns.append(raw.at(max(1, math.ceil(batches[names[0]])), 1 / rounds))
        for m in names:
            levels[m].append(turns[m].level(c))
    return levels, raw_turns


def overload(server: Server, jpegs: list[bytes], rate: float, seconds: float, seed: int | None = None) -> dict:
    """Open-loop arrivals at ``rate`` (evenly spaced; with ``seed`` at random), each on a fresh
    connection: the latency of those admitted and of those refused (503), and the server's cores busy."""
    host, port, requests = _requests(server, jpegs, keep_alive=False)
    cpu0, t0 = process_tree_cpu_seconds(server.pid), time.perf_counter()
    results = asyncio.run(open_loop(host, port, requests, rate, seconds, seed=seed))
    cores = (process_tree_cpu_seconds(server.pid) - cpu0) / (time.perf_counter() - t0)
    ok = [r.seconds for r in results if r.status == 200]
    refused = [r.seconds for r in results if r.status == 503]
    return {"rate_per_s": rate, "seconds": seconds, "sent": len(results), "ok": len(ok), "refused": len(refused),
            "other": len(results) - len(ok) - len(refused), "admitted_latency": summarize_ms(ok),
            "refused_latency": summarize_ms(refused), "server_cpu_cores": cores}


def random_arrivals(server: Server, jpegs: list[bytes], rate: float, seconds: float, seed: int = 3) -> dict:
    """``overload``'s open loop with arrivals at random (Poisson), as independent clients arrive, at
    any rate. Unlike the closed loop, answers do not pace the arrivals, so a batch's requests
    finishing together do not come back together."""
    return overload(server, jpegs, rate, seconds, seed=seed)


def mixed_sizes(server: Server, jpegs: list[bytes], phones: list[bytes], rate: float, seconds: float) -> dict:
    """Open-loop arrivals of ``jpegs`` at ``rate`` and of ``phones`` at ``rate / SMALL_PER_PHONE`` (at
    least one) beside them, at random (Poisson), each on a fresh connection: for each, how many were
    sent, answered and refused."""
    host, port, small = _requests(server, jpegs, keep_alive=False)
    large = _requests(server, phones, keep_alive=False)[2]
    phone_rate = max(rate / SMALL_PER_PHONE, 1 / seconds)

    async def both() -> tuple[list[Result], list[Result]]:
        return tuple(await asyncio.gather(open_loop(host, port, small, rate, seconds, seed=1),
                                          open_loop(host, port, large, phone_rate, seconds, seed=2)))

    def count(results: list[Result]) -> dict:
        ok = [r.seconds for r in results if r.status == 200]
        return {"sent": len(results), "ok": len(ok), "refused": sum(r.status == 503 for r in results),
                "latency": summarize_ms(ok)}

    small_results, phone_results = asyncio.run(both())
    return {"rate_per_s": rate, "phone_rate_per_s": phone_rate, "seconds": seconds,
            "phone_bytes_mean": sum(map(len, phones)) / len(phones),
            "small": count(small_results), "phones": count(phone_results)}


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


SOAK_WINDOWS = 10   # the soak's resident memory is read as the peak of each tenth of it


def window_peaks(samples: list[tuple[float, float]], seconds: float, windows: int = SOAK_WINDOWS
                 ) -> list[tuple[float, float]]:
    """``(window's middle, peak MB)`` of ``(t, MB)`` samples cut into ``windows`` equal spans of
    ``seconds``. Under load the resident set swings within each span (the allocator takes memory
    for the batches in flight and hands it back: 786 to 811 MB and back within 20 s, over and
    over), so a straight line through the samples reads those swings as growth; a leak raises the
    peaks."""
    span = seconds / windows
    peaks: dict[int, float] = {}
    for t, mb in samples:
        k = min(int(t // span), windows - 1)
        peaks[k] = max(peaks.get(k, 0.0), mb)
    return [((k + 0.5) * span, peaks[k]) for k in sorted(peaks)]


def soak(server: Server, jpegs: list[bytes], clients: int, seconds: float) -> dict:
    host, port, requests = _requests(server, jpegs)
    every = max(1.0, seconds / 60)
    samples = asyncio.run(_soak_load(host, port, requests, clients, seconds, server.pid, every))
    t = np.array([s[0] for s in samples])
    mb = np.array([s[1] for s in samples])
    peaks = window_peaks(samples, seconds)
    later = peaks[1:]                  # the first span holds the start-up's growth
    slope = float(np.polyfit([p[0] for p in later], [p[1] for p in later], 1)[0] * 60) if len(later) >= 3 else 0.0
    return {"clients": clients, "seconds": seconds, "rss_mb_start": float(mb[0]), "rss_mb_end": float(mb[-1]),
            "rss_mb_max": float(mb.max()), "rss_mb_after_first_minute": float(mb[t >= min(60.0, t[-1])][0]),
            "rss_mb_window_peaks": [[round(a, 1), round(b, 1)] for a, b in peaks],
            "rss_peak_mb_per_min": slope, "samples": [[round(a, 1), round(b, 1)] for a, b in samples]}


def target_clients(clients: tuple[int, ...]) -> int:
    """The concurrency the targets are read at: 16 clients, or the top level when 16 is not run."""
    return 16 if 16 in clients else clients[-1]


MODES = {"batched": FIXED_LIMIT, "unbatched": {**FIXED_LIMIT, "SIGHTLINE_MAX_BATCH": "1"},
         "batched_one_run": {**FIXED_LIMIT, "SIGHTLINE_INFERENCE_INSTANCES": "1"},
         "two_processes": {**FIXED_LIMIT, "SIGHTLINE_WORKERS": "2"}}


def _fresh_mixed(server: Server, jpegs: list[bytes], phones: list[bytes], rate: float, seconds: float,
                 warmup_s: float) -> dict:
    """The light mixed load on a server that has only served one client alone for ``warmup_s``."""
    host, port, requests = _requests(server, jpegs)
    asyncio.run(closed_loop(host, port, requests, 1, warmup_s))
    return mixed_sizes(server, jpegs, phones, rate, seconds)


def learnt_overload(server: Server, jpegs: list[bytes], rate: float, seconds: float, alone_s: float) -> dict:
    """One client alone for ``alone_s`` (the server learns its unloaded latency, measured here too),
    then the overload."""
    host, port, requests = _requests(server, jpegs)
    alone = asyncio.run(closed_loop(host, port, requests, 1, alone_s))
    return {**overload(server, jpegs, rate, seconds),
            "unloaded_latency": summarize_ms([r.seconds for r in alone if r.status == 200])}


def front_cpu_ms(detector: Detector, jpegs: list[bytes], max_pixels: int, images: int = 100) -> dict:
    """CPU ms per photo (mean over ``images``, on this thread) of the vision work ``POST /detect``
    does around the model for each photo: decoding, letterbox into the input tensor, and boxes from
    the model's rows (NMS included), each as the server does it (OpenCV on one thread per call);
    the model's run is not counted."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    spent, params = np.zeros(3), DetectParams()
    try:
        for i in range(images + 3):                    # the first 3 warm up
            data = jpegs[i % len(jpegs)]
            t0 = time.thread_time()
            image = detector.decode(data, max_pixels)
            t1 = time.thread_time()
            batch, geo = detector.preprocess(image.rgb)
            t2 = time.thread_time()
            raw = detector.run(batch)
            t3 = time.thread_time()
            image.to_photo(detector.postprocess(raw[0], geo, params).boxes)
            t4 = time.thread_time()
            if i >= 3:
                spent += (t1 - t0, t2 - t1, t4 - t3)
    finally:
        cv2.setNumThreads(threads)
    decode, preprocess, postprocess = (spent * 1000 / images).tolist()
    return {"images": images, "decode": decode, "preprocess": preprocess, "postprocess": postprocess}


def http_floor(jpegs: list[bytes], clients: int, seconds: float, warmup_s: float) -> dict:
    """``bench.floor_app`` (FastAPI on uvicorn, the upload read, no vision) under the same
    closed-loop clients: its CPU and the clients' per request."""
    with uvicorn_server(ROOT_MODELS, app=FLOOR_APP) as server:
        request = _requests(server, jpegs)
        asyncio.run(closed_loop(*request, clients, warmup_s))
        results, wall, cpu, client_cpu = _closed_turn(server, request, clients, seconds)
    ok = sum(r.status == 200 for r in results)
    return {"clients": clients, "seconds": wall, "ok": ok, "requests_per_s": ok / wall,
            "server_cpu_ms_per_request": cpu * 1000 / max(ok, 1),
            "client_cpu_ms_per_request": client_cpu * 1000 / max(ok, 1)}


def bench_runtime(model: Path, jpegs: list[bytes], clients: tuple[int, ...], seconds: float, warmup_s: float,
                  rounds: int, overload_factor: float, overload_seconds: float, soak_seconds: float,
                  mixed_seconds: float = 0.0) -> dict:
    """``model``: the detector measured raw; the servers serve its folder."""
    t0 = time.perf_counter()
    models_dir = model.parent
    settings = Settings()
    raw = RawBound(model, settings, jpegs)
    target = target_clients(clients)
    with ExitStack() as stack:
        # one run at a time is the plan already where there is one instance (CUDA): no third server
        modes_env = {m: env for m, env in MODES.items() if not (m == "batched_one_run" and raw.plan.instances == 1)}
        servers = {m: stack.enter_context(uvicorn_server(models_dir, settings=env)) for m, env in modes_env.items()}
        levels, raw_turns = measure_levels(servers, jpegs, clients, seconds, warmup_s, rounds, raw, target)
        modes: dict[str, dict] = {m: {"levels": levels[m]} for m in servers}
        top = next(x for x in levels["batched"] if x["clients"] == target)
        rate = overload_factor * top["images_per_s"]
        modes["batched"]["overload"] = overload(servers["batched"], jpegs, rate, overload_seconds)
        phones = [make_phone_jpeg(k) for k in range(3)] if mixed_seconds > 0 else []
        if phones:
            modes["batched"]["mixed"] = mixed_sizes(servers["batched"], jpegs, phones,
                                                    MIXED_LOAD * top["images_per_s"], mixed_seconds)
        modes["batched"]["soak"] = soak(servers["batched"], jpegs, 16, soak_seconds) if soak_seconds > 0 else None
    mixed_rate = MIXED_LOAD * top["images_per_s"]
    if phones:
        with uvicorn_server(models_dir) as server:  # the defaults, on a server fresh as in production
            modes["batched"]["mixed_adaptive"] = _fresh_mixed(server, jpegs, phones, mixed_rate, mixed_seconds,
                                                              warmup_s)
    with uvicorn_server(models_dir) as server:      # the defaults: the adaptive concurrency limit
        modes["batched"]["overload_adaptive"] = learnt_overload(server, jpegs, rate, overload_seconds,
                                                                max(seconds / 2, warmup_s))
    with uvicorn_server(models_dir, settings=STRICT) as server:   # latency first: the same, for both loads
        if phones:
            modes["batched"]["mixed_strict"] = _fresh_mixed(server, jpegs, phones, mixed_rate, mixed_seconds,
                                                            warmup_s)
        modes["batched"]["overload_strict"] = learnt_overload(server, jpegs, rate, overload_seconds,
                                                              max(seconds / 2, warmup_s))
    front = front_cpu_ms(raw.side, jpegs, settings.max_pixels)
    floor = http_floor(jpegs, target, max(seconds / 2, 1.0), warmup_s)
    others = [x for x in modes["batched"]["levels"] if x["clients"] != target]
    after = {b: raw.at(b) for b in sorted({1, *(max(1, math.ceil(x["mean_batch"])) for x in others)})}
    for level in modes["batched"]["levels"]:
        level["raw_images_per_s_at_mean_batch"] = (
            float(np.mean([t["images_per_s"] for t in raw_turns])) if level["clients"] == target and raw_turns
            else after[max(1, math.ceil(level["mean_batch"]))]["images_per_s"])
    return {"settings": {"max_batch": settings.max_batch, "max_delay_ms": settings.max_delay_ms,
                         "max_queue": settings.max_queue, "max_in_flight": settings.max_in_flight,
                         "min_in_flight": settings.min_in_flight, "latency_tolerance": settings.latency_tolerance,
                         "standing_after": settings.standing_after,
                         "request_timeout_ms": settings.request_timeout_ms, **asdict(thread_plan(settings))},
            "seconds": seconds, "warmup_s": warmup_s, "rounds": rounds, **modes, "raw": list(after.values()),
            "raw_turns": raw_turns, "raw_turns_clients": target, "strict_settings": STRICT, "cores": usable_cores(),
            "front_cpu_ms": front, "http_floor": floor, "elapsed_s": time.perf_counter() - t0}


class RawBound:
    """The detector alone on preprocessed tensors, in this process, in the two ways the cores can run
    it: the server's thread plan (its instances side by side, each on its intra-op threads) and one
    run at a time on all cores; the upper bound is the faster of the two."""

    def __init__(self, model: Path, settings: Settings, jpegs: list[bytes]) -> None:
        self.plan = thread_plan(settings)
        self.side = load_detector(model, settings)
        self.whole = load_detector(model, settings.model_copy(update={"inference_instances": 1,
                                                                             "intra_op_threads": 0}))
        self.tensors = [self.side.preprocess(decode_image(j, settings.max_pixels).rgb)[0] for j in jpegs]

    def at(self, batch: int, share: float = 1.0) -> dict:
        """Both ways at ``batch``, on ``share`` of the full number of calls (a turn among others)."""
        calls = max(20, round(400 * share) // batch)
        one = bench_raw(self.whole, self.tensors, batch, calls, 3)
        both = bench_raw_side_by_side(self.side, self.tensors, batch, self.plan.instances,
                                      max(10, calls // self.plan.instances), 2)
        return {"batch": batch, "one_run_images_per_s": one["images_per_s"],
                "side_by_side_images_per_s": both["images_per_s"], "runs_side_by_side": self.plan.instances,
                "side_by_side_cpu_ms_per_image": both["cpu_ms_per_image"],
                "one_run_cpu_ms_per_image": one["cpu_ms_per_image"],
                "least_cpu_ms_per_image": min(one["cpu_ms_per_image"], both["cpu_ms_per_image"]),
                "images_per_s": max(one["images_per_s"], both["images_per_s"])}


def runtime_ratios(r: dict) -> dict:
    """At 16 clients (or the top level): batched against raw ONNX Runtime, against unbatched, and
    against one model run at a time."""
    def at(levels: list[dict]) -> dict:
        c = target_clients(tuple(x["clients"] for x in levels))
        return next(x for x in levels if x["clients"] == c)

    b, u = at(r["batched"]["levels"]), at(r["unbatched"]["levels"])
    out = {"clients": b["clients"], "batched_over_raw": b["images_per_s"] / b["raw_images_per_s_at_mean_batch"],
           "batched_over_unbatched": b["images_per_s"] / u["images_per_s"]}
    if "batched_one_run" in r:
        out["batched_over_one_run"] = b["images_per_s"] / at(r["batched_one_run"]["levels"])["images_per_s"]
    if "two_processes" in r:
        out["two_processes_over_one"] = at(r["two_processes"]["levels"])["images_per_s"] / b["images_per_s"]
    if "http_floor" in r and r.get("raw_turns"):
        out["ceiling"] = ceilings(r, b, u)
    return out


def ceilings(r: dict, batched: dict, unbatched: dict) -> dict:
    """The most any server doing ``POST /detect``'s work could serve on these cores, from this run's
    own CPU costs per photo: the model's run (the cheaper of the two ways to run it, at the batch the
    batched server formed, or at the cheapest batch measured), the vision work around it
    (``front_cpu_ms``), and the HTTP floor's server and client CPU (``http_floor``). A server's
    images/s cannot pass ``cores x 1000 / those ms``: CPU time adds up, and sharing the cores only
    adds to it. Read against raw ONNX Runtime (at the batch formed) and against the unbatched
    server; each also without the HTTP floor (the vision work alone, as if HTTP and the clients
    cost nothing)."""
    f, h, cores = r["front_cpu_ms"], r["http_floor"], r["cores"]
    turns = r["raw_turns"]
    model_at_batch = float(np.mean([t["least_cpu_ms_per_image"] for t in turns]))
    model_cheapest = min(x["least_cpu_ms_per_image"] for x in [*r["raw"], *turns])
    vision = f["decode"] + f["preprocess"] + f["postprocess"]
    http = h["server_cpu_ms_per_request"] + h["client_cpu_ms_per_request"]
    raw = float(np.mean([t["images_per_s"] for t in turns]))

    def most(model_ms: float, extra: float) -> float:
        return cores * 1000 / (model_ms + extra)

    def served(level: dict) -> float:
        return (level["server_cpu_cores"] + level.get("client_cpu_cores", 0.0)) * 1000 / level["images_per_s"]

    model_alone = next(x["least_cpu_ms_per_image"] for x in r["raw"] if x["batch"] == 1)
    return {"cores": cores, "model_ms_at_batch": model_at_batch, "model_ms_cheapest": model_cheapest,
            "model_ms_batch_1": model_alone, "vision_ms": vision, "http_ms": http, "raw_images_per_s": raw,
            "served_ms": served(batched), "rest_ms": served(batched) - model_at_batch - vision - http,
            "unbatched_served_ms": served(unbatched),
            "unbatched_rest_ms": served(unbatched) - model_alone - vision - http,
            "most_images_per_s_at_batch": most(model_at_batch, vision + http),
            "most_images_per_s_cheapest": most(model_cheapest, vision + http),
            "over_raw": most(model_at_batch, vision + http) / raw,
            "over_raw_vision_only": most(model_at_batch, vision) / raw,
            "over_unbatched": most(model_cheapest, vision + http) / unbatched["images_per_s"],
            "over_unbatched_vision_only": most(model_cheapest, vision) / unbatched["images_per_s"]}
