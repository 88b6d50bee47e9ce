"""The shipped demo task (medprobe/data/tasks/demo.py): the PathMNIST subset in
medprobe/demo_data, its counts per class and split, and its pixels (those of the .npz)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medprobe.data.tasks.demo import DEMO_DIR, PATHMNIST_CLASSES, build_manifest


def test_demo_manifest_counts() -> None:
    m = build_manifest(None)
    assert len(m) == 718 and m.classes == PATHMNIST_CLASSES and not m.multilabel
    # PathMNIST subset counts per class index, from ../shared/data/README.md
    assert np.bincount(m.labels, minlength=9).tolist() == [147, 78, 26, 60, 112, 60, 85, 28, 122]
    assert {s: int((m.split == s).sum()) for s in ("train", "val", "test")} == {
        "train": 502,
        "val": 72,
        "test": 144,
    }
    assert m.counts()["test"] == {
        "ADI": 30, "BACK": 16, "DEB": 5, "LYM": 12, "MUC": 22,
        "MUS": 12, "NORM": 17, "STR": 6, "TUM": 24,
    }  # fmt: skip


def test_demo_pngs_are_the_unchanged_npz_pixels(shared_data: Path) -> None:
    with np.load(shared_data / "T1_crc" / "pathmnist_test_subset_718.npz") as d:
        images, labels = d["test_images"], d["test_labels"].ravel()
    m = build_manifest(None)
    for i in (0, 1, 357, 717):
        k = m.ids.index(f"images/pathmnist_{i:03d}.png")
        assert m.classes[m.labels[k]] == PATHMNIST_CLASSES[labels[i]]
        np.testing.assert_array_equal(np.asarray(Image.open(DEMO_DIR / m.ids[k])), images[i])
    size = sum(p.stat().st_size for p in DEMO_DIR.rglob("*") if p.is_file())
    assert size < 10 * 2**20
