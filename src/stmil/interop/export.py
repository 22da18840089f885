"""stmil feature files -> RTFM / UR-DMU style ``.npy`` files and a ``.list`` (the reverse of
:mod:`stmil.interop.import_features`).

Each video becomes ``OUT/<id>.npy``, float32 ``(T, C)``: its clips' features, the mean over the
G x G cuboids (the whole-frame feature the grid-1 baseline uses; a grid-1 file is taken as it
is). ``OUT/features.list`` names them, one a line, relative to ``OUT``; ``OUT/export.json``
records what was written (ids, files, shapes, the source folder). The whole export is committed
as one unit (every file written to a temporary first, then renamed), and a file in ``OUT`` that
an earlier export did not write is refused, never overwritten.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stmil.atomic import atomic_write_group, check_writable
from stmil.errors import OutputError, StmilError
from stmil.features.store import load_features

MANIFEST = "export.json"
LIST = "features.list"
MANIFEST_FORMAT = "stmil-feature-export"


def feature_ids(features: Path) -> list[str]:
    """Ids of the feature files in ``features`` (``<id>.json`` beside an ``<id>.npy``)."""
    return sorted(p.stem for p in features.glob("*.json")
                  if not p.name.startswith(".") and p.with_suffix(".npy").is_file())


def _owned(out: Path) -> set[str]:
    """Names an earlier export wrote in ``out`` (from its manifest)."""
    path = out / MANIFEST
    if not path.exists():
        return set()
    bad = OutputError(f"{path}: not a stmil export manifest; refusing to write in {out} "
                      "(choose another --out)")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(m, dict) and m.get("format") == MANIFEST_FORMAT):
            raise bad
        return {LIST, MANIFEST, *(str(v["file"]) for v in m["videos"])}
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise bad from e


def export_features(features: Path | str, out: Path | str,
                    ids: Sequence[str] | None = None) -> Path:
    """Write ``out/<id>.npy`` ``(T, C)`` float32 for each video (all in ``features`` by
    default), ``out/features.list`` and ``out/export.json``; returns the list's path.

    Raises :class:`~stmil.features.store.FeatureError` naming a bad feature file, and
    :class:`OutputError` when ``out`` holds a file of the same name that no export wrote.
    """
    features, out = Path(features), Path(out)
    ids = list(ids) if ids is not None else feature_ids(features)
    if not ids:
        raise StmilError(f"{features}: no feature files (<id>.npy with <id>.json) to export")
    check_writable(out)
    owned = _owned(out)
    names = [f"{vid}.npy" for vid in ids]
    for name in (*names, LIST, MANIFEST):
        if (out / name).exists() and name not in owned:
            raise OutputError(f"{out / name}: exists and no stmil export wrote it; refusing to "
                              "overwrite it (choose another --out)")
    entries = []
    writes = []
    for vid, name in zip(ids, names, strict=True):
        arr, meta = load_features(features, vid)  # checked against its metadata
        entries.append({"id": vid, "file": name, "shape": [int(arr.shape[0]), int(arr.shape[2])],
                        "grid": meta["grid"]})

        def save(tmp: Path, vid: str = vid) -> None:
            a, _ = load_features(features, vid)
            with open(tmp, "wb") as f:
                np.save(f, np.asarray(a, dtype=np.float32).mean(axis=1))

        writes.append((out / name, save))
    listing = "".join(f"{name}\n" for name in names)
    manifest = json.dumps({"format": MANIFEST_FORMAT, "version": 1,
                           "features": str(features.resolve()), "dtype": "float32",
                           "videos": entries}, indent=1) + "\n"
    writes.append((out / LIST, lambda t: t.write_text(listing, encoding="utf-8")))
    writes.append((out / MANIFEST, lambda t: t.write_text(manifest, encoding="utf-8")))
    atomic_write_group(writes)
    return out / LIST
