"""Administration: the verification threshold calibrated on the operator's own labelled photos.

``POST /admin/calibration`` takes a zip archive of ``<person>/<photo>`` entries, embeds each photo's
largest face through the served pipeline, measures every genuine and impostor pair, sets the 1:1
threshold at the false-accept rate asked (``far``), and serves it at once; it is kept in the data
folder for this embedder's weights (``calibration.json``), so a restart keeps it. ``GET`` says what
is served and how it was set, ``GET /admin/calibration/roc.svg`` draws its ROC, ``DELETE`` goes back
to the model file's own threshold."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import Response

from app.api.deps import EngineDep, FacesEmbedDep, SettingsDep
from app.errors import ApiError, InvalidRequest
from app.faces import FaceAnalyzer
from app.models.embedder import FaceEmbedder
from app.models.metadata import VerificationMeta
from app.pipeline import Steps
from app.schemas import CalibrationOut, ErrorResponse
from app.services.calibration import CalibrationError, CalibrationStore, calibrate, labelled_zip, largest_face_steps, roc_svg

router = APIRouter(prefix="/admin", tags=["admin"])

MAX_PHOTOS = 2000
ERRORS = {code: {"model": ErrorResponse} for code in (400, 413, 422, 503)}


def _guarded(steps: Steps[np.ndarray | None]) -> Steps[np.ndarray | ApiError | None]:
    """A photo that cannot be read is counted, not fatal to the whole calibration."""
    try:
        return (yield from steps)
    except ApiError as exc:
        return exc


def _out(embedder: FaceEmbedder, photos: int | None = None, without_face: int | None = None) -> CalibrationOut:
    v = embedder.meta.verification
    extra = v.model_extra or {}
    return CalibrationOut(threshold=v.threshold, target_far=v.target_far, method=v.method,
                          far=extra.get("far"), tar=extra.get("tar"), genuine_pairs=extra.get("genuine_pairs"),
                          impostor_pairs=extra.get("impostor_pairs"), roc=v.roc or [],
                          source="model_file" if v is embedder.file_verification else "calibration",
                          photos=photos, photos_without_face=without_face)


def _store(request: Request) -> CalibrationStore:
    return CalibrationStore(request.app.state.settings.data_dir)


@router.post("/calibration", response_model=CalibrationOut, responses=ERRORS)
async def calibrate_threshold(request: Request, faces: FacesEmbedDep, settings: SettingsDep, engine: EngineDep,
                              archive: Annotated[UploadFile, File(description="zip of <person>/<photo> entries")],
                              far: Annotated[float, Query(gt=0.0, lt=1.0, description="false-accept rate")] = 1e-3,
                              ) -> CalibrationOut:
    """Set the verification threshold at ``far`` on these labelled photos (two or more photos of
    some people, and enough people for ``1 / far`` impostor pairs)."""
    data = await archive.read()
    try:
        photos = await engine.offload(labelled_zip, data, MAX_PHOTOS, 16 * settings.max_body_bytes)
    except ValueError as exc:
        raise InvalidRequest(f"{exc}; send a zip archive of <person>/<photo> entries", code="invalid_archive") \
            from None
    if not photos:
        raise InvalidRequest("the archive holds no photos in <person>/<photo> folders", code="invalid_archive")
    found = await engine.run_all([_guarded(largest_face_steps(faces, d, settings.max_pixels)) for _, _, d in photos],
                                 name_images=False)
    kept = [(person, e) for (person, _, _), e in zip(photos, found) if isinstance(e, np.ndarray)]
    emb = np.stack([e for _, e in kept]) if kept else np.zeros((0, 1), np.float32)
    labels = np.array([p for p, _ in kept])
    try:
        verification = await engine.offload(calibrate, emb, labels, far, "photos sent to POST /admin/calibration")
    except CalibrationError as exc:
        raise InvalidRequest(str(exc), code="too_few_faces") from None
    embedder = _embedder(faces)
    embedder.use_verification(VerificationMeta.model_validate(verification))
    await engine.offload(_store(request).save, embedder.fingerprint, verification)
    return _out(embedder, len(photos), len(photos) - len(kept))


def _embedder(faces: FaceAnalyzer) -> FaceEmbedder:
    assert faces.embedder is not None   # FacesEmbedDep guarantees it
    return faces.embedder


@router.get("/calibration", response_model=CalibrationOut, responses=ERRORS)
async def calibration(faces: FacesEmbedDep) -> CalibrationOut:
    """The verification threshold served now, and how it was set."""
    return _out(_embedder(faces))


@router.get("/calibration/roc.svg", response_class=Response, responses={200: {"content": {"image/svg+xml": {}}}})
async def calibration_roc(faces: FacesEmbedDep) -> Response:
    """The served threshold's ROC (true- against false-accept rate), as an SVG image."""
    v = _embedder(faces).meta.verification
    return Response(roc_svg(v.roc or [], v.target_far), media_type="image/svg+xml")


@router.delete("/calibration", response_model=CalibrationOut, responses=ERRORS)
async def reset_calibration(request: Request, faces: FacesEmbedDep, engine: EngineDep) -> CalibrationOut:
    """Serve the model file's own threshold again, and forget the calibration."""
    embedder = _embedder(faces)
    embedder.use_verification(None)
    await engine.offload(_store(request).clear, embedder.fingerprint)
    return _out(embedder)
