"""T7: multi-label chest radiograph findings, PadChest.

Source: Bustos et al., "PadChest: a large chest x-ray image dataset with multi-label annotated
reports", Med Image Anal 2020; BIMCV, https://bimcv.cipf.es/bimcv-projects/padchest/ (research
use licence). 160,868 images (16-bit PNG) of 67,000+ patients; the label file
``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` (also ``.csv.gz``) has one row per
image with, among others, ``ImageID`` (file name), ``ImageDir`` (the numbered zip folder it is
in), ``PatientID``, ``MethodLabel`` (``Physician``: labels read by a radiologist from the report
— about 27% of the images; ``RNN_model``: labels from the authors' report-labelling network) and
``Labels``, a Python-list literal such as ``['pleural effusion', 'cardiomegaly']``.

Expected layout: the CSV anywhere below the root (or ``task.csv``), images at
``<root>/<ImageDir>/<ImageID>`` (unzipped ``0.zip`` ... ``54.zip``).

Rules:

* **Labels** are parsed with :func:`ast.literal_eval` (never ``eval``) into exact tokens
  (surrounding spaces stripped, case kept): ``pneumonia`` never matches ``atypical pneumonia``.
  A cell that is not a list of strings is *malformed* (a bad row, ``task.on_bad_row``); an
  empty cell, ``[]`` or a list of blank strings is *empty* (dropped, counted); a row with the
  token ``exclude`` or ``suboptimal study`` is dropped and counted (image quality / exclusion
  markers, not findings).
* **Split**: the manually labelled subset (``MethodLabel == "Physician"``) is the test set, as
  in the paper; ``RNN_model`` rows are train. A patient with physician-labelled images is kept
  wholly on the test side: their ``RNN_model`` images are dropped from train (counted).
* **Findings**: every token with at least ``task.min_test_positives`` (default 50) positives
  in the test set, alphabetically; rarer findings are not targets (rows keep their other
  labels; a row may end up all-negative). The authors' script keeps counts ``> 50``
  (``eval_torch_padchest.py``); set ``task.min_test_positives=51`` for that.
* Images are 16-bit greyscale PNGs; :mod:`medprobe.data.images` scales them by their maximum.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from medprobe.config.schema import T7TaskConfig
from medprobe.data.manifest import Manifest, ManifestError
from medprobe.data.tasks.common import (
    BadRows,
    DirListing,
    find_file,
    make_manifest,
    read_csv,
    task_root,
)

LABEL_FILES = [
    "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv",
    "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz",
]
REQUIRED = ["ImageID", "ImageDir", "PatientID", "MethodLabel", "Labels"]
METHOD_SPLIT = {"Physician": "test", "RNN_model": "train"}
DROP_TOKENS = {"exclude": "exclude", "suboptimal study": "suboptimal_study"}
_INT_FLOAT = re.compile(r"^(\d+)\.0+$")


def parse_labels(cell: str) -> list[str] | None:
    """Tokens of one ``Labels`` cell; ``[]`` for an empty cell; None when malformed.

    >>> parse_labels("['pleural effusion', ' cardiomegaly']")
    ['pleural effusion', 'cardiomegaly']
    """
    s = cell.strip()
    if s.lower() in ("", "nan", "none", "[]"):
        return []
    try:
        value = ast.literal_eval(s)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(t, str) for t in value):
        return None
    out: list[str] = []
    for t in value:
        t = t.strip()
        if t and t not in out:
            out.append(t)
    return out


def build_manifest(task_cfg: T7TaskConfig, data_root: str | None = None) -> Manifest:
    """Manifest of T7 (PadChest): physician-labelled test set, findings with enough positives.

    Returns:
        Multi-label manifest: ``labels`` (n, K) uint8 over the kept findings, ``groups`` =
        PatientID, split train (RNN_model) / test (Physician); ``info`` counts every dropped
        category (empty, exclude, suboptimal study, train rows of test patients), skipped rows,
        test positives per finding and the findings left out.

    Raises:
        ManifestError: no label file or a missing column; with ``task.on_bad_row=stop`` a
            malformed ``Labels`` cell, an unknown ``MethodLabel``, a duplicate image or a missing
            image file (file and row named); no finding reaching ``min_test_positives``.
    """
    root = task_root(task_cfg, data_root, "t7")
    bad = BadRows.from_config(task_cfg)
    min_pos = int(task_cfg.min_test_positives)
    given = task_cfg.csv
    csv_path = Path(str(given)) if given else find_file(root, LABEL_FILES, "t7")
    listing = DirListing(root)
    _, rows_iter = read_csv(csv_path, REQUIRED)
    dropped: Counter[str] = Counter()
    recs: list[tuple[str, list[str], str, str]] = []  # rel, tokens, split, patient
    seen: set[str] = set()
    for n, row in rows_iter:
        method = row["MethodLabel"]
        if method not in METHOD_SPLIT:
            bad(
                csv_path,
                n,
                f"unknown MethodLabel {method!r}; expected {' or '.join(METHOD_SPLIT)}",
                "unknown_method",
            )
            continue
        toks = parse_labels(row["Labels"])
        if toks is None:
            bad(csv_path, n, f"malformed Labels {row['Labels'][:80]!r}", "malformed_labels")
            continue
        if not toks:
            dropped["empty_labels"] += 1
            continue
        hit = next((DROP_TOKENS[t] for t in toks if t in DROP_TOKENS), None)
        if hit:
            dropped[hit] += 1
            continue
        image_dir = row["ImageDir"]
        mt = _INT_FLOAT.match(image_dir)
        image_dir = mt.group(1) if mt else image_dir
        rel = f"{image_dir}/{row['ImageID']}" if image_dir else row["ImageID"]
        if not row["ImageID"] or rel in seen:
            bad(csv_path, n, f"empty or duplicate image {rel!r}", "duplicate_row")
            continue
        if not listing.exists(rel):
            bad(csv_path, n, f"image file {root / rel} not found", "missing_image")
            continue
        seen.add(rel)
        recs.append((rel, toks, METHOD_SPLIT[method], row["PatientID"]))

    test_patients = {p for _, _, s, p in recs if s == "test" and p}
    kept = [r for r in recs if not (r[2] == "train" and r[3] in test_patients)]
    dropped["train_rows_of_test_patients"] = len(recs) - len(kept)
    test_counts = Counter(t for _, toks, s, _ in kept if s == "test" for t in toks)
    classes = sorted(t for t, c in test_counts.items() if c >= min_pos)
    if not classes:
        raise ManifestError(
            f"{csv_path}: no finding has >= {min_pos} positives in the test set "
            f"(most: {test_counts.most_common(3)}); lower task.min_test_positives"
        )
    col = {c: k for k, c in enumerate(classes)}
    labels = np.zeros((len(kept), len(classes)), dtype=np.uint8)
    for i, (_, toks, _, _) in enumerate(kept):
        for t in toks:
            if t in col:
                labels[i, col[t]] = 1
    info: dict[str, Any] = {
        "source": "PadChest (Bustos et al. 2020), BIMCV research licence",
        "labels_file": str(csv_path),
        "dropped": dict(sorted(dropped.items())),
        "min_test_positives": min_pos,
        "test_positives": {c: test_counts[c] for c in classes},
        "findings_below_threshold": len(test_counts) - len(classes),
        "all_negative_rows": int((labels.sum(axis=1) == 0).sum()),
        "split_source": "MethodLabel: Physician (manually labelled) -> test, RNN_model -> "
        "train; patients with physician-labelled images kept on the test side",
        **bad.info(),
    }
    return make_manifest(
        "t7",
        root,
        [(r[0], root / r[0]) for r in kept],
        labels,
        classes,
        [r[2] for r in kept],
        [r[3] for r in kept],
        info,
        multilabel=True,
        where=csv_path,
    )
