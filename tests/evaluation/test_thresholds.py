"""The threshold of the thresholded metrics (issue 20, item 7): the run's calibrated one when
it has one, 0.5 otherwise, ``--threshold`` over both; recorded and shown beside the values.

Expected values come from a small numpy transcription of the definitions in docs/metrics.md
(TIoU, false alarm rate, localization false positives), written from the planted layout
(clips of 16 frames tiling the video, a uniform 7x7 grid), not from stmil's functions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from stmil.datasets import VideoRecord
from stmil.errors import ModelError
from stmil.evaluation.evaluate import (
    compare_table,
    compute_metrics,
    evaluate,
    read_metrics,
    table_notes,
)
from stmil.features.store import FeatureMeta, VideoFeatures
from stmil.live.calibrate import Calibration, write_calibration
from stmil.live.incidents import EventConfig
from stmil.mil.train import train
from tests.conftest import assert_one_line_error, run_cli
from tests.planted import make_planted

KEYS = ("false_alarm_rate", "tiou", "loc_false_positives")


# --- an independent transcription of the definitions --------------------------------------

def _frame_scores(v, m: np.ndarray) -> np.ndarray:
    """Planted clips tile the video: frame f takes clip f // clip_len's top cuboid."""
    clip_len = v.meta.clip_len
    assert v.meta.stride == clip_len and v.meta.n_frames == clip_len * len(m)
    return np.repeat(m.max(axis=1), clip_len)


def _cell(i: int, g: int, w: float, h: float) -> np.ndarray:
    r, c = divmod(i, g)
    return np.array([c * w / g, r * h / g, (c + 1) * w / g, (r + 1) * h / g])


def _area(b) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _inter(a, b) -> float:
    return _area([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])])


def expected(pairs, t: float) -> dict:
    """False alarm rate, TIoU and false-positive cuboids at ``t``, from the definitions."""
    normal, tiou_terms, fp_counts = [], [], []
    for v, m in pairs:
        fs = _frame_scores(v, m)
        if v.record.label == 0:
            normal.append(fs)
            continue
        g, w, h, clip_len = v.meta.grid, v.meta.width, v.meta.height, v.meta.clip_len
        cells = [_cell(i, g, w, h) for i in range(g * g)]
        gt = {f: [np.array(b, float) for b in bs] for f, bs in v.record.boxes.items() if bs}
        for f, boxes in sorted(gt.items()):
            row = m[f // clip_len]
            top = [cells[i] for i in np.flatnonzero(row == row.max())]
            pred = np.r_[np.min(top, axis=0)[:2], np.max(top, axis=0)[2:]]
            iou = max(_inter(pred, b) / (_area(pred) + _area(b) - _inter(pred, b))
                      for b in boxes)
            tiou_terms.append(iou if fs[f] >= t else 0.0)
        for k in sorted({f // clip_len for f in gt}):
            clip_gt = [b for f in range(k * clip_len, (k + 1) * clip_len) for b in gt.get(f, [])]
            fp_counts.append(sum(1 for i in range(g * g) if m[k, i] >= t
                                 and all(_inter(cells[i], b) <= 0 for b in clip_gt)))
    return {"false_alarm_rate": float(np.mean(np.concatenate(normal) >= t)),
            "tiou": float(np.mean(tiou_terms)), "loc_false_positives": float(np.mean(fp_counts))}


# --- a trained run on planted features ----------------------------------------------------

@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A planted dataset and a run that localizes it with scores well under 0.5 (as the
    default detector's gated scores are)."""
    base = tmp_path_factory.mktemp("thresholds")
    data, feats, run = base / "data", base / "feats", base / "run"
    make_planted(data, feats, n_train=8, n_test=6, n_clips=8, channels=64)
    train(data, feats, run, iterations=15, hidden=16, mid=4, n_segments=4, device="cpu",
          progress=False)
    return data, feats, run


@pytest.fixture
def fresh(planted, tmp_path) -> tuple[Path, Path, Path]:
    """A copy of the run, without metrics.json or calibration.json."""
    data, feats, run = planted
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("metrics.json",
                                                             "calibration.json"))
    return data, feats, copy


def calibrate_at(run: Path, t: float) -> None:
    """Write a calibration of ``run`` at ``t`` with stmil's one writer."""
    write_calibration(run, Calibration(
        threshold=t, events=EventConfig(t), target_per_hour=1.0, split="validation",
        n_videos=2, normal_hours=0.01, false_incidents=0, per_hour=0.0, curve=[(t, 0.0)],
        data="d", features="f"))


def test_without_calibration_the_metrics_are_at_one_half(fresh):
    data, feats, run = fresh
    summary = evaluate(data, feats, run)
    r = summary.result
    want = expected(summary.videos, 0.5)
    assert {k: r[k] for k in KEYS} == pytest.approx(want)
    assert r["threshold"] == {"value": 0.5, "source": "default", "metrics": list(KEYS),
                              "at_0.5": None}
    stored = read_metrics(run)["test"][str(data.resolve())]
    assert stored["threshold"] == r["threshold"] and stored["settings"]["threshold"] == 0.5


def test_calibrated_threshold_is_used_and_recorded_with_the_figures_at_one_half(fresh):
    data, feats, run = fresh
    pairs = evaluate(data, feats, run).videos
    # The lowest score among the anomalous videos' boxed frames: every one of them is flagged.
    boxed = [_frame_scores(v, m)[f] for v, m in pairs if v.record.label
             for f, b in v.record.boxes.items() if b]
    t = round(float(min(boxed)), 6)
    want, at_half = expected(pairs, t), expected(pairs, 0.5)
    # The case: the run localizes (TIoU > 0 at its threshold) but has TIoU 0 at 0.5.
    assert t < 0.5 and want["tiou"] > 0.0 and at_half["tiou"] == 0.0
    calibrate_at(run, t)
    r = evaluate(data, feats, run).result
    assert {k: r[k] for k in KEYS} == pytest.approx(want)
    block = r["threshold"]
    assert (block["value"], block["source"]) == (t, "calibrated")
    assert block["at_0.5"] == pytest.approx(at_half)
    saved = json.loads((run / "metrics.json").read_text())["results"]["test"]
    (entry,) = saved.values()
    assert entry["threshold"] == json.loads(json.dumps(block))  # written beside the values
    assert entry["settings"]["threshold"] == t
    assert entry["incidents"]["loc_false_positives"] == pytest.approx(want["loc_false_positives"])


def test_an_explicit_threshold_wins_over_the_calibration(fresh):
    data, feats, run = fresh
    pairs = evaluate(data, feats, run).videos
    normal = np.concatenate([_frame_scores(v, m) for v, m in pairs if v.record.label == 0])
    given = round(float(np.median(normal)), 6)
    calibrate_at(run, round(given / 2, 6))
    r = evaluate(data, feats, run, threshold=given).result
    want = expected(pairs, given)
    assert 0.0 < want["false_alarm_rate"] < 1.0
    assert {k: r[k] for k in KEYS} == pytest.approx(want)
    assert (r["threshold"]["value"], r["threshold"]["source"]) == (given, "given")
    # At 0.5 itself there is nothing to add.
    assert evaluate(data, feats, run, threshold=0.5).result["threshold"]["at_0.5"] is None


def test_cli_shows_the_threshold_its_source_and_the_papers_ap(fresh, capsys, monkeypatch):
    data, feats, run = fresh
    monkeypatch.chdir(run.parent)
    calibrate_at(run, 0.25)
    args = ("evaluate", "--data", data, "--features", feats, "--model", "run")
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    head = out.splitlines()[0].split()
    assert {"tiou@0.25(calibrated)", "false_alarm_rate@0.25(calibrated)",
            "loc_false_positives@0.25(calibrated)", "frame_ap_trapezoid"} <= set(head)
    assert "frame_ap_trapezoid is the AP papers report" in out
    assert "calibrated: the run's calibration.json" in out
    assert "run at 0.5, the papers' threshold: false_alarm_rate " in out
    code, out, err = run_cli(capsys, *args, "--threshold", "0.5")
    assert code == 0, err
    assert "tiou@0.5(given)" in out.splitlines()[0] and "papers' threshold:" not in out
    code, out, err = run_cli(capsys, *args, "--threshold", "1.5")
    assert code != 0
    assert_one_line_error(err, "--threshold must be a number from 0 to 1, got 1.5")


def test_compare_gives_each_run_its_threshold_when_they_differ(fresh, tmp_path):
    data, feats, run = fresh
    other = tmp_path / "other"
    shutil.copytree(run, other)
    evaluate(data, feats, run)
    calibrate_at(other, 0.2)
    evaluate(data, feats, other)
    head, _, first, second = compare_table([run, other]).splitlines()
    assert "tiou@threshold" in head.split() and "threshold" in head.split()
    assert "0.5(default)" in first.split() and "0.2(calibrated)" in second.split()
    lines = compare_table([run, other], notes=True).splitlines()[4:]
    assert any(line.startswith(f"{other} at 0.5, the papers' threshold") for line in lines)
    assert not any(line.startswith(f"{run} at 0.5") for line in lines)


def _hand_case() -> dict:
    """test_evaluate's hand case (grid 2, 4x4 frames, clips of 2 frames) at 0.35."""
    meta = FeatureMeta(fps=30.0, source_fps=30.0, n_frames=5, width=4, height=4, grid=2,
                       clip_len=2, stride=2, n_clips=2, size=224, endpoint="Mixed_4e",
                       tail="drop", channels=8)
    a = VideoRecord("A", 0)
    b = VideoRecord("B", 1, intervals=((1, 5),),
                    boxes={f: [(2.0, 2.0, 4.0, 4.0)] for f in range(1, 5)})
    feats = np.zeros((2, 4, 8), np.float16)
    maps = [np.array([[0.1, 0.2, 0.3, 0.2], [0.4, 0.1, 0.1, 0.1]]),
            np.array([[0.2, 0.1, 0.1, 0.1], [0.1, 0.2, 0.3, 0.35]])]
    return compute_metrics([VideoFeatures(a, feats, meta),
                            VideoFeatures(b, feats, meta)], maps, threshold=0.35)


def test_hand_case_at_a_given_threshold_and_at_one_half():
    m = _hand_case()
    # Normal frames .3 .3 .4 .4 .4: three >= .35, none >= .5.
    # B's boxed frames 1-4 score .2 .35 .35 .35; frames 2-4 (clip 1 and its tail) point at
    # cuboid 3, the GT box itself: TIoU (0 + 1 + 1 + 1) / 4 at .35, 0 at .5.
    # Clip 1's only cuboid >= .35 is the GT's own: no false positive at either.
    assert (m["false_alarm_rate"], m["tiou"], m["loc_false_positives"]) == \
        pytest.approx((3 / 5, 3 / 4, 0.0))
    assert m["threshold"]["value"] == 0.35 and m["threshold"]["source"] == "given"
    assert m["threshold"]["at_0.5"] == {"false_alarm_rate": 0.0, "tiou": 0.0,
                                        "loc_false_positives": 0.0}
    notes = table_notes([("hand", m)])
    assert notes[-1] == ("hand at 0.5, the papers' threshold: false_alarm_rate 0.0000, "
                         "tiou 0.0000, loc_false_positives 0.0000")


@pytest.mark.parametrize("block", [
    {"value": "0.3", "source": "calibrated", "at_0.5": None},
    {"value": 0.3, "source": "guessed", "at_0.5": None},
    {"value": 0.3, "source": "given", "at_0.5": {"tiou": -1}},
    {"value": True, "source": "given", "at_0.5": None},
    {"value": 0.3, "source": "given", "at_0.5": {"tiou": True}},
    {"value": 0.3, "source": "given", "at_0.5": [0.0]},
    {"source": "given", "at_0.5": None},
    [0.3],
])
def test_a_malformed_threshold_record_is_refused(tmp_path, block):
    entry = {"frame_auc": 0.5, "frame_ap": 0.5, "false_alarm_rate": 0.1, "cuboid_auc": None,
             "pixel_auroc": None, "pointing_accuracy": None, "threshold": block,
             "settings": {"split": "test", "data": "/d"}}
    (tmp_path / "metrics.json").write_text(json.dumps({"version": 2,
                                                       "results": {"test": {"/d": entry}}}))
    with pytest.raises(ModelError, match="threshold must be an object with a number value"):
        read_metrics(tmp_path)
