"""T6: referable glaucoma, AIROGS (train) + ODIR-2019 (test), one label per eye.

Sources: de Vente et al., "AIROGS: artificial intelligence for robust glaucoma screening
challenge", IEEE TMI 2023; training data on Zenodo doi:10.5281/zenodo.5793241 (CC BY-NC-ND 4.0):
101,442 fundus images, ``train_labels.csv`` with ``challenge_id,class`` (``RG`` referable
glaucoma / ``NRG`` no referable glaucoma), images ``TRAIN000000.jpg`` ... split over the
folders ``0``-``5`` of the six zip parts. ODIR-2019 (Peking University, "Ocular Disease
Intelligent Recognition"), https://odir2019.grand-challenge.org: 3,500 training patients, both
eyes, annotation file ``ODIR-5K_Training_Annotations(Updated)_V2.xlsx`` with columns ``ID``,
``Left-Fundus``, ``Right-Fundus``, ``Left-Diagnostic Keywords``, ``Right-Diagnostic Keywords``,
``N,D,G,C,A,H,M,O`` (patient-level codes). The authors' README counts "57,770 [patients]
for glaucoma" over both sets (not checked here).

Accepted files (below the root): AIROGS ``train_labels.csv`` and its images anywhere; the ODIR
annotations as **CSV** (``task.csv``, or ``ODIR-5K_Training_Annotations(Updated)_V2.csv``,
``data.csv``, Kaggle's ``full_df.csv``, or any CSV with the columns above). The ``.xlsx`` is
not read (openpyxl is not a dependency): export it once, e.g. with LibreOffice
``soffice --headless --convert-to csv "ODIR-5K_Training_Annotations(Updated)_V2.xlsx"`` —
an error says so when only the ``.xlsx`` is there. ODIR images are looked up by file name in
``Training Images/`` (Kaggle), ``ODIR-5K_Training_Dataset/`` (official zip) or
``preprocessed_images/``, else anywhere below the annotation file's folder.

Rules:

* **AIROGS -> train**: ``RG`` = glaucoma, ``NRG`` = no glaucoma. Its public labels carry no
  patient id, so each image is its own group (the probe's validation carve cannot keep a
  patient's two eyes together; noted in ``info``).
* **ODIR -> test, per eye**: the eye's keywords are split at the full-width comma ``，``
  (U+FF0C, as in the file; an ASCII comma is accepted too) and compared as exact lower-case
  tokens: the token ``glaucoma`` -> glaucoma; otherwise ``suspected glaucoma`` -> dropped and
  counted (``task.options.suspected_glaucoma``: ``drop`` | ``positive`` | ``negative``);
  otherwise no glaucoma. Never a substring test. An eye with empty keywords is a bad row.
  Both eyes of a patient share the group ``odir:<ID>``. Rows repeated with identical content
  (Kaggle's ``full_df.csv`` repeats patients) are read once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from medprobe.config.schema import T6TaskConfig
from medprobe.data.manifest import Manifest, ManifestError
from medprobe.data.tasks.common import (
    BadRows,
    NameIndex,
    find_dir,
    find_file,
    find_optional,
    make_manifest,
    read_csv,
    task_root,
    walk_dirs,
)

CLASSES = ["no_glaucoma", "glaucoma"]
AIROGS_CLASSES = {"NRG": 0, "RG": 1}
ODIR_COLUMNS = [
    "ID",
    "Left-Fundus",
    "Right-Fundus",
    "Left-Diagnostic Keywords",
    "Right-Diagnostic Keywords",
]
ODIR_NAMES = ["ODIR-5K_Training_Annotations(Updated)_V2.csv", "data.csv", "full_df.csv"]
ODIR_IMAGE_DIRS = ["Training Images", "ODIR-5K_Training_Dataset", "preprocessed_images"]
KEYWORD_SEP = re.compile("[\uff0c,]")
SUSPECT = {"drop", "positive", "negative"}


def keywords(cell: str) -> list[str]:
    """Exact keyword tokens of one eye: split at ``，`` (U+FF0C) or ``,``, stripped, lower-case."""
    return [t.strip().lower() for t in KEYWORD_SEP.split(cell) if t.strip()]


def glaucoma_label(tokens: list[str], suspected: str = "drop") -> int | None:
    """1 glaucoma, 0 not, None = drop (``suspected glaucoma`` under the ``drop`` policy)."""
    if "glaucoma" in tokens:
        return 1
    if "suspected glaucoma" in tokens:
        return {"drop": None, "positive": 1, "negative": 0}[suspected]
    return 0


def _find_odir(root: Path, cfg: T6TaskConfig) -> Path:
    given = cfg.csv
    if given:
        return Path(str(given))
    p = find_optional(root, ODIR_NAMES)
    if p is not None:
        with open(p, encoding="utf-8-sig") as f:
            head = f.readline()
        if "Left-Diagnostic Keywords" in head:
            return p
    xlsx: Path | None = None
    for d, _, files in walk_dirs(root, 4):
        for fn in files:
            if fn.lower().endswith(".csv"):
                with open(d / fn, encoding="utf-8-sig", errors="replace") as f:
                    if "Left-Diagnostic Keywords" in f.readline():
                        return d / fn
            elif fn.lower().endswith(".xlsx") and xlsx is None:
                xlsx = d / fn
    hint = (
        f" Found {xlsx}: export it as CSV (e.g. soffice --headless --convert-to csv "
        f"'{xlsx.name}') or set task.csv=<the exported csv>."
        if xlsx
        else ""
    )
    raise ManifestError(
        f"task=t6: no ODIR annotation CSV (columns {', '.join(ODIR_COLUMNS)}) under {root}." + hint
    )


def build_manifest(task_cfg: T6TaskConfig, data_root: str | None = None) -> Manifest:
    """Manifest of T6: AIROGS eyes for training, ODIR eyes (per-eye glaucoma) for testing.

    Returns:
        Manifest with ``labels`` (n,) int64 (0 no glaucoma, 1 glaucoma), ``groups`` "" for
        AIROGS and ``odir:<ID>`` for ODIR, split train (AIROGS) / test (ODIR); ``info`` counts
        positives, suspected-glaucoma eyes and skipped rows.

    Raises:
        ManifestError: a label file missing (the .xlsx-only case explains the conversion), or
            (with ``task.on_bad_row=stop``) an unknown AIROGS class, empty
            keywords, a conflicting repeated ODIR row or a missing image.
    """
    root = task_root(task_cfg, data_root, "t6")
    suspected = str(task_cfg.options.suspected_glaucoma)
    if suspected not in SUSPECT:
        raise ManifestError(
            f"task=t6: options.suspected_glaucoma must be one of {sorted(SUSPECT)}, "
            f"got {suspected!r}"
        )
    bad = BadRows.from_config(task_cfg)
    airogs_csv = find_file(root, ["train_labels.csv"], "t6")
    odir_csv = _find_odir(root, task_cfg)
    index = NameIndex(root)
    rows: list[tuple[str, Path]] = []
    y: list[int] = []
    split: list[str] = []
    groups: list[str] = []

    _, airogs_rows = read_csv(airogs_csv, ["challenge_id", "class"])
    seen: set[str] = set()
    for n, row in airogs_rows:
        cid, cls = row["challenge_id"], row["class"]
        if cls not in AIROGS_CLASSES:
            bad(airogs_csv, n, f"unknown class {cls!r}; expected RG or NRG", "unknown_label")
            continue
        if cid in seen:
            bad(airogs_csv, n, f"duplicate challenge_id {cid!r}", "duplicate_row")
            continue
        rel = index.get(cid)
        if rel is None:
            bad(airogs_csv, n, f"image file for {cid!r} not found under {root}", "missing_image")
            continue
        seen.add(cid)
        rows.append((rel, root / rel))
        y.append(AIROGS_CLASSES[cls])
        split.append("train")
        groups.append("")

    odir_dir = find_dir(root, ODIR_IMAGE_DIRS, max_depth=4)
    odir_index = NameIndex(odir_dir) if odir_dir else NameIndex(odir_csv.parent)
    odir_base = odir_dir or odir_csv.parent
    _, odir_rows = read_csv(odir_csv, ODIR_COLUMNS)
    by_id: dict[str, tuple[str, ...]] = {}
    n_repeat = n_suspected = 0
    for n, row in odir_rows:
        pid = row["ID"]
        content = tuple(row[c] for c in ODIR_COLUMNS)
        if pid in by_id:
            if by_id[pid] == content:
                n_repeat += 1
                continue
            bad(odir_csv, n, f"patient ID {pid!r} repeated with different content", "duplicate_row")
            continue
        by_id[pid] = content
        for side in ("Left", "Right"):
            fname, cell = row[f"{side}-Fundus"], row[f"{side}-Diagnostic Keywords"]
            toks = keywords(cell)
            if not fname or not toks:
                bad(
                    odir_csv,
                    n,
                    f"{side.lower()} eye of ID {pid!r}: empty file name or keywords",
                    "malformed_row",
                )
                continue
            label = glaucoma_label(toks, suspected)
            n_suspected += "suspected glaucoma" in toks and "glaucoma" not in toks
            if label is None:
                continue
            rel = odir_index.get(fname)
            if rel is None:
                bad(
                    odir_csv,
                    n,
                    f"image file {fname!r} not found under {odir_base}",
                    "missing_image",
                )
                continue
            full = odir_base / rel
            rows.append((full.relative_to(root).as_posix(), full))
            y.append(label)
            split.append("test")
            groups.append(f"odir:{pid}")
    if not any(s == "test" for s in split) or not any(s == "train" for s in split):
        raise ManifestError(f"task=t6: need AIROGS (train) and ODIR (test) rows under {root}")
    labels = np.array(y, dtype=np.int64)
    is_test = np.array(split) == "test"
    info: dict[str, Any] = {
        "source": "AIROGS train set (de Vente et al. 2023) -> train; ODIR-2019 training "
        "annotations, per eye -> test",
        "files": {"airogs": str(airogs_csv), "odir": str(odir_csv)},
        "airogs": {"images": int((~is_test).sum()), "glaucoma": int(labels[~is_test].sum())},
        "odir": {
            "eyes": int(is_test.sum()),
            "glaucoma": int(labels[is_test].sum()),
            "patients": len(by_id),
            "suspected_glaucoma_eyes": n_suspected,
            "suspected_glaucoma_policy": suspected,
            "repeated_rows_read_once": n_repeat,
        },
        "keyword_rule": "exact tokens split at U+FF0C (or ','); 'glaucoma' positive",
        "split_source": "dataset-level: AIROGS -> train, ODIR -> test (paper Table 1)",
        "airogs_grouping": "none (no patient ids in AIROGS train_labels.csv)",
        **bad.info(),
    }
    return make_manifest("t6", root, rows, labels, CLASSES, split, groups, info, where=odir_csv)
