"""The dynamic batcher against a fake model: answers go to the right requests, batches stay within
``max_batch``, a lone request waits about ``max_delay``, a full queue refuses at once, an expired
request never runs, a cancelled one is dropped; and the pipeline drivers agree."""

import asyncio
import threading
import time

import numpy as np
import pytest

from app.batching import BatchObserver, BatchSettings, DeadlineExceeded, DynamicBatcher, Overloaded, request_deadline
from app.pipeline import Engine, Infer, run_steps


class FakeModel:
    """``run``: each row's value times 10, plus the batch's size in the second column; remembers the
    batches, and can be held (``gate``) to let a queue build up."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.started.set()
        self.gate.wait(5)
        self.batches.append(batch.copy())
        return np.stack([batch[:, 0] * 10, np.full(len(batch), len(batch), np.float32)], axis=1)


class Recorder(BatchObserver):
    def __init__(self) -> None:
        self.rejections: list[str] = []
        self.sizes: list[int] = []

    def batch(self, model: str, rows: int, requests: int, seconds: float) -> None:
        self.sizes.append(rows)

    def rejected(self, model: str, reason: str) -> None:
        self.rejections.append(reason)


async def busy(model: FakeModel, settings: BatchSettings, observer: BatchObserver
               ) -> tuple[DynamicBatcher, asyncio.Future]:
    """A batcher whose model is held inside a first run (row 0) until ``model.gate`` is set."""
    model.gate.clear()
    batcher = await started(model, settings, observer)
    first = asyncio.ensure_future(batcher.infer(rows(0)))
    await asyncio.get_running_loop().run_in_executor(None, model.started.wait, 5)
    return batcher, first


def rows(*values: float) -> np.ndarray:
    return np.array([[v, 0.0] for v in values], np.float32)


async def started(model: FakeModel, settings: BatchSettings, observer: BatchObserver | None = None) -> DynamicBatcher:
    batcher = DynamicBatcher("fake", model.run, settings, observer)
    batcher.start()
    return batcher


def test_answers_go_back_to_their_requests_in_batches_within_max_batch():
    async def main():
        model, seen = FakeModel(), Recorder()
        batcher = await started(model, BatchSettings(max_batch=8, max_delay_ms=20, max_queue=100), seen)
        # 60 requests of 1 to 3 rows each, all at once
        requests = [rows(*[1000 * i + k for k in range(1 + i % 3)]) for i in range(60)]
        answers = await asyncio.gather(*(batcher.infer(r) for r in requests))
        await batcher.stop()
        return model, seen, requests, answers

    model, seen, requests, answers = asyncio.run(main())
    for request, answer in zip(requests, answers):
        np.testing.assert_array_equal(answer[:, 0], request[:, 0] * 10)   # its own rows, in order
    assert max(len(b) for b in model.batches) <= 8
    assert sum(len(b) for b in model.batches) == sum(len(r) for r in requests)   # every row ran once
    assert len(model.batches) < 30 and max(seen.sizes) >= 6                       # and they were shared


def test_a_request_larger_than_max_batch_runs_alone():
    async def main():
        model = FakeModel()
        batcher = await started(model, BatchSettings(max_batch=4, max_delay_ms=1))
        out = await batcher.infer(rows(*range(10)))
        await batcher.stop()
        return model, out

    model, out = asyncio.run(main())
    assert [len(b) for b in model.batches] == [10]
    np.testing.assert_array_equal(out[:, 0], np.arange(10) * 10)


def lone_request_seconds(settings: BatchSettings, in_flight=None) -> float:
    """How long one request takes through a warm batcher with nobody else queued."""
    async def main():
        model = FakeModel()
        batcher = DynamicBatcher("fake", model.run, settings, in_flight=in_flight)
        batcher.start()
        await batcher.infer(rows(1))                      # warm the inference thread
        t0 = time.perf_counter()
        await batcher.infer(rows(2))
        waited = time.perf_counter() - t0
        await batcher.stop()
        return waited

    return asyncio.run(main())


def test_a_lone_request_waits_about_max_delay():
    waited = lone_request_seconds(BatchSettings(max_batch=16, max_delay_ms=30))
    assert 0.025 <= waited < 0.030 + 0.25     # it waits for company, but not much past max_delay


def test_batching_off_runs_each_request_at_once():
    async def main():
        model = FakeModel()
        batcher = await started(model, BatchSettings(max_batch=1, max_delay_ms=500))
        t0 = time.perf_counter()
        await asyncio.gather(*(batcher.infer(rows(i)) for i in range(5)))
        waited = time.perf_counter() - t0
        await batcher.stop()
        return model, waited

    model, waited = asyncio.run(main())
    assert [len(b) for b in model.batches] == [1] * 5
    assert waited < 0.25                                   # max_delay does not apply


def test_a_full_queue_refuses_at_once_with_retry_after():
    async def main():
        model, seen = FakeModel(), Recorder()
        batcher, first = await busy(model, BatchSettings(max_batch=1, max_delay_ms=0, max_queue=3), seen)
        queued = [asyncio.ensure_future(batcher.infer(rows(i))) for i in (1, 2, 3)]
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        with pytest.raises(Overloaded) as refused:
            await batcher.infer(rows(4))
        refused_in = time.perf_counter() - t0
        model.gate.set()
        done = await asyncio.gather(first, *queued)
        await batcher.stop()
        return refused.value, refused_in, done, seen

    exc, refused_in, done, seen = asyncio.run(main())
    assert exc.status == 503 and exc.code == "overloaded" and exc.headers["Retry-After"] == "1"
    assert refused_in < 0.05
    assert [float(d[0, 0]) for d in done] == [0, 10, 20, 30]   # those admitted were all answered
    assert seen.rejections == ["queue_full"]


def test_a_request_past_its_deadline_is_refused_without_running():
    async def main():
        model, seen = FakeModel(), Recorder()
        batcher, first = await busy(model, BatchSettings(max_batch=1, max_delay_ms=0), seen)

        async def late():
            request_deadline.set(time.monotonic() + 0.05)
            return await batcher.infer(rows(7))

        second = asyncio.ensure_future(late())
        await asyncio.sleep(0.15)                          # the deadline passes while it waits
        model.gate.set()
        await first
        with pytest.raises(DeadlineExceeded) as refused:
            await second
        await batcher.stop()
        return model, refused.value, seen

    model, exc, seen = asyncio.run(main())
    assert exc.status == 503 and exc.code == "deadline_exceeded"
    assert [b[:, 0].tolist() for b in model.batches] == [[0.0]]   # row 7 never ran
    assert seen.rejections == ["deadline_exceeded"]


def test_a_cancelled_request_is_dropped():
    async def main():
        model, seen = FakeModel(), Recorder()
        batcher, first = await busy(model, BatchSettings(max_batch=4, max_delay_ms=0), seen)
        gone = asyncio.ensure_future(batcher.infer(rows(5)))      # its client disconnects
        kept = asyncio.ensure_future(batcher.infer(rows(6)))
        await asyncio.sleep(0.01)
        gone.cancel()
        model.gate.set()
        await asyncio.gather(first, kept)
        await batcher.stop()
        return model, seen

    model, seen = asyncio.run(main())
    ran = sorted(v for b in model.batches for v in b[:, 0].tolist())
    assert ran == [0.0, 6.0] and seen.rejections == ["client_gone"]


def test_a_failing_model_fails_its_batch_only():
    class Flaky(FakeModel):
        def run(self, batch):
            if (batch[:, 0] < 0).any():
                raise RuntimeError("bad input")
            return super().run(batch)

    async def main():
        model = Flaky()
        batcher = await started(model, BatchSettings(max_batch=1, max_delay_ms=0))
        with pytest.raises(RuntimeError):
            await batcher.infer(rows(-1))
        out = await batcher.infer(rows(3))
        await batcher.stop()
        return out

    assert float(asyncio.run(main())[0, 0]) == 30.0


def steps_doubling(model: FakeModel, value: float):
    """A two-stage pipeline: CPU work, a model run, more CPU work, another run."""
    first = yield Infer(model, rows(value))
    second = yield Infer(model, rows(float(first[0, 0]) + 1))
    return float(second[0, 0])


def test_engine_and_plain_driver_agree():
    from concurrent.futures import ThreadPoolExecutor

    model = FakeModel()
    plain = [run_steps(steps_doubling(model, v)) for v in range(6)]

    async def main():
        engine = Engine(ThreadPoolExecutor(2), BatchSettings(max_batch=8, max_delay_ms=10))
        engine.add(model, "fake")
        out = await engine.run_all([steps_doubling(model, v) for v in range(6)])
        await engine.stop()
        return out

    assert asyncio.run(main()) == plain == [(10 * v + 1) * 10 for v in range(6)]


@pytest.mark.parametrize("others", [0, 1])
def test_it_waits_for_company_only_while_other_requests_are_in_flight(others):
    waited = lone_request_seconds(BatchSettings(max_batch=8, max_delay_ms=200), in_flight=lambda: 1 + others)
    if others:
        assert waited >= 0.19                          # another request may join: it waits max_delay
    else:
        assert waited < 0.1                            # nobody else is in flight: it runs at once


class CountingModel(FakeModel):
    """A FakeModel that records how many of its runs were in progress at once."""

    def __init__(self) -> None:
        super().__init__()
        self.lock, self.now, self.most = threading.Lock(), 0, 0
        self.two_running = threading.Event()

    def run(self, batch: np.ndarray) -> np.ndarray:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            if self.now >= 2:
                self.two_running.set()
        try:
            return super().run(batch)
        finally:
            with self.lock:
                self.now -= 1


async def until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("instances", [1, 2, 3])
def test_instances_bound_the_runs_in_flight(instances):
    """With the model held, exactly ``instances`` batches start; the rest wait in the queue, and once
    released they run in batches that gathered while the instances were busy."""
    async def main():
        model = CountingModel()
        model.gate.clear()
        batcher = await started(model, BatchSettings(max_batch=4, max_delay_ms=0, instances=instances))
        first = []
        for i in range(instances):                 # one by one, so that each starts its own batch
            first.append(asyncio.ensure_future(batcher.infer(rows(i))))
            await until(lambda: model.now == i + 1)
        later = [asyncio.ensure_future(batcher.infer(rows(100 + i))) for i in range(8)]
        await asyncio.sleep(0.1)
        started_runs = model.now
        model.gate.set()
        answers = await asyncio.gather(*first, *later)
        await batcher.stop()
        return model, started_runs, answers

    model, started_runs, answers = asyncio.run(main())
    assert started_runs == instances and model.most == instances
    assert [float(a[0, 0]) for a in answers] == [10 * v for v in [*range(instances), *range(100, 108)]]
    first = [b for b in model.batches if b[0, 0] < 100]
    later = [len(b) for b in model.batches if b[0, 0] >= 100]
    assert [len(b) for b in first] == [1] * instances
    # the 8 that waited: within max_batch, and batched; the first instance released takes at least
    # its even share (with all the instances idle) of them
    assert sum(later) == 8 and min(4, 8 / instances) <= max(later) <= 4


def test_two_instances_run_side_by_side():
    """The second batch starts while the first is still running (which one instance never allows)."""
    async def main():
        model = CountingModel()
        model.gate.clear()
        batcher = await started(model, BatchSettings(max_batch=1, max_delay_ms=0, instances=2))
        a = asyncio.ensure_future(batcher.infer(rows(1)))
        b = asyncio.ensure_future(batcher.infer(rows(2)))
        both = await asyncio.get_running_loop().run_in_executor(None, model.two_running.wait, 5)
        model.gate.set()
        out = await asyncio.gather(a, b)
        await batcher.stop()
        return both, out

    both, out = asyncio.run(main())
    assert both and [float(o[0, 0]) for o in out] == [10, 20]


def test_stop_lets_running_batches_answer():
    async def main():
        model, seen = FakeModel(), Recorder()
        batcher, first = await busy(model, BatchSettings(max_batch=1, max_delay_ms=0, instances=2), seen)
        stopping = asyncio.ensure_future(batcher.stop())
        await asyncio.sleep(0.05)
        model.gate.set()
        await stopping
        return await first

    assert float(asyncio.run(main())[0, 0]) == 0.0


def test_company_is_not_awaited_from_requests_already_running():
    """Two requests in flight, the first inside a batch running (held) on one instance: the second
    cannot be joined by it, so it starts on the other instance at once instead of waiting max_delay."""
    async def main():
        model = CountingModel()
        model.gate.clear()
        batcher = DynamicBatcher("fake", model.run, BatchSettings(max_batch=8, max_delay_ms=300, instances=2),
                                 in_flight=lambda: 2)
        batcher.start()
        loop = asyncio.get_running_loop()
        first = asyncio.ensure_future(batcher.infer(rows(1)))   # the other instance idles: runs at once
        await loop.run_in_executor(None, model.started.wait, 5)
        t0 = time.perf_counter()
        second = asyncio.ensure_future(batcher.infer(rows(2)))
        both = await loop.run_in_executor(None, model.two_running.wait, 5)
        waited = time.perf_counter() - t0
        model.gate.set()
        await asyncio.gather(first, second)
        await batcher.stop()
        return both, waited

    both, waited = asyncio.run(main())
    assert both and waited < 0.2


def test_idle_instances_share_the_waiting_rows_at_once():
    """With both instances idle, four requests arriving together run as two batches of two side by
    side, not as one batch of four while the other instance idles."""
    async def main():
        model = CountingModel()
        model.gate.clear()
        batcher = DynamicBatcher("fake", model.run, BatchSettings(max_batch=8, max_delay_ms=0, instances=2))
        batcher.start()
        answers = [asyncio.ensure_future(batcher.infer(rows(i))) for i in range(4)]
        both = await asyncio.get_running_loop().run_in_executor(None, model.two_running.wait, 5)
        model.gate.set()
        out = await asyncio.gather(*answers)
        await batcher.stop()
        return model, both, out

    model, both, out = asyncio.run(main())
    assert both and sorted(len(b) for b in model.batches) == [2, 2]
    assert [float(o[0, 0]) for o in out] == [0, 10, 20, 30]


def test_no_wait_for_company_while_another_instance_idles():
    """A lone request that could have company (another request in flight) still runs at once when
    another instance is idle: waiting would only leave a core unused."""
    async def main():
        model = FakeModel()
        batcher = DynamicBatcher("fake", model.run, BatchSettings(max_batch=8, max_delay_ms=400, instances=2),
                                 in_flight=lambda: 2)
        batcher.start()
        t0 = time.perf_counter()
        await batcher.infer(rows(1))
        waited = time.perf_counter() - t0
        await batcher.stop()
        return waited

    assert asyncio.run(main()) < 0.2
