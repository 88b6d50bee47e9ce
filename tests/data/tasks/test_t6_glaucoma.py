"""T6 AIROGS + ODIR-2019 (medprobe/data/tasks/t6_glaucoma.py): AIROGS trains, ODIR eyes test;
exact keyword tokens, suspected glaucoma, the official .xlsx read directly, CSV exports in a
legacy encoding refused, and bad rows.

Every test checks values (labels, counts, splits, dropped rows), not just that it ran.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from PIL import Image
from task_helpers import build, image, link, per_split, write_csv

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
XLSX = "ODIR-5K_Training_Annotations(Updated)_V2.xlsx"


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
    m = build("t6", tmp_path, options={"suspected_glaucoma": "drop"})
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
    assert m.info["odir"]["suspected_glaucoma_policy"] == "drop"
    m = build("t6", tmp_path)  # default: suspected glaucoma is glaucoma (docs/tasks.md#t6)
    assert int(m.labels[m.split == "test"].sum()) == 5 and per_split(m)["test"] == 10
    assert m.labels[m.ids.index("ODIR-5K/Training Images/2_left.jpg")] == 1
    assert m.info["odir"]["suspected_glaucoma_policy"] == "positive"
    m = build("t6", tmp_path, options={"suspected_glaucoma": "negative"})
    assert int(m.labels[m.split == "test"].sum()) == 4 and per_split(m)["test"] == 10
    assert t6_glaucoma.keywords(f" Glaucoma{FW} lens dust ,x") == ["glaucoma", "lens dust", "x"]


def test_t6_broken_xlsx_and_bad_rows(tmp_path: Path) -> None:
    write_t6(tmp_path)
    odir = tmp_path / "ODIR-5K" / "data.csv"
    text = odir.read_text().splitlines()
    odir.unlink()
    (tmp_path / "ODIR-5K" / XLSX).write_bytes(b"PK")
    with pytest.raises(ManifestError, match=r"V2.xlsx: cannot read as an Excel workbook"):
        build("t6", tmp_path)
    (tmp_path / "ODIR-5K" / XLSX).unlink()
    text[2] = text[2].replace("normal fundus", "")  # ID 1: empty left keywords
    odir.write_text("\n".join(text) + "\n")
    with pytest.raises(ManifestError, match=r"data.csv, row 3: left eye of ID '1': empty"):
        build("t6", tmp_path)
    with open(tmp_path / "airogs" / "train_labels.csv", "a") as f:
        f.write("TRAIN000005,maybe\n")
    m = build("t6", tmp_path, on_bad_row="skip")
    assert m.info["skipped_rows"] == {"malformed_row": 1, "unknown_label": 1}


# ---- the official files: the .xlsx as distributed, real image files, legacy CSV exports

#: (ID, left keywords, right keywords, G) in the workbook's layout; 12 eyes, 2 suspected.
OFFICIAL = [
    (0, "cataract", "normal fundus", 0),
    (1, "normal fundus", f"glaucoma{FW}moderate non proliferative retinopathy", 1),
    (2, "suspected glaucoma", "glaucoma", 1),
    (3, f"laser spot{FW}glaucoma{FW}lens dust", "optic disk photographically invisible", 1),
    (4, f"suspected glaucoma{FW}drusen", "normal fundus", 0),
    (5, "normal fundus", "hypertensive retinopathy", 0),
]


def official_rows() -> list[list[Any]]:
    """Rows as the workbook holds them: integer ID, age and N..O codes (not text)."""
    return [odir_row(pid, left, right, g) for pid, left, right, g in OFFICIAL]


def write_official_t6(root: Path, shared_data: Path) -> Path:
    """AIROGS and ODIR as distributed, with real image files (stand-ins: the shared data has
    no fundus photographs; the adapter only lists paths): the ODIR annotations only as the
    official ``.xlsx``, written by openpyxl, images in ``ODIR-5K_Training_Dataset/``."""
    real = sorted((shared_data / "T3_ham10000" / "images").iterdir())
    airogs = [[f"TRAIN{k:06d}", "RG" if k % 3 == 0 else "NRG"] for k in range(6)]
    write_csv(root / "airogs" / "train_labels.csv", ["challenge_id", "class"], airogs)
    for k, (cid, _) in enumerate(airogs):
        link(real[k], root / "airogs" / str(k // 3) / f"{cid}.jpg")
    odir = root / "ODIR-2019"
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Sheet1"
    ws.append(ODIR_COLS)
    for r in official_rows():
        ws.append(r)
    odir.mkdir(parents=True, exist_ok=True)
    wb.save(odir / XLSX)
    for k, (pid, *_) in enumerate(OFFICIAL):
        for j, side in enumerate(("left", "right")):
            link(real[10 + 2 * k + j], odir / "ODIR-5K_Training_Dataset" / f"{pid}_{side}.jpg")
    return odir / XLSX


def test_t6_official_xlsx_is_read_directly(tmp_path: Path, shared_data: Path) -> None:
    xlsx = write_official_t6(tmp_path, shared_data)
    m = build("t6", tmp_path)
    assert m.info["files"]["odir"] == str(xlsx) and m.info["odir_format"] == "xlsx"
    assert per_split(m) == {"train": 6, "test": 12}
    assert m.counts()["train"] == {"no_glaucoma": 4, "glaucoma": 2}
    pos = {Path(i).name for i, s, k in zip(m.ids, m.split, m.labels, strict=True)
           if s == "test" and k == 1}  # fmt: skip
    # exact tokens at U+FF0C; suspected glaucoma counts as glaucoma by default
    assert pos == {"1_right.jpg", "2_left.jpg", "2_right.jpg", "3_left.jpg", "4_left.jpg"}
    assert m.info["odir"] == {
        "eyes": 12,
        "glaucoma": 5,
        "patients": 6,
        "suspected_glaucoma_eyes": 2,
        "suspected_glaucoma_policy": "positive",
        "suspected_glaucoma_rule": m.info["odir"]["suspected_glaucoma_rule"],
        "repeated_rows_read_once": 0,
    }
    assert "all 7,000 ODIR images" in m.info["odir"]["suspected_glaucoma_rule"]
    i = m.ids.index("ODIR-2019/ODIR-5K_Training_Dataset/3_left.jpg")
    assert m.groups[i] == "odir:3" and m.split[i] == "test"
    with Image.open(m.paths[i]) as im:  # a real JPEG photograph behind the listed path
        assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (200, 150))
    # the same table exported as a UTF-8 CSV (and named by task.csv) gives the same manifest
    csv_path = write_csv(tmp_path / "export.csv", ODIR_COLS, official_rows())
    c = build("t6", tmp_path, csv=str(csv_path))
    assert c.info["odir_format"] == "csv"
    assert (c.ids, c.labels.tolist(), c.groups.tolist()) == (
        m.ids,
        m.labels.tolist(),
        m.groups.tolist(),
    )
    d = build("t6", tmp_path, options={"suspected_glaucoma": "drop"})
    assert per_split(d)["test"] == 10 and int(d.labels[d.split == "test"].sum()) == 3


def _legacy(text: str, how: str) -> bytes:
    """``text`` (UTF-8) after a legacy-encoding round trip, as a spreadsheet program leaves it."""
    if how == "gbk":  # saved as GBK: U+FF0C -> A3 AC
        return text.encode("gbk")
    if how == "cp1252":  # saved as Windows-1252: U+FF0C is not representable -> '?'
        return text.encode("cp1252", errors="replace")
    if how == "utf8_read_as_cp1252":  # UTF-8 opened as Windows-1252, saved as UTF-8
        return text.encode("utf-8").decode("cp1252", errors="replace").encode("utf-8")
    if how == "gbk_read_as_latin1":  # a GBK file opened as Latin-1, saved as UTF-8
        return text.encode("gbk").decode("latin-1").encode("utf-8")
    raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("gbk", r"data\.csv, row 3: not UTF-8 \(byte 0xa3\): the CSV was saved in a legacy"),
        ("cp1252", r"data\.csv, row 3: Right-Diagnostic Keywords 'glaucoma\?moderate .*holds '\?'"),
        ("utf8_read_as_cp1252", r"data\.csv, row 3: Right-Diagnostic Keywords 'glaucomaï¼"),
        ("gbk_read_as_latin1", r"data\.csv, row 3: Right-Diagnostic Keywords 'glaucoma£¬"),
    ],
)
def test_t6_csv_in_a_legacy_encoding_is_refused(
    tmp_path: Path, shared_data: Path, how: str, message: str
) -> None:
    """A CSV export whose full-width commas did not survive: one line naming the file and row
    and what to do; never a silent negative (patient 1's right eye is glaucoma)."""
    write_official_t6(tmp_path, shared_data)
    (tmp_path / "ODIR-2019" / XLSX).unlink()
    utf8 = write_csv(tmp_path / "ODIR-2019" / "data.csv", ODIR_COLS, official_rows())
    m = build("t6", tmp_path)  # the UTF-8 export is fine
    assert m.labels[m.ids.index("ODIR-2019/ODIR-5K_Training_Dataset/1_right.jpg")] == 1
    utf8.write_bytes(_legacy(utf8.read_text(encoding="utf-8"), how))
    for policy in ("stop", "skip"):  # not a bad row to skip: the whole file is suspect
        with pytest.raises(ManifestError, match=message) as e:
            build("t6", tmp_path, on_bad_row=policy)
        assert "\n" not in str(e.value) and "CSV UTF-8" in str(e.value) and XLSX in str(e.value)
    if how == "gbk":  # a gzipped export (task.csv may name one) is checked the same way
        gz = utf8.with_name("export.csv.gz")
        gz.write_bytes(gzip.compress(utf8.read_bytes()))
        with pytest.raises(ManifestError, match=r"export\.csv\.gz, row 3: not UTF-8 \(byte 0xa3\)"):
            build("t6", tmp_path, csv=str(gz))
    assert t6_glaucoma.mojibake(f"laser spot{FW}glaucoma{FW}lens dust") is None
