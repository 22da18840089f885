"""The ``hard`` synth scenario: look-alike motion really is there, outside the event boxes, and
the ``default`` scenario is unchanged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import numpy as np
import pytest

from stmil.datasets import load_dataset
from stmil.synth.dataset import SynthError, make_dataset
from stmil.synth.distractors import HardScene, grow
from tests.conftest import run_cli

W, H, N_FRAMES, SEED = 96, 64, 40, 3
TINY = dict(n_videos=8, width=W, height=H, n_frames=N_FRAMES, seed=SEED, progress=False)
# sha256 of synth.json and every .txt (splits, VATIC boxes, temporal spans) of
# make_dataset(**TINY) as written by stmil before the hard scenario existed (commit 186b9cb).
DEFAULT_GOLDEN = "e39fbbaa781e817ca998f7c373f04af6e41d44bea80e8ada278dce1091e4b809"


def _frames(path: Path) -> np.ndarray:
    """``(T, H, W)`` float32 luminance of every frame."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="gray").astype(np.float32)
                         for f in c.decode(video=0)])


def _lane_mask(distractors: list[dict], t: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    for d in distractors:
        x, y, w, h = d["region"]
        if d["span"][0] <= t < d["span"][1]:
            mask[y:y + h, x:x + w] = True
    return mask


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """The same seed and settings in both scenarios."""
    base = tmp_path_factory.mktemp("hard")
    make_dataset(base / "default", **TINY)
    make_dataset(base / "hard", scenario="hard", **TINY)
    return base / "default", base / "hard", json.loads((base / "hard" / "synth.json").read_text())


def test_cli_makes_the_hard_scenario(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # a relative --out, as users type it
    code, out, err = run_cli(capsys, "synth", "--out", "hard", "--videos", "4", "--frames", "16",
                             "--scenario", "hard", "--quiet")
    assert code == 0, err
    meta = json.loads((tmp_path / "hard" / "synth.json").read_text())
    assert meta["settings"]["scenario"] == "hard"
    assert all("distractors" in v for v in meta["videos"].values())


def test_default_scenario_is_unchanged(pair: tuple[Path, Path, dict]) -> None:
    default, _, _ = pair
    h = hashlib.sha256()
    for p in sorted(default.rglob("*.txt")) + [default / "synth.json"]:
        rel = p.relative_to(default)
        h.update(str(rel).encode())
        h.update(p.read_bytes())
    assert h.hexdigest() == DEFAULT_GOLDEN
    assert "scenario" not in json.loads((default / "synth.json").read_text())["settings"]


def test_hard_records_its_scenario_and_distractors(pair: tuple[Path, Path, dict]) -> None:
    _, _, meta = pair
    assert meta["settings"]["scenario"] == "hard"
    videos = meta["videos"].values()
    assert all(len(v["distractors"]) >= 1 for v in videos)
    assert any(v["shake"] > 0 for v in videos) and any(v["shake"] == 0 for v in videos)
    kinds = {d["kind"] for v in videos for d in v["distractors"]}
    assert len(kinds) >= 3, kinds


def test_normal_videos_move_where_the_distractors_are(pair: tuple[Path, Path, dict]) -> None:
    """Same scene as the default video; the difference is the distractors, in their lanes."""
    default, hard, meta = pair
    checked = 0
    for vid, rec in meta["videos"].items():
        if rec["label"] or rec["shake"]:
            continue  # shake moves every pixel: compared below through motion energy only
        a, b = _frames(default / "videos" / f"{vid}.mp4"), _frames(hard / "videos" / f"{vid}.mp4")
        lanes = np.stack([_lane_mask(rec["distractors"], t) for t in range(N_FRAMES)])
        diff = np.abs(a - b)
        assert diff[lanes].mean() > 4 * diff[~lanes].mean() + 1.0, vid  # codec bleed: ~1
        # motion energy (frame differences) inside the active lanes rises
        motion_a, motion_b = np.abs(np.diff(a, axis=0)), np.abs(np.diff(b, axis=0))
        m = lanes[1:] & lanes[:-1]
        assert motion_b[m].mean() > 2 * motion_a[m].mean(), vid
        checked += 1
    assert checked >= 1


def test_anomalous_videos_move_outside_their_boxes(pair: tuple[Path, Path, dict]) -> None:
    """Distractor lanes never touch a ground-truth box, and add motion outside the boxes."""
    default, hard, meta = pair
    records = {r.video_id: r for r in load_dataset(hard, "all")}
    more = 0
    anomalous = [v for v, r in meta["videos"].items() if r["label"]]
    for vid in anomalous:
        rec, boxes = meta["videos"][vid], records[vid].boxes
        assert rec["distractors"], vid
        outside = np.ones((N_FRAMES, H, W), bool)
        for f, fb in boxes.items():
            for x1, y1, x2, y2 in fb:
                outside[f, int(y1):int(np.ceil(y2)) + 1, int(x1):int(np.ceil(x2)) + 1] = False
        for t in range(N_FRAMES):
            assert not (_lane_mask(rec["distractors"], t) & ~outside[t]).any(), (vid, t)
        a, b = _frames(default / "videos" / f"{vid}.mp4"), _frames(hard / "videos" / f"{vid}.mp4")
        m = outside[1:] & outside[:-1]
        more += np.abs(np.diff(b, axis=0))[m].mean() > 1.5 * np.abs(np.diff(a, axis=0))[m].mean()
    assert more == len(anomalous)


def test_lanes_avoid_the_grown_event_region() -> None:
    region = (30, 20, 40, 30)
    for i in range(40):
        scene = HardScene(np.random.default_rng(i), 160, 120, 50, avoid=region)
        gx, gy, gw, gh = grow(region, 160, 120)
        for d in scene.items:
            x, y, w, h = d.region
            assert x + w <= gx or gx + gw <= x or y + h <= gy or gy + gh <= y, (i, d.region)


def test_unknown_scenario_is_refused(tmp_path: Path, capsys) -> None:
    with pytest.raises(SynthError, match="scenario must be one of default, hard"):
        make_dataset(tmp_path / "x", scenario="chaos", **TINY)
    assert not (tmp_path / "x").exists()
    code, _, err = run_cli(capsys, "synth", "--out", str(tmp_path / "y"), "--scenario", "chaos")
    assert code == 1  # refused before any work
    assert err == "error: --scenario must be one of default, hard, got 'chaos'\n"
    assert not (tmp_path / "y").exists()
