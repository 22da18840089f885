"""Pre-extracted features of other projects -> stmil grid-1 feature files.

Formats (shapes and conventions: docs/formats.md, "Foreign formats"):

- ``rtfm`` (RTFM, MGFN): one float ``.npy`` per video, ``(T, 10, D)`` (ten crops) or ``(T, D)``,
  usually I3D with ``D = 2048``; T snippets of 16 frames.
- ``urdmu`` (UR-DMU): the same with ``D = 1024``, often one ``(T, D)`` file per crop named
  ``<id>__<k>.npy`` (``k`` = 0..9), listed in a ``.list`` file.
- ``sultani``: 32 segments x D floats per video, one segment a line, whitespace-separated
  ``.txt`` (C3D fc6, ``D = 4096``); given the video's frame count, spread back over its
  16-frame clips as Sultani's code cut them (:func:`sultani_clip_segments`).

Inputs are ``.list`` files (one path a line, relative to ``root`` or the list's folder), the
feature files themselves, or folders of them. Crops are averaged (or one is kept with
``crop``); each video becomes ``<id>.npy`` ``(T, 1, D)`` float16 and ``<id>.json`` with
``grid: 1`` and where it came from, written by the feature store's one writer, so
``stmil train --instances frame`` and ``stmil evaluate`` read them unchanged. An import
replaces what stmil wrote in ``out`` (an earlier import, or ``extract``: the folder's ledger,
:mod:`stmil.ownership`) and refuses anything else.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stmil import __version__
from stmil.atomic import check_writable, remove_stale_temps
from stmil.errors import ConfigError, StmilError
from stmil.features.pipeline_config import FPS_RANGE, MAX_CLIP
from stmil.features.store import FeatureError, FeatureMeta, check_ours, write_features
from stmil.interop import FORMATS
from stmil.interop.order import stem_id
from stmil.settings import Settings, setting

log = logging.getLogger(__name__)

#: Channels each format usually has (a different D is accepted; this is only for messages).
USUAL_CHANNELS = {"rtfm": 2048, "urdmu": 1024, "sultani": 4096}
SULTANI_SEGMENTS = 32
FLOAT16_MAX = 65504.0
#: The most frames ``--frame-counts`` may give a video: 92 hours at 30 frames per second.
MAX_FRAMES = 10_000_000
MAX_CROPS = 1000  # crops per snippet (ten-crop features have 10)
MAX_SIDE = 100_000  # pixels of a video's width or height


@dataclass(frozen=True)
class ImportSettings(Settings):
    """How foreign features are read and described (one CLI flag per field).

    - ``format``: one of :data:`FORMATS`;
    - ``crop``: keep crop ``k`` (0-based) of ten-crop features instead of their mean;
    - ``snippet_frames``: video frames per snippet (RTFM / UR-DMU) or per segment (Sultani);
    - ``fps``, ``width``, ``height``: the videos' frame rate and size (UCF-Crime: 30, 320x240),
      which place the features' frames and boxes.
    """

    format: str = setting(help="the foreign feature format", choices=FORMATS)
    crop: int | None = setting(None, "keep this crop (0-based) instead of the mean", lo=0,
                               hi=MAX_CROPS - 1)
    snippet_frames: int = setting(16, "video frames per snippet or Sultani segment", lo=1,
                                  hi=MAX_CLIP)
    fps: float = setting(30.0, "the videos' frame rate", unit="frames per second", lo=0,
                         lo_open=True, hi=FPS_RANGE[1])
    width: int = setting(320, "the videos' width", unit="pixels", lo=1, hi=MAX_SIDE)
    height: int = setting(240, "the videos' height", unit="pixels", lo=1, hi=MAX_SIDE)


@dataclass
class ImportSummary:
    """What one import did: video ids written and ``(file, reason)`` of those refused."""

    written: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def line(self) -> str:
        return f"{len(self.written)} imported, {len(self.failed)} failed"


def video_id(path: Path) -> tuple[str, int | None]:
    """``(video id, crop index or None)`` of a feature file: ``Abuse028_x264__3.npy`` ->
    ``("Abuse028_x264", 3)``; ``Abuse001_x264_i3d.npy`` -> ``("Abuse001_x264", None)``."""
    return stem_id(path.stem)


def read_list(list_file: Path, root: Path | None = None) -> list[Path]:
    """Paths named by a ``.list`` file, one a line (blank lines skipped), relative ones joined
    to ``root`` (default: the list's folder)."""
    base = root if root is not None else list_file.parent
    out = []
    try:
        text = list_file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise FeatureError(f"{list_file}: not a text list (not UTF-8 at byte {e.start}); give a "
                           "list of feature file paths, one a line") from None
    for line in text.splitlines():
        line = line.strip()
        if line:
            p = Path(line)
            out.append(p if p.is_absolute() else base / p)
    return out


def find_inputs(inputs: Iterable[Path | str], fmt: str, root: Path | None = None
                ) -> list[Path]:
    """Feature files named by ``inputs``: ``.list`` files, feature files, or folders (searched
    recursively for ``.npy``, or ``.txt`` for Sultani). A missing input is an ``OSError``."""
    ext = ".txt" if fmt == "sultani" else ".npy"
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob(f"*{ext}") if not p.name.startswith("."))
        elif item.suffix == ".list":
            files += read_list(item, root)
        elif item.exists():
            files.append(item)
        else:
            raise FileNotFoundError(2, "No such file or directory", str(item))
    return files


def group_crops(files: Iterable[Path]) -> dict[str, list[tuple[int | None, Path]]]:
    """Files by video id, in first-seen order; each video's crops sorted by index."""
    out: dict[str, list[tuple[int | None, Path]]] = {}
    for f in files:
        vid, crop = video_id(f)
        out.setdefault(vid, []).append((crop, f))
    for parts in out.values():
        parts.sort(key=lambda p: -1 if p[0] is None else p[0])
    return out


def _bad(path: Path, what: str) -> FeatureError:
    return FeatureError(f"{path}: {what}")


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise _bad(path, "missing (named by the list); fix the list or pass --root")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - a damaged header raises many kinds (TokenError,
        # SyntaxError, ValueError, EOFError for an empty or truncated file, ...)
        why = " ".join(str(e).split()) or "the file is empty or cut short"
        raise _bad(path, f"not a NumPy array file ({why[:120]}); export the features "
                         "again") from e
    if not isinstance(arr, np.ndarray):  # an .npz archive
        raise _bad(path, "not a NumPy array file (an archive of arrays); export each video's "
                         "features as one .npy")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise _bad(path, f"holds {arr.dtype} values, not numbers; export the features as "
                         "float32")
    return arr


def _load_sultani(path: Path) -> np.ndarray:
    if not path.is_file():
        raise _bad(path, "missing; fix the list or pass --root")
    try:
        rows = [line.split() for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip()]
        arr = np.array(rows, dtype=np.float64)
    except (UnicodeDecodeError, ValueError) as e:
        raise _bad(path, "not a Sultani feature file: whitespace-separated numbers, one "
                         "segment a line, every line of the same length, are expected") from e
    if arr.shape[0] != SULTANI_SEGMENTS or arr.ndim != 2:
        raise _bad(path, f"{arr.shape[0]} lines, a Sultani feature file has "
                         f"{SULTANI_SEGMENTS} (one per segment)")
    return arr


def video_array(parts: list[tuple[int | None, Path]], s: ImportSettings
                ) -> tuple[np.ndarray, str]:
    """One video's features ``(T, D)`` float64 from its file(s), crops averaged or one kept,
    and what was done with the crops (``"mean of 10"``, ``"crop 3"``, ``"single"``).

    Raises :class:`FeatureError` naming the file when a shape is wrong, crops disagree, the
    values are not finite, or a requested crop is absent.
    """
    if s.format == "sultani":
        if len(parts) != 1:
            raise _bad(parts[1][1], f"a second file for video {video_id(parts[0][1])[0]}")
        arr = _load_sultani(parts[0][1])
        path, crops = parts[0][1], "single"
    elif len(parts) == 1 and parts[0][0] is None:  # one file: (T, D) or (T, crops, D)
        path, crops = parts[0][1], "single"
        arr = _load_npy(path)
        if arr.ndim == 3:
            crops = f"crop {s.crop}" if s.crop is not None else f"mean of {arr.shape[1]}"
            if s.crop is not None and s.crop >= arr.shape[1]:
                raise _bad(path, f"has {arr.shape[1]} crops, no crop {s.crop}")
            arr = arr[:, s.crop] if s.crop is not None else arr.mean(axis=1, dtype=np.float64)
        elif arr.ndim != 2:
            raise _bad(path, f"shape {arr.shape}; expected (T, crops, D) or (T, D)")
        elif s.crop is not None:
            raise _bad(path, f"shape {arr.shape} has no crops, so no crop {s.crop}; leave "
                             "--crop out")
    else:  # one (T, D) file per crop
        crops = {c: p for c, p in parts if c is not None}
        path = parts[0][1]
        if all(c is None for c, _ in parts):
            raise _bad(parts[1][1], f"a second file for video {video_id(path)[0]} (also "
                                    f"{path}); list each video once")
        if len({c for c, _ in parts}) != len(parts):
            raise _bad(path, "a crop of this video is listed twice; list each crop once")
        if len(crops) != len(parts):
            raise _bad(path, "mixes per-crop files (<id>__<k>.npy) with a whole-video file")
        if s.crop is not None:
            if s.crop not in crops:
                raise _bad(path, f"crop {s.crop} of this video is not listed "
                                 f"(crops {sorted(crops)})")
            crops = {s.crop: crops[s.crop]}
        what = f"crop {s.crop}" if s.crop is not None else f"mean of {len(crops)}"
        arrays = []
        for _, p in sorted(crops.items()):
            a = _load_npy(p)
            if a.ndim != 2 or (arrays and a.shape != arrays[0].shape):
                want = f"{arrays[0].shape} like crop {min(crops)}" if arrays else "(T, D)"
                raise _bad(p, f"shape {a.shape}; expected {want}")
            arrays.append(a)
            path = p
        arr, crops = np.mean(arrays, axis=0, dtype=np.float64), what
    if not np.issubdtype(arr.dtype, np.number) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise _bad(path, f"shape {arr.shape} of {arr.dtype}; expected numbers, T >= 1, D >= 1")
    arr = np.asarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise _bad(path, "NaN or infinite values; re-extract these features")
    if np.abs(arr).max() > FLOAT16_MAX:
        raise _bad(path, f"values beyond {FLOAT16_MAX:g} do not fit stmil's float16 files")
    return arr, crops


def read_frame_counts(path: Path | str) -> dict[str, int]:
    """Video id -> frame count from a text file of ``<video> <n_frames>`` lines (``<video>``: an
    id, a file name or a path such as ``Abuse/Abuse028_x264.mp4``; ``#`` starts a comment).

    A count must be a whole number from 1 to :data:`MAX_FRAMES`; a file that is not UTF-8 text
    is a :class:`ConfigError` naming it.
    """
    path = Path(path)
    out: dict[str, int] = {}
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file of '<video> <n_frames>' lines (byte "
                          f"{e.start} is not UTF-8); give --frame-counts such a file") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[1].isdigit() or not 1 <= int(fields[1]) <= MAX_FRAMES:
            raise ConfigError(f"{path}:{lineno}: expected '<video> <n_frames>' with a whole "
                              f"number from 1 to {MAX_FRAMES:,}, got {line[:80]!r}")
        name = Path(fields[0])
        vid = name.stem if name.suffix.lower() in (".mp4", ".avi", ".mkv") else name.name
        out[vid] = int(fields[1])
    return out


def sultani_clip_segments(n_clips: int) -> np.ndarray:
    """The segment (0-based) whose features each of a video's C3D clips takes: ``(n_clips,)``
    int64.

    Sultani's ``Save_C3DFeatures_32Segments.m`` cuts the video's ``n`` clips (1-based) at
    ``shots = round(linspace(1, n, 33))``, MATLAB's round (half away from zero); segment ``k``
    is clips ``shots(k) .. shots(k+1) - 1``, or the single clip ``shots(k)`` when that range is
    empty. Segments are disjoint when ``n >= 33``; with fewer clips a clip may fall in several,
    and takes the last of them, as his ``Evaluate_Anomaly_Detector.m`` does (later segments
    overwrite earlier ones). The last clip ``n`` is in no segment once ``n > 17`` (his
    evaluation leaves its frames at score 0); here it takes segment 32.
    """
    if n_clips < 1:
        raise ValueError(f"a video needs at least one clip, got n_clips={n_clips}")
    s = SULTANI_SEGMENTS
    # round(1 + k (n - 1) / s), half up, in exact integers (k (n - 1) / s + 1/2, floored).
    shots = 1 + (np.arange(s + 1) * (n_clips - 1) + s // 2) // s
    seg = np.full(n_clips, s - 1, dtype=np.int64)
    for k in range(s):
        first, last = shots[k], max(shots[k + 1] - 1, shots[k])  # 1-based, inclusive
        seg[first - 1:last] = k
    return seg


def fit_frames(arr: np.ndarray, n_frames: int | None, s: ImportSettings, where: Path
               ) -> tuple[np.ndarray, int]:
    """The ``(T, D)`` clips of one video and its frame count, with the video's real length.

    Sultani's 32 segments ``(32, D)`` become the video's ``n_frames // snippet_frames`` clips,
    each taking the features of the segment Sultani's code put it in
    (:func:`sultani_clip_segments`). Snippet features keep their T; the frame count must then
    cover every snippet but the last's end and end before a snippet more would start:
    ``(T - 1) * snippet_frames < n_frames < (T + 1) * snippet_frames``. ``n_frames=None``
    keeps T and gives ``T * snippet_frames`` frames.
    """
    snip = s.snippet_frames
    if n_frames is None:
        return arr, arr.shape[0] * snip
    if s.format == "sultani":
        t = n_frames // snip
        if t < 1:
            raise _bad(where, f"its video has {n_frames} frames, fewer than one {snip}-frame "
                              "clip")
        return arr[sultani_clip_segments(t)], n_frames
    t = arr.shape[0]
    if not (t - 1) * snip < n_frames < (t + 1) * snip:
        raise _bad(where, f"{t} snippets of {snip} frames cover {(t - 1) * snip + 1} to "
                          f"{(t + 1) * snip - 1} frames, but --frame-counts gives its video "
                          f"{n_frames}; wrong video or snippet length?")
    return arr, n_frames


def import_meta(arr: np.ndarray, crops: str, parts: list[tuple[int | None, Path]],
                s: ImportSettings, n_frames: int | None = None) -> FeatureMeta:
    """The feature metadata of an imported ``(T, D)`` array: grid 1 and its provenance
    (``crops``: what :func:`video_array` says it did with the crops; ``n_frames``: the video's
    length, default ``T * snippet_frames``)."""
    t, d = arr.shape
    files = [str(p.resolve()) for c, p in parts if s.crop is None or c is None or c == s.crop]
    return FeatureMeta(
        source=files[0], fps=float(s.fps), source_fps=float(s.fps),
        n_frames=n_frames if n_frames is not None else t * s.snippet_frames,
        width=s.width, height=s.height, clip_len=s.snippet_frames, stride=s.snippet_frames,
        size=112 if s.format == "sultani" else 224, grid=1, endpoint=f"import:{s.format}",
        tail="drop", n_clips=t, channels=d, dtype="float16", import_format=s.format,
        import_files=tuple(files),  # the files read (with --crop K, crop K's only)
        import_crops=crops, stmil_version=__version__)


def _warn_uncounted(missing: list[str], total: int, s: ImportSettings) -> None:
    """One warning for the ``missing`` videos (of ``total``) that ``--frame-counts`` leaves out."""
    if not missing:
        return
    some = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
    if s.format == "sultani":
        then = ("they are refused (a Sultani file needs its video's frame count); import them "
                "without --frame-counts")
    else:
        then = f"they keep {s.snippet_frames} frames a snippet (n_frames = {s.snippet_frames} T)"
    log.warning("%d of %d videos are not in --frame-counts (%s): %s", len(missing), total,
                some, then)


def import_features(
    inputs: Iterable[Path | str], out: Path | str, settings: ImportSettings,
    root: Path | str | None = None,
    frame_counts: dict[str, int] | None = None, progress: bool = False,
) -> ImportSummary:
    """Import every video named by ``inputs`` into ``out`` (see the module docstring).

    ``frame_counts`` (video id -> frames, :func:`read_frame_counts`) places the features on
    the videos' real frames (:func:`fit_frames`). It may cover part of the import: a video it
    does not name keeps ``snippet_frames`` frames a snippet, as without it, except a Sultani
    32-segment file, which cannot be placed without its video's length and is refused. One
    warning says how many videos it does not name. ``progress`` shows a progress bar (one
    step per video).

    A bad video (wrong shape, NaN, a missing file, an output not stmil's: ``check_ours`` of
    the store) is logged as one error naming the file and left out; the others are imported.
    Returns what was done.
    """
    out = Path(out)
    groups = group_crops(find_inputs(inputs, settings.format,
                                     Path(root) if root is not None else None))
    if not groups:
        raise StmilError(f"no {settings.format} feature files found in the inputs")
    check_writable(out)
    remove_stale_temps(out)
    if frame_counts is not None:
        _warn_uncounted([vid for vid in groups if vid not in frame_counts], len(groups),
                        settings)
    summary = ImportSummary()
    for vid, parts in tqdm(groups.items(), unit="video", disable=not progress, leave=False):
        try:
            check_ours(out, vid)
            arr, crops = video_array(parts, settings)
            n_frames = frame_counts.get(vid) if frame_counts is not None else None
            if frame_counts is not None and n_frames is None and settings.format == "sultani":
                raise _bad(parts[0][1], f"video {vid} is not in --frame-counts, and a Sultani "
                                        "32-segment file cannot be placed on its video's clips "
                                        "without the video's frame count")
            arr, n_frames = fit_frames(arr, n_frames, settings, parts[0][1])
            meta = import_meta(arr, crops, parts, settings, n_frames)
            write_features(out, vid, arr[:, None, :].astype(np.float16), meta,
                           command="import-features")
            summary.written.append(vid)
        except (StmilError, OSError) as e:
            reason = " ".join(str(e).split())
            if isinstance(e, OSError) and e.filename and e.strerror:
                reason = f"{e.filename}: {e.strerror}"
            summary.failed.append((vid, reason))
            log.error("%s", reason)
    return summary
