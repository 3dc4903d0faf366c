"""The face models scored on identities never trained on, the way users reach them: every figure
comes from HTTP calls to the app (in-process, or a running server with ``url``).

- detection: ``POST /faces/detect`` on every photo, AP@0.5 by pycocotools against all annotated faces;
- landmarks: NME of the detected face matching each annotated one (IoU >= 0.5);
- verification: ``POST /verify`` on genuine and impostor pairs of photos whose person is clearly the
  largest face (``/verify`` compares the largest faces); TAR and FAR at the stored threshold;
- identification: one photo of each of the first ``enrolled`` identities enrolled through
  ``POST /subjects`` and ``POST /subjects/{id}/faces``; ``POST /identify`` on ``probes`` other photos
  of each (rank-1: the best match is the right subject; identified: ``identity`` is the right subject),
  and on the photos of the remaining identities, never enrolled (``identity`` must be null).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from app.vision.boxes import box_iou
from training.detect.heldout import api_client
from training.faces.landmarks import nme

# A photo for /verify shows its person as the largest face by at least this area ratio. Between faces
# within a few percent of each other in size, which is "largest" comes down to a few pixels of box
# (the detector's boxes are not the annotator's): such photos test the tie, not the verification.
CLEARLY_LARGEST = 1.25


class NoFace(Exception):
    """The API answered 422 ``no_face`` or ``multiple_faces``: counted, not fatal."""


def _post(client, path: str, files: dict[str, Path], **params) -> dict:
    opened = {k: (p.name, p.read_bytes(), "image/png") for k, p in files.items()}
    r = client.post(path, files=opened, params=params)
    if r.status_code == 422 and r.json()["error"]["code"] in ("no_face", "multiple_faces"):
        raise NoFace(r.json()["error"]["code"])
    if r.status_code != 200 and r.status_code != 201:
        raise RuntimeError(f"{path} {files}: {r.status_code} {r.text}")
    return r.json()


def _box(xywh: list[float]) -> np.ndarray:
    x, y, w, h = xywh
    return np.array([x, y, x + w, y + h], np.float32)


def _xyxy(box: dict) -> list[float]:
    return [box["x1"], box["y1"], box["x2"], box["y2"]]


def _matching(faces: list[dict], truth_box: np.ndarray) -> dict | None:
    """The returned face overlapping the annotated box most, if by IoU >= 0.5."""
    if not faces:
        return None
    iou = box_iou(truth_box[None], np.array([_xyxy(f["box"]) for f in faces], dtype=np.float32))[0]
    best = int(iou.argmax())
    return faces[best] if iou[best] >= 0.5 else None


def _detection(client, doc: dict, root: Path) -> tuple[dict[str, float], dict[int, list[dict]]]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    per_image, results = {}, []
    for img in doc["images"]:
        faces = _post(client, "/faces/detect", {"image": root / img["file_name"]}, conf=0.01)["faces"]
        per_image[img["id"]] = faces
        for f in faces:
            x1, y1, x2, y2 = _xyxy(f["box"])
            results.append({"image_id": img["id"], "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": f["score"]})
    gt = COCO(str(root / "annotations.json"))
    ev = COCOeval(gt, gt.loadRes(results) if results else COCO(), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return {"ap50": float(ev.stats[1]), "ap50_95": float(ev.stats[0])}, per_image


def _landmarks(doc: dict, per_image: dict[int, list[dict]]) -> dict[str, float]:
    errors, missed = [], 0
    for ann in doc["annotations"]:
        kp = np.asarray(ann["keypoints"], np.float32).reshape(5, 3)
        if (kp[:, 2] == 0).any():
            continue   # a point outside the photo has no position to compare with
        x, y, w, h = ann["bbox"]
        face = _matching([f for f in per_image[ann["image_id"]] if f["score"] >= 0.5],
                         np.array([x, y, x + w, y + h], np.float32))
        if face is None:
            missed += 1
            continue
        truth = kp[:, :2]
        errors.append(nme(np.asarray(face["landmarks"], np.float32)[None], truth[None])[0])
    return {"nme": float(np.mean(errors)) if errors else None, "faces": len(errors), "faces_missed": missed}


def _photos_by_identity(doc: dict) -> dict[str, list[dict]]:
    """Each identity's photos, with how many faces each holds and whether the person is clearly the
    largest (``CLEARLY_LARGEST`` times the area of any other face)."""
    faces: dict[int, list[tuple[float, str | None]]] = {}
    for ann in doc["annotations"]:
        faces.setdefault(ann["image_id"], []).append((ann["bbox"][2] * ann["bbox"][3], ann.get("identity")))
    out: dict[str, list[dict]] = {}
    for img in doc["images"]:
        mine = faces.get(img["id"], [])
        own = max((a for a, who in mine if who == img["identity"]), default=0.0)
        others = max((a for a, who in mine if who != img["identity"]), default=0.0)
        out.setdefault(img["identity"], []).append(
            {**img, "faces": len(mine), "largest": own > 0 and own >= CLEARLY_LARGEST * others})
    return out


def _verification(client, root: Path, photos: dict[str, list[dict]], boxes: dict[int, list[float]], pairs: int,
                  seed: int) -> dict[str, float]:
    """/verify compares the largest face of each photo: pairs are drawn from the photos whose person is
    clearly the largest face in them (a bystander in front would make it another pair). Genuine pairs
    where /verify compared somebody else's face (IoU < 0.5 with the person's) are counted apart."""
    photos = {n: [p for p in ps if p["largest"]] for n, ps in photos.items()}
    photos = {n: ps for n, ps in photos.items() if len(ps) >= 2}
    rng = np.random.default_rng(seed)
    names = sorted(photos)
    genuine, impostor = [], []
    for _ in range(pairs):
        a, b = rng.choice(len(photos[n := names[rng.integers(len(names))]]), 2, replace=False)
        genuine.append((photos[n][a], photos[n][b]))
    for _ in range(pairs * 3):
        n1, n2 = rng.choice(len(names), 2, replace=False)
        impostor.append((photos[names[n1]][rng.integers(len(photos[names[n1]]))],
                         photos[names[n2]][rng.integers(len(photos[names[n2]]))]))
    out: dict = {"threshold": None}    # the server's, from the first answered pair
    wrong_face = 0
    for kind, items in (("genuine", genuine), ("impostor", impostor)):
        verified, no_face = [], 0
        for p1, p2 in items:
            try:
                r = _post(client, "/verify", {"image1": root / p1["file_name"], "image2": root / p2["file_name"]})
            except NoFace:   # a face the detector missed: a genuine pair not verified, an impostor not accepted
                no_face += 1
                verified.append(False)
                continue
            verified.append(r["verified"])
            out["threshold"] = r["threshold"]
            if kind == "genuine":
                wrong_face += int(any(_matching([face], _box(boxes[p["id"]])) is None
                                      for face, p in zip(r["faces"], (p1, p2))))
        out[kind], out[f"{kind}_no_face"] = float(np.mean(verified)), no_face
    return {"tar": out["genuine"], "far": out["impostor"], "threshold": out["threshold"],
            "genuine_pairs": len(genuine), "impostor_pairs": len(impostor),
            "pairs_with_no_face": out["genuine_no_face"] + out["impostor_no_face"],
            "genuine_pairs_wrong_face": wrong_face, "clearly_largest": CLEARLY_LARGEST}


def _identification(client, root: Path, photos: dict[str, list[dict]], boxes: dict[int, list[float]],
                    enrolled: int, probes: int) -> dict[str, float]:
    names = sorted(photos)
    known, unknown = names[:enrolled], names[enrolled:]
    subject_of, probe_sets, skipped = {}, {}, 0
    for name in known:
        sid = client.post("/subjects", json={"name": name}).json()["id"]
        for photo in (p for p in photos[name] if p["faces"] == 1):   # the first photo the API enrolls
            try:
                _post(client, f"/subjects/{sid}/faces", {"image": root / photo["file_name"]})
            except NoFace:
                continue
            subject_of[name] = sid
            probe_sets[name] = [p for p in photos[name] if p["id"] != photo["id"]][:probes]
            break
        else:
            skipped += 1

    def probe(p: dict) -> dict | None:
        faces = _post(client, "/identify", {"image": root / p["file_name"]}, top_k=5)["faces"]
        return _matching(faces, _box(boxes[p["id"]]))

    rank1 = identified = total = 0
    for name, items in probe_sets.items():
        for p in items:
            face, total = probe(p), total + 1
            if face and face["matches"] and face["matches"][0]["subject_id"] == subject_of[name]:
                rank1 += 1
            if face and face["identity"] and face["identity"]["subject_id"] == subject_of[name]:
                identified += 1
    rejected = strangers = missed = 0
    for name in unknown:
        for p in photos[name][:probes]:
            face, strangers = probe(p), strangers + 1
            missed += int(face is None)       # no face found: nobody is named, counted apart
            rejected += int(face is None or face["identity"] is None)
    listed = client.get("/subjects", params={"limit": 500}).json()["subjects"]
    for s in listed:
        client.delete(f"/subjects/{s['id']}")
    return {"rank1": rank1 / max(total, 1), "identified": identified / max(total, 1), "probes": total,
            "enrolled": len(subject_of), "enroll_skipped": skipped,
            "unknown_rejected": rejected / max(strangers, 1), "unknown_probes": strangers,
            "unknown_faces_missed": missed}


def evaluate_faces(data: Path, models: Path | None = None, url: str | None = None, enrolled: int = 200,
                   probes: int = 5, pairs: int = 1000, seed: int = 0) -> dict[str, object]:
    root = Path(data)
    doc = json.loads((root / "annotations.json").read_text())
    photos = _photos_by_identity(doc)
    images = {img["id"]: img for img in doc["images"]}
    # the annotated box of each photo's own person (COCO xywh)
    boxes = {a["image_id"]: a["bbox"] for a in doc["annotations"]
             if a.get("identity") is not None and a["identity"] == images[a["image_id"]]["identity"]}
    started = time.time()
    with api_client(models, url) as client:
        detection, per_image = _detection(client, doc, root)
        landmarks = _landmarks(doc, per_image)
        verification = _verification(client, root, photos, boxes, pairs, seed)
        identification = _identification(client, root, photos, boxes, enrolled, probes)
    return {"detection": detection, "landmarks": landmarks, "verification": verification,
            "identification": identification, "identities": len(photos), "photos": len(doc["images"]),
            "seconds": round(time.time() - started, 1), "source": url or str(models)}
