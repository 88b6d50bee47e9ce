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
annotations as distributed, the workbook ``ODIR-5K_Training_Annotations(Updated)_V2.xlsx``
(read directly with openpyxl: its first sheet holding the columns above), or a **UTF-8** CSV
(``task.csv`` names either; else the official ``.xlsx`` name, then
``ODIR-5K_Training_Annotations(Updated)_V2.csv``, ``data.csv``, Kaggle's ``full_df.csv``, then
any ``.xlsx`` or ``.csv`` with the columns above). ODIR images are looked up by file name in
``Training Images/`` (Kaggle), ``ODIR-5K_Training_Dataset/`` (official zip) or
``preprocessed_images/``, else anywhere below the annotation file's folder.

A CSV export can silently mislabel eyes: saved in a legacy 8-bit encoding (GBK, Windows-1252)
the full-width comma ``，`` becomes other bytes (GBK ``A3 AC``) or ``?``, and ``glaucoma，lens
dust`` is then one token that is not ``glaucoma``. medprobe therefore refuses, with one line
naming the file and row, a CSV that is not valid UTF-8 and a keyword cell that shows the
traces of such a round trip (:func:`mojibake`): ``?``, U+FFFD, characters U+0080-U+00FF
(UTF-8 read as Latin-1 / Windows-1252: ``ï¼Œ``; GBK read so: ``£¬``) or ``锛`` (UTF-8 read as
GBK). The ODIR keywords are English words joined by ``，``; none of these occurs in them.

Rules:

* **AIROGS -> train**: ``RG`` = glaucoma, ``NRG`` = no glaucoma. Its public labels carry no
  patient id, so each image is its own group (the probe's validation carve cannot keep a
  patient's two eyes together; noted in ``info``).
* **ODIR -> test, per eye**: the eye's keywords are split at the full-width comma ``，``
  (U+FF0C, as in the file; an ASCII comma is accepted too) and compared as exact lower-case
  tokens: the token ``glaucoma`` -> glaucoma; otherwise ``suspected glaucoma`` -> glaucoma by
  default (``task.options.suspected_glaucoma``: ``positive`` | ``negative`` | ``drop``; why
  ``positive``: docs/tasks.md#t6 — the paper tests on all 7,000 ODIR images, so no eye was
  dropped, and AIROGS' target, *referable* glaucoma, is an eye a grader would refer: a
  suspected glaucoma is referred); otherwise no glaucoma. Never a substring test. An eye with
  empty keywords is a bad row. Both eyes of a patient share the group ``odir:<ID>``. Rows
  repeated with identical content (Kaggle's ``full_df.csv`` repeats patients) are read once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
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
KEYWORD_COLUMNS = ["Left-Diagnostic Keywords", "Right-Diagnostic Keywords"]
ODIR_XLSX = "ODIR-5K_Training_Annotations(Updated)_V2.xlsx"
ODIR_NAMES = ["ODIR-5K_Training_Annotations(Updated)_V2.csv", "data.csv", "full_df.csv"]
ODIR_IMAGE_DIRS = ["Training Images", "ODIR-5K_Training_Dataset", "preprocessed_images"]
KEYWORD_SEP = re.compile("[\uff0c,]")
SUSPECT = {"drop", "positive", "negative"}
#: What each ``task.options.suspected_glaucoma`` does (recorded in ``task_info``).
SUSPECT_RULE = {
    "positive": "suspected glaucoma eyes count as glaucoma (default: the paper tests on all "
    "7,000 ODIR images; AIROGS' target is referable glaucoma; docs/tasks.md#t6)",
    "negative": "suspected glaucoma eyes count as no glaucoma",
    "drop": "suspected glaucoma eyes are left out (counted)",
}
#: Traces of the full-width comma (or of any non-ASCII text) after a legacy-encoding round
#: trip: ``?`` (not representable, Windows-1252 export), U+FFFD (undecodable), U+0080-U+00FF
#: (UTF-8 bytes read as Latin-1 / Windows-1252, e.g. ``ï¼Œ``; GBK ``A3 AC`` read so: ``£¬``),
#: ``锛`` (UTF-8 ``EF BC`` read as GBK).
MOJIBAKE = re.compile("[?\ufffd\u0080-\u00ff\u951b]")
FIX = (
    f"read the official workbook instead (task.csv=<path to {ODIR_XLSX}>, or leave it below "
    "the root) or export it again as 'CSV UTF-8'"
)


def keywords(cell: str) -> list[str]:
    """Exact keyword tokens of one eye: split at ``，`` (U+FF0C) or ``,``, stripped, lower-case."""
    return [t.strip().lower() for t in KEYWORD_SEP.split(cell) if t.strip()]


def glaucoma_label(tokens: list[str], suspected: str = "positive") -> int | None:
    """1 glaucoma, 0 not, None = drop (``suspected glaucoma`` under the ``drop`` policy)."""
    if "glaucoma" in tokens:
        return 1
    if "suspected glaucoma" in tokens:
        return {"drop": None, "positive": 1, "negative": 0}[suspected]
    return 0


def mojibake(cell: str) -> str | None:
    """The first character of ``cell`` that a legacy-encoding round trip leaves (see
    :data:`MOJIBAKE`), or None for a clean keyword cell."""
    m = MOJIBAKE.search(cell)
    return m.group(0) if m else None


def _cell(v: Any) -> str:
    """A workbook cell as the CSV export writes it: ``None`` -> "", ``3.0`` -> "3"."""
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def _xlsx_sheet(path: Path) -> tuple[Any, list[str], Iterator[tuple[Any, ...]]] | None:
    """(open workbook, header, remaining rows) of the first sheet whose first row holds the
    ODIR columns; None when no sheet does.

    Raises:
        ManifestError: not a readable ``.xlsx`` workbook.
    """
    import zipfile

    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, InvalidFileException) as e:
        raise ManifestError(
            f"{path}: cannot read as an Excel workbook ({type(e).__name__}: {e})"
        ) from None
    for ws in wb.worksheets:
        rows = ws.iter_rows(values_only=True)
        header = [_cell(v) for v in next(rows, ())]
        if all(c in header for c in ODIR_COLUMNS):
            return wb, header, rows
    wb.close()
    return None


def read_xlsx(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """Header and ``(row number, row dict)`` pairs of the ODIR annotation workbook, numbered as
    the spreadsheet shows them (header = row 1), cells as text (``_cell``), like
    :func:`medprobe.data.tasks.common.read_csv`.

    Raises:
        ManifestError: not a workbook, or no sheet with the columns :data:`ODIR_COLUMNS`.
    """
    found = _xlsx_sheet(path)
    if found is None:
        raise ManifestError(
            f"{path}: no sheet whose first row holds the ODIR columns {', '.join(ODIR_COLUMNS)}"
        )
    wb, header, rows = found

    def gen() -> Iterator[tuple[int, dict[str, str]]]:
        try:
            for n, values in enumerate(rows, start=2):
                cells = [_cell(v) for v in values]
                if not any(cells):
                    continue
                cells += [""] * (len(header) - len(cells))
                yield n, {h: c for h, c in zip(header, cells, strict=False) if h}
        finally:
            wb.close()

    return header, gen()


def check_utf8(path: Path) -> None:
    """Refuse an ODIR CSV that is not valid UTF-8 (a legacy-encoding export), naming the row.

    Raises:
        ManifestError: ``"<file>, row <n>: not UTF-8 ..."`` with what to do (one line).
    """
    raw = path.read_bytes()
    if path.suffix == ".gz":
        import gzip

        raw = gzip.decompress(raw)
    try:
        raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        row = raw[: e.start].count(b"\n") + 1
        raise ManifestError(
            f"{path}, row {row}: not UTF-8 (byte 0x{raw[e.start]:02x}): the CSV was saved in a "
            "legacy encoding (e.g. GBK or Windows-1252), which changes ODIR's full-width comma "
            f"'\uff0c' and can turn glaucoma eyes negative; {FIX}"
        ) from None


def read_odir(path: Path) -> tuple[str, Iterator[tuple[int, dict[str, str]]]]:
    """``("xlsx" | "csv", rows)`` of the ODIR annotations; every keyword cell is checked for
    legacy-encoding traces (:func:`mojibake`) as the rows are read.

    Raises:
        ManifestError: unreadable workbook / CSV, missing columns, a CSV that is not UTF-8, or
            a keyword cell with a trace (file, row, column and what to do; one line).
    """
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        kind, (_, rows) = "xlsx", read_xlsx(path)
    else:
        if path.is_file():
            check_utf8(path)
        kind, (_, rows) = "csv", read_csv(path, ODIR_COLUMNS)

    def checked() -> Iterator[tuple[int, dict[str, str]]]:
        for n, row in rows:
            for col in KEYWORD_COLUMNS:
                bad = mojibake(row[col])
                if bad is not None:
                    raise ManifestError(
                        f"{path}, row {n}: {col} {row[col][:60]!r} holds {bad!r}, a trace of a "
                        "legacy-encoding round trip where ODIR has the full-width comma "
                        f"'\uff0c' (glaucoma eyes would read as negative); {FIX}"
                    )
            yield n, row

    return kind, checked()


def _has_odir_header(path: Path) -> bool:
    if path.suffix.lower() == ".xlsx":
        try:
            found = _xlsx_sheet(path)
        except ManifestError:
            return False
        if found is not None:
            found[0].close()
        return found is not None
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        return "Left-Diagnostic Keywords" in f.readline()


def _find_odir(root: Path, cfg: T6TaskConfig) -> Path:
    given = cfg.csv
    if given:
        return Path(str(given))
    p = find_optional(root, [ODIR_XLSX, *ODIR_NAMES])
    if p is not None and (p.name == ODIR_XLSX or _has_odir_header(p)):
        return p  # the official workbook by name: read (or refused) as it is
    for d, _, files in walk_dirs(root, 4):
        for fn in files:
            if fn.lower().endswith((".csv", ".xlsx")) and _has_odir_header(d / fn):
                return d / fn
    raise ManifestError(
        f"task=t6: no ODIR annotations ({ODIR_XLSX} or a UTF-8 CSV with the columns "
        f"{', '.join(ODIR_COLUMNS)}) under {root}; set task.csv=<file> (docs/tasks.md#t6)"
    )


def build_manifest(task_cfg: T6TaskConfig, data_root: str | None = None) -> Manifest:
    """Manifest of T6: AIROGS eyes for training, ODIR eyes (per-eye glaucoma) for testing.

    Returns:
        Manifest with ``labels`` (n,) int64 (0 no glaucoma, 1 glaucoma), ``groups`` "" for
        AIROGS and ``odir:<ID>`` for ODIR, split train (AIROGS) / test (ODIR); ``info`` counts
        positives, suspected-glaucoma eyes and skipped rows.

    Raises:
        ManifestError: a label file missing or unreadable; an ODIR CSV that is not UTF-8 or a
            keyword cell with legacy-encoding traces (:func:`read_odir`, whatever
            ``task.on_bad_row``); or (with ``task.on_bad_row=stop``) an unknown AIROGS class,
            empty keywords, a conflicting repeated ODIR row or a missing image.
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
    odir_format, odir_rows = read_odir(odir_csv)
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
        "odir_format": odir_format,
        "airogs": {"images": int((~is_test).sum()), "glaucoma": int(labels[~is_test].sum())},
        "odir": {
            "eyes": int(is_test.sum()),
            "glaucoma": int(labels[is_test].sum()),
            "patients": len(by_id),
            "suspected_glaucoma_eyes": n_suspected,
            "suspected_glaucoma_policy": suspected,
            "suspected_glaucoma_rule": SUSPECT_RULE[suspected],
            "repeated_rows_read_once": n_repeat,
        },
        "keyword_rule": "exact tokens split at U+FF0C (or ','); 'glaucoma' positive",
        "split_source": "dataset-level: AIROGS -> train, ODIR -> test (paper Table 1)",
        "airogs_grouping": "none (no patient ids in AIROGS train_labels.csv)",
        **bad.info(),
    }
    return make_manifest("t6", root, rows, labels, CLASSES, split, groups, info, where=odir_csv)
