"""Request plumbing that every route shares, as one pure ASGI middleware, and the Prometheus metrics.

``RequestMiddleware``, per HTTP request:
- admits a POST only while fewer than the concurrency limit are being served (``app.admission``:
  it follows latency, between ``SIGHTLINE_MIN_IN_FLIGHT`` and ``SIGHTLINE_MAX_IN_FLIGHT``) and the
  oldest one in flight has not yet taken longer than the limit tolerates (a standing queue), else
  answers 503 ``overloaded`` with ``Retry-After`` from the headers alone, before the upload is parsed;
- sets the request's deadline (``SIGHTLINE_REQUEST_TIMEOUT_MS`` from arrival), which the batchers
  enforce before inference;
- once the request body has been read, listens for the client going away and then cancels the
  request's work, so that its queued model runs are dropped (the batcher skips cancelled requests);
- counts the request and its latency by endpoint (the route's path template) and status.

``Metrics`` holds the collectors in a registry of the app's own (``GET /metrics``).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.admission import STANDING_AFTER, AdaptiveLimit, kind, request_images
from app.batching import RETRY_AFTER_S, BatchObserver, request_deadline
from app.errors import send_error

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
ADMISSION = "admission"   # the model label of requests refused on arrival, before any model
REJECT_REASONS = ("queue_full", "deadline_exceeded", "client_gone")
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"   # prometheus-client's: where each process writes its values


class Metrics(BatchObserver):
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("sightline_requests", "HTTP requests answered", ["method", "endpoint", "status"],
                                registry=r)
        self.latency = Histogram("sightline_request_duration_seconds", "HTTP request latency, arrival to answer",
                                 ["method", "endpoint", "status"], buckets=LATENCY_BUCKETS, registry=r)
        # with several server processes (SIGHTLINE_WORKERS) a gauge is the sum over the live ones
        self.in_flight = Gauge("sightline_requests_in_flight", "HTTP requests being served", registry=r,
                               multiprocess_mode="livesum")
        self.limit = Gauge("sightline_concurrency_limit", "POST requests admitted at once now", registry=r,
                           multiprocess_mode="livesum")
        self.batch_rows = Histogram("sightline_batch_size", "rows per model run (images, or faces)", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("sightline_batch_requests", "requests sharing one model run", ["model"],
                                        buckets=BATCH_BUCKETS, registry=r)
        self.depth = Gauge("sightline_queue_depth", "requests waiting for a model run", ["model"], registry=r,
                           multiprocess_mode="livesum")
        self.inference = Histogram("sightline_inference_seconds", "ONNX Runtime time per model run", ["model"],
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.rejections = Counter("sightline_rejected", "requests refused or dropped before inference",
                                  ["model", "reason"], registry=r)

    def exposition(self) -> bytes:
        """The text ``GET /metrics`` answers: this process's metrics, or with several server processes
        (``PROMETHEUS_MULTIPROC_DIR`` set, as ``python -m app`` does for ``SIGHTLINE_WORKERS`` > 1)
        every process's, added up by prometheus-client from the files they write there."""
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

    @staticmethod
    def process_ended() -> None:
        """This server process is stopping: its gauges leave the sums (several processes only)."""
        if os.environ.get(MULTIPROC_ENV):
            multiprocess.mark_process_dead(os.getpid())

    # BatchObserver
    def register(self, model: str) -> None:
        """Every series of a model shows (at zero) from its start, before anything happens to it."""
        self.depth.labels(model).set(0)
        for reason in REJECT_REASONS:
            self.rejections.labels(model, reason).inc(0)

    def queue_depth(self, model: str, depth: int) -> None:
        self.depth.labels(model).set(depth)

    def batch(self, model: str, rows: int, requests: int, seconds: float) -> None:
        self.batch_rows.labels(model).observe(rows)
        self.batch_requests.labels(model).observe(requests)
        self.inference.labels(model).observe(seconds)

    def rejected(self, model: str, reason: str) -> None:
        self.rejections.labels(model, reason).inc()


def _endpoint(scope: Scope) -> str:
    """The matched route's path template (bounded label values), else ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


@dataclass(eq=False)
class _Admitted:
    """A POST being served: its scope (the route, once matched), its photos' count and bytes (noted by
    the route) and since when it has been worked on (its upload in: a slow uploader is no standing queue)."""

    scope: Scope
    size: dict[str, int]
    arrivals: int                      # POSTs that had arrived when it was admitted, itself included
    refusals: int                      # POSTs refused before it was admitted
    since: float | None = None


class RequestMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, timeout_ms: float, limiter: AdaptiveLimit,
                 standing_after: float = STANDING_AFTER) -> None:
        self.app, self.metrics, self.timeout = app, metrics, timeout_ms / 1000.0
        self.limiter, self.standing_after = limiter, standing_after
        self.admitted: dict[int, _Admitted] = {}                 # POSTs in flight, by arrival
        self.arrivals = 0                                         # POSTs arrived so far, admitted or not
        self.refusals = 0                                         # POSTs refused so far
        self._caught_up = 0.0                                     # when no queue was standing, last seen
        metrics.rejections.labels(ADMISSION, "queue_full").inc(0)
        metrics.limit.set(limiter.limit)

    @property
    def posts(self) -> int:
        """POST requests being served now."""
        return len(self.admitted)

    def _refusal(self) -> str | None:
        """Why a POST arriving now is refused, or None to admit it."""
        if self.posts >= self.limiter.limit:
            why = ("its concurrency limit now, set by latency between SIGHTLINE_MIN_IN_FLIGHT and "
                   "SIGHTLINE_MAX_IN_FLIGHT" if self.limiter.enabled else "SIGHTLINE_MAX_IN_FLIGHT")
            return f"the server is already serving {self.posts} requests ({why})"
        working = [a for a in self.admitted.values() if a.since is not None]
        now = time.monotonic()
        if not working:
            self._caught_up = now
        if self.posts < self.limiter.min_limit or not working:
            return None
        oldest = min(working, key=lambda a: a.since or 0.0)
        age = now - (oldest.since or 0.0)
        endpoint = kind(_endpoint(oldest.scope), **oldest.size)
        if not self.limiter.standing(endpoint, age):
            self._caught_up = now
            return None
        # Over the tolerance, but a queue is standing only once it has stayed there for a while: a
        # burst of random arrivals at moderate load drains sooner (CoDel's interval).
        base = self.limiter.unloaded(endpoint) or 0.0
        over_since = max((oldest.since or 0.0) + self.limiter.tolerance * base, self._caught_up)
        if now - over_since < self.standing_after * base:
            return None
        self.limiter.congested(self.posts)
        return (f"the oldest of the {self.posts} requests being served has taken {age * 1000:.0f} ms since its "
                f"upload, over {self.limiter.tolerance:g} times its latency alone (SIGHTLINE_LATENCY_TOLERANCE) "
                f"for {self.standing_after:g} times that latency more (SIGHTLINE_STANDING_AFTER): a standing queue")

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, why: str) -> None:
        """503 as soon as the headers are in: under overload, parsing uploads is itself the work that
        would pile up. The body is read off the socket unparsed (up to 4 MB): a connection closed
        with unread data is reset, and the client could lose the answer."""
        self.metrics.rejections.labels(ADMISSION, "queue_full").inc()
        drained = 0
        while drained < 4 << 20:
            message = await receive()
            drained += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        await send_error(send, 503, "overloaded", f"{why}; retry in {RETRY_AFTER_S} s",
                         [(b"retry-after", str(RETRY_AFTER_S).encode())])
        labels = (scope.get("method", ""), "(refused on arrival)", "503")
        self.metrics.requests.labels(*labels).inc()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("method") == "POST":
            self.arrivals += 1
            why = self._refusal()
            if why is not None:
                self.refusals += 1
                await self._refuse(scope, receive, send, why)
                return
            size = {"images": 1, "nbytes": 0}
            token = request_images.set(size)      # the route notes how many photos it read, how large
            admitted = self.admitted[id(scope)] = _Admitted(scope, size, self.arrivals, self.refusals)
            concurrent = self.posts
            try:
                status, seconds = await self._serve(scope, receive, send, admitted)
            finally:
                del self.admitted[id(scope)]
                request_images.reset(token)
            if 200 <= status < 300:
                self.limiter.observe(kind(_endpoint(scope), **size), seconds, concurrent,
                                     overlapped=self.arrivals > admitted.arrivals,
                                     refused=self.refusals > admitted.refusals)
                self.metrics.limit.set(self.limiter.limit)
        else:
            await self._serve(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, admitted: _Admitted | None = None
                     ) -> tuple[int, float]:
        """Serves the request; returns its status and latency (seconds). ``admitted`` learns when the
        upload is in."""
        started = time.monotonic()
        request_deadline.set(started + self.timeout if self.timeout > 0 else None)
        status = {"code": 500}
        body_read = asyncio.Event()
        watcher: asyncio.Task[Message] | None = None

        async def watched_receive() -> Message:
            nonlocal watcher
            if watcher is not None:                    # the body is in: what comes next is the disconnect
                return await asyncio.shield(watcher)
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                if admitted is not None:
                    admitted.since = time.monotonic()
                watcher = asyncio.ensure_future(receive())
                body_read.set()
            return message

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        work = asyncio.ensure_future(self.app(scope, watched_receive, counted_send))
        body_wait = asyncio.ensure_future(body_read.wait())
        gone = False
        try:
            await asyncio.wait({work, body_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done() and watcher is not None:
                await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if not work.done() and watcher.result().get("type") == "http.disconnect":
                    gone = True                        # the client went away: drop its work
                    work.cancel()
            try:
                await work
            except asyncio.CancelledError:
                if not gone:
                    raise
                status["code"] = 499                   # nginx's "client closed request"; nothing is sent
        finally:
            for task in (work, body_wait, watcher):
                if task is not None and not task.done():
                    task.cancel()
            self.metrics.in_flight.dec()
            seconds = time.monotonic() - started
            labels = (scope.get("method", ""), _endpoint(scope), str(status["code"]))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(seconds)
        return status["code"], seconds
