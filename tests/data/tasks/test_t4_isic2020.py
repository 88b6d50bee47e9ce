"""T4 ISIC 2020 (medprobe/data/tasks/t4_isic2020.py): duplicates dropped, patient-level split,
Kaggle's train.csv and its bad rows.

Every test checks values (labels, counts, splits, dropped rows), not just that it ran.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from task_helpers import build, image, no_group_on_two_sides, per_split, write_csv

from medprobe.data.manifest import ManifestError

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
