"""Liveness, readiness and the models being served."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import RegistryDep
from app.errors import error_response
from app.schemas import ModelInfo, ModelsResponse, Status

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Status)
async def healthz() -> Status:
    """The process is alive (it may still be loading models)."""
    return Status(status="ok")


@router.get("/readyz", response_model=Status, responses={503: {"description": "models still loading"}})
async def readyz(request: Request, registry: RegistryDep) -> Status | JSONResponse:
    """200 once every model is loaded; 503 before, and from the moment a shutdown (SIGTERM) begins."""
    if request.app.state.draining:
        return error_response(503, "shutting_down", "the server is shutting down; requests in flight finish")
    if registry.error:
        return error_response(503, registry.error_code, registry.error_message)
    if not registry.ready:
        return error_response(503, "not_ready", "models are still loading", {"Retry-After": "1"})
    return Status(status="ready")


@router.get("/models", response_model=ModelsResponse)
async def models(registry: RegistryDep) -> ModelsResponse:
    """Each loaded model's metadata and the ONNX Runtime execution provider it really runs on."""
    return ModelsResponse(models=[
        ModelInfo(name=m.meta.name, task=m.meta.task, version=m.meta.version, file=m.path.name,
                  execution_provider=m.provider, io_binding=m.runner.io_binding,
                  lone_run_threads=m.runner.lone_threads, batch_sizes=m.runner.batch_sizes or None,
                  metadata=m.raw_metadata)
        for m in registry.describe()])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(request: Request) -> Response:
    """Prometheus metrics: requests and latency by endpoint and status, batch sizes, queue depth and
    inference time by model, requests refused by reason."""
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
