"""The pieces of ``stmil watch`` without a stream: the incident output on hand-made clip scores,
the live scorer on a synthetic clip, the reconnect loop on a fake opener."""

from __future__ import annotations

import json
import logging
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from stmil.features.i3d import endpoint_channels
from stmil.live.incidents import ClipScore, EventConfig, IncidentTracker
from stmil.live.snapshot import prepare_evidence_dir, snapshot_name
from stmil.live.watch import (
    Clip,
    IncidentOutput,
    LiveScorer,
    StreamError,
    WatchConfig,
    reconnect,
)
from stmil.mil.detector import Detector


def _clip(k: int, score: float) -> ClipScore:
    """Clip k: frames 10k to 10k + 10, cuboid 1 of 2 holds the score."""
    return ClipScore(10 * k, 10 * k + 10, np.array([0.0, score]), (1.0, 2.0, 30.0, 20.0))


def test_incident_output_lines_log_and_snapshots(tmp_path):
    events = EventConfig(threshold=0.5, hysteresis=0.0, min_duration=0.0, merge_gap=0.0)
    tracker = IncidentTracker(events, 10.0, "cam", first_id=7)
    snaps = prepare_evidence_dir(tmp_path / "snaps")
    (snaps / snapshot_name("cam", 8)).write_bytes(b"someone else's")  # 8 cannot be written
    lines: list[str] = []
    out = IncidentOutput(tracker, "cam", tmp_path / "log.jsonl", lines.append, snaps, None)
    out.connection, out.frame_offset = 2, 100
    grey = [np.full((24, 32, 3), v, np.uint8) for v in (50, 200, 0, 90)]
    for k, (score, frame) in enumerate(zip([0.9, 0.95, 0.1, 0.8], grey)):
        out.push(_clip(k, score), frame, latency=0.25)
    out.update()
    out.close("stream lost")

    msgs = [json.loads(line) for line in lines]
    assert [(m["type"], m["id"]) for m in msgs] == [("start", 7), ("end", 7), ("start", 8),
                                                     ("update", 8), ("end", 8)]
    assert all(m["connection"] == 2 and m["frame_offset"] == 100 for m in msgs)
    assert [m.get("latency_s") for m in msgs] == [0.25, 0.25, 0.25, None, None]
    assert msgs[-1]["reason"] == "stream lost" and "exists" in msgs[-1]["snapshot_error"]
    assert "snapshot_error" not in msgs[1] and out.failures == 1
    assert (tmp_path / "log.jsonl").read_text().splitlines() == lines
    # Incident 7's snapshot is its peak clip's middle frame (grey 200), not its first (50).
    snap = np.asarray(Image.open(snaps / snapshot_name("cam", 7)))
    assert snap.shape == (24, 32, 3) and abs(int(np.median(snap)) - 200) < 30  # JPEG, red box


def test_live_scorer_on_a_synthetic_clip(live_run):
    detector = Detector.load(live_run)
    rc = detector.config
    n, c = rc.feature_grid ** 2, endpoint_channels(rc.endpoint)
    feats = torch.rand(1, n, c, generator=torch.Generator().manual_seed(0))
    seen = []

    def extractor(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return feats

    frames = torch.rand(3, rc.clip_len, rc.size, rc.size) * 2 - 1
    scorer = LiveScorer(detector, extractor, rc.feature_grid, threshold=None)
    maps = scorer.maps(frames)
    assert seen == [(1, 3, rc.clip_len, rc.size, rc.size)] and maps.shape == (1, n)
    for w, h in ((64, 48), (320, 240)):  # a stream that changes size: boxes in its pixels
        clip = Clip(frames, 40, 56, np.zeros((h, w, 3), np.uint8), 0.0)
        score = scorer.clip_score(clip, maps)
        assert (score.start, score.end) == (40, 56) and score.score == maps.max()
        top = int(maps[0].argmax())
        cw, ch = w / rc.feature_grid, h / rc.feature_grid
        row, col = divmod(top, rc.feature_grid)
        assert np.allclose(score.box, (col * cw, row * ch, (col + 1) * cw, (row + 1) * ch))
    every = LiveScorer(detector, extractor, rc.feature_grid, threshold=0.0)  # all cuboids hot
    assert np.allclose(every.clip_score(clip, maps).box, (0, 0, 320, 240))


def test_reconnect_backs_off_gives_up_and_stops(caplog):
    cfg = WatchConfig(backoff=0.0, max_backoff=0.01)
    tries = []

    def opener(source, timeout):
        tries.append(timeout)
        if len(tries) < 3:
            raise StreamError(f"{source}: cannot open (refused {len(tries)})")
        return "opened"

    stop = threading.Event()
    with caplog.at_level(logging.INFO, logger="stmil.live.watch"):
        assert reconnect("tcp://h:1", cfg, stop, 0, "eof", opener) == ("opened", None, 3)
    assert tries == [10.0] * 3
    assert [r.getMessage() for r in caplog.records] == [
        "tcp://h:1: stream lost (eof); reconnecting in 0.0 s (attempt 1)",
        "tcp://h:1: stream lost (cannot open (refused 1)); reconnecting in 0.0 s (attempt 2)",
        "tcp://h:1: stream lost (cannot open (refused 2)); reconnecting in 0.0 s (attempt 3)",
        "tcp://h:1: reconnected"]
    caplog.clear()
    limited = WatchConfig(backoff=0.0, max_backoff=0.01, retries=2)
    with caplog.at_level(logging.INFO, logger="stmil.live.watch"):
        assert reconnect("tcp://h:1", limited, stop, 2, "eof", opener) == (None, "gave up", 2)
    assert caplog.records[-1].getMessage() == ("tcp://h:1: stream lost (eof); giving up after 2 "
                                               "reconnection attempts")
    stop.set()
    assert reconnect("tcp://h:1", cfg, stop, 0, "eof", opener) == (None, "stopped", 1)
    assert len(tries) == 3  # stopped during the wait: nothing more opened


def test_a_file_url_is_the_file_it_names(tmp_path):
    """Issue 22 item 32: `watch file://...` was refused as an unknown stream."""
    from stmil.live.watch import StreamError, local_source

    video = tmp_path / "my cam.mkv"
    url = "file://" + str(video).replace(" ", "%20")
    assert local_source(url) == str(video)
    assert local_source("file://localhost" + str(video)) == str(video)
    assert local_source("rtsp://10.0.0.2/stream") == "rtsp://10.0.0.2/stream"
    assert local_source("cam.mkv") == "cam.mkv"
    with pytest.raises(StreamError, match="a file URL of another host"):
        local_source("file://otherhost/cam.mkv")


def test_watch_reads_a_file_url(live_run, tmp_path):
    from stmil.live.events import event_config
    from stmil.live.watch import WatchConfig, watch
    from tests.conftest import write_video
    from tests.live.scene import scene_frames

    video = write_video(tmp_path / "v.mkv", scene_frames(32, [], 3))  # 2 clips
    r = watch("file://" + str(video), live_run, event_config(live_run, threshold=0.99),
              WatchConfig(device="cpu"), emit=lambda line: None)
    assert r.ended == "end of input" and r.frames == 32 and r.clips == 2
