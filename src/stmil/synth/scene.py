"""Procedural surveillance-like footage for the semi-synthetic benchmark, drawn with numpy.

A scene is a static textured background (buildings above a horizon, perspective pavement and
grass below it) with pedestrians walking across it, slow lighting drift and sensor noise. Every
random choice comes from the generator passed in, so a scene is reproducible from its seed.
Frames are ``(H, W, 3)`` uint8 RGB.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Color = tuple[int, int, int]
SKIN = ((224, 172, 105), (198, 134, 66), (141, 85, 36), (241, 194, 125), (255, 219, 172))


def _lowfreq(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth random field ``(h, w)`` in about [-1, 1], from a coarse grid upsampled bilinearly."""
    gy, gx = max(2, cells * h // max(h, w)), max(2, cells * w // max(h, w))
    grid = rng.uniform(-1.0, 1.0, (gy + 1, gx + 1))
    ys = np.linspace(0, gy, h)[:, None]
    xs = np.linspace(0, gx, w)[None, :]
    y0, x0 = np.minimum(ys.astype(int), gy - 1), np.minimum(xs.astype(int), gx - 1)
    fy, fx = ys - y0, xs - x0
    top = grid[y0, x0] * (1 - fx) + grid[y0, x0 + 1] * fx
    bot = grid[y0 + 1, x0] * (1 - fx) + grid[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bot * fy


def _buildings(rng: np.random.Generator, img: np.ndarray, horizon: int) -> None:
    """Facades with window grids between the top of the frame and the horizon."""
    h, w = img.shape[:2]
    img[:horizon] = rng.uniform(150, 210, 3) * np.array([0.9, 0.95, 1.05])  # sky
    x = -int(rng.uniform(0, 0.1) * w)
    while x < w:
        bw = int(rng.uniform(0.12, 0.35) * w) + 4
        top = int(rng.uniform(0.0, 0.6) * horizon)
        base = rng.uniform(70, 190) * rng.uniform(0.8, 1.1, 3)
        x0, x1 = max(x, 0), min(x + bw, w)
        img[top:horizon, x0:x1] = base
        win = max(2, int(rng.uniform(0.03, 0.06) * h))
        step_x, step_y = win * 2 + 1, int(win * 2.2) + 1
        shade = base * rng.uniform(0.35, 0.6)
        for wy in range(top + win, horizon - win, step_y):
            for wx in range(x + win, x + bw - win, step_x):
                if 0 <= wx < w:
                    img[wy:wy + win, wx:min(wx + win, w)] = shade
        x += bw


def _ground(rng: np.random.Generator, img: np.ndarray, horizon: int) -> None:
    """Perspective pavement tiles converging at a vanishing point, with grass on one side."""
    h, w = img.shape[:2]
    vx, vy = rng.uniform(0.2, 0.8) * w, horizon - rng.uniform(0.05, 0.3) * h
    ys = np.arange(horizon, h, dtype=np.float64)[:, None]
    xs = np.arange(w, dtype=np.float64)[None, :]
    u = (xs - vx) / (ys - vy)  # constant along lines through the vanishing point
    depth = h / (ys - vy)  # constant along horizontal lines, denser far away
    tiles_u, tiles_d = rng.uniform(3, 7), rng.uniform(2.5, 5)
    line = (np.abs((u * tiles_u + 0.5) % 1 - 0.5) < 0.04 * tiles_u / 4) | (
        np.abs((depth * tiles_d + 0.5) % 1 - 0.5) < 0.05)
    pave = rng.uniform(100, 170) * rng.uniform(0.92, 1.05, 3)
    ground = np.broadcast_to(pave, (h - horizon, w, 3)).copy()
    ground[line] *= rng.uniform(0.6, 0.8)
    edge = rng.uniform(-1.2, 1.2)
    grass = (u < edge - 0.6) if rng.random() < 0.5 else (u > edge + 0.6)
    green = np.array([rng.uniform(50, 90), rng.uniform(110, 150), rng.uniform(40, 70)])
    ground[grass] = green * (1 + 0.25 * rng.uniform(-1, 1, (int(grass.sum()), 1)))
    img[horizon:] = ground


def render_background(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, int]:
    """A random static scene: ``(H, W, 3)`` uint8 and the horizon row."""
    horizon = int(rng.uniform(0.22, 0.42) * height)
    img = np.zeros((height, width, 3), np.float64)
    _buildings(rng, img, horizon)
    _ground(rng, img, horizon)
    img *= 1 + 0.12 * _lowfreq(rng, height, width, 8)[..., None]  # stains and shading
    img += rng.normal(0, 5, img.shape)  # fixed texture grain
    return np.clip(img, 0, 255).astype(np.uint8), horizon


def _segment_mask(ys: np.ndarray, xs: np.ndarray, p0: Sequence[float], p1: Sequence[float],
                  radius: float) -> np.ndarray:
    """Pixels within ``radius`` of the segment p0-p1 (points as (x, y)); grids broadcast."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    den = dx * dx + dy * dy or 1e-9
    t = np.clip(((xs - p0[0]) * dx + (ys - p0[1]) * dy) / den, 0.0, 1.0)
    return (xs - p0[0] - t * dx) ** 2 + (ys - p0[1] - t * dy) ** 2 <= radius * radius


def figure_box(x: float, foot: float, h: float) -> tuple[float, float, float, float]:
    """The pixel box (x1, y1, x2, y2) that :func:`draw_figure` may paint."""
    return x - 0.5 * h, foot - 1.0 * h, x + 0.5 * h, foot + 0.05 * h


def draw_figure(img: np.ndarray, x: float, foot: float, h: float, legs: tuple[float, float],
                arms: tuple[float, float], colors: tuple[Color, Color, Color],
                lean: float = 0.0) -> None:
    """Paint an articulated person in place: legs, torso, arms and head.

    ``x, foot``: the point between the feet; ``h``: body height in pixels. ``legs`` and ``arms``
    are angles in radians from straight down (positive swings toward +x); ``lean`` shifts the
    shoulders along x by ``lean * h``. ``colors``: (shirt, trousers, skin).
    """
    H, W = img.shape[:2]
    bx1, by1, bx2, by2 = figure_box(x, foot, h)
    x0, y0 = max(int(bx1), 0), max(int(by1), 0)
    x1, y1 = min(int(math.ceil(bx2)), W), min(int(math.ceil(by2)), H)
    if x1 <= x0 or y1 <= y0:
        return
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    view = img[y0:y1, x0:x1]
    shirt, trousers, skin = colors
    hip = (x + 0.3 * lean * h, foot - 0.47 * h)
    neck = (x + lean * h, foot - 0.8 * h)
    limb_r, leg_len, arm_len = max(0.05 * h, 0.8), 0.47 * h, 0.33 * h
    for a in legs:
        end = (hip[0] + leg_len * math.sin(a), hip[1] + leg_len * math.cos(a))
        view[_segment_mask(ys, xs, hip, end, limb_r)] = trousers
    view[_segment_mask(ys, xs, hip, neck, max(0.11 * h, 1.2))] = shirt
    for a in arms:
        end = (neck[0] + arm_len * math.sin(a), neck[1] + arm_len * math.cos(a))
        view[_segment_mask(ys, xs, neck, end, limb_r * 0.85)] = shirt
        view[(xs - end[0]) ** 2 + (ys - end[1]) ** 2 <= (limb_r * 1.1) ** 2] = skin
    head = (neck[0], neck[1] - 0.1 * h)
    view[(xs - head[0]) ** 2 + (ys - head[1]) ** 2 <= (0.085 * h) ** 2] = skin


def random_colors(rng: np.random.Generator, vivid: bool = False) -> tuple[Color, Color, Color]:
    """(shirt, trousers, skin); ``vivid`` picks saturated, high-contrast clothes."""
    if vivid:
        shirt = tuple(int(c) for c in rng.permutation([255, int(rng.integers(0, 90)), 30]))
        trousers = tuple(int(c) for c in rng.permutation([240, 240, int(rng.integers(0, 60))]))
    else:
        shirt = tuple(int(c) for c in rng.integers(20, 230, 3))
        trousers = tuple(int(c) for c in rng.integers(15, 120, 3))
    return shirt, trousers, SKIN[int(rng.integers(len(SKIN)))]  # type: ignore[return-value]


class Walker:
    """A pedestrian crossing the ground plane at about 1-2 px/frame (at 320x240)."""

    def __init__(self, rng: np.random.Generator, width: int, height: int, horizon: int,
                 anywhere: bool = True):
        self.rng, self.w, self.h, self.horizon = rng, width, height, horizon
        self._spawn(anywhere)

    def _spawn(self, anywhere: bool) -> None:
        r, w, h = self.rng, self.w, self.h
        self.foot = r.uniform(self.horizon + 0.12 * h, h + 0.02 * h)
        self.dir = 1.0 if r.random() < 0.5 else -1.0
        self.size = h * (0.1 + 0.17 * (self.foot - self.horizon) / (h - self.horizon))
        margin = 0.5 * self.size
        self.x = r.uniform(0, w) if anywhere else (-margin if self.dir > 0 else w + margin)
        self.speed = r.uniform(0.9, 1.9) * (w / 320) * self.size / (0.2 * h)
        self.drift = r.uniform(-0.15, 0.15) * self.speed
        self.phase = r.uniform(0, 2 * math.pi)
        self.colors = random_colors(r)

    def step_and_draw(self, img: np.ndarray) -> None:
        """Paint the walker, then advance it one frame (re-entering when it leaves)."""
        swing = 0.45 * math.sin(self.phase)
        d = self.dir
        draw_figure(img, self.x, self.foot, self.size, (d * swing, -d * swing),
                    (-d * 0.6 * swing, d * 0.6 * swing), self.colors)
        self.x += d * self.speed
        self.foot += self.drift
        self.phase += 2 * math.pi * self.speed / (0.9 * self.size)
        if not (-self.size < self.x < self.w + self.size) or not (
                self.horizon < self.foot < self.h * 1.05):
            self._spawn(anywhere=False)


class ProceduralScene:
    """Endless procedural footage: ``next_frame()`` yields ``(H, W, 3)`` uint8 frames."""

    def __init__(self, rng: np.random.Generator, width: int, height: int):
        self.rng, self.t = rng, 0
        self.background, horizon = render_background(rng, width, height)
        n = int(rng.integers(4, 9))
        walkers = [Walker(rng, width, height, horizon) for _ in range(n)]
        self.walkers = sorted(walkers, key=lambda p: p.foot)  # far ones first
        self.light_amp, self.light_period = rng.uniform(0.03, 0.08), rng.uniform(80, 300)
        self.light_phase = rng.uniform(0, 2 * math.pi)
        amp = int(rng.integers(2, 5))
        self.noise_amp = amp
        self.noise_bank = rng.integers(0, 2 * amp + 1, (12, height, width, 3), dtype=np.uint8)

    def next_frame(self) -> np.ndarray:
        """The next clean frame: the walkers drawn on the background, then advanced."""
        frame = self.background.copy()
        for p in sorted(self.walkers, key=lambda p: p.foot):
            p.step_and_draw(frame)
        return frame

    def finish(self, frame: np.ndarray) -> np.ndarray:
        """Apply this frame's lighting drift and sensor noise (after events are drawn).

        The lookup table leaves ``2 * amp`` of headroom so uint8 noise can be added unclipped.
        """
        gain = 1 + self.light_amp * math.sin(2 * math.pi * self.t / self.light_period
                                             + self.light_phase)
        top = 255 - 2 * self.noise_amp
        lut = np.clip(np.arange(256) * (gain * top / 255), 0, top).astype(np.uint8)
        out = np.take(lut, frame)
        out += self.noise_bank[int(self.rng.integers(len(self.noise_bank)))]
        self.t += 1
        return out

    def describe(self) -> dict:
        """Where this footage comes from, for ``synth.json``."""
        return {"source": "procedural"}
