"""Dataset adapters T1-T8: tiny datasets written in each dataset's real on-disk format, plus
the real samples in ../shared/data (T1 tiles, T3 HAM10000, T7 NIH ChestX-ray14 as a
PadChest-shaped stand-in, T8 OAI knee crops) arranged into the layout each adapter expects.

Every test checks values (labels, counts, splits, dropped rows), not just that it ran.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import REPO, isolated_env
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError
from PIL import Image

from medprobe.config import TASK_SCHEMAS, TaskConfig
from medprobe.data.manifest import Manifest, ManifestError
from medprobe.data.tasks import (
    t1_crc,
    t2_pannuke,
    t3_isic2018,
    t4_isic2020,
    t5_dr,
    t6_glaucoma,
    t7_padchest,
    t8_knee,
)
from medprobe.registry import TASKS

# ---------------------------------------------------------------------------------------------
# helpers


def cfg(task: str, root: Path, **over: Any) -> Any:
    """The task's shipped YAML over its kind's schema (a DictConfig, as composed), with
    ``root`` and overrides; an unknown key or option fails here, as at compose time."""
    raw = OmegaConf.load(REPO / "conf" / "task" / f"{task}.yaml")
    raw.pop("defaults", None)  # the schema and prompt choice (a Hydra defaults list)
    base = OmegaConf.merge(OmegaConf.structured(TASK_SCHEMAS[raw.kind]), raw)
    return OmegaConf.merge(base, {"root": str(root), **over})


def typed(task: str, root: Path, **over: Any) -> TaskConfig:
    """:func:`cfg` as the typed dataclass the pipeline passes after ``to_typed``."""
    out = OmegaConf.to_object(cfg(task, root, **over))
    assert isinstance(out, TASK_SCHEMAS[task])
    return out


def composed_prompt(task: str) -> str:
    """The prompt preset a task selects by default in the composed Hydra config."""
    from hydra import compose, initialize_config_dir

    from medprobe.config import conf_dir, register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return str(compose(config_name="config", overrides=[f"task={task}"]).prompt.name)


def build(task: str, root: Path, **over: Any) -> Manifest:
    return TASKS.get(task)(typed(task, root, **over), None)


def image(path: Path, size: tuple[int, int] = (8, 8), value: int = 0, mode: str = "RGB") -> None:
    """A tiny real image file; the format follows the suffix (TIF, JPEG, PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        arr = (
            np.arange(size[0] * size[1], dtype=np.uint16).reshape(size[1], size[0]) * 97 + value
        ) % 65535
        Image.fromarray(arr.astype(np.uint16)).save(path)
        return
    Image.new(mode, size, (value % 256,) * len(mode)).save(path)


def write_csv(
    path: Path, header: list[str], rows: list[list[Any]], *, delimiter: str = ","
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path


def per_split(m: Manifest) -> dict[str, int]:
    return {s: int((m.split == s).sum()) for s in ("train", "val", "test") if (m.split == s).any()}


def no_group_on_two_sides(m: Manifest) -> None:
    assert m.groups is not None
    side: dict[str, str] = {}
    for g, s in zip(m.groups, m.split, strict=True):
        if g:
            assert side.setdefault(g, s) == s, f"group {g} on two sides"


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)


def test_all_eight_tasks_registered_with_metric_classes_and_prompt() -> None:
    metrics = {f"t{k}": ("f1_macro" if k <= 2 else "auroc_macro") for k in range(1, 9)}
    prompts = {
        "t1": "pathology",
        "t2": "pathology",
        "t3": "dermatology",
        "t4": "dermatology",
        "t5": "ophthalmology",
        "t6": "ophthalmology",
        "t7": "chest_xray",
        "t8": "knee_xray",
    }
    adapters = {"t1": t1_crc, "t2": t2_pannuke, "t3": t3_isic2018, "t4": t4_isic2020,
                "t5": t5_dr, "t6": t6_glaucoma, "t8": t8_knee}  # fmt: skip
    for task, metric in metrics.items():
        assert task in TASKS
        c = typed(task, Path("/data"))
        assert (c.name, c.kind, c.metric) == (task, task, metric)
        assert composed_prompt(task) == prompts[task]
        assert (REPO / "conf" / "prompt" / f"{prompts[task]}.yaml").is_file()
        # the class list is the adapter's (T7's come from the data): not in the config at all
        assert not hasattr(c, "classes")
        assert "classes" not in OmegaConf.load(REPO / "conf" / "task" / f"{task}.yaml")
        if task in adapters:
            assert len(adapters[task].CLASSES) >= 2
    assert t5_dr.CLASSES[4] == "proliferative"
    assert t1_crc.CLASSES == T1_CLASSES


def test_missing_root_and_unknown_option_are_one_line_errors(tmp_path: Path) -> None:
    no_root = cfg("t1", tmp_path)
    no_root.root = None
    with pytest.raises(ManifestError, match="task=t1 needs the dataset folder"):
        TASKS.get("t1")(no_root, None)
    with pytest.raises(ManifestError, match="dataset folder not found"):
        build("t4", tmp_path / "nope")
    # an unknown option fails where the config is built (at compose time), naming the valid ones
    with pytest.raises(ConfigKeyError, match=r"Key 'plip' not in 'T2Options\(plip_counting\)'"):
        build("t2", tmp_path, options={"plip": True})
    with pytest.raises(ConfigKeyError, match=r"Key 'image_dir' not in 'T5TaskConfig\("):
        build("t5", tmp_path, image_dir="x")  # a key of T3/T4 only
    with pytest.raises(ValidationError, match=r"expected one of \[train, drop\]"):
        build("t5", tmp_path, options={"eyepacs_test": "keep"})


# ---------------------------------------------------------------------------------------------
# T1 NCT-CRC-HE-100K + CRC-VAL-HE-7K

T1_CLASSES = ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]


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


# ---------------------------------------------------------------------------------------------
# T2 PanNuke

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


# ---------------------------------------------------------------------------------------------
# T3 ISIC 2018 task 3 / HAM10000

T3_COLS = ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]


def onehot(img: str, k: int) -> list[str]:
    return [img] + ["1.0" if j == k else "0.0" for j in range(7)]


def write_t3_official(root: Path) -> None:
    train = [(f"ISIC_{i:07d}", i % 7) for i in range(12)]
    write_csv(
        root / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv",
        T3_COLS,
        [onehot(*r) for r in train],
    )
    lesions = {0: "HAM_A", 7: "HAM_A", 1: "HAM_B", 8: "HAM_B", 2: "HAM_C"}
    write_csv(
        root / "ISIC2018_Task3_Training_LesionGroupings.csv",
        ["image", "lesion_id", "diagnosis_confirm_type"],
        [[f"ISIC_{i:07d}", lesions.get(i, f"HAM_{i:02d}"), "histopathology"] for i in range(12)],
    )
    for i, _ in train:
        image(root / "ISIC2018_Task3_Training_Input" / f"{i}.jpg")
    (root / "ISIC2018_Task3_Training_Input" / "ATTRIBUTION.txt").write_text("x")
    for part, base, n in (("Validation", 100, 3), ("Test", 200, 4)):
        write_csv(
            root / f"ISIC2018_Task3_{part}_GroundTruth" / f"ISIC2018_Task3_{part}_GroundTruth.csv",
            T3_COLS,
            [onehot(f"ISIC_{base + i:07d}", i) for i in range(n)],
        )
        for i in range(n):
            image(root / f"ISIC2018_Task3_{part}_Input" / f"ISIC_{base + i:07d}.jpg")


def test_t3_official_split_and_lesion_groups(tmp_path: Path) -> None:
    write_t3_official(tmp_path)
    m = build("t3", tmp_path)
    assert m.classes == ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    assert per_split(m) == {"train": 12, "val": 3, "test": 4}
    i = m.ids.index("ISIC2018_Task3_Training_Input/ISIC_0000008.jpg")
    assert (m.labels[i], m.groups[i], m.split[i]) == (1, "HAM_B", "train")
    assert m.counts()["test"] == {
        "MEL": 1,
        "NV": 1,
        "BCC": 1,
        "AKIEC": 1,
        "BKL": 0,
        "DF": 0,
        "VASC": 0,
    }
    assert m.info["lesion_ids_known"] == 12 and m.info["dropped_lesion_in_test"] == 0
    assert m.info["split_source"].startswith("official")


def test_t3_test_lesion_shared_with_training_is_dropped_from_train(tmp_path: Path) -> None:
    write_t3_official(tmp_path)
    # a test ground truth in HAM10000 metadata form, carrying lesion ids
    write_csv(
        tmp_path / "ISIC2018_Task3_Test_GroundTruth" / "ISIC2018_Task3_Test_GroundTruth.csv",
        ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"],
        [
            ["HAM_A", "ISIC_0000200", "mel", "histo", "50.0", "male", "back"],
            ["HAM_X", "ISIC_0000201", "nv", "follow_up", "45.0", "female", "trunk"],
        ],
    )
    m = build("t3", tmp_path)
    assert m.info["dropped_lesion_in_test"] == 2  # ISIC_0000000 and ISIC_0000007 (HAM_A)
    assert per_split(m) == {"train": 10, "val": 3, "test": 2}
    no_group_on_two_sides(m)


def test_t3_ham10000_tab_metadata_lesion_grouped_split(tmp_path: Path) -> None:
    """Harvard Dataverse layout: ``HAM10000_metadata`` (no suffix, TAB-separated), two image
    parts, plus Kaggle's lower-case duplicate of part 1."""
    dx = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    rows = []
    for i in range(42):
        rows.append(
            [
                f"HAM_{i // 2:07d}",
                f"ISIC_{i:07d}",
                dx[(i // 2) % 7],
                "histo",
                "60.0",
                "male",
                "back",
            ]
        )
    write_csv(
        tmp_path / "HAM10000_metadata",
        ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"],
        rows,
        delimiter="\t",
    )
    for i in range(42):
        part = "HAM10000_images_part_1" if i < 20 else "HAM10000_images_part_2"
        image(tmp_path / part / f"ISIC_{i:07d}.jpg")
        if i < 20:
            image(tmp_path / "ham10000_images_part_1" / f"ISIC_{i:07d}.jpg")
    m = build("t3", tmp_path)
    assert len(m) == 42 and m.info["duplicate_image_names"] == 20
    assert all(not i.startswith("ham10000") for i in m.ids)
    # 6 images (3 lesions of 2) per class; 0.2 x 42 -> 8 test images = 4 whole lesions
    assert per_split(m) == {"train": 34, "test": 8}
    assert m.counts()["test"] == {
        "MEL": 0,
        "NV": 2,
        "BCC": 2,
        "AKIEC": 0,
        "BKL": 2,
        "DF": 0,
        "VASC": 2,
    }
    no_group_on_two_sides(m)
    assert len(set(m.groups)) == 21 and "lesion_id" in m.info["split_source"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda r: r.__setitem__(1, onehot("ISIC_0000001", 1)[:3] + ["1.0"] * 5),
            r"Training_GroundTruth.csv, row 3: expected one class = 1.0",
        ),
        (
            lambda r: r.__setitem__(2, ["ISIC_0000002", "x", "0", "0", "0", "0", "0", "0"]),
            r"row 4: non-numeric one-hot value",
        ),
        (
            lambda r: r.append(onehot("ISIC_0000099", 0)),
            r"row 14: image file for 'ISIC_0000099' not found",
        ),
    ],
)
def test_t3_bad_rows_name_file_and_row(tmp_path: Path, edit: Any, message: str) -> None:
    write_t3_official(tmp_path)
    p = tmp_path / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv"
    rows = [onehot(f"ISIC_{i:07d}", i % 7) for i in range(12)]
    edit(rows)
    write_csv(p, T3_COLS, rows)
    with pytest.raises(ManifestError, match=message):
        build("t3", tmp_path)
    m = build("t3", tmp_path, on_bad_row="skip")
    assert sum(m.info["skipped_rows"].values()) == 1


def test_t3_real_ham10000(tmp_path: Path, shared_data: Path) -> None:
    src = shared_data / "T3_ham10000"
    for f in sorted((src / "images").iterdir()):
        link(f, tmp_path / "HAM10000_images_part_1" / f.name)
    # (a) the real metadata file restricted to the 280 images present (rows copied verbatim)
    present = {f.stem for f in (src / "images").iterdir()}
    lines = (src / "HAM10000_metadata.csv").read_text().splitlines()
    kept = [ln for ln in lines[1:] if ln.split(",")[1] in present]
    (tmp_path / "HAM10000_metadata.csv").write_text("\n".join([lines[0], *kept]) + "\n")
    m = build("t3", tmp_path)
    assert len(m) == 280 and len(set(m.groups)) == 280
    assert per_split(m) == {"train": 224, "test": 56}
    assert m.counts()["train"] == dict.fromkeys(m.classes, 32)
    assert m.counts()["test"] == dict.fromkeys(m.classes, 8)
    truth = {
        r["path"].split("/")[-1]: r["label"].upper()
        for r in csv.DictReader(open(src / "labels.csv"))
    }
    assert all(truth[Path(i).name] == m.classes[k] for i, k in zip(m.ids, m.labels, strict=True))
    # (b) the full 10,015-row metadata: 9,735 images are not in the sample
    os.unlink(tmp_path / "HAM10000_metadata.csv")
    link(src / "HAM10000_metadata.csv", tmp_path / "HAM10000_metadata.csv")
    with pytest.raises(
        ManifestError,
        match=r"HAM10000_metadata.csv, row 2: image file for "
        r"'ISIC_0027419' not found",
    ):
        build("t3", tmp_path)
    m = build("t3", tmp_path, on_bad_row="skip")
    assert len(m) == 280 and m.info["skipped_rows"] == {"missing_image": 9735}


# ---------------------------------------------------------------------------------------------
# T4 ISIC 2020

T4_COLS = [
    "image_name",
    "patient_id",
    "lesion_id",
    "sex",
    "age_approx",
    "anatom_site_general_challenge",
    "diagnosis",
    "benign_malignant",
    "target",
]


def write_t4(root: Path) -> list[list[str]]:
    rows = []
    for p in range(10):
        for j in range(3):
            i = 3 * p + j
            mal = j == 0 and p < 5
            rows.append(
                [
                    f"ISIC_{i:07d}",
                    f"IP_{p:07d}",
                    f"IL_{i:07d}",
                    "male",
                    "45.0",
                    "torso",
                    "melanoma" if mal else "nevus",
                    "malignant" if mal else "benign",
                    str(int(mal)),
                ]
            )
            image(root / "ISIC_2020_Training_JPEG" / "train" / f"ISIC_{i:07d}.jpg")
    (root / "train").mkdir()
    (root / "train" / "ISIC_0000000.dcm").write_bytes(b"DICM")  # Kaggle's DICOM: never listed
    write_csv(root / "ISIC_2020_Training_GroundTruth_v2.csv", T4_COLS, rows)
    write_csv(
        root / "ISIC_2020_Training_Duplicates.csv",
        ["image_name_1", "image_name_2"],
        [["ISIC_0000001", "ISIC_0000002"]],
    )
    return rows


def test_t4_duplicates_dropped_patient_level_split(tmp_path: Path) -> None:
    write_t4(tmp_path)
    m = build("t4", tmp_path)
    assert len(m) == 29 and m.info["dropped_duplicates"] == 1
    assert "ISIC_2020_Training_JPEG/train/ISIC_0000002.jpg" not in m.ids
    assert all(i.endswith(".jpg") for i in m.ids)
    assert int(m.labels.sum()) == 5 and m.info["patients"] == 10
    no_group_on_two_sides(m)
    assert per_split(m) == {"train": 23, "test": 6}
    assert m.counts()["test"] == {"benign": 5, "malignant": 1}
    assert "grouped by patient_id" in m.info["split_source"]


def test_t4_kaggle_train_csv_and_bad_rows(tmp_path: Path) -> None:
    rows = write_t4(tmp_path)
    (tmp_path / "ISIC_2020_Training_GroundTruth_v2.csv").unlink()
    cols = [c for c in T4_COLS if c != "lesion_id"]
    rows = [[v for c, v in zip(T4_COLS, r, strict=True) if c != "lesion_id"] for r in rows]
    rows[4][-1] = "2"
    rows[7][-2] = "malignant"  # contradicts target 0
    write_csv(tmp_path / "train.csv", cols, rows)
    with pytest.raises(ManifestError, match=r"train.csv, row 6: unknown target '2'"):
        build("t4", tmp_path)
    m = build("t4", tmp_path, on_bad_row="skip")
    assert len(m) == 27
    assert m.info["skipped_rows"] == {"label_conflict": 1, "unknown_label": 1}


# ---------------------------------------------------------------------------------------------
# T5 EyePACS + APTOS 2019


def write_t5(root: Path) -> None:
    train = list(
        zip(
            [
                "10_left",
                "10_right",
                "13_left",
                "13_right",
                "15_left",
                "15_right",
                "16_left",
                "16_right",
            ],
            [0, 0, 1, 2, 3, 4, 0, 1],
            strict=True,
        )
    )
    write_csv(root / "eyepacs" / "trainLabels.csv", ["image", "level"], train)
    for name, _ in train:
        image(root / "eyepacs" / "train" / f"{name}.jpeg")
    test = [
        ["1_left", 0, "Private"],
        ["1_right", 2, "Public"],
        ["3_left", 4, "Public"],
        ["3_right", 3, "Private"],
    ]
    write_csv(root / "eyepacs" / "retinopathy_solution.csv", ["image", "level", "Usage"], test)
    for name, *_ in test:
        image(root / "eyepacs" / "test" / f"{name}.jpeg")
    aptos = [
        ["000c1434d8d7", 2],
        ["001639a390f0", 4],
        ["0024cdab0c1e", 1],
        ["002c21358ce6", 0],
        ["005b95c28852", 0],
    ]
    write_csv(root / "aptos2019" / "train.csv", ["id_code", "diagnosis"], aptos)
    write_csv(root / "aptos2019" / "test.csv", ["id_code"], [["0005cfc8afb6"]])
    for code, _ in aptos:
        image(root / "aptos2019" / "train_images" / f"{code}.png")


def test_t5_eyepacs_train_aptos_test_eyes_grouped(tmp_path: Path) -> None:
    write_t5(tmp_path)
    m = build("t5", tmp_path)
    assert m.classes == ["no_DR", "mild", "moderate", "severe", "proliferative"]
    assert per_split(m) == {"train": 12, "test": 5}
    assert m.counts()["train"] == {
        "no_DR": 4,
        "mild": 2,
        "moderate": 2,
        "severe": 2,
        "proliferative": 2,
    }
    assert list(m.counts()["test"].values()) == [2, 1, 1, 0, 1]
    g = dict(zip(m.ids, m.groups, strict=True))
    assert g["eyepacs/train/10_left.jpeg"] == g["eyepacs/train/10_right.jpeg"] == "eyepacs:10"
    assert g["eyepacs/test/1_left.jpeg"] == "eyepacs:1"
    assert all(g[i] == "" for i in m.ids if i.startswith("aptos2019/"))
    assert m.info["eyepacs_patients"] == 6
    assert per_split(build("t5", tmp_path, options={"eyepacs_test": "drop"})) == {
        "train": 8,
        "test": 5,
    }


def test_t5_bad_grade_name_and_missing_aptos(tmp_path: Path) -> None:
    write_t5(tmp_path)
    with open(tmp_path / "eyepacs" / "trainLabels.csv", "a") as f:
        f.write("17_left,5\n20-left,1\n")
    with pytest.raises(ManifestError, match=r"trainLabels.csv, row 10: unknown grade '5'"):
        build("t5", tmp_path)
    m = build("t5", tmp_path, on_bad_row="skip")
    assert m.info["skipped_rows"] == {"malformed_row": 1, "unknown_label": 1}
    (tmp_path / "aptos2019" / "train.csv").unlink()
    with pytest.raises(ManifestError, match=r"APTOS 2019 train.csv \(id_code,diagnosis\) not"):
        build("t5", tmp_path)


# ---------------------------------------------------------------------------------------------
# T6 AIROGS + ODIR-2019

ODIR_COLS = [
    "ID",
    "Patient Age",
    "Patient Sex",
    "Left-Fundus",
    "Right-Fundus",
    "Left-Diagnostic Keywords",
    "Right-Diagnostic Keywords",
    "N",
    "D",
    "G",
    "C",
    "A",
    "H",
    "M",
    "O",
]
FW = "\uff0c"  # the full-width comma separating ODIR keywords


def odir_row(pid: int, left: str, right: str, g: int = 0) -> list[Any]:
    return [
        pid,
        60,
        "Female",
        f"{pid}_left.jpg",
        f"{pid}_right.jpg",
        left,
        right,
        0,
        0,
        g,
        0,
        0,
        0,
        0,
        0,
    ]


def write_t6(root: Path) -> None:
    airogs = [
        ["TRAIN000000", "NRG"],
        ["TRAIN000001", "RG"],
        ["TRAIN000002", "NRG"],
        ["TRAIN000003", "RG"],
        ["TRAIN000004", "NRG"],
    ]
    write_csv(root / "airogs" / "train_labels.csv", ["challenge_id", "class"], airogs)
    for k, (cid, _) in enumerate(airogs):
        image(root / "airogs" / str(k // 2) / f"{cid}.jpg")
    rows = [
        odir_row(0, "cataract", "normal fundus"),
        odir_row(1, "normal fundus", f"glaucoma{FW}moderate non proliferative retinopathy", 1),
        odir_row(2, "suspected glaucoma", "glaucoma", 1),
        odir_row(
            3, f"laser spot{FW}glaucoma{FW}lens dust", "optic disk photographically invisible", 1
        ),
        odir_row(4, "hypertensive retinopathy,glaucoma", "normal fundus", 1),
        odir_row(0, "cataract", "normal fundus"),  # Kaggle full_df.csv repeats patients
    ]
    write_csv(root / "ODIR-5K" / "data.csv", ODIR_COLS, rows)
    for pid in range(5):
        for side in ("left", "right"):
            image(root / "ODIR-5K" / "Training Images" / f"{pid}_{side}.jpg", value=pid)
    image(root / "ODIR-5K" / "Testing Images" / "0_left.jpg", value=200)  # not the same eye


def test_t6_airogs_train_odir_per_eye_exact_tokens(tmp_path: Path) -> None:
    write_t6(tmp_path)
    m = build("t6", tmp_path)
    assert m.classes == ["no_glaucoma", "glaucoma"]
    assert per_split(m) == {"train": 5, "test": 9}
    assert m.counts()["train"] == {"no_glaucoma": 3, "glaucoma": 2}
    pos = {
        Path(i).name
        for i, s, k in zip(m.ids, m.split, m.labels, strict=True)
        if s == "test" and k == 1
    }
    assert pos == {"1_right.jpg", "2_right.jpg", "3_left.jpg", "4_left.jpg"}
    assert "ODIR-5K/Training Images/0_left.jpg" in m.ids
    assert "ODIR-5K/Training Images/2_left.jpg" not in m.ids  # suspected: dropped
    assert m.info["odir"]["suspected_glaucoma_eyes"] == 1
    assert m.info["odir"]["repeated_rows_read_once"] == 1
    assert m.groups[m.ids.index("ODIR-5K/Training Images/3_left.jpg")] == "odir:3"
    m = build("t6", tmp_path, options={"suspected_glaucoma": "positive"})
    assert int(m.labels[m.split == "test"].sum()) == 5 and per_split(m)["test"] == 10
    assert t6_glaucoma.keywords(f" Glaucoma{FW} lens dust ,x") == ["glaucoma", "lens dust", "x"]


def test_t6_xlsx_only_and_bad_rows(tmp_path: Path) -> None:
    write_t6(tmp_path)
    odir = tmp_path / "ODIR-5K" / "data.csv"
    text = odir.read_text().splitlines()
    odir.unlink()
    (tmp_path / "ODIR-5K" / "ODIR-5K_Training_Annotations(Updated)_V2.xlsx").write_bytes(b"PK")
    with pytest.raises(ManifestError, match=r"Found .*V2.xlsx: export it as CSV"):
        build("t6", tmp_path)
    text[2] = text[2].replace("normal fundus", "")  # ID 1: empty left keywords
    odir.write_text("\n".join(text) + "\n")
    with pytest.raises(ManifestError, match=r"data.csv, row 3: left eye of ID '1': empty"):
        build("t6", tmp_path)
    with open(tmp_path / "airogs" / "train_labels.csv", "a") as f:
        f.write("TRAIN000005,maybe\n")
    m = build("t6", tmp_path, on_bad_row="skip")
    assert m.info["skipped_rows"] == {"malformed_row": 1, "unknown_label": 1}


# ---------------------------------------------------------------------------------------------
# T7 PadChest

PADCHEST_COLS = [
    "ImageID",
    "ImageDir",
    "StudyDate_DICOM",
    "StudyID",
    "PatientID",
    "PatientBirth",
    "PatientSex_DICOM",
    "ViewPosition_DICOM",
    "Projection",
    "MethodProjection",
    "Pediatric",
    "Modality_DICOM",
    "Manufacturer_DICOM",
    "PhotometricInterpretation_DICOM",
    "PixelRepresentation_DICOM",
    "PixelAspectRatio_DICOM",
    "SpatialResolution_DICOM",
    "BitsStored_DICOM",
    "WindowCenter_DICOM",
    "WindowWidth_DICOM",
    "Rows_DICOM",
    "Columns_DICOM",
    "XRayTubeCurrent_DICOM",
    "Exposure_DICOM",
    "ExposureInuAs_DICOM",
    "ExposureTime",
    "RelativeXRayExposure_DICOM",
    "ReportID",
    "Report",
    "MethodLabel",
    "Labels",
    "Localizations",
    "LabelsLocalizationsBySentence",
    "labelCUIS",
    "LocalizationsCUIS",
]
T7_ROWS = [  # (patient, method, labels cell)
    ("P1", "Physician", "['pleural effusion', 'cardiomegaly']"),
    ("P2", "Physician", "['pleural effusion']"),
    ("P3", "Physician", "[' normal']"),
    ("P4", "Physician", "['loculated pleural effusion']"),
    ("P5", "Physician", "['normal']"),
    ("P6", "Physician", "['exclude']"),
    ("P7", "Physician", "[]"),
    ("P8", "Physician", ""),
    ("P9", "Physician", "['suboptimal study', 'cardiomegaly']"),
    ("P10", "Physician", "['cardiomegaly', 'pneumonia']"),
    ("P11", "RNN_model", "['pneumonia']"),
    ("P1", "RNN_model", "['cardiomegaly']"),
    ("P12", "RNN_model", "['pleural effusion', 'atypical pneumonia']"),
    ("P13", "RNN_model", "['normal']"),
]


def write_t7(root: Path, rows: list[tuple[str, str, str]] = T7_ROWS, gz: bool = False) -> Path:
    out = []
    for i, (pid, method, labels) in enumerate(rows):
        name = f"2168401113669640130761877348520112910904{i:02d}_00-196-140.png"
        d = str(i % 2)
        image(root / d / name, (24, 20), i * 1000, mode="I;16")
        rec = dict.fromkeys(PADCHEST_COLS, "")
        rec.update(
            ImageID=name,
            ImageDir=d,
            PatientID=pid,
            MethodLabel=method,
            Labels=labels,
            StudyID=f"S{i}",
            Projection="PA",
            BitsStored_DICOM="12",
            Report=f'hallazgos, "sin" cambios {i}.',
            ReportID=str(i),
        )
        out.append([rec[c] for c in PADCHEST_COLS])
    path = root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
    write_csv(path, PADCHEST_COLS, out)
    if gz:
        gpath = path.with_name(path.name + ".gz")
        gpath.write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
        path = gpath
    return path


def test_t7_exact_tokens_dropped_rows_physician_test_set(tmp_path: Path) -> None:
    write_t7(tmp_path)
    m = build("t7", tmp_path, min_test_positives=2)
    assert m.multilabel and m.classes == ["cardiomegaly", "normal", "pleural effusion"]
    assert m.labels.shape == (9, 3) and m.labels.dtype == np.uint8
    assert per_split(m) == {"train": 3, "test": 6}
    assert m.info["dropped"] == {
        "empty_labels": 2,
        "exclude": 1,
        "suboptimal_study": 1,
        "train_rows_of_test_patients": 1,
    }
    assert m.info["test_positives"] == {"cardiomegaly": 2, "normal": 2, "pleural effusion": 2}
    assert m.info["findings_below_threshold"] == 2  # loculated pleural effusion, pneumonia
    assert m.info["all_negative_rows"] == 2
    row = dict(zip(m.ids, m.labels.tolist(), strict=True))
    loculated = [i for i in m.ids if i.endswith("03_00-196-140.png")][0]
    assert row[loculated] == [0, 0, 0]  # "loculated pleural effusion" is not "pleural effusion"
    assert m.ids[0] == "0/216840111366964013076187734852011291090400_00-196-140.png"
    no_group_on_two_sides(m)
    # 16-bit PNGs are what the loader scales by their maximum
    from medprobe.data.images import load_image

    assert np.asarray(load_image(m.paths[1])).max() == 255
    assert Image.open(m.paths[1]).mode == "I;16"


def test_t7_gzip_threshold_and_malformed_rows(tmp_path: Path) -> None:
    write_t7(tmp_path, gz=True)
    assert len(build("t7", tmp_path, min_test_positives=2)) == 9
    with pytest.raises(ManifestError, match=r"no finding has >= 3 positives"):
        build("t7", tmp_path, min_test_positives=3)
    rows = [*T7_ROWS, ("P20", "RNN_model", "['pleural effusion'"), ("P21", "Doctor", "['x']")]
    for f in tmp_path.glob("PADCHEST*"):
        f.unlink()
    write_t7(tmp_path, rows)
    with pytest.raises(ManifestError, match=r"160K_01.02.19.csv, row 16: malformed Labels"):
        build("t7", tmp_path, min_test_positives=2)
    m = build("t7", tmp_path, min_test_positives=2, on_bad_row="skip")
    assert len(m) == 9
    assert m.info["skipped_rows"] == {"malformed_labels": 1, "unknown_method": 1}
    assert t7_padchest.parse_labels("['a', ' b', 'a', '']") == ["a", "b"]
    assert t7_padchest.parse_labels("__import__('os')") is None


def test_t7_real_nih_cxr_as_padchest_stand_in(tmp_path: Path, shared_data: Path) -> None:
    """NIH ChestX-ray14 written as a PadChest CSV: the 64-px ``test`` folder plays the
    physician-labelled subset; the full-resolution images and train/valid are RNN-labelled.
    Expected values were computed independently from Data_Entry_2017_v2020.csv.gz: 200 test
    images; 77 of the 804 others belong to patients with a test image and are dropped."""
    src = shared_data / "T7_cxr_nih"
    entry = {}
    with gzip.open(src / "Data_Entry_2017_v2020.csv.gz", "rt") as f:
        for r in csv.DictReader(f):
            entry[r["Image Index"]] = (r["Finding Labels"], r["Patient ID"])
    link(src / "fullres", tmp_path / "fullres")
    link(src / "nih1000_64px", tmp_path / "nih1000_64px")
    rows = []
    for r in csv.DictReader(open(src / "labels.csv")):
        d, name = r["path"].rsplit("/", 1)
        findings, pid = entry[name]
        method = "Physician" if d.startswith("nih1000_64px/test") else "RNN_model"
        rec = dict.fromkeys(PADCHEST_COLS, "")
        rec.update(
            ImageID=name,
            ImageDir=d,
            PatientID=pid,
            MethodLabel=method,
            Labels=str(findings.split("|")),
        )
        rows.append([rec[c] for c in PADCHEST_COLS])
    write_csv(
        tmp_path / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", PADCHEST_COLS, rows
    )
    m = build("t7", tmp_path, min_test_positives=10)
    assert m.info["test_positives"] == {
        "Atelectasis": 18, "Cardiomegaly": 18, "Consolidation": 14, "Effusion": 29,
        "Fibrosis": 11, "Infiltration": 43, "No Finding": 100, "Nodule": 10,
    }  # fmt: skip
    assert m.classes == sorted(m.info["test_positives"]) and m.labels.shape == (927, 8)
    assert per_split(m) == {"train": 727, "test": 200}
    assert m.info["dropped"] == {"train_rows_of_test_patients": 77}
    assert m.info["findings_below_threshold"] == 4  # Pleural_Thickening, Edema, Pneumonia, Mass
    # a full-resolution image and its 64-px copy (same base name) are two rows, one patient
    a, b = "fullres/00000001_000.png", "nih1000_64px/train/1_abnormal/00000001_000.png"
    assert m.groups[m.ids.index(a)] == m.groups[m.ids.index(b)] == "1"
    assert m.labels[m.ids.index(a)].tolist() == [0, 1, 0, 0, 0, 0, 0, 0]  # Cardiomegaly
    no_group_on_two_sides(m)


# ---------------------------------------------------------------------------------------------
# T8 OAI / MOST knees


def write_t8(root: Path, with_split: bool = False) -> list[list[Any]]:
    rows = []
    knees = [
        ("9000001", "OAI", 0),
        ("9000002", "OAI", 1),
        ("9000003", "OAI", 2),
        ("9000004", "OAI", 3),
        ("9000005", "OAI", 4),
        ("MB00001", "MOST", 2),
        ("MB00002", "MOST", 4),
    ]
    for pid, cohort, kl in knees:
        for side in ("L", "R"):
            rel = f"{cohort}/{pid}/V00/knee_{side}.png"
            image(root / rel, (40, 30), int(kl) * 7, mode="I;16")
            rows.append([rel, side if side == "R" else "left", f"{kl}.0", pid, cohort])
    if with_split:
        rows = [[*r, "test" if r[4] == "MOST" else "train"] for r in rows]
    header = ["image", "side", "kl_grade", "patient_id", "cohort"] + (
        ["split"] if with_split else []
    )
    write_csv(root / "knee_kl.csv", header, rows)
    return rows


def test_t8_cohort_split_sides_and_grades(tmp_path: Path) -> None:
    write_t8(tmp_path)
    m = build("t8", tmp_path)
    assert m.classes == ["KL0", "KL1", "KL2", "KL3", "KL4"] and len(m) == 14
    assert per_split(m) == {"train": 10, "test": 4}
    assert all(s == "test" for i, s in zip(m.ids, m.split, strict=True) if i.startswith("MOST"))
    assert m.counts()["test"] == {"KL0": 0, "KL1": 0, "KL2": 2, "KL3": 0, "KL4": 2}
    assert m.info["sides"] == {"L": 7, "R": 7} and m.info["cohorts"] == {"MOST": 4, "OAI": 10}
    assert m.info["split_source"].startswith("cohort: OAI -> train, MOST -> test")
    # one cohort only -> patient-level stratified split
    m1 = build("t8", tmp_path, options={"test_cohort": None})
    no_group_on_two_sides(m1)
    assert "patient-level" in m1.info["split_source"]


def test_t8_split_column_patient_overlap_refused(tmp_path: Path) -> None:
    rows = write_t8(tmp_path, with_split=True)
    assert per_split(build("t8", tmp_path)) == {"train": 10, "test": 4}
    rows[0][5] = "test"  # left knee of 9000001 in test, right knee in train
    write_csv(
        tmp_path / "knee_kl.csv",
        ["image", "side", "kl_grade", "patient_id", "cohort", "split"],
        rows,
    )
    with pytest.raises(ManifestError, match=r"knee_kl.csv: patient '9000001' is in both"):
        build("t8", tmp_path)


def test_t8_roi_crop_and_left_flip_written_once(tmp_path: Path) -> None:
    rows = write_t8(tmp_path)
    boxes = [[r[0], 5, 4, 25, 24] for r in rows]
    boxes[-1] = [rows[-1][0], 30, 20, 50, 40]  # partly outside the 40 x 30 image
    write_csv(tmp_path / "boxes.csv", ["image", "x0", "y0", "x1", "y1"], boxes)
    m = build("t8", tmp_path, roi_boxes=str(tmp_path / "boxes.csv"), flip_left=True)
    assert m.info["flipped"] == 7
    i = m.ids.index("OAI/9000003/V00/knee_L.png")
    src = np.asarray(Image.open(tmp_path / m.ids[i]))
    out = Image.open(m.paths[i])
    assert out.mode == "I;16" and m.paths[i].name == "knee_L__roi5_4_25_24_flip.png"
    np.testing.assert_array_equal(np.asarray(out), src[4:24, 5:25][:, ::-1])
    j = m.ids.index("OAI/9000003/V00/knee_R.png")
    np.testing.assert_array_equal(
        np.asarray(Image.open(m.paths[j])),
        src_r := np.asarray(Image.open(tmp_path / m.ids[j]))[4:24, 5:25],
    )
    assert src_r.shape == (20, 20)
    last = np.asarray(Image.open(m.paths[-1]))
    assert last.shape == (20, 20) and (last[10:, :] == 0).all() and (last[:, 10:] == 0).all()
    stamp = m.paths[i].stat().st_mtime_ns
    build("t8", tmp_path, roi_boxes=str(tmp_path / "boxes.csv"), flip_left=True)
    assert m.paths[i].stat().st_mtime_ns == stamp
    write_csv(tmp_path / "boxes.csv", ["image", "x0", "y0", "x1", "y1"], boxes[1:])
    with pytest.raises(ManifestError, match=r"knee_kl.csv, row 2: no ROI box"):
        build("t8", tmp_path, roi_boxes=str(tmp_path / "boxes.csv"))


def test_t8_bad_rows(tmp_path: Path) -> None:
    rows = write_t8(tmp_path)
    rows[2][2] = "8"
    rows[3][1] = "X"
    rows.append(["OAI/nope.png", "R", "1", "9000009", "OAI"])
    write_csv(tmp_path / "knee_kl.csv", ["image", "side", "kl_grade", "patient_id", "cohort"], rows)
    with pytest.raises(ManifestError, match=r"knee_kl.csv, row 4: unknown KL grade '8'"):
        build("t8", tmp_path)
    m = build("t8", tmp_path, on_bad_row="skip")
    assert len(m) == 12
    assert m.info["skipped_rows"] == {"malformed_row": 1, "missing_image": 1, "unknown_label": 1}
    (tmp_path / "knee_kl.csv").unlink()
    with pytest.raises(ManifestError, match=r"knee label CSV not found: .*knee_kl.csv"):
        build("t8", tmp_path)


def t8_real_layout(root: Path, shared_data: Path) -> None:
    """The 100 real OAI knee crops with the documented CSV (side = file-name suffix)."""
    link(shared_data / "T8_knee_kl" / "test", root / "test")
    rows = [
        [r["path"], Path(r["path"]).stem[-1], r["label"], r["patient_id"], "OAI"]
        for r in csv.DictReader(open(shared_data / "T8_knee_kl" / "labels.csv"))
    ]
    write_csv(root / "knee_kl.csv", ["image", "side", "kl_grade", "patient_id", "cohort"], rows)


def test_t8_real_oai_knees(tmp_path: Path, shared_data: Path) -> None:
    t8_real_layout(tmp_path, shared_data)
    m = build("t8", tmp_path, flip_left=True, derived_dir=str(tmp_path / "derived"))
    assert len(m) == 100 and np.bincount(m.labels).tolist() == [20] * 5
    assert m.info["patients"] == 95 and m.info["sides"] == {"L": 59, "R": 41}
    assert per_split(m) == {"train": 80, "test": 20}
    assert m.counts()["test"] == dict.fromkeys(m.classes, 4)
    no_group_on_two_sides(m)
    assert m.info["flipped"] == 59
    i = next(k for k, x in enumerate(m.ids) if x.endswith("L.png"))
    np.testing.assert_array_equal(
        np.asarray(Image.open(m.paths[i])), np.asarray(Image.open(tmp_path / m.ids[i]))[:, ::-1]
    )


@pytest.mark.parametrize(
    ("task", "write", "over"),
    [
        ("t5", write_t5, {"options": {"eyepacs_test": "drop"}}),
        ("t8", write_t8, {"options": {"test_cohort": None}, "on_bad_row": "skip"}),
    ],
)
def test_adapters_read_the_composed_and_the_typed_config_alike(
    tmp_path: Path, task: str, write: Any, over: dict[str, Any]
) -> None:
    """Until the pipeline passes typed objects (``medprobe.config.to_typed``), the runner
    hands adapters the composed DictConfig: both give the same manifest."""
    write(tmp_path)
    a = TASKS.get(task)(cfg(task, tmp_path, **over), None)
    b = TASKS.get(task)(typed(task, tmp_path, **over), None)
    assert a.ids == b.ids and a.split.tolist() == b.split.tolist()
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.info == b.info
    if task == "t5":  # the option took effect: EyePACS' test images left out
        assert per_split(a) == {"train": 8, "test": 5}
    else:  # test_cohort=null: a patient-level split instead of the MOST cohort
        assert "patient-level" in a.info["split_source"]


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
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "medprobe",
            "task=t1",
            f"data_root={root}",
            "tracker=none",
            "bootstrap.n=200",
            "output_dir=out",
            "progress=false",
        ],
        cwd=tmp_path,
        env=isolated_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads((tmp_path / "out" / "results.json").read_text())
    assert r["task"] == "t1" and r["primary_metric"] == "f1_macro"
    assert r["counts"]["test"] == 22 and r["counts"]["fit"] + r["counts"]["val"] == 23
    assert r["task_info"]["split_source"].startswith("official")
    for c in T1_CLASSES:
        assert f"auroc/{c}" in proc.stdout
    assert "f1_macro" in proc.stdout and "95% CI" in proc.stdout
    f1 = r["metrics"]["f1_macro"]
    assert 0.0 <= f1["ci_low"] <= f1["value"] <= f1["ci_high"] <= 1.0
