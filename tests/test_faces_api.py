"""The face routes' contract and the gallery through HTTP, with a stand-in face pipeline (dependency
overrides) so that every case is exact: a photo's width says how many faces it holds (100 px per
face; 50 px: none), and a face's colour says who it is. The real models are tested in
test_faces_models.py."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.api import deps
from app.faces import Face, FacePhoto
from app.gallery import Gallery
from app.imaging import decode_image
from app.main import create_app
from app.settings import Settings

DIM = 128


class FakeEmbedder:
    threshold = 0.5

    def identification_threshold(self, gallery_faces: int, fpir: float) -> float:
        return self.threshold

    def probability(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(1.0 - np.sum((a - b) ** 2) / 4.0)


class FakeFaces:
    """Face i of a photo: box (100 i + 10, 10, 100 i + 90, 90); identity: the colour at its centre."""

    detector = SimpleNamespace(meta=SimpleNamespace(name="fake_faces", version="0"))
    embedder = FakeEmbedder()

    def detect(self, image: np.ndarray, conf: float = 0.5, max_faces: int = 50) -> list[Face]:
        n = image.shape[1] // 100
        return [Face(np.array([100 * i + 10, 10, 100 * i + 90, 90], np.float32), 0.9 - 0.1 * i,
                     np.array([[100 * i + 30 + 10 * k, 40 + 5 * k] for k in range(5)], np.float32))
                for i in range(n)]

    def embed(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        out = []
        for f in faces:
            colour = image[50, int(f.box[0]) + 40]
            v = np.random.default_rng(colour.astype(int).tolist()).normal(size=DIM)
            out.append(v / np.linalg.norm(v))
        return np.array(out, np.float32).reshape(-1, DIM)

    # the serving pipelines' step form (app.pipeline); the stand-in runs no model, so it yields nothing
    def photo_steps(self, data: bytes, max_pixels: int, conf: float = 0.5, max_faces: int = 50):
        image = decode_image(data, max_pixels)
        return FacePhoto(image, self.detect(image.rgb, conf, max_faces))
        yield

    def embed_photo_steps(self, photo: FacePhoto, faces: list[Face]):
        return self.embed(photo.image.rgb, faces)
        yield


def photo(*colours: tuple[int, int, int]) -> bytes:
    """One face per colour (a photo of nobody when none is given)."""
    width = 100 * len(colours) if colours else 50
    img = np.zeros((100, width, 3), np.uint8)
    for i, c in enumerate(colours):
        img[:, 100 * i:100 * (i + 1)] = c
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


ALICE, BOB, CAROL = (200, 30, 30), (30, 200, 30), (30, 30, 200)


class Server:
    """The app over a data folder, with the stand-in pipeline; ``restart`` reopens the gallery."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self._start()

    def _start(self) -> None:
        self.gallery = Gallery.open(self.data, "fake-1", DIM)
        app = create_app(Settings(models_dir=self.data / "no-models", data_dir=self.data))
        (self.data / "no-models").mkdir(exist_ok=True)
        fake = FakeFaces()
        app.dependency_overrides[deps.get_faces] = lambda: fake
        app.dependency_overrides[deps.get_faces_embed] = lambda: fake
        app.dependency_overrides[deps.get_gallery] = lambda: self.gallery
        self.client = TestClient(app).__enter__()

    def restart(self) -> None:
        self.close()
        self._start()

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self.gallery.close()


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path)
    yield s
    s.close()


def enroll(client, name: str, image: bytes) -> tuple[str, int]:
    subject = client.post("/subjects", json={"name": name, "metadata": {"team": "a"}})
    assert subject.status_code == 201, subject.text
    sid = subject.json()["id"]
    r = client.post(f"/subjects/{sid}/faces", files={"image": ("p.png", image, "image/png")})
    assert r.status_code == 201, r.text
    return sid, r.json()["face_id"]


def identify(client, image: bytes, **params) -> dict:
    r = client.post("/identify", files={"image": ("p.png", image, "image/png")}, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def _keys(obj) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | set().union(*(_keys(v) for v in obj.values()))
    if isinstance(obj, list):
        return set().union(*(_keys(v) for v in obj)) if obj else set()
    return set()


def test_enroll_identify_delete_then_unknown(server):
    c = server.client
    alice, _ = enroll(c, "Alice", photo(ALICE))
    enroll(c, "Bob", photo(BOB))
    faces = identify(c, photo(ALICE))["faces"]
    assert faces[0]["identity"] == {"subject_id": alice, "name": "Alice"}
    assert faces[0]["matches"][0]["subject_id"] == alice and faces[0]["matches"][0]["similarity"] == pytest.approx(1.0)
    assert identify(c, photo(CAROL))["faces"][0]["identity"] is None          # never enrolled
    assert c.delete(f"/subjects/{alice}").status_code == 204
    after = identify(c, photo(ALICE))["faces"][0]
    assert after["identity"] is None and all(m["subject_id"] != alice for m in after["matches"])
    assert c.get(f"/subjects/{alice}").status_code == 404


def test_identify_every_face_top_k_and_threshold_override(server):
    c = server.client
    ids = {name: enroll(c, name, photo(col))[0] for name, col in (("Alice", ALICE), ("Bob", BOB))}
    body = identify(c, photo(BOB, CAROL, ALICE), top_k=1)
    assert [f["identity"]["name"] if f["identity"] else None for f in body["faces"]] == ["Bob", None, "Alice"]
    assert all(len(f["matches"]) == 1 for f in body["faces"]) and body["threshold"] == 0.5
    loose = identify(c, photo(CAROL), threshold=4.0)["faces"][0]
    assert loose["identity"]["subject_id"] in ids.values()                    # anyone passes a threshold of 4
    assert identify(c, photo())["faces"] == []
    assert c.post("/identify", files={"image": ("p.png", photo(ALICE), "image/png")},
                  params={"top_k": 0}).status_code == 422


def test_enroll_needs_exactly_one_face(server):
    c = server.client
    sid = c.post("/subjects", json={"name": "Alice"}).json()["id"]
    for image, code in ((photo(), "no_face"), (photo(ALICE, BOB), "multiple_faces")):
        r = c.post(f"/subjects/{sid}/faces", files={"image": ("p.png", image, "image/png")})
        assert r.status_code == 422 and r.json()["error"]["code"] == code
    assert c.get(f"/subjects/{sid}").json()["face_ids"] == []
    r = c.post("/subjects/nobody/faces", files={"image": ("p.png", photo(ALICE), "image/png")})
    assert r.status_code == 404 and r.json()["error"]["code"] == "subject_not_found"
    r = c.post(f"/subjects/{sid}/faces", files={"image": ("p.png", b"not an image", "image/png")})
    assert r.status_code == 400


def test_delete_one_face(server):
    c = server.client
    sid, first = enroll(c, "Alice", photo(ALICE))
    second = c.post(f"/subjects/{sid}/faces", files={"image": ("p.png", photo(BOB), "image/png")}).json()["face_id"]
    assert c.get(f"/subjects/{sid}").json()["face_ids"] == [first, second]
    assert c.delete(f"/subjects/{sid}/faces/{second}").status_code == 204
    assert c.get(f"/subjects/{sid}").json()["face_ids"] == [first]
    assert identify(c, photo(BOB))["faces"][0]["identity"] is None
    assert c.delete(f"/subjects/{sid}/faces/{second}").json()["error"]["code"] == "face_not_found"
    assert c.delete(f"/subjects/nobody/faces/{first}").status_code == 404


def test_restart_keeps_the_gallery(server):
    alice, face = enroll(server.client, "Alice", photo(ALICE))
    before = server.client.get("/subjects").json()
    server.restart()
    assert server.client.get("/subjects").json() == before
    assert identify(server.client, photo(ALICE))["faces"][0]["identity"]["subject_id"] == alice


def test_eight_concurrent_enrollers_lose_nothing(server):
    c = server.client
    colours = [(i * 29 % 256, i * 71 % 256, i * 113 % 256) for i in range(1, 41)]

    def enroller(k: int) -> list[str]:
        return [enroll(c, f"p{k}-{j}", photo(colours[5 * k + j]))[0] for j in range(5)]

    with ThreadPoolExecutor(8) as pool:
        ids = [sid for batch in pool.map(enroller, range(8)) for sid in batch]
    assert len(set(ids)) == 40
    listed, cursor = [], None
    while True:
        page = c.get("/subjects", params={"limit": 7, **({"cursor": cursor} if cursor else {})}).json()
        listed += [s["id"] for s in page["subjects"]]
        if not (cursor := page["next_cursor"]):
            break
    assert sorted(listed) == sorted(ids)
    for sid, colour in zip(ids, colours):
        assert identify(c, photo(colour))["faces"][0]["identity"]["subject_id"] == sid


def test_verify(server):
    c = server.client

    def verify(a: bytes, b: bytes):
        return c.post("/verify", files={"image1": ("a.png", a, "image/png"), "image2": ("b.png", b, "image/png")})

    same = verify(photo(ALICE), photo(BOB, ALICE)).json()   # the largest face: both the same size, the first
    assert set(same) == {"verified", "distance", "similarity", "probability", "threshold", "faces"}
    other = verify(photo(ALICE), photo(BOB)).json()
    assert other["verified"] is False and other["distance"] > other["threshold"]
    twin = verify(photo(ALICE), photo(ALICE)).json()
    assert twin["verified"] is True and twin["distance"] == pytest.approx(0.0) and twin["probability"] == 1.0
    assert len(twin["faces"]) == 2 and len(twin["faces"][0]["landmarks"]) == 5
    r = verify(photo(ALICE), photo())
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_face" and "image2" in r.json()["error"]["message"]
    assert verify(photo(ALICE), b"").status_code == 400
    assert c.post("/verify", files={"image1": ("a.png", photo(ALICE), "image/png")}).status_code == 422


def test_faces_detect_contract(server):
    body = server.client.post("/faces/detect", files={"image": ("p.png", photo(ALICE, BOB), "image/png")}).json()
    assert body["image"] == {"width": 200, "height": 100} and len(body["faces"]) == 2
    assert set(body["faces"][0]) == {"box", "score", "landmarks"}
    assert body["faces"][1]["box"] == {"x1": 110.0, "y1": 10.0, "x2": 190.0, "y2": 90.0}


def test_subjects_crud_and_validation(server):
    c = server.client
    assert c.post("/subjects", json={"name": ""}).status_code == 422
    assert c.post("/subjects", json={"name": "   "}).status_code == 422
    assert c.post("/subjects", json={"metadata": {}}).status_code == 422
    assert c.post("/subjects", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    s = c.post("/subjects", json={"name": "Alice", "metadata": {"badge": 7, "tags": ["x"]}}).json()
    assert s["metadata"] == {"badge": 7, "tags": ["x"]} and s["face_ids"] == [] and s["created_at"]
    assert c.get(f"/subjects/{s['id']}").json() == s
    assert c.get("/subjects", params={"cursor": "garbage"}).json()["error"]["code"] == "invalid_cursor"
    assert c.get("/subjects", params={"limit": 0}).status_code == 422
    assert c.delete("/subjects/unknown").status_code == 404


def test_responses_never_carry_embeddings(server):
    c = server.client
    sid, _ = enroll(c, "Alice", photo(ALICE))
    bodies = [c.get("/subjects").json(), c.get(f"/subjects/{sid}").json(), identify(c, photo(ALICE)),
              c.post("/verify", files={"image1": ("a.png", photo(ALICE), "image/png"),
                                       "image2": ("b.png", photo(ALICE), "image/png")}).json()]
    assert not any("embedding" in k for b in bodies for k in _keys(b))
    assert len(json.dumps(bodies)) < 5000


def test_face_routes_say_503_without_face_models(tmp_path):
    (tmp_path / "models").mkdir()
    with TestClient(create_app(Settings(models_dir=tmp_path / "models", data_dir=tmp_path / "data"))) as client:
        import time

        while client.get("/readyz").status_code != 200:
            time.sleep(0.05)
        r = client.post("/identify", files={"image": ("p.png", photo(ALICE), "image/png")})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_available"
        assert client.post("/subjects", json={"name": "A"}).status_code == 503


def test_identification_threshold_tightens_with_the_gallery():
    """Thresholds interpolated in log FAR from the ROC points, never looser than the 1:1 one."""
    from app.models.embedder import FaceEmbedder
    from app.models.metadata import EmbedderMeta

    roc = [{"far": 1e-4, "tar": 0.7, "threshold": 0.2}, {"far": 1e-3, "tar": 0.9, "threshold": 0.4},
           {"far": 1e-2, "tar": 0.99, "threshold": 0.8}]
    meta = EmbedderMeta.model_validate({
        "name": "e", "task": "face_embedding", "family": "sightline-facenet", "version": "1", "input_size": 64, "embedding_dim": 128,
        "normalization": {"mean": [0, 0, 0], "std": [1, 1, 1]}, "template": [[0, 0]] * 5, "distance": "squared_l2",
        "verification": {"threshold": 0.4, "target_far": 1e-3, "roc": roc}})
    emb = FaceEmbedder.__new__(FaceEmbedder)
    emb.meta = meta
    assert emb.threshold_at_far(1e-3) == pytest.approx(0.4)
    assert emb.threshold_at_far(10 ** -3.5) == pytest.approx(0.3)          # halfway in log FAR
    assert emb.threshold_at_far(1e-6) == pytest.approx(0.2)                # clamped to the table
    assert emb.threshold_at_far(1e-2) == pytest.approx(0.4)                # never looser than 1:1
    assert emb.identification_threshold(1, 0.01) == pytest.approx(0.4)
    assert emb.identification_threshold(100, 0.01) == pytest.approx(0.2)   # 1e-4 per comparison
    tighter = [emb.identification_threshold(n, 0.01) for n in (10, 30, 100)]
    assert tighter == sorted(tighter, reverse=True)


def test_two_servers_on_one_data_directory_share_the_gallery(tmp_path):
    """Server processes on one data directory (SIGHTLINE_WORKERS, or replicas on one volume) each
    keep their own index in step with the database: a person enrolled through one is identified
    through the other, and deleted through one is unknown to the other."""
    one = Server(tmp_path)
    two = Server(tmp_path)
    try:
        alice, _ = enroll(one.client, "Alice", photo(ALICE))
        assert identify(two.client, photo(ALICE))["faces"][0]["identity"]["subject_id"] == alice
        bob, _ = enroll(two.client, "Bob", photo(BOB))
        assert identify(one.client, photo(BOB))["faces"][0]["identity"]["subject_id"] == bob
        assert one.client.delete(f"/subjects/{alice}").status_code == 204
        assert identify(two.client, photo(ALICE))["faces"][0]["identity"] is None
        assert two.client.get(f"/subjects/{alice}").status_code == 404
    finally:
        two.close()
        one.close()


def test_a_gallery_that_cannot_be_opened_says_why_the_server_is_not_ready(tmp_path):
    """A gallery written by a newer server: this one stays unready and says so in the one error shape."""
    import sqlite3
    import time

    (tmp_path / "models").mkdir()
    for name in ("face_detector.onnx", "landmarks.onnx", "embedder.onnx"):
        (tmp_path / "models" / name).symlink_to(Path(__file__).resolve().parent.parent / "models" / "synthetic" / name)
    (tmp_path / "data").mkdir()
    with sqlite3.connect(tmp_path / "data" / "gallery.sqlite3") as db:
        db.execute("PRAGMA user_version = 99")
    with TestClient(create_app(Settings(models_dir=tmp_path / "models", data_dir=tmp_path / "data"))) as client:
        while (r := client.get("/readyz")).status_code == 503 and r.json()["error"]["code"] == "not_ready":
            time.sleep(0.05)
        assert r.status_code == 503
        error = r.json()["error"]
        assert error["code"] == "gallery_unavailable" and "gallery schema 99" in error["message"]
        r = client.post("/subjects", json={"name": "A"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "gallery_unavailable"
