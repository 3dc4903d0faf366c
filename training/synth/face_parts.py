"""One synthetic person: identity parameters, the per-photo look, and the upright drawing.

Face units: the person is drawn upright in a canonical frame whose origin is the middle of the face
at cheek level, x to the right as seen in the image, y down. The skin outline spans x in
[-face_width, face_width] and y in [-forehead, chin] (about 0.75 x 1.05 units); hair, ears, neck and
shoulders lie outside it. `draw_person` paints onto a premultiplied RGBA canvas covering x in
[-CANVAS_X, CANVAS_X] and y in [CANVAS_TOP, CANVAS_BOTTOM] at `scale` canvas pixels per unit, with
OpenCV's anti-aliased primitives, and returns the 5 landmarks and the skin outline in canvas pixels
(OpenCV's convention: the centre of pixel column i, row j is at (i, j)) and a coarse map of the
directional light, which the caller multiplies into the colour after warping (cheaper on the
usually smaller warped patch than on the canvas).

`FaceIdentity` holds what stays the same across a person's photos (47 continuous numbers plus
mole and freckle positions); `Look` holds what changes from photo to photo (expression, head turn,
hair, clothes, glasses, hat, a hand, the light on the face). `Look()` is neutral: frontal, no
accessories, even light.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import NamedTuple

import cv2
import numpy as np

CANVAS_X, CANVAS_TOP, CANVAS_BOTTOM = 1.15, -1.0, 1.5
_FADE = 0.35  # the shoulders fade out over the canvas's last _FADE units
_SHIFT = 4  # OpenCV fixed-point fractional bits

Color = tuple[float, float, float]


def _param(lo: float, hi: float, help_: str):
    return field(metadata={"range": (lo, hi), "help": help_})


@dataclass(frozen=True)
class FaceIdentity:
    """A person: each number is uniform in its range (negative ranges clip to 0 = trait absent)."""

    face_width: float = _param(0.33, 0.43, "half width of the face at the cheeks, units")
    forehead: float = _param(0.50, 0.60, "cheek line to top of forehead, units")
    chin: float = _param(0.42, 0.54, "cheek line to chin, units")
    jaw_square: float = _param(2.0, 3.6, "superellipse exponent of the lower face (2 = oval)")
    chin_taper: float = _param(0.0, 0.3, "narrowing of the lower face towards the chin")
    skin_tone: float = _param(0.0, 1.0, "light to dark along a skin palette")
    skin_warmth: float = _param(-1.0, 1.0, "red/yellow against pink/olive shift of the skin")
    blush: float = _param(0.0, 1.0, "redness of the cheeks")
    hair_dark: float = _param(0.0, 1.0, "blonde to black")
    hair_red: float = _param(0.0, 1.0, "auburn tint")
    hair_grey: float = _param(-3.0, 1.0, "greying")
    hair_volume: float = _param(0.02, 0.16, "hair thickness above the skull, units")
    hairline: float = _param(0.0, 1.0, "receding (0) to a fringe down to the brows (1)")
    fringe_sweep: float = _param(-1.0, 1.0, "slant of the fringe")
    parting: float = _param(-1.0, 1.0, "position of the parting")
    hair_length: float = _param(0.0, 1.0, "side hair from above the ears to the shoulders")
    hair_curl: float = _param(0.0, 1.0, "waviness of the hair's outline")
    eye_spacing: float = _param(0.40, 0.52, "eye centre offset from the midline, fraction of face_width")
    eye_height: float = _param(-0.14, -0.02, "eye line relative to the cheek line, units")
    eye_size: float = _param(0.065, 0.09, "half width of an eye, units")
    eye_open: float = _param(0.4, 0.65, "eye height to width")
    eye_tilt: float = _param(-8.0, 8.0, "canthal tilt, degrees")
    iris_hue: float = _param(0.0, 1.0, "brown, hazel, green, blue, grey")
    iris_dark: float = _param(0.0, 1.0, "iris darkness")
    brow_thick: float = _param(0.016, 0.045, "brow thickness, units")
    brow_angle: float = _param(-10.0, 14.0, "brow slope, degrees (outer end up)")
    brow_gap: float = _param(0.055, 0.11, "brow height above the eye, units")
    brow_length: float = _param(0.9, 1.5, "brow length, fraction of the eye width")
    brow_arch: float = _param(0.0, 0.035, "brow arch, units")
    brow_dark: float = _param(0.0, 1.0, "brow colour from the hair's towards black")
    nose_frac: float = _param(0.32, 0.42, "nose tip position from eye line (0) to chin (1)")
    nose_width: float = _param(0.05, 0.09, "half width of the nostrils, units")
    nose_tip: float = _param(0.018, 0.038, "radius of the nose tip, units")
    mouth_frac: float = _param(0.62, 0.72, "mouth position from eye line (0) to chin (1)")
    mouth_width: float = _param(0.10, 0.16, "half width of the mouth, units")
    lip_upper: float = _param(0.010, 0.030, "upper lip thickness, units")
    lip_lower: float = _param(0.015, 0.040, "lower lip thickness, units")
    lip_red: float = _param(0.0, 1.0, "lip redness")
    ear_size: float = _param(0.11, 0.17, "half height of an ear, units")
    ear_height: float = _param(-0.06, 0.04, "ear centre relative to the cheek line, units")
    ear_out: float = _param(0.0, 1.0, "how far the ears stick out")
    moles: float = _param(-1.0, 1.0, "how many of the 3 mole spots show")
    freckles: float = _param(-1.5, 1.0, "freckle density")
    beard: float = _param(-1.5, 1.0, "beard")
    moustache: float = _param(-1.5, 1.0, "moustache")
    stubble: float = _param(-1.0, 1.0, "stubble")
    wrinkles: float = _param(-1.0, 1.0, "nasolabial folds")
    mole_spots: tuple = field(default=(), metadata={"help": "3 x (x, y, radius) in units"})
    freckle_spots: tuple = field(default=(), metadata={"help": "20 x (x, y) in units"})

    def vector(self) -> np.ndarray:
        """The continuous parameters, in field order, as float64."""
        return np.array([getattr(self, f.name) for f in fields(self) if "range" in f.metadata])


def sample_identity(rng: np.random.Generator) -> FaceIdentity:
    """A random person; every number uniform in its field's range."""
    ranges = [f.metadata["range"] for f in fields(FaceIdentity) if "range" in f.metadata]
    values = [float(rng.uniform(lo, hi)) for lo, hi in ranges]
    moles = np.stack([rng.uniform(-0.75, 0.75, 3), rng.uniform(-0.35, 0.4, 3), rng.uniform(0.008, 0.02, 3)], 1)
    freckles = np.stack([rng.normal(0, 0.16, 20), rng.normal(0.02, 0.06, 20)], 1)
    return FaceIdentity(*values, mole_spots=tuple(map(tuple, moles.round(5).tolist())),
                        freckle_spots=tuple(map(tuple, freckles.round(5).tolist())))


def identity_params(seed: int, index: int) -> FaceIdentity:
    """Identity `index` of a data set: the same whatever the data set's size."""
    return sample_identity(np.random.default_rng([seed, 7, index]))


@dataclass(frozen=True)
class Look:
    """What changes between photos of one person; the defaults are neutral."""

    smile: float = 0.0  # -0.3 (frown) .. 1
    mouth_open: float = 0.0  # 0 .. 1
    brow_raise: float = 0.0  # -1 .. 1
    squint: float = 0.0  # 0 .. 1
    gaze: float = 0.0  # iris shift, -1 .. 1
    yaw: float = 0.0  # head turn, degrees (+: the face turns towards +x)
    pitch: float = 0.0  # head nod, degrees (+: down)
    hair_volume: float = 1.0  # multiplier of the identity's hair volume
    hair_shift: float = 0.0  # fringe moved down (+) or up, units
    shirt: Color = (90.0, 90.0, 110.0)
    glasses: int = 0  # 0 none, 1 clear, 2 sunglasses
    glasses_color: Color = (30.0, 30.0, 30.0)
    glasses_round: float = 3.0  # superellipse exponent of the frames
    glasses_size: float = 1.0
    lens_color: Color = (25.0, 25.0, 30.0)
    hat: int = 0  # 0 none, 1 beanie, 2 cap
    hat_color: Color = (60.0, 60.0, 140.0)
    hat_depth: float = 0.5  # 0 .. 1: how far down the forehead
    hand: bool = False
    hand_side: int = 1
    hand_pos: tuple[float, float, float] = (0.8, 0.6, 0.0)  # x (of face_width), y (of chin), angle deg
    light_angle: float = 0.0  # direction the light comes from, radians in the image plane
    light_strength: float = 0.0  # 0 .. 0.8 x FaceConfig.face_light: depth of the shading


class Person(NamedTuple):
    rgba: np.ndarray  # HxWx4 uint8, colour premultiplied by alpha
    landmarks: np.ndarray  # (5, 2) float64 canvas pixels: left eye, right eye, nose tip, mouth corners
    hidden: np.ndarray  # (5,) bool: landmark covered by the person's own sunglasses, hat or hand
    outline: np.ndarray  # (N, 2) float64 canvas pixels: the skin outline, forehead to chin
    light: np.ndarray | None  # colour gain (directional light) at canvas pixels (4i, 4j), or None


# ------------------------------------------------------------------------------------------ colours
_SKIN = np.array([(250, 222, 200), (238, 196, 160), (222, 170, 128), (196, 138, 96), (150, 98, 64),
                  (100, 66, 44), (70, 48, 36)], np.float64)
_HAIR = np.array([(235, 212, 150), (190, 140, 80), (120, 80, 45), (65, 42, 28), (25, 20, 18)], np.float64)
_IRIS = np.array([(70, 45, 25), (120, 85, 40), (90, 110, 60), (80, 120, 170), (120, 130, 140)], np.float64)


def _palette(table: np.ndarray, t: float) -> np.ndarray:
    pos = float(np.clip(t, 0, 1)) * (len(table) - 1)
    i = min(int(pos), len(table) - 2)
    return table[i] + (pos - i) * (table[i + 1] - table[i])


def _mix(a, b, t: float) -> Color:
    return tuple(float(u * (1 - t) + v * t) for u, v in zip(a, b))


def _scaled(c, f: float) -> Color:
    return tuple(float(min(255.0, max(0.0, v * f))) for v in c)


class _Colors(NamedTuple):
    skin: Color
    hair: Color
    brow: Color
    iris: Color
    lip: Color


def _colors(p: FaceIdentity) -> _Colors:
    skin = _palette(_SKIN, p.skin_tone) * (1 + 0.06 * p.skin_warmth * np.array([1.0, 0.2, -1.0]))
    hair = _palette(_HAIR, p.hair_dark)
    hair = _mix(hair, (170, 70, 35), 0.7 * p.hair_red * (1 - 0.8 * p.hair_dark))
    hair = _mix(hair, (205, 205, 200), max(0.0, p.hair_grey))
    brow = _mix(hair, (30, 25, 20), 0.7 * p.brow_dark)
    iris = _scaled(_palette(_IRIS, p.iris_hue), 1 - 0.5 * p.iris_dark)
    lip = _scaled(_mix(skin, (190, 80, 90), 0.2 + 0.35 * p.lip_red), 0.92)
    return _Colors(_scaled(skin, 1.0), hair, brow, iris, lip)


# ------------------------------------------------------------------------------------------- canvas
class _Sketch:
    """Premultiplied RGBA canvas addressed in face units; every primitive is anti-aliased."""

    def __init__(self, scale: float):
        self.scale = scale
        self.origin = np.array([CANVAS_X * scale, -CANVAS_TOP * scale])
        w, h = math.ceil(2 * CANVAS_X * scale), math.ceil((CANVAS_BOTTOM - CANVAS_TOP) * scale)
        self.rgba = np.zeros((h, w, 4), np.uint8)

    def px(self, pts) -> np.ndarray:
        """Units (N, 2) -> canvas pixels (N, 2) float64."""
        return np.asarray(pts, np.float64).reshape(-1, 2) * self.scale + self.origin

    def _fx(self, pts) -> np.ndarray:
        return np.round(self.px(pts) * (1 << _SHIFT)).astype(np.int32)

    def poly(self, pts, color: Color) -> None:
        cv2.fillPoly(self.rgba, [self._fx(pts)], (*color, 255), cv2.LINE_AA, _SHIFT)

    def ellipse(self, cx, cy, rx, ry, color: Color, angle: float = 0.0) -> None:
        one = 1 << _SHIFT
        c = (round((cx * self.scale + self.origin[0]) * one), round((cy * self.scale + self.origin[1]) * one))
        axes = (max(1, round(rx * self.scale * one)), max(1, round(ry * self.scale * one)))
        cv2.ellipse(self.rgba, c, axes, float(angle), 0, 360, (*color, 255), -1, cv2.LINE_AA, _SHIFT)

    def lines(self, pts, width: float, color: Color, closed: bool = False) -> None:
        t = max(1, round(width * self.scale))
        cv2.polylines(self.rgba, [self._fx(pts)], closed, (*color, 255), t, cv2.LINE_AA, _SHIFT)


def _arc(cx, cy, rx, ry, a0, a1, n: int = 16, power: float = 2.0) -> np.ndarray:
    """(n, 2) points of a superellipse arc from angle a0 to a1 (radians, y down)."""
    t = np.linspace(a0, a1, n)
    c, s = np.cos(t), np.sin(t)
    e = 2.0 / power
    return np.stack([cx + rx * np.sign(c) * np.abs(c) ** e, cy + ry * np.sign(s) * np.abs(s) ** e], 1)


class _Pose:
    """Turns the inner features on a cylinder (yaw) and shifts them with the nod (pitch)."""

    def __init__(self, p: FaceIdentity, look: Look):
        self.r = p.face_width * 1.15
        self.yaw, self.pitch = math.radians(look.yaw), math.radians(look.pitch)

    def __call__(self, x, y, depth: float = 0.0) -> np.ndarray:
        """Feature point(s) at (x, y) units, `depth` in front of the cheeks -> (..., 2) units."""
        if np.ndim(x) == 0 and np.ndim(y) == 0 and np.ndim(depth) == 0:  # one point: plain floats
            th = math.asin(max(-0.99, min(0.99, x / self.r)))
            return np.array([self.r * math.sin(th + self.yaw) + depth * math.sin(self.yaw),
                             y * math.cos(self.pitch) + (depth + 0.3 * math.cos(th)) * math.sin(self.pitch)])
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        th = np.arcsin(np.clip(x / self.r, -0.99, 0.99))
        xp = self.r * np.sin(th + self.yaw) + depth * math.sin(self.yaw)
        yp = y * math.cos(self.pitch) + (depth + 0.3 * np.cos(th)) * math.sin(self.pitch)
        return np.stack([xp, yp], -1)

    def squeeze(self, x: float) -> float:
        """Horizontal foreshortening of a feature at x."""
        th = math.asin(max(-0.99, min(0.99, x / self.r)))
        return max(0.2, math.cos(th + self.yaw)) / math.cos(th)


def face_outline(p: FaceIdentity, n: int = 48) -> np.ndarray:
    """(n, 2) units: the skin outline, an ellipse above the cheek line and a tapered superellipse below."""
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    e = 2.0 / p.jaw_square
    lower = s > 0
    y = np.where(lower, p.chin * np.abs(s) ** e, p.forehead * s)
    x = np.where(lower, p.face_width * np.sign(c) * np.abs(c) ** e * (1 - p.chin_taper * y / p.chin),
                 p.face_width * c)
    return np.stack([x, y], 1)


# ------------------------------------------------------------------------------------------ drawing
class _Geo(NamedTuple):
    """Feature positions in units, before the head turn."""

    eye_x: float  # offset of each eye centre from the midline
    eye_y: float
    nose_y: float
    mouth_y: float
    mouth_w: float  # half width, smile included
    eye_h: tuple[float, float]  # upper and lower half heights of the eye opening


def _geometry(p: FaceIdentity, look: Look) -> _Geo:
    span = p.chin - p.eye_height
    h_open = p.eye_size * p.eye_open * (1 - 0.5 * look.squint) * (1 + 0.15 * look.brow_raise)
    return _Geo(p.eye_spacing * p.face_width, p.eye_height, p.eye_height + p.nose_frac * span,
                p.eye_height + p.mouth_frac * span, p.mouth_width * (1 + 0.15 * max(look.smile, 0.0)),
                (0.62 * h_open, 0.38 * h_open * (1 - 0.3 * look.squint)))


def _landmarks(g: _Geo, look: Look, pose: _Pose) -> np.ndarray:
    corner_y = g.mouth_y - 0.035 * look.smile
    return np.vstack([pose([-g.eye_x, g.eye_x], [g.eye_y, g.eye_y]), pose(0.0, g.nose_y, 0.2)[None],
                      pose([-g.mouth_w, g.mouth_w], [corner_y, corner_y], 0.06)])


def _draw_body(sk: _Sketch, p: FaceIdentity, look: Look, col: _Colors) -> None:
    """Long hair behind the head, shoulders, neck and ears."""
    a, chin = p.face_width, p.chin
    vol = p.hair_volume * look.hair_volume
    bottom = -0.08 + p.hair_length
    if bottom > 0.35:
        w = a + 0.7 * vol + 0.04
        sk.poly(np.vstack([[(-w, -0.1), (w, -0.1)], _arc(0, bottom - 0.1, w + 0.03, 0.12, 0, math.pi, 12)]),
                _scaled(col.hair, 0.72))
    y_sh = chin + 0.42
    sk.poly([(-0.6 * a, y_sh - 0.1), (0.6 * a, y_sh - 0.1), (1.0, y_sh + 0.12), (1.15, CANVAS_BOTTOM),
             (-1.15, CANVAS_BOTTOM), (-1.0, y_sh + 0.12)], look.shirt)
    sk.poly(np.vstack([[(-0.52 * a, 0.1), (0.52 * a, 0.1)], _arc(0, y_sh - 0.1, 0.56 * a, 0.08, 0, math.pi, 9)]),
            _scaled(col.skin, 0.8))
    turn = math.sin(math.radians(look.yaw))
    for side in (-1, 1):
        ew = (0.045 + 0.03 * p.ear_out) * float(np.clip(1 - 2.5 * side * turn, 0.2, 1.6))
        x = side * (a - 0.01 + 0.015 * p.ear_out + 0.5 * ew)
        sk.ellipse(x, p.ear_height, ew, p.ear_size, _scaled(col.skin, 0.93))
        sk.ellipse(x + side * 0.1 * ew, p.ear_height, 0.5 * ew, 0.65 * p.ear_size, _scaled(col.skin, 0.78))


def _draw_skin(sk: _Sketch, p: FaceIdentity, g: _Geo, col: _Colors, pose: _Pose) -> None:
    """Skin, cheeks, freckles, moles and facial hair below the nose."""
    outline = face_outline(p, 64)
    sk.poly(outline, col.skin)
    for side in (-1, 1):
        c = pose(side * 0.55 * p.face_width, g.nose_y - 0.02)
        sk.ellipse(c[0], c[1], 0.09, 0.06, _mix(col.skin, (220, 90, 90), 0.1 * p.blush))
    spots = np.asarray(p.freckle_spots, np.float64)[: int(20 * max(0.0, p.freckles))]
    for x, y in pose(spots[:, 0], spots[:, 1] + g.nose_y - 0.1):
        sk.ellipse(x, y, 0.007, 0.007, _mix(col.skin, (120, 70, 40), 0.35))
    for x, y, r in list(p.mole_spots)[: int(np.clip(math.floor(3 * (p.moles + 0.2)), 0, 3))]:
        c = pose(x * p.face_width, y)
        sk.ellipse(c[0], c[1], r, r, (85.0, 55.0, 40.0))
    amount = max(p.beard, 0.25 * p.stubble, 0.0)
    if amount > 0:
        low = outline[outline[:, 1] > g.nose_y] * (1 + 0.04 * max(p.beard, 0.0), 1 + 0.1 * max(p.beard, 0.0))
        below = pose([-1.3 * g.mouth_w, 0.0, 1.3 * g.mouth_w], [g.mouth_y, g.mouth_y + p.lip_lower + 0.05,
                                                                 g.mouth_y])
        sk.poly(np.vstack([low, below]), _mix(col.skin, _scaled(col.hair, 0.8), 0.15 + 0.65 * amount))
    if p.moustache > 0:
        mw, y = g.mouth_w, g.mouth_y - p.lip_upper
        sk.poly(pose([-1.1 * mw, -0.5 * mw, 0, 0.5 * mw, 1.1 * mw, 0.5 * mw, 0, -0.5 * mw],
                     [g.mouth_y + 0.01, y - 0.035, y - 0.045, y - 0.035, g.mouth_y + 0.01, y, y + 0.003, y], 0.08),
                _mix(col.skin, _scaled(col.hair, 0.75), 0.35 + 0.6 * p.moustache))


def _draw_nose_mouth(sk: _Sketch, p: FaceIdentity, look: Look, g: _Geo, col: _Colors, pose: _Pose) -> None:
    ny, my, mw = g.nose_y, g.mouth_y, g.mouth_w
    folds = 0.6 * max(p.wrinkles, 0.0) + 0.4 * max(look.smile - 0.3, 0.0)
    for side in (-1, 1):
        if folds > 0:
            sk.lines(pose(side * np.array([p.nose_width + 0.015, mw + 0.02, mw + 0.035]),
                          [ny - 0.005, (ny + my) / 2 + 0.01, my + 0.05]), 0.008,
                     _mix(col.skin, (60, 35, 25), 0.3 * folds))
        c = pose(side * 0.8 * p.nose_width, ny - 0.005, 0.1)
        sk.ellipse(c[0], c[1], 0.028 * pose.squeeze(side * 0.08), 0.02, _scaled(col.skin, 0.92))
    shadow = -1.0 if math.cos(look.light_angle) > 0 else 1.0
    sk.lines(pose(shadow * np.array([0.03, 0.035, 0.75 * p.nose_width]), [g.eye_y + 0.04, ny - 0.09, ny - 0.02],
                  np.array([0.05, 0.12, 0.15])), 0.012, _scaled(col.skin, 0.85))
    c = pose(0.0, ny - 0.012, 0.2)
    sk.ellipse(c[0], c[1], p.nose_tip * pose.squeeze(0.0), 0.85 * p.nose_tip, _scaled(col.skin, 1.04))
    for side in (-1, 1):
        c = pose(side * 0.42 * p.nose_width, ny + 0.012, 0.15)
        sk.ellipse(c[0], c[1], 0.28 * p.nose_width * pose.squeeze(side * 0.04), 0.011, _scaled(col.skin, 0.45))
    xs = np.linspace(-1, 1, 11)
    arch = np.sqrt(1 - xs ** 2)
    line = my - 0.035 * look.smile * xs ** 2
    gap = 0.06 * look.mouth_open * (1 - xs ** 2) ** 0.7
    top = line - p.lip_upper * (0.3 + 0.7 * arch) * (1 - 0.3 * np.exp(-(xs / 0.15) ** 2))

    def at(y) -> np.ndarray:
        return pose(xs * mw, y, 0.06)

    if look.mouth_open > 0.05:
        sk.poly(np.vstack([at(line), at(line + gap)[::-1]]), (70.0, 25.0, 30.0))
        sk.poly(np.vstack([at(line), at(line + np.minimum(gap, 0.018 * arch))[::-1]]), (232.0, 228.0, 212.0))
    sk.poly(np.vstack([at(top), at(line)[::-1]]), _scaled(col.lip, 0.9))
    sk.poly(np.vstack([at(line + gap), at(line + gap + p.lip_lower * arch)[::-1]]), col.lip)
    if look.mouth_open <= 0.05:
        sk.lines(at(line), 0.007, _scaled(col.lip, 0.55))


def _eye_curves(p: FaceIdentity, g: _Geo, side: int, w: float) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower lid curves of one eye, (11, 2) units relative to the eye centre."""
    xs = np.linspace(-1, 1, 11)
    tilt = side * xs * w * math.tan(math.radians(p.eye_tilt))  # outer corner up for a positive tilt
    upper = np.stack([xs * w, -g.eye_h[0] * (1 - xs ** 2) ** 0.8 - tilt], 1)
    lower = np.stack([xs * w, g.eye_h[1] * (1 - xs ** 2) ** 0.9 - tilt], 1)
    return upper, lower


def _draw_eyes(sk: _Sketch, p: FaceIdentity, look: Look, g: _Geo, col: _Colors, pose: _Pose) -> None:
    for side in (-1, 1):
        c = pose(side * g.eye_x, g.eye_y)
        w = p.eye_size * pose.squeeze(side * g.eye_x)
        upper, lower = _eye_curves(p, g, side, w)
        upper, lower = upper + c, lower + c
        sk.poly(np.vstack([upper, lower[::-1]]), (236.0, 232.0, 226.0))
        r = 0.45 * p.eye_size
        ic = c + (0.3 * look.gaze * w, -0.1 * g.eye_h[0])
        sk.ellipse(ic[0], ic[1], r * pose.squeeze(side * g.eye_x), r, col.iris)
        sk.ellipse(ic[0], ic[1], 0.45 * r, 0.45 * r, (15.0, 12.0, 12.0))
        sk.ellipse(ic[0] - 0.3 * r, ic[1] - 0.35 * r, 0.18 * r, 0.18 * r, (245.0, 245.0, 245.0))
        sk.poly(np.vstack([upper, (upper - (0, 0.06))[::-1]]), _scaled(col.skin, 0.94))
        sk.poly(np.vstack([lower, (lower + (0, 0.05))[::-1]]), col.skin)
        sk.lines(upper - (0, 0.025 * (1 - look.squint)), 0.006, _scaled(col.skin, 0.8))
        sk.lines(lower, 0.005, _scaled(col.skin, 0.82))
        sk.lines(upper, 0.012, (35.0, 25.0, 20.0))
        s = np.linspace(-1, 1, 7)  # brow from its inner (-1) to its outer (+1) end
        length = p.eye_size * p.brow_length
        y = (g.eye_y - g.eye_h[0] - p.brow_gap - 0.03 * look.brow_raise + 0.01 * look.squint
             - p.brow_arch * (1 - s ** 2) - s * length * math.tan(math.radians(p.brow_angle)))
        half = 0.5 * p.brow_thick * (1 - 0.45 * np.clip(s, 0, 1))
        x = side * (g.eye_x + s * length)
        sk.poly(np.vstack([pose(x, y - half), pose(x, y + half)[::-1]]), col.brow)


def _draw_hair(sk: _Sketch, p: FaceIdentity, look: Look, col: _Colors) -> None:
    """Hair over the skull: an outer arc, side strands and the hairline (fringe, parting)."""
    a, top = p.face_width, p.forehead
    vol = p.hair_volume * look.hair_volume
    side_w, inner = a + 0.7 * vol + 0.01, a - 0.035
    lowest = p.eye_height - p.brow_gap - 0.06  # a fringe stops just above the brows
    depth = 0.03 + p.hairline * (lowest + top - 0.03) + look.hair_shift
    xs = np.linspace(-inner, inner, 17)
    x_part = 0.6 * p.parting * a
    line = -top + depth * (1 - 0.35 * (xs / a) ** 2) + 0.06 * p.fringe_sweep * xs / a
    line -= 0.06 * p.hairline * np.exp(-((xs - x_part) / 0.05) ** 2)
    skin_top = -top * np.sqrt(np.clip(1 - (xs / a) ** 2, 0, 1))
    line = np.maximum(np.clip(line, -top + 0.01, lowest), skin_top + 0.01)  # no gap above the skin
    bottom = max(-0.08 + p.hair_length, line[0] + 0.05, line[-1] + 0.05)
    t = np.linspace(math.pi, 2 * math.pi, 27)
    wobble = 1 + 0.05 * p.hair_curl * np.sin(9 * t + 5 * p.parting)
    arc = np.stack([side_w * np.cos(t) * wobble, -(top + vol) * np.abs(np.sin(t)) * wobble], 1)
    arc[:, 1] = np.minimum(arc[:, 1], bottom)
    sk.poly(np.vstack([arc, [(side_w, bottom), (inner, bottom)], np.stack([xs, line], 1)[::-1],
                       [(-inner, bottom), (-side_w, bottom)]]), col.hair)
    if p.hairline > 0.3:
        y_part = float(np.interp(x_part, xs, line))
        sk.lines([(x_part, y_part), (0.6 * x_part, -(top + vol) * 0.9)], 0.01, _mix(col.hair, col.skin, 0.35))


def _draw_hat(sk: _Sketch, p: FaceIdentity, look: Look) -> None:
    w = p.face_width + 0.7 * p.hair_volume * look.hair_volume + 0.05
    top = -(p.forehead + p.hair_volume * look.hair_volume + 0.1)
    bottom = -p.forehead + 0.08 + look.hat_depth * (p.eye_height - p.brow_gap - 0.09 + p.forehead - 0.08)
    sk.poly(_arc(0, bottom, w, bottom - top, math.pi, 2 * math.pi, 21), look.hat_color)
    if look.hat == 1:  # beanie: a folded band
        sk.poly([(-w - 0.01, bottom - 0.08), (w + 0.01, bottom - 0.08), (w + 0.01, bottom + 0.02),
                 (-w - 0.01, bottom + 0.02)], _scaled(look.hat_color, 0.8))
    else:  # cap: a brim seen from the front and a button
        sk.ellipse(0, bottom + 0.01, w + 0.1, 0.05, _scaled(look.hat_color, 0.7))
        sk.ellipse(0, top + 0.01, 0.025, 0.02, _scaled(look.hat_color, 0.6))


def _draw_glasses(sk: _Sketch, p: FaceIdentity, look: Look, g: _Geo, pose: _Pose) -> None:
    frames = []
    for side in (-1, 1):
        c = pose(side * g.eye_x, g.eye_y)
        sq = pose.squeeze(side * g.eye_x)
        gw = min(1.7 * p.eye_size * look.glasses_size, g.eye_x - 0.025) * sq
        gh = 1.25 * p.eye_size * look.glasses_size
        frame = _arc(c[0], c[1] - 0.005, gw, gh, 0, 2 * math.pi, 28, look.glasses_round)
        if look.glasses == 2:
            sk.poly(frame, look.lens_color)
        frames.append(frame)
    width = 0.014
    left, right = frames
    sk.lines([left[np.argmax(left[:, 0])], right[np.argmin(right[:, 0])]], width, look.glasses_color)
    for frame, side in ((left, -1), (right, 1)):
        outer = frame[np.argmax(side * frame[:, 0])]
        sk.lines([outer, (side * (p.face_width + 0.005), g.eye_y)], width, look.glasses_color)
        sk.lines(frame, width, look.glasses_color, closed=True)


def _draw_hand(sk: _Sketch, p: FaceIdentity, look: Look, col: _Colors) -> None:
    """A palm and four fingers pointing up at one side of the lower face."""
    hx, hy, angle = look.hand_pos
    side, t = look.hand_side, math.radians(angle)
    c = np.array([side * hx * p.face_width, hy * p.chin])
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    sk.ellipse(c[0], c[1], 0.12, 0.15, _scaled(col.skin, 0.95), angle)
    for i, length in enumerate((0.13, 0.17, 0.18, 0.16)):
        base = c + rot @ ((i - 1.5) * 0.055, -0.1)
        tip = base + rot @ (-side * 0.03, -length)
        sk.lines([base, tip], 0.05, _scaled(col.skin, 0.95 if i % 2 else 0.88))


def _light(sk: _Sketch, p: FaceIdentity, look: Look) -> np.ndarray | None:
    """Directional light on the head: a ramp across a head-shaped ellipsoid, darker towards its rim.
    Returns the colour gain at every 4th canvas pixel (see `Person.light`), or None for even light."""
    s = look.light_strength
    if s <= 0:
        return None
    h, w = sk.rgba.shape[:2]
    gy, gx = np.mgrid[0:h:4, 0:w:4].astype(np.float32)
    u = (gx - sk.origin[0]) / (sk.scale * p.face_width * 1.35)
    v = ((gy - sk.origin[1]) / sk.scale - (p.chin - p.forehead) / 2) / (0.65 * (p.forehead + p.chin))
    rim = 1 - np.sqrt(1 - np.minimum(u * u + v * v, 1))
    toward = math.cos(look.light_angle) * u + math.sin(look.light_angle) * v
    return np.clip(1 + s * (1.1 * toward - 0.35 * rim), 0.2, 1.5).astype(np.float32)


def _pixels(rgba: np.ndarray, pts: np.ndarray) -> np.ndarray:
    h, w = rgba.shape[:2]
    xy = np.clip(np.round(pts).astype(np.int64), 0, (w - 1, h - 1))
    return rgba[xy[:, 1], xy[:, 0], :3].copy()


def draw_person(p: FaceIdentity, look: Look, scale: float) -> Person:
    """Draw the person upright at `scale` canvas px per face unit; see the module docstring."""
    sk, col, pose, g = _Sketch(scale), _colors(p), _Pose(p, look), _geometry(p, look)
    _draw_body(sk, p, look, col)
    _draw_skin(sk, p, g, col, pose)
    _draw_nose_mouth(sk, p, look, g, col, pose)
    _draw_eyes(sk, p, look, g, col, pose)
    _draw_hair(sk, p, look, col)
    landmarks = sk.px(_landmarks(g, look, pose))
    before = _pixels(sk.rgba, landmarks)
    if look.hat:
        _draw_hat(sk, p, look)
    if look.glasses:
        _draw_glasses(sk, p, look, g, pose)
    if look.hand:
        _draw_hand(sk, p, look, col)
    hidden = np.any(_pixels(sk.rgba, landmarks) != before, axis=1)
    n = int(_FADE * scale)  # the shoulders fade out instead of ending at the canvas's edge
    sk.rgba[-n:] = (sk.rgba[-n:] * np.linspace(1, 0, n, dtype=np.float32)[:, None, None]).astype(np.uint8)
    return Person(sk.rgba, landmarks, hidden, sk.px(face_outline(p)), _light(sk, p, look))
