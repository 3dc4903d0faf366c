"""The one settings class. Every field can be set from the environment with the ``SIGHTLINE_``
prefix (``SIGHTLINE_MODELS_DIR=/models``) or from a ``.env`` file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIGHTLINE_", env_file=".env", extra="ignore")

    models_dir: Path = Field(ROOT / "models", description="folder of *.onnx models to serve")
    data_dir: Path = Field(Path("./data"), description="gallery database and index")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="request body limit (413 above)")
    max_pixels: int = Field(40_000_000, ge=1, description="decoded width x height limit (413 above)")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when it really initialises, else CPU; cuda: fail if CUDA is unusable")
    cuda_conv_algo_search: Literal["HEURISTIC", "EXHAUSTIVE", "DEFAULT"] = Field("HEURISTIC", description=(
        "how cuDNN picks each convolution's algorithm on CUDA: HEURISTIC asks its heuristics (at once); "
        "EXHAUSTIVE times every algorithm, once per new input shape (1.3-2.2 s for the detector at each "
        "batch size on an H200); DEFAULT takes one fixed algorithm"))
    io_binding: bool = Field(False, description=(
        "on CUDA, copy each batch into input buffers kept on the GPU between runs (ONNX Runtime IO "
        "binding) instead of handing ONNX Runtime numpy arrays; off: it measured slower for the detector "
        "on an H200 (README: Serving runtime)"))
    fixed_batch_sizes: Literal["auto", "on", "off"] = Field("auto", description=(
        "run each model only at batch sizes 1, 2, 4, 8, ... and max_batch, a batch padded with zero rows "
        "up to the next of them, each size on a session of its own (one input shape per session); auto: "
        "on CUDA, where ONNX Runtime plans every convolution anew (about 1 s for the detector on an "
        "H200) whenever a session's input shape changes"))
    warmup: Literal["auto", "on", "off"] = Field("auto", description=(
        "run every model once at each batch size it can run at (1 to max_batch, or its fixed batch sizes) "
        "before /readyz turns ready; auto: on CUDA, whose first run at each new shape is slow"))
    face_min_size: float = Field(40.0, ge=8.0, description=(
        "the smallest face (box side, photo pixels) the face routes look for; a detector with a fixed "
        "input (the default face detector) reads a large photo in overlapping tiles down to it, so a "
        "smaller value finds smaller faces in large photos at more CPU per photo"))
    face_min_fraction: float = Field(0.02, ge=0.0, le=0.5, description=(
        "... or this share of the photo's longer side, whichever is larger: a phone photo is not read in "
        "dozens of tiles for faces far smaller than its subject's"))
    identify_fpir: float = Field(0.01, gt=0.0, le=1.0, description=(
        "false-positive identification rate /identify holds: the share of unknown faces it may name; "
        "the distance threshold tightens as the gallery grows"))
    inference_instances: int = Field(0, ge=0, description=(
        "runs of one model in flight at once (each a batch); 0 = as many as cores on the CPU, 1 on CUDA"))
    intra_op_threads: int = Field(0, ge=0, description=(
        "ONNX Runtime threads inside one model run; 0 = the cores shared out among the instances"))
    lone_run_threads: int = Field(0, ge=0, description=(
        "ONNX Runtime threads for a model run that starts while no other run of that model is in "
        "flight, on a second session of the model; 0 = all cores when runs go side by side on the CPU, "
        "none otherwise; a value not above intra_op_threads turns it off"))
    workers: int = Field(1, ge=1, le=64, description=(
        "server processes (uvicorn workers) behind one port, each with its own models, batchers, "
        "concurrency limit and its share of the cores; they share the gallery through its database and "
        "/metrics adds them up (python -m app, make run and the Docker image)"))
    worker_threads: int = Field(0, ge=0, description=(
        "thread pool for decode, pre- and post-processing and the gallery; 0 = as many as cores"))
    max_batch: int = Field(16, ge=1, le=256, description=(
        "rows (images, or faces) per model run, across requests; 1 turns batching off"))
    max_delay_ms: float = Field(3.0, ge=0.0, le=1000.0, description=(
        "how long the oldest waiting request waits for others to share its batch"))
    max_queue: int = Field(64, ge=1, description="requests waiting per model; more get 503 with Retry-After")
    max_in_flight: int = Field(24, ge=1, description=(
        "most POST requests served at once; one more is answered 503 with Retry-After as soon as its "
        "headers arrive, before its body is read"))
    min_in_flight: int = Field(1, ge=1, description="the adaptive concurrency limit never goes below this")
    latency_tolerance: float = Field(2.0, ge=0.0, description=(
        "the concurrency limit shrinks when requests take longer than this many times their latency "
        "alone (app/admission.py); higher trades latency for throughput under load; 0 = a fixed limit "
        "of max_in_flight (batch jobs that would rather wait than retry)"))
    standing_after: float = Field(5.0, ge=0.0, description=(
        "a POST is refused below the limit while the oldest request in flight has stayed over "
        "latency_tolerance times its latency alone for this many times that latency more (a standing "
        "queue; a burst of random arrivals drains sooner); 0 = as soon as it is over"))
    request_timeout_ms: float = Field(10_000.0, ge=0.0, description=(
        "a request still waiting for a model this long after it arrived gets 503 instead; 0 = no deadline"))
    drain_seconds: float = Field(0.0, ge=0.0, le=300.0, description=(
        "on SIGTERM, keep serving this long with /readyz answering 503 (so load balancers stop sending) "
        "before closing the listener; requests in flight always finish"))
    max_images: int = Field(16, ge=1, le=256, description="image parts one /detect, /segment or /faces/detect takes")
    log_level: str = "INFO"
