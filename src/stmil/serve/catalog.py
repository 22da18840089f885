"""What a served folder holds: its runs, its dataset and features, its ``stmil score`` outputs.

A :class:`Catalog` looks at ``DIR`` afresh on every call (a run evaluated or calibrated while
the server runs shows up on the next page load) and reads every file through stmil's own
reader: ``demo.json`` (:func:`stmil.demo.read_marker`), a run's ``config.yaml``
(:func:`stmil.mil.run.read_run_config`), ``metrics.json``
(:func:`stmil.evaluation.evaluate.read_metrics`), ``calibration.json``
(:func:`stmil.live.calibrate.read_calibration`), the dataset (:func:`stmil.datasets.load_dataset`).
A file that cannot be read becomes an ``errors`` entry of the run it belongs to, never an
exception out of :meth:`Catalog.runs`. Nothing is ever written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from stmil.datasets import VideoRecord, load_dataset
from stmil.errors import ConfigError, StmilError
from stmil.evaluation.evaluate import METRIC_KEYS, metric_threshold, read_metrics
from stmil.live.calibrate import read_calibration
from stmil.mil.run import CONFIG, MODEL, read_run_config
from stmil.serve.paths import shown

#: How deep below DIR runs and ``<id>.scores.json`` files are looked for.
DEPTH = 3
SCORES_SUFFIX = ".scores.json"
#: Files read as incident logs (``stmil events --out`` / ``stmil watch --out``).
EVENTS_SUFFIX = ".jsonl"
#: key -> (short label, what it means, "higher" or "lower" is better); docs/metrics.md has
#: the full definitions.
METRIC_INFO: dict[str, tuple[str, str, str]] = {
    "frame_auc": ("frame AUC", "ROC AUC of per-frame scores over all test frames "
                  "concatenated (Sultani's protocol)", "higher"),
    "frame_ap": ("frame AP", "average precision (step-wise, scikit-learn) of the same frames",
                 "higher"),
    "false_alarm_rate": ("false alarms", "fraction of normal videos' frames scoring at or "
                         "above the threshold", "lower"),
    "cuboid_auc": ("cuboid AUC", "ROC AUC of cuboid scores against cuboids a ground-truth "
                   "box covers (>= 25% of the cuboid) on annotated frames", "higher"),
    "pixel_auroc": ("pixel AUROC", "ROC AUC of the upsampled heat map's pixels against "
                    "ground-truth box masks", "higher"),
    "pointing_accuracy": ("pointing", "fraction of annotated anomalous frames whose top "
                          "cuboid touches a ground-truth box", "higher"),
    "frame_auc_anomalous": ("AUC (anomalous)", "frame ROC AUC over the anomalous test "
                            "videos only", "higher"),
    "frame_ap_trapezoid": ("AP (papers)", "trapezoidal area under the PR curve: the AP "
                           "papers report", "higher"),
    "patch_auc": ("patch AUC", "ROC AUC of every cuboid of every frame, gated by its "
                  "frame's score", "higher"),
    "patch_ap": ("patch AP", "average precision of the same patches", "higher"),
    "tiou": ("TIoU", "mean IoU of the predicted box with the ground-truth box over annotated "
             "frames, 0 where the frame is below the threshold (Liu and Ma)", "higher"),
    "loc_false_positives": ("loc. FP / clip", "cuboids at or above the threshold touching no "
                            "ground-truth box, per anomalous clip (a count)", "lower"),
}


@dataclass(frozen=True)
class Source:
    """One set of scores the pages can show: a run folder (scored on the features), a folder
    of ``<id>.scores.json`` files, or an incidents file (``*.jsonl`` of ``stmil events`` or
    ``stmil watch``: incidents without scores). ``name``: its path relative to DIR (``.`` for
    DIR)."""

    name: str
    kind: str  # "run", "scores" or "events"
    path: Path
    files: dict[str, Path] = field(default_factory=dict, compare=False)  # id -> scores file


class Catalog:
    """The contents of one served folder (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        if not root.is_dir():
            raise ConfigError(f"{root}: no such folder; give stmil serve a demo output, a run "
                              "folder or a folder of stmil score outputs")
        self.root = Path(os.path.realpath(root))

    # --- discovery ------------------------------------------------------------------------

    def sources(self) -> list[Source]:
        """Runs first (a demo's in its training order), then folders of scores files, then
        incidents files."""
        runs: list[Source] = []
        scores: list[Source] = []
        events: list[Source] = []
        for folder, dirs, files in self._walk():
            name = folder.relative_to(self.root).as_posix()
            if CONFIG in files and MODEL in files:
                runs.append(Source(name, "run", folder))
                dirs[:] = []  # a run's own folders hold nothing to show
            found = {f[:-len(SCORES_SUFFIX)]: folder / f for f in sorted(files)
                     if f.endswith(SCORES_SUFFIX) and len(f) > len(SCORES_SUFFIX)}
            if found:
                scores.append(Source(name, "scores", folder, found))
            events += [Source((folder / f).relative_to(self.root).as_posix(), "events",
                              folder / f) for f in sorted(files) if f.endswith(EVENTS_SUFFIX)]
        order = list(self._demo_runs())
        runs.sort(key=lambda s: (order.index(s.path.name) if s.path.parent == self.root / "runs"
                                 and s.path.name in order else len(order), s.name))
        return runs + sorted(scores, key=lambda s: s.name) + sorted(events, key=lambda s: s.name)

    def source(self, name: str) -> Source:
        """The source called ``name``; :class:`KeyError` when there is none."""
        for s in self.sources():
            if s.name == name:
                return s
        raise KeyError(f"no run or scores folder {name!r} in this folder")

    def _walk(self):
        """``(folder, subfolder names, file names)`` down to :data:`DEPTH`, hidden names and
        symlinked folders left out."""
        for top, dirs, files in os.walk(self.root):
            folder = Path(top)
            depth = len(folder.relative_to(self.root).parts)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and depth < DEPTH
                             and not (folder / d).is_symlink())
            yield folder, dirs, [f for f in files if not f.startswith(".")]

    def _demo_runs(self) -> tuple[str, ...]:
        marker = self.demo()
        if marker is None:
            return ()
        from stmil.demo import RUNS  # deferred: I3D, matplotlib; a demo folder only

        return tuple(RUNS)

    def demo(self) -> dict | None:
        """``DIR/demo.json`` when DIR is a demo output, else None."""
        if not (self.root / "demo.json").is_file():
            return None
        from stmil.demo import read_marker  # deferred: I3D, matplotlib; a demo folder only

        return read_marker(self.root)

    def dataset_paths(self) -> tuple[Path | None, Path | None]:
        """The dataset root and features folder the runs were evaluated on, inside DIR: a
        demo's ``data/`` and ``features/``, else the first run's recorded ones that lie inside
        DIR, else ``DIR/data`` and ``DIR/features`` where they exist (None where not found)."""
        if self.demo() is not None:
            return _dir(self.root / "data"), _dir(self.root / "features")
        data = feats = None
        for s in self.sources():
            if s.kind != "run":
                continue
            config = read_run_config(s.path)
            data = data or self._inside_dir(config.get("data"))
            feats = feats or self._inside_dir(config.get("features"))
        return (data or _dir(self.root / "data"), feats or _dir(self.root / "features"))

    def _inside_dir(self, path: object) -> Path | None:
        if not isinstance(path, str) or not path:
            return None
        p = Path(path)
        real = Path(os.path.realpath(p if p.is_absolute() else self.root / p))
        return real if real.is_relative_to(self.root) and real.is_dir() else None

    def test_records(self) -> tuple[list[VideoRecord], str | None]:
        """The dataset's test videos and a problem reading them (None when fine)."""
        data, _ = self.dataset_paths()
        if data is None:
            return [], None
        try:
            return load_dataset(data, "test"), None
        except StmilError as e:
            return [], " ".join(str(e).split())

    # --- the runs page --------------------------------------------------------------------

    def summary(self) -> dict:
        """What DIR is: ``name``, ``kind`` (demo, runs, scores or empty), the dataset and the
        test set's size."""
        sources = self.sources()
        data, feats = self.dataset_paths()
        records, problem = self.test_records()
        kind = ("demo" if self.demo() is not None else
                "runs" if any(s.kind == "run" for s in sources) else
                "scores" if sources else "empty")
        return {"name": self.root.name, "kind": kind,
                "data": shown(self.root, str(data)) if data else None,
                "features": shown(self.root, str(feats)) if feats else None,
                "test_set": {"videos": len(records),
                             "anomalous": sum(r.label == 1 for r in records),
                             "normal": sum(r.label == 0 for r in records)},
                "dataset_error": problem,
                "sources": [{"name": s.name, "kind": s.kind} for s in sources]}

    def runs(self) -> dict:
        """Every source with its recorded results, for the runs page; ``metrics``: the
        meaning of each column (:data:`METRIC_INFO`)."""
        return {"summary": self.summary(),
                "metrics": [{"key": k, "label": METRIC_INFO.get(k, (k, "", "higher"))[0],
                             "meaning": METRIC_INFO.get(k, (k, "", "higher"))[1],
                             "better": METRIC_INFO.get(k, (k, "", "higher"))[2]}
                            for k in METRIC_KEYS],
                "runs": [self.run_view(s) for s in self.sources() if s.kind != "events"]}

    def run_view(self, source: Source) -> dict:
        """One source's results, threshold, calibration and config (paths shown relative to
        DIR); what cannot be read is listed in ``errors``."""
        out: dict = {"name": source.name, "kind": source.kind, "results": [], "errors": [],
                     "threshold": None, "calibration": None, "config": {},
                     "n_scored": len(source.files)}
        if source.kind != "run":
            return out
        out["config"] = {k: shown(self.root, v) for k, v in read_run_config(source.path).items()}
        try:
            value, origin = metric_threshold(source.path)
            out["threshold"] = {"value": value, "source": origin}
            cal = read_calibration(source.path)
            if cal is not None:
                out["calibration"] = {
                    "threshold": cal.threshold, "rule": cal.rule, "split": cal.split,
                    "target_per_hour": cal.target_per_hour, "per_hour": cal.per_hour,
                    "normal_hours": cal.normal_hours, "n_videos": cal.n_videos}
        except StmilError as e:
            out["errors"].append(_line(e))
        try:
            results = read_metrics(source.path)
        except StmilError as e:
            out["errors"].append(_line(e))
            results = {}
        for split, by_data in results.items():
            for data, r in sorted(by_data.items()):
                settings = r.get("settings") or {}
                out["results"].append({
                    "split": split, "data": shown(self.root, data),
                    "n_videos": settings.get("n_videos"),
                    "metrics": {k: r.get(k) for k in METRIC_KEYS},
                    "threshold": r.get("threshold"), "incidents": r.get("incidents")})
        return out


def _dir(path: Path) -> Path | None:
    return path if path.is_dir() else None


def _line(e: BaseException) -> str:
    return " ".join(str(e).split())
