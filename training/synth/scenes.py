"""Synthetic detection scenes: pedestrians, cars and motorcycles on cluttered, textured backgrounds.

`render_scene(rng, cfg)` draws one scene in memory; `write_scenes(out_dir, count, seed, cfg, workers)`
writes a COCO-format data set:

    out_dir/images/000001.png   RGB image
    out_dir/masks/000001.png    8-bit class-id mask (0 = background; distractors are background)
    out_dir/annotations.json    COCO json; bbox [x, y, w, h] is the tight box of the object's visible
                                pixels in the mask, in pixel edges (column range x0..x1 -> x=x0,
                                w=x1-x0+1); area is the visible pixel count

Scene i (ids from 1) is drawn with `np.random.default_rng([seed, i])`, so a data set depends only on
(seed, count, config), never on the number of worker processes.

Knobs (`SceneConfig`, also the CLI flags of `python -m training.synth scenes`):
    min_side, max_side      image width and height, each uniform in [min_side, max_side] px (240, 640)
    min_objects, max_objects  objects tried per image, uniform integer in the range (0, 10); objects
                            that cannot be placed visibly enough are dropped, never drawn
    min_object_size         smallest object, longer side in px (16)
    max_object_frac         largest object, longer side as a fraction of the image's shorter side
                            (0.6); sizes are log-uniform in between, so small objects are common
    min_visible             fraction of an object's own pixels that must stay visible under later
                            objects and distractors (0.6)
    placement_tries         random positions tried per object or distractor before dropping it (8)
    max_rotation            in-plane rotation of objects, uniform in +-max_rotation degrees (6)
    max_distractors         non-class shapes (circles, rings, stars, polygons, rectangles, crosses,
                            lines, ellipses) per image, uniform integer in [0, max_distractors] (8);
                            sized like the objects
    distractor_front_prob   probability that a distractor is drawn among the objects, possibly in
                            front of them, rather than behind all of them (0.35)
    clutter                 most background blobs and lines per image (12)
    lighting                strength of global brightness, contrast, gamma, colour cast and a soft
                            illumination gradient; 0 turns them off (1.0)
    blur_prob, max_blur     probability of a Gaussian blur, and its largest sigma in px (0.5, 1.2)
    max_noise               largest sigma of additive Gaussian noise, of 255 (8.0)
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

from training.synth import knob
from training.synth.shapes import DRAW_OBJECT, Canvas, draw_background, draw_distractor, log_uniform

CATEGORIES = (
    {"id": 1, "name": "pedestrian", "supercategory": "object"},
    {"id": 2, "name": "car", "supercategory": "object"},
    {"id": 3, "name": "motorcycle", "supercategory": "object"},
)


@dataclass(frozen=True)
class SceneConfig:
    """Scene generation knobs; see the module docstring."""

    min_side: int = knob(240, "smallest image width/height in px")
    max_side: int = knob(640, "largest image width/height in px")
    min_objects: int = knob(0, "fewest objects tried per image")
    max_objects: int = knob(10, "most objects tried per image")
    min_object_size: float = knob(16.0, "smallest object longer side in px")
    max_object_frac: float = knob(0.6, "largest object longer side, fraction of the image's shorter side")
    min_visible: float = knob(0.6, "fraction of each object's pixels that must stay visible")
    placement_tries: int = knob(8, "positions tried before an object or distractor is dropped")
    max_rotation: float = knob(6.0, "largest in-plane object rotation in degrees")
    max_distractors: int = knob(8, "most distractor shapes per image")
    distractor_front_prob: float = knob(0.35, "probability a distractor may be drawn in front of objects")
    clutter: int = knob(12, "most background blobs and lines per image")
    lighting: float = knob(1.0, "strength of global lighting changes (0 = off)")
    blur_prob: float = knob(0.5, "probability of a Gaussian blur")
    max_blur: float = knob(1.2, "largest Gaussian blur sigma in px")
    max_noise: float = knob(8.0, "largest Gaussian noise sigma (of 255)")

    def __post_init__(self) -> None:
        checks = {
            "need 16 <= min_side <= max_side": 16 <= self.min_side <= self.max_side,
            "need 0 <= min_objects <= max_objects": 0 <= self.min_objects <= self.max_objects,
            "need min_object_size >= 4": self.min_object_size >= 4,
            "need 0 < max_object_frac <= 1": 0 < self.max_object_frac <= 1,
            "need 0 < min_visible <= 1": 0 < self.min_visible <= 1,
            "need placement_tries >= 1": self.placement_tries >= 1,
            "need max_distractors, clutter >= 0": self.max_distractors >= 0 and self.clutter >= 0,
            "need max_rotation, lighting, max_blur, max_noise >= 0":
                min(self.max_rotation, self.lighting, self.max_blur, self.max_noise) >= 0,
        }
        failed = [msg for msg, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"invalid SceneConfig: {'; '.join(failed)}")


class SceneObject(NamedTuple):
    category_id: int
    box: np.ndarray  # (4,) float32 xyxy, continuous pixel coordinates of the visible pixels
    area: int  # visible pixel count


@dataclass
class Scene:
    image: np.ndarray  # HxWx3 uint8 RGB
    mask: np.ndarray  # HxW uint8 category id, 0 = background
    objects: list[SceneObject]


class _Patch(NamedTuple):
    color: np.ndarray  # hxwx3 float32, premultiplied by alpha
    alpha: np.ndarray  # hxw float32 in [0, 1]
    solid: np.ndarray  # hxw bool, alpha >= 0.5: the pixels this patch owns in the mask


# -------------------------------------------------------------------------------------------- patches
def _finish(canvas: Canvas, ss: int, mirror: bool, angle: float) -> _Patch:
    """Supersampled canvas -> output-resolution premultiplied patch, mirrored and rotated."""
    color, alpha = canvas.color, canvas.alpha
    color[alpha == 0] = 0  # colour-only details never leak outside the shape
    if mirror:
        color, alpha = color[:, ::-1], alpha[:, ::-1]
    h, w = alpha.shape
    if angle:
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        c, s = abs(m[0, 0]), abs(m[0, 1])
        nw, nh = int(math.ceil(h * s + w * c)), int(math.ceil(h * c + w * s))
        m[:, 2] += ((nw - w) / 2, (nh - h) / 2)
        color = cv2.warpAffine(np.ascontiguousarray(color), m, (nw, nh), flags=cv2.INTER_LINEAR)
        alpha = cv2.warpAffine(np.ascontiguousarray(alpha), m, (nw, nh), flags=cv2.INTER_LINEAR)
        h, w = nh, nw
    size = (max(1, round(w / ss)), max(1, round(h / ss)))
    color = cv2.resize(np.ascontiguousarray(color), size, interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(np.ascontiguousarray(alpha), size, interpolation=cv2.INTER_AREA)
    ys, xs = np.nonzero(alpha)
    if ys.size == 0:
        return _Patch(np.zeros((0, 0, 3), np.float32), np.zeros((0, 0), np.float32), np.zeros((0, 0), bool))
    crop = np.s_[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    a = alpha[crop].astype(np.float32) / 255.0
    return _Patch(color[crop].astype(np.float32), a, a >= 0.5)


def _supersampling(longer_side: float) -> int:
    return int(np.clip(math.ceil(64 / longer_side), 2, 4))


def _object_patch(rng: np.random.Generator, category_id: int, size: float, cfg: SceneConfig) -> _Patch:
    ss = _supersampling(size)
    canvas = DRAW_OBJECT[category_id](rng, size * ss)
    angle = rng.uniform(-cfg.max_rotation, cfg.max_rotation)
    return _finish(canvas, ss, bool(rng.random() < 0.5), angle)


def _distractor_patch(rng: np.random.Generator, size: float) -> _Patch:
    ss = _supersampling(size)
    return _finish(draw_distractor(rng, size * ss), ss, False, 0.0)


# ------------------------------------------------------------------------------------------ placement
class _Composer:
    """Paints patches onto an image and tracks which object owns each pixel (0 = none)."""

    def __init__(self, image: np.ndarray, min_visible: float):
        self.image = image  # HxWx3 float32
        self.owner = np.zeros(image.shape[:2], np.int16)
        self.full: list[int] = [0]  # pixel count of each object as drawn; index 0 unused
        self.visible: list[int] = [0]
        self.min_visible = min_visible

    def _slices(self, patch: _Patch, x0: int, y0: int):
        """Image and patch slices of the overlap of a patch placed at (x0, y0)."""
        h, w = self.owner.shape
        ph, pw = patch.alpha.shape
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + pw, w), min(y0 + ph, h)
        if ix1 <= ix0 or iy1 <= iy0:
            return None
        return np.s_[iy0:iy1, ix0:ix1], np.s_[iy0 - y0: iy1 - y0, ix0 - x0: ix1 - x0]

    def try_place(self, patch: _Patch, x0: int, y0: int, is_object: bool) -> bool:
        """Paint the patch if every object drawn so far keeps min_visible of its pixels."""
        sl = self._slices(patch, x0, y0)
        if sl is None:
            return False
        img_sl, p_sl = sl
        solid = patch.solid[p_sl]
        covered = np.bincount(self.owner[img_sl][solid], minlength=len(self.full))
        for k in np.nonzero(covered[1:])[0] + 1:
            if self.visible[k] - covered[k] < self.min_visible * self.full[k]:
                return False
        for k in np.nonzero(covered[1:])[0] + 1:
            self.visible[k] -= int(covered[k])
        region = self.image[img_sl]
        region *= 1.0 - patch.alpha[p_sl][..., None]
        region += patch.color[p_sl]
        new_owner = len(self.full) if is_object else 0
        self.owner[img_sl][solid] = new_owner
        if is_object:
            n = int(solid.sum())
            self.full.append(n)
            self.visible.append(n)
        return True

    def visible_box(self, k: int, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """Tight xyxy box (pixel edges) of object k's visible pixels; it was placed at (x0, y0)."""
        ys, xs = np.nonzero(self.owner[y0: y0 + h, x0: x0 + w] == k)
        return np.array([x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1], np.float32)


def _place_object(rng, comp: _Composer, patch: _Patch, tries: int):
    """Try positions fully inside the image; returns (x0, y0) or None if dropped."""
    h, w = comp.owner.shape
    ph, pw = patch.alpha.shape
    if ph == 0 or ph > h or pw > w:
        return None
    for _ in range(tries):
        x0, y0 = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
        if comp.try_place(patch, x0, y0, True):
            return x0, y0
    return None


def _place_distractor(rng, comp: _Composer, patch: _Patch, tries: int) -> None:
    """Distractors may stick out of the image by up to a third of their size."""
    h, w = comp.owner.shape
    ph, pw = patch.alpha.shape
    for _ in range(tries):
        x0 = int(rng.integers(-pw // 3, max(w - 2 * pw // 3, -pw // 3 + 1)))
        y0 = int(rng.integers(-ph // 3, max(h - 2 * ph // 3, -ph // 3 + 1)))
        if ph and comp.try_place(patch, x0, y0, False):
            return


# --------------------------------------------------------------------------------------------- scenes
class _Placed(NamedTuple):
    category_id: int
    owner: int  # id in _Composer.owner
    x0: int
    y0: int
    w: int
    h: int


def _place_all(rng: np.random.Generator, comp: _Composer, cfg: SceneConfig) -> list[_Placed]:
    """Distractors behind everything, then objects and front distractors in random order."""
    h, w = comp.owner.shape
    max_size = cfg.max_object_frac * min(h, w)
    n_obj = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    n_dis = int(rng.integers(0, cfg.max_distractors + 1))
    cats = rng.integers(1, len(CATEGORIES) + 1, n_obj).tolist()
    n_front = int((rng.random(n_dis) < cfg.distractor_front_prob).sum())
    order = [0] * (n_dis - n_front) + rng.permutation(np.array(cats + [0] * n_front, np.int64)).tolist()
    placed = []
    for cat in order:
        size = log_uniform(rng, cfg.min_object_size, max_size)
        if cat == 0:
            _place_distractor(rng, comp, _distractor_patch(rng, size), cfg.placement_tries)
            continue
        patch = _object_patch(rng, cat, size, cfg)
        pos = _place_object(rng, comp, patch, cfg.placement_tries)
        if pos is not None:
            placed.append(_Placed(cat, len(comp.full) - 1, *pos, patch.alpha.shape[1], patch.alpha.shape[0]))
    return placed


def render_scene(rng: np.random.Generator, cfg: SceneConfig) -> Scene:
    """Draw one scene: textured background, distractors and objects, then photometric changes."""
    w, h = (int(v) for v in rng.integers(cfg.min_side, cfg.max_side + 1, 2))
    comp = _Composer(draw_background(rng, h, w, cfg.clutter), cfg.min_visible)
    placed = _place_all(rng, comp, cfg)
    objects = [SceneObject(p.category_id, comp.visible_box(p.owner, p.x0, p.y0, p.w, p.h), comp.visible[p.owner])
               for p in placed]
    category_of_owner = np.zeros(len(comp.full), np.uint8)
    for p in placed:
        category_of_owner[p.owner] = p.category_id
    image = apply_photometric(rng, comp.image, cfg)
    return Scene(image=image, mask=category_of_owner[comp.owner], objects=objects)


def apply_photometric(rng: np.random.Generator, image: np.ndarray, cfg: SceneConfig) -> np.ndarray:
    """HxWx3 float32 (0..255) -> HxWx3 uint8: lighting, illumination gradient, blur, noise, gamma."""
    s = cfg.lighting
    h, w = image.shape[:2]
    t = rng.uniform(0, 2 * math.pi)
    ramp = (np.arange(w, dtype=np.float32)[None, :] - w / 2) * (math.cos(t) / max(h, w)) + \
           (np.arange(h, dtype=np.float32)[:, None] - h / 2) * (math.sin(t) / max(h, w))
    gain = 1.0 + rng.uniform(0, 0.6 * s) * ramp  # soft gradient, up to +-30 % across the image
    contrast = rng.uniform(1 - 0.3 * s, 1 + 0.25 * s)
    cast = (contrast * rng.uniform(1 - 0.08 * s, 1 + 0.08 * s, 3)).astype(np.float32)
    offset = 128 * (1 - contrast) + rng.uniform(-30 * s, 30 * s)
    out = image * gain[..., None]
    out *= cast
    out += np.float32(offset)
    if rng.random() < cfg.blur_prob:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, max(cfg.max_blur, 0.3)))
    sigma = rng.uniform(0, cfg.max_noise)
    if sigma > 0.5:
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(sigma)
    out = np.clip(out, 0, 255).astype(np.uint8)
    gamma = math.exp(rng.uniform(-0.35 * s, 0.35 * s))
    lut = np.clip(255 * (np.arange(256) / 255.0) ** gamma + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(out, lut)


# -------------------------------------------------------------------------------------------- writing
def _write_one(job: tuple[Path, int, int, SceneConfig]) -> tuple[int, int, int, list]:
    """Render scene `index` and write its PNGs; returns (index, width, height, [(cat, xywh, area)])."""
    out_dir, index, seed, cfg = job
    scene = render_scene(np.random.default_rng([seed, index]), cfg)
    name = f"{index:06d}.png"
    cv2.imwrite(str(out_dir / "images" / name), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(out_dir / "masks" / name), scene.mask)
    objs = [(o.category_id, [float(v) for v in (o.box[0], o.box[1], o.box[2] - o.box[0], o.box[3] - o.box[1])],
             o.area) for o in scene.objects]
    h, w = scene.mask.shape
    return index, w, h, objs


def _worker_init() -> None:
    cv2.setNumThreads(1)


def coco_dataset(results: list[tuple[int, int, int, list]], seed: int, cfg: SceneConfig) -> dict:
    """(index, width, height, [(cat, xywh, area)]) per image, in index order -> COCO dict."""
    images, annotations = [], []
    for index, w, h, objs in results:
        images.append({"id": index, "file_name": f"{index:06d}.png", "width": w, "height": h})
        for cat, xywh, area in objs:
            annotations.append({"id": len(annotations) + 1, "image_id": index, "category_id": cat,
                                "bbox": xywh, "area": area, "iscrowd": 0})
    info = {"description": "Sightline synthetic scenes", "seed": seed, "config": asdict(cfg)}
    return {"info": info, "images": images, "annotations": annotations, "categories": list(CATEGORIES)}


def write_scenes(out_dir: Path, count: int, seed: int, cfg: SceneConfig, workers: int) -> Path:
    """Write `count` scenes (ids 1..count) to out_dir; returns the path of annotations.json."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    jobs = [(out_dir, i, seed, cfg) for i in range(1, count + 1)]
    workers = max(1, min(workers, count))
    with contextlib.ExitStack() as stack:
        if workers == 1:
            results_iter = map(_write_one, jobs)
        else:  # spawn is safe even when the parent process holds threads (torch, OpenCV)
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(workers, _worker_init))
            results_iter = pool.imap(_write_one, jobs, chunksize=4)
        bar = stack.enter_context(tqdm(total=count, desc="scenes", unit="img", mininterval=1.0))
        results = []
        for r in results_iter:
            results.append(r)
            bar.update(1)
    path = out_dir / "annotations.json"
    path.write_text(json.dumps(coco_dataset(results, seed, cfg)))
    return path
