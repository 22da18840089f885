"""A full or read-only disk names the output, never a temporary (issue 22 item 30): one rule,
:func:`stmil.atomic.output_name`, used by every writer through :func:`stmil.atomic.naming`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stmil.atomic import atomic_write, output_name
from stmil.ownership import commit
from tests.conftest import limit_file_size, run_cli, unwritable
from tests.planted import make_planted

TRAIN = ["--iterations", "2", "--hidden", "8", "--mid", "4", "--n-segments", "2", "--device",
         "cpu", "--quiet"]


@pytest.mark.parametrize("path, staging, expected", [
    ("out/.v.npy.123.abcdefgh.tmp", None, "out/v.npy"),
    ("out/v.npy", None, None),  # the output itself: no mapping
    ("out/.v.npy", None, None),  # a hidden name that is not a temporary
    ("r/.run.stmil-staging", "r/.run.stmil-staging", "r/run"),
    ("r/.run.stmil-staging/.stmil-run", "r/.run.stmil-staging", "r/run/.stmil-run"),
    ("r/.run.stmil-staging/.config.yaml.42.k2j4h5g6.tmp", "r/.run.stmil-staging",
     "r/run/config.yaml"),
    ("r/.run.stmil-staging/cache/bags.npy", "r/.run.stmil-staging", "r/run/cache/bags.npy"),
    ("r/other/x", "r/.run.stmil-staging", None),
])
def test_output_name_maps_temporaries_to_outputs(path, staging, expected):
    dest = Path("r/run") if staging else Path("out/v.npy")
    got = output_name(Path(path), dest, Path(staging) if staging else None)
    assert got == (Path(expected) if expected else None)


@pytest.fixture()
def planted(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_planted(Path("data"), Path("feats"), n_train=4, n_test=2, n_clips=4, channels=8)


def test_train_into_a_read_only_folder_names_the_run(planted, capsys):
    with unwritable(Path("ro")):
        code, _, err = run_cli(capsys, "train", "--data", "data", "--features", "feats",
                               "--out", "ro/run", *TRAIN)
    assert code == 1 and "Traceback" not in err
    assert re.fullmatch(r"error: ro/run: (Permission denied|Operation not permitted)\n", err), err


def test_train_on_a_full_disk_names_a_file_of_the_run(planted, capsys):
    with limit_file_size(600):  # the model (~17 kB) cannot be written
        code, _, err = run_cli(capsys, "train", "--data", "data", "--features", "feats",
                               "--out", "run", *TRAIN)
    assert code == 1 and "Traceback" not in err
    assert re.fullmatch(r"error: run/[a-z][\w./]*: File too large\n", err), err
    assert not Path(".run.stmil-staging").exists() and not Path("run").exists()


def test_a_commit_into_a_read_only_folder_names_the_folder(tmp_path):
    with unwritable(tmp_path / "ro"), pytest.raises(OSError) as info:
        commit(tmp_path / "ro", [(tmp_path / "ro" / "a.json", lambda t: t.write_text("{}"))],
               "test")
    assert info.value.filename == str(tmp_path / "ro")  # not ro/.stmil, the ledger's folder


def test_an_atomic_write_on_a_full_disk_names_the_file(tmp_path):
    with limit_file_size(100), pytest.raises(OSError) as info:
        atomic_write(tmp_path / "big.bin", lambda t: t.write_bytes(b"x" * 1000))
    assert info.value.filename == str(tmp_path / "big.bin")
    assert list(tmp_path.iterdir()) == []  # and no temporary is left
