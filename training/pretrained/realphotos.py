"""The real-photo checks of the served face stack, through HTTP as a user sends them: real photos
that ship inside registry packages (fetched into the shared cache, none committed).

- the 1927 Solvay conference photo (``scrfd`` sdist, public domain): 29 faces of 80-115 px in a
  3000 x 2171 scan, matched one to one against boxes in ``tests/data/solvay_1927_faces.json``;
- portraits: Barack Obama three times and Joe Biden (``face_recognition`` sdist: official White House
  photos, US government works), Eileen Collins and the cameraman (``scikit-image``), Grace Hopper
  (``matplotlib``), Gauss and Newton (paintings, ``scrfd`` sdist);
  The paintings are checked for detection and as unknown faces; 1:1 verification is checked on the
  photographs (the pair of paintings is reported: dlib's own pipeline puts them at 0.601, on its
  published threshold of 0.6);
- photos with no person: scikit-image's coffee, cat, rocket, bricks, coins, grass, gravel, deep
  field, moon, motorcycle, retina and text.

``evaluate(client)`` returns the figures (the tests assert on them; ``make import-models`` writes
them into the model cards).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.pretrained.packages import FACE_RECOGNITION, SCIKIT_IMAGE, SCRFD, fetch

GROUP_TRUTH = Path(__file__).resolve().parents[2] / "tests" / "data" / "solvay_1927_faces.json"
MATCH_IOU = 0.3          # a found face counts when it overlaps a true face this much (one to one)


@dataclass(frozen=True)
class RealPhotos:
    group: Path
    group_faces: np.ndarray              # (29, 4) xyxy
    portraits: dict[str, Path]           # one person each (obama2 has a bystander's half face at its edge)
    same_person: list[str]               # keys of ``portraits`` showing one man
    enroll: dict[str, str]               # name -> portrait key, one photo each
    probes: dict[str, str]               # portrait key -> who it is (the enrolled name)
    unknown: list[str]                   # portraits of people never enrolled
    paintings: tuple[str, str]           # portraits that are paintings: found and unknown, not verified
    no_face: dict[str, Path]


def real_photos() -> RealPhotos:
    """The photos, fetched (once) from their packages."""
    fr = fetch(FACE_RECOGNITION) / "face_recognition-1.3.0" / "tests" / "test_images"
    sc = fetch(SCRFD) / "scrfd-0.3.0" / "images"
    sk = fetch(SCIKIT_IMAGE) / "skimage" / "data"
    import matplotlib

    mpl = Path(matplotlib.get_data_path()) / "sample_data"
    portraits = {"obama": fr / "obama.jpg", "obama2": fr / "obama2.jpg", "obama3": fr / "obama3.jpg",
                 "biden": fr / "biden.jpg", "collins": sk / "astronaut.png", "hopper": mpl / "grace_hopper.jpg",
                 "gauss": sc / "gauss.png", "newton": sc / "newton.png", "cameraman": sk / "camera.png"}
    no_face = {name: sk / name for name in ("coffee.png", "chelsea.png", "rocket.jpg", "brick.png", "coins.png",
                                            "grass.png", "gravel.png", "hubble_deep_field.jpg", "moon.png",
                                            "motorcycle_left.png", "retina.jpg", "text.png")}
    truth = np.asarray(json.loads(GROUP_TRUTH.read_text())["faces"], np.float32)
    return RealPhotos(group=sc / "solvay_conference_1927.jpg", group_faces=truth, portraits=portraits,
                      same_person=["obama", "obama2", "obama3"],
                      enroll={"Barack Obama": "obama", "Joe Biden": "biden", "Eileen Collins": "collins",
                              "Grace Hopper": "hopper"},
                      probes={"obama2": "Barack Obama", "obama3": "Barack Obama"},
                      unknown=["gauss", "newton", "cameraman"], paintings=("gauss", "newton"), no_face=no_face)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, 4)`` x ``(M, 4)`` xyxy → ``(N, M)`` IoU."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])   # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-9)


def match_faces(found: np.ndarray, truth: np.ndarray, iou: float = MATCH_IOU) -> tuple[int, int]:
    """Greedy one-to-one matching by IoU: ``(true faces found, found boxes matching none)``."""
    if not len(found) or not len(truth):
        return 0, len(found)
    overlaps = box_iou(found.reshape(-1, 4), truth)
    pairs = sorted(((overlaps[i, j], i, j) for i in range(len(found)) for j in range(len(truth))
                    if overlaps[i, j] >= iou), reverse=True)
    used_f, used_t = set(), set()
    for _, i, j in pairs:
        if i not in used_f and j not in used_t:
            used_f.add(i)
            used_t.add(j)
    return len(used_t), len(found) - len(used_f)


def _post(client, route: str, files: dict[str, Path], **params) -> dict:
    parts = {field: (path.name, path.read_bytes()) for field, path in files.items()}
    r = client.post(route, files=parts, params=params)
    return {"status": r.status_code, **r.json()}


def _boxes(answer: dict) -> np.ndarray:
    return np.asarray([[f["box"][k] for k in ("x1", "y1", "x2", "y2")] for f in answer.get("faces", [])],
                      np.float32).reshape(-1, 4)


def evaluate(client, photos: RealPhotos | None = None) -> dict[str, object]:
    """Every check through ``client`` (a ``TestClient`` of the app with an empty gallery)."""
    photos = photos or real_photos()
    out: dict[str, object] = {}
    group = _post(client, "/faces/detect", {"image": photos.group})
    found = _boxes(group)
    matched, extra = match_faces(found, photos.group_faces)
    sides = np.minimum(found[:, 2] - found[:, 0], found[:, 3] - found[:, 1]) if len(found) else np.zeros(0)
    out["group_photo"] = {"faces": len(photos.group_faces), "found": matched, "false": extra,
                          "smallest_found_px": round(float(sides.min()), 1) if len(sides) else None}
    out["portraits"] = {k: len(_boxes(_post(client, "/faces/detect", {"image": p})))
                        for k, p in photos.portraits.items()}
    out["no_face"] = {k: len(_boxes(_post(client, "/faces/detect", {"image": p})))
                      for k, p in photos.no_face.items()}
    pairs = {}
    keys = [k for k in photos.portraits if k not in photos.paintings]
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            answer = _post(client, "/verify", {"image1": photos.portraits[a], "image2": photos.portraits[b]})
            same = a in photos.same_person and b in photos.same_person
            pairs[f"{a}-{b}"] = {"same": same, "verified": answer.get("verified"),
                                 "distance": answer.get("distance"), "status": answer["status"]}
    out["verify"] = pairs
    a, b = photos.paintings
    answer = _post(client, "/verify", {"image1": photos.portraits[a], "image2": photos.portraits[b]})
    out["paintings"] = {f"{a}-{b}": {"same": False, "verified": answer.get("verified"),
                                     "distance": answer.get("distance")}}
    out["identify"] = _identify(client, photos)
    return out


def _identify(client, photos: RealPhotos) -> dict[str, object]:
    """One photo each of four people enrolled; who the other photos are; every sitter of the group
    photo must be unknown."""
    ids = {}
    for name, key in photos.enroll.items():
        subject = client.post("/subjects", json={"name": name}).json()
        r = _post(client, f"/subjects/{subject['id']}/faces", {"image": photos.portraits[key]})
        ids[name] = subject["id"] if r["status"] == 201 else None
    named = {}
    for key in [*photos.probes, *photos.unknown]:
        answer = _post(client, "/identify", {"image": photos.portraits[key]})
        faces = sorted(answer.get("faces", []), key=lambda f: -(f["box"]["x2"] - f["box"]["x1"]))
        named[key] = (faces[0]["identity"] or {}).get("name") if faces else "no face"
    group = _post(client, "/identify", {"image": photos.group})
    group_named = [f["identity"]["name"] for f in group.get("faces", []) if f["identity"]]
    return {"enrolled": {name: sid is not None for name, sid in ids.items()}, "named": named,
            "expected": {**photos.probes, **{k: None for k in photos.unknown}},
            "group_faces": len(group.get("faces", [])), "group_named": group_named,
            "threshold": group.get("threshold")}
