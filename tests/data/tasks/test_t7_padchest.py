"""T7 PadChest (medprobe/data/tasks/t7_padchest.py): exact label tokens, dropped rows, the
physician-labelled test set, gzip, and NIH ChestX-ray14 of ../shared/data as a stand-in.

Every test checks values (labels, counts, splits, dropped rows), not just that it ran.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from task_helpers import build, image, link, no_group_on_two_sides, per_split, write_csv

from medprobe.data.manifest import ManifestError
from medprobe.data.tasks import t7_padchest

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


def padchest_row(name: str, image_dir: str, pid: str, method: str, labels: str) -> list[str]:
    rec = dict.fromkeys(PADCHEST_COLS, "")
    rec.update(ImageID=name, ImageDir=image_dir, PatientID=pid, MethodLabel=method, Labels=labels)
    return [rec[c] for c in PADCHEST_COLS]


def write_nih_as_padchest(
    root: Path, shared_data: Path, extra: list[list[str]] | None = None
) -> Path:
    """The 1,004 real NIH ChestX-ray14 images in the PadChest layout (``<ImageDir>/<ImageID>``
    and the label CSV): the 64-px ``test`` folder plays the physician-labelled subset."""
    src = shared_data / "T7_cxr_nih"
    entry = {}
    with gzip.open(src / "Data_Entry_2017_v2020.csv.gz", "rt") as f:
        for r in csv.DictReader(f):
            entry[r["Image Index"]] = (r["Finding Labels"], r["Patient ID"])
    link(src / "fullres", root / "fullres")
    link(src / "nih1000_64px", root / "nih1000_64px")
    rows = []
    for r in csv.DictReader(open(src / "labels.csv")):
        d, name = r["path"].rsplit("/", 1)
        findings, pid = entry[name]
        method = "Physician" if d.startswith("nih1000_64px/test") else "RNN_model"
        rows.append(padchest_row(name, d, pid, method, str(findings.split("|"))))
    return write_csv(
        root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv",
        PADCHEST_COLS,
        rows + (extra or []),
    )


def test_t7_real_nih_cxr_as_padchest_stand_in(tmp_path: Path, shared_data: Path) -> None:
    """NIH ChestX-ray14 written as a PadChest CSV: the 64-px ``test`` folder plays the
    physician-labelled subset; the full-resolution images and train/valid are RNN-labelled.
    Expected values were computed independently from Data_Entry_2017_v2020.csv.gz: 200 test
    images; 77 of the 804 others belong to patients with a test image and are dropped."""
    write_nih_as_padchest(tmp_path, shared_data)
    m = build("t7", tmp_path, min_test_positives=10)
    assert m.info["bad_images"] == {"listed": 1004, "missing": 0, "unreadable": 0,
                                    "share": 0.0, "max_share": 0.01, "files": []}  # fmt: skip
    assert "notes" not in m.info
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


def test_t7_missing_and_truncated_images_are_listed_and_skipped(
    tmp_path: Path, shared_data: Path
) -> None:
    """The release has broken files: a truncated PNG and a missing one are left out, counted
    and listed (with a note for the console table); only a large share stops."""
    from medprobe.data.images import scan_images

    real = shared_data / "T7_cxr_nih" / "fullres" / "00000001_000.png"
    cut = tmp_path / "broken" / "00000001_000.png"
    cut.parent.mkdir()
    cut.write_bytes(real.read_bytes()[: real.stat().st_size // 2])  # a download cut short
    assert scan_images([cut], progress=False)  # the run's image scan would stop on it
    extra = [
        padchest_row(cut.name, "broken", "T1", "RNN_model", "['Effusion']"),
        padchest_row("gone.png", "broken", "T2", "RNN_model", "['Effusion']"),
    ]
    write_nih_as_padchest(tmp_path, shared_data, extra)
    m = build("t7", tmp_path, min_test_positives=10)
    # the same manifest as without the two rows (test_t7_real_nih_cxr_as_padchest_stand_in)
    assert m.labels.shape == (927, 8) and per_split(m) == {"train": 727, "test": 200}
    assert not any(i.startswith("broken/") for i in m.ids)
    assert m.info["bad_images"] == {
        "listed": 1006,
        "missing": 1,
        "unreadable": 1,
        "share": 0.001988,
        "max_share": 0.01,
        "files": [
            ["broken/00000001_000.png", "truncated PNG (no IEND chunk at the end)"],
            ["broken/gone.png", "missing"],
        ],
    }
    assert m.info["notes"] == [
        "2 of 1006 PadChest image files missing or unreadable, left out (0.20%; listed in "
        "results.json task_info.bad_images)"
    ]
    assert m.info["skipped_rows"] == {}  # image files are not bad rows
    for share in (0.001, 0.0):
        with pytest.raises(
            ManifestError,
            match=r"160K_01.02.19.csv: 2 of 1006 image files \(0.20%\) are missing \(1\) or "
            rf"unreadable \(1\), more than task.max_bad_image_share={share:g} \(first: row 1006: "
            r"broken/00000001_000.png \(truncated PNG",
        ):
            build("t7", tmp_path, min_test_positives=10, max_bad_image_share=share)
    empty = tmp_path / "broken" / "empty.png"
    empty.touch()
    (tmp_path / "broken" / "text.png").write_text("not a png")
    assert t7_padchest.image_problem(empty) == "empty file"
    assert t7_padchest.image_problem(tmp_path / "broken" / "text.png") == (
        "not a PNG file (starts with b'not ')"
    )
    assert t7_padchest.image_problem(real) is None


@pytest.mark.parametrize("image_dir", ["../outside", "0/../../outside", "/tmp"])
def test_t7_image_dir_climbing_out_of_the_root_is_refused(tmp_path: Path, image_dir: str) -> None:
    root = tmp_path / "padchest"
    path = write_t7(root)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    name = rows[1][0]
    image(tmp_path / "outside" / name, (24, 20), mode="I;16")  # a real file out there
    rows[1][1] = image_dir
    write_csv(path, rows[0], rows[1:])
    for policy in ("stop", "skip"):
        with pytest.raises(
            ManifestError,
            match=rf"160K_01.02.19.csv, row 2: ImageDir '{image_dir}' / ImageID '{name}' leads "
            r"outside the dataset root .*fix the label file",
        ):
            build("t7", root, min_test_positives=2, on_bad_row=policy)
