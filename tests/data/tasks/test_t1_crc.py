"""T1 NCT-CRC-HE-100K + CRC-VAL-HE-7K (medprobe/data/tasks/t1_crc.py): tiny folders in the
real layout, the 45 real tiles of ../shared/data, and ``python -m medprobe task=t1`` on them.

Every test checks values (labels, counts, splits, dropped rows), not just that it ran.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

import pytest
from helpers import run_medprobe
from task_helpers import T1_CLASSES, build, image, link, per_split

from medprobe.data.manifest import ManifestError


def write_t1(root: Path) -> None:
    for c in T1_CLASSES:
        for i in range(3 if c == "ADI" else 2):
            image(root / "NCT-CRC-HE-100K" / c / f"{c}-AAAAAAA{i}.tif", (16, 16), i)
        for i in range(2 if c == "BACK" else 1):
            image(root / "CRC-VAL-HE-7K" / c / f"{c}-TCGA-BBBBBBB{i}.tif", (16, 16), i)
    (root / "NCT-CRC-HE-100K" / "ADI" / ".DS_Store").write_bytes(b"\0")
    (root / "NCT-CRC-HE-100K" / "Thumbs.db").write_bytes(b"\0")
    (root / "CRC-VAL-HE-7K" / "MUS" / "notes.txt").write_text("x")


def test_t1_official_split_labels_from_folders(tmp_path: Path) -> None:
    write_t1(tmp_path)
    m = build("t1", tmp_path)
    assert m.classes == T1_CLASSES and not m.multilabel and m.groups is None
    assert per_split(m) == {"train": 19, "test": 10}
    assert m.counts()["train"]["ADI"] == 3 and m.counts()["test"]["BACK"] == 2
    i = m.ids.index("NCT-CRC-HE-100K/ADI/ADI-AAAAAAA2.tif")
    assert m.split[i] == "train" and m.labels[i] == 0
    assert m.paths[i] == tmp_path / m.ids[i]
    assert all(
        s == "test" for i, s in zip(m.ids, m.split, strict=True) if i.startswith("CRC-VAL-HE-7K/")
    )
    assert m.info["ignored_files"] == 3 and m.info["grouped"] is False
    assert "never a random split" in m.info["split_source"]


def test_t1_unknown_class_folder_and_missing_test_set(tmp_path: Path) -> None:
    write_t1(tmp_path)
    image(tmp_path / "CRC-VAL-HE-7K" / "FOO" / "FOO-1.tif")
    with pytest.raises(ManifestError, match=r"CRC-VAL-HE-7K/FOO: unknown class folder 'FOO'"):
        build("t1", tmp_path)
    m = build("t1", tmp_path, on_bad_row="skip")
    assert len(m) == 29 and m.info["skipped_rows"] == {"unknown_class_folder": 1}
    os.rename(tmp_path / "CRC-VAL-HE-7K", tmp_path / "elsewhere")
    with pytest.raises(ManifestError, match=r"folder CRC-VAL-HE-7K/ not found"):
        build("t1", tmp_path)


def test_t1_real_tiles(tmp_path: Path, shared_data: Path) -> None:
    """The 45 real CRC-VAL-HE-7K tiles (PNG/JPG/TIF): per class the first half (by name) is
    placed under NCT-CRC-HE-100K/ and the rest under CRC-VAL-HE-7K/."""
    rows = list(csv.DictReader(open(shared_data / "T1_crc" / "labels.csv")))
    by_class: dict[str, list[str]] = {}
    for r in rows:
        by_class.setdefault(r["label"], []).append(r["path"])
    for c, paths in by_class.items():
        paths.sort()
        for i, p in enumerate(paths):
            top = "NCT-CRC-HE-100K" if i < (len(paths) + 1) // 2 else "CRC-VAL-HE-7K"
            link(shared_data / "T1_crc" / p, tmp_path / top / c / Path(p).name)
    m = build("t1", tmp_path)
    assert len(m) == 45 and per_split(m) == {"train": 23, "test": 22}
    assert m.counts()["train"] == {
        "ADI": 2,
        "BACK": 1,
        "DEB": 2,
        "LYM": 2,
        "MUC": 2,
        "MUS": 4,
        "NORM": 2,
        "STR": 4,
        "TUM": 4,
    }
    assert m.counts()["test"]["TUM"] == 3 and m.counts()["test"]["BACK"] == 1
    # the folder label is the real label: the file-name prefix of CRC-VAL-HE-7K
    for i, lab in zip(m.ids, m.labels, strict=True):
        assert Path(i).name.split("-")[0] == T1_CLASSES[lab]
    assert Counter(Path(i).suffix for i in m.ids) == {".png": 32, ".jpg": 11, ".tif": 2}


def test_end_to_end_t1_on_real_tiles(tmp_path: Path, shared_data: Path) -> None:
    """``python -m medprobe task=t1`` on the 45 real tiles: per-class metrics with CIs."""
    root = tmp_path / "data"
    # every second tile of each class (by name) -> CRC-VAL-HE-7K/, the others -> 100K/
    by_class: dict[str, list[str]] = {}
    for r in csv.DictReader(open(shared_data / "T1_crc" / "labels.csv")):
        by_class.setdefault(r["label"], []).append(r["path"])
    for c, paths in by_class.items():
        for k, p in enumerate(sorted(paths)):
            top = "NCT-CRC-HE-100K" if k % 2 == 0 else "CRC-VAL-HE-7K"
            link(shared_data / "T1_crc" / p, root / top / c / Path(p).name)
    proc = run_medprobe(
        tmp_path,
        "task=t1",
        f"data_root={root}",
        "tracker=none",
        "bootstrap.n=200",
        "output_dir=out",
        "progress=false",
        "data.allow_outside_root=true",  # the tiles are symlinks into ../shared/data
    )
    r = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(r["task_info"]["outside_root"]) == 45  # recorded, each [link, target]
    assert r["task"] == "t1" and r["primary_metric"] == "f1_macro"
    assert r["counts"]["test"] == 22 and r["counts"]["fit"] + r["counts"]["val"] == 23
    assert r["task_info"]["split_source"].startswith("official")
    for c in T1_CLASSES:
        assert f"auroc/{c}" in proc.stdout
    assert "f1_macro" in proc.stdout and "95% CI" in proc.stdout
    f1 = r["metrics"]["f1_macro"]
    assert 0.0 <= f1["ci_low"] <= f1["value"] <= f1["ci_high"] <= 1.0
