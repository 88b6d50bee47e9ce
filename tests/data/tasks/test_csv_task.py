"""The generic CSV task (medprobe/data/tasks/csv_task.py) on real labelled images and tiny
CSVs: patient-level and multi-label manifests, errors naming file and row, given splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medprobe.data.manifest import ManifestError
from medprobe.data.tasks.csv_task import read_label_csv


def test_csv_knee_kl_patient_level_split(shared_data: Path) -> None:
    root = shared_data / "T8_knee_kl"
    m = read_label_csv(root / "labels.csv", root=root, split_seed=0)
    assert len(m) == 100 and m.classes == ["0", "1", "2", "3", "4"]
    assert np.bincount(m.labels).tolist() == [20] * 5
    assert len(set(m.groups)) == 95
    for g in set(m.groups):
        assert len(set(m.split[m.groups == g])) == 1, f"patient {g} on two sides"
    counts = m.counts()
    assert all(v >= 1 for v in counts["test"].values())
    assert m.info["grouped"] is True and "patient-level" in m.info["split_source"]


def test_csv_multilabel_chest_xray(shared_data: Path) -> None:
    root = shared_data / "T7_cxr_nih"
    m = read_label_csv(root / "labels.csv", root=root, label_sep="|")
    assert m.multilabel and m.labels.shape == (1004, 15)
    col = {c: m.labels[:, k].sum() for k, c in enumerate(m.classes)}
    assert col["No Finding"] == 501 and col["Effusion"] == 170 and col["Hernia"] == 9
    # ids are relative paths: the full-res and 64-px copies of one image stay distinct rows
    assert "fullres/00000001_000.png" in m.ids
    assert len([i for i in m.ids if i.endswith("00000001_000.png")]) == 2


def _write(tmp: Path, text: str) -> Path:
    p = tmp / "labels.csv"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        (
            "file,label\na.png,x\n",
            {},
            r"labels.csv: missing column 'path' \(columns: file, label\)",
        ),
        ("path,label\na.png,x\nb.png,\n", {}, r"labels.csv, row 3: empty 'label'"),
        ("path,label\na.png,x\nb.png,y\n", {"classes": ["x"]}, r"row 3: unknown label 'y'"),
        ("path,label\na.png,x\na.png,x\n", {}, r"row 3: duplicate path 'a.png' \(first at row 2\)"),
        ("path,label,split\na.png,x,train\nb.png,x,holdout\n", {}, r"row 3: split 'holdout'"),
        ("path,label\n/abs/a.png,x\n", {}, r"row 2: path '/abs/a.png' must be relative"),
        # was a CacheError naming only "ids[0]", after the model was loaded
        (
            'path,label\n"a\nb.png",x\n',
            {},
            r"labels.csv, row 2: path 'a\\nb.png' contains a newline, carriage return or NUL",
        ),
        ("path,label\n", {}, r"labels.csv: no rows"),
        # DictReader kept the last 'label' column silently
        (
            "path,label,patient_id,label\na.png,x,P1,y\n",
            {},
            r"labels.csv: column 'label' appears 2 times in the header; keep one",
        ),
        # a 0-byte file is called empty, not "missing column 'path' (columns: none)"
        ("", {}, r"labels.csv: empty file \(no header line\); expected columns path,label"),
    ],
)
def test_csv_errors_name_file_and_row(
    tmp_path: Path, text: str, kwargs: dict, message: str
) -> None:
    with pytest.raises(ManifestError, match=message):
        read_label_csv(_write(tmp_path, text), root=tmp_path, **kwargs)


def test_csv_split_column_and_aliases(tmp_path: Path) -> None:
    p = _write(tmp_path, "path,label,split\na.png,x,train\nb.png,y,Valid\nc.png,x,TEST\n")
    m = read_label_csv(p, root=tmp_path)
    assert m.split.tolist() == ["train", "val", "test"]
    assert m.paths[1] == tmp_path / "b.png" and m.info["split_source"] == "csv column"


def test_csv_patient_overlap_in_given_split_is_refused(tmp_path: Path) -> None:
    p = _write(tmp_path, "path,label,patient_id,split\na.png,x,P1,train\nb.png,y,P1,test\n")
    with pytest.raises(ManifestError, match="P1"):
        read_label_csv(p, root=tmp_path)


# --- issue 16.4 / 16.5 on the real HAM10000 sample (280 images, path,label,patient_id)


def _t3_with_bad_rows(shared_data: Path, tmp: Path) -> tuple[Path, Path]:
    """The real T3 labels.csv plus four bad rows (the images stay in ../shared/data)."""
    root = shared_data / "T3_ham10000"
    lines = (root / "labels.csv").read_text().splitlines()
    first = lines[1]
    bad = [
        "images/ISIC_9999999.jpg,,HAM_0000001",  # row 282: empty label
        first,  # row 283: duplicate path
        "/etc/passwd,nv,HAM_0000002",  # row 284: absolute path
        "images/x.jpg,nv,HAM_3,extra",  # row 285: too many fields
    ]
    p = tmp / "labels.csv"
    p.write_text("\n".join([*lines, *bad]) + "\n")
    return root, p


def _csv_cfg(*overrides: str):  # type: ignore[no-untyped-def]
    from helpers import compose_config

    from medprobe.config import to_typed

    return to_typed(compose_config("task=csv", *overrides))


def test_every_bad_row_is_listed_at_once(shared_data: Path, tmp_path: Path) -> None:
    root, p = _t3_with_bad_rows(shared_data, tmp_path)
    with pytest.raises(ManifestError) as e:
        read_label_csv(p, root=root)
    lines = str(e.value).splitlines()
    assert lines[0] == (
        "4 bad row(s) (duplicate_path 1, empty_label 1, path_outside_root 1, too_many_fields 1); "
        "fix them, or set task.on_bad_row=skip to leave them out and count them:"
    )
    assert lines[1:] == [
        f"  {p}, row 282: empty 'label'",
        f"  {p}, row 283: duplicate path 'images/ISIC_0027767.jpg' (first at row 2)",
        f"  {p}, row 284: path '/etc/passwd' must be relative to the root",
        f"  {p}, row 285: 4 fields for 3 columns (quote cells that contain the separator)",
    ]


def test_on_bad_row_skip_is_honoured(shared_data: Path, tmp_path: Path) -> None:
    from medprobe.data.tasks.csv_task import build_manifest

    root, p = _t3_with_bad_rows(shared_data, tmp_path)
    cfg = _csv_cfg(f"task.root={root}", f"task.csv={p}", "task.on_bad_row=skip")
    m = build_manifest(cfg.task, cfg.data_root)
    assert len(m) == 280 and m.info["on_bad_row"] == "skip"
    assert m.info["skipped_rows"] == {
        "duplicate_path": 1, "empty_label": 1, "path_outside_root": 1, "too_many_fields": 1
    }  # fmt: skip
    assert m.info["skipped_examples"][0] == f"{p}, row 282: empty 'label'"
    # the same rows as the clean file, the same split
    clean = read_label_csv(root / "labels.csv", root=root)
    assert m.ids == clean.ids and (m.split == clean.split).all()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("task.patient_column=PatientID", "no patient column 'PatientID'"),
        ("task.split_column=fold", "no split column 'fold'"),
    ],
)
def test_a_named_column_that_does_not_exist_is_an_error(
    shared_data: Path, override: str, message: str
) -> None:
    from medprobe.data.tasks.csv_task import build_manifest

    cfg = _csv_cfg(f"data_root={shared_data / 'T3_ham10000'}", override)
    with pytest.raises(ManifestError) as e:
        build_manifest(cfg.task, cfg.data_root)
    assert str(e.value) == (
        f"{shared_data / 'T3_ham10000' / 'labels.csv'}: {message} (columns: path, label, "
        f"patient_id); set task.{message.split()[1]}_column to one of them"
    )


def test_reversed_rows_give_the_same_manifest(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "T3_ham10000"
    header, *rows = (root / "labels.csv").read_text().splitlines()
    rev = tmp_path / "reversed.csv"
    rev.write_text("\n".join([header, *rows[::-1]]) + "\n")
    a = read_label_csv(root / "labels.csv", root=root)
    b = read_label_csv(rev, root=root)
    assert a.ids == b.ids == sorted(a.ids)  # id order, whatever the file's order
    assert (a.split == b.split).all() and (a.labels == b.labels).all()
    assert (a.groups == b.groups).all() and a.info["grouped"] is True
    assert a.image_fingerprint("stat") == b.image_fingerprint("stat")


def test_a_data_root_that_is_a_file_says_so(tmp_path: Path) -> None:
    """It said "label file not found: <root>/labels.csv/labels.csv"."""
    from medprobe.config.schema import CsvTaskConfig
    from medprobe.data.tasks.csv_task import build_manifest

    p = _write(tmp_path, "path,label\na.png,x\n")
    with pytest.raises(ManifestError) as e:
        build_manifest(CsvTaskConfig(root=None), data_root=str(p))
    assert str(e.value) == (
        f"task=csv: the image root {p} is a file, not a folder (data_root= or task.root= names "
        "the folder of the images; task.csv= the label file)"
    )


def test_header_names_are_stripped(tmp_path: Path) -> None:
    """``path, label`` said "missing column 'label' (columns: path, label)"."""
    m = read_label_csv(_write(tmp_path, "path, label, split\na.png, x, train\nb.png, y, test\n"),
                       root=tmp_path)  # fmt: skip
    assert m.ids == ["a.png", "b.png"] and m.classes == ["x", "y"]
    assert m.split.tolist() == ["train", "test"]


def test_a_relative_label_file_names_the_working_folder_and_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``task.csv=labels.csv`` is read from the working folder; it said only "label file not
    found: labels.csv"."""
    _write(tmp_path, "path,label\na.png,x\n")
    monkeypatch.chdir(tmp_path.parent)
    with pytest.raises(ManifestError) as e:
        read_label_csv("labels.csv", root=tmp_path)
    assert str(e.value) == (
        f"label file not found: labels.csv (relative to the working folder {tmp_path.parent}); "
        f"did you mean {tmp_path / 'labels.csv'}?"
    )
