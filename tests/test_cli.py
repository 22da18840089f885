"""The CLI layer itself: where log lines go, ``--config`` for every command."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from stmil.mil.train import train
from tests.conftest import assert_one_line_error, run_cli
from tests.planted import make_planted

TRAIN = ["--iterations", "2", "--hidden", "8", "--mid", "4", "--n-segments", "2",
         "--device", "cpu", "--quiet"]
NO_BOX = "FightingTest000_x264"  # its box file is removed: the loader warns, taken as normal


@pytest.fixture()
def planted(tmp_path, monkeypatch) -> tuple[str, str]:
    """A tiny planted dataset ``data/`` and features ``feats/`` in the working folder, one
    anomalous test video without its box file."""
    monkeypatch.chdir(tmp_path)
    make_planted(Path("data"), Path("feats"), n_train=4, n_test=2, n_clips=4, channels=8)
    (Path("data/readme/Txt annotations") / f"{NO_BOX}.txt").unlink()
    return "data", "feats"


def lines_with(text: str, start: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(start)]


def test_log_lines_go_once_to_stderr_and_summaries_once_to_stdout(planted, capsys):
    data, feats = planted
    split, boxes = Path("data/readme/Test_split_AD.txt"), Path("data/readme/Txt annotations")
    warning = f"warning: {split}:1: {NO_BOX} has no box file in {boxes}; taken as normal\n"
    for i in range(2):  # configured once per call: a second call adds no second handler
        code, out, err = run_cli(capsys, "gt", "--data", data, "--features", feats, "--out",
                                 f"gt{i}")
        assert code == 0, err
        assert out == f"{Path(f'gt{i}/gt.npy')}\n"
        assert err == warning  # once, on stderr, with its prefix

        code, out, err = run_cli(capsys, "train", "--data", data, "--features", feats,
                                 "--out", f"run{i}", *TRAIN)
        assert code == 0, err
        assert len(lines_with(out, "trained 2 iterations in ")) == 1 and out.count("\n") == 1
        assert lines_with(err, "train: ") == ["train: 2 anomalous + 2 normal bags, 0 validation"]
    assert logging.getLogger("stmil").handlers == []  # main leaves logging as it found it
    assert logging.getLogger("stmil").level == logging.NOTSET


def test_log_lines_are_written_through_tqdm(planted, capsys, monkeypatch):
    """Through ``tqdm.write``, so that a progress bar on the same terminal is not broken."""
    from tqdm import tqdm

    written: list[str] = []
    monkeypatch.setattr(tqdm, "write", classmethod(lambda cls, s, file=None, **kw:
                                                   written.append(s)))
    code, _, err = run_cli(capsys, "train", "--data", planted[0], "--features", planted[1],
                           "--out", "run", *TRAIN)
    assert code == 0 and err == ""
    assert written[0] == "train: 2 anomalous + 2 normal bags, 0 validation"
    assert len(written) == 2 and written[1].startswith("gate memory: ")  # the default's gate


def test_the_library_without_logging_configured_prints_no_info_line(planted, capsys):
    data, feats = planted
    run_cli(capsys, "train", "--data", data, "--features", feats, "--out", "cli-run", *TRAIN)
    summary = train(data, feats, "lib-run", iterations=2, hidden=8, mid=4, n_segments=2,
                    device="cpu", progress=False)
    out, err = capsys.readouterr()
    assert summary.iterations == 2
    assert (out, err) == ("", "")  # no "train: ..." line


# --- --config FILE, for every command ------------------------------------------------------


def write(path: str, text: str) -> str:
    Path(path).write_text(text)
    return path


@pytest.fixture()
def trained(planted, capsys) -> tuple[str, str, str]:
    """``planted`` with a run ``run/`` trained on it."""
    code, _, err = run_cli(capsys, "train", "--data", planted[0], "--features", planted[1],
                           "--out", "run", *TRAIN)
    assert code == 0, err
    return planted[0], planted[1], "run"


def test_extract_takes_its_options_from_config_and_flags_override_them(tmp_path, monkeypatch,
                                                                     capsys):
    import stmil.features.extract as extract_mod

    calls: dict = {}

    class Extractor:
        def __init__(self, *args):
            calls["extractor"] = args

    def extract_many(inputs, out, extractor, settings, **kw):
        calls.update(inputs=inputs, out=out, settings=settings, **kw)
        return extract_mod.ExtractSummary()

    monkeypatch.setattr(extract_mod, "FeatureExtractor", Extractor)
    monkeypatch.setattr(extract_mod, "extract_many", extract_many)
    monkeypatch.chdir(tmp_path)
    write("x.yaml", "out: feats\nbatch_size: 4\nclip-len: 8\nprecision: bf16\ndevice: cpu\n"
                    "workers: 0\noverwrite: true\ngrid: 4\n")
    code, out, err = run_cli(capsys, "extract", "videos", "--config", "x.yaml",
                             "--batch-size", "2")
    assert code == 0, err
    assert calls["extractor"] == ("Mixed_4e", 4, "cpu", "bf16")
    assert (calls["out"], calls["overwrite"], calls["pipeline"].workers) == ("feats", True, 0)
    assert (calls["settings"].clip_len, calls["settings"].batch_size) == (8, 2)  # the flag wins


def test_score_and_evaluate_take_their_options_from_config(trained, capsys):
    data, feats, run = trained
    write("score.yaml", f"model: {run}\nout: scores\nthreshold: 0.5\ndevice: cpu\nquiet: true\n")
    code, out, err = run_cli(capsys, "score", f"{feats}/{NO_BOX}.npy", "--config", "score.yaml")
    assert code == 0, err
    assert out == f"{Path('scores') / NO_BOX}.scores.json\n"
    assert json.loads((Path("scores") / f"{NO_BOX}.scores.json").read_text())["threshold"] == 0.5

    write("eval.yaml", f"data: {data}\nfeatures: {feats}\nmodel: {run}\nsplit: train\n"
                       "json: m.json\noverlap: 0.5\n")
    code, out, err = run_cli(capsys, "evaluate", "--config", "eval.yaml", "--overlap", "0.75")
    assert code == 0, err
    settings = json.loads(Path("m.json").read_text())["settings"]
    assert (settings["split"], settings["overlap"], settings["run"]) == ("train", 0.75, run)


def test_watch_takes_its_options_from_config(tmp_path, monkeypatch, capsys):
    import stmil.live.watch as watch_mod

    seen: dict = {}

    def watch(source, run, events, config, **kw):
        seen.update(source=source, run=run, events=events, config=config)
        return watch_mod.WatchSummary(
            ended="end of input", frames=0, clips=0, dropped_clips=0, dropped_frames=0,
            max_behind_s=0.0, connections=1, incidents=0, first_id=1, evidence_errors=0,
            seconds=0.0, score_seconds=0.0, latency_median_s=None, latency_p95_s=None)

    monkeypatch.setattr(watch_mod, "watch", watch)
    monkeypatch.chdir(tmp_path)
    write("w.yaml", "model: run\nthreshold: 0.7\nmin_duration: 2\ndrop: false\nretries: 3\n"
                    "heartbeat: 0\nprecision: bf16\n")
    code, _, err = run_cli(capsys, "watch", "cam.mp4", "--config", "w.yaml", "--drop")
    assert code == 0, err
    assert (seen["source"], seen["run"]) == ("cam.mp4", "run")
    assert (seen["events"].threshold, seen["events"].min_duration) == (0.7, 2.0)
    c = seen["config"]
    assert (c.drop, c.retries, c.heartbeat, c.precision) == (True, 3, 0.0, "bf16")


@pytest.mark.parametrize("text,message", [
    ("bogus: 1\n", "x.yaml: unknown key 'bogus' for stmil evaluate; valid keys: boxes, compare, "
                   "data, debug, features, format, interpolate, json, model, overlap, quiet, "
                   "skip-missing, split, threshold"),
    ("overlap: much\n", "x.yaml: overlap must be a number > 0 and <= 1, got 'much'"),
    ("split: val\n", "x.yaml: split must be one of train, test, all, got 'val'"),
    ("skip_missing: 'yes'\n", "x.yaml: skip_missing must be true or false, got 'yes'"),
    ("data: [a, b]\n", "x.yaml: data must be a path (a non-empty string), got ['a', 'b']"),
    ("data: ''\n", "x.yaml: data must be a path (a non-empty string), got ''"),
    ("- data\n", "x.yaml: a config is a flat mapping of stmil evaluate options"),
    ("data: [\n", "x.yaml: not valid YAML"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, monkeypatch, capsys, text, message):
    monkeypatch.chdir(tmp_path)
    write("x.yaml", text)
    code, out, err = run_cli(capsys, "evaluate", "--config", "x.yaml")
    assert code == 1 and out == ""
    assert_one_line_error(err, message)


def test_a_missing_config_file_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "score", "a.npy", "--config", "nope.yaml")
    assert code == 1
    assert err == "error: nope.yaml: No such file or directory\n"


def test_required_options_may_come_from_config_only(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "score", "a.npy")  # one line, as every other mistake
    assert code == 1
    assert_one_line_error(err, "the following arguments are required: --model, --out (as "
                               "flags or keys of --config); see stmil score --help")
    write("x.yaml", "model: run\n")
    code, _, err = run_cli(capsys, "score", "a.npy", "--config", "x.yaml")
    assert code == 1
    assert_one_line_error(err, "the following arguments are required: --out (as flags")


# --- choices come from the library -----------------------------------------------------------


def test_every_choice_list_is_the_library_constant_and_the_parser_loads_no_torch():
    from stmil import deploy, interop
    from stmil.cli import build_parser
    from stmil.datasets.errors import SPLITS
    from stmil.device import DEVICES
    from stmil.features.pipeline_config import ENGINES, PRECISIONS, TAIL_POLICIES
    from stmil.mil import config
    from stmil.synth.distractors import SCENARIOS

    library = (DEVICES, PRECISIONS, TAIL_POLICIES, SPLITS, config.FORMATS, config.METHODS,
               config.INSTANCES, config.SUPERVISION, config.SELF_TRAIN_INITS, config.GATES,
               config.MOTIONS,
               interop.FORMATS, interop.TAILS, interop.CONVENTIONS, interop.LAYOUTS,
               SCENARIOS, deploy.FORMATS, deploy.PRECISIONS, deploy.BACKENDS, ENGINES)
    from stmil.cli import COMMANDS, classes_of
    from stmil.settings import all_specs

    specs = [(name, s) for name in COMMANDS for s in all_specs(classes_of(name)).values()]
    checked = [(n, s.name) for n, s in specs if s.rule.choices is not None
               and any(s.rule.choices is c for c in library)]
    unchecked = [(n, s.name) for n, s in specs if s.rule.choices is not None
                 and not any(s.rule.choices is c for c in library)]
    assert unchecked == [] and len(checked) >= 20
    assert build_parser().commands.keys() == COMMANDS.keys()
    code = "import sys; from stmil.cli import build_parser; build_parser(); print(sorted(" \
           "m for m in ('torch', 'av', 'sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out == "[]\n"  # --help stays quick
