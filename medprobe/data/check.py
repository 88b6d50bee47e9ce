"""The data check: what a task's manifest holds, before any model is loaded (issue 16.7-16.8).

Adapter-independent functions on a :class:`~medprobe.data.manifest.Manifest`:

* :func:`auto_split` / :func:`resplit`: medprobe's own split (stratified, patient-level,
  independent of row order: :func:`medprobe.data.splits.assign_splits` with the ids), made
  again after rows are left out (``data.on_error=skip``), so the checks see the rows used.
* :func:`drop_images`: leave out unreadable images, then split.
* :func:`split_digest`: sha256 of the (id, split) pairs in id order (``results.json``
  ``data.split_sha256``; equal for the same split whatever the row order of the label file).
* :func:`summary` / :func:`format_summary`: counts per class per split, patients, exclusions
  with reasons, bad files: printed by ``medprobe data`` and stored as ``results.json`` ``data``.
* :func:`write_manifest_csv`, :func:`write_splits_csv`: ``manifest.csv`` (``medprobe data``)
  and ``splits.csv`` (every run folder).

Nothing here reads pixels or imports torch.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medprobe.data.manifest import SPLITS, AutoSplit, Manifest
from medprobe.errors import ManifestError

__all__ = [
    "MANIFEST_FILE",
    "SPLITS_FILE",
    "auto_split",
    "drop_images",
    "format_summary",
    "resplit",
    "split_digest",
    "summary",
    "write_manifest_csv",
    "write_splits_csv",
]

MANIFEST_FILE = "manifest.csv"
SPLITS_FILE = "splits.csv"


def auto_split(m: Manifest, spec: AutoSplit) -> Manifest:
    """``m`` with medprobe's split: stratified on the labels, patient-level on ``m.groups``,
    a function of (ids, groups, labels, seed) only (:func:`medprobe.data.splits.assign_splits`).

    Returns:
        a new manifest (same rows, same order) with ``split``, ``auto_split`` and
        ``info["split_source"]``, ``info["counts"]`` set.

    Raises:
        ManifestError: the rows cannot be split (none, or bad fractions).
    """
    from medprobe.data.splits import assign_splits

    try:
        split = assign_splits(
            m.labels,
            m.groups,
            val_fraction=float(spec.val_fraction),
            test_fraction=float(spec.test_fraction),
            seed=int(spec.seed),
            ids=m.ids,
        )
    except ValueError as e:
        raise ManifestError(f"task {m.task}: cannot split: {e}") from None
    out = m.subset(np.arange(len(m)))
    out.split = np.asarray(split, dtype=object)
    out.auto_split = spec
    kind = "patient-level " if m.groups is not None else ""
    out.info["split_source"] = (
        f"stratified {kind}split (medprobe.data.splits.assign_splits, by id) "
        f"val={spec.val_fraction} test={spec.test_fraction} seed={spec.seed}"
    )
    out.info["counts"] = out.counts()
    return out


def resplit(m: Manifest) -> Manifest:
    """Make medprobe's split again on ``m``'s rows (after rows were left out); a manifest
    with the dataset's own split (``auto_split`` None) is returned as it is."""
    return m if m.auto_split is None else auto_split(m, m.auto_split)


def drop_images(m: Manifest, bad: Sequence[Sequence[str]]) -> Manifest:
    """Leave out the rows whose image is in ``bad`` (``[(path, reason), ...]`` from
    :func:`medprobe.data.images.scan_images`), then split (:func:`resplit`): images left out
    by ``data.on_error=skip`` never enter the split or its checks.

    Raises:
        ManifestError: no row is left.
    """
    gone = {str(p) for p, _ in bad}
    if not gone:
        return m
    keep = np.array([str(p) not in gone for p in m.paths], dtype=bool)
    if not keep.any():
        raise ManifestError(f"task {m.task}: all {len(m)} images are unreadable")
    out = m.subset(keep)
    out.info["dropped_images"] = int((~keep).sum())
    out.info["n_rows"] = len(out)
    out.info["counts"] = out.counts()
    return resplit(out)


def split_digest(m: Manifest) -> str:
    """sha256 (hex) of ``"<id>\\t<split>\\n"`` over the rows in id order: names the split
    whatever the order of the label file's rows."""
    h = hashlib.sha256()
    for i in np.argsort(np.asarray(m.ids, dtype=str), kind="stable"):
        h.update(f"{m.ids[i]}\t{m.split[i]}\n".encode())
    return h.hexdigest()


def _patients(m: Manifest) -> dict[str, Any] | None:
    if m.groups is None:
        return None
    from medprobe.data.splits import _group_key

    keys = [_group_key(g) for g in m.groups]
    per = {}
    for s in SPLITS:
        ks = {k for k, sp in zip(keys, m.split, strict=True) if sp == s and k is not None}
        if (m.split == s).any():
            per[s] = len(ks)
    return {
        "total": len({k for k in keys if k is not None}),
        "per_split": per,
        "rows_without_id": sum(k is None for k in keys),
    }


def summary(
    m: Manifest,
    bad_images: Sequence[Sequence[str]] | None = None,
    *,
    on_error: str = "stop",
) -> dict[str, Any]:
    """What the data check reports, as plain JSON data (``results.json`` ``data``).

    Args:
        m: the manifest as it will be used (bad images already left out under ``skip``).
        bad_images: ``[(path, reason), ...]`` found by the image scan, or None when the
            images were not scanned (a run with ``data.on_error=stop`` scans them just before
            extraction, and stops on any).
        on_error: ``data.on_error`` (``stop`` | ``skip``).

    Returns:
        ``{"task", "n_images", "classes", "multilabel", "split_source", "split_sha256",
        "split_sizes" {split: n}, "counts" {split: {class: n}}, "patients" (None, or
        {"total", "per_split", "rows_without_id"}), "excluded_rows" ({"policy", "by_reason",
        "examples"} from the adapter's ``task.on_bad_row``), "bad_images" ({"scanned",
        "policy", "n", "files"}), "outside_root" [[path, resolved], ...]}``.
    """
    info = m.info
    return {
        "task": m.task,
        "n_images": len(m),
        "classes": list(m.classes),
        "multilabel": bool(m.multilabel),
        "split_source": info.get("split_source"),
        "split_sha256": split_digest(m),
        "split_sizes": {s: int((m.split == s).sum()) for s in SPLITS if (m.split == s).any()},
        "counts": m.counts(),
        "patients": _patients(m),
        "excluded_rows": {
            "policy": info.get("on_bad_row", "stop"),
            "by_reason": dict(info.get("skipped_rows", {})),
            "examples": list(info.get("skipped_examples", [])),
        },
        "bad_images": {
            "scanned": bad_images is not None,
            "policy": str(on_error),
            "n": len(bad_images or []),
            "files": [[str(p), str(r)] for p, r in (bad_images or [])],
        },
        "outside_root": list(info.get("outside_root", [])),
        "few_test_positives": _few_test_positives(m),
    }


def _few_test_positives(m: Manifest) -> list[list[Any]]:
    """``[[class, n], ...]``: classes with 1 to :data:`medprobe.stats.FEW_POSITIVES` - 1 test
    positives (their AUROC intervals are unreliable; the run's table warns too)."""
    from medprobe.stats import few_positives

    test = m.split == "test"
    if not test.any():
        return []
    return [[c, n] for c, n in few_positives(m.labels[test], m.classes, multilabel=m.multilabel)]


def format_summary(s: dict[str, Any]) -> str:
    """The summary as the console text of ``medprobe data``: a class x split table, then
    patients, excluded rows and bad files, each with its reason."""
    splits = list(s["split_sizes"])
    lines = [
        f"task {s['task']}: {s['n_images']} images, {len(s['classes'])} "
        f"{'findings' if s['multilabel'] else 'classes'}",
        f"split: {s['split_source'] or 'given'} (sha256 {s['split_sha256'][:12]})",
        "",
    ]
    width = max([len("class"), len("total"), *map(len, s["classes"])])
    head = f"{'class':<{width}}" + "".join(f"{x:>8}" for x in [*splits, "all"])
    lines += [head, "-" * len(head)]
    for c in s["classes"]:
        row = [s["counts"][sp][c] for sp in splits]
        lines.append(f"{c:<{width}}" + "".join(f"{n:>8}" for n in [*row, sum(row)]))
    sizes = [s["split_sizes"][sp] for sp in splits]
    lines.append(f"{'total':<{width}}" + "".join(f"{n:>8}" for n in [*sizes, sum(sizes)]))
    if s["multilabel"]:
        lines.append("(multi-label: positives per finding; a row may count under several)")
    lines.append("")
    p = s["patients"]
    if p is None:
        lines.append("patients: no patient ids (every image is its own group)")
    else:
        per = ", ".join(f"{k} {v}" for k, v in p["per_split"].items())
        lines.append(f"patients: {p['total']} ({per}); rows without a patient id: "
                     f"{p['rows_without_id']}")  # fmt: skip
    ex = s["excluded_rows"]
    n_ex = sum(ex["by_reason"].values())
    if n_ex:
        reasons = ", ".join(f"{k} {v}" for k, v in ex["by_reason"].items())
        lines.append(f"excluded rows (task.on_bad_row={ex['policy']}): {n_ex} ({reasons})")
        lines += [f"  {e}" for e in ex["examples"]]
    else:
        lines.append("excluded rows: none")
    b = s["bad_images"]
    if not b["scanned"]:
        lines.append("images: not scanned")
    elif b["n"]:
        what = "left out before the split" if b["policy"] == "skip" else "a run stops on them"
        lines.append(f"unreadable images (data.on_error={b['policy']}: {what}): {b['n']}")
        lines += [f"  {path}: {reason}" for path, reason in b["files"]]
    else:
        lines.append("images: all readable")
    if s["few_test_positives"]:
        few = ", ".join(f"{c} ({n})" for c, n in s["few_test_positives"])  # as under a run
        lines.append(f"few test positives (AUROC intervals unreliable): {few}")
    if s["outside_root"]:
        lines.append(f"images outside the dataset root (data.allow_outside_root): "
                     f"{len(s['outside_root'])}")  # fmt: skip
        lines += [f"  {a} -> {b}" for a, b in s["outside_root"]]
    return "\n".join(lines)


def _label_text(m: Manifest, i: int) -> str:
    if m.multilabel:
        return "|".join(c for c, v in zip(m.classes, m.labels[i], strict=True) if v)
    return m.classes[int(m.labels[i])]


def write_manifest_csv(m: Manifest, path: str | os.PathLike[str]) -> Path:
    """Write ``manifest.csv``: ``id, path, label, split, patient_id`` per row, in id order
    (labels as class names, ``|``-joined when multi-label; ``patient_id`` empty when the task
    has none). It reads back with ``task=csv task.csv=<it> task.path_column=path``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "path", "label", "split", "patient_id"])
        for i in np.argsort(np.asarray(m.ids, dtype=str), kind="stable"):
            g = "" if m.groups is None else str(m.groups[i])
            w.writerow([m.ids[i], str(m.paths[i]), _label_text(m, i), m.split[i], g])
    os.replace(tmp, out)
    return out


def write_splits_csv(
    m: Manifest, path: str | os.PathLike[str], roles: dict[str, np.ndarray] | None = None
) -> Path:
    """Write a run's ``splits.csv``: ``id, split, patient_id, probe`` per row, in id order.

    Args:
        m: the manifest the run used.
        path: the file.
        roles: ``{"fit": rows, "val": rows, "test": rows}`` (row indices into ``m``): what the
            probe used each row for (``probe`` column; ``unused`` for rows a
            ``train_fraction`` < 1 left out). None: the column is empty.
    """
    role = np.full(len(m), "unused" if roles else "", dtype=object)
    for name, rows in (roles or {}).items():
        role[np.asarray(rows, dtype=np.int64)] = name
    out = Path(path)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "split", "patient_id", "probe"])
        for i in np.argsort(np.asarray(m.ids, dtype=str), kind="stable"):
            g = "" if m.groups is None else str(m.groups[i])
            w.writerow([m.ids[i], m.split[i], g, role[i]])
    os.replace(tmp, out)
    return out
