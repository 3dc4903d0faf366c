"""The face gallery: SQLite as the truth, FAISS as its cache. Search is checked against a plain numpy
reference (best face per subject by cosine); crashes between the commit and the index update are
simulated by editing the database behind the index's back or by failing the index call."""

from __future__ import annotations

import base64
import dataclasses
import logging
import sqlite3
import subprocess
import sys
import threading

import numpy as np
import pytest

from app.gallery import Face, FaceNotFound, Gallery, Match, Subject, SubjectNotFound
from app.gallery.gallery import DB_NAME

DIM = 32
V1, V2 = "1.0.0", "1.1.0"
SHA = "ab" * 32


def unit(rng: np.random.Generator, n: int = 1, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near(v: np.ndarray, rng: np.random.Generator, noise: float = 0.05) -> np.ndarray:
    """A query close to ``v`` (cosine about 0.999), as a second photo of the same face would be."""
    return v + noise * unit(rng, 1, v.shape[-1])[0]


@pytest.fixture
def gallery(tmp_path):
    with Gallery.open(tmp_path / "data", V1, DIM) as g:
        yield g


def enroll(g: Gallery, rng: np.random.Generator, name: str, faces: int = 1) -> tuple[Subject, np.ndarray]:
    subject = g.create_subject(name)
    vectors = unit(rng, faces)
    for v in vectors:
        g.add_face(subject.id, v, SHA, (1.0, 2.0, 30.0, 40.0))
    return g.get_subject(subject.id), vectors


def reference_search(vectors: dict[str, np.ndarray], queries: np.ndarray, top_k: int) -> list[list[tuple[str, float]]]:
    """Deliberately simple: every subject's best cosine, sorted descending, first ``top_k``."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    out = []
    for row in q:
        best = sorted(((float((v @ row).max()), sid) for sid, v in vectors.items()), reverse=True)
        out.append([(sid, s) for s, sid in best[:top_k]])
    return out


def test_enroll_search_delete_subject(gallery):
    rng = np.random.default_rng(0)
    alice, va = enroll(gallery, rng, "alice", 2)
    bob, vb = enroll(gallery, rng, "bob", 1)
    [[top, second]] = gallery.search(near(va[1], rng)[None], top_k=2)
    assert (top.subject_id, top.name, top.face_id) == (alice.id, "alice", alice.face_ids[1])
    assert top.similarity > 0.99 and second.subject_id == bob.id
    assert top.distance == pytest.approx(2 - 2 * top.similarity, abs=1e-6)

    gallery.delete_subject(alice.id)
    [[only]] = gallery.search(va[1][None], top_k=5)
    assert only.subject_id == bob.id
    with pytest.raises(SubjectNotFound):
        gallery.get_subject(alice.id)
    s = gallery.stats()
    assert (s.subjects, s.faces, s.faces_searchable) == (1, 1, 1)
    with sqlite3.connect(gallery._store.path) as db:  # ON DELETE CASCADE removed alice's face rows
        assert db.execute("SELECT COUNT(*) FROM faces WHERE subject_id = ?", (alice.id,)).fetchone()[0] == 0


def test_delete_one_face(gallery):
    rng = np.random.default_rng(1)
    alice, va = enroll(gallery, rng, "alice", 2)
    bob, _ = enroll(gallery, rng, "bob", 1)
    gone, kept = alice.face_ids
    gallery.delete_face(alice.id, gone)
    assert gallery.get_subject(alice.id).face_ids == (kept,)
    assert [f.id for f in gallery.list_faces(alice.id)] == [kept]
    [matches] = gallery.search(va[0][None], top_k=2)  # alice is found by her other face only
    assert {m.subject_id: m.face_id for m in matches} == {alice.id: kept, bob.id: bob.face_ids[0]}
    assert all(m.similarity < 0.9 for m in matches)
    assert gallery.stats().faces_searchable == 2
    with pytest.raises(FaceNotFound):
        gallery.delete_face(alice.id, gone)  # twice
    with pytest.raises(FaceNotFound):
        gallery.delete_face(alice.id, bob.face_ids[0])  # another subject's face
    assert gallery.get_subject(bob.id).face_ids == bob.face_ids
    with pytest.raises(SubjectNotFound):
        gallery.delete_face("0" * 32, kept)


def test_restart_keeps_subjects_faces_and_results(tmp_path):
    rng = np.random.default_rng(2)
    queries = unit(rng, 6)
    with Gallery.open(tmp_path, V1, DIM) as g:
        subjects = [enroll(g, rng, f"s{i}", faces=1 + i % 3)[0] for i in range(12)]
        g.delete_face(subjects[4].id, subjects[4].face_ids[0])
        g.delete_subject(subjects[7].id)
        before = (g.list_subjects(limit=100), [g.list_faces(s.id) for s in g.list_subjects(limit=100)[0]],
                  g.search(queries, top_k=5), g.stats())
    with Gallery.open(tmp_path, V1, DIM) as g:
        after = (g.list_subjects(limit=100), [g.list_faces(s.id) for s in g.list_subjects(limit=100)[0]],
                 g.search(queries, top_k=5), g.stats())
    assert after == before
    assert before[3].faces_searchable == before[3].faces == 21


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("top_k", [1, 3, 50])
def test_search_matches_numpy_reference(tmp_path, seed, top_k):
    """Best face per subject, similarity descending, top_k subjects, even when one subject's many
    faces fill the first pages of FAISS hits (the search must ask FAISS for more)."""
    rng = np.random.default_rng(seed)
    with Gallery.open(tmp_path, V1, DIM) as g:
        vectors = {}
        crowd = g.create_subject("crowd")  # 40 faces around one direction: the queries' neighbourhood
        centre = unit(rng)[0]
        vectors[crowd.id] = np.stack([near(centre, rng, 0.3) for _ in range(40)])
        vectors[crowd.id] /= np.linalg.norm(vectors[crowd.id], axis=1, keepdims=True)
        for v in vectors[crowd.id]:
            g.add_face(crowd.id, v, SHA, (0, 0, 1, 1))
        for i in range(10):
            s, v = enroll(g, rng, f"s{i}", faces=1 + i % 4)
            vectors[s.id] = v
        queries = np.stack([near(centre, rng, 0.5) for _ in range(3)] + [unit(rng)[0]])
        got = g.search(queries, top_k=top_k)
    want = reference_search(vectors, queries, top_k)
    assert len(got) == len(want)
    for matches, expected in zip(got, want):
        assert [m.subject_id for m in matches] == [sid for sid, _ in expected]
        np.testing.assert_allclose([m.similarity for m in matches], [s for _, s in expected], atol=1e-5)
        assert len({m.subject_id for m in matches}) == len(matches) == min(top_k, 11)


def test_top_k_larger_than_gallery_and_empty_gallery(gallery):
    rng = np.random.default_rng(3)
    assert gallery.search(unit(rng, 2), top_k=5) == [[], []]
    assert gallery.search(np.zeros((0, DIM), np.float32), top_k=5) == []
    for i in range(3):
        enroll(gallery, rng, f"s{i}", faces=2)
    [matches] = gallery.search(unit(rng), top_k=100)
    assert len(matches) == 3 and len({m.subject_id for m in matches}) == 3
    assert [m.similarity for m in matches] == sorted((m.similarity for m in matches), reverse=True)


def test_concurrent_enrolls_and_searches_lose_nothing(tmp_path):
    rng = np.random.default_rng(4)
    threads_n, per_thread = 8, 15
    vectors = unit(rng, threads_n * per_thread).reshape(threads_n, per_thread, DIM)
    errors: list[BaseException] = []
    enrolled: list[tuple[str, int, int, int]] = []  # subject, face id, thread, index
    done = threading.Event()
    start = threading.Barrier(threads_n + 1)

    with Gallery.open(tmp_path, V1, DIM) as g:
        def enroller(t: int) -> None:
            try:
                start.wait()
                for i in range(per_thread):
                    if i % 3 == 0:  # a new subject every third face
                        s = g.create_subject(f"t{t}-{i}")
                    face = g.add_face(s.id, vectors[t, i], SHA, (0, 0, 1, 1))
                    enrolled.append((s.id, face.id, t, i))
            except BaseException as e:  # reported by the main thread
                errors.append(e)

        def searcher() -> None:
            try:
                start.wait()
                while not done.is_set():
                    for matches in g.search(vectors[:, 0], top_k=3):
                        assert len({m.subject_id for m in matches}) == len(matches)
            except BaseException as e:
                errors.append(e)

        workers = [threading.Thread(target=enroller, args=(t,)) for t in range(threads_n)]
        watcher = threading.Thread(target=searcher)
        for w in [*workers, watcher]:
            w.start()
        for w in workers:
            w.join()
        done.set()
        watcher.join()
        assert not errors, errors
        assert len(enrolled) == threads_n * per_thread == len({f for _, f, _, _ in enrolled})
        stats = g.stats()
        assert stats.faces == stats.faces_searchable == threads_n * per_thread
        assert stats.subjects == threads_n * per_thread // 3
        queries = np.stack([vectors[t, i] for _, _, t, i in enrolled])
        for (sid, fid, _, _), [best] in zip(enrolled, g.search(queries, top_k=1)):
            assert (best.subject_id, best.face_id) == (sid, fid) and best.similarity > 0.999
    with Gallery.open(tmp_path, V1, DIM) as g:
        assert g.stats() == stats


def test_rows_deleted_behind_the_index_are_never_returned(gallery):
    """A crash after the commit and before the index removal leaves stale ids in the index: search
    checks every id against the database and still fills top_k from the live subjects."""
    rng = np.random.default_rng(5)
    alice, va = enroll(gallery, rng, "alice", 3)
    others = [enroll(gallery, rng, f"s{i}")[0] for i in range(3)]
    with sqlite3.connect(gallery._store.path) as db:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("DELETE FROM subjects WHERE id = ?", (alice.id,))
    assert gallery.stats().faces_searchable == 6  # the index still holds alice's 3 faces
    for matches in gallery.search(np.concatenate([va, unit(rng, 2)]), top_k=3):
        assert alice.id not in {m.subject_id for m in matches}
        assert len(matches) == 3 and {m.subject_id for m in matches} <= {s.id for s in others}


def test_index_failure_after_commit_never_returns_deleted_subject(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    with Gallery.open(tmp_path, V1, DIM) as g:
        alice, va = enroll(g, rng, "alice", 2)
        bob, vb = enroll(g, rng, "bob", 1)

        def crash(ids):
            raise RuntimeError("simulated crash between commit and index removal")

        monkeypatch.setattr(g._index, "remove", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            g.delete_subject(alice.id)
        with pytest.raises(RuntimeError, match="simulated crash"):
            g.delete_face(bob.id, bob.face_ids[0])
        assert g.search(np.concatenate([va, vb]), top_k=2) == [[], [], []]
        with pytest.raises(SubjectNotFound):
            g.get_subject(alice.id)
    with Gallery.open(tmp_path, V1, DIM) as g:  # the restart rebuilds a consistent index
        s = g.stats()
        assert (s.subjects, s.faces, s.faces_searchable) == (1, 0, 0)


def test_index_failure_after_enroll_commit_is_indexed_by_the_next_search(tmp_path, monkeypatch):
    rng = np.random.default_rng(7)
    v = unit(rng)[0]
    with Gallery.open(tmp_path, V1, DIM) as g:
        alice = g.create_subject("alice")

        def crash(ids, vectors):
            raise RuntimeError("simulated crash between commit and index add")

        monkeypatch.setattr(g._index, "add", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            g.add_face(alice.id, v, SHA, (0, 0, 1, 1))
        monkeypatch.undo()
        [[m]] = g.search(v[None], top_k=1)       # the next search catches up with SQLite
        assert m.subject_id == alice.id and m.similarity > 0.999
    with Gallery.open(tmp_path, V1, DIM) as g:
        [[m]] = g.search(v[None], top_k=1)
        assert m.subject_id == alice.id and m.similarity > 0.999


def test_other_embedder_versions_are_excluded_and_counted(tmp_path, caplog):
    rng = np.random.default_rng(8)
    with Gallery.open(tmp_path, V1, DIM) as g:
        old = [enroll(g, rng, f"old{i}", faces=2) for i in range(3)]
        mixed, _ = enroll(g, rng, "mixed", faces=1)
    with caplog.at_level(logging.WARNING, logger="sightline.gallery"):
        g = Gallery.open(tmp_path, V2, DIM)
    try:
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert warnings == ["gallery: 7 faces of 4 subjects were embedded by embedder 1.0.0, not 1.1.0; "
                            "they are not searched; re-enroll those subjects"]
        new_v = unit(rng)[0]
        new_face = g.add_face(mixed.id, new_v, SHA, (0, 0, 1, 1))
        assert new_face.model_version == V2
        # the old faces' own vectors find only the one face of the new version
        for hits in g.search(np.concatenate([old[0][1], new_v[None]]), top_k=10):
            assert [(m.subject_id, m.face_id) for m in hits] == [(mixed.id, new_face.id)]
        s = g.stats()
        assert (s.subjects, s.faces, s.faces_searchable, s.other_versions) == (4, 8, 1, {V1: 7})
        assert {f.model_version for f in g.list_faces(mixed.id)} == {V1, V2}
        g.delete_subject(old[0][0].id)
        assert g.stats().other_versions == {V1: 5}
    finally:
        g.close()


def test_pagination_walks_every_subject_once(gallery):
    created = [gallery.create_subject(f"s{i:02d}").id for i in range(23)]
    seen, cursor, pages = [], None, 0
    while True:
        page, cursor = gallery.list_subjects(limit=5, cursor=cursor)
        seen += [s.id for s in page]
        pages += 1
        if pages == 2:  # deleting an already-listed subject shifts nothing (keyset, not offset)
            gallery.delete_subject(created[0])
        if cursor is None:
            break
    assert seen == created and pages == 5
    page, cursor = gallery.list_subjects(limit=22)
    assert [s.id for s in page] == created[1:] and cursor is None


@pytest.mark.parametrize("cursor", ["", "garbage!", "czE6", base64.urlsafe_b64encode(b"s1:-3").decode(),
                                    base64.urlsafe_b64encode(b"x9:12").decode(), "\u00e9t\u00e9"])
def test_bad_cursor_or_limit_raises_value_error(gallery, cursor):
    gallery.create_subject("a")
    with pytest.raises(ValueError, match="cursor"):
        gallery.list_subjects(cursor=cursor)


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_bad_limit_raises_value_error(gallery, limit):
    with pytest.raises(ValueError, match="limit"):
        gallery.list_subjects(limit=limit)


def test_unknown_ids_raise(gallery):
    rng = np.random.default_rng(9)
    missing = "f" * 32
    for call in (lambda: gallery.get_subject(missing), lambda: gallery.delete_subject(missing),
                 lambda: gallery.list_faces(missing), lambda: gallery.delete_face(missing, 1),
                 lambda: gallery.add_face(missing, unit(rng)[0], SHA, (0, 0, 1, 1))):
        with pytest.raises(SubjectNotFound):
            call()
    s = gallery.create_subject("a")
    with pytest.raises(FaceNotFound):
        gallery.delete_face(s.id, 12345)
    assert gallery.stats().faces == 0


def test_metadata_round_trips_as_json(tmp_path):
    metadata = {"employee": 42, "tags": ["a", "b"], "nested": {"x": 1.5, "ok": True, "none": None},
                "name": "Zoë 李"}
    with Gallery.open(tmp_path, V1, DIM) as g:
        s = g.create_subject("Zoë", metadata)
        bare = g.create_subject("bare")
        assert s.metadata == metadata and g.get_subject(s.id).metadata == metadata and bare.metadata == {}
        for bad in ({"x": float("nan")}, {"x": object()}, ["not", "a", "dict"]):
            with pytest.raises(ValueError, match="metadata"):
                g.create_subject("bad", bad)
        for name in ("", "   "):
            with pytest.raises(ValueError, match="name"):
                g.create_subject(name)
    with Gallery.open(tmp_path, V1, DIM) as g:
        assert g.get_subject(s.id) == s and g.stats().subjects == 2


def test_embeddings_are_normalised_and_validated(gallery):
    rng = np.random.default_rng(10)
    s = gallery.create_subject("a")
    v = unit(rng)[0]
    face = gallery.add_face(s.id, 7.0 * v, SHA, (1, 2, 3, 4))
    assert face.box == (1.0, 2.0, 3.0, 4.0) and face.image_sha256 == SHA and face.subject_id == s.id
    [[m]] = gallery.search(0.01 * v[None], top_k=1)
    assert m.similarity == pytest.approx(1.0, abs=1e-6) and m.distance == pytest.approx(0.0, abs=1e-6)
    with sqlite3.connect(gallery._store.path) as db:
        blob = db.execute("SELECT embedding FROM faces WHERE id = ?", (face.id,)).fetchone()[0]
    np.testing.assert_allclose(np.frombuffer(blob, "<f4"), v, atol=1e-6)
    bad_embeddings = [unit(rng, 1, DIM + 1)[0], unit(rng)[0:1], np.zeros(DIM), np.full(DIM, np.nan)]
    for bad in bad_embeddings:
        with pytest.raises(ValueError, match="embedding"):
            gallery.add_face(s.id, bad, SHA, (0, 0, 1, 1))
    for sha in ("AB" * 32, "ab" * 31, "zz" * 32):
        with pytest.raises(ValueError, match="sha256"):
            gallery.add_face(s.id, v, sha, (0, 0, 1, 1))
    for box in ((0, 0, 1), (0, 0, float("inf"), 1), (5, 0, 1, 1), "abcd"):
        with pytest.raises(ValueError, match="box"):
            gallery.add_face(s.id, v, SHA, box)
    for queries in (v, unit(rng, 2, DIM + 1), np.zeros((1, DIM))):
        with pytest.raises(ValueError, match="embedding"):
            gallery.search(queries, top_k=1)
    with pytest.raises(ValueError, match="top_k"):
        gallery.search(v[None], top_k=0)
    assert gallery.stats().faces == 1


def test_responses_never_carry_embeddings():
    for cls in (Subject, Face, Match):
        assert not any("embedding" in f.name for f in dataclasses.fields(cls))


def test_database_is_wal_with_foreign_keys_and_created_in_data_dir(tmp_path):
    data = tmp_path / "nested" / "data"
    with Gallery.open(data, V1, DIM) as g:
        s = g.create_subject("a", {"k": "v"})
        assert (data / DB_NAME).is_file()
        with sqlite3.connect(data / DB_NAME) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert g._store._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert s.created_at.endswith("Z") and len(s.id) == 32 and int(s.id, 16) >= 0


def test_wrong_dimension_for_same_version_is_refused(tmp_path):
    with Gallery.open(tmp_path, V1, DIM) as g:
        s = g.create_subject("a")
        g.add_face(s.id, unit(np.random.default_rng(11))[0], SHA, (0, 0, 1, 1))
    with pytest.raises(ValueError, match="32-d embedding but embedder 1.0.0 is declared 64-d"):
        Gallery.open(tmp_path, V1, 64)
    with Gallery.open(tmp_path, V2, 64) as g:  # another version may have another dimension
        assert g.stats().other_versions == {V1: 1}


def test_galleries_sharing_a_directory_see_each_others_enrolls_and_deletes(tmp_path):
    """Two openers of one directory (two server processes) each keep an index of their own, in step
    with SQLite: an enroll on one is searched on the other, a delete on one is never answered by the
    other, whose index drops the face when a search meets it."""
    rng = np.random.default_rng(21)
    a, b = Gallery.open(tmp_path, V1, DIM), Gallery.open(tmp_path, V1, DIM)
    try:
        alice, bob = a.create_subject("alice"), b.create_subject("bob")
        va, vb = unit(rng, 2)
        a.add_face(alice.id, va, SHA, (0, 0, 1, 1))
        assert b.search(near(va, rng)[None], 1)[0][0].subject_id == alice.id
        b.add_face(bob.id, vb, SHA, (0, 0, 1, 1))
        assert a.search(near(vb, rng)[None], 1)[0][0].subject_id == bob.id
        assert a.searchable_faces == b.searchable_faces == 2           # nobody indexed a face twice
        assert a.stats().faces_searchable == b.stats().faces_searchable == 2
        a.delete_subject(alice.id)
        assert [m.subject_id for m in b.search(near(va, rng)[None], 5)[0]] == [bob.id]
        assert b.searchable_faces == 1                                 # met by that search, dropped
        again = a.add_face(bob.id, near(va, rng), SHA, (0, 0, 1, 1))   # a new face never reuses an id
        assert b.search(near(va, rng)[None], 1)[0][0].face_id == again.id
    finally:
        a.close()
        b.close()


def test_a_face_enrolled_by_another_process_is_searched_here(tmp_path):
    rng = np.random.default_rng(22)
    v = unit(rng)[0]
    with Gallery.open(tmp_path, V1, DIM) as here:
        assert here.searchable_faces == 0
        subprocess.run([sys.executable, "-c", (
            "import numpy as np; from app.gallery import Gallery; "
            f"g = Gallery.open({str(tmp_path)!r}, {V1!r}, {DIM}); s = g.create_subject('elsewhere'); "
            f"g.add_face(s.id, np.array({v.tolist()!r}, np.float32), {SHA!r}, (0, 0, 1, 1)); g.close()")],
            check=True, timeout=60)
        match = here.search(near(v, rng)[None], 1)[0][0]
        assert match.name == "elsewhere" and match.similarity > 0.9
