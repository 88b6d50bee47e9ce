"""Patient-level stratified splits (medprobe.data.splits) on synthetic and real label files."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from helpers import SHARED_DATA, needs_shared_data

from medprobe.data.splits import (
    assign_splits,
    carve_validation,
    check_no_patient_overlap,
    subsample_train,
)

SPLITS = ("train", "val", "test")


DATA = SHARED_DATA
needs_data = needs_shared_data


def _read_labels(rel: str) -> tuple[np.ndarray, np.ndarray]:
    assert DATA is not None
    with open(DATA / rel, newline="") as f:
        rows = list(csv.DictReader(f))
    y = np.array([r["label"] for r in rows])
    groups = np.array([r["patient_id"] for r in rows], dtype=object)
    return y, groups


def _counts(split: np.ndarray) -> dict[str, int]:
    return {s: int((split == s).sum()) for s in SPLITS}


def _synthetic(seed: int, n_groups: int, max_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Imbalanced 3 classes; patients with 1..max_size images, each patient one class."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, max_size + 1, n_groups)
    group_label = rng.choice(3, n_groups, p=[0.6, 0.3, 0.1])
    return np.repeat(group_label, sizes), np.repeat(np.arange(n_groups), sizes)


# ------------------------------------------------------------------------------- assign_splits


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sizes_within_one_group_of_target(seed: int) -> None:
    y, groups = _synthetic(seed, n_groups=300, max_size=3)
    n = len(y)
    split = assign_splits(y, groups, val_fraction=0.15, test_fraction=0.2, seed=seed)
    assert split.shape == (n,) and split.dtype.kind == "U"
    check_no_patient_overlap(split, groups)
    for name, f in zip(SPLITS, (0.65, 0.15, 0.2), strict=True):
        assert abs(_counts(split)[name] - f * n) <= 3  # one group (at most 3 rows)
        for k in range(3):  # stratified: each class within one group of its share
            c_k = int((y == k).sum())
            assert abs(int(((split == name) & (y == k)).sum()) - f * c_k) <= 3


def test_singleton_groups_meet_targets_exactly() -> None:
    # 1003 rows, one per patient; classes 601 / 301 / 101
    y = np.repeat(np.array(["a", "b", "c"]), [601, 301, 101])
    split = assign_splits(y, None, val_fraction=0.15, test_fraction=0.2, seed=7)
    counts = _counts(split)
    assert counts["val"] in (150, 151)  # 0.15 * 1003 = 150.45
    assert counts["test"] in (200, 201)  # 0.2 * 1003 = 200.6
    assert sum(counts.values()) == 1003
    for cls, c_k in (("a", 601), ("b", 301), ("c", 101)):
        for name, f in zip(SPLITS, (0.65, 0.15, 0.2), strict=True):
            got = int(((split == name) & (y == cls)).sum())
            assert abs(got - f * c_k) < 1, (cls, name, got)


def test_val_fraction_zero_gives_no_val() -> None:
    y, groups = _synthetic(5, n_groups=100, max_size=2)
    split = assign_splits(y, groups, val_fraction=0.0, test_fraction=0.3, seed=0)
    assert _counts(split)["val"] == 0
    assert set(np.unique(split)) == {"train", "test"}


def test_deterministic_per_seed() -> None:
    y, groups = _synthetic(11, n_groups=200, max_size=3)
    a = assign_splits(y, groups, val_fraction=0.1, test_fraction=0.2, seed=3)
    b = assign_splits(y, groups, val_fraction=0.1, test_fraction=0.2, seed=3)
    c = assign_splits(y, groups, val_fraction=0.1, test_fraction=0.2, seed=4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_missing_group_ids_are_own_groups() -> None:
    y = np.array([0, 1] * 10)
    groups = np.array(["p1", "p1"] + [""] * 6 + [None] * 6 + [float("nan")] * 6, dtype=object)
    split = assign_splits(y, groups, val_fraction=0.0, test_fraction=0.5, seed=0)
    assert split[0] == split[1]  # real patient kept together
    assert _counts(split)["test"] == 10  # missing ids split freely: exact half
    check_no_patient_overlap(split, groups)


def test_int_str_float_ids_are_one_patient() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    groups = np.array([7, "7", 7.0, 8, "8", 8.0], dtype=object)
    for seed in range(5):
        split = assign_splits(y, groups, val_fraction=0.0, test_fraction=0.5, seed=seed)
        assert len(set(split[:3])) == 1 and len(set(split[3:])) == 1


def test_multilabel_rarest_label_stratification() -> None:
    # 40 rows: 30 with finding A only, 5 with A and the rare B, 5 with no finding
    y = np.zeros((40, 2), dtype=np.uint8)
    y[:35, 0] = 1
    y[30:35, 1] = 1
    for seed in range(10):
        split = assign_splits(y, None, val_fraction=0.2, test_fraction=0.2, seed=seed)
        rare = split[30:35]  # stratum B: 5 * (0.6, 0.2, 0.2) = 3 / 1 / 1
        none = split[35:]  # stratum "none": also 3 / 1 / 1
        common = split[:30]  # stratum A: 18 / 6 / 6
        for part, expected in ((rare, (3, 1, 1)), (none, (3, 1, 1)), (common, (18, 6, 6))):
            assert tuple(int((part == s).sum()) for s in SPLITS) == expected


def test_n_by_1_labels_are_classes() -> None:
    y = np.repeat(np.arange(4), 10)[:, None]  # (40, 1) like PathMNIST
    split = assign_splits(y, None, val_fraction=0.0, test_fraction=0.5, seed=0)
    for k in range(4):
        assert int(((split == "test") & (y[:, 0] == k)).sum()) == 5


@pytest.mark.parametrize(
    ("val", "test"), [(-0.1, 0.2), (0.1, 1.0), (0.5, 0.5), (0.1, -0.01), (0.7, 0.4)]
)
def test_bad_fractions(val: float, test: float) -> None:
    with pytest.raises(ValueError):
        assign_splits([0, 1, 0, 1], None, val_fraction=val, test_fraction=test, seed=0)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="multi-hot"):
        assign_splits(np.array([[0, 2], [1, 0]]), None, val_fraction=0, test_fraction=0.5, seed=0)
    with pytest.raises(ValueError, match="groups"):
        assign_splits([0, 1, 0], ["a", "b"], val_fraction=0, test_fraction=0.5, seed=0)
    with pytest.raises(ValueError, match="empty"):
        assign_splits([], None, val_fraction=0, test_fraction=0.5, seed=0)


# ------------------------------------------------------------------------------- real labels


@needs_data
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_knee_kl_real_split(seed: int) -> None:
    y, groups = _read_labels("T8_knee_kl/labels.csv")
    assert len(y) == 100 and len(set(groups)) == 95
    assert all(int((y == str(k)).sum()) == 20 for k in range(5))
    split = assign_splits(y, groups, val_fraction=0.1, test_fraction=0.2, seed=seed)
    check_no_patient_overlap(split, groups)
    for g in set(groups):  # both knees of a subject on one side
        assert len(set(split[groups == g])) == 1
    counts = _counts(split)
    assert abs(counts["test"] - 20) <= 2 and abs(counts["val"] - 10) <= 2  # one group = 2 knees
    for k in range(5):
        in_test = int(((split == "test") & (y == str(k))).sum())
        in_train = int(((split == "train") & (y == str(k))).sum())
        assert 3 <= in_test <= 5  # 0.2 * 20 = 4, within one group
        assert in_train >= 12


@needs_data
def test_ham10000_real_split() -> None:
    y, groups = _read_labels("T3_ham10000/labels.csv")  # patient_id = lesion id
    assert len(y) == 280
    split = assign_splits(y, groups, val_fraction=0.1, test_fraction=0.2, seed=0)
    check_no_patient_overlap(split, groups)
    assert _counts(split) == {"train": 196, "val": 28, "test": 56}  # 40 per class, one per lesion
    for cls in np.unique(y):
        assert int(((split == "test") & (y == cls)).sum()) == 8


@needs_data
def test_ham10000_full_metadata_lesions_kept_together() -> None:
    # the full official metadata: 10,015 images of 7,470 lesions (many lesions have several)
    assert DATA is not None
    with open(DATA / "T3_ham10000" / "HAM10000_metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    y = np.array([r["dx"] for r in rows])
    groups = np.array([r["lesion_id"] for r in rows], dtype=object)
    assert len(y) == 10015
    split = assign_splits(y, groups, val_fraction=0.1, test_fraction=0.2, seed=0)
    check_no_patient_overlap(split, groups)
    assert abs(_counts(split)["test"] - 2003) <= 6
    for cls in np.unique(y):
        c_k = int((y == cls).sum())
        got = int(((split == "test") & (y == cls)).sum())
        assert abs(got - 0.2 * c_k) <= 6, (cls, got, c_k)


# ------------------------------------------------------------------------------- overlap check


def test_check_names_shared_patient() -> None:
    split = np.array(["train", "train", "test", "val", "train"])
    groups = np.array(["p1", "p2", "p3", "p4", "p3"], dtype=object)
    with pytest.raises(ValueError, match=r"patient 'p3' is in both 'train' and 'test'"):
        check_no_patient_overlap(split, groups)


def test_check_accepts_clean_and_missing_ids() -> None:
    check_no_patient_overlap(["train", "test", "val"], ["", None, float("nan")])
    check_no_patient_overlap(["train", "test"], None)
    check_no_patient_overlap(["train", "train", "test"], ["a", "a", "b"])
    with pytest.raises(ValueError, match="length"):
        check_no_patient_overlap(["train"], ["a", "b"])


# ------------------------------------------------------------------------------- carve_validation


@needs_data
def test_carve_validation_from_train_only() -> None:
    y, groups = _read_labels("T8_knee_kl/labels.csv")
    split = assign_splits(y, groups, val_fraction=0.0, test_fraction=0.2, seed=0)
    train_idx = np.flatnonzero(split == "train")
    rng = np.random.default_rng(0)
    fit, val = carve_validation(y, groups, rng.permutation(train_idx), 0.25, seed=1)
    assert np.array_equal(np.sort(np.concatenate([fit, val])), train_idx)
    assert np.all(np.diff(fit) > 0) and np.all(np.diff(val) > 0)
    assert not set(val) & set(np.flatnonzero(split == "test"))
    assert not set(groups[fit]) & set(groups[val])
    assert abs(len(val) - 0.25 * len(train_idx)) <= 2
    for k in range(5):
        assert int((y[val] == str(k)).sum()) >= 3  # 0.25 * 16 = 4, within one group
    again = carve_validation(y, groups, train_idx, 0.25, seed=1)
    assert np.array_equal(again[0], fit) and np.array_equal(again[1], val)


def test_carve_validation_zero_and_errors() -> None:
    y = np.array([0, 1] * 5)
    fit, val = carve_validation(y, None, [4, 0, 2], 0.0, seed=0)
    assert fit.tolist() == [0, 2, 4] and val.size == 0
    with pytest.raises(ValueError):
        carve_validation(y, None, [0, 0, 1], 0.2, seed=0)
    with pytest.raises(ValueError):
        carve_validation(y, None, [0, 99], 0.2, seed=0)
    with pytest.raises(ValueError):
        carve_validation(y, None, [0, 1], 1.0, seed=0)


# ------------------------------------------------------------------------------- subsample_train


def _subsample_fixture() -> tuple[np.ndarray, np.ndarray]:
    # 100 rows; train = rows 0..73 with classes 50 x "a", 20 x "b", 3 x "c", 1 x "d"
    y = np.array(["a"] * 50 + ["b"] * 20 + ["c"] * 3 + ["d"] * 1 + ["a"] * 26)
    return y, np.arange(74)


def test_subsample_counts_per_class_exact() -> None:
    y, idx = _subsample_fixture()
    sub = subsample_train(y, idx, 0.25, seed=0)
    got = {c: int((y[sub] == c).sum()) for c in "abcd"}
    # max(1, floor(0.25 * n_k + 0.5)): 12.5 -> 13, 5 -> 5, 0.75 -> 1, 0.25 -> 0 -> at least 1
    assert got == {"a": 13, "b": 5, "c": 1, "d": 1}
    assert set(sub) <= set(idx) and np.all(np.diff(sub) > 0)
    sub10 = subsample_train(y, idx, 0.1, seed=0)
    assert {c: int((y[sub10] == c).sum()) for c in "abcd"} == {"a": 5, "b": 2, "c": 1, "d": 1}


def test_subsample_nested_and_seeded() -> None:
    y, idx = _subsample_fixture()
    for seed in range(5):
        chain = [set(subsample_train(y, idx, f, seed)) for f in (0.05, 0.1, 0.25, 0.5, 0.9, 1.0)]
        for small, big in zip(chain, chain[1:], strict=False):
            assert small <= big
    a = subsample_train(y, idx, 0.5, seed=1)
    assert np.array_equal(a, subsample_train(y, idx[::-1], 0.5, seed=1))  # order-independent
    assert not np.array_equal(a, subsample_train(y, idx, 0.5, seed=2))


def test_subsample_full_fraction_and_errors() -> None:
    y, idx = _subsample_fixture()
    shuffled = np.random.default_rng(0).permutation(idx)
    assert np.array_equal(subsample_train(y, shuffled, 1.0, seed=0), idx)
    for bad in (0.0, -0.5, 1.5, float("nan")):
        with pytest.raises(ValueError):
            subsample_train(y, idx, bad, seed=0)


def test_subsample_multilabel() -> None:
    y = np.zeros((30, 3), dtype=np.uint8)
    y[:20, 0] = 1  # 20 rows: common label only
    y[20:24, [0, 2]] = 1  # 4 rows: rare label 2 (stratum 2)
    # rows 24..29: no label ("none")
    sub = subsample_train(y, np.arange(30), 0.5, seed=0)
    assert int((sub < 20).sum()) == 10
    assert int(((sub >= 20) & (sub < 24)).sum()) == 2
    assert int((sub >= 24).sum()) == 3


# --- issue 16.5: a split is a function of (ids, groups, labels, seed), not of the row order


def _real_rows(rel: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    assert DATA is not None
    with open(DATA / rel, newline="") as f:
        rows = list(csv.DictReader(f))
    ids = np.array([r["path"] for r in rows])
    y = np.array([r["label"] for r in rows])
    return ids, y, np.array([r["patient_id"] for r in rows], dtype=object)


@needs_data
@pytest.mark.parametrize("rel", ["T3_ham10000/labels.csv", "T8_knee_kl/labels.csv"])
def test_split_does_not_depend_on_row_order(rel: str) -> None:
    ids, y, g = _real_rows(rel)
    kw = {"val_fraction": 0.1, "test_fraction": 0.2, "seed": 3}
    base = assign_splits(y, g, ids=ids, **kw)
    rng = np.random.default_rng(0)
    for order in (np.arange(len(ids))[::-1], rng.permutation(len(ids))):
        again = assign_splits(y[order], g[order], ids=ids[order], **kw)
        assert dict(zip(ids[order], again, strict=True)) == dict(zip(ids, base, strict=True))
    # without ids the row order decides (what issue 16.5 found): reversed rows differ
    rev = np.arange(len(ids))[::-1]
    old = assign_splits(y[rev], g[rev], **kw)
    assert dict(zip(ids[rev], old, strict=True)) != dict(zip(ids, base, strict=True))
    # rows already in id order split exactly as they did before ids were taken into account
    s = np.argsort(ids)
    assert (assign_splits(y[s], g[s], ids=ids[s], **kw) == assign_splits(y[s], g[s], **kw)).all()
    # no group (image-level): the same holds
    a = assign_splits(y, None, ids=ids, **kw)
    b = assign_splits(y[rev], None, ids=ids[rev], **kw)
    assert dict(zip(ids, a, strict=True)) == dict(zip(ids[rev], b, strict=True))


@needs_data
def test_carve_and_subsample_do_not_depend_on_row_order() -> None:
    ids, y, g = _real_rows("T3_ham10000/labels.csv")
    rev = np.arange(len(ids))[::-1]
    train = np.flatnonzero(assign_splits(y, g, ids=ids, val_fraction=0, test_fraction=0.2,
                                         seed=0) == "train")  # fmt: skip
    fit, val = carve_validation(y, g, train, 0.2, 5, ids=ids)
    pos = np.empty(len(ids), dtype=np.int64)
    pos[rev] = np.arange(len(ids))  # row i of the original is row pos[i] of the reversed
    fit_r, val_r = carve_validation(y[rev], g[rev], pos[train], 0.2, 5, ids=ids[rev])
    assert set(ids[fit]) == set(ids[rev][fit_r]) and set(ids[val]) == set(ids[rev][val_r])
    sub = subsample_train(y, train, 0.3, 7, ids=ids)
    sub_r = subsample_train(y[rev], pos[train], 0.3, 7, ids=ids[rev])
    assert set(ids[sub]) == set(ids[rev][sub_r])
    # and they differ without ids (the row order stood in for them)
    fit_o, _ = carve_validation(y[rev], g[rev], pos[train], 0.2, 5)
    assert set(ids[fit]) != set(ids[rev][fit_o])


def test_ids_must_be_unique_and_match() -> None:
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="ids contain duplicates"):
        assign_splits(y, None, val_fraction=0, test_fraction=0.5, seed=0, ids=["a", "a", "b", "c"])
    with pytest.raises(ValueError, match=r"ids must have shape \(4,\)"):
        assign_splits(y, None, val_fraction=0, test_fraction=0.5, seed=0, ids=["a"])
