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
* **Image files**: the release has known broken files, so a missing image (no
  ``<ImageDir>/<ImageID>``) or one that cannot be a readable image (empty, not a PNG, a PNG
  truncated before its ``IEND`` chunk: :func:`image_problem`, a few bytes read per file) is
  left out, counted and listed in ``info["bad_images"]`` (``results.json`` ``task_info``), with
  a note under the console table. Only a large share stops the run: more than
  ``task.max_bad_image_share`` (default 0.01 = 1%) of the images the label file names. Why
  1%: the known broken files are about a dozen of 160,868 (< 0.01%; public loaders such as
  torchxrayvision's ``PadChest_Dataset`` skip a list of 10-15 that Pillow cannot open), while
  one image zip not unzipped (each of ``0.zip`` ... ``54.zip`` holds about 1/55 = 1.8% of the
  images) or a wrong root exceeds it: an incomplete download stops instead of silently
  shrinking the sets. ``0`` stops on any bad file (all listed at once). Damage that shows
  only when the pixels are decoded is caught by the image scan before extraction
  (``data.on_error``).
* An ``ImageDir`` or ``ImageID`` that climbs out of the root (``..``, an absolute path) is
  refused (file and row named), whatever ``task.on_bad_row`` and ``data.allow_outside_root``.
* Images are 16-bit greyscale PNGs; :mod:`medprobe.data.images` scales them by their maximum.
"""

from __future__ import annotations

import ast
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
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
#: Threads checking image files (:func:`image_problem`: I/O bound, about 0.1 ms a file).
CHECK_THREADS = 8
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The last 12 bytes of every complete PNG: the empty IEND chunk (length, type, CRC).
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def image_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a readable image, from its header and end (no decoding), or None.

    Every file: Pillow identifies it and reads its header (what the broken PadChest files
    fail). PNG (by signature or suffix) also: the ``IEND`` chunk as the last 12 bytes (a
    download or unzip cut short loses it).

    Returns:
        ``"empty file"``, ``"not a PNG file (...)"``, ``"truncated PNG (no IEND chunk at the
        end)"``, ``"not an image (...)"``, ``"cannot read (...)"``, or None when it looks whole.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if not head:
                return "empty file"
            if head == PNG_SIGNATURE or path.suffix.lower() == ".png":
                if head != PNG_SIGNATURE:
                    return f"not a PNG file (starts with {head[:4]!r})"
                f.seek(0, os.SEEK_END)
                if f.tell() < 8 + 12:
                    return "truncated PNG (no IEND chunk at the end)"
                f.seek(-12, os.SEEK_END)
                if f.read(12) != PNG_END:
                    return "truncated PNG (no IEND chunk at the end)"
            f.seek(0)
            with Image.open(f):
                return None
    except (UnidentifiedImageError, SyntaxError, ValueError) as e:
        return f"not an image ({type(e).__name__}: {e})"
    except OSError as e:
        return f"cannot read ({e.strerror or e})"


def _climbs_out(rel: str) -> bool:
    """True for a relative path that leaves its root: absolute, or with a ``..`` part."""
    p = PurePosixPath(rel.replace("\\", "/"))
    return p.is_absolute() or ".." in p.parts


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


def _bad_images(
    bad_files: list[list[Any]], n_good: int, max_share: float, csv_path: Path
) -> dict[str, Any]:
    """``info["bad_images"]``: counts, share and every bad file ``[id, reason]``.

    Raises:
        ManifestError: the share of bad files exceeds ``max_share`` (counts and the first
            files named, with what to do).
    """
    listed = n_good + len(bad_files)
    share = len(bad_files) / listed if listed else 0.0
    missing = sum(1 for f in bad_files if f[1] == "missing")
    out: dict[str, Any] = {
        "listed": listed,
        "missing": missing,
        "unreadable": len(bad_files) - missing,
        "share": round(share, 6),
        "max_share": max_share,
        "files": [[f[0], f[1]] for f in bad_files],
    }
    if bad_files and share > max_share:
        first = "; ".join(f"row {f[2]}: {f[0]} ({f[1]})" for f in bad_files[:3])
        raise ManifestError(
            f"{csv_path}: {len(bad_files)} of {listed} image files ({share:.2%}) are missing "
            f"({missing}) or unreadable ({len(bad_files) - missing}), more than "
            f"task.max_bad_image_share={max_share:g} (first: {first}); is an image zip not "
            "unzipped, or the root wrong? Fix the files, or raise task.max_bad_image_share "
            "to go on without them"
        )
    return out


def build_manifest(task_cfg: T7TaskConfig, data_root: str | None = None) -> Manifest:
    """Manifest of T7 (PadChest): physician-labelled test set, findings with enough positives.

    Returns:
        Multi-label manifest: ``labels`` (n, K) uint8 over the kept findings, ``groups`` =
        PatientID, split train (RNN_model) / test (Physician); ``info`` counts every dropped
        category (empty, exclude, suboptimal study, train rows of test patients), skipped rows,
        missing or unreadable image files (``bad_images``: every file and its reason; a line
        in ``notes``), test positives per finding and the findings left out.

    Raises:
        ManifestError: no label file or a missing column; an ``ImageDir``/``ImageID`` leading
            out of the root; more than ``task.max_bad_image_share`` of the image files missing
            or unreadable; with ``task.on_bad_row=stop`` a malformed ``Labels`` cell, an unknown
            ``MethodLabel`` or a duplicate image (file and row named); no finding reaching
            ``min_test_positives``.
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
    pending: list[tuple[str, list[str], str, str, int]] = []  # rel, tokens, split, patient, row
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
        if _climbs_out(rel):
            raise ManifestError(
                f"{csv_path}, row {n}: ImageDir {row['ImageDir']!r} / ImageID "
                f"{row['ImageID']!r} leads outside the dataset root {root}; PadChest's ImageDir "
                "is the number of the image zip (0-54): fix the label file"
            )
        if not row["ImageID"] or rel in seen:
            bad(csv_path, n, f"empty or duplicate image {rel!r}", "duplicate_row")
            continue
        seen.add(rel)
        pending.append((rel, toks, METHOD_SPLIT[method], row["PatientID"], n))

    present = [r for r in pending if listing.exists(r[0])]
    with ThreadPoolExecutor(max_workers=CHECK_THREADS) as pool:  # I/O bound: headers, ends
        problems = dict(zip((r[0] for r in present),
                            pool.map(lambda r: image_problem(root / r[0]), present),
                            strict=True))  # fmt: skip
    bad_files: list[list[Any]] = []  # [rel, reason, row], in file order
    for rel, toks, side, pid, n in pending:
        problem = problems.get(rel, "missing")
        if problem is not None:
            bad_files.append([rel, problem, n])
        else:
            recs.append((rel, toks, side, pid))
    bad_images = _bad_images(bad_files, len(recs), float(task_cfg.max_bad_image_share), csv_path)

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
        "bad_images": bad_images,
        **bad.info(),
    }
    if bad_images["files"]:
        k, total = len(bad_images["files"]), bad_images["listed"]
        info["notes"] = [
            f"{k} of {total} PadChest image files missing or unreadable, left out "
            f"({bad_images['share']:.2%}; listed in results.json task_info.bad_images)"
        ]
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
