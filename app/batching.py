"""Cross-request dynamic batching, one batcher per model.

A request's preprocessed tensor (one or more rows: one image, or the faces of one photo) waits in
the model's queue; the batcher's worker takes the oldest request, then waits up to ``max_delay``
for more until ``max_batch`` rows are in, runs ONNX Runtime once on the rows stacked (off the event
loop, on one of the model's own inference threads) and hands every request its slice. Every model's
inputs share one shape after letterbox or alignment, so any requests can share a batch.

Up to ``instances`` runs of one model are in flight at once (Triton's instance count): the worker
forms the next batch only once an instance is free, so while all are busy the queue grows into a
larger batch. On a CPU, several single-threaded runs side by side keep the cores busier than one
run parallelised inside (small convolutions split poorly across threads); see ``app.runtime``.
While another instance idles, the worker neither waits for company nor batches more than its even
share of the rows waiting (work-conserving, as a multi-server queue is): two requests arriving
together on an idle 2-instance CPU run side by side at once, not as one batch of two on one core
after ``max_delay``. On the 2-core Intel machine (``POST /detect``, four interleaved runs each)
this took 2 closed-loop clients from 102-116 to 116-121 images/s, 4 clients from 105-132 to
124-133, and requests served at twice the sustainable rate by 1-11 % (three runs each); at 16
clients the instances are rarely idle and it changes nothing (110-143 against 139-143).

Backpressure: the queue is bounded (``max_queue`` requests); a request finding it full is refused
at once (``Overloaded``: 503 with ``Retry-After``); one whose deadline has passed while it waited is
refused before inference (``DeadlineExceeded``); one whose caller went away (its future cancelled:
the client disconnected) is dropped without running.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from app.errors import Unavailable

log = logging.getLogger("sightline.batching")

# When the request being served must be answered by (``time.monotonic()`` seconds); set per request by
# ``app.observability.RequestMiddleware``; None: no deadline.
request_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("request_deadline", default=None)

RETRY_AFTER_S = 1   # what every refused request is told (Retry-After)


def _retry() -> dict[str, str]:
    return {"Retry-After": str(RETRY_AFTER_S)}


class Overloaded(Unavailable):
    def __init__(self, what: str) -> None:
        super().__init__(f"{what}; retry in {RETRY_AFTER_S} s", code="overloaded", headers=_retry())


class DeadlineExceeded(Unavailable):
    def __init__(self, model: str, waited_ms: float) -> None:
        super().__init__(f"the request waited {waited_ms:.0f} ms for the {model} model, past its deadline; "
                         "it was not run (SIGHTLINE_REQUEST_TIMEOUT_MS)", code="deadline_exceeded",
                         headers=_retry())


class ShuttingDown(Unavailable):
    def __init__(self) -> None:
        super().__init__("the server is shutting down; retry on another instance", code="shutting_down",
                         headers=_retry())


class BatchObserver:
    """What a batcher reports (``app.observability.Metrics`` records it); this one records nothing."""

    def register(self, model: str) -> None: ...

    def queue_depth(self, model: str, depth: int) -> None: ...

    def batch(self, model: str, rows: int, requests: int, seconds: float) -> None: ...

    def rejected(self, model: str, reason: str) -> None: ...


@dataclass(eq=False)
class _Request:
    rows: np.ndarray
    future: asyncio.Future[np.ndarray]
    enqueued: float                       # loop time
    deadline: float | None                # time.monotonic() seconds


@dataclass(frozen=True)
class BatchSettings:
    max_batch: int = 16          # rows per ONNX Runtime call; 1 turns batching off
    max_delay_ms: float = 3.0    # how long the oldest request waits for company
    max_queue: int = 64          # requests waiting per model before new ones get 503
    instances: int = 1           # runs of one model in flight at once


def _concatenate(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class DynamicBatcher:
    """Batches ``run`` (``(B, ...) float32 → (B, ...)``) across concurrent ``infer`` calls."""

    def __init__(self, name: str, run: Callable[[np.ndarray], np.ndarray], settings: BatchSettings,
                 observer: BatchObserver | None = None, in_flight: Callable[[], int] | None = None,
                 stack: Callable[[list[np.ndarray]], np.ndarray] | None = None) -> None:
        """``in_flight``: how many requests the server is serving now, anywhere in their pipelines;
        when all of them already wait here, nobody can join the batch and it runs at once. ``stack``:
        the requests' rows as one batch for ``run``, which may add rows after them (the model's fixed
        batch sizes, ``SessionRunner.stack``); by default they are concatenated."""
        if settings.max_batch < 1 or settings.max_queue < 1 or settings.max_delay_ms < 0 or settings.instances < 1:
            raise ValueError(f"bad batch settings {settings}")
        self.name, self.run, self.settings, self.in_flight = name, run, settings, in_flight
        self.stack = stack or _concatenate
        self.observer = observer or BatchObserver()
        self.observer.register(name)
        self._pending: deque[_Request] = deque()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._free: asyncio.Semaphore | None = None      # instances not running a batch
        self._runs: set[asyncio.Task[None]] = set()
        self._running = 0                                # requests in the batches running now
        # one inference thread per instance (ONNX Runtime may parallelise inside a run too)
        self._thread = ThreadPoolExecutor(max_workers=settings.instances, thread_name_prefix=f"infer-{name}")

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        if self._worker is None:
            self._wakeup = asyncio.Event()
            self._free = asyncio.Semaphore(self.settings.instances)
            self._worker = asyncio.create_task(self._loop(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Refuse whatever still waits (in-flight requests have finished by now), end the worker."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        if self._runs:                      # batches already running finish and answer their requests
            await asyncio.gather(*self._runs, return_exceptions=True)
        while self._pending:
            req = self._pending.popleft()
            if not req.future.done():
                req.future.set_exception(ShuttingDown())
        self._thread.shutdown(wait=True)

    # -- requests ------------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self._pending)

    async def infer(self, rows: np.ndarray) -> np.ndarray:
        """``rows (n, ...)`` through the model, batched with other requests' rows."""
        if self._worker is None or self._wakeup is None:
            raise ShuttingDown()
        if len(self._pending) >= self.settings.max_queue:
            self.observer.rejected(self.name, "queue_full")
            raise Overloaded(f"the {self.name} queue is full")
        loop = asyncio.get_running_loop()
        req = _Request(rows, loop.create_future(), loop.time(), request_deadline.get())
        self._pending.append(req)
        self.observer.queue_depth(self.name, len(self._pending))
        self._wakeup.set()
        return await req.future   # cancelled with the request (client gone): the worker skips it

    # -- the worker ----------------------------------------------------------------------------------
    def _live_rows(self) -> int:
        return sum(len(r.rows) for r in self._pending if not r.future.done())

    def _company_possible(self) -> bool:
        """Whether a request in flight elsewhere (not waiting here, not in a running batch) could come."""
        if self.in_flight is None:
            return True
        return self.in_flight() > sum(1 for r in self._pending if not r.future.done()) + self._running

    async def _loop(self) -> None:
        assert self._wakeup is not None and self._free is not None
        loop = asyncio.get_running_loop()
        delay = self.settings.max_delay_ms / 1000.0
        while True:
            await self._free.acquire()          # an instance is free: form its batch
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            # another instance idle: never wait for company, and share the waiting rows out (below)
            others_idle = self.settings.instances - len(self._runs) - 1
            # wait for company: until max_batch rows wait, the oldest has waited max_delay, or no
            # other request is in flight that could join
            if self.settings.max_batch > 1 and others_idle == 0:
                while self._live_rows() < self.settings.max_batch and self._company_possible():
                    remaining = self._pending[0].enqueued + delay - loop.time()
                    if remaining <= 0:
                        break
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), remaining)
                    except TimeoutError:
                        break
            batch = self._take(self._share(others_idle))
            self.observer.queue_depth(self.name, len(self._pending))
            if not batch:
                self._free.release()
                continue
            self._running += len(batch)
            task = asyncio.create_task(self._run(batch, loop), name=f"run-{self.name}")
            self._runs.add(task)
            task.add_done_callback(self._ran)

    def _ran(self, task: asyncio.Task[None]) -> None:
        self._runs.discard(task)
        assert self._free is not None
        self._free.release()

    def _share(self, others_idle: int) -> int:
        """Rows for the batch forming now: ``max_batch``, or with other instances idle, this
        instance's even share of the rows waiting, so that none of them idles while rows wait."""
        if others_idle == 0:
            return self.settings.max_batch
        return min(self.settings.max_batch, -(-self._live_rows() // (others_idle + 1)))

    def _take(self, cap: int) -> list[_Request]:
        """The oldest waiting requests up to ``cap`` rows (a request larger than that runs alone);
        gone and expired ones are answered here and never run."""
        batch: list[_Request] = []
        rows, now = 0, time.monotonic()
        while self._pending:
            req = self._pending[0]
            if req.future.done():                       # cancelled: the client went away
                self._pending.popleft()
                self.observer.rejected(self.name, "client_gone")
                continue
            if req.deadline is not None and now > req.deadline:
                self._pending.popleft()
                self.observer.rejected(self.name, "deadline_exceeded")
                waited = (asyncio.get_running_loop().time() - req.enqueued) * 1000
                req.future.set_exception(DeadlineExceeded(self.name, waited))
                continue
            if batch and rows + len(req.rows) > cap:
                break
            batch.append(self._pending.popleft())
            rows += len(req.rows)
        return batch

    def _stack_and_run(self, parts: list[np.ndarray]) -> np.ndarray:
        """On the inference thread: the requests' rows stacked (a copy of megabytes for a batch of
        photos, which would stall the event loop: 15 % of its busy time at 16 clients), then run."""
        return self.run(self.stack(parts))

    async def _run(self, batch: list[_Request], loop: asyncio.AbstractEventLoop) -> None:
        rows = sum(len(r.rows) for r in batch)
        started = time.perf_counter()
        try:
            out = await loop.run_in_executor(self._thread, self._stack_and_run, [r.rows for r in batch])
        except Exception as exc:  # the model failed: every request of the batch hears it
            log.exception("%s: inference failed on a batch of %d rows", self.name, rows)
            for req in batch:
                if not req.future.done():
                    req.future.set_exception(exc)
            return
        finally:
            self._running -= len(batch)
        self.observer.batch(self.name, rows, len(batch), time.perf_counter() - started)
        start = 0
        for req in batch:
            n = len(req.rows)
            if not req.future.done():
                req.future.set_result(out[start:start + n])
            start += n
