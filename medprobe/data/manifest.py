"""The manifest: what a task adapter hands to the rest of the pipeline.

One row per image: id (the image path relative to the dataset root — never the base name,
since real datasets reuse base names across folders), absolute path, label(s), patient id and
split. Plain arrays, no torch. Images that are not files (rows of a Hugging Face dataset,
``task=hf``) come with an image source (:mod:`medprobe.data.sources`) that reads them by the
``paths`` entries, which are then locators, not files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medprobe.errors import ManifestError  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from medprobe.data.sources import ImageSource

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class AutoSplit:
    """How an automatic split was made, so that it can be made again on fewer rows.

    A task whose split medprobe makes (``task=csv`` without a split column, ``task=hf``
    without one) records it on its manifest; images left out by ``data.on_error=skip`` are
    then removed *before* the split (:func:`medprobe.data.check.resplit`), so that the class
    coverage checks see the rows that will be used. The split itself is
    :func:`medprobe.data.splits.assign_splits` on (ids, groups, labels, seed): independent
    of the order of the rows.
    """

    val_fraction: float
    test_fraction: float
    seed: int


@dataclass
class Manifest:
    """A task's examples.

    Attributes:
        task: task name.
        ids: (n,) unique example ids (relative paths; ``task=hf``: ``<split>/<row>``).
        paths: (n,) absolute image paths, or the ``source``'s locators when it is set.
        labels: (n,) int64 class indices in ``[0, K)``, or (n, K) uint8 multi-hot if multilabel.
        classes: K class (or finding) names.
        split: (n,) str array of ``"train" | "val" | "test"``; a task without val rows gets its
            probe validation split carved from train by the probe.
        groups: (n,) str patient ids ("" = unknown, treated as its own group) or None.
        multilabel: whether ``labels`` is multi-hot.
        info: free-form facts recorded in results (source, licence, counts dropped ...).
        source: where the images come from when they are not the files ``paths``
            (:mod:`medprobe.data.sources`); None = files. :attr:`images` is never None.
        auto_split: the parameters of the split when medprobe made it (None when the split
            is the dataset's own): :class:`AutoSplit`.
    """

    task: str
    ids: list[str]
    paths: list[Path]
    labels: np.ndarray
    classes: list[str]
    split: np.ndarray
    groups: np.ndarray | None = None
    multilabel: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    source: ImageSource | None = None

    @property
    def images(self) -> ImageSource:
        """The image source: :attr:`source`, else the files (:data:`medprobe.data.sources.FILES`)."""
        from medprobe.data.sources import FILES

        return FILES if self.source is None else self.source

    auto_split: AutoSplit | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        if len(self.paths) != n or len(self.labels) != n or len(self.split) != n:
            raise ManifestError(f"{self.task}: manifest columns have different lengths")
        if self.groups is not None and len(self.groups) != n:
            raise ManifestError(f"{self.task}: groups length {len(self.groups)} != {n}")
        if len(set(self.ids)) != n:
            seen: set[str] = set()
            dup = next(i for i in self.ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise ManifestError(f"{self.task}: duplicate example id {dup!r}")
        bad = set(np.unique(self.split)) - set(SPLITS)
        if bad:
            raise ManifestError(f"{self.task}: unknown split values {sorted(bad)}; use {SPLITS}")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, keep: np.ndarray) -> Manifest:
        """Rows where the boolean mask or index array ``keep`` selects."""
        idx = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep)
        return Manifest(
            task=self.task,
            ids=[self.ids[i] for i in idx],
            paths=[self.paths[i] for i in idx],
            labels=self.labels[idx],
            classes=list(self.classes),
            split=self.split[idx],
            groups=None if self.groups is None else self.groups[idx],
            multilabel=self.multilabel,
            info=dict(self.info),
            source=self.source,
            auto_split=self.auto_split,
        )

    def sorted_by_id(self) -> Manifest:
        """The same rows in id order: the canonical order (issue 16.5), so that everything
        computed from the manifest (split, probe rows, cache key) is independent of the order
        of the rows in the label file."""
        return self.subset(np.argsort(np.asarray(self.ids, dtype=str), kind="stable"))

    def counts(self) -> dict[str, dict[str, int]]:
        """Per split, per class example counts (positives per finding if multi-label)."""
        out: dict[str, dict[str, int]] = {}
        for s in SPLITS:
            m = self.split == s
            if not m.any():
                continue
            if self.multilabel:
                c = self.labels[m].sum(axis=0)
            else:
                c = np.bincount(self.labels[m], minlength=len(self.classes))
            out[s] = {name: int(v) for name, v in zip(self.classes, c, strict=True)}
        return out

    def image_digests(self, mode: str = "content", workers: int = 4) -> list[str]:
        """One digest per image, in row order: the per-image part of :meth:`image_fingerprint`.

        Args:
            mode: ``"content"``: hex sha256 of the file's bytes (:func:`medprobe.hashing.
                image_digest`, memoised per process); ``"stat"``: ``"<size>:<mtime ns>"``
                (:func:`medprobe.hashing.stat_digest`). A missing or unreadable file gives the
                marker ``"missing"`` / ``"unreadable"``. Images of a :attr:`source` are
                digested by it (``task=hf``: ``content`` = sha256 of each row's encoded bytes,
                the same digest a file with those bytes gets; ``stat`` = the dataset's
                fingerprint of the row's split, the row being in the id).
            workers: threads reading files in ``"content"`` mode.

        Raises:
            ValueError: unknown ``mode``.
        """
        if mode not in ("content", "stat"):
            raise ValueError(f"data.fingerprint must be content or stat, got {mode!r}")
        return self.images.digests([str(p) for p in self.paths], mode, workers)

    def image_fingerprint(
        self, mode: str = "content", workers: int = 4, digests: list[str] | None = None
    ) -> str:
        """sha256 over every image: the manifest part of the feature-cache key.

        Args:
            mode: ``"content"`` (default) hashes every byte of every file, so an image rewritten
                with the same size and modification time (``cp -p``, ``rsync -a``) still
                misses the cache; digests are memoised per process by (path, size, mtime,
                ctime, inode), so the jobs of one multirun read each file once. ``"stat"`` uses only
                (id, size, mtime): instant on huge datasets, but trusts file metadata.
            workers: threads reading files in ``"content"`` mode.
            digests: :meth:`image_digests` of the same ``mode``, if already computed.

        Labels and splits are left out on purpose: they do not change features. A missing
        file contributes a marker (it is reported by the image scan, not here). Images of a
        :attr:`source` are digested by it (:meth:`image_digests`).

        Raises:
            ValueError: unknown ``mode``; ``digests`` of the wrong length.
        """
        if digests is None:
            digests = self.image_digests(mode, workers)
        elif mode not in ("content", "stat"):
            raise ValueError(f"data.fingerprint must be content or stat, got {mode!r}")
        from medprobe.data.sources import fingerprint

        return fingerprint(self.ids, digests, mode)
