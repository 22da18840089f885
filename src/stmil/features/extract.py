"""Videos -> cuboid feature files: batching, resume and per-video failures.

For a video ``<id>``, builds its features and :class:`~stmil.features.store.FeatureMeta`
and hands both to the store's one writer (:func:`~stmil.features.store.write_features`:
``<id>.npy`` and ``<id>.json`` committed as one unit). A finished video is one the store's
:func:`~stmil.features.store.is_done` accepts, made from the same source with the same settings.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from stmil import __version__, safejson
from stmil.atomic import check_writable, locked, remove_stale_temps
from stmil.cuboids import pool_cuboids
from stmil.device import resolve_device
from stmil.errors import ConfigError, OutputError, StmilError
from stmil.features.claims import Claim, remove_stale_claims, try_claim
from stmil.features.i3d import endpoint_channels
from stmil.features.motion import MOTION, motion_energy
from stmil.features.pipeline import PipelineConfig, VideoEvent, decode_videos, device_input
from stmil.features.pipeline_config import PRECISIONS, ExtractSettings, check_count
from stmil.features.resize import RESIZE
from stmil.features.store import (
    FeatureMeta,
    check_ours,
    is_done,
    legacy_feature_file,
    read_feature_meta,
    source_identity,
    source_mismatch,
    write_features,
)
from stmil.features.video import VideoError, VideoInfo, failure_reason, iter_clips, probe
from stmil.features.weights import KINETICS400_RGB, load_i3d
from stmil.files import VIDEO_EXTENSIONS, find_videos, unique_files
from stmil.ownership import check_can_write, commit, remove

log = logging.getLogger(__name__)


def check_network(endpoint: str, grid: int, precision: str) -> int:
    """The channels of ``endpoint``'s features; :class:`ConfigError` unless the endpoint is a
    feature map, the grid a whole number >= 1 and the precision one of :data:`PRECISIONS`."""
    if endpoint == "Logits":
        raise ConfigError("cuboid features need a feature-map endpoint, not Logits")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    check_count("grid", grid)
    return endpoint_channels(endpoint)  # ConfigError naming the choices


class FeatureExtractor:
    """Pretrained I3D up to ``endpoint`` followed by G x G cuboid pooling.

    Calling it maps clips ``(B, 3, T, S, S)`` in ``[-1, 1]`` to cuboids ``(B, G*G, C)``.
    ``precision="fp32"`` (default) is exact (relative error ~1e-6 vs the Flax reference);
    ``"bf16"`` runs the network under bfloat16 autocast: about 3x faster on CPUs with AMX and on
    GPUs, at a relative error of about 1e-2 (see benchmarks/NOTES.md).
    """

    backend = "torch"

    def __init__(self, endpoint: str = "Mixed_4e", grid: int = 7, device: str = "auto",
                 precision: str = "fp32"):
        self.channels = check_network(endpoint, grid, precision)
        self.endpoint, self.grid, self.precision = endpoint, grid, precision
        self.device = resolve_device(device)
        self.model = load_i3d(endpoint).to(self.device)
        if self.device.type == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        elif self.device.type == "cuda" and precision == "fp32":
            # PyTorch lets cuDNN convolutions use TF32 by default (~1e-3 error): fp32 means fp32
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False

    @torch.inference_mode()
    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        x = clips.to(self.device, non_blocking=True)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16"):
            fmap = self.model(x)
        return pool_cuboids(fmap.float(), self.grid).cpu()


def native_bf16(device: torch.device) -> bool:
    """Whether bfloat16 runs natively on ``device``: any CUDA device, or a CPU with AMX or
    AVX512-BF16 (read from ``/proc/cpuinfo``). Elsewhere PyTorch emulates it, far slower than
    fp32 (measured: about 25x on an AVX2-only AMD EPYC, benchmarks/NOTES.md)."""
    if device.type != "cpu":
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return True  # cannot tell: do not warn
    return "amx_bf16" in flags or "avx512_bf16" in flags


def extract_video(
    path: Path | str,
    extractor: FeatureExtractor,
    settings: ExtractSettings | None = None,
    on_clips: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, FeatureMeta]:
    """Features of one video: ``(n_clips, G*G, C)`` float16 and its metadata, from
    batches of this video's clips alone (as :func:`extract_videos` gives for one video).

    Raises :class:`VideoError` when the video cannot be read or is shorter than one clip.
    """
    s = model_settings(settings, extractor)
    s.check_grid(extractor.grid)  # a run's recorded settings
    path = Path(path)
    info = probe(path)
    source = source_identity(path)
    chunks: list[np.ndarray] = []
    motion: list[np.ndarray] = []
    stats: dict = {}
    for batch in iter_clips(path, s.clip_len, s.stride, s.size, s.fps, s.tail, s.batch_size,
                            info=info, stats=stats):
        feats = extractor(batch.clips)
        if not torch.isfinite(feats).all():
            raise VideoError(path, "non-finite features (NaN or Inf)")
        chunks.append(feats.numpy().astype(np.float16))
        motion.append(motion_energy(batch.clips, extractor.grid))
        if on_clips:
            on_clips(len(batch.starts))
    if not chunks:
        raise VideoError(
            path, f"shorter than one clip ({stats.get('n_sampled', 0)} frames < {s.clip_len})"
        )
    array = np.concatenate(chunks)
    return array, feature_meta(source, info, stats, s, extractor, np.concatenate(motion))


def feature_meta(source: dict, info: VideoInfo, stats: dict, s: ExtractSettings,
                 extractor: FeatureExtractor, motion: np.ndarray) -> FeatureMeta:
    """A feature file's metadata (before the array's size and sha256 are added).

    ``source`` is :func:`~stmil.features.store.source_identity` of the video taken before
    decoding, ``stats`` the ``n_frames`` that :func:`~stmil.features.video.iter_clips`
    reported, ``motion`` the clips' motion energy ``(n_clips, G*G)``
    (:func:`~stmil.features.motion.motion_energy`).
    """
    return FeatureMeta(
        **source, fps=s.fps or info.fps, source_fps=info.fps, n_frames=stats["n_frames"],
        width=info.width, height=info.height, rotation=info.rotation, clip_len=s.clip_len,
        stride=s.stride,
        size=s.size, grid=extractor.grid, endpoint=extractor.endpoint,
        precision=extractor.precision, backend=recorded_backend(extractor), tail=s.tail,
        n_clips=int(motion.shape[0]),
        channels=extractor.channels, dtype="float16", resize=RESIZE,
        weights=KINETICS400_RGB.name, weights_sha256=KINETICS400_RGB.sha256,
        stmil_version=__version__, motion_rule=MOTION, motion=motion)


def model_settings(settings: ExtractSettings | None,
                   extractor: FeatureExtractor) -> ExtractSettings:
    """``settings`` (default :class:`ExtractSettings`) with the batch decided for
    ``extractor``'s device (:meth:`ExtractSettings.for_model`)."""
    return (settings or ExtractSettings()).for_model(extractor.device.type)


def recorded_backend(extractor: FeatureExtractor) -> str | None:
    """What a feature file records as its ``backend``: None for PyTorch (as every file before
    backends), else the runtime's name."""
    return None if extractor.backend == "torch" else extractor.backend


def legacy_ours(path: Path) -> bool:
    """Whether a file of a folder from before ledgers is stmil's (the old test): a failure
    list (:func:`read_failures`), or a feature file
    (:func:`~stmil.features.store.legacy_feature_file`)."""
    if path.name == FAILURES:
        read_failures(path)
        return True
    return legacy_feature_file(path)


def settings_mismatch(meta: FeatureMeta, s: ExtractSettings,
                      extractor: FeatureExtractor) -> str:
    """The first recorded setting that differs from this run's (``"stride 16 (now 8)"``), or ''."""
    now = {"clip_len": s.clip_len, "stride": s.stride, "size": s.size, "tail": s.tail,
           "fps": s.fps or meta.source_fps, "grid": extractor.grid,
           "endpoint": extractor.endpoint, "weights_sha256": KINETICS400_RGB.sha256,
           "precision": extractor.precision, "backend": recorded_backend(extractor),
           "resize": RESIZE}
    for key, value in now.items():
        if getattr(meta, key) != value:
            return f"{key} {getattr(meta, key)!r} (now {value!r})"
    return ""


def expand_inputs(inputs: Iterable[Path | str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files and folders (recursively) into video paths.

    Returns the videos, each file once (:func:`~stmil.files.unique_files`: a file named twice,
    or by a symlink and its target, is extracted once), and the failures as ``(path,
    reason)``: inputs that do not exist, and folders that hold no video.
    """
    videos: list[Path] = []
    failures: list[tuple[str, str]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = find_videos(item)
            if not found:
                failures.append((str(item), f"no videos found in {item} (looked for "
                                            f"{', '.join(VIDEO_EXTENSIONS)})"))
            videos += found
        elif item.exists():
            videos.append(item)
        else:
            failures.append((str(item), "no such file or folder"))
    return unique_files(videos), failures


def _failure(path: Path | str, reason: str) -> dict:
    """A ``failures.json`` entry: the absolute path and the reason, kept apart."""
    return {"path": os.path.abspath(path), "error": reason}


FAILURES = "failures.json"
#: Video ids whose outputs would take the name of a file stmil keeps in the folder.
RESERVED_IDS = frozenset({FAILURES.removesuffix(".json")})


def read_failures(path: Path | str) -> list[dict]:
    """The entries of a ``failures.json``; ``[]`` when absent.

    :class:`OutputError` naming the file when it is not a list of ``{"path", "error"}``
    strings (then it is not stmil's, and is never overwritten).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    fix = "move it away or use another output folder"
    try:
        entries = safejson.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise OutputError(f"{path}: not a stmil failure list (not valid JSON: {e}); {fix}") from e
    if not isinstance(entries, list) or not all(
        isinstance(f, dict) and set(f) == {"path", "error"}
        and all(isinstance(v, str) for v in f.values()) for f in entries
    ):
        raise OutputError(f"{path}: not a stmil failure list (a JSON list of "
                          f'{{"path": ..., "error": ...}} is expected); {fix}')
    return entries


def record_failures(out_dir: Path | str, processed: Iterable[Path | str],
                    failed: Sequence[dict]) -> list[dict]:
    """Merge this run's failures into ``out_dir/failures.json``; return the merged list.

    Entries for paths this run ``processed`` are replaced by its ``failed`` entries (a path
    that now succeeded or was skipped loses its entry); entries of other paths, from other
    runs, are kept. An empty result removes the file. The read-merge-write runs under an
    exclusive ``fcntl`` lock on ``out_dir``, so concurrent runs lose no entries.
    """
    out_dir = Path(out_dir)
    path = out_dir / FAILURES
    done = {os.path.abspath(p) for p in processed} | {f["path"] for f in failed}
    with locked(out_dir):
        merged = [f for f in read_failures(path) if f["path"] not in done] + list(failed)
        text = json.dumps(merged, indent=1) + "\n"
        if merged:
            commit(out_dir, [(path, lambda t: t.write_text(text, encoding="utf-8"))],
                   "extract", legacy=legacy_ours)
        elif os.path.lexists(path):
            remove(out_dir, FAILURES, legacy=legacy_ours)
    return merged


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; :class:`ConfigError` otherwise."""
    parts = str(text).split("/")
    try:
        i, n = (int(x) for x in parts)
    except ValueError:
        i, n = -1, 0
    if len(parts) != 2 or not 0 <= i < n:
        raise ConfigError(f"--shard must be I/N with 0 <= I < N (e.g. 0/2 and 1/2 for two "
                          f"processes), got {text!r}")
    return i, n


@dataclass
class ExtractSummary:
    """What a batch extraction did. ``claimed``: videos left to another live process that
    held their claim (see :mod:`stmil.features.claims`)."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    claimed: list[str] = field(default_factory=list)
    clips: int = 0
    seconds: float = 0.0
    unrecorded: str = ""  # why failures.json could not be written (a full disk), or ''

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        others = f", {len(self.claimed)} left to other runs" if self.claimed else ""
        return (f"{len(self.done)} done, {len(self.skipped)} skipped, {len(self.failed)} failed"
                f"{others}; {self.clips} clips in {self.seconds:.1f}s "
                f"({self.clips_per_s:.2f} clips/s)")


@dataclass(eq=False)
class _Job:
    """One video on its way through the pipeline (the consumer's state)."""

    path: Path
    vid: str
    source: dict
    claim: Claim | None = None
    chunks: list[np.ndarray] = field(default_factory=list)
    motion: list[np.ndarray] = field(default_factory=list)
    error: BaseException | None = None


class _ClipQueue:
    """Model input not yet run, oldest first: ``(job, clips (n, 3, T, H, W))`` per decoded
    batch. :meth:`run` feeds the oldest ``batch_size`` clips (across videos) to the model and
    files each video's features and motion energy in its job."""

    def __init__(self, extractor: FeatureExtractor, batch_size: int,
                 on_clips: Callable[[int], None] | None) -> None:
        self.items: list[tuple[_Job, torch.Tensor]] = []
        self.extractor, self.batch_size, self.on_clips = extractor, batch_size, on_clips

    def clips(self) -> int:
        return sum(len(x) for _, x in self.items)

    def busy(self) -> set[_Job]:
        """The videos with clips still waiting for the model."""
        return {job for job, _ in self.items}

    def drop(self, job: _Job) -> None:
        """Forget ``job``'s waiting clips (its video failed: they are of no use)."""
        self.items[:] = [(j, x) for j, x in self.items if j is not job]

    def run(self, pad: bool = False) -> None:
        """One model call on the oldest queued clips (at most ``batch_size``), padded to
        ``batch_size`` with copies of the last clip when ``pad``."""
        parts, n, size = [], 0, self.batch_size
        while self.items and n < size:
            job, x = self.items[0]
            k = min(len(x), size - n)
            parts.append((job, x[:k]))
            self.items[0] = (job, x[k:])
            if k == len(x):
                self.items.pop(0)
            n += k
        x = parts[0][1] if len(parts) == 1 else torch.cat([x for _, x in parts])
        if pad and n < size:
            x = torch.cat([x, x[-1:].expand(size - n, *x.shape[1:])])
        feats = self.extractor(x)[:n]
        for job, x in parts:
            f, feats = feats[:len(x)], feats[len(x):]
            if job.error is not None:
                continue
            if not torch.isfinite(f).all():
                job.error = VideoError(job.path, "non-finite features (NaN or Inf)")
                continue
            job.chunks.append(f.numpy().astype(np.float16))
            job.motion.append(motion_energy(x, self.extractor.grid))
            if self.on_clips:
                self.on_clips(len(x))


_Result = tuple[_Job, np.ndarray | None, FeatureMeta | None, BaseException | None]
"""One video's end of extraction: ``(job, features, meta, None)`` or
``(job, None, None, error)``."""


def _features(
    jobs: Iterable[tuple[_Job, Path]],
    extractor: FeatureExtractor,
    s: ExtractSettings,
    pipeline: PipelineConfig,
    on_clips: Callable[[int], None] | None = None,
) -> Iterator[_Result]:
    """Run ``jobs`` through the input pipeline and the model: per video, in the order videos
    end, ``(job, array, meta, None)`` or ``(job, None, None, error)``.

    When ``pipeline`` mixes videos (by default on a GPU), the model takes batches of exactly
    ``s.batch_size`` clips, filled across videos (a video's last clips wait for the next
    video's first); the run's final batch is padded with copies of its last clip when more
    than one video took part, so every model call of such a run has one shape and a clip's
    features do not depend on which videos it shared a batch with (the worker count cannot
    change them). At most ``2 * batch_size - 1`` clips of model input wait. Otherwise each
    decoded batch is one model call (per-video batches, as :func:`extract_video` makes).
    Closing the generator stops the decode workers.
    """
    events = decode_videos(jobs, s, pipeline, extractor.device)
    queue = _ClipQueue(extractor, s.batch_size, on_clips)
    ended: list[VideoEvent] = []  # videos decoded, some of whose clips are still queued
    n_videos = 0
    full = s.batch_size if pipeline.mixes_videos(extractor.device.type) else 1
    try:
        for event in events:
            job = event.job
            if event.kind == "batch":
                if job.error is None:
                    queue.items.append((job, device_input(event.batch, s.size,
                                                          extractor.device)))
                while queue.clips() >= full:
                    queue.run()
                continue
            n_videos += 1
            if event.kind == "error":  # its clips waiting for the model are of no use
                queue.drop(job)
            ended.append(event)
            yield from _ended_results(ended, queue, s, extractor)
        while queue.items:
            queue.run(pad=n_videos > 1)
        yield from _ended_results(ended, queue, s, extractor)
    finally:
        events.close()


def _ended_results(ended: list[VideoEvent], queue: _ClipQueue, s: ExtractSettings,
                   extractor: FeatureExtractor) -> Iterator[_Result]:
    """Take from ``ended`` the videos none of whose clips still wait in ``queue``, and yield
    each one's result: its features and metadata, or its error."""
    busy = queue.busy()
    done = [e for e in ended if e.job not in busy]
    ended[:] = [e for e in ended if e.job in busy]
    for event in done:
        job = event.job
        error = job.error or event.error
        if error is None and not job.chunks:
            error = VideoError(job.path, f"shorter than one clip "
                               f"({event.stats.get('n_sampled', 0)} frames < {s.clip_len})")
        if error is not None:
            job.chunks.clear()
            job.motion.clear()
            yield job, None, None, error
            continue
        array, motion = np.concatenate(job.chunks), np.concatenate(job.motion)
        job.chunks.clear()
        job.motion.clear()
        yield job, array, feature_meta(job.source, event.info, event.stats, s, extractor,
                                       motion), None


def extract_videos(
    videos: Iterable[Path | str],
    extractor: FeatureExtractor,
    settings: ExtractSettings | None = None,
    pipeline: PipelineConfig | None = None,
    on_clips: Callable[[int], None] | None = None,
) -> Iterator[tuple[Path, np.ndarray | None, FeatureMeta | None, BaseException | None]]:
    """Features of many videos through the parallel input pipeline, nothing written.

    Yields, per video and in the order they finish, ``(path, array, meta, None)`` as
    :func:`extract_video` returns them, or ``(path, None, None, error)`` for a video that
    failed (a :class:`~stmil.errors.StmilError` or ``OSError`` naming the file: the caller
    decides; any other exception is a bug and is raised). ``stmil score`` over a folder and
    :func:`extract_many` use this path.
    """
    s = model_settings(settings, extractor)
    s.check_grid(extractor.grid)  # a run's recorded settings
    for job, array, meta, error in _features(source_jobs(videos), extractor, s,
                                             pipeline or PipelineConfig(), on_clips):
        if error is not None and not isinstance(error, (StmilError, OSError)):
            raise error
        yield job.path, array, meta, error


def source_jobs(videos: Iterable[Path | str]) -> Iterator[tuple[_Job, Path]]:
    """A job per video for :func:`extract_videos` (nothing claimed or written): its source
    identity, or the error that reading it gave."""
    for path in map(Path, videos):
        try:
            job = _Job(path, path.stem, source_identity(path))
        except OSError as e:
            job = _Job(path, path.stem, {}, error=VideoError(path, failure_reason(e, path)))
        yield job, path


def extract_many(
    inputs: Iterable[Path | str],
    out_dir: Path | str,
    extractor: FeatureExtractor,
    settings: ExtractSettings | None = None,
    overwrite: bool = False,
    progress: bool = True,
    pipeline: PipelineConfig | None = None,
    shard: tuple[int, int] | None = None,
) -> ExtractSummary:
    """Extract every video under ``inputs`` into ``out_dir``; one failure never stops the rest.

    Finished videos are skipped unless ``overwrite``; a finished output made from another
    source file (same id) or with other settings is a failure naming both. Failures are
    logged (``stmil.features.extract``, level ERROR) and merged into ``out_dir/failures.json`` (see
    :func:`record_failures`). Temporary files of killed earlier runs are removed first.

    Videos are decoded by the parallel input pipeline (``pipeline``, default
    :class:`~stmil.features.pipeline_config.PipelineConfig`: 2 decode workers; ``workers=0``
    is the serial path, with identical outputs). ``shard=(i, n)`` keeps every n-th video of
    the input list starting at the i-th (all processes must be given the same inputs);
    independently, each video is claimed (``<id>.claim``, :mod:`stmil.features.claims`)
    while it is extracted, so processes sharing a folder never extract one video twice.
    ``pipeline.engine == "ray"`` is run by :func:`stmil.features.ray_engine.extract_many`
    (the same :class:`ExtractRun`, over a Ray cluster).
    """
    s = model_settings(settings, extractor)
    pipeline = pipeline or PipelineConfig()
    run = ExtractRun.open(inputs, out_dir, extractor, s, overwrite, progress, shard)
    return run.drive(_features(run.jobs(), extractor, s, pipeline,
                               on_clips=run.clip_bar.update))


@dataclass(eq=False)
class ExtractRun:
    """One ``extract`` over one output folder, whatever runs the model (the local pipeline, or
    :mod:`stmil.features.ray_engine`): the checks before any work, the claim and resume checks
    of each video (:meth:`jobs`), the one commit of each result (:meth:`commit`), and the
    failure list at the end (:meth:`finish`)."""

    out_dir: Path
    videos: list[Path]
    extractor: FeatureExtractor
    s: ExtractSettings
    overwrite: bool
    summary: ExtractSummary
    bar: tqdm
    clip_bar: tqdm
    pending: set[_Job] = field(default_factory=set)  # claimed, not yet committed or failed
    start: float = field(default_factory=time.perf_counter)

    @classmethod
    def open(cls, inputs: Iterable[Path | str], out_dir: Path | str,
             extractor: FeatureExtractor, s: ExtractSettings, overwrite: bool = False,
             progress: bool = True, shard: tuple[int, int] | None = None) -> ExtractRun:
        """Expand ``inputs`` (keeping ``shard``'s videos), check ``out_dir`` (writable, its
        failure list stmil's), remove stale temporaries and claims, log the missing inputs."""
        s.check_grid(extractor.grid, extractor.endpoint)  # new features: the map rule
        out_dir = Path(out_dir)
        videos, missing = expand_inputs(inputs)
        if shard is not None:
            i, n = parse_shard(f"{shard[0]}/{shard[1]}")
            videos = videos[i::n]
        check_writable(out_dir)
        read_failures(out_dir / FAILURES)  # refuse a foreign failures.json before any work
        check_can_write(out_dir, [FAILURES], legacy_ours)
        remove_stale_temps(out_dir)
        remove_stale_claims(out_dir)
        if extractor.precision == "bf16" and not native_bf16(extractor.device):
            log.warning("this CPU has neither AMX nor AVX512-BF16, so bf16 is emulated and much "
                        "slower than fp32 here; use --precision fp32")
        summary = ExtractSummary(failed=[_failure(p, reason) for p, reason in missing])
        for p, reason in missing:
            log.error("%s", reason if reason.startswith("no videos found") else f"{p}: {reason}")
        return cls(out_dir, videos, extractor, s, overwrite, summary,
                   tqdm(total=len(videos), unit="video", disable=not progress, leave=False),
                   tqdm(unit="clip", disable=not progress, leave=False))

    def fail(self, path: Path, e: BaseException) -> None:
        """Record and log the failure of one video."""
        reason = failure_reason(e, path)
        self.summary.failed.append(_failure(path, reason))
        log.error("%s: %s", path, reason)

    def jobs(self) -> Iterator[tuple[_Job, Path]]:
        """Claim and check each video; yield those to extract (each claimed, in
        :attr:`pending` until :meth:`commit`)."""
        ids: dict[str, Path] = {}
        for path in self.videos:
            vid, claim = path.stem, None
            try:
                if vid in ids:
                    raise VideoError(path, f"same id {vid!r} as {ids[vid]}; rename one of them")
                if vid in RESERVED_IDS:
                    raise VideoError(path, f"video id {vid!r} would write {vid}.json, the name "
                                     "of this folder's failure list; rename the video")
                ids[vid] = path
                claim = try_claim(self.out_dir, vid)
                if claim is None:
                    self.summary.claimed.append(vid)
                    self.bar.update(1)
                    continue
                check_ours(self.out_dir, vid, (".json",))
                if not self.overwrite and _finished(self.out_dir, path, vid, self.s,
                                                    self.extractor):
                    self.summary.skipped.append(vid)
                    claim.release()
                    self.bar.update(1)
                    continue
                check_ours(self.out_dir, vid, (".npy",))  # hashed only when it is replaced
                job = _Job(path, vid, source_identity(path), claim)
                self.pending.add(job)
            except (StmilError, OSError) as e:
                if claim is not None:
                    claim.release()
                self.fail(path, e)
                self.bar.update(1)
                continue
            yield job, path

    def commit(self, job: _Job, array: np.ndarray | None, meta: FeatureMeta | None,
               error: BaseException | None) -> None:
        """Write one video's result through the store's one writer (or record its error),
        then release its claim."""
        try:
            if error is not None:
                raise error
            write_features(self.out_dir, job.vid, array, meta)
            self.summary.done.append(job.vid)
            self.summary.clips += array.shape[0]
        except (StmilError, OSError) as e:
            self.fail(job.path, e)
        finally:  # released before it leaves pending: an interrupt between leaks nothing
            if job.claim is not None:
                job.claim.release()
            self.pending.discard(job)
            self.bar.update(1)

    def drive(self, results: Iterator[_Result]) -> ExtractSummary:
        """Commit each of ``results`` (an engine's stream of :meth:`jobs`' results) as it
        comes; then stop the engine (closing ``results``), release what is still claimed and
        write the failure list (:meth:`finish`)."""
        try:
            for job, array, meta, error in results:
                self.commit(job, array, meta, error)
        finally:
            results.close()  # stops and joins the engine's decode workers or tasks
            self.close()
        return self.finish()

    def close(self) -> None:
        """Release the claims of videos not committed (an interrupted run: other processes
        may take them) and close the progress bars."""
        for job in list(self.pending):
            if job.claim is not None:
                job.claim.release()
        self.pending.clear()
        self.bar.close()
        self.clip_bar.close()

    def finish(self) -> ExtractSummary:
        """Merge this run's failures into ``failures.json``; the summary (with ``unrecorded``,
        the reason, when a full disk keeps the list from being written: the batch's outcome
        still stands and is reported)."""
        summary = self.summary
        summary.seconds = time.perf_counter() - self.start
        handled = set(summary.done) | set(summary.skipped)
        processed = [p for p in self.videos if p.stem in handled] + [
            f["path"] for f in summary.failed]
        try:
            record_failures(self.out_dir, processed, summary.failed)
        except OSError as e:
            summary.unrecorded = failure_reason(e, self.out_dir)
            log.error("%s (so the failures above are not recorded)", summary.unrecorded)
        return summary


def _finished(out_dir: Path, path: Path, vid: str, s: ExtractSettings,
              extractor: FeatureExtractor) -> bool:
    """Whether ``vid`` is finished, from this very source and with these settings; a finished
    output from another source or other settings is a :class:`VideoError` naming both."""
    if not is_done(out_dir, vid):
        return False
    json_path = out_dir / f"{vid}.json"
    meta = read_feature_meta(json_path)
    diff = source_mismatch(meta.identity, path)
    if diff:
        raise VideoError(path, f"the finished features {json_path} {diff}; pass --overwrite "
                         "to replace them, or use another output folder")
    diff = settings_mismatch(meta, s, extractor)
    if diff:
        raise VideoError(path, f"{json_path} was made with other settings: {diff}; pass "
                         "--overwrite to replace it, or use another output folder")
    return True
