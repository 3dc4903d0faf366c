"""The gallery through the API: subjects, and the faces enrolled for them (one photo is enough).
Embeddings never leave the server; raw images are not kept, only their SHA-256."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from fastapi import status as http

from app.api.deps import EngineDep, FacesEmbedDep, GalleryDep, SettingsDep
from app.api.faces import ERRORS, Conf, ImageFile, no_face
from app.api.images import read_photos
from app.errors import InvalidRequest, NotFound
from app.faces import FaceAnalyzer
from app.gallery import FaceNotFound, Gallery, Subject, SubjectNotFound
from app.pipeline import Steps
from app.schemas import Box, EnrolledFace, ErrorResponse, SubjectCreate, SubjectList, SubjectOut

router = APIRouter(prefix="/subjects", tags=["gallery"])

NOT_FOUND = {404: {"model": ErrorResponse}}
SubjectId = Annotated[str, Path(description="the subject's id", max_length=64)]


def subject_out(s: Subject) -> SubjectOut:
    return SubjectOut(id=s.id, name=s.name, metadata=s.metadata, created_at=s.created_at, face_ids=list(s.face_ids))


def _subject(gallery: Gallery, subject_id: str) -> Subject:
    try:
        return gallery.get_subject(subject_id)
    except SubjectNotFound:
        raise NotFound(f"no subject with id {subject_id!r}", code="subject_not_found") from None


def _enroll(faces: FaceAnalyzer, gallery: Gallery, subject_id: str, data: bytes, max_pixels: int,
            conf: float) -> Steps[EnrolledFace]:
    photo = yield from faces.photo_steps(data, max_pixels, conf)
    found = photo.faces
    if not found:
        raise no_face("image")
    if len(found) > 1:
        raise InvalidRequest(f"{len(found)} faces found; enroll a photo holding exactly one face, or crop it",
                             code="multiple_faces")
    embedding = (yield from faces.embed_photo_steps(photo, found))[0]
    try:
        face = gallery.add_face(subject_id, embedding, hashlib.sha256(data).hexdigest(),
                                tuple(float(v) for v in found[0].box))
    except SubjectNotFound:  # deleted while the photo was being read
        raise NotFound(f"no subject with id {subject_id!r}", code="subject_not_found") from None
    return EnrolledFace(face_id=face.id, subject_id=subject_id,
                        box=Box(**{k: round(v, 2) for k, v in zip(("x1", "y1", "x2", "y2"), face.box)}))


@router.post("", status_code=http.HTTP_201_CREATED, response_model=SubjectOut, responses={422: {"model": ErrorResponse}})
async def create_subject(body: SubjectCreate, gallery: GalleryDep, engine: EngineDep) -> SubjectOut:
    """A new person in the gallery; enroll photos with ``POST /subjects/{id}/faces``."""
    name = body.name.strip()
    if not name:
        raise InvalidRequest("name is blank")
    return subject_out(await engine.offload(gallery.create_subject, name, body.metadata))


@router.get("", response_model=SubjectList, responses={422: {"model": ErrorResponse}})
async def list_subjects(gallery: GalleryDep, engine: EngineDep,
                        limit: Annotated[int, Query(ge=1, le=500)] = 50,
                        cursor: Annotated[str | None, Query(max_length=200, description="from next_cursor")] = None,
                        ) -> SubjectList:
    """Subjects in the order they were created, a page at a time."""
    try:
        subjects, next_cursor = await engine.offload(gallery.list_subjects, limit, cursor)
    except ValueError:
        raise InvalidRequest("cursor is not one this server gave out; start again without it",
                             code="invalid_cursor") from None
    return SubjectList(subjects=[subject_out(s) for s in subjects], next_cursor=next_cursor)


@router.get("/{subject_id}", response_model=SubjectOut, responses=NOT_FOUND)
async def get_subject(subject_id: SubjectId, gallery: GalleryDep, engine: EngineDep) -> SubjectOut:
    return subject_out(await engine.offload(_subject, gallery, subject_id))


@router.delete("/{subject_id}", status_code=http.HTTP_204_NO_CONTENT, response_class=Response, responses=NOT_FOUND)
async def delete_subject(subject_id: SubjectId, gallery: GalleryDep, engine: EngineDep) -> Response:
    """The subject, every face row and every index entry of it."""
    try:
        await engine.offload(gallery.delete_subject, subject_id)
    except SubjectNotFound:
        raise NotFound(f"no subject with id {subject_id!r}", code="subject_not_found") from None
    return Response(status_code=http.HTTP_204_NO_CONTENT)


@router.post("/{subject_id}/faces", status_code=http.HTTP_201_CREATED, response_model=EnrolledFace,
             responses={**ERRORS, **NOT_FOUND})
async def enroll_face(subject_id: SubjectId, faces: FacesEmbedDep, gallery: GalleryDep, settings: SettingsDep,
                      engine: EngineDep, image: ImageFile, conf: Conf = 0.5) -> EnrolledFace:
    """Enroll one photo holding exactly one face (422 ``no_face`` or ``multiple_faces`` otherwise)."""
    await engine.offload(_subject, gallery, subject_id)   # 404 before any model runs
    [data] = await read_photos(image)
    return await engine.run(_enroll(faces, gallery, subject_id, data, settings.max_pixels, conf))


@router.delete("/{subject_id}/faces/{face_id}", status_code=http.HTTP_204_NO_CONTENT, response_class=Response,
               responses=NOT_FOUND)
async def delete_face(subject_id: SubjectId, face_id: int, gallery: GalleryDep, engine: EngineDep) -> Response:
    try:
        await engine.offload(gallery.delete_face, subject_id, face_id)
    except SubjectNotFound:
        raise NotFound(f"no subject with id {subject_id!r}", code="subject_not_found") from None
    except FaceNotFound:
        raise NotFound(f"subject {subject_id!r} has no face {face_id}", code="face_not_found") from None
    return Response(status_code=http.HTTP_204_NO_CONTENT)
