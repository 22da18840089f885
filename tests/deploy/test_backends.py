"""``--backend onnxruntime`` on ``extract`` and ``watch``: the same decoding, clips and files
through an exported feature graph (``--exported DIR`` or one exported into stmil's cache), the
feature files' ``backend`` and its mixing rule, the numpy resize of runtimes without PyTorch,
and ``watch`` on an export folder without importing PyTorch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stmil.datasets import VideoRecord
from stmil.features.store import FeatureError, load_dataset_features
from tests.conftest import require_vtest, run_cli, write_video
from tests.live.scene import scene_frames


def _video(folder: Path, name: str = "v.mkv", seed: int = 3) -> Path:
    return write_video(folder / name, scene_frames(48, [(16, 32)], seed))


def test_numpy_resize_matches_pytorch_on_vtest():
    """The resize of a runtime without PyTorch against the one definition, on real frames:
    float32 rounding alone (measured: max 4.8e-7, 95% of values bitwise equal)."""
    import av

    from stmil.deploy.preprocess import resize_frames as numpy_resize
    from stmil.features.resize import resize_frames as torch_resize

    with av.open(str(require_vtest())) as c:
        frames = np.stack([f.to_ndarray(format="rgb24")
                           for _, f in zip(range(16), c.decode(video=0))])
    for size in (224, 64, 100):
        a, b = numpy_resize(frames, size), torch_resize(frames, size).numpy()
        assert a.shape == b.shape == (16, 3, size, size) and a.dtype == np.float32
        assert np.abs(a - b).max() <= 1e-6, (size, np.abs(a - b).max())
        assert (a == b).mean() > 0.5
    small = frames[:2, :100, :150]  # upscaling: plain bilinear
    assert np.abs(numpy_resize(small, 224) - torch_resize(small, 224).numpy()).max() <= 1e-6
    same = frames[:2, :224, :224]  # no resize at all: the scaling alone, bitwise
    assert (numpy_resize(same, 224) == torch_resize(same, 224).numpy()).all()


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_extract_backend_matches_torch_and_never_mixes(backend, tmp_path, monkeypatch, capsys):
    from tests.deploy.conftest import require_onnx

    require_onnx(("openvino",) if backend == "openvino" else ())
    monkeypatch.chdir(tmp_path)
    _video(tmp_path)
    common = ["--size", "64", "--grid", "4", "--device", "cpu", "--quiet", "--workers", "0"]
    code, _, err = run_cli(capsys, "extract", "v.mkv", "--out", "ort", "--backend", backend,
                           *common)
    assert code == 0, err
    code, _, err = run_cli(capsys, "extract", "v.mkv", "--out", "pt", *common)
    assert code == 0, err
    ort, pt = (json.loads(Path(d, "v.json").read_text()) for d in ("ort", "pt"))
    assert ort.pop("backend") == backend and "backend" not in pt
    for key in ("npy_bytes", "npy_sha256"):
        ort.pop(key), pt.pop(key)
    assert ort == pt  # same clips, settings, source and motion energy (computed by stmil)
    a, b = (np.load(Path(d, "v.npy")).astype(np.float32) for d in ("ort", "pt"))
    rel = np.linalg.norm(a - b) / np.linalg.norm(b)
    print(f"{backend} vs torch, stored float16 features: relative L2 {rel:.1e}")
    assert rel <= 1e-3, rel  # fp32 features ~1e-6 apart, stored in float16: a few flips at most
    fmt = {"onnxruntime": "onnx", "openvino": "openvino"}[backend]
    cached = list((Path(os.environ["STMIL_CACHE"]) / "exported").glob(f"*-s64-t16-fp32-{fmt}-*"))
    assert len(cached) == 1 and (cached[0] / "manifest.json").is_file()
    # resume with the other backend: refused, naming the setting
    code, _, err = run_cli(capsys, "extract", "v.mkv", "--out", "ort", *common)
    assert code == 1 and f"backend {backend!r} (now None)" in err, err
    # a folder that mixes them (--overwrite of one video) is refused by every reader
    _video(tmp_path, "w.mkv", seed=4)
    code, _, err = run_cli(capsys, "extract", "w.mkv", "--out", "ort", "--backend", backend,
                           *common)
    assert code == 0, err
    code, _, err = run_cli(capsys, "extract", "v.mkv", "--out", "ort", "--overwrite", *common)
    assert code == 0, err
    records = [VideoRecord("v", 0), VideoRecord("w", 0)]
    with pytest.raises(FeatureError, match="disagree on backend"):
        load_dataset_features(records, "ort")


def test_extract_backend_refusals(tmp_path, monkeypatch, capsys, export_224):
    monkeypatch.chdir(tmp_path)
    _video(tmp_path)
    for args, says in (
        (["--exported", str(export_224)], "--exported runs an exported feature graph"),
        (["--backend", "onnxruntime", "--exported", str(export_224), "--size", "112"],
         "not the endpoint Mixed_4e, grid 7, size 112, clip_len 16 asked for"),
        (["--backend", "onnxruntime", "--precision", "bf16"], "--precision bf16 is PyTorch's"),
        (["--backend", "onnxruntime", "--exported", "nowhere"], "nowhere: no manifest.json"),
    ):
        code, _, err = run_cli(capsys, "extract", "v.mkv", "--out", "f", "--device", "cpu",
                               "--quiet", *args)
        assert code != 0 and says in err and len(err.strip().splitlines()) == 1, (args, err)
        assert not Path("f", "v.npy").exists()


def _watch_lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_watch_exported_model_imports_no_torch(gated_run, gated_export, tmp_path, request):
    """``watch --backend onnxruntime`` (and ``openvino``) on an export folder scores a file's
    clips with numpy and the runtime alone, and reports what the PyTorch run reports."""
    from tests.deploy.conftest import require_onnx

    frames = scene_frames(96, [(20, 76)], 5)
    video = write_video(tmp_path / "cam.mkv", frames)
    code = ("import json, sys\n"
            "from stmil.cli import main\n"
            "code = main(sys.argv[1:])\n"
            "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules}))\n")
    runs = [("torch", gated_run), ("onnxruntime", gated_export)]
    try:
        require_onnx(("openvino",))
        runs.append(("openvino", request.getfixturevalue("gated_export_openvino")))
    except pytest.skip.Exception:
        pass  # outside CI without openvino: the ONNX Runtime half alone
    got = {}
    for backend, model in runs:
        log = tmp_path / f"{backend}.jsonl"
        proc = subprocess.run(
            [sys.executable, "-c", code, "watch", video.name, "--model", str(model),
             "--backend", backend, "--device", "cpu", "--out", log.name, "--heartbeat", "0",
             "--update", "0", "--threshold", "0.0", "--min-duration", "0"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300)
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["code"] == 0, proc.stderr
        assert result["torch"] is (backend == "torch"), (backend, proc.stderr)
        assert " 6 clips scored" in proc.stderr, proc.stderr
        got[backend] = _watch_lines(log)
    a = got.pop("torch")
    for backend, b in got.items():
        assert [x["type"] for x in a] == [x["type"] for x in b] and b, backend
        for x, y in zip(a, b):
            for key in ("start_frame", "end_frame", "id"):
                assert x.get(key) == y.get(key), (backend, key)
            assert abs(x["peak_score"] - y["peak_score"]) <= 1e-4, backend
