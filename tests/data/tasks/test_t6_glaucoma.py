"""T6 AIROGS + ODIR-2019 (medprobe/data/tasks/t6_glaucoma.py): AIROGS trains, ODIR eyes test;
exact keyword tokens, suspected glaucoma, the xlsx-only case and bad rows.

Every test checks values (labels, counts, splits, dropped rows), not just that it ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from task_helpers import build, image, per_split, write_csv

from medprobe.data.manifest import ManifestError
from medprobe.data.tasks import t6_glaucoma

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
