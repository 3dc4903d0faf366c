"""Closed-loop load on ``POST /detect``: N concurrent clients (one httpx.AsyncClient, one
connection each) sending JPEGs back to back until a deadline. Loopback only."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

import httpx
import numpy as np

from bench.server import Server, process_cpu_seconds
from bench.stats import summarize_ms

STAGES = ("decode", "preprocess", "inference", "postprocess")


@dataclass(frozen=True)
class Sample:
    start: float
    end: float
    status: int  # HTTP status, 0 for a transport error
    timings: dict | None  # the server's own timings_ms on a 200


async def _post(client: httpx.AsyncClient, data: bytes) -> Sample:
    t0 = time.perf_counter()
    try:
        r = await client.post("/detect", files={"image": ("bench.jpg", data, "image/jpeg")})
    except httpx.TransportError:
        return Sample(t0, time.perf_counter(), 0, None)
    t1 = time.perf_counter()
    return Sample(t0, t1, r.status_code, r.json()["timings_ms"] if r.status_code == 200 else None)


async def _client(client: httpx.AsyncClient, jpegs: list[bytes], first: int, step: int, deadline: float,
                  out: list[Sample]) -> None:
    i = first
    while time.perf_counter() < deadline:
        out.append(await _post(client, jpegs[i % len(jpegs)]))
        i += step


async def _drive(base_url: str, jpegs: list[bytes], clients: int, seconds: float) -> list[Sample]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    samples: list[Sample] = []
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60.0) as client:
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*(_client(client, jpegs, k, clients, deadline, samples) for k in range(clients)))
    return samples


def _summarize(samples: list[Sample], clients: int, wall: float, server_cpu: float, client_cpu: float) -> dict:
    ok = [s for s in samples if s.status == 200]
    first = min(s.start for s in samples)
    span = max(s.end for s in samples) - first
    server = {k: float(np.median([s.timings[k] for s in ok])) for k in STAGES} if ok else {}
    return {"clients": clients, "requests": len(samples), "ok": len(ok),
            "errors": dict(Counter(str(s.status) for s in samples if s.status != 200)),
            "seconds": span, "images_per_s": len(ok) / span if span > 0 else 0.0,
            "latency": summarize_ms([s.end - s.start for s in ok]),
            "server_median_stage_ms": server,
            "server_cpu_cores": server_cpu / wall, "client_cpu_cores": client_cpu / wall}


def bench_level(server: Server, jpegs: list[bytes], clients: int, seconds: float, warmup_s: float) -> dict:
    """Warm up for ``warmup_s``, then measure ``clients`` concurrent clients for ``seconds``."""
    if warmup_s > 0:
        asyncio.run(_drive(server.base_url, jpegs, clients, warmup_s))
    cpu0, proc0, t0 = process_cpu_seconds(server.pid), time.process_time(), time.perf_counter()
    samples = asyncio.run(_drive(server.base_url, jpegs, clients, seconds))
    wall = time.perf_counter() - t0
    server_cpu = process_cpu_seconds(server.pid) - cpu0
    return _summarize(samples, clients, wall, server_cpu, time.process_time() - proc0)


def server_provider(server: Server) -> str:
    """The execution provider the server's first model really runs on (from ``/models``)."""
    models = httpx.get(f"{server.base_url}/models", timeout=10.0).json()["models"]
    return models[0]["execution_provider"] if models else "none"
