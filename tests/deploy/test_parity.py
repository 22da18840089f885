"""Parity on real footage (vtest.avi) and end to end: ONNX Runtime features against PyTorch
fp32, fp16's error, and stmil score --backend onnxruntime against the PyTorch run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stmil.deploy.export import export_model
from stmil.deploy.manifest import read_manifest
from stmil.deploy.runtime import ExportedModel
from tests.conftest import require_vtest, run_cli, write_video


def _vtest_clips(n: int = 4) -> np.ndarray:
    """The first ``n`` 16-frame clips of vtest.avi at 224, decoded and resized as extract does."""
    from stmil.features.video import iter_clips

    batch = next(iter_clips(require_vtest(), 16, 16, 224, batch_size=n))
    return batch.clips


def _rel_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per clip: ``|a - b| / |b|`` over each clip's cuboids and channels."""
    return (np.linalg.norm((a - b).reshape(len(a), -1), axis=1)
            / np.linalg.norm(b.reshape(len(b), -1), axis=1))


@pytest.mark.slow
def test_onnxruntime_features_match_pytorch_on_vtest(export_224, extractor):
    from stmil.features.motion import motion_energy

    clips = _vtest_clips()
    ref = extractor(clips).numpy()  # PyTorch fp32 on the CPU, as stmil extract
    feats, motion = ExportedModel(export_224, "cpu").features(clips.numpy())
    assert (_rel_l2(feats, ref) <= 1e-4).all(), _rel_l2(feats, ref)
    np.testing.assert_allclose(motion, motion_energy(clips, 7), rtol=0, atol=1.01e-6)
    assert motion.max() > 0.01  # people walk: the clips move


@pytest.mark.slow
def test_fp16_features_error_on_vtest(tmp_path, extractor, export_224):
    """fp16 halves the file at a relative error of about 1e-3 (docs/deploy.md)."""
    out = tmp_path / "fp16"
    manifest = export_model(out, precision="fp16")
    assert manifest.data["precision"] == "fp16"
    clips = _vtest_clips()
    feats, _ = ExportedModel(out, "cpu").features(clips.numpy())
    err = _rel_l2(feats, extractor(clips).numpy())
    assert (err < 5e-3).all() and (err > 1e-5).all(), err  # fp16, but not fp32 by mistake
    fp32_bytes = (export_224 / "features.onnx").stat().st_size
    assert (out / "features.onnx").stat().st_size < 0.6 * fp32_bytes  # weights in half


@pytest.mark.slow
def test_openvino_features_match_pytorch_on_vtest(openvino_224, extractor):
    clips = _vtest_clips()
    ref = extractor(clips).numpy()
    model = ExportedModel(openvino_224, "cpu")
    assert model.backend == "openvino"
    feats, _ = model.features(clips.numpy())
    err = _rel_l2(feats, ref)
    print("OpenVINO fp32 vs PyTorch fp32, relative L2 per vtest clip:", err)
    assert (err <= 1e-4).all(), err


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_score_backend_equals_torch(backend, gated_run, tmp_path, capsys, request):
    """Same decoding, same files, same scores (1e-5) through the exported model: an export
    folder made with --model (graphs for features and scores), or the run folder itself with
    an exported feature graph (--exported; onnxruntime: also without it, the one exported
    into stmil's cache) and the run's own scorer."""
    from tests.live.scene import scene_frames

    exported = request.getfixturevalue(
        "gated_export" if backend == "onnxruntime" else "gated_export_openvino")
    video = write_video(tmp_path / "clip.mkv", scene_frames(64, [(20, 44)], 5))
    got = {}
    runs = {"torch": ("torch", gated_run), "export": (backend, exported),
            "run+exported": (backend, gated_run, "--exported", exported)}
    if backend == "onnxruntime":
        runs["run+cache"] = (backend, gated_run)
    for name, (chosen, model, *more) in runs.items():
        out = tmp_path / name
        code, stdout, err = run_cli(capsys, "score", video, "--model", model, "--out", out,
                                    "--backend", chosen, "--device", "cpu", "--quiet", *more)
        assert code == 0, err
        got[name] = json.loads((out / "clip.scores.json").read_text())
    tol = read_manifest(exported).data["checked"]["scores_tol"]  # the gate's rounding
    for name in runs.keys() - {"torch", "export"}:  # the run's scorer: fp32 features' rounding
        np.testing.assert_allclose(got[name]["clip_maps"], got["torch"]["clip_maps"], rtol=0,
                                   atol=1e-4, err_msg=name)
    a, b = got["torch"], got["export"]
    assert a.keys() == b.keys()
    for key in a.keys() - {"clip_maps", "frame_scores", "boxes"}:
        assert a[key] == b[key], key
    diff = np.abs(np.subtract(b["clip_maps"], a["clip_maps"])).max()
    print(f"max |{backend} - torch| of the clip maps:", diff)
    np.testing.assert_allclose(b["frame_scores"], a["frame_scores"], rtol=0, atol=tol)
    np.testing.assert_allclose(b["clip_maps"], a["clip_maps"], rtol=0, atol=tol)
    assert max(a["frame_scores"]) > 0.01  # something to compare
    assert diff <= 1e-4 and tol <= 1e-4  # the bound, on a gate of realistic width
    assert Path(tmp_path / "export" / "clip.scores.json").is_file()
