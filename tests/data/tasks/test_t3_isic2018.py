"""T3 ISIC 2018 task 3 / HAM10000 (medprobe/data/tasks/t3_isic2018.py): the official split,
lesion-grouped splits, bad rows, and the 280 real HAM10000 images of ../shared/data.

Every test checks values (labels, counts, splits, dropped rows), not just that it ran.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from task_helpers import build, image, link, no_group_on_two_sides, per_split, write_csv

from medprobe.data.manifest import ManifestError

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


def test_t3_no_usable_rows_is_one_readable_line(tmp_path: Path) -> None:
    """A header-only metadata file, or one whose every image is missing, printed the whole
    ``info`` dict as a Python repr."""
    meta = tmp_path / "HAM10000_metadata.csv"
    write_csv(meta, ["lesion_id", "image_id", "dx"], [])
    with pytest.raises(ManifestError) as e:
        build("t3", tmp_path)
    assert str(e.value) == (
        f"task=t3: no usable rows under {tmp_path} ({meta}): the label file lists no images"
    )
    write_csv(meta, ["lesion_id", "image_id", "dx"], [["HAM_1", "ISIC_1", "nv"]] * 1)
    with pytest.raises(ManifestError) as e:
        build("t3", tmp_path, on_bad_row="skip")
    assert str(e.value) == (
        f"task=t3: no usable rows under {tmp_path} ({meta}): skipped_rows: {{'missing_image': 1}}"
    )


def test_t3_metadata_without_lesion_ids_is_named_not_asked_for(tmp_path: Path) -> None:
    """A HAM10000_metadata.csv whose lesion_id column is missing was answered with "add
    HAM10000_metadata.csv", the file that is there."""
    meta = tmp_path / "HAM10000_metadata.csv"
    write_csv(
        meta, ["lesion", "image_id", "dx"], [[f"HAM_{i}", f"ISIC_{i}", "nv"] for i in range(4)]
    )
    for i in range(4):
        image(tmp_path / "HAM10000_images_part_1" / f"ISIC_{i}.jpg")
    with pytest.raises(ManifestError) as e:
        build("t3", tmp_path)
    assert str(e.value).startswith(
        f"task=t3: no lesion ids for 4 of 4 training images: {meta} gives none for them (an "
        "empty or missing lesion_id column), so images of one lesion could land on both sides"
    )


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


def write_official_only(root: Path, shared_data: Path) -> None:
    """The official ISIC 2018 task 3 training files only, from the 280 real HAM10000 images:
    ``ISIC2018_Task3_Training_Input/`` and the one-hot ground truth; no HAM10000 metadata and
    no lesion groupings."""
    src = shared_data / "T3_ham10000"
    rows = []
    for r in csv.DictReader(open(src / "labels.csv")):
        name = Path(r["path"]).name
        link(src / "images" / name, root / "ISIC2018_Task3_Training_Input" / name)
        rows.append(onehot(Path(name).stem, T3_COLS.index(r["label"].upper()) - 1))
    write_csv(
        root / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv",
        T3_COLS,
        rows,
    )


def test_t3_official_files_only_refused_without_lesion_ids(
    tmp_path: Path, shared_data: Path
) -> None:
    """Without lesion ids a split can put images of one lesion on both sides: refused with one
    line naming the file to add, or (explicitly allowed) made by image and said so in
    task_info, the split description and the console table."""
    from dataclasses import replace

    from results_factory import make_results

    from medprobe.results import format_table, run_notes

    write_official_only(tmp_path, shared_data)
    with pytest.raises(ManifestError) as e:
        build("t3", tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(
        "task=t3: no lesion ids for 280 of 280 training images ("
    )
    assert "add HAM10000_metadata.csv (columns lesion_id,image_id,dx" in msg
    assert "or ISIC2018_Task3_Training_LesionGroupings.csv" in msg
    assert msg.endswith("or set task.allow_image_level_split=true to split by image "
                        "(lesion leakage possible)")  # fmt: skip
    m = build("t3", tmp_path, allow_image_level_split=True)
    assert len(m) == 280 and per_split(m) == {"train": 224, "test": 56}
    assert m.counts()["test"] == dict.fromkeys(m.classes, 8)
    assert m.info["grouped"] is False and m.info["lesion_ids_missing"] == 280
    assert m.info["split_source"].startswith(
        "image-level split (lesion leakage possible); no test ground truth: training images "
        "stratified split"
    )
    assert m.info["split_source"].endswith("by image; official validation images (if any) -> val")
    note = (
        "image-level split (lesion leakage possible): no lesion ids for 280 of 280 training "
        "images (task.allow_image_level_split=true)"
    )
    assert m.info["notes"] == [note]
    res = replace(make_results(), task_info=m.info)
    res = replace(res, notes=run_notes(res, np.array([0, 1, 2])))
    assert res.notes[0] == note and f"note: {note}" in format_table(res).splitlines()
    # with the lesion ids added (the metadata restricted to the sample) it is lesion-grouped
    src = shared_data / "T3_ham10000"
    present = {f.stem for f in (src / "images").iterdir()}
    lines = (src / "HAM10000_metadata.csv").read_text().splitlines()
    kept = [ln for ln in lines[1:] if ln.split(",")[1] in present]
    (tmp_path / "HAM10000_metadata.csv").write_text("\n".join([lines[0], *kept]) + "\n")
    m = build("t3", tmp_path)
    assert m.info["grouped"] is True and "notes" not in m.info
    assert "grouped by lesion_id" in m.info["split_source"]
