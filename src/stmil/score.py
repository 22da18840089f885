"""Test time: per-clip G x G anomaly maps, per-frame scores and predicted boxes.

A frame's score is the maximum over the cuboids of its clip; frames after the last clip take
its score. The predicted box of a frame is its clip's top cuboid, or the union of the cuboids
whose score reaches ``threshold`` when one is given (the top cuboid when none does).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stmil import safejson
from stmil.atomic import check_writable
from stmil.cuboids import cuboid_boxes, predicted_boxes
from stmil.deploy import BACKENDS
from stmil.deploy.backend import ExportedDetector, feature_extractor
from stmil.deploy.manifest import MANIFEST
from stmil.errors import ConfigError, ModelError, OutputError
from stmil.features.pipeline_config import ExtractSettings, PipelineConfig
from stmil.features.store import (
    FeatureError,
    FeatureMeta,
    load_features,
    meta_clip_ranges,
    meta_motion,
)
from stmil.files import find_videos, unique_files
from stmil.mil.detector import Detector
from stmil.options import ScoreOptions
from stmil.ownership import check_can_write, commit
from stmil.settings import Settings, check, in_file, number_array, require, setting
from stmil.timeline import frame_scores_from_clips, frame_to_clip

log = logging.getLogger(__name__)


def score_features(detector: Detector, features: np.ndarray, meta: FeatureMeta,
                   clip_ranges: np.ndarray, threshold: float | None = None,
                   where: str = "these features") -> dict:
    """The contents of ``<id>.scores.json`` for one video's features ``(n_clips, N, C)``
    (``meta``: their metadata, motion energy included)."""
    return scores_from_maps(detector.maps(features, meta_motion(meta), where),
                            detector.config.grid, meta, clip_ranges, threshold)


def scores_from_maps(maps: np.ndarray, model_grid: int, meta: FeatureMeta,
                     clip_ranges: np.ndarray,
                     threshold: float | None = None) -> dict:
    """``<id>.scores.json`` contents from cuboid maps ``(n_clips, G*G)`` already computed."""
    g = meta.grid
    n = meta.n_frames
    frame_scores = frame_scores_from_clips(maps.max(axis=1), clip_ranges, n)
    clip_boxes = predicted_boxes(maps, cuboid_boxes(meta.width, meta.height, g), threshold)
    frame_clip = frame_to_clip(clip_ranges, n)
    return {
        # what extract recorded of the video, so that events can tell a replaced one
        **meta.identity,
        "n_frames": n,
        "fps": meta.source_fps,
        "width": meta.width,
        "height": meta.height,
        "grid": g,
        "model_grid": model_grid,
        "threshold": threshold,
        "clip_ranges": clip_ranges.tolist(),
        "clip_maps": maps.reshape(-1, g, g).round(6).tolist(),
        "frame_scores": frame_scores.round(6).tolist(),
        "boxes": clip_boxes[frame_clip].round(2).tolist(),
    }


SCORES_KEYS = ("n_frames", "clip_maps", "frame_scores", "boxes")


def is_scores_file(path: Path) -> bool:
    """Whether ``path`` holds a ``<id>.scores.json`` that stmil wrote (a JSON object with
    :data:`SCORES_KEYS`)."""
    try:
        data = safejson.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and all(k in data for k in SCORES_KEYS)


@dataclass(frozen=True, kw_only=True)
class ScoresHeader(Settings):
    """The scalar fields of a ``<id>.scores.json`` (its arrays are checked against them by
    :func:`read_scores`)."""

    grid: int = setting(lo=1, hi=math.inf)
    n_frames: int = setting(lo=1, hi=math.inf)
    width: int = setting(lo=1, hi=math.inf)
    height: int = setting(lo=1, hi=math.inf)
    model_grid: int | None = setting(None, lo=1, hi=math.inf)
    fps: float = setting(lo=0, lo_open=True, hi=math.inf,
                         what="a positive number (frames per second)")
    threshold: float | None = setting(None, lo=0, hi=1, what="null or a number from 0 to 1")


def read_scores(path: Path | str) -> dict:
    """The contents of a ``<id>.scores.json`` that :func:`write_scores` wrote, with
    ``clip_maps`` as ``(n_clips, G*G)`` float32 and ``clip_ranges`` as ``(n_clips, 2)`` int
    arrays: the one reader of that format.

    Every field is checked as :func:`scores_from_maps` writes it: ``grid``, ``n_frames``,
    ``width`` and ``height`` whole numbers >= 1 (``model_grid`` too, when present), ``fps`` a
    positive number, ``clip_ranges`` ``0 <= start < end <= n_frames``, ``clip_maps``
    ``n_clips`` G x G scores in [0, 1], ``frame_scores`` ``n_frames`` scores in [0, 1],
    ``boxes`` ``n_frames`` boxes of 4 finite numbers. :class:`FeatureError` naming the file
    and the first field that is not so.
    """
    path = Path(path)
    fix = "score the video again with stmil score"
    try:
        data = safejson.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise FeatureError(f"{path}: not a stmil scores file ({e}); {fix}") from None
    keys = (*SCORES_KEYS, "clip_ranges", "fps", "width", "height", "grid")
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise FeatureError(f"{path}: not a stmil scores file (needs {', '.join(keys)}); {fix}")

    head = ScoresHeader.from_mapping(data, path, fix=fix, error=FeatureError, others="ignore")
    g, n = head.grid, head.n_frames
    scores = "scores from 0 to 1 (no NaN or infinite values)"
    with in_file(path, fix, FeatureError):
        maps = number_array("clip_maps", data["clip_maps"], (None, g, g), lo=0, hi=1,
                            what=f"a list of {g} x {g} grids of {scores}, one per clip")
        ranges = number_array("clip_ranges", data["clip_ranges"], (len(maps), 2), integer=True,
                              what=f"{len(maps)} [start, end] pairs of whole numbers (one per "
                                   "clip map)")
        inverted = np.flatnonzero((ranges[:, 0] < 0) | (ranges[:, 1] <= ranges[:, 0])
                                  | (ranges[:, 1] > n))
        k = int(inverted[0]) if len(inverted) else 0
        require(not len(inverted), "{clip_ranges} must be [start, end) frame ranges with 0 <= "
                f"start < end <= n_frames ({n}); clip {k}, got {ranges[k].tolist()}",
                "clip_ranges")
        number_array("frame_scores", data["frame_scores"], (n,), lo=0, hi=1,
                     what=f"a list of n_frames ({n}) {scores}")
        number_array("boxes", data["boxes"], (n, 4), what=f"n_frames ({n}) boxes of 4 finite "
                                                          "numbers")
    return {**data, "clip_maps": maps.reshape(len(maps), g * g).astype(np.float32),
            "clip_ranges": ranges, "fps": head.fps}


def write_scores(out_dir: Path, video_id: str, result: dict) -> Path:
    """Atomically write ``out_dir/<id>.scores.json``; a file there that is not a scores file
    is refused (:class:`OutputError`), never overwritten."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / f"{video_id}.scores.json"
    text = json.dumps(result, allow_nan=False)  # a bare NaN is not JSON: never write one
    commit(out_dir, [(dest, lambda t: t.write_text(text, encoding="utf-8"))], "score",
           legacy=_legacy_ours, fix=NOT_OURS)
    return dest


NOT_OURS = "refusing to overwrite it (move it away, or use another --out)"


def _legacy_ours(path: Path) -> bool:
    """In a folder from before ledgers: a scores file is ours, an overlay never is."""
    if path.name.endswith(".scores.json") and not is_scores_file(path):
        raise OutputError(f"{path}: exists and is not a stmil scores file; {NOT_OURS}")
    return path.name.endswith(".scores.json")


def _write_overlay(dest: Path, write: Callable[[Path], None]) -> None:
    """The writer :func:`~stmil.overlay.render_overlay` uses for ``score``."""
    commit(dest.parent, [(dest, write)], "score", legacy=_legacy_ours, fix=NOT_OURS)


def check_threshold(threshold: float | None) -> None:
    """Refuse a box threshold that is not a number in [0, 1] (scores are probabilities)."""
    check(ScoreOptions, "threshold", threshold)


def collect_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand ``inputs`` into the ``.npy`` feature files and videos to score, in order.

    A folder gives its ``.npy`` files (not recursive) or, if it has none, its videos
    (recursive). A folder holding both is refused: say which to score by naming the files.
    The same file named twice is scored once (:func:`~stmil.files.unique_files`, the rule of
    ``extract`` too); two different files with the same stem are
    refused, since both would write ``<stem>.scores.json``.
    """
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            npys = sorted(p for p in item.glob("*.npy") if not p.name.startswith("."))
            videos = find_videos(item)
            if npys and videos:
                raise ConfigError(
                    f"{item}: holds both .npy features ({len(npys)}, e.g. {npys[0].name}) and "
                    f"videos ({len(videos)}, e.g. {videos[0].relative_to(item)}); name the files "
                    "to score, or keep features and videos in separate folders")
            paths += npys or videos
        else:
            paths.append(item)
    if not paths:
        raise ConfigError(f"no videos or .npy features found in {', '.join(map(str, inputs))}")
    unique = unique_files(paths)  # the same file named twice is scored once
    by_stem: dict[str, Path] = {}
    for path in unique:
        other = by_stem.setdefault(path.stem, path)
        if other is not path:
            raise ConfigError(f"{other} and {path} share the id {path.stem!r}: both would be "
                              f"scored to {path.stem}.scores.json; rename one of them, or score "
                              "them into different --out folders")
    return unique


def source_video(npy: Path, meta: FeatureMeta) -> Path:
    """The video a feature file was extracted from, for an overlay; an error names both."""
    source = meta.source
    if source is None:
        raise FeatureError(f"{npy.with_suffix('.json')}: records no source video; score the "
                           "video itself to get an overlay")
    path = Path(source)
    if not path.is_file():
        raise FeatureError(f"{npy}: source video {source} not found (as recorded in "
                           f"{npy.with_suffix('.json')}); put the video back there, or score "
                           "the video itself")
    return path


def load_detector(model: str | Path, backend: str = "torch", device: str = "auto") -> Detector:
    """The :class:`Detector` of a run folder (with an exported ``backend``, only the features
    go through an exported graph: :func:`video_extractor`), or, with ``onnxruntime`` or
    ``openvino``, of an export folder made with ``--model RUN``
    (:class:`~stmil.deploy.backend.ExportedDetector`: its graphs compute features and scores)."""
    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch" or not (Path(model) / MANIFEST).is_file():
        return Detector.load(model)
    return ExportedDetector.load(model, device, backend)  # the runtime is imported when it runs


def clip_settings(detector: Detector) -> ExtractSettings:
    """How the run's videos were cut into clips; :class:`ConfigError` for a run trained on
    imported features (no network computes them)."""
    detector.check_scores_video()
    c = detector.config
    return ExtractSettings(c.clip_len, c.stride, c.size, c.recorded.get("resample_fps"), c.tail)


def video_extractor(detector: Detector, device: str, backend: str = "torch",
                    exported: str | Path | None = None):
    """The feature extractor and clip settings a run's model was trained with: ``(extractor,
    settings)`` for :func:`~stmil.features.extract.extract_videos`. The feature graph of
    ``exported`` when given, else an export folder's own, else the network through
    ``backend`` (:func:`~stmil.deploy.backend.feature_extractor`: PyTorch at the run's
    precision, or an fp32 graph exported once into stmil's cache)."""
    settings = clip_settings(detector)
    c = detector.config
    own_graph = getattr(detector, "feature_extractor", None)
    if own_graph is not None and exported is None:
        return own_graph(device), settings
    precision = c.recorded.get("precision", "fp32") if backend == "torch" else "fp32"
    return feature_extractor(backend, exported, c.endpoint, c.feature_grid, c.size, c.clip_len,
                             device, precision), settings


def _features_of(paths: Sequence[Path], detector: Detector, device: str,
                 pipeline: PipelineConfig | None, backend: str = "torch",
                 exported: str | Path | None = None
                 ) -> Iterator[tuple[Path, np.ndarray | None, FeatureMeta | None,
                                     BaseException | None]]:
    """Each input's features ``(n_clips, N, C)`` and metadata, or its error: the ``.npy`` files
    in order, then the videos through :func:`~stmil.features.extract.extract_videos` (decode
    workers overlap the model, as in ``stmil extract``), in the order they finish. Videos are
    cut with the clip settings the model was trained on."""
    for path in paths:
        if path.suffix == ".npy":
            try:
                if not path.is_file():
                    raise FeatureError(f"{path}: no such feature file")
                features, meta = load_features(path.parent, path.stem)
                detector.check_features(meta, path)
            except (ValueError, OSError, KeyError) as e:
                yield path, None, None, e
                continue
            yield path, features, meta, None
    videos = [p for p in paths if p.suffix != ".npy"]
    if videos and pipeline is not None and pipeline.engine == "ray":
        if backend != "torch":
            raise ConfigError("--engine ray runs the torch network on its actors; use "
                              "--backend torch with a run folder")
        from stmil.features import ray_engine  # deferred: I3D and Ray, for videos only

        settings, c = clip_settings(detector), detector.config
        network = ray_engine.ActorNetwork(c.endpoint, c.feature_grid,
                                          c.recorded.get("precision", "fp32"))
        yield from ray_engine.extract_videos(videos, network, settings, pipeline, device)
    elif videos:
        from stmil.features.extract import extract_videos  # deferred: I3D, for videos only

        yield from extract_videos(videos, *video_extractor(detector, device, backend, exported),
                                  pipeline)


def score_inputs(
    inputs: Sequence[str | Path],
    run: str | Path,
    out_dir: str | Path,
    threshold: float | None = None,
    overlay: bool = False,
    device: str = "auto",
    progress: bool = True,
    pipeline: PipelineConfig | None = None,
    backend: str = "torch",
    exported: str | Path | None = None,
) -> tuple[list[Path], list[dict]]:
    """Score videos or feature files (``.npy`` with its ``.json``); returns (written, failed),
    both in the order of the inputs.

    Inputs are expanded by :func:`collect_inputs` (mixed folders and two inputs with one stem
    are refused before anything is written). Videos are extracted in the same call by the
    input pipeline of ``stmil extract`` (``pipeline``, default
    :class:`~stmil.features.pipeline_config.PipelineConfig`: 2 decode workers; ``workers=0``
    is serial, with identical scores), with the clip settings the model was trained on. One
    failed input never stops the rest; a model that cannot score stops the whole call.
    ``backend="onnxruntime"`` (or ``"openvino"``): ``run`` is an export folder, whose graphs
    compute the features and scores, or a run folder, whose scorer scores features computed
    by the graph of ``exported`` (default: one exported once into stmil's cache)
    (:func:`load_detector`, :func:`video_extractor`); the decoding and the outputs are the
    same.
    """
    check_threshold(threshold)
    paths = collect_inputs(inputs)
    detector = load_detector(run, backend, device)
    out_dir = check_writable(out_dir)
    written: dict[Path, list[Path]] = {}
    failed: dict[Path, dict] = {}
    results = _features_of(paths, detector, device, pipeline, backend, exported)
    try:
        for path, features, meta, error in tqdm(results, total=len(paths), unit="video",
                                                disable=not progress, leave=False):
            try:
                if error is not None:
                    raise error
                if not np.isfinite(features).all():
                    raise FeatureError(f"{path}: NaN or infinite feature values; extract the "
                                       "video again")
                names = [f"{path.stem}.scores.json", *[f"{path.stem}.overlay.mp4"] * overlay]
                check_can_write(out_dir, names, legacy=_legacy_ours, fix=NOT_OURS)
                source = source_video(path, meta) if overlay and path.suffix == ".npy" else path
                result = score_features(detector, features, meta, meta_clip_ranges(meta),
                                        threshold, where=str(path))
                written[path] = [write_scores(out_dir, path.stem, result)]
                if overlay:
                    from stmil.overlay import render_overlay  # deferred: PyAV, matplotlib

                    written[path].append(render_overlay(
                        source, result, out_dir / f"{path.stem}.overlay.mp4",
                        writer=_write_overlay))
            except ModelError:
                raise  # the model, not this input: the rest would fail the same way
            except (ValueError, OSError, KeyError) as e:
                failed[path] = {"path": str(path), "error": str(e)}
                log.error("%s", f"{path}: {e}" if str(path) not in str(e) else e)
    finally:
        results.close()  # stops the decode workers
    return ([w for p in paths for w in written.get(p, [])],
            [failed[p] for p in paths if p in failed])
