"""Faces over HTTP: enroll, ``/verify`` and ``/identify`` latency against a real uvicorn server
serving the bundled models, with synthetic people the models never saw (their own seed)."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from PIL import Image

from bench.images import enlarge_to_phone, encode_jpeg
from bench.server import Server
from bench.stats import summarize_ms

SEED = 777
PHONE_PAIRS = 8   # /verify of 12-megapixel photos


def face_photos(identities: int, per_identity: int) -> list[list[bytes]]:
    """JPEG photos of people, ``per_identity`` each; the first photo of each holds only that person."""
    from training.synth.face_parts import identity_params
    from training.synth.faces import FaceConfig, render_face_photo

    cfg = FaceConfig()
    people = []
    for i in range(identities):
        who, photos, k = identity_params(SEED, i), [], 0
        while len(photos) < per_identity:
            image, faces = render_face_photo(np.random.default_rng([SEED, i, k]), who, cfg)
            k += 1
            if photos or len(faces) == 1:   # the enrollment photo: one face only
                photos.append(encode_jpeg(image))
        people.append(photos)
    return people


def _timed(client: httpx.Client, method: str, url: str, **kw) -> tuple[float, int]:
    t0 = time.perf_counter()
    r = client.request(method, url, **kw)
    return time.perf_counter() - t0, r.status_code


def _files(**images: bytes) -> dict:
    return {k: (f"{k}.jpg", v, "image/jpeg") for k, v in images.items()}


def _load(server: Server, calls: list[dict], clients: int) -> dict:
    """``calls`` (request keyword arguments) spread over ``clients`` threads, one connection each."""
    def worker(k: int) -> list[tuple[float, int]]:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            return [_timed(client, "POST", **c) for c in calls[k::clients]]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for batch in pool.map(worker, range(clients)) for r in batch]
    wall = time.perf_counter() - t0
    ok = [t for t, status in results if status == 200 or status == 201]
    return {"clients": clients, "requests": len(results), "ok": len(ok), "per_s": len(ok) / wall,
            "latency": summarize_ms(ok)}


def verify_phone_photos(server: Server, people: list[list[bytes]], pairs: int) -> dict:
    """``POST /verify`` of two photos of one person, each enlarged to a phone camera's 12
    megapixels, one client: latency, and how many pairs were still verified."""
    def phone(jpeg: bytes, seed: int) -> bytes:
        return enlarge_to_phone(np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")), seed)

    sent = [(phone(p[0], 2 * i), phone(p[1], 2 * i + 1)) for i, p in enumerate(people[:pairs])]
    times, verified = [], 0
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        client.post("/verify", files=_files(image1=sent[0][0], image2=sent[0][1]))   # untimed
        for a, b in sent:
            t0 = time.perf_counter()
            r = client.post("/verify", files=_files(image1=a, image2=b))
            if r.status_code == 200:
                times.append(time.perf_counter() - t0)
                verified += r.json()["verified"]
    return {"pairs": len(sent), "ok": len(times), "verified": verified, "jpeg_bytes": len(sent[0][0]),
            "latency": summarize_ms(times)}


def bench_faces(server: Server, identities: int, per_identity: int, clients: tuple[int, ...]) -> dict:
    """Enroll one photo of each person, then verify pairs and identify the other photos."""
    t0 = time.perf_counter()
    people = face_photos(identities, per_identity)
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        sids = [client.post("/subjects", json={"name": f"person-{i}"}).json()["id"] for i in range(identities)]
    enroll = _load(server, [{"url": f"/subjects/{sid}/faces", "files": _files(image=p[0])}
                            for sid, p in zip(sids, people)], 1)
    verify = [{"url": "/verify", "files": _files(image1=p[0], image2=p[1 + j % (per_identity - 1)])}
              for j, p in enumerate(people)]
    identify = [{"url": "/identify", "files": _files(image=photo)} for p in people for photo in p[1:]]
    out = {"identities": identities, "photos_per_identity": per_identity, "enroll": enroll,
           "verify": [_load(server, verify, c) for c in clients],
           "identify": [_load(server, identify, c) for c in clients],
           "verify_phone": verify_phone_photos(server, people, min(PHONE_PAIRS, identities))}
    out["elapsed_s"] = time.perf_counter() - t0
    return out
