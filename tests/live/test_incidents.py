"""The incident rules on hand-made clip scores: hysteresis, minimum duration, merge gap."""

from __future__ import annotations

import numpy as np
import pytest

from stmil.errors import ConfigError
from stmil.live.incidents import (
    ClipScore,
    EventConfig,
    IncidentTracker,
    find_incidents,
    incident_line,
    read_incidents,
)

FPS = 10.0  # 10 frames per clip below: a clip lasts 1 s


def clips(scores: list[float]) -> list[ClipScore]:
    """One clip per second (frames 10k to 10k + 10); cuboid 1 of 2 holds the score."""
    return [ClipScore(10 * k, 10 * k + 10, np.array([0.0, s]), (k, 0.0, k + 1.0, 1.0))
            for k, s in enumerate(scores)]


def spans(scores, **kw) -> list[tuple[int, int]]:
    cfg = EventConfig(**({"threshold": 0.5, "hysteresis": 0.0, "min_duration": 0.0,
                          "merge_gap": 0.0} | kw))
    return [(i.start_frame, i.end_frame) for i in find_incidents(clips(scores), cfg, FPS)]


def test_threshold_only():
    # Clips 2-3 and 5 reach 0.5 (>=, so exactly 0.5 counts); a gap of one clip (1 s) > 0 s.
    assert spans([0.1, 0.4, 0.9, 0.5, 0.2, 0.7, 0.0]) == [(20, 40), (50, 60)]


def test_hysteresis_keeps_an_incident_open_until_the_lower_threshold():
    scores = [0.1, 0.6, 0.45, 0.42, 0.3, 0.45, 0.1]
    # Without hysteresis only clip 1 is active; with 0.1, clips 2-3 (>= 0.4) extend it, clip
    # 4 (0.3) ends it, and clip 5 (0.45) does not reopen it: opening needs 0.5.
    assert spans(scores) == [(10, 20)]
    assert spans(scores, hysteresis=0.1) == [(10, 40)]


def test_min_duration_in_seconds():
    scores = [0.9, 0.1, 0.9, 0.9, 0.1, 0.9, 0.9, 0.9]
    assert spans(scores, min_duration=2.0) == [(20, 40), (50, 80)]  # 1 s < 2 s is dropped
    assert spans(scores, min_duration=2.5) == [(50, 80)]


def test_merge_gap_in_seconds():
    scores = [0.9, 0.1, 0.9, 0.1, 0.1, 0.9]
    # Gaps: 1 s between clips 0 and 2, 2 s between clips 2 and 5.
    assert spans(scores, merge_gap=0.5) == [(0, 10), (20, 30), (50, 60)]
    assert spans(scores, merge_gap=1.0) == [(0, 30), (50, 60)]  # a gap equal to it merges
    assert spans(scores, merge_gap=2.0) == [(0, 60)]


def test_incident_fields_by_hand():
    cfg = EventConfig(threshold=0.5, hysteresis=0.0, min_duration=0.0, merge_gap=1.0)
    # Clip 6 starts 2 s after clip 3 ends (> 1 s): it closes the incident; clip 5 (1 s) not.
    (inc,) = find_incidents(clips([0.0, 0.6, 0.2, 0.8, 0.0, 0.0, 0.0]), cfg, FPS, "v.mp4")
    # Clips 1-3 (the 0.2 clip is inside the merged gap): frames 10-40, 1.0 s to 4.0 s.
    assert (inc.start_frame, inc.end_frame, inc.start_time, inc.end_time) == (10, 40, 1.0, 4.0)
    assert (inc.peak_score, inc.peak_frame, inc.peak_time) == (0.8, 35, 3.5)  # clip 3's middle
    assert inc.mean_score == pytest.approx((0.6 + 0.2 + 0.8) / 3)
    assert inc.box == [3.0, 0.0, 4.0, 1.0]  # the peak clip's box
    assert [p.frame for p in inc.track] == [10, 20, 30]
    assert inc.reason == "scores fell" and inc.id == 1 and inc.source == "v.mp4"


def test_live_messages_start_after_min_duration_and_end_once():
    cfg = EventConfig(threshold=0.5, hysteresis=0.0, min_duration=2.0, merge_gap=0.0)
    t = IncidentTracker(cfg, FPS)
    got = [[(k, i.start_frame, i.end_frame) for k, i in t.push(c)]
           for c in clips([0.9, 0.9, 0.9, 0.1, 0.9, 0.1])]
    # The end is known when a clip starts more than merge_gap after the last active one: clip
    # 4 (clip 3 starts exactly when clip 2 ends, a gap of 0 s).
    assert got == [[], [("start", 0, 20)], [], [], [("end", 0, 30)], []]
    assert t.close("end of input") == []  # the 1 s candidate is never reported
    t.push(clips([0.9])[0])
    t.push(clips([0.0, 0.9])[1])
    (kind, inc), = t.close("stream lost")
    assert (kind, inc.reason, inc.id) == ("end", "stream lost", 2)


def test_lines_round_trip(tmp_path):
    cfg = EventConfig(threshold=0.5, hysteresis=0.0, min_duration=0.0, merge_gap=0.0)
    incs = find_incidents(clips([0.9, 0.1, 0.7]), cfg, FPS, "v")
    path = tmp_path / "i.jsonl"
    path.write_text("".join(incident_line("incident", i, video="v") + "\n" for i in incs))
    assert [(k, i) for k, i in read_incidents(path)] == [("incident", i) for i in incs]
    path.write_text('{"type": "incident"}\n')
    with pytest.raises(ConfigError, match=r"i.jsonl:1: not a stmil incident"):
        read_incidents(path)


@pytest.mark.parametrize("bad", [{"threshold": 1.5}, {"merge_gap": -1}, {"hysteresis": True},
                                 {"min_duration": float("nan")}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        EventConfig(**bad)
