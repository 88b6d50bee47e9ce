"""AUROC intervals: DeLong variance (image and patient units), logit, score, BCa; evaluate's
``auroc_ci`` option. Checked against compare.py's independent DeLong, scipy's BCa, closed
forms worked by hand and small simulations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from medprobe import compare, stats
from medprobe.auroc_ci import (
    AUROC_CI_METHODS,
    auroc_influence,
    bca_interval,
    boundary_interval,
    delong_test,
    influence_variance,
    logit_interval,
    satterthwaite_df,
)
from medprobe.stats import (
    FEW_POSITIVES,
    binary_auroc_interval,
    bootstrap_auroc,
    bootstrap_counts,
    evaluate,
    few_positives,
)

TOL = 1e-12


def _binary(n_pos: int, n_neg: int, seed: int, d: float = 1.0) -> tuple:
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    s = np.round(rng.normal(size=y.size) + d * y, 1)  # ties
    return y, s


# ---------------------------------------------------------------- DeLong arithmetic


def test_influence_and_variance_equal_compare_delong():
    y, s = _binary(23, 61, seed=0)
    auc, psi = auroc_influence(y, s)
    assert auc == pytest.approx(roc_auc_score(y, s), abs=TOL)
    a2, v_pos, v_neg = compare.delong_placements(y, s)
    assert a2[0] == pytest.approx(auc, abs=TOL)
    np.testing.assert_allclose(psi[y == 1], (v_pos[0] - auc) / 23, atol=TOL)
    np.testing.assert_allclose(psi[y == 0], (v_neg[0] - auc) / 61, atol=TOL)
    # var(A) = var(A - AUC of a constant score): compare's DeLong SE of that difference
    se = compare.delong(y, s, np.zeros_like(s))["se"]
    assert influence_variance(psi, strata=y) == pytest.approx(se**2, rel=1e-12)
    # singleton groups: the patient-level variance is the image-level one
    assert influence_variance(psi, strata=y, groups=np.arange(y.size)) == pytest.approx(
        se**2, rel=1e-12
    )


def test_hand_computed_delong_cluster_variance_and_df():
    y = np.array([1, 1, 0, 0])
    s = np.array([0.9, 0.4, 0.5, 0.1])
    # V10 = [1, 1/2], V01 = [1/2, 1], A = 3/4; DeLong var = 0.125/2 + 0.125/2 = 0.125
    auc, psi = auroc_influence(y, s)
    assert auc == 0.75
    np.testing.assert_allclose(psi, [0.125, -0.125, -0.125, 0.125], atol=TOL)
    assert influence_variance(psi, strata=y) == pytest.approx(0.125, abs=TOL)
    # Welch-Satterthwaite: two strata of 2 units with 0.0625 each -> df = 0.125^2 / (2 * 0.0625^2)
    assert satterthwaite_df(psi, strata=y) == pytest.approx(2.0, abs=TOL)
    # patients {0, 3} and {1, 2}: sums +0.25 and -0.25, one stratum -> 2 / 1 * 0.125
    groups = np.array([0, 1, 1, 0])
    assert influence_variance(psi, groups=groups) == pytest.approx(0.25, abs=TOL)
    assert satterthwaite_df(psi, groups=groups) == pytest.approx(1.0, abs=TOL)
    # a stratum with one unit: not estimable
    assert math.isnan(influence_variance(psi, strata=np.array([0, 1, 1, 1])))


def test_cluster_variance_tracks_the_patient_bootstrap():
    """The patient-level DeLong variance agrees with the patient bootstrap variance; the
    image-level one is too small when patients' images correlate."""
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(150), 3)
    y = np.repeat(rng.random(150) < 0.4, 3).astype(int)
    s = 1.2 * y + rng.normal(size=150)[groups] + 0.7 * rng.normal(size=y.size)
    auc, psi = auroc_influence(y, s)
    counts = bootstrap_counts(y, 3000, 5, stratify=True, groups=groups)
    boot_var = np.var(bootstrap_auroc(y, s, counts)[:, 0], ddof=1)
    strata = y[::3]  # the patients' labels (one per patient)
    cluster_var = influence_variance(psi, strata=strata, groups=groups)
    assert cluster_var == pytest.approx(boot_var, rel=0.15)
    assert influence_variance(psi, strata=y) < 0.7 * cluster_var


# ---------------------------------------------------------------- intervals


def test_logit_interval_closed_form():
    lo, hi = logit_interval(0.75, 0.125, ci=0.95)
    z = sps.norm.ppf(0.975)
    half = z * math.sqrt(0.125) / (0.75 * 0.25)
    assert (lo, hi) == pytest.approx(
        (special.expit(math.log(3) - half), special.expit(math.log(3) + half)), abs=TOL
    )
    lo_t, hi_t = logit_interval(0.75, 0.125, ci=0.95, df=2.0)
    half = sps.t.ppf(0.975, 2) * math.sqrt(0.125) / (0.75 * 0.25)
    assert (lo_t, hi_t) == pytest.approx(
        (special.expit(math.log(3) - half), special.expit(math.log(3) + half)), abs=TOL
    )
    assert all(math.isnan(v) for v in logit_interval(1.0, 0.01))
    assert all(math.isnan(v) for v in logit_interval(0.8, 0.0))


def test_boundary_interval_solves_the_score_equation_and_is_not_degenerate():
    z2 = sps.norm.ppf(0.975) ** 2

    def var(t: float, m: int, n: int) -> float:
        n_star = (m + n) / 2 - 1
        return t * (1 - t) * (1 + (n_star - 1) * ((1 - t) / (2 - t) + t / (1 + t))) / (m * n)

    for auc, m, n in ((1.0, 5, 100), (0.9, 10, 40), (0.0, 6, 30), (0.5, 20, 20)):
        lo, hi = boundary_interval(auc, m, n)
        assert lo <= auc <= hi and hi - lo > 0.01
        for end in (lo, hi):
            if 0.0 < end < 1.0:
                assert (auc - end) ** 2 == pytest.approx(z2 * var(end, m, n), abs=1e-12)
    assert boundary_interval(1.0, 5, 100)[1] == 1.0
    assert boundary_interval(1.0, 5, 100)[0] < boundary_interval(1.0, 50, 100)[0] < 1.0
    with pytest.raises(ValueError, match="positive"):
        boundary_interval(1.0, 0, 10)


def test_bca_equals_scipy_bca_on_the_same_replicates():
    x = np.random.default_rng(0).exponential(size=40)
    res = sps.bootstrap((x,), np.mean, method="BCa", n_resamples=3000, rng=np.random.default_rng(1))
    lo, hi = bca_interval(x.mean(), res.bootstrap_distribution, (x - x.mean()) / x.size)
    assert (lo, hi) == pytest.approx(tuple(res.confidence_interval), abs=1e-12)
    # all replicates on one side: the percentile interval (BCa's limit)
    assert bca_interval(1.0, np.ones(50), np.zeros(4)) == (1.0, 1.0)


# ---------------------------------------------------------------- evaluate(auroc_ci=...)


def test_evaluate_delong_logit_on_a_binary_task():
    y, s = _binary(12, 50, seed=3)
    p1 = special.expit(s)
    proba = np.stack([1 - p1, p1], axis=1)
    base = evaluate(y, proba, ["neg", "pos"], multilabel=False, n_boot=200, seed=4)
    res = evaluate(
        y, proba, ["neg", "pos"], multilabel=False, n_boot=200, seed=4, auroc_ci="delong_logit"
    )
    dl = compare.delong(y, p1, np.zeros_like(p1))
    _, v_pos, v_neg = compare.delong_placements(y, p1)
    vp, vn = np.var(v_pos[0], ddof=1) / 12, np.var(v_neg[0], ddof=1) / 50
    df = (vp + vn) ** 2 / (vp**2 / 11 + vn**2 / 49)
    want = logit_interval(dl["auc_a"], dl["se"] ** 2, df=df)
    for key in ("auroc_macro", "auroc/pos", "auroc/neg"):
        e = res[key]
        assert e["ci_method"] == "delong_logit"
        assert (e["ci_low"], e["ci_high"]) == pytest.approx(want, abs=1e-12)
        for f in ("value", "sd", "boot_mean", "n_replicates"):
            assert e[f] == base[key][f]
    for key in ("f1_macro", "accuracy"):
        assert res[key] == base[key]  # only AUROC entries change


def test_evaluate_auroc_ci_methods_on_multiclass_with_separation_and_one_positive():
    rng = np.random.default_rng(5)
    y = np.r_[np.zeros(40, int), np.ones(30, int), np.full(8, 2), [3]]
    logits = rng.normal(size=(y.size, 4))
    logits[np.arange(y.size), y] += 1.0
    logits[y == 0, 0] += 10.0  # class 0 perfectly separated: AUROC 1
    proba = special.softmax(logits, axis=1)
    names = ["sep", "b", "few", "one"]
    for method in AUROC_CI_METHODS:
        res = evaluate(y, proba, names, multilabel=False, n_boot=300, seed=1, auroc_ci=method)
        sep, one = res["auroc/sep"], res["auroc/one"]
        assert sep["value"] == 1.0
        if method in ("delong_logit", "hanley_mcneil_score"):
            assert sep["ci_method"] == "hanley_mcneil_score"
            assert sep["ci_low"] < 0.99 and sep["ci_high"] == 1.0  # never [1, 1]
            assert sep["ci_low"] == pytest.approx(boundary_interval(1.0, 40, 39)[0], abs=TOL)
        else:
            assert (sep["ci_low"], sep["ci_high"]) == (1.0, 1.0)
        if method == "delong_logit":  # one positive: DeLong's variance is not estimable
            assert one["ci_method"] == "percentile"
            assert res["auroc/few"]["ci_method"] == "delong_logit"
            assert res["auroc_macro"]["ci_method"] == "percentile"  # class "one" is in it
        else:
            assert one["ci_method"] == method
        for key in ("auroc_macro", *(f"auroc/{c}" for c in names)):
            e = res[key]
            assert 0.0 <= e["ci_low"] <= e["value"] <= e["ci_high"] <= 1.0, (method, key)
        assert res["f1_macro"]["ci_method"] == "percentile"
    with pytest.raises(ValueError, match="auroc_ci"):
        evaluate(y, proba, names, multilabel=False, n_boot=5, seed=1, auroc_ci="wald")


def test_macro_delong_variance_tracks_the_stratified_bootstrap():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 3, size=400)
    logits = rng.normal(size=(400, 3))
    logits[np.arange(400), y] += 1.0
    proba = special.softmax(logits, axis=1)
    res = evaluate(
        y, proba, ["a", "b", "c"], multilabel=False, n_boot=2000, seed=2, auroc_ci="delong_logit"
    )
    e = res["auroc_macro"]
    assert e["ci_method"] == "delong_logit"
    width = e["ci_high"] - e["ci_low"]
    assert width == pytest.approx(2 * 1.96 * e["sd"], rel=0.1)  # DeLong SE ~ bootstrap SD


def test_binary_auroc_interval_patient_units_and_errors():
    rng = np.random.default_rng(7)
    groups = np.repeat(np.arange(60), 2)
    y = np.repeat(rng.random(60) < 0.5, 2).astype(int)
    s = y + rng.normal(size=60)[groups] + 0.5 * rng.normal(size=120)
    counts = bootstrap_counts(y, 200, 3, stratify=True, groups=groups)
    reps = bootstrap_auroc(y, s, counts)[:, 0]
    img = binary_auroc_interval(y, s, reps, method="delong_logit")
    pat = binary_auroc_interval(y, s, reps, method="delong_logit", groups=groups)
    assert img[2] == pat[2] == "delong_logit"
    assert pat[1] - pat[0] > 1.2 * (img[1] - img[0])  # correlated eyes: wider
    lo, hi, how = binary_auroc_interval(y, s, reps, method="percentile")
    assert how == "percentile" and (lo, hi) == tuple(np.percentile(reps, [2.5, 97.5]))
    with pytest.raises(ValueError, match="method"):
        binary_auroc_interval(y, s, reps, method="exact")


def test_logit_interval_covers_better_than_percentile_with_five_positives():
    """A small version of benchmarks/bench_auroc_ci_coverage.py (5 positives, AUROC 0.85)."""
    rng = np.random.default_rng(8)
    d = math.sqrt(2) * sps.norm.ppf(0.85)
    y = np.r_[np.ones(5, int), np.zeros(60, int)]
    counts = bootstrap_counts(y, 300, 1, stratify=True)
    hits = {"percentile": 0, "delong_logit": 0}
    for _ in range(150):
        s = rng.normal(size=y.size) + d * y
        reps = bootstrap_auroc(y, s, counts)[:, 0]
        for m in hits:
            lo, hi, _ = binary_auroc_interval(y, s, reps, method=m)
            hits[m] += lo <= 0.85 <= hi
    assert hits["delong_logit"] / 150 >= 0.88
    assert hits["delong_logit"] > hits["percentile"] + 10


# ---------------------------------------------------------------- few positives


def test_few_positives_threshold_is_ten():
    assert FEW_POSITIVES == 10
    y = np.r_[np.zeros(30, int), np.ones(9, int), np.full(10, 2)]
    assert few_positives(y, ["a", "b", "c", "d"], multilabel=False) == [("b", 9)]
    ym = np.zeros((20, 3), int)
    ym[:3, 0] = 1
    ym[:, 1] = 1
    assert few_positives(ym, ["x", "y", "z"], multilabel=True) == [("x", 3)]
    assert stats.FEW_POSITIVES == FEW_POSITIVES


def test_delong_test_equals_compare_and_widens_with_patients():
    rng = np.random.default_rng(9)
    groups = np.repeat(np.arange(80), 2)
    y = np.repeat(rng.random(80) < 0.4, 2).astype(int)
    y[::7] = 1 - y[::7]  # some patients with one positive eye
    shared = rng.normal(size=80)[groups]
    sa = y + shared + 0.6 * rng.normal(size=160)
    sb = 0.8 * y + shared + 0.6 * rng.normal(size=160)
    got = delong_test(y, sa, sb)
    ref = compare.delong(y, sa, sb)
    assert set(got) == set(ref)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key
    # singleton patients: the image-level test
    single = delong_test(y, sa, sb, groups=np.arange(160))
    assert single["se"] == pytest.approx(ref["se"], rel=1e-12)
    clustered = delong_test(y, sa, sb, groups=groups)
    assert clustered["diff"] == ref["diff"] and clustered["se"] != ref["se"]
    same = delong_test(y, sa, sa)
    assert (same["z"], same["p"]) == (0.0, 1.0)
    with pytest.raises(ValueError, match="2 positive"):
        delong_test(np.r_[1, np.zeros(9, int)], np.arange(10.0), np.arange(10.0)[::-1])
