"""Segmentation over HTTP: ``POST /segment`` latency and response size in each answer format, one
client, against the same uvicorn server as the detection section, on the same 640x480 JPEGs."""

from __future__ import annotations

import time

import httpx

from bench.server import Server
from bench.stats import summarize_ms

FORMATS = (("json + png mask", {}), ("json + png mask + rle", {"rle": "true"}), ("png", {"format": "png"}),
           ("png overlay (jpeg)", {"format": "png", "overlay": "true"}))


def bench_segment(server: Server, jpegs: list[bytes], requests: int, warmup: int) -> dict:
    """Each format: ``warmup`` untimed requests, then ``requests`` timed ones cycling over ``jpegs``."""
    t0 = time.perf_counter()
    out = []
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        for name, params in FORMATS:
            times, sizes = [], []
            for k in range(warmup + requests):
                image = jpegs[k % len(jpegs)]
                start = time.perf_counter()
                r = client.post("/segment", files={"image": ("x.jpg", image, "image/jpeg")}, params=params)
                took = time.perf_counter() - start
                if r.status_code != 200:
                    raise RuntimeError(f"/segment {params}: {r.status_code} {r.text[:200]}")
                if k >= warmup:
                    times.append(took)
                    sizes.append(len(r.content))
            out.append({"format": name, "params": params, "latency": summarize_ms(times),
                        "bytes_mean": sum(sizes) / len(sizes), "bytes_max": max(sizes)})
    return {"formats": out, "requests": requests, "elapsed_s": time.perf_counter() - t0}
