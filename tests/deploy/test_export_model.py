"""stmil export-model: the graphs' structure, the scorer against the run's Detector, the
manifest, the folder's ownership and the one-line errors."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stmil.deploy.backend import ExportedDetector
from stmil.deploy.export import ClipSettings, export_model, gate_probe
from stmil.deploy.manifest import MANIFEST, read_manifest
from stmil.deploy.runtime import ExportedModel
from stmil.errors import ConfigError, ModelError, OutputError, StmilError
from stmil.features.weights import KINETICS400_RGB
from stmil.mil.detector import Detector
from tests.conftest import assert_one_line_error, run_cli
from tests.deploy.conftest import make_run

SMALL = ClipSettings(size=64, grid=3)  # a 4 x 4 Mixed_4e map, pooled to 3 x 3


@pytest.fixture(scope="module")
def small_export(tmp_path_factory) -> Path:
    """Features only, 64 x 64 input (cheap)."""
    out = tmp_path_factory.mktemp("small") / "exported"
    export_model(out, settings=SMALL)
    return out


def test_feature_graph_pads_explicitly_for_the_fixed_input(export_224):
    """TF SAME padding as Pad nodes with the amounts worked out by hand for 16 x 224 x 224
    (out = ceil(n / s); total = (out - 1) * s + k - n; before = total // 2), no auto_pad or
    ceil_mode anywhere; opset 17; a symbolic batch."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(export_224 / "features.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    pads = {n.name: (init[n.input[1]].tolist(), float(init[n.input[2]]))
            for n in model.graph.node if n.op_type == "Pad"}
    # (B, C, T, H, W) begins, then ends
    assert pads == {
        "Conv3d_1a_7x7.pad": ([0, 0, 2, 2, 2, 0, 0, 3, 3, 3], 0.0),  # k 7, s 2 on 16x224x224
        "MaxPool3d_2a_3x3.pad": ([0, 0, 0, 0, 0, 0, 0, 0, 1, 1], -np.inf),  # 1x3x3 s 1x2x2, 112
        "MaxPool3d_3a_3x3.pad": ([0, 0, 0, 0, 0, 0, 0, 0, 1, 1], -np.inf),  # on 56
        "MaxPool3d_4a_3x3.pad": ([0, 0, 0, 0, 0, 0, 0, 1, 1, 1], -np.inf),  # 3x3x3 s 2 on 8x28x28
    }
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs.get("auto_pad", b"NOTSET") == b"NOTSET"
        assert attrs.get("ceil_mode", 0) == 0
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 16, 224, 224]


def test_any_batch_size_gives_the_same_features(small_export):
    exported = ExportedModel(small_export, "cpu")
    clips = np.random.default_rng(0).uniform(-1, 1, (3, 3, 16, 64, 64)).astype(np.float32)
    feats, motion = exported.features(clips)
    one, one_motion = exported.features(clips[1:2])
    assert feats.shape == (3, 9, 528) and motion.shape == (3, 9)
    np.testing.assert_allclose(one[0], feats[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one_motion[0], motion[1], rtol=0, atol=1.01e-6)  # 6 decimals


def test_small_input_pools_like_pytorch(small_export, extractor):
    """A 64 x 64 clip gives a 4 x 4 Mixed_4e map, pooled to 3 x 3 by overlapping adaptive bins:
    the general case of the pooling matrices; motion energy pools 64 to 3 the same way."""
    from stmil.features.motion import motion_energy

    clips = torch.rand(2, 3, 16, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    feats, motion = ExportedModel(small_export, "cpu").features(clips.numpy())
    ref = copy.copy(extractor)
    ref.grid = SMALL.grid
    ref = ref(clips).numpy()
    assert np.linalg.norm(feats - ref) / np.linalg.norm(ref) < 1e-5
    np.testing.assert_allclose(motion, motion_energy(clips, 3), atol=1.01e-6)


@pytest.mark.parametrize("config", [
    {"grid": 7, "gate": True, "motion": True},  # the default detector: both gates
    {"grid": 1, "gate": True, "motion": False},  # frame instances: one score fills the map
    {"grid": 7, "gate": False, "motion": False},  # the paper's method
])
def test_exported_scorer_equals_the_runs_detector(tmp_path, config):
    run = make_run(tmp_path / "run", **config)
    export_model(tmp_path / "x", run)
    detector, exported = Detector.load(run), ExportedDetector.load(tmp_path / "x", "cpu")
    assert exported.config == detector.config
    rng = np.random.default_rng(3)
    x = rng.random((40, 49, 528), dtype=np.float32)  # 40 clips: two chunks of the scorer
    if config["gate"]:
        x = gate_probe(detector.scorer.gate.bank.numpy(), x, rng)
        gate = detector.scorer.gate(torch.from_numpy(x / np.linalg.norm(x, axis=-1,
                                                                        keepdims=True)))
        assert 0.05 < float(((gate > 0) & (gate < 1)).float().mean())  # the gate is exercised
    motion = np.round(rng.uniform(0, 0.1, (40, 49)), 6)
    want, got = detector.maps(x, motion), exported.maps(x, motion)
    assert got.shape == (40, 49) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    if config["grid"] == 1:
        assert (got == got[:, :1]).all()
    if config["motion"]:
        assert (exported.maps(x, np.zeros_like(motion)) == 0).all()
        with pytest.raises(StmilError, match="no motion energy"):
            exported.maps(x, None, where="v.npy")


def test_trained_run_scores_equal_on_its_real_features(gated_run, gated_export):
    from stmil.features.store import load_features, meta_motion

    detector, exported = Detector.load(gated_run), ExportedDetector.load(gated_export, "cpu")
    assert detector.config.gate == "memory" and detector.config.motion == "gate"
    # float32 similarities are off by ~4 ulp(1.0), which the gate divides by hi - lo: this
    # run's gate is narrow (copies of two videos), so PyTorch itself is that far from exact
    lo, hi = detector.scorer.gate.scale.tolist()
    tol = max(1e-5, 4 * 2.0 ** -23 / (hi - lo))
    assert read_manifest(gated_export).data["checked"]["scores_tol"] == pytest.approx(tol)
    feats_dir = gated_run.parent / "feats"
    for npy in sorted(feats_dir.glob("*.npy")):
        x, meta = load_features(feats_dir, npy.stem)
        want = detector.maps(x, meta_motion(meta))
        np.testing.assert_allclose(exported.maps(x, meta_motion(meta)), want, rtol=0, atol=tol)


def test_manifest_says_everything_a_runtime_needs(gated_run, gated_export):
    from stmil.mil.run import load_model
    from stmil.ownership import sha256_of

    m = read_manifest(gated_export)
    d = m.data
    assert (d["format"], d["version"], d["opset"], d["precision"]) == \
        ("stmil-exported-model", 1, 17, "fp32")
    assert d["clips"] == {"clip_len": 16, "stride": 16, "fps": None, "tail": "drop"}
    assert d["preprocess"]["size"] == 64 and d["preprocess"]["crop"] is None
    # (pixel - mean) * scale maps 0 and 255 to -1 and 1
    assert (0 - d["preprocess"]["mean"]) * d["preprocess"]["scale"] == -1.0
    assert (255 - d["preprocess"]["mean"]) * d["preprocess"]["scale"] == 1.0
    f = d["features"]
    assert (f["endpoint"], f["grid"], f["channels"]) == ("Mixed_4e", 7, 528)
    assert f["weights"]["sha256"] == KINETICS400_RGB.sha256
    assert f["sha256"] == sha256_of(gated_export / "features.onnx")
    s = d["scorer"]
    assert s["model_sha256"] == sha256_of(gated_run / "model.safetensors")
    assert s["config"] == load_model(gated_run)[1]
    assert set(s["inputs"]) == {"features", "motion"}
    assert d["checked"]["features_rel_l2"] < 1e-5
    assert d["checked"]["scores_max_abs"] <= d["checked"]["scores_tol"]


def test_a_changed_graph_is_refused(small_export, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(small_export, copy)
    with open(copy / "features.onnx", "r+b") as f:
        f.seek(-10, 2)
        f.write(b"0123456789")
    with pytest.raises(ModelError, match="not the file the manifest records"):
        ExportedModel(copy)
    (copy / MANIFEST).write_text(json.dumps({"format": "other"}))
    with pytest.raises(ModelError, match="not a stmil export manifest"):
        read_manifest(copy)


@pytest.mark.parametrize("block, edit, message", [
    ("features", {"grid": 0}, "features: grid must be a whole number >= 1, got 0"),
    ("features", {"bytes": True}, "features: bytes must be a whole number >= 0, got True"),
    ("clips", {"fps": 0}, "clips: fps must be a number > 0, got 0"),
    ("preprocess", {"size": "224"}, "preprocess: size must be a whole number >= 1, got '224'"),
    ("", {"graph_format": "tflite"}, "graph_format must be one of onnx, openvino, got 'tflite'"),
    ("", {"opset": None}, "opset must be a whole number >= 1, got None"),
])
def test_a_manifest_value_of_the_wrong_kind_is_one_line_naming_file_and_key(
        small_export, tmp_path, monkeypatch, block, edit, message):
    import shutil

    monkeypatch.chdir(tmp_path)
    shutil.copytree(small_export, "copy")
    data = json.loads(Path("copy", MANIFEST).read_text())
    assert read_manifest("copy").data == data  # the oracle: what the writer wrote reads back
    (data[block] if block else data).update(edit)
    Path("copy", MANIFEST).write_text(json.dumps(data | {"a_newer_key": 1}))
    with pytest.raises(ModelError) as info:
        read_manifest("copy", verify=False)
    assert str(info.value) == f"{Path('copy', MANIFEST)}: {message}; export it again with " \
                              "stmil export-model"


@pytest.mark.parametrize("edit, message", [
    ({"hidden": "x"}, "hidden must be a whole number from 1 to 65536, got 'x'"),
    ({"motion": "sometimes"}, "motion must be one of none, gate, got 'sometimes'"),
    ({"in_dim": None}, "in_dim must be a whole number from 1 to 1000000, got None"),
])
def test_an_exported_scorer_config_is_checked_naming_the_manifest(gated_export, tmp_path,
                                                                  monkeypatch, edit, message):
    import shutil

    monkeypatch.chdir(tmp_path)
    shutil.copytree(gated_export, "copy")
    data = json.loads(Path("copy", MANIFEST).read_text())
    data["scorer"]["config"].update(edit)
    Path("copy", MANIFEST).write_text(json.dumps(data))
    with pytest.raises(ModelError) as info:
        ExportedDetector.load("copy", "cpu")
    assert str(info.value) == f"{Path('copy', MANIFEST)}: scorer: config: {message}; export " \
                              "it again with stmil export-model"


def test_a_users_file_is_never_replaced(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "features.onnx").write_bytes(b"mine")
    code, _, err = run_cli(capsys, "export-model", "--out", out, "--format", "onnx")
    assert code == 1
    assert_one_line_error(err, "features.onnx", "not a file stmil wrote")
    assert (out / "features.onnx").read_bytes() == b"mine"
    with pytest.raises(OutputError):
        export_model(out, settings=SMALL)


def test_export_again_replaces_its_own_and_drops_a_stale_scorer(tmp_path, capsys):
    run = make_run(tmp_path / "run", gate=False)
    out = tmp_path / "x"
    code, stdout, _ = run_cli(capsys, "export-model", "--out", out, "--model", run)
    assert code == 0 and "features and scorer exported" in stdout
    assert (out / "scorer.onnx").is_file()
    export_model(out, settings=SMALL)  # features only: the run's scorer must go
    assert not (out / "scorer.onnx").exists()
    assert read_manifest(out).scorer is None
    with pytest.raises(ModelError, match="holds no scorer"):
        ExportedDetector.load(out)


def test_one_line_errors(tmp_path, capsys, gated_run):
    code, _, err = run_cli(capsys, "export-model", "--out", tmp_path / "x", "--model",
                           tmp_path / "nothing")
    assert code == 1
    assert_one_line_error(err, "model.safetensors")
    imported = make_run(tmp_path / "imported", gate=False, motion=False,
                        endpoint="import:rtfm")
    code, _, err = run_cli(capsys, "export-model", "--out", tmp_path / "y", "--model", imported)
    assert code == 1
    assert_one_line_error(err, "imported features")
    code, _, err = run_cli(capsys, "score", tmp_path / "v.mp4", "--model", gated_run, "--out",
                           tmp_path / "s", "--exported", tmp_path)
    assert code == 1
    assert_one_line_error(err, "--exported runs an exported feature graph, which --backend "
                               "torch does not")
    with pytest.raises(ConfigError, match="precision"):
        export_model(tmp_path / "z", precision="int8", settings=SMALL)
    with pytest.raises(ConfigError, match="grid must be"):
        ClipSettings(grid=0)
    # extract's map rule: a 7 x 7 grid does not fit the 4 x 4 map of 64-pixel frames
    with pytest.raises(ConfigError, match="does not fit the 4x4 Mixed_4e feature map"):
        export_model(tmp_path / "w", settings=ClipSettings(size=64))
    assert not (tmp_path / "w").exists()


def test_missing_extra_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    code, _, err = run_cli(capsys, "export-model", "--out", tmp_path / "x")
    assert code == 1
    assert_one_line_error(err, "pip install 'stmil[onnx]'")
    assert not (tmp_path / "x" / "features.onnx").exists()


def test_openvino_export_replaces_the_onnx_one_and_is_verified(tmp_path, capsys):
    from tests.deploy.conftest import require_onnx

    require_onnx(("openvino",))
    run = make_run(tmp_path / "run", gate=True, motion=False, size=64)
    out = tmp_path / "x"
    code, _, err = run_cli(capsys, "export-model", "--out", out, "--model", run)
    assert code == 0, err
    code, stdout, err = run_cli(capsys, "export-model", "--out", out, "--model", run,
                                "--format", "openvino")
    assert code == 0 and "(openvino, from ONNX opset 17" in stdout, err
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == ["features.bin", "features.xml", "manifest.json", "scorer.bin",
                     "scorer.xml"]  # the ONNX graphs of the first export are gone
    m = read_manifest(out)
    assert m.graph_format == "openvino" and m.features["bin"]["file"] == "features.bin"
    assert m.data["checked"]["openvino_features_rel_l2"] < 1e-5
    assert m.data["checked"]["openvino_scores_max_abs"] <= m.data["checked"]["scores_tol"]
    x = np.abs(np.random.default_rng(1).normal(size=(3, 49, 528))).astype(np.float32)
    want = Detector.load(run).maps(x)
    np.testing.assert_allclose(ExportedDetector.load(out).maps(x), want, rtol=0, atol=1e-5)
    with pytest.raises(ConfigError, match="--backend onnxruntime does not run"):
        ExportedModel(out, "cpu", "onnxruntime")
    with open(out / "features.bin", "r+b") as f:  # the weights are verified like the graph
        f.seek(-4, 2)
        f.write(b"\0\1\2\3")
    with pytest.raises(ModelError, match="features.bin: not the file the manifest records"):
        ExportedModel(out)


def test_int8_quantises_on_calibration_videos_and_reports_its_error(tmp_path, capsys):
    from stmil.deploy.quantize import calibration_clips
    from stmil.features.motion import motion_energy
    from tests.conftest import write_video
    from tests.deploy.conftest import require_onnx
    from tests.live.scene import scene_frames

    code, _, err = run_cli(capsys, "export-model", "--out", tmp_path / "a", "--precision",
                           "int8", "--calibration", "v.mkv")
    assert code == 1 and "add --format openvino --calibration VIDEOS" in err
    code, _, err = run_cli(capsys, "export-model", "--out", tmp_path / "b", "--calibration",
                           "v.mkv")
    assert code == 1 and "--calibration is for --precision int8" in err
    require_onnx(("openvino", "nncf"))
    video = write_video(tmp_path / "v.mkv", scene_frames(64, [(16, 48)], 7))
    m = export_model(tmp_path / "int8", format="openvino", precision="int8", settings=SMALL,
                     calibration=[video])
    checked = m.data["checked"]
    print("int8 vs PyTorch fp32 on the calibration clips (relative L2):", checked)
    assert m.data["precision"] == "int8"
    assert 1e-3 < checked["int8_features_rel_l2"] <= checked["int8_features_rel_l2_max"] < 0.5
    clips = calibration_clips([video], SMALL)
    assert len(clips) == 4  # every clip of the video (64 frames)
    feats, motion = ExportedModel(tmp_path / "int8").features(clips)
    assert feats.shape == (4, 9, 528)
    np.testing.assert_allclose(motion, motion_energy(torch.from_numpy(clips), 3), rtol=0,
                               atol=1.01e-6)  # the motion branch stays fp32
