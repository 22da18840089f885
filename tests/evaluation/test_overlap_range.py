"""``evaluate --overlap`` must be a fraction in (0, 1] (issue 22 item 11): NaN and inf gave a
traceback; -1, 0 and 5 were accepted and their results replaced the run's stored metrics."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from stmil.errors import ConfigError
from stmil.evaluation.settings import EvaluateOptions
from stmil.settings import check
from tests.conftest import assert_one_line_error, run_cli


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "0", "5", "1.0001"])
def test_a_bad_overlap_is_one_line_and_leaves_the_run_alone(tmp_path, capsys, monkeypatch,
                                                           value):
    monkeypatch.chdir(tmp_path)
    Path("run").mkdir()
    Path("run/metrics.json").write_text("the stored test metrics\n")
    code, out, err = run_cli(capsys, "evaluate", "--data", "data", "--features", "feats",
                             "--model", "run", f"--overlap={value}", "--json", "m.json")
    assert code == 1 and out == ""
    assert_one_line_error(err, "--overlap must be a number > 0 and <= 1",
                          f"got {float(value)!r}")
    assert Path("run/metrics.json").read_text() == "the stored test metrics\n"
    assert not Path("m.json").exists()


@pytest.mark.parametrize("value", [0.25, 1, 1e-6])
def test_a_fraction_is_accepted(value):
    assert check(EvaluateOptions, "overlap", value) == float(value)


@pytest.mark.parametrize("value", [math.nan, 0.0, True, "0.5", None])
def test_the_library_check(value):
    with pytest.raises(ConfigError, match=r"^overlap must be a number > 0 and <= 1, got "):
        check(EvaluateOptions, "overlap", value)
