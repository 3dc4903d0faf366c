"""The gallery's source of truth: subjects and their faces in one SQLite file (WAL mode).

Face ids come from ``INTEGER PRIMARY KEY AUTOINCREMENT`` and are never reused, so an id still held
by a stale FAISS index can only name a face that is gone, never another subject's face. Embeddings
are stored as unit-length float32 little-endian blobs; raw images are never stored, only their SHA-256.

One connection, guarded by a lock, serves every thread; each write is one ``BEGIN IMMEDIATE``
transaction. Nothing here knows about FAISS.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS subjects (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,   -- creation order, the pagination key
    id         TEXT NOT NULL UNIQUE,                -- uuid4 hex, the public id
    name       TEXT NOT NULL,
    metadata   TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    created_at TEXT NOT NULL                        -- ISO 8601 UTC
);
CREATE TABLE IF NOT EXISTS faces (
    id            INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused
    subject_id    TEXT NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    embedding     BLOB NOT NULL,                     -- unit-length float32, little-endian
    model_version TEXT NOT NULL,                     -- the embedder that produced it
    image_sha256  TEXT NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS faces_by_subject ON faces(subject_id);
CREATE INDEX IF NOT EXISTS faces_by_version ON faces(model_version);
"""

_CURSOR = re.compile(r"s1:(\d{1,18})")
_FACE_COLUMNS = "id, subject_id, model_version, image_sha256, x1, y1, x2, y2, created_at"


class SubjectNotFound(LookupError):
    """No subject with this id."""


class FaceNotFound(LookupError):
    """No face with this id under this subject."""


@dataclass(frozen=True)
class Subject:
    id: str  # uuid4 hex
    name: str
    metadata: dict
    created_at: str  # ISO 8601 UTC
    face_ids: tuple[int, ...]  # every face, any embedder version, ascending


@dataclass(frozen=True)
class Face:
    """A face row without its embedding (embeddings never leave the gallery)."""

    id: int
    subject_id: str
    model_version: str
    image_sha256: str
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original-image pixels
    created_at: str


@dataclass(frozen=True)
class VersionCount:
    faces: int
    subjects: int


@dataclass(frozen=True)
class StoreCounts:
    subjects: int
    faces: int
    other_versions: dict[str, VersionCount]  # embedder version -> counts, the given version excluded
    other_version_subjects: int  # subjects with at least one face of another version


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s1:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The subject ``seq`` after which a page starts; ``ValueError`` for anything we did not issue."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError(f"invalid cursor {cursor!r}: pass back the next_cursor of a previous page") from None
    match = _CURSOR.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid cursor {cursor!r}: pass back the next_cursor of a previous page")
    return int(match.group(1))


def _face(row: tuple) -> Face:
    return Face(id=row[0], subject_id=row[1], model_version=row[2], image_sha256=row[3],
                box=(row[4], row[5], row[6], row[7]), created_at=row[8])


class GalleryStore:
    """SQLite access for the gallery. Thread-safe: every statement runs under one lock."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db, self.path = db, path
        self._lock = threading.RLock()

    @classmethod
    def open(cls, path: Path) -> GalleryStore:
        """Open (or create) the database at ``path``: WAL, foreign keys on, schema in place."""
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
        try:
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")  # an acknowledged enroll survives power loss
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{path} has gallery schema {version}; this server knows {SCHEMA_VERSION}: "
                                   "upgrade the server")
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            db.close()
            raise
        return cls(db, path)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self, begin: str = "BEGIN IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """One transaction under the lock; committed on success, rolled back on any exception."""
        with self._lock:
            self._db.execute(begin)
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # subjects

    def insert_subject(self, name: str, metadata_json: str) -> Subject:
        subject_id, created_at = uuid.uuid4().hex, utc_now()
        with self._transaction() as db:
            db.execute("INSERT INTO subjects (id, name, metadata, created_at) VALUES (?, ?, ?, ?)",
                       (subject_id, name, metadata_json, created_at))
        return Subject(subject_id, name, json.loads(metadata_json), created_at, ())

    def subject(self, subject_id: str) -> Subject:
        with self._transaction("BEGIN") as db:
            row = db.execute("SELECT id, name, metadata, created_at FROM subjects WHERE id = ?",
                             (subject_id,)).fetchone()
            if row is None:
                raise SubjectNotFound(subject_id)
            ids = db.execute("SELECT id FROM faces WHERE subject_id = ? ORDER BY id", (subject_id,)).fetchall()
        return Subject(row[0], row[1], json.loads(row[2]), row[3], tuple(i for (i,) in ids))

    def subjects_page(self, limit: int, cursor: str | None) -> tuple[list[Subject], str | None]:
        """Up to ``limit`` subjects in creation order after ``cursor``, and the cursor of the next page
        (``None`` on the last page). Keyset pagination: deletions between pages skip nothing."""
        after = -1 if cursor is None else decode_cursor(cursor)
        with self._transaction("BEGIN") as db:
            rows = db.execute("SELECT seq, id, name, metadata, created_at FROM subjects WHERE seq > ? "
                              "ORDER BY seq LIMIT ?", (after, limit + 1)).fetchall()
            page = rows[:limit]
            faces: dict[str, list[int]] = {r[1]: [] for r in page}
            for subject_id, face_id in db.execute(
                    "SELECT subject_id, id FROM faces WHERE subject_id IN (SELECT value FROM json_each(?)) "
                    "ORDER BY id", (json.dumps(list(faces)),)):
                faces[subject_id].append(face_id)
        subjects = [Subject(r[1], r[2], json.loads(r[3]), r[4], tuple(faces[r[1]])) for r in page]
        return subjects, (encode_cursor(page[-1][0]) if len(rows) > limit else None)

    def delete_subject(self, subject_id: str) -> list[int]:
        """Delete the subject and (by cascade) its faces; the face ids that were deleted."""
        with self._transaction() as db:
            ids = [i for (i,) in db.execute("SELECT id FROM faces WHERE subject_id = ?", (subject_id,))]
            if db.execute("DELETE FROM subjects WHERE id = ?", (subject_id,)).rowcount == 0:
                raise SubjectNotFound(subject_id)
        return ids

    # faces

    def insert_face(self, subject_id: str, embedding: np.ndarray, model_version: str, image_sha256: str,
                    box: tuple[float, float, float, float]) -> Face:
        """Insert one face (``embedding`` already unit-length float32); its new, never-reused id."""
        created_at = utc_now()
        blob = np.ascontiguousarray(embedding, dtype="<f4").tobytes()
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM subjects WHERE id = ?", (subject_id,)).fetchone() is None:
                raise SubjectNotFound(subject_id)
            cur = db.execute("INSERT INTO faces (subject_id, embedding, model_version, image_sha256, "
                             "x1, y1, x2, y2, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (subject_id, blob, model_version, image_sha256, *box, created_at))
        return Face(int(cur.lastrowid), subject_id, model_version, image_sha256, box, created_at)

    def faces(self, subject_id: str) -> list[Face]:
        with self._transaction("BEGIN") as db:
            if db.execute("SELECT 1 FROM subjects WHERE id = ?", (subject_id,)).fetchone() is None:
                raise SubjectNotFound(subject_id)
            rows = db.execute(f"SELECT {_FACE_COLUMNS} FROM faces WHERE subject_id = ? ORDER BY id",
                              (subject_id,)).fetchall()
        return [_face(r) for r in rows]

    def delete_face(self, subject_id: str, face_id: int) -> None:
        with self._transaction() as db:
            if db.execute("DELETE FROM faces WHERE id = ? AND subject_id = ?", (face_id, subject_id)).rowcount:
                return
            if db.execute("SELECT 1 FROM subjects WHERE id = ?", (subject_id,)).fetchone() is None:
                raise SubjectNotFound(subject_id)
            raise FaceNotFound(f"face {face_id} of subject {subject_id}")

    def embeddings(self, model_version: str, dim: int, chunk: int = 8192, after: int = 0
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every face of ``model_version`` with an id above ``after`` as ``(ids (n,) int64, embeddings
        (n, dim) float32)`` chunks, ascending id. A blob of the wrong length is a corrupt row:
        ``ValueError`` naming it."""
        last = after
        while True:
            with self._lock:
                rows = self._db.execute("SELECT id, embedding FROM faces WHERE model_version = ? AND id > ? "
                                        "ORDER BY id LIMIT ?", (model_version, last, chunk)).fetchall()
            if not rows:
                return
            for face_id, blob in rows:
                if len(blob) != 4 * dim:
                    raise ValueError(f"face {face_id} has a {len(blob) // 4}-d embedding but embedder "
                                     f"{model_version} is declared {dim}-d: wrong model or a corrupt gallery")
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dim)
            yield ids, vectors.astype(np.float32)
            last = rows[-1][0]

    def last_face_id(self) -> int:
        """The highest face id in the table (0 when empty); ids only grow (AUTOINCREMENT)."""
        with self._lock:
            return self._db.execute("SELECT COALESCE(MAX(id), 0) FROM faces").fetchone()[0]

    def live_faces(self, face_ids: list[int], model_version: str) -> dict[int, tuple[str, str]]:
        """Of ``face_ids``, those still present with ``model_version``: face id -> (subject id, name)."""
        if not face_ids:
            return {}
        with self._lock:
            rows = self._db.execute(
                "SELECT f.id, f.subject_id, s.name FROM faces f JOIN subjects s ON s.id = f.subject_id "
                "WHERE f.id IN (SELECT value FROM json_each(?)) AND f.model_version = ?",
                (json.dumps(face_ids), model_version)).fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    def counts(self, model_version: str) -> StoreCounts:
        with self._transaction("BEGIN") as db:
            subjects = db.execute("SELECT COUNT(*) FROM subjects").fetchone()[0]
            faces = db.execute("SELECT COUNT(*) FROM faces").fetchone()[0]
            others = db.execute("SELECT model_version, COUNT(*), COUNT(DISTINCT subject_id) FROM faces "
                                "WHERE model_version != ? GROUP BY model_version ORDER BY model_version",
                                (model_version,)).fetchall()
            other_subjects = db.execute("SELECT COUNT(DISTINCT subject_id) FROM faces WHERE model_version != ?",
                                        (model_version,)).fetchone()[0]
        return StoreCounts(subjects, faces, {v: VersionCount(n, s) for v, n, s in others}, other_subjects)
