"""ONNX Runtime sessions: execution-provider choice (CUDA only when it really initialises) and
the metadata a model file carries in ``metadata_props`` (JSON-encoded values)."""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort
from pydantic import BaseModel, ValidationError

from app.settings import Settings

log = logging.getLogger("sightline.runtime")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class ModelLoadError(RuntimeError):
    """A model file that cannot be served (unreadable, missing metadata, CUDA demanded but absent)."""


def _cuda_driver_present() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def _cuda_usable(device: str) -> bool:
    return device != "cpu" and CUDA in ort.get_available_providers() and _cuda_driver_present()


def providers(settings: Settings) -> list[str | tuple[str, dict[str, str]]]:
    """The execution providers a session is asked for, best first, CUDA with its options."""
    if _cuda_usable(settings.device):
        return [(CUDA, {"cudnn_conv_algo_search": settings.cuda_conv_algo_search}), CPU]
    if settings.device == "cuda":
        raise ModelLoadError("SIGHTLINE_DEVICE=cuda but no CUDA driver / CUDA provider is available")
    return [CPU]


@dataclass(frozen=True)
class ThreadPlan:
    """How the cores are shared out: ``instances`` runs of each model side by side, each on
    ``intra_op`` ONNX Runtime threads, beside a pool of ``workers`` threads for decoding, pre- and
    post-processing. A run that starts while no other run of its model is in flight goes to a
    second session on ``lone`` threads when that is more than ``intra_op`` (``SessionRunner``)."""

    instances: int
    intra_op: int
    workers: int
    lone: int

    @property
    def lone_session(self) -> bool:
        """Whether each model gets a second session for runs alone."""
        return self.lone > self.intra_op


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The cores this process may use: the CPUs it is pinned to, capped by a cgroup v2 CPU quota
    (``docker run --cpus 2`` on a 32-core host gives 2, where ``os.cpu_count()`` says 32)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass                                     # no cgroup v2 quota: the affinity mask stands
    return max(1, cores)


def thread_plan(settings: Settings, cores: int | None = None) -> ThreadPlan:
    """The settings' thread counts, the zeros (automatic) filled in for ``cores`` cores.

    On the CPU the default is one single-threaded run per core: the detector's small convolutions
    split poorly across threads. On 2 cores, two single-threaded runs side by side gave 142 images/s
    raw against 103 for one run on two threads, and the server 1.27 times the images/s at 4 clients
    (1.03 at 16). A run alone, though, finishes sooner on all the cores (detector 5.8 against
    7.1 ms), so a run that starts while no other run of its model is in flight takes a second
    session on every core (``lone``). On CUDA one run at a time keeps the device busy; its threads
    only feed it. Never raises: a CUDA demanded but missing is reported when the models load."""
    cores = cores or max(1, available_cores() // settings.workers)   # each server process its share
    instances = settings.inference_instances or (1 if _cuda_usable(settings.device) else cores)
    intra_op = settings.intra_op_threads or max(1, cores // instances)
    lone = settings.lone_run_threads or (max(cores, intra_op) if instances > 1 and not _cuda_usable(settings.device)
                                         else intra_op)
    return ThreadPlan(instances=instances, intra_op=intra_op, workers=settings.worker_threads or cores, lone=lone)


_arena_lock = threading.Lock()
_arena_registered = False


def _share_cpu_arena() -> None:
    """Register, once per process, the CPU memory arena every session allocates from.

    By default each session grows an arena of its own and keeps what it grew; with a second
    session per model for runs alone (``SessionRunner.lone``) that is twice the arenas. One arena
    shared by all sessions reuses what one model's run freed for the next model's. Resident memory
    of the server after closed-loop load at 1, 4, 16, 64 and 16 clients (6 s each, 2-core AMD EPYC):
    980 MB with an arena per session (839 MB before the second sessions), 693-777 MB with the
    shared arena grown by powers of two, and 1239 MB with it grown by exactly what is asked for (its
    regions fragment). Throughput within noise of each other."""
    global _arena_registered
    with _arena_lock:
        if not _arena_registered:
            memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            # max_mem 0 (no cap), extend strategy 0 (kNextPowerOfTwo), the rest ONNX Runtime's defaults
            ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, 0, -1, -1))
            _arena_registered = True


def create_session(path: Path, settings: Settings, intra_op: int | None = None) -> ort.InferenceSession:
    """Open ``path`` on the best provider that really initialises, on ``intra_op`` threads (the
    thread plan's by default); log which provider it runs on."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op or thread_plan(settings).intra_op
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    _share_cpu_arena()
    opts.add_session_config_entry("session.use_env_allocators", "1")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    wanted = providers(settings)
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=wanted)
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise ModelLoadError(f"{path.name}: ONNX Runtime cannot load it: {exc}") from exc
    actual = session.get_providers()[0]
    if settings.device == "cuda" and actual != CUDA:
        raise ModelLoadError(f"{path.name}: CUDA was demanded but the session runs on {actual}")
    if wanted[0] != CPU and actual != CUDA:           # CUDA was asked for first
        log.warning("%s: CUDA provider did not initialise, falling back to CPU", path.name)
    log.info("model %s loaded on %s", path.name, actual)
    return session


M = TypeVar("M", bound=BaseModel)


def parse_metadata(meta_class: type[M], raw: dict[str, Any], path: Path, what: str) -> M:
    """``raw`` validated as ``meta_class``; a file that does not describe ``what`` is a ``ModelLoadError``."""
    try:
        return meta_class.model_validate(raw)
    except ValidationError as exc:
        raise ModelLoadError(f"{path.name}: its metadata does not describe {what}: {exc}") from exc


def read_metadata(session: ort.InferenceSession) -> dict[str, Any]:
    """The model's ``metadata_props`` with each value JSON-decoded."""
    raw = session.get_modelmeta().custom_metadata_map
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def fixed_batch_sizes(max_batch: int) -> list[int]:
    """The batch sizes a model runs at when its shapes are fixed: powers of two below ``max_batch``,
    then ``max_batch`` (16: 1, 2, 4, 8, 16)."""
    sizes = [1]
    while sizes[-1] * 2 < max_batch:
        sizes.append(sizes[-1] * 2)
    return sizes + [max_batch] if max_batch > 1 else sizes


class SessionRunner:
    """Runs a single-input model: ``run(batch) -> first output``, thread-safe.

    With ``io_binding`` (``SIGHTLINE_IO_BINDING``, CUDA only in the server) each inference thread
    keeps its input buffers on the session's device between runs, one per batch shape (the
    ``BUFFERS`` most recent), and copies each batch into one of them instead of having ONNX Runtime
    allocate and fill a fresh device tensor per call; outputs are written on the device and copied
    back once. Off by default: on an H200 the detector ran 4-9 % slower that way than with plain
    ``session.run`` (1.63 against 1.50 ms at batch 1, 5.13 against 4.73 ms at batch 16). On the
    CPU plain ``session.run`` reads the numpy memory in place.

    ``lone``, when set (``use_lone``; the server sets it on the CPU, where runs go side by side on one
    thread each), is a second session of the same model on more threads: a run that starts while no other
    run is in flight here takes it and finishes sooner; one that starts beside another takes the
    single-threaded ``session``. The two give the same outputs up to float rounding.

    ``sized``, when set (``use_batch_sizes``; the server sets it on CUDA), holds one session per
    batch size: a batch of n rows is padded with zero rows up to the smallest size of at least n and
    run on that size's session, so that each session only ever sees one input shape. ONNX Runtime's
    CUDA convolutions keep the cuDNN plan of the last input shape alone and build every
    convolution's plan anew when the shape changes: about 1 s for the detector on an H200 (0.6 to
    1.9 s at batch sizes 2 to 16), with cuDNN's HEURISTIC choice as with EXHAUSTIVE. A batcher that
    forms a new size every few runs then spends its time planning (2 to 8 images/s where batching
    off served 300), and warming up every size beforehand does not help.

    ``fixed_batch``: a graph whose input takes exactly k rows (its first dimension an int in the
    file, e.g. InsightFace's SCRFD at 1) is run k rows at a time, the last group padded with zero
    rows, and the outputs concatenated: the batcher's batches of any size still run."""

    BUFFERS = 4

    def __init__(self, session: ort.InferenceSession, io_binding: bool = False,
                 lone: ort.InferenceSession | None = None) -> None:
        self.session = session
        self.lone: ort.InferenceSession | None = None
        self.lone_threads = 0
        if lone is not None:
            self.use_lone(lone)
        self.input_name = session.get_inputs()[0].name
        rows = session.get_inputs()[0].shape[0]
        self.fixed_batch: int | None = rows if isinstance(rows, int) and rows > 0 else None
        self.output_name = session.get_outputs()[0].name
        self.device = "cuda" if session.get_providers()[0] == CUDA else "cpu"
        self.io_binding = io_binding
        self._local = threading.local()
        self._lock = threading.Lock()
        self._in_flight = 0
        self.lone_runs = 0                                # runs that took the lone session
        self.sized: dict[int, ort.InferenceSession] | None = None
        self.batch_sizes: list[int] = []                  # the sizes of ``sized``, ascending; [] = any

    def follow(self, settings: Settings) -> None:
        """The server's choice for this runner: IO binding where ``SIGHTLINE_IO_BINDING`` asks and
        the session runs on CUDA."""
        self.io_binding = settings.io_binding and self.device == "cuda"

    def use_lone(self, session: ort.InferenceSession) -> None:
        """Take ``session`` (the same model on more threads) for runs that start alone."""
        self.lone, self.lone_threads = session, session.get_session_options().intra_op_num_threads

    def use_batch_sizes(self, sized: dict[int, ort.InferenceSession]) -> None:
        """Run only at the batch sizes of ``sized``, each on its session (the same model)."""
        self.sized, self.batch_sizes = dict(sized), sorted(sized)

    def _size_for(self, n: int) -> int:
        """The fixed batch size a batch of ``n`` rows runs at (``n`` when sizes are not fixed or
        ``n`` is above them all)."""
        return next((s for s in self.batch_sizes if s >= n), n)

    def stack(self, parts: list[np.ndarray]) -> np.ndarray:
        """``parts`` as one batch, zero rows already added up to its fixed batch size: one copy
        where stacking and then padding would make two (the batcher's; ``run`` returns a row for
        every row it is given, the added ones too)."""
        n = sum(len(p) for p in parts)
        size = self._size_for(n)
        if size == n:
            return parts[0] if len(parts) == 1 else np.concatenate(parts)
        out = np.empty((size, *parts[0].shape[1:]), parts[0].dtype)
        start = 0
        for part in parts:
            out[start:start + len(part)] = part
            start += len(part)
        out[n:] = 0
        return out

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.fixed_batch is not None:
            return self._run_fixed(batch, self.fixed_batch)
        if self.sized is None:
            return self._choose(self.session, batch)
        n, top = len(batch), self.batch_sizes[-1]
        if n > top:                                       # the batcher never forms one: split rather than fail
            return np.concatenate([self.run(batch[i:i + top]) for i in range(0, n, top)])
        size = self._size_for(n)
        return self._choose(self.sized[size], self.stack([batch]) if size > n else batch)[:n]

    def _run_fixed(self, batch: np.ndarray, rows: int) -> np.ndarray:
        """``batch`` through a graph that takes exactly ``rows`` rows: group by group, the last one
        padded with zero rows (their outputs dropped)."""
        n, outs = len(batch), []
        for start in range(0, max(n, 1), rows):
            group = batch[start:start + rows]
            if len(group) < rows:
                group = np.concatenate([group, np.zeros((rows - len(group), *batch.shape[1:]), batch.dtype)])
            outs.append(self._choose(self.session, group)[:n - start])
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def _choose(self, session: ort.InferenceSession, batch: np.ndarray) -> np.ndarray:
        if self.lone is None:                             # no choice to make: no count to keep
            return self._run(session, batch)
        with self._lock:
            self._in_flight += 1
            alone = self._in_flight == 1
            self.lone_runs += alone
        try:
            if alone:
                return self.lone.run([self.output_name], {self.input_name: batch})[0]
            return self._run(session, batch)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _run(self, session: ort.InferenceSession, batch: np.ndarray) -> np.ndarray:
        if not self.io_binding:
            return session.run([self.output_name], {self.input_name: batch})[0]
        binding, buffers = self._thread_state(session)
        key = (batch.shape, batch.dtype.str)
        value = buffers.pop(key, None)
        if value is None:
            value = ort.OrtValue.ortvalue_from_shape_and_type(batch.shape, batch.dtype, self.device, 0)
            if len(buffers) >= self.BUFFERS:
                buffers.popitem(last=False)          # the least recently used shape
        buffers[key] = value
        value.update_inplace(np.ascontiguousarray(batch))
        binding.bind_ortvalue_input(self.input_name, value)
        binding.bind_output(self.output_name, self.device, 0)
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def _thread_state(self, session: ort.InferenceSession | None = None
                      ) -> tuple[ort.IOBinding, OrderedDict[tuple, ort.OrtValue]]:
        """This thread's binding and buffers for ``session`` (the runner's own by default)."""
        session = session or self.session
        states = self._local.__dict__.setdefault("states", {})
        if id(session) not in states:                 # an IOBinding is not shared between threads
            states[id(session)] = session.io_binding(), OrderedDict()
        return states[id(session)]
