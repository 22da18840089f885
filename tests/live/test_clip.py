"""--clips: one MP4 per incident (pre-roll, post-roll, cap), atomic, never over a foreign file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import av
import numpy as np
import pytest

import stmil.live.clip as clip_mod
from stmil.live.clip import COMMENT, ClipRecorder, clip_range
from stmil.live.events import event_config
from stmil.live.incidents import Incident
from stmil.live.watch import WatchConfig, watch
from tests.conftest import assert_one_line_error, limit_file_size, run_cli, write_video
from tests.live.scene import EVENT_BOX, FPS, scene_frames
from tests.live.test_watch import free_port, serve, wait_line

EVENT = (96, 128)  # frames of a 160-frame scene: 2 s of pre-roll fit before it, 1 s after


def listing(folder: Path) -> list[str]:
    """The names in ``folder`` but its ownership ledger's (``.stmil/``): temporaries show."""
    return sorted(p.name for p in folder.iterdir() if p.name != ".stmil")


def decode(path) -> tuple[list[np.ndarray], dict, float]:
    """Every frame of a clip (RGB), its container metadata and frame rate."""
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        return frames, dict(c.metadata), float(c.streams.video[0].average_rate)


def event_on(frame: np.ndarray) -> bool:
    """The planted checkerboard (pixels 10 and 250) is in the event box."""
    x1, y1, x2, y2 = (int(v) for v in EVENT_BOX)
    return frame[y1 + 2:y2 - 2, x1 + 2:x2 - 2].std() > 60


def check_clip(path, start: int, end: int, n_frames: int, onset: int) -> None:
    """The clip of incident ``[start, end)`` covers 2 s before to 1 s after it (within the
    input), at the source's size and rate, and shows the event from source frame ``onset``."""
    first, stop = max(0, start - 2 * FPS), min(n_frames, end + FPS)
    assert clip_range(start, end, FPS, n_frames) == (first, stop)
    frames, meta, rate = decode(path)
    assert len(frames) == stop - first and rate == FPS
    assert frames[0].shape == (96, 128, 3)
    assert meta["comment"] == COMMENT
    on = [event_on(f) for f in frames]
    assert not any(on[:onset - first]) and all(on[onset - first:onset - first + 8])


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("clip") / "cam.mkv",
                       scene_frames(160, [EVENT], 7))


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_events_writes_one_clip_per_incident(live_run, video, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clips").mkdir()
    stale = tmp_path / "clips" / f".cam.incident-001.mp4.{dead_pid()}.abcdefgh.tmp"
    stale.write_bytes(b"half a clip")  # a writer killed mid-write
    code, out, err = run_cli(capsys, "events", video, "--model", live_run, "--threshold", "0.5",
                             "--clips", "clips", "--device", "cpu")
    assert code == 0, err
    (line,) = out.splitlines()
    inc = json.loads(line)
    assert abs(inc["start_frame"] - EVENT[0]) <= 16 and abs(inc["end_frame"] - EVENT[1]) <= 16
    check_clip(tmp_path / "clips" / "cam.incident-001.mp4", inc["start_frame"],
               inc["end_frame"], 160, EVENT[0])
    assert listing(tmp_path / "clips") == ["cam.incident-001.mp4"]

    # a kill mid-write (here an interrupt after 10 frames) leaves the old clip, no temporary
    before = (tmp_path / "clips" / "cam.incident-001.mp4").read_bytes()
    real_add = clip_mod.ClipWriter.add

    def add(self, frame):
        if self.n == 10:
            raise KeyboardInterrupt
        real_add(self, frame)

    monkeypatch.setattr(clip_mod.ClipWriter, "add", add)
    code, _, err = run_cli(capsys, "events", video, "--model", live_run, "--threshold", "0.5",
                           "--clips", "clips", "--device", "cpu")
    assert code == 130 and err.strip() == "interrupted"
    assert (tmp_path / "clips" / "cam.incident-001.mp4").read_bytes() == before
    assert listing(tmp_path / "clips") == ["cam.incident-001.mp4"]


def test_a_foreign_file_in_the_way_is_refused(live_run, video, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "cam.incident-001.mp4").write_bytes(b"my holiday video")
    code, _, err = run_cli(capsys, "events", video, "--model", live_run, "--threshold", "0.5",
                           "--clips", "clips", "--device", "cpu")
    assert code == 1
    assert_one_line_error(err, "clips/cam.incident-001.mp4: exists and is not a stmil incident "
                               "clip; refusing to overwrite it")
    assert (tmp_path / "clips" / "cam.incident-001.mp4").read_bytes() == b"my holiday video"
    assert listing(tmp_path / "clips") == ["cam.incident-001.mp4"]


def test_a_long_incident_clip_is_capped(live_run, video, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(clip_mod, "MAX_SECONDS", 2.5)
    code, out, err = run_cli(capsys, "events", video, "--model", live_run, "--threshold", "0.5",
                             "--clips", "clips", "--device", "cpu")
    assert code == 0, err
    start = json.loads(out)["start_frame"]
    frames, _, _ = decode(tmp_path / "clips" / "cam.incident-001.mp4")
    assert len(frames) == 75  # 2.5 s at 30 fps, from 2 s before the start
    assert clip_range(start, start + 30, FPS) == (start - 60, start + 15)


def gray(i: int) -> av.VideoFrame:
    level = max(0, 2 * i - 80)
    return av.VideoFrame.from_ndarray(np.full((48, 64, 3), level, dtype=np.uint8), "rgb24")


def test_the_live_recorder_keeps_a_bounded_ring(tmp_path, monkeypatch):
    """A 1 s ring at 30 fps holds 30 frames: a clip begun late starts at the oldest one held;
    frames after the incident's end plus the post-roll are not written."""
    monkeypatch.setattr(clip_mod, "RING_SECONDS", 1.0)
    rec = ClipRecorder(tmp_path, "cam", "cam")
    rec.connect(30.0, 64, 48)
    for i in range(100):
        rec.feed(i, gray(i))
    assert len(rec.ring) == 30
    rec.track(1, 80, 90)  # the pre-roll would start at 20: the ring holds 70..99
    for i in range(100, 130):
        rec.feed(i, gray(i))
        if i == 110:
            rec.finish(1, 95)  # ends at 95: post-roll to 125
    frames, meta, _ = decode(tmp_path / "cam.incident-001.mp4")
    assert len(frames) == 125 - 70 and meta["title"] == "cam from frame 70"
    assert [round(f.mean() / 2) + 40 for f in frames[:: 18]] == [70, 88, 106, 124]
    # a dropped candidate leaves nothing behind
    rec.track(2, 128, 130)
    rec.track(2, None)
    rec.close()
    assert listing(tmp_path) == ["cam.incident-001.mp4"]


def test_a_live_clip_is_committed_at_the_cap(tmp_path, monkeypatch):
    """A 1 s cap at 30 fps: the clip of an incident still open is complete after 30 frames."""
    monkeypatch.setattr(clip_mod, "MAX_SECONDS", 1.0)
    rec = ClipRecorder(tmp_path, "cam", "cam")
    rec.connect(30.0, 64, 48)
    for i in range(100):
        rec.feed(i, gray(i))
        if i >= 20:
            rec.track(1, 20, i + 1)  # open, active on every frame so far
    frames, _, _ = decode(tmp_path / "cam.incident-001.mp4")
    assert len(frames) == 30  # frames 0-29: the pre-roll from 20 - 60, cut at 0
    rec.finish(1, 100)
    rec.close()
    assert listing(tmp_path) == ["cam.incident-001.mp4"]


def test_watch_on_a_stream_writes_the_same_clip(live_run, tmp_path):
    port = free_port()
    server = serve(port, 160, EVENT)
    wait_line(server, "ready")
    msgs: list[str] = []
    events = event_config(live_run, threshold=0.5, merge_gap=0.5)
    config = WatchConfig(drop=False, timeout=2, retries=0, heartbeat=0, update=0, device="cpu")
    stop = threading.Event()
    try:
        r = watch(f"tcp://127.0.0.1:{port}", live_run, events, config, emit=msgs.append,
                  clips=tmp_path / "clips", stop=stop)
    finally:
        server.kill()
        server.wait()
    assert r.ended == "gave up"
    assert listing(tmp_path / "clips") == [f"127.0.0.1_{port}.incident-001.mp4"]  # issue 22 item 4
    path = tmp_path / "clips" / f"127.0.0.1_{port}.incident-001.mp4"
    kinds = [json.loads(m)["type"] for m in msgs]
    assert kinds == ["start", "end"], msgs
    end = Incident.from_dict({k: v for k, v in json.loads(msgs[1]).items()
                              if k in Incident.__dataclass_fields__})
    assert end.reason == "scores fell" and abs(end.start_frame - EVENT[0]) <= 16
    check_clip(path, end.start_frame, end.end_frame, 160, EVENT[0])



def test_a_clip_on_a_full_disk_names_the_clip_and_leaves_no_temporary(tmp_path, monkeypatch):
    """The kernel's own EFBIG (as ENOSPC): the error names ``<clip>.mp4``, never the hidden
    temporary file being encoded, which is removed."""
    monkeypatch.chdir(tmp_path)
    frames = np.random.default_rng(0).integers(0, 255, (60, 96, 128, 3), dtype=np.uint8)
    with limit_file_size(10_000), pytest.raises(OSError) as info:
        clip_mod.write_clip(Path("cam_1.mp4"), frames, 30.0, "incident 1")
    assert (info.value.filename, info.value.strerror) == ("cam_1.mp4", "File too large")
    assert os.listdir(".") == []
