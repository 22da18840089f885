"""ONNX Runtime CPU against PyTorch CPU: seconds per clip of the exported feature extractor.

Model only: each row runs one backend on a batch of REAL clips already in memory (consecutive
16 x 224 x 224 clips of ``data/vtest.avi``, decoded and resized as ``stmil extract`` does,
repeated when the batch is bigger than the video): ``warmup`` untimed calls, then ``repeat``
timed calls; s/clip is the median call time over the batch size. Every row includes the cuboid
pooling (both backends return ``(B, 49, 528)``), and its relative L2 error against PyTorch fp32
is measured on the same clips.

- ``torch-fp32``: :class:`stmil.features.extract.FeatureExtractor` on the CPU (BatchNorm folded,
  fused 1x1 convolutions, channels_last_3d), what ``stmil extract`` runs.
- ``ort-fp32`` / ``ort-fp16``: ``features.onnx`` of ``stmil export-model`` (``--precision``),
  ONNX Runtime's CPU provider, default session options (all graph optimisations, one thread
  per physical core).
- ``ov-fp32`` (when ``openvino`` is installed): ``stmil export-model --format openvino``, run by
  OpenVINO's CPU plugin with ``INFERENCE_PRECISION_HINT=f32`` (its default on a CPU with bf16
  would be bf16), as ``--backend openvino`` runs it.
- ``ov-int8`` (``--int8``, with ``nncf``): ``--precision int8 --calibration data/vtest.avi``
  (NNCF on the first 32 clips of vtest.avi, which are also among the clips measured).

End to end (``--e2e``): ``stmil score data/vtest.avi`` in-process with ``--backend torch``,
``--backend onnxruntime`` and ``--backend openvino`` on a run made here (a random scorer with
both gates, input 224), decoding included: wall time over the clips scored, and the largest
difference of the per-frame scores.

    nice -n 10 .venv/bin/python benchmarks/export_model.py --batch 1 8 --repeat 3 --e2e \\
        --int8 --json benchmarks/export_model_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
        flags = out.split("Flags:", 1)[1] if "Flags:" in out else ""
        return f"{name} ({'AMX' if 'amx_tile' in flags else 'no AMX'}, {torch.get_num_threads()}" \
               f" threads)"
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def real_clips(n: int) -> torch.Tensor:
    from stmil.features.video import iter_clips

    batch = next(iter_clips(ROOT / "data" / "vtest.avi", 16, 16, 224, batch_size=n))
    x = batch.clips
    return x.repeat((n + len(x) - 1) // len(x), 1, 1, 1, 1)[:n]


def timed(fn, x, warmup: int, repeat: int) -> tuple[float, np.ndarray]:
    for _ in range(warmup):
        out = fn(x)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times), np.asarray(out)


def model_rows(batches: list[int], warmup: int, repeat: int, folder: Path,
               int8: bool = False) -> list[dict]:
    from stmil.deploy.export import export_model
    from stmil.deploy.runtime import ExportedModel
    from stmil.features.extract import FeatureExtractor

    torch_fx = FeatureExtractor(device="cpu")
    backends = {"torch-fp32": lambda x: torch_fx(x).numpy()}
    for precision in ("fp32", "fp16"):
        export_model(folder / precision, precision=precision)
        model = ExportedModel(folder / precision, "cpu")
        backends[f"ort-{precision}"] = lambda x, m=model: m.features(x.numpy())[0]
    try:
        import openvino  # noqa: F401
    except ImportError:
        print("openvino is not installed: no ov rows")
    else:
        for precision in ("fp32", "int8") if int8 else ("fp32",):
            calibration = [ROOT / "data" / "vtest.avi"] if precision == "int8" else None
            export_model(folder / f"ov-{precision}", format="openvino", precision=precision,
                         calibration=calibration)
            model = ExportedModel(folder / f"ov-{precision}", "cpu")
            backends[f"ov-{precision}"] = lambda x, m=model: m.features(x.numpy())[0]
    rows = []
    for b in batches:
        x = real_clips(b)
        ref = None
        for name, fn in backends.items():
            sec, out = timed(fn, x, warmup, repeat)
            ref = out if ref is None else ref
            err = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
            rows.append({"backend": name, "batch": b, "s_per_clip": sec / b, "rel_l2": err})
            print(f"{name:11s} batch {b}: {sec / b:.3f} s/clip, rel L2 {err:.1e}", flush=True)
    return rows


def e2e_rows(folder: Path, int8: bool = False) -> list[dict]:
    from stmil.deploy.export import export_model
    from stmil.score import score_inputs
    from tests.deploy.conftest import make_run

    run = make_run(folder / "run", size=224)
    export_model(folder / "exported", run)
    exports = [("torch", run), ("onnxruntime", folder / "exported")]
    try:
        import openvino  # noqa: F401
    except ImportError:
        pass
    else:
        export_model(folder / "exported-ov", run, format="openvino")
        exports.append(("openvino", folder / "exported-ov"))
        if int8:
            export_model(folder / "exported-int8", run, format="openvino", precision="int8",
                         calibration=[ROOT / "data" / "vtest.avi"])
            exports.append(("openvino-int8", folder / "exported-int8"))
    got, rows = {}, []
    for backend, model in exports:
        t = time.perf_counter()
        score_inputs([ROOT / "data" / "vtest.avi"], model, folder / backend, device="cpu",
                     progress=False, backend=backend.removesuffix("-int8"))
        sec = time.perf_counter() - t
        got[backend] = json.loads((folder / backend / "vtest.scores.json").read_text())
        n = len(got[backend]["clip_maps"])
        rows.append({"backend": backend, "clips": n, "s_per_clip": sec / n})
        print(f"score --backend {backend}: {n} clips, {sec / n:.3f} s/clip", flush=True)
    for backend in list(got)[1:]:
        diff = float(np.abs(np.subtract(got["torch"]["frame_scores"],
                                        got[backend]["frame_scores"])).max())
        print(f"largest per-frame score difference, {backend} vs torch: {diff:.1e}")
        rows.append({"backend": backend, "frame_score_max_abs_diff": diff})
    return rows


def table(rows: list[dict]) -> str:
    """One markdown table: s/clip of each backend, model only per batch and end to end."""
    batches = sorted({r["batch"] for r in rows if "batch" in r})
    e2e = {{"torch": "torch-fp32", "onnxruntime": "ort-fp32", "openvino": "ov-fp32",
             "openvino-int8": "ov-int8"}[
        r["backend"]]: r["s_per_clip"] for r in rows if "clips" in r}
    names = list(dict.fromkeys(r["backend"] for r in rows if "batch" in r))
    head = ["backend", *[f"model, batch {b}" for b in batches], "rel L2 vs torch fp32",
            "score vtest.avi end to end"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        cells = {r["batch"]: r for r in rows if r.get("backend") == name and "batch" in r}
        err = max(r["rel_l2"] for r in cells.values())
        out.append("| " + " | ".join([name, *[f"{cells[b]['s_per_clip']:.3f}" if b in cells
                                               else "-" for b in batches], f"{err:.1e}",
                                          f"{e2e[name]:.3f}" if name in e2e else "-"]) + " |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--e2e", action="store_true", help="also stmil score on vtest.avi")
    p.add_argument("--int8", action="store_true", help="also OpenVINO int8 (needs nncf)")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args()
    import onnxruntime

    try:
        from openvino import __version__ as ov_version
    except ImportError:
        ov_version = "absent"
    print(f"{cpu_name()}; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"openvino {ov_version}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = model_rows(args.batch, args.warmup, args.repeat, Path(tmp), args.int8)
        if args.e2e:
            rows += e2e_rows(Path(tmp), args.int8)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_name(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
