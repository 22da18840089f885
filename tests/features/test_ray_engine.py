"""``--engine ray`` (stmil.features.ray_engine) on a local Ray instance: the same files as the
local engine, and the faults a cluster user meets (a corrupt video, a killed extractor worker,
Ctrl-C of the driver, a second driver or a ``--shard`` process on the same ``--out``).

One Ray instance (2 CPUs, a capped object store) serves the whole module; the tests skip where
Ray is not installed (``pip install 'stmil[ray]'``; ``make test`` installs it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from stmil.errors import ConfigError
from stmil.features import extract as extract_module
from stmil.features import ray_engine
from stmil.features.extract import ExtractSettings, extract_many
from stmil.features.pipeline_config import PipelineConfig
from stmil.features.video import VideoInfo
from tests.conftest import (
    STMIL_CTRL_C,
    assert_one_line_error,
    ramp_frames,
    require_vtest,
    run_cli,
    write_video,
)

SMALL = ExtractSettings(size=64, batch_size=2)  # Mixed_4e map 4x4: small_extractor's grid 4
RAY = PipelineConfig(engine="ray")


@pytest.fixture(scope="session")
def cluster():
    """A local Ray instance for every test here: 2 CPUs (one extractor actor, one decode
    task at a time), a 256 MiB object store, no dashboard. Its address, for drivers run as
    separate processes."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, object_store_memory=256 * 2**20, include_dashboard=False,
             logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def videos(folder: Path, n: int, frames: int = 64) -> Path:
    """``n`` small lossless videos (``frames // 16`` clips each) under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_video(folder / f"v{i}.mkv", ramp_frames(frames, h=32, w=40, seed=i), fps=25)
    return folder


def files(folder: Path) -> dict[str, bytes]:
    """Every output file of ``folder`` (not its ledger folder) by name."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def vtest_cut(folder: Path, n_frames: int = 48) -> Path:
    """The first ``n_frames`` of vtest.avi (768x576, 10 fps), re-written losslessly."""
    with av.open(str(require_vtest())) as c:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(n_frames), c.decode(video=0))]
    folder.mkdir(parents=True, exist_ok=True)
    return write_video(folder / "vtest48.mkv", np.stack(frames), fps=10)


@pytest.mark.slow
def test_ray_writes_the_local_engines_files_on_real_footage(tmp_path, cluster, extractor):
    """Per-video batches (the CPU default): the same bytes, and the same failures; vtest is
    split into two decode tasks (split_clips 2 of its 3 clips). A corrupt and an unreadable
    video are one failure each, with the local engine's one-line reason; the rest finish.
    Mixed batches: within float16 rounding."""
    src = tmp_path / "videos"
    vtest_cut(src)
    write_video(src / "ramp.mkv", ramp_frames(40, h=36, w=44), fps=25)  # 2 clips
    (src / "notes.mp4").write_text("not a video\n")
    full = write_video(tmp_path / "full.mp4", ramp_frames(40), fps=30, codec="libx264")
    (src / "cut.mp4").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    s = ExtractSettings(size=112, batch_size=2)
    local = extract_many([src], tmp_path / "local", extractor, s, progress=False)
    split = PipelineConfig(engine="ray", split_clips=2)
    got = ray_engine.extract_many([src], tmp_path / "ray", extractor, s, progress=False,
                                  pipeline=split)
    assert sorted(got.done) == sorted(local.done) == ["ramp", "vtest48"]
    assert got.clips == local.clips == 5
    assert got.line().startswith("2 done, 0 skipped, 2 failed")
    failures = json.loads((tmp_path / "ray" / "failures.json").read_text())
    assert sorted(f["path"] for f in failures) == [str(src / "cut.mp4"), str(src / "notes.mp4")]
    assert all("not a readable video" in f["error"] and "\n" not in f["error"]
               for f in failures)
    local_failures = json.loads((tmp_path / "local" / "failures.json").read_text())
    # listed in the order videos fail, which the local engine's 2 decode threads do not fix
    assert sorted(failures, key=lambda f: f["path"]) == sorted(local_failures,
                                                               key=lambda f: f["path"])
    ray_files, local_files = files(tmp_path / "ray"), files(tmp_path / "local")
    del ray_files["failures.json"], local_files["failures.json"]
    assert ray_files == local_files and len(local_files) == 4

    # Batches mixing videos (the default on GPUs), padded to one shape: within the rounding
    # of float16 of the per-video ones (fp32 values differ by < 1e-6 relative:
    # tests/features/test_pipeline.py)
    mixed = PipelineConfig(engine="ray", mix_videos=True)
    ray_engine.extract_many([src], tmp_path / "mixed", extractor, s, progress=False,
                            pipeline=mixed)
    for vid in ("vtest48", "ramp"):
        np.testing.assert_allclose(np.load(tmp_path / "mixed" / f"{vid}.npy"),
                                   np.load(tmp_path / "local" / f"{vid}.npy"),
                                   rtol=2**-10, atol=1e-5)


def test_decode_tasks_that_resize_write_the_files_of_actors_that_resize(
        tmp_path, cluster, small_extractor):
    """By default a decode task sends native uint8 clips and the actor resizes them; with
    ``resize_on="worker"`` the task resizes: the same resize definition either way, so the
    same bytes, and the local engine's."""
    src = videos(tmp_path / "videos", 2, frames=48)
    outs = {}
    for name, pipeline in (("actor", RAY), ("worker", PipelineConfig(engine="ray",
                                                                      resize_on="worker"))):
        got = ray_engine.extract_many([src], tmp_path / name, small_extractor, SMALL,
                                      progress=False, pipeline=pipeline)
        assert got.clips == 6, name
        outs[name] = files(tmp_path / name)
    extract_many([src], tmp_path / "local", small_extractor, SMALL, progress=False)
    assert outs["actor"] == outs["worker"] == files(tmp_path / "local")


@pytest.mark.parametrize(("resize_on", "kind", "width", "height", "in_task"), [
    ("auto", "cpu", 320, 240, False),  # 0.23 MB native against 0.6 MB resized: sent native
    ("auto", "cpu", 768, 576, True),  # 1.3 MB native: resized first
    ("auto", "cpu", 448, 448, False),  # exactly the resized float32 bytes: native
    ("auto", "cuda", 1920, 1080, False),  # GPU actors resize on the GPU
    ("worker", "cuda", 320, 240, True), ("device", "cpu", 1920, 1080, False)])
def test_a_decode_task_resizes_when_asked_or_when_that_ships_less(resize_on, kind, width,
                                                                   height, in_task):
    info = VideoInfo(width=width, height=height, fps=25.0, frames_reported=0)
    pipeline = PipelineConfig(engine="ray", resize_on=resize_on)
    assert ray_engine.resize_in_task(pipeline, kind, info, 224) is in_task


@pytest.mark.parametrize(("cpus", "actors", "streams"),
                         [(2, 1, 1), (8, 1, 1), (9, 1, 2), (64, 1, 8), (16, 4, 4), (64, 2, 8)])
def test_cpu_actors_get_one_decode_task_per_8_cpus_and_one_each_at_least(cpus, actors, streams):
    assert ray_engine.cpu_streams(cpus, actors) == streams


def test_clip_ranges_cover_every_clip_once():
    assert ray_engine.clip_ranges(0, 512, 8) == [(0, None)]
    assert ray_engine.clip_ranges(20, 5, 2) == [(0, 6), (6, 12), (12, 18), (18, None)]
    assert ray_engine.clip_ranges(6, 6, 2) == [(0, None)]


def _ray_pids(title: bytes = b"ray::Extractor.extract") -> list[int]:
    """Processes of this test's Ray instance (descendants of this process) running ``title``
    (Ray titles a worker by what it runs: ``ray::Extractor.extract``, ``ray::decode_range``)."""
    parents = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found = []
    for pid in parents:
        try:
            cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes()
        except OSError:
            continue
        if not cmdline.startswith(title):
            continue
        p = pid
        while p in parents and p != os.getpid():
            p = parents[p]
        if p == os.getpid():
            found.append(pid)
    return found


@pytest.mark.parametrize("title, frames", [
    (b"ray::Extractor.extract", 64),  # the actor: restarted, its call retried
    (b"ray::decode_range", 480),  # a decode task (30 clips: long enough to be seen): re-run
])
def test_killed_ray_worker_is_retried_and_every_video_written_once(
        tmp_path, cluster, small_extractor, monkeypatch, title, frames):
    src = videos(tmp_path / "videos", 4, frames)
    reference = tmp_path / "local"
    extract_many([src], reference, small_extractor, SMALL, progress=False)
    writes: list[str] = []
    real_write = extract_module.write_features

    def counted(out_dir, vid, *a, **kw):
        writes.append(vid)
        return real_write(out_dir, vid, *a, **kw)

    monkeypatch.setattr(extract_module, "write_features", counted)
    killed: list[int] = []

    def kill_once_running() -> None:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            for pid in _ray_pids(title):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_once_running, daemon=True)
    killer.start()
    got = ray_engine.extract_many([src], tmp_path / "ray", small_extractor, SMALL, progress=False,
                                  pipeline=RAY)
    killer.join()
    assert killed, f"{title.decode()} was never seen running"
    assert sorted(got.done) == ["v0", "v1", "v2", "v3"] and not got.failed
    assert sorted(writes) == ["v0", "v1", "v2", "v3"]  # each committed once
    assert files(tmp_path / "ray") == files(reference)


def run_ray_cli(src: Path, out: Path, address: str, *extra: str) -> subprocess.Popen:
    assert src.parent == out.parent  # both named relative to it, as a user types them
    cmd = [*STMIL_CTRL_C, "extract", src.name, "--out", out.name, "--engine", "ray",
           "--ray-address", address, "--device", "cpu", "--quiet", "--size", "64", "--grid", "4",
           "--batch-size", "2", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=src.parent)


def whole(out: Path) -> list[str]:
    return sorted(p.stem for p in out.glob("*.json") if p.with_suffix(".npy").is_file()
                  and p.name != "failures.json")


def test_ctrl_c_of_the_driver_leaves_whole_outputs_and_a_rerun_does_the_rest(
        tmp_path, cluster, small_extractor):
    src = videos(tmp_path / "videos", 4)
    out = tmp_path / "out"
    proc = run_ray_cli(src, out, cluster)
    deadline = time.monotonic() + 180
    while not whole(out):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no output within 180 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    finished = whole(out)
    assert 1 <= len(finished) < 4, "the interrupt should land mid-run"
    for p in out.iterdir():  # whatever carries a final name is whole; no claim is left
        assert p.suffix != ".claim"
        if p.name.startswith(".") and p.name != ".stmil":
            assert p.name.endswith(".tmp")  # removed by the next run
    got = ray_engine.extract_many([src], out, small_extractor, SMALL, progress=False, pipeline=RAY)
    assert sorted(got.skipped) == finished
    assert sorted(got.done) == sorted(set(f"v{i}" for i in range(4)) - set(finished))
    clean = extract_many([src], tmp_path / "clean", small_extractor, SMALL, progress=False)
    assert not clean.failed
    assert files(out) == files(tmp_path / "clean")


@pytest.mark.parametrize("other", ["shard", "ray"])
def test_ray_driver_beside_a_shard_process_or_another_driver_never_writes_a_video_twice(
        tmp_path, cluster, small_extractor, other):
    """A Ray driver (another process) and a local ``--shard 0/1`` run, or a second Ray
    driver, share one --out: the claim files split the videos, so the two runs' done counts
    add up to the videos."""
    src = videos(tmp_path / "videos", 4, frames=48)
    out = tmp_path / "out"
    proc = run_ray_cli(src, out, cluster)
    deadline = time.monotonic() + 180
    while not any(out.glob("*.claim")) and not whole(out):  # the Ray driver has begun
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    if other == "shard":
        local = extract_many([src], out, small_extractor, SMALL, progress=False, shard=(0, 1))
    else:
        local = ray_engine.extract_many([src], out, small_extractor, SMALL, progress=False,
                                        pipeline=RAY)
    stdout, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    ray_done = int(stdout.split(" done")[0].split()[-1])
    assert ray_done + len(local.done) == 4, (stdout, local.line())
    assert ray_done >= 1 and local.done, "both runs should have taken videos"
    assert whole(out) == [f"v{i}" for i in range(4)]
    assert not list(out.glob("*.claim"))


def test_engine_settings_are_checked():
    with pytest.raises(Exception, match="engine must be one of local, ray"):
        PipelineConfig(engine="dask")
    with pytest.raises(Exception, match="ray_address is the Ray cluster of engine ray; add "
                       "engine ray"):
        PipelineConfig(ray_address="10.0.0.1:6379")
    with pytest.raises(Exception, match="split_clips must be a whole number"):
        PipelineConfig(engine="ray", split_clips=0)


def test_ray_address_without_engine_ray_names_both_flags(tmp_path, capsys):
    code, _, err = run_cli(capsys, "extract", tmp_path, "--out", tmp_path / "out",
                           "--ray-address", "10.0.0.1:6379")
    assert code == 1
    assert_one_line_error(err, "--ray-address is the Ray cluster of --engine ray; add --engine "
                               "ray (or drop --ray-address)")


def test_engine_ray_without_ray_installed_is_one_line(tmp_path, capsys, monkeypatch):
    src = videos(tmp_path / "videos", 1, frames=16)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails, as when not installed
    code, _, err = run_cli(capsys, "extract", src, "--out", tmp_path / "out", "--engine", "ray",
                           "--size", "64", "--grid", "4")
    assert code != 0
    assert_one_line_error(err, "needs Ray, which is not installed", "stmil[ray]")
    assert not (tmp_path / "out").exists()


def test_unreachable_cluster_is_one_line_not_a_hang(tmp_path, capsys):
    pytest.importorskip("ray")
    src = videos(tmp_path / "videos", 1, frames=16)
    code, _, err = run_cli(capsys, "extract", src, "--out", tmp_path / "out", "--engine", "ray",
                           "--ray-address", "127.0.0.1:9", "--size", "64", "--grid", "4")
    assert code != 0
    assert_one_line_error(err, "cannot join the Ray cluster at 127.0.0.1:9", "ray start --head")


def test_score_over_a_folder_with_engine_ray_writes_the_local_scores(
        tmp_path_factory, tmp_path, cluster, capsys, monkeypatch):
    """``stmil score`` shares extract's input pipeline: ``--engine ray`` over a folder of
    videos (relative paths, from another working directory) gives the local engine's bytes."""
    from tests.test_score import run_with_meta, three_videos

    run = run_with_meta(tmp_path_factory.mktemp("ray-score"), size=64)
    monkeypatch.chdir(tmp_path)
    three_videos(Path("v"))
    got = {}
    for engine in ("local", "ray"):
        code, out, err = run_cli(capsys, "score", "v", "--model", run, "--out", engine,
                                 "--engine", engine, "--device", "cpu", "--quiet")
        assert code == 0, err
        assert sorted(out.split()) == [f"{engine}/v{n}.scores.json" for n in (1, 2, 3)]
        got[engine] = files(Path(engine))
    assert got["ray"] == got["local"] and len(got["local"]) == 3


@pytest.mark.parametrize("fps, stride, tail", [(None, 16, "drop"), (15, 8, "pad"),
                                               (45, 16, "pad")])
def test_clip_ranges_of_iter_clips_are_the_whole_videos_clips(tmp_path, fps, stride, tail):
    """Decode tasks of clip ranges (the frames before a range decoded, not converted) give
    exactly the whole decode's clips and batches, whatever the range estimate; resampling,
    overlapping clips and a padded tail included."""
    from stmil.features.video import iter_clips

    path = write_video(tmp_path / "v.mkv", ramp_frames(100, h=24, w=32), fps=30)
    kw = dict(clip_len=16, stride=stride, size=16, fps=fps, tail=tail, batch_size=2)
    whole_batches = list(iter_clips(path, **kw))
    for estimate in (0, 3, 7, 40):  # under, about and over the real clip count
        parts = [b for r in ray_engine.clip_ranges(estimate, 3, 2)
                 for b in iter_clips(path, **kw, clips=r)]
        assert [b.starts for b in parts] == [b.starts for b in whole_batches]
        assert [b.padded for b in parts] == [b.padded for b in whole_batches]
        for a, b in zip(parts, whole_batches):
            assert torch.equal(a.clips, b.clips)


def test_only_the_last_ranges_end_reports_the_whole_video():
    """A long video's decode tasks end in any order; an earlier range stops at its last clip
    and reports no ``n_frames``, so the video's end is the open-ended range's whatever the
    order (CI saw the earlier range end last: ``KeyError: 'n_frames'``). No cluster needed."""
    from stmil.features.ray_engine import _Engine, _Stream, _Video

    class NoRay:  # ray.get of an object that is already the value
        @staticmethod
        def get(ref):
            return ref

    engine = object.__new__(_Engine)
    engine.ray, engine.queue = NoRay(), []
    video = _Video(job=None, pieces=2)
    whole = {"n_frames": 48, "n_sampled": 48}
    last = _Stream(video, iter([("end", "info", whole)]), True)
    first = _Stream(video, iter([("end", "info", {})]), False)
    engine.streams = [first, last]
    for st in (last, first):  # the open-ended range ends first
        engine._stream_item(st)
    assert video.pieces == 0 and engine.streams == []
    assert video.end == ("info", whole)


def test_the_cli_driver_loads_no_network_and_writes_the_local_engines_files(
        tmp_path, cluster, small_extractor, capsys, monkeypatch):
    """``extract --engine ray``: the actors load I3D, the driver only describes it
    (``ActorNetwork``): same files as the local engine, with the driver's loader broken."""
    src = videos(tmp_path / "videos", 2)
    extract_many([src], tmp_path / "local", small_extractor, SMALL, progress=False)

    def no_network(*args, **kwargs):
        raise AssertionError("the driver loaded the network")

    monkeypatch.setattr(extract_module, "load_i3d", no_network)
    code, out, err = run_cli(capsys, "extract", src, "--out", tmp_path / "ray", "--engine",
                             "ray", "--size", "64", "--grid", "4", "--batch-size", "2",
                             "--device", "cpu", "--quiet")
    assert code == 0, err
    assert "2 done, 0 skipped, 0 failed" in out
    assert files(tmp_path / "ray") == files(tmp_path / "local")
    net = ray_engine.ActorNetwork("Mixed_4e", 4, "fp32")
    assert (net.channels, net.backend) == (small_extractor.channels, "torch")
    with pytest.raises(ConfigError, match="precision must be one of"):
        ray_engine.ActorNetwork(precision="fp64")
