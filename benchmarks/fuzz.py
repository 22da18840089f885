"""A hostile-input fuzzer for the stmil CLI (issue 22, "A fuzzer of our own").

Each case is drawn from ``(seed, index)`` alone, so any case can be replayed: mutated videos
(truncated, bit-flipped headers and payloads, wrong containers, odd sizes, rotation metadata,
10-bit), mutated feature / scores / run / config / dataset / import files, random flag values
(nan, inf, -1, 0, huge, wrong types) and user files with stmil's names planted in output folders.
Each case runs one command through ``stmil.cli.main(argv)`` in a worker process, with stdout and
stderr captured and a time limit, and is counted as:

- ``traceback``: an exception escaped ``main``, or "Traceback" was printed;
- ``hang``: the time limit was hit and the command committed nothing in a further grace period
  (soft: ``signal.alarm`` in the worker; hard: the worker is killed and restarted);
- ``long`` (not a defect, listed): the time limit was hit while the command was still writing
  its outputs (more files or bytes under them at the end of the grace period than at its
  start): real work the case asked for, such as ``synth --videos 1000`` or ``extract /``;
- ``crash``: the worker process died (a signal, the memory limit);
- ``no_error_line``: a non-zero exit without an ``error:`` line on stderr;
- ``not_owned``: a file the run did not own was changed, deleted or created. A run owns files
  under its outputs (``--out``, ``--json``, ``--snapshots``, ``--clips``, the run folder that
  calibrate / evaluate write into) that are new, or that the folder's ledger
  (``.stmil/ledger.json`` and its journal) named with their current bytes when the case began;
  every other file in the case folder (inputs, and user files planted in output folders) is
  the user's.

Usage::

    python benchmarks/fuzz.py --seed 0 --cases 10000 --minutes 25 --json fuzz.json
    python benchmarks/fuzz.py --replay 0:123          # one case, verbose, its folder kept
    python benchmarks/fuzz.py --replay 0:123 --show   # only print the case (argv, mutations)

The workspace (4 tiny synth videos of 32 frames, their features at ``--size 64 --grid 2``, a
5-iteration run, one scores file, odd videos written with PyAV, foreign features) is built once
under ``--workdir`` and reused while its marker file is there; every case copies it into a fresh
case folder and mutates the copy.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import sys
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

SOFT_LIMIT = 20.0  # seconds a case may run before it counts as a hang (or as long)
GRACE = 20.0  # after the soft limit: seconds in which a command must commit more to be "long"
HARD_EXTRA = GRACE + 25.0  # the worker is killed this much after the soft limit
MEMORY_LIMIT = 6 << 30  # address space of a worker (a 931 GiB allocation fails, not thrashes)
BASE_MARKER = "fuzz-base-v2.done"  # v2: rotation in the tkhd matrix
IDS = ["Fire001_x264", "Normal_Videos_001_x264", "Normal_Videos_002_x264", "Vandalism001_x264"]
TRAIN_TINY = ["--iterations", "3", "--batch-anomalous", "1", "--batch-normal", "1",
              "--hidden", "8", "--mid", "4", "--checkpoint-every", "2", "--device", "cpu"]
EXTRACT_TINY = ["--size", "64", "--grid", "2", "--device", "cpu", "--workers", "0"]


# ----------------------------------------------------------------------------- the workspace

def _write_video(path: Path, codec: str, w: int, h: int, n: int, fps, pix_fmt: str,
                 rotate: int | None = None, seed: int = 0) -> None:
    import av
    import numpy as np

    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        for i in range(n):
            img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            img[:, : (i * 4) % max(w, 1)] = 200
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    if rotate is not None:
        _rotate_mp4(path, rotate)


def _rotate_mp4(path: Path, degrees: int) -> None:
    """Give an MP4's video track a display rotation by writing its ``tkhd`` matrix (what a
    phone does; PyAV's ``rotate`` stream metadata is dropped by FFmpeg's MP4 muxer)."""
    import struct

    one, minus = 0x00010000, 0xFFFF0000
    a, b, c, d = {90: (0, one, minus, 0), -90: (0, minus, one, 0), 270: (0, minus, one, 0),
                  180: (minus, 0, 0, minus)}[degrees]
    data = bytearray(path.read_bytes())
    i = data.index(b"tkhd") + 4
    version = data[i]
    matrix = i + (52 if version == 1 else 40)
    data[matrix:matrix + 36] = struct.pack(">9I", a, b, 0, c, d, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))


def _variants(out: Path) -> None:
    """Videos of odd formats, each written once; a failing variant is simply left out."""
    from fractions import Fraction

    specs = {
        "odd17x9.mkv": ("ffv1", 17, 9, 20, 30, "yuv420p"),
        "tiny2x2.mkv": ("ffv1", 2, 2, 20, 30, "yuv420p"),
        "one1x1.avi": ("rawvideo", 1, 1, 20, 30, "bgr24"),
        "thin640x8.mkv": ("ffv1", 640, 8, 20, 30, "yuv420p"),
        "tall8x480.mkv": ("ffv1", 8, 480, 20, 30, "yuv420p"),
        "tenbit.mp4": ("libx264", 64, 48, 24, 30, "yuv420p10le"),
        "tenbit_ffv1.mkv": ("ffv1", 64, 48, 24, 30, "yuv420p10le"),
        "hevc10.mp4": ("libx265", 64, 48, 20, 30, "yuv420p10le"),
        "rot90.mp4": ("libx264", 64, 48, 24, 30, "yuv420p", 90),
        "rot270.mp4": ("libx264", 48, 64, 24, 30, "yuv420p", -90),
        "onefr.mp4": ("libx264", 64, 48, 1, 30, "yuv420p"),
        "zerofr.mp4": ("libx264", 64, 48, 0, 30, "yuv420p"),
        "fps1000.mkv": ("ffv1", 32, 32, 40, 1000, "yuv420p"),
        "fpsfrac.mp4": ("libx264", 64, 48, 24, Fraction(30000, 1001), "yuv420p"),
        "fpslow.mkv": ("ffv1", 32, 32, 20, Fraction(1, 3), "yuv420p"),
        "anim.gif": ("gif", 48, 32, 20, 10, "pal8"),
        "mjpeg.avi": ("mjpeg", 64, 48, 20, 25, "yuvj420p"),
        "vp9.webm": ("libvpx-vp9", 64, 48, 20, 30, "yuv420p"),
        "gray.mkv": ("ffv1", 32, 32, 20, 30, "gray"),
        "rgba.mkv": ("ffv1", 32, 32, 20, 30, "bgra"),
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, spec in specs.items():
        try:
            _write_video(out / name, *spec)
        except Exception:
            (out / name).unlink(missing_ok=True)
    (out / "audio_only.mp4").write_bytes(b"")  # replaced below where PyAV can write audio
    try:
        import av
        import numpy as np
        with av.open(str(out / "audio_only.mp4"), "w") as c:
            s = c.add_stream("aac", rate=8000)
            for i in range(10):
                f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                               layout="mono")
                f.sample_rate = 8000
                f.pts = i * 1024
                for p in s.encode(f):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
    except Exception:
        (out / "audio_only.mp4").unlink(missing_ok=True)
    (out / "text.mp4").write_text("this is not a video\n")
    (out / "empty.mp4").write_bytes(b"")
    (out / "random.mp4").write_bytes(random.Random(0).randbytes(5000))
    (out / "png.mp4").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))


def _imports(out: Path) -> None:
    """Foreign features: RTFM (T, 10, D), UR-DMU crops, Sultani 32-line text, lists, counts."""
    import numpy as np

    rng = np.random.default_rng(0)
    (out / "rtfm").mkdir(parents=True)
    (out / "urdmu").mkdir()
    (out / "sultani").mkdir()
    for vid in IDS:
        np.save(out / "rtfm" / f"{vid}_i3d.npy", rng.random((3, 10, 16), np.float32))
        for k in range(2):
            np.save(out / "urdmu" / f"{vid}__{k}.npy", rng.random((3, 12), np.float32))
        np.savetxt(out / "sultani" / f"{vid}_c3d.txt", rng.random((32, 8)), fmt="%.5f")
    (out / "rtfm.list").write_text("".join(f"rtfm/{v}_i3d.npy\n" for v in IDS))
    (out / "urdmu.list").write_text("".join(f"urdmu/{v}__{k}.npy\n" for v in IDS
                                            for k in range(2)))
    (out / "counts.txt").write_text("".join(f"{v} 40\n" for v in IDS))
    (out / "sultani_counts.txt").write_text("".join(f"{v} 600\n" for v in IDS))


def build_base(base: Path) -> None:
    """The workspace every case starts from (about 2 MB)."""
    from stmil.cli import main

    if (base / BASE_MARKER).exists():
        return
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    cwd = os.getcwd()
    os.chdir(base)
    try:
        steps = [
            ["synth", "--out", "synth", "--videos", "4", "--frames", "32", "--seed", "0",
             "--quiet"],
            ["extract", "synth/videos", "--out", "feats", *EXTRACT_TINY, "--quiet"],
            ["train", "--data", "synth", "--features", "feats", "--out", "run", *TRAIN_TINY,
             "--quiet"],
            ["score", f"feats/{IDS[0]}.npy", "--model", "run", "--out", "scores", "--quiet",
             "--device", "cpu"],
        ]
        for argv in steps:
            rc = main(argv)
            if rc != 0:
                raise SystemExit(f"building the workspace: stmil {' '.join(argv)} -> {rc}")
        shutil.copytree("run", "run_cal", symlinks=True)
        main(["calibrate", "run_cal", "--data", "synth", "--features", "feats", "--quiet"])
        _variants(base / "variants")
        _imports(base / "imports")
    finally:
        os.chdir(cwd)
    (base / BASE_MARKER).write_text("ok\n")


# ----------------------------------------------------------------------------- mutations

NUM_BAD = ["nan", "inf", "-inf", "-1", "0", "1e30", "1e308", "-1e30", "1e-320", "1000000000000",
           "-0", "abc", "", "0x10", " 7", "2.5", "1e3", "99999999999999999999", "-2147483649",
           "1", "2", "0.5", "NaN", "Infinity", "1_000", "٣"]
JSON_BAD = [None, True, False, -1, 0, 1, 1e308, -1e308, float("nan"), float("inf"), "x", "", [],
            {}, "NaN", 2 ** 63, -(2 ** 63), 1.5, [1, 2], [[0, 1], [2]], {"a": 1}, 10 ** 12, -0.0,
            "../../etc/passwd", "\u202e", 1e-320]
YAML_BAD_VALUES = ["nan", ".nan", ".inf", "-.inf", "-1", "0", "1e30", "null", "~", "true", "[]",
                   "{}", "abc", "'5'", "1e400", "99999999999999999999", "0x10", "0o17", "2.5",
                   "[1, 2]", "!!python/object/apply:os.system ['true']", "*undefined",
                   "'', ", "\"\\x00\""]


@dataclass
class Case:
    """One drawn case: how its folder is made from the workspace and the argv it runs."""

    seed: int
    index: int
    family: str
    command: str
    argv: list[str]
    outs: list[str]  # outputs this run owns (folders or files), relative to the case folder
    steps: list[str] = field(default_factory=list)  # what was done to the copy, for the report
    planted: list[str] = field(default_factory=list)  # user files planted in output folders


class Mut:
    """Byte and structure mutations of files in the case folder, each logged in ``steps``."""

    def __init__(self, rng: random.Random, root: Path, steps: list[str]) -> None:
        self.rng, self.root, self.steps = rng, root, steps

    def bytes_(self, rel: str, header: int = 0) -> None:
        """A byte-level mutation of ``rel``: truncate, flip bits (in the first ``header`` bytes
        or anywhere), zero a range, append junk, empty, duplicate a range."""
        p = self.root / rel
        data = bytearray(p.read_bytes()) if p.exists() else bytearray()
        rng = self.rng
        kind = rng.choice(["truncate", "flip_header", "flip_payload", "zero", "append", "empty",
                           "dup", "flip_many", "truncate_tiny", "swap"])
        n = len(data)
        if n == 0:
            kind = "append"
        if kind == "truncate":
            cut = rng.randrange(0, n)
            data = data[:cut]
            desc = f"truncate {rel} to {cut} of {n} bytes"
        elif kind == "truncate_tiny":
            cut = min(n, rng.choice([1, 4, 8, 12, 16, 32, 64]))
            data = data[:cut]
            desc = f"truncate {rel} to {cut} bytes"
        elif kind in ("flip_header", "flip_payload", "flip_many"):
            lo, hi = (0, min(n, header or 256)) if kind == "flip_header" else (0, n)
            if kind == "flip_payload" and header and n > header:
                lo = header
            flips = []
            for _ in range(rng.randint(1, 40 if kind == "flip_many" else 4)):
                i = rng.randrange(lo, hi)
                b = rng.randrange(8)
                data[i] ^= 1 << b
                flips.append(f"{i}.{b}")
            desc = f"flip bits of {rel} at {','.join(flips)}"
        elif kind == "zero":
            a = rng.randrange(0, n)
            b = min(n, a + rng.choice([1, 16, 256, 4096, n]))
            data[a:b] = bytes(b - a)
            desc = f"zero {rel}[{a}:{b}]"
        elif kind == "append":
            junk = rng.randbytes(rng.choice([1, 100, 5000]))
            data += junk
            desc = f"append {len(junk)} random bytes to {rel}"
        elif kind == "empty":
            data = bytearray()
            desc = f"empty {rel}"
        elif kind == "dup":
            a = rng.randrange(0, n)
            b = min(n, a + rng.randrange(1, 2000))
            data[b:b] = data[a:b]
            desc = f"duplicate {rel}[{a}:{b}]"
        else:
            a, b = sorted(rng.randrange(0, n) for _ in range(2))
            data = data[b:] + data[a:b] + data[:a]
            desc = f"rotate {rel} at {a},{b}"
        p.write_bytes(bytes(data))
        self.steps.append(desc)

    def json_(self, rel: str) -> None:
        p = self.root / rel
        rng = self.rng
        try:
            doc = json.loads(p.read_text())
        except Exception:
            return self.bytes_(rel)
        kind = rng.choice(["value", "value", "value", "delete", "add", "raw", "top", "nest"])
        if kind in ("value", "delete"):
            paths = list(_json_paths(doc))
            if not paths:
                kind = "top"
            else:
                path = rng.choice(paths)
                parent = doc
                for k in path[:-1]:
                    parent = parent[k]
                if kind == "delete" and isinstance(parent, dict):
                    del parent[path[-1]]
                    self.steps.append(f"delete {rel}:{'/'.join(map(str, path))}")
                else:
                    v = rng.choice(JSON_BAD)
                    parent[path[-1]] = v
                    self.steps.append(f"set {rel}:{'/'.join(map(str, path))} = {v!r}")
        if kind == "add" and isinstance(doc, dict):
            doc[rng.choice(["extra", "schema_version", "__proto__", "grid", "n_clips"])] = \
                rng.choice(JSON_BAD)
            self.steps.append(f"add a key to {rel}")
        if kind == "top":
            doc = rng.choice([[], None, "x", 5, [doc], {}])
            self.steps.append(f"replace {rel} by {json.dumps(doc)[:40]}")
        if kind == "nest":
            depth = rng.choice([200, 5000, 100000])
            p.write_text("[" * depth + "]" * depth)
            self.steps.append(f"{rel} = {depth} nested lists")
            return
        if kind == "raw":
            return self.bytes_(rel)
        p.write_text(json.dumps(doc))

    def yaml_(self, rel: str) -> None:
        p = self.root / rel
        rng = self.rng
        lines = p.read_text().splitlines() if p.exists() else []
        kind = rng.choice(["value", "value", "value", "delete", "dup", "unknown", "raw", "bomb",
                           "top", "tag"])
        if kind == "value" and lines:
            i = rng.randrange(len(lines))
            key = lines[i].split(":", 1)[0]
            v = rng.choice(YAML_BAD_VALUES)
            lines[i] = f"{key}: {v}"
            self.steps.append(f"set {rel}:{key} = {v}")
        elif kind == "delete" and lines:
            i = rng.randrange(len(lines))
            self.steps.append(f"delete line {lines[i]!r} of {rel}")
            del lines[i]
        elif kind == "dup" and lines:
            i = rng.randrange(len(lines))
            key = lines[i].split(":", 1)[0]
            alt = key.replace("_", "-") if "_" in key else key
            lines.append(f"{alt}: {rng.choice(YAML_BAD_VALUES)}")
            self.steps.append(f"repeat key {alt} in {rel}")
        elif kind == "unknown":
            lines.append(f"{rng.choice(['bogus', 'Seed', 'iterations ', 'out/x'])}: 1")
            self.steps.append(f"unknown key in {rel}")
        elif kind == "raw":
            return self.bytes_(rel)
        elif kind == "bomb":
            lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
            for k in "bcdefgh":
                prev = chr(ord(k) - 1)
                lines.append(f"{k}: &{k} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},"
                             f"*{prev},*{prev},*{prev}]")
            self.steps.append(f"{rel} = a YAML alias bomb")
        elif kind == "top":
            lines = [rng.choice(["- 1", "5", "null", "'x'", "[", "{a: 1", "---\n---", ""])]
            self.steps.append(f"{rel} = {lines[0]!r}")
        else:
            lines.append("seed: !!python/object/apply:os.getcwd []")
            self.steps.append(f"python tag in {rel}")
        p.write_text("\n".join(lines) + "\n")

    def npy_(self, rel: str) -> None:
        """A structural mutation of a feature ``.npy`` (or a byte one)."""
        import numpy as np

        p = self.root / rel
        rng = self.rng
        try:
            arr = np.load(p)
        except Exception:
            return self.bytes_(rel, header=128)
        kind = rng.choice(["dtype", "shape", "values", "bytes", "bytes", "empty", "object",
                           "fortran", "scalar"])
        if kind == "dtype":
            dt = rng.choice(["float64", "float32", "complex64", "int8", "uint8", "bool", "<U3",
                             ">f2", "float128" if hasattr(np, "float128") else "float64"])
            arr2 = arr.astype(dt)
            self.steps.append(f"{rel} as {dt}")
        elif kind == "shape":
            t, c, d = arr.shape if arr.ndim == 3 else (arr.shape[0], 1, arr.size // arr.shape[0])
            shape = rng.choice([(0, c, d), (t, c + 1, d), (t, c, d - 1), (t, c * d), (t,),
                                (t, c, d, 1), (1, c, d), (t * 50, c, d), (t, 1, d), (t, 9, d),
                                (t, c, 1), (t, c, 4096)])
            arr2 = np.resize(arr, shape).astype(arr.dtype)
            self.steps.append(f"{rel} reshaped to {shape}")
        elif kind == "values":
            arr2 = arr.astype(np.float32).copy()
            v = rng.choice([np.nan, np.inf, -np.inf, 1e30, -1e30, 65504.0, 0.0, 1e-8])
            where = rng.choice(["one", "all", "row"])
            if where == "one":
                arr2.flat[rng.randrange(arr2.size)] = v
            elif where == "all":
                arr2[...] = v
            else:
                arr2[rng.randrange(arr2.shape[0])] = v
            with np.errstate(over="ignore"):
                arr2 = arr2.astype(arr.dtype)
            self.steps.append(f"{rel}: {where} value(s) = {v}")
        elif kind == "empty":
            p.write_bytes(b"")
            self.steps.append(f"empty {rel}")
            return
        elif kind == "object":
            np.save(p, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
            self.steps.append(f"{rel} = an object (pickle) array")
            return
        elif kind == "fortran":
            arr2 = np.asfortranarray(arr)
            self.steps.append(f"{rel} in Fortran order")
        elif kind == "scalar":
            arr2 = np.array(rng.choice([0.0, np.nan]), arr.dtype)
            self.steps.append(f"{rel} = a 0-d array")
        else:
            return self.bytes_(rel, header=128)
        np.save(p, arr2)

    def text_(self, rel: str) -> None:
        """A line / token mutation of a text file (lists, annotations, boxes, counts)."""
        p = self.root / rel
        rng = self.rng
        lines = p.read_text(errors="replace").splitlines() if p.exists() else []
        kind = rng.choice(["token", "token", "token", "delete", "dup", "blank", "binary",
                           "remove", "crlf", "long", "bytes"])
        if kind == "token" and lines:
            i = rng.randrange(len(lines))
            toks = lines[i].split()
            if toks:
                j = rng.randrange(len(toks))
                toks[j] = rng.choice(NUM_BAD + ["Normal", "-", "x" * 300, "../x", "a b"])
                lines[i] = " ".join(toks) if rng.random() < 0.7 else "  ".join(toks)
            self.steps.append(f"token {rel}:{i + 1}")
        elif kind == "delete" and lines:
            i = rng.randrange(len(lines))
            del lines[i]
            self.steps.append(f"delete line {i + 1} of {rel}")
        elif kind == "dup" and lines:
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            self.steps.append(f"duplicate line {i + 1} of {rel}")
        elif kind == "blank":
            lines.insert(rng.randrange(len(lines) + 1), rng.choice(["", "   ", "#", "\t"]))
            self.steps.append(f"blank line in {rel}")
        elif kind == "binary":
            p.write_bytes(rng.randbytes(300) + b"\xff\xfe\x00")
            self.steps.append(f"{rel} = binary junk")
            return
        elif kind == "remove":
            p.unlink(missing_ok=True)
            self.steps.append(f"remove {rel}")
            return
        elif kind == "crlf":
            p.write_bytes(("\r\n".join(lines) + "\r\n").encode())
            self.steps.append(f"{rel} with CRLF")
            return
        elif kind == "long":
            lines.append("9" * 5000)
            self.steps.append(f"a 5000-digit line in {rel}")
        else:
            return self.bytes_(rel)
        p.write_text("\n".join(lines) + "\n")


def _json_paths(doc, prefix=()):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield (*prefix, k)
            yield from _json_paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:8]):
            yield (*prefix, i)
            yield from _json_paths(v, (*prefix, i))


# ----------------------------------------------------------------------------- case families

NUMERIC_FLAGS = {
    "extract": ["--clip-len", "--stride", "--size", "--fps", "--grid", "--batch-size",
                "--workers", "--shard"],
    "classify": ["--top"],
    "train": ["--n-segments", "--batch-anomalous", "--batch-normal", "--iterations", "--lr",
              "--weight-decay", "--lambda1", "--lambda2", "--topk", "--neg-weight",
              "--lambda-tv", "--self-train", "--self-train-segments", "--self-train-cuboids",
              "--self-train-iterations", "--memory-size", "--hidden", "--mid", "--dropout",
              "--overlap", "--seed", "--val-fraction", "--val-every", "--patience",
              "--checkpoint-every"],
    "score": ["--threshold", "--workers"],
    "evaluate": ["--overlap", "--threshold"],
    "synth": ["--videos", "--frames", "--seed"],
    "import-features": ["--crop", "--snippet-frames", "--fps", "--width", "--height"],
    "events": ["--threshold", "--hysteresis", "--min-duration", "--merge-gap"],
    "calibrate": ["--target", "--hysteresis", "--min-duration", "--merge-gap"],
}
#: Flags whose large values mean legitimately long work: huge values drawn rarely.
WORK_FLAGS = {"--iterations", "--self-train-iterations", "--frames", "--videos", "--self-train",
              "--memory-size", "--hidden", "--mid", "--size", "--clip-len", "--n-segments",
              "--batch-anomalous", "--batch-normal", "--snippet-frames", "--fps", "--width",
              "--height", "--top", "--workers"}
HUGE = {"1e30", "1e308", "-1e30", "1000000000000", "99999999999999999999", "1e3", "1_000"}


def bad_number(rng: random.Random, flag: str) -> str:
    v = rng.choice(NUM_BAD)
    if flag in WORK_FLAGS and v in HUGE and rng.random() < 0.85:
        v = rng.choice(["-1", "0", "nan", "3"])
    if flag == "--shard":
        v = rng.choice(["0/0", "1/1", "-1/2", "2/2", "a/b", "1", "0/1", "0/-1", "nan/2",
                        "0/1000000000000", "1/2/3", "/", "0/2"])
    return v


def _base_argv(command: str, rng: random.Random) -> tuple[list[str], list[str]]:
    """A valid argv of ``command`` over the (unmutated) workspace, and its outputs."""
    vid = rng.choice(IDS)
    if command == "extract":
        inp = rng.choice(["synth/videos", f"synth/videos/{vid}.mp4"])
        return ["extract", inp, "--out", "out", *EXTRACT_TINY], ["out"]
    if command == "score":
        inp = rng.choice([f"feats/{vid}.npy", "feats", f"synth/videos/{vid}.mp4"])
        return ["score", inp, "--model", "run", "--out", "out", "--device", "cpu",
                "--workers", "0"], ["out"]
    if command == "train":
        return ["train", "--data", "synth", "--features", "feats", "--out", "out",
                *TRAIN_TINY], ["out"]
    if command == "evaluate":
        return ["evaluate", "--data", "synth", "--features", "feats", "--model", "run",
                "--json", "m.json"], ["m.json", "run"]
    if command == "calibrate":
        return ["calibrate", "run", "--data", "synth", "--features", "feats"], ["run"]
    if command == "events":
        inp = rng.choice([f"scores/{IDS[0]}.scores.json", f"synth/videos/{vid}.mp4"])
        extra = rng.choice([[], ["--snapshots", "snaps"]])
        return ["events", inp, "--model", "run_cal", "--out", "ev.jsonl", "--device", "cpu",
                *extra], ["ev.jsonl", *(["snaps"] if extra else [])]
    if command == "gt":
        return ["gt", "--data", "synth", "--features", "feats", "--out", "out"], ["out"]
    if command == "export":
        return ["export", "--data", "synth", "--features", "feats", "--model", "run",
                "--out", "out"], ["out"]
    if command == "export-features":
        layout = rng.choice(["plain", "rtfm", "urdmu"])
        extra = ["--data", "synth"] if layout == "urdmu" or rng.random() < 0.3 else []
        return ["export-features", "feats", "--out", "out", "--layout", layout, *extra], ["out"]
    if command == "import-features":
        fmt = rng.choice(["rtfm", "urdmu", "sultani"])
        inp = {"rtfm": "imports/rtfm.list", "urdmu": "imports/urdmu.list",
               "sultani": "imports/sultani"}[fmt]
        extra = ["--frame-counts", "imports/sultani_counts.txt"] if fmt == "sultani" else (
            ["--frame-counts", "imports/counts.txt"] if rng.random() < 0.3 else [])
        return ["import-features", inp, "--format", fmt, "--out", "out", *extra], ["out"]
    if command == "synth":
        return ["synth", "--out", "out", "--videos", "2", "--frames", "16", "--seed",
                str(rng.randrange(3))], ["out"]
    if command == "classify":
        return ["classify", f"synth/videos/{vid}.mp4", "--top", "2", "--device", "cpu"], []
    raise ValueError(command)


COMMANDS = ["extract", "score", "train", "evaluate", "calibrate", "events", "gt", "export",
            "export-features", "import-features", "synth", "classify"]


def draw_case(seed: int, index: int, base: Path, case_dir: Path | None) -> Case:
    """Draw case ``index`` of ``seed``; with ``case_dir``, also build its folder."""
    rng = random.Random(f"stmil-fuzz:{seed}:{index}")
    steps: list[str] = []
    planted: list[str] = []
    root = case_dir if case_dir is not None else Path("/nonexistent")
    mut = Mut(random.Random(f"stmil-fuzz-bytes:{seed}:{index}"), root, steps)
    build = case_dir is not None
    family = rng.choices(
        ["video", "features", "scores", "run", "config", "dataset", "import", "flags", "owned",
         "paths"],
        weights=[18, 16, 5, 12, 10, 9, 7, 14, 7, 2])[0]

    if build:
        for name in ("synth", "feats", "run", "run_cal", "scores", "imports"):
            shutil.copytree(base / name, case_dir / name, symlinks=True)

    if family == "video":
        command = rng.choices(["extract", "score", "events", "classify"],
                              weights=[10, 5, 4, 1])[0]
        variants = sorted(p.name for p in (base / "variants").iterdir())
        pick = rng.choice([f"synth:{v}" for v in IDS] + variants)
        if pick.startswith("synth:"):
            src, name = base / "synth" / "videos" / f"{pick[6:]}.mp4", f"{pick[6:]}.mp4"
        else:
            src, name = base / "variants" / pick, pick
        what = rng.choice(["bytes", "bytes", "bytes", "none", "rename"])
        if what == "rename":
            name = Path(name).stem + rng.choice([".avi", ".mkv", ".gif", ".txt", ".MP4", "",
                                                 ".mp4.part", ".webm"])
        rel = f"in/{name}"
        steps.append(f"video {pick} as {rel}")
        if build:
            (case_dir / "in").mkdir()
            shutil.copyfile(src, case_dir / rel)
        if what == "bytes" and build:
            mut.bytes_(rel, header=rng.choice([64, 512, 4096]))
        elif what == "bytes":
            steps.append("byte mutation")
        inp = rng.choice([rel, "in"])
        argv, outs = _base_argv(command, rng)
        if command == "extract":
            argv[1] = inp
            if rng.random() < 0.3:
                argv += [rng.choice(["--tail", "--precision"]),
                         rng.choice(["pad", "bf16", "drop"])]
                if argv[-2] == "--tail" and argv[-1] == "bf16":
                    argv[-1] = "pad"
                if argv[-2] == "--precision" and argv[-1] == "pad":
                    argv[-1] = "bf16"
        elif command in ("score", "events", "classify"):
            argv[1] = rel if command != "score" else inp
        if command == "score" and rng.random() < 0.2:
            argv.append("--overlay")
    elif family == "features":
        command = rng.choice(["score", "train", "evaluate", "calibrate", "gt", "export",
                              "export-features"])
        argv, outs = _base_argv(command, rng)
        for _ in range(rng.choice([1, 1, 1, 2])):
            vid = rng.choice(IDS)
            kind = rng.choice(["npy", "npy", "json", "json", "remove_npy", "remove_json",
                               "swap", "ledger"])
            if kind == "npy":
                (mut.npy_ if build else steps.append)(f"feats/{vid}.npy")
            elif kind == "json":
                (mut.json_ if build else steps.append)(f"feats/{vid}.json")
            elif kind == "ledger":
                (mut.json_ if build else steps.append)("feats/.stmil/ledger.json")
            elif kind == "swap":
                other = rng.choice([i for i in IDS if i != vid])
                steps.append(f"feats/{vid}.json <- feats/{other}.json")
                if build:
                    shutil.copyfile(case_dir / f"feats/{other}.json",
                                    case_dir / f"feats/{vid}.json")
            else:
                ext = "npy" if kind == "remove_npy" else "json"
                steps.append(f"remove feats/{vid}.{ext}")
                if build:
                    (case_dir / f"feats/{vid}.{ext}").unlink(missing_ok=True)
        if command == "score" and argv[1].endswith(".mp4"):
            argv[1] = "feats"
    elif family == "scores":
        command = "events"
        argv, outs = _base_argv("events", rng)
        argv[1] = f"scores/{IDS[0]}.scores.json"
        if build:
            mut.json_(argv[1]) if mut.rng.random() < 0.85 else mut.bytes_(argv[1])
        if rng.random() < 0.5:
            argv += ["--threshold", rng.choice(["0.01", "0.5", "0"])]
    elif family == "run":
        command = rng.choice(["score", "evaluate", "export", "calibrate", "events", "train"])
        argv, outs = _base_argv(command, rng)
        runname = "run_cal" if command == "events" else "run"
        target = rng.choice(["model.safetensors", "model.safetensors", "config.yaml",
                             "config.yaml", "history.csv", ".stmil-run", ".stmil/ledger.json",
                             "calibration.json", "remove"])
        if target == "calibration.json" and runname == "run":
            target = "config.yaml"
        if target == "remove":
            gone = rng.choice(["model.safetensors", "config.yaml", ".stmil-run",
                               ".stmil/ledger.json"])
            steps.append(f"remove {runname}/{gone}")
            if build:
                (case_dir / runname / gone).unlink(missing_ok=True)
        elif target == "model.safetensors":
            if build:
                mut.bytes_(f"{runname}/{target}", header=rng.choice([8, 200, 1000]))
            else:
                steps.append("bytes")
        elif target == "config.yaml":
            if build:
                mut.yaml_(f"{runname}/{target}")
        elif target in ("calibration.json", ".stmil/ledger.json"):
            if build:
                mut.json_(f"{runname}/{target}")
        else:
            if build:
                mut.text_(f"{runname}/{target}")
        if command == "train":  # resume the mutated run
            argv = ["train", "--data", "synth", "--features", "feats", "--out", "run",
                    *TRAIN_TINY, "--iterations", rng.choice(["3", "6"]), "--resume"]
            outs = ["run"]
    elif family == "config":
        command = rng.choice(COMMANDS[:-1])
        argv, outs = _base_argv(command, rng)
        if command == "train":
            src = "run/config.yaml"
            if build:
                shutil.copyfile(case_dir / src, case_dir / "cfg.yaml")
                mut.yaml_("cfg.yaml")
            # the config names data/features/out itself; flags override some
            argv = ["train", "--config", "cfg.yaml", "--out", "out", "--device", "cpu"]
            if rng.random() < 0.5:
                argv = ["train", "--config", "cfg.yaml", "--iterations", "2", "--device", "cpu"]
                outs = ["run"]  # config.yaml says out: run
        else:
            flags = NUMERIC_FLAGS.get(command, []) + ["--quiet", "--overwrite", "--device",
                                                      "--bogus", "--skip-missing"]
            lines = []
            for _ in range(rng.randint(1, 3)):
                key = rng.choice(flags)[2:]
                key = key.replace("-", "_") if rng.random() < 0.3 else key
                lines.append(f"{key}: {rng.choice(YAML_BAD_VALUES)}")
            raw = "\n".join(lines) + "\n"
            if rng.random() < 0.15:
                raw = rng.choice(["- a\n", "", "\x00\x01", "a: [\n", "{a: 1}: 2\n",
                                  "out: /dev/null\n", "out: sub/../out2\n", "data: 5\n"])
            steps.append(f"cfg.yaml = {raw!r}")
            if build:
                (case_dir / "cfg.yaml").write_text(raw, errors="surrogateescape")
            argv += ["--config", "cfg.yaml"]
    elif family == "dataset":
        command = rng.choice(["train", "evaluate", "gt", "export", "calibrate",
                              "export-features"])
        argv, outs = _base_argv(command, rng)
        if command == "export-features" and "--data" not in argv:
            argv += ["--data", "synth"]
        files = ["synth/Temporal_Anomaly_Annotation_for_Testing_Videos.txt",
                 "synth/readme/Train_split_AD.txt", "synth/readme/Test_split_AD.txt",
                 "synth/readme/Txt annotations/Fire001_x264.txt",
                 "synth/readme/Txt annotations/Vandalism001_x264.txt", "synth/synth.json"]
        rel = rng.choice(files)
        if build:
            mut.json_(rel) if rel.endswith(".json") else mut.text_(rel)
        else:
            steps.append(rel)
    elif family == "import":
        command = "import-features"
        argv, outs = _base_argv(command, rng)
        fmt = argv[argv.index("--format") + 1]
        choices = {"rtfm": [f"imports/rtfm/{v}_i3d.npy" for v in IDS] + ["imports/rtfm.list"],
                   "urdmu": [f"imports/urdmu/{v}__{k}.npy" for v in IDS for k in range(2)]
                   + ["imports/urdmu.list"],
                   "sultani": [f"imports/sultani/{v}_c3d.txt" for v in IDS]
                   + ["imports/sultani_counts.txt"]}[fmt]
        if "--frame-counts" in argv:
            choices.append(argv[argv.index("--frame-counts") + 1])
        rel = rng.choice(choices)
        if build:
            if rel.endswith(".npy"):
                mut.npy_(rel)
            else:
                mut.text_(rel)
        else:
            steps.append(rel)
        if rng.random() < 0.3:
            flag = rng.choice(NUMERIC_FLAGS["import-features"])
            argv += [flag, bad_number(rng, flag)]
    elif family == "flags":
        command = rng.choice([c for c in NUMERIC_FLAGS if c != "classify"] +
                             (["classify"] if rng.random() < 0.1 else []))
        argv, outs = _base_argv(command, rng)
        for _ in range(rng.choice([1, 1, 2, 3])):
            flag = rng.choice(NUMERIC_FLAGS[command])
            val = bad_number(rng, flag)
            argv += [f"{flag}={val}"] if val.startswith("-") or rng.random() < 0.3 \
                else [flag, val]
    elif family == "owned":
        command = rng.choice(["extract", "score", "train", "evaluate", "calibrate", "events",
                              "gt", "export", "export-features", "import-features", "synth"])
        argv, outs = _base_argv(command, rng)
        vid = rng.choice(IDS)
        names = {
            "extract": [f"{vid}.npy", f"{vid}.json", f"{vid}.claim", "failures.json",
                        ".stmil/ledger.json", "summary.json"],
            "score": [f"{vid}.scores.json", f"{vid}.overlay.mp4", f"{IDS[0]}.scores.json"],
            "train": ["model.safetensors", "config.yaml", "history.csv", "calibration.json",
                      "metrics.json", ".stmil-run", "checkpoint.pt"],
            "evaluate": ["metrics.json", "calibration.json"],
            "calibrate": ["calibration.json", "metrics.json"],
            "events": ["ev.jsonl"],
            "gt": ["gt.npy", "gt.json"],
            "export": ["scores.npy", "scores.json"],
            "export-features": ["features.list", "export.json", f"{vid}.npy", f"{vid}_i3d.npy",
                                "ucf-i3d.list", f"{vid}__0.npy", "UCF_Test.list"],
            "import-features": [f"{vid}.npy", f"{vid}.json", "failures.json"],
            "synth": ["synth.json", "videos/Fire001_x264.mp4",
                      "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"],
        }[command]
        outdir = {"evaluate": "run", "calibrate": "run", "events": "."}.get(command, "out")
        if command == "events" and rng.random() < 0.5:
            argv += ["--snapshots", "snaps"]
            outs.append("snaps")
            outdir, names = "snaps", [f"{IDS[0]}.incident-001.jpg", "x.jpg"]
        for _ in range(rng.randint(1, 2)):
            name = rng.choice(names)
            rel = os.path.normpath(f"{outdir}/{name}")
            planted.append(rel)
            if build:
                p = case_dir / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                if p.exists() and rel not in (planted[:-1]):
                    # a stmil file edited by the user: its bytes no longer match the ledger
                    p.write_bytes(p.read_bytes() + b"\n#user edit\n")
                else:
                    p.write_bytes(mut.rng.choice([b"", b"user data\n", b"{}",
                                                  mut.rng.randbytes(64)]))
        planted[:] = sorted(set(planted))
        steps.append(f"user files {planted}")
        if rng.random() < 0.5 and command in ("extract", "score", "train", "synth",
                                              "import-features", "export-features"):
            argv.append("--overwrite" if command not in ("score", "train") else "--quiet")
    else:  # paths: odd names and paths as inputs and outputs
        command = rng.choice(["extract", "score", "gt", "export-features", "train", "events"])
        argv, outs = _base_argv(command, rng)
        odd_in = ["/", "/dev/null", "..", "in/loop1.mp4", "in", "-dash"]
        odd_out = ["x" * 250, "a b", "ü∂", "out/", ".", "feats", "synth", "run", "synth/videos",
                   "scores", "feats/Fire001_x264.npy", "nonexistent/deep/er", "m.json/",
                   "in/loop1.mp4"]
        if build:
            (case_dir / "in").mkdir(exist_ok=True)
            with contextlib.suppress(OSError):
                os.symlink("loop2.mp4", case_dir / "in/loop1.mp4")
                os.symlink("loop1.mp4", case_dir / "in/loop2.mp4")
        if rng.random() < 0.5 and "--out" in argv:
            odd = rng.choice(odd_out)
            i = argv.index("--out") + 1
            outs = [odd if o == argv[i] else o for o in outs]
            argv[i] = odd
        else:
            odd = rng.choice(odd_in + odd_out[:4])
            argv[1] = odd if argv[1] not in ("--data",) else argv[1]
            if argv[1] == "--data":
                argv[2] = odd
        steps.append(f"odd path {odd!r}")
    argv = [*argv, "--quiet"] if "--quiet" not in argv and rng.random() < 0.9 else argv
    return Case(seed, index, family, command, argv, outs, steps, planted)


# ----------------------------------------------------------------------------- running a case

def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file (and link target) under ``root``, by relative path."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            try:
                if os.path.islink(p):
                    out[rel] = "link:" + os.readlink(p)
                else:
                    h = hashlib.sha256()
                    with open(p, "rb") as f:
                        for chunk in iter(lambda: f.read(1 << 20), b""):
                            h.update(chunk)
                    out[rel] = h.hexdigest()
            except OSError as e:
                out[rel] = f"unreadable:{e.errno}"
    return out


def ledger_owned(root: Path, before: dict[str, str]) -> set[str]:
    """Files that a folder's ledger names with their bytes at the case's start."""
    owned = set()
    for rel in before:
        if rel.endswith(".stmil/ledger.json"):
            folder = os.path.dirname(os.path.dirname(rel))
            try:
                data = json.loads((root / rel).read_text())
                files = dict(data.get("files", {}))
            except Exception:
                continue
            files.update(_journal_entries(root / folder / ".stmil" / "journal.jsonl",
                                          data.get("generation")))
            for name, rec in files.items():
                r = os.path.normpath(os.path.join(folder, name))
                if isinstance(rec, dict) and before.get(r) == rec.get("sha256"):
                    owned.add(r)
    return owned


def _journal_entries(path: Path, generation: object) -> dict:
    """The entries of a ledger's journal lines of ``generation`` (stmil.ownership's format:
    one JSON line per commit, ``{"g": generation, "set": {name: entry}}``), in order."""
    out: dict = {}
    try:
        lines = path.read_bytes().split(b"\n")[:-1]  # whole lines only
    except OSError:
        return out
    for line in lines:
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("g") == generation and \
                isinstance(data.get("set"), dict):
            out.update(data["set"])
    return out


def out_files(argv: list[str]) -> list[str]:
    """The outputs of ``argv`` that are files, not folders (``events --out``, ``evaluate
    --json``), however they are spelled (``--out out/`` names the file ``out``)."""
    flag = {"events": "--out", "evaluate": "--json"}.get(argv[0] if argv else "")
    for i, a in enumerate(argv):
        if flag and a == flag and i + 1 < len(argv):
            return [argv[i + 1]]
        if flag and a.startswith(flag + "="):
            return [a.split("=", 1)[1]]
    return []


def _ledger_beside(rel: str, files: list[str]) -> bool:
    """Whether ``rel`` is in ``.stmil/`` of the folder holding an output file (``events --out
    FILE``, ``evaluate --json FILE``): that folder's ledger is stmil's."""
    parts = Path(rel).parts
    if ".stmil" not in parts:
        return False
    k = parts.index(".stmil")
    folder = os.path.normpath(os.path.join(*parts[:k])) if k else "."
    return any((os.path.dirname(os.path.normpath(o)) or ".") == folder for o in files)


def refilter(res: dict) -> dict:
    """``res`` with its changed files re-judged by :func:`_ledger_beside` (for results written
    before that rule was added)."""
    files = out_files(res.get("argv", []))
    changed = [c for c in res.get("changed", [])
               if not _ledger_beside(c.split(" ", 1)[1], files)]
    cats = [c for c in res.get("categories", []) if c != "not_owned"]
    if changed:
        cats.append("not_owned")
    return {**res, "changed": changed, "categories": cats}


def _under(rel: str, outs: list[str]) -> bool:
    for o in outs:
        o = os.path.normpath(o)
        if o == "." or rel == o or rel.startswith(o.rstrip("/") + "/"):
            return True
    return False


class CaseTimeout(BaseException):
    """Raised by the alarm in the worker (a BaseException: ``except Exception`` cannot eat it).

    ``progressing``: whether the command's outputs grew during the grace period."""

    def __init__(self, progressing: bool) -> None:
        super().__init__(progressing)
        self.progressing = progressing


def output_size(root: Path, outs: list[str]) -> tuple[int, int]:
    """(files, bytes) under the case's outputs, temporaries included: how far a command got."""
    files = size = 0
    for o in outs:
        path = root / o
        walk = [(str(path.parent), [], [path.name])] if path.is_file() else os.walk(path)
        for top, _, names in walk:
            for name in names:
                with contextlib.suppress(OSError):
                    size += os.stat(os.path.join(top, name)).st_size
                    files += 1
    return files, size


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def has_error_line(err: str) -> bool:
    """Whether stderr holds an ``error:`` line (progress-bar cursor codes and carriage returns,
    which a terminal would have drawn over, are taken out first)."""
    for line in ANSI.sub("\n", err).replace("\r", "\n").splitlines():
        s = line.strip()
        if s.startswith("error:"):
            return True
        if s.startswith("stmil") and ": error: " in s:  # argparse's usage error
            return True
    return False


def run_case(case: Case, case_dir: Path, limit: float) -> dict:
    """Run ``case`` in ``case_dir`` (already built) and classify what happened."""
    from stmil.cli import main

    before = snapshot(case_dir)
    owned_before = ledger_owned(case_dir, before)
    out, err = io.StringIO(), io.StringIO()
    rc, exc, tb = None, None, None
    cwd = os.getcwd()
    fd_file = case_dir.parent / f".fd-{case.index}.txt"
    saved = os.dup(1), os.dup(2)
    t0 = time.monotonic()

    at_limit: list[tuple[int, int]] = []

    def on_alarm(signum, frame):
        now = output_size(case_dir, case.outs)
        if not at_limit:  # the soft limit: give it GRACE seconds to show it is still working
            at_limit.append(now)
            signal.setitimer(signal.ITIMER_REAL, GRACE)
            return
        raise CaseTimeout(progressing=now[0] > at_limit[0][0] or now[1] > at_limit[0][1])

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        with open(fd_file, "wb") as fdf:
            os.dup2(fdf.fileno(), 1)
            os.dup2(fdf.fileno(), 2)
            os.chdir(case_dir)
            try:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    rc = main(list(case.argv))
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if not isinstance(e.code, int) and e.code is not None:
                    err.write(str(e.code) + "\n")
            except CaseTimeout as e:
                exc = "long" if e.progressing else "timeout"
            except BaseException as e:  # noqa: BLE001 - what the fuzzer is looking for
                exc = f"{type(e).__name__}: {str(e)[:300]}"
                tb = traceback.format_exc()[-3000:]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        os.chdir(cwd)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
    seconds = time.monotonic() - t0
    fd_text = fd_file.read_text(errors="replace") if fd_file.exists() else ""
    fd_file.unlink(missing_ok=True)
    stderr, stdout = err.getvalue(), out.getvalue()
    after = snapshot(case_dir)
    changed = []
    for rel in sorted(set(before) | set(after)):
        if before.get(rel) == after.get(rel):
            continue
        kind = "created" if rel not in before else "deleted" if rel not in after else "modified"
        is_out = _under(rel, case.outs)
        if kind == "created" and is_out and rel not in case.planted:
            continue
        if _ledger_beside(rel, out_files(case.argv)):
            continue
        if kind != "created" and is_out and rel not in case.planted and (
                rel in owned_before or "/.stmil/" in f"/{rel}"):
            continue
        changed.append(f"{kind} {rel}")
    categories = []
    if exc == "timeout":
        categories.append("hang")
    elif exc == "long":
        categories.append("long")
    elif exc is not None or "Traceback" in stderr or "Traceback" in stdout \
            or "Traceback" in fd_text:
        categories.append("traceback")
    if exc is None and rc not in (0, None) and not has_error_line(stderr):
        categories.append("no_error_line")
    if changed:
        categories.append("not_owned")
    return {"seed": case.seed, "index": case.index, "family": case.family,
            "command": case.command, "argv": case.argv, "outs": case.outs,
            "steps": case.steps, "rc": rc,
            "exception": exc, "traceback": tb, "stderr_tail": stderr[-1500:],
            "fd_tail": fd_text[-800:], "changed": changed, "categories": categories,
            "seconds": round(seconds, 2)}


def _limit_memory() -> None:
    import resource

    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def worker(conn, seed: int, base: str, cases_root: str, limit: float, keep: bool) -> None:
    os.nice(10) if os.nice(0) < 10 else None
    _limit_memory()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    import stmil.cli  # noqa: F401 - imported once, before the first case's clock starts

    conn.send("ready")
    while True:
        index = conn.recv()
        if index is None:
            return
        case_dir = Path(cases_root) / f"case-{seed}-{index}"
        if case_dir.exists():
            shutil.rmtree(case_dir)
        case_dir.mkdir(parents=True)
        try:
            case = draw_case(seed, index, Path(base), case_dir)
        except Exception as e:  # a bug of the fuzzer, not of stmil
            shutil.rmtree(case_dir, ignore_errors=True)
            conn.send({"seed": seed, "index": index, "fuzzer_error": repr(e),
                       "traceback": traceback.format_exc()})
            continue
        res = run_case(case, case_dir, limit)
        if not keep:
            shutil.rmtree(case_dir, ignore_errors=True)
        conn.send(res)
        if {"hang", "long"} & set(res["categories"]):
            return  # threads of the stopped command may linger: the next case gets a fresh worker


class Runner:
    """A worker process fed case indices; killed and restarted when a case overruns."""

    def __init__(self, seed, base, cases_root, limit, keep=False):
        self.args = (seed, str(base), str(cases_root), limit, keep)
        self.limit = limit
        self.proc = None

    def start(self):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker, args=(child, *self.args), daemon=True)
        self.proc.start()
        if not self.conn.poll(180):
            raise RuntimeError("worker did not start")
        assert self.conn.recv() == "ready"

    def run(self, index: int) -> dict:
        if self.proc is None or not self.proc.is_alive():
            self.stop(kill=True)
            self.start()
        try:
            self.conn.send(index)
            if self.conn.poll(self.limit + HARD_EXTRA):
                res = self.conn.recv()
                if {"hang", "long"} & set(res.get("categories", [])):
                    self.stop()  # the worker exits after a soft hang; the next case starts one
                return res
        except (EOFError, OSError):
            pass
        code = self.proc.exitcode
        alive = self.proc.is_alive()
        self.stop(kill=True)
        seed = self.args[0]
        case = draw_case(seed, index, Path(self.args[1]), None)
        cat = "hang" if alive else "crash"
        return {"seed": seed, "index": index, "family": case.family, "command": case.command,
                "argv": case.argv, "steps": case.steps, "rc": code, "exception": cat,
                "categories": [cat], "changed": [], "seconds": None, "stderr_tail": ""}

    def stop(self, kill=False):
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            with contextlib.suppress(Exception):
                self.conn.send(None)
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.proc = None


def _build_base_in_child(base: Path) -> None:
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_build_base_entry, args=(str(base),))
    p.start()
    p.join()
    if p.exitcode != 0 or not (base / BASE_MARKER).exists():
        raise SystemExit("could not build the fuzz workspace")


def _build_base_entry(base: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    build_base(Path(base))


CATEGORIES = ["traceback", "hang", "crash", "no_error_line", "not_owned"]  # defects; not "long"


def summarize(results: list[dict]) -> dict:
    per_cat = Counter()
    per_cmd: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        cats = r.get("categories", [])
        per_cmd[r.get("command", "?")]["cases"] += 1
        if not cats:
            per_cat["fine"] += 1
            per_cmd[r.get("command", "?")]["fine"] += 1
        for c in cats:
            per_cat[c] += 1
            per_cmd[r.get("command", "?")][c] += 1
    return {"cases": len(results), "per_category": dict(per_cat),
            "per_command": {k: dict(v) for k, v in sorted(per_cmd.items())}}


def signature(r: dict) -> str:
    """A rough key grouping failures that are likely the same defect."""
    cats = ",".join(r.get("categories", []))
    exc = (r.get("exception") or "").split(":")[0]
    where = ""
    tb = r.get("traceback") or ""
    frames = [ln.strip() for ln in tb.splitlines() if ln.strip().startswith("File ")]
    if frames:
        last = frames[-1]
        where = last.split("/")[-1]
    if "not_owned" in cats:
        where += " " + " ".join(sorted({c.split()[0] + ":" + os.path.basename(c.split()[1])
                                        for c in r.get("changed", [])}))
    return f"{r.get('command')} [{cats}] {exc} {where}".strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--start", type=int, default=0, help="first case index")
    ap.add_argument("--minutes", type=float, default=None, help="stop after this wall time")
    ap.add_argument("--limit", type=float, default=SOFT_LIMIT, help="seconds per case")
    ap.add_argument("--workdir", default="/tmp/stmil-fuzz", help="workspace and case folders")
    ap.add_argument("--json", default=None, help="write every failing case and the counts here")
    ap.add_argument("--replay", default=None, metavar="SEED:INDEX",
                    help="run one case, print all of it and keep its folder")
    ap.add_argument("--show", action="store_true", help="with --replay: only print the case")
    ap.add_argument("--only", default=None, help="comma-separated commands to keep")
    ap.add_argument("--indices", default=None,
                    help="run only these case indices (comma-separated, or @FILE of one a line)")
    ap.add_argument("--all", action="store_true", help="with --json: every case, not only failures")
    ap.add_argument("--summarize", nargs="+", default=None, metavar="JSONL",
                    help="only print the counts and failure groups of earlier runs' "
                         "<json>.lines files (one JSON result a line, written as cases finish)")
    args = ap.parse_args(argv)

    if args.summarize:
        results = [json.loads(line) for f in args.summarize
                   for line in Path(f).read_text().splitlines() if line.strip()]
        results = [refilter(r) for r in results]
        report(results, args.json, all_=args.all, extra={})
        return 0

    work = Path(args.workdir)
    base = work / "base"
    cases_root = work / "cases"
    cases_root.mkdir(parents=True, exist_ok=True)
    _build_base_in_child(base)

    if args.replay:
        seed, index = (int(x) for x in args.replay.split(":"))
        case = draw_case(seed, index, base, None)
        if args.show:
            print(json.dumps(asdict(case), indent=1))
            return 0
        runner = Runner(seed, base, cases_root, args.limit, keep=True)
        res = runner.run(index)
        runner.stop()
        print(json.dumps(res, indent=1))
        print(f"case folder: {cases_root / f'case-{seed}-{index}'}")
        return 1 if res.get("categories") else 0

    runner = Runner(args.seed, base, cases_root, args.limit)
    only = set(args.only.split(",")) if args.only else None
    deadline = time.monotonic() + args.minutes * 60 if args.minutes else math.inf
    results, failures = [], []
    lines = open(args.json + ".lines", "a") if args.json else None
    t0 = time.monotonic()
    try:
        indices = range(args.start, args.start + args.cases)
        if args.indices:
            text = Path(args.indices[1:]).read_text() if args.indices.startswith("@") \
                else args.indices.replace(",", "\n")
            indices = [int(x) for x in text.split()]
        for index in indices:
            if time.monotonic() > deadline:
                break
            if only and draw_case(args.seed, index, base, None).command not in only:
                continue
            res = runner.run(index)
            if "fuzzer_error" in res:
                print(f"fuzzer error in case {args.seed}:{index}: {res['fuzzer_error']}",
                      file=sys.stderr)
                print(res["traceback"], file=sys.stderr)
                continue
            results.append(res)
            if lines:
                lines.write(json.dumps(res) + "\n")
                lines.flush()
            if res["categories"]:
                failures.append(res)
                print(f"{args.seed}:{index} {','.join(res['categories'])} {res['command']} "
                      f"{res.get('exception') or ''} {res['changed'][:3]}".rstrip(),
                      flush=True)
            if len(results) % 50 == 0:
                s = summarize(results)
                print(f"-- {len(results)} cases, {time.monotonic() - t0:.0f}s, "
                      f"{s['per_category']}", flush=True)
    finally:
        runner.stop()
    extra = {"seed": args.seed, "seconds": round(time.monotonic() - t0, 1),
             "first_index": args.start,
             "last_index": results[-1]["index"] if results else None}
    report(results, args.json, all_=args.all, extra=extra)
    return 0


def report(results: list[dict], json_path: str | None, all_: bool, extra: dict) -> None:
    """Print the counts and the failure groups; write them (and the failures) to ``json_path``."""
    failures = [r for r in results if r.get("categories")]
    summary = {**summarize(results), **extra}
    groups: dict[str, list[str]] = defaultdict(list)
    for r in failures:
        groups[signature(r)].append(f"{r['seed']}:{r['index']}")
    summary["groups"] = {k: v for k, v in sorted(groups.items(), key=lambda kv: -len(kv[1]))}
    print(json.dumps({k: summary[k] for k in ("cases", "per_category", "per_command")
                      if k in summary}, indent=1))
    for k, v in summary["groups"].items():
        print(f"{len(v):5d}  {k}  e.g. {', '.join(v[:3])}")
    if json_path:
        Path(json_path).write_text(json.dumps(
            {"summary": summary, "failures": failures, **({"all": results} if all_ else {})},
            indent=1))


if __name__ == "__main__":
    sys.exit(main())
