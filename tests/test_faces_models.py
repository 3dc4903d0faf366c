"""The bundled face models through the HTTP API on identities they never saw (a seed of their own):
faces and landmarks found, 1:1 verification, and the one-shot enroll → identify → delete cycle."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from app.faces import CROP_DETAIL
from app.pipeline import run_steps
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


def _jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _alone(people, low: float, high: float) -> bytes:
    """A photo of one person alone, whose face is ``low`` to ``high`` px tall."""
    return next(d for photos in people.values() for d, truth, faces in photos
                if faces == 1 and low <= truth["bbox"][3] <= high)


def test_a_large_photo_is_read_shrunk_with_the_same_faces(client, people):
    """A photo upscaled 8 times (a phone-sized upload) gives the small photo's face and landmarks
    times 8, read from a shrunk decode, and verifies as the same person."""
    analyzer = client.app.state.registry.faces(embedding=True)
    small = _alone(people, 60, 1000)
    rgb = np.asarray(Image.open(io.BytesIO(small)).convert("RGB"))
    big = _jpeg(cv2.resize(rgb, (rgb.shape[1] * 8, rgb.shape[0] * 8), interpolation=cv2.INTER_CUBIC))
    photo = run_steps(analyzer.photo_steps(big, 10**9))
    assert photo.image.reduction > 1 and photo.image.photo_width == rgb.shape[1] * 8
    a = client.post("/faces/detect", files=_files(image=small)).json()["faces"]
    b = client.post("/faces/detect", files={"image": ("big.jpg", big, "image/jpeg")}).json()["faces"]
    assert len(a) == len(b) == 1
    assert box_iou(_xyxy(a[0]["box"]) * 8, _xyxy(b[0]["box"]))[0, 0] > 0.8
    eyes = np.linalg.norm(np.subtract(a[0]["landmarks"][0], a[0]["landmarks"][1])) * 8
    assert np.linalg.norm(np.array(a[0]["landmarks"]) * 8 - np.array(b[0]["landmarks"]), axis=1).max() < 0.15 * eyes
    verdict = client.post("/verify", files={"image1": ("a.png", small, "image/png"),
                                            "image2": ("b.jpg", big, "image/jpeg")}).json()
    assert verdict["verified"], verdict


def test_a_small_face_in_a_large_photo_is_cropped_from_a_detailed_decode(client, people):
    """A face small in a large photo (found in the decode shrunk for the detector) has its
    landmarks and embedding read from a decode where it spans CROP_DETAIL x the crop input."""
    analyzer = client.app.state.registry.faces(embedding=True)
    small = _alone(people, 70, 150)
    rgb = np.asarray(Image.open(io.BytesIO(small)).convert("RGB"))
    h, w = rgb.shape[:2]
    canvas = np.full((h * 8, w * 8, 3), 128, np.uint8)
    canvas[h:3 * h, w:3 * w] = cv2.resize(rgb, (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC)
    big = _jpeg(canvas)
    photo = run_steps(analyzer.photo_steps(big, 10**9))
    assert photo.image.reduction < analyzer.detector.decode(big, 10**9).reduction   # decoded again
    direct = analyzer.detect(np.asarray(Image.open(io.BytesIO(big)).convert("RGB")))
    assert len(photo.faces) == len(direct) == 1
    side = float(min(photo.faces[0].box[2] - photo.faces[0].box[0], photo.faces[0].box[3] - photo.faces[0].box[1]))
    assert side / photo.image.reduction >= CROP_DETAIL * 64 > side / (2 * photo.image.reduction)
    got = analyzer.embed_photo_steps(photo, photo.faces)
    full = analyzer.embed(np.asarray(Image.open(io.BytesIO(big)).convert("RGB")), direct)
    similarity = float(np.dot(run_steps(got)[0], full[0]))
    print("similarity to the full decode's embedding", similarity)
    assert similarity > 0.9


@pytest.mark.parametrize("sides, most, expected", [
    ([], 8, 8), ([2000], 8, 8), ([2000], 4, 4), ([600], 8, 4), ([300], 8, 2), ([255], 8, 1),
    ([2000, 300], 8, 2), ([130], 1, 1)])
def test_crop_reduction_keeps_every_face_detailed(client, sides, most, expected):
    analyzer = client.app.state.registry.faces(embedding=True)
    assert max(analyzer.landmarks.meta.input_size, analyzer.embedder.meta.input_size) * CROP_DETAIL == 128
    boxes = np.array([[10, 10, 10 + s, 10 + s * 1.3] for s in sides], np.float32).reshape(-1, 4)
    assert analyzer.crop_reduction(boxes, most) == expected


def test_a_large_photo_stored_sideways_answers_in_display_pixels(client, people):
    """EXIF orientation 6 (stored turned a quarter, shown upright): the shrunk decode's faces and
    landmarks are where a viewer sees them, as for the small upright photo times 8."""
    small = _alone(people, 60, 1000)
    rgb = np.asarray(Image.open(io.BytesIO(small)).convert("RGB"))
    upright = cv2.resize(rgb, (rgb.shape[1] * 8, rgb.shape[0] * 8), interpolation=cv2.INTER_CUBIC)
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright)))    # a viewer turns it back clockwise
    exif = stored.getexif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    body = client.post("/faces/detect", files={"image": ("side.jpg", buf.getvalue(), "image/jpeg")}).json()
    assert body["image"] == {"width": upright.shape[1], "height": upright.shape[0]}
    a = client.post("/faces/detect", files=_files(image=small)).json()["faces"]
    assert len(a) == len(body["faces"]) == 1
    assert box_iou(_xyxy(a[0]["box"]) * 8, _xyxy(body["faces"][0]["box"]))[0, 0] > 0.8
    eyes = np.linalg.norm(np.subtract(a[0]["landmarks"][0], a[0]["landmarks"][1])) * 8
    moved = np.linalg.norm(np.array(a[0]["landmarks"]) * 8 - np.array(body["faces"][0]["landmarks"]), axis=1)
    assert moved.max() < 0.15 * eyes
