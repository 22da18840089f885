"""A tiny ``stmil demo`` completes end to end; its table and report are whole."""

from __future__ import annotations

import pytest

from stmil.cli import main
from stmil.demo import DEMO_TABLE_KEYS
from stmil.report import referenced_files


@pytest.mark.slow
def test_tiny_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--videos", "8", "--frames", "48",
               "--iterations", "10", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("run"))
    for key in DEMO_TABLE_KEYS:
        assert key in header
    for run in ("weak-cuboid-mil", "grid1-baseline", "boxes-supervised"):
        assert run in printed
        assert (out / "runs" / run / "metrics.json").is_file()
        assert (out / "runs" / run / "config.yaml").is_file()
    report = out / "report.html"
    files = referenced_files(report)
    assert files, "the report references its figures"
    for f in files:
        assert f.is_file() and f.stat().st_size > 0, f
    assert any(f.suffix == ".gif" for f in files)


def test_demo_refuses_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = main(["demo", "--out", str(blocker / "sub"), "--videos", "8"])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "sub" in err[0]
