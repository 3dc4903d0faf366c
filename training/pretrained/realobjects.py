"""The served object detector and segmenter on real photos, through HTTP as a user calls them: the
photos of ``training.pretrained.scenes`` (scikit-image's and OpenCV's sample photos, frames of
OpenCV's pedestrian video), never trained or tuned on here. ``make import-models`` writes these
figures into ``models/objects.card.json``; ``tests/test_real_objects.py`` checks them in ``make test``.

A photo counts as named when every object in its ``expected`` labels is found at score ≥ ``SCORE``;
a detection at that score whose label is neither expected nor ``allowed`` is counted as false.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from training.pretrained.scenes import (PEDESTRIAN_ALLOWED, PEDESTRIAN_BOXES, Scene, detection_scenes,
                                        empty_scenes, pedestrian_frames, person_mask)

SCORE = 0.3                       # the score a found object must reach (the bar)
SEGMENT_PHOTO = "camera"          # the photo whose person mask is drawn by hand (tests/data)
NO_PERSON_SUBJECTS = ("chelsea", "chicky_512", "motorcycle_left", "coffee")   # a subject, and no one


def detect(client: Any, data: bytes, name: str, **params: Any) -> dict:
    """``POST /detect`` with one photo; the JSON answer (raises on any other status)."""
    response = client.post("/detect", files={"image": (name, data, "application/octet-stream")},
                           params={"conf": SCORE, **params})
    if response.status_code != 200:
        raise RuntimeError(f"/detect {name}: {response.status_code} {response.text[:300]}")
    return response.json()


def png_bytes(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    assert ok
    return buf.tobytes()


def scene_result(client: Any, scene: Scene) -> dict[str, Any]:
    """One photo: the labels found at ``SCORE`` (best score each), the expected ones missed, the false."""
    answer = detect(client, scene.data(), scene.path.name)
    best: dict[str, float] = {}
    for d in answer["detections"]:
        best[d["label"]] = max(best.get(d["label"], 0.0), round(d["score"], 3))
    missed = [label for label in scene.expected if label not in best]
    false = sorted(set(best) - set(scene.expected) - set(scene.allowed))
    return {"found": best, "expected": list(scene.expected), "missed": missed, "false": false,
            "named": not missed}


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


MATCH_IOU = 0.5     # a person box found matches a person boxed by eye at this IoU (each used once)


def pedestrian_result(client: Any) -> dict[str, Any]:
    """Per frame of ``vtest.avi``: the people boxed by eye, how many of them a ``person`` detection at
    ``SCORE`` matches (IoU ≥ ``MATCH_IOU``), the person boxes that match no one, and other labels."""
    out = {}
    for index, rgb in pedestrian_frames().items():
        detections = detect(client, png_bytes(rgb), f"vtest_{index}.png")["detections"]
        people = [tuple(d["box"][k] for k in ("x1", "y1", "x2", "y2")) for d in detections if d["label"] == "person"]
        truth, matched = list(PEDESTRIAN_BOXES[index]), 0
        for box in people:
            best = max(range(len(truth)), key=lambda i: box_iou(box, truth[i]), default=None)
            if best is not None and box_iou(box, truth[best]) >= MATCH_IOU:
                truth.pop(best)
                matched += 1
        out[str(index)] = {"people": len(PEDESTRIAN_BOXES[index]), "found": matched,
                           "false_people": len(people) - matched,
                           "other_labels": sorted({d["label"] for d in detections
                                                   if d["label"] != "person" and d["label"] not in PEDESTRIAN_ALLOWED})}
    return out


def segment_mask(client: Any, data: bytes, name: str) -> np.ndarray:
    """``POST /segment?format=png``: the class-id mask as ``HxW uint8``."""
    response = client.post("/segment", files={"image": (name, data, "application/octet-stream")},
                           params={"format": "png"})
    if response.status_code != 200:
        raise RuntimeError(f"/segment {name}: {response.status_code} {response.text[:300]}")
    return cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_UNCHANGED)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def segment_result(client: Any) -> dict[str, Any]:
    """The person mask of ``SEGMENT_PHOTO`` against the one drawn by hand, and the person share of the
    photos with no one in them."""
    scene = next(s for s in detection_scenes() if s.name == SEGMENT_PHOTO)
    answer = client.post("/segment", files={"image": (scene.path.name, scene.data(), "image/png")}).json()
    person_id = next(c["class_id"] for c in answer["classes"] if c["label"] == "person") \
        if any(c["label"] == "person" for c in answer["classes"]) else None
    mask = segment_mask(client, scene.data(), scene.path.name)
    truth = person_mask(SEGMENT_PHOTO)
    found = mask == person_id if person_id is not None else np.zeros_like(truth)
    no_one = [s for s in detection_scenes() if s.name in NO_PERSON_SUBJECTS] + list(empty_scenes())
    empty = {s.name: round(float((segment_mask(client, s.data(), s.path.name) == person_id).mean()), 4)
             if person_id is not None else 0.0 for s in no_one}
    return {"photo": scene.path.name, "iou": round(iou(found, truth), 4),
            "person_fraction": round(float(found.mean()), 4), "drawn_fraction": round(float(truth.mean()), 4),
            "no_person_photos_fraction": empty}


def evaluate(client: Any) -> dict[str, Any]:
    """Every figure, and a summary: photos named, false labels, people found per frame, mask IoU."""
    scenes = {s.name: scene_result(client, s) for s in detection_scenes()}
    empty = {s.name: sorted(scene_result(client, s)["found"]) for s in empty_scenes()}
    frames = pedestrian_result(client)
    segment = segment_result(client)
    summary = {"score": SCORE,
               "photos_named": sum(r["named"] for r in scenes.values()), "photos": len(scenes),
               "missed": {k: r["missed"] for k, r in scenes.items() if r["missed"]},
               "false_labels": {k: r["false"] for k, r in scenes.items() if r["false"]},
               "empty_photos_with_detections": {k: v for k, v in empty.items() if v},
               "pedestrians_found": {k: f"{v['found']} of {v['people']}" for k, v in frames.items()},
               "pedestrian_false_people": {k: v["false_people"] for k, v in frames.items()},
               "person_mask_iou": segment["iou"],
               "most_person_pixels_without_people": max(segment["no_person_photos_fraction"].values())}
    return {"summary": summary, "scenes": scenes, "empty": empty, "pedestrians": frames, "segment": segment}
