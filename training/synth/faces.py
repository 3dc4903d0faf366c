"""Synthetic face photos for face detection, 5-point landmarks and identity embeddings.

`write_faces(out_dir, identities, per_identity, seed, cfg, workers, first_identity=0)` writes:

    out_dir/<identity>/<k>.png  RGB photo k (0..per_identity-1) of identity `id%05d` (numbered from
                                first_identity); it shows that person (the subject) once, at any
                                size, place and in-plane rotation, on a cluttered background, maybe
                                beside strangers and distractor shapes
    out_dir/annotations.json    COCO keypoints json: images carry "identity"; every face is an
                                annotation of category 1 "face" with "bbox" [x, y, w, h], "area",
                                "keypoints" [x, y, v] x 5 (left eye, right eye, nose tip, left and
                                right mouth corner, left/right as seen in the image), "num_keypoints"
                                and "identity" (the image's identity for the subject, null for a
                                stranger); "info" holds seed, identities, per_identity,
                                first_identity and the config

Coordinates are continuous pixels: pixel column i spans [i, i + 1), so its centre is at i + 0.5.
The bbox is the axis-aligned bounds of the rotated skin outline (forehead to chin, cheek to cheek;
not hair or ears), clipped to the image; "area" counts the pixels of that outline inside the image.
Keypoint visibility v follows COCO: 2 visible; 1 inside the image but covered (sunglasses, a hat, a
hand, or for a stranger a face in front); 0 outside the image (then x = y = 0). Every subject has
5 keypoints with v >= 1, lies wholly inside the image and is never covered by another face.
Strangers are random people who are none of the data set's identities; each keeps at least
`stranger_visible` of its outline's area in view and its box's IoU with the subject's box stays
below `max_stranger_iou`.

Determinism: identity i is `identity_params(seed, i)` (rng `[seed, 7, i]`), whatever the data set's
size; photo k of identity i is drawn with rng `[seed, i, k]`, so the output depends only on the
arguments and the config, never on the number of workers.

Knobs (`FaceConfig`, also the flags of `python -m training.synth faces`):
    min_side, max_side      photo width and height, each uniform in [min_side, max_side] px (160, 400)
    min_face, max_face_frac subject face height (forehead to chin, before rotation) log-uniform from
                            min_face px to max_face_frac of the photo's shorter side (48, 0.7)
    max_rotation            in-plane rotation, uniform in +-max_rotation degrees (25)
    max_yaw, max_pitch      head turn and nod, uniform in +-degrees (15, 10)
    expression              strength of smile, open mouth, brow raise, squint, gaze (1)
    hair_jitter             photo-to-photo change of hair volume and fringe (1)
    face_light              strength of the directional light on each person (1)
    color_temp              strength of warm/cool colour temperature shifts of the photo (1)
    lighting                global brightness, contrast, gamma, colour cast and gradient (1)
    blur_prob, max_blur     probability of a Gaussian blur and its largest sigma in px (0.5, 1.5)
    max_noise               largest sigma of Gaussian noise, of 255 (10)
    glasses_prob            probability of glasses (0.3), of which sunglasses_frac are dark (0.35)
    hat_prob, hand_prob     probability of a hat (0.15) and of a hand over part of the face (0.1)
    stranger_prob           probability that a photo tries strangers (0.35), 1..max_strangers (2)
    stranger_visible        least visible fraction of a stranger's face outline (0.6)
    max_stranger_iou        largest IoU of a stranger's box with the subject's (0.05)
    max_distractors         shapes behind the people, uniform in [0, max_distractors] (4)
    clutter                 most background blobs and lines (12)
    placement_tries         positions tried per stranger before giving it up (10)
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from training.synth.face_parts import (CANVAS_TOP, CANVAS_X, FaceIdentity, Look, draw_person, face_outline,
                                       identity_params, sample_identity)
from training.synth.scenes import SceneConfig, apply_photometric
from training.synth import knob
from training.synth.shapes import draw_background, draw_distractor, log_uniform, random_color

CATEGORY = {"id": 1, "name": "face", "supercategory": "person",
            "keypoints": ["left_eye", "right_eye", "nose_tip", "left_mouth", "right_mouth"], "skeleton": []}


@dataclass(frozen=True)
class FaceConfig:
    """Face photo knobs; see the module docstring."""

    min_side: int = knob(160, "smallest photo width/height in px")
    max_side: int = knob(400, "largest photo width/height in px")
    min_face: float = knob(48.0, "smallest subject face height (forehead to chin) in px")
    max_face_frac: float = knob(0.7, "largest subject face height, fraction of the photo's shorter side")
    max_rotation: float = knob(25.0, "largest in-plane rotation in degrees")
    max_yaw: float = knob(15.0, "largest head turn in degrees")
    max_pitch: float = knob(10.0, "largest head nod in degrees")
    expression: float = knob(1.0, "strength of smile, open mouth, brow raise, squint and gaze (0 = neutral)")
    hair_jitter: float = knob(1.0, "photo-to-photo change of hair volume and fringe (0 = none)")
    face_light: float = knob(1.0, "strength of the directional light on faces (0 = flat)")
    color_temp: float = knob(1.0, "strength of warm/cool colour temperature shifts (0 = off)")
    lighting: float = knob(1.0, "strength of global brightness, contrast, gamma, cast and gradient (0 = off)")
    blur_prob: float = knob(0.5, "probability of a Gaussian blur")
    max_blur: float = knob(1.5, "largest Gaussian blur sigma in px")
    max_noise: float = knob(10.0, "largest Gaussian noise sigma (of 255)")
    glasses_prob: float = knob(0.3, "probability of glasses")
    sunglasses_frac: float = knob(0.35, "fraction of glasses that are sunglasses")
    hat_prob: float = knob(0.15, "probability of a hat")
    hand_prob: float = knob(0.1, "probability of a hand covering part of the face")
    stranger_prob: float = knob(0.35, "probability that a photo shows strangers")
    max_strangers: int = knob(2, "most strangers per photo")
    stranger_visible: float = knob(0.6, "least visible fraction of a stranger's face")
    max_stranger_iou: float = knob(0.05, "largest IoU of a stranger's box with the subject's box")
    max_distractors: int = knob(4, "most distractor shapes per photo")
    clutter: int = knob(12, "most background blobs and lines per photo")
    placement_tries: int = knob(10, "positions tried per stranger")

    def __post_init__(self) -> None:
        probs = (self.blur_prob, self.glasses_prob, self.sunglasses_frac, self.hat_prob, self.hand_prob,
                 self.stranger_prob)
        checks = {
            "need 64 <= min_side <= max_side": 64 <= self.min_side <= self.max_side,
            "need 16 <= min_face <= max_face_frac * min_side":
                16 <= self.min_face <= self.max_face_frac * self.min_side,
            "need 0 < max_face_frac <= 0.8": 0 < self.max_face_frac <= 0.8,
            "need 0 <= max_rotation <= 45": 0 <= self.max_rotation <= 45,
            "need 0 <= max_yaw <= 30 and 0 <= max_pitch <= 20": 0 <= self.max_yaw <= 30 and 0 <= self.max_pitch <= 20,
            "need expression, hair_jitter, face_light, color_temp, lighting in [0, 1.5]":
                all(0 <= v <= 1.5 for v in (self.expression, self.hair_jitter, self.face_light, self.color_temp,
                                            self.lighting)),
            "need max_blur, max_noise >= 0": min(self.max_blur, self.max_noise) >= 0,
            "need probabilities in [0, 1]": all(0 <= v <= 1 for v in probs),
            "need max_strangers, max_distractors, clutter >= 0":
                min(self.max_strangers, self.max_distractors, self.clutter) >= 0,
            "need 0 < stranger_visible <= 1": 0 < self.stranger_visible <= 1,
            "need 0 <= max_stranger_iou < 1": 0 <= self.max_stranger_iou < 1,
            "need placement_tries >= 1": self.placement_tries >= 1,
        }
        failed = [msg for msg, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"invalid FaceConfig: {'; '.join(failed)}")

    def photometric(self) -> SceneConfig:
        """The knobs `scenes.apply_photometric` reads, as the SceneConfig it takes."""
        return SceneConfig(lighting=self.lighting, blur_prob=self.blur_prob, max_blur=self.max_blur,
                           max_noise=self.max_noise)


class FaceAnnotation(NamedTuple):
    box: np.ndarray  # (4,) float32 xyxy, continuous pixels, clipped to the image
    landmarks: np.ndarray  # (5, 2) float32 continuous pixels; (0, 0) where visibility is 0
    visibility: np.ndarray  # (5,) int64 COCO v: 2 visible, 1 covered, 0 outside the image
    area: int  # pixels of the face outline inside the image
    subject: bool  # False for a stranger


def sample_look(rng: np.random.Generator, cfg: FaceConfig) -> Look:
    """Expression, pose, hair, clothes, accessories and light of one photo of a person."""
    e = cfg.expression
    glasses = 0 if rng.random() >= cfg.glasses_prob else 2 if rng.random() < cfg.sunglasses_frac else 1
    hat = 0 if rng.random() >= cfg.hat_prob else int(rng.integers(1, 3))
    hand = bool(rng.random() < cfg.hand_prob)
    grey = float(rng.uniform(10, 190))
    return Look(
        smile=e * rng.uniform(-0.3, 1.0),
        mouth_open=e * max(0.0, rng.uniform(-0.6, 1.0)),
        brow_raise=e * rng.uniform(-1, 1),
        squint=min(1.0, e * max(0.0, rng.uniform(-1.0, 1.0))),
        gaze=e * rng.uniform(-1, 1),
        yaw=rng.uniform(-cfg.max_yaw, cfg.max_yaw),
        pitch=rng.uniform(-cfg.max_pitch, cfg.max_pitch),
        hair_volume=1 + cfg.hair_jitter * rng.uniform(-0.25, 0.25),
        hair_shift=cfg.hair_jitter * rng.uniform(-0.03, 0.03),
        shirt=random_color(rng, 20, 235),
        glasses=glasses,
        glasses_color=(grey, grey, grey) if rng.random() < 0.6 else random_color(rng, 0, 200),
        glasses_round=rng.uniform(2, 5),
        glasses_size=rng.uniform(0.9, 1.15),
        lens_color=random_color(rng, 5, 60),
        hat=hat,
        hat_color=random_color(rng, 10, 240),
        hat_depth=rng.uniform(0, 1),
        hand=hand,
        hand_side=int(rng.choice((-1, 1))),
        hand_pos=(rng.uniform(0.6, 1.0), rng.uniform(0.3, 0.9), rng.uniform(-25, 25)),
        light_angle=rng.uniform(0, 2 * math.pi),
        light_strength=cfg.face_light * rng.uniform(0, 0.8),
    )


# ---------------------------------------------------------------------------------------- placement
class _Face(NamedTuple):
    person: FaceIdentity
    look: Look
    matrix: np.ndarray  # (2, 3) face units -> photo pixels (OpenCV convention: centres at integers)
    ppu: float  # photo pixels per face unit
    outline: np.ndarray  # (N, 2) photo pixels
    box: np.ndarray  # (4,) xyxy continuous pixels, clipped to the photo


def _face_at(p: FaceIdentity, look: Look, ppu: float, angle: float, centre, w: int, h: int) -> _Face:
    t = math.radians(angle)  # counter-clockwise as seen, with y down
    rot = ppu * np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
    m = np.hstack([rot, np.asarray(centre, np.float64)[:, None]])
    outline = face_outline(p) @ rot.T + m[:, 2]
    box = np.concatenate([outline.min(0), outline.max(0)]) + 0.5
    return _Face(p, look, m, ppu, outline, np.clip(box, 0, (w, h, w, h)).astype(np.float32))


def _extent(p: FaceIdentity, ppu: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Min and max (x, y) of the rotated outline around the unit origin, in pixels."""
    f = _face_at(p, Look(), ppu, angle, (0.0, 0.0), 1, 1)
    return f.outline.min(0), f.outline.max(0)


def _place_subject(rng, p: FaceIdentity, cfg: FaceConfig, w: int, h: int) -> _Face:
    side = log_uniform(rng, cfg.min_face, cfg.max_face_frac * min(w, h))
    angle = rng.uniform(-cfg.max_rotation, cfg.max_rotation)
    ppu = side / (p.forehead + p.chin)
    lo, hi = _extent(p, ppu, angle)
    fit = min(1.0, (w - 2) / (hi[0] - lo[0]), (h - 2) / (hi[1] - lo[1]))  # only if max_face_frac is large
    lo, hi, ppu = lo * fit, hi * fit, ppu * fit
    centre = (rng.uniform(-lo[0], w - 1 - hi[0]), rng.uniform(-lo[1], h - 1 - hi[1]))  # outline on pixel centres
    return _face_at(p, sample_look(rng, cfg), ppu, angle, centre, w, h)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two xyxy boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _place_strangers(rng, cfg: FaceConfig, subject: _Face, w: int, h: int) -> list[_Face]:
    """Candidate strangers, behind the subject; `_composite` drops those left too hidden."""
    if cfg.max_strangers == 0 or rng.random() >= cfg.stranger_prob:
        return []
    faces: list[_Face] = []
    for _ in range(int(rng.integers(1, cfg.max_strangers + 1))):
        p, look = sample_identity(rng), sample_look(rng, cfg)
        side = log_uniform(rng, 0.75 * cfg.min_face, cfg.max_face_frac * min(w, h))
        angle = rng.uniform(-cfg.max_rotation, cfg.max_rotation)
        ppu = side / (p.forehead + p.chin)
        lo, hi = _extent(p, ppu, angle)
        margin = (1 - cfg.stranger_visible) * (hi - lo)  # how far the face may reach out of the photo
        for _ in range(cfg.placement_tries):
            centre = (rng.uniform(-lo[0] - margin[0], w - hi[0] + margin[0]),
                      rng.uniform(-lo[1] - margin[1], h - hi[1] + margin[1]))
            f = _face_at(p, look, ppu, angle, centre, w, h)
            if box_iou(f.box, subject.box) < cfg.max_stranger_iou and all(box_iou(f.box, g.box) < 0.3 for g in faces):
                faces.append(f)
                break
    return faces


# -------------------------------------------------------------------------------------- compositing
class _Patch(NamedTuple):
    x0: int
    y0: int
    color: np.ndarray  # hxwx3 float32 premultiplied, lit, warped into the photo at (x0, y0)
    alpha: np.ndarray  # hxw float32 in [0, 1]
    landmarks: np.ndarray  # (5, 2) photo pixels (OpenCV convention)
    hidden: np.ndarray  # (5,) bool, covered by the person's own accessories


def _warp(face: _Face, w: int, h: int) -> _Patch:
    """Draw the person (a little supersampled) and warp it into its part of the photo."""
    scale = float(np.clip(1.3 * face.ppu, 40.0, 220.0))  # canvas px per unit
    person = draw_person(face.person, face.look, scale)
    m = face.matrix.copy()
    m[:, :2] /= scale  # canvas pixels -> photo pixels
    m[:, 2] -= m[:, :2] @ (np.array([CANVAS_X, -CANVAS_TOP]) * scale)
    ch, cw = person.rgba.shape[:2]
    corners = np.array([[0, 0], [cw, 0], [0, ch], [cw, ch]], np.float64) @ m[:, :2].T + m[:, 2]
    x0, y0 = (max(0, int(math.floor(v))) for v in corners.min(0))
    x1, y1 = min(w, int(math.ceil(corners[:, 0].max())) + 1), min(h, int(math.ceil(corners[:, 1].max())) + 1)
    landmarks = person.landmarks @ m[:, :2].T + m[:, 2]
    x1, y1 = max(x0, x1), max(y0, y1)
    m[:, 2] -= (x0, y0)
    size = (x1 - x0, y1 - y0)
    rgba = cv2.warpAffine(person.rgba, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0, 0)) if x1 > x0 and y1 > y0 else np.zeros((0, 0, 4), np.uint8)
    alpha = rgba[..., 3].astype(np.float32) * np.float32(1 / 255)
    color = rgba[..., :3].astype(np.float32)
    if person.light is not None and color.size:
        coarse = np.hstack([m[:, :2] * 4, m[:, 2:]])  # light pixel (i, j) sits at canvas pixel (4i, 4j)
        gain = cv2.warpAffine(person.light, coarse, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        color *= gain[..., None]
        np.minimum(color, 255 * alpha[..., None], out=color)  # premultiplied colour stays <= alpha
    return _Patch(x0, y0, color, alpha, landmarks, person.hidden)


def _outline_mask(face: _Face, w: int, h: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(face.outline * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    return mask.astype(bool)


def _annotate(face: _Face, patch: _Patch, cover: np.ndarray, area: int, subject: bool) -> FaceAnnotation:
    h, w = cover.shape
    pts = patch.landmarks
    inside = (pts[:, 0] > -0.5) & (pts[:, 0] < w - 0.5) & (pts[:, 1] > -0.5) & (pts[:, 1] < h - 0.5)
    ix = np.clip(np.round(pts).astype(np.int64), 0, (w - 1, h - 1))
    covered = patch.hidden | cover[ix[:, 1], ix[:, 0]]
    vis = np.where(inside, np.where(covered, 1, 2), 0)
    xy = np.where(inside[:, None], pts + 0.5, 0.0).astype(np.float32)
    return FaceAnnotation(face.box, xy, vis.astype(np.int64), area, subject)


def _composite(image: np.ndarray, subject: _Face, strangers: list[_Face], cfg: FaceConfig) -> list[FaceAnnotation]:
    """Paint the strangers that stay visible enough, then the subject, onto `image` (float32, in place)."""
    h, w = image.shape[:2]
    patches = [_warp(f, w, h) for f in strangers + [subject]]
    cover = np.zeros((h, w), bool)  # solid pixels of the faces painted after the one being checked
    kept: list[int] = []
    annotations = []
    for i in range(len(patches) - 1, -1, -1):
        face, patch = (strangers + [subject])[i], patches[i]
        mask = _outline_mask(face, w, h)
        x, y = face.outline.T
        full = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))  # shoelace
        visible = int((mask & ~cover).sum())
        if i < len(strangers) and visible < cfg.stranger_visible * full:
            continue
        annotations.append(_annotate(face, patch, cover, int(mask.sum()), i == len(strangers)))
        kept.append(i)
        ph, pw = patch.alpha.shape
        cover[patch.y0: patch.y0 + ph, patch.x0: patch.x0 + pw] |= patch.alpha >= 0.5
    for i in reversed(kept):
        patch = patches[i]
        ph, pw = patch.alpha.shape
        roi = image[patch.y0: patch.y0 + ph, patch.x0: patch.x0 + pw]
        roi *= 1 - patch.alpha[..., None]
        roi += patch.color
    return annotations  # subject first


def _draw_distractors(rng, image: np.ndarray, cfg: FaceConfig) -> None:
    """Shapes from `shapes.draw_distractor`, 2x supersampled, possibly reaching out of the photo."""
    h, w = image.shape[:2]
    for _ in range(int(rng.integers(0, cfg.max_distractors + 1))):
        canvas = draw_distractor(rng, 2 * log_uniform(rng, 16, 0.5 * min(h, w)))
        size = (max(1, canvas.alpha.shape[1] // 2), max(1, canvas.alpha.shape[0] // 2))
        color = cv2.resize(canvas.color, size, interpolation=cv2.INTER_AREA).astype(np.float32)
        alpha = cv2.resize(canvas.alpha, size, interpolation=cv2.INTER_AREA).astype(np.float32)[..., None] / 255
        x0, y0 = int(rng.integers(-size[0] // 3, w - size[0] // 3)), int(rng.integers(-size[1] // 3, h - size[1] // 3))
        ix0, iy0 = max(x0, 0), max(y0, 0)
        ix1, iy1 = min(x0 + size[0], w), min(y0 + size[1], h)
        if ix1 > ix0 and iy1 > iy0:
            src = np.s_[iy0 - y0: iy1 - y0, ix0 - x0: ix1 - x0]
            roi = image[iy0:iy1, ix0:ix1]
            roi *= 1 - alpha[src]
            roi += color[src] * alpha[src]  # the colour layer is drawn solid, not premultiplied


def render_face_photo(rng: np.random.Generator, identity: FaceIdentity,
                      cfg: FaceConfig) -> tuple[np.ndarray, list[FaceAnnotation]]:
    """One photo of `identity`: (HxWx3 uint8 RGB, annotations with the subject's first).

    Everything random, the strangers' identities included, comes from `rng`; strangers are drawn
    with `sample_identity`, so they are none of the data set's identities."""
    w, h = (int(v) for v in rng.integers(cfg.min_side, cfg.max_side + 1, 2))
    image = draw_background(rng, h, w, cfg.clutter)
    _draw_distractors(rng, image, cfg)
    subject = _place_subject(rng, identity, cfg, w, h)
    strangers = _place_strangers(rng, cfg, subject, w, h)
    annotations = _composite(image, subject, strangers, cfg)
    t = cfg.color_temp * rng.uniform(-1, 1)
    image *= np.array([1 + 0.15 * t, 1 + 0.02 * t, 1 - 0.15 * t], np.float32)
    return apply_photometric(rng, image, cfg.photometric()), annotations


# ------------------------------------------------------------------------------------------ writing
def identity_name(index: int) -> str:
    return f"id{index:05d}"


def _write_one(job: tuple[Path, int, int, int, FaceConfig]) -> tuple[int, int, list[tuple]]:
    """Render photo k of identity `index` and write it; returns (width, height, [(ann fields)])."""
    out_dir, seed, index, k, cfg = job
    image, anns = render_face_photo(np.random.default_rng([seed, index, k]), identity_params(seed, index), cfg)
    # noisy photos barely compress: the SUB filter and Huffman-only coding are about 2x faster than
    # OpenCV's defaults for files within 10 % of the size
    png = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
           cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
    path = out_dir / identity_name(index) / f"{k}.png"
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), png):
        raise OSError(f"could not write {path}")
    rows = [(a.box.tolist(), a.landmarks.tolist(), a.visibility.tolist(), a.area, a.subject) for a in anns]
    return image.shape[1], image.shape[0], rows


def _worker_init() -> None:
    cv2.setNumThreads(1)


def coco_faces(jobs: list[tuple], results: list[tuple], seed: int, identities: int, per_identity: int,
               first_identity: int, cfg: FaceConfig) -> dict:
    """Jobs (out_dir, seed, index, k, cfg) and their results, in order -> COCO keypoints dict."""
    images, annotations = [], []
    for image_id, ((_, _, index, k, _), (w, h, rows)) in enumerate(zip(jobs, results), start=1):
        name = identity_name(index)
        images.append({"id": image_id, "file_name": f"{name}/{k}.png", "width": w, "height": h, "identity": name})
        for box, xy, vis, area, subject in rows:
            x0, y0, x1, y1 = (round(v, 2) for v in box)
            kps = [v for (x, y), s in zip(xy, vis) for v in (round(x, 2), round(y, 2), s)]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)], "area": area,
                                "iscrowd": 0, "keypoints": kps, "num_keypoints": sum(s > 0 for s in vis),
                                "identity": name if subject else None})
    info = {"description": "Sightline synthetic faces", "seed": seed, "identities": identities,
            "per_identity": per_identity, "first_identity": first_identity, "config": asdict(cfg)}
    return {"info": info, "images": images, "annotations": annotations, "categories": [CATEGORY]}


def write_faces(out_dir: Path, identities: int, per_identity: int, seed: int, cfg: FaceConfig, workers: int,
                first_identity: int = 0) -> Path:
    """Write per_identity photos of identities first_identity.. ; returns the path of annotations.json."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    indices = range(first_identity, first_identity + identities)
    for index in indices:
        (out_dir / identity_name(index)).mkdir(parents=True, exist_ok=True)
    jobs = [(out_dir, seed, index, k, cfg) for index in indices for k in range(per_identity)]
    workers = max(1, min(workers, len(jobs)))
    with contextlib.ExitStack() as stack:
        if workers == 1:
            results_iter = map(_write_one, jobs)
        else:  # spawn is safe even when the parent process holds threads (torch, OpenCV)
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(workers, _worker_init))
            results_iter = pool.imap(_write_one, jobs, chunksize=8)
        bar = stack.enter_context(tqdm(total=len(jobs), desc="faces", unit="img", mininterval=1.0))
        results = []
        for r in results_iter:
            results.append(r)
            bar.update(1)
    path = out_dir / "annotations.json"
    path.write_text(json.dumps(coco_faces(jobs, results, seed, identities, per_identity, first_identity, cfg)))
    return path
