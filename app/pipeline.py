"""Each serving pipeline is written once, as a generator of *steps*: it does its CPU work (decode,
letterbox, crops, NMS, mask read-back) between ``yield``s, and yields an ``Infer`` whenever it needs
a model run, receiving the model's output back. Two drivers run it:

- ``run_steps``: plainly, each model called at once (training, evaluation, scripts, tests);
- ``Engine.run``: in the server, the CPU work on the thread pool, each ``Infer`` through the model's
  dynamic batcher (``app.batching``), shared with every other request in flight.

So batching, backpressure and deadlines apply to every model and route alike, and what is served
is what is evaluated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from app.batching import BatchObserver, BatchSettings, DynamicBatcher
from app.errors import ApiError

T = TypeVar("T")
R = TypeVar("R")


class Runnable(Protocol):
    def run(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Infer:
    """A request for one model run on ``batch`` (rows of the model's input)."""

    model: Runnable
    batch: np.ndarray


Steps = Generator[Infer, np.ndarray, T]


def run_steps(steps: Steps[T]) -> T:
    """Drive ``steps`` in this thread, running each model call directly."""
    value: np.ndarray | None = None
    while True:
        try:
            request = steps.send(value)  # type: ignore[arg-type]
        except StopIteration as stop:
            return stop.value
        value = request.model.run(request.batch)


@dataclass(frozen=True)
class _Done:
    value: Any


def _advance(steps: Steps[T], value: np.ndarray | None) -> Infer | _Done:
    """One stretch of CPU work (StopIteration cannot cross into an asyncio future, so it is wrapped)."""
    try:
        return steps.send(value)  # type: ignore[arg-type]
    except StopIteration as stop:
        return _Done(stop.value)


class Engine:
    """The server's side of the pipelines: the CPU thread pool and one batcher per model."""

    def __init__(self, pool: Executor, settings: BatchSettings, observer: BatchObserver | None = None) -> None:
        self.pool, self.settings, self.observer = pool, settings, observer
        self.batchers: dict[int, DynamicBatcher] = {}
        self.active = 0   # pipelines being driven now (a batcher waits for company only while others are)

    def add(self, model: Runnable, name: str) -> DynamicBatcher:
        runner = getattr(model, "runner", None)          # a served model's SessionRunner; a test's fake has none
        batcher = DynamicBatcher(name, model.run, self.settings, self.observer, in_flight=lambda: self.active,
                                 stack=runner.stack if runner is not None else None)
        self.batchers[id(model)] = batcher
        batcher.start()
        return batcher

    async def stop(self) -> None:
        for batcher in self.batchers.values():
            await batcher.stop()

    async def offload(self, fn: Callable[..., R], *args: object) -> R:
        """``fn(*args)`` on the thread pool (blocking work never runs on the event loop)."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def run_all(self, pipelines: list[Steps[T]], name_images: bool = True) -> list[T]:
        """Several pipelines at once (the images of one request), answers in order; their model runs
        share batches. The first to fail cancels the rest; with ``name_images``, its error says which
        image it was."""
        if len(pipelines) == 1:
            return [await self.run(pipelines[0])]

        async def one(i: int, steps: Steps[T]) -> T:
            try:
                return await self.run(steps)
            except ApiError as exc:
                if name_images:
                    exc.message = f"image {i + 1} of {len(pipelines)}: {exc.message}"
                raise

        tasks = [asyncio.ensure_future(one(i, p)) for i, p in enumerate(pipelines)]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()

    async def run(self, steps: Steps[T]) -> T:
        """Drive ``steps``: CPU stretches on the pool, model runs through their batchers."""
        value: np.ndarray | None = None
        self.active += 1
        try:
            while True:
                step = await self.offload(_advance, steps, value)
                if isinstance(step, _Done):
                    return step.value
                batcher = self.batchers.get(id(step.model))
                value = await batcher.infer(step.batch) if batcher else await self.offload(step.model.run, step.batch)
        finally:
            self.active -= 1
