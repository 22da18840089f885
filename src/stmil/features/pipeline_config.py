"""Settings of the input pipeline (:mod:`stmil.features.pipeline`) and the checks of their
values, importable without torch (the CLI builds its flags from them)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from stmil.device import DEVICES
from stmil.errors import ConfigError
from stmil.settings import Settings, check, check_number, require, setting

RESIZE_ON = ("auto", "worker", "device")
ENGINES = ("local", "ray")  # what runs extraction: this process's pipeline, or a Ray cluster
TAIL_POLICIES = ("drop", "pad")  # a trailing partial clip: dropped, or padded with its last frame
PRECISIONS = ("fp32", "bf16")  # I3D's compute precision
FPS_RANGE = (0.01, 1000.0)  # resampling rates outside this are mistakes, not videos
MAX_SIZE = 1024  # frame side after resizing: I3D's weights are for 224; past 1024 is a typo
KINETICS_CLASSES = 400


MAX_BATCH = 4096  # clips per forward pass
MAX_CLIP = 10_000  # frames per clip or between clip starts
MAX_WORKERS = 256


def model_batch(device_type: str) -> int:
    """Clips per forward pass when none is given: the fastest measured (benchmarks/NOTES.md,
    "the model's batch"). On a CPU, I3D runs faster per clip in batches of 2 than of 8
    (768x576 video end to end, 2-core EPYC: fp32 0.305 s/clip against 0.357, bf16 0.202
    against 0.277; bf16 at 1 is no faster), and a small batch wastes fewer padded clips at
    the end of a video; a GPU wants larger ones."""
    return 2 if device_type == "cpu" else 8


#: Total spatial stride of I3D at each feature-map endpoint (every strided layer halves the
#: side with TF "SAME" padding, so a ``S x S`` frame gives a ``ceil(S / stride)`` map; tested
#: against the network's output in tests/features/test_weights.py).
ENDPOINT_STRIDES: dict[str, int] = {
    "Conv3d_1a_7x7": 2, "MaxPool3d_2a_3x3": 4, "Conv3d_2b_1x1": 4, "Conv3d_2c_3x3": 4,
    "MaxPool3d_3a_3x3": 8, "Mixed_3b": 8, "Mixed_3c": 8, "MaxPool3d_4a_3x3": 16,
    "Mixed_4b": 16, "Mixed_4c": 16, "Mixed_4d": 16, "Mixed_4e": 16, "Mixed_4f": 16,
    "MaxPool3d_5a_2x2": 32, "Mixed_5b": 32, "Mixed_5c": 32,
}


def map_side(size: int, endpoint: str) -> int:
    """Side of I3D's feature map at ``endpoint`` for ``size x size`` frames (14 for 224 at
    ``Mixed_4e``); ``KeyError`` for a name that is not a feature-map endpoint."""
    return -(-size // ENDPOINT_STRIDES[endpoint])


#: ``--backend`` of ``extract``, ``score`` and ``watch``: PyTorch, or an exported model run by
#: ONNX Runtime (``--format onnx``) or OpenVINO (``--format openvino``).
BACKENDS = ("torch", "onnxruntime", "openvino")
BACKEND_HELP = ("what runs I3D: torch, or a graph exported by stmil export-model run by "
                "onnxruntime or openvino (stmil[onnx] / stmil[openvino]; docs/deploy.md)")
EXPORTED_HELP = ("an export folder (stmil export-model --out) whose feature graph an exported "
                 "--backend runs (default: one exported once into stmil's cache)")


def backend_rules(backend: str, exported: object) -> None:
    """The rule of ``--backend`` and ``--exported``, for every settings class that holds both:
    ``exported`` is the export whose feature graph an exported backend runs; PyTorch runs its
    own network."""
    require(exported is None or backend != "torch",
            "{exported} runs an exported feature graph, which {backend} torch does not: add "
            "{backend} onnxruntime (or openvino), or drop {exported}", "exported", "backend")


def check_fps(fps: float | None) -> float | None:
    """``fps`` unchanged, or ``None`` (the native rate); :class:`ConfigError` if not sane.

    A resampling rate must be a finite number from 0.01 to 1000 frames per second: a tiny
    rate overflows the frame arithmetic and an infinite one would never advance.
    """
    return check(ExtractSettings, "fps", fps)


def check_count(name: str, value: object) -> int:
    """``value`` if it is a whole number >= 1 (not a bool), else :class:`ConfigError`."""
    return check_number(name, value, int, 1)


def check_size(size: object) -> int:
    """``size`` (the side frames are resized to) if it is a whole number from 1 to
    :data:`MAX_SIZE`, else :class:`ConfigError`.

    The bound is well above any useful size (I3D's weights were trained at 224) and below the
    memory cliff: one 16-frame clip at 1024 x 1024 is already 200 MB of float32 pixels, and a
    larger size overflows torch's storage arithmetic (fuzz 0:4048).
    """
    return check(ExtractSettings, "size", size)


@dataclass(frozen=True)
class PipelineConfig(Settings):
    """How the input side runs; never recorded in feature files (results do not depend on it).

    ``workers``: decode threads (0: serial, in the calling thread). ``queue_size``: most clip
    batches waiting for the model (default ``2 * workers``). ``resize_on``: ``"auto"`` resizes
    on the model's device when it is a GPU, in the workers otherwise (the Ray engine, on a CPU:
    wherever fewer bytes travel, :func:`stmil.features.ray_engine.resize_in_task`).
    ``mix_videos``: fill model batches across videos, so short videos do not leave a GPU
    half-idle (``None``: on a GPU only; on a CPU a clip costs about the same in a batch of 3 as
    of 8, while the run's padded last batch costs up to ``batch_size - 1`` clips:
    benchmarks/NOTES.md). Per-clip fp32 results of mixed and per-video batches differ by less
    than 1e-6 relative, from the batch shape alone (tests/features/test_pipeline.py).

    ``engine``: ``"local"`` (this process: decode threads and the model) or ``"ray"``
    (:mod:`stmil.features.ray_engine`: decode tasks and extractor actors on a Ray cluster;
    ``workers`` and ``queue_size`` are then Ray's business). ``ray_address``: the cluster to
    join (``ray://host:10001`` or ``host:6379``; default: ``RAY_ADDRESS``, else a local Ray
    instance started for the run). ``split_clips``: the Ray engine splits a video of more clips
    into decode tasks of this many (rounded up to whole batches), so one long video does not
    hold one decode worker for the whole job.
    """

    workers: int = setting(2, "decode threads overlapping the model; 0: serial (outputs do not "
                           "depend on it)", lo=0, hi=MAX_WORKERS)
    queue_size: int | None = setting(None, "most clip batches waiting for the model", lo=1,
                                     hi=1024, cli=False)
    resize_on: str = setting("auto", "where frames are resized", choices=RESIZE_ON, cli=False)
    mix_videos: bool | None = setting(None, "fill model batches across videos", cli=False)
    engine: str = setting("local", "where videos are processed: local (this process) or ray "
                          "(decode tasks and extractor actors on a Ray cluster; stmil[ray], "
                          "docs/scale.md)", choices=ENGINES)
    ray_address: str | None = setting(None, "the Ray cluster to join (host:6379 or "
                                      "ray://host:10001; default: RAY_ADDRESS, else a local "
                                      "instance started for the run)")
    split_clips: int = setting(512, "the Ray engine's decode task size for long videos",
                               unit="clips", lo=1, hi=10_000_000, cli=False)

    def rules(self) -> None:
        address = self.ray_address
        require(address is None or bool(address.strip()),
                f"{{ray_address}} must be a Ray cluster address (host:6379 or "
                f"ray://host:10001), got {address!r}", "ray_address")
        require(address is None or self.engine == "ray",
                "{ray_address} is the Ray cluster of {engine} ray; add {engine} ray (or drop "
                "{ray_address})", "ray_address", "engine")

    def mixes_videos(self, device_type: str) -> bool:
        """Whether model batches are filled across videos (``None``: on a GPU)."""
        return device_type != "cpu" if self.mix_videos is None else self.mix_videos

    def resize_in_worker(self, device_type: str) -> bool:
        """Whether workers resize (else the consumer does, on the model's device)."""
        if self.resize_on == "auto":
            return device_type == "cpu"
        return self.resize_on == "worker"


@dataclass(frozen=True)
class ExtractSettings(Settings):
    """How clips are cut; written into every feature file's metadata and read by the decode
    workers. ``backend``: what runs the network (``torch``, or ``onnxruntime`` on an exported
    feature graph: the one in the export folder ``exported``, else one exported once into
    stmil's cache; :mod:`stmil.deploy.backend`), recorded in the feature files when it is not
    PyTorch."""

    clip_len: int = setting(16, "frames per clip", lo=1, hi=MAX_CLIP)
    stride: int = setting(16, "frames between clip starts", lo=1, hi=MAX_CLIP)
    size: int = setting(224, "frames are resized to SIZE x SIZE (I3D's weights were trained at "
                        "224; a larger frame only costs memory)", unit="pixels", lo=1,
                        hi=MAX_SIZE)
    fps: float | None = setting(None, "resample (default: native rate)",
                                unit="frames per second", lo=FPS_RANGE[0], hi=FPS_RANGE[1])
    tail: str = setting("drop", "trailing partial clip: drop it or pad with the last frame",
                        choices=TAIL_POLICIES)
    batch_size: int | None = setting(None, "clips per forward pass (default: the fastest "
                                     "measured: 2 on a CPU, 8 on a GPU)",
                                     lo=1, hi=MAX_BATCH)
    backend: str = setting("torch", BACKEND_HELP, choices=BACKENDS)
    exported: Path | None = setting(None, EXPORTED_HELP, metavar="DIR")

    def rules(self) -> None:
        backend_rules(self.backend, self.exported)

    def for_model(self, device_type: str) -> ExtractSettings:
        """These settings with ``batch_size`` decided: as given, else :func:`model_batch` for
        the model's device type."""
        if self.batch_size is not None:
            return self
        return replace(self, batch_size=model_batch(device_type))

    def check_grid(self, grid: int, endpoint: str | None = None) -> None:
        """:class:`ConfigError` unless a G x G grid fits the feature map at ``endpoint`` of
        frames resized to ``size`` pixels.

        The rule for making features (``stmil extract``): ``grid <= map side`` (each cuboid
        pools at least one cell of the map; a larger grid would only repeat cells). A grid
        that does not divide the side is pooled as :func:`~stmil.cuboids.pool_cuboids` states.
        An unknown endpoint passes here (the extractor refuses it, naming the choices).
        ``endpoint=None``: only ``grid <= size``, for reproducing the settings a run records
        (``score``, ``events``, ``watch``), which earlier versions let exceed the map.
        """
        side = self.size if endpoint not in ENDPOINT_STRIDES else map_side(self.size, endpoint)
        if check_count("grid", grid) <= side:
            return
        if endpoint not in ENDPOINT_STRIDES:
            raise ConfigError(f"grid {grid} is larger than the frame size {self.size}: each "
                              f"cuboid needs at least one pixel; use --grid {self.size} or less")
        raise ConfigError(
            f"grid {grid} does not fit the {side}x{side} {endpoint} feature map of "
            f"{self.size}-pixel frames (a cuboid pools at least one cell: grid <= map side); "
            f"use --grid {side} or less, or a larger --size")


@dataclass(frozen=True)
class ExtractorSettings(Settings):
    """The network side of ``stmil extract``: :class:`~stmil.features.extract.FeatureExtractor`'s
    arguments."""

    endpoint: str = setting("Mixed_4e", "I3D endpoint")
    grid: int = setting(7, "G: cuboids form a G x G grid (at most the side of the endpoint's "
                        "feature map)", lo=1, hi=MAX_SIZE)
    device: str = setting("auto", "torch device", choices=DEVICES)
    precision: str = setting("fp32", "fp32: exact (~1e-6 vs the reference). bf16: the fast "
                             "path on CPUs with AMX (Xeon 4th gen+) and on GPUs, ~2-3x faster, "
                             "relative error ~1e-2; use it for large datasets where that error "
                             "is acceptable (features of both precisions never mix in one "
                             "folder)", choices=PRECISIONS)


@dataclass(frozen=True)
class ExtractOptions(Settings):
    """``stmil extract``'s inputs and outputs."""

    inputs: list[Path] = setting(help="video files or folders (searched recursively)",
                                 positional=True)
    out: Path = setting(help="output folder for <id>.npy and <id>.json")
    overwrite: bool = setting(False, "redo videos already extracted")
    shard: str | None = setting(None, "take every N-th video starting at the I-th (0 <= I < N), "
                                "for N processes or machines sharing one --out; each video is "
                                "also claimed (<id>.claim) while it is extracted, so none is "
                                "done twice", metavar="I/N")


@dataclass(frozen=True)
class ClassifyOptions(Settings):
    """``stmil classify`` (:func:`stmil.features.classify.classify_video`)."""

    video: Path = setting(help="a video file", positional=True)
    top: int = setting(5, "classes to print", lo=1, hi=KINETICS_CLASSES)
    json: bool = setting(False, "print JSON")
    device: str = setting("auto", "torch device", choices=DEVICES)
