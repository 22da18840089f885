"""Command-line interface: the commands' flags, help and ``--config`` keys are generated from
their settings classes (:mod:`stmil.settings`); each command calls its library function.

A command is one :class:`Command` entry of :data:`COMMANDS`: its function, the settings classes
its flags come from, a line of help and an example. Adding a flag is adding a field to one of
those classes (see :mod:`stmil.settings`).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stmil import __version__
from stmil.datasets import load_dataset
from stmil.deploy.settings import ExportModelOptions, ModelFormat
from stmil.errors import ConfigError, StmilError, Terminated
from stmil.evaluation.settings import EvaluateOptions
from stmil.features.pipeline_config import (
    ClassifyOptions,
    ExtractOptions,
    ExtractorSettings,
    ExtractSettings,
    PipelineConfig,
)
from stmil.interop.export import export_features
from stmil.interop.gt import export_vectors
from stmil.interop.import_features import ImportSettings, import_features, read_frame_counts
from stmil.interop.settings import (
    ExportFeaturesOptions,
    GtOptions,
    ImportOptions,
    ScoresOptions,
    VectorOptions,
)
from stmil.live import watch as live
from stmil.live.calibrate import calibrate
from stmil.live.events import event_config, events_inputs
from stmil.live.incidents import EventConfig
from stmil.live.settings import (
    CalibrateOptions,
    EventsOptions,
    Evidence,
    IncidentRules,
    Threshold,
    WatchConfig,
    WatchOptions,
)
from stmil.mil.config import TrainConfig, TrainPaths, run_config_keys
from stmil.options import DemoSettings, ScoreOptions, ServeOptions
from stmil.settings import (
    SettingError,
    Settings,
    Values,
    add_flags,
    collect,
    missing,
    read_yaml_mapping,
    setting,
)
from stmil.synth.settings import SynthOptions, SynthSettings


@dataclass(frozen=True)
class Common(Settings):
    """Flags of every command."""

    debug: bool = setting(False, "show tracebacks")
    quiet: bool = setting(False, "no progress bars (warnings are still shown)")


@dataclass(frozen=True)
class Command:
    """One command: ``run`` (its :class:`~stmil.settings.Values` -> exit status), the settings
    classes its flags and ``--config`` keys come from, its help line and example; ``adapt``
    turns a ``--config`` mapping into the command's keys (train reads a run's config.yaml)."""

    run: Callable[[Values], int]
    classes: tuple[type, ...]
    help: str
    example: str
    adapt: Callable[[dict, str], dict] | None = None


# --- the commands -----------------------------------------------------------------------------


def cmd_extract(o: Values) -> int:
    from stmil.deploy.backend import feature_extractor
    from stmil.features.extract import extract_many, parse_shard

    settings = o.get(ExtractSettings)  # validated before the network loads
    pipeline = o.get(PipelineConfig)
    shard = parse_shard(o.shard) if o.shard is not None else None
    x = o.get(ExtractorSettings)
    settings.check_grid(x.grid, x.endpoint)
    if pipeline.engine == "ray":  # the driver only describes the network: actors load it
        from stmil.features import ray_engine  # deferred: Ray, for --engine ray only

        run = functools.partial(ray_engine.extract_many, device=x.device)
        extractor = ray_engine.ActorNetwork(x.endpoint, x.grid, x.precision)
    else:
        run = extract_many
        exported = None if settings.exported is None else str(settings.exported)
        extractor = feature_extractor(settings.backend, exported, x.endpoint, x.grid,
                                      settings.size, settings.clip_len, x.device, x.precision)
    summary = run([str(p) for p in o.inputs], str(o.out), extractor, settings,
                  overwrite=o.overwrite, progress=not o.quiet, pipeline=pipeline, shard=shard)
    print(summary.line())
    if summary.failed and not summary.unrecorded:
        print(f"failures written to {Path(o.out) / 'failures.json'}", file=sys.stderr)
    return 1 if summary.failed or summary.unrecorded else 0


def cmd_classify(o: Values) -> int:
    from stmil.features.classify import classify_video

    top = classify_video(o.video, top=o.top, device=o.device)
    if o.json:
        print(json.dumps([{"label": n, "probability": p} for n, p in top], indent=1))
    else:
        for name, p in top:
            print(f"{p:7.4f}  {name}")
    return 0


def cmd_train(o: Values) -> int:
    from stmil.mil.train import train

    if o.old_grid is not None:
        raise ConfigError("train --grid was renamed: use --instances frame (was --grid 1, the "
                          "video-segment baseline) or --instances cuboid (the default)")
    summary = train(o.data, o.features, o.out, o.get(TrainConfig), resume=o.resume,
                    progress=not o.quiet)
    print(summary.line())
    return 0


def cmd_score(o: Values) -> int:
    from stmil.score import score_inputs

    written, failed = score_inputs(o.inputs, o.model, o.out, threshold=o.threshold,
                                   overlay=o.overlay, device=o.device,
                                   pipeline=o.get(PipelineConfig), progress=not o.quiet,
                                   backend=o.backend, exported=o.exported)
    for path in written:
        print(path)
    return 1 if failed else 0


def cmd_evaluate(o: Values) -> int:
    from stmil.evaluation.evaluate import compare_table, evaluate

    if o.compare:
        print(compare_table(o.compare, notes=True))
        return 0
    for key in ("data", "features", "model"):
        if o.values[key] is None:
            raise ConfigError(f"--{key} is required (or use --compare RUN...)")
    summary = evaluate(o.data, o.features, o.model, split=o.split, format=o.format,
                       overlap=o.overlap, skip_missing=o.skip_missing, json_out=o.json,
                       threshold=o.threshold, boxes=o.boxes, interpolate=o.interpolate)
    print(summary.table())  # the metrics, which AP papers report, the threshold, incidents
    return 0


def cmd_synth(o: Values) -> int:
    from stmil.synth.dataset import make_dataset

    s = o.get(SynthSettings)
    summary = make_dataset(Path(o.out), footage=o.footage, n_videos=s.n_videos, seed=s.seed,
                           n_frames=s.n_frames, progress=not o.quiet, overwrite=o.overwrite,
                           scenario=s.scenario)
    print(summary.line())
    return 0


def cmd_demo(o: Values) -> int:
    from stmil.demo import run_demo

    s = o.get(DemoSettings)
    run_demo(Path(s.out), footage=s.footage, n_videos=s.n_videos, seed=s.seed,
             n_frames=s.n_frames, iterations=s.iterations, device=s.device,
             progress=not o.quiet)
    return 0


def _serve_extra(e: ImportError) -> StmilError:
    return StmilError(f"stmil serve needs the serve extra ({e.name} is missing): "
                      "pip install 'stmil[serve]'")


def cmd_serve(o: Values) -> int:
    try:
        from stmil.serve.app import serve
    except ImportError as e:
        raise _serve_extra(e) from None
    serve(o.dir, host=o.host, port=o.port)
    return 0


def cmd_import_features(o: Values) -> int:
    counts = read_frame_counts(o.frame_counts) if o.frame_counts else None
    summary = import_features(o.inputs, o.out, o.get(ImportSettings), root=o.root,
                              frame_counts=counts, progress=not o.quiet)
    print(f"{summary.line()} -> {o.out}")
    return 1 if summary.failed else 0


def cmd_gt(o: Values) -> int:
    """The frame-label vector (``gt``) or, with ``--model``, the frame-score vector (``export``)."""
    path = export_vectors(o.data, o.features, o.out, run=o.values.get("model"), split=o.split,
                          format=o.format, tail=o.tail, skip_missing=o.skip_missing,
                          video_list=o.list, convention=o.values.get("convention", "stmil"))
    print(path)
    return 0


def cmd_export_features(o: Values) -> int:
    records = load_dataset(o.data, "all", o.format) if o.data else None
    summary = export_features(o.features, o.out, layout=o.layout, records=records,
                              video_list=o.list, prefix=o.prefix)
    print(summary.line())
    return 0


def cmd_export_model(o: Values) -> int:
    from stmil.deploy.export import export_model

    f = o.get(ModelFormat)
    manifest = export_model(o.out, run=o.model, format=f.format, precision=f.precision,
                            calibration=f.calibration)
    checked = ", ".join(f"{k} {v:.1e}" for k, v in manifest.data["checked"].items())
    graphs = "features" + (" and scorer" if manifest.scorer else "")
    print(f"{graphs} exported to {o.out} ({manifest.graph_format}, from ONNX opset "
          f"{manifest.data['opset']}, "
          f"{manifest.data['precision']}; checked against PyTorch: {checked})")
    return 0


def _event_settings(o: Values) -> EventConfig:
    return event_config(o.model, o.values.get("threshold"), o.hysteresis, o.min_duration,
                        o.merge_gap)


def cmd_events(o: Values) -> int:
    found, failed = events_inputs(o.inputs, o.model, config=_event_settings(o), out=o.out,
                                  snapshots=o.snapshots, clips=o.clips, device=o.device)
    print(f"{len(found)} incidents" + (f" -> {o.out}" if o.out else ""), file=sys.stderr)
    return 1 if failed else 0


def cmd_calibrate(o: Values) -> int:
    given = {k: o.values[k] for k in ("hysteresis", "min_duration", "merge_gap")
             if o.values[k] is not None}
    cal = calibrate(o.model, o.data, o.features, target=o.target, settings=EventConfig(**given))
    print(f"threshold {cal.threshold:.4f}: {cal.false_incidents} false incidents in "
          f"{cal.normal_hours * 60:.1f} min of normal {cal.split} video ({cal.per_hour:.2f}/h, "
          f"target {cal.target_per_hour:g}/h) -> {Path(o.model) / 'calibration.json'}")
    return 0


def cmd_watch(o: Values) -> int:
    config = o.get(WatchConfig)
    events = _event_settings(o)
    run = live.watch
    if config.serve is not None:  # the live page (docs/serve.md)
        try:
            from stmil.serve.live import watch_served  # deferred: the serve extra (starlette)
        except ImportError as e:
            raise _serve_extra(e) from None
        run = watch_served
    summary = run(o.source, o.model, events, config, out=o.out, snapshots=o.snapshots,
                  clips=o.clips, name=o.name)
    print(summary.line(), file=sys.stderr)
    return 1 if summary.failed else 0


INCIDENTS = (Threshold, IncidentRules)
COMMANDS: dict[str, Command] = {
    "extract": Command(cmd_extract, (ExtractOptions, ExtractSettings, ExtractorSettings,
                                     PipelineConfig),
                       "Extract I3D cuboid features of videos (files or folders).",
                       "stmil extract videos/ --out features/"),
    "classify": Command(cmd_classify, (ClassifyOptions,),
                        "Kinetics-400 top-k classes of a video (full I3D).",
                        "stmil classify v_CricketShot_g04_c01_rgb.gif --top 5"),
    "train": Command(cmd_train, (TrainPaths, TrainConfig),
                     "Train a cuboid scorer from video-level labels (MIL).",
                     "stmil train --data ROOT --features features/ --out runs/mil",
                     adapt=run_config_keys),
    "score": Command(cmd_score, (ScoreOptions, PipelineConfig),
                     "Score videos or their features: per-frame scores, maps and boxes.",
                     "stmil score video.mp4 --model runs/mil --out scores/ --overlay"),
    "evaluate": Command(cmd_evaluate, (EvaluateOptions,),
                        "Temporal and spatiotemporal metrics of a run on a dataset split.",
                        "stmil evaluate --data ROOT --features features/ --model runs/mil "
                        "--json m.json"),
    "synth": Command(cmd_synth, (SynthOptions, SynthSettings),
                     "Write the semi-synthetic benchmark (UCF-Crime2Local layout).",
                     "stmil synth --out synth/ --footage data/vtest.avi --videos 48 --seed 0"),
    "demo": Command(cmd_demo, (DemoSettings,),
                    "The main job: synth, extract, train 4 runs, evaluate, report.",
                    "stmil demo --out demo-out"),
    "serve": Command(cmd_serve, (ServeOptions,),
                     "Look at runs, test videos, heat maps and score curves in a browser.",
                     "stmil serve demo-out  # then open http://127.0.0.1:8000"),
    "import-features": Command(cmd_import_features, (ImportOptions, ImportSettings),
                               "Import other projects' features (RTFM, UR-DMU, Sultani) as "
                               "grid-1 stmil features.",
                               "stmil import-features UCF_Test.list --format urdmu --root "
                               "ucf-feats/ --out feats/"),
    "gt": Command(cmd_gt, (VectorOptions, GtOptions),
                  "Frame-label vector of a test list (.npy + manifest), for RTFM-style scripts.",
                  "stmil gt --data UCF-Crime/ --features feats/ --out gt/ --list "
                  "UCF_Test.list"),
    "export": Command(cmd_gt, (VectorOptions, ScoresOptions),
                      "A run's frame scores of a test list (.npy + manifest), in gt's order.",
                      "stmil export --data UCF-Crime/ --features feats/ --model runs/g1 "
                      "--out scores/"),
    "export-features": Command(cmd_export_features, (ExportFeaturesOptions,),
                               "stmil features as RTFM / UR-DMU style (T, C) .npy files and a "
                               ".list (cuboids averaged).",
                               "stmil export-features feats/ --out rtfm/ --layout rtfm --data "
                               "UCF-Crime/ --list ucf-i3d-test.list"),
    "export-model": Command(cmd_export_model, (ExportModelOptions, ModelFormat),
                            "The feature extractor (and a run's scorer with its gates) as ONNX "
                            "graphs with a manifest, for ONNX Runtime and other runtimes "
                            "(docs/deploy.md).",
                            "stmil export-model --out exported/ --model runs/mil"),
    "events": Command(cmd_events, (EventsOptions, Evidence, *INCIDENTS),
                      "Incidents (JSON lines) of videos or <id>.scores.json files.",
                      "stmil events video.mp4 --model runs/mil --snapshots snaps/"),
    "calibrate": Command(cmd_calibrate, (CalibrateOptions, IncidentRules),
                         "Choose a run's incident threshold for a false-incident rate.",
                         "stmil calibrate runs/mil --data synth/ --features features/ "
                         "--target 1"),
    "watch": Command(cmd_watch, (WatchOptions, Evidence, WatchConfig, *INCIDENTS),
                     "Live incidents from a file, a network stream or a camera.",
                     "stmil watch tcp://127.0.0.1:5000 --model runs/mil --snapshots snaps/"),
}


def classes_of(name: str) -> tuple[type, ...]:
    """The settings classes of command ``name``'s flags, :class:`Common` first."""
    return (Common, *COMMANDS[name].classes)


def build_parser() -> argparse.ArgumentParser:
    """The ``stmil`` parser: one subcommand per :data:`COMMANDS` entry, its flags generated
    from its settings classes. A flag that is not given is absent from the parsed namespace."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="stmil", formatter_class=fmt,
        description="Weakly supervised spatiotemporal video anomaly detection.",
        epilog="Run 'stmil COMMAND --help' for a command's options and an example.")
    parser.add_argument("--version", action="version", version=f"stmil {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help,
                           formatter_class=fmt, epilog=f"example:\n  {command.example}")
        add_flags(p, classes_of(name))
        p.add_argument("--config", metavar="FILE",
                       help="flat YAML of this command's options, keys as the option names "
                            "(batch-size or batch_size, not both); flags given here override it")
        if name == "train":
            p.add_argument("--grid", dest="old_grid", default=None, help=argparse.SUPPRESS)
    parser.commands = sub.choices  # type: ignore[attr-defined]
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[str, Values]:
    """The command named in ``argv`` and its :class:`Values`: flags over the ``--config``
    file's keys over defaults, each checked and named where it came from."""
    given: dict[str, Any] = vars(parser.parse_args(argv))
    name, path = given.pop("command"), given.pop("config", None)
    extra = {k: given.pop(k) for k in ("old_grid",) if k in given}
    config: dict = {}
    if path is not None:
        config = read_yaml_mapping(path, f"stmil {name} options")
        if COMMANDS[name].adapt is not None:
            config = COMMANDS[name].adapt(config, path)
    values = collect(classes_of(name), given, config, path, f"stmil {name}")
    absent = missing(values)
    if absent:
        raise ConfigError(f"the following arguments are required: {', '.join(absent)} (as "
                          f"flags or keys of --config); see stmil {name} --help")
    for cls in classes_of(name):  # every cross-field rule, whichever fields the command reads
        try:
            values.get(cls)
        except SettingError as e:
            raise ConfigError(values.render(e)) from None
    values.values.update(extra)
    return name, values


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


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`~stmil.errors.Terminated` (a ``KeyboardInterrupt``)
    in the main thread: the one place that gives every command Ctrl-C's clean-up when it is
    stopped by ``kill`` or a service manager. A second SIGTERM during that clean-up kills at
    once (the default action). Elsewhere than the main thread, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated(f"stopped by signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    values: Values | None = None
    try:
        with terminate_as_interrupt():
            name, values = parse(parser, argv)
            with logging_to(LOG_STREAM.get(name, "stderr")):
                return COMMANDS[name].run(values)
    except KeyboardInterrupt as e:
        print("terminated" if isinstance(e, Terminated) else "interrupted", file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(e, Terminated) else 130
    except (StmilError, OSError) as e:
        if values.debug if values is not None else "--debug" in argv:
            raise
        if isinstance(e, SettingError) and values is not None:
            line = " ".join(values.render(e).split())
        else:
            line = _one_line(e)
        print(f"error: {line}", file=sys.stderr)
        return 1


def _one_line(e: BaseException) -> str:
    """A user-facing error on one line; an ``OSError`` names its file and the system's reason."""
    if isinstance(e, OSError) and e.filename and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return " ".join(str(e).split())


if __name__ == "__main__":
    sys.exit(main())
