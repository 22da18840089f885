"""stmil watch on a live MPEG-TS stream served on 127.0.0.1, drops, Ctrl-C and bad inputs."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from PIL import Image

from stmil.live.events import event_config
from stmil.live.incidents import Incident
from stmil.live.watch import WatchConfig, watch
from stmil.mil.train import train
from tests.conftest import ROOT, STMIL_CTRL_C, assert_one_line_error, run_cli, write_video
from tests.live.scene import EVENT_BOX, scene_frames
from tests.planted import make_planted


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(port: int, n: int, *events: tuple[int, int]) -> subprocess.Popen:
    """The camera: tests/live/serve_ts.py in its own process."""
    args = [sys.executable, "-m", "tests.live.serve_ts", str(port), str(n)]
    return subprocess.Popen(args + [f"{s}:{e}" for s, e in events], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)


def wait_line(proc: subprocess.Popen, text: str) -> None:
    for line in proc.stdout:
        if line.strip() == text:
            return
    raise AssertionError(f"the server stopped before printing {text!r}")


def centre_in(box, gt=EVENT_BOX) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return gt[0] <= cx < gt[2] and gt[1] <= cy < gt[3]


def test_stream_lost_reconnect_and_a_second_incident(live_run, caplog):
    """Stream 1 has its event from frame 48 and stalls at frame 110 (the server is stopped,
    its connection left open), while the incident is open: after 2 s without data watch ends
    the incident with reason "stream lost". The server is then killed and restarted with
    stream 2 (event at frames 32-64): watch reconnects and reports the second incident."""
    port = free_port()
    events = event_config(live_run, threshold=0.5, merge_gap=0.5)  # ends within stream 2
    msgs: list[tuple[str, dict]] = []
    caplog.set_level(logging.INFO, logger="stmil")
    stop = threading.Event()

    def emit(line: str) -> None:
        d = json.loads(line)
        msgs.append((d["type"], d))
        if d["type"] == "end" and d["id"] == 2:
            stop.set()

    first = serve(port, 160, (48, 160))
    wait_line(first, "ready")
    config = WatchConfig(drop=False, timeout=2, backoff=0.2, max_backoff=0.5, heartbeat=0,
                         update=0, device="cpu")
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(summary=watch(
        f"tcp://127.0.0.1:{port}", live_run, events, config, emit=emit, stop=stop)))
    t.start()
    try:
        wait_line(first, "sent 110")
        first.send_signal(signal.SIGSTOP)  # a stall: no data, no end of stream
        deadline = time.monotonic() + 120
        while (not any("no data for 2 s" in m for m in caplog.messages)
               and time.monotonic() < deadline):
            time.sleep(0.1)
        first.kill()
        first.wait()
        second = serve(port, 96, (32, 64))
        t.join(timeout=240)
        second.wait(timeout=60)
    finally:
        stop.set()
        first.kill()
    assert not t.is_alive()
    ends = [Incident.from_dict({k: v for k, v in d.items() if k in Incident.__dataclass_fields__})
            for kind, d in msgs if kind == "end"]
    assert [k for k, _ in msgs] == ["start", "end", "start", "end"], msgs
    one, two = ends
    assert one.reason == "stream lost" and abs(one.start_frame - 48) <= 16
    assert 96 <= one.end_frame <= 112  # the last whole clip before the kill at frame 110
    assert msgs[1][1]["connection"] == 1 and msgs[1][1]["frame_offset"] == 0
    assert msgs[3][1]["connection"] == 2
    offset = msgs[3][1]["frame_offset"]  # frames of the first connection
    assert 96 <= offset <= 112
    assert abs(two.start_frame - offset - 32) <= 16 and abs(two.end_frame - offset - 64) <= 16
    assert two.reason == "scores fell" and two.id == 2
    assert centre_in(one.box) and centre_in(two.box)
    logs = caplog.messages
    assert any("stream lost (no data for 2 s); reconnecting in" in m for m in logs), logs
    assert any(m.endswith("reconnected") for m in logs)
    assert result["summary"].ended == "stopped"


def test_a_busy_scorer_drops_clips_and_says_so(live_run, tmp_path, monkeypatch, caplog):
    """A file read as fast as possible with drop on: clips arriving while the scorer is busy
    are dropped, counted in the heartbeat and the summary, and never queued. The scorer is
    made slow (0.5 s a clip) so that the reader outpaces it on any machine."""
    from stmil.mil.detector import Detector

    real = Detector.maps

    def slow(*args, **kwargs):
        time.sleep(0.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(Detector, "maps", slow)
    video = write_video(tmp_path / "v.mkv", scene_frames(160, [], 3))  # 10 clips
    caplog.set_level(logging.INFO, logger="stmil")
    config = WatchConfig(drop=True, heartbeat=0.001, device="cpu")
    r = watch(str(video), live_run, event_config(live_run, threshold=0.99), config,
              emit=lambda line: None)
    assert r.ended == "end of input" and r.frames == 160
    assert r.dropped_clips > 0 and r.clips + r.dropped_clips == 10
    assert r.dropped_frames == 16 * r.dropped_clips
    beats = [m for m in caplog.messages if m.startswith("heartbeat: ")]
    assert beats and "clips/s, real time needs 1.88)" in beats[-1]


def test_a_reader_too_slow_for_the_source_says_how_far_behind(live_run, tmp_path, monkeypatch,
                                                             caplog):
    """--realtime plays 80 frames (2.67 s) by the source's clock; preparing each frame is made
    to take 0.1 s, so the reader cannot keep up on any machine: by frame 79 it is at least
    7.9 - 2.63 s behind, and the heartbeat says so (dropping clips cannot help there)."""
    import stmil.live.watch

    real = stmil.live.watch.torch_resize  # the reader's resize of the torch backend

    def slow(*args, **kwargs):
        time.sleep(0.1)
        return real(*args, **kwargs)

    monkeypatch.setattr(stmil.live.watch, "torch_resize", slow)
    video = write_video(tmp_path / "v.mkv", scene_frames(80, [], 6))
    caplog.set_level(logging.INFO, logger="stmil")
    r = watch(str(video), live_run, event_config(live_run, threshold=0.99),
              WatchConfig(realtime=True, heartbeat=0.5, device="cpu"), emit=lambda line: None)
    assert r.frames == 80 and r.max_behind_s > 5.0
    beats = [m for m in caplog.messages if m.startswith("heartbeat: ")]
    assert any(" s behind the source (too slow even to read it)" in m for m in beats), beats


def test_ctrl_c_closes_the_incident_and_exits_0(live_run, tmp_path):
    """A real Ctrl-C: SIGINT to a ``stmil watch`` process once its incident has started (the
    video plays 32 s in real time, so the signal lands long before the end of input however
    slowly the machine scores). The incident ends "interrupted" and watch exits 0."""
    write_video(tmp_path / "cam.mkv", scene_frames(960, [(16, 960)], 4))
    args = [*STMIL_CTRL_C, "watch", "cam.mkv", "--model", str(live_run),
            "--threshold", "0.5", "--realtime", "--out", "w.jsonl", "--device", "cpu",
            "--snapshots", "snaps", "--update", "0", "--quiet"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    out, deadline = tmp_path / "w.jsonl", time.monotonic() + 120
    try:
        while not (out.exists() and '"type": "start"' in out.read_text()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no incident within 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [d["type"] for d in lines] == ["start", "end"]
    assert lines[1]["reason"] == "interrupted" and lines[1]["end_frame"] < 960
    with Image.open(tmp_path / "snaps" / "cam.incident-001.jpg") as im:
        assert im.size == (128, 96) and im.info["comment"] == b"stmil incident snapshot"
    assert err.strip().splitlines()[-1].startswith("interrupted: ")


def test_unreachable_stalled_and_not_video_sources(live_run, capsys):
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    code, _, err = run_cli(capsys, "watch", f"tcp://127.0.0.1:{port}", "--model", live_run,
                           "--threshold", "0.5", "--timeout", "0.5")
    assert code == 1 and time.monotonic() - t0 < 10
    assert_one_line_error(err, f"tcp://127.0.0.1:{port}: cannot open (Connection refused) "
                               "for 0.5 s")
    with socket.socket() as server:  # accepts, then sends nothing (a stalled camera)
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"tcp://127.0.0.1:{server.getsockname()[1]}"
        code, _, err = run_cli(capsys, "watch", url, "--model", live_run, "--threshold", "0.5",
                               "--timeout", "0.5")
    assert code == 1
    assert_one_line_error(err, f"{url}: no video data within 0.5 s")
    with socket.socket() as server:  # sends text, not a video
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"tcp://127.0.0.1:{server.getsockname()[1]}"

        def talk() -> None:
            conn, _ = server.accept()
            conn.sendall(b"HELLO, this is not a video stream\n" * 2000)
            conn.close()

        threading.Thread(target=talk, daemon=True).start()
        code, _, err = run_cli(capsys, "watch", url, "--model", live_run, "--threshold", "0.5",
                               "--timeout", "2")
    assert code == 1
    assert_one_line_error(err, f"{url}: ")
    assert "Invalid data" in err or "not a video stream" in err


def test_a_run_on_other_features_is_refused_before_reading(tmp_path, capsys):
    """A run trained on 64-channel features cannot use the 528 channels I3D Mixed_4e gives."""
    make_planted(tmp_path / "d", tmp_path / "f", n_train=4, n_test=2, n_clips=4, channels=64)
    train(tmp_path / "d", tmp_path / "f", tmp_path / "run", iterations=2, hidden=8, mid=4,
          n_segments=2, device="cpu", progress=False)
    code, _, err = run_cli(capsys, "watch", "tcp://127.0.0.1:9", "--model", tmp_path / "run",
                           "--threshold", "0.5")
    assert code == 1
    assert_one_line_error(err, "model takes 64-channel features, these have 528")


def test_fps_and_stride_other_than_the_runs_are_said(live_run, tmp_path, caplog):
    """--fps 15 of a 30 fps file keeps 40 of 80 frames; --stride 24 scores the 16-frame clips
    starting at kept frames 0 and 24. Each setting that differs from the run's is one warning."""
    video = write_video(tmp_path / "v.mkv", scene_frames(80, [], 5))
    caplog.set_level(logging.INFO, logger="stmil")
    config = WatchConfig(fps=15, stride=24, heartbeat=0, device="cpu")
    r = watch(str(video), live_run, event_config(live_run, threshold=0.99), config,
              emit=lambda line: None)
    assert r.clips == 2 and r.frames == 80
    assert [(w.levelno, w.getMessage()) for w in caplog.records] == [
        (logging.WARNING,
         "--fps 15: the run's features were extracted at the source's own rate; a 16-frame "
         "clip now spans 1.07 s of the scene, so scores differ from the run's (docs/live.md: "
         "real time on 2 cores)"),
        (logging.WARNING,
         "--stride 24: one 16-frame clip every 24 frames; the frames between clips are never "
         "scored")]
    caplog.clear()
    watch(str(video), live_run, event_config(live_run, threshold=0.99),
          WatchConfig(fps=30, heartbeat=0, device="cpu"), emit=lambda line: None)
    assert not [w for w in caplog.records if w.levelno >= logging.WARNING]  # the run's rate


@pytest.mark.parametrize("flag", [["--timeout", "0"], ["--retries", "-1"], ["--fps", "0"],
                                  ["--stride", "0"]])
def test_bad_watch_flags(live_run, capsys, flag):
    code, _, err = run_cli(capsys, "watch", "x.mp4", "--model", live_run, "--threshold", "0.5",
                           *flag)
    assert code == 1
    assert_one_line_error(err, flag[0].lstrip("-"))
