"""How many POST requests the server serves at once: a concurrency limit that follows latency.

A fixed limit (``SIGHTLINE_MAX_IN_FLIGHT``) is either too high for the machine (under overload every
admitted request waits behind the others, and all are answered late) or too low for a bigger one.
``AdaptiveLimit`` moves the limit between ``SIGHTLINE_MIN_IN_FLIGHT`` and ``SIGHTLINE_MAX_IN_FLIGHT``
by the gradient method of Netflix's concurrency-limits and Envoy's adaptive concurrency filter:

- each endpoint's **unloaded latency** is learnt from the requests it answers that were served
  alone (no other POST in flight when admitted, and none arriving, admitted or refused, while it
  was served): a low quantile of the recent ones, so one lucky request does not set it. Under
  overload a request admitted into an empty server still shares the cores with the refusals
  answered meanwhile; learning from it let the estimate, and with it the limit and the latency,
  creep up over an overload (p50 of admitted requests from 40 to 80 ms within 20 s, seen on the
  2-core machines). A server busy from its start may never admit a request alone, so once an endpoint has
  answered ``PROBE_AFTER`` requests under pressure without having learnt it, the limit drops to 1
  for a moment (at most ``PROBE_MAX_S``, at most once per ``PROBE_EVERY_S``) to measure it, as
  Envoy's filter measures its minimum RTT. Under pressure: some POST was refused while it was
  served, or it was admitted with at least half the limit in flight. Ordinary bursts on a fresh
  server never cause a probe, nor does a light load that keeps overlapping a slow endpoint's
  requests: 30 ``/detect`` and 4 ``/segment`` requests a second (a third of the 2-core AMD
  machine) overlapped most ``/segment`` requests, which after 50 of them probed, refusing everyone
  else for up to a second (6 and 7 refused in two 15-s runs, where a fixed limit refused none).
- a request with several photos is its own kind: ``/detect`` with 3 photos learns and is judged
  against the unloaded latency of ``/detect`` with 3 photos (``request_images``), not of one. So is
  a request with larger uploads: up to ``SIZE_FLOOR`` bytes in all (a 640x480 JPEG is about 75 kB)
  they are one kind, above it one kind per doubling (``size_class``). A 12-megapixel phone photo
  costs ``/detect`` three times a small one, mostly in decoding; judged against the small ones, each
  one in flight looked like a standing queue and shrank the limit: at a third of the machine's
  capacity (30 small photos/s and 4 phone photos/s on the 2-core AMD machine) 9 to 12 % of the small
  ones were refused, where a fixed limit refused none; with size kinds, 0 to 0.2 %;
- every answered request gives a **gradient**, ``tolerance x unloaded / latency``. At 1 or more
  (it took less than ``tolerance`` times the unloaded latency) the limit grows by ``1 / limit``,
  about one more request per round of ``limit`` requests, as TCP's congestion window grows. Below
  1 it shrinks in proportion, ``limit x (1 - SHRINK x (1 - gradient))``, at most once per round of
  ``limit`` answers, as TCP shrinks its window once per round trip and not once per lost packet:
  a burst of random arrivals at moderate load makes several answers slow at once, and shrinking
  for each of them held the limit near its floor at 40 % load (below).
- The limit starts at ``SIGHTLINE_MAX_IN_FLIGHT`` and climbs back there in quiet spells: a burst
  that the server drains quickly is served, not refused; only load that keeps latency up is shed
  (the distinction CoDel draws between a good queue and a standing one).
- The limit learns only from answers, so at the start of an overload it would admit up to its cap
  before the slow answers came back. The middleware also refuses a new POST, even below the limit
  (never below ``SIGHTLINE_MIN_IN_FLIGHT``), while a queue stands: the oldest request in flight
  has taken longer than ``tolerance`` times its unloaded latency since its upload arrived (a slow
  uploader is no queue; ``standing``) and has stayed over it for ``SIGHTLINE_STANDING_AFTER``
  unloaded latencies more without the server catching up in between (CoDel's interval); then the
  limit drops at once to half the requests in flight (``congested``).

Measured on the 2-core AMD build host on 2026-11-29, ``POST /detect``. Random (Poisson) arrivals
at 60/s, 40 % of what it serves: the defaults before these last rules (tolerance 1.25, every slow
answer shrinking the limit, a queue standing as soon as the oldest request was over the tolerance)
refused 20 % of them, where a fixed limit refused none; the evenly spaced arrivals that had chosen
them hid it. Now (tolerance 2): 0 to 1.8 %. Evenly spaced arrivals at twice the sustainable rate:
admitted p99 3.7 to 6.4 times one client's p99 alone (2.5 to 3.1 after the first 2 s), refusals in
8.5 to 11.6 ms at p99, against 1.4 to 2.0 times before; ``SIGHTLINE_LATENCY_TOLERANCE=1.25`` with
``SIGHTLINE_STANDING_AFTER=0`` gives 1.5 to 1.6 times, but refuses 28 to 30 % of the random
arrivals at 40 % load. On 2 cores two requests at once each take about twice their time alone, so
a p99 within twice the unloaded one under overload means about one request at a time, which a
moderate random load cannot be held to without refusing much of it. The README has what each
setting costs. A first version with Netflix Gradient2's rule (``limit x gradient + sqrt(limit)`` on
every answer, smoothed, the limit starting at its floor) had left p99 at 115 ms where this one's
first version held 66 ms: that rule settles latency above the tolerance, at
``tolerance / (1 - 1 / sqrt(limit))`` times the unloaded latency, and it refused the bursts of a
fresh server.
``SIGHTLINE_LATENCY_TOLERANCE=0`` turns it off: the limit is then ``SIGHTLINE_MAX_IN_FLIGHT``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from contextvars import ContextVar
from typing import Callable

UNLOADED_SAMPLES = 50      # recent unloaded latencies kept per endpoint
UNLOADED_QUANTILE = 0.1    # the unloaded latency: this quantile of them
MIN_UNLOADED = 3           # samples an endpoint needs before its requests move the limit
SHRINK = 0.3               # how far one slow request moves the limit towards limit x gradient
PROBE_AFTER = 50           # answers without an unloaded latency before a probe for it
PROBE_MAX_S = 1.0          # a probe (limit 1) lasts at most this long
PROBE_EVERY_S = 10.0       # and starts at most this often
STANDING_AFTER = 5.0       # default SIGHTLINE_STANDING_AFTER: over tolerance this many unloaded latencies more


# The request being served: how many photos it carries, written by the routes that read them
# (``note_images``); the middleware reads it to judge the request against its own kind.
request_images: ContextVar[dict[str, int] | None] = ContextVar("sightline_request_images", default=None)

SIZE_FLOOR = 128 * 1024    # uploads of up to this many bytes in all are one kind; then one per doubling


def note_images(count: int, nbytes: int) -> None:
    """The request being served carries ``count`` photos of ``nbytes`` bytes in all."""
    size = request_images.get()
    if size is not None:
        size["images"], size["nbytes"] = count, nbytes


def size_class(nbytes: int) -> int:
    """0 up to ``SIZE_FLOOR`` bytes, then 1, 2, ... for each doubling above it."""
    return 0 if nbytes <= SIZE_FLOOR else math.ceil(math.log2(nbytes / SIZE_FLOOR))


def kind(endpoint: str, images: int, nbytes: int = 0) -> str:
    """What an answer is judged against: the endpoint, the photo count when it is not one, and the
    uploads' size class when they are larger than ``SIZE_FLOOR`` in all."""
    name = endpoint if images <= 1 else f"{endpoint} x{images}"
    c = size_class(nbytes)
    return name if c == 0 else f"{name} <={(SIZE_FLOOR << c) // 1024} kB"


class AdaptiveLimit:
    def __init__(self, min_limit: int, max_limit: int, tolerance: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 1 <= min_limit <= max_limit:
            raise ValueError(f"need 1 <= min_limit ({min_limit}) <= max_limit ({max_limit})")
        self.min_limit, self.max_limit, self.tolerance, self.clock = min_limit, max_limit, tolerance, clock
        self._limit = float(max_limit)
        self._unlearnt: dict[str, int] = {}              # answers while the endpoint had no unloaded latency
        self._unloaded: dict[str, deque[float]] = {}
        self._probe: tuple[str, float] | None = None     # (endpoint, started)
        self._last_probe = -math.inf
        self._since_shrink, self._round = 0, 0

    @property
    def enabled(self) -> bool:
        return self.tolerance > 0

    @property
    def limit(self) -> int:
        """POST requests that may be in flight now."""
        if not self.enabled:
            return self.max_limit
        if self._probe is not None:
            if self.clock() - self._probe[1] < PROBE_MAX_S:
                return 1
            self._probe = None
        return max(self.min_limit, min(self.max_limit, int(self._limit)))

    def unloaded(self, endpoint: str) -> float | None:
        """The endpoint's learnt unloaded latency (seconds), once it has enough samples."""
        samples = self._unloaded.get(endpoint)
        if not samples or len(samples) < MIN_UNLOADED:
            return None
        ordered = sorted(samples)
        return ordered[int(UNLOADED_QUANTILE * (len(ordered) - 1))]

    def congested(self, in_flight: int) -> None:
        """A standing queue was seen with ``in_flight`` requests being served: the limit drops to half
        of them at once (the answers that would bring it down are still in the queue)."""
        if self.enabled:
            self._limit = min(self._limit, max(float(self.min_limit), in_flight / 2))

    def standing(self, endpoint: str, age: float) -> bool:
        """Whether a request to ``endpoint`` still in flight after ``age`` seconds shows a standing
        queue: it has already taken longer than ``tolerance`` times the endpoint's unloaded latency."""
        base = self.unloaded(endpoint) if self.enabled else None
        return base is not None and age > self.tolerance * base

    def observe(self, endpoint: str, seconds: float, concurrent: int, overlapped: bool = False,
                refused: bool = False) -> None:
        """A request to ``endpoint`` was answered successfully after ``seconds``; ``concurrent``:
        the POST requests in flight when it was admitted, itself included; ``overlapped``: another
        POST arrived (admitted or refused) while it was served; ``refused``: one was refused
        meanwhile. During a probe the overlaps are refusals of a server busy from its start, and its
        answers are learnt from all the same."""
        if not self.enabled or seconds <= 0:
            return
        probing = self._probe is not None and self._probe[0] == endpoint
        alone = concurrent <= 1 and (not overlapped or probing)
        if alone:
            self._unloaded.setdefault(endpoint, deque(maxlen=UNLOADED_SAMPLES)).append(seconds)
        base = self.unloaded(endpoint)
        if base is None:
            if not (refused or 2 * concurrent >= self.limit):
                return                 # a server under no pressure: nothing to probe for yet
            self._unlearnt[endpoint] = waited = self._unlearnt.get(endpoint, 0) + 1
            now = self.clock()
            if waited >= PROBE_AFTER and self._probe is None and now - self._last_probe >= PROBE_EVERY_S:
                self._probe, self._last_probe = (endpoint, now), now
            return
        if self._probe is not None and self._probe[0] == endpoint:
            self._probe = None
        gradient = self.tolerance * base / seconds
        self._since_shrink += 1
        if gradient < 1:
            if self._since_shrink >= self._round:          # once per round of answers, as TCP once per window
                self._limit *= 1 - SHRINK * (1 - gradient)
                self._since_shrink, self._round = 0, max(1, int(self._limit))
        else:
            self._limit += 1 / self._limit
        self._limit = max(float(self.min_limit), min(float(self.max_limit), self._limit))
