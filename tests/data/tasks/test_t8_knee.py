"""T8 OAI / MOST knees (medprobe/data/tasks/t8_knee.py): cohort split, sides and grades, ROI crop
and left flip, bad rows, and the 100 real OAI knee crops of ../shared/data.

Every test checks values (labels, counts, splits, dropped rows), not just that it ran.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from task_helpers import (
    build,
    built_alike,
    image,
    link,
    no_group_on_two_sides,
    per_split,
    write_csv,
)

from medprobe.data.manifest import ManifestError


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


def test_t8_missing_roi_box_file_names_the_key(tmp_path: Path) -> None:
    """It said "label file not found: <boxes>" without naming task.roi_boxes."""
    write_t8(tmp_path)
    missing = tmp_path / "boxes.csv"
    with pytest.raises(ManifestError) as e:
        build("t8", tmp_path, roi_boxes=str(missing))
    assert str(e.value) == (
        f"task.roi_boxes={missing}: ROI box file not found (a CSV image,x0,y0,x1,y1; "
        "see docs/tasks.md#t8)"
    )


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


def test_t8_reads_the_composed_and_the_typed_config_alike(tmp_path: Path) -> None:
    """The composed DictConfig and the typed dataclass (``medprobe.config.to_typed``, what the
    pipeline passes) give the same manifest."""
    write_t8(tmp_path)
    a = built_alike("t8", tmp_path, options={"test_cohort": None}, on_bad_row="skip")
    # test_cohort=null: a patient-level split instead of the MOST cohort
    assert "patient-level" in a.info["split_source"]


def test_t8_a_required_column_twice_is_refused(tmp_path: Path) -> None:
    """The row dict kept the last ``kl_grade`` column without a word."""
    rows = write_t8(tmp_path)
    header = ["image", "side", "kl_grade", "patient_id", "cohort", "kl_grade"]
    write_csv(tmp_path / "knee_kl.csv", header, [[*r, "0"] for r in rows])
    with pytest.raises(ManifestError) as e:
        build("t8", tmp_path)
    assert str(e.value) == (
        f"{tmp_path / 'knee_kl.csv'}: column 'kl_grade' appears 2 times in the header; keep one"
    )
