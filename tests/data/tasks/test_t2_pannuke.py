"""T2 PanNuke (medprobe/data/tasks/t2_pannuke.py): tiny folds in the real ``.npy`` layout; the
neoplastic-fraction rule, PLIP's counting, the patches written as PNGs.

Every test checks values (labels, counts, splits, dropped rows), not just that it ran.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from task_helpers import build, per_split

from medprobe.data.manifest import ManifestError
from medprobe.data.tasks import t2_pannuke

H = W = 256


def pannuke_mask(counts: dict[int, list[int]]) -> np.ndarray:
    """(256, 256, 6) float64: channel c holds the given instance ids as 2x2 blocks."""
    m = np.zeros((H, W, 6), dtype=np.float64)
    pos = 0
    for c, ids in counts.items():
        for iid in ids:
            r, q = divmod(pos, 60)
            m[4 * r : 4 * r + 2, 4 * q : 4 * q + 2, c] = iid
            pos += 1
    m[..., 5] = (m[..., :5].sum(axis=-1) == 0).astype(np.float64)  # background channel
    return m


def write_fold(fold_dir: Path, k: int, masks: list[np.ndarray], types: list[str]) -> np.ndarray:
    rng = np.random.default_rng(k)
    images = rng.integers(0, 256, (len(masks), H, W, 3)).astype(np.float64)
    (fold_dir / "images" / f"fold{k}").mkdir(parents=True)
    (fold_dir / "masks" / f"fold{k}").mkdir(parents=True)
    np.save(fold_dir / "images" / f"fold{k}" / "images.npy", images)
    np.save(fold_dir / "images" / f"fold{k}" / "types.npy", np.array(types))
    np.save(fold_dir / "masks" / f"fold{k}" / "masks.npy", np.stack(masks))
    return images


def write_t2(root: Path) -> np.ndarray:
    one = range(1, 11)
    fold1 = [
        pannuke_mask({0: list(one), 1: [11, 12, 13, 14, 15]}),  # 10/15 neoplastic: malignant
        pannuke_mask({0: list(one), 2: list(range(11, 34))}),  # 10/33 = 30.3%: malignant
        pannuke_mask({0: list(range(1, 10))}),  # 9 neoplastic only: ambiguous (dropped)
        pannuke_mask({4: [1, 2, 3]}),  # no neoplastic, 3 epithelial: benign
        pannuke_mask({}),  # no nucleus: empty (dropped)
        pannuke_mask({0: list(range(1, 13)), 1: list(range(1, 13))}),  # same ids, 2 channels
    ]
    fold1[5][100:200, 100:200, 0] = 7  # one instance spanning many pixels counts once
    images = write_fold(
        root / "Fold 1", 1, fold1, ["Breast", "Breast", "Colon", "Colon", "Colon", "Colon"]
    )
    fold2 = [pannuke_mask({4: [1, 2, 3]}) for _ in range(10)]
    fold2.append(pannuke_mask({0: [*range(1, 10), 265]}))  # 265 wraps to 9 under uint8
    write_fold(root / "Fold2", 2, fold2, ["Breast"] * 10 + ["Skin"])
    return images


def test_t2_pannuke_rule_counts_split_and_pngs(tmp_path: Path) -> None:
    images = write_t2(tmp_path)
    m = build("t2", tmp_path)
    assert m.classes == ["benign", "malignant"] and m.groups is None
    assert m.info["patches"] == {
        "patches": 17,
        "empty": 1,
        "ambiguous": 1,
        "benign": 11,
        "malignant": 4,
    }
    assert m.info["per_fold"]["fold1"]["malignant"] == 3
    lab = dict(zip(m.ids, m.labels.tolist(), strict=True))
    assert lab["fold1/0000.png"] == 1 and lab["fold1/0001.png"] == 1 and lab["fold1/0005.png"] == 1
    assert lab["fold1/0003.png"] == 0 and lab["fold2/0010.png"] == 1
    assert "fold1/0002.png" not in lab and "fold1/0004.png" not in lab
    # PLIP's 70/30 within tissue x label: the 10 benign breast patches -> exactly 3 test
    breast_benign = [i for i in m.ids if i.startswith("fold2/") and i != "fold2/0010.png"]
    assert sum(m.split[m.ids.index(i)] == "test" for i in breast_benign) == 3
    # 15 kept x 0.3 = 4.5 -> 4 test rows (largest-remainder apportioning in assign_splits)
    assert set(m.split) == {"train", "test"} and per_split(m) == {"train": 11, "test": 4}
    # patches written once as 8-bit RGB PNG with the array's pixels
    png = tmp_path / ".medprobe" / "pannuke_png" / "fold1" / "0000.png"
    assert m.paths[m.ids.index("fold1/0000.png")] == png
    np.testing.assert_array_equal(np.asarray(Image.open(png)), images[0].astype(np.uint8))
    stamp = png.stat().st_mtime_ns
    m2 = build("t2", tmp_path)
    assert png.stat().st_mtime_ns == stamp and m2.ids == m.ids
    assert json.loads((png.parent.parent / "fold1_counts.json").read_text())["stated"][5] == [
        12,
        12,
        0,
        0,
        0,
    ]
    png.unlink()
    build("t2", tmp_path)
    assert png.is_file()
    # new pixels in images.npy (size/mtime change) -> counts recomputed, PNGs rewritten
    new = np.full_like(images, 7.0)
    np.save(tmp_path / "Fold 1" / "images" / "fold1" / "images.npy", new)
    build("t2", tmp_path)
    assert (np.asarray(Image.open(png)) == 7).all()


def test_t2_plip_counting_and_derived_dir(tmp_path: Path) -> None:
    write_t2(tmp_path)
    out = tmp_path / "patches"
    m = build("t2", tmp_path, derived_dir=str(out), options={"plip_counting": True})
    # PLIP adds the background channel to the total (10/34 < 30%) and wraps ids at 256
    assert m.info["patches"] == {
        "patches": 17,
        "empty": 1,
        "ambiguous": 3,
        "benign": 11,
        "malignant": 2,
    }
    assert all(p.parent.parent == out for p in m.paths)
    mask = pannuke_mask({0: [1, 2, 3], 5: []})
    assert t2_pannuke.plip_counts(mask).tolist() == [3, 0, 0, 0, 0, 1]
    assert t2_pannuke.nucleus_counts(mask).tolist() == [3, 0, 0, 0, 0]


def test_t2_missing_masks_and_bad_shapes(tmp_path: Path) -> None:
    write_t2(tmp_path)
    (tmp_path / "Fold2" / "masks" / "fold2" / "masks.npy").unlink()
    with pytest.raises(ManifestError, match=r"fold 2: masks file not found: .*masks.npy"):
        build("t2", tmp_path)
    with pytest.raises(ManifestError, match="no PanNuke fold"):
        build("t2", tmp_path / "Fold 1" / "masks")
    bad = tmp_path / "b"
    write_fold(bad / "Fold 3", 3, [pannuke_mask({})], ["Breast"])
    np.save(bad / "Fold 3" / "images" / "fold3" / "types.npy", np.array(["a", "b"]))
    with pytest.raises(ManifestError, match=r"types.npy: shape \(2,\), expected \(1,\)"):
        build("t2", bad)
