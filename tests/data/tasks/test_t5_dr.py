"""T5 EyePACS + APTOS 2019 (medprobe/data/tasks/t5_dr.py): EyePACS trains, APTOS tests, both eyes
of a patient on one side; bad grades and missing files.

Every test checks values (labels, counts, splits, dropped rows), not just that it ran.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from task_helpers import build, built_alike, image, per_split, write_csv

from medprobe.data.manifest import ManifestError


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


def test_t5_reads_the_composed_and_the_typed_config_alike(tmp_path: Path) -> None:
    """The composed DictConfig and the typed dataclass (``medprobe.config.to_typed``, what the
    pipeline passes) give the same manifest."""
    write_t5(tmp_path)
    a = built_alike("t5", tmp_path, options={"eyepacs_test": "drop"})
    # the option took effect: EyePACS' test images left out
    assert per_split(a) == {"train": 8, "test": 5}
