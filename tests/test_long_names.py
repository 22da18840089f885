"""A video with a 250-character name (issue 22 item 32): the names stmil derives from it (its
claim, the temporaries of its outputs) follow one rule, :func:`stmil.atomic.fit_name`."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from stmil.atomic import NAME_MAX, TEMP_PATTERN, fit_name, remove_stale_temps, temp_path
from stmil.features.claims import claim_path, remove_stale_claims, try_claim
from stmil.features.store import is_done
from tests.conftest import ramp_frames, run_cli, write_video


def test_a_name_that_fits_is_kept():
    assert fit_name("v" * 249, ".claim") == "v" * 249 + ".claim"  # 255 bytes


@pytest.mark.parametrize("stem", ["v" * 250, "x" * 1000, "é" * 200, "a" * 240 + "€" * 20])
def test_a_name_too_long_is_cut_and_hashed(stem):
    name = fit_name(stem, ".claim")
    digest = hashlib.sha256(stem.encode()).hexdigest()[:16]
    assert len(name.encode()) <= NAME_MAX and name.endswith(f"~{digest}.claim")
    assert stem.startswith(name[:-len(f"~{digest}.claim")])  # whole characters only


def test_two_long_names_with_one_prefix_stay_apart():
    assert fit_name("v" * 300 + "a", ".claim") != fit_name("v" * 300 + "b", ".claim")


def test_temporaries_and_claims_of_a_long_id_fit(tmp_path):
    vid = "v" * 250
    tmp = temp_path(tmp_path / f"{vid}.json")
    assert len(tmp.name.encode()) <= NAME_MAX and TEMP_PATTERN.fullmatch(tmp.name)
    pid = str(os.getpid())  # a dead writer with a pid as long as ours (so the name fits)
    dead = next(p for p in range(10 ** (len(pid) - 1), 10 ** len(pid))
                if not Path(f"/proc/{p}").exists())
    os.rename(tmp, tmp_path / tmp.name.replace(f".{pid}.", f".{dead}."))
    assert len(remove_stale_temps(tmp_path)) == 1  # a dead writer's: still recognised
    claim = try_claim(tmp_path, vid)
    assert claim is not None and claim.path == claim_path(tmp_path, vid)
    os.close(claim.fd)  # as a killed process would leave it: the lock dies, the file stays
    assert remove_stale_claims(tmp_path) == [claim.path] and list(tmp_path.iterdir()) == []


def test_extract_a_video_with_a_250_character_name(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    vid = "Fighting_" + "x" * 241  # 250 characters: <id>.claim would be 256 bytes
    Path("videos").mkdir()
    write_video(Path("videos", f"{vid}.mkv"), ramp_frames(20, h=32, w=32))
    code, out, err = run_cli(capsys, "extract", "videos", "--out", "out", "--size", "64",
                             "--grid", "4", "--quiet", "--device", "cpu")
    assert code == 0, err
    assert out.startswith("1 done, 0 skipped, 0 failed")
    assert is_done(Path("out"), vid) and np.load(Path("out", f"{vid}.npy")).shape == (1, 16, 528)
    assert sorted(p.name for p in Path("out").iterdir()) == sorted(
        [".stmil", f"{vid}.json", f"{vid}.npy"])  # no claim or temporary left
