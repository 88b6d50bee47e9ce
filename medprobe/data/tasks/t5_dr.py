"""T5: diabetic-retinopathy grade 0-4, EyePACS (train) + APTOS 2019 (test).

Sources: EyePACS / Kaggle "Diabetic Retinopathy Detection" (2015),
https://www.kaggle.com/c/diabetic-retinopathy-detection (competition rules: research use);
APTOS 2019 Blindness Detection, https://www.kaggle.com/c/aptos2019-blindness-detection. Both
grade on the International Clinical DR scale: 0 no DR, 1 mild, 2 moderate, 3 severe
non-proliferative, 4 proliferative DR.

Accepted files (found anywhere below the root, images next to their CSV as Kaggle ships them):

* EyePACS ``trainLabels.csv`` (``image,level``; image = ``<patient>_left|right``) with the
  images in ``train/<image>.jpeg`` beside it; optionally the released test labels
  ``retinopathy_solution.csv`` (``image,level,Usage``) with ``test/<image>.jpeg``.
* APTOS 2019 ``train.csv`` (``id_code,diagnosis``) with ``train_images/<id_code>.png``; its
  ``test.csv`` has no labels and is not used.

Rules:

* **Split**: EyePACS -> train (both the 35,126 training and, when its labels are present, the
  53,576 test images: together 44,351 patients, matching the authors' "over 44,350 patients");
  APTOS 2019 (3,662 labelled images) -> test, as the task definition states (paper Table 1).
  ``task.options.eyepacs_test: drop`` leaves the EyePACS test images out.
* **Patients**: the EyePACS patient id is the number before ``_left`` / ``_right``; both eyes
  of a patient are one group (the probe's validation rows are carved by patient). APTOS has no
  patient ids (each image its own group); it is test only, so no patient crosses the split.
* **Metric**: one-vs-rest AUROC per grade, macro-averaged.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from medprobe.config.schema import T5TaskConfig
from medprobe.data.manifest import Manifest, ManifestError
from medprobe.data.tasks.common import (
    BadRows,
    DirListing,
    find_optional,
    make_manifest,
    read_csv,
    task_root,
    walk_dirs,
)

CLASSES = ["no_DR", "mild", "moderate", "severe", "proliferative"]
GRADES = {str(k): k for k in range(5)}
_EYE_RE = re.compile(r"^(\d+)_(left|right)$")
SUFFIXES = (".jpeg", ".jpg", ".png", ".tif", ".tiff")


def _find_aptos(root: Path) -> Path | None:
    """The first ``train.csv`` below root whose header has ``id_code`` and ``diagnosis``."""
    for d, _, files in walk_dirs(root, 4):
        if "train.csv" in files:
            with open(d / "train.csv", encoding="utf-8-sig") as f:
                head = f.readline()
            if "id_code" in head and "diagnosis" in head:
                return d / "train.csv"
    return None


def _read(
    csv_path: Path,
    image_col: str,
    label_col: str,
    image_dir: str,
    root: Path,
    listing: DirListing,
    bad: BadRows,
    *,
    eyepacs: bool,
) -> list[tuple[str, int, str]]:
    """``[(relative image path, grade, group)]`` of one label CSV."""
    rel_dir = (csv_path.parent / image_dir).relative_to(root).as_posix()
    rel_dir = "" if rel_dir == "." else rel_dir
    if not (root / rel_dir).is_dir():
        raise ManifestError(f"{csv_path}: image folder {root / rel_dir} not found beside it")
    _, rows = read_csv(csv_path, [image_col, label_col])
    out: list[tuple[str, int, str]] = []
    seen: set[str] = set()
    for n, row in rows:
        name, grade = row[image_col], row[label_col]
        if grade not in GRADES:
            bad(csv_path, n, f"unknown grade {grade!r} for {name!r}; expected 0-4", "unknown_label")
            continue
        group = ""
        if eyepacs:
            mt = _EYE_RE.match(name)
            if not mt:
                bad(csv_path, n, f"image {name!r} is not <patient>_left|right", "malformed_row")
                continue
            group = f"eyepacs:{mt.group(1)}"
        if name in seen:
            bad(csv_path, n, f"duplicate image {name!r}", "duplicate_row")
            continue
        rel = listing.with_stem(rel_dir, name, SUFFIXES)
        if rel is None:
            bad(csv_path, n, f"image file {rel_dir}/{name}.* not found", "missing_image")
            continue
        seen.add(name)
        out.append((rel, GRADES[grade], group))
    return out


def build_manifest(task_cfg: T5TaskConfig, data_root: str | None = None) -> Manifest:
    """Manifest of T5: EyePACS grades for training, APTOS 2019 grades for testing.

    Returns:
        Manifest with ``labels`` (n,) int64 grade 0-4, ``groups`` = ``eyepacs:<patient>`` for
        EyePACS and "" for APTOS, split train (EyePACS) / test (APTOS).

    Raises:
        ManifestError: trainLabels.csv or the APTOS train.csv missing, an image folder missing,
            or (with ``task.on_bad_row=stop``) a bad grade, a malformed image name, a duplicate
            or a missing image, naming the file and row.
    """
    root = task_root(task_cfg, data_root, "t5")
    bad = BadRows.from_config(task_cfg)
    listing = DirListing(root)
    train_csv = find_optional(root, ["trainLabels.csv"])
    aptos_csv = _find_aptos(root)
    if train_csv is None or aptos_csv is None:
        missing = " and ".join(
            n
            for n, p in (
                ("EyePACS trainLabels.csv", train_csv),
                ("APTOS 2019 train.csv (id_code,diagnosis)", aptos_csv),
            )
            if p is None
        )
        raise ManifestError(f"task=t5: {missing} not found under {root} (docs/tasks.md#t5)")
    test_csv = find_optional(root, ["retinopathy_solution.csv"])
    parts: list[tuple[str, list[tuple[str, int, str]]]] = [
        ("train", _read(train_csv, "image", "level", "train", root, listing, bad, eyepacs=True))
    ]
    files = {"eyepacs_train": str(train_csv), "aptos": str(aptos_csv)}
    if test_csv is not None and task_cfg.options.eyepacs_test == "train":
        parts.append(
            ("train", _read(test_csv, "image", "level", "test", root, listing, bad, eyepacs=True))
        )
        files["eyepacs_test"] = str(test_csv)
    parts.append(
        (
            "test",
            _read(
                aptos_csv, "id_code", "diagnosis", "train_images", root, listing, bad, eyepacs=False
            ),
        )
    )
    rows, y, split, groups = [], [], [], []
    for s, found in parts:
        for rel, grade, group in found:
            rows.append((rel, root / rel))
            y.append(grade)
            split.append(s)
            groups.append(group)
    info: dict[str, Any] = {
        "source": "EyePACS (Kaggle DR detection 2015) train; APTOS 2019 train.csv test",
        "files": files,
        "images": {
            "eyepacs": sum(1 for g in groups if g),
            "aptos": sum(1 for g in groups if not g),
        },
        "eyepacs_patients": len({g for g in groups if g}),
        "split_source": "dataset-level: EyePACS -> train"
        + (" (incl. its labelled test set)" if "eyepacs_test" in files else "")
        + ", APTOS 2019 -> test (paper Table 1)",
        **bad.info(),
    }
    return make_manifest(
        "t5",
        root,
        rows,
        np.array(y, dtype=np.int64),
        CLASSES,
        split,
        groups,
        info,
        where=train_csv,
    )
