"""Patient-level (cluster) bootstrap: counts, a plain loop over the same resamples, pairing."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, hamming_loss, roc_auc_score

from medprobe import metrics, stats
from medprobe.auroc_ci import group_index, majority_strata
from medprobe.stats import bootstrap_counts, bootstrap_replicates, bootstrap_seed, evaluate

TOL = 1e-12


def _clustered_multiclass(n_groups: int, k: int, seed: int) -> tuple:
    """Patients with 1-4 images; mostly one label per patient, some mixed; tied scores."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, size=n_groups)
    groups = np.repeat(np.arange(n_groups), sizes)
    base = rng.integers(0, k, size=n_groups)[groups]
    flip = rng.random(groups.size) < 0.2  # some patients have images of two classes
    y = np.where(flip, rng.integers(0, k, size=groups.size), base)
    y[:k] = np.arange(k)
    logits = rng.normal(size=(y.size, k)) + rng.normal(size=(n_groups, 1))[groups]
    logits[np.arange(y.size), y] += 1.2
    logits[::5] = np.round(logits[::5])
    proba = np.exp(logits)
    proba /= proba.sum(axis=1, keepdims=True)
    ids = np.array([f"p{g:03d}" for g in groups])  # string patient ids
    order = rng.permutation(y.size)  # rows of a patient need not be adjacent
    return y[order], proba[order], ids[order]


def _naive_multiclass(y, p, counts, labels):
    """Every metric per replicate with scikit-learn on explicit resamples."""
    k = p.shape[1]
    pred = p.argmax(axis=1)
    out = {"auroc_macro": [], "f1_macro": [], "accuracy": []}
    per = {c: [] for c in range(k)}
    for row in counts:
        idx = np.repeat(np.arange(len(y)), row)
        yy, pp = y[idx], p[idx]
        aucs = []
        for c in range(k):
            a = roc_auc_score(yy == c, pp[:, c]) if 0 < (yy == c).sum() < yy.size else np.nan
            per[c].append(a)
            if not np.isnan(a):
                aucs.append(a)
        out["auroc_macro"].append(np.mean(aucs))
        out["f1_macro"].append(
            f1_score(yy, pred[idx], labels=labels, average="macro", zero_division=0)
        )
        out["accuracy"].append(accuracy_score(yy, pred[idx]))
    return {key: np.array(v) for key, v in out.items()}, {c: np.array(v) for c, v in per.items()}


# ---------------------------------------------------------------- counts


def test_one_image_per_patient_equals_the_image_level_bootstrap():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=60)
    y[:4] = np.arange(4)
    seed = bootstrap_seed("t1", "test", 0)
    for stratify in (True, False):
        image = bootstrap_counts(y, 50, seed, stratify=stratify)
        patient = bootstrap_counts(y, 50, seed, stratify=stratify, groups=np.arange(60))
        np.testing.assert_array_equal(patient, image)


def test_patient_counts_resample_whole_patients_within_majority_strata():
    y, _, ids = _clustered_multiclass(40, 3, seed=1)
    seed = bootstrap_seed("t4", "test", 0)
    c = bootstrap_counts(y, 300, seed, stratify=True, groups=ids)
    assert c.shape == (300, y.size) and c.dtype == np.int32
    gidx, n_groups = group_index(ids, y.size)
    for g in range(n_groups):  # every image of a patient has its patient's count
        rows = c[:, gidx == g]
        assert (rows == rows[:, :1]).all()
    per_group = np.zeros((300, n_groups), dtype=np.int64)
    per_group[:, gidx] = c
    strata = majority_strata(y, gidx, n_groups)
    for s in np.unique(strata):  # the number of patients drawn per stratum is fixed
        np.testing.assert_array_equal(per_group[:, strata == s].sum(axis=1), (strata == s).sum())
    assert len(np.unique(c.sum(axis=1))) > 1  # image totals vary
    assert abs(per_group.mean() - 1.0) < 0.05
    np.testing.assert_array_equal(c, bootstrap_counts(y, 300, seed, stratify=True, groups=ids))
    np.testing.assert_array_equal(c[:17], bootstrap_counts(y, 17, seed, stratify=True, groups=ids))
    # the counts follow the ids, not the row order (patients are matched by id)
    perm = np.random.default_rng(2).permutation(y.size)
    c_perm = bootstrap_counts(y[perm], 300, seed, stratify=True, groups=ids[perm])
    np.testing.assert_array_equal(c_perm, c[:, perm])


def test_majority_strata_and_group_index_rules():
    labels = np.array([2, 1, 1, 0, 2, 2, 0, 1])
    groups = np.array(["b", "b", "b", "a", "a", "c", "c", "d"])
    gidx, n = group_index(groups, labels.size)
    assert n == 4 and list(gidx) == [1, 1, 1, 0, 0, 2, 2, 3]  # sorted ids a, b, c, d
    # a: {0, 2} tie -> 0; b: {2, 1, 1} -> 1; c: {2, 0} tie -> 0; d: {1} -> 1
    assert list(majority_strata(labels, gidx, n)) == [0, 1, 0, 1]
    assert group_index(np.array([5, 3, 5], dtype=object), 3)[1] == 2
    with pytest.raises(ValueError, match="shape"):
        group_index(np.arange(3), 4)
    with pytest.raises(ValueError, match="integer or string"):
        group_index(np.array([1.0, 2.0, 3.0]), 3)
    with pytest.raises(ValueError, match="no None"):
        group_index(np.array(["a", None, "b"], dtype=object), 3)
    with pytest.raises(ValueError, match="1-D"):
        bootstrap_counts(np.zeros((3, 2)), 2, 0, stratify=True, groups=np.arange(3))


# ---------------------------------------------------------------- vectorised == loop


def test_patient_level_multiclass_replicates_equal_naive_loop(monkeypatch):
    y, proba, ids = _clustered_multiclass(45, 4, seed=3)
    names = ["a", "b", "c", "d"]
    seed = bootstrap_seed("t5", "test", 0)
    monkeypatch.setattr(stats, "_BLOCK_ELEMENTS", 1000)  # several blocks
    reps = bootstrap_replicates(
        y, proba, names, multilabel=False, n_boot=120, seed=seed, groups=ids
    ).metrics
    _, p = metrics.check_predictions(y, proba, multilabel=False)
    counts = bootstrap_counts(y, 120, seed, stratify=True, groups=ids)
    naive, per = _naive_multiclass(y, p, counts, labels=np.arange(4))
    for key in ("auroc_macro", "f1_macro", "accuracy"):
        np.testing.assert_allclose(reps[key], naive[key], rtol=0, atol=TOL)
    for c, name in enumerate(names):
        got = reps[f"auroc/{name}"]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(per[c]))
        np.testing.assert_allclose(got, per[c], rtol=0, atol=TOL)

    res = evaluate(y, proba, names, multilabel=False, n_boot=120, seed=seed, groups=ids)
    assert res["resampling_unit"] == "patient" and res["n_resampling_units"] == 45
    img = evaluate(y, proba, names, multilabel=False, n_boot=120, seed=seed)
    assert img["resampling_unit"] == "image" and img["n_resampling_units"] == y.size
    for key in ("auroc_macro", "f1_macro", "accuracy", "auroc/a"):
        assert res[key]["value"] == img[key]["value"]  # the unit changes intervals only
        v = naive[key] if key in naive else per[0]
        v = v[~np.isnan(v)]
        lo, hi = np.percentile(v, [2.5, 97.5])
        assert res[key]["ci_low"] == pytest.approx(lo, abs=TOL)
        assert res[key]["ci_high"] == pytest.approx(hi, abs=TOL)
        assert res[key]["sd"] == pytest.approx(v.std(ddof=1), abs=TOL)
        assert res[key]["boot_mean"] == pytest.approx(v.mean(), abs=TOL)
        assert res[key]["n_replicates"] == v.size


def test_patient_level_multilabel_replicates_equal_naive_loop():
    rng = np.random.default_rng(4)
    groups = np.repeat(np.arange(30), 2)  # two eyes per patient
    y = (rng.random((60, 3)) < [0.5, 0.3, 0.1]).astype(int)
    y[:2, 2] = 1
    proba = np.clip(0.35 * y + 0.65 * rng.random((60, 3)), 0, 1)
    seed = bootstrap_seed("t6", "test", 1)
    reps = bootstrap_replicates(
        y, proba, ["x", "y", "z"], multilabel=True, n_boot=80, seed=seed, groups=groups
    ).metrics
    counts = bootstrap_counts(y, 80, seed, stratify=False, groups=groups)
    pred = (proba >= 0.5).astype(int)
    for b, row in enumerate(counts):
        idx = np.repeat(np.arange(60), row)
        yy = y[idx]
        for j, name in enumerate("xyz"):
            want = (
                roc_auc_score(yy[:, j], proba[idx, j]) if 0 < yy[:, j].sum() < idx.size else np.nan
            )
            got = reps[f"auroc/{name}"][b]
            assert (np.isnan(want) and np.isnan(got)) or abs(got - want) < TOL
        f1 = f1_score(yy, pred[idx], labels=[0, 1, 2], average="macro", zero_division=0)
        assert abs(reps["f1_macro"][b] - f1) < TOL
        assert abs(reps["accuracy"][b] - (1 - hamming_loss(yy, pred[idx]))) < TOL


def test_two_models_get_the_same_patient_resamples():
    """Paired: the seed and the ids fix the resamples, whatever the model."""
    y, p1, ids = _clustered_multiclass(30, 3, seed=5)
    p2 = np.exp(np.log(p1) + np.random.default_rng(6).normal(size=p1.shape))
    p2 /= p2.sum(axis=1, keepdims=True)  # another model on the same rows
    seed = bootstrap_seed("t7", "test", 0)
    kw = {"multilabel": False, "n_boot": 40, "seed": seed, "groups": ids}
    r1 = bootstrap_replicates(y, p1, ["a", "b", "c"], **kw).metrics
    r2 = bootstrap_replicates(y, p2, ["a", "b", "c"], **kw).metrics
    counts = bootstrap_counts(y, 40, seed, stratify=True, groups=ids)
    for p, r in ((p1, r1), (p2, r2)):
        _, pp = metrics.check_predictions(y, p, multilabel=False)
        naive, _ = _naive_multiclass(y, pp, counts, labels=np.arange(3))
        np.testing.assert_allclose(r["auroc_macro"], naive["auroc_macro"], atol=TOL)


# ---------------------------------------------------------------- one rule for both macros


def test_multilabel_always_positive_label_is_left_out_of_both_macros():
    rng = np.random.default_rng(8)
    y = (rng.random((40, 3)) < [0.5, 0.3, 0.4]).astype(int)
    y[:, 2] = 1  # finding positive on every test row
    proba = np.clip(0.3 * y + 0.7 * rng.random((40, 3)), 0, 1)
    names = ["a", "b", "always"]
    res = evaluate(y, proba, names, multilabel=True, n_boot=60, seed=2)
    assert res["absent_classes"] == ["always"] and "auroc/always" not in res
    pred = (proba >= 0.5).astype(int)
    want = f1_score(y, pred, labels=[0, 1], average="macro", zero_division=0)
    assert res["f1_macro"]["value"] == pytest.approx(want, abs=TOL)
    assert want != pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
    counts = bootstrap_counts(y, 60, 2, stratify=False)
    f1 = [
        f1_score(y[i], pred[i], labels=[0, 1], average="macro", zero_division=0)
        for i in (np.repeat(np.arange(40), row) for row in counts)
    ]
    v = np.array(f1)
    assert res["f1_macro"]["sd"] == pytest.approx(v.std(ddof=1), abs=TOL)
    assert res["f1_macro"]["ci_low"] == pytest.approx(np.percentile(v, 2.5), abs=TOL)
