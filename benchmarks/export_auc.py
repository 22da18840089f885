"""What an exported feature graph's precision costs in detection quality, on the demo.

The demo's default run (``runs/weak-cuboid-mil``, trained on PyTorch fp32 features) is
evaluated on its test split with features of its test videos extracted through each exported
graph: ONNX Runtime fp32 (the control: it must give the table's numbers), ONNX Runtime fp16
(``stmil export-model --precision fp16``) and OpenVINO int8 (``--format openvino --precision
int8``, NNCF-calibrated on the demo's first training videos, as a user calibrates on clips of
their own cameras, never on the test videos). For each it prints the features' relative L2
error against the demo's PyTorch fp32 features (over every test clip) and the metrics of
``stmil evaluate`` beside the demo's own (the run folder is copied: its ``metrics.json`` stays
as it was).

    python benchmarks/export_auc.py --demo demo-out [--calibration 4]

(``stmil demo --out demo-out`` first: about 8 minutes on 2 cores.)
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

METRICS = ("frame_auc", "frame_ap", "cuboid_auc", "pixel_auroc", "pointing_accuracy")
VARIANTS = (("ort-fp32", "onnxruntime", "onnx", "fp32"),
            ("ort-fp16", "onnxruntime", "onnx", "fp16"),
            ("ov-int8", "openvino", "openvino", "int8"))


def features_error(ours: Path, reference: Path, ids: list[str]) -> float:
    """Relative L2 of every clip's features over ``ids``, against ``reference``."""
    num = den = 0.0
    for vid in ids:
        a = np.load(ours / f"{vid}.npy").astype(np.float64)
        b = np.load(reference / f"{vid}.npy").astype(np.float64)
        num += float(((a - b) ** 2).sum())
        den += float((b ** 2).sum())
    return (num / den) ** 0.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", type=Path, default=Path("demo-out"))
    ap.add_argument("--calibration", type=int, default=4,
                    help="training videos that calibrate int8 (default 4)")
    args = ap.parse_args()
    from stmil.datasets import load_dataset
    from stmil.deploy.backend import feature_extractor
    from stmil.deploy.export import ClipSettings, export_model
    from stmil.evaluation.evaluate import evaluate
    from stmil.features.extract import ExtractSettings, extract_many
    from stmil.mil.detector import Detector

    data, reference = args.demo / "data", args.demo / "features"
    run = args.demo / "runs" / "weak-cuboid-mil"
    test = load_dataset(data, "test")
    train_videos = [r.path for r in load_dataset(data, "train")][: args.calibration]
    ids = [r.video_id for r in test]
    detector = Detector.load(run)
    c, clips = detector.config, ClipSettings.of_run(detector)
    settings = ExtractSettings(c.clip_len, c.stride, c.size, c.recorded.get("resample_fps"),
                               c.tail)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = {"torch-fp32 (the demo)": (0.0, evaluate(data, reference,
                                                        _copy(run, tmp / "torch")).result)}
        for name, backend, fmt, precision in VARIANTS:
            t = time.perf_counter()
            exported = tmp / f"export-{name}"
            export_model(exported, format=fmt, precision=precision, settings=clips,
                         calibration=train_videos if precision == "int8" else None)
            extractor = feature_extractor(backend, exported, c.endpoint, c.feature_grid,
                                          c.size, c.clip_len, "cpu")
            feats = tmp / f"features-{name}"
            extract_many([r.path for r in test], feats, extractor, settings, progress=False)
            err = features_error(feats, reference, ids)
            result = evaluate(data, feats, _copy(run, tmp / f"run-{name}")).result
            rows[name] = (err, result)
            print(f"{name}: {len(ids)} test videos, rel L2 {err:.2e}, frame AUC "
                  f"{result['frame_auc']:.4f} ({time.perf_counter() - t:.0f} s)", flush=True)
    base = rows["torch-fp32 (the demo)"][1]
    print("| features | rel L2 vs torch fp32 | " + " | ".join(METRICS) + " |")
    print("|---|---:|" + "---:|" * len(METRICS))
    for name, (err, result) in rows.items():
        cells = [f"{result[m]:.4f} ({result[m] - base[m]:+.4f})" for m in METRICS]
        print(f"| {name} | {err:.1e} | " + " | ".join(cells) + " |")


def _copy(run: Path, where: Path) -> Path:
    """A copy of the run folder under ``where`` (evaluate writes its metrics.json there)."""
    shutil.copytree(run, where / run.name)
    return where / run.name


if __name__ == "__main__":
    main()
