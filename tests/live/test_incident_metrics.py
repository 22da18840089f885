"""Incident recall and false incidents per hour (stmil.evaluation.incidents), by hand."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from stmil.evaluation.incidents import incident_metrics, match_incidents
from stmil.live.calibrate import read_calibration
from stmil.live.incidents import EventConfig, Incident
from stmil.mil.train import train
from tests.conftest import run_cli
from tests.planted import make_planted
from tests.test_score import direct_maps


def inc(start: int, end: int, box=(0.0, 0.0, 10.0, 10.0)) -> Incident:
    return Incident(1, "", 10.0, start, end, start / 10, end / 10, 0.9, start, start / 10, 0.9,
                    list(box))


def test_match_incidents_by_hand():
    events = [(10, 20), (40, 50), (70, 80)]
    boxes = {45: [(20.0, 20.0, 30.0, 30.0)]}  # only the second event has a box
    incs = [inc(15, 25), inc(44, 46, box=(0, 0, 10, 10)), inc(90, 95), inc(20, 40)]
    found, false = match_incidents(incs, events, boxes)
    # Event 1: overlapped by [15, 25). Event 2: overlapped, but the box misses (0-10 vs 20-30).
    # Event 3: nothing. False: [90, 95) only ([20, 40) touches no event frame: half-open).
    assert found == [True, False, False] and false == 2
    hit = inc(44, 46, box=(25, 25, 40, 40))
    assert match_incidents([hit], events, boxes) == ([False, True, False], 0)
    touching = inc(0, 0, box=(30, 30, 40, 40))  # shares only an edge with the box: no area
    touching.start_frame, touching.end_frame = 44, 46
    assert match_incidents([touching], events, boxes)[0] == [False, False, False]


def video(maps, intervals, n_frames, boxes=None):
    meta = SimpleNamespace(fps=10.0, source_fps=10.0, n_frames=n_frames, width=20, height=20,
                           grid=2)  # the FeatureMeta fields incident_metrics reads
    ranges = np.array([[10 * k, 10 * k + 10] for k in range(len(maps))])
    rec = SimpleNamespace(intervals=tuple(intervals), boxes=boxes or {})
    return SimpleNamespace(meta=meta, clip_ranges=ranges, record=rec)


def test_incident_metrics_by_hand():
    cfg = EventConfig(threshold=0.5, hysteresis=0.0, min_duration=0.0, merge_gap=0.0)
    hot = [0.0, 0.0, 0.0, 0.9]  # bottom-right cuboid: box (10, 10, 20, 20)
    cold = [0.1] * 4
    # Video A (anomalous, 60 frames, event [20, 40) with a box in the bottom-right cell):
    # clips 2-3 hot -> incident [20, 40), found. Video B (normal, 40 frames): clip 1 hot ->
    # one false incident. Outside events: 40 + 40 frames at 10 fps = 8 s.
    a = video([cold, cold, hot, hot, cold, cold], [(20, 40)], 60,
              {25: [(12.0, 12.0, 18.0, 18.0)]})
    b = video([cold, hot, cold, cold], [], 40)
    maps = [np.array([cold, cold, hot, hot, cold, cold]), np.array([cold, hot, cold, cold])]
    m = incident_metrics([a, b], maps, cfg)
    assert (m["events"], m["found"], m["missed"], m["false"]) == (1, 1, 0, 1)
    assert m["recall"] == 1.0
    assert m["hours_outside_events"] == pytest.approx(8 / 3600)
    assert m["false_per_hour"] == pytest.approx(3600 / 8)
    # Box on the top-left cell instead: the incident overlaps in time but misses in space.
    a.record.boxes = {25: [(1.0, 1.0, 4.0, 4.0)]}
    assert incident_metrics([a, b], maps, cfg)["found"] == 0


def test_evaluate_reports_incidents_after_calibrate(tmp_path, capsys, monkeypatch):
    """Planted features: calibrate on train, then evaluate prints and records the numbers."""
    monkeypatch.chdir(tmp_path)
    make_planted(tmp_path / "d", tmp_path / "f", n_train=8, n_test=4, n_clips=8, channels=64)
    train("d", "f", "run", iterations=15, hidden=16, mid=4, n_segments=4, device="cpu",
          progress=False)
    code, out, err = run_cli(capsys, "evaluate", "--data", "d", "--features", "f", "--model",
                             "run")
    assert code == 0, err
    assert "incidents" not in out  # no calibration yet: no incident numbers
    code, out, err = run_cli(capsys, "calibrate", "run", "--data", "d", "--features", "f",
                             "--min-duration", "0")
    assert code == 0, err
    cal = read_calibration("run")
    assert cal.events.min_duration == 0 and cal.split == "train"
    # 17 s of normal train video cannot measure 1 per hour: the margin rule. With no minimum
    # duration one clip is an incident, so the zero-false bound is the top normal clip score
    # and an anomalous video fires up to its top clip score (computed from the weights).
    assert "warning: run: the train split holds 17 s of normal video, far less than the 1 h " \
           "that a target of 1 false incidents per hour needs; threshold midway" in err
    top = {label: [direct_maps(tmp_path / "run", np.load(p)).max()
                   for p in sorted((tmp_path / "f").glob(f"{label}Train*.npy"))]
           for label in ("Normal_Videos_", "Fighting")}
    assert cal.rule == "margin" and cal.n_anomalous == cal.anomalous_fired == 4
    assert cal.threshold == pytest.approx((max(top["Normal_Videos_"]) + min(top["Fighting"])) / 2,
                                          abs=2e-6)
    code, out, err = run_cli(capsys, "evaluate", "--data", "d", "--features", "f", "--model",
                             "run")
    assert code == 0, err
    line = out.strip().splitlines()[-1]
    assert line.startswith(f"incidents (threshold {cal.threshold:.4f}): found ")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    inc_block = saved["results"]["test"][str((tmp_path / "d").resolve())]["incidents"]
    assert inc_block["events"] == 2 and inc_block["threshold"] == cal.threshold
    assert f"found {inc_block['found']} of 2 events" in line
    # The false-positive cuboids at the run's threshold are the top-level count at that
    # threshold, and a lower threshold can only add some.
    from stmil.evaluation.evaluate import evaluate

    assert evaluate("d", "f", "run", threshold=cal.threshold).result["loc_false_positives"] == \
        inc_block["loc_false_positives"]
    assert evaluate("d", "f", "run", threshold=0.0).result["loc_false_positives"] > \
        inc_block["loc_false_positives"]
