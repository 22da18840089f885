"""Command-line interface: argument parsing only, calling the library functions."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from stmil import __version__, interop
from stmil.datasets import load_dataset
from stmil.datasets.errors import SPLITS
from stmil.deploy import BACKENDS
from stmil.deploy import FORMATS as MODEL_FORMATS
from stmil.deploy import PRECISIONS as MODEL_PRECISIONS
from stmil.device import DEVICES
from stmil.errors import ConfigError, StmilError
from stmil.features.pipeline_config import ENGINES, PRECISIONS, TAIL_POLICIES, PipelineConfig
from stmil.mil.config import FIELDS, FORMATS, PATH_KEYS, field_type, read_config, read_yaml_mapping

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    COMMANDS[fn.__name__.removeprefix("cmd_").replace("_", "-")] = fn
    return fn


def _add_clip_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clip-len", type=int, default=16, help="frames per clip (default 16)")
    p.add_argument("--stride", type=int, default=16, help="frames between clip starts")
    p.add_argument("--size", type=int, default=224, help="frames are resized to SIZE x SIZE")
    p.add_argument("--fps", type=float, default=None, help="resample (default: native rate)")
    p.add_argument("--tail", choices=TAIL_POLICIES, default="drop",
                   help="trailing partial clip: drop it (default) or pad with the last frame")
    p.add_argument("--grid", type=int, default=7, help="G: cuboids form a G x G grid (default 7)")
    p.add_argument("--endpoint", default="Mixed_4e", help="I3D endpoint (default Mixed_4e)")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--batch-size", type=int, default=8, help="clips per forward pass")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (default): exact (~1e-6 vs the reference). bf16: the fast path "
                        "on CPUs with AMX (Xeon 4th gen+) and on GPUs, ~2-3x faster, relative "
                        "error ~1e-2; use it for large datasets where that error is acceptable "
                        "(features of both precisions never mix in one folder)")


def _add_pipeline_options(p: argparse.ArgumentParser, shard: bool = True) -> None:
    """Flags of :class:`~stmil.features.pipeline.PipelineConfig`, plus ``--shard`` (extract)."""
    p.add_argument("--workers", type=int, default=PipelineConfig.workers,
                   help="decode threads overlapping the model; 0: serial (default "
                        f"{PipelineConfig.workers}; outputs do not depend on it)")
    p.add_argument("--engine", choices=ENGINES, default=PipelineConfig.engine,
                   help="local (default): this process; ray: decode tasks and I3D actors on a "
                        "Ray cluster, the same files (needs stmil[ray]; docs/scale.md)")
    p.add_argument("--ray-address", metavar="ADDR", default=None,
                   help="with --engine ray: the cluster to join (default: RAY_ADDRESS, else a "
                        "local Ray instance)")
    if not shard:
        return
    p.add_argument("--shard", metavar="I/N", default=None,
                   help="take every N-th video starting at the I-th (0 <= I < N), for N "
                        "processes or machines sharing one --out; each video is also "
                        "claimed (<id>.claim) while it is extracted, so none is done twice")


def _pipeline(args: argparse.Namespace) -> PipelineConfig:
    return PipelineConfig(workers=args.workers, engine=args.engine,
                          ray_address=args.ray_address)


def _extract_settings(args: argparse.Namespace):
    from stmil.features.extract import ExtractSettings

    return ExtractSettings(args.clip_len, args.stride, args.size, args.fps, args.tail,
                           args.batch_size)


@command
def cmd_extract(args: argparse.Namespace) -> int:
    from stmil.features.extract import FeatureExtractor, extract_many, parse_shard

    settings = _extract_settings(args)  # validated before the network loads
    pipeline = _pipeline(args)
    shard = parse_shard(args.shard) if args.shard is not None else None
    if pipeline.engine == "ray":  # the driver's network only describes it: actors run theirs
        from stmil.features import ray_engine

        summary = ray_engine.extract_many(
            args.inputs, args.out, FeatureExtractor(args.endpoint, args.grid, "cpu",
                                                    args.precision), settings,
            overwrite=args.overwrite, progress=not args.quiet, pipeline=pipeline, shard=shard,
            device=args.device)
    else:
        extractor = FeatureExtractor(args.endpoint, args.grid, args.device, args.precision)
        summary = extract_many(args.inputs, args.out, extractor, settings,
                               overwrite=args.overwrite, progress=not args.quiet,
                               pipeline=pipeline, shard=shard)
    print(summary.line())
    if summary.failed:
        print(f"failures written to {Path(args.out) / 'failures.json'}", file=sys.stderr)
    return 1 if summary.failed else 0


@command
def cmd_classify(args: argparse.Namespace) -> int:
    from stmil.features.classify import classify_video

    top = classify_video(args.video, top=args.top, device=args.device)
    if args.json:
        print(json.dumps([{"label": n, "probability": p} for n, p in top], indent=1))
    else:
        for name, p in top:
            print(f"{p:7.4f}  {name}")
    return 0


@command
def cmd_train(args: argparse.Namespace) -> int:
    from stmil.mil.train import train

    if args.old_grid is not None:
        raise ConfigError("train --grid was renamed: use --instances frame (was --grid 1, the "
                          "video-segment baseline) or --instances cuboid (the default)")
    cfg = read_config(args.config) if args.config else {}
    cfg.update({k: getattr(args, k) for k in (*FIELDS, *PATH_KEYS)
                if getattr(args, k, None) is not None})
    for key in PATH_KEYS:
        if key not in cfg:
            raise ConfigError(f"--{key} is required (on the command line or in --config)")
    out = cfg["out"]
    summary = train(cfg.pop("data"), cfg.pop("features"), cfg.pop("out"), resume=args.resume,
                    progress=not args.quiet, **cfg)
    print(f"trained {summary['iterations']} iterations in {summary['seconds']:.1f}s -> {out}")
    return 0


def _add_train_settings(p: argparse.ArgumentParser) -> None:
    """One flag per :class:`~stmil.mil.config.TrainConfig` field (``--n-segments``...)."""
    for name, f in FIELDS.items():
        flag, typ, rule = "--" + name.replace("_", "-"), field_type(name), f.metadata
        shown = f.default
        if typ is bool:
            p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                           default=None, help=f"{rule['help']} (default {shown})")
        else:
            p.add_argument(flag, dest=name, type=typ, choices=rule["choices"], default=None,
                           help=f"{rule['help']} (default {shown})")


@command
def cmd_score(args: argparse.Namespace) -> int:
    from stmil.score import score_inputs

    written, failed = score_inputs(args.inputs, args.model, args.out, threshold=args.threshold,
                                   overlay=args.overlay, device=args.device,
                                   pipeline=_pipeline(args),
                                   progress=not args.quiet, backend=args.backend)
    for path in written:
        print(path)
    return 1 if failed else 0


@command
def cmd_evaluate(args: argparse.Namespace) -> int:
    from stmil.evaluation.evaluate import (
        METRIC_KEYS,
        compare_table,
        evaluate,
        format_table,
        table_notes,
    )

    if args.compare:
        print(compare_table(args.compare, notes=True))
        return 0
    for key in ("data", "features", "model"):
        if getattr(args, key) is None:
            raise ConfigError(f"--{key} is required (or use --compare RUN...)")
    result = evaluate(args.data, args.features, args.model, split=args.split,
                      format=args.format, overlap=args.overlap, skip_missing=args.skip_missing,
                      json_out=args.json, threshold=args.threshold,
                      boxes=args.boxes, interpolate=args.interpolate)
    rows = [(str(args.model), result)]
    print(format_table(rows, METRIC_KEYS, where=True))
    print("\n" + "\n".join(table_notes(rows)))  # which AP papers report; the threshold
    if result.get("incidents"):
        from stmil.evaluation.incidents import format_incidents

        print(format_incidents(result["incidents"]))
    return 0


@command
def cmd_synth(args: argparse.Namespace) -> int:
    from stmil.synth.dataset import make_dataset

    summary = make_dataset(Path(args.out), footage=args.footage, n_videos=args.videos,
                           seed=args.seed, n_frames=args.frames, progress=not args.quiet,
                           overwrite=args.overwrite, scenario=args.scenario)
    print(f"{len(summary['train'])} train + {len(summary['test'])} test videos -> {args.out}")
    return 0


@command
def cmd_demo(args: argparse.Namespace) -> int:
    from stmil.demo import run_demo

    run_demo(Path(args.out), footage=args.footage, n_videos=args.videos, seed=args.seed,
             n_frames=args.frames, iterations=args.iterations, device=args.device,
             progress=not args.quiet)
    return 0


@command
def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from stmil.serve.app import serve
    except ImportError as e:
        raise StmilError(f"stmil serve needs the serve extra ({e.name} is missing): "
                         "pip install 'stmil[serve]'") from None
    serve(args.dir, host=args.host, port=args.port)
    return 0


@command
def cmd_import_features(args: argparse.Namespace) -> int:
    from stmil.interop.import_features import ImportSettings, import_features, read_frame_counts

    settings = ImportSettings(args.format, args.crop, args.snippet_frames, args.fps, args.width,
                              args.height)
    counts = read_frame_counts(args.frame_counts) if args.frame_counts else None
    summary = import_features(args.inputs, args.out, settings, root=args.root, frame_counts=counts,
                              progress=not args.quiet)
    print(f"{summary.line()} -> {args.out}")
    return 1 if summary.failed else 0


@command
def cmd_gt(args: argparse.Namespace) -> int:
    """The frame-label vector (``gt``) or, with ``--model``, the frame-score vector (``export``)."""
    from stmil.interop.gt import export_vectors

    path = export_vectors(args.data, args.features, args.out, run=getattr(args, "model", None),
                          split=args.split, format=args.format, tail=args.tail,
                          skip_missing=args.skip_missing, video_list=args.list,
                          convention=getattr(args, "convention", "stmil"))
    print(path)
    return 0


COMMANDS["export"] = cmd_gt


@command
def cmd_export_features(args: argparse.Namespace) -> int:
    from stmil.interop.export import export_features

    records = load_dataset(args.data, "all", args.format) if args.data else None
    summary = export_features(args.features, args.out, layout=args.layout, records=records,
                              video_list=args.list, prefix=args.prefix)
    print(summary.line())
    return 0


@command
def cmd_export_model(args: argparse.Namespace) -> int:
    from stmil.deploy.export import export_model

    manifest = export_model(args.out, run=args.model, format=args.format,
                            precision=args.precision)
    checked = ", ".join(f"{k} {v:.1e}" for k, v in manifest.data["checked"].items())
    graphs = "features" + (" and scorer" if manifest.scorer else "")
    print(f"{graphs} exported to {args.out} (ONNX opset {manifest.data['opset']}, "
          f"{manifest.data['precision']}; checked against PyTorch: {checked})")
    return 0


def _add_vector_options(p: argparse.ArgumentParser) -> None:
    """Flags of ``stmil gt`` and ``stmil export`` (see :mod:`stmil.interop.gt`)."""
    p.add_argument("--data", required=True, help="dataset root (its test list gives the order)")
    p.add_argument("--features", required=True, help="folder of feature files")
    p.add_argument("--out", required=True, help="folder for the .npy and its .json manifest")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--format", default="auto", choices=FORMATS)
    p.add_argument("--tail", default="clips", choices=interop.TAILS,
                   help="clips: stride x n_clips entries per video (16 x T, the RTFM/UR-DMU "
                        "convention; default); frames: one per frame of the video")
    p.add_argument("--skip-missing", action="store_true")
    p.add_argument("--list", help="an RTFM / UR-DMU / MGFN list (ucf-i3d-test.list, "
                   "UCF_Test.list): write the videos in its order (it must name exactly the "
                   "split's videos); default: the dataset's list order")


# --- events, calibrate, watch (stmil.live) ------------------------------------------------------


def _event_settings(args: argparse.Namespace):
    from stmil.live.events import resolve_events

    return resolve_events(args.model, args.threshold, args.hysteresis, args.min_duration,
                          args.merge_gap)


@command
def cmd_events(args: argparse.Namespace) -> int:
    from stmil.live.events import events_inputs

    found, failed = events_inputs(args.inputs, args.model, config=_event_settings(args),
                                  out=args.out, snapshots=args.snapshots, clips=args.clips,
                                  device=args.device)
    print(f"{len(found)} incidents" + (f" -> {args.out}" if args.out else ""), file=sys.stderr)
    return 1 if failed else 0


@command
def cmd_calibrate(args: argparse.Namespace) -> int:
    from stmil.live.calibrate import calibrate
    from stmil.live.incidents import EventConfig

    given = {k: getattr(args, k) for k in ("hysteresis", "min_duration", "merge_gap")
             if getattr(args, k) is not None}
    cal = calibrate(args.model, args.data, args.features, target=args.target,
                    settings=EventConfig(**given))
    print(f"threshold {cal.threshold:.4f}: {cal.false_incidents} false incidents in "
          f"{cal.normal_hours * 60:.1f} min of normal {cal.split} video ({cal.per_hour:.2f}/h, "
          f"target {cal.target_per_hour:g}/h) -> {Path(args.model) / 'calibration.json'}")
    return 0


@command
def cmd_watch(args: argparse.Namespace) -> int:
    from stmil.live.watch import WatchConfig, watch

    fields = {f: getattr(args, f) for f in WatchConfig.__dataclass_fields__}
    config = WatchConfig(**fields)
    events = _event_settings(args)
    summary = watch(args.source, args.model, events, config, out=args.out,
                    snapshots=args.snapshots, clips=args.clips, name=args.name)
    errors = summary.get("evidence_errors", 0)
    print(f"{summary['ended']}: {summary['frames']} frames, {summary['clips']} clips scored, "
          f"{summary['dropped_frames']} frames dropped, {summary['incidents']} incidents"
          + (f", {errors} snapshots or clips not written" if errors else ""), file=sys.stderr)
    return 1 if summary["ended"] == "gave up" or errors else 0


def _add_live_parsers(add: Callable[[str, str, str], argparse.ArgumentParser]) -> None:
    """The ``events``, ``calibrate`` and ``watch`` commands; flags from
    :class:`~stmil.live.incidents.EventConfig` and :class:`~stmil.live.watch.WatchConfig`."""
    from stmil.live.clip import MAX_SECONDS, POST_ROLL, PRE_ROLL, RING_SECONDS
    from stmil.live.incidents import EventConfig

    d = EventConfig()
    clips_help = (f"folder for one MP4 per incident: {PRE_ROLL:g} s before its start to "
                  f"{POST_ROLL:g} s after its end, at most {MAX_SECONDS:g} s (live: from a "
                  f"ring buffer of the last {RING_SECONDS:g} s of frames)")

    def incident_flags(p: argparse.ArgumentParser, threshold: bool = True) -> None:
        if threshold:
            p.add_argument("--threshold", type=float, default=None,
                           help="start an incident at this clip score (default: the run's "
                                "calibration.json)")
        p.add_argument("--hysteresis", type=float, default=None,
                       help=f"an open incident stays open down to threshold - HYSTERESIS "
                            f"(default {d.hysteresis}, or the calibration's)")
        p.add_argument("--min-duration", type=float, default=None,
                       help=f"seconds; shorter incidents are not reported (default "
                            f"{d.min_duration})")
        p.add_argument("--merge-gap", type=float, default=None,
                       help=f"seconds; incidents closer than this are one (default "
                            f"{d.merge_gap})")

    p = add("events", "Incidents (JSON lines) of videos or <id>.scores.json files.",
            "stmil events video.mp4 --model runs/mil --snapshots snaps/")
    p.add_argument("inputs", nargs="+", help="videos or <id>.scores.json files")
    p.add_argument("--model", required=True, help="run folder")
    p.add_argument("--out", help="write the JSON lines here (default: stdout)")
    p.add_argument("--snapshots", help="folder for one JPEG per incident (peak frame, box)")
    p.add_argument("--clips", help=clips_help)
    p.add_argument("--device", choices=DEVICES, default="auto")
    incident_flags(p)

    p = add("calibrate", "Choose a run's incident threshold for a false-incident rate.",
            "stmil calibrate runs/mil --data synth/ --features features/ --target 1")
    p.add_argument("model", help="run folder (calibration.json is added to it)")
    p.add_argument("--data", required=True, help="the dataset root the run was trained on")
    p.add_argument("--features", required=True, help="its features folder")
    p.add_argument("--target", type=float, default=1.0,
                   help="false incidents per hour of normal video (default 1)")
    incident_flags(p, threshold=False)

    p = add("watch", "Live incidents from a file, a network stream or a camera.",
            "stmil watch tcp://127.0.0.1:5000 --model runs/mil --snapshots snaps/")
    p.add_argument("source", help="video file, URL (rtsp, rtmp, http(s), tcp, udp...) or "
                                  "/dev/videoN")
    p.add_argument("--model", required=True, help="run folder")
    p.add_argument("--out", help="append the JSON lines here (default: stdout)")
    p.add_argument("--snapshots", help="folder for one JPEG per incident (peak frame, box)")
    p.add_argument("--clips", help=clips_help)
    p.add_argument("--name", default=None,
                   help="name of the evidence files, NAME.incident-NNN.jpg/.mp4 (default: the "
                        "file's or camera's name, or the URL's host_port_path)")
    p.add_argument("--realtime", action="store_true", help="play a file at its frame rate")
    p.add_argument("--fps", type=float, default=None,
                   help="resample the source (frames/s; default: the run's rate)")
    p.add_argument("--stride", type=int, default=None,
                   help="score one clip every STRIDE frames (default: the run's)")
    p.add_argument("--drop", action=argparse.BooleanOptionalAction, default=None,
                   help="drop clips rather than fall behind (default: for streams, cameras "
                        "and --realtime)")
    p.add_argument("--heartbeat", type=float, default=10.0, help="seconds (0: off)")
    p.add_argument("--update", type=float, default=5.0,
                   help="seconds between update lines of an open incident (0: off)")
    p.add_argument("--timeout", type=float, default=10.0, help="stream open/read timeout, s")
    p.add_argument("--retries", type=int, default=None,
                   help="reconnection attempts before giving up (default: forever)")
    p.add_argument("--backoff", type=float, default=0.5, help="first reconnection delay, s")
    p.add_argument("--max-backoff", type=float, default=10.0)
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="I3D precision (default: the run's; bf16 is ~3x faster on AMX)")
    p.add_argument("--device", choices=DEVICES, default="auto")
    incident_flags(p)


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
        if name != "train":  # train's --config is read by TrainConfig's own reader
            p.add_argument("--config", metavar="FILE",
                           help="flat YAML of this command's options, keys as the option names "
                                "(batch-size or batch_size); flags given here override it")
        return p

    p = add("extract", "Extract I3D cuboid features of videos (files or folders).",
            "stmil extract videos/ --out features/")
    p.add_argument("inputs", nargs="+", help="video files or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder for <id>.npy and <id>.json")
    p.add_argument("--overwrite", action="store_true", help="redo videos already extracted")
    _add_clip_options(p)
    _add_pipeline_options(p)

    p = add("classify", "Kinetics-400 top-k classes of a video (full I3D).",
            "stmil classify v_CricketShot_g04_c01_rgb.gif --top 5")
    p.add_argument("video")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--device", choices=DEVICES, default="auto")

    p = add("train", "Train a cuboid scorer from video-level labels (MIL).",
            "stmil train --data ROOT --features features/ --out runs/mil")
    p.add_argument("--data", help="dataset root (UCF-Crime, UCF-Crime2Local or folder)")
    p.add_argument("--features", help="folder of extracted features")
    p.add_argument("--out", help="run folder to write")
    p.add_argument("--config", help="flat YAML of train settings (flags override it)")
    _add_train_settings(p)
    p.add_argument("--grid", dest="old_grid", help=argparse.SUPPRESS)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")

    p = add("score", "Score videos or their features: per-frame scores, maps and boxes.",
            "stmil score video.mp4 --model runs/mil --out scores/ --overlay")
    p.add_argument("inputs", nargs="+", help="videos, feature files (.npy) or folders")
    p.add_argument("--model", required=True, help="run folder with model.safetensors (an export "
                   "folder with --backend onnxruntime)")
    p.add_argument("--out", required=True, help="folder for <id>.scores.json")
    p.add_argument("--threshold", type=float, default=None,
                   help="box = union of cuboids scoring >= THRESHOLD (default: top cuboid)")
    p.add_argument("--overlay", action="store_true", help="also write <id>.overlay.mp4")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="torch (default): --model is a run folder; onnxruntime: --model is a "
                        "folder stmil export-model --model RUN wrote, whose graphs compute "
                        "features and scores (needs stmil[onnx]; docs/deploy.md)")
    _add_pipeline_options(p, shard=False)

    p = add("evaluate", "Temporal and spatiotemporal metrics of a run on a dataset split.",
            "stmil evaluate --data ROOT --features features/ --model runs/mil --json m.json")
    p.add_argument("--data")
    p.add_argument("--features")
    p.add_argument("--model", help="run folder")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--format", default="auto", choices=FORMATS)
    p.add_argument("--overlap", type=float, default=0.25,
                   help="cuboid positive when a GT box covers this fraction of it")
    p.add_argument("--threshold", type=float, default=None,
                   help="score threshold of false_alarm_rate, tiou and loc_false_positives "
                   "(default: the run's calibrated threshold, else 0.5, the papers')")
    p.add_argument("--skip-missing", action="store_true")
    p.add_argument("--json", help="also write the metrics here")
    p.add_argument("--compare", nargs="+", metavar="RUN", help="print a table across runs")
    p.add_argument("--boxes", help="Liu & Ma's UCF-Crime box pickle (e.g. Test_annotation.pkl)")
    p.add_argument("--interpolate", action="store_true",
                   help="with --boxes: interpolate boxes between annotated frames")

    p = add("synth", "Write the semi-synthetic benchmark (UCF-Crime2Local layout).",
            "stmil synth --out synth/ --footage data/vtest.avi --videos 48 --seed 0")
    p.add_argument("--out", required=True)
    p.add_argument("--footage", nargs="+", type=Path, help="real footage (default: built in)")
    p.add_argument("--videos", type=int, default=48)
    p.add_argument("--frames", type=int, default=160, help="frames per video")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true",
                   help="replace a previous synth output with other settings in --out")
    from stmil.synth.distractors import SCENARIOS
    p.add_argument("--scenario", choices=SCENARIOS, default="default",
                   help="hard: benign look-alike motion (fast walkers, vehicles, flicker, "
                   "sway, camera shake) in every video, outside the event box in anomalous ones")

    p = add("demo", "The main job: synth, extract, train 4 runs, evaluate, report.",
            "stmil demo --out demo-out")
    p.add_argument("--out", default="demo-out")
    p.add_argument("--footage", type=Path, help="real footage, e.g. data/vtest.avi")
    p.add_argument("--videos", type=int, default=48)
    p.add_argument("--frames", type=int, default=160, help="frames per video")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=DEVICES, default="auto")

    p = add("serve", "Look at runs, test videos, heat maps and score curves in a browser.",
            "stmil serve demo-out  # then open http://127.0.0.1:8000")
    p.add_argument("dir", help="a demo output, or a folder holding run folders with their "
                   "dataset and features, or stmil score outputs (served read-only)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="default 8000")

    p = add("import-features", "Import other projects' features (RTFM, UR-DMU, Sultani) as "
            "grid-1 stmil features.",
            "stmil import-features UCF_Test.list --format urdmu --root ucf-feats/ --out feats/")
    p.add_argument("inputs", nargs="+", help=".list files, feature files or folders")
    p.add_argument("--format", required=True, choices=interop.FORMATS)
    p.add_argument("--out", required=True, help="output folder for <id>.npy and <id>.json")
    p.add_argument("--root", help="folder the .list paths are relative to (default: the list's)")
    p.add_argument("--crop", type=int, help="keep this crop (0-based) instead of the mean")
    p.add_argument("--snippet-frames", type=int, default=16,
                   help="video frames per snippet or Sultani segment (default 16)")
    p.add_argument("--fps", type=float, default=30.0, help="the videos' frame rate (default 30)")
    p.add_argument("--width", type=int, default=320, help="the videos' width (default 320)")
    p.add_argument("--height", type=int, default=240, help="the videos' height (default 240)")
    p.add_argument("--frame-counts", help="text file of '<video> <n_frames>' lines: place the "
                   "features on the real frames (needed for Sultani's 32 segments); videos "
                   "it leaves out keep --snippet-frames a snippet, Sultani files are refused")

    p = add("gt", "Frame-label vector of a test list (.npy + manifest), for RTFM-style scripts.",
            "stmil gt --data UCF-Crime/ --features feats/ --out gt/ --list UCF_Test.list")
    _add_vector_options(p)
    p.add_argument("--convention", default="stmil", choices=interop.CONVENTIONS,
                   help="stmil: UCF-Crime's 1-based 's e' is frames s-1..e-1 (default); rtfm: "
                        "RTFM's make_gt_ucf.py rule (frames s..e, its gt-ucf.npy), to compare "
                        "with published numbers")

    p = add("export", "A run's frame scores of a test list (.npy + manifest), in gt's order.",
            "stmil export --data UCF-Crime/ --features feats/ --model runs/g1 --out scores/")
    _add_vector_options(p)
    p.add_argument("--model", required=True, help="run folder")

    p = add("export-features", "stmil features as RTFM / UR-DMU style (T, C) .npy files and a "
            ".list (cuboids averaged).",
            "stmil export-features feats/ --out rtfm/ --layout rtfm --data UCF-Crime/ "
            "--list ucf-i3d-test.list")
    p.add_argument("features", help="folder of stmil feature files")
    p.add_argument("--out", required=True, help="folder for the .npy files, the lists and "
                   "export.json")
    p.add_argument("--layout", default="plain", choices=interop.LAYOUTS,
                   help="plain: <id>.npy (T, C) and features.list; rtfm: <id>_i3d.npy "
                        "(T, 10, C), ucf-i3d.list and ucf-i3d-test.list; urdmu: ten "
                        "<id>__<k>.npy (T, C), UCF_Train.list and UCF_Test.list (needs --data)")
    p.add_argument("--data", help="dataset root: labels and splits (train list anomalous "
                   "first) and the test order of stmil gt")
    p.add_argument("--format", default="auto", choices=FORMATS, help="--data's format")
    p.add_argument("--list", help="an RTFM / UR-DMU list giving the test videos' order (and "
                   "UR-DMU's crop lines); with --layout plain, the videos and their order")
    p.add_argument("--prefix", help="write list entries as PREFIX/<file> (default: absolute "
                   "paths, which resolve from any working directory)")

    p = add("export-model", "The feature extractor (and a run's scorer with its gates) as "
            "ONNX graphs with a manifest, for ONNX Runtime and other runtimes (docs/deploy.md).",
            "stmil export-model --out exported/ --model runs/mil")
    p.add_argument("--out", required=True, help="folder for features.onnx, scorer.onnx and "
                   "manifest.json")
    p.add_argument("--model", help="run folder: also export its scorer, memory and motion "
                   "gates (scorer.onnx), and cut clips as it was trained")
    p.add_argument("--format", default="onnx", choices=MODEL_FORMATS, help="onnx (opset 17)")
    p.add_argument("--precision", default="fp32", choices=MODEL_PRECISIONS,
                   help="the feature graph's weights and arithmetic: fp32 (default; matches "
                        "PyTorch to ~1e-6) or fp16 (half the file, for GPUs; the scorer stays "
                        "fp32)")

    _add_live_parsers(add)
    parser.commands = sub.choices  # type: ignore[attr-defined]  # read by apply_config
    return parser


@dataclass(frozen=True)
class ConfigSource:
    """A value that ``--config`` gave an option: where (``FILE: key``, the key as written) and
    the value itself (the very object set as the option's default, so that the parsed
    namespace tells by identity whether a flag replaced it)."""

    where: str
    value: object


def apply_config(parser: argparse.ArgumentParser, argv: list[str]) -> dict[str, ConfigSource]:
    """Make the keys of the ``--config FILE`` given in ``argv`` its command's defaults, so that
    flags given in ``argv`` override them; returns where each came from, by option dest.

    The file is a flat YAML mapping of the command's option names (``batch-size`` or
    ``batch_size``); each value is converted by the option's own type and checked against its
    choices. An unknown key, a wrong type or a bad choice is a :class:`ConfigError` naming the
    file and the key; a range error found later names them too (:func:`name_origin`).
    ``train`` reads its own ``--config`` (:func:`stmil.mil.config.read_config`).
    """
    command = parser.commands.get(argv[0]) if argv else None  # type: ignore[attr-defined]
    if command is None or argv[0] == "train":
        return {}
    required = [a for a in command._actions if a.required and a.option_strings]
    for a in required:  # they may come from the file: known only once it is read
        a.required = False
    path = command.parse_known_args(argv[1:])[0].config
    for a in required:
        a.required = True
    if path is None:
        return {}
    options = _options(command)
    values, sources = {}, {}
    for key, value in read_yaml_mapping(path, f"stmil {argv[0]} options").items():
        action = options.get(key.replace("_", "-"))
        if action is None:
            raise ConfigError(f"{path}: unknown key {key!r} for stmil {argv[0]}; valid keys: "
                              f"{', '.join(sorted(options))}")
        values[action.dest] = _config_value(action, value, f"{path}: {key}")
        sources[action.dest] = ConfigSource(f"{path}: {key}", values[action.dest])
        action.required = False
    command.set_defaults(**values)
    return sources


def _options(command: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """A command's options by long name (``batch-size``), ``--help`` and ``--config`` aside."""
    return {_long_option(a): a for a in command._actions
            if a.option_strings and a.dest not in ("help", "config")}


#: Library names of settings whose flag is named otherwise, by command (``make_dataset``'s
#: ``n_frames`` is ``synth --frames``).
SETTING_FLAGS = {"synth": {"n-videos": "videos", "n-frames": "frames"},
                 "demo": {"n-videos": "videos", "n-frames": "frames"}}
#: A range error's subject: ``NAME must be ...`` or ``--NAME must be ...``, the convention of
#: every settings check (``ExtractSettings``, ``WatchConfig``, ``EventConfig``...).
RANGE_ERROR = re.compile(r"(?:--)?([A-Za-z][\w-]*) must be ")


def name_origin(message: str, parser: argparse.ArgumentParser, args: argparse.Namespace,
                sources: dict[str, ConfigSource]) -> str:
    """A range error ``message`` with its subject named where the value came from: ``FILE:
    key must be ...`` for a value of the ``--config`` file that no flag replaced, ``--flag
    must be ...`` for a flag; unchanged when the subject is no option of the command or kept
    its default (the value then came from elsewhere, such as a run's calibration).

    The one place that turns a settings check's name into the user's words: the checks name
    the setting, the CLI knows where its value was given.
    """
    m = RANGE_ERROR.match(message)
    command = parser.commands.get(args.command)  # type: ignore[attr-defined]
    if m is None or command is None:
        return message
    name = m[1].replace("_", "-")
    action = _options(command).get(SETTING_FLAGS.get(args.command, {}).get(name, name))
    if action is None or not hasattr(args, action.dest):
        return message
    value, source = getattr(args, action.dest), sources.get(action.dest)
    if source is not None and value is source.value:
        where = source.where
    elif value is not action.default:
        where = f"--{_long_option(action)}"
    else:
        return message
    return where + message[m.end(1):]


def _long_option(action: argparse.Action) -> str:
    """``batch-size`` for ``--batch-size`` (``drop`` for ``--drop/--no-drop``)."""
    return next(s for s in action.option_strings if s.startswith("--"))[2:]


TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", Path: "a path"}


def _config_value(action: argparse.Action, value: object, where: str) -> object:
    """A ``--config`` value for ``action``, converted as argparse converts the flag's text."""
    if action.nargs == 0:  # a flag: store_true/store_false, or --x/--no-x
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        if isinstance(action, argparse.BooleanOptionalAction):
            return value
        return action.const if value else action.default
    many = action.nargs not in (None, "?")
    items = value if many and isinstance(value, list) else [value]
    if not items or (isinstance(value, list) and not many):
        raise ConfigError(f"{where} must be one value, got {value!r}")
    convert = action.type or str
    out = []
    for item in items:
        try:
            if item is None or isinstance(item, (bool, list, dict)):
                raise ValueError
            item = convert(str(item))
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            kind = TYPE_NAMES.get(convert, f"a valid {getattr(convert, '__name__', 'value')}")
            raise ConfigError(f"{where} must be {kind}, got {item!r}") from None
        if action.choices is not None and item not in action.choices:
            raise ConfigError(f"{where} must be one of {', '.join(map(str, action.choices))}, "
                              f"got {item!r}")
        out.append(item)
    return out if many else out[0]


#: Where a command's log lines go when not stderr: the demo's progress and table are its output.
LOG_STREAM = {"demo": "stdout"}


class LineFormatter(logging.Formatter):
    """A record as its message, warnings as ``warning: ...`` and errors as ``error: ...``."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = ("error: " if record.levelno >= logging.ERROR else
                  "warning: " if record.levelno >= logging.WARNING else "")
        return prefix + record.getMessage()


class _TqdmHandler(logging.Handler):
    """Writes each line with ``tqdm.write`` (progress bars stay whole) to ``sys.<stream>``, looked
    up at each line (so a replaced ``sys.stderr``, as in tests, is honoured)."""

    def __init__(self, stream: str) -> None:
        super().__init__()
        self.stream = stream
        self.setFormatter(LineFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=getattr(sys, self.stream))
        except Exception:
            self.handleError(record)


@contextmanager
def logging_to(stream: str) -> Iterator[None]:
    """The ``stmil`` logger's INFO and above written to ``sys.<stream>`` while inside; the
    logger is left as it was found afterwards (so calling :func:`main` again, or the library
    after it, never sees a second handler or INFO lines)."""
    logger = logging.getLogger("stmil")
    handler = _TqdmHandler(stream)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # a root handler the caller set up would print each line twice
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, sources = None, {}
    try:
        sources = apply_config(parser, argv)
        args = parser.parse_args(argv)
        with logging_to(LOG_STREAM.get(args.command, "stderr")):
            return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (StmilError, OSError) as e:
        if args.debug if args is not None else "--debug" in argv:
            raise
        line = _one_line(e)
        if isinstance(e, StmilError) and args is not None:
            line = name_origin(line, parser, args, sources)
        print(f"error: {line}", file=sys.stderr)
        return 1


def _one_line(e: BaseException) -> str:
    """A user-facing error on one line; an ``OSError`` names its file and the system's reason."""
    if isinstance(e, OSError) and e.filename and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return " ".join(str(e).split())


if __name__ == "__main__":
    sys.exit(main())
