"""Which files are videos: one list and one finder, shared by extraction, scoring and datasets."""

from __future__ import annotations

import os
from pathlib import Path

from stmil.datasets.folder import load_folder
from stmil.features.extract import ExtractSettings, extract_many
from stmil.features.store import load_features
from stmil.files import find_videos
from tests.conftest import ramp_frames, write_video


def test_find_videos_any_case_sorted_skipping_junk_hidden_and_loops(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("b/clip.MP4", "a.m4v", "b/c.Mkv", "notes.txt", "mp4", ".hidden.mp4",
                 ".cache/x.mp4", "b/noext"):
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_bytes(b"")
    os.symlink("..", "b/loop")  # a loop back to the root: walked once
    assert find_videos(".") == [Path("a.m4v"), Path("b/c.Mkv"), Path("b/clip.MP4")]
    assert find_videos("missing") == []


def test_m4v_and_upper_case_mp4_are_extracted_and_listed(tmp_path, monkeypatch, extractor):
    monkeypatch.chdir(tmp_path)
    normal, fight = Path("ds/normal"), Path("ds/anomalous/Fighting")
    fight.mkdir(parents=True)
    normal.mkdir()
    write_video(normal / "walk.m4v", ramp_frames(16, h=32, w=32), codec="libx264")
    write_video(fight / "Fight01.MP4", ramp_frames(16, h=32, w=32, seed=1), codec="libx264")
    (normal / "readme.txt").write_text("not a video\n")

    records = load_folder("ds")
    assert [(r.video_id, r.label, r.category, r.path) for r in records] == [
        ("walk", 0, "Normal", normal / "walk.m4v"),
        ("Fight01", 1, "Fighting", fight / "Fight01.MP4"),
    ]

    summary = extract_many(["ds"], "feats", extractor, ExtractSettings(size=64), progress=False)
    assert sorted(summary.done) == ["Fight01", "walk"] and summary.failed == []
    for record in records:
        arr, meta = load_features("feats", record.video_id)
        assert arr.shape == (1, 49, 528)
        assert meta["source"] == str(record.path.resolve())
