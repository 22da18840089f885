"""The semi-synthetic benchmark: layout, annotations, determinism, footage and refusals."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import av
import numpy as np
import pytest

from stmil.datasets import load_dataset
from stmil.datasets.layout import TEMPORAL
from stmil.ownership import Ledger
from stmil.synth.dataset import CLASSES, SynthError, make_dataset, plan_videos
from stmil.synth.events import KINDS, fit_box, make_event
from tests.conftest import require_file, require_vtest

W, H, N_FRAMES = 160, 120, 48
TINY = dict(n_videos=4, width=W, height=H, n_frames=N_FRAMES, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` -> its bytes; the ledger (``.stmil/``) as the entries it
    holds (its journal's lines follow the order the workers finish in)."""
    files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()
             and p.relative_to(root).parts[0] != ".stmil"}
    files[".stmil"] = json.dumps(Ledger.load(root).files, sort_keys=True).encode()
    return files


def _write_video(path: Path, n: int, width: int, height: int) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for i in range(n):
            img = np.full((height, width, 3), (i * 7) % 256, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth") / "ds"
    return root, make_dataset(root, seed=3, workers=2, **TINY)


def test_layout_and_summary(tiny: tuple[Path, dict]) -> None:
    root, summary = tiny
    assert (root / "readme" / "Train_split_AD.txt").is_file()
    assert len(summary.train) == len(summary.test) == 2
    assert set(summary.events) == {v for v in summary.train + summary.test
                                      if not v.startswith("Normal")}
    for vid in summary.train + summary.test:
        assert (root / "videos" / f"{vid}.mp4").is_file()
    assert not list(root.rglob("*.tmp"))


@pytest.mark.parametrize("split", ["train", "test"])
def test_loader_reads_it(tiny: tuple[Path, dict], split: str) -> None:
    root, summary = tiny
    meta = json.loads((root / "synth.json").read_text())["videos"]
    records = load_dataset(root, split=split, format="crime2local")
    assert sorted(r.video_id for r in records) == getattr(summary, split)
    assert sorted(r.label for r in records) == [0, 1]  # stratified: one of each
    for r in records:
        assert r.path is not None and r.path.is_file()
        if not r.label:
            assert r.category == "Normal" and not r.boxes and not r.intervals
            continue
        start, end = meta[r.video_id]["span"]
        assert r.category == CLASSES[meta[r.video_id]["kind"]]
        assert r.intervals == ((start, end),)
        assert sorted(r.boxes) == list(range(start, end))
        for boxes in r.boxes.values():
            (x1, y1, x2, y2), = boxes
            assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H
            assert 0.05 <= (x2 - x1) * (y2 - y1) / (W * H) <= 0.25
        assert 0.05 <= meta[r.video_id]["area_fraction"]["mean"] <= 0.25


def test_event_span_and_vatic_rows(tiny: tuple[Path, dict]) -> None:
    root, summary = tiny
    for vid, ev in summary.events.items():
        start, end = ev["span"]
        assert 0.3 * N_FRAMES <= end - start <= 0.7 * N_FRAMES
        assert start >= N_FRAMES // 8 and end <= N_FRAMES - N_FRAMES // 8
        rows = (root / "readme" / "Txt annotations" / f"{vid}.txt").read_text().splitlines()
        assert len(rows) == N_FRAMES
        for f, row in enumerate(rows):
            fields = row.split(" ")
            assert fields[0] == "0" and fields[5] == str(f) and fields[7:9] == ["0", "0"]
            assert fields[6] == ("0" if start <= f < end else "1")
            assert fields[9] == f'"{ev["kind"]}"'


def test_temporal_annotation(tiny: tuple[Path, dict]) -> None:
    root, summary = tiny
    lines = (root / TEMPORAL).read_text().splitlines()
    assert sorted(line.split()[0] for line in lines) == [f"{v}.mp4" for v in summary.test]
    for line in lines:
        name, cls, s1, e1, s2, e2 = line.split()
        vid = name.removesuffix(".mp4")
        if vid in summary.events:
            start, end = summary.events[vid]["span"]
            assert (cls, int(s1), int(e1)) == (summary.events[vid]["class"], start + 1, end)
        else:
            assert (cls, s1, e1) == ("Normal", "-1", "-1")
        assert (s2, e2) == ("-1", "-1")


def test_video_decodes(tiny: tuple[Path, dict]) -> None:
    root, summary = tiny
    with av.open(str(root / "videos" / f"{summary.test[0]}.mp4")) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264" and float(stream.average_rate) == 30
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
    assert len(frames) == N_FRAMES and frames[0].shape == (H, W, 3)
    assert np.abs(frames[0].astype(int) - frames[-1]).mean() > 0.5  # things move


def test_same_seed_same_bytes_different_seed_differs(tiny: tuple[Path, dict],
                                                     tmp_path: Path) -> None:
    root, _ = tiny
    again = make_dataset(tmp_path / "again", seed=3, workers=1, **TINY)
    assert _files(tmp_path / "again") == _files(root)
    other = make_dataset(tmp_path / "other", seed=4, workers=2, **TINY)
    a, b = _files(root), _files(tmp_path / "other")
    assert a["synth.json"] != b["synth.json"]
    assert again.events != other.events
    assert not set(a.items()) & {(k, v) for k, v in b.items() if k.startswith("videos")}


def test_rerun_forgets_old_videos(tmp_path: Path) -> None:
    make_dataset(tmp_path, seed=0, **{**TINY, "n_videos": 6, "n_frames": 16})
    summary = make_dataset(tmp_path, seed=0, overwrite=True, **{**TINY, "n_frames": 16})
    assert len(list((tmp_path / "videos").iterdir())) == 4
    assert len(load_dataset(tmp_path, "all", format="crime2local")) == 4
    assert len(summary.train + summary.test) == 4


def test_plan_is_stratified() -> None:
    plans = plan_videos(48, 160, seed=0, test_fraction=0.5)
    assert len({p.video_id for p in plans}) == 48
    for split in ("train", "test"):
        part = [p for p in plans if p.split == split]
        assert sum(bool(p.kind) for p in part) == sum(not p.kind for p in part) == 12
        assert {p.kind for p in part if p.kind} == set(KINDS)
    for p in plans:
        if p.kind:
            assert 10 <= p.start and p.end <= 150 and 56 <= p.end - p.start <= 104


@pytest.mark.parametrize("kind", KINDS)
def test_events_paint_inside_their_boxes(kind: str) -> None:
    base = np.random.default_rng(99).integers(60, 200, (H, W, 3), dtype=np.uint8)
    event = make_event(kind, np.random.default_rng(1), W, H, 24)
    for k in range(24):
        img = base.copy()
        x1, y1, x2, y2 = fit_box(event.draw(img, k), W, H)
        change = np.abs(img.astype(int) - base).sum(2)
        assert change.sum() > 0
        assert change[y1:y2, x1:x2].sum() >= 0.85 * change.sum()
        if k >= 4:  # grown: clearly visible
            assert change[y1:y2, x1:x2].mean() > 8


def test_fit_box_bounds() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        x, y = rng.uniform(-50, 300, 2)
        w, h = rng.uniform(0, 400, 2)
        x1, y1, x2, y2 = fit_box((x, y, x + w, y + h), 320, 240)
        assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 240
        assert 0.05 <= (x2 - x1) * (y2 - y1) / (320 * 240) <= 0.25


@pytest.mark.slow
def test_real_footage(tmp_path: Path) -> None:
    vtest = require_vtest()  # $STMIL_VTEST or data/vtest.avi; a failure under $CI
    summary = make_dataset(tmp_path, footage=[vtest], seed=1, **TINY)
    meta = json.loads((tmp_path / "synth.json").read_text())["videos"]
    assert {m["source"] for m in meta.values()} == {str(vtest)}
    assert all(m["fps"] == 10 for m in meta.values())
    records = load_dataset(tmp_path, split="all", format="crime2local")
    assert sorted(r.label for r in records) == [0, 0, 1, 1]
    with av.open(str(tmp_path / "videos" / f"{summary.train[0]}.mp4")) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == N_FRAMES and (frames[0].width, frames[0].height) == (W, H)


def test_refuses_short_footage(tmp_path: Path) -> None:
    clip = _write_video(tmp_path / "short.avi", 20, 160, 120)
    with pytest.raises(ValueError, match=r"short\.avi.*too short"):
        make_dataset(tmp_path / "out", footage=[clip], **TINY)
    assert not (tmp_path / "out").exists()


def test_refuses_small_or_missing_footage(tmp_path: Path) -> None:
    clip = _write_video(tmp_path / "small.avi", 60, 64, 48)
    with pytest.raises(ValueError, match=r"small\.avi.*too small"):
        make_dataset(tmp_path / "out", footage=[clip], **TINY)
    with pytest.raises(ValueError, match="nothere.mp4: no such file"):
        make_dataset(tmp_path / "out", footage=[tmp_path / "nothere.mp4"], **TINY)


def test_refuses_unwritable_out(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        with pytest.raises(SynthError, match=str(out)):
            make_dataset(out, **TINY)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(SynthError, match="cannot write"):
            make_dataset(locked / "ds", **TINY)


@pytest.mark.parametrize(("bad", "match"), [
    (dict(n_videos=5), "n_videos must be an even whole number from 4 to 10000, got 5"),
    (dict(n_videos=2), "n_videos must be an even whole number from 4 to 10000, got 2"),
    (dict(width=161), "width must be an even whole number from 32 to 4096 pixels, got 161"),
    (dict(n_frames=8), "n_frames must be a whole number from 16 to 18000, got 8"),
    (dict(test_fraction=1.0), "test_fraction must be a number > 0 and < 1, got 1.0"),
    (dict(fps=0), "fps must be a number > 0 and <= 240 frames per second, got 0"),
])
def test_refuses_bad_settings(tmp_path: Path, bad: dict, match: str) -> None:
    with pytest.raises(SynthError, match=match):
        make_dataset(tmp_path, **{**TINY, **bad})


@pytest.mark.parametrize("ci", ["", "1", "true"])
def test_missing_data_skips_locally_and_fails_in_ci(tmp_path: Path, monkeypatch, ci: str) -> None:
    """Real-data tests skip on a laptop without the file but fail under CI, which has it."""
    gone = tmp_path / "vtest.avi"
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    prefix = "CI is set but " if ci else ""
    with pytest.raises(expected, match=f"^{prefix}{re.escape(str(gone))} not found "
                                       r"\(run make vtest\)$"):
        require_file(gone, "run make vtest")
    gone.write_bytes(b"x")
    assert require_file(gone, "run make vtest") == gone


def test_vtest_path_honours_stmil_vtest(tmp_path: Path) -> None:
    """test_real_footage uses conftest's VTEST, which ``$STMIL_VTEST`` overrides."""
    import subprocess
    import sys

    code = "from tests.conftest import VTEST; print(VTEST)"
    env = {**os.environ, "STMIL_VTEST": str(tmp_path / "elsewhere.avi")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], check=True).stdout
    assert out.strip() == str(tmp_path / "elsewhere.avi")
