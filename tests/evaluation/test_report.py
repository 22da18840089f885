"""The HTML report: table, figures on disk, overlays, configs, escaping."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from stmil.datasets import VideoRecord
from stmil.errors import StmilError
from stmil.evaluation import report
from stmil.evaluation.evaluate import compute_metrics
from stmil.evaluation.report import COLUMNS, referenced_files, write_report
from stmil.features.store import FeatureMeta, VideoFeatures
from tests.conftest import file_tree

G, N, W, H = 3, 64, 64, 48


def _video(video_id: str, label: int, intervals=(), boxes=None) -> VideoFeatures:
    meta = FeatureMeta(n_clips=4, clip_len=16, stride=16, fps=30.0, source_fps=30.0,
                       n_frames=N, width=W, height=H, grid=G, size=224, endpoint="Mixed_4e",
                       tail="drop", channels=8)
    rec = VideoRecord(video_id, label, intervals=tuple(intervals), boxes=boxes or {})
    return VideoFeatures(rec, np.zeros((4, G * G, 8), np.float16), meta)


@pytest.fixture(scope="module")
def videos() -> list[VideoFeatures]:
    boxes = {f: [(44.0, 0.0, 64.0, 16.0)] for f in range(16, 48)}  # top-right cuboid
    return [_video("a1", 1, [(16, 48)], boxes), _video("a2", 1, [(0, 16)]), _video("n1", 0)]


def _run(name: str, videos, localised: bool, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    maps = []
    for v in videos:
        m = rng.uniform(0.0, 0.3, (4, G * G))
        for s, e in v.record.intervals:
            m[s // 16:e // 16, 2 if localised else rng.integers(G * G)] = 0.9
        maps.append(m)
    result = compute_metrics(videos, maps)
    return {"name": name, "run": f"runs/{name}", "config": {"grid": 3 if localised else 1,
                                                           "lr": 0.001, "data": "x/y"},
            "metrics": {k: result[k] for k in COLUMNS}, "curves": result["curves"],
            "videos": list(zip(videos, maps))}


def test_report_has_table_figures_overlays_and_escapes(videos, tmp_path, monkeypatch):
    monkeypatch.setattr(report, "VIDEOS_PER_PNG", 2)  # 3 videos -> 2 timeline PNGs
    runs = [_run("grid<3> & co", videos, True, 0), _run("baseline", videos, False, 1)]
    runs[1]["metrics"]["pixel_auroc"] = None
    out = tmp_path / "rep"
    out.mkdir()
    (out / "a1.gif").write_bytes(b"GIF89a fake")
    outside = tmp_path / "a1.mp4"
    outside.write_bytes(b"fake mp4")
    path = write_report(out, runs, overlays=[{"video_id": "a1", "path": "a1.gif"},
                                             {"video_id": "a1<mp4>", "path": outside}],
                        title="t <1>", stage_times={"extract": 12.34, "train": 5})
    assert path == out / "report.html"
    assert path.stat().st_mode & 0o777 == 0o644
    text = path.read_text()
    # metrics x runs: a column per run, a row per metric, then the thresholds' row
    runs_head = re.findall(r'<th class="run" scope="col">(.*?)</th>', text)
    assert runs_head == ["grid&lt;3&gt; &amp; co", "baseline"]
    rows = dict(re.findall(r'<tr><th scope="row">(.*?)</th>(.*?)</tr>', text))
    assert list(rows) == [*COLUMNS, "threshold"]
    assert all(len(re.findall("<td", r)) == 2 for r in rows.values())
    assert rows["pixel_auroc"].endswith('<td class="num">-</td>')  # the baseline's None
    # The threshold of the thresholded metrics: 0.5 for want of another.
    assert rows["threshold"].endswith("<td>0.5 (default)</td>")
    assert "grid&lt;3&gt; &amp; co" in text and "grid<3>" not in text
    assert "t &lt;1&gt;" in text and "a1&lt;mp4&gt;" in text
    assert "12.3 s" in text and "lr: 0.001" in text
    refs = referenced_files(path)
    names = sorted(p.name for p in refs)
    assert names == ["a1.gif", "a1.mp4", "roc_cuboid.png", "roc_frame.png",
                     "timelines_01.png", "timelines_02.png"]
    for p in refs:
        assert p.is_file() and p.stat().st_size > 0, p
        assert p.resolve().is_relative_to(out.resolve())
    assert "<video controls" in text
    # no temporaries (.stmil/ is the folder's ledger)
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != ".stmil"]


def test_report_without_cuboid_labels_says_so(videos, tmp_path):
    run = _run("only", videos[1:], True, 0)  # no boxes: no cuboid positives
    run["curves"]["cuboid"] = None
    path = write_report(tmp_path, [run])
    assert not list(tmp_path.rglob("roc_cuboid.png"))
    assert "No cuboid-level ROC" in path.read_text()
    assert all(p.is_file() for p in referenced_files(path))


def test_report_with_a_relative_out_dir_from_another_working_folder(videos, tmp_path,
                                                                    monkeypatch):
    """``write_report`` resolves ``out_dir`` once: overlay paths relative to it, or absolute,
    work from any working folder (the ``make demo`` failure: "overlay file not found")."""
    work = tmp_path / "work"
    (work / "rep").mkdir(parents=True)
    (work / "rep" / "a1.gif").write_bytes(b"GIF89a fake")
    (tmp_path / "a2.gif").write_bytes(b"GIF89a other")
    monkeypatch.chdir(work)
    path = write_report(Path("rep"), [_run("m", videos, True, 0)],
                        overlays=[{"video_id": "a1", "path": "a1.gif"},
                                  {"video_id": "a2", "path": tmp_path / "a2.gif"}])
    assert path == (work / "rep" / "report.html").resolve()
    refs = referenced_files(path)
    gifs = {p.name: p.read_bytes() for p in refs if p.suffix == ".gif"}
    assert gifs == {"a1.gif": b"GIF89a fake", "a2.gif": b"GIF89a other"}
    with pytest.raises(StmilError, match=f"^{re.escape(str(work / 'rep' / 'gone.gif'))}: "
                                         "overlay file not found$"):
        write_report(Path("rep"), [_run("m", videos, True, 0)],
                     overlays=[{"video_id": "x", "path": "gone.gif"}])


def test_report_is_committed_as_one_unit(videos, tmp_path, monkeypatch):
    """A report that fails half-way leaves the previous report and every file it references
    byte for byte; a finished one replaces them and deletes only the old report's folder."""
    out = tmp_path / "rep"
    out.mkdir()
    mine = {"notes.txt": b"a user's", "report-mine/x.png": b"a user's", "roc_frame.png": b"u"}
    for rel, data in mine.items():
        (out / rel).parent.mkdir(exist_ok=True)
        (out / rel).write_bytes(data)
    first = write_report(out, [_run("m", videos, True, 0)])
    before = file_tree(out)
    old_refs = referenced_files(first)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "plot_timelines", killed)  # after the ROC figures are drawn
    with pytest.raises(KeyboardInterrupt):
        write_report(out, [_run("m", videos, False, 5), _run("b", videos, True, 6)])
    assert file_tree(out) == before
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".stmil"]

    monkeypatch.undo()
    second = write_report(out, [_run("m", videos, False, 5)], files={"metrics.json": "[]"})
    new_refs = referenced_files(second)
    assert not any(p.exists() for p in old_refs)
    assert all(p.is_file() for p in new_refs)
    assert {p.parent.name for p in new_refs} == {p.parent.name for p in new_refs[:1]}
    (metrics,) = [p for p in new_refs if p.name == "metrics.json"]
    assert metrics.read_text() == "[]"
    assert {k: v for k, v in file_tree(out).items() if k in mine} == mine


def test_report_table_is_metrics_by_runs_and_bolds_the_best(videos):
    runs = [_run("m", videos, True, 0), _run("b", videos, False, 1)]
    runs[0]["metrics"]["frame_auc"], runs[1]["metrics"]["frame_auc"] = 0.9, 0.6
    runs[0]["metrics"]["false_alarm_rate"], runs[1]["metrics"]["false_alarm_rate"] = 0.3, 0.1
    text = report.metrics_table(runs)
    assert '<div class="wide"><table>' in text  # never wider than the page: it scrolls inside
    assert "<th>metric</th>" in text and "<th>run</th>" not in text
    rows = dict(re.findall(r'<tr><th scope="row">(.*?)</th>(.*?)</tr>', text))
    assert rows["frame_auc"] == ('<td class="num"><b>0.9000</b></td>'
                                 '<td class="num">0.6000</td>')
    assert rows["false_alarm_rate"] == ('<td class="num">0.3000</td>'
                                        '<td class="num"><b>0.1000</b></td>')  # lower is better


def test_report_shows_paths_relative_to_its_folder(videos, tmp_path):
    """Run configs carry the absolute paths of the machine that made them: inside the report's
    folder they are shown relative to it, outside it by their final name only."""
    out = tmp_path / "demo-out"
    run = _run("m", videos, True, 0)
    run["run"] = str(out / "runs" / "m")
    run["config"] = {"data": str(out / "data"), "features": out / "features",
                     "out": str(out / "runs" / "m"), "init": "/home/someone/ckpt/base.pt",
                     "extra": [str(out)], "rel": "x/y", "note": "a /b c"}
    text = write_report(out, [run]).read_text()
    configs = text[text.index("<h2>Configs</h2>"):]
    assert str(tmp_path) not in text and "/home/someone" not in text
    assert '<p class="muted">runs/m</p>' in configs
    for line in ("data: data", "features: features", "out: runs/m", "init: base.pt",
                 "- .", "rel: x/y", "note: a /b c"):
        assert line in configs, line


def test_report_display_path():
    root = Path("/r/demo-out")
    assert report.display_path("/r/demo-out/runs/a", root) == "runs/a"
    assert report.display_path(Path("/r/demo-out"), root) == "."
    assert report.display_path("/elsewhere/data", root) == "data"
    assert report.display_path("/r/demo-outside/x.yaml", root) == "x.yaml"
    assert report.display_path("runs/a", root) == "runs/a"


def test_report_links_to_stmil_serve(videos, tmp_path):
    (tmp_path / "a1.gif").write_bytes(b"GIF89a fake")
    text = write_report(tmp_path, [_run("m", videos, True, 0)],
                        overlays=[{"video_id": "a 1", "path": "a1.gif"}]).read_text()
    assert "stmil serve" in text and "docs/serve.md" in text
    assert 'href="http://127.0.0.1:8000/videos"' in text
    assert 'href="http://127.0.0.1:8000/video/a%201"' in text  # under the overlay
