"""The ``csv`` task: any user dataset described by one CSV file.

Columns (names configurable): ``path`` (image path relative to the root), ``label`` (class name;
several separated by ``task.label_sep`` for multi-label), optional ``patient_id`` and optional
``split`` (``train`` / ``val`` / ``test``; ``valid``, ``validation`` and ``dev`` mean ``val``).
Without a split column a stratified, patient-level train/val/test split is made
(:func:`medprobe.data.check.auto_split`: a function of ids, patients, labels and seed only, so
the order of the CSV's rows changes nothing) and checked so that no patient is on two sides.
Example ids are the relative paths (never base names: datasets reuse base names); the
manifest is in id order. Bad rows (``task.on_bad_row``): ``stop`` lists every one (file, row,
reason) in one error, ``skip`` leaves them out and counts them by reason.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medprobe.config.schema import CsvTaskConfig
from medprobe.data.check import auto_split
from medprobe.data.manifest import AutoSplit, Manifest, ManifestError
from medprobe.data.tasks.common import BadRows

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}


def read_label_csv(
    csv_path: str | Path,
    *,
    root: str | Path,
    task_name: str = "csv",
    classes: Sequence[str] | None = None,
    label_sep: str | None = None,
    path_column: str = "path",
    label_column: str = "label",
    patient_column: str | None = None,
    split_column: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    on_bad_row: str = "stop",
) -> Manifest:
    """Read a label CSV into a :class:`Manifest` (rows in id order).

    Args:
        csv_path: the CSV (UTF-8, header row).
        root: directory that the ``path`` column is relative to.
        classes: class names in label-index order; default = sorted distinct labels.
        label_sep: separator of several labels in one cell (multi-label when set).
        patient_column: the patient (group) column; None = ``patient_id`` if the CSV has it,
            else no grouping. A name given here that the CSV lacks is an error.
        split_column: the split column; None = ``split`` if the CSV has it, else medprobe's
            split. A name given here that the CSV lacks is an error.
        val_fraction, test_fraction, split_seed: medprobe's split (no split column): a function
            of (ids, patients, labels, seed) only, so the order of the rows does not matter.
        on_bad_row: ``stop``: every bad row (file, row, reason) in one error; ``skip``: leave
            them out, counted by reason in ``info["skipped_rows"]``.

    Returns:
        The manifest in id order (the canonical order: the rows' order in the file changes
        nothing downstream, cache key included); ``labels`` (n,) int64 or (n, K) uint8.

    Raises:
        ManifestError: missing file or column (the columns present named), empty CSV; with
            ``on_bad_row=stop`` every bad row at once: too many cells, empty path or label,
            unknown label, bad split value, duplicate path, absolute path or one escaping the
            root, each naming the file and row.
    """
    csv_path = Path(csv_path).expanduser()
    root = Path(root).expanduser()
    if not csv_path.is_file():
        where = "" if csv_path.is_absolute() else f" (relative to the working folder {Path.cwd()})"
        beside = root / csv_path
        hint = (
            f"; did you mean {beside}?" if not csv_path.is_absolute() and beside.is_file() else ""
        )
        raise ManifestError(f"label file not found: {csv_path}{where}{hint}")
    if classes is not None and len(set(classes)) != len(classes):
        raise ManifestError(f"task.classes has duplicates: {list(classes)}")
    bad = BadRows(str(on_bad_row), collect=True)
    try:
        rows, header, patient_column, split_column = _read_rows(
            csv_path, path_column, label_column, patient_column, split_column, label_sep,
            classes, bad,
        )  # fmt: skip
    except UnicodeDecodeError as e:
        raise ManifestError(
            f"{csv_path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8"
        ) from None
    bad.finish()  # under stop: every bad row in one error
    if not rows:
        more = f" ({sum(bad.counts.values())} bad rows left out)" if bad.counts else ""
        raise ManifestError(f"{csv_path}: no rows{more}")
    rows.sort(key=lambda r: r.id)  # canonical order: independent of the file's row order

    names = list(classes) if classes else sorted({t for r in rows for t in r.labels})
    index = {c: k for k, c in enumerate(names)}
    multilabel = label_sep is not None
    if multilabel:
        labels = np.zeros((len(rows), len(names)), dtype=np.uint8)
        for i, r in enumerate(rows):
            labels[i, [index[t] for t in r.labels]] = 1
    else:
        labels = np.array([index[r.labels[0]] for r in rows], dtype=np.int64)

    group_arr = None if patient_column is None else np.array([r.group for r in rows], object)
    info: dict[str, Any] = {"csv": str(csv_path), "grouped": patient_column is not None,
                            "patient_column": patient_column, "split_column": split_column,
                            **bad.info()}  # fmt: skip
    ids = [r.id for r in rows]
    m = Manifest(
        task=task_name,
        ids=ids,
        paths=[root / i for i in ids],
        labels=labels,
        classes=names,
        split=np.array([r.split or "train" for r in rows], dtype=object),
        groups=group_arr,
        multilabel=multilabel,
        info=info,
    )
    if split_column is not None:
        info["split_source"] = "csv column"
    else:
        m = auto_split(m, AutoSplit(float(val_fraction), float(test_fraction), int(split_seed)))
    if group_arr is not None:
        from medprobe.data.splits import check_no_patient_overlap

        try:
            check_no_patient_overlap(m.split, group_arr)
        except ValueError as e:
            raise ManifestError(f"{csv_path}: {e}") from None
    m.info["n_rows"] = len(m)
    m.info["counts"] = m.counts()
    return m


@dataclass
class _Row:
    id: str
    labels: list[str]
    split: str | None
    group: str


def _column(
    header: list[str], given: str | None, default: str, what: str, path: Path
) -> str | None:
    """The column to read: ``given`` (an error when absent), else ``default`` if present."""
    if given is None:
        return default if default in header else None
    if given not in header:
        raise ManifestError(
            f"{path}: no {what} column {given!r} (columns: {', '.join(header) or 'none'}); "
            f"set task.{what}_column to one of them"
        )
    return given


def _read_rows(
    csv_path: Path,
    path_column: str,
    label_column: str,
    patient_column: str | None,
    split_column: str | None,
    label_sep: str | None,
    classes: Sequence[str] | None,
    bad: BadRows,
) -> tuple[list[_Row], list[str], str | None, str | None]:
    """Every good row; every bad one reported to ``bad`` (file, row, reason)."""
    known = set(classes) if classes else None
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]  # "path, label" is path,label
        reader.fieldnames = header
        if not header:
            raise ManifestError(
                f"{csv_path}: empty file (no header line); expected columns "
                f"{path_column},{label_column}[,patient_id][,split]"
            )
        used = [c for c in (path_column, label_column, patient_column, split_column) if c]
        used += [c for c in ("patient_id", "split") if c not in used]
        twice = sorted({h for h in header if h in used and header.count(h) > 1})
        if twice:  # csv.DictReader would silently keep the last of them
            raise ManifestError(
                f"{csv_path}: column {twice[0]!r} appears {header.count(twice[0])} times in the "
                "header; keep one"
            )
        for col, what in ((path_column, "path"), (label_column, "label")):
            if col not in header:
                raise ManifestError(
                    f"{csv_path}: missing column {col!r} (columns: {', '.join(header) or 'none'})"
                    + (f"; set task.{what}_column" if header else "")
                )
        patient_column = _column(header, patient_column, "patient_id", "patient", csv_path)
        split_column = _column(header, split_column, "split", "split", csv_path)
        rows: list[_Row] = []
        seen: dict[str, int] = {}
        for rowno, row in enumerate(reader, start=2):  # row 1 is the header
            where = csv_path
            if None in row:  # csv puts the cells beyond the header's columns under key None
                bad(where, rowno, f"{len(header) + len(row[None])} fields for {len(header)} "
                    "columns (quote cells that contain the separator)", "too_many_fields")  # fmt: skip
                continue
            rel = (row.get(path_column) or "").strip()
            if not rel:
                bad(where, rowno, f"empty {path_column!r}", "empty_path")
                continue
            if any(c in rel for c in "\n\r\0"):  # ids.txt of the cache holds one id a line
                bad(where, rowno, f"path {rel!r} contains a newline, carriage return or NUL; "
                    "rename the file", "bad_path")  # fmt: skip
                continue
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                bad(where, rowno, f"path {rel!r} must be relative to the root", "path_outside_root")
                continue
            rel = Path(rel).as_posix()
            if rel in seen:
                bad(where, rowno, f"duplicate path {rel!r} (first at row {seen[rel]})",
                    "duplicate_path")  # fmt: skip
                continue
            cell = (row.get(label_column) or "").strip()
            toks = [t.strip() for t in cell.split(label_sep)] if label_sep else [cell]
            toks = [t for t in toks if t]
            if not toks:
                bad(where, rowno, f"empty {label_column!r}", "empty_label")
                continue
            unknown = [t for t in toks if known is not None and t not in known]
            if unknown and classes is not None:
                bad(where, rowno, f"unknown label {unknown[0]!r}; known: {', '.join(classes)}",
                    "unknown_label")  # fmt: skip
                continue
            split = None
            if split_column is not None:
                s = (row.get(split_column) or "").strip().lower()
                if s not in SPLIT_ALIASES:
                    bad(where, rowno, f"split {s!r} is not one of train/val/test", "bad_split")
                    continue
                split = SPLIT_ALIASES[s]
            group = (row.get(patient_column) or "").strip() if patient_column else ""
            seen[rel] = rowno
            rows.append(_Row(rel, toks, split, group))
    return rows, header, patient_column, split_column


def build_manifest(task_cfg: CsvTaskConfig, data_root: str | None = None) -> Manifest:
    """Manifest of a user CSV dataset from the ``task`` config node.

    Raises:
        ManifestError: no root configured, or any problem listed in :func:`read_label_csv`.
    """
    given = task_cfg.root or data_root
    if not given:
        raise ManifestError(
            "task=csv needs an image root: set task.root=/path/to/images or data_root=..."
        )
    root = Path(given).expanduser()
    if root.is_file():  # else "label file not found: <root>/labels.csv" under a file
        raise ManifestError(
            f"task=csv: the image root {root} is a file, not a folder (data_root= or task.root= "
            "names the folder of the images; task.csv= the label file)"
        )
    csv_path = Path(task_cfg.csv).expanduser() if task_cfg.csv else root / "labels.csv"
    return read_label_csv(
        csv_path,
        root=root,
        task_name=task_cfg.kind,  # bootstrap replicates stay seeded by the adapter kind
        classes=list(task_cfg.classes) if task_cfg.classes else None,
        label_sep=task_cfg.label_sep,
        path_column=task_cfg.path_column,
        label_column=task_cfg.label_column,
        patient_column=task_cfg.patient_column,
        split_column=task_cfg.split_column,
        val_fraction=task_cfg.val_fraction,
        test_fraction=task_cfg.test_fraction,
        split_seed=task_cfg.split_seed,
        on_bad_row=str(task_cfg.on_bad_row),
    )
