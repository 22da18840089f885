"""stmil calibrate, events and watch on a file: one tiny run, real I3D on a 5-clip video."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stmil.errors import ModelError
from stmil.features.extract import ExtractSettings, extract_video
from stmil.features.store import meta_clip_ranges
from stmil.live.calibrate import Calibration, read_calibration
from stmil.live.incidents import EventConfig, read_incidents
from stmil.score import scores_from_maps, write_scores
from tests.conftest import assert_one_line_error, run_cli, write_video
from tests.live.scene import EVENT_BOX, SIZE, scene_frames
from tests.test_score import direct_maps

EVENT = (32, 64)  # frames: clips 2 and 3 of 5


def centre_in(box, gt=EVENT_BOX) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return gt[0] <= cx < gt[2] and gt[1] <= cy < gt[3]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("ev") / "cam.mkv", scene_frames(80, [EVENT], 7))


def test_calibrate_events_watch_agree(live_run, video, tmp_path, capsys, monkeypatch,
                                      extractor):
    monkeypatch.chdir(tmp_path)
    base = live_run.parent
    os.symlink(base, "b")  # relative paths, as a user types them

    # calibrate: 4 normal train videos of 48 frames (6.4 s) cannot measure 1 false incident
    # per hour (that needs an hour), so a warning says so and the margin rule is tried: here
    # an anomalous train video (its event lasts one clip, less than --min-duration) fires only
    # at thresholds that also give a normal video an incident, so the rate rule's threshold is
    # kept: midway from the top normal clip score to 1 (every normal clip is below 0.3, within
    # the hysteresis of the others). Both levels computed here from the weights, not by stmil.
    code, out, err = run_cli(capsys, "calibrate", "b/run", "--data", "b/data", "--features",
                             "b/feats")
    assert code == 0, err
    assert "0 false incidents" in out and "train video" in out
    assert err.startswith("warning: b/run: no validation split")
    assert "\nwarning: b/run: the train split holds 6 s of normal video, far less than the 1 h " \
           "that a target of 1 false incidents per hour needs; no threshold separates" in err
    normal = [np.load(p) for p in sorted((base / "feats").glob("Normal*.npy"))]
    top = max(direct_maps(live_run, x).max() for x in normal)
    anomalous = [direct_maps(live_run, np.load(p)).max(axis=1)
                 for p in sorted((base / "feats").glob("Fighting*.npy"))]

    def fires(c, t) -> bool:  # an active clip, then one within the hysteresis: 32 frames >= 1 s
        return any(c[i] >= t and c[j] >= t - 0.1 for i in range(3) for j in range(i + 1, 3))

    assert min(max((t for t in c if fires(c, t)), default=0) for c in anomalous) <= top
    cal = read_calibration("b/run")
    assert cal.split == "train" and cal.n_videos == 4 and cal.false_incidents == 0
    assert cal.rule == "rate" and cal.n_anomalous == 4
    assert cal.threshold == pytest.approx((top + 1) / 2, abs=2e-6)
    assert cal.normal_hours == pytest.approx(4 * 48 / 30 / 3600)
    # 600 per hour over 6.4 s allows 1.07 false incidents: measurable, the rate rule, no warning
    code, out, err = run_cli(capsys, "calibrate", "b/run", "--data", "b/data", "--features",
                             "b/feats", "--target", "600")
    assert code == 0 and "far less" not in err and read_calibration("b/run").threshold < top
    code, out, err = run_cli(capsys, "calibrate", "b/run", "--data", "b/data", "--features",
                             "b/feats")
    assert code == 0 and read_calibration("b/run") == cal

    # events on the video, with a snapshot.
    code, out, err = run_cli(capsys, "events", video, "--model", "b/run", "--out", "ev.jsonl",
                             "--snapshots", "snaps", "--device", "cpu")
    assert code == 0, err
    ((kind, inc),) = read_incidents("ev.jsonl")
    assert kind == "incident" and inc.source == str(video)
    assert abs(inc.start_frame - EVENT[0]) <= 16 and abs(inc.end_frame - EVENT[1]) <= 16
    assert inc.start_time == pytest.approx(inc.start_frame / 30, abs=1e-6)
    assert centre_in(inc.box) and EVENT[0] <= inc.peak_frame < EVENT[1]
    snap = tmp_path / "snaps" / "cam.incident-001.jpg"
    with Image.open(snap) as im:
        assert im.size == (128, 96) and im.info["comment"] == b"stmil incident snapshot"
        px = np.asarray(im.convert("RGB")).astype(int)
    x1, y = round(inc.box[0]), round((inc.box[1] + inc.box[3]) / 2)
    edge = px[y, x1 - 1:x1 + 3]  # the box's left edge, drawn in red (2 pixels wide)
    red = edge[:, 0] - edge[:, 1:].mean(axis=1)
    assert red.max() > 120, edge
    inside = px[y, x1 + 6]
    assert inside[0] - inside[1:].mean() < 60, inside  # not red inside the box

    # the same video's features as a scores.json: the same incident.
    features, meta = extract_video(video, extractor, ExtractSettings(size=SIZE))
    maps = np.asarray(direct_maps(live_run, features), dtype=np.float32)
    write_scores(tmp_path / "scores", "cam", scores_from_maps(maps, 7, meta,
                                                              meta_clip_ranges(meta)))
    code, out, err = run_cli(capsys, "events", "scores/cam.scores.json", "--model", "b/run")
    assert code == 0, err
    (line,) = out.splitlines()
    same = json.loads(line)
    for key in ("start_frame", "end_frame", "peak_frame", "box"):
        assert same[key] == pytest.approx(getattr(inc, key), abs=1e-3), key
    assert same["peak_score"] == pytest.approx(inc.peak_score, abs=1e-3)

    # watch on the file (as fast as possible): start then end, the same incident.
    code, out, err = run_cli(capsys, "watch", video, "--model", "b/run", "--out", "w.jsonl",
                             "--device", "cpu", "--update", "0")
    assert code == 0, err
    msgs = read_incidents("w.jsonl")
    assert [k for k, _ in msgs] == ["start", "end"]
    end = msgs[1][1]
    assert end.reason == "scores fell" or end.reason == "end of input"
    for key in ("start_frame", "end_frame", "peak_frame", "id", "start_time", "end_time"):
        assert getattr(end, key) == getattr(inc, key), key
    np.testing.assert_allclose(end.box, inc.box, atol=1e-3)
    assert end.peak_score == pytest.approx(inc.peak_score, abs=1e-3)
    assert "end of input: 80 frames, 5 clips scored, 0 frames dropped, 1 incidents" in err


def test_events_refuses_what_is_not_its_own(live_run, video, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.jsonl").write_text("my notes\n")
    code, _, err = run_cli(capsys, "events", video, "--model", live_run, "--threshold", "0.5",
                           "--out", "notes.jsonl")
    assert code == 1
    assert_one_line_error(err, "notes.jsonl: exists and is not a stmil incidents file")
    assert (tmp_path / "notes.jsonl").read_text() == "my notes\n"
    (tmp_path / "bad.scores.json").write_text("{}")
    code, _, err = run_cli(capsys, "events", "bad.scores.json", "--model", live_run,
                           "--threshold", "0.5")
    assert code == 1 and "bad.scores.json: not a stmil scores file" in err


def test_calibrate_refuses_an_unfinished_run(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.safetensors").write_bytes(b"")
    code, _, err = run_cli(capsys, "calibrate", tmp_path / "run", "--data", tmp_path,
                           "--features", tmp_path)
    assert code == 1
    assert_one_line_error(err, "not a finished stmil run folder (no .stmil-run, config.yaml)")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["model.safetensors"]


CALIBRATION = Calibration(threshold=0.4, events=EventConfig(0.4), target_per_hour=1.0,
                          split="validation", n_videos=2, normal_hours=0.5, false_incidents=0,
                          per_hour=0.0, curve=[(0.4, 0.0)], data="d", features="f")
CAL_FIX = "; move it away (stmil replaces only its own calibration), then run stmil calibrate run"


@pytest.mark.parametrize("edit, message", [
    ({"threshold": "x"}, "threshold must be a number from 0 to 1, got 'x'"),
    ({"threshold": 0.3}, "threshold must equal events.threshold (0.4), got 0.3"),
    ({"n_videos": True}, "n_videos must be a whole number >= 0, got True"),
    ({"split": "test"}, "split must be one of validation, train, got 'test'"),
    ({"events": {"threshold": 2}}, "events: threshold must be a number from 0 to 1, got 2"),
    ({"data": None}, "data must be a string, got None"),
])
def test_a_calibration_json_with_a_bad_value_is_one_line_naming_file_and_key(tmp_path,
                                                                             monkeypatch, edit,
                                                                             message):
    monkeypatch.chdir(tmp_path)
    Path("run").mkdir()
    good = CALIBRATION.to_dict()
    Path("run/calibration.json").write_text(json.dumps(good))
    assert read_calibration("run") == CALIBRATION  # the oracle: what was written reads back
    Path("run/calibration.json").write_text(json.dumps(good | {"newer_key": 1} | edit))
    with pytest.raises(ModelError) as info:
        read_calibration("run")
    assert str(info.value) == f"{Path('run/calibration.json')}: {message}{CAL_FIX}"


@pytest.mark.parametrize("content", ['{"threshold": 1}', "[1]", "not json"])
def test_calibrate_refuses_a_foreign_calibration_json_and_keeps_it(tmp_path, capsys,
                                                                    monkeypatch, content):
    """The fix it gives is not to calibrate again (that is refused the same way)."""
    monkeypatch.chdir(tmp_path)
    Path("run").mkdir()
    for name in (".stmil-run", "config.yaml", "model.safetensors"):
        Path("run", name).write_text("")
    Path("run/calibration.json").write_text(content)
    code, _, err = run_cli(capsys, "calibrate", "run", "--data", "data", "--features", "f")
    assert code == 1
    assert_one_line_error(err, "error: run/calibration.json: not a stmil calibration (")
    assert err.rstrip().endswith("); move it away (stmil replaces only its own calibration), "
                                 "then run stmil calibrate run")
    assert Path("run/calibration.json").read_text() == content
