"""The feature store's reader: the one dtype rule (float16), on files stmil wrote (the
e104ed9 fixtures) and on the same files rewritten in another dtype."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from stmil.features.store import FeatureError, load_features
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
