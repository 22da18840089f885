"""An offline HTML report: metric table, ROC curves, score timelines, overlays, configs.

Figures are PNG files (matplotlib, Agg canvas; pyplot's global state is never touched) in a
folder ``report-XXXXXXXX/`` beside ``report.html``, together with the overlays and any extra
files, all referenced by relative paths, so the folder can be moved or opened without a network.
Every text that comes from a run is HTML-escaped. The metric table is metrics x runs (one
column per run), so that it fits a 1,280 px window; the paths in the run configs are shown
relative to the report's folder, or by their final name when they lie outside it. A line (and a
link under each overlay) points to ``stmil serve`` (docs/serve.md) for every video.

The report is committed as one unit: its files are written into a hidden staging folder that is
renamed to a fresh ``report-XXXXXXXX/``, then ``report.html`` (which names that folder) is
replaced atomically, and only then is the folder of the previous report deleted. A kill at any
instant leaves the old report with all its files, or the new one with all of its.
"""

from __future__ import annotations

import html
import math
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

import numpy as np
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.metrics import roc_auc_score, roc_curve

from stmil.atomic import atomic_write, write_text
from stmil.errors import StmilError
from stmil.evaluation.evaluate import METRIC_KEYS, table_notes, threshold_of
from stmil.ownership import Legacy, check_can_write, commit
from stmil.timeline import frame_scores_from_clips

#: Where lower is better (false alarms, false positives); these columns come last.
LOWER_IS_BETTER = ("false_alarm_rate", "loc_false_positives")
#: Table columns, in order: every metric of :data:`~stmil.evaluation.evaluate.METRIC_KEYS`.
COLUMNS = (tuple(k for k in METRIC_KEYS if k not in LOWER_IS_BETTER)
           + tuple(k for k in METRIC_KEYS if k in LOWER_IS_BETTER))
VIDEOS_PER_PNG = 24
#: Where ``stmil serve`` listens by default (docs/serve.md); the report links to its pages.
SERVE_URL = "http://127.0.0.1:8000"
REPORT = "report.html"
#: The folder of one report's files; only folders of this name that a report references (or
#: hidden staging folders ``.report-*.tmp``) are ever deleted.
ASSETS_RE = re.compile(r"report-[a-z0-9_]{8}")
_GRID_COLS = 4
_CSS = """body{font-family:sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px}
td.num{text-align:right;font-family:monospace}th{background:#eee}th.run{max-width:12em}
th[scope=row]{text-align:left;font-weight:normal;font-family:monospace}
.wide{max-width:100%;overflow-x:auto}
img{max-width:100%}pre{background:#f6f6f6;padding:8px;overflow:auto}
figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}.muted{color:#777}"""


def write_report(out_dir: Path, runs: list[dict], overlays: list[dict] | None = None,
                 title: str = "stmil report", stage_times: dict | None = None,
                 files: dict[str, str] | None = None, command: str = "report",
                 legacy: Legacy | None = None) -> Path:
    """Write ``out_dir/report.html`` and its folder of figures; returns the report's path.

    ``runs``: dicts with ``name``, ``run`` (folder), ``config``, ``metrics`` (the keys of
    :data:`COLUMNS`, float or None), ``curves`` (``{"frame": (scores, labels), "cuboid":
    (scores, labels) or None}``) and ``videos`` (``(VideoFeatures, maps (n_clips, G*G))``
    pairs), as ``stmil.evaluation.evaluate.evaluate`` returns them. ``overlays``: ``{"video_id",
    "path"}``
    dicts, ``path`` absolute or relative to ``out_dir``; each file is copied into the report's
    folder. ``stage_times``: stage name -> seconds. ``files``: extra text files (name ->
    content, e.g. ``metrics.json``) written into the report's folder and linked.

    The report and its files are committed as one unit (see the module docstring); nothing in
    ``out_dir`` but ``report.html`` and the report folders is written or deleted.
    ``report.html`` is recorded in ``out_dir``'s ledger as ``command``'s; one that is not
    stmil's (:mod:`stmil.ownership`; ``legacy``: the caller's test for a folder from before
    ledgers) is refused (:class:`~stmil.errors.OutputError`) before anything is written.
    """
    out_dir = Path(out_dir).resolve()  # resolved once: relative paths below are out_dir's
    if not runs:
        raise StmilError("write_report needs at least one run")
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = [(o, _overlay_source(out_dir, Path(o["path"]))) for o in overlays or ()]
    for name in files or {}:
        if not re.fullmatch(r"[\w.-]+", name) or name.startswith("."):
            raise StmilError(f"{name!r}: report file names must be plain file names")
    check_can_write(out_dir, [REPORT], legacy)
    previous = _assets_of(out_dir / REPORT)
    for stale in out_dir.glob(".report-*.tmp"):  # a staging folder of a killed report
        shutil.rmtree(stale, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(dir=out_dir, prefix=".report-", suffix=".tmp"))
    assets = out_dir / stage.name[1:-len(".tmp")]  # report-XXXXXXXX
    try:
        os.chmod(stage, 0o777 & ~_umask())
        page = _page(stage, assets.name, runs, sources, title, stage_times, files or {},
                     root=out_dir)
        if assets.exists() or not ASSETS_RE.fullmatch(assets.name):
            raise FileExistsError(f"{assets}: report folder name already taken; rerun")
        os.rename(stage, assets)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    dest = out_dir / REPORT
    try:
        commit(out_dir, [(dest, lambda t: t.write_text(page, encoding="utf-8"))], command,
               legacy)
    except BaseException:
        shutil.rmtree(assets, ignore_errors=True)
        raise
    for old in previous - {assets}:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _page(stage: Path, folder: str, runs: list[dict], overlays: list[tuple[dict, Path]],
          title: str, stage_times: dict | None, files: dict[str, str],
          root: Path | None = None) -> str:
    """Write the figures, overlays and ``files`` into ``stage``; returns the HTML, whose
    references name ``folder/<file>``. Paths in the configs are shown by
    :func:`display_path` against ``root`` (the report's folder; default ``stage``'s parent)."""
    root = Path(root) if root is not None else stage.parent
    colors = _run_colors(len(runs))
    parts = [f"<h1>{_e(title)}</h1>", SERVE_LINE, "<h2>Metrics</h2>", metrics_table(runs)]
    parts.append("<h2>ROC curves</h2>")
    for kind in ("frame", "cuboid"):
        name = f"roc_{kind}.png"
        if plot_roc(runs, kind, colors, stage / name):
            parts.append(_img(f"{folder}/{name}", f"{kind}-level ROC"))
        else:
            parts.append(f'<p class="muted">No {kind}-level ROC: no run has {kind} labels of '
                         "both classes.</p>")
    pngs = plot_timelines(runs, colors, stage)
    if pngs:
        parts.append("<h2>Score timelines</h2>")
        parts.append('<p class="muted">Frame score = max over the cuboids of the frame\'s clip; '
                     "shaded: ground-truth anomalous intervals.</p>")
        parts += [_img(f"{folder}/{p.name}", "score timelines") for p in pngs]
    if overlays:
        parts += ["<h2>Overlays</h2>", _overlays_html(stage, folder, overlays)]
    if stage_times:
        parts += ["<h2>Stage times</h2>", _stage_table(stage_times)]
    if files:
        links = []
        for name, text in files.items():
            write_text(stage / name, text)
            links.append(f'<li><a href="{_e(quote(f"{folder}/{name}"))}">{_e(name)}</a></li>')
        parts += ["<h2>Files</h2>", f"<ul>{''.join(links)}</ul>"]
    parts.append("<h2>Configs</h2>")
    for r in runs:
        run = r.get("run")
        where = display_path(run, root) if run not in (None, "") else ""
        config = _relative_paths(r.get("config") or {}, root)
        parts.append(f"<h3>{_e(r['name'])}</h3><p class=\"muted\">{_e(where)}"
                     f"</p><pre>{_e(config_yaml(config))}</pre>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


#: The line under the title: ``stmil serve`` shows every test video, which the report cannot.
SERVE_LINE = (
    '<p>To look at every test video (normal ones too) with its heat map, boxes and score curves, '
    "click a peak to see its frame: run <code>stmil serve DIR</code> on this report's folder "
    f'and open <a href="{SERVE_URL}/videos">{SERVE_URL}/videos</a> (see <code>docs/serve.md'
    "</code>; <code>pip install 'stmil[serve]'</code>).</p>")


def display_path(path, root: Path) -> str:
    """``path`` as the report shows it: relative to ``root`` (POSIX, ``.`` for ``root``
    itself) when it lies inside it, else only its final name; a relative path is kept."""
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    root = Path(root)
    for cand, base in ((p, root), (p, root.resolve()), (p.resolve(), root.resolve())):
        try:
            return cand.relative_to(base).as_posix() or "."
        except ValueError:
            continue
    return p.name or p.as_posix()


def _relative_paths(x, root: Path):
    """A copy of a config with every absolute path (a ``Path``, or a string that is an absolute
    path) replaced by :func:`display_path`."""
    if isinstance(x, dict):
        return {k: _relative_paths(v, root) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_relative_paths(v, root) for v in x]
    if isinstance(x, Path) or (isinstance(x, str) and "\n" not in x and os.path.isabs(x)):
        return display_path(x, root)
    return x


def _assets_of(report: Path) -> set[Path]:
    """The report folders (``report-XXXXXXXX/``) that an existing ``report.html`` references."""
    if not report.is_file():
        return set()
    try:
        refs = referenced_files(report)
    except (OSError, ValueError):
        return set()
    out = set()
    for ref in refs:
        try:
            rel = ref.relative_to(report.parent)
        except ValueError:
            continue
        if len(rel.parts) > 1 and ASSETS_RE.fullmatch(rel.parts[0]):
            out.add(report.parent / rel.parts[0])
    return out


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _img(src: str, alt: str) -> str:
    return f'<p><img src="{_e(quote(src))}" alt="{_e(alt)}"></p>'


def _run_colors(n: int) -> list:
    """One colour per run, the same in every figure."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{float(x):.4f}"


def metrics_table(runs: Sequence[dict], columns: Sequence[str] = COLUMNS) -> str:
    """An HTML table: one column per run, one row per metric (the best value in bold), then a
    row with each run's threshold of the thresholded metrics (metrics x runs: every column fits
    a 1,280 px window for a handful of runs, where runs x metrics did not); the notes of
    :func:`~stmil.evaluation.evaluate.table_notes` below it (which AP papers report, what the
    thresholds are, the thresholded metrics at 0.5)."""
    best = {}
    for key in columns:
        vals = [r.get("metrics", {}).get(key) for r in runs]
        vals = [float(v) for v in vals if v is not None and not math.isnan(float(v))]
        if len(vals) > 1:
            best[key] = min(vals) if key in LOWER_IS_BETTER else max(vals)
    head = "".join(f'<th class="run" scope="col">{_e(r["name"])}</th>' for r in runs)
    rows = [f'<div class="wide"><table><thead><tr><th>metric</th>{head}</tr></thead><tbody>']
    for key in columns:
        cells = []
        for r in runs:
            v = r.get("metrics", {}).get(key)
            text = _e(_fmt(v))
            if v is not None and key in best and _fmt(v) == _fmt(best[key]):
                text = f"<b>{text}</b>"
            cells.append(f'<td class="num">{text}</td>')
        rows.append(f'<tr><th scope="row">{_e(key)}</th>{"".join(cells)}</tr>')
    cells = []
    for r in runs:
        value, source = threshold_of(r.get("metrics", {}))
        cells.append(f"<td>{_e(f'{value:.4g} ({source})')}</td>")
    rows.append(f'<tr><th scope="row">threshold</th>{"".join(cells)}</tr>')
    rows.append("</tbody></table></div>")
    notes = table_notes([(r["name"], r.get("metrics", {})) for r in runs], columns)
    rows += [f'<p class="muted">{_e(line)}</p>' for line in notes]
    return "\n".join(rows)


def _save(fig: Figure, dest: Path, dpi: int = 80) -> None:
    FigureCanvasAgg(fig)
    atomic_write(dest, lambda t: fig.savefig(t, format="png", dpi=dpi))


def plot_roc(runs: Sequence[dict], kind: str, colors: Sequence, dest: Path) -> bool:
    """ROC curves of ``curves[kind]`` (one per run, AUC in the legend) into ``dest``.

    Returns False (and writes nothing) when no run has both classes for ``kind``.
    """
    fig = Figure(figsize=(5, 4.4))
    ax = fig.add_subplot()
    drawn = 0
    for r, color in zip(runs, colors):
        pair = (r.get("curves") or {}).get(kind)
        if pair is None:
            continue
        scores, labels = np.asarray(pair[0], float).ravel(), np.asarray(pair[1], bool).ravel()
        if labels.all() or not labels.any():
            continue
        fpr, tpr, _ = roc_curve(labels, scores)
        auc = roc_auc_score(labels, scores)
        ax.plot(fpr, tpr, color=color, lw=1.5, label=f"{r['name']} (AUC {auc:.3f})")
        drawn += 1
    if not drawn:
        return False
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate",
           ylabel="true positive rate", title=f"{kind}-level ROC")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    _save(fig, dest, dpi=90)
    return True


def _videos_by_id(runs: Sequence[dict]) -> dict[str, list[tuple[int, object, np.ndarray]]]:
    """video_id -> ``[(run index, VideoFeatures, maps), ...]``, in first-seen order."""
    out: dict[str, list] = {}
    for i, r in enumerate(runs):
        for v, maps in r.get("videos") or ():
            out.setdefault(v.record.video_id, []).append((i, v, np.asarray(maps)))
    return out


def video_frame_scores(v, maps: np.ndarray) -> np.ndarray:
    """Frame scores ``(n_frames,)`` of one video from its cuboid maps ``(n_clips, G*G)``."""
    return frame_scores_from_clips(maps.max(axis=1), v.clip_ranges, v.meta.n_frames)


def plot_timelines(runs: Sequence[dict], colors: Sequence, out_dir: Path) -> list[Path]:
    """Small multiples of per-video score timelines, up to 24 videos per PNG.

    One line per run; GT intervals (``v.record.intervals``) shaded. Returns the PNG paths
    (``timelines_01.png``, ...).
    """
    by_id = list(_videos_by_id(runs).items())
    paths = []
    for page, start in enumerate(range(0, len(by_id), VIDEOS_PER_PNG), start=1):
        chunk = by_id[start:start + VIDEOS_PER_PNG]
        n_rows = math.ceil(len(chunk) / _GRID_COLS)
        n_cols = min(_GRID_COLS, len(chunk))
        fig = Figure(figsize=(3.4 * n_cols, 1.9 * n_rows + 0.5))
        axes = fig.subplots(n_rows, n_cols, squeeze=False)
        for ax in axes.ravel()[len(chunk):]:
            ax.set_visible(False)
        for ax, (video_id, entries) in zip(axes.ravel(), chunk):
            _timeline_axes(ax, video_id, entries, runs, colors)
        handles = [Line2D([], [], color=c, label=r["name"]) for r, c in zip(runs, colors)]
        fig.legend(handles=handles, loc="upper center", ncol=min(len(runs), 6), fontsize=8,
                   frameon=False)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
        dest = out_dir / f"timelines_{page:02d}.png"
        _save(fig, dest)
        paths.append(dest)
    return paths


def _timeline_axes(ax, video_id: str, entries: list, runs: Sequence[dict],
                   colors: Sequence) -> None:
    v0 = entries[0][1]
    for s, e in v0.record.intervals:
        ax.axvspan(s, e, color="tab:red", alpha=0.18, lw=0)
    lo, hi = 0.0, 1.0
    for i, v, maps in entries:
        fs = video_frame_scores(v, maps)
        lo, hi = min(lo, float(fs.min())), max(hi, float(fs.max()))
        ax.plot(np.arange(len(fs)), fs, color=colors[i], lw=1.1)
    ax.set_xlim(0, max(v0.meta.n_frames - 1, 1))
    ax.set_ylim(lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo))
    kind = "anomalous" if v0.record.label else "normal"
    ax.set_title(f"{video_id} ({kind})", fontsize=8)
    ax.tick_params(labelsize=7)


def _overlays_html(stage: Path, folder: str, overlays: Sequence[tuple[dict, Path]]) -> str:
    """Copy each overlay into ``stage``; a ``<figure>`` per overlay: ``<img>`` for GIF/PNG,
    ``<video controls>`` otherwise."""
    items, taken = [], set()
    for o, source in overlays:
        name, n = source.name, 1
        while name in taken:  # two overlays of the same file name: keep both
            n += 1
            name = f"{source.stem}-{n}{source.suffix}"
        taken.add(name)
        dest = stage / "overlays" / name
        dest.parent.mkdir(exist_ok=True)
        atomic_write(dest, lambda t, source=source: shutil.copyfile(source, t))
        src = _e(quote(f"{folder}/overlays/{name}"))
        media = (f'<img src="{src}" alt="{_e(o["video_id"])}">'
                 if source.suffix.lower() in (".gif", ".png", ".jpg", ".webp")
                 else f'<video controls loop muted src="{src}"></video>')
        page = f"{SERVE_URL}/video/{quote(str(o['video_id']), safe='')}"
        items.append(f"<figure>{media}<figcaption>{_e(o['video_id'])} "
                     f'(<a href="{_e(page)}">in stmil serve</a>)</figcaption></figure>')
    return "\n".join(items)


def _overlay_source(out_dir: Path, path: Path) -> Path:
    """The overlay file ``path`` (absolute, or relative to the resolved ``out_dir``)."""
    full = path if path.is_absolute() else out_dir / path
    if not full.is_file():
        raise StmilError(f"{full}: overlay file not found")
    return full


def _stage_table(stage_times: dict) -> str:
    rows = "".join(
        f'<tr><td>{_e(k)}</td><td class="num">'
        f"{_e(f'{v:.1f} s' if isinstance(v, (int, float)) else str(v))}</td></tr>"
        for k, v in stage_times.items())
    head = "<thead><tr><th>stage</th><th>time</th></tr></thead>"
    return f"<table>{head}<tbody>{rows}</tbody></table>"


def config_yaml(config: dict) -> str:
    """A run config as YAML text (paths, tuples and numpy values made plain)."""
    return yaml.safe_dump(_plain(config), sort_keys=False, default_flow_style=False)


def _plain(x):
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return x


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def referenced_files(html_path: Path) -> list[Path]:
    """Local files referenced by ``src``/``href`` attributes of an HTML file, resolved
    against its folder (URLs with a scheme and ``#`` anchors are left out)."""
    html_path = Path(html_path)
    parser = _Refs()
    parser.feed(html_path.read_text(encoding="utf-8"))
    out: list[Path] = []
    for ref in parser.refs:
        url = urlparse(ref)
        if url.scheme or url.netloc or not url.path:
            continue
        p = html_path.parent / unquote(url.path)
        if p not in out:
            out.append(p)
    return out
