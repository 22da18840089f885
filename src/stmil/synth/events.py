"""Localized anomalous events drawn into frames, for the semi-synthetic benchmark.

Each event lives in a region ``(x, y, w, h)`` of the frame for ``n`` frames. ``draw(img, k)``
paints event frame ``k`` (0-based within the event) into an ``(H, W, 3)`` uint8 frame in place
and returns the pixel box ``(x1, y1, x2, y2)`` of what it painted (and, for moving things, where
they just were). :func:`fit_box` turns that into the recorded integer box. All randomness comes
from the generator given at construction, so an event is reproducible from its seed.
"""

from __future__ import annotations

import math

import numpy as np

from stmil.synth.scene import draw_figure, figure_box, random_colors

BoxF = tuple[float, float, float, float]
Region = tuple[int, int, int, int]  # x, y, w, h
ASPECT = {"run": (1.4, 2.0), "fight": (1.0, 1.5), "fire": (0.7, 1.2), "throw": (1.2, 1.7),
          "damage": (0.8, 1.4)}
KINDS = tuple(ASPECT)
GROUNDED = ("run", "fight", "throw")
AREA_RANGE = (0.06, 0.24)  # recorded boxes are kept inside this fraction of the frame's area


def pick_region(rng: np.random.Generator, kind: str, width: int, height: int) -> Region:
    """A random region for ``kind`` covering 8-16% of the frame, fully inside it.

    Events with people keep their feet in the lower half of the frame, where the ground is.
    """
    area = rng.uniform(0.08, 0.16) * width * height
    aspect = rng.uniform(*ASPECT[kind])
    w = min(math.sqrt(area * aspect), 0.9 * width)
    h = min(area / w, 0.9 * height)
    w, h = int(round(w)), int(round(h))
    y_min = max(0, height // 2 - h) if kind in GROUNDED else 0
    return int(rng.integers(0, width - w + 1)), int(rng.integers(y_min, height - h + 1)), w, h


def fit_box(box: BoxF, width: int, height: int,
            area: tuple[float, float] = AREA_RANGE) -> tuple[int, int, int, int]:
    """Scale ``box`` about its centre into ``area`` (fractions of the frame), then shift it inside.

    Returns integers with ``0 <= x1 < x2 <= width`` and ``0 <= y1 < y2 <= height``.
    """
    x1, y1, x2, y2 = box
    w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    target = min(max(w * h, area[0] * width * height), area[1] * width * height)
    f = math.sqrt(target / (w * h))
    w, h = w * f, h * f
    if w > width:
        w, h = width, target / width
    if h > height:
        w, h = target / height, height
    wi, hi = max(1, min(width, round(w))), max(1, min(height, round(h)))
    xi = min(max(round(cx - wi / 2), 0), width - wi)
    yi = min(max(round(cy - hi / 2), 0), height - hi)
    return xi, yi, xi + wi, yi + hi


def _union(boxes: list[BoxF]) -> BoxF:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes))


def _mask_box(mask: np.ndarray, x0: float, y0: float, scale: float = 1.0) -> BoxF | None:
    """The box of a boolean mask's true cells, in frame pixels; ``None`` when empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    return (x0 + cols[0] * scale, y0 + rows[0] * scale,
            x0 + (cols[-1] + 1) * scale, y0 + (rows[-1] + 1) * scale)


class Event:
    """Base class: a region, a length and a generator."""

    kind = ""

    def __init__(self, rng: np.random.Generator, region: Region, n: int):
        self.rng, self.region, self.n = rng, region, n

    def draw(self, img: np.ndarray, k: int) -> BoxF:
        raise NotImplementedError


class Fire(Event):
    """A flickering fire: a cellular flame field rising from the region's base, with glow."""

    kind = "fire"
    PALETTE = np.array([(0, 0, 0), (200, 30, 0), (255, 120, 0), (255, 220, 60), (255, 255, 210)],
                       np.float32)

    def __init__(self, rng: np.random.Generator, region: Region, n: int):
        super().__init__(rng, region, n)
        _, _, w, h = region
        self.cell = max(2, min(w, h) // 18)
        self.gh, self.gw = max(4, h // self.cell), max(4, w // self.cell)
        self.field = np.zeros((self.gh, self.gw), np.float32)
        self.decay = 1.0 / self.gh
        self.xs = np.linspace(-1, 1, self.gw)
        stops = np.linspace(0, 1, len(self.PALETTE))
        levels = np.linspace(0, 1, 256)
        self.lut = np.stack([np.interp(levels, stops, self.PALETTE[:, c]) for c in range(3)], 1)

    def _step(self, ramp: float) -> None:
        r, f = self.rng, self.field
        centre, half = r.uniform(-0.25, 0.25), r.uniform(0.45, 0.85)
        base = np.clip(1.3 - np.abs(self.xs - centre) / half, 0, 1)
        f[-1] = base * r.uniform(0.55, 1.0, self.gw) * ramp
        shift = r.integers(-1, 2, (self.gh - 1, self.gw)) + np.arange(self.gw)
        src = np.take_along_axis(f[1:], np.clip(shift, 0, self.gw - 1), axis=1)
        f[:-1] = np.clip(src - r.uniform(0, 2 * self.decay, src.shape), 0, 1)

    def draw(self, img: np.ndarray, k: int) -> BoxF:
        ramp = min(1.0, (k + 2) / 4)
        self._step(ramp)
        self._step(ramp)
        x, y, w, h = self.region
        c = self.cell
        up = np.repeat(np.repeat(self.field, c, 0), c, 1)[:h, :w]
        uh, uw = up.shape
        y0, x0 = y + h - uh, x + (w - uw) // 2
        view = img[y0:y0 + uh, x0:x0 + uw]
        alpha = np.clip((up - 0.08) * 4, 0, 1)[..., None]
        colour = self.lut[(up * 255).astype(np.uint8)]
        glow = 1 + 0.35 * float(up.mean()) * self.rng.uniform(0.6, 1.4)
        tint = view * np.array([glow, 0.5 + 0.5 * glow, 1.0], np.float32)
        view[:] = np.clip(tint * (1 - alpha) + colour * alpha, 0, 255).astype(np.uint8)
        return _mask_box(alpha[..., 0] > 0.3, x0, y0) or (x0, y0, x0 + uw, y0 + uh)


class Damage(Event):
    """Sudden local damage: a growing blotch of black, noise, colour bars and torn blocks."""

    kind = "damage"

    def __init__(self, rng: np.random.Generator, region: Region, n: int):
        super().__init__(rng, region, n)
        _, _, w, h = region
        self.b = max(3, min(w, h) // 8)
        ny, nx = -(-h // self.b), -(-w // self.b)
        gy, gx = np.mgrid[0:ny, 0:nx]
        blob = np.zeros((ny, nx), bool)
        for _ in range(int(rng.integers(3, 6))):
            cy, cx = rng.uniform(0.2, 0.8) * ny, rng.uniform(0.2, 0.8) * nx
            ry, rx = rng.uniform(0.25, 0.5) * ny, rng.uniform(0.25, 0.5) * nx
            blob |= ((gy - cy) / ry) ** 2 + ((gx - cx) / rx) ** 2 <= 1
        dist = np.hypot(gy - ny / 2, gx - nx / 2) / max(ny, nx)
        birth = np.where(blob, dist * 4 + rng.uniform(0, 1, blob.shape), np.inf)
        self.birth = birth - birth.min()  # something shows from the event's first frame

    def draw(self, img: np.ndarray, k: int) -> BoxF:
        r, b = self.rng, self.b
        x, y, w, h = self.region
        state = r.choice(5, size=self.birth.shape, p=[0.4, 0.25, 0.15, 0.1, 0.1])
        state[self.birth > k] = 4  # 4: untouched
        px = np.repeat(np.repeat(state, b, 0), b, 1)[:h, :w]
        view = img[y:y + h, x:x + w]
        out = view.copy()
        out[px == 0] = r.integers(0, 25)
        noise = r.integers(0, 256, view.shape, dtype=np.uint8)
        out[px == 1] = noise[px == 1]
        bars = np.repeat(r.integers(0, 256, (1, w // 4 + 1, 3), dtype=np.uint8), 4, 1)[:, :w]
        out[px == 2] = np.broadcast_to(bars, view.shape)[px == 2]
        torn = np.roll(view, int(r.integers(-w // 3, w // 3 + 1)), axis=1)
        out[px == 3] = torn[px == 3]
        view[:] = out
        return _mask_box(state < 4, x, y, b) or (x + w / 2 - 1, y + h / 2 - 1, x + w / 2, y + h / 2)


class Fight(Event):
    """Two figures struggling: fast jitter, flailing arms, swaying back and forth."""

    kind = "fight"

    def __init__(self, rng: np.random.Generator, region: Region, n: int):
        super().__init__(rng, region, n)
        self.colors = (random_colors(rng, vivid=True), random_colors(rng, vivid=True))
        self.sway_period, self.sway_phase = rng.uniform(6, 12), rng.uniform(0, 2 * math.pi)

    def draw(self, img: np.ndarray, k: int) -> BoxF:
        r = self.rng
        x, y, w, h = self.region
        size = 0.85 * h
        cx = x + w / 2 + 0.2 * w * math.sin(2 * math.pi * k / self.sway_period + self.sway_phase)
        boxes = []
        for side, colors in zip((-1, 1), self.colors):
            fx = cx + side * 0.2 * size + r.normal(0, 0.06 * size)
            foot = y + 0.97 * h + r.normal(0, 0.02 * size)
            toward = -side  # face the other fighter
            arms = tuple(toward * r.uniform(0.4, 2.8) for _ in range(2))
            legs = (toward * r.uniform(0, 0.7), -toward * r.uniform(0, 0.7))
            draw_figure(img, fx, foot, size, legs, arms, colors, lean=toward * r.uniform(0, 0.2))
            boxes.append(figure_box(fx, foot, size))
        return _union(boxes)


class Run(Event):
    """A figure running erratically: several times walking speed, sudden turns, big strides."""

    kind = "run"

    def __init__(self, rng: np.random.Generator, region: Region, n: int):
        super().__init__(rng, region, n)
        x, y, w, h = region
        self.size = 0.7 * h
        self.pos = [x + rng.uniform(0.3, 0.7) * w, y + rng.uniform(0.85, 1.0) * h]
        self.speed = rng.uniform(0.06, 0.09) * w
        self.heading, self.turn_at, self.phase = rng.uniform(0, 2 * math.pi), 0, 0.0
        self.colors = random_colors(rng, vivid=True)
        self.trail: list[BoxF] = []

    def draw(self, img: np.ndarray, k: int) -> BoxF:
        r, s = self.rng, self.size
        x, y, w, h = self.region
        if k >= self.turn_at:
            self.heading, self.turn_at = r.uniform(0, 2 * math.pi), k + int(r.integers(3, 8))
        vx, vy = math.cos(self.heading) * self.speed, 0.3 * math.sin(self.heading) * self.speed
        lo_x, hi_x, lo_y, hi_y = x + 0.3 * s, x + w - 0.3 * s, y + s, y + h
        nx, ny = self.pos[0] + vx, self.pos[1] + vy
        if not lo_x <= nx <= hi_x:
            self.heading = math.pi - self.heading
        if not lo_y <= ny <= hi_y:
            self.heading = -self.heading
        self.pos = [min(max(nx, lo_x), hi_x), min(max(ny, lo_y), hi_y)]
        self.phase += 0.9
        d = 1.0 if vx >= 0 else -1.0
        swing = 1.0 * math.sin(self.phase)
        hop = abs(math.sin(self.phase)) * 0.05 * s
        draw_figure(img, self.pos[0], self.pos[1] - hop, s, (d * swing, -d * swing),
                    (-d * 1.2 * swing, d * 1.2 * swing), self.colors, lean=0.12 * d)
        self.trail = (self.trail + [figure_box(self.pos[0], self.pos[1] - hop, s)])[-5:]
        return _union(self.trail)


class Throw(Event):
    """A figure throwing bright objects in fast arcs across the region; they burst on landing."""

    kind = "throw"

    def __init__(self, rng: np.random.Generator, region: Region, n: int):
        super().__init__(rng, region, n)
        x, y, w, h = region
        self.size, self.dir = 0.75 * h, 1.0 if rng.random() < 0.5 else -1.0
        self.fx = x + 0.2 * self.size if self.dir > 0 else x + w - 0.2 * self.size
        self.foot = y + 0.97 * h
        self.radius = max(2.0, 0.1 * h)
        self.colors = random_colors(rng, vivid=True)
        self.throw_k, self.length, self.path = 0, 1, np.zeros((1, 2))
        self.burst: np.ndarray | None = None
        self._new_throw(0)

    def _new_throw(self, k: int) -> None:
        r, (_, y, w, h) = self.rng, self.region
        start = (self.fx + self.dir * 0.2 * self.size, self.foot - 0.9 * self.size)
        span = r.uniform(0.65, 0.95) * (w - 0.4 * self.size)
        end = (self.fx + self.dir * span, y + r.uniform(0.6, 0.95) * h)
        self.length, self.throw_k = int(r.integers(6, 10)), k
        t = np.linspace(0, 1, self.length)
        apex = r.uniform(0.2, 0.45) * h
        xs = start[0] + (end[0] - start[0]) * t
        ys = start[1] + (end[1] - start[1]) * t - 4 * apex * t * (1 - t)
        self.path = np.stack([xs, np.maximum(ys, y + self.radius)], 1)
        self.ball = tuple(int(c) for c in r.choice([(255, 40, 40), (255, 255, 255),
                                                    (255, 230, 0), (0, 255, 255)]))

    def _disk(self, img: np.ndarray, cx: float, cy: float, rad: float, color) -> None:
        H, W = img.shape[:2]
        x0, x1 = max(int(cx - rad), 0), min(int(cx + rad) + 1, W)
        y0, y1 = max(int(cy - rad), 0), min(int(cy + rad) + 1, H)
        if x1 > x0 and y1 > y0:
            ys, xs = np.ogrid[y0:y1, x0:x1]
            img[y0:y1, x0:x1][(xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2 <= rad * rad] = color

    def draw(self, img: np.ndarray, k: int) -> BoxF:
        i = k - self.throw_k
        if i >= self.length + 3:
            self._new_throw(k)
            i = 0
        arm = -2.5 + 4.5 * min(i, 3) / 3 if i < self.length else 0.3
        draw_figure(img, self.fx, self.foot, self.size, (0.3 * self.dir, -0.2 * self.dir),
                    (self.dir * arm, -0.3 * self.dir), self.colors, lean=0.1 * self.dir)
        boxes = [figure_box(self.fx, self.foot, self.size)]
        rad = self.radius
        if i < self.length:
            for j in range(max(0, i - 3), i + 1):  # the ball and its motion streak
                px, py = self.path[j]
                self._disk(img, px, py, rad * (0.5 + 0.5 * (j == i)), self.ball)
            seg = self.path[max(0, i - 5):i + 1]
            boxes.append((seg[:, 0].min() - rad, seg[:, 1].min() - rad,
                          seg[:, 0].max() + rad, seg[:, 1].max() + rad))
        else:  # burst: fragments flying out from the landing point
            if i == self.length:
                self.burst = self.rng.uniform(-1, 1, (8, 2)) * 2.5 * rad
            px, py = self.path[-1]
            j = i - self.length + 1
            pts = np.array([px, py]) + self.burst * j
            for bx, by in pts:
                self._disk(img, bx, by, max(1.0, rad * 0.45), self.ball)
            boxes.append((pts[:, 0].min() - rad, pts[:, 1].min() - rad,
                          pts[:, 0].max() + rad, pts[:, 1].max() + rad))
        return _union(boxes)


EVENTS: dict[str, type[Event]] = {c.kind: c for c in (Run, Fight, Fire, Throw, Damage)}


def make_event(kind: str, rng: np.random.Generator, width: int, height: int, n: int) -> Event:
    """An event of ``kind`` in a random region, lasting ``n`` frames."""
    return EVENTS[kind](rng, pick_region(rng, kind, width, height), n)
