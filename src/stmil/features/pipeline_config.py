"""Settings of the input pipeline (:mod:`stmil.features.pipeline`) and the checks of their
values, importable without torch (the CLI builds its flags from them)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from stmil.errors import ConfigError

RESIZE_ON = ("auto", "worker", "device")
ENGINES = ("local", "ray")  # what runs extraction: this process's pipeline, or a Ray cluster
TAIL_POLICIES = ("drop", "pad")  # a trailing partial clip: dropped, or padded with its last frame
PRECISIONS = ("fp32", "bf16")  # I3D's compute precision
FPS_RANGE = (0.01, 1000.0)  # resampling rates outside this are mistakes, not videos
MAX_SIZE = 1024  # frame side after resizing: I3D's weights are for 224; past 1024 is a typo


def check_fps(fps: float | None) -> float | None:
    """``fps`` unchanged, or ``None`` (the native rate); :class:`ConfigError` if not sane.

    A resampling rate must be a finite number from 0.01 to 1000 frames per second: a tiny
    rate overflows the frame arithmetic and an infinite one would never advance.
    """
    if fps is None:
        return None
    lo, hi = FPS_RANGE
    if (isinstance(fps, bool) or not isinstance(fps, (int, float))
            or not (math.isfinite(fps) and lo <= fps <= hi)):
        raise ConfigError(f"fps must be a number from {lo:g} to {hi:g} frames per second "
                          f"(or unset for the native rate), got {fps!r}")
    return fps


def check_count(name: str, value: object) -> int:
    """``value`` if it is a whole number >= 1 (not a bool), else :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
    return value


def check_size(size: object) -> int:
    """``size`` (the side frames are resized to) if it is a whole number from 1 to
    :data:`MAX_SIZE`, else :class:`ConfigError`.

    The bound is well above any useful size (I3D's weights were trained at 224) and below the
    memory cliff: one 16-frame clip at 1024 x 1024 is already 200 MB of float32 pixels, and a
    larger size overflows torch's storage arithmetic (fuzz 0:4048).
    """
    if check_count("size", size) > MAX_SIZE:
        raise ConfigError(f"size must be at most {MAX_SIZE} pixels (I3D's weights were trained "
                          f"at 224; a larger frame only costs memory), got {size!r}")
    return size


@dataclass(frozen=True)
class PipelineConfig:
    """How the input side runs; never recorded in feature files (results do not depend on it).

    ``workers``: decode threads (0: serial, in the calling thread). ``queue_size``: most clip
    batches waiting for the model (default ``2 * workers``). ``resize_on``: ``"auto"`` resizes
    on the model's device when it is a GPU, in the workers otherwise. ``mix_videos``: fill
    model batches across videos, so short videos do not leave a GPU half-idle (``None``: on a
    GPU only; on a CPU a clip costs about the same in a batch of 3 as of 8, while the run's
    padded last batch costs up to ``batch_size - 1`` clips: benchmarks/NOTES.md). Per-clip
    fp32 results of mixed and per-video batches differ by less than 1e-6 relative, from the
    batch shape alone (tests/features/test_pipeline.py).

    ``engine``: ``"local"`` (this process: decode threads and the model) or ``"ray"``
    (:mod:`stmil.features.ray_engine`: decode tasks and extractor actors on a Ray cluster;
    ``workers`` and ``queue_size`` are then Ray's business). ``ray_address``: the cluster to
    join (``ray://host:10001`` or ``host:6379``; default: ``RAY_ADDRESS``, else a local Ray
    instance started for the run). ``split_clips``: the Ray engine splits a video of more clips
    into decode tasks of this many (rounded up to whole batches), so one long video does not
    hold one decode worker for the whole job.
    """

    workers: int = 2
    queue_size: int | None = None
    resize_on: str = "auto"
    mix_videos: bool | None = None
    engine: str = "local"
    ray_address: str | None = None
    split_clips: int = 512

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or \
                self.workers < 0:
            raise ConfigError(f"workers must be a whole number >= 0, got {self.workers!r}")
        if self.queue_size is not None and (
                isinstance(self.queue_size, bool) or not isinstance(self.queue_size, int)
                or self.queue_size < 1):
            raise ConfigError(f"queue_size must be a whole number >= 1, got "
                              f"{self.queue_size!r}")
        if self.mix_videos not in (None, True, False):
            raise ConfigError(f"mix_videos must be None, True or False, got {self.mix_videos!r}")
        if self.resize_on not in RESIZE_ON:
            raise ConfigError(f"resize_on must be one of {', '.join(RESIZE_ON)}, got "
                              f"{self.resize_on!r}")
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.ray_address is not None and (
                not isinstance(self.ray_address, str) or not self.ray_address.strip()):
            raise ConfigError(f"ray_address must be a Ray cluster address (host:6379 or "
                              f"ray://host:10001), got {self.ray_address!r}")
        if self.ray_address is not None and self.engine != "ray":
            raise ConfigError("ray_address is the Ray cluster of engine ray; add --engine ray "
                              "(or drop --ray-address)")
        check_count("split_clips", self.split_clips)

    def mixes_videos(self, device_type: str) -> bool:
        """Whether model batches are filled across videos (``None``: on a GPU)."""
        return device_type != "cpu" if self.mix_videos is None else self.mix_videos

    def resize_in_worker(self, device_type: str) -> bool:
        """Whether workers resize (else the consumer does, on the model's device)."""
        if self.resize_on == "auto":
            return device_type == "cpu"
        return self.resize_on == "worker"


@dataclass
class ExtractSettings:
    """How clips are cut; written into every feature file's metadata and read by the decode
    workers."""

    clip_len: int = 16
    stride: int = 16
    size: int = 224
    fps: float | None = None
    tail: str = "drop"
    batch_size: int = 8

    def __post_init__(self) -> None:
        for name in ("clip_len", "stride", "batch_size"):
            check_count(name, getattr(self, name))
        check_size(self.size)
        self.fps = check_fps(self.fps)
        if self.tail not in TAIL_POLICIES:
            raise ConfigError(f"tail must be one of {', '.join(TAIL_POLICIES)}, "
                              f"got {self.tail!r}")

    def check_grid(self, grid: int) -> None:
        """:class:`ConfigError` unless a G x G grid fits frames resized to ``size`` pixels."""
        if grid > self.size:
            raise ConfigError(f"grid {grid} is larger than the frame size {self.size}: each "
                              f"cuboid needs at least one pixel; use --grid {self.size} or less")
