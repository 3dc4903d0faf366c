"""Liveness, readiness and the models being served."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import RegistryDep
from app.errors import error_response
from app.schemas import ModelInfo, ModelsResponse, Status

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Status)
async def healthz() -> Status:
    """The process is alive (it may still be loading models)."""
    return Status(status="ok")


@router.get("/readyz", response_model=Status, responses={503: {"description": "models still loading"}})
async def readyz(registry: RegistryDep) -> Status | JSONResponse:
    """200 once every model is loaded, 503 before."""
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
                  execution_provider=m.provider, metadata=m.raw_metadata)
        for m in registry.describe()])
