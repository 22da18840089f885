"""Overlay videos: anomaly heatmaps, boxes and a score timeline drawn over the source video.

Each panel is, top to bottom, a label header (``HEADER_H`` px), the resized frame with the
heatmap of its clip blended in and the predicted (cyan) and GT (green) boxes, and a score
timeline strip (``STRIP_H`` px) with GT frames shaded and a cursor at the current frame. With a
``baseline`` a second panel sits on the right. Frames are streamed: one decoded frame at a time.

A clip whose map is constant (every cuboid ties, as always for a grid-1 model) has no top
cuboid: its frames get no predicted box, only the note "no localization (grid 1)" (or "(tie)"
for a finer grid) in the top-left corner of the picture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from stmil.atomic import atomic_write
from stmil.cuboids import frame_heatmap
from stmil.errors import ConfigError, OutputError
from stmil.features.video import VideoInfo, iter_frames, probe
from stmil.files import MP4_OPTIONS
from stmil.timeline import frame_to_clip

HEADER_H = 14  #: label header height, px
STRIP_H = 60  #: timeline strip height, px
GIF_MAX_WIDTH = 240  #: panel width cap for GIF output, px
GIF_STEP = 2  #: GIFs keep every 2nd frame by default
ALPHA = 0.45  #: heatmap opacity at score 1 (it scales with the score)
CMAP = "turbo"
PRED_COLOR = (0, 255, 255)
GT_COLOR = (0, 255, 0)
PANEL_COLORS = ((0, 200, 255), (255, 150, 40))  # method, baseline: header tab + curve
_BG = np.array([22, 22, 22], np.uint8)
_GT_SHADE = np.array([40, 95, 40], np.uint8)
_GUIDE = np.array([70, 70, 70], np.uint8)
_CURSOR = np.array([255, 255, 255], np.uint8)


MAX_PANEL_H = 4096  #: panel frame height cap, px: x264 takes no side over 16384 (fuzz 0:23)


def panel_size(width: int, height: int, scale: int) -> tuple[int, int]:
    """Resized frame size ``(pw, ph)``: width ``scale``, aspect kept, both even; a very tall
    video (``ph`` over :data:`MAX_PANEL_H`) gets a narrower panel so that its height fits."""
    pw = max(2, int(scale) // 2 * 2)
    if height * pw > MAX_PANEL_H * width:
        pw = max(2, int(MAX_PANEL_H * width / height) // 2 * 2)
    ph = max(2, int(round(height * pw / width / 2)) * 2)
    return pw, ph


def render_overlay(
    video: Path,
    scores: dict,
    out: Path,
    gt_boxes: dict[int, list] | None = None,
    baseline: dict | None = None,
    max_frames: int | None = None,
    scale: int = 320,
    *,
    step: int | None = None,
    labels: tuple[str, str] | None = None,
    writer: Callable[[Path, Callable[[Path], None]], object] = atomic_write,
) -> Path:
    """Render ``video`` with the anomaly maps of ``scores`` to ``out`` (``.mp4`` or ``.gif``).

    ``scores``: a ``<id>.scores.json`` dict (``stmil.score.score_features``); ``gt_boxes``:
    frame -> ``[x1, y1, x2, y2]`` boxes in source pixels; ``baseline``: a second scores dict of
    the same video, shown on the right. ``step`` keeps every step-th frame (default 1 for mp4,
    2 for GIF); ``max_frames`` caps the number of output frames. GIF panels are at most
    ``GIF_MAX_WIDTH`` wide. The output frame is ``(HEADER_H + ph + STRIP_H, n_panels * pw)``
    with ``panel_size``. Written atomically by ``writer(out, write(tmp))`` (``stmil score``
    passes one that also records the file in the folder's ledger, :mod:`stmil.ownership`).
    """
    video, out = Path(video), Path(out)
    kind = out.suffix.lower()
    if kind not in (".mp4", ".gif"):
        raise ConfigError(f"{out}: output must end in .mp4 or .gif")
    gif = kind == ".gif"
    step = step or (GIF_STEP if gif else 1)
    if step < 1:
        raise ConfigError(f"step must be >= 1, got {step}")
    info = probe(video)
    pw, ph = panel_size(info.width, info.height, min(scale, GIF_MAX_WIDTH) if gif else scale)
    gt = _gt_dict(gt_boxes)
    names = labels or (_default_label("method", scores), _default_label("baseline", baseline))
    panels = [_Panel(scores, pw, ph, gt, names[0], PANEL_COLORS[0])]
    if baseline is not None:
        if int(baseline["n_frames"]) != int(scores["n_frames"]):
            raise ConfigError(f"baseline has {baseline['n_frames']} frames, scores have "
                             f"{scores['n_frames']}: not the same video")
        panels.append(_Panel(baseline, pw, ph, gt, names[1], PANEL_COLORS[1]))
    fps = Fraction(info.fps).limit_denominator(1001) / step
    out.parent.mkdir(parents=True, exist_ok=True)
    frames = _composed(video, info, panels, gt, step, max_frames)
    try:
        writer(out, lambda tmp: _encode(tmp, frames, fps, gif))
    except av.FFmpegError as e:  # the encoder refused the frame size, or the disk is full
        what = " ".join(str(e).split())
        raise OutputError(f"{out}: the {'GIF' if gif else 'H.264'} encoder refused the "
                          f"overlay ({len(panels) * pw}x{HEADER_H + ph + STRIP_H} frames: "
                          f"{what}); score without --overlay, or resize the video") from e
    return out


def _default_label(who: str, scores: dict | None) -> str:
    if scores is None:
        return who
    return f"{who} (grid {scores.get('model_grid', scores.get('grid'))})"


def _gt_dict(gt_boxes: dict | None) -> dict[int, np.ndarray]:
    """Frame -> ``(K, 4)`` GT boxes (JSON string keys accepted); empty frames dropped."""
    out = {}
    for f, boxes in (gt_boxes or {}).items():
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(b):
            out[int(f)] = b
    return out


class _Panel:
    """One scores dict prepared for drawing at panel size ``(ph, pw)``."""

    def __init__(self, scores: dict, pw: int, ph: int, gt: dict[int, np.ndarray], label: str,
                 color: tuple[int, int, int]):
        self.n = int(scores["n_frames"])
        ranges = np.asarray(scores["clip_ranges"], dtype=np.int64).reshape(-1, 2)
        self.maps = np.asarray(scores["clip_maps"], dtype=np.float32)  # (n_clips, G, G)
        if len(self.maps) != len(ranges):
            raise ConfigError(f"{len(self.maps)} clip maps but {len(ranges)} clip ranges")
        self.clip_of = frame_to_clip(ranges, self.n)
        self.pw, self.ph = pw, ph
        sx, sy = pw / float(scores["width"]), ph / float(scores["height"])
        self.box_scale = np.array([sx, sy, sx, sy])
        self.boxes = np.asarray(scores["boxes"], dtype=np.float64).reshape(-1, 4)
        flat = self.maps.reshape(len(self.maps), -1)
        self.tie = flat.max(axis=1) == flat.min(axis=1)  # (n_clips,): no top cuboid
        grid = scores.get("model_grid", scores.get("grid"))
        self.note = (note_image(no_localization_text(grid), pw, color=PRED_COLOR)
                     if self.tie.any() else None)
        frame_scores = np.asarray(scores["frame_scores"], np.float64)
        if len(frame_scores) != self.n:
            raise ConfigError(f"{len(frame_scores)} frame scores for {self.n} frames")
        gt_mask = np.zeros(self.n, dtype=bool)
        gt_mask[[f for f in gt if 0 <= f < self.n]] = True
        self.strip = timeline_strip(frame_scores, gt_mask, pw, color)
        self.header = label_image(label, pw, HEADER_H, color)
        self._lut = (colormaps[CMAP](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)
        self._cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def heat(self, clip: int) -> tuple[np.ndarray, np.ndarray]:
        """Colour ``(ph, pw, 3)`` and opacity ``(ph, pw, 1)`` of one clip's map (cached)."""
        if self._cache is None or self._cache[0] != clip:
            s = np.clip(frame_heatmap(self.maps[clip], self.pw, self.ph), 0.0, 1.0)
            s = s.astype(np.float32)
            color = self._lut[(s * 255).astype(np.intp)]
            self._cache = (clip, color, (ALPHA * s)[..., None])
        return self._cache[1], self._cache[2]

    def draw(self, frame: np.ndarray, f: int, gt: dict[int, np.ndarray]) -> np.ndarray:
        """The full panel ``(HEADER_H + ph + STRIP_H, pw, 3)`` uint8 for source frame ``f``."""
        f = min(f, self.n - 1)
        clip = int(self.clip_of[f])
        color, alpha = self.heat(clip)
        img = (frame * (1.0 - alpha) + color * alpha).astype(np.uint8)
        if self.tie[clip]:  # a tie is not a localization: no box, a note instead
            h, w = self.note.shape[:2]
            img[:min(h, img.shape[0]), :w] = self.note[:img.shape[0]]
        elif f < len(self.boxes):
            draw_rect(img, self.boxes[f] * self.box_scale, PRED_COLOR)
        for box in gt.get(f, ()):
            draw_rect(img, box * self.box_scale, GT_COLOR)
        strip = self.strip.copy()
        x = min(f * strip.shape[1] // self.n, strip.shape[1] - 1)
        strip[:, x] = _CURSOR
        return np.concatenate([self.header, img, strip], axis=0)


def draw_rect(img: np.ndarray, box: np.ndarray, color: tuple[int, int, int],
              thickness: int = 2) -> None:
    """Draw the outline of ``box`` (x1, y1, x2, y2; x2/y2 exclusive) into ``(H, W, 3)`` img."""
    h, w = img.shape[:2]
    x1, y1 = int(np.floor(box[0])), int(np.floor(box[1]))
    x2, y2 = int(np.ceil(box[2])), int(np.ceil(box[3]))
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if x2 <= x1 or y2 <= y1:
        return
    t = thickness
    img[y1:min(y1 + t, y2), x1:x2] = color
    img[max(y2 - t, y1):y2, x1:x2] = color
    img[y1:y2, x1:min(x1 + t, x2)] = color
    img[y1:y2, max(x2 - t, x1):x2] = color


def timeline_strip(frame_scores: np.ndarray, gt_mask: np.ndarray, width: int,
                   color: tuple[int, int, int], height: int = STRIP_H) -> np.ndarray:
    """Static timeline ``(height, width, 3)``: GT frames shaded, 0.5 guide, score curve.

    ``frame_scores``, ``gt_mask``: ``(n_frames,)``. Column x shows the maximum score of the
    frames ``[x * n / width, (x + 1) * n / width)``; scores are drawn on a fixed [0, 1] scale.
    """
    n = len(frame_scores)
    strip = np.broadcast_to(_BG, (height, width, 3)).copy()
    starts = (np.arange(width) * n) // width
    strip[:, np.maximum.reduceat(gt_mask.astype(np.int8), starts) > 0] = _GT_SHADE
    top, bottom = 3, height - 4
    strip[(top + bottom) // 2, ::3] = _GUIDE
    s = np.clip(np.maximum.reduceat(frame_scores, starts), 0.0, 1.0)
    y = np.round(bottom - s * (bottom - top)).astype(int)
    for x in range(width):
        lo, hi = sorted((y[x], y[max(x - 1, 0)]))
        strip[lo:hi + 1, x] = color
    return strip


def label_image(text: str, width: int, height: int, color: tuple[int, int, int]) -> np.ndarray:
    """A header ``(height, width, 3)`` uint8: a coloured tab (x 2..5) and ``text`` in white from
    x = 10, centred vertically (Pillow's default font; text past the right edge is cut)."""
    im = Image.new("RGB", (width, height), tuple(int(v) for v in _BG))
    draw = ImageDraw.Draw(im)
    draw.rectangle((2, 2, 5, height - 3), fill=tuple(color))
    font = ImageFont.load_default()
    top, bottom = draw.textbbox((0, 0), text, font=font)[1::2]
    draw.text((10, (height - (bottom - top)) // 2 - top), text, fill=(255, 255, 255), font=font)
    return np.asarray(im).copy()


def no_localization_text(grid) -> str:
    """The note drawn instead of a predicted box where a clip's map is a tie."""
    try:
        coarse = int(grid) == 1
    except (TypeError, ValueError):
        coarse = False
    return "no localization (grid 1)" if coarse else "no localization (tie)"


def note_image(text: str, max_width: int, color: tuple[int, int, int] = PRED_COLOR,
               height: int = HEADER_H) -> np.ndarray:
    """``text`` in ``color`` on the header background, 4 px padding left and right, as a
    ``(height, min(text width + 8, max_width), 3)`` uint8 image (text past it is cut)."""
    font = ImageFont.load_default()
    probe_draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left, top, right, bottom = probe_draw.textbbox((0, 0), text, font=font)
    width = max(1, min(int(right) + 8, int(max_width)))
    im = Image.new("RGB", (width, height), tuple(int(v) for v in _BG))
    draw = ImageDraw.Draw(im)
    draw.text((4, (height - (bottom - top)) // 2 - top), text, fill=tuple(color), font=font)
    return np.asarray(im).copy()


def _composed(video: Path, info: VideoInfo, panels: list[_Panel], gt: dict[int, np.ndarray],
              step: int, max_frames: int | None) -> Iterator[np.ndarray]:
    """Yield output frames ``(H, W, 3)`` uint8 (even sizes), decoding one frame at a time."""
    pw, ph = panels[0].pw, panels[0].ph
    written = 0
    for f, rgb in enumerate(iter_frames(video, info)):
        if f >= panels[0].n or (max_frames is not None and written >= max_frames):
            return
        if f % step:
            continue
        small = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
            width=pw, height=ph, format="rgb24", interpolation="AREA").to_ndarray()
        small = small.astype(np.float32)
        out = np.concatenate([p.draw(small, f, gt) for p in panels], axis=1)
        written += 1
        yield _even(out)


def _even(img: np.ndarray) -> np.ndarray:
    """Pad ``(H, W, 3)`` at the bottom/right to even height and width."""
    h, w = img.shape[:2]
    if h % 2 or w % 2:
        img = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)))
    return img


def gif_palette() -> Image.Image:
    """The GIF's fixed 256 colours, as a ``P`` image for ``Image.quantize``: a 6 x 6 x 6 RGB
    cube, then 40 greys (the cube alone has 6).

    One palette for every frame: FFmpeg's GIF encoder diffs each frame against the previous one
    by palette index, which a palette per frame (median cut) breaks.
    """
    levels = np.linspace(0, 255, 6)
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    greys = np.repeat(np.linspace(0, 255, 40)[:, None], 3, axis=1)
    palette = Image.new("P", (1, 1))
    palette.putpalette(np.concatenate([cube, greys]).round().astype(np.uint8).tobytes())
    return palette


def _encode(tmp: Path, frames: Iterator[np.ndarray], fps: Fraction, gif: bool) -> None:
    """Encode ``frames`` into ``tmp`` as GIF (pal8, :func:`gif_palette`, nearest colour, no
    dither) or MP4 (H.264, yuv420p)."""
    palette = gif_palette()
    argb = np.full((256, 4), 255, np.uint8)  # PyAV's pal8 palette: (256, 4) ARGB
    argb[:, 1:] = np.asarray(palette.getpalette(), np.uint8).reshape(256, 3)
    with av.open(str(tmp), "w", format="gif" if gif else "mp4",
                 options={} if gif else MP4_OPTIONS) as container:
        stream = None
        for img in frames:
            if stream is None:
                stream = container.add_stream("gif" if gif else "libx264", rate=fps)
                stream.width, stream.height = img.shape[1], img.shape[0]
                stream.pix_fmt = "pal8" if gif else "yuv420p"
                if not gif:
                    stream.options = {"crf": "20", "preset": "veryfast"}
            if gif:
                indices = Image.fromarray(img).quantize(palette=palette,
                                                        dither=Image.Dither.NONE)
                frame = av.VideoFrame.from_ndarray((np.asarray(indices), argb), format="pal8")
            else:
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            container.mux(stream.encode(frame))
        if stream is None:
            raise ConfigError("no frames to write")
        container.mux(stream.encode())
