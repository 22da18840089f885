"""The validation engine itself (:mod:`stmil.settings`): strict types, bounds on every number,
cross-field rules, ``--config`` mappings and where each value came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from stmil.errors import ConfigError
from stmil.settings import (
    SettingError,
    Settings,
    all_specs,
    check,
    collect,
    number_array,
    require,
    setting,
    setting_like,
    specs,
)


@dataclass(frozen=True)
class Demo(Settings):
    count: int = setting(3, "how many", lo=1, hi=10)
    rate: float = setting(0.5, "how fast", unit="seconds", lo=0, lo_open=True, hi=2)
    mode: str = setting("a", "which", choices=("a", "b"))
    on: bool = setting(False, "whether")
    limit: int | None = setting(None, "at most", lo=0, hi=5)
    paths: list[Path] | None = setting(None, "where")
    low: float = setting(0.0, "lower", lo=0, hi=100)
    high: float = setting(1.0, "upper", lo=0, hi=100)
    note: dict = field(default_factory=dict)  # not a setting: never checked

    def rules(self) -> None:
        require(self.high >= self.low, f"{{high}} must be at least {{low}} ({self.low:g}), got "
                f"{self.high!r}", "high", "low")


@pytest.mark.parametrize("kw, message", [
    (dict(count=0), "count must be a whole number from 1 to 10, got 0"),
    (dict(count=11), "count must be a whole number from 1 to 10, got 11"),
    (dict(count=True), "count must be a whole number from 1 to 10, got True"),
    (dict(count=2.0), "count must be a whole number from 1 to 10, got 2.0"),
    (dict(count="2"), "count must be a whole number from 1 to 10, got '2'"),
    (dict(rate=0), "rate must be a number > 0 and <= 2 seconds, got 0"),
    (dict(rate=float("nan")), "rate must be a number > 0 and <= 2 seconds, got nan"),
    # a value's repr is cut to 80 characters: one readable line
    (dict(rate=10**400), f"rate must be a number > 0 and <= 2 seconds, got {'1' + '0' * 76}..."),
    (dict(mode="c"), "mode must be one of a, b, got 'c'"),
    (dict(on="false"), "on must be true or false, got 'false'"),
    (dict(on=0), "on must be true or false, got 0"),
    (dict(limit=6), "limit must be a whole number from 0 to 5, got 6"),
    (dict(paths=[]), "paths must be a list of one or more values, each a path (a non-empty "
                     "string), got []"),
    (dict(low=5.0, high=1.0), "high must be at least low (5), got 1.0"),
])
def test_bad_values_are_refused_naming_the_setting_and_its_rule(kw, message):
    with pytest.raises(SettingError) as info:
        Demo(**kw)
    assert str(info.value) == message
    assert isinstance(info.value, ConfigError)


def test_good_values_are_converted():
    d = Demo(rate=1, limit=None, paths=["a"], note={"x": object()})
    assert d.rate == 1.0 and isinstance(d.rate, float)
    assert d.paths == ["a"] and d.limit is None
    assert check(Demo, "count", 4) == 4
    assert "note" not in specs(Demo)


def test_every_number_needs_both_bounds():
    @dataclass(frozen=True)
    class Open(Settings):
        n: int = setting(1, "unbounded above", lo=1)

    with pytest.raises(TypeError, match="Open.n: a number needs a lower and upper bound"):
        Open()


def test_every_command_declares_bounds_for_every_number():
    """Every number flag of every command has a lower and an upper bound (issue 22)."""
    from stmil.cli import COMMANDS, classes_of

    numbers = [(name, s.name) for name in COMMANDS for s in all_specs(classes_of(name)).values()
               if s.kind in (int, float) and s.rule.choices is None]
    assert len(numbers) > 50
    for name in COMMANDS:
        for s in all_specs(classes_of(name)).values():
            if s.kind in (int, float):
                assert s.rule.lo is not None and s.rule.hi is not None, (name, s.name)
                assert s.rule.hi < float("inf"), (name, s.name)


def test_setting_like_keeps_the_rule_in_one_place():
    @dataclass(frozen=True)
    class Maybe(Settings):
        count: int | None = setting_like(Demo, "count", help="or the default")

    assert Maybe().count is None
    with pytest.raises(SettingError, match="^count must be a whole number from 1 to 10, got 0$"):
        Maybe(count=0)


def test_collect_flags_over_config_over_defaults_naming_where_each_came_from():
    values = collect((Demo,), {"count": "4"}, {"count": 9, "rate": "1e-1", "mode": "b"}, "c.yaml",
                     "demo")
    assert (values.count, values.rate, values.mode, values.on) == (4, 0.1, "b", False)
    assert values.origins == {"count": "--count", "rate": "c.yaml: rate", "mode": "c.yaml: mode"}
    with pytest.raises(ConfigError, match="^c.yaml: rate must be a number > 0"):
        collect((Demo,), {}, {"rate": 0}, "c.yaml", "demo")
    with pytest.raises(ConfigError, match="^--rate must be a number > 0"):
        collect((Demo,), {"rate": "0"}, {"rate": 1}, "c.yaml", "demo")
    with pytest.raises(ConfigError, match="^c.yaml: unknown key 'speed' for demo; valid keys: "
                       "count, high, limit, low, mode, on, paths, rate$"):
        collect((Demo,), {}, {"speed": 1}, "c.yaml", "demo")


def test_a_cross_field_error_is_worded_with_the_origins():
    values = collect((Demo,), {"high": "1"}, {"low": 5}, "c.yaml", "demo")
    with pytest.raises(SettingError) as info:
        values.get(Demo)
    assert values.render(info.value) == "--high must be at least low (5), got 1.0"


# ---- a file's record: pattern, what, from_mapping with a file, a fix and an error class ------


class RecordError(ValueError):
    """A reader's own error class (FeatureError, ModelError...)."""


@dataclass(frozen=True, kw_only=True)
class Record(Settings):
    sha: str = setting(pattern="[0-9a-f]{4}", what="4 lowercase hex digits")
    name: str | None = setting(None, pattern=".+")
    grid: int = setting(lo=1, hi=64)
    inner: Demo = field(default_factory=Demo)  # a record the reader builds itself


@pytest.mark.parametrize("values, message", [
    ({"sha": "ABCD", "grid": 2}, "sha must be 4 lowercase hex digits, got 'ABCD'"),
    ({"sha": "abcd\n", "grid": 2}, "sha must be 4 lowercase hex digits, got 'abcd\\n'"),
    ({"sha": "abcd", "grid": 2, "name": ""}, "name must be a string matching .+, got ''"),
    ({"sha": "abcd", "grid": 0}, "grid must be a whole number from 1 to 64, got 0"),
    ({"sha": "abcd", "grid": [1] * 100}, "grid must be a whole number from 1 to 64, got "
                                          f"{str([1] * 100)[:77]}..."),
    ({"grid": 2}, "missing sha"),
])
def test_a_file_record_is_one_line_naming_file_key_and_fix(values, message):
    with pytest.raises(RecordError) as info:
        Record.from_mapping(values | {"newer": 1}, "out/v.json", fix="write it again",
                            error=RecordError, others="ignore")
    assert str(info.value) == f"out/v.json: {message}; write it again"


def test_from_mapping_passes_records_and_refuses_or_ignores_other_keys():
    inner = Demo(count=4)
    r = Record.from_mapping({"sha": "abcd", "grid": 2, "inner": inner, "x": 1}, "f",
                            others="ignore")
    assert (r.sha, r.grid, r.name, r.inner) == ("abcd", 2, None, inner)
    with pytest.raises(ConfigError, match="^f: unknown settings x; allowed: sha, name, grid"):
        Record.from_mapping({"sha": "abcd", "grid": 2, "x": 1}, "f")


@pytest.mark.parametrize("value, shown", [
    ([[1, 2], [3]], "[3]"),  # ragged
    ([[1, "2"]], "'2'"),  # a string is no number
    ([[1, True]], "True"),  # nor a bool
    ([[1, float("nan")]], "nan"),
    ([[1, 4]], "4"),  # above hi
    ([[-1, 0]], "-1"),  # below lo
    ([], "[]"),  # a free first dimension still needs one row
    (3, "3"),
    ([[1, 2, 3]], "[1, 2, 3]"),
])
def test_number_array_names_the_first_bad_element(value, shown):
    with pytest.raises(SettingError) as e:
        number_array("x", value, (None, 2), lo=0, hi=3)
    assert str(e.value) == f"x must be an array of N x 2 finite numbers from 0 to 3, got {shown}"


def test_number_array_values_and_whole_numbers():
    arr = number_array("m", [[0, 1.5], [2, 3]], (2, 2), lo=0)
    assert arr.dtype == np.float64 and arr.tolist() == [[0.0, 1.5], [2.0, 3.0]]
    whole = number_array("r", [[0, 8], [8, 16]], (None, 2), integer=True)
    assert whole.dtype == np.int64 and whole.tolist() == [[0, 8], [8, 16]]
    with pytest.raises(SettingError, match=r"^r must be an array of 1 x 2 whole numbers, "
                                           r"got 1\.0$"):
        number_array("r", [[0, 1.0]], (1, 2), integer=True)
    with pytest.raises(SettingError, match=r"got \[\[0, 10+\]\]$"):  # beyond int64
        number_array("r", [[0, 10**30]], (1, 2), integer=True)
    given = np.ones((2, 3), np.float32)
    assert number_array("a", given, (2, 3)) is not given  # a copy: the caller's stays theirs
    with pytest.raises(SettingError, match=r"got an array of complex64 \(2, 3\)$"):
        number_array("a", given.astype(np.complex64), (2, 3))
    with pytest.raises(SettingError, match=r"^motion must be 2 rows of 3, got"):
        number_array("motion", given, (3, 2), what="2 rows of 3")
