"""The parallel input pipeline: decode workers feeding one bounded queue.

``workers`` threads each take the next video from a shared job iterator, decode it with PyAV
(FFmpeg decodes without holding the GIL) and cut its clips, then put the clip batches on a
bounded queue that the caller drains, typically into the model. Decoding and resizing of the
next batches thus overlap the network. Each worker handles one whole video at a time, so a
video's batches arrive in order; batches of different videos interleave.

Where the resize happens (``resize_on``):

- ``"worker"``: frames are resized to ``size`` in the worker (CPU, one torch thread per
  worker) and batches hold model input ``(B, 3, T, S, S)`` float32;
- ``"device"``: workers send native-size uint8 clips ``(B, T, H, W, 3)``; the caller uploads
  them (pinned memory on CUDA) and resizes on the model's device with
  :func:`stmil.features.resize.resize_clips` (:func:`device_input`). Both use the one
  definition in :mod:`stmil.features.resize`.

A video that cannot be decoded ends with an ``"error"`` event carrying the exception; the
worker then takes the next video, so a corrupt file never stalls the pool. Memory is bounded:
at most ``queue_size`` batches wait in the queue, plus one clip window per worker. With
``workers=0`` everything runs in the calling thread, in order (the serial path), producing the
same events.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import torch

from stmil.features.pipeline_config import ExtractSettings, PipelineConfig
from stmil.features.resize import resize_clips
from stmil.features.video import ClipBatch, VideoInfo, iter_clips, probe

T = TypeVar("T")


@dataclass
class VideoEvent(Generic[T]):
    """One step of one video: ``kind`` is ``"batch"`` (``batch`` set), ``"end"`` (``info`` and
    ``stats`` set: ``n_frames``, ``n_sampled``) or ``"error"`` (``error`` set). ``job`` is the
    caller's job object, ``path`` the video."""

    kind: str
    job: T
    path: Path
    batch: ClipBatch | None = None
    info: VideoInfo | None = None
    stats: dict = field(default_factory=dict)
    error: BaseException | None = None


def _decode_one(job: T, path: Path, spec: ExtractSettings, resize: bool) -> Iterator[VideoEvent[T]]:
    """The events of one video; any exception becomes its ``"error"`` event."""
    try:
        info = probe(path)
        stats: dict = {}
        for batch in iter_clips(path, spec.clip_len, spec.stride, spec.size, spec.fps,
                                spec.tail, spec.batch_size, info=info, stats=stats,
                                resize=resize):
            yield VideoEvent("batch", job, path, batch=batch)
        yield VideoEvent("end", job, path, info=info, stats=stats)
    except Exception as e:  # the video is over either way; the consumer judges the error
        yield VideoEvent("error", job, path, error=e)


_DONE = object()


def decode_videos(
    jobs: Iterable[tuple[T, Path]],
    spec: ExtractSettings,
    config: PipelineConfig | None = None,
    device: torch.device | str = "cpu",
) -> Iterator[VideoEvent[T]]:
    """Events of every ``(job, path)`` in ``jobs``: each video's batches, then its end or error.

    ``jobs`` is advanced by the worker threads, one at a time under a lock, so it may be a
    generator that does per-video work (claiming, checks) before yielding a video. An
    exception raised by ``jobs`` itself stops the pool and is re-raised here. Closing the
    iterator early stops the workers (they finish at most their current batch).
    """
    config = config or PipelineConfig()
    resize = config.resize_in_worker(torch.device(device).type)
    if config.workers == 0:
        for job, path in jobs:
            yield from _decode_one(job, Path(path), spec, resize)
        return
    q: queue.Queue = queue.Queue(maxsize=config.queue_size or 2 * config.workers)
    stop = threading.Event()
    job_lock = threading.Lock()
    failures: list[BaseException] = []  # raised by ``jobs`` itself
    it = iter(jobs)

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        torch.set_num_threads(1)  # per thread: the model keeps its own threads
        try:
            while not stop.is_set():
                with job_lock:
                    nxt = next(it, _DONE)
                if nxt is _DONE:
                    return
                job, path = nxt
                for event in _decode_one(job, Path(path), spec, resize):
                    if not put(event):
                        return
        except BaseException as e:  # from the job iterator: stop everything, report it
            failures.append(e)
            stop.set()
        finally:
            _force_put(q, _DONE)  # never blocks, so the consumer always learns the end

    threads = [threading.Thread(target=work, name=f"stmil-decode-{i}", daemon=True)
               for i in range(config.workers)]
    running = len(threads)
    try:
        for t in threads:  # inside: a Ctrl-C or SIGTERM between two starts still stops them
            t.start()
        while running:
            item = q.get()
            if item is _DONE:
                running -= 1
            elif not failures:
                yield item
        if failures:
            raise failures[0]
    finally:
        stop.set()
        for t in threads:
            if t.ident is not None:  # started
                t.join()


def _force_put(q: queue.Queue, item: object) -> None:
    """Put ``item`` even on a full queue the consumer no longer drains (it is stopping)."""
    with q.mutex:
        q.queue.append(item)
        q.unfinished_tasks += 1
        q.not_empty.notify()


def device_input(batch: ClipBatch, size: int, device: torch.device) -> torch.Tensor:
    """A batch's model input ``(B, 3, T, S, S)`` on ``device``.

    Batches already resized in a worker are returned as they are (the model moves them);
    uint8 batches ``(B, T, H, W, 3)`` are uploaded (through pinned memory on CUDA) and
    resized there.
    """
    clips = torch.as_tensor(batch.clips)  # uint8 batches come as numpy arrays
    if clips.dtype != torch.uint8:
        return clips
    if device.type == "cuda":
        clips = clips.pin_memory().to(device, non_blocking=True)
    else:
        clips = clips.to(device)
    return resize_clips(clips, size)
