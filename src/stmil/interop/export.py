"""stmil feature files -> the files RTFM's and UR-DMU's loaders read (the reverse of
:mod:`stmil.interop.import_features`).

A video's feature is the mean of its clips' G x G cuboids, float32 ``(T, C)`` (the whole-frame
feature of the grid-1 baseline; a grid-1 file is taken as it is). ``--layout``:

- ``plain``: ``OUT/<id>.npy`` ``(T, C)``, listed in ``OUT/features.list``;
- ``rtfm``: ``OUT/<id>_i3d.npy`` ``(T, 10, C)`` (RTFM's ten crops; stmil has no crops, so the
  ten are the same feature and their mean is it), listed in ``OUT/ucf-i3d.list`` (train,
  anomalous first: RTFM's ``dataset.py`` takes ``list[:810]`` as anomalous) and
  ``OUT/ucf-i3d-test.list`` (test, in ``stmil gt``'s order);
- ``urdmu``: ten ``OUT/<id>__<k>.npy`` ``(T, C)`` a video (hard links of one file where the
  file system allows), listed ten lines a video in ``OUT/UCF_Train.list`` (anomalous first:
  UR-DMU's loader takes ``[:8100]``) and ``OUT/UCF_Test.list``.

List entries are absolute paths, which resolve from any working directory, or ``PREFIX/<file>``
with ``--prefix``. ``OUT/export.json`` records the layout, the order, every list with its
split, and the number to put where those loaders hard-code 810 / 8100. The whole export is
committed as one unit with ``OUT``'s ledger (:mod:`stmil.ownership`): a file in ``OUT`` that
is not stmil's is refused, and the files an earlier export wrote that this one no longer makes
(a video removed since, another layout) are deleted, those whose bytes still match only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stmil import safejson
from stmil.atomic import check_writable
from stmil.datasets.record import VideoRecord
from stmil.errors import ConfigError, OutputError, StmilError
from stmil.features.store import FeatureError, load_features
from stmil.interop import LAYOUTS
from stmil.interop.order import VideoList, in_list_order, read_video_list
from stmil.ownership import Ledger, check_can_write, commit, prune

log = logging.getLogger(__name__)

COMMAND = "export-features"
NOT_OURS = "refusing to overwrite it (choose another --out)"
MANIFEST = "export.json"
LIST = "features.list"
MANIFEST_FORMAT = "stmil-feature-export"
MANIFEST_VERSION = 2
CROPS = 10  # RTFM's and UR-DMU's ten crops
#: Each layout's (train list, test list) names, as their code opens them.
LIST_NAMES = {"rtfm": ("ucf-i3d.list", "ucf-i3d-test.list"),
              "urdmu": ("UCF_Train.list", "UCF_Test.list")}


@dataclass
class ExportSummary:
    """What an export wrote: its lists (name -> number of lines) and, for ``rtfm`` /
    ``urdmu``, the number of anomalous lines at the head of the train list."""

    out: Path
    lists: dict[str, int] = field(default_factory=dict)
    train_split: int | None = None

    def line(self) -> str:
        lists = ", ".join(f"{self.out / k} ({n} lines)" for k, n in self.lists.items())
        if self.train_split is None:
            return lists
        return (f"{lists}; the train list's first {self.train_split} lines are the anomalous "
                "videos (put this number where the loader hard-codes 810 / 8100)")


def feature_ids(features: Path) -> list[str]:
    """Ids of the feature files in ``features`` (``<id>.json`` beside an ``<id>.npy``)."""
    return sorted(p.stem for p in features.glob("*.json")
                  if not p.name.startswith(".") and p.with_suffix(".npy").is_file())


def _owned(out: Path) -> set[str]:
    """Names an earlier export wrote in ``out``, from its manifest: the test of a folder from
    before ledgers, and the files an export may delete when it no longer makes them."""
    path = out / MANIFEST
    if not path.exists():
        return set()
    bad = OutputError(f"{path}: not a stmil export manifest; refusing to write in {out} "
                      "(choose another --out)")
    try:
        m = safejson.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(m, dict) and m.get("format") == MANIFEST_FORMAT):
            raise bad
        files = [f for v in m["videos"] for f in v.get("files", [v.get("file")])]
        return {LIST, MANIFEST, *map(str, m.get("lists", {})), *map(str, files)}
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise bad from e


def _file_names(vid: str, layout: str) -> list[str]:
    if layout == "rtfm":
        return [f"{vid}_i3d.npy"]
    if layout == "urdmu":
        return [f"{vid}__{k}.npy" for k in range(CROPS)]
    return [f"{vid}.npy"]


def _entry(out: Path, name: str, prefix: str | None, layout: str) -> str:
    entry = f"{prefix.rstrip('/')}/{name}" if prefix else str((out / name).resolve())
    if layout == "urdmu" and len(entry.split()) != 1:
        raise ConfigError(f"{entry}: UR-DMU splits list lines at whitespace; export to a "
                          "folder without spaces or pass --prefix")
    return entry


def _writers(features: Path, vid: str, out: Path, names: list[str], layout: str
             ) -> list[tuple[Path, Callable[[Path], None]]]:
    """One video's files: the first written from the features, the others (UR-DMU's crops)
    hard links of it (copies where links are refused)."""
    first: list[Path] = []

    def save(tmp: Path) -> None:
        a, _ = load_features(features, vid)
        x = np.asarray(a, dtype=np.float32).mean(axis=1)
        if layout == "rtfm":
            x = np.repeat(x[:, None, :], CROPS, axis=1)
        with open(tmp, "wb") as f:
            np.save(f, x)
        first.append(tmp)

    def link(tmp: Path) -> None:
        tmp.unlink()
        try:
            os.link(first[0], tmp)
        except OSError:
            shutil.copyfile(first[0], tmp)

    return [(out / n, save if i == 0 else link) for i, n in enumerate(names)]


def _plan(features: Path, layout: str, records: Sequence[VideoRecord] | None,
          listed: VideoList | None) -> tuple[dict[str, list[str]], dict]:
    """The videos of each list (list name -> ids in order) and the order's record."""
    have = set(feature_ids(features))
    if layout == "plain":
        if listed is not None:
            ids, order = list(listed.ids), listed.describe()
        elif records is not None:
            ids, order = [r.video_id for r in records], {"rule": "dataset", "split": "all"}
        else:
            ids, order = sorted(have), {"rule": "id"}
        lists = {LIST: ids}
    else:
        if records is None:
            raise ConfigError(f"--layout {layout} needs the dataset's labels and splits: "
                              "pass --data")
        train = [r for r in records if r.split == "train"]
        test = [r.video_id for r in records if r.split == "test"]
        train_ids = ([r.video_id for r in train if r.label]
                     + [r.video_id for r in train if not r.label])
        test = in_list_order(test, listed, "the dataset's test split")
        order = {"train": "anomalous first, then normal, each in the dataset's order",
                 "test": listed.describe() if listed else {"rule": "dataset", "split": "test"}}
        lists = dict(zip(LIST_NAMES[layout], (train_ids, test), strict=True))
    missing = sorted({v for ids in lists.values() for v in ids} - have)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3
                                           else "")
        raise StmilError(f"{features}: no features for {len(missing)} videos to export: "
                         f"{shown}; extract them first")
    return lists, order


def _videos_and_lists(features: Path, out: Path, layout: str, lists: dict[str, list[str]],
                      listed: VideoList | None, labels: dict[str, VideoRecord],
                      prefix: str | None) -> tuple[list[dict], list, dict[str, str]]:
    """Each video's manifest entry and file writers (once per video), and each list's text."""
    entries, writes, texts = [], [], {}
    seen: set[str] = set()
    for list_name, ids in lists.items():
        lines = []
        for vid in ids:
            names = _file_names(vid, layout)
            test = layout != "plain" and list_name == LIST_NAMES[layout][1]
            crops = listed.crops.get(vid, ()) if listed and test else ()
            shown = names  # UR-DMU: the crop lines of the given list, where it has them
            if layout == "urdmu" and crops and all(k in range(CROPS) for k in crops):
                shown = [names[k] for k in crops]
            lines += [_entry(out, n, prefix, layout) for n in shown]
            if vid in seen:
                continue
            seen.add(vid)
            arr, meta = load_features(features, vid)  # checked against its metadata
            if not np.isfinite(arr).all():
                raise FeatureError(f"{features / (vid + '.npy')}: NaN or Inf values, which "
                                   "no loader can use; extract it again with stmil extract "
                                   "--overwrite")
            rec = labels.get(vid)
            entries.append({"id": vid, "files": names,
                            "shape": [int(arr.shape[0]), *([CROPS] if layout == "rtfm" else []),
                                      int(arr.shape[2])], "grid": meta.grid,
                            **({"label": rec.label, "split": rec.split} if rec else {})})
            writes += _writers(features, vid, out, names, layout)
        texts[list_name] = "".join(f"{line}\n" for line in lines)
    return entries, writes, texts


def export_features(features: Path | str, out: Path | str, *, layout: str = "plain",
                    records: Sequence[VideoRecord] | None = None,
                    video_list: Path | str | None = None,
                    prefix: str | None = None) -> ExportSummary:
    """Export ``features`` to ``out`` in ``layout`` (see the module docstring).

    ``records``: the dataset's videos (``load_dataset(root, "all")``), needed by ``rtfm`` and
    ``urdmu`` for labels and splits; ``video_list``: a community list giving the order (of the
    test list, or of the plain export). Raises :class:`~stmil.features.store.FeatureError`
    naming a bad feature file, :class:`ConfigError` for a list that does not fit, and
    :class:`OutputError` when ``out`` holds a file of the same name that no export wrote.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    features, out = Path(features), Path(out)
    listed = read_video_list(video_list) if video_list is not None else None
    if not feature_ids(features):
        raise StmilError(f"{features}: no feature files (<id>.npy with <id>.json) to export")
    lists, order = _plan(features, layout, records, listed)
    check_writable(out)
    ledger = Ledger.load(out)
    previous = {n for n, e in ledger.files.items() if e.get("command") == COMMAND}
    if MANIFEST not in ledger.files:  # a folder from before ledgers: its manifest's names
        previous |= _owned(out)
    legacy = lambda p: p.name in previous  # noqa: E731 (a folder from before ledgers)
    labels = {r.video_id: r for r in records or ()}
    entries, writes, texts = _videos_and_lists(features, out, layout, lists, listed, labels,
                                               prefix)
    names = [*(n for e in entries for n in e["files"]), *texts, MANIFEST]
    check_can_write(out, names, legacy, NOT_OURS)
    train_split = None
    if layout != "plain":
        train_ids = lists[LIST_NAMES[layout][0]]
        train_split = sum(labels[v].label for v in train_ids) * (CROPS if layout == "urdmu"
                                                                 else 1)
    summary = ExportSummary(out, {k: t.count("\n") for k, t in texts.items()}, train_split)
    manifest = json.dumps({
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "layout": layout,
        "features": str(features.resolve()), "dtype": "float32", "order": order,
        "prefix": prefix,
        "lists": {k: {"lines": n, "split": "all" if k == LIST else
                      ("train" if k == LIST_NAMES[layout][0] else "test")}
                  for k, n in summary.lists.items()},
        "train_anomalous_lines": train_split, "videos": entries}, indent=1) + "\n"
    for name, text in texts.items():
        writes.append((out / name, lambda t, text=text: t.write_text(text, encoding="utf-8")))
    writes.append((out / MANIFEST, lambda t: t.write_text(manifest, encoding="utf-8")))
    commit(out, writes, COMMAND, legacy, NOT_OURS)
    gone = sorted(previous - set(names))
    if gone:  # after the commit: the new lists no longer name them
        kept = prune(out, gone, legacy)
        if kept:
            log.warning("%s: %d files an earlier export wrote are no longer listed but were "
                        "changed since, so they are left in place: %s", out, len(kept),
                        ", ".join(kept[:3]) + (" ..." if len(kept) > 3 else ""))
    return summary
