"""The serving runtime through HTTP: several images in one request answered in order, the image
limit, a full model queue answered 503 with Retry-After, /metrics, and a graceful shutdown of a
real uvicorn process with requests in flight."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.settings import Settings
from bench.server import ROOT, free_port, uvicorn_server
from tests.conftest import BUNDLED_MODELS, wait_ready
from tests.images import jpeg_bytes

SIZES = ((320, 240), (200, 300), (640, 480))


def scene(width: int, height: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 90, np.uint8)
    for _ in range(4):
        x, y = rng.integers(0, width - 40), rng.integers(0, height - 40)
        img[y:y + 40, x:x + 30] = rng.integers(0, 255, 3)
    return jpeg_bytes(img)


PHOTOS = [scene(w, h, i) for i, (w, h) in enumerate(SIZES)]


def parts(*blobs: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("image", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(blobs)]


def hold(batcher) -> tuple[threading.Event, threading.Event, list[int]]:
    """Make ``batcher``'s model wait for ``gate`` before each run; ``running`` is set when a run
    starts; ``ran`` records the rows of each run."""
    gate, running, ran = threading.Event(), threading.Event(), []
    real = batcher.run

    def held(batch):
        ran.append(len(batch))
        running.set()
        gate.wait(10)
        return real(batch)

    batcher.run = held
    return gate, running, ran


@pytest.mark.parametrize("path", ["/detect", "/faces/detect", "/segment"])
def test_several_images_answer_in_order_as_each_alone(client, path):
    r = client.post(path, files=parts(*PHOTOS))
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [(x["image"]["width"], x["image"]["height"]) for x in results] == list(SIZES)
    for blob, got in zip(PHOTOS, results):
        alone = client.post(path, files=parts(blob)).json()
        for key in ("detections", "faces", "classes", "mask"):
            if key in alone:
                assert got[key] == alone[key]


def test_a_bad_image_among_several_is_named(client):
    r = client.post("/detect", files=parts(PHOTOS[0], b"not an image", PHOTOS[1]))
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_image"
    assert r.json()["error"]["message"].startswith("image 2 of 3: ")


def test_segment_png_takes_one_image(client):
    r = client.post("/segment", params={"format": "png"}, files=parts(*PHOTOS[:2]))
    assert r.status_code == 422 and "format=json" in r.json()["error"]["message"]


def test_too_many_images_is_422(tmp_path):
    app = create_app(Settings(models_dir=BUNDLED_MODELS, data_dir=tmp_path, max_images=2))
    with TestClient(app) as c:
        wait_ready(c)
        r = c.post("/detect", files=parts(*PHOTOS))
        assert r.status_code == 422 and r.json()["error"]["code"] == "too_many_images"


def test_a_full_queue_is_503_with_retry_after_and_counted(tmp_path):
    app = create_app(Settings(models_dir=BUNDLED_MODELS, data_dir=tmp_path, max_batch=1, max_queue=1,
                              inference_instances=1))              # one run at a time: the queue builds
    with TestClient(app) as c:
        wait_ready(c)
        engine = c.app.state.engine
        detector = c.app.state.registry.detector()
        batcher = engine.batchers[id(detector)]
        gate, running, _ = hold(batcher)
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(c.post, "/detect", files=parts(PHOTOS[0]))
            assert running.wait(10)                             # the model is busy with the first
            second = pool.submit(c.post, "/detect", files=parts(PHOTOS[1]))
            deadline = time.monotonic() + 10
            while batcher.depth < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            t0 = time.perf_counter()
            refused = c.post("/detect", files=parts(PHOTOS[2]))  # the queue (1) is full
            refused_s = time.perf_counter() - t0
            gate.set()
            assert first.result().status_code == 200 and second.result().status_code == 200
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "1" and refused.json()["error"]["code"] == "overloaded"
        assert refused_s < 1.0                                  # at once, not after the queue drains
        text = c.get("/metrics").text
        assert 'sightline_rejected_total{model="detector",reason="queue_full"} 1.0' in text


def test_past_max_in_flight_is_refused_on_arrival(tmp_path):
    app = create_app(Settings(models_dir=BUNDLED_MODELS, data_dir=tmp_path, max_in_flight=2))
    with TestClient(app) as c:
        wait_ready(c)
        batcher = c.app.state.engine.batchers[id(c.app.state.registry.detector())]
        gate, running, _ = hold(batcher)
        with ThreadPoolExecutor(2) as pool:
            busy = [pool.submit(c.post, "/detect", files=parts(PHOTOS[k])) for k in (0, 1)]
            assert running.wait(10)
            deadline = time.monotonic() + 10
            while c.app.state.engine.active < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            refused = c.post("/detect", files=parts(PHOTOS[2]))
            refused_faces = c.post("/faces/detect", files=parts(PHOTOS[2]))    # the limit is the server's
            gate.set()
            assert [f.result().status_code for f in busy] == [200, 200]
        for r in (refused, refused_faces):
            assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded", r.text
            assert r.headers["Retry-After"] == "1" and "SIGHTLINE_MAX_IN_FLIGHT" in r.json()["error"]["message"]
        assert c.post("/detect", files=parts(*PHOTOS)).status_code == 200   # idle: 3 images pass a limit of 2
        text = c.get("/metrics").text
        assert 'sightline_rejected_total{model="admission",reason="queue_full"} 2.0' in text


def test_metrics_expose_requests_batches_queues_and_rejections(client):
    client.post("/detect", files=parts(PHOTOS[0]))
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for series in ('sightline_requests_total{endpoint="/detect",method="POST",status="200"}',
                   'sightline_request_duration_seconds_bucket{endpoint="/detect",le="0.005",method="POST",'
                   'status="200"}',
                   'sightline_batch_size_bucket{le="1.0",model="detector"}',
                   'sightline_batch_requests_count{model="detector"}',
                   'sightline_queue_depth{model="segmenter"}',
                   'sightline_inference_seconds_count{model="detector"}',
                   'sightline_rejected_total{model="embedder",reason="deadline_exceeded"}',
                   "sightline_requests_in_flight"):
        assert series in text, series


def test_uvicorn_picks_httptools():
    """It cuts the event loop's CPU per request (README, Serving runtime); uvicorn's automatic
    choice falls back to h11 without a word if it is missing."""
    config = uvicorn.Config("app.main:create_app", factory=True)
    config.load()
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is a dependency everywhere but Windows (pyproject marker)")
def test_uvicorn_picks_uvloop():
    """As above for the event loop: uvicorn falls back to asyncio's without a word."""
    loop = uvicorn.Config("app.main:create_app", factory=True).get_loop_factory()()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()


def test_sigterm_drains_then_finishes_what_was_admitted():
    """SIGTERM: /readyz turns 503 at once; every request already sent is answered; the process exits."""
    settings = {"SIGHTLINE_DRAIN_SECONDS": "1.5", "SIGHTLINE_REQUEST_TIMEOUT_MS": "60000"}
    with uvicorn_server(BUNDLED_MODELS, settings=settings) as server:
        url = server.base_url
        many = parts(*PHOTOS)

        def post() -> tuple[int, str]:
            r = httpx.post(f"{url}/segment", files=many, timeout=60)
            return r.status_code, r.text[:200]

        with ThreadPoolExecutor(6) as pool:
            sent = [pool.submit(post) for _ in range(6)]
            time.sleep(0.3)                                  # they are in flight
            os.kill(server.pid, signal.SIGTERM)
            time.sleep(0.1)
            ready = httpx.get(f"{url}/readyz", timeout=10)
            late = httpx.post(f"{url}/detect", files=parts(PHOTOS[0]), timeout=30)   # during the drain
            codes = [f.result() for f in sent]
        assert ready.status_code == 503 and ready.json()["error"]["code"] == "shutting_down"
        assert [c for c, _ in codes] == [200] * 6, codes
        assert late.status_code == 200
        server.process.wait(timeout=60)
        assert server.process.returncode in (0, -signal.SIGTERM)


def test_a_client_that_disconnects_has_its_queued_work_dropped(tmp_path):
    """Over real TCP (uvicorn in a thread of this process, so the model can be held): the client
    gives up while its request waits behind a busy model; its run never happens."""
    import uvicorn

    from bench.server import free_port

    app = create_app(Settings(models_dir=BUNDLED_MODELS, data_dir=tmp_path, max_batch=1, inference_instances=1))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.05)
        batcher = app.state.engine.batchers[id(app.state.registry.detector())]
        gate, running, ran = hold(batcher)
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.post, f"{url}/detect", files=parts(PHOTOS[0]), timeout=30)
            assert running.wait(10)
            with pytest.raises(httpx.ReadTimeout):                 # waits behind the first, gives up
                httpx.post(f"{url}/detect", files=parts(PHOTOS[1]), timeout=0.5)
            time.sleep(0.3)                                        # the server notices the disconnect
            gate.set()
            assert first.result().status_code == 200
        time.sleep(0.3)
        assert ran == [1]                                          # the second never ran
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        assert 'sightline_rejected_total{model="detector",reason="client_gone"} 1.0' in metrics
        assert 'status="499"' in metrics
    finally:
        server.should_exit = True
        thread.join(30)


def _series(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` with ``labels`` in Prometheus text (prometheus-client's parser)."""
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_several_server_processes_behind_one_port(tmp_path):
    """``SIGHTLINE_WORKERS=2``: two processes answer on one port, /metrics adds both up (whichever
    one answers the scrape), an earlier run's metric files are cleared, and SIGTERM stops both."""
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"an earlier run's file")   # unreadable: must be cleared
    env = {**os.environ, "SIGHTLINE_WORKERS": "2", "SIGHTLINE_PORT": str(port), "SIGHTLINE_HOST": "127.0.0.1",
           "SIGHTLINE_MODELS_DIR": str(BUNDLED_MODELS), "SIGHTLINE_DATA_DIR": str(tmp_path / "data"),
           "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, ready = time.time() + 120, 0
        while ready < 6:                      # fresh connections land on either process: both ready
            assert proc.poll() is None and time.time() < deadline
            try:
                ready = ready + 1 if httpx.get(f"{url}/readyz", timeout=5).status_code == 200 else 0
            except httpx.TransportError:
                ready = 0
            time.sleep(0.05)
        for _ in range(10):
            assert httpx.post(f"{url}/detect", files=parts(PHOTOS[0]), timeout=60).status_code == 200
        for _ in range(4):                    # each scrape, from either process, counts all ten
            text = httpx.get(f"{url}/metrics", timeout=10).text
            assert _series(text, "sightline_requests_total", endpoint="/detect", method="POST", status="200") == 10
            assert _series(text, "sightline_concurrency_limit") == 2 * Settings().max_in_flight   # both live
        assert not (metrics_dir / "counter_1.db").exists()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
