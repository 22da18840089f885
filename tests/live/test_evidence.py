"""Incident evidence (issue 22, the live items): every incident keeps its line, its evidence is
never replaced, and what a snapshot or clip shows is the source it claims.

Items: 4 (unique source names, numbers continued across runs), 5 (events never replaces a
watch log), 15 (boxes follow a stream's size), 16 (a scores file's video is re-checked), 21
(clips are the same bytes on any number of CPUs), 29 (an incident whose snapshot fails keeps
its line, the error beside it), 30 (an unwritable evidence folder is refused at the start).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from stmil.errors import ConfigError
from stmil.features.extract import ExtractSettings, extract_video
from stmil.features.store import meta_clip_ranges
from stmil.live.clip import ClipWriter, write_clip
from stmil.live.incidents import read_incidents
from stmil.score import scores_from_maps, write_scores
from tests.conftest import (
    assert_one_line_error,
    limit_file_size,
    run_cli,
    unwritable,
    write_video,
)
from tests.live.scene import EVENT_BOX, SIZE, scene_frames
from tests.test_score import direct_maps

EVENT = (32, 64)


def centre_in(box, gt=EVENT_BOX) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return gt[0] <= cx < gt[2] and gt[1] <= cy < gt[3]


def files(folder: Path) -> dict[str, bytes]:
    """The visible files of ``folder`` (the ledger and temporaries left out)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.startswith(".")}


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("evidence") / "cam.mkv",
                       scene_frames(80, [EVENT], 7))


# --- item 4: names and numbers ----------------------------------------------------------------


def test_sources_are_named_by_host_port_and_path_or_name():
    from stmil.live.watch import source_name

    assert source_name("tcp://127.0.0.1:5000") == "127.0.0.1_5000"
    assert source_name("tcp://127.0.0.1:5001") == "127.0.0.1_5001"
    cam = source_name("rtsp://admin:secret@Cam.local:554/Streaming/Channels/101")
    assert cam == "cam.local_554_Streaming_Channels_101"  # no user or password in file names
    assert source_name("http://cam/video.mjpg?channel=2") == "cam_video.mjpg_channel_2"
    assert source_name("/dev/video0") == "video0"
    assert source_name("videos/cam.mkv") == "cam"
    assert source_name("tcp://127.0.0.1:5000", "door") == "door"
    long1, long2 = (source_name(f"rtsp://h/{'x' * 300}/{k}") for k in (1, 2))
    assert len(long1) <= 100 and long1 != long2 and long1 == source_name(f"rtsp://h/{'x' * 300}/1")
    for bad in ("../x", "", ".hidden", "a/b", "x" * 101):
        with pytest.raises(ConfigError, match="^--name "):
            source_name("tcp://127.0.0.1:5000", bad)


def test_a_restart_continues_the_numbers_and_replaces_no_evidence(live_run, video, tmp_path,
                                                                  capsys, monkeypatch):
    """watch the same file twice into the same --out, --snapshots and --clips: the second run's
    incident is number 2, its files are new, the first run's are untouched."""
    monkeypatch.chdir(tmp_path)
    args = ["watch", video, "--model", live_run, "--threshold", "0.5", "--out", "w.jsonl",
            "--snapshots", "snaps", "--clips", "clips", "--device", "cpu", "--update", "0"]
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    first = {d: files(tmp_path / d) for d in ("snaps", "clips")}
    assert list(first["snaps"]) == ["cam.incident-001.jpg"]
    assert list(first["clips"]) == ["cam.incident-001.mp4"]
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    assert [(k, i.id) for k, i in read_incidents("w.jsonl")] == [
        ("start", 1), ("end", 1), ("start", 2), ("end", 2)]
    for d, ext in (("snaps", "jpg"), ("clips", "mp4")):
        now = files(tmp_path / d)
        assert list(now) == [f"cam.incident-001.{ext}", f"cam.incident-002.{ext}"]
        assert now[f"cam.incident-001.{ext}"] == first[d][f"cam.incident-001.{ext}"]


# --- item 5: events and a watch log -----------------------------------------------------------


def test_events_never_replaces_a_log_that_watch_appends_to(live_run, video, tmp_path, capsys,
                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "watch", video, "--model", live_run, "--threshold", "0.5",
                           "--out", "log.jsonl", "--device", "cpu", "--update", "0")
    assert code == 0, err
    log = Path("log.jsonl").read_bytes()
    assert len(log.splitlines()) == 2
    code, _, err = run_cli(capsys, "events", video, "--model", live_run, "--threshold", "0.5",
                           "--out", "log.jsonl", "--device", "cpu")
    assert code == 1
    assert_one_line_error(err, "log.jsonl: ", "watch")
    assert Path("log.jsonl").read_bytes() == log
    # events replaces its own file, and only while it holds what events wrote
    for _ in range(2):
        code, _, err = run_cli(capsys, "events", video, "--model", live_run, "--threshold",
                               "0.5", "--out", "ev.jsonl", "--device", "cpu")
        assert code == 0, err
    assert [k for k, _ in read_incidents("ev.jsonl")] == ["incident"]
    with open("ev.jsonl", "a") as f:
        f.write(log.decode())  # a user adds watch's lines to it
    code, _, err = run_cli(capsys, "events", video, "--model", live_run, "--threshold", "0.5",
                           "--out", "ev.jsonl", "--device", "cpu")
    assert code == 1 and "ev.jsonl: " in err
    assert len(Path("ev.jsonl").read_text().splitlines()) == 3


# --- item 15: a stream that changes size ------------------------------------------------------


def mpegts(path: Path, frames: np.ndarray) -> Path:
    with av.open(str(path), "w", format="mpegts") as out:
        s = out.add_stream("mpeg2video", rate=30)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.bit_rate = 8_000_000
        for f in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    return path


def test_boxes_follow_the_stream_when_it_changes_size(live_run, tmp_path, capsys,
                                                      monkeypatch):
    """An MPEG-TS whose picture goes from 128x96 to 256x192 after 48 frames (two recordings
    joined, as a camera switching resolution sends them), the event in the second part: the
    incident's box and its snapshot are in 256x192 pixels."""
    monkeypatch.chdir(tmp_path)
    small = mpegts(tmp_path / "a.ts", scene_frames(48, [], 1))
    big = np.kron(scene_frames(96, [(16, 64)], 2), np.ones((2, 2, 1), dtype=np.uint8))
    Path("cam.ts").write_bytes(small.read_bytes() + mpegts(tmp_path / "b.ts", big).read_bytes())
    code, out, err = run_cli(capsys, "watch", "cam.ts", "--model", live_run, "--threshold",
                             "0.5", "--snapshots", "snaps", "--device", "cpu", "--update", "0")
    assert code == 0, err
    end = [json.loads(x) for x in out.splitlines() if json.loads(x)["type"] == "end"]
    assert len(end) == 1, out
    assert centre_in(end[0]["box"], tuple(2 * v for v in EVENT_BOX)), end[0]["box"]
    assert all(centre_in(p["box"], tuple(2 * v for v in EVENT_BOX)) or p["frame"] < 48
               for p in end[0]["track"])
    with Image.open(tmp_path / "snaps" / "cam.incident-001.jpg") as im:
        assert im.size == (256, 192)


# --- items 16 and 29: the scores file's video, and a snapshot that fails ----------------------


@pytest.fixture
def scored(live_run, tmp_path, extractor) -> tuple[Path, Path]:
    """``(video, scores file)``: cam.mkv (its event at frames 32-64) scored as stmil score
    does."""
    video = write_video(tmp_path / "cam.mkv", scene_frames(80, [EVENT], 7))
    features, meta = extract_video(video, extractor, ExtractSettings(size=SIZE))
    maps = np.asarray(direct_maps(live_run, features), dtype=np.float32)
    scores = write_scores(tmp_path / "scores", "cam",
                          scores_from_maps(maps, 7, meta, meta_clip_ranges(meta)))
    return video, scores


def test_a_replaced_video_gives_no_snapshot_of_the_wrong_video(live_run, scored, tmp_path,
                                                               capsys, monkeypatch):
    video, scores = scored
    monkeypatch.chdir(tmp_path)
    write_video(video, scene_frames(96, [], 9))  # another video under the same name
    code, out, err = run_cli(capsys, "events", scores, "--model", live_run, "--threshold",
                             "0.5", "--snapshots", "snaps", "--clips", "clips")
    assert code == 1
    (line,) = out.splitlines()
    inc = json.loads(line)
    assert abs(inc["start_frame"] - EVENT[0]) <= 16 and centre_in(inc["box"])
    for key in ("snapshot_error", "clip_error"):
        assert str(video) in inc[key] and "changed since" in inc[key], inc
    assert files(tmp_path / "snaps") == {} and files(tmp_path / "clips") == {}
    assert "error: " in err and "1 incidents" in err


def test_an_incident_keeps_its_line_when_its_snapshot_fails(live_run, scored, tmp_path,
                                                            capsys, monkeypatch):
    video, scores = scored
    monkeypatch.chdir(tmp_path)
    video.unlink()  # the source is gone
    code, out, err = run_cli(capsys, "events", scores, "--model", live_run, "--threshold",
                             "0.5", "--snapshots", "snaps", "--out", "ev.jsonl")
    assert code == 1
    ((kind, inc),) = read_incidents("ev.jsonl")
    assert kind == "incident" and abs(inc.start_frame - EVENT[0]) <= 16
    (line,) = Path("ev.jsonl").read_text().splitlines()
    assert str(video) in json.loads(line)["snapshot_error"]
    assert "1 incidents -> ev.jsonl" in err and f"error: {video}" in err


def test_a_full_disk_during_a_live_clip_keeps_the_incident(live_run, video, tmp_path):
    """A clip that cannot be written (the kernel's EFBIG, as ENOSPC) is named in the end line;
    watch goes on, and no temporary is left."""
    from stmil.live.events import event_config
    from stmil.live.watch import WatchConfig, watch

    msgs: list[dict] = []
    with limit_file_size(12_000):
        r = watch(str(video), live_run, event_config(live_run, threshold=0.5),
                  WatchConfig(heartbeat=0, update=0, device="cpu"),
                  emit=lambda x: msgs.append(json.loads(x)), clips=tmp_path / "clips")
    assert r.ended == "end of input" and r.evidence_errors == 1
    assert [m["type"] for m in msgs] == ["start", "end"]
    assert msgs[1]["clip_error"] == f"{tmp_path / 'clips' / 'cam.incident-001.mp4'}: " \
                                    "File too large"
    assert os.listdir(tmp_path / "clips") == [".stmil"] or os.listdir(tmp_path / "clips") == []


# --- item 21: the same bytes --------------------------------------------------------------------


def test_a_clip_is_the_same_bytes_on_one_cpu_or_many(tmp_path):
    """x264 splits a 512x384 picture between as many threads as it has CPUs, and its output
    depends on their number: clips are encoded on one thread, so a rerun on a busier or
    larger machine gives the same file."""
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        pytest.skip("needs 2 CPUs to compare")
    frames = np.kron(scene_frames(60, [(20, 50)], 3), np.ones((4, 4, 1), dtype=np.uint8))
    made = []
    for use in ({min(cpus)}, cpus):
        os.sched_setaffinity(0, use)
        try:
            dest = tmp_path / f"cpus{len(use)}.mp4"
            write_clip(dest, frames, 30.0, "cam.mkv from frame 0")
        finally:
            os.sched_setaffinity(0, cpus)
        made.append(dest.read_bytes())
    assert made[0] == made[1]


# --- item 30: unwritable folders --------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--clips", "--snapshots"])
def test_watch_refuses_an_unwritable_evidence_folder_at_the_start(live_run, tmp_path, capsys,
                                                                  monkeypatch, flag):
    """No incident at all here: the folder is refused before the source is read."""
    monkeypatch.chdir(tmp_path)
    write_video(tmp_path / "quiet.mkv", scene_frames(32, [], 3))
    with unwritable(tmp_path / "ev"):
        code, _, err = run_cli(capsys, "watch", "quiet.mkv", "--model", live_run, "--threshold",
                               "0.99", flag, "ev", "--device", "cpu")
    assert code == 1
    assert_one_line_error(err, "error: ev: output folder is not writable")
    assert ".tmp" not in err


def test_a_clip_writer_in_an_unwritable_folder_names_the_clip(tmp_path):
    with unwritable(tmp_path / "ev"), pytest.raises(OSError) as info:
        ClipWriter(tmp_path / "ev" / "cam.incident-001.mp4", 30.0, 64, 48, "t")
    assert info.value.filename == str(tmp_path / "ev" / "cam.incident-001.mp4")
