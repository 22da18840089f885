"""Videos -> cuboid feature files: batching, resume, atomic writes and per-video failures.

For a video ``<id>``, writes ``<id>.npy`` (float16, ``(n_clips, G*G, C)``) and ``<id>.json``
(metadata). The JSON is written last, so its presence marks a finished video.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from stmil import __version__
from stmil.atomic import atomic_write, check_writable
from stmil.cuboids import pool_cuboids
from stmil.datasets.folder import find_videos as folder_videos
from stmil.device import resolve_device
from stmil.errors import ConfigError
from stmil.i3d import endpoint_channels
from stmil.video import VIDEO_EXTENSIONS, VideoError, iter_clips, probe
from stmil.weights import KINETICS400_RGB, load_i3d

PRECISIONS = ("fp32", "bf16")


class FeatureExtractor:
    """Pretrained I3D up to ``endpoint`` followed by G x G cuboid pooling.

    Calling it maps clips ``(B, 3, T, S, S)`` in ``[-1, 1]`` to cuboids ``(B, G*G, C)``.
    ``precision="fp32"`` (default) is exact (relative error ~1e-6 vs the Flax reference);
    ``"bf16"`` runs the network under bfloat16 autocast: about 3x faster on CPUs with AMX and on
    GPUs, at a relative error of about 1e-2 (see benchmarks/NOTES.md).
    """

    def __init__(self, endpoint: str = "Mixed_4e", grid: int = 7, device: str = "auto",
                 precision: str = "fp32"):
        if endpoint == "Logits":
            raise ConfigError("cuboid features need a feature-map endpoint, not Logits")
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.endpoint, self.grid, self.precision = endpoint, grid, precision
        self.channels = endpoint_channels(endpoint)
        self.device = resolve_device(device)
        self.model = load_i3d(endpoint).to(self.device)
        if self.device.type == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last_3d)

    @torch.inference_mode()
    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        x = clips.to(self.device, non_blocking=True)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16"):
            fmap = self.model(x)
        return pool_cuboids(fmap.float(), self.grid).cpu()


@dataclass
class ExtractSettings:
    """How clips are cut; written into every feature file's metadata."""

    clip_len: int = 16
    stride: int = 16
    size: int = 224
    fps: float | None = None
    tail: str = "drop"
    batch_size: int = 8

    def __post_init__(self) -> None:
        for name in ("clip_len", "stride", "size", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.fps is not None and self.fps <= 0:
            raise ConfigError(f"fps must be positive, got {self.fps}")


def extract_video(
    path: Path | str,
    extractor: FeatureExtractor,
    settings: ExtractSettings | None = None,
    on_clips: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, dict]:
    """Features of one video: ``(n_clips, G*G, C)`` float16 and its metadata dict.

    Raises :class:`VideoError` when the video cannot be read or is shorter than one clip.
    """
    s = settings or ExtractSettings()
    path = Path(path)
    info = probe(path)
    chunks: list[np.ndarray] = []
    stats: dict = {}
    for batch in iter_clips(path, s.clip_len, s.stride, s.size, s.fps, s.tail, s.batch_size,
                            info=info, stats=stats):
        feats = extractor(batch.clips)
        if not torch.isfinite(feats).all():
            raise VideoError(path, "non-finite features (NaN or Inf)")
        chunks.append(feats.numpy().astype(np.float16))
        if on_clips:
            on_clips(len(batch.starts))
    if not chunks:
        raise VideoError(
            path, f"shorter than one clip ({stats.get('n_sampled', 0)} frames < {s.clip_len})"
        )
    array = np.concatenate(chunks)
    meta = {
        "source": str(path),
        "fps": s.fps or info.fps,
        "source_fps": info.fps,
        "n_frames": stats["n_frames"],
        "width": info.width,
        "height": info.height,
        "clip_len": s.clip_len,
        "stride": s.stride,
        "size": s.size,
        "grid": extractor.grid,
        "endpoint": extractor.endpoint,
        "precision": extractor.precision,
        "tail": s.tail,
        "n_clips": int(array.shape[0]),
        "channels": extractor.channels,
        "dtype": "float16",
        "resize": "bilinear-antialias",
        "weights": KINETICS400_RGB.name,
        "weights_sha256": KINETICS400_RGB.sha256,
        "stmil_version": __version__,
    }
    return array, meta


def write_features(out_dir: Path, video_id: str, array: np.ndarray, meta: dict) -> None:
    """Atomically write ``<id>.npy`` then ``<id>.json``."""

    def save_npy(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    def save_json(tmp: Path) -> None:
        tmp.write_text(json.dumps(meta, indent=1) + "\n")

    atomic_write(out_dir / f"{video_id}.npy", save_npy)
    atomic_write(out_dir / f"{video_id}.json", save_json)


def is_done(out_dir: Path, video_id: str) -> bool:
    """A video is finished when its JSON parses and its array has the recorded clip count."""
    try:
        meta = json.loads((out_dir / f"{video_id}.json").read_text())
        arr = np.load(out_dir / f"{video_id}.npy", mmap_mode="r")
        return arr.shape[0] == meta["n_clips"]
    except (OSError, ValueError, KeyError):
        return False


def settings_mismatch(meta: dict, s: ExtractSettings, extractor: FeatureExtractor) -> str:
    """The first recorded setting that differs from this run's (``"stride 16 (now 8)"``), or ''."""
    now = {"clip_len": s.clip_len, "stride": s.stride, "size": s.size, "tail": s.tail,
           "fps": s.fps or meta.get("source_fps"), "grid": extractor.grid,
           "endpoint": extractor.endpoint, "weights_sha256": KINETICS400_RGB.sha256,
           "precision": extractor.precision}
    for key, value in now.items():
        if meta.get(key) != value:
            return f"{key} {meta.get(key)!r} (now {value!r})"
    return ""


def find_videos(inputs: Iterable[Path | str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files and folders (recursively) into video paths; missing paths are failures."""
    videos: list[Path] = []
    failures: list[tuple[str, str]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            videos += folder_videos(item, VIDEO_EXTENSIONS)
        elif item.exists():
            videos.append(item)
        else:
            failures.append((str(item), "no such file or folder"))
    return videos, failures


@dataclass
class ExtractSummary:
    """What a batch extraction did."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    clips: int = 0
    seconds: float = 0.0

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return (f"{len(self.done)} done, {len(self.skipped)} skipped, {len(self.failed)} failed;"
                f" {self.clips} clips in {self.seconds:.1f}s ({self.clips_per_s:.2f} clips/s)")


def extract_many(
    inputs: Iterable[Path | str],
    out_dir: Path | str,
    extractor: FeatureExtractor,
    settings: ExtractSettings | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> ExtractSummary:
    """Extract every video under ``inputs`` into ``out_dir``; one failure never stops the rest.

    Finished videos are skipped unless ``overwrite``. Failures are reported through ``log``
    and written to ``out_dir/failures.json`` (removed when a rerun has none).
    """
    out_dir = Path(out_dir)
    check_writable(out_dir)
    videos, missing = find_videos(inputs)
    summary = ExtractSummary(failed=[{"path": p, "error": r} for p, r in missing])
    for f in summary.failed:
        log(f"error: {f['path']}: {f['error']}")
    ids: dict[str, Path] = {}
    start = time.perf_counter()
    bar = tqdm(total=len(videos), unit="video", disable=not progress, leave=False)
    clip_bar = tqdm(unit="clip", disable=not progress, leave=False)
    for path in videos:
        vid = path.stem
        bar.set_postfix_str(vid[:30])
        try:
            if vid in ids:
                raise VideoError(path, f"same id {vid!r} as {ids[vid]}; rename one of them")
            ids[vid] = path
            if not overwrite and is_done(out_dir, vid):
                meta = json.loads((out_dir / f"{vid}.json").read_text())
                diff = settings_mismatch(meta, settings or ExtractSettings(), extractor)
                if diff:
                    raise VideoError(path, f"{out_dir / vid}.json was made with other settings:"
                                     f" {diff}; overwrite it or use another output folder")
                summary.skipped.append(vid)
                continue
            array, meta = extract_video(path, extractor, settings, on_clips=clip_bar.update)
            write_features(out_dir, vid, array, meta)
            summary.done.append(vid)
            summary.clips += array.shape[0]
        except (VideoError, OSError) as e:
            msg = str(e) if isinstance(e, VideoError) else f"{path}: {e.strerror or e}"
            summary.failed.append({"path": str(path), "error": msg.split(": ", 1)[-1]})
            log(f"error: {msg}")
        finally:
            bar.update(1)
    bar.close()
    clip_bar.close()
    summary.seconds = time.perf_counter() - start
    failures = out_dir / "failures.json"
    if summary.failed:
        atomic_write(failures, lambda t: t.write_text(json.dumps(summary.failed, indent=1)))
    else:
        failures.unlink(missing_ok=True)
    return summary
