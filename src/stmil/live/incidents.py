"""Clip scores -> incidents: hysteresis, minimum duration and merge gap, all in seconds.

The same causal state machine (:class:`IncidentTracker`) serves ``stmil events`` (a whole
video's clips at once) and ``stmil watch`` (clips as they are scored), so both give the same
incidents for the same clips. Rules, for clips in time order (a clip's score is the maximum
of its G x G cuboid scores):

- a clip is *active* when its score reaches ``threshold`` (to open an incident) or
  ``threshold - hysteresis`` (to keep one open);
- an open incident closes when a clip starts more than ``merge_gap`` seconds after the end
  of its last active clip (or at the end of the input); it spans its first active clip's
  start to its last active clip's end, so below-threshold clips inside a merged gap belong to
  it;
- an incident shorter than ``min_duration`` seconds is never reported; live, its ``start``
  message is sent once it has lasted ``min_duration``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from stmil import safejson
from stmil.cuboids import predicted_boxes
from stmil.errors import ConfigError, OutputError
from stmil.settings import Settings, setting

REASONS = ("scores fell", "end of input", "stream lost", "interrupted")


#: The longest time setting, in seconds (a day): beyond it a value is a typo.
MAX_SECONDS = 86_400.0


@dataclass(frozen=True)
class EventConfig(Settings):
    """How clip scores become incidents (see the module docstring). Times in seconds."""

    threshold: float = setting(0.5, "start an incident at this clip score", lo=0, hi=1)
    hysteresis: float = setting(0.1, "an open incident stays open down to threshold - "
                                "HYSTERESIS", lo=0, hi=1)
    min_duration: float = setting(1.0, "shorter incidents are not reported", unit="seconds",
                                  lo=0, hi=MAX_SECONDS)
    merge_gap: float = setting(2.0, "incidents closer than this are one", unit="seconds", lo=0,
                               hi=MAX_SECONDS)

    @property
    def end_threshold(self) -> float:
        """The score that keeps an open incident active: ``threshold - hysteresis``."""
        return max(0.0, self.threshold - self.hysteresis)


@dataclass(frozen=True, eq=False)
class ClipScore:
    """One scored clip: source frames ``[start, end)`` and its cuboid scores ``(G*G,)``."""

    start: int
    end: int
    scores: np.ndarray
    box: tuple[float, float, float, float]

    @property
    def score(self) -> float:
        return float(np.max(self.scores))


@dataclass
class TrackPoint:
    """The incident's box on one clip, in source pixels ``x1, y1, x2, y2``."""

    frame: int
    time: float
    score: float
    box: list[float]


@dataclass
class Incident:
    """One incident, the contract of ``stmil events`` lines and ``stmil watch`` messages.

    Frames are source frames, ``end_frame`` exclusive; times are ``frame / fps`` seconds from
    the start of the input. ``box`` is the box at the peak; ``track`` has one point per clip.
    """

    id: int
    source: str
    fps: float
    start_frame: int
    end_frame: int
    start_time: float
    end_time: float
    peak_score: float
    peak_frame: int
    peak_time: float
    mean_score: float
    box: list[float]
    track: list[TrackPoint] = field(default_factory=list)
    reason: str | None = None  # why it ended (one of REASONS); None while open

    @property
    def duration(self) -> float:
        return self.end_time - self.start_time

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "incident") -> Incident:
        """The incident of a JSON object; :class:`ConfigError` naming ``where`` if malformed."""
        try:
            track = [TrackPoint(**p) for p in d["track"]]
            inc = cls(**{**d, "track": track})
        except (TypeError, KeyError) as e:
            raise ConfigError(f"{where}: not a stmil incident ({e})") from None
        return inc


def _r(x: float) -> float:
    return round(float(x), 6)


class IncidentTracker:
    """Feed clips in time order with :meth:`push`; it returns ``(kind, incident)`` messages:
    ``("start", inc)`` once an incident has lasted ``min_duration``, ``("end", inc)`` when it
    closes. :meth:`close` ends the open incident (at the end of input, a lost stream...)."""

    def __init__(self, config: EventConfig, fps: float, source: str = "", first_id: int = 1):
        self.config, self.fps, self.source = config, fps, source
        self.next_id = first_id
        self._clips: list[ClipScore] = []  # clips of the open incident, up to its last active
        self._pending: list[ClipScore] = []  # clips after its last active one
        self._started = False

    @property
    def open(self) -> Incident | None:
        """The open incident once confirmed (``start`` sent), else None."""
        return self._build(None) if self._clips and self._started else None

    @property
    def clips(self) -> tuple[ClipScore, ...]:
        """The clips of the candidate or open incident, up to its last active one."""
        return tuple(self._clips)

    def push(self, clip: ClipScore) -> list[tuple[str, Incident]]:
        out: list[tuple[str, Incident]] = []
        c = self.config
        if self._clips and clip.start / self.fps - self._clips[-1].end / self.fps > c.merge_gap:
            out += self.close("scores fell")
        s = clip.score
        if self._clips:
            if s >= c.end_threshold:
                self._clips += self._pending + [clip]
                self._pending = []
            else:
                self._pending.append(clip)
        elif s >= c.threshold:
            self._clips = [clip]
        if self._clips and not self._started and self._span() >= c.min_duration:
            self._started = True
            out.append(("start", self._build(None)))
        return out

    def close(self, reason: str) -> list[tuple[str, Incident]]:
        """End the open incident (reported only if it was confirmed) and forget it."""
        out = []
        if self._clips and self._started:
            out.append(("end", self._build(reason)))
            self.next_id += 1
        self._clips, self._pending, self._started = [], [], False
        return out

    def _span(self) -> float:
        return (self._clips[-1].end - self._clips[0].start) / self.fps

    def _build(self, reason: str | None) -> Incident:
        clips, fps = self._clips, self.fps
        start, end = clips[0].start, clips[-1].end
        peak = max(clips, key=lambda k: k.score)  # the first of equal peaks
        total = 0.0
        for k, clip in enumerate(clips):  # a frame takes the score of the latest clip on it
            stop = min(clip.end, clips[k + 1].start) if k + 1 < len(clips) else clip.end
            total += clip.score * max(0, stop - clip.start)
        mid = (peak.start + peak.end) // 2
        return Incident(
            id=self.next_id, source=self.source, fps=_r(fps), start_frame=int(start),
            end_frame=int(end), start_time=_r(start / fps), end_time=_r(end / fps),
            peak_score=_r(peak.score), peak_frame=int(mid), peak_time=_r(mid / fps),
            mean_score=_r(total / max(1, end - start)), box=[_r(v) for v in peak.box],
            track=[TrackPoint(int(k.start), _r(k.start / fps), _r(k.score),
                              [_r(v) for v in k.box]) for k in clips],
            reason=reason)


def clips_from_maps(maps: np.ndarray, clip_ranges: np.ndarray, boxes: np.ndarray,
                    threshold: float) -> list[ClipScore]:
    """Clips of a video from its cuboid maps ``(n_clips, G*G)`` and ranges ``(n_clips, 2)``;
    each clip's box is the union of its cuboids (``boxes``, ``(G*G, 4)``) scoring at least
    ``threshold``, or its top cuboid when none does."""
    clip_boxes = predicted_boxes(maps, boxes, threshold)
    return [ClipScore(int(s), int(e), np.asarray(m), tuple(float(v) for v in b))
            for (s, e), m, b in zip(clip_ranges, maps, clip_boxes)]


def find_incidents(clips: list[ClipScore], config: EventConfig, fps: float,
                   source: str = "") -> list[Incident]:
    """Every incident of a whole input (the last one ends with reason ``end of input``)."""
    tracker = IncidentTracker(config, fps, source)
    found = [inc for clip in clips for kind, inc in tracker.push(clip) if kind == "end"]
    return found + [inc for _, inc in tracker.close("end of input")]


# --- JSON lines: one writer, one reader -----------------------------------------------------


def incident_line(kind: str, incident: Incident, **extra: object) -> str:
    """One JSON line: ``{"type": kind, **incident, **extra}`` (``kind``: incident, start,
    update or end)."""
    return json.dumps({"type": kind, **incident.to_dict(), **extra}, allow_nan=False)


MESSAGE_TYPES = ("incident", "start", "update", "end")


def read_incidents(path: Path | str) -> list[tuple[str, Incident]]:
    """``(type, incident)`` of every line of a stmil incidents file; :class:`ConfigError`
    naming the file and line when one is not."""
    path = Path(path)
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            d = safejson.loads(line)
        except ValueError:
            raise ConfigError(f"{where}: not JSON") from None
        if not isinstance(d, dict) or d.get("type") not in MESSAGE_TYPES:
            raise ConfigError(f"{where}: not a stmil incident line (no type in "
                              f"{', '.join(MESSAGE_TYPES)})")
        kind = d.pop("type")
        d = {k: v for k, v in d.items() if k in Incident.__dataclass_fields__}
        out.append((kind, Incident.from_dict(d, where)))
    return out


def check_log(out: Path) -> None:
    """Refuse an ``--out`` that ``stmil watch`` may not append to (:class:`OutputError`): a
    folder, a file holding anything other than stmil incident lines, or a missing folder."""
    if out.is_dir():
        raise OutputError(f"{out}: is a folder; give --out a file path like "
                          f"{out / 'incidents.jsonl'}")
    if out.exists() and not is_incidents_file(out):
        raise OutputError(f"{out}: exists and is not a stmil incidents file; refusing to "
                          "write to it (give --out another path)")
    if not out.parent.is_dir():
        raise OutputError(f"{out}: folder {out.parent} does not exist; create it first")


def is_incidents_file(path: Path) -> bool:
    """Whether ``path`` is empty or holds only stmil incident lines (so stmil may replace or
    append to it)."""
    try:
        read_incidents(path)
    except (ConfigError, OSError, UnicodeDecodeError):
        return False
    return True
