"""Patient-level, stratified splits: train/val/test, the probe's validation carve, subsamples.

Rules (and why):

* **No patient on two sides.** Images of one patient (or one lesion, one subject) are strongly
  correlated; a patient in train and test inflates every metric. All splitting here moves whole
  groups. Rows whose group id is missing (``None``, NaN, empty or blank string) are each their
  own group: the dataset gives no way to tie them to another row (CRC-VAL-HE-7K tiles, for
  example, have no patient id). Ids are compared by ``str()`` after mapping integral floats to
  ints, so ``7``, ``"7"`` and ``7.0`` (an int column read with missing values) are one patient.
* **Stratified.** Each split gets each class in (as nearly as whole groups allow) the overall
  proportions. Multi-label rows (multi-hot ``(n, K)``) are stratified on their *rarest* positive
  label (rarest by count among the rows being split; ties go to the lower column), the usual
  reduction for iterative stratification (Sechidis et al., ECML-PKDD 2011): the rare findings are
  the ones that vanish from a split otherwise. Rows with no positive label form their own stratum
  ("none").
* **Sizes.** Integer per-split, per-class targets are made by controlled rounding of
  ``fraction * class count`` (column sums exact, per-split totals apportioned by largest
  remainder); groups are then placed largest first (seeded random order among equal sizes),
  each into the split where it most reduces the per-class shortfall, ties going to the split
  furthest below its total target. With one row per group the targets are met exactly (split
  sizes within one row of ``fraction * n``); with larger groups, within about one group.
* **Deterministic.** Everything random draws from ``numpy.random.default_rng(seed)``.
* **Independent of row order** (issue 16.5). Given the example ids (``ids=``), every function
  here first puts the rows in id order, so the result is a function of (ids, groups, labels,
  seed) only: the same ``labels.csv`` with its rows shuffled gives the same split. Rows already
  in id order give exactly what they gave before ids were taken into account. Without ``ids``
  the row order stands in for them (callers that have ids pass them).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "SPLIT_NAMES",
    "assign_splits",
    "carve_validation",
    "check_no_patient_overlap",
    "subsample_train",
]

SPLIT_NAMES: tuple[str, str, str] = ("train", "val", "test")


def assign_splits(
    y: Any,
    groups: Any | None,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    ids: Any | None = None,
) -> np.ndarray:
    """Stratified, patient-level train/val/test assignment.

    Args:
        y: (n,) class labels (int or str), or (n, K) multi-hot (0/1 or bool) for multi-label,
            stratified on each row's rarest positive label ("none" when it has none). An (n, 1)
            array is read as (n,) class labels (PathMNIST ships its labels that way).
        groups: (n,) patient ids, or None (every row its own group). Missing ids (None, NaN,
            "" or blank) make that row its own group.
        val_fraction: target fraction of rows in "val", in [0, 1); 0 -> no val rows.
        test_fraction: target fraction of rows in "test", in [0, 1).
        seed: RNG seed; the same inputs and seed give the same split.
        ids: (n,) unique example ids (str); rows are taken in id order, so the split does not
            depend on the order of the rows. None: the row order.

    Returns:
        (n,) array of str (dtype ``<U5``), each "train", "val" or "test", in the input's row
        order. No group is on two sides; per-class proportions follow the fractions as nearly
        as whole groups allow.

    Raises:
        ValueError: fractions out of range or summing to >= 1; y, groups or ids of the wrong
            shape or length; duplicate ids; multi-hot y with values other than 0/1; n == 0.
    """
    fractions = _check_fractions(val_fraction, test_fraction)
    strata = _strata(y)
    n = strata.shape[0]
    if n == 0:
        raise ValueError("cannot split an empty dataset (y has 0 rows)")
    order = _id_order(ids, n)
    g = None if groups is None else _object_1d(groups, n)[order]
    gcodes = _group_codes(g, n)
    placed = _stratified_group_assign(strata[order], gcodes, fractions, np.random.default_rng(seed))
    idx = np.empty(n, dtype=np.int64)
    idx[order] = placed
    return np.asarray(SPLIT_NAMES)[idx]


def check_no_patient_overlap(split: Any, groups: Any | None) -> None:
    """Fail when any patient has rows in two different splits.

    Args:
        split: (n,) split names (any strings, e.g. "train"/"val"/"test").
        groups: (n,) patient ids, or None (nothing to check). Missing ids (None, NaN, "" or
            blank) are each their own group and never overlap.

    Raises:
        ValueError: naming one shared patient id (the first, in row order) and two of the splits
            it is in, e.g. ``patient '9290697' is in both 'train' and 'test'``; or when split and
            groups differ in length.
    """
    if groups is None:
        return
    split_arr = np.asarray(split, dtype=object).ravel()
    g = np.asarray(groups, dtype=object)
    if g.ndim != 1 or g.shape[0] != split_arr.shape[0]:
        raise ValueError(
            f"split and groups must be 1-D of equal length, got {split_arr.shape} and {g.shape}"
        )
    first: dict[str, tuple[Any, str]] = {}
    for raw, s in zip(g, split_arr, strict=True):
        key = _group_key(raw)
        if key is None:
            continue
        seen = first.setdefault(key, (raw, str(s)))
        if seen[1] != str(s):
            a, b = sorted((seen[1], str(s)), key=_split_order)
            raise ValueError(f"patient {seen[0]!r} is in both {a!r} and {b!r}")


def carve_validation(
    y: Any,
    groups: Any | None,
    train_idx: Any,
    val_fraction: float,
    seed: int,
    ids: Any | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split the train rows into the probe's fit and validation parts (stratified, grouped).

    The validation part is used to choose the probe's regularisation C; it is taken from the
    train rows only, so test rows are never looked at (DESIGN: hyper-parameters on validation
    data carved from train, never on test).

    Args:
        y: (n,) class labels or (n, K) multi-hot for ALL rows (as in :func:`assign_splits`).
        groups: (n,) patient ids for all rows, or None.
        train_idx: (m,) integer indices into y of the train rows (unique).
        val_fraction: target fraction of the train rows for validation, in [0, 1); 0 -> empty.
        seed: RNG seed.
        ids: (n,) unique example ids of ALL rows: the rows are taken in id order (see
            :func:`assign_splits`). None: the row order.

    Returns:
        ``(fit_idx, val_idx)``: sorted int64 arrays partitioning ``train_idx``; no group in both.

    Raises:
        ValueError: val_fraction out of range, train_idx empty / not unique / out of range, or
            the shapes of y and groups disagree.
    """
    if not (0.0 <= val_fraction < 1.0):
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    strata_all = _label_array(y)
    n = strata_all.shape[0]
    tidx = _check_indices(train_idx, n, "train_idx")
    if tidx.size == 0:
        raise ValueError("train_idx is empty")
    order = _id_order(ids, n)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    g = None if groups is None else _object_1d(groups, n)[order]
    # every row in id order: tidx becomes positions in that order (sorted: one canonical input)
    pos = np.sort(rank[tidx])
    strata = _strata(strata_all[order][pos])
    gcodes = _group_codes(g, n)[pos]
    fractions = np.array([1.0 - val_fraction, val_fraction])
    side = _stratified_group_assign(strata, gcodes, fractions, np.random.default_rng(seed))
    rows = order[pos]
    return np.sort(rows[side == 0]), np.sort(rows[side == 1])


def subsample_train(
    y: Any, idx: Any, fraction: float, seed: int, ids: Any | None = None
) -> np.ndarray:
    """Stratified, seeded, nested subsample of train indices (training-fraction sweep).

    Per class (for multi-label: per rarest positive label among ``idx``, as in
    :func:`assign_splits`) with ``n_k`` rows, ``max(1, floor(fraction * n_k + 0.5))`` rows are
    kept, so every class present in ``idx`` keeps at least one example (a probe cannot learn a
    class it never sees, and per-class AUC needs it). The kept rows are a prefix of a seeded
    per-class permutation that does not depend on ``fraction``, so for one seed a smaller
    fraction's subsample is a subset of a larger one's (nested sweep).

    Args:
        y: (n,) class labels or (n, K) multi-hot for all rows.
        idx: (m,) unique integer indices into y (the train rows).
        fraction: in (0, 1]; 1.0 returns ``idx`` unchanged (sorted).
        seed: RNG seed.
        ids: (n,) unique example ids of all rows; rows are taken in id order (see
            :func:`assign_splits`). None: the row order.

    Returns:
        Sorted int64 array, a subset of ``idx``.

    Raises:
        ValueError: fraction outside (0, 1] (or NaN); idx not unique or out of range.
    """
    if not (isinstance(fraction, int | float | np.floating) and 0.0 < fraction <= 1.0):
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    labels = _label_array(y)
    tidx = _check_indices(idx, labels.shape[0], "idx")
    if fraction == 1.0 or tidx.size == 0:
        return np.sort(tidx)
    strata = _strata(labels[tidx])
    # Sort first (by id, else by row) so the result does not depend on the order of the rows.
    rank = np.empty(labels.shape[0], dtype=np.int64)
    rank[_id_order(ids, labels.shape[0])] = np.arange(labels.shape[0])
    order = np.argsort(rank[tidx], kind="stable")
    tidx, strata = tidx[order], strata[order]
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    for k in range(int(strata.max()) + 1):  # strata in a fixed order: one stream per seed
        members = tidx[strata == k]
        if members.size == 0:
            continue
        perm = rng.permutation(members.size)
        m = max(1, math.floor(fraction * members.size + 0.5))
        keep.append(members[perm[:m]])
    return np.sort(np.concatenate(keep))


# ---------------------------------------------------------------------------------------------
# helpers


def _split_order(name: str) -> tuple[int, str]:
    return (SPLIT_NAMES.index(name) if name in SPLIT_NAMES else len(SPLIT_NAMES), name)


def _check_fractions(val_fraction: float, test_fraction: float) -> np.ndarray:
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (0.0 <= f < 1.0):
            raise ValueError(f"{name} must be in [0, 1), got {f}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}"
        )
    return np.array([1.0 - val_fraction - test_fraction, val_fraction, test_fraction])


def _id_order(ids: Any | None, n: int) -> np.ndarray:
    """(n,) int64 permutation putting the rows in id order (identity when ids is None)."""
    if ids is None:
        return np.arange(n, dtype=np.int64)
    a = np.asarray([str(i) for i in ids], dtype=str)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"ids must have shape ({n},), got {a.shape}")
    order = np.argsort(a, kind="stable").astype(np.int64)
    if n > 1 and (a[order][1:] == a[order][:-1]).any():
        raise ValueError("ids contain duplicates")
    return order


def _object_1d(groups: Any, n: int) -> np.ndarray:
    g = np.asarray(groups, dtype=object)
    if g.ndim != 1 or g.shape[0] != n:
        raise ValueError(f"groups must have shape ({n},), got {g.shape}")
    return g


def _check_indices(idx: Any, n: int, name: str) -> np.ndarray:
    a = np.asarray(idx)
    if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must be a 1-D integer array, got shape {a.shape} {a.dtype}")
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= n):
        raise ValueError(f"{name} out of range for {n} rows")
    if np.unique(a).size != a.size:
        raise ValueError(f"{name} contains duplicates")
    return a


def _label_array(y: Any) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]  # (n, 1) class labels, e.g. PathMNIST
    if a.ndim not in (1, 2):
        raise ValueError(f"y must be (n,) labels or (n, K) multi-hot, got shape {a.shape}")
    return a


def _strata(y: Any) -> np.ndarray:
    """(n,) int64 stratum codes: the class, or the rarest positive label (K = "none")."""
    a = _label_array(y)
    if a.ndim == 1:
        if a.size == 0:
            return np.zeros(0, dtype=np.int64)
        _, codes = np.unique(a, return_inverse=True)
        return codes.astype(np.int64).ravel()
    if a.size and not np.isin(a, (0, 1)).all():
        raise ValueError("multi-label y must be multi-hot (only 0/1 or bool values)")
    pos = a.astype(bool)
    counts = pos.sum(axis=0)
    # Rarest positive label per row; argmin takes the lowest column on ties.
    masked = np.where(pos, counts[None, :], np.iinfo(np.int64).max)
    codes = np.argmin(masked, axis=1).astype(np.int64) if a.shape[1] else np.zeros(len(a), int)
    codes[~pos.any(axis=1)] = a.shape[1]  # "none"
    return codes


def _group_key(x: Any) -> str | None:
    """Canonical key of a group id, or None when the id is missing."""
    if x is None:
        return None
    if isinstance(x, float | np.floating):
        if math.isnan(x):
            return None
        if float(x).is_integer():
            return str(int(x))
    if isinstance(x, str | np.str_) and not x.strip():
        return None
    if type(x).__name__ == "NAType":  # pandas.NA, without importing pandas
        return None
    if isinstance(x, np.integer):
        return str(int(x))
    return str(x)


def _group_codes(groups: Any | None, n: int) -> np.ndarray:
    """(n,) int64 group codes; missing ids (and groups=None) get a fresh code per row."""
    if groups is None:
        return np.arange(n, dtype=np.int64)
    g = np.asarray(groups, dtype=object)
    if g.ndim != 1 or g.shape[0] != n:
        raise ValueError(f"groups must have shape ({n},), got {g.shape}")
    index: dict[str, int] = {}
    out = np.empty(n, dtype=np.int64)
    nxt = 0
    for i, raw in enumerate(g):
        key = _group_key(raw)
        if key is None:
            out[i] = nxt
            nxt += 1
            continue
        code = index.get(key)
        if code is None:
            code = index[key] = nxt
            nxt += 1
        out[i] = code
    return out


def _apportion(total: int, fractions: np.ndarray) -> np.ndarray:
    """Largest-remainder rounding of fractions * total to integers summing to total."""
    exact = fractions * total
    base = np.floor(exact).astype(np.int64)
    rem = total - int(base.sum())
    if rem > 0:
        order = np.argsort(-(exact - base), kind="stable")
        base[order[:rem]] += 1
    return base


def _targets(class_counts: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """(S, K) integer targets: columns sum to the class counts exactly, row sums apportioned.

    Controlled rounding of fractions[:, None] * class_counts[None, :]: floor every cell, then
    hand the remaining units of each class to the cells with the largest fractional parts whose
    split is still below its (largest-remainder) total.
    """
    exact = fractions[:, None] * class_counts[None, :].astype(np.float64)
    r = np.floor(exact).astype(np.int64)
    col_left = class_counts - r.sum(axis=0)
    row_left = _apportion(int(class_counts.sum()), fractions) - r.sum(axis=1)
    frac = exact - r
    cells = np.argsort(-frac, axis=None, kind="stable")
    for flat in cells:
        s, k = np.unravel_index(flat, r.shape)
        if frac[s, k] <= 0:
            break
        if col_left[k] > 0 and row_left[s] > 0:
            r[s, k] += 1
            col_left[k] -= 1
            row_left[s] -= 1
    for k in np.flatnonzero(col_left > 0):  # rarely needed: greedy got stuck
        while col_left[k] > 0:
            s = int(np.argmax(row_left))
            r[s, k] += 1
            col_left[k] -= 1
            row_left[s] -= 1
    return r


def _stratified_group_assign(
    strata: np.ndarray, gcodes: np.ndarray, fractions: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(n,) split index per row; whole groups placed greedily toward the per-class targets."""
    n_groups = int(gcodes.max()) + 1
    n_strata = int(strata.max()) + 1
    x = np.zeros((n_groups, n_strata), dtype=np.int64)
    np.add.at(x, (gcodes, strata), 1)
    sizes = x.sum(axis=1)
    target = _targets(x.sum(axis=0), fractions)  # (S, K)
    target_total = target.sum(axis=1)
    allowed = np.flatnonzero(fractions > 0)
    count = np.zeros_like(target)
    total = np.zeros(len(fractions), dtype=np.int64)
    # Largest groups first (hardest to place); seeded random order among equal sizes.
    order = rng.permutation(n_groups)
    order = order[np.argsort(-sizes[order], kind="stable")]
    where = np.empty(n_groups, dtype=np.int64)
    for g in order:
        if sizes[g] == 0:
            continue
        xg = x[g]
        short = target[allowed] - count[allowed]  # (A, K) per-class shortfall
        # change in the L1 distance to the per-class targets if g joined each split
        delta = (np.abs(short - xg) - np.abs(short)).sum(axis=1)
        behind = target_total[allowed] - total[allowed]
        # min delta, then the split furthest below its total, then the first split
        best = np.lexsort((np.arange(len(allowed)), -behind, delta))[0]
        s = allowed[best]
        where[g] = s
        count[s] += xg
        total[s] += sizes[g]
    return where[gcodes]
