"""Tests of medprobe.stats (vectorised bootstrap) against hand values and a naive sklearn loop."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, hamming_loss, roc_auc_score

from medprobe import metrics, stats
from medprobe.stats import (
    bootstrap_auroc,
    bootstrap_counts,
    bootstrap_replicates,
    bootstrap_seed,
    evaluate,
)

TOL = 1e-12
SUMMARY_KEYS = {
    "value", "mean", "boot_mean", "sd", "ci_low", "ci_high", "ci_method", "n_replicates",
}  # fmt: skip


# ---------------------------------------------------------------- data helpers


def _multiclass(n: int, k: int, seed: int, *, absent: tuple[int, ...] = ()) -> tuple:
    """Labels and softmax probabilities with deliberate exact ties (repeated rows)."""
    rng = np.random.default_rng(seed)
    present = [c for c in range(k) if c not in absent]
    y = rng.choice(present, size=n)
    y[: len(present)] = present  # every non-absent class occurs
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.5
    logits[::4] = np.round(logits[::4])  # a palette of few distinct rows -> tied scores
    logits[::4] = logits[::4][rng.integers(0, 3, size=logits[::4].shape[0]) % 3]
    proba = np.exp(logits)
    proba /= proba.sum(axis=1, keepdims=True)
    return y, proba


def _multilabel(n: int, seed: int) -> tuple:
    """3 labels; label 2 has only 2 positives, so some replicates lack it."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < [0.5, 0.3, 0.0]).astype(int)
    y[[3, 7], 2] = 1
    proba = np.clip(0.35 * y + 0.65 * rng.random((n, 3)), 0.0, 1.0)
    proba[::5] = np.round(proba[::5], 1)  # ties
    return y, proba


def _naive_multiclass(y, p, counts):
    """Per-replicate metrics with scikit-learn on explicit resamples."""
    k = p.shape[1]
    pred = p.argmax(axis=1)
    out = {"auroc_macro": [], "f1_macro": [], "accuracy": []}
    per = {c: [] for c in range(k)}
    for row in counts:
        idx = np.repeat(np.arange(len(y)), row)
        yy, pp = y[idx], p[idx]
        present = np.unique(yy)
        aucs = [roc_auc_score(yy == c, pp[:, c]) for c in present]
        for c, a in zip(present, aucs, strict=True):
            per[c].append(a)
        if len(present) == k:
            macro = roc_auc_score(yy, pp, multi_class="ovr", average="macro")
            assert abs(macro - np.mean(aucs)) < TOL
        out["auroc_macro"].append(np.mean(aucs))
        out["f1_macro"].append(  # over the classes present in the whole test set
            f1_score(yy, pred[idx], labels=np.unique(y), average="macro", zero_division=0)
        )
        out["accuracy"].append(accuracy_score(yy, pred[idx]))
    return {key: np.array(v) for key, v in out.items()}, {c: np.array(v) for c, v in per.items()}


def _naive_multilabel(y, p, counts, threshold=0.5):
    k = y.shape[1]
    pred = (p >= threshold).astype(int)
    per = np.full((counts.shape[0], k), np.nan)
    f1, acc = [], []
    for b, row in enumerate(counts):
        idx = np.repeat(np.arange(len(y)), row)
        yy, pp = y[idx], p[idx]
        for j in range(k):
            if 0 < yy[:, j].sum() < len(idx):
                per[b, j] = roc_auc_score(yy[:, j], pp[:, j])
        f1.append(
            f1_score(
                yy,
                pred[idx],
                labels=np.flatnonzero(y.sum(0) > 0),
                average="macro",
                zero_division=0,
            )
        )
        acc.append(1.0 - hamming_loss(yy, pred[idx]))
        assert (
            abs(acc[-1] - np.mean([accuracy_score(yy[:, j], pred[idx][:, j]) for j in range(k)]))
            < TOL
        )
    return per, np.array(f1), np.array(acc)


def _summary(values: np.ndarray, ci: float = 0.95) -> dict:
    v = values[~np.isnan(values)]
    lo, hi = np.percentile(v, [50 * (1 - ci), 50 * (1 + ci)])
    return {"mean": v.mean(), "sd": v.std(ddof=1), "ci_low": lo, "ci_high": hi, "n": v.size}


def _assert_summary(entry: dict, values: np.ndarray, ci: float = 0.95) -> None:
    ref = _summary(values, ci)
    assert set(entry) == SUMMARY_KEYS
    assert entry["n_replicates"] == ref["n"]
    assert entry["boot_mean"] == entry["mean"] and entry["ci_method"] == "percentile"
    for key in ("mean", "sd", "ci_low", "ci_high"):
        assert entry[key] == pytest.approx(ref[key], abs=TOL), key


# ---------------------------------------------------------------- seeds and counts


def test_bootstrap_seed_is_stable_sha256_and_type_tagged():
    expected = int.from_bytes(hashlib.sha256(b"s2:t5s4:testi1:0").digest()[:8], "big") >> 1
    assert bootstrap_seed("t5", "test", 0) == expected == 4461075503055413879
    assert bootstrap_seed("t5", "test", np.int64(0)) == expected
    assert len({bootstrap_seed("a", 1), bootstrap_seed("a", "1"), bootstrap_seed("a1")}) == 3
    assert bootstrap_seed("t5", "test", 1) != expected
    assert 0 <= bootstrap_seed("x") < 2**63
    with pytest.raises(TypeError):
        bootstrap_seed("t5", 1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        bootstrap_seed("t5", True)


def test_stratified_counts_keep_class_sizes_and_are_deterministic():
    y = np.array([0] * 7 + [1] * 3 + [2] * 20 + [4] * 1)  # class 3 absent, class 4 single
    rng = np.random.default_rng(0)
    y = y[rng.permutation(y.size)]
    seed = bootstrap_seed("t1", "test", 0)
    c = bootstrap_counts(y, 300, seed, stratify=True)
    assert c.shape == (300, y.size) and c.dtype == np.int32 and c.min() >= 0
    for cls in np.unique(y):
        np.testing.assert_array_equal(c[:, y == cls].sum(axis=1), (y == cls).sum())
    assert (c[:, y == 4] == 1).all()  # a singleton class is always drawn exactly once
    assert abs(c.mean() - 1.0) < 0.05  # unbiased resampling
    np.testing.assert_array_equal(c, bootstrap_counts(y, 300, seed, stratify=True))
    assert not np.array_equal(c, bootstrap_counts(y, 300, seed + 1, stratify=True))
    other = bootstrap_seed("t1", "test", 1)
    assert not np.array_equal(c, bootstrap_counts(y, 300, other, stratify=True))
    # Replicate b depends only on (y, seed, b): prefixes agree.
    np.testing.assert_array_equal(c[:17], bootstrap_counts(y, 17, seed, stratify=True))


def test_plain_counts_rows_sum_to_n_and_vary_class_sizes():
    y = np.zeros((50, 3), dtype=int)  # multi-label layout: only n is used
    c = bootstrap_counts(y, 400, 7, stratify=False)
    assert c.shape == (400, 50)
    np.testing.assert_array_equal(c.sum(axis=1), 50)
    assert len(np.unique(c[:, :10].sum(axis=1))) > 1  # subset sizes vary (not stratified)
    np.testing.assert_array_equal(c, bootstrap_counts(y, 400, 7, stratify=False))


def test_counts_errors():
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_counts(np.arange(5), 0, 1, stratify=False)
    with pytest.raises(ValueError, match="seed"):
        bootstrap_counts(np.arange(5), 3, -1, stratify=False)
    with pytest.raises(ValueError, match="1-D"):
        bootstrap_counts(np.zeros((5, 2)), 3, 1, stratify=True)
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_counts(np.zeros(0), 3, 1, stratify=False)


# ---------------------------------------------------------------- AUROC kernel


def test_auroc_hand_computed_with_ties():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.4, 0.8])
    # pairs (pos, neg): (0.4,0.1)=1, (0.4,0.4)=1/2, (0.8,0.1)=1, (0.8,0.4)=1 -> 3.5 / 4
    out = bootstrap_auroc(y[:, None], s[:, None], np.ones((1, 4), dtype=int))
    assert out.shape == (1, 1) and out[0, 0] == 0.875
    # Weighted: counts [2, 0, 1, 3] -> negatives {0.1 x2}, positives {0.4, 0.8 x3}: all wins.
    # counts [0, 2, 1, 1] -> negatives {0.4 x2}; pos 0.4 ties (2 x 1/2), pos 0.8 wins (2).
    out = bootstrap_auroc(y, s, np.array([[2, 0, 1, 3], [0, 2, 1, 1], [1, 1, 0, 0]]))
    assert out.shape == (3, 1)
    assert out[0, 0] == 1.0 and out[1, 0] == 3.0 / 4.0 and np.isnan(out[2, 0])


def test_auroc_more_positives_than_negatives_and_multiple_columns():
    # Column 0: 1 negative at 0.4 vs positives 0.1 (0), 0.4 (1/2), 0.8 (1) -> 0.5.
    # Column 1: all positive -> nan.
    y = np.array([[0, 1], [1, 1], [1, 1], [1, 1]], dtype=bool)
    s = np.array([[0.4, 0.2], [0.1, 0.3], [0.4, 0.1], [0.8, 0.9]])
    out = bootstrap_auroc(y, s, np.ones((2, 4), dtype=np.int64))
    assert out[0, 0] == 0.5 and np.isnan(out[:, 1]).all()


def test_auroc_kernel_equals_sklearn_on_same_resamples_and_across_blocks(monkeypatch):
    rng = np.random.default_rng(3)
    n = 300
    y = rng.random((n, 3)) < [0.1, 0.5, 0.9]  # exercises both query-side choices
    s = np.round(rng.random((n, 3)) + 0.3 * y, 2)  # many ties
    counts = bootstrap_counts(y, 40, 11, stratify=False)
    monkeypatch.setattr(stats, "_BLOCK_ELEMENTS", 1)  # 8 replicates per block
    fast = bootstrap_auroc(y, s, counts)
    for b in range(counts.shape[0]):
        idx = np.repeat(np.arange(n), counts[b])
        for j in range(3):
            assert abs(fast[b, j] - roc_auc_score(y[idx, j], s[idx, j])) < TOL


def test_auroc_input_errors():
    y, s, c = np.array([0, 1]), np.array([0.2, 0.3]), np.ones((1, 2), dtype=int)
    with pytest.raises(ValueError, match="shape"):
        bootstrap_auroc(y, s, np.ones((1, 3), dtype=int))
    with pytest.raises(ValueError, match="integers"):
        bootstrap_auroc(y, s, np.ones((1, 2)))
    with pytest.raises(ValueError, match="non-negative"):
        bootstrap_auroc(y, s, -c)
    with pytest.raises(ValueError, match="0 and 1"):
        bootstrap_auroc(np.array([0, 2]), s, c)
    with pytest.raises(ValueError, match="finite"):
        bootstrap_auroc(y, np.array([0.2, np.nan]), c)
    with pytest.raises(ValueError, match=r"\(n, K\)"):
        bootstrap_auroc(np.zeros((2, 2)), s, c)


# ---------------------------------------------------------------- vectorised == naive loop


def test_multiclass_replicates_equal_naive_sklearn_loop(monkeypatch):
    y, proba = _multiclass(90, 4, seed=1)
    names = ["a", "b", "c", "d"]
    seed = bootstrap_seed("t2", "test", 0)
    monkeypatch.setattr(stats, "_BLOCK_ELEMENTS", 1000)  # several blocks of 11 replicates
    reps = bootstrap_replicates(y, proba, names, multilabel=False, n_boot=150, seed=seed)
    _, p = metrics.check_predictions(y, proba, multilabel=False)  # renormalised float64
    counts = bootstrap_counts(y, 150, seed, stratify=True)
    naive, per = _naive_multiclass(y, p, counts)
    assert reps.absent_classes == []
    for key in ("auroc_macro", "f1_macro", "accuracy"):
        np.testing.assert_allclose(reps.metrics[key], naive[key], rtol=0, atol=TOL)
    for c, name in enumerate(names):
        assert per[c].size == 150  # stratified: every class in every replicate
        np.testing.assert_allclose(reps.metrics[f"auroc/{name}"], per[c], rtol=0, atol=TOL)

    res = evaluate(y, proba, names, multilabel=False, n_boot=150, seed=seed, ci=0.9)
    assert list(res) == [
        "auroc_macro", "auroc/a", "auroc/b", "auroc/c", "auroc/d", "f1_macro", "accuracy",
        "absent_classes", "resampling_unit", "n_resampling_units",
    ]  # fmt: skip
    assert (res["resampling_unit"], res["n_resampling_units"]) == ("image", 90)
    _assert_summary(res["auroc_macro"], naive["auroc_macro"], ci=0.9)
    _assert_summary(res["f1_macro"], naive["f1_macro"], ci=0.9)
    _assert_summary(res["accuracy"], naive["accuracy"], ci=0.9)
    for c, name in enumerate(names):
        _assert_summary(res[f"auroc/{name}"], per[c], ci=0.9)
    # Point estimates on the full test set, from scikit-learn directly.
    pred = p.argmax(axis=1)
    assert res["auroc_macro"]["value"] == pytest.approx(
        roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=TOL
    )
    assert res["f1_macro"]["value"] == pytest.approx(
        f1_score(y, pred, average="macro", zero_division=0), abs=TOL
    )
    assert res["accuracy"]["value"] == pytest.approx(accuracy_score(y, pred), abs=TOL)
    # ... and equal to the vectorised kernel with all-ones counts.
    ones = bootstrap_auroc(metrics.indicator(y, 4), p, np.ones((1, y.size), dtype=int))[0]
    for c, name in enumerate(names):
        assert res[f"auroc/{name}"]["value"] == pytest.approx(ones[c], abs=TOL)


def test_multilabel_replicates_equal_naive_loop_with_missing_label(monkeypatch):
    y, proba = _multilabel(40, seed=2)
    names = ["effusion", "nodule", "rare"]
    seed = bootstrap_seed("t8", "test", 3)
    monkeypatch.setattr(stats, "_BLOCK_ELEMENTS", 100)
    reps = bootstrap_replicates(y, proba, names, multilabel=True, n_boot=200, seed=seed)
    counts = bootstrap_counts(y, 200, seed, stratify=False)
    per, f1, acc = _naive_multilabel(y, proba, counts)
    missing = np.isnan(per[:, 2])
    assert 0 < missing.sum() < 200  # the rule under test is actually exercised
    assert not np.isnan(per[:, :2]).any()
    for j, name in enumerate(names):
        got = reps.metrics[f"auroc/{name}"]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(per[:, j]))
        np.testing.assert_allclose(got, per[:, j], rtol=0, atol=TOL)
    # Macro of a replicate = mean of the labels defined in it.
    np.testing.assert_allclose(reps.metrics["auroc_macro"], np.nanmean(per, axis=1), atol=TOL)
    np.testing.assert_allclose(reps.metrics["f1_macro"], f1, rtol=0, atol=TOL)
    np.testing.assert_allclose(reps.metrics["accuracy"], acc, rtol=0, atol=TOL)

    res = evaluate(y, proba, names, multilabel=True, n_boot=200, seed=seed)
    assert res["absent_classes"] == []
    assert res["auroc/rare"]["n_replicates"] == 200 - missing.sum()
    assert res["auroc_macro"]["n_replicates"] == 200
    _assert_summary(res["auroc/rare"], per[:, 2])
    _assert_summary(res["auroc_macro"], np.nanmean(per, axis=1))
    _assert_summary(res["f1_macro"], f1)
    _assert_summary(res["accuracy"], acc)
    pred = (proba >= 0.5).astype(int)
    assert res["f1_macro"]["value"] == pytest.approx(
        f1_score(y, pred, average="macro", zero_division=0), abs=TOL
    )
    assert res["accuracy"]["value"] == pytest.approx(1 - hamming_loss(y, pred), abs=TOL)
    assert res["auroc/rare"]["value"] == pytest.approx(roc_auc_score(y[:, 2], proba[:, 2]))


def test_replicates_do_not_depend_on_block_size_or_n_boot(monkeypatch):
    y, proba = _multiclass(120, 3, seed=5)
    kw = {"multilabel": False, "seed": 99}
    full = bootstrap_replicates(y, proba, ["a", "b", "c"], n_boot=64, **kw).metrics
    monkeypatch.setattr(stats, "_BLOCK_ELEMENTS", 1)
    part = bootstrap_replicates(y, proba, ["a", "b", "c"], n_boot=20, **kw).metrics
    for key in full:
        np.testing.assert_array_equal(part[key], full[key][:20])


def test_models_on_same_seed_share_resamples():
    """Paired CIs: a model-independent seed gives the same resamples for two models."""
    y, p1 = _multiclass(80, 3, seed=8)
    _, p2 = _multiclass(80, 3, seed=9)
    seed = bootstrap_seed("t3", "test", 0)
    r1 = bootstrap_replicates(y, p1, ["a", "b", "c"], multilabel=False, n_boot=30, seed=seed)
    r2 = bootstrap_replicates(y, p1, ["a", "b", "c"], multilabel=False, n_boot=30, seed=seed)
    r3 = bootstrap_replicates(y, p2, ["a", "b", "c"], multilabel=False, n_boot=30, seed=seed)
    np.testing.assert_array_equal(r1.metrics["auroc_macro"], r2.metrics["auroc_macro"])
    counts = bootstrap_counts(y, 30, seed, stratify=True)
    naive, _ = _naive_multiclass(y, metrics.check_predictions(y, p2, multilabel=False)[1], counts)
    np.testing.assert_allclose(r3.metrics["auroc_macro"], naive["auroc_macro"], atol=TOL)


# ---------------------------------------------------------------- known CIs


def test_perfect_separation_gives_degenerate_ci_at_one():
    y = np.repeat([0, 1, 2], 10)
    proba = np.full((30, 3), 0.1)
    proba[np.arange(30), y] = 0.8
    res = evaluate(y, proba, ["x", "y", "z"], multilabel=False, n_boot=200, seed=1)
    for key in ("auroc_macro", "auroc/x", "auroc/y", "auroc/z", "f1_macro", "accuracy"):
        entry = res[key]
        assert (entry["value"], entry["ci_low"], entry["ci_high"]) == (1.0, 1.0, 1.0), key
        assert entry["sd"] == 0.0 and entry["mean"] == 1.0 and entry["n_replicates"] == 200


def test_single_replicate_ci_is_its_value_and_sd_nan():
    y, proba = _multiclass(50, 3, seed=4)
    res = evaluate(y, proba, ["a", "b", "c"], multilabel=False, n_boot=1, seed=2)
    e = res["auroc_macro"]
    assert e["ci_low"] == e["ci_high"] == e["mean"] and np.isnan(e["sd"])
    assert e["n_replicates"] == 1


# ---------------------------------------------------------------- absent classes


def test_multiclass_absent_class_is_reported_and_excluded():
    y, proba = _multiclass(90, 4, seed=6, absent=(2,))
    names = ["a", "b", "c", "d"]
    res = evaluate(y, proba, names, multilabel=False, n_boot=50, seed=5)
    assert res["absent_classes"] == ["c"]
    assert "auroc/c" not in res and "auroc/a" in res
    _, p = metrics.check_predictions(y, proba, multilabel=False)
    per = [roc_auc_score(y == c, p[:, c]) for c in (0, 1, 3)]
    assert res["auroc_macro"]["value"] == pytest.approx(np.mean(per), abs=TOL)
    assert not any(
        np.isnan(v)
        for e in res.values()
        if isinstance(e, dict)
        for v in e.values()
        if not isinstance(v, str)
    )
    # macro F1 leaves the absent class out too (same classes as macro AUROC); predictions of
    # the absent class still cost the true classes their recall
    f1 = f1_score(y, p.argmax(1), labels=[0, 1, 3], average="macro", zero_division=0)
    assert res["f1_macro"]["value"] == pytest.approx(f1, abs=TOL)
    all_k = f1_score(y, p.argmax(1), labels=np.arange(4), average="macro", zero_division=0)
    assert all_k < f1  # the old all-K rule silently averaged in a 0 for the absent class
    counts = bootstrap_counts(y, 50, 5, stratify=True)
    naive, _ = _naive_multiclass(y, p, counts)
    _assert_summary(res["auroc_macro"], naive["auroc_macro"])
    _assert_summary(res["f1_macro"], naive["f1_macro"])


def test_multilabel_labels_without_positives_or_negatives_are_absent():
    y, proba = _multilabel(30, seed=7)
    y = np.concatenate([y, np.zeros((30, 1), int), np.ones((30, 1), int)], axis=1)
    proba = np.concatenate([proba, np.full((30, 1), 0.2), np.full((30, 1), 0.7)], axis=1)
    names = ["a", "b", "c", "never", "always"]
    res = evaluate(y, proba, names, multilabel=True, n_boot=40, seed=3)
    assert res["absent_classes"] == ["never", "always"]
    assert "auroc/never" not in res and "auroc/always" not in res
    expected = np.mean([roc_auc_score(y[:, j], proba[:, j]) for j in range(3)])
    assert res["auroc_macro"]["value"] == pytest.approx(expected, abs=TOL)


# ---------------------------------------------------------------- metrics.py


def test_metrics_point_helpers():
    y, proba = _multiclass(60, 3, seed=10)
    _, p = metrics.check_predictions(y, proba, multilabel=False)
    assert metrics.auroc_macro(y, proba, multilabel=False) == pytest.approx(
        roc_auc_score(y, p, multi_class="ovr"), abs=TOL
    )
    # float16-stored probabilities (rows sum to 1 only approximately) are accepted.
    assert np.isfinite(metrics.auroc_macro(y, proba.astype(np.float16), multilabel=False))
    ym, pm = _multilabel(30, seed=11)
    assert metrics.accuracy(ym, pm, multilabel=True) == pytest.approx(
        1 - hamming_loss(ym, pm >= 0.5), abs=TOL
    )
    assert metrics.f1_macro(ym, pm, multilabel=True, threshold=0.3) == pytest.approx(
        f1_score(ym, pm >= 0.3, average="macro", zero_division=0), abs=TOL
    )
    with pytest.raises(ValueError, match="undefined"):
        metrics.auroc_macro(np.zeros((4, 2), int), np.full((4, 2), 0.5), multilabel=True)


# ---------------------------------------------------------------- errors


def _mc():
    return np.array([0, 1, 2, 0, 1, 2]), np.full((6, 3), 1 / 3)


@pytest.mark.parametrize(
    ("y", "proba", "match"),
    [
        (np.array([0, 1, 2]), np.full((6, 3), 1 / 3), "shape"),
        (np.array([0, 1, 2, 0, 1, 2]), np.full(6, 0.5), "2-D"),
        (np.array([0, 1, 2, 0, 1, 3]), np.full((6, 3), 1 / 3), "range"),
        (np.array([0, 1, 2, 0, 1, -1]), np.full((6, 3), 1 / 3), "range"),
        (np.array([0, 1, 2, 0, 1, 1.5]), np.full((6, 3), 1 / 3), "integer"),
        (np.array([0, 1, 2, 0, 1, 2]), np.full((6, 3), 0.3), "sum to 1"),
        (np.array([0, 1, 2, 0, 1, 2]), np.full((6, 3), np.nan), "non-finite"),
        (np.array([0, 1, 2, 0, 1, 2]), np.full((6, 3), np.inf), "non-finite"),
        (np.array([0, 0, 0, 0, 0, 0]), np.full((6, 3), 1 / 3), "two classes"),
    ],
)
def test_multiclass_input_errors(y, proba, match):
    with pytest.raises(ValueError, match=match):
        evaluate(y, proba, ["a", "b", "c"], multilabel=False, n_boot=5, seed=0)


def test_multilabel_input_errors():
    y = np.array([[0, 1], [1, 0], [1, 1]])
    p = np.full((3, 2), 0.5)
    with pytest.raises(ValueError, match="0 and 1"):
        evaluate(y * 2, p, ["a", "b"], multilabel=True, n_boot=5, seed=0)
    with pytest.raises(ValueError, match="shape"):
        evaluate(y[:, :1], p, ["a", "b"], multilabel=True, n_boot=5, seed=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate(y, p * 3, ["a", "b"], multilabel=True, n_boot=5, seed=0)
    with pytest.raises(ValueError, match="no label"):
        evaluate(np.ones_like(y), p, ["a", "b"], multilabel=True, n_boot=5, seed=0)


def test_argument_errors():
    y, p = _mc()
    names = ["a", "b", "c"]
    for n_boot in (0, -3):
        with pytest.raises(ValueError, match="n_boot"):
            evaluate(y, p, names, multilabel=False, n_boot=n_boot, seed=0)
    for ci in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="ci"):
            evaluate(y, p, names, multilabel=False, n_boot=5, seed=0, ci=ci)
    with pytest.raises(ValueError, match="class_names"):
        evaluate(y, p, ["a", "b"], multilabel=False, n_boot=5, seed=0)
    with pytest.raises(ValueError, match="unique"):
        evaluate(y, p, ["a", "a", "b"], multilabel=False, n_boot=5, seed=0)
    with pytest.raises(ValueError, match="seed"):
        evaluate(y, p, names, multilabel=False, n_boot=5, seed=-1)


def test_zero_valid_replicates_raises_instead_of_nan():
    # Two examples, label 0 has one positive: a plain resample misses it half the time.
    y = np.array([[1, 0], [0, 1]])
    p = np.array([[0.9, 0.2], [0.1, 0.8]])
    seed = next(s for s in range(100) if bootstrap_counts(y, 1, s, stratify=False)[0].max() == 2)
    with pytest.raises(ValueError, match="no bootstrap replicate"):
        evaluate(y, p, ["a", "b"], multilabel=True, n_boot=1, seed=seed)


def test_progress_bar_runs(capsys):
    y, p = _mc()
    res = evaluate(y, p, ["a", "b", "c"], multilabel=False, n_boot=5, seed=0, progress=True)
    assert res["accuracy"]["n_replicates"] == 5
    assert "bootstrap" in capsys.readouterr().err


def test_log_loss_matches_direct_formula():
    y, proba = _multiclass(40, 3, seed=12)
    _, p = metrics.check_predictions(y, proba, multilabel=False)
    direct = -np.mean(np.log(p[np.arange(40), y]))
    assert metrics.log_loss(y, proba, multilabel=False) == pytest.approx(direct, rel=1e-12)
    ym, pm = _multilabel(30, seed=13)
    pm = np.clip(pm, 0.01, 0.99)
    bce = -np.mean(ym * np.log(pm) + (1 - ym) * np.log(1 - pm))
    assert metrics.log_loss(ym, pm, multilabel=True) == pytest.approx(bce, rel=1e-12)
