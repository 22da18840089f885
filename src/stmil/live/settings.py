"""Settings of ``stmil events``, ``calibrate`` and ``watch`` (:mod:`stmil.settings`), importable
without torch: the CLI builds their flags from them. :class:`~stmil.live.incidents.EventConfig`
holds the incident rules; the classes here offer them as flags that default to the run's
calibration."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stmil.device import DEVICES
from stmil.features.pipeline_config import (
    BACKEND_HELP,
    BACKENDS,
    EXPORTED_HELP,
    FPS_RANGE,
    MAX_CLIP,
    PRECISIONS,
    backend_rules,
)
from stmil.live.clip import MAX_SECONDS as CLIP_SECONDS
from stmil.live.clip import POST_ROLL, PRE_ROLL, RING_SECONDS
from stmil.live.incidents import MAX_SECONDS, EventConfig
from stmil.settings import Settings, require, setting, setting_like

MAX_TIMEOUT = 3600.0  # seconds: an open or read that takes longer is a dead stream


LOOPBACK = "127.0.0.1"  # the live page's default address: this machine only


@dataclass(frozen=True)
class WatchConfig(Settings):
    """How ``stmil watch`` reads and reports. Times in seconds."""

    realtime: bool = setting(False, "play a file at its frame rate (else as fast as possible)")
    fps: float | None = setting(None, "resample the source (default: the run's rate)",
                                unit="frames per second", lo=FPS_RANGE[0], hi=FPS_RANGE[1])
    stride: int | None = setting(None, "score one clip every STRIDE (resampled) frames "
                                 "(default: the run's)", unit="frames", lo=1, hi=MAX_CLIP)
    drop: bool | None = setting(None, "drop clips rather than fall behind (default: for "
                                "streams, cameras and --realtime)")
    heartbeat: float = setting(10.0, "between heartbeat lines (0: off)", unit="seconds", lo=0,
                               hi=MAX_SECONDS)
    update: float = setting(5.0, "between update lines of an open incident (0: off)",
                            unit="seconds", lo=0, hi=MAX_SECONDS)
    timeout: float = setting(10.0, "stream open/read timeout", unit="seconds", lo=0,
                             lo_open=True, hi=MAX_TIMEOUT)
    retries: int | None = setting(None, "reconnection attempts before giving up (default: "
                                  "forever)", lo=0, hi=1_000_000)
    backoff: float = setting(0.5, "first reconnection delay, doubled up to --max-backoff",
                             unit="seconds", lo=0, hi=MAX_TIMEOUT)
    max_backoff: float = setting(10.0, "longest reconnection delay", unit="seconds", lo=0,
                                 lo_open=True, hi=MAX_SECONDS)
    precision: str | None = setting(None, "I3D precision (default: the run's; bf16 is ~3x "
                                    "faster on AMX)", choices=PRECISIONS)
    device: str = setting("auto", "torch device", choices=DEVICES)
    serve: int | None = setting(None, "show the newest frame, its map, the scores and the "
                                "incidents on a live page at http://HOST:PORT (the serve "
                                "extra; docs/serve.md)", lo=1, hi=65535, metavar="PORT")
    serve_host: str = setting(LOOPBACK, "address of the --serve page (127.0.0.1: this "
                              "machine only; another is warned)", flag="host")
    backend: str = setting("torch", BACKEND_HELP + "; with onnxruntime or openvino, --model "
                           "may also be an export made with --model RUN, and PyTorch is not "
                           "imported", choices=BACKENDS)
    exported: Path | None = setting(None, EXPORTED_HELP, metavar="DIR")

    def rules(self) -> None:
        require(self.max_backoff >= self.backoff,
                f"{{max_backoff}} must be at least {{backoff}} ({self.backoff:g} s), "
                f"got {self.max_backoff!r}", "max_backoff", "backoff")
        host = self.serve_host
        require(bool(host.strip()) and not any(c.isspace() or c in "/@" for c in host),
                f"{{serve_host}} must be an address to listen on like 127.0.0.1, got {host!r}",
                "serve_host")
        require(self.serve is not None or host == LOOPBACK,
                f"{{serve_host}} must be given with {{serve}} PORT (it is the live page's "
                f"address), got {host} alone", "serve_host", "serve")
        backend_rules(self.backend, self.exported)
        require(self.backend == "torch" or self.precision in (None, "fp32"),
                f"{{precision}} {self.precision} is PyTorch's; {{backend}} {self.backend} runs "
                "the export's own precision", "precision", "backend")


@dataclass(frozen=True)
class Threshold(Settings):
    """``--threshold`` of ``events`` and ``watch``."""

    threshold: float | None = setting_like(EventConfig, "threshold", help=(
        "start an incident at this clip score (default: the run's calibration.json)"))


@dataclass(frozen=True)
class IncidentRules(Settings):
    """The incident rules as flags; ``None``: the run's calibration, else
    :class:`EventConfig`'s default."""

    hysteresis: float | None = setting_like(EventConfig, "hysteresis", help=(
        f"an open incident stays open down to threshold - HYSTERESIS (default "
        f"{EventConfig.hysteresis}, or the calibration's)"))
    min_duration: float | None = setting_like(EventConfig, "min_duration", help=(
        f"shorter incidents are not reported (default {EventConfig.min_duration}, or the "
        "calibration's)"))
    merge_gap: float | None = setting_like(EventConfig, "merge_gap", help=(
        f"incidents closer than this are one (default {EventConfig.merge_gap}, or the "
        "calibration's)"))


@dataclass(frozen=True)
class Evidence(Settings):
    """Where ``events`` and ``watch`` write the evidence of each incident."""

    snapshots: Path | None = setting(None, "folder for one JPEG per incident (peak frame, box)")
    clips: Path | None = setting(None, f"folder for one MP4 per incident: {PRE_ROLL:g} s before "
                                 f"its start to {POST_ROLL:g} s after its end, at most "
                                 f"{CLIP_SECONDS:g} s (live: from a ring buffer of the last "
                                 f"{RING_SECONDS:g} s of frames)")


@dataclass(frozen=True)
class EventsOptions(Settings):
    """``stmil events`` (:func:`stmil.live.events.events_inputs`)."""

    inputs: list[Path] = setting(help="videos or <id>.scores.json files", positional=True)
    model: Path = setting(help="run folder")
    out: Path | None = setting(None, "write the JSON lines here (default: stdout)")
    device: str = setting("auto", "torch device", choices=DEVICES)


@dataclass(frozen=True)
class CalibrateOptions(Settings):
    """``stmil calibrate`` (:func:`stmil.live.calibrate.calibrate`)."""

    model: Path = setting(help="run folder (calibration.json is added to it)", positional=True)
    data: Path = setting(help="the dataset root the run was trained on")
    features: Path = setting(help="its features folder")
    target: float = setting(1.0, "false incidents per hour of normal video", lo=0,
                            hi=1_000_000)


@dataclass(frozen=True)
class WatchOptions(Settings):
    """``stmil watch`` (:func:`stmil.live.watch.watch`) besides :class:`WatchConfig`."""

    source: str = setting(help="video file, URL (rtsp, rtmp, http(s), tcp, udp...) or "
                          "/dev/videoN", positional=True)
    model: Path = setting(help="run folder (an export folder made with --model RUN, with "
                          "--backend onnxruntime or openvino)")
    out: Path | None = setting(None, "append the JSON lines here (default: stdout)")
    name: str | None = setting(None, "name of the evidence files, NAME.incident-NNN.jpg/.mp4 "
                               "(default: the file's or camera's name, or the URL's "
                               "host_port_path)")
