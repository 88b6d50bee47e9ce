"""T3: seven pigmented skin-lesion classes, ISIC 2018 task 3 (= HAM10000).

Sources: Tschandl, Rosendahl, Kittler, "The HAM10000 dataset", Sci Data 2018 (CC BY-NC 4.0,
Harvard Dataverse doi:10.7910/DVN/DBW86T); Codella et al., ISIC 2018 challenge,
https://challenge.isic-archive.com/data/#2018. The authors' README counts 11,720 images for
T3 = 10,015 training + 193 validation + 1,512 test images of the ISIC 2018 task 3 sets.

Accepted files (anywhere below the root; names as distributed):

* ``ISIC2018_Task3_{Training,Validation,Test}_GroundTruth.csv`` — one-hot columns
  ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC`` (values ``0.0``/``1.0``, exactly one ``1`` per row);
  a ground-truth file in HAM10000 metadata form (``image_id,dx[,lesion_id]``) is read too.
* ``ISIC2018_Task3_Training_LesionGroupings.csv`` (``image,lesion_id,...``) and/or
  ``HAM10000_metadata.csv`` / ``HAM10000_metadata`` / ``.tab`` (``lesion_id,image_id,dx,...``,
  comma- or tab-separated): the lesion ids; HAM10000 metadata alone also gives the labels of
  the 10,015 training images (``dx`` lower-case class codes).
* Images ``<image>.jpg`` in any folder below the root (``ISIC2018_Task3_*_Input/``,
  ``HAM10000_images_part_1/`` ...), or below ``<root>/<task.image_dir>``.

Rules:

* **Classes** in ground-truth column order: MEL, NV, BCC, AKIEC, BKL, DF, VASC.
* **Grouped by lesion** (HAM10000 holds several images of one lesion: 10,015 images of 7,470
  lesions): no lesion is on two sides of a split. Images without a known lesion id (validation,
  test) are their own group.
* **Lesion ids are required for the training images.** The official task 3 files alone (input
  images + ground-truth CSVs) carry none, and an image-level split would put images of one
  lesion on both sides. Without them (or for only some training images) the adapter refuses
  with one line naming the file to add (``HAM10000_metadata.csv`` with ``lesion_id``, or
  ``ISIC2018_Task3_Training_LesionGroupings.csv``), unless ``task.allow_image_level_split=true``:
  then it proceeds and says "image-level split (lesion leakage possible)" in ``split_source``,
  ``notes`` (printed under the console table) and ``grouped: false``.
* **Split**: with the test ground truth present, the official one (Training -> train,
  Validation -> val, Test -> test); a training image whose lesion also appears in the test set
  is dropped from train and counted. Without it, the labelled training images are split with
  :func:`medprobe.data.splits.assign_splits` stratified by class and grouped by lesion
  (``task.test_fraction``, default 0.2; official validation images, if present, stay ``val``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medprobe.config.schema import T3TaskConfig
from medprobe.data.manifest import Manifest, ManifestError
from medprobe.data.tasks.common import (
    BadRows,
    NameIndex,
    find_optional,
    make_manifest,
    read_csv,
    read_header,
    stratified_split,
    task_root,
)

#: Ground-truth column order of ISIC 2018 task 3.
CLASSES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
PARTS = {"Training": "train", "Validation": "val", "Test": "test"}
METADATA_NAMES = ["HAM10000_metadata.csv", "HAM10000_metadata", "HAM10000_metadata.tab"]
GROUPINGS = "ISIC2018_Task3_Training_LesionGroupings.csv"
#: What the table, ``split_source`` and ``notes`` say when lesion ids are missing and allowed.
IMAGE_LEVEL = "image-level split (lesion leakage possible)"


def _delimiter(path: Path) -> str:
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        head = f.readline()
    return "\t" if head.count("\t") > head.count(",") else ","


def _read_labels(path: Path, bad: BadRows) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """``({image: (class index, row)}, {image: lesion id})`` from a one-hot or metadata file."""
    delim = _delimiter(path)
    header = read_header(path, delimiter=delim)
    labels: dict[str, tuple[int, int]] = {}
    lesions: dict[str, str] = {}
    if "image" in header and all(c in header for c in CLASSES):
        _, rows = read_csv(path, ["image", *CLASSES], delimiter=delim)
        for n, row in rows:
            img = row["image"]
            try:
                vec = [float(row[c]) for c in CLASSES]
            except ValueError:
                bad(path, n, f"non-numeric one-hot value in {row}", "malformed_row")
                continue
            hot = [k for k, v in enumerate(vec) if v == 1.0]
            if not img or len(hot) != 1 or any(v not in (0.0, 1.0) for v in vec):
                bad(
                    path,
                    n,
                    f"expected one class = 1.0 for image {img!r}, got {vec}",
                    "malformed_row",
                )
                continue
            if img in labels:
                bad(path, n, f"duplicate image {img!r}", "duplicate_row")
                continue
            labels[img] = (hot[0], n)
    elif "image_id" in header and "dx" in header:
        _, rows = read_csv(path, ["image_id", "dx"], delimiter=delim)
        codes = {c.lower(): k for k, c in enumerate(CLASSES)}
        for n, row in rows:
            img, dx = row["image_id"], row["dx"].lower()
            if dx not in codes:
                bad(
                    path,
                    n,
                    f"unknown label {row['dx']!r}; known: {', '.join(codes)}",
                    "unknown_label",
                )
                continue
            if img in labels:
                bad(path, n, f"duplicate image {img!r}", "duplicate_row")
                continue
            labels[img] = (codes[dx], n)
            if row.get("lesion_id"):
                lesions[img] = row["lesion_id"]
    else:
        raise ManifestError(
            f"{path}: neither one-hot columns image,{','.join(CLASSES)} nor image_id,dx "
            f"(columns: {', '.join(header)})"
        )
    return labels, lesions


def _read_lesions(path: Path) -> dict[str, str]:
    delim = _delimiter(path)
    header = read_header(path, delimiter=delim)
    img_col = "image" if "image" in header else "image_id"
    _, rows = read_csv(path, [img_col, "lesion_id"], delimiter=delim)
    return {row[img_col]: row["lesion_id"] for _, row in rows if row["lesion_id"]}


def build_manifest(task_cfg: T3TaskConfig, data_root: str | None = None) -> Manifest:
    """Manifest of T3 (ISIC 2018 task 3 / HAM10000) with lesion-level splits.

    Returns:
        Manifest with ``labels`` (n,) int64 indices into :data:`CLASSES`, ``groups`` = lesion
        ids ("" where unknown), official or lesion-grouped split; ``info`` lists the files read,
        rows skipped by reason and training images dropped for sharing a lesion with test.

    Raises:
        ManifestError: no label file; training images without lesion ids (unless
            ``task.allow_image_level_split``); a malformed / unknown / duplicate row or a
            missing image (with ``task.on_bad_row=stop``); or a lesion on two sides of a split.
    """
    root = task_root(task_cfg, data_root, "t3")
    bad = BadRows.from_config(task_cfg)
    gts = {part: find_optional(root, [f"ISIC2018_Task3_{part}_GroundTruth.csv"]) for part in PARTS}
    meta = find_optional(root, METADATA_NAMES)
    groupings = find_optional(root, [GROUPINGS])
    if gts["Training"] is None and meta is None:
        raise ManifestError(
            f"task=t3: no labels under {root}: need ISIC2018_Task3_Training_GroundTruth.csv or "
            "HAM10000_metadata.csv (docs/tasks.md#t3)"
        )
    files: dict[str, str] = {}
    labels_by_part: dict[str, dict[str, tuple[int, int]]] = {}
    lesion: dict[str, str] = {}
    meta_labels: dict[str, tuple[int, int]] = {}
    if meta is not None:
        meta_labels, meta_lesions = _read_labels(meta, bad)
        lesion.update(meta_lesions)
        files["metadata"] = str(meta)
    for part, path in gts.items():
        if path is not None:
            lab, les = _read_labels(path, bad)
            labels_by_part[part] = lab
            lesion.update(les)
            files[part] = str(path)
    if "Training" not in labels_by_part:
        labels_by_part["Training"] = meta_labels
    elif meta is not None:  # both: the ground truth wins; disagreements are bad rows
        for img, (k, n) in meta_labels.items():
            gt = labels_by_part["Training"].get(img)
            if gt is not None and gt[0] != k:
                bad(
                    meta,
                    n,
                    f"{img}: dx {CLASSES[k]} but the ground truth says {CLASSES[gt[0]]}",
                    "label_conflict",
                )
    if groupings is not None:
        lesion.update(_read_lesions(groupings))
        files["lesion_groupings"] = str(groupings)

    image_dir = task_cfg.image_dir
    img_root = root / str(image_dir) if image_dir else root
    index = NameIndex(img_root)
    rows: list[tuple[str, Path]] = []
    y: list[int] = []
    part_of: list[str] = []
    groups: list[str] = []
    for part, lab in labels_by_part.items():
        where = Path(files.get(part, files.get("metadata", str(root))))
        for img, (k, n) in lab.items():
            rel = index.get(img)
            if rel is None:
                bad(
                    where,
                    n,
                    f"image file for {img!r} not found under {img_root}",
                    "missing_image",
                )
                continue
            rid = (img_root / rel).relative_to(root).as_posix()
            rows.append((rid, img_root / rel))
            y.append(k)
            part_of.append(part)
            groups.append(lesion.get(img, ""))

    labels = np.array(y, dtype=np.int64)
    g = np.array(groups, dtype=object)
    parts = np.array(part_of, dtype=object)
    is_train = parts == "Training"
    no_lesion = int((is_train & (g == "")).sum())
    leak = ""
    if no_lesion:
        label_file = files.get("Training") or files.get("metadata", str(root))
        meta_file = files.get("metadata")
        if meta_file and not task_cfg.allow_image_level_split:
            # the metadata is there: saying "add HAM10000_metadata.csv" would mislead
            raise ManifestError(
                f"task=t3: no lesion ids for {no_lesion} of {int(is_train.sum())} training "
                f"images: {meta_file} gives none for them (an empty or missing lesion_id "
                "column), so images of one lesion could land on both sides of the split: use "
                "the complete HAM10000_metadata.csv (columns lesion_id,image_id,dx; HAM10000 on "
                f"Harvard Dataverse, doi:10.7910/DVN/DBW86T) or add {GROUPINGS} (ISIC 2018 "
                f"challenge page) below {root}, or set task.allow_image_level_split=true to split "
                "by image (lesion leakage possible)"
            )
        if not task_cfg.allow_image_level_split:
            raise ManifestError(
                f"task=t3: no lesion ids for {no_lesion} of {int(is_train.sum())} training "
                f"images ({label_file}), so images of one lesion could land on both sides of the split: "
                f"add {METADATA_NAMES[0]} (columns lesion_id,image_id,dx; HAM10000 on Harvard "
                f"Dataverse, doi:10.7910/DVN/DBW86T) or {GROUPINGS} (ISIC 2018 challenge "
                f"page) below {root}, or set task.allow_image_level_split=true to split by "
                "image (lesion leakage possible)"
            )
        leak = (
            f"{IMAGE_LEVEL}: no lesion ids for {no_lesion} of {int(is_train.sum())} training "
            "images (task.allow_image_level_split=true)"
        )
    info: dict[str, Any] = {
        "source": "ISIC 2018 task 3 / HAM10000 (Tschandl et al. 2018), CC BY-NC 4.0",
        "files": files,
        "images_per_part": {p: int((parts == p).sum()) for p in PARTS if (parts == p).any()},
        "lesion_ids_known": int(sum(1 for x in groups if x)),
        "duplicate_image_names": index.duplicates,
    }
    if "Test" in labels_by_part:
        test_lesions = {x for x, p in zip(groups, part_of, strict=True) if p == "Test" and x}
        clash = np.array(
            [p != "Test" and x in test_lesions for x, p in zip(groups, part_of, strict=True)],
            dtype=bool,
        )
        keep = ~clash
        info["dropped_lesion_in_test"] = int(clash.sum())
        split = np.array([PARTS[p] for p in part_of], dtype=object)[keep]
        rows = [r for r, k in zip(rows, keep, strict=True) if k]
        labels, g = labels[keep], g[keep]
        info["split_source"] = (
            "official ISIC 2018 task 3 sets: Training -> train, Validation -> val, Test -> test"
        )
    else:
        split = np.empty(len(rows), dtype=object)
        is_val = parts == "Validation"
        split[is_val] = "val"
        known = (g[~is_val] != "").any()
        if (~is_val).any():
            s, desc = stratified_split(labels[~is_val], g[~is_val] if known else None, task_cfg)
            split[~is_val] = s
        else:
            desc = "no training rows"
        by = "grouped by lesion_id" + (" where known" if leak else "") if known else "by image"
        info["split_source"] = (
            f"no test ground truth: training images {desc}, {by}; official validation "
            "images (if any) -> val"
        )
    if leak:
        info["split_source"] = f"{IMAGE_LEVEL}; {info['split_source']}"
        info["grouped"] = False
        info["lesion_ids_missing"] = no_lesion
        info["notes"] = [leak]
    info.update(bad.info())
    return make_manifest(
        "t3",
        root,
        rows,
        labels,
        CLASSES,
        split,
        g,
        info,
        where=files.get("metadata") or files.get("Training", ""),
    )
