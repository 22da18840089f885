"""Hand-made files in the community's formats, for the interop tests (written, never shipped)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SNIPPET = 16


def write_ucf_lists(root: Path, train: list[tuple[str, int]], test: list[tuple[str, int]],
                    intervals: dict[str, list[tuple[int, int]]]) -> None:
    """UCF-Crime lists and temporal annotation. ``train``/``test``: ``(video id, label)``;
    ``intervals``: 1-based inclusive ``(s, e)`` pairs of each anomalous test video."""
    root.mkdir(parents=True, exist_ok=True)

    def line(vid: str, label: int, split: str) -> str:
        folder = "Fighting" if label else f"{split}_Normal_Videos_Anomaly"
        return f"{folder}/{vid}.mp4"

    (root / "Anomaly_Train.txt").write_text(
        "".join(line(v, y, "Training") + "\n" for v, y in train))
    (root / "Anomaly_Test.txt").write_text(
        "".join(line(v, y, "Testing") + "\n" for v, y in test))
    rows = []
    for vid, label in test:
        if label:
            pairs = [x for s, e in intervals[vid] for x in (s, e)]
            pairs += [-1] * (4 - len(pairs))
            rows.append(f"{vid}.mp4  Fighting  " + "  ".join(map(str, pairs)))
        else:
            rows.append(f"{vid}.mp4  Normal  -1  -1  -1  -1")
    (root / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt").write_text(
        "\n".join(rows) + "\n")


def planted_rtfm(root: Path, feats: Path, n_train: int = 12, n_test: int = 8, t: int = 16,
                 dim: int = 32, crops: int = 10, seed: int = 0, swap: bool | None = None
                 ) -> dict[str, tuple[int, int]]:
    """A UCF-Crime dataset at ``root`` and RTFM-style ``(T, crops, D)`` ``.npy`` files in
    ``feats`` (plus ``train.list`` / ``test.list``): anomalous videos (even index) carry a
    sparse direction on a span of snippets. Returns each anomalous test video's snippet span.

    ``swap`` None: the direction is added to a plain scene (more energy: even an untrained
    scorer may rank it first). ``swap`` False / True: every snippet carries one of two disjoint
    directions of equal strength, the anomalous snippets the other one; True swaps which is
    which. A scorer that has not learnt prefers one of the two, so it cannot find the anomaly
    in both datasets: finding it in both shows learning."""
    rng = np.random.default_rng(seed)
    direction, usual = np.zeros(dim), np.zeros(dim)
    channels = rng.choice(dim, 4 if swap is None else 8, replace=False)
    direction[channels[:4]] = 3.0
    usual[channels[4:]] = 3.0  # no channel when swap is None
    if swap:
        direction, usual = usual, direction
    base = np.abs(rng.normal(size=dim)) + usual
    feats.mkdir(parents=True, exist_ok=True)
    split_ids: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    spans: dict[str, tuple[int, int]] = {}
    intervals: dict[str, list[tuple[int, int]]] = {}
    for split, count in (("train", n_train), ("test", n_test)):
        for i in range(count):
            label = int(i % 2 == 0)
            vid = (f"Fighting{split}{i:03d}_x264" if label
                   else f"Normal_Videos_{split}{i:03d}_x264")
            x = base + 0.3 * np.abs(rng.normal(size=(t, crops, dim)))
            if label:
                s = int(rng.integers(0, t // 2))
                e = s + t // 4
                x[s:e] += direction - usual
                spans[vid] = (s, e)
                intervals[vid] = [(s * SNIPPET + 1, e * SNIPPET)]  # 1-based inclusive
            np.save(feats / f"{vid}_i3d.npy", x.astype(np.float32))
            split_ids[split].append((vid, label))
        (feats / f"{split}.list").write_text(
            "".join(f"{v}_i3d.npy\n" for v, _ in split_ids[split]))
    write_ucf_lists(root, split_ids["train"], split_ids["test"], intervals)
    return spans
