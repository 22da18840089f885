"""Extraction over a Ray cluster (``--engine ray``): the same files as the local engine.

The pipeline, with plain Ray tasks and actors::

    driver       ExtractRun.jobs(): each video claimed, resumed or refused as by the local
                 engine (stmil.features.extract), then planned: one decode task, or one per
                 range of ``split_clips`` clips for a long video
    decode task  (CPU, 1 each) stmil's own iter_clips (decoder, clip rules): a stream of
                 (header, clip batch) objects (ray_decode): native uint8 clips, without
                 torch, or resized ones where those are smaller (resize_in_task)
    actor pool   the I3D extractor (FeatureExtractor): one per GPU (num_gpus=1) when the
                 cluster has GPUs, else one CPU actor per node; it resizes native clips on
                 its device (the one resize definition); per-video batches, or batches mixing
                 videos (on GPUs, as the local engine does there)
    driver       each video's clips back in order -> ExtractRun.commit: the one feature writer,
                 then its claim released

The driver alone writes (through :func:`~stmil.features.store.write_features`) and holds the
claims (:mod:`stmil.features.claims`, ``flock`` on ``<id>.claim``): a write never outlives its
claim, so a Ray job beside another driver or a ``--shard`` process never writes a video twice,
and an interrupted driver leaves only whole outputs (a rerun does what is missing). Actors are
restarted and their calls retried when a worker dies (``max_restarts``, ``max_task_retries``);
a video that cannot be decoded is a failure of its own, like any other.

Why not Ray Data's Dataset API: its rows mix videos in blocks and batches, so per-video
batches (bitwise-equal features) and per-video commits under a claim would need a regrouping
in the driver anyway, and its inputs are fixed before it starts, while claims are taken one
video at a time so that concurrent drivers share the work.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stmil.errors import ConfigError, StmilError
from stmil.features.extract import (
    ExtractRun,
    ExtractSettings,
    ExtractSummary,
    FeatureExtractor,
    _Job,
    check_network,
    feature_meta,
    source_jobs,
)
from stmil.features.motion import motion_energy
from stmil.features.pipeline import device_input
from stmil.features.pipeline_config import PipelineConfig
from stmil.features.ray_decode import decode_range
from stmil.features.store import FeatureMeta
from stmil.features.video import ClipBatch, VideoError, VideoInfo, probe

INSTALL = "install it with: pip install 'stmil[ray]'"
RETRIES = 4  # restarts of a dead extractor actor, and retries of its calls
CALLS_PER_ACTOR = 2  # model calls queued on each actor (one running, one waiting)
STREAM_AHEAD = 4  # objects a decode task may run ahead of the driver (2 batches)
CPUS_PER_STREAM = 8  # CPU actors: one decode task per 8 CPUs (cpu_streams)
MAX_STREAMS = 256  # decode tasks in flight at most, whatever the cluster (claims hold files)

#: One video's outcome: ``(job, features, metadata, None)`` or ``(job, None, None, error)``.
Result = tuple[_Job, np.ndarray | None, FeatureMeta | None, BaseException | None]


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`ConfigError` saying how to install it."""
    try:
        import ray  # deferred: the optional extra stmil[ray]; import stmil never needs it
    except ImportError:
        raise ConfigError(f"--engine ray needs Ray, which is not installed; {INSTALL}") from None
    return ray


@contextmanager
def connect(address: str | None) -> Iterator[Any]:
    """Ray, connected: to ``address``, else ``RAY_ADDRESS``, else a local instance started
    here (and shut down on exit). An already initialised Ray (a notebook, a test) is used as
    it is."""
    ray = import_ray()
    where = address or os.environ.get("RAY_ADDRESS")
    fix = "start it with 'ray start --head' or fix --ray-address / RAY_ADDRESS"
    reason = _unreachable(where)
    if reason:  # ray.init would retry for minutes
        raise ConfigError(f"cannot join the Ray cluster at {where} ({reason}); {fix}")
    if ray.is_initialized():
        yield ray
        return
    # A local instance runs its workers at the driver's priority, as the local engine's
    # threads (Ray's default, nice 15, loses the CPU to any other work on a shared machine)
    local = {} if where else {"_system_config": {"worker_niceness": 0}}
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                 **local)
    except (ConnectionError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot join the Ray cluster at {where} ({first}); {fix}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _unreachable(address: str | None) -> str:
    """Why a ``host:port`` cluster address cannot be reached within 5 s ('' when it can, or
    for other forms: ``auto``, ``ray://``, which Ray itself checks)."""
    if not address or "://" in address or ":" not in address:
        return ""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except ValueError:
        return f"{port!r} is not a port number"
    except OSError as e:
        return e.strerror or str(e) or type(e).__name__
    return ""


def estimated_clips(info: VideoInfo, s: ExtractSettings) -> int:
    """Clips a video will give, from what its container says (0 when it does not say)."""
    frames = info.frames_reported or int(info.duration * info.fps)
    sampled = frames if s.fps is None else int(frames * s.fps / info.fps)
    return max(0, (sampled - s.clip_len) // s.stride + 1)


def clip_ranges(n_clips: int, split: int, batch_size: int) -> list[tuple[int, int | None]]:
    """Decode tasks of one video: ``[(first, end), ...]`` clip ranges, the last open-ended
    (``end=None``: to the real end, whatever the estimate ``n_clips``); each ``split`` clips
    rounded up to whole batches, so the batches are those of a whole-video decode."""
    step = math.ceil(split / batch_size) * batch_size
    firsts = list(range(0, max(n_clips, 1), step))
    return [(a, b) for a, b in zip(firsts, firsts[1:])] + [(firsts[-1], None)]


def resize_in_task(pipeline: PipelineConfig, kind: str, info: VideoInfo, size: int) -> bool:
    """Whether a video's decode tasks resize its clips (and so import torch), or send them at
    the native size for the ``kind`` actors to resize with the same definition (the same
    bytes either way). As ``pipeline.resize_on`` says; ``"auto"``: GPU actors take native
    frames (they resize on the GPU), CPU actors whichever is smaller to ship: native uint8
    frames up to the size of resized float32 ones (320x240 is 0.23 MB against 0.6 MB at 224:
    sent native, by a task without torch; 768x576 is 1.3 MB: resized first)."""
    if pipeline.resize_on != "auto" or kind != "cpu":
        return pipeline.resize_in_worker(kind)
    return info.width * info.height * 3 > 3 * size * size * 4


def cpu_streams(cpus: int, actors: int) -> int:
    """Decode tasks in flight for ``actors`` CPU extractors on ``cpus`` CPUs: one per
    :data:`CPUS_PER_STREAM` CPUs, at least one per actor. A CPU actor spends about 11x the
    CPU time on a clip that decoding and resizing it take (768x576 video, 2-core EPYC: 0.56
    against 0.05 core-seconds), so these keep it fed, and each decode worker fewer saves a
    process start (benchmarks/NOTES.md)."""
    return max(actors, -(-cpus // CPUS_PER_STREAM))


@dataclass(frozen=True)
class ActorNetwork:
    """The network the actors run, as the driver knows it: what every output records
    (endpoint, grid, precision, channels) and what each actor builds, checked as
    :class:`FeatureExtractor` checks it, but with no weights loaded in the driver, which
    computes nothing (a network there only cost time and memory)."""

    endpoint: str = "Mixed_4e"
    grid: int = 7
    precision: str = "fp32"
    backend: str = "torch"
    device: torch.device = field(default=torch.device("cpu"), compare=False)
    channels: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels",
                           check_network(self.endpoint, self.grid, self.precision))


class Extractor:
    """An actor of the pool: :class:`FeatureExtractor` on ``device`` (a CPU actor runs torch
    on all the cores its process may use, as the local engine's model does)."""

    def __init__(self, endpoint: str, grid: int, precision: str, device: str, size: int):
        if device == "cpu":
            torch.set_num_threads(len(os.sched_getaffinity(0)))
        self.model = FeatureExtractor(endpoint, grid, device, precision)
        self.size = size

    def pid(self) -> int:
        return os.getpid()

    def extract(self, rows: list[tuple[int, int]], pad_to: int,
                *batches: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, bool]]:
        """Rows ``lo:hi`` of each batch, concatenated into one model call (padded with copies
        of the last clip up to ``pad_to``): per batch ``(features (n, G*G, C) float16,
        motion (n, G*G), all finite)``."""
        dev = self.model.device
        xs = []
        for (lo, hi), b in zip(rows, batches):
            t = torch.from_numpy(b if b.flags.writeable else b.copy())[lo:hi]
            xs.append(device_input(ClipBatch(t, [], []), self.size, dev))
        x = xs[0] if len(xs) == 1 else torch.cat(xs)
        n = len(x)
        if pad_to > n:
            x = torch.cat([x, x[-1:].expand(pad_to - n, *x.shape[1:])])
        feats = self.model(x)[:n]
        out = []
        for part in xs:
            f, feats = feats[:len(part)], feats[len(part):]
            out.append((f.numpy().astype(np.float16), motion_energy(part, self.model.grid),
                        bool(torch.isfinite(f).all())))
        return out


@dataclass(eq=False)
class _Video:
    """A video in flight in the driver: decode tasks not yet ended, model calls not yet back,
    its clips' results by first clip index, its end (info, stats) or error."""

    job: _Job
    pieces: int
    calls: int = 0
    parts: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    end: tuple[VideoInfo, dict] | None = None
    error: BaseException | None = None


@dataclass(eq=False)
class _Stream:
    """One decode task's stream; ``last``: the video's open-ended range, whose end alone
    reports the whole video's frames (an earlier range stops at its last clip); ``header`` is
    set while its next object is a batch."""

    video: _Video
    gen: Any
    last: bool
    header: tuple | None = None


@dataclass(eq=False)
class _Queued:
    """Decoded clips waiting for a model call: rows ``lo:hi`` of ``ref``, clip ``first`` at
    row 0."""

    video: _Video
    ref: Any
    first: int
    lo: int
    hi: int


class _Engine:
    """The driver's loop: decode streams in, model calls out, finished videos yielded."""

    def __init__(self, ray: Any, extractor: FeatureExtractor, s: ExtractSettings,
                 pipeline: PipelineConfig, device: str, on_clips: Callable[[int], None] | None):
        self.ray, self.pipeline, self.extractor = ray, pipeline, extractor
        self.on_clips = on_clips
        kind, n_actors, options = self._actor_plan(device)
        self.s = s.for_model(kind)
        self.mix = pipeline.mixes_videos(kind)
        actor = ray.remote(Extractor).options(max_restarts=RETRIES, max_task_retries=RETRIES,
                                              **options)
        self.actors = [actor.remote(extractor.endpoint, extractor.grid, extractor.precision,
                                    kind, s.size) for _ in range(n_actors)]
        # calls queued on each actor; None until it is up (its first call answered), so no
        # call waits on an actor that another driver's actors keep from starting
        self.load: list[int | None] = [None] * n_actors
        self.starting = {a.pid.remote(): i for i, a in enumerate(self.actors)}
        # decode tasks in flight (each holds a claim: capped): for GPU actors one per CPU and
        # one more; CPU actors share the CPUs with them and need far fewer (cpu_streams)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.max_streams = min(MAX_STREAMS, cpus + 1 if kind == "cuda" else
                               cpu_streams(cpus, n_actors))
        self.decode = ray.remote(decode_range).options(
            num_cpus=1, num_returns="streaming",
            _generator_backpressure_num_objects=STREAM_AHEAD)
        self.kind = kind
        self.streams: list[_Stream] = []
        self.queue: list[_Queued] = []
        self.calls: dict[Any, tuple[int, list[tuple[_Video, int, int]]]] = {}
        self.videos: list[_Video] = []
        self.n_videos = 0

    def _actor_plan(self, device: str) -> tuple[str, int, dict]:
        """``(device type, actor count, Ray options)`` of the extractor pool."""
        gpus = int(self.ray.cluster_resources().get("GPU", 0))
        if device == "cuda" and not gpus:
            raise ConfigError("--device cuda, but the Ray cluster has no GPU; use --device "
                              "auto or cpu")
        # Actors reserve no CPU: the CPUs stay the decode tasks', so drivers sharing a cluster
        # never hold every CPU in actors whose videos then wait for decode forever
        if gpus and device != "cpu":
            return "cuda", gpus, {"num_gpus": 1, "num_cpus": 0}
        nodes = [n for n in self.ray.nodes() if n.get("Alive") and n["Resources"].get("CPU")]
        return "cpu", max(1, len(nodes)), {"num_cpus": 0, "scheduling_strategy": "SPREAD"}

    def start(self, job: _Job, path: Path) -> Result | None:
        """Plan and submit the decode tasks of one video; its result now if it fails first."""
        if job.error is not None:
            return job, None, None, job.error
        try:
            info = probe(path)
        except VideoError as e:
            return job, None, None, e
        ranges = clip_ranges(estimated_clips(info, self.s), self.pipeline.split_clips,
                             self.s.batch_size)
        resize = resize_in_task(self.pipeline, self.kind, info, self.s.size)
        video = _Video(job, len(ranges))
        self.videos.append(video)
        self.n_videos += 1
        where = os.path.abspath(path)  # workers have their own working directory
        for r in ranges:
            self.streams.append(_Stream(video, self.decode.remote(where, self.s, r, resize),
                                        r[1] is None))
        return None

    def run(self, jobs: Iterable[tuple[_Job, Path]]) -> Iterator[Result]:
        """Every job's result, in the order videos finish."""
        todo = iter(jobs)
        more = True
        while True:
            while more and len(self.streams) < self.max_streams:
                nxt = next(todo, None)
                if nxt is None:
                    more = False
                    break
                early = self.start(*nxt)
                if early is not None:
                    yield early
            self._dispatch(final=not more and not self.streams)
            yield from self._finished()
            if not (more or self.streams or self.calls or self.queue):
                return
            self._step()

    def _step(self) -> None:
        """Wait for one decode object or model call, and take it in."""
        queued = sum(q.hi - q.lo for q in self.queue)
        room = queued < 2 * len(self.actors) * self.s.batch_size  # more clips may come
        waiting = [st.gen for st in self.streams if room or st.header is not None]
        ready, _ = self.ray.wait(waiting + list(self.calls) + list(self.starting),
                                 num_returns=1, timeout=1.0)
        for ref in ready:
            if ref in self.starting:
                self._actor_up(ref)
            elif ref in self.calls:
                self._call_done(ref)
            else:
                self._stream_item(next(st for st in self.streams if st.gen is ref))

    def _stream_item(self, st: _Stream) -> None:
        video = st.video
        try:
            ref = next(st.gen)
            if st.header is not None:
                _, first, n = st.header
                st.header = None
                if video.error is None:
                    self.queue.append(_Queued(video, ref, first, 0, n))
                return
            item = self.ray.get(ref)
        except StopIteration:
            item = ("stopped",)
        except self.ray.exceptions.RayError as e:
            item = ("error", f"decode task failed: {_first_line(e)}")
        if item[0] == "batch":
            st.header = item
            return
        if item[0] == "end":
            if st.last:  # ranges end in any order; only the last one saw the whole video
                video.end = item[1], item[2]
        elif item[0] == "error" and video.error is None:
            video.error = VideoError(video.job.path, item[1])
        self.streams.remove(st)
        video.pieces -= 1

    def _dispatch(self, final: bool) -> None:
        """Model calls from the queue while an actor has room: one decoded batch each, or
        (mixing) exactly ``batch_size`` clips across videos, the run's last call padded."""
        bs = self.s.batch_size
        self.queue = [q for q in self.queue if q.video.error is None]
        while self.queue and self._free() is not None:
            total = sum(q.hi - q.lo for q in self.queue)
            if self.mix and total < bs and not final:
                return
            parts: list[_Queued] = []
            n = 0
            while self.queue and n < (bs if self.mix else 1):
                q = self.queue[0]
                k = min(q.hi - q.lo, bs - n) if self.mix else q.hi - q.lo
                parts.append(_Queued(q.video, q.ref, q.first, q.lo, q.lo + k))
                q.lo += k
                if q.lo == q.hi:
                    self.queue.pop(0)
                n += k
            pad = bs if self.mix and final and self.n_videos > 1 else 0
            i = self._free()
            ref = self.actors[i].extract.remote([(p.lo, p.hi) for p in parts], pad,
                                                *[p.ref for p in parts])
            self.load[i] += 1
            self.calls[ref] = i, [(p.video, p.first + p.lo, p.hi - p.lo) for p in parts]
            for p in parts:
                p.video.calls += 1

    def _free(self) -> int | None:
        """The least loaded actor that is up and has room for a call, if any."""
        up = [(n, i) for i, n in enumerate(self.load) if n is not None and n < CALLS_PER_ACTOR]
        return min(up)[1] if up else None

    def _actor_up(self, ref: Any) -> None:
        i = self.starting.pop(ref)
        try:
            self.ray.get(ref)
            self.load[i] = 0
        except self.ray.exceptions.RayError as e:  # its network cannot load there
            if not self.starting and all(n is None for n in self.load):
                raise StmilError(f"no extractor actor could start: {_first_line(e)}") from None

    def _call_done(self, ref: Any) -> None:
        i, parts = self.calls.pop(ref)
        if self.load[i] is not None:
            self.load[i] -= 1
        try:
            results = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:
            results = [None] * len(parts)
            reason = f"extractor failed: {_first_line(e)}"
            if isinstance(e, self.ray.exceptions.RayActorError):  # restarts spent: gone
                self.load[i] = None
                if not self.starting and all(n is None for n in self.load):
                    raise StmilError(f"every extractor actor died: {reason}") from None
        for (video, first, n), r in zip(parts, results):
            video.calls -= 1
            if video.error is not None:
                continue
            if r is None:
                video.error = VideoError(video.job.path, reason)
            elif not r[2]:
                video.error = VideoError(video.job.path, "non-finite features (NaN or Inf)")
            else:
                video.parts[first] = r[0], r[1]
                if self.on_clips:
                    self.on_clips(n)

    def _finished(self) -> Iterator[Result]:
        """The videos whose decode tasks and model calls are all over."""
        queued = {id(q.video) for q in self.queue}
        done = [v for v in self.videos if not v.pieces and not v.calls and id(v) not in queued]
        for video in done:
            self.videos.remove(video)
            yield self._result(video)

    def _result(self, video: _Video) -> Result:
        job, s = video.job, self.s
        if video.error is None and video.end is None:
            video.error = VideoError(job.path, "its decode tasks ended without its end")
        if video.error is not None:
            return job, None, None, video.error
        info, stats = video.end
        if not video.parts:
            sampled = stats.get("n_sampled", 0)
            return job, None, None, VideoError(
                job.path, f"shorter than one clip ({sampled} frames < {s.clip_len})")
        keys = sorted(video.parts)
        array = np.concatenate([video.parts[k][0] for k in keys])
        motion = np.concatenate([video.parts[k][1] for k in keys])
        return job, array, feature_meta(job.source, info, stats, s, self.extractor,
                                        motion), None

    def stop(self) -> None:
        """Cancel what is still running (an interrupted or failed driver)."""
        for st in self.streams:
            try:
                self.ray.cancel(st.gen, force=True)
            except Exception:  # already over, or a Ray without generator cancel
                pass
        for a in self.actors:
            self.ray.kill(a)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def ray_features(jobs: Iterable[tuple[_Job, Path]], extractor: FeatureExtractor,
                 s: ExtractSettings, pipeline: PipelineConfig, device: str = "auto",
                 on_clips: Callable[[int], None] | None = None) -> Iterator[Result]:
    """The Ray counterpart of the local engine's feature stream: per job, in the order videos
    finish, ``(job, array, meta, None)`` or ``(job, None, None, error)``. ``extractor`` (on the
    driver) gives the network's settings; the actors load their own, on ``device``
    (``"auto"``: GPUs when the cluster has them)."""
    with connect(pipeline.ray_address) as ray:
        engine = _Engine(ray, extractor, s, pipeline, device, on_clips)
        try:
            yield from engine.run(jobs)
        finally:
            engine.stop()


def extract_many(
    inputs: Iterable[Path | str],
    out_dir: Path | str,
    extractor: FeatureExtractor,
    settings: ExtractSettings | None = None,
    overwrite: bool = False,
    progress: bool = True,
    pipeline: PipelineConfig | None = None,
    shard: tuple[int, int] | None = None,
    device: str = "auto",
) -> ExtractSummary:
    """:func:`stmil.features.extract.extract_many` on a Ray cluster (``pipeline.ray_address``):
    the same checks, claims, outputs and failure list; ``device`` chooses the actors'."""
    s = settings or ExtractSettings()
    if s.backend != "torch":
        raise ConfigError("--engine ray runs the torch network on its actors; use --backend "
                          "torch with it (an exported backend runs with --engine local)")
    pipeline = pipeline or PipelineConfig(engine="ray")
    with connect(pipeline.ray_address):  # before the output folder is touched
        run = ExtractRun.open(inputs, out_dir, extractor, s, overwrite, progress, shard)
        return run.drive(ray_features(run.jobs(), extractor, s, pipeline, device,
                                      run.clip_bar.update))


def extract_videos(
    videos: Iterable[Path | str],
    extractor: FeatureExtractor,
    settings: ExtractSettings | None = None,
    pipeline: PipelineConfig | None = None,
    device: str = "auto",
) -> Iterator[tuple[Path, np.ndarray | None, FeatureMeta | None, BaseException | None]]:
    """:func:`stmil.features.extract.extract_videos` on a Ray cluster (``stmil score
    --engine ray``): per video, in the order they finish, ``(path, array, meta, error)``."""
    s = settings or ExtractSettings()
    s.check_grid(extractor.grid)
    for job, array, meta, error in ray_features(source_jobs(videos), extractor, s,
                                                pipeline or PipelineConfig(engine="ray"),
                                                device):
        yield job.path, array, meta, error
