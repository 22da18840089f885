"""A tiny ``stmil demo`` completes end to end, as a user runs it (relative ``--out`` from a
working folder that is not the repository); its table and report are whole, and a rerun
replaces the report as one unit and leaves the user's files alone."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from stmil.demo import DEMO_TABLE_KEYS
from stmil.evaluation.evaluate import METRIC_KEYS
from stmil.evaluation.report import COLUMNS, referenced_files
from tests.conftest import run_cli

TINY = ("--videos", "8", "--frames", "32", "--iterations", "5", "--quiet")


@pytest.mark.slow
def test_tiny_demo_end_to_end_with_a_relative_out(tmp_path, monkeypatch, capsys):
    work = tmp_path / "somewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    code, printed, err = run_cli(capsys, "demo", "--out", "demo-out", *TINY)
    assert code == 0, err
    out = work / "demo-out"
    header = next(line for line in printed.splitlines() if line.startswith("run"))
    assert header.split() == ["run", *DEMO_TABLE_KEYS]
    for run in ("weak-cuboid-mil", "paper", "grid1-baseline", "boxes-supervised"):
        assert re.search(rf"^{run}( +\d\.\d{{4}}){{5}}$", printed, re.M), printed
        assert (out / "runs" / run / "model.safetensors").is_file()
        assert (out / "runs" / run / "config.yaml").is_file()
    assert f"report: {out / 'report.html'}" in printed
    refs = _check_report(out)
    assert sum(f.suffix == ".gif" for f in refs) == 2  # the 2 anomalous test videos of 8
    metrics = json.loads(next(f for f in refs if f.name == "metrics.json").read_text())
    assert metrics["settings"] == {"footage": None, "n_videos": 8, "n_frames": 32, "seed": 0}
    assert set(metrics["metrics"]) == {"weak-cuboid-mil", "paper", "grid1-baseline",
                                       "boxes-supervised"}
    # the default detector, the paper's method, Sultani's baseline, the boxes reference
    settings = {run: yaml.safe_load((out / "runs" / run / "config.yaml").read_text())
                for run in metrics["metrics"]}
    assert {run: (c["method"], c["gate"], c["grid"], c["supervision"])
            for run, c in settings.items()} == {
        "weak-cuboid-mil": ("topk", "memory", 7, "weak"), "paper": ("paper", "none", 7, "weak"),
        "grid1-baseline": ("paper", "none", 1, "weak"),
        "boxes-supervised": ("paper", "none", 7, "boxes")}
    # Every metric of evaluate, the papers' ones included, is a row of the report (metrics x
    # runs, so that it fits 1,280 px), with a number for the method (its boxes give the spatial
    # ones) in the first column.
    html = (out / "report.html").read_text()
    rows = dict(re.findall(r'<tr><th scope="row">(.*?)</th>(.*?)</tr>', html))
    assert list(rows) == [*COLUMNS, "threshold"]
    assert re.findall(r'<th class="run" scope="col">(.*?)</th>', html) == list(metrics["metrics"])
    cells = {k: re.findall(r'<td class="num">(?:<b>)?([^<]*)', rows[k])[0] for k in COLUMNS}
    assert all(re.fullmatch(r"\d+\.\d{4}", cells[k]) for k in METRIC_KEYS), cells
    # The configs name the demo's folders relative to it: no path of this machine.
    assert str(out) not in html and str(tmp_path) not in html
    assert all(metrics["metrics"]["weak-cuboid-mil"][k] is not None for k in METRIC_KEYS)
    first_folder = _report_folder(out)

    # A rerun: the user's files stay, features are reused, the report is replaced whole.
    (out / "notes.txt").write_text("mine")
    (out / "features" / "mine.npy").write_bytes(b"mine")
    code, printed, err = run_cli(capsys, "demo", "--out", "demo-out", *TINY)
    assert code == 0, err
    assert "0 done, 8 skipped, 0 failed" in printed
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "features" / "mine.npy").read_bytes() == b"mine"
    _check_report(out)
    assert _report_folder(out) != first_folder and not first_folder.exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".stmil"]

    # A user's own training into one of the demo's run folders is never replaced by a rerun.
    code, _, err = run_cli(capsys, "train", "--data", "demo-out/data", "--features",
                           "demo-out/features", "--out", "demo-out/runs/paper", "--iterations",
                           "3", "--lr", "0.02", "--quiet")
    assert code == 0, err
    users = (out / "runs" / "paper" / "model.safetensors").read_bytes()
    code, _, err = run_cli(capsys, "demo", "--out", "demo-out", *TINY)
    assert code == 1
    assert err.strip() == (f"error: {out / 'runs' / 'paper'}: a run the demo did not train, "
                           "or one changed since it did (yours?); move it out of the way or "
                           "choose another --out")
    assert (out / "runs" / "paper" / "model.safetensors").read_bytes() == users


def _report_folder(out):
    (folder,) = [p for p in out.iterdir() if p.is_dir() and p.name.startswith("report-")]
    return folder


def _check_report(out):
    """Every local file the report references exists, non-empty, inside the report folder."""
    refs = referenced_files(out / "report.html")
    folder = _report_folder(out)
    assert {f.name for f in refs} >= {"roc_frame.png", "roc_cuboid.png", "timelines_01.png",
                                       "metrics.json"}
    for f in refs:
        assert f.is_file() and f.stat().st_size > 0, f
        assert f.is_relative_to(folder), f
    return refs


def test_demo_refuses_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        code, _, err = run_cli(capsys, "demo", "--out", out, "--videos", "8")
        assert code == 1
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {out}"), err
