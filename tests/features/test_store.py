"""The feature store: the one dtype rule (float16), on files stmil wrote (the e104ed9
fixtures) and on the same files rewritten in another dtype; :class:`FeatureMeta`, its
``schema_version`` and the one migration of the files of earlier versions."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from stmil.features.store import (
    SCHEMA_VERSION,
    FeatureError,
    is_done,
    load_features,
    read_feature_meta,
    write_features,
)
from tests.conftest import assert_one_line_error, run_cli

FIXTURES = Path(__file__).parents[1] / "fixtures" / "e104ed9" / "feats"


def _forget_checksums(js: Path) -> None:
    meta = json.loads(js.read_text())
    for key in ("npy_bytes", "npy_sha256"):
        meta.pop(key, None)
    js.write_text(json.dumps(meta))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64])
def test_a_feature_array_of_another_dtype_is_refused(tmp_path, dtype):
    shutil.copytree(FIXTURES, tmp_path / "f")
    _forget_checksums(tmp_path / "f" / "Fire001_x264.json")  # as an import's, or older ones
    x, _ = load_features(tmp_path / "f", "Fire001_x264")  # float16, accepted
    assert x.dtype == np.float16
    np.save(tmp_path / "f" / "Fire001_x264.npy", np.asarray(x).astype(dtype))
    with pytest.raises(FeatureError, match=f"Fire001_x264.npy: does not match "
                       f"Fire001_x264.json \\(.*{np.dtype(dtype).name}"):
        load_features(tmp_path / "f", "Fire001_x264")


def test_export_features_refuses_nan_features(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(FIXTURES, "f")
    x = np.load("f/Fire001_x264.npy")
    x[0, 0, 0] = np.nan
    np.save("f/Fire001_x264.npy", x)
    _forget_checksums(Path("f/Fire001_x264.json"))  # the check of content, not of bytes
    code, out, err = run_cli(capsys, "export-features", "f", "--out", "x", "--quiet")
    assert code == 1
    assert_one_line_error(err, "f/Fire001_x264.npy: NaN or Inf values")
    assert not Path("x/features.list").exists()


# ---- FeatureMeta: the one contract of <id>.json, and the one migration of older files ------

def _fixture_meta(vid: str = "Fire001_x264") -> dict:
    return json.loads((FIXTURES / f"{vid}.json").read_text())


@pytest.mark.parametrize("vid", ["Fire001_x264", "Normal_Videos_003_x264"])
def test_e104ed9_files_migrate_with_every_key_kept(vid):
    raw = _fixture_meta(vid)
    assert "schema_version" not in raw  # version 0
    meta = read_feature_meta(FIXTURES / f"{vid}.json")
    assert meta.schema_version == SCHEMA_VERSION == 1
    assert json.loads(meta.to_json()) == {"schema_version": 1, **raw}  # names and meanings
    assert meta.motion.shape == (3, 4) and not meta.motion.flags.writeable
    np.testing.assert_array_equal(meta.motion, raw["motion"])
    assert meta.resample_fps is None and meta.identity == {
        k: raw[k] for k in ("source", "source_bytes", "source_mtime_ns")}


def test_the_writer_adds_schema_version_and_reads_back_what_it_wrote(tmp_path):
    x, old = load_features(FIXTURES, "Fire001_x264")
    written = write_features(tmp_path, "v", np.asarray(x), old, command="extract")
    raw = json.loads((tmp_path / "v.json").read_text())
    assert next(iter(raw)) == "schema_version" and raw["schema_version"] == 1
    assert {k: v for k, v in raw.items() if k != "schema_version"} == _fixture_meta()
    _, again = load_features(tmp_path, "v")
    assert again == written and again.motion.tolist() == written.motion.tolist()
    assert is_done(tmp_path, "v")


def test_a_file_from_before_source_fps_was_cut_at_its_own_rate(tmp_path):
    raw = _fixture_meta()
    del raw["source_fps"]
    (tmp_path / "v.json").write_text(json.dumps(raw | {"fps": 25, "note": "kept by hand"}))
    meta = read_feature_meta(tmp_path / "v.json")  # an unknown key of version 0 is dropped
    assert (meta.fps, meta.source_fps, meta.resample_fps) == (25, 25, None)
    # the same file as this version: source_fps is required, unknown keys are refused
    (tmp_path / "v.json").write_text(json.dumps(raw | {"schema_version": 1}))
    with pytest.raises(FeatureError, match=r"v\.json: not a feature metadata file: missing "
                                           r"source_fps; "):
        read_feature_meta(tmp_path / "v.json")
    (tmp_path / "v.json").write_text(json.dumps(_fixture_meta() | {"schema_version": 1,
                                                                   "note": 1}))
    with pytest.raises(FeatureError, match=r"v\.json: unknown key 'note' in a schema_version 1 "):
        read_feature_meta(tmp_path / "v.json")


@pytest.mark.parametrize("version", [2, -1, True, "1", 1.0, None, [1]])
def test_a_schema_version_this_stmil_does_not_read_is_one_line_naming_the_file(
        tmp_path, capsys, monkeypatch, version):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(FIXTURES, "f")
    Path("f/Fire001_x264.json").write_text(json.dumps(_fixture_meta() | {
        "schema_version": version}))
    code, _, err = run_cli(capsys, "export-features", "f", "--out", "x", "--quiet")
    assert code == 1
    assert_one_line_error(err, f"f/Fire001_x264.json: schema_version must be 1 or absent (an "
                               f"older stmil), got {version!r}", "Upgrade stmil")


def test_feature_meta_is_validated_when_made():
    good = read_feature_meta(FIXTURES / "Fire001_x264.json")
    with pytest.raises(FeatureError, match=r"^grid must be a whole number >= 1, got 0$"):
        dataclasses.replace(good, grid=0)
    with pytest.raises(FeatureError, match=r"^motion must be n_clips \(3\) lists of grid x grid "
                                           r"\(9\) finite numbers >= 0, got \[0\.\d+, "):
        dataclasses.replace(good, grid=3)  # its motion record is of grid 2
    with pytest.raises(FeatureError, match=r"precision must be fp32, bf16, fp16 or int8 "
                                           r"\(fp16, int8: an exported model's\), got 'fp64'"):
        dataclasses.replace(good, precision="fp64")
    with pytest.raises(FeatureError, match=r"^backend must be onnxruntime or openvino \(absent: "
                                           r"PyTorch\), got 'torch'$"):
        dataclasses.replace(good, backend="torch")  # PyTorch's files record no backend
    assert dataclasses.replace(good, backend="openvino", precision="int8").backend == "openvino"
    assert dataclasses.replace(good, grid=3, motion=None).grid == 3
