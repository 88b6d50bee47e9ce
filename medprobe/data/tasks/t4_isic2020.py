"""T4: melanoma (malignant) vs benign, ISIC 2020 (SIIM-ISIC melanoma classification).

Source: Rotemberg et al., "A patient-centric dataset of images and metadata for identifying
melanomas using clinical context", Sci Data 2021 (CC BY-NC 4.0),
https://challenge.isic-archive.com/data/#2020 (also Kaggle "siim-isic-melanoma-classification").
Only the training set has public labels: 33,126 images of 2,056 patients, 584 malignant (the
authors' README: T4 "33,126 images from 2,056 patients").

Accepted files (anywhere below the root):

* labels: ``task.csv`` if set, else ``ISIC_2020_Training_GroundTruth_v2.csv``,
  ``ISIC_2020_Training_GroundTruth.csv`` or Kaggle's ``train.csv``; columns used
  ``image_name, patient_id, target`` (0 benign / 1 malignant; ``benign_malignant`` is checked
  against ``target`` when present).
* ``ISIC_2020_Training_Duplicates.csv`` (``image_name_1,image_name_2``), when present: every
  ``image_name_2`` is dropped (the official list of duplicate pairs; one copy is kept).
* images ``<image_name>.jpg`` / ``.png`` below the root (``ISIC_2020_Training_JPEG/train/``,
  Kaggle ``jpeg/train/``) or below ``<root>/<task.image_dir>``. DICOM files are never listed.

Rules:

* **Split**: patient-level (``patient_id``), stratified by target, seeded:
  :func:`medprobe.data.splits.assign_splits` with ``task.val_fraction`` / ``task.test_fraction``
  (t4.yaml: 0 / 0.2, i.e. 80% train, 20% test; the probe carves validation patients from train).
  The exact Table 1 sizes of the paper could not be checked here; set the fractions to match.
* An empty ``patient_id`` makes the image its own group (counted in ``info``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medprobe.config.schema import T4TaskConfig
from medprobe.data.manifest import Manifest
from medprobe.data.tasks.common import (
    BadRows,
    NameIndex,
    find_file,
    find_optional,
    make_manifest,
    read_csv,
    stratified_split,
    task_root,
)

CLASSES = ["benign", "malignant"]
LABEL_FILES = [
    "ISIC_2020_Training_GroundTruth_v2.csv",
    "ISIC_2020_Training_GroundTruth.csv",
    "train.csv",
]
DUPLICATES_FILE = "ISIC_2020_Training_Duplicates.csv"


def build_manifest(task_cfg: T4TaskConfig, data_root: str | None = None) -> Manifest:
    """Manifest of T4 (ISIC 2020 training set, duplicates removed, patient-level split).

    Returns:
        Manifest with ``labels`` (n,) int64 (0 benign, 1 malignant), ``groups`` = patient ids;
        ``info`` counts duplicates dropped, rows skipped and images without a patient id.

    Raises:
        ManifestError: no label file or a missing column; with ``task.on_bad_row=stop`` a
            target other than 0/1, a target contradicting ``benign_malignant``, a duplicate
            row or a missing image (file and row named).
    """
    root = task_root(task_cfg, data_root, "t4")
    bad = BadRows.from_config(task_cfg)
    csv_setting = task_cfg.csv
    label_path = Path(str(csv_setting)) if csv_setting else find_file(root, LABEL_FILES, "t4")
    dup_path = find_optional(root, [DUPLICATES_FILE])
    drop: set[str] = set()
    if dup_path is not None:
        _, dup_rows = read_csv(dup_path, ["image_name_1", "image_name_2"])
        drop = {row["image_name_2"] for _, row in dup_rows if row["image_name_2"]}

    image_dir = task_cfg.image_dir
    img_root = root / str(image_dir) if image_dir else root
    index = NameIndex(img_root)
    header, rows_iter = read_csv(label_path, ["image_name", "patient_id", "target"])
    has_bm = "benign_malignant" in header
    rows: list[tuple[str, Path]] = []
    y: list[int] = []
    groups: list[str] = []
    seen: set[str] = set()
    n_dup = n_no_patient = 0
    for n, row in rows_iter:
        name = row["image_name"]
        if name in drop:
            n_dup += 1
            continue
        if not name or name in seen:
            bad(label_path, n, f"empty or duplicate image_name {name!r}", "duplicate_row")
            continue
        if row["target"] not in ("0", "1", "0.0", "1.0"):
            bad(
                label_path, n, f"unknown target {row['target']!r}; expected 0 or 1", "unknown_label"
            )
            continue
        target = int(float(row["target"]))
        if has_bm and row["benign_malignant"] and row["benign_malignant"] != CLASSES[target]:
            bad(
                label_path,
                n,
                f"target {target} but benign_malignant {row['benign_malignant']!r}",
                "label_conflict",
            )
            continue
        rel = index.get(name)
        if rel is None:
            bad(
                label_path,
                n,
                f"image file for {name!r} not found under {img_root}",
                "missing_image",
            )
            continue
        seen.add(name)
        rows.append(((img_root / rel).relative_to(root).as_posix(), img_root / rel))
        y.append(target)
        groups.append(row["patient_id"])
        n_no_patient += not row["patient_id"]
    labels = np.array(y, dtype=np.int64)
    split, desc = stratified_split(labels, groups, task_cfg)
    info: dict[str, Any] = {
        "source": "ISIC 2020 training set (Rotemberg et al. 2021), CC BY-NC 4.0",
        "labels_file": str(label_path),
        "duplicates_file": str(dup_path) if dup_path else None,
        "dropped_duplicates": n_dup,
        "images_without_patient_id": n_no_patient,
        "patients": len({g for g in groups if g}),
        "split_source": f"{desc}, grouped by patient_id",
        "duplicate_image_names": index.duplicates,
        **bad.info(),
    }
    return make_manifest("t4", root, rows, labels, CLASSES, split, groups, info, where=label_path)
