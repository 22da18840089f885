"""Benign look-alike motion for the ``hard`` scenario of the semi-synthetic benchmark.

In the ``hard`` scenario every video, normal or anomalous, carries benign motion of the same
low-level kinds as the events: fast walkers (like ``run``), vehicles (fast rigid motion),
flickering lamps (like ``fire``'s flicker), swaying vegetation (periodic local motion) and,
in half of the videos, small camera shake (global motion). In an anomalous video every
distractor stays in a lane that does not touch the event's region (grown by a margin), so a
detector that fires on any motion loses frame AUC and pointing, and one that learned the
events does not.

Each distractor is active over its own span (35-80% of the video), like an event, so the
presence of motion over time is no cue either. All randomness comes from the generator given
at construction (the dataset seeds it apart from the scene's and the event's generators, so
the ``default`` scenario's videos are unchanged). Frames are ``(H, W, 3)`` uint8 RGB.
"""

from __future__ import annotations

import math

import numpy as np

from stmil.synth.scene import draw_figure, random_colors

SCENARIOS = ("default", "hard")
KINDS = ("walker", "vehicle", "flicker", "sway")
Region = tuple[int, int, int, int]  # x, y, w, h
AVOID_MARGIN = 0.08  # fraction of the frame's width/height the event region is grown by
SHAKE_PROBABILITY = 0.5


def _overlaps(a: Region, b: Region) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def grow(region: Region, width: int, height: int, margin: float = AVOID_MARGIN) -> Region:
    """``region`` grown by ``margin`` of the frame size on every side, clipped to the frame."""
    x, y, w, h = region
    mx, my = round(margin * width), round(margin * height)
    x1, y1 = max(0, x - mx), max(0, y - my)
    x2, y2 = min(width, x + w + mx), min(height, y + h + my)
    return x1, y1, x2 - x1, y2 - y1


class Distractor:
    """Base class: a lane (region) it paints inside, and the frames it is active on."""

    kind = ""

    def __init__(self, rng: np.random.Generator, region: Region, span: tuple[int, int]):
        self.rng, self.region, self.span = rng, region, span

    def active(self, t: int) -> bool:
        return self.span[0] <= t < self.span[1]

    def draw(self, img: np.ndarray, t: int) -> None:
        """Paint frame ``t`` inside :attr:`region` (only called while active)."""
        raise NotImplementedError

    def _view(self, img: np.ndarray) -> np.ndarray:
        x, y, w, h = self.region
        return img[y:y + h, x:x + w]


class FastWalker(Distractor):
    """A pedestrian hurrying straight along its lane (2-3x walking speed), turning at its ends."""

    kind = "walker"

    def __init__(self, rng: np.random.Generator, region: Region, span: tuple[int, int]):
        super().__init__(rng, region, span)
        x, y, w, h = region
        self.size = 0.85 * h
        self.pos = x + rng.uniform(0.3, 0.7) * w
        self.dir = 1.0 if rng.random() < 0.5 else -1.0
        self.speed = rng.uniform(0.03, 0.05) * w + 1.0
        self.phase = rng.uniform(0, 2 * math.pi)
        self.colors = random_colors(rng, vivid=bool(rng.random() < 0.5))

    def draw(self, img: np.ndarray, t: int) -> None:
        x, y, w, h = self.region
        lo, hi = x + 0.35 * self.size, x + w - 0.35 * self.size
        nxt = self.pos + self.dir * self.speed
        if not lo <= nxt <= hi:
            self.dir = -self.dir
        self.pos = min(max(nxt, lo), hi)
        self.phase += 0.7
        swing, d = 0.6 * math.sin(self.phase), self.dir
        lane = self._view(img)  # drawing into the view clips the figure to the lane
        draw_figure(lane, self.pos - x, 0.97 * h, self.size, (d * swing, -d * swing),
                    (-d * 0.7 * swing, d * 0.7 * swing), self.colors, lean=0.05 * d)


class Vehicle(Distractor):
    """A car crossing its lane fast (4-8% of the lane a frame), re-entering when it leaves."""

    kind = "vehicle"

    def __init__(self, rng: np.random.Generator, region: Region, span: tuple[int, int]):
        super().__init__(rng, region, span)
        _, _, w, h = region
        self.length = min(w * 0.6, rng.uniform(1.8, 2.6) * h)
        self.dir = 1.0 if rng.random() < 0.5 else -1.0
        self.speed = rng.uniform(0.04, 0.08) * w + 1.0
        self.pos = rng.uniform(0, w)
        self.body = rng.integers(30, 230, 3).astype(np.uint8)
        self.glass = np.array([60, 80, 100], np.uint8)

    def draw(self, img: np.ndarray, t: int) -> None:
        _, _, w, h = self.region
        self.pos += self.dir * self.speed
        if self.pos > w + self.length:
            self.pos = -self.length
        elif self.pos < -self.length:
            self.pos = w + self.length
        lane = self._view(img)
        ys = np.arange(h, dtype=np.float32)[:, None] + 0.5
        xs = np.arange(w, dtype=np.float32)[None, :] + 0.5 - (self.pos - self.length / 2)
        L = self.length
        wheel_r = 0.18 * h
        body = (xs >= 0) & (xs < L) & (ys >= 0.35 * h) & (ys < h - wheel_r)
        cabin = (xs >= 0.25 * L) & (xs < 0.75 * L) & (ys >= 0.05 * h) & (ys < 0.35 * h)
        glass = (xs >= 0.3 * L) & (xs < 0.7 * L) & (ys >= 0.1 * h) & (ys < 0.33 * h)
        lane[body | cabin] = self.body
        lane[glass] = self.glass
        for cx in (0.2 * L, 0.8 * L):
            lane[(xs - cx) ** 2 + (ys - (h - wheel_r)) ** 2 <= wheel_r ** 2] = 20


class Flicker(Distractor):
    """A faulty lamp: a warm glow whose brightness jumps at random every frame."""

    kind = "flicker"

    def __init__(self, rng: np.random.Generator, region: Region, span: tuple[int, int]):
        super().__init__(rng, region, span)
        _, _, w, h = region
        ys = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / h * 2 - 1
        xs = (np.arange(w, dtype=np.float32)[None, :] + 0.5) / w * 2 - 1
        self.shape = np.clip(1.2 - np.hypot(xs, ys), 0, 1)[..., None]  # (h, w, 1) glow
        self.colour = np.array([255, rng.uniform(150, 230), rng.uniform(40, 120)], np.float32)

    def draw(self, img: np.ndarray, t: int) -> None:
        level = float(self.rng.uniform(0.0, 1.0)) ** 0.5
        alpha = np.clip(self.shape * 1.5 * level, 0, 1)
        view = self._view(img)
        view[:] = np.clip(view * (1 - alpha) + self.colour * alpha, 0, 255).astype(np.uint8)


class Sway(Distractor):
    """A bush or tree crown swaying in the wind: rows shifted sideways, more at the top."""

    kind = "sway"

    def __init__(self, rng: np.random.Generator, region: Region, span: tuple[int, int]):
        super().__init__(rng, region, span)
        _, _, w, h = region
        green = np.array([rng.uniform(30, 80), rng.uniform(90, 150), rng.uniform(20, 60)])
        leaves = green * (1 + 0.45 * rng.uniform(-1, 1, (h, w, 1)))
        self.texture = np.clip(leaves, 0, 255).astype(np.uint8)
        ys = (np.arange(h)[:, None] + 0.5) / h * 2 - 1
        xs = (np.arange(w)[None, :] + 0.5) / w * 2 - 1
        self.mask = xs ** 2 / 0.7 + ys ** 2 <= 1  # (h, w) crown, narrower than the lane
        self.amp = rng.uniform(0.06, 0.12) * w
        self.period, self.phase = rng.uniform(8, 20), rng.uniform(0, 2 * math.pi)

    def draw(self, img: np.ndarray, t: int) -> None:
        _, _, w, h = self.region
        view = self._view(img)
        bend = 1 - np.arange(h) / h  # the top moves, the base stays
        gust = math.sin(2 * math.pi * t / self.period + self.phase) + 0.3 * self.rng.normal()
        for r in range(h):
            shift = int(round(self.amp * bend[r] * gust))
            row_mask = np.roll(self.mask[r], shift)
            view[r][row_mask] = np.roll(self.texture[r], shift, axis=0)[row_mask]


DISTRACTORS: dict[str, type[Distractor]] = {c.kind: c for c in (FastWalker, Vehicle, Flicker,
                                                                 Sway)}
# Lane size (fractions of the frame's width and height), and the lowest top (as a fraction of
# the height): walkers and vehicles keep to the lower half, where the ground is.
LANES = {"walker": ((0.3, 0.5), (0.22, 0.35), 0.4), "vehicle": ((0.4, 0.7), (0.12, 0.2), 0.5),
         "flicker": ((0.06, 0.1), (0.08, 0.13), 0.0), "sway": ((0.12, 0.2), (0.2, 0.35), 0.0)}


def _lane(rng: np.random.Generator, kind: str, width: int, height: int) -> Region:
    (w_lo, w_hi), (h_lo, h_hi), top = LANES[kind]
    w = max(8, int(rng.uniform(w_lo, w_hi) * width))
    h = max(8, int(rng.uniform(h_lo, h_hi) * height))
    y_min = min(int(top * height), height - h)
    return int(rng.integers(0, width - w + 1)), int(rng.integers(y_min, height - h + 1)), w, h


class HardScene:
    """The ``hard`` scenario's additions to a video: camera shake and 2-3 distractors.

    ``avoid``: the event's region in an anomalous video (``None`` for a normal one); no
    distractor lane touches it once grown by :data:`AVOID_MARGIN`. A distractor whose lane
    cannot be placed in 50 tries is left out (the record lists those made).
    """

    def __init__(self, rng: np.random.Generator, width: int, height: int, n_frames: int,
                 avoid: Region | None = None):
        self.width, self.height, self.rng = width, height, rng
        self.shake = int(rng.integers(1, 4)) if rng.random() < SHAKE_PROBABILITY else 0
        keep_out = grow(avoid, width, height) if avoid is not None else None
        self.items: list[Distractor] = []
        for _ in range(int(rng.integers(2, 4))):
            kind = KINDS[int(rng.integers(len(KINDS)))]
            for _ in range(50):
                lane = _lane(rng, kind, width, height)
                if keep_out is None or not _overlaps(lane, keep_out):
                    break
            else:
                continue
            length = max(1, round(rng.uniform(0.35, 0.8) * n_frames))
            start = int(rng.integers(0, n_frames - length + 1))
            self.items.append(DISTRACTORS[kind](rng, lane, (start, start + length)))

    def apply(self, frame: np.ndarray, t: int) -> np.ndarray:
        """Frame ``t`` with this frame's camera shake and the active distractors painted in."""
        if self.shake:
            dx, dy = (int(v) for v in self.rng.integers(-self.shake, self.shake + 1, 2))
            frame = _shift(frame, dx, dy)
        for item in self.items:
            if item.active(t):
                item.draw(frame, t)
        return frame

    def describe(self) -> dict:
        """The record for ``synth.json``: shake amplitude (pixels) and each distractor."""
        return {"shake": self.shake,
                "distractors": [{"kind": d.kind, "region": list(d.region), "span": list(d.span)}
                                for d in self.items]}


def _shift(frame: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``frame`` moved by ``(dx, dy)`` pixels, edges repeated: a small camera jolt."""
    h, w = frame.shape[:2]
    pad = np.pad(frame, ((abs(dy),) * 2, (abs(dx),) * 2, (0, 0)), mode="edge")
    y0, x0 = abs(dy) - dy, abs(dx) - dx
    return np.ascontiguousarray(pad[y0:y0 + h, x0:x0 + w])
