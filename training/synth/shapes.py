"""Drawing primitives for synthetic scenes: the three object classes and the distractor shapes.

Every shape is drawn into its own `Canvas`, in "units" where the shape's longer side is about 1.0,
at `scale` canvas pixels per unit (the caller supersamples: scale = longer side in output pixels
times the supersampling factor). A canvas holds a colour layer drawn on black and a coverage layer
(255 where the shape is solid), so that after an area downsample the pair is premultiplied colour
and fractional alpha, ready for exact compositing.

Shapes are drawn facing right; the scene generator mirrors them at random.
Colours are RGB tuples of floats in 0..255.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

_SHIFT = 4  # OpenCV fixed-point fractional bits for sub-pixel drawing
_ONE = 1 << _SHIFT

Color = tuple[float, float, float]


class Canvas:
    """A drawing surface for one shape covering units [x_min, x_max] x [y_min, y_max]."""

    def __init__(self, x_min: float, y_min: float, x_max: float, y_max: float, scale: float):
        self.scale, self.x_min, self.y_min = scale, x_min, y_min
        self.pad = 2.0 + 0.04 * scale  # room for round caps and strokes just outside the unit box
        w = math.ceil((x_max - x_min) * scale + 2 * self.pad)
        h = math.ceil((y_max - y_min) * scale + 2 * self.pad)
        self.color = np.zeros((h, w, 3), np.uint8)  # HxWx3 RGB, black where empty
        self.alpha = np.zeros((h, w), np.uint8)  # HxW coverage, 255 where solid

    def _pts(self, pts) -> np.ndarray:
        """Unit coordinates (N, 2) -> fixed-point pixel coordinates (N, 2) int32."""
        p = (np.asarray(pts, np.float64) - (self.x_min, self.y_min)) * self.scale + self.pad
        return np.round(p * _ONE).astype(np.int32)

    def _px(self, length: float) -> int:
        return max(1, int(round(length * self.scale)))

    def poly(self, pts, color: Color, solid: bool = True) -> None:
        p = [self._pts(pts)]
        cv2.fillPoly(self.color, p, color, cv2.LINE_8, _SHIFT)
        if solid:
            cv2.fillPoly(self.alpha, p, 255, cv2.LINE_8, _SHIFT)

    def circle(self, cx, cy, r, color: Color, width: float = 0.0, solid: bool = True) -> None:
        """Filled disc (width 0) or ring of the given stroke width, in units."""
        (c,) = self._pts([(cx, cy)])
        rad = max(1, int(round(r * self.scale * _ONE)))
        t = -1 if width <= 0 else self._px(width)
        cv2.circle(self.color, tuple(c.tolist()), rad, color, t, cv2.LINE_8, _SHIFT)
        if solid:
            cv2.circle(self.alpha, tuple(c.tolist()), rad, 255, t, cv2.LINE_8, _SHIFT)

    def ellipse(self, cx, cy, rx, ry, angle: float, color: Color, solid: bool = True) -> None:
        (c,) = self._pts([(cx, cy)])
        axes = (max(1, int(round(rx * self.scale * _ONE))), max(1, int(round(ry * self.scale * _ONE))))
        args = (tuple(c.tolist()), axes, angle, 0, 360)
        cv2.ellipse(self.color, *args, color, -1, cv2.LINE_8, _SHIFT)
        if solid:
            cv2.ellipse(self.alpha, *args, 255, -1, cv2.LINE_8, _SHIFT)

    def polyline(self, pts, width: float, color: Color, solid: bool = True) -> None:
        """Thick polyline with round joints and caps."""
        p = self._pts(pts)
        t = self._px(width)
        for a, b in zip(p[:-1], p[1:]):
            cv2.line(self.color, tuple(a.tolist()), tuple(b.tolist()), color, t, cv2.LINE_8, _SHIFT)
            if solid:
                cv2.line(self.alpha, tuple(a.tolist()), tuple(b.tolist()), 255, t, cv2.LINE_8, _SHIFT)


# ----------------------------------------------------------------------------------------- colours
_SKIN = np.array([(255, 224, 196), (241, 194, 150), (224, 172, 105), (198, 134, 66),
                  (141, 85, 36), (92, 58, 33)], np.float64)


def random_color(rng: np.random.Generator, lo: float = 0, hi: float = 255) -> Color:
    return tuple(rng.uniform(lo, hi, 3).tolist())


def _shade(color: Color, factor: float) -> Color:
    return tuple(min(255.0, c * factor) for c in color)


def _skin(rng: np.random.Generator) -> Color:
    base = _SKIN[rng.integers(len(_SKIN))] * rng.uniform(0.9, 1.08)
    return tuple(np.clip(base, 0, 255).tolist())


def _paint(rng: np.random.Generator) -> Color:
    """Vehicle paint: often grey-scale (white, silver, black), otherwise a saturated colour."""
    if rng.random() < 0.4:
        return (float(rng.uniform(20, 240)),) * 3
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(120, 256), rng.integers(90, 256)]]])
    return tuple(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(float).tolist())


# ---------------------------------------------------------------------------------------- pedestrian
def draw_pedestrian(rng: np.random.Generator, scale: float) -> Canvas:
    """Walking person, 1 unit tall, about 0.3 to 0.5 units wide, facing right."""
    a = rng.uniform(0.33, 0.52)
    cx, head_r = a / 2, rng.uniform(0.055, 0.07)
    leg_t, arm_t = rng.uniform(0.065, 0.085), rng.uniform(0.045, 0.06)
    y_sh, y_hip = 2 * head_r + 0.035, rng.uniform(0.5, 0.55)
    sw, hw = rng.uniform(0.08, 0.11), rng.uniform(0.055, 0.08)
    stride = rng.uniform(0.6, 1.0) * (a / 2 - leg_t / 2 - 0.045)
    swing = rng.uniform(0.5, 1.0) * (a / 2 - arm_t)
    skin, shirt, pants = _skin(rng), random_color(rng, 20, 240), random_color(rng, 10, 200)
    shoes, hair = random_color(rng, 0, 90), random_color(rng, 0, 120)
    long_sleeves = rng.random() < 0.5
    c = Canvas(0, 0, a, 1.0, scale)
    for side, shade in ((-1, 0.75), (1, 1.0)):  # back limbs first, darker
        _pedestrian_leg(c, cx + side * hw * 0.4, y_hip, side * stride, leg_t, _shade(pants, shade), shoes)
        if side < 0:
            _pedestrian_arm(c, cx, y_sh, y_hip, -swing, arm_t, _shade(shirt, 0.75),
                            _shade(skin, 0.85), long_sleeves)
    dress = rng.random() < 0.2
    y_low = y_hip + (rng.uniform(0.12, 0.2) if dress else 0.02)
    hem = hw + (0.06 if dress else 0.0)
    c.poly([(cx - sw, y_sh), (cx + sw, y_sh), (cx + hem, y_low), (cx - hem, y_low)], shirt)
    c.circle(cx - sw + arm_t / 2, y_sh + arm_t / 2, arm_t / 2, shirt)
    c.circle(cx + sw - arm_t / 2, y_sh + arm_t / 2, arm_t / 2, shirt)
    _pedestrian_arm(c, cx, y_sh, y_hip, swing, arm_t, shirt, skin, long_sleeves)
    c.polyline([(cx, y_sh - 0.04), (cx, y_sh)], head_r * 0.8, skin)  # neck
    c.circle(cx, head_r + 0.005, head_r, skin)
    c.ellipse(cx - head_r * 0.15, head_r * 0.8, head_r * 1.02, head_r * 0.7, 0, hair, solid=False)
    c.circle(cx - head_r * 0.15, head_r * 0.75, head_r * 0.85, hair)
    return c


def _pedestrian_leg(c: Canvas, x_hip, y_hip, dx, t, color: Color, shoe: Color) -> None:
    x_foot, y_ankle = x_hip + dx, 0.995 - t / 2 - 0.02
    knee = ((x_hip + x_foot) / 2 + 0.025, (y_hip + y_ankle) / 2)
    c.polyline([(x_hip, y_hip), knee, (x_foot, y_ankle)], t, color)
    c.ellipse(x_foot + 0.02, 0.995 - 0.022, t * 0.5 + 0.02, 0.022, 0, shoe)


def _pedestrian_arm(c: Canvas, cx, y_sh, y_hip, dx, t, sleeve: Color, skin: Color, long_: bool) -> None:
    shoulder = (cx + 0.3 * dx, y_sh + t / 2)
    hand = (cx + dx, y_hip - 0.01)
    elbow = ((shoulder[0] + hand[0]) / 2 - 0.15 * abs(dx), (shoulder[1] + hand[1]) / 2)
    c.polyline([shoulder, elbow], t, sleeve)
    c.polyline([elbow, hand], t * 0.9, sleeve if long_ else skin)
    c.circle(hand[0], hand[1] + t * 0.2, t * 0.55, skin)


# ----------------------------------------------------------------------------------------------- car
def draw_car(rng: np.random.Generator, scale: float) -> Canvas:
    """Side view of a car, 1 unit long, 1/1.8 to 1/2.8 units tall, facing right."""
    h = 1.0 / rng.uniform(1.8, 2.8)
    r = rng.uniform(0.095, 0.12)
    y_w = h - r
    x_r, x_f = rng.uniform(0.16, 0.22), 1.0 - rng.uniform(0.15, 0.21)
    y_bot = y_w + 0.35 * r
    lb = rng.uniform(0.32, 0.48) * y_bot  # height of the lower body
    y_belt = y_bot - lb
    paint = _paint(rng)
    c = Canvas(0, 0, 1.0, h, scale)
    nose = rng.uniform(0.2, 0.5)
    c.poly([(0.03, y_belt), (0.0, y_belt + 0.3 * lb), (0.0, y_bot - 0.15 * lb), (0.04, y_bot),
            (0.95, y_bot), (1.0, y_bot - 0.25 * lb), (1.0, y_belt + nose * lb),
            (0.9, y_belt + 0.02 * lb)], paint)
    x_c0, x_c1 = rng.uniform(0.16, 0.28), rng.uniform(0.66, 0.8)
    x_r0, x_r1 = x_c0 + rng.uniform(0.04, 0.12), x_c1 - rng.uniform(0.1, 0.2)
    c.poly([(x_c0, y_belt + 0.01), (x_r0, 0.0), (x_r1, 0.0), (x_c1, y_belt + 0.01)], paint)
    _car_windows(c, rng, x_c0, x_r0, x_r1, x_c1, y_belt)
    dark = _shade(paint, 0.55)
    x_door = (x_c0 + x_c1) / 2
    c.polyline([(x_door, y_belt + 0.02), (x_door, y_bot - 0.03)], 0.008, dark, solid=False)
    c.poly([(0.975, y_belt + 0.4 * lb), (1.0, y_belt + 0.4 * lb), (1.0, y_belt + 0.62 * lb),
            (0.975, y_belt + 0.62 * lb)], (255.0, 240.0, rng.uniform(120, 230)), solid=False)
    c.poly([(0.0, y_belt + 0.35 * lb), (0.025, y_belt + 0.35 * lb), (0.025, y_belt + 0.55 * lb),
            (0.0, y_belt + 0.55 * lb)], (220.0, 20.0, 20.0), solid=False)
    rim = (float(rng.uniform(150, 235)),) * 3
    for x in (x_r, x_f):
        c.ellipse(x, y_w, r * 1.15, r * 1.12, 0, (25.0, 25.0, 25.0), solid=False)  # wheel arch
        c.circle(x, y_w, r, (20.0, 20.0, 22.0))
        c.circle(x, y_w, r * 0.55, rim)
        c.circle(x, y_w, r * 0.16, (60.0, 60.0, 60.0))
    return c


def _car_windows(c: Canvas, rng, x_c0, x_r0, x_r1, x_c1, y_belt) -> None:
    m = 0.025
    glass = (float(rng.uniform(40, 110)), float(rng.uniform(60, 130)), float(rng.uniform(90, 170)))
    y_top, y_low = m, y_belt - m * 0.6
    x_mid = (x_r0 + x_r1) / 2 + 0.02
    c.poly([(x_c0 + 2 * m, y_low), (x_r0 + m, y_top), (x_mid - m / 2, y_top), (x_mid - m / 2, y_low)],
           glass, solid=False)
    c.poly([(x_mid + m / 2, y_low), (x_mid + m / 2, y_top), (x_r1 - m * 0.5, y_top), (x_c1 - 2 * m, y_low)],
           _shade(glass, 1.15), solid=False)


# ---------------------------------------------------------------------------------------- motorcycle
_SHOULDER, _NECK, _HELMET_R = 0.14, 0.03, 0.05  # rider geometry above the seat, in units
_RIDER_HEIGHT = _SHOULDER + _NECK + 2 * _HELMET_R


def draw_motorcycle(rng: np.random.Generator, scale: float) -> Canvas:
    """Side view of a motorcycle (optionally with a seated rider blob), 1 unit long, facing right."""
    r = rng.uniform(0.17, 0.21)
    x_r, x_f = r + 0.01, 1.0 - r - 0.01
    y_seat, y_bar = -rng.uniform(1.3, 1.55) * r, -rng.uniform(2.0, 2.4) * r  # wheel centres at y=0
    rider = rng.random() < 0.4
    y_top = min(y_bar - 0.03, y_seat - _RIDER_HEIGHT if rider else 0.0)
    paint, frame = _paint(rng), random_color(rng, 20, 120)
    metal = (float(rng.uniform(160, 230)),) * 3
    c = Canvas(0, y_top, 1.0, r, scale)
    x_fork = x_f - 0.3 * (0.0 - y_bar)
    for x in (x_r, x_f):
        _moto_wheel(c, rng, x, r, metal)
    c.polyline([(x_f, 0.0), (x_fork, y_bar + 0.03)], 0.035, metal)  # front fork
    c.polyline([(x_fork, y_bar + 0.03), (x_fork - 0.1, y_bar - 0.01)], 0.025, (30.0, 30.0, 30.0))
    c.circle(x_fork + 0.03, y_bar + 0.09, 0.035, (255.0, 245.0, 190.0))  # headlight
    c.polyline([(x_r, 0.0), (0.32, y_seat + 0.02), (0.5, 0.2 * r), (0.66, y_seat)], 0.035, frame)
    c.poly([(0.38, -0.55 * r), (0.6, -0.6 * r), (0.58, 0.3 * r), (0.42, 0.3 * r)], (55.0, 55.0, 60.0))
    c.polyline([(0.45, 0.25 * r), (x_r + 0.05, -0.1 * r)], 0.035, metal)  # exhaust
    c.ellipse(x_r + 0.02, -r * 1.02, r * 0.8, 0.025, -8, paint)  # rear fender
    c.ellipse(0.6, y_seat - 0.02, 0.12, 0.06, -10, paint)  # tank
    c.ellipse(0.4, y_seat + 0.005, 0.11, 0.03, 0, (25.0, 20.0, 20.0))  # seat
    if rider:
        _moto_rider(c, rng, y_seat, (x_fork - 0.09, y_bar))
    return c


def _moto_wheel(c: Canvas, rng, x: float, r: float, metal: Color) -> None:
    """Tyre ring, rim, spokes and hub; the gaps between spokes stay transparent."""
    c.circle(x, 0.0, r * 0.86, (20.0, 20.0, 22.0), width=r * 0.28)
    c.circle(x, 0.0, r * 0.68, metal, width=r * 0.08)
    n = int(rng.integers(5, 9))
    phase = rng.uniform(0, math.pi)
    for k in range(n):
        t = phase + 2 * math.pi * k / n
        c.polyline([(x, 0.0), (x + 0.68 * r * math.cos(t), 0.68 * r * math.sin(t))], 0.015, metal)
    c.circle(x, 0.0, r * 0.18, (70.0, 70.0, 70.0))


def _moto_rider(c: Canvas, rng, y_seat: float, grip) -> None:
    """A seated rider blob: torso, thigh, arm and helmet (not a full standing figure)."""
    jacket, helmet = random_color(rng, 10, 200), random_color(rng, 20, 255)
    hip, shoulder = (0.4, y_seat - 0.03), (0.47, y_seat - _SHOULDER)
    c.polyline([hip, (0.56, y_seat - 0.01), (0.52, -0.05)], 0.07, _shade(jacket, 0.8))
    c.polyline([hip, shoulder], 0.1, jacket)
    c.polyline([shoulder, grip], 0.045, jacket)
    c.circle(shoulder[0] + 0.015, shoulder[1] - _NECK - _HELMET_R, _HELMET_R, helmet)


# --------------------------------------------------------------------------------------- distractors
def _star_points(rng, n: int, inner: float) -> np.ndarray:
    k = np.arange(2 * n)
    t = rng.uniform(0, 2 * math.pi) + k * math.pi / n
    rad = np.where(k % 2 == 0, 1.0, inner)
    return 0.5 + 0.5 * rad[:, None] * np.stack([np.cos(t), np.sin(t)], 1)


def _d_circle(c: Canvas, rng, col: Color) -> None:
    c.circle(0.5, 0.5, 0.5, col)


def _d_ring(c: Canvas, rng, col: Color) -> None:
    w = rng.uniform(0.08, 0.25)
    c.circle(0.5, 0.5, 0.5 - w / 2, col, width=w)


def _d_star(c: Canvas, rng, col: Color) -> None:
    c.poly(_star_points(rng, int(rng.integers(4, 8)), rng.uniform(0.3, 0.6)), col)


def _d_polygon(c: Canvas, rng, col: Color) -> None:
    n = int(rng.integers(3, 9))
    t = np.sort(rng.uniform(0, 2 * math.pi, n))
    rad = rng.uniform(0.5, 1.0, n)
    c.poly(0.5 + 0.5 * rad[:, None] * np.stack([np.cos(t), np.sin(t)], 1), col)


def _d_rectangle(c: Canvas, rng, col: Color) -> None:
    w, h = 0.5 * rng.uniform(0.2, 1.0), 0.5 * rng.uniform(0.2, 1.0)
    rect = ((0.5, 0.5), (2 * w / math.sqrt(2), 2 * h / math.sqrt(2)), rng.uniform(0, 180))
    c.poly(cv2.boxPoints(rect), col)


def _d_cross(c: Canvas, rng, col: Color) -> None:
    t = rng.uniform(0.12, 0.3)
    a = rng.uniform(0, math.pi)
    for ang in (a, a + math.pi / 2):
        d = (0.5 - t / 2) * np.array([math.cos(ang), math.sin(ang)])
        c.polyline([0.5 - d, 0.5 + d], t, col)


def _d_line(c: Canvas, rng, col: Color) -> None:
    t = rng.uniform(0.04, 0.15)
    c.polyline(rng.uniform(t / 2, 1 - t / 2, (int(rng.integers(2, 4)), 2)), t, col)


def _d_ellipse(c: Canvas, rng, col: Color) -> None:
    c.ellipse(0.5, 0.5, 0.5, 0.5 * rng.uniform(0.2, 0.8), rng.uniform(0, 180), col)


_DISTRACTORS = (_d_circle, _d_ring, _d_star, _d_polygon, _d_rectangle, _d_cross, _d_line, _d_ellipse,
                _d_polygon, _d_rectangle)


def draw_distractor(rng: np.random.Generator, scale: float) -> Canvas:
    """One single-part shape that is none of the classes, in a 1x1 unit box."""
    c = Canvas(0, 0, 1.0, 1.0, scale)
    draw = _DISTRACTORS[rng.integers(len(_DISTRACTORS))]
    draw(c, rng, random_color(rng))
    if rng.random() < 0.3:  # a second tone: an inner disc, colour only (clipped to the shape later)
        c.circle(0.5, 0.5, rng.uniform(0.1, 0.3), random_color(rng), solid=False)
    return c


DRAW_OBJECT = {1: draw_pedestrian, 2: draw_car, 3: draw_motorcycle}
"""category id -> drawing function (rng, scale) -> Canvas"""


# --------------------------------------------------------------------------------------- backgrounds
def _ramp(rng, h: int, w: int, period: float) -> np.ndarray:
    """HxW float32 coordinate along a random direction, in units of `period` px."""
    t = rng.uniform(0, math.pi)
    x = np.arange(w, dtype=np.float32)[None, :] * np.float32(math.cos(t) / period)
    y = np.arange(h, dtype=np.float32)[:, None] * np.float32(math.sin(t) / period)
    return x + y


def _two_tone(rng, t: np.ndarray) -> np.ndarray:
    """HxW weights in [0, 1] -> HxWx3 float32 mix of two random colours."""
    c0, c1 = (np.array(random_color(rng), np.float32) for _ in range(2))
    return c0 + t[..., None] * (c1 - c0)


def _bg_gradient(rng, h: int, w: int) -> np.ndarray:
    return _two_tone(rng, np.clip(_ramp(rng, h, w, max(h, w)), 0, 1))


def _bg_noise(rng, h: int, w: int) -> np.ndarray:
    """Smooth noise around a random colour: mostly brightness variation, a little hue."""
    cell = log_uniform(rng, 4, 160)
    gh, gw = max(2, round(h / cell)), max(2, round(w / cell))
    amp = rng.uniform(15, 70)
    small = rng.normal(0, amp, (gh, gw, 1)) + rng.normal(0, amp * rng.uniform(0.1, 0.6), (gh, gw, 3))
    small = (small + random_color(rng, 40, 215)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _bg_stripes(rng, h: int, w: int) -> np.ndarray:
    t = _ramp(rng, h, w, log_uniform(rng, 6, 80)) % 1.0
    return _two_tone(rng, (t < rng.uniform(0.2, 0.8)).astype(np.float32))


def _bg_checker(rng, h: int, w: int) -> np.ndarray:
    p = log_uniform(rng, 8, 80)
    cx = (np.arange(w) // p).astype(np.int32) % 2
    cy = (np.arange(h) // p).astype(np.int32) % 2
    return _two_tone(rng, (cy[:, None] ^ cx[None, :]).astype(np.float32))


def _bg_tiles(rng, h: int, w: int) -> np.ndarray:
    p = log_uniform(rng, 10, 90)
    base = np.array(random_color(rng), np.float32)
    small = base + rng.uniform(-40, 40, (math.ceil(h / p), math.ceil(w / p), 3)).astype(np.float32)
    tiles = cv2.resize(small, (round(small.shape[1] * p), round(small.shape[0] * p)),
                       interpolation=cv2.INTER_NEAREST)[:h, :w]
    grout = random_color(rng)
    for x in np.arange(0, w, p):
        cv2.line(tiles, (int(x), 0), (int(x), h), grout, 1)
    for y in np.arange(0, h, p):
        cv2.line(tiles, (0, int(y)), (w, int(y)), grout, 1)
    return tiles


_TEXTURES = (_bg_gradient, _bg_noise, _bg_stripes, _bg_checker, _bg_tiles)


def log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A sample whose log is uniform in [log lo, log max(lo, hi)]."""
    return float(math.exp(rng.uniform(math.log(lo), math.log(max(hi, lo)))))


def _clutter(rng, img: np.ndarray, n: int) -> None:
    """Random filled ellipses, polygons and lines painted straight onto the background."""
    h, w = img.shape[:2]
    side = min(h, w)
    for _ in range(n):
        col, kind = random_color(rng), rng.integers(3)
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if kind == 0:
            axes = (int(log_uniform(rng, 3, side / 3)), int(log_uniform(rng, 3, side / 3)))
            cv2.ellipse(img, c, axes, rng.uniform(0, 180), 0, 360, col, -1, cv2.LINE_AA)
        elif kind == 1:
            pts = np.array(c) + rng.normal(0, log_uniform(rng, 4, side / 4), (int(rng.integers(3, 7)), 2))
            cv2.fillPoly(img, [pts.astype(np.int32)], col, cv2.LINE_AA)
        else:
            end = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(img, c, end, col, int(rng.integers(1, 6)), cv2.LINE_AA)


def draw_background(rng: np.random.Generator, h: int, w: int, clutter: int) -> np.ndarray:
    """HxWx3 float32 (0..255) textured background: a base texture, 0-2 blended layers, clutter."""
    img = _TEXTURES[rng.integers(2)](rng, h, w)  # base: gradient or smooth noise
    for _ in range(int(rng.integers(0, 3))):
        layer = _TEXTURES[rng.integers(len(_TEXTURES))](rng, h, w)
        a = np.float32(rng.uniform(0.2, 0.7))
        img = img * (1 - a) + layer * a
    _clutter(rng, img, int(rng.integers(0, clutter + 1)))
    return np.clip(img, 0, 255, out=img)
