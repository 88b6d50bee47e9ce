"""Which rows of a manifest the probe fits, selects C on, and is tested on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medprobe.data.manifest import Manifest
from medprobe.errors import ConfigError


@dataclass(frozen=True)
class ProbeRows:
    """Row indices (int64, sorted) into a manifest.

    Attributes:
        fit: rows the probe is fitted on (the training split, or its ``train_fraction``
            subsample, minus carved validation rows).
        val: rows C is chosen on (the task's val split, or carved from train, patient-level).
        test: the test split; never used to choose anything.
        val_source: where ``val`` came from, for results.json.
    """

    fit: np.ndarray
    val: np.ndarray
    test: np.ndarray
    val_source: str


def probe_rows(m: Manifest, val_fraction: float, train_fraction: float, seed: int) -> ProbeRows:
    """(fit, val, test) rows; val carved from train (patient-level) when the task has none.

    Args:
        m: the manifest.
        val_fraction: share of train carved for validation when the task has no val split
            (``probe.val_fraction``).
        train_fraction: stratified, seeded share of the fit rows kept (``train_fraction``).
        seed: seeds the carving and the subsample.

    Raises:
        ConfigError: no train or no test rows, or a split on which the metrics would be made up
            (:func:`check_class_coverage`).
    """
    from medprobe.data.splits import carve_validation, subsample_train

    train = np.flatnonzero(m.split == "train")
    test = np.flatnonzero(m.split == "test")
    val = np.flatnonzero(m.split == "val")
    if len(train) == 0 or len(test) == 0:
        raise ConfigError(f"task {m.task}: needs train and test rows (got {m.counts()})")
    if len(val):
        fit, source = train, "task val split"
    else:
        fit, val = carve_validation(m.labels, m.groups, train, float(val_fraction), int(seed))
        source = f"carved from train (probe.val_fraction={val_fraction})"
    if float(train_fraction) < 1.0:
        fit = subsample_train(m.labels, fit, float(train_fraction), int(seed))
    check_class_coverage(m, fit, test)
    return ProbeRows(np.sort(fit), np.sort(val), test, source)


def check_class_coverage(m: Manifest, fit: np.ndarray, test: np.ndarray) -> None:
    """Refuse splits on which the metrics would be made up (one line naming the classes).

    A class present in test but absent from the probe's training rows would get a constant
    score (AUROC 0.5 by construction), and a multiclass test set with a single class has no
    AUROC at all.

    Raises:
        ConfigError: naming the task and the classes.
    """
    if m.multilabel:
        in_test = m.labels[test].sum(axis=0) > 0
        in_fit = m.labels[fit].sum(axis=0) > 0
    else:
        in_test = np.bincount(m.labels[test], minlength=len(m.classes)) > 0
        in_fit = np.bincount(m.labels[fit], minlength=len(m.classes)) > 0
        if in_test.sum() < 2:
            only = [c for c, t in zip(m.classes, in_test, strict=True) if t]
            raise ConfigError(
                f"task {m.task}: the test split holds a single class {only}; "
                "AUROC and F1 need at least two"
            )
    untrained = [c for c, t, f in zip(m.classes, in_test, in_fit, strict=True) if t and not f]
    if untrained:
        raise ConfigError(
            f"task {m.task}: {', '.join(map(repr, untrained))} occur in the test split but not in "
            "the probe's training rows, so the probe cannot score them; fix the split or the "
            "labels"
        )
