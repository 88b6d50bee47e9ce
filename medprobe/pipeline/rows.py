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
        fit: rows the probe is fitted on (the training split minus carved validation rows,
            subsampled by ``train_fraction``: see :func:`probe_rows`).
        val: rows C is chosen on (the task's val split, or carved from train, patient-level).
        test: the test split; never used to choose anything.
        val_source: where ``val`` came from, for results.json.
    """

    fit: np.ndarray
    val: np.ndarray
    test: np.ndarray
    val_source: str


def probe_rows(
    m: Manifest,
    val_fraction: float,
    train_fraction: float,
    seed: int,
    *,
    fraction_of: str = "pool",
) -> ProbeRows:
    """(fit, val, test) rows; val carved from train (patient-level) when the task has none.

    The label budget (issue 13): with ``fraction_of="pool"`` (default) ``train_fraction`` is a
    fraction of the labelled pool, the fit AND validation rows, so a ``train_fraction=0.1``
    run uses about 10% of the labelled rows in total: a task with a val split keeps a
    stratified ``train_fraction`` of its train rows and of its val rows; a task without one
    keeps a stratified ``train_fraction`` of its train rows and carves the validation rows
    from those. ``fraction_of="fit"`` is the behaviour before issue 13: validation rows in
    full (the task's val split, or carved from all train rows), only the fit rows subsampled.
    Subsamples are :func:`medprobe.data.splits.subsample_train` (every class keeps at least
    one row; nested across fractions for one seed). Carving and subsampling take the rows in
    id order (``ids=m.ids``), so the rows do not depend on the manifest's row order.

    Args:
        m: the manifest.
        val_fraction: share of train carved for validation when the task has no val split
            (``probe.val_fraction``).
        train_fraction: stratified, seeded share kept (``train_fraction``), in (0, 1].
        seed: seeds the carving and the subsample.
        fraction_of: ``"pool"`` or ``"fit"`` (``probe.fraction_of``).

    Raises:
        ConfigError: no train or no test rows, an unknown ``fraction_of``, or a split on which
            the metrics would be made up (:func:`check_class_coverage`).
    """
    from medprobe.data.splits import carve_validation, subsample_train

    fraction_of = str(fraction_of)
    if fraction_of not in ("pool", "fit"):
        raise ConfigError(f"probe.fraction_of must be pool or fit; got {fraction_of!r}")
    train = np.flatnonzero(m.split == "train")
    test = np.flatnonzero(m.split == "test")
    val = np.flatnonzero(m.split == "val")
    if len(train) == 0 or len(test) == 0:
        raise ConfigError(f"task {m.task}: needs train and test rows (got {m.counts()})")
    f = float(train_fraction)
    pool = fraction_of == "pool" and f < 1.0
    if pool:
        train = subsample_train(m.labels, train, f, int(seed), ids=m.ids)
        if len(val):
            val = subsample_train(m.labels, val, f, int(seed), ids=m.ids)
    if len(val):
        fit, source = train, "task val split"
    else:
        fit, val = carve_validation(
            m.labels, m.groups, train, float(val_fraction), int(seed), ids=m.ids
        )
        source = f"carved from train (probe.val_fraction={val_fraction})"
    if pool:
        source += f", train_fraction={f:g} of the labelled pool"
    elif f < 1.0:
        fit = subsample_train(m.labels, fit, f, int(seed), ids=m.ids)
    check_class_coverage(m, fit, test)
    return ProbeRows(np.sort(fit), np.sort(val), test, source)


def check_class_coverage(m: Manifest, fit: np.ndarray, test: np.ndarray) -> None:
    """Refuse splits on which the metrics would be made up (one line naming the classes).

    * multiclass: the test split holds two classes or more (one class has no AUROC), and so
      do the probe's fit rows (a probe cannot learn from one class);
    * multi-label: at least one finding has positives and negatives in the test split (the
      others are left out of the macro averages, :func:`medprobe.stats.evaluate`), and every
      finding positive in the fit rows is also negative there (else it cannot be fitted);
    * every class (finding) present in test is present in the fit rows: otherwise it gets a
      constant score (AUROC 0.5 by construction).

    Raises:
        ConfigError: naming the task and the classes.
    """
    if m.multilabel:
        y_test, y_fit = m.labels[test].astype(bool), m.labels[fit].astype(bool)
        in_test, in_fit = y_test.any(axis=0), y_fit.any(axis=0)
        scorable = in_test & ~y_test.all(axis=0)
        if not scorable.any():
            raise ConfigError(
                f"task {m.task}: no finding has both positive and negative rows in the test "
                "split, so no AUROC is defined"
            )
        always = [c for c, a in zip(m.classes, y_fit.all(axis=0), strict=True) if a]
        if always:
            raise ConfigError(
                f"task {m.task}: {', '.join(map(repr, always))} positive on every one of the "
                "probe's training rows, so no probe can be fitted for it; fix the split or the "
                "labels"
            )
    else:
        in_test = np.bincount(m.labels[test], minlength=len(m.classes)) > 0
        in_fit = np.bincount(m.labels[fit], minlength=len(m.classes)) > 0
        if in_test.sum() < 2:
            only = [c for c, t in zip(m.classes, in_test, strict=True) if t]
            raise ConfigError(
                f"task {m.task}: the test split holds a single class {only}; "
                "AUROC and F1 need at least two"
            )
        if in_fit.sum() < 2:
            only = [c for c, t in zip(m.classes, in_fit, strict=True) if t]
            raise ConfigError(
                f"task {m.task}: the probe's training rows hold a single class {only}; a "
                "probe needs at least two"
            )
    untrained = [c for c, t, f in zip(m.classes, in_test, in_fit, strict=True) if t and not f]
    if untrained:
        raise ConfigError(
            f"task {m.task}: {', '.join(map(repr, untrained))} occur in the test split but not in "
            "the probe's training rows, so the probe cannot score them; fix the split or the "
            "labels"
        )


def bootstrap_groups(m: Manifest, unit: str) -> np.ndarray | None:
    """The resampling groups of ``bootstrap.unit`` for this manifest (all rows), or None.

    ``auto``: the manifest's patient ids where it has them (T3-T8, ``task=csv`` with
    ``patient_id``), else None (images: T1, T2, demo). ``image``: None. ``patient``: the ids;
    an error where the task has none. Empty ids (``""``, unknown patient) are each their own
    group: :func:`medprobe.auroc_ci.group_index` treats equal strings as one patient, so they
    become ``"(no patient id) <example id>"``.

    Raises:
        ConfigError: ``unit=patient`` on a task without patient ids, or an unknown unit.
    """
    unit = str(unit)
    if unit not in ("auto", "image", "patient"):
        raise ConfigError(f"bootstrap.unit must be auto, image or patient; got {unit!r}")
    if unit == "image" or (unit == "auto" and m.groups is None):
        return None
    if m.groups is None:
        raise ConfigError(
            f"bootstrap.unit=patient but task {m.task} has no patient ids; use "
            "bootstrap.unit=auto or image"
        )
    g = np.asarray(m.groups).astype(str)
    unknown = g == ""
    if unknown.any():
        g = g.astype(object)
        g[unknown] = [f"(no patient id) {m.ids[i]}" for i in np.flatnonzero(unknown)]
        g = g.astype(str)
    return g
