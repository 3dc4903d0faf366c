"""The adaptive concurrency limit (app/admission.py) on a fake clock, then in the server."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

import numpy as np

from app.admission import (MIN_UNLOADED, PROBE_AFTER, PROBE_EVERY_S, PROBE_MAX_S, SIZE_FLOOR, STANDING_AFTER,
                           AdaptiveLimit, kind, size_class)
from app.main import create_app
from app.settings import Settings
from tests.conftest import BUNDLED_MODELS, wait_ready
from tests.images import jpeg_bytes, small_jpeg
from tests.test_serving import PHOTOS, hold, parts

ALONE, BUSY = 1, 24      # requests in flight when one was admitted, itself included


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def learnt(base: float = 0.010, endpoint: str = "/detect", **kw) -> AdaptiveLimit:
    limiter = AdaptiveLimit(kw.pop("min_limit", 2), kw.pop("max_limit", 24), kw.pop("tolerance", 2.0), **kw)
    for _ in range(MIN_UNLOADED):
        limiter.observe(endpoint, base, ALONE)
    return limiter


def test_off_is_the_fixed_limit():
    limiter = AdaptiveLimit(2, 24, 0.0)
    for _ in range(100):
        limiter.observe("/detect", 10.0, BUSY)
    assert not limiter.enabled and limiter.limit == 24 and limiter.unloaded("/detect") is None


def test_the_unloaded_latency_is_a_low_quantile_of_requests_served_alone():
    limiter = AdaptiveLimit(2, 24, 2.0)
    for ms in (12, 11, 10, 50, 13):
        limiter.observe("/detect", ms / 1000, ALONE)
    limiter.observe("/detect", 0.001, 2)     # not alone: says nothing about the unloaded latency
    assert limiter.unloaded("/detect") == pytest.approx(0.010)
    assert limiter.unloaded("/segment") is None


def test_slow_answers_shrink_it_once_a_round_to_its_floor_and_quick_ones_grow_it_back():
    limiter = learnt(0.010)
    assert limiter.limit == 24                       # a fresh server serves a burst
    limiter.observe("/detect", 0.100, BUSY)          # 10 x the unloaded latency: down at once
    first = limiter.limit
    assert first <= 19
    for _ in range(first - 1):                       # the rest of that round's slow answers: once a round
        limiter.observe("/detect", 0.100, BUSY)
    assert limiter.limit == first
    for _ in range(200):
        limiter.observe("/detect", 0.100, BUSY)
    assert limiter.limit == 2
    for _ in range(50):
        limiter.observe("/detect", 0.015, BUSY)      # within 2 x: about one more per round of requests
    assert 5 <= limiter.limit <= 12
    for _ in range(500):
        limiter.observe("/detect", 0.012, ALONE)
    assert limiter.limit == 24


def test_a_standing_queue_halves_the_limit_at_once():
    limiter = learnt(0.010)
    limiter.congested(10)
    assert limiter.limit == 5
    limiter.congested(2)
    assert limiter.limit == 2                        # never below the floor
    off = AdaptiveLimit(2, 24, 0.0)
    off.congested(4)
    assert off.limit == 24


def test_it_settles_where_latency_is_tolerance_times_unloaded():
    """A 2-core server: n requests at once each take the unloaded 10 ms x max(1, n / 2). Kept full
    (overload), the limit settles at 4, where latency is twice the unloaded one."""
    limiter = learnt(0.010)
    seen = []
    for _ in range(1000):
        n = limiter.limit
        limiter.observe("/detect", 0.010 * max(1.0, n / 2), n)
        seen.append(limiter.limit)
    assert set(seen[-200:]) <= {4, 5}


def test_each_endpoint_is_judged_against_its_own_unloaded_latency():
    limiter = learnt(0.010, "/detect")
    for _ in range(MIN_UNLOADED):
        limiter.observe("/segment", 0.060, ALONE)
    for _ in range(500):
        limiter.observe("/segment", 0.080, BUSY)     # slow, but not for /segment
    assert limiter.limit == 24


def test_larger_uploads_are_their_own_kind():
    assert [size_class(n) for n in (0, SIZE_FLOOR, SIZE_FLOOR + 1, 2 * SIZE_FLOOR, 2 * SIZE_FLOOR + 1)] == [0, 0, 1, 1, 2]
    assert kind("/detect", 1, 75_000) == "/detect" and kind("/detect", 3, 75_000) == "/detect x3"
    assert kind("/detect", 1, 1_500_000) == "/detect <=2048 kB" != kind("/detect", 1, 700_000) == "/detect <=1024 kB"
    assert kind("/verify", 2, 3_000_000) == "/verify x2 <=4096 kB"


def test_a_large_photo_is_not_judged_against_small_ones():
    """Phone photos take three times as long as small ones alone: served alone or beside one small
    request, they neither shrink the limit nor make a standing queue."""
    big = kind("/detect", 1, 1_500_000)
    limiter = learnt(0.010, "/detect", tolerance=1.25)
    for _ in range(MIN_UNLOADED):
        limiter.observe(big, 0.030, ALONE)
    for _ in range(50):
        limiter.observe(big, 0.034, 2)
    assert limiter.limit == 24
    assert not limiter.standing(big, 0.034) and limiter.standing("/detect", 0.034)


def test_a_server_busy_from_its_start_probes_for_the_unloaded_latency():
    clock = Clock()
    limiter = AdaptiveLimit(2, 24, 2.0, clock=clock)
    for _ in range(PROBE_AFTER - 1):                   # a burst on a fresh server: served at the cap
        limiter.observe("/detect", 0.050, BUSY)
    assert limiter.limit == 24
    limiter.observe("/detect", 0.050, BUSY)           # still no unloaded latency after that many: probe
    assert limiter.limit == 1
    for _ in range(MIN_UNLOADED):                      # at limit 1 every request is alone
        limiter.observe("/detect", 0.010, ALONE)
    assert limiter.unloaded("/detect") == pytest.approx(0.010) and limiter.limit == 24


def test_a_light_load_that_overlaps_a_slow_endpoint_never_probes():
    """/segment requests overlapped by /detect arrivals at light load are never alone, but nothing is
    refused and the server is far from full: no probe; once something is refused meanwhile, it probes."""
    clock = Clock()
    limiter = learnt(0.010, "/detect", clock=clock)
    for _ in range(5 * PROBE_AFTER):
        limiter.observe("/segment", 0.070, 2, overlapped=True)
    assert limiter.limit == 24 and limiter.unloaded("/segment") is None
    for _ in range(PROBE_AFTER):
        limiter.observe("/segment", 0.070, 2, overlapped=True, refused=True)
    assert limiter.limit == 1


def test_a_probe_is_short_and_rare():
    clock = Clock()
    limiter = AdaptiveLimit(2, 24, 2.0, clock=clock)
    for _ in range(PROBE_AFTER):
        limiter.observe("/faces/detect", 0.050, BUSY)
    assert limiter.limit == 1
    clock.now += PROBE_MAX_S                           # nothing alone came: the probe ends anyway
    assert limiter.limit == 24
    limiter.observe("/faces/detect", 0.050, BUSY)
    assert limiter.limit == 24                         # not again so soon
    clock.now += PROBE_EVERY_S
    limiter.observe("/faces/detect", 0.050, BUSY)
    assert limiter.limit == 1


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError):
        AdaptiveLimit(0, 24, 2.0)
    with pytest.raises(ValueError):
        AdaptiveLimit(8, 4, 2.0)


def test_the_server_refuses_at_its_adaptive_limit_and_reports_it(tmp_path):
    app = create_app(Settings(models_dir=BUNDLED_MODELS, data_dir=tmp_path, max_in_flight=10, min_in_flight=3))
    with TestClient(app) as c:
        wait_ready(c)
        assert "sightline_concurrency_limit 10.0" in c.get("/metrics").text
        limiter = c.app.state.limiter
        for _ in range(MIN_UNLOADED):          # one at a time: the server learns /detect's unloaded latency
            assert c.post("/detect", files={"image": ("a.jpg", small_jpeg(), "image/jpeg")}).status_code == 200
        assert limiter.unloaded("/detect") is not None
        for _ in range(200):                   # then slow: it falls to its floor, and the server refuses there
            limiter.observe("/detect", 50 * limiter.unloaded("/detect"), 10)
        assert limiter.limit == 3
        batcher = c.app.state.engine.batchers[id(c.app.state.registry.detector())]
        gate, running, _ = hold(batcher)
        with ThreadPoolExecutor(3) as pool:
            busy = [pool.submit(c.post, "/detect", files=parts(PHOTOS[k])) for k in (0, 1, 2)]
            assert running.wait(10)
            deadline = time.monotonic() + 10
            while c.app.state.engine.active < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            refused = c.post("/detect", files=parts(PHOTOS[0]))
            gate.set()
            assert [f.result().status_code for f in busy] == [200, 200, 200]
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert "concurrency limit" in refused.json()["error"]["message"]
        assert "sightline_concurrency_limit " in c.get("/metrics").text
    several = create_app(Settings(models_dir=BUNDLED_MODELS, data_dir=tmp_path / "several", max_in_flight=10))
    with TestClient(several) as c:         # three photos in a request: judged against three photos, not one
        wait_ready(c)
        limiter = c.app.state.limiter
        for files in ([parts(PHOTOS[0])] * MIN_UNLOADED) + ([parts(*PHOTOS)] * MIN_UNLOADED):
            assert c.post("/detect", files=files).status_code == 200
        one, three = limiter.unloaded("/detect"), limiter.unloaded("/detect x3")
        assert one is not None and three is not None and limiter.limit == 10
    off = create_app(Settings(models_dir=BUNDLED_MODELS, data_dir=tmp_path / "off", max_in_flight=3,
                              latency_tolerance=0))
    with TestClient(off) as c:
        wait_ready(c)
        assert "sightline_concurrency_limit 3.0" in c.get("/metrics").text


def test_the_routes_note_their_uploads_size(tmp_path, monkeypatch):
    """/detect with a photo over SIZE_FLOOR bytes learns under its size class, not under /detect's;
    /verify, /identify and enrollment note their photos' count and bytes too."""
    import app.api.images

    noted = []
    real = app.api.images.note_images
    monkeypatch.setattr(app.api.images, "note_images", lambda n, size: (noted.append((n, size)), real(n, size)))
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    large = jpeg_bytes(noise)
    assert len(large) > SIZE_FLOOR
    with TestClient(create_app(Settings(models_dir=BUNDLED_MODELS, data_dir=tmp_path))) as c:
        wait_ready(c)
        limiter = c.app.state.limiter
        for _ in range(MIN_UNLOADED):
            assert c.post("/detect", files=parts(large)).status_code == 200
        assert limiter.unloaded("/detect") is None
        assert limiter.unloaded(kind("/detect", 1, len(large))) is not None
        noted.clear()
        c.post("/verify", files={"image1": ("a.jpg", PHOTOS[0], "image/jpeg"), "image2": ("b.jpg", large, "image/jpeg")})
        c.post("/identify", files=parts(PHOTOS[1]))
        subject = c.post("/subjects", json={"name": "x"}).json()["id"]
        c.post(f"/subjects/{subject}/faces", files=parts(PHOTOS[2]))
        assert noted == [(2, len(PHOTOS[0]) + len(large)), (1, len(PHOTOS[1])), (1, len(PHOTOS[2]))]


def test_a_request_in_flight_past_the_tolerance_is_a_standing_queue():
    limiter = learnt(base=0.010)
    assert not limiter.standing("/detect", 0.019) and limiter.standing("/detect", 0.021)
    assert not limiter.standing("/segment", 10.0)                    # nothing learnt: no judgement
    assert not AdaptiveLimit(2, 24, 0.0).standing("/detect", 10.0)   # off


def test_the_server_refuses_behind_a_standing_queue_below_its_limit(tmp_path):
    """Two requests held in the model past tolerance x their latency alone: a third is refused at
    once although the limit (10) is far off; with only one held (below the floor of 2) the next is
    admitted."""
    app = create_app(Settings(models_dir=BUNDLED_MODELS, data_dir=tmp_path, max_in_flight=10, min_in_flight=2))
    with TestClient(app) as c:
        wait_ready(c)
        limiter = c.app.state.limiter
        for _ in range(MIN_UNLOADED):
            assert c.post("/detect", files=parts(PHOTOS[0])).status_code == 200
        aged = (limiter.tolerance + STANDING_AFTER + 2) * limiter.unloaded("/detect")
        batcher = c.app.state.engine.batchers[id(c.app.state.registry.detector())]
        gate, running, _ = hold(batcher)
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(c.post, "/detect", files=parts(PHOTOS[0]))
            assert running.wait(10)
            time.sleep(aged)                                 # one in flight, long past its tolerance
            second = pool.submit(c.post, "/detect", files=parts(PHOTOS[1]))
            deadline = time.monotonic() + 10
            while c.app.state.engine.active < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert c.app.state.engine.active == 2            # admitted: the floor is 2
            limit_then = limiter.limit
            refused = c.post("/detect", files=parts(PHOTOS[2]))
            gate.set()
            assert first.result().status_code == 200 and second.result().status_code == 200
        assert limit_then == 10
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        message = refused.json()["error"]["message"]
        assert "oldest of the 2 requests" in message and "SIGHTLINE_LATENCY_TOLERANCE" in message


def _two_in_flight(limiter: AdaptiveLimit, **kw):
    """The middleware alone, with two POSTs to /detect in flight, their uploads not yet in."""
    from app.observability import Metrics, RequestMiddleware, _Admitted

    class Route:
        path = "/detect"

    middleware = RequestMiddleware(app=None, metrics=Metrics(), timeout_ms=0, limiter=limiter, **kw)
    flight = [_Admitted({"route": Route()}, {"images": 1, "nbytes": 0}, 1, 0) for _ in range(2)]
    middleware.admitted = {id(a): a for a in flight}
    return middleware, flight


def test_a_slow_upload_is_no_standing_queue():
    """Requests still uploading are not judged; once their upload is in, the oldest is, and a queue
    stands once the oldest has stayed over the tolerance for STANDING_AFTER unloaded latencies."""
    limiter = learnt(base=0.050)
    middleware, uploading = _two_in_flight(limiter)           # 2 POSTs in flight
    assert middleware._refusal() is None                      # 2 in flight, both still uploading
    uploading[1].since = time.monotonic() - 0.015               # in for 15 ms: within 2 x 50 ms
    assert middleware._refusal() is None
    time.sleep(0.100)                                           # 115 ms: over 2 x 50 ms, but only just
    assert middleware._refusal() is None and limiter.limit == 24
    time.sleep((STANDING_AFTER + 1) * 0.050)                    # over it for longer: a standing queue
    assert "oldest of the 2 requests" in (middleware._refusal() or "")
    assert limiter.limit == 2                                   # halved from the 2 in flight, to the floor
    del middleware.admitted[id(uploading[0])]                   # 1, below the floor: never refused for it
    assert middleware._refusal() is None


def test_a_request_others_arrived_during_is_not_unloaded():
    """Admitted into an empty server but sharing it with arrivals (refused ones included) while it was
    served: not an unloaded latency, so an overload cannot drag the estimate up."""
    limiter = learnt(base=0.010)
    for _ in range(60):                                   # more than the samples kept
        limiter.observe("/detect", 0.040, ALONE, overlapped=True)
    assert limiter.unloaded("/detect") == pytest.approx(0.010)
    assert limiter.limit < 24                             # and they were judged slow


def test_during_a_probe_overlapped_answers_are_learnt():
    clock = Clock()
    limiter = AdaptiveLimit(2, 24, 2.0, clock=clock)
    for _ in range(PROBE_AFTER):
        limiter.observe("/detect", 0.050, BUSY)
    assert limiter.limit == 1                             # probing: the others are refused meanwhile
    for _ in range(MIN_UNLOADED):
        limiter.observe("/detect", 0.012, ALONE, overlapped=True)
    assert limiter.unloaded("/detect") == pytest.approx(0.012) and limiter.limit == 24


def _spied(limiter, seen: list) -> None:
    real = limiter.observe

    def spy(endpoint, seconds, concurrent, overlapped=False, refused=False):
        seen.append((concurrent, overlapped, refused))
        real(endpoint, seconds, concurrent, overlapped, refused)

    limiter.observe = spy


def test_the_middleware_tells_the_limit_whether_others_arrived(tmp_path):
    """A request served alone is reported not overlapped; the first of two that overlap is; one
    that a refusal overlapped is reported refused."""
    app = create_app(Settings(models_dir=BUNDLED_MODELS, data_dir=tmp_path))
    with TestClient(app) as c:
        wait_ready(c)
        seen = []
        _spied(c.app.state.limiter, seen)
        assert c.post("/detect", files=parts(PHOTOS[0])).status_code == 200
        assert seen == [(1, False, False)]
        batcher = c.app.state.engine.batchers[id(c.app.state.registry.detector())]
        gate, running, _ = hold(batcher)
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(c.post, "/detect", files=parts(PHOTOS[0]))
            assert running.wait(10)
            second = pool.submit(c.post, "/detect", files=parts(PHOTOS[1]))
            deadline = time.monotonic() + 10
            while c.app.state.engine.active < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            gate.set()
            assert first.result().status_code == 200 and second.result().status_code == 200
        assert sorted(seen[1:]) == [(1, True, False), (2, False, False)]
    one = create_app(Settings(models_dir=BUNDLED_MODELS, data_dir=tmp_path / "one", max_in_flight=1))
    with TestClient(one) as c:
        wait_ready(c)
        seen = []
        _spied(c.app.state.limiter, seen)
        batcher = c.app.state.engine.batchers[id(c.app.state.registry.detector())]
        gate, running, _ = hold(batcher)
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(c.post, "/detect", files=parts(PHOTOS[0]))
            assert running.wait(10)
            assert c.post("/detect", files=parts(PHOTOS[1])).status_code == 503
            gate.set()
            assert first.result().status_code == 200
        assert seen == [(1, True, True)]


def test_standing_after_zero_refuses_as_soon_as_the_oldest_is_over(tmp_path):
    """SIGHTLINE_STANDING_AFTER=0: the latency-first setting judges a queue standing at once."""
    from app.observability import RequestMiddleware

    middleware, flight = _two_in_flight(learnt(base=0.010), standing_after=0)
    flight[0].since = time.monotonic() - 0.025                 # over 2 x 10 ms
    assert "standing queue" in (middleware._refusal() or "")
    app = create_app(Settings(models_dir=BUNDLED_MODELS, data_dir=tmp_path, standing_after=0))
    [wired] = [m.kwargs for m in app.user_middleware if m.cls is RequestMiddleware]
    assert wired["standing_after"] == 0
