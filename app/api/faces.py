"""``POST /faces/detect``, ``POST /verify`` (1:1) and ``POST /identify`` (1:N against the gallery)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Query, UploadFile

from app.api.deps import EngineDep, FacesDep, FacesEmbedDep, GalleryDep, SettingsDep
from app.api.images import ImageFiles, read_images, read_photos
from app.errors import InvalidRequest
from app.faces import Face, FaceAnalyzer
from app.gallery import Gallery
from app.pipeline import Steps
from app.schemas import (Box, ErrorResponse, FaceOut, FacesDetectBatchResponse, FacesDetectResponse, IdentifiedFace,
                         IdentifyResponse, IdentityOut, ImageSize, MatchOut, ModelRef, VerifyResponse)

router = APIRouter(tags=["faces"])

ERRORS = {code: {"model": ErrorResponse} for code in (400, 413, 415, 422, 503)}
ImageFile = Annotated[UploadFile, File(description="the photo: JPEG, PNG, WebP, BMP or GIF")]
Conf = Annotated[float, Query(ge=0.0, le=1.0, description="minimum face score")]


def face_out(face: Face) -> FaceOut:
    return FaceOut(box=Box(**{k: round(float(v), 2) for k, v in zip(("x1", "y1", "x2", "y2"), face.box)}),
                   score=round(face.score, 4), landmarks=[(round(float(x), 2), round(float(y), 2))
                                                          for x, y in face.landmarks])


def no_face(which: str) -> InvalidRequest:
    return InvalidRequest(f"no face found in {which}; send a photo where a face is clearly visible",
                          code="no_face")


def _detect(faces: FaceAnalyzer, data: bytes, max_pixels: int, conf: float) -> Steps[FacesDetectResponse]:
    photo = yield from faces.photo_steps(data, max_pixels, conf)
    meta = faces.detector.meta
    return FacesDetectResponse(model=ModelRef(name=meta.name, version=meta.version),
                               image=ImageSize(width=photo.image.photo_width, height=photo.image.photo_height),
                               faces=[face_out(f) for f in photo.faces])


def largest_face(faces: FaceAnalyzer, data: bytes, max_pixels: int, conf: float, which: str
                 ) -> Steps[tuple[Face, np.ndarray]]:
    """The photo's largest face and its embedding; 422 ``no_face`` when there is none."""
    photo = yield from faces.photo_steps(data, max_pixels, conf)
    if not photo.faces:
        raise no_face(which)
    face = max(photo.faces, key=lambda f: f.area)
    embeddings = yield from faces.embed_photo_steps(photo, [face])
    return face, embeddings[0]


def _verdict(faces: FaceAnalyzer, first: tuple[Face, np.ndarray], second: tuple[Face, np.ndarray]) -> VerifyResponse:
    (f1, e1), (f2, e2) = first, second
    similarity = float(np.dot(e1, e2))
    distance = max(0.0, 2.0 - 2.0 * similarity)
    embedder = faces.embedder
    assert embedder is not None  # FacesEmbedDep guarantees it
    probability = embedder.probability(e1, e2)
    return VerifyResponse(verified=distance <= embedder.threshold, distance=round(distance, 5),
                          similarity=round(similarity, 5),
                          probability=None if probability is None else round(probability, 5),
                          threshold=round(embedder.threshold, 5), faces=[face_out(f1), face_out(f2)])


def _identify(faces: FaceAnalyzer, gallery: Gallery, data: bytes, max_pixels: int, conf: float, top_k: int,
              threshold: float | None, fpir: float) -> Steps[IdentifyResponse]:
    if threshold is None:
        assert faces.embedder is not None  # FacesEmbedDep guarantees it
        threshold = faces.embedder.identification_threshold(gallery.searchable_faces, fpir)
    photo = yield from faces.photo_steps(data, max_pixels, conf)
    found = photo.faces
    embeddings = yield from faces.embed_photo_steps(photo, found)
    matches = gallery.search(embeddings, top_k) if found else []
    out = []
    for face, ranked in zip(found, matches):
        best = ranked[0] if ranked and ranked[0].distance <= threshold else None
        out.append(IdentifiedFace(
            **face_out(face).model_dump(),
            matches=[MatchOut(subject_id=m.subject_id, name=m.name, similarity=round(m.similarity, 5),
                              distance=round(m.distance, 5)) for m in ranked],
            identity=IdentityOut(subject_id=best.subject_id, name=best.name) if best else None))
    return IdentifyResponse(threshold=round(threshold, 5), faces=out)


@router.post("/faces/detect", response_model=FacesDetectResponse | FacesDetectBatchResponse, responses=ERRORS)
async def faces_detect(faces: FacesDep, settings: SettingsDep, engine: EngineDep, image: ImageFiles,
                       conf: Conf = 0.5) -> FacesDetectResponse | FacesDetectBatchResponse:
    """Every face in the photo with its box, score and 5 landmarks, in original-image pixels. Several
    ``image`` parts give ``{"results": [...]}``, one per image in order."""
    blobs = await read_images(image, settings.max_images)
    results = await engine.run_all([_detect(faces, data, settings.max_pixels, conf) for data in blobs])
    return results[0] if len(results) == 1 else FacesDetectBatchResponse(results=results)


@router.post("/verify", response_model=VerifyResponse, responses=ERRORS)
async def verify(faces: FacesEmbedDep, settings: SettingsDep, engine: EngineDep,
                 image1: ImageFile, image2: ImageFile, conf: Conf = 0.5) -> VerifyResponse:
    """Are the largest faces of the two photos the same person (1:1)?"""
    first, second = await read_photos(image1, image2)
    found = await engine.run_all([largest_face(faces, first, settings.max_pixels, conf, "image1"),
                                  largest_face(faces, second, settings.max_pixels, conf, "image2")], name_images=False)
    return _verdict(faces, *found)


@router.post("/identify", response_model=IdentifyResponse, responses=ERRORS)
async def identify(faces: FacesEmbedDep, gallery: GalleryDep, settings: SettingsDep, engine: EngineDep,
                   image: ImageFile, conf: Conf = 0.5,
                   top_k: Annotated[int, Query(ge=1, le=100, description="subjects returned per face")] = 5,
                   threshold: Annotated[float | None, Query(ge=0.0, le=4.0, description=(
                       "distance threshold overriding the calibrated one (squared L2 of unit embeddings)"))] = None,
                   ) -> IdentifyResponse:
    """Who is each face among the enrolled subjects; ``identity`` is null when nobody is close enough.
    The default threshold holds the false-positive identification rate (``SIGHTLINE_IDENTIFY_FPIR``)
    for the gallery's size, so it tightens as more faces are enrolled."""
    [data] = await read_photos(image)
    return await engine.run(_identify(faces, gallery, data, settings.max_pixels, conf, top_k, threshold,
                                      settings.identify_fpir))
