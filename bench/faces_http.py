"""Faces over HTTP with the served (real) face models: enroll, ``/verify`` and ``/identify`` latency
against a real uvicorn server, on real photos from registry packages (``training.pretrained.realphotos``:
portraits of Barack Obama (three), Joe Biden, Eileen Collins and Grace Hopper, and the 1927 Solvay
conference photo of 29 people). One photo of each of the four people is enrolled."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from PIL import Image

from bench.images import enlarge_to_phone
from bench.server import Server
from bench.stats import summarize_ms

PHONE_PAIRS = 4   # /verify of 12-megapixel photos
ENROLL = {"Barack Obama": "obama", "Joe Biden": "biden", "Eileen Collins": "collins", "Grace Hopper": "hopper"}
PHOTOGRAPHS = ("obama", "obama2", "obama3", "biden", "collins", "hopper")


def _timed(client: httpx.Client, method: str, url: str, **kw) -> tuple[float, int]:
    t0 = time.perf_counter()
    r = client.request(method, url, **kw)
    return time.perf_counter() - t0, r.status_code


def _files(**images: bytes) -> dict:
    return {k: (f"{k}.jpg", v, "image/jpeg") for k, v in images.items()}


def _load(server: Server, calls: list[dict], clients: int) -> dict:
    """``calls`` (request keyword arguments) spread over ``clients`` threads, one connection each."""
    def worker(k: int) -> list[tuple[float, int]]:
        with httpx.Client(base_url=server.base_url, timeout=120) as client:
            return [_timed(client, "POST", **c) for c in calls[k::clients]]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for batch in pool.map(worker, range(clients)) for r in batch]
    wall = time.perf_counter() - t0
    ok = [t for t, status in results if status == 200 or status == 201]
    return {"clients": clients, "requests": len(results), "ok": len(ok), "per_s": len(ok) / wall,
            "latency": summarize_ms(ok)}


def verify_phone_photos(server: Server, photos: dict[str, bytes], pairs: int) -> dict:
    """``POST /verify`` of two photos of Barack Obama, each enlarged to a phone camera's 12
    megapixels, one client: latency, and how many pairs were still verified."""
    def phone(jpeg: bytes, seed: int) -> bytes:
        return enlarge_to_phone(np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")), seed)

    sent = [(phone(photos["obama"], 2 * i), phone(photos["obama2"], 2 * i + 1)) for i in range(pairs)]
    times, verified = [], 0
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        client.post("/verify", files=_files(image1=sent[0][0], image2=sent[0][1]))   # untimed
        for a, b in sent:
            t0 = time.perf_counter()
            r = client.post("/verify", files=_files(image1=a, image2=b))
            if r.status_code == 200:
                times.append(time.perf_counter() - t0)
                verified += r.json()["verified"]
    return {"pairs": len(sent), "ok": len(times), "verified": verified, "jpeg_bytes": len(sent[0][0]),
            "latency": summarize_ms(times)}


def real_photo_bytes() -> tuple[dict[str, bytes], bytes]:
    """The portraits' and the group photo's bytes (fetched into the package cache once)."""
    from training.pretrained.realphotos import real_photos

    photos = real_photos()
    return {k: photos.portraits[k].read_bytes() for k in PHOTOGRAPHS}, photos.group.read_bytes()


def bench_faces(server: Server, rounds: int, clients: tuple[int, ...]) -> dict:
    """Enroll one photo of each of four people, then verify every pair of the photographs and
    identify each photograph and the group photo, ``rounds`` times each, at each client count."""
    t0 = time.perf_counter()
    photos, group = real_photo_bytes()
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        sids = {name: client.post("/subjects", json={"name": name}).json()["id"] for name in ENROLL}
    enroll = _load(server, [{"url": f"/subjects/{sids[name]}/faces", "files": _files(image=photos[key])}
                            for name, key in ENROLL.items()], 1)
    keys = list(photos)
    pairs = [(a, b) for i, a in enumerate(keys) for b in keys[i + 1:]]
    verify = [{"url": "/verify", "files": _files(image1=photos[a], image2=photos[b])} for a, b in pairs] * rounds
    identify = [{"url": "/identify", "files": _files(image=photos[k])} for k in keys] * rounds
    out = {"people": len(ENROLL), "photographs": len(keys), "rounds": rounds, "enroll": enroll,
           "verify": [_load(server, verify, c) for c in clients],
           "identify": [_load(server, identify, c) for c in clients],
           "identify_group": _load(server, [{"url": "/identify", "files": _files(image=group)}] * max(2, rounds), 1),
           "verify_phone": verify_phone_photos(server, photos, PHONE_PAIRS)}
    out["elapsed_s"] = time.perf_counter() - t0
    return out
