"""The face gallery: SQLite (the truth) and an in-memory FAISS index (a cache of it), kept in step.

Ordering rules that make a crash at any moment harmless:
- every write commits to SQLite first, then updates the index; the index is rebuilt from SQLite at
  start-up, so a face committed but not yet indexed is found after a restart;
- every search result is checked against SQLite before it is returned, so a face deleted but still
  indexed (crash or failure between the commit and the index removal) is dropped; face ids are never
  reused, so a stale id can never stand for another subject's face.

Concurrency: writes (enroll, delete) are serialised by one lock held across the commit and the index
update, so the index never misses a removal that raced an insert; searches take only the index lock
and the store lock, never both at once. Callable from any thread.

Only faces embedded by this gallery's ``model_version`` are indexed: embeddings from another
embedder version live in a different space and are never compared with new ones.

Several processes may share one data directory (``SIGHTLINE_WORKERS``, or servers on one volume),
each with its own index, kept in step with SQLite:
- before each search (and each count of the faces searched) a process adds the faces committed
  since it last looked: ``faces.id > watermark``. Face ids grow with each commit (SQLite has one
  writer at a time and AUTOINCREMENT hands out increasing ids), so a face committed by another
  process always lands above the watermark; this process's own enrolls are in its index already;
- a face another process deleted is dropped by the SQLite check of every search result (above), and
  removed from this index as soon as a search meets it (its id can never come back).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.gallery.index import FaceIndex, Hits
from app.gallery.store import Face, GalleryStore, Subject

log = logging.getLogger("sightline.gallery")

DB_NAME = "gallery.sqlite3"
MAX_PAGE = 1000
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FACES_PER_SUBJECT_GUESS = 4  # first search asks for top_k * this many faces, doubling while short


@dataclass(frozen=True)
class Match:
    face_id: int  # the subject's most similar face
    subject_id: str
    name: str
    similarity: float  # cosine, in [-1, 1]
    distance: float  # squared L2 between unit vectors = 2 - 2 * similarity


@dataclass(frozen=True)
class GalleryStats:
    model_version: str
    dim: int
    subjects: int
    faces: int  # every face row, any embedder version
    faces_searchable: int  # faces in the index (this embedder version)
    other_versions: dict[str, int]  # embedder version -> faces not searched


def unit_rows(embeddings: np.ndarray, dim: int) -> np.ndarray:
    """``(Q, dim)`` finite, non-zero embeddings scaled to unit length, float32; ``ValueError`` otherwise."""
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected embeddings of shape (Q, {dim}), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embedding contains NaN or infinity")
    norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    if (norms < 1e-12).any():
        raise ValueError("embedding has zero length and no direction")
    return (x / norms).astype(np.float32)


def _checked_box(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"box must be 4 numbers x1, y1, x2, y2, got {box!r}") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"box must be 4 finite numbers x1, y1, x2, y2, got {box!r}")
    x1, y1, x2, y2 = values
    if x2 < x1 or y2 < y1:
        raise ValueError(f"box must have x1 <= x2 and y1 <= y2, got {box!r}")
    return x1, y1, x2, y2


def _metadata_json(metadata: dict | None) -> str:
    if metadata is None:
        return "{}"
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a JSON object, got {type(metadata).__name__}")
    try:
        return json.dumps(metadata, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata must be JSON-serialisable: {e}") from None


class Gallery:
    """Subjects, their faces, and 1:N search over the faces of one embedder version. Thread-safe."""

    def __init__(self, store: GalleryStore, index: FaceIndex, model_version: str) -> None:
        self._store, self._index = store, index
        self.model_version, self.dim = model_version, index.dim
        self._write_lock = threading.Lock()
        self._watermark = 0            # every face of this version with an id up to here is indexed
        self._own: set[int] = set()    # faces this process indexed above the watermark

    @classmethod
    def open(cls, data_dir: Path, model_version: str, dim: int) -> Gallery:
        """Open (creating if needed) ``data_dir/gallery.sqlite3`` and rebuild the index from it."""
        if not model_version:
            raise ValueError("model_version must be a non-empty string")
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        store = GalleryStore.open(data_dir / DB_NAME)
        try:
            gallery = cls(store, FaceIndex(dim), model_version)
            gallery._rebuild()
        except BaseException:
            store.close()
            raise
        return gallery

    def _rebuild(self) -> None:
        t0 = time.perf_counter()
        self._catch_up()
        counts = self._store.counts(self.model_version)
        log.info("gallery: index rebuilt with %d faces of embedder %s (%d-d), %d subjects, from %s in %.0f ms",
                 len(self._index), self.model_version, self.dim, counts.subjects, self._store.path,
                 (time.perf_counter() - t0) * 1000)
        others = counts.other_versions
        if others:
            faces = sum(c.faces for c in others.values())
            versions = ", ".join(others if len(others) == 1 else (f"{v} ({c.faces} faces)" for v, c in others.items()))
            log.warning("gallery: %d faces of %d subjects were embedded by embedder %s, not %s; they are not "
                        "searched; re-enroll those subjects", faces, counts.other_version_subjects, versions,
                        self.model_version)

    def _catch_up(self) -> int:
        """Index the faces of this version committed (by any process) since the last look; how many.
        Nothing new (the highest face id no higher than last time): one indexed lookup, no lock."""
        if self._store.last_face_id() <= self._watermark:
            return 0
        added = 0
        with self._write_lock:
            top = self._store.last_face_id()       # any face committed later gets a higher id
            for ids, vectors in self._store.embeddings(self.model_version, self.dim, after=self._watermark):
                new = ~np.isin(ids, np.fromiter(self._own, np.int64, len(self._own)))
                if new.any():
                    self._index.add(ids[new], vectors[new])
                    added += int(new.sum())
                top = max(top, int(ids[-1]))
            self._watermark = max(self._watermark, top)
            self._own = {i for i in self._own if i > self._watermark}
        return added

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # subjects

    def create_subject(self, name: str, metadata: dict | None = None) -> Subject:
        if not isinstance(name, str) or not name.strip():
            raise ValueError("subject name must be a non-empty string")
        return self._store.insert_subject(name, _metadata_json(metadata))

    def list_subjects(self, limit: int = 50, cursor: str | None = None) -> tuple[list[Subject], str | None]:
        """A page of subjects in creation order and the cursor of the next page (``None``: last page).
        ``ValueError`` for a cursor this gallery did not issue or a limit outside 1..1000."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
        return self._store.subjects_page(limit, cursor)

    def get_subject(self, subject_id: str) -> Subject:
        return self._store.subject(subject_id)

    def delete_subject(self, subject_id: str) -> None:
        """Delete the subject, its face rows (commit), then its index entries."""
        with self._write_lock:
            face_ids = self._store.delete_subject(subject_id)
            self._index.remove(face_ids)
        log.info("gallery: deleted subject %s and %d faces", subject_id, len(face_ids))

    # faces

    def add_face(self, subject_id: str, embedding: np.ndarray, image_sha256: str,
                 box: tuple[float, float, float, float]) -> Face:
        """Enroll one ``(dim,)`` embedding (normalised here) for the subject: commit, then index."""
        if np.shape(embedding) != (self.dim,):
            raise ValueError(f"expected one embedding of shape ({self.dim},), got {np.shape(embedding)}")
        vector = unit_rows(np.asarray(embedding).reshape(1, self.dim), self.dim)
        if not isinstance(image_sha256, str) or not _SHA256.fullmatch(image_sha256):
            raise ValueError("image_sha256 must be 64 lowercase hex digits")
        box = _checked_box(box)
        with self._write_lock:
            face = self._store.insert_face(subject_id, vector[0], self.model_version, image_sha256, box)
            self._index.add(np.array([face.id], dtype=np.int64), vector)
            if face.id > self._watermark:
                self._own.add(face.id)
        return face

    def list_faces(self, subject_id: str) -> list[Face]:
        return self._store.faces(subject_id)

    def delete_face(self, subject_id: str, face_id: int) -> None:
        """Delete one face of this subject (commit, then index); ``FaceNotFound`` when the subject has
        no such face (including another subject's face), ``SubjectNotFound`` when the subject is gone."""
        with self._write_lock:
            self._store.delete_face(subject_id, face_id)
            self._index.remove([face_id])

    # search

    def search(self, embeddings: np.ndarray, top_k: int) -> list[list[Match]]:
        """For each of the ``(Q, dim)`` queries, the ``top_k`` most similar subjects (each by its best
        face), similarity descending. Only faces of this embedder version that are still in the
        database are returned; fewer than ``top_k`` only when the gallery has fewer such subjects."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        queries = unit_rows(embeddings, self.dim)
        self._catch_up()
        results: list[list[Match]] = [[] for _ in range(queries.shape[0])]
        pending = list(range(queries.shape[0]))
        k = top_k * _FACES_PER_SUBJECT_GUESS
        while pending:
            hits = self._index.search(queries[pending], k)
            found = np.unique(hits.ids[hits.ids >= 0]).tolist()
            live = self._store.live_faces(found, self.model_version)
            dead = [i for i in found if i not in live]
            if dead:     # deleted since indexed: by another process, or before a failure here
                self._prune(dead)
            short = []
            for row, q in enumerate(pending):
                results[q] = _best_per_subject(hits, row, live, top_k)
                if len(results[q]) < top_k and not hits.exhaustive:
                    short.append(q)
            pending, k = short, k * 2
        return results

    def _prune(self, dead: list[int]) -> None:
        """Drop faces gone from SQLite from the index; the answer never depended on it (each hit is
        checked against SQLite), so a failure is only logged."""
        try:
            self._index.remove(dead)
        except Exception as exc:
            log.warning("gallery: could not drop %d deleted faces from the index: %s", len(dead), exc)

    @property
    def searchable_faces(self) -> int:
        """Faces in the index: what one search compares a query with (including, until a search
        meets them, faces another process has deleted)."""
        self._catch_up()
        return len(self._index)

    def stats(self) -> GalleryStats:
        self._catch_up()
        counts = self._store.counts(self.model_version)
        return GalleryStats(self.model_version, self.dim, counts.subjects, counts.faces, len(self._index),
                            {v: c.faces for v, c in counts.other_versions.items()})


def _best_per_subject(hits: Hits, row: int, live: dict[int, tuple[str, str]], top_k: int) -> list[Match]:
    """Walk one query's faces best first, keep each live subject's first (best) face, stop at ``top_k``."""
    matches: list[Match] = []
    seen: set[str] = set()
    for similarity, face_id in zip(hits.similarities[row].tolist(), hits.ids[row].tolist()):
        if face_id not in live:  # -1 padding, or deleted since it was indexed
            continue
        subject_id, name = live[face_id]
        if subject_id in seen:
            continue
        seen.add(subject_id)
        s = min(1.0, max(-1.0, similarity))
        matches.append(Match(face_id, subject_id, name, s, max(0.0, 2.0 - 2.0 * s)))
        if len(matches) == top_k:
            break
    return matches
