"""Settings of ``stmil synth`` (:func:`stmil.synth.dataset.make_dataset`), checked by the one
validation engine (:mod:`stmil.settings`) and importable without PyAV."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stmil.errors import StmilError
from stmil.settings import SettingError, Settings, setting
from stmil.synth.distractors import SCENARIOS

#: Upper bounds of a benchmark: beyond them a typo (``--frames 100000000``) would run for days.
MAX_VIDEOS = 10_000
MAX_FRAMES = 18_000  # 10 minutes at 30 fps
MAX_SIDE = 4096


class SynthError(StmilError, ValueError):
    """Settings or an output folder that :func:`make_dataset` cannot use."""


class SynthSettingError(SettingError, SynthError):
    """A bad synth setting: both a :class:`SettingError` and a :class:`SynthError`."""


@dataclass(frozen=True)
class SynthSettings(Settings):
    """What :func:`~stmil.synth.dataset.make_dataset` makes (``--videos``, ``--frames``...)."""

    error_class = SynthSettingError

    n_videos: int = setting(48, "videos, half normal and half anomalous, half of each in "
                            "train", flag="videos", even=True, lo=4, hi=MAX_VIDEOS)
    n_frames: int = setting(160, "frames per video", flag="frames", lo=16, hi=MAX_FRAMES)
    seed: int = setting(0, "random seed (the output is the same for a seed)", lo=0,
                        hi=2**32 - 1)
    width: int = setting(320, unit="pixels", even=True, lo=32, hi=MAX_SIDE, cli=False)
    height: int = setting(240, unit="pixels", even=True, lo=32, hi=MAX_SIDE, cli=False)
    fps: float | None = setting(None, unit="frames per second", lo=0, lo_open=True, hi=240,
                                cli=False)
    test_fraction: float = setting(0.5, lo=0, lo_open=True, hi=1, hi_open=True, cli=False)
    scenario: str = setting("default", "hard: benign look-alike motion (fast walkers, "
                            "vehicles, flicker, sway, camera shake) in every video, outside "
                            "the event box in anomalous ones", choices=SCENARIOS)


@dataclass(frozen=True)
class SynthOptions(Settings):
    """``stmil synth``'s output and footage."""

    out: Path = setting(help="output folder")
    footage: list[Path] | None = setting(None, "real footage (default: built in)")
    overwrite: bool = setting(False, "replace a previous synth output with other settings in "
                              "--out")
