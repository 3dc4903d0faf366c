"""The bundled face models through the HTTP API on identities they never saw (a seed of their own):
faces and landmarks found, 1:1 verification, and the one-shot enroll → identify → delete cycle."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.vision.boxes import box_iou
from training.synth.faces import FaceConfig, write_faces

IDENTITIES, PHOTOS = 12, 5


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    write_faces(root, IDENTITIES, PHOTOS, 4242, FaceConfig(), workers=1)
    doc = json.loads((root / "annotations.json").read_text())
    subject = {a["image_id"]: a for a in doc["annotations"] if a["identity"] is not None}
    photos: dict[str, list[tuple[bytes, dict, int]]] = {}
    for img in doc["images"]:
        faces = sum(a["image_id"] == img["id"] for a in doc["annotations"])
        photos.setdefault(img["identity"], []).append(((root / img["file_name"]).read_bytes(), subject[img["id"]],
                                                       faces))
    return photos


def _files(**images: bytes) -> dict:
    return {k: (f"{k}.png", v, "image/png") for k, v in images.items()}


def _xyxy(b: dict) -> np.ndarray:
    return np.array([[b["x1"], b["y1"], b["x2"], b["y2"]]], np.float32)


def test_faces_and_landmarks_found(client, people):
    found, errors = 0, []
    for photos in people.values():
        for data, truth, _ in photos:
            faces = client.post("/faces/detect", files=_files(image=data)).json()["faces"]
            x, y, w, h = truth["bbox"]
            iou = [box_iou(np.array([[x, y, x + w, y + h]], np.float32), _xyxy(f["box"]))[0, 0] for f in faces]
            if faces and max(iou) >= 0.5:
                found += 1
                pts = np.array(faces[int(np.argmax(iou))]["landmarks"])
                gt = np.array(truth["keypoints"], np.float32).reshape(5, 3)[:, :2]
                errors.append(np.linalg.norm(pts - gt, axis=1).mean() / np.linalg.norm(gt[0] - gt[1]))
    assert found >= 0.9 * IDENTITIES * PHOTOS
    assert np.mean(errors) < 0.1


def test_verify_same_and_different_people(client, people):
    # /verify compares the largest face of each photo: photos of the person alone
    alone = {n: [d for d, _, faces in p if faces == 1] for n, p in people.items()}
    names = sorted(n for n in alone if len(alone[n]) >= 2)
    assert len(names) >= IDENTITIES // 2
    same = [client.post("/verify", files=_files(image1=alone[n][0], image2=alone[n][1])).json() for n in names]
    other = [client.post("/verify", files=_files(image1=alone[a][0], image2=alone[b][1])).json()
             for a, b in zip(names, names[1:] + names[:1])]
    assert sum(r["verified"] for r in same) >= 0.75 * len(same)
    assert not any(r["verified"] for r in other)
    assert np.mean([r["distance"] for r in same]) < np.mean([r["distance"] for r in other])
    assert all(r["threshold"] == same[0]["threshold"] and 0.0 <= r["probability"] <= 1.0 for r in same + other)


def test_one_shot_enroll_identify_delete(client, people):
    names = sorted(people)
    enrolled = {}
    for name in names[:IDENTITIES // 2]:
        single = next(p for p in people[name] if p[2] == 1)
        sid = client.post("/subjects", json={"name": name}).json()["id"]
        r = client.post(f"/subjects/{sid}/faces", files=_files(image=single[0]))
        assert r.status_code == 201, r.text
        enrolled[name] = (sid, single)

    def who(data: bytes, truth: dict) -> dict | None:
        faces = client.post("/identify", files=_files(image=data)).json()["faces"]
        x, y, w, h = truth["bbox"]
        best = max(faces, key=lambda f: box_iou(np.array([[x, y, x + w, y + h]], np.float32), _xyxy(f["box"]))[0, 0],
                   default=None)
        return best["identity"] if best else None

    right = sum((who(d, t) or {}).get("subject_id") == enrolled[n][0]
                for n in enrolled for d, t, _ in people[n] if d is not enrolled[n][1][0])
    assert right >= 0.8 * len(enrolled) * (PHOTOS - 1)
    strangers = [who(d, t) for n in names[IDENTITIES // 2:] for d, t, _ in people[n]]
    assert sum(s is None for s in strangers) >= 0.9 * len(strangers)
    victim = names[0]
    assert client.delete(f"/subjects/{enrolled[victim][0]}").status_code == 204
    assert all(who(d, t) is None or who(d, t)["subject_id"] != enrolled[victim][0] for d, t, _ in people[victim])
    for sid, _ in list(enrolled.values())[1:]:
        assert client.delete(f"/subjects/{sid}").status_code == 204
