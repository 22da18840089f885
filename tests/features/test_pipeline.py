"""The parallel input pipeline: resize definition, workers vs serial, a dying worker, claims."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import stmil.features.pipeline as pipeline_mod
from stmil.errors import ConfigError, OutputError
from stmil.features.claims import claim_path, remove_stale_claims, try_claim
from stmil.features.extract import (
    ExtractSettings,
    extract_many,
    extract_video,
    extract_videos,
    is_done,
    parse_shard,
)
from stmil.features.pipeline import PipelineConfig, decode_videos, device_input
from stmil.features.resize import resize_clips, resize_frames
from stmil.features.video import iter_clips
from stmil.ownership import Ledger
from tests.conftest import log_lines, ramp_frames, write_video

SMALL = ExtractSettings(size=64, batch_size=2)  # with small_extractor: a 4x4 grid
QUIET = dict(progress=False)


def _decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("stmil-decode")]


# --- the resize definition -------------------------------------------------------------------


def test_resize_frames_hand_values():
    """A 2x2 frame upsampled to 4x4 (antialias is a no-op when enlarging): bilinear by hand."""
    frame = np.zeros((1, 2, 2, 3), dtype=np.uint8)
    frame[0, :, 1] = 255  # right column white
    out = resize_frames(frame, 4)  # (1, 3, 4, 4)
    # align_corners=False: output x -> input (x + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25,
    # clamped to [0, 1]: weights of the white column 0, 0.25, 0.75, 1
    expected = torch.tensor([0.0, 0.25, 0.75, 1.0]) * 2 - 1
    assert out.shape == (1, 3, 4, 4)
    torch.testing.assert_close(out[0, 1], expected.expand(4, 4), rtol=0, atol=1e-6)


def test_resize_is_the_same_per_frame_batched_and_per_clip():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(6, 37, 51, 3), dtype=np.uint8)
    one = torch.cat([resize_frames(f[None], 32) for f in frames])
    assert torch.equal(resize_frames(frames, 32), one)
    clips = resize_clips(torch.from_numpy(frames).view(2, 3, 37, 51, 3), 32)  # (B, 3, T, S, S)
    assert clips.shape == (2, 3, 3, 32, 32)
    assert torch.equal(clips[1, :, 2], one[5])
    ref = F.interpolate(torch.from_numpy(frames).permute(0, 3, 1, 2).double(), size=(32, 32),
                        mode="bilinear", antialias=True, align_corners=False) / 127.5 - 1
    torch.testing.assert_close(one.double(), ref, rtol=0, atol=1e-5)


def test_device_input_matches_worker_resize(tmp_path):
    """uint8 clips resized by the consumer (the GPU path, here on CPU tensors) equal the
    worker-resized clips exactly."""
    path = write_video(tmp_path / "v.mkv", ramp_frames(40, h=30, w=46), fps=30)
    resized = list(iter_clips(path, 16, 8, 24, batch_size=2, tail="pad"))
    raw = list(iter_clips(path, 16, 8, 24, batch_size=2, tail="pad", resize=False))
    # 40 frames, clips of 16 every 8: starts 0, 8, 16, 24, then 32 padded
    assert [b.starts for b in raw] == [b.starts for b in resized] == [[0, 8], [16, 24], [32]]
    assert raw[0].clips.dtype == np.uint8 and raw[0].clips.shape == (2, 16, 30, 46, 3)
    for r, u in zip(resized, raw):
        assert torch.equal(device_input(u, 24, torch.device("cpu")), r.clips)


def test_decoding_without_resizing_never_imports_torch(tmp_path):
    """A Ray decode task (native uint8 clips, resized by the actor) runs in a worker that
    never loads torch: its start skips the import (1.3 s) and its memory."""
    path = write_video(tmp_path / "v.mkv", ramp_frames(40, h=30, w=46), fps=30)
    code = ("import sys\n"
            "from stmil.features.pipeline_config import ExtractSettings\n"
            "from stmil.features.ray_decode import decode_range\n"
            f"items = list(decode_range({str(path)!r}, ExtractSettings(batch_size=2), "
            "(0, None), False))\n"
            "print(items[0], items[1].dtype, items[1].shape, items[-1][0], 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["('batch',", "0,", "2)", "uint8", "(2,", "16,", "30,", "46,", "3)", "end",
                   "False"]


# --- the pool --------------------------------------------------------------------------------


@pytest.fixture()
def videos(tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    for i in range(4):
        write_video(src / f"v{i}.mkv", ramp_frames(16 + 16 * (i % 2), h=32, w=40, seed=i))
    return src


@pytest.mark.parametrize(("batch", "mix"), [(2, None), (4, True)])  # 6 clips: 4 + 2 padded
def test_parallel_equals_serial_exactly(videos, tmp_path, small_extractor, batch, mix):
    outs = {}
    for name, cfg in (("serial", PipelineConfig(workers=0, mix_videos=mix)),
                      ("workers", PipelineConfig(workers=2, queue_size=1, mix_videos=mix))):
        out = tmp_path / name
        s = extract_many([videos], out, small_extractor, ExtractSettings(size=64, batch_size=batch),
                         pipeline=cfg, **QUIET)
        assert sorted(s.done) == ["v0", "v1", "v2", "v3"] and s.clips == 6, name
        outs[name] = {p.name: p.read_bytes() for p in out.iterdir()
                      if p.suffix == ".npy"}
    assert len(outs["serial"]) == 4
    assert outs["workers"] == outs["serial"]  # fp32: bitwise equal


@pytest.mark.parametrize(("given", "device", "batch"), [
    (None, "cpu", 2), (None, "cuda", 8), (5, "cpu", 5), (3, "cuda", 3)])
def test_the_batch_is_the_one_given_else_the_fastest_measured(given, device, batch):
    s = ExtractSettings(batch_size=given).for_model(device)
    assert s.batch_size == batch
    assert s.for_model("cuda") == s  # decided once


def test_the_model_gets_batches_of_two_on_a_cpu_by_default(tmp_path, small_extractor,
                                                            monkeypatch):
    video = write_video(tmp_path / "five.mkv", ramp_frames(80, h=32, w=40))  # 5 clips
    sizes = []
    call = type(small_extractor).__call__
    monkeypatch.setattr(type(small_extractor), "__call__",
                        lambda self, clips: sizes.append(len(clips)) or call(self, clips))
    s = extract_many([video], tmp_path / "out", small_extractor, ExtractSettings(size=64),
                     pipeline=PipelineConfig(workers=0), **QUIET)
    assert s.clips == 5 and sizes == [2, 2, 1]


def test_a_corrupt_video_never_stalls_the_pool(videos, tmp_path, small_extractor):
    (videos / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    cut = write_video(tmp_path / "full.mp4", ramp_frames(48, h=32, w=40), codec="libx264")
    (videos / "cut.mp4").write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    done = threading.Event()
    result = {}

    def run():
        result["s"] = extract_many([videos], tmp_path / "out", small_extractor, SMALL,
                                   pipeline=PipelineConfig(workers=2, queue_size=1), **QUIET)
        done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert done.wait(120), "the pool stalled"
    s = result["s"]
    assert sorted(s.done) == ["v0", "v1", "v2", "v3"]
    assert {f["path"].rsplit("/", 1)[1]: f["error"] for f in s.failed}.keys() == {
        "bad.mp4", "cut.mp4"}
    assert all("not a readable video" in f["error"] or "corrupt" in f["error"]
               or "truncated" in f["error"] for f in s.failed)
    assert _decode_threads() == []


@pytest.mark.parametrize("mix", [False, True])
def test_extract_videos_yields_what_extract_video_returns(videos, tmp_path, small_extractor, mix):
    """The library entry for many videos (``stmil score`` over a folder): each good video's
    array and metadata equal the serial single-video path's (bitwise with per-video batches;
    with mixed batches, whose fp32 values differ by < 1e-6 relative (see below), a float16 may
    round one unit the other way, or differ by 1e-5 near zero); a bad one comes back as its
    error."""
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(b"not a video at all")
    paths = [videos / "v0.mkv", bad, videos / "v1.mkv"]
    got = {p.name: (a, m, e) for p, a, m, e in
           extract_videos(paths, small_extractor, SMALL, PipelineConfig(workers=2, mix_videos=mix))}
    assert sorted(got) == ["bad.mkv", "v0.mkv", "v1.mkv"]
    assert got["bad.mkv"][0] is None and "not a readable video" in str(got["bad.mkv"][2])
    for name in ("v0.mkv", "v1.mkv"):
        array, meta = extract_video(videos / name, small_extractor, SMALL)
        if mix:
            np.testing.assert_allclose(got[name][0], array, rtol=2**-10, atol=1e-5)
        else:
            assert np.array_equal(got[name][0], array)
        assert got[name][1] == meta and got[name][2] is None


class MeanExtractor:
    """A stand-in for FeatureExtractor whose clip features cannot depend on the batch: each
    clip's mean value ``(B, 1, 1)``, NaN for an all-white clip; it records its batch sizes."""

    device, grid, endpoint, channels, precision = torch.device("cpu"), 1, "Mixed_4e", 1, "fp32"
    backend = "torch"

    def __init__(self):
        self.calls: list[int] = []

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(clips))
        m = clips.double().mean(dim=(1, 2, 3, 4))
        return torch.where(m == 1.0, torch.nan, m).float().reshape(-1, 1, 1)


@pytest.mark.parametrize("workers", [0, 2])
def test_mixed_batches_fill_the_model_and_route_each_clip_back(videos, tmp_path, workers):
    """Videos of 1, 2, 1 and 2 clips, a white one (NaN features) and a truncated one, in
    batches of 4: every model call holds exactly 4 clips (the last is padded), and each
    video gets exactly its own clips' features, as with per-video batches."""
    write_video(videos / "white.mkv", np.full((32, 32, 40, 3), 255, np.uint8))
    full = write_video(tmp_path / "full.mp4", ramp_frames(64, h=32, w=40), codec="libx264")
    (videos / "cut.mp4").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    paths = sorted(videos.iterdir())
    s = ExtractSettings(size=16, batch_size=4)
    got = {}
    for mix in (False, True):
        stub = MeanExtractor()
        got[mix] = {p.name: (a, e) for p, a, _, e in
                    extract_videos(paths, stub, s, PipelineConfig(workers=workers,
                                                                  mix_videos=mix))}
        if mix:
            assert stub.calls == [4] * len(stub.calls) and len(stub.calls) >= 2
        else:
            assert 4 not in stub.calls  # one video's clips a call: none has 4
    assert got[True].keys() == got[False].keys() == {p.name for p in paths}
    for name in ("v0.mkv", "v1.mkv", "v2.mkv", "v3.mkv"):
        mixed, single = got[True][name], got[False][name]
        assert mixed[1] is None and np.array_equal(mixed[0], single[0])
        assert len(mixed[0]) == (1, 2, 1, 2)[int(name[1])]
        ref, _ = extract_video(videos / name, MeanExtractor(), s)
        assert np.array_equal(mixed[0], ref)
    assert "non-finite features" in str(got[True]["white.mkv"][1])
    assert got[True]["cut.mp4"][0] is None and got[True]["cut.mp4"][1] is not None


def test_a_clips_fp32_features_hardly_depend_on_its_batch(videos, small_extractor):
    """Why mixing is safe: in fp32 a clip's features in a batch of 2 clips of one video, or
    alone, equal those in a full batch mixed with other videos' clips within 1e-6 relative
    (bitwise on the 2-core EPYC of benchmarks/NOTES.md except the batch of one); within one
    batch shape they do not depend on the other clips at all (bitwise)."""
    a = torch.cat([b.clips for b in iter_clips(videos / "v1.mkv", size=64)])  # 2 clips
    b = torch.cat([b.clips for b in iter_clips(videos / "v3.mkv", size=64)])  # 2 clips
    c = torch.cat([b.clips for b in iter_clips(videos / "v0.mkv", size=64)])  # 1 clip
    mixed = small_extractor(torch.cat([c, a, b]))  # as mixed batches of 5 hold them
    for alone, got in ((small_extractor(a), mixed[1:3]), (small_extractor(b), mixed[3:]),
                       (small_extractor(c), mixed[:1])):
        for x, y in zip(alone, got):
            assert float((x - y).norm() / x.norm()) <= 1e-6
    other = small_extractor(torch.cat([b, c, a]))  # the same shape, other companions and places
    assert torch.equal(other[3:], mixed[1:3]) and torch.equal(other[2], mixed[0])


def test_a_bug_in_a_worker_is_raised_and_the_pool_stops(videos, tmp_path, small_extractor,
                                                       monkeypatch):
    real = pipeline_mod.probe

    def probe(path):
        if path.name == "v1.mkv":
            raise RuntimeError("boom in the decoder")
        return real(path)

    monkeypatch.setattr(pipeline_mod, "probe", probe)
    with pytest.raises(RuntimeError, match="boom in the decoder"):
        extract_many([videos], tmp_path / "out", small_extractor, SMALL,
                     pipeline=PipelineConfig(workers=2), **QUIET)
    assert _decode_threads() == []
    assert not list((tmp_path / "out").glob("*.claim"))  # every claim was given back


def test_an_error_in_the_job_iterator_stops_the_workers(videos):
    def jobs():
        yield "a", videos / "v0.mkv"
        raise OSError("disk gone")

    spec = ExtractSettings(size=32, batch_size=1)
    with pytest.raises(OSError, match="disk gone"):
        for _ in decode_videos(jobs(), spec, PipelineConfig(workers=2)):
            pass
    assert _decode_threads() == []
    events = list(decode_videos([("a", videos / "v1.mkv")], spec, PipelineConfig(workers=0)))
    assert [e.kind for e in events] == ["batch", "batch", "end"]
    assert events[-1].stats == {"n_frames": 32, "n_sampled": 32}


def test_closing_the_consumer_early_stops_the_workers(videos):
    gen = decode_videos([(i, p) for i, p in enumerate(sorted(videos.iterdir()))],
                        ExtractSettings(size=32, batch_size=1),
                        PipelineConfig(workers=2, queue_size=1))
    next(gen)
    time.sleep(0.2)  # the workers block on the full queue
    gen.close()
    assert _decode_threads() == []


def test_pipeline_config_is_checked():
    for bad in (dict(workers=-1), dict(workers=True), dict(queue_size=0),
                dict(resize_on="gpu"), dict(mix_videos="yes")):
        with pytest.raises(ConfigError, match="must be"):
            PipelineConfig(**bad)
    auto = PipelineConfig()
    assert auto.mixes_videos("cuda") and not auto.mixes_videos("cpu")
    assert PipelineConfig(mix_videos=True).mixes_videos("cpu")


# --- claims and shards -----------------------------------------------------------------------


def test_a_claim_is_exclusive_and_given_back(tmp_path):
    first = try_claim(tmp_path, "v")
    assert first is not None and claim_path(tmp_path, "v").is_file()
    assert try_claim(tmp_path, "v") is None  # flock: a second open file is refused
    first.release()
    assert not claim_path(tmp_path, "v").exists()
    again = try_claim(tmp_path, "v")
    assert again is not None
    again.release()


def test_a_release_interrupted_after_its_close_is_not_repeated(tmp_path, monkeypatch):
    """A Ctrl-C landing just after a claim's fd is closed (a commit's release), then the run's
    clean-up releasing it again: the fd must not be closed twice (EBADF, the clean-run CI's
    "error: [Errno 9] Bad file descriptor" after Ctrl-C), nor another file's fd that reused
    the number."""
    from stmil.features import claims

    claim = try_claim(tmp_path, "v")
    real_close = os.close

    def close_then_interrupt(fd: int) -> None:
        real_close(fd)
        raise KeyboardInterrupt

    monkeypatch.setattr(claims.os, "close", close_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        claim.release()
    monkeypatch.undo()
    other = os.open(tmp_path / "other", os.O_CREAT | os.O_RDWR)  # may reuse the fd number
    try:
        claim.release()  # the clean-up's second release: nothing to do
        os.fstat(other)  # still open
    finally:
        os.close(other)
    assert not claim_path(tmp_path, "v").exists()


def test_a_dead_runs_claim_is_taken_over_and_a_foreign_file_refused(tmp_path):
    stale = claim_path(tmp_path, "v")
    stale.write_text('{"stmil-claim": 1, "host": "h", "pid": 1}\n')  # nobody holds its lock
    assert remove_stale_claims(tmp_path) == [stale] and not stale.exists()
    stale.write_text("")  # a claim is made whole with its marker: an empty file is the user's
    with pytest.raises(OutputError, match=r"v\.claim: exists and is not a stmil claim"):
        try_claim(tmp_path, "v")
    assert remove_stale_claims(tmp_path) == [] and stale.read_text() == ""
    stale.unlink()
    foreign = claim_path(tmp_path, "w")
    foreign.write_text("my notes\n")
    with pytest.raises(OutputError, match=r"w\.claim: exists and is not a stmil claim"):
        try_claim(tmp_path, "w")
    assert remove_stale_claims(tmp_path) == [] and foreign.read_text() == "my notes\n"


def test_a_video_claimed_elsewhere_is_left_alone(videos, tmp_path, small_extractor):
    out = tmp_path / "out"
    out.mkdir()
    held = try_claim(out, "v2")  # as another live process would
    try:
        s = extract_many([videos], out, small_extractor, SMALL, **QUIET)
    finally:
        held.release()
    assert sorted(s.done) == ["v0", "v1", "v3"] and s.claimed == ["v2"]
    assert "1 left to other runs" in s.line()
    assert not is_done(out, "v2") and not (out / "failures.json").exists()


def test_parse_shard():
    assert parse_shard("0/2") == (0, 2) and parse_shard("2/3") == (2, 3)
    for bad in ("2/2", "-1/2", "1", "a/b", "1/0", "1/2/3"):
        with pytest.raises(ConfigError, match="--shard must be I/N"):
            parse_shard(bad)


def test_shards_split_the_videos(videos, tmp_path, small_extractor):
    out = tmp_path / "out"
    a = extract_many([videos], out, small_extractor, SMALL, shard=(0, 2), **QUIET)
    b = extract_many([videos], out, small_extractor, SMALL, shard=(1, 2), **QUIET)
    assert sorted(a.done) == ["v0", "v2"] and sorted(b.done) == ["v1", "v3"]
    assert a.skipped == b.skipped == []


def test_two_concurrent_processes_share_one_folder(videos, tmp_path):
    """`stmil extract --shard 0/2` and a plain `stmil extract` run at once on one --out: every
    video is extracted exactly once (the first takes at most its shard; claims keep each off
    the videos the other is working on) and every output is whole."""
    stmil = Path(sys.executable).with_name("stmil")
    out = tmp_path / "out"
    cmd = [str(stmil), "extract", "videos", "--out", "out", "--device", "cpu", "--quiet",
           "--size", "64", "--grid", "4", "--batch-size", "2"]
    procs = [subprocess.Popen(cmd + extra, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for extra in (["--shard", "0/2"], [])]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, e) in zip(procs, results):
        assert p.returncode == 0, e
    done = [int(o.split(" done")[0].split()[-1]) for o, _ in results]
    assert done[0] <= 2 and sum(done) == 4, results  # no video twice
    assert all(is_done(out, f"v{i}") for i in range(4))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".stmil", *(f"v{i}{ext}" for i in range(4) for ext in (".json", ".npy"))])  # no claim
    ledger = Ledger.load(out).files  # ledger.json and its journal
    assert sorted(ledger) == sorted(f"v{i}{x}" for i in range(4) for x in (".json", ".npy"))


def test_emulated_bf16_is_warned_about(tmp_path, monkeypatch, caplog):
    import stmil.features.extract as extract_mod
    from stmil.features.extract import FeatureExtractor, native_bf16

    assert native_bf16(torch.device("cuda"))  # no GPU needed to ask
    monkeypatch.setattr(extract_mod, "native_bf16", lambda device: False)
    (tmp_path / "empty").mkdir()
    extract_many([tmp_path / "empty"], tmp_path / "out",
                 FeatureExtractor(grid=4, device="cpu", precision="bf16"), SMALL, progress=False)
    assert log_lines(caplog)[0].startswith("warning: this CPU has neither AMX nor AVX512-BF16")
