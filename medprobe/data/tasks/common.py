"""Helpers shared by the dataset adapters T1-T8 (``medprobe/data/tasks/t*.py``).

Every adapter turns a dataset *as its owners distribute it* into a :class:`Manifest`. The
pieces they share live here:

* :func:`task_root`: the dataset folder from ``task.root`` or ``data_root``.
* :class:`BadRows`: the ``task.on_bad_row`` policy. ``stop`` (default) raises one
  :class:`ManifestError` naming the file and row; ``skip`` leaves the row out and counts it by
  reason (the counts end up in ``results.json`` under ``task_info.skipped_rows``).
* :func:`read_csv`: a label CSV (plain or ``.gz``, UTF-8 with or without BOM) with required
  columns checked, rows numbered as a spreadsheet shows them (header = row 1).
* :func:`find_file`, :func:`find_dir`, :class:`NameIndex`, :class:`DirListing`: locating label
  files and images without assuming one exact top-level folder name.
* :func:`stratified_split` and :func:`make_manifest`: seeded, stratified, patient-level splits
  (:func:`medprobe.data.splits.assign_splits`) and the final overlap check
  (:func:`medprobe.data.splits.check_no_patient_overlap`).

Nothing here reads pixels; adapters only list paths (T2 and T8 write derived PNGs themselves).

Adapters read their config by attribute only (``task_cfg.root``, ``task_cfg.options.x``): it is
the task kind's schema (``medprobe.config.schema``, e.g. ``T5TaskConfig``), typed after compose
or still a DictConfig over that schema. Unknown keys and options, values outside a closed set
and defaults are the schema's business, settled at compose time; adapters hold no fallbacks.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medprobe.config.schema import PaperTaskConfig, RandomSplit
from medprobe.data.manifest import Manifest, ManifestError

#: File suffixes an adapter lists as images (what Pillow reads; DICOM is deliberately absent:
#: medprobe's loader does not read it, so Kaggle's ISIC 2020 ``train/*.dcm`` are never picked).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})

#: How many bad-row messages are kept as examples in ``info`` when rows are skipped.
MAX_EXAMPLES = 5

DOCS = "docs/tasks.md"


def task_root(cfg: PaperTaskConfig, data_root: str | os.PathLike[str] | None, task: str) -> Path:
    """The dataset root: ``task.root`` (which defaults to ``data_root``) or ``data_root``.

    Raises:
        ManifestError: neither is set, or the folder does not exist.
    """
    raw = cfg.root or data_root
    if not raw:
        raise ManifestError(
            f"task={task} needs the dataset folder: set data_root=/path/to/it "
            f"(or task.root=...); expected layout: {DOCS}#{task}"
        )
    root = Path(str(raw)).expanduser()
    if not root.is_dir():
        raise ManifestError(f"task={task}: dataset folder not found: {root}")
    return root


class BadRows:
    """The ``task.on_bad_row`` policy: stop on bad rows, or skip and count them.

    Args:
        policy: ``"stop"`` or ``"skip"``.
        collect: with ``stop``, record every bad row and raise once, listing them all, from
            :meth:`finish` (``task=csv``: fix every row in one go); without it (the paper
            adapters) the first bad row raises at once.

    Raises (from :meth:`__call__` with ``stop`` and not ``collect``):
        ManifestError: ``"<file>, row <n>: <message>"``.
    """

    #: bad rows listed in the error of :meth:`finish` (the counts by reason cover all)
    MAX_LISTED = 100

    def __init__(self, policy: str = "stop", *, collect: bool = False) -> None:
        if policy not in ("stop", "skip"):
            raise ManifestError(f"task.on_bad_row must be 'stop' or 'skip', got {policy!r}")
        self.policy = str(policy)  # OnBadRow.skip -> "skip"
        self.collect = collect
        self.counts: Counter[str] = Counter()
        self.examples: list[str] = []
        self.rows: list[str] = []  # every bad row's message (collect or skip)

    @classmethod
    def from_config(cls, cfg: PaperTaskConfig) -> BadRows:
        """The policy of ``task.on_bad_row``."""
        return cls(cfg.on_bad_row)

    def __call__(
        self, where: str | os.PathLike[str], row: int | str | None, message: str, reason: str
    ) -> None:
        """Report one bad row; returns under ``skip`` or ``collect`` (the caller then drops
        the row)."""
        loc = f"{where}, row {row}" if row is not None else str(where)
        text = f"{loc}: {message}"
        if self.policy == "stop" and not self.collect:
            raise ManifestError(
                f"{text} (set task.on_bad_row=skip to leave such rows out and count them)"
            )
        self.counts[reason] += 1
        self.rows.append(text)
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(text)

    def finish(self) -> None:
        """Under ``stop``, raise once if any row was bad, listing every one (up to
        :attr:`MAX_LISTED` lines; the counts by reason cover them all).

        Raises:
            ManifestError: ``"<n> bad row(s) (<reason> <k>, ...):"`` then one line per row,
                ``"<file>, row <n>: <message>"``.
        """
        if self.policy != "stop" or not self.rows:
            return
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        listed = self.rows[: self.MAX_LISTED]
        more = len(self.rows) - len(listed)
        tail = [f"  ... and {more} more (medprobe data ... task.on_bad_row=skip counts them)"]
        head = (
            f"{len(self.rows)} bad row(s) ({reasons}); fix them, or set task.on_bad_row=skip "
            "to leave them out and count them:"
        )
        lines = [head, *(f"  {r}" for r in listed), *(tail if more else [])]
        raise ManifestError("\n".join(lines))

    def info(self) -> dict[str, Any]:
        return {
            "on_bad_row": self.policy,
            "skipped_rows": dict(sorted(self.counts.items())),
            "skipped_examples": list(self.examples),
        }


def open_text(path: Path) -> io.TextIOBase:
    """Open a CSV as text: ``.gz`` transparently, UTF-8 with an optional BOM."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115


def read_header(path: Path, *, delimiter: str = ",") -> list[str]:
    """The header row of a label CSV (file closed again).

    Raises:
        ManifestError: as :func:`read_csv`.
    """
    if not path.is_file():
        raise ManifestError(f"label file not found: {path}")
    try:
        with open_text(path) as f:
            return [h.strip() for h in next(csv.reader(f, delimiter=delimiter), [])]
    except (UnicodeDecodeError, OSError, csv.Error) as e:
        raise ManifestError(f"{path}: cannot read as a UTF-8 CSV ({type(e).__name__}: {e})") from e


def read_csv(
    path: Path, required: Sequence[str], *, delimiter: str = ","
) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """Header and ``(row number, row dict)`` pairs of a label CSV (header is row 1).

    Cell values are stripped of surrounding whitespace; missing cells are ``""``.

    Raises:
        ManifestError: file missing, empty, not decodable as UTF-8, or a required column absent.
    """
    if not path.is_file():
        raise ManifestError(f"label file not found: {path}")
    try:
        f = open_text(path)
        reader = csv.reader(f, delimiter=delimiter)
        header = [h.strip() for h in next(reader, [])]
    except (UnicodeDecodeError, OSError, csv.Error) as e:
        raise ManifestError(f"{path}: cannot read as a UTF-8 CSV ({type(e).__name__}: {e})") from e
    if not header:
        f.close()
        raise ManifestError(f"{path}: empty file (no header row)")
    twice = [c for c in required if header.count(c) > 1]
    if twice:  # the row dict would silently keep the last of them
        f.close()
        raise ManifestError(
            f"{path}: column {twice[0]!r} appears {header.count(twice[0])} times in the header; "
            "keep one"
        )
    missing = [c for c in required if c not in header]
    if missing:
        f.close()
        raise ManifestError(
            f"{path}: missing column(s) {', '.join(repr(c) for c in missing)} "
            f"(columns: {', '.join(header)})"
        )

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        with f:
            try:
                for n, values in enumerate(reader, start=2):
                    if not values or all(not v.strip() for v in values):
                        continue  # blank line
                    if len(values) > len(header):
                        raise ManifestError(
                            f"{path}, row {n}: {len(values)} cells but {len(header)} columns"
                        )
                    values = values + [""] * (len(header) - len(values))
                    yield n, {h: v.strip() for h, v in zip(header, values, strict=True)}
            except (UnicodeDecodeError, csv.Error) as e:
                raise ManifestError(f"{path}, row {reader.line_num}: unreadable ({e})") from e

    return header, rows()


def walk_dirs(root: Path, max_depth: int | None) -> Iterator[tuple[Path, list[str], list[str]]]:
    """os.walk below ``root`` skipping hidden folders (``.medprobe`` holds derived files)."""
    base_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        d = Path(dirpath)
        dirnames[:] = sorted(x for x in dirnames if not x.startswith("."))
        if max_depth is not None and len(d.parts) - base_depth >= max_depth:
            dirnames[:] = []
        yield d, dirnames, sorted(filenames)


def find_file(root: Path, names: Sequence[str], task: str, *, max_depth: int = 4) -> Path:
    """The first of ``names`` found under ``root`` (directly, else anywhere ``max_depth`` deep).

    Among several matches of one name the shallowest, then alphabetically first, path wins.

    Raises:
        ManifestError: none of the names exists there.
    """
    for n in names:
        if (root / n).is_file():
            return root / n
    wanted = {n: i for i, n in enumerate(names)}
    best: tuple[int, int, str, Path] | None = None
    for d, _, files in walk_dirs(root, max_depth):
        for fn in files:
            if fn in wanted:
                p = d / fn
                key = (wanted[fn], len(p.parts), str(p), p)
                if best is None or key[:3] < best[:3]:
                    best = key
    if best is None:
        raise ManifestError(
            f"task={task}: none of {', '.join(names)} found under {root} "
            f"(expected layout: {DOCS}#{task})"
        )
    return best[3]


def find_optional(root: Path, names: Sequence[str], *, max_depth: int = 4) -> Path | None:
    """Like :func:`find_file` but ``None`` when nothing matches."""
    try:
        return find_file(root, names, "", max_depth=max_depth)
    except ManifestError:
        return None


def find_dir(root: Path, names: Sequence[str], *, max_depth: int = 3) -> Path | None:
    """The first folder named one of ``names`` under ``root`` (shallowest first), or None."""
    for n in names:
        if (root / n).is_dir():
            return root / n
    for d, dirnames, _ in walk_dirs(root, max_depth):
        for n in names:
            if n in dirnames:
                return d / n
    return None


class NameIndex:
    """Image files under a folder, found by file stem (``ISIC_0024306`` -> its ``.jpg``).

    Datasets ship images split over several folders (HAM10000 ``part_1``/``part_2``, AIROGS
    ``0``-``5``); some mirrors hold the same file twice (Kaggle's HAM10000 has upper- and
    lower-case copies of both folders). A stem found more than once resolves to the
    alphabetically first relative path; :attr:`duplicates` counts such stems. Hidden folders
    are skipped.
    """

    def __init__(self, root: Path, *, suffixes: Iterable[str] = IMAGE_SUFFIXES) -> None:
        self.root = root
        sfx = {s.lower() for s in suffixes}
        by_stem: dict[str, list[str]] = {}
        by_name: dict[str, list[str]] = {}
        for d, _, files in walk_dirs(root, None):
            for fn in files:
                p = Path(fn)
                if p.suffix.lower() in sfx and not fn.startswith("."):
                    rel = (d / fn).relative_to(root).as_posix()
                    by_stem.setdefault(p.stem, []).append(rel)
                    by_name.setdefault(fn, []).append(rel)
        self._stem = {k: sorted(v)[0] for k, v in by_stem.items()}
        self._name = {k: sorted(v)[0] for k, v in by_name.items()}
        self.duplicates = sum(1 for v in by_stem.values() if len(v) > 1)

    def get(self, name: str) -> str | None:
        """Relative path of the image whose stem (or full name) is ``name``; None if absent."""
        return self._name.get(name) or self._stem.get(name)

    def __len__(self) -> int:
        return len(self._stem)


class DirListing:
    """Fast existence checks for many files: one ``listdir`` per folder, cached."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._dirs: dict[str, frozenset[str]] = {}

    def _names(self, rel_dir: str) -> frozenset[str]:
        names = self._dirs.get(rel_dir)
        if names is None:
            try:
                names = frozenset(os.listdir(self.root / rel_dir))
            except OSError:
                names = frozenset()
            self._dirs[rel_dir] = names
        return names

    def exists(self, rel: str) -> bool:
        parent, _, name = rel.rpartition("/")
        return name in self._names(parent)

    def with_stem(self, rel_dir: str, stem: str, suffixes: Sequence[str]) -> str | None:
        """``rel_dir/stem<suffix>`` for the first suffix present, else None."""
        names = self._names(rel_dir)
        for s in suffixes:
            if stem + s in names:
                return f"{rel_dir}/{stem}{s}" if rel_dir else stem + s
        return None


def stratified_split(
    strata: Sequence[Any] | np.ndarray,
    groups: Sequence[str] | np.ndarray | None,
    cfg: RandomSplit,
    *,
    ids: Sequence[str] | None = None,
) -> tuple[np.ndarray, str]:
    """Seeded, stratified, patient-level split with the config's fractions.

    Args:
        strata: (n,) class labels or strings (e.g. ``"Breast|malignant"``), or (n, K) multi-hot.
        groups: (n,) patient ids or None; "" = unknown (own group).
        cfg: task config with ``val_fraction``, ``test_fraction``, ``split_seed`` (their
            per-task defaults: ``medprobe.config.schema``).
        ids: (n,) example ids: the split is then independent of the rows' order (issue 16.5;
            :func:`medprobe.data.splits.assign_splits`). None: the row order, as before.

    Returns:
        ``(split, description)``: (n,) object array of train/val/test and a one-line
        description for ``info["split_source"]``.
    """
    from medprobe.data.splits import assign_splits

    val, test, seed = float(cfg.val_fraction), float(cfg.test_fraction), int(cfg.split_seed)
    try:
        split = assign_splits(
            np.asarray(strata),
            None if groups is None else np.asarray(groups, dtype=object),
            val_fraction=val,
            test_fraction=test,
            seed=seed,
            ids=ids,
        )
    except ValueError as e:
        raise ManifestError(f"cannot split: {e}") from None
    kind = "patient-level " if groups is not None else ""
    return np.asarray(split, dtype=object), (
        f"stratified {kind}split (medprobe.data.splits.assign_splits) "
        f"val={val} test={test} seed={seed}"
    )


def no_rows_message(
    task: str, root: Path, info: Mapping[str, Any], where: str | os.PathLike[str] = ""
) -> str:
    """One line for a task whose label files left no row: the file read and, from ``info``,
    the rows each rule left out (``skipped_rows``, ``dropped_*`` counts), never the whole
    ``info`` dict (it used to be printed as a Python repr)."""
    why = [
        f"{k}: {v}"
        for k, v in info.items()
        if v and (k == "skipped_rows" or k.startswith("dropped"))
    ]
    read = f" ({where})" if where else ""
    detail = "; ".join(why) if why else "the label file lists no images"
    return f"task={task}: no usable rows under {root}{read}: {detail}"


def make_manifest(
    task: str,
    root: Path,
    rows: Sequence[tuple[str, Path]],
    labels: np.ndarray,
    classes: Sequence[str],
    split: Sequence[str] | np.ndarray,
    groups: Sequence[str] | np.ndarray | None,
    info: dict[str, Any],
    *,
    multilabel: bool = False,
    where: str | os.PathLike[str] = "",
) -> Manifest:
    """Build the manifest, check that no patient is on two sides, add counts to ``info``.

    Args:
        rows: (id, absolute path) per example; ids are paths relative to the dataset root.
        labels: (n,) int64 class indices, or (n, K) uint8 multi-hot.
        info: adapter facts (source, split_source, dropped counts ...); ``n_rows`` and
            ``counts`` (examples per split and class) are added.
        classes: the adapter's class order (fixed by the dataset; the paper tasks' schemas
            have no ``classes`` key, so config cannot relabel columns).

    Raises:
        ManifestError: no rows, or a patient in two splits (naming the file ``where``).
    """
    from medprobe.data.splits import check_no_patient_overlap

    if not rows:
        raise ManifestError(no_rows_message(task, root, info, where))
    split_arr = np.asarray(split, dtype=object)
    group_arr = None if groups is None else np.asarray(groups, dtype=object)
    if group_arr is not None:
        try:
            check_no_patient_overlap(split_arr, group_arr)
        except ValueError as e:
            raise ManifestError(f"{where or root}: {e}") from None
    m = Manifest(
        task=task,
        ids=[r[0] for r in rows],
        paths=[r[1] for r in rows],
        labels=labels,
        classes=list(classes),
        split=split_arr,
        groups=group_arr,
        multilabel=multilabel,
        info=info,
    )
    info.setdefault("grouped", group_arr is not None)
    info["root"] = str(root)
    info["n_rows"] = len(m)
    info["counts"] = m.counts()
    return m
