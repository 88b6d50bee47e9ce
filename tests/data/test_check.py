"""medprobe.data.check on the real HAM10000 sample: the adapter-independent functions that
task=csv and task=hf share (auto split by id, resplit after dropping rows, split digest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medprobe.data.check import auto_split, drop_images, split_digest, summary
from medprobe.data.manifest import AutoSplit
from medprobe.data.tasks.csv_task import read_label_csv


def test_sorted_by_id_auto_split_and_digest(shared_data: Path) -> None:
    root = shared_data / "T3_ham10000"
    m = read_label_csv(root / "labels.csv", root=root)
    shuffled = m.subset(np.random.default_rng(0).permutation(len(m)))
    assert shuffled.sorted_by_id().ids == m.ids
    spec = AutoSplit(0.1, 0.2, 0)
    again = auto_split(shuffled, spec)  # rows in another order: the same split per id
    assert dict(zip(again.ids, again.split, strict=True)) == dict(zip(m.ids, m.split, strict=True))
    assert split_digest(again) == split_digest(m) == summary(m)["split_sha256"]
    assert again.auto_split == spec and "by id" in again.info["split_source"]


def test_drop_images_splits_the_rows_left(shared_data: Path) -> None:
    root = shared_data / "T3_ham10000"
    m = read_label_csv(root / "labels.csv", root=root)
    bad = [(str(m.paths[i]), "broken") for i in range(0, 40)]
    d = drop_images(m, bad)
    assert len(d) == 240 and d.info["dropped_images"] == 40
    rest = m.subset(np.arange(40, len(m)))
    assert (d.split == auto_split(rest, m.auto_split).split).all()  # type: ignore[arg-type]
    assert d.info["counts"] == d.counts()
    s = summary(d, bad, on_error="skip")
    assert s["bad_images"]["n"] == 40 and s["n_images"] == 240
    assert s["patients"]["total"] == 240 and s["patients"]["rows_without_id"] == 0
