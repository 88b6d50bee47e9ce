"""The ``csv`` task: any user dataset described by one CSV file.

Columns (names configurable): ``path`` (image path relative to the root), ``label`` (class name;
several separated by ``task.label_sep`` for multi-label), optional ``patient_id`` and optional
``split`` (``train`` / ``val`` / ``test``; ``valid``, ``validation`` and ``dev`` mean ``val``).
Without a split column a stratified, patient-level train/val/test split is made
(:func:`medprobe.data.splits.assign_splits`) and checked so that no patient is on two sides.
Example ids are the relative paths (never base names: datasets reuse base names).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medprobe.config.schema import CsvTaskConfig
from medprobe.data.manifest import Manifest, ManifestError

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
    patient_column: str = "patient_id",
    split_column: str = "split",
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> Manifest:
    """Read a label CSV into a :class:`Manifest`.

    Args:
        csv_path: the CSV (UTF-8, header row).
        root: directory that the ``path`` column is relative to.
        classes: class names in label-index order; default = sorted distinct labels.
        label_sep: separator of several labels in one cell (multi-label when set).
        val_fraction, test_fraction, split_seed: used only when the CSV has no split column.

    Returns:
        The manifest; ``labels`` (n,) int64 or (n, K) uint8 multi-hot.

    Raises:
        ManifestError: missing file or column, empty CSV, empty/unknown label, bad split value,
            duplicate path, absolute path or path escaping the root — naming the file and row.
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
    try:
        return _read(csv_path, root, task_name, classes, label_sep, path_column, label_column,
                     patient_column, split_column, val_fraction, test_fraction, split_seed)  # fmt: skip
    except UnicodeDecodeError as e:
        raise ManifestError(
            f"{csv_path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8"
        ) from None


def _read(
    csv_path: Path,
    root: Path,
    task_name: str,
    classes: Sequence[str] | None,
    label_sep: str | None,
    path_column: str,
    label_column: str,
    patient_column: str,
    split_column: str,
    val_fraction: float,
    test_fraction: float,
    split_seed: int,
) -> Manifest:
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]  # "path, label" is path,label
        reader.fieldnames = header
        if not header:
            raise ManifestError(
                f"{csv_path}: empty file (no header line); expected columns "
                f"{path_column},{label_column}[,{patient_column}][,{split_column}]"
            )
        used = (path_column, label_column, patient_column, split_column)
        twice = sorted({h for h in header if h in used and header.count(h) > 1})
        if twice:  # csv.DictReader would silently keep the last of them
            raise ManifestError(
                f"{csv_path}: column {twice[0]!r} appears {header.count(twice[0])} times in the "
                "header; keep one"
            )
        for col in (path_column, label_column):
            if col not in header:
                raise ManifestError(
                    f"{csv_path}: missing column {col!r} (columns: {', '.join(header) or 'none'})"
                )
        has_split = split_column in header
        has_patient = patient_column in header
        ids: list[str] = []
        raw_labels: list[list[str]] = []
        split: list[str] = []
        groups: list[str] = []
        seen: dict[str, int] = {}
        for rowno, row in enumerate(reader, start=2):  # row 1 is the header
            if None in row:  # csv puts the cells beyond the header's columns under key None
                raise ManifestError(
                    f"{csv_path}, row {rowno}: {len(header) + len(row[None])} fields for "
                    f"{len(header)} columns (quote cells that contain the separator)"
                )
            rel = (row.get(path_column) or "").strip()
            if not rel:
                raise ManifestError(f"{csv_path}, row {rowno}: empty {path_column!r}")
            if any(c in rel for c in "\n\r\0"):  # ids.txt of the cache holds one id a line
                raise ManifestError(
                    f"{csv_path}, row {rowno}: path {rel!r} contains a newline, carriage return "
                    "or NUL; rename the file"
                )
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise ManifestError(
                    f"{csv_path}, row {rowno}: path {rel!r} must be relative to the root"
                )
            rel = Path(rel).as_posix()
            if rel in seen:
                raise ManifestError(
                    f"{csv_path}, row {rowno}: duplicate path {rel!r} (first at row {seen[rel]})"
                )
            seen[rel] = rowno
            cell = (row.get(label_column) or "").strip()
            toks = [t.strip() for t in cell.split(label_sep)] if label_sep else [cell]
            toks = [t for t in toks if t]
            if not toks:
                raise ManifestError(f"{csv_path}, row {rowno}: empty {label_column!r}")
            if not label_sep and len(toks) != 1:
                raise ManifestError(f"{csv_path}, row {rowno}: bad label {cell!r}")
            if has_split:
                s = (row.get(split_column) or "").strip().lower()
                if s not in SPLIT_ALIASES:
                    raise ManifestError(
                        f"{csv_path}, row {rowno}: split {s!r} is not one of train/val/test"
                    )
                split.append(SPLIT_ALIASES[s])
            groups.append((row.get(patient_column) or "").strip() if has_patient else "")
            ids.append(rel)
            raw_labels.append(toks)
    if not ids:
        raise ManifestError(f"{csv_path}: no rows")

    names = list(classes) if classes else sorted({t for toks in raw_labels for t in toks})
    index = {c: k for k, c in enumerate(names)}
    for rowno, toks in enumerate(raw_labels, start=2):
        for t in toks:
            if t not in index:
                raise ManifestError(
                    f"{csv_path}, row {rowno}: unknown label {t!r}; known: {', '.join(names)}"
                )
    multilabel = label_sep is not None
    if multilabel:
        labels = np.zeros((len(ids), len(names)), dtype=np.uint8)
        for i, toks in enumerate(raw_labels):
            labels[i, [index[t] for t in toks]] = 1
    else:
        labels = np.array([index[toks[0]] for toks in raw_labels], dtype=np.int64)

    group_arr = np.array(groups, dtype=object) if has_patient else None
    info: dict[str, Any] = {"csv": str(csv_path), "grouped": bool(has_patient)}
    if has_split:
        split_arr = np.array(split, dtype=object)
        info["split_source"] = "csv column"
    else:
        from medprobe.data.splits import assign_splits

        split_arr = np.asarray(
            assign_splits(
                labels,
                group_arr,
                val_fraction=val_fraction,
                test_fraction=test_fraction,
                seed=split_seed,
            ),
            dtype=object,
        )
        info["split_source"] = (
            f"stratified{' patient-level' if has_patient else ''} split, "
            f"val={val_fraction} test={test_fraction} seed={split_seed}"
        )
    if group_arr is not None:
        from medprobe.data.splits import check_no_patient_overlap

        try:
            check_no_patient_overlap(split_arr, group_arr)
        except ValueError as e:
            raise ManifestError(f"{csv_path}: {e}") from None
    return Manifest(
        task=task_name,
        ids=ids,
        paths=[root / i for i in ids],
        labels=labels,
        classes=names,
        split=split_arr,
        groups=group_arr,
        multilabel=multilabel,
        info=info,
    )


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
    )
