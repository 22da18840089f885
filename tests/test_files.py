"""Which files are videos: one list and one finder, shared by extraction, scoring and datasets."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import pytest

from stmil.datasets.folder import load_folder
from stmil.features.extract import ExtractSettings, extract_many
from stmil.features.store import load_features
from stmil.features.video import iter_frames, probe
from stmil.files import find_videos, pseudo_mounts
from stmil.live.clip import is_clip, write_clip
from stmil.live.watch import open_source
from stmil.synth.footage import probe_footage
from stmil.synth.write import VideoWriter
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


@pytest.mark.skipif(not Path("/proc/self/mounts").is_file(), reason="needs Linux's /proc")
def test_find_videos_never_walks_the_kernels_pseudo_file_systems(tmp_path, monkeypatch):
    """A link to /proc (or `stmil extract /`) once walked every process's cwd and root again:
    the whole file system, and the same video under many /proc names."""
    monkeypatch.chdir(tmp_path)
    Path("b").mkdir()
    Path("b/x.mp4").write_bytes(b"")
    os.symlink("/proc", "a")
    assert find_videos(".") == [Path("b/x.mp4")]


def test_pseudo_mounts_reads_the_mount_table(tmp_path):
    table = tmp_path / "mounts"
    table.write_text(
        "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n"
        "/dev/sda1 /work ext4 rw,relatime 0 0\n"
        "sysfs /mnt/my\\040sys sysfs ro 0 0\n"
        "tmpfs /dev/shm tmpfs rw 0 0\n")
    assert pseudo_mounts(table) == {"/proc", "/mnt/my sys"}
    assert pseudo_mounts(tmp_path / "missing") == frozenset()


def test_m4v_and_upper_case_mp4_are_extracted_and_listed(tmp_path, monkeypatch,
                                                        small_extractor):
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

    summary = extract_many(["ds"], "feats", small_extractor, ExtractSettings(size=64),
                           progress=False)
    assert sorted(summary.done) == ["Fight01", "walk"] and summary.failed == []
    for record in records:
        arr, meta = load_features("feats", record.video_id)
        assert arr.shape == (1, 16, 528)
        assert meta.source == str(record.path.resolve())


def test_videos_whose_relative_path_has_a_colon_are_read_and_written(tmp_path, monkeypatch):
    """FFmpeg takes ``10:30.mkv`` or ``cam:1/x.mkv`` (a ':' before any '/') for a URL and fails
    with "Protocol not found": every PyAV reader is given the absolute path (writers write
    temporaries, whose paths are absolute)."""
    monkeypatch.chdir(tmp_path)
    Path("cam:1").mkdir()
    frames = ramp_frames(20)
    write_video(tmp_path / "cam:1" / "10:30.mkv", frames)
    os.symlink("cam:1/10:30.mkv", "10:30.mkv")
    for name in ("cam:1/10:30.mkv", "10:30.mkv"):
        assert len(list(iter_frames(name))) == 20  # probe and decode (extract, score, overlay)
        probe_footage(Path(name), 64, 48, 20)  # synth --footage
        container, *_ = open_source(name, timeout=5)  # watch
        container.close()
    with VideoWriter(Path("cam:1/synth.mp4"), 64, 48, Fraction(30)) as w:  # synth's videos
        for f in frames:
            w.write(f)
    assert probe("cam:1/synth.mp4").frames_reported == 20
    assert write_clip(Path("cam:1/clip.mp4"), frames, 30.0, "incident") == 20  # watch --clips
    assert is_clip(Path("cam:1/clip.mp4"))
    # No temporaries; .stmil: the ledger of what stmil wrote there.
    assert sorted(os.listdir("cam:1")) == [".stmil", "10:30.mkv", "clip.mp4", "synth.mp4"]
