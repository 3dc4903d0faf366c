"""ONNX Runtime sessions: execution-provider choice (CUDA only when it really initialises) and
the metadata a model file carries in ``metadata_props`` (JSON-encoded values)."""

from __future__ import annotations

import ctypes
import json
import logging
from pathlib import Path
from typing import Any, TypeVar

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


def _providers(device: str) -> list[str]:
    if device == "cpu":
        return [CPU]
    if CUDA in ort.get_available_providers() and _cuda_driver_present():
        return [CUDA, CPU]
    if device == "cuda":
        raise ModelLoadError("SIGHTLINE_DEVICE=cuda but no CUDA driver / CUDA provider is available")
    return [CPU]


def create_session(path: Path, settings: Settings) -> ort.InferenceSession:
    """Open ``path`` on the best provider that really initialises; log which one it runs on."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = settings.intra_op_threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    wanted = _providers(settings.device)
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=wanted)
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise ModelLoadError(f"{path.name}: ONNX Runtime cannot load it: {exc}") from exc
    actual = session.get_providers()[0]
    if settings.device == "cuda" and actual != CUDA:
        raise ModelLoadError(f"{path.name}: CUDA was demanded but the session runs on {actual}")
    if wanted[0] == CUDA and actual != CUDA:
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
