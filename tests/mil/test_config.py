"""TrainConfig and --config files: every setting typed and range-checked in one place, one-line
errors naming the file and key, a flag for every setting."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from stmil.errors import ConfigError
from stmil.mil.config import FIELDS, TrainConfig, read_config
from stmil.mil.run import load_model
from stmil.mil.train import train
from tests.conftest import assert_one_line_error, run_cli
from tests.mil.conftest import CLI_FAST, FAST

# --- TrainConfig: items 10, 20 -----------------------------------------------------------------


@pytest.mark.parametrize("key,value,match", [
    ("hidden", 0, "hidden must be a whole number from 1 to 65536, got 0"),
    ("hidden", 10**20, "hidden must be a whole number from 1 to 65536, got 100000000000000000000"),
    ("mid", -1, "mid must be a whole number from 1 to 65536, got -1"),
    ("dropout", 1.5, "dropout must be a number >= 0 and < 1, got 1.5"),
    ("dropout", 1, "dropout must be a number >= 0 and < 1, got 1"),
    ("seed", -1, "seed must be a whole number from 0 to 4294967295, got -1"),
    ("seed", 2**32, "seed must be a whole number from 0 to 4294967295, got 4294967296"),
    ("instances", "grid", "instances must be one of cuboid, frame, got 'grid'"),
    ("instances", 1, "instances must be one of cuboid, frame, got 1"),
    ("lr", float("nan"), "lr must be a number > 0 and <= 1000, got nan"),
    ("lr", float("inf"), "lr must be a number > 0 and <= 1000, got inf"),
    ("lr", 0.0, "lr must be a number > 0 and <= 1000, got 0.0"),
    ("lambda1", 10**400, f"lambda1 must be a number from 0 to 1000000, got {'1' + '0' * 76}..."),
    ("lr", 5000.0, "lr must be a number > 0 and <= 1000, got 5000.0"),
    ("iterations", 0, "iterations must be a whole number from 1 to 1000000000, got 0"),
    ("val_fraction", 1.0, "val_fraction must be a number >= 0 and < 1, got 1.0"),
    ("overlap", 0, "overlap must be a number > 0 and <= 1, got 0"),
    ("patience", -2, "patience must be a whole number from 0 to 1000000000, got -2"),
    ("skip_missing", "false", "skip_missing must be true or false, got 'false'"),
    ("hidden", True, "hidden must be a whole number from 1 to 65536, got True"),
    ("hidden", 1.5, "hidden must be a whole number from 1 to 65536, got 1.5"),
    ("hidden", "x", "hidden must be a whole number from 1 to 65536, got 'x'"),
    ("supervision", "strong", "supervision must be one of weak, boxes, got 'strong'"),
    ("device", "tpu", "device must be one of auto, cpu, cuda, got 'tpu'"),
])
def test_train_config_refuses_bad_settings(key, value, match):
    with pytest.raises(ConfigError, match=f"^{match}$".replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**{key: value})


def test_train_config_accepts_ints_for_floats_and_round_trips():
    cfg = TrainConfig(lr=1, dropout=0, instances="frame", skip_missing=True)
    assert cfg.lr == 1 and cfg.instances == "frame"
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="^cfg.yaml: unknown settings learning_rate; allowed"):
        TrainConfig.from_dict({"learning_rate": 1}, where="cfg.yaml")


@pytest.mark.parametrize("flag,value,match", [
    ("--hidden", "0", "--hidden must be a whole number from 1 to 65536, got 0"),
    ("--mid", "-1", "--mid must be a whole number from 1 to 65536, got -1"),
    ("--dropout", "1.5", "--dropout must be a number >= 0 and < 1, got 1.5"),
    ("--seed", "-1", "--seed must be a whole number from 0 to 4294967295, got -1"),
    ("--grid", "-3", "train --grid was renamed: use --instances frame (was --grid 1, the "
     "video-segment baseline) or --instances cuboid (the default)"),
    ("--grid", "1", "train --grid was renamed: use --instances frame"),
    ("--lr", "nan", "--lr must be a number > 0 and <= 1000, got nan"),
    ("--iterations", "0", "--iterations must be a whole number from 1 to 1000000000, got 0"),
])
def test_cli_bad_train_flags_are_one_line_errors_and_write_nothing(tiny, tmp_path, capsys,
                                                                   monkeypatch, flag, value,
                                                                   match):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny[0], "data")
    shutil.copytree(tiny[1], "feats")
    code, _, err = run_cli(capsys, "train", "--data", "data", "--features", "feats", "--out",
                           "run", *CLI_FAST, flag, value)
    assert code == 1
    assert_one_line_error(err, match)
    assert sorted(os.listdir(".")) == ["data", "feats"]


def test_every_train_setting_has_a_flag(capsys):
    with pytest.raises(SystemExit):
        run_cli(capsys, "train", "--help")
    text = capsys.readouterr().out
    for name in FIELDS:
        assert "--" + name.replace("_", "-") in text, name
    assert "--no-skip-missing" in text


# --- --config files: items 10, 21 --------------------------------------------------------------


@pytest.mark.parametrize("text,match", [
    ('skip_missing: "false"\n', "skip_missing must be true or false, got 'false'"),
    ("skip_missing: 0\n", "skip_missing must be true or false, got 0"),
    ('hidden: "x"\n', "hidden must be a whole number from 1 to 65536, got 'x'"),
    ("hidden: 0\n", "hidden must be a whole number from 1 to 65536, got 0"),
    ("iterations: 5.5\n", "iterations must be a whole number from 1 to 1000000000, got 5.5"),
    ("lr: .nan\n", "lr must be a number > 0 and <= 1000, got nan"),
    ('lr: "fast"\n', "lr must be a number > 0 and <= 1000, got 'fast'"),
    ("dropout: [0.5]\n", "dropout must be a number >= 0 and < 1, got [0.5]"),
    ("features: 3\n", "features must be a path (a non-empty string), got 3"),
    ("- iterations\n", "a config is a flat mapping of train settings"),
    ("{1: 2}\n", "a config is a flat mapping of train settings"),
    ("iterations: [\n", "not valid YAML"),
])
def test_read_config_checks_types_naming_the_file(tmp_path, monkeypatch, text, match):
    monkeypatch.chdir(tmp_path)
    Path("cfg.yaml").write_text(text)
    with pytest.raises(ConfigError, match="^cfg.yaml: " + match.replace("[", r"\[")
                       .replace("(", r"\(").replace(")", r"\)")):
        read_config("cfg.yaml")


def test_read_config_reads_yaml_exponents_as_numbers(tmp_path):
    """YAML 1.1 reads ``1e-3`` as a string; a float setting accepts it as the number."""
    path = tmp_path / "cfg.yaml"
    path.write_text("lr: 1e-3\nweight_decay: 0\nskip_missing: true\n")
    assert read_config(path) == {"lr": 0.001, "weight_decay": 0, "skip_missing": True}


@pytest.mark.parametrize("text,expected", [
    ("grid: 1\nfeature_grid: 7\nhidden: 8\n", {"instances": "frame", "hidden": 8}),
    ("grid: 7\nfeature_grid: 7\n", {"instances": "cuboid"}),
    ("grid: 1\ninstances: cuboid\nfeature_grid: 7\n", {"instances": "cuboid"}),
])
def test_read_config_translates_the_grid_of_older_run_configs(tmp_path, text, expected):
    (tmp_path / "config.yaml").write_text(text)
    assert read_config(tmp_path / "config.yaml") == expected


@pytest.mark.parametrize("text", ["grid: 1\n", "grid: 7\n", "grid: 3\nfeature_grid: 7\n"])
def test_read_config_refuses_the_old_grid_setting_naming_the_new(tmp_path, text):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match="c.yaml: grid was renamed: use instances: frame "
                       r"\(was grid: 1, the video-segment baseline\) or instances: cuboid"):
        read_config(tmp_path / "c.yaml")


def test_frame_instances_record_grid_1(tiny, tmp_path):
    train(*tiny, tmp_path / "a", instances="frame", **FAST)
    train(*tiny, tmp_path / "b", grid=1, **FAST)  # the older keyword
    for run in ("a", "b"):
        cfg = load_model(tmp_path / run)[1]
        assert (cfg["instances"], cfg["grid"], cfg["feature_grid"]) == ("frame", 1, 7)
    a, b = (load_file(tmp_path / r / "model.safetensors") for r in ("a", "b"))
    assert a["net.0.weight"].shape == (16, 16) and all(a[k].equal(b[k]) for k in a)


@pytest.mark.parametrize("blob", [
    bytes(range(256)) * 4,           # binary, not UTF-8
    b"\x00\x01\x02iterations: 3\n",  # UTF-8 but with NULs
    b"\xff\xfe\x00\x00",
])
def test_cli_binary_config_is_a_one_line_error_naming_it(tiny, tmp_path, capsys, monkeypatch,
                                                         blob):
    monkeypatch.chdir(tmp_path)
    Path("model.bin").write_bytes(blob)
    code, _, err = run_cli(capsys, "train", "--config", "model.bin", "--data", tiny[0],
                           "--features", tiny[1], "--out", "run")
    assert code == 1
    assert_one_line_error(err, "model.bin: ", "YAML")
    assert not Path("run").exists()


def test_cli_config_skip_missing_string_is_refused(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("cfg.yaml").write_text('skip_missing: "false"\niterations: 2\n')
    code, _, err = run_cli(capsys, "train", "--config", "cfg.yaml", "--data", tiny[0],
                           "--features", tiny[1], "--out", "run", "--quiet")
    assert code == 1
    assert_one_line_error(err, "cfg.yaml: skip_missing must be true or false, got 'false'")
