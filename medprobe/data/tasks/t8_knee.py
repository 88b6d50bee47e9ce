"""T8: knee osteoarthritis Kellgren-Lawrence grade 0-4, OAI and MOST radiographs.

Sources: Osteoarthritis Initiative (OAI, https://nda.nih.gov/oai, 4,796 participants) and
Multicenter Osteoarthritis Study (MOST, https://most.ucsf.edu), both under data-use agreements
for credentialed users; KL grades from their central readings. Neither is distributed as image
files with a label table: the user exports the radiographs (e.g. DICOM -> 16-bit PNG) and writes
one CSV (this module's input format, ``task.csv`` or ``<root>/knee_kl.csv``)::

    image,side,kl_grade,patient_id,cohort[,split]
    OAI/9000099/00m/knee_R.png,R,2,9000099,OAI
    MOST/MB00001/V0/knee_L.png,L,0,MB00001,MOST

* ``image``: path relative to the root (one knee per image: crop each knee of a bilateral
  radiograph first, or use the ROI crop below); ``side``: ``L``/``R`` (``left``/``right``);
  ``kl_grade``: 0-4 (``0.0`` accepted); ``patient_id``: participant id (OAI 7-digit id, MOST
  id); ``cohort``: ``OAI`` or ``MOST`` (any name works); ``split`` optional
  (``train``/``val``/``test``, aliases as in the csv task).

Rules:

* **Split** (paper Table 1: sizes not verifiable here, documented assumption): a ``split``
  column wins; otherwise, with more than one cohort present, the cohort named
  ``task.options.test_cohort`` (default ``MOST``) is the external test set and the others train
  (the group's earlier knee work trains on OAI and tests on MOST); otherwise (one cohort, e.g.
  the OAI-only Chen 2018 crops) a stratified, patient-level split
  (:func:`medprobe.data.splits.assign_splits`, ``task.test_fraction``, default 0.2). Every split
  is checked: no participant on two sides (both knees, all visits together).
* **ROI crop** (optional, ``task.roi_boxes``): a CSV ``image,x0,y0,x1,y1`` of pixel boxes in
  the original image (x1, y1 exclusive; parts outside the image become 0). The paper cropped
  140 mm x 140 mm around the knee joint located by a landmark network (KNEEL, Tiulpin et al.
  2019, Hourglass network); compute the box from such landmarks and the pixel spacing
  (``side_px = 140 / spacing_mm``).
* **Flip** (optional, ``task.flip_left=true``): left knees are mirrored horizontally so every
  knee has the same orientation as a right knee.
* Crops / flips are written once as PNG (mode kept, 16-bit stays 16-bit) under
  ``task.derived_dir`` or ``<root>/.medprobe/knee``; the file name encodes box and flip, a
  derived file older than its source is rewritten. Manifest ids stay the original relative
  paths.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medprobe.config.schema import T8TaskConfig
from medprobe.data.manifest import Manifest, ManifestError
from medprobe.data.tasks.common import (
    BadRows,
    DirListing,
    make_manifest,
    read_csv,
    stratified_split,
    task_root,
)
from medprobe.data.tasks.csv_task import SPLIT_ALIASES

CLASSES = ["KL0", "KL1", "KL2", "KL3", "KL4"]
REQUIRED = ["image", "side", "kl_grade", "patient_id", "cohort"]
SIDES = {"l": "L", "left": "L", "r": "R", "right": "R"}
GRADES = {f"{k}{z}": k for k in range(5) for z in ("", ".0")}


def read_boxes(path: Path, bad: BadRows) -> dict[str, tuple[int, int, int, int]]:
    """``{image: (x0, y0, x1, y1)}`` from a box CSV (pixels, rounded to integers).

    Raises:
        ManifestError: file/column missing; with ``on_bad_row=stop`` a non-numeric or empty box.
    """
    _, rows = read_csv(path, ["image", "x0", "y0", "x1", "y1"])
    out: dict[str, tuple[int, int, int, int]] = {}
    for n, row in rows:
        try:
            x0, y0, x1, y1 = (int(round(float(row[c]))) for c in ("x0", "y0", "x1", "y1"))
        except ValueError:
            bad(path, n, f"non-numeric box {row}", "malformed_box")
            continue
        if x1 <= x0 or y1 <= y0:
            bad(path, n, f"empty box ({x0}, {y0}, {x1}, {y1})", "malformed_box")
            continue
        out[Path(row["image"]).as_posix()] = (x0, y0, x1, y1)
    return out


def derive(src: Path, dst: Path, box: tuple[int, int, int, int] | None, flip: bool) -> None:
    """Write ``src`` cropped to ``box`` and/or mirrored left-right to PNG ``dst``.

    Skipped when ``dst`` exists and is not older than ``src`` (idempotent). Pixel values and
    mode are unchanged (16-bit stays 16-bit); box parts outside the image become 0.

    Raises:
        OSError, PIL.UnidentifiedImageError: unreadable source.
    """
    from PIL import Image

    if dst.is_file() and dst.stat().st_mtime_ns >= src.stat().st_mtime_ns:
        return
    with Image.open(src) as im:
        im.load()
        out = im.crop(box) if box else im.copy()
    if flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    out.save(tmp, format="PNG")
    os.replace(tmp, dst)


def build_manifest(task_cfg: T8TaskConfig, data_root: str | None = None) -> Manifest:
    """Manifest of T8 from the documented knee CSV (optional ROI crop and left-knee flip).

    Returns:
        Manifest with ``labels`` (n,) int64 KL grade, ``groups`` = patient ids, split from the
        CSV, the cohorts or a patient-level split; ``info`` records the split rule, cohorts,
        sides, ROI / flip settings and skipped rows.

    Raises:
        ManifestError: CSV or column missing; with ``task.on_bad_row=stop`` an
            unknown KL grade / side / split, an empty cohort, a duplicate or missing image, a
            missing ROI box or an unreadable image to crop (file and row named); a participant
            in two splits.
    """
    root = task_root(task_cfg, data_root, "t8")
    bad = BadRows.from_config(task_cfg)
    given = task_cfg.csv
    csv_path = Path(str(given)) if given else root / "knee_kl.csv"
    if not csv_path.is_file():
        raise ManifestError(
            f"task=t8: knee label CSV not found: {csv_path} (columns "
            f"{','.join(REQUIRED)}[,split]; see docs/tasks.md#t8)"
        )
    boxes_setting = task_cfg.roi_boxes
    if boxes_setting and not Path(str(boxes_setting)).expanduser().is_file():
        raise ManifestError(  # was "label file not found", without the key
            f"task.roi_boxes={boxes_setting}: ROI box file not found (a CSV "
            "image,x0,y0,x1,y1; see docs/tasks.md#t8)"
        )
    boxes = read_boxes(Path(str(boxes_setting)).expanduser(), bad) if boxes_setting else None
    flip_left = bool(task_cfg.flip_left)
    derived = task_cfg.derived_dir
    out_dir = Path(str(derived)).expanduser() if derived else root / ".medprobe" / "knee"
    listing = DirListing(root)
    header, rows_iter = read_csv(csv_path, REQUIRED)
    has_split = "split" in header
    rows: list[tuple[str, Path]] = []
    y: list[int] = []
    groups: list[str] = []
    cohorts: list[str] = []
    sides: list[str] = []
    given_split: list[str] = []
    seen: set[str] = set()
    n_flipped = 0
    for n, row in rows_iter:
        rel = Path(row["image"]).as_posix()
        side = SIDES.get(row["side"].lower())
        grade = GRADES.get(row["kl_grade"])
        if grade is None:
            bad(csv_path, n, f"unknown KL grade {row['kl_grade']!r}; expected 0-4", "unknown_label")
            continue
        if side is None:
            bad(csv_path, n, f"unknown side {row['side']!r}; expected L or R", "malformed_row")
            continue
        if not row["cohort"]:
            bad(csv_path, n, "empty cohort", "malformed_row")
            continue
        if has_split and row["split"].lower() not in SPLIT_ALIASES:
            bad(
                csv_path, n, f"split {row['split']!r} is not one of train/val/test", "malformed_row"
            )
            continue
        if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts or rel in seen:
            bad(
                csv_path,
                n,
                f"image {rel!r}: empty, duplicate or not relative to the root",
                "duplicate_row",
            )
            continue
        if not listing.exists(rel):
            bad(csv_path, n, f"image file {root / rel} not found", "missing_image")
            continue
        path = root / rel
        box = None
        if boxes is not None:
            box = boxes.get(rel)
            if box is None:
                bad(csv_path, n, f"no ROI box for {rel!r} in {boxes_setting}", "missing_box")
                continue
        flip = flip_left and side == "L"
        if box is not None or flip:
            tag = (f"__roi{box[0]}_{box[1]}_{box[2]}_{box[3]}" if box else "") + (
                "_flip" if flip else ""
            )
            dst = out_dir / f"{Path(rel).with_suffix('').as_posix()}{tag}.png"
            try:
                derive(path, dst, box, flip)
            except Exception as e:  # unreadable source image: a bad row of this CSV
                bad(
                    csv_path,
                    n,
                    f"cannot crop/flip {path} ({type(e).__name__}: {e})",
                    "unreadable_image",
                )
                continue
            path = dst
            n_flipped += flip
        seen.add(rel)
        rows.append((rel, path))
        y.append(grade)
        groups.append(row["patient_id"])
        cohorts.append(row["cohort"].upper())
        sides.append(side)
        if has_split:
            given_split.append(SPLIT_ALIASES[row["split"].lower()])
    labels = np.array(y, dtype=np.int64)
    present = sorted(set(cohorts))
    test_cohort = task_cfg.options.test_cohort
    test_cohort = str(test_cohort).upper() if test_cohort else None
    if has_split:
        split = np.array(given_split, dtype=object)
        split_source = f"split column of {csv_path.name}"
    elif test_cohort and test_cohort in present and len(present) > 1:
        split = np.where(np.array(cohorts) == test_cohort, "test", "train").astype(object)
        others = ", ".join(c for c in present if c != test_cohort)
        split_source = f"cohort: {others} -> train, {test_cohort} -> test (external test cohort)"
    else:
        split, desc = stratified_split(labels, groups, task_cfg)
        split_source = f"{desc}, grouped by patient_id (cohorts present: {', '.join(present)})"
    info: dict[str, Any] = {
        "source": "OAI / MOST knee radiographs, KL grades (user-built CSV, docs/tasks.md#t8)",
        "labels_file": str(csv_path),
        "cohorts": {c: cohorts.count(c) for c in present},
        "sides": {s: sides.count(s) for s in ("L", "R")},
        "patients": len({g for g in groups if g}),
        "roi_boxes": str(boxes_setting) if boxes_setting else None,
        "flip_left": flip_left,
        "flipped": n_flipped,
        "derived_dir": str(out_dir) if (boxes is not None or flip_left) else None,
        "split_source": split_source,
        **bad.info(),
    }
    return make_manifest("t8", root, rows, labels, CLASSES, split, groups, info, where=csv_path)
