"""The semi-synthetic benchmark behind ``stmil synth`` and ``stmil demo``.

:func:`make_dataset` writes a dataset in the UCF-Crime2Local layout: half normal videos (plain
footage of people walking) and half anomalous ones (the same kind of footage with one localized
event of a known kind, place and time span), with box annotations for every event frame::

    ROOT/readme/Train_split_AD.txt, ROOT/readme/Test_split_AD.txt   one video id per line
    ROOT/readme/Txt annotations/<id>.txt    VATIC boxes, one row per frame (anomalous videos)
    ROOT/videos/<id>.mp4                    H.264, yuv420p
    ROOT/Temporal_Anomaly_Annotation_for_Testing_Videos.txt    UCF-Crime temporal spans (test)
    ROOT/synth.json                         seed, settings, the files synth owns, and
                                            per-video event, span and area

``synth.json`` marks the folder as a synth output: it is written (with ``"complete": false``)
before any other file and lists every file the run will write. Which files are synth's is the
folder's ledger (``ROOT/.stmil/ledger.json``, :mod:`stmil.ownership`): every file is committed
with it, so a file synth wrote and nobody changed since is replaced, and any other file under a
name synth writes is refused in one line. A folder from before ledgers is migrated once: the
files its valid ``synth.json`` lists are adopted (recorded by their present bytes).
:func:`make_dataset` writes only into an empty folder or a previous synth output: with the same
settings it rewrites it; with other settings it refuses unless ``overwrite`` (an interrupted
output, ``"complete": false``, is always replaced). Files of the previous run that the new
settings do not make are deleted when their bytes are still synth's (as are temporary files
of a killed run); nothing else in the folder is touched.

Footage is procedural by default (:mod:`stmil.synth.scene`), or windows of real videos
(:mod:`stmil.synth.footage`); events come from :mod:`stmil.synth.events`. The ``hard``
scenario adds benign look-alike motion (:mod:`stmil.synth.distractors`). The same seed and
settings give byte-identical files.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stmil import safejson
from stmil.atomic import TEMP_PATTERN, remove_stale_temps
from stmil.datasets.layout import (
    BOX_DIR,
    NORMAL_CATEGORY,
    README_DIR,
    SPLIT_FILES,
    TEMPORAL,
    VIDEOS_DIR,
    X264,
    box_file,
    split_file,
)
from stmil.ownership import LEDGER_DIR, Ledger, adopt, check_can_write, commit, prune
from stmil.synth.distractors import SCENARIOS, HardScene
from stmil.synth.events import KINDS, fit_box, make_event
from stmil.synth.footage import Footage, FootageClip, FootageError, load_footage, probe_footage
from stmil.synth.scene import ProceduralScene
from stmil.synth.settings import SynthError, SynthSettings
from stmil.synth.write import VideoWriter, annotation_files

__all__ = ["CLASSES", "SCENARIOS", "FootageError", "Plan", "SynthError", "make_dataset",
           "plan_videos"]

log = logging.getLogger(__name__)

CLASSES = {"run": "Running", "fight": "Fighting", "fire": "Fire", "throw": "Throwing",
           "damage": "Vandalism"}
PROCEDURAL_FPS = 30.0
MARKER = "synth.json"
MARKER_FORMAT = "stmil-synth"


@dataclass(frozen=True)
class Plan:
    """One video to make. ``start, end``: the event's 0-based half-open frame span."""

    index: int  # seeds the video's generators
    video_id: str
    split: str
    kind: str = ""  # "" for a normal video
    start: int = 0
    end: int = 0
    source: int = -1  # index into the footage list, -1 for procedural footage

    @property
    def category(self) -> str:
        return CLASSES[self.kind] if self.kind else NORMAL_CATEGORY


def _test_indices(n: int, fraction: float) -> set[int]:
    """Evenly spread indices of the ``round(n * fraction)`` test items (at least one, not all)."""
    k = min(max(round(n * fraction), 1), n - 1)
    return {int(i) for i in np.round(np.linspace(0, n - 1, k))}


def _event_span(rng: np.random.Generator, n_frames: int) -> tuple[int, int]:
    """35-65% of the video, clear of the first and last ``min(10, n_frames // 8)`` frames."""
    margin = min(10, n_frames // 8)
    room = n_frames - 2 * margin
    length = min(max(round(rng.uniform(0.35, 0.65) * n_frames), 1), room)
    start = int(rng.integers(margin, n_frames - margin - length + 1))
    return start, start + length


def plan_videos(n_videos: int, n_frames: int, seed: int, test_fraction: float,
                n_sources: int = 0) -> list[Plan]:
    """Ids, splits (stratified by label and event kind), kinds and event spans of every video."""
    rng = np.random.default_rng([seed, 0])
    half = n_videos // 2
    kinds = [KINDS[i] for i in rng.permutation(len(KINDS))]
    test = _test_indices(half, test_fraction)
    counts = dict.fromkeys(KINDS, 0)
    plans = []
    src = [j % n_sources if n_sources else -1 for j in range(half)]
    for j in range(half):
        kind = kinds[j % len(kinds)]
        counts[kind] += 1
        start, end = _event_span(rng, n_frames)
        plans.append(Plan(j, f"{CLASSES[kind]}{counts[kind]:03d}{X264}",
                          "test" if j in test else "train", kind, start, end, src[j]))
    for j in range(half):
        plans.append(Plan(half + j, f"Normal_Videos_{j + 1:03d}{X264}",
                          "test" if j in test else "train", source=src[j]))
    return plans


def _render(plan: Plan, root: Path, seed: int, size: tuple[int, int], n_frames: int,
            fps: Fraction, footage: Footage | None, scenario: str = "default") -> dict:
    """Write ``videos/<id>.mp4``; returns the video's record for ``synth.json``.

    The ``hard`` scenario adds :class:`~stmil.synth.distractors.HardScene` (camera shake, then
    distractors, painted before the event) from a generator of its own: the scene and the
    event are the ``default`` scenario's, drawn from the same generators.
    """
    width, height = size
    scene_seq, event_seq = np.random.SeedSequence([seed, 1, plan.index]).spawn(2)
    scene_rng = np.random.default_rng(scene_seq)
    source = (ProceduralScene(scene_rng, width, height) if footage is None
              else FootageClip(scene_rng, footage, width, height, n_frames))
    event = (make_event(plan.kind, np.random.default_rng(event_seq), width, height,
                        plan.end - plan.start) if plan.kind else None)
    hard = (HardScene(np.random.default_rng([seed, 2, plan.index]), width, height, n_frames,
                      event.region if event is not None else None)
            if scenario == "hard" else None)
    boxes = []
    with VideoWriter(root / _video_file(plan.video_id), width, height, fps,
                     place=lambda tmp, dest: _commit(root, [(dest, _moved(tmp))])) as writer:
        for t in range(n_frames):
            frame = source.next_frame()
            if hard is not None:
                frame = hard.apply(frame, t)
            if event is not None and plan.start <= t < plan.end:
                boxes.append(fit_box(event.draw(frame, t - plan.start), width, height))
            writer.write(source.finish(frame))
    areas = [(b[2] - b[0]) * (b[3] - b[1]) / (width * height) for b in boxes]
    record = {"split": plan.split, "label": int(bool(plan.kind)), "kind": plan.kind or "normal",
              "class": plan.category, "n_frames": n_frames, "fps": float(fps),
              **source.describe(), **(hard.describe() if hard is not None else {})}
    if event is not None:
        record.update(span=[plan.start, plan.end], region=list(event.region),
                      area_fraction={"mean": round(float(np.mean(areas)), 4),
                                     "min": round(min(areas), 4), "max": round(max(areas), 4)},
                      boxes=boxes)
    return record


COMMAND = "synth"


def _commit(root: Path, writes: list) -> None:
    """Commit ``writes`` (``(dest, write(tmp))``) with ``root``'s ledger, as synth's."""
    commit(root, writes, COMMAND, fix="choose another --out, or move it away")


def _moved(src: Path):
    """A writer (:func:`stmil.ownership.commit`) that moves the finished file ``src`` into its
    temporary (same folder: a rename)."""
    return lambda tmp: os.replace(src, tmp)


def _text(text: str):
    return lambda tmp: tmp.write_text(text, encoding="utf-8")


def _check(n_videos: int, width: int, height: int, n_frames: int, fps: float | None,
           test_fraction: float, seed: int = 0, scenario: str = "default") -> None:
    SynthSettings(n_videos, n_frames, seed, width, height, fps, test_fraction, scenario)


def check_settings(n_videos: int = 48, n_frames: int = 160, seed: int = 0, width: int = 320,
                   height: int = 240, fps: float | None = None,
                   test_fraction: float = 0.5, scenario: str = "default") -> None:
    """Raise :class:`SynthError` for settings :func:`make_dataset` would refuse (nothing is
    written); for callers that validate everything before starting work."""
    _check(n_videos, width, height, n_frames, fps, test_fraction, seed, scenario)


def _video_file(video_id: str) -> str:
    """``videos/<video_id>.mp4``: synth writes H.264 mp4 files."""
    return f"{VIDEOS_DIR}/{video_id}.mp4"


def owned_files(plans: list[Plan]) -> list[str]:
    """The files (POSIX paths relative to the root) a synth run with ``plans`` writes, the
    marker excepted."""
    files = [*map(split_file, SPLIT_FILES), TEMPORAL]
    for p in plans:
        files.append(_video_file(p.video_id))
        if p.kind:
            files.append(box_file(p.video_id))
    return sorted(files)


def read_marker(root: Path) -> dict | None:
    """The ``synth.json`` of a previous synth output in ``root``, or None when there is none or
    it is not one (not JSON, wrong shape, or listing a file outside ``root``).

    The returned dict always has ``seed``, ``settings``, ``complete`` and ``files`` (markers
    written before ``files`` existed list their videos: the files are derived from those).
    """
    try:
        meta = safejson.loads((Path(root) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(meta, dict) and isinstance(meta.get("settings"), dict)
            and isinstance(meta.get("seed"), int)):
        return None
    files = meta.get("files")
    if files is None:  # a marker of an older stmil: complete, and its videos name its files
        videos = meta.get("videos")
        if not isinstance(videos, dict):
            return None
        files = [*map(split_file, SPLIT_FILES), TEMPORAL]
        for vid in videos:
            files += [_video_file(vid), box_file(vid)]
    if not (isinstance(files, list) and all(isinstance(f, str) and _inside_root(f)
                                            for f in files)):
        return None
    return {**meta, "files": sorted(set(files)), "complete": meta.get("complete", True) is True}


def _inside_root(rel: str) -> bool:
    """``rel`` names a file strictly inside the root (never the marker itself)."""
    p = Path(rel)
    return (bool(rel) and not p.is_absolute() and ".." not in p.parts
            and p.parts[0] not in (MARKER, "."))


def _own_temp(name: str, *dests: str) -> bool:
    """``name`` is an atomic write's temporary of one of ``dests`` (see stmil.atomic)."""
    m = TEMP_PATTERN.fullmatch(name)
    return bool(m) and m["name"] in dests


def _diff(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys)


def _claim(root: Path, seed: int, settings: dict, plans: list[Plan], overwrite: bool) -> None:
    """Make ``root`` this run's output, or refuse; see the module docstring for the rules.

    On return the marker (``complete: false``) lists every file of the old and the new run,
    and the old run's files that the new one will not rewrite, and any temporaries, are gone.
    """
    if root.exists() and not root.is_dir():
        raise SynthError(f"{root}: exists and is not a folder; choose another --out")
    try:  # a kill before the first marker can leave only the marker's temporary (and ledger)
        entries = [e for e in (root.iterdir() if root.is_dir() else ())
                   if not _own_temp(e.name, MARKER) and e.name != LEDGER_DIR]
    except OSError as e:
        raise SynthError(f"cannot write the dataset to {root}: {e.strerror or e}") from e
    old = read_marker(root) if entries else None
    if old is not None and not Ledger.load(root).owns(MARKER, lambda p: True):
        old = None  # a synth.json that stmil did not write, or changed since
    if entries and old is None:
        raise SynthError(f"{root}: folder is not empty and is not a stmil synth output (no "
                         f"valid {MARKER}); choose another --out or empty it")
    new_settings = {"seed": seed, **settings}
    if old is not None and old["complete"] and not overwrite:
        old_settings = {"seed": old["seed"], **old["settings"]}
        if old_settings != new_settings:
            raise SynthError(f"{root}: holds a synth output with other settings "
                             f"({_diff(old_settings, new_settings)}); pass --overwrite to "
                             "replace it, or choose another --out")
    new_files = owned_files(plans)
    old_files = old["files"] if old is not None else []
    every = sorted(set(old_files) | set(new_files))
    if old is not None and Ledger.load(root).legacy is None:  # from before ledgers: once
        adopt(root, [MARKER, *old_files], lambda p: True, COMMAND)
    check_can_write(root, [MARKER, *new_files], fix="choose another --out, or move it away")
    text = json.dumps({"format": MARKER_FORMAT, "complete": False, "seed": seed,
                       "settings": settings, "files": every}, indent=1) + "\n"
    try:  # the marker first: whatever happens next, the folder is provably synth's
        root.mkdir(parents=True, exist_ok=True)
        _commit(root, [(root / MARKER, _text(text))])
        (root / README_DIR / BOX_DIR).mkdir(parents=True, exist_ok=True)
        (root / VIDEOS_DIR).mkdir(exist_ok=True)
    except OSError as e:
        raise SynthError(f"cannot write the dataset to {root}: {e.strerror or e}") from e
    kept = prune(root, sorted(set(old_files) - set(new_files)))
    if kept:
        log.warning("%s: %d files of the previous synth output were changed since, so they "
                    "are left in place: %s", root, len(kept), ", ".join(kept[:3]))
    for rel in every:  # a video temporary of an older stmil's killed run: <name>.tmp
        (root / f"{rel}.tmp").unlink(missing_ok=True)
    for folder in (root, root / README_DIR, root / README_DIR / BOX_DIR, root / VIDEOS_DIR):
        remove_stale_temps(folder)  # temporaries of a killed run (a dead writer's only)


def _settings(n_videos: int, width: int, height: int, n_frames: int, fps: float | None,
              test_fraction: float, sources: list[Path], scenario: str = "default") -> dict:
    """The ``settings`` recorded in ``synth.json``.

    ``scenario`` is recorded only when it is not ``default``, so a default output's marker is
    byte for byte what stmil wrote before scenarios existed.
    """
    settings = {"n_videos": n_videos, "width": width, "height": height, "n_frames": n_frames,
                "fps": fps, "test_fraction": test_fraction,
                "footage": [str(p) for p in sources] or None}
    if scenario != "default":
        settings["scenario"] = scenario
    return settings


def dataset_ready(out: Path, footage: list[Path] | None = None, n_videos: int = 48,
                  seed: int = 0, width: int = 320, height: int = 240, n_frames: int = 160,
                  fps: float | None = None, test_fraction: float = 0.5,
                  scenario: str = "default") -> bool:
    """True when ``out`` holds a complete synth output of exactly these settings, every file
    present: what :func:`make_dataset` would write (byte for byte) is already there."""
    old = read_marker(Path(out))
    settings = _settings(n_videos, width, height, n_frames, fps, test_fraction,
                         [Path(p) for p in footage or []], scenario)
    if not (old is not None and old["complete"] and old["seed"] == seed
            and old["settings"] == settings):
        return False
    ledger = Ledger.load(out)  # every file there, and synth's (from before ledgers: present)
    return all(ledger.owns(f, lambda p: True) for f in [MARKER, *old["files"]])


def _render_all(plans: list[Plan], root: Path, seed: int, size: tuple[int, int], n_frames: int,
                fps: float | None, sources: list[Path], workers: int,
                progress: bool, scenario: str = "default") -> dict[str, dict]:
    """Render every planned video, one source's decoded footage at a time; id -> record."""
    records: dict[str, dict] = {}
    with tqdm(total=len(plans), desc="synth", unit="video", disable=not progress) as bar:
        for s in range(len(sources)) if sources else [-1]:
            footage = load_footage(sources[s], *size, n_frames) if s >= 0 else None
            rate = (Fraction(fps).limit_denominator(1001) if fps is not None
                    else footage.fps if footage else Fraction(PROCEDURAL_FPS))
            # Encoding releases the GIL, and every video has its own generators: threads give
            # parallelism without changing a byte of the output.
            with ThreadPoolExecutor(workers) as pool:
                jobs = {pool.submit(_render, p, root, seed, size, n_frames, rate, footage,
                                    scenario): p
                        for p in plans if p.source == s}
                try:
                    for job in as_completed(jobs):
                        records[jobs[job].video_id] = job.result()
                        bar.update()
                except BaseException:
                    pool.shutdown(cancel_futures=True)
                    raise
    return records


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`make_dataset` wrote: the dataset's ``root``, its ``train`` and ``test``
    video ids (sorted), and each anomalous video's event ``{id: {kind, class, split, span,
    area_fraction}}``, where ``span`` is the 0-based half-open event frame span."""

    root: str
    train: list[str]
    test: list[str]
    events: dict[str, dict]

    def line(self) -> str:
        return f"{len(self.train)} train + {len(self.test)} test videos -> {self.root}"


def make_dataset(out: Path, footage: list[Path] | None = None, n_videos: int = 48, seed: int = 0,
                 width: int = 320, height: int = 240, n_frames: int = 160,
                 fps: float | None = None, test_fraction: float = 0.5,
                 progress: bool = True, workers: int | None = None,
                 overwrite: bool = False, scenario: str = "default") -> SynthSummary:
    """Write a semi-synthetic dataset in UCF-Crime2Local layout to ``out``.

    ``footage``: real videos to cut windows from (default: procedural scenes). ``fps``: the
    output frame rate; ``None`` means 30 for procedural footage and each source's own rate for
    real footage (source frames are taken one to one, so another rate re-times them).
    ``workers``: videos made at once (threads; default ``min(4, cpu count)``); the output does not
    depend on it. ``out`` must be empty, missing, or a previous synth output (its ``synth.json``
    marker proves it) with the same settings; ``overwrite`` replaces a previous synth output
    with other settings, never a folder synth did not make. ``scenario``: ``default``, or
    ``hard`` (benign look-alike motion in every video, outside the event's region in anomalous
    ones: :mod:`stmil.synth.distractors`; recorded per video in ``synth.json``).

    Returns a :class:`SynthSummary`.
    Raises :class:`SynthError` (a ``ValueError``) for bad settings, unusable footage (naming the
    file) or an output folder that cannot be written or is not synth's own.
    """
    _check(n_videos, width, height, n_frames, fps, test_fraction, seed, scenario)
    out, sources = Path(out), [Path(p) for p in footage or []]
    for path in sources:
        probe_footage(path, width, height, n_frames)
    plans = plan_videos(n_videos, n_frames, seed, test_fraction, len(sources))
    settings = _settings(n_videos, width, height, n_frames, fps, test_fraction, sources,
                         scenario)
    _claim(out, seed, settings, plans, overwrite)
    workers = workers or min(4, os.cpu_count() or 1)
    records = _render_all(plans, out, seed, (width, height), n_frames, fps, sources, workers,
                          progress, scenario)
    meta = {"format": MARKER_FORMAT, "complete": True, "seed": seed, "settings": settings,
            "files": owned_files(plans), "kinds": list(KINDS),
            "videos": {k: {f: v for f, v in r.items() if f != "boxes"}
                       for k, r in sorted(records.items())}}
    # one unit: the annotations, then the finished marker, renamed last
    _commit(out, [(out / MARKER, _text(json.dumps(meta, indent=1) + "\n")),
                  *((dest, _text(text)) for dest, text in annotation_files(out, plans, records,
                                                                           n_frames))])
    return SynthSummary(
        root=str(out),
        train=sorted(p.video_id for p in plans if p.split == "train"),
        test=sorted(p.video_id for p in plans if p.split == "test"),
        events={k: {f: r[f] for f in ("kind", "class", "split", "span", "area_fraction")}
                for k, r in sorted(records.items()) if r["label"]})
