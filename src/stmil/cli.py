"""Command-line interface: argument parsing only, calling the library functions."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from stmil import __version__

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    COMMANDS[fn.__name__.removeprefix("cmd_")] = fn
    return fn


def _add_clip_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clip-len", type=int, default=16, help="frames per clip (default 16)")
    p.add_argument("--stride", type=int, default=16, help="frames between clip starts")
    p.add_argument("--size", type=int, default=224, help="frames are resized to SIZE x SIZE")
    p.add_argument("--fps", type=float, default=None, help="resample (default: native rate)")
    p.add_argument("--tail", choices=("drop", "pad"), default="drop",
                   help="trailing partial clip: drop it (default) or pad with the last frame")
    p.add_argument("--grid", type=int, default=7, help="G: cuboids form a G x G grid (default 7)")
    p.add_argument("--endpoint", default="Mixed_4e", help="I3D endpoint (default Mixed_4e)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--batch-size", type=int, default=8, help="clips per forward pass")


def _extract_settings(args: argparse.Namespace):
    from stmil.extract import ExtractSettings

    return ExtractSettings(args.clip_len, args.stride, args.size, args.fps, args.tail,
                           args.batch_size)


@command
def cmd_extract(args: argparse.Namespace) -> int:
    from stmil.extract import FeatureExtractor, extract_many

    extractor = FeatureExtractor(args.endpoint, args.grid, args.device)
    summary = extract_many(args.inputs, args.out, extractor, _extract_settings(args),
                           overwrite=args.overwrite, progress=not args.quiet,
                           log=lambda m: print(m, file=sys.stderr))
    print(summary.line())
    if summary.failed:
        print(f"failures written to {Path(args.out) / 'failures.json'}", file=sys.stderr)
    return 1 if summary.failed else 0


@command
def cmd_classify(args: argparse.Namespace) -> int:
    from stmil.classify import classify_video

    top = classify_video(args.video, top=args.top, device=args.device)
    if args.json:
        print(json.dumps([{"label": n, "probability": p} for n, p in top], indent=1))
    else:
        for name, p in top:
            print(f"{p:7.4f}  {name}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="stmil", formatter_class=fmt,
        description="Weakly supervised spatiotemporal video anomaly detection.",
        epilog="Run 'stmil COMMAND --help' for a command's options and an example.")
    parser.add_argument("--version", action="version", version=f"stmil {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help: str, example: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, formatter_class=fmt,
                           epilog=f"example:\n  {example}")
        p.add_argument("--debug", action="store_true", help="show tracebacks")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        return p

    p = add("extract", "Extract I3D cuboid features of videos (files or folders).",
            "stmil extract videos/ --out features/")
    p.add_argument("inputs", nargs="+", help="video files or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder for <id>.npy and <id>.json")
    p.add_argument("--overwrite", action="store_true", help="redo videos already extracted")
    _add_clip_options(p)

    p = add("classify", "Kinetics-400 top-k classes of a video (full I3D).",
            "stmil classify v_CricketShot_g04_c01_rgb.gif --top 5")
    p.add_argument("video")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError, KeyError) as e:
        if args.debug:
            raise
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
