"""Multiplicity adjustment, McNemar, and the paper's t-test on bootstrap replicates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special
from scipy import stats as sps

from medprobe import compare
from medprobe.multiplicity import PVALUE_ADJUSTMENTS, adjust_pvalues, bh, holm
from medprobe.stats import (
    bootstrap_replicates,
    bootstrap_seed,
    mcnemar,
    paper_ttest_on_bootstrap_replicates,
    ttest_on_replicates,
)

TOL = 1e-12

# ---------------------------------------------------------------- Holm, Benjamini-Hochberg


def test_holm_hand_computed():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02], atol=TOL)
    np.testing.assert_allclose(holm([0.5, 0.2]), [0.5, 0.4], atol=TOL)  # 0.2x2, max(0.4, 0.5)
    np.testing.assert_allclose(holm([0.6, 0.7]), [1.0, 1.0], atol=TOL)  # capped at 1
    assert holm([0.03]).tolist() == [0.03]  # a family of one is unadjusted


def test_bh_hand_computed_and_equal_to_scipy():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4/1, x4/2, x4/3, x4/4 = 0.02, 0.02, 0.04, 0.04
    np.testing.assert_allclose(bh([0.01, 0.04, 0.03, 0.005]), [0.02, 0.04, 0.04, 0.02], atol=TOL)
    np.testing.assert_allclose(bh([0.01, 0.02, 0.5]), [0.03, 0.03, 0.5], atol=TOL)
    rng = np.random.default_rng(0)
    for m in (1, 2, 7, 40):
        p = np.r_[rng.random(m) ** 3, [0.02] * 3]  # ties too
        np.testing.assert_allclose(
            bh(p), sps.false_discovery_control(p, method="bh"), rtol=0, atol=TOL
        )


def test_adjustment_family_leaves_missing_tests_out():
    p = [0.01, None, 0.04, float("nan"), 0.03, 0.005]
    for method in PVALUE_ADJUSTMENTS:
        out = adjust_pvalues(p, method)
        assert np.isnan(out[[1, 3]]).all()
        ref = holm if method == "holm" else bh
        np.testing.assert_allclose(out[[0, 2, 4, 5]], ref([0.01, 0.04, 0.03, 0.005]), atol=TOL)
    assert adjust_pvalues([]).shape == (0,)
    assert np.isnan(adjust_pvalues([None, None])).all()
    with pytest.raises(ValueError, match="method"):
        adjust_pvalues([0.1], "bonferroni")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.1, 1.2])
    # Holm never below BH, both never below the raw p-values
    p = np.random.default_rng(1).random(25) ** 2
    assert (holm(p) >= bh(p) - TOL).all() and (bh(p) >= p - TOL).all()


# ---------------------------------------------------------------- McNemar


def _pairs(b: int, c: int, both: int = 5, neither: int = 3) -> tuple[np.ndarray, np.ndarray]:
    a = np.r_[np.ones(b), np.zeros(c), np.ones(both), np.zeros(neither)].astype(bool)
    bb = np.r_[np.zeros(b), np.ones(c), np.ones(both), np.zeros(neither)].astype(bool)
    return a, bb


def test_mcnemar_exact_for_few_discordant_pairs():
    r = mcnemar(*_pairs(10, 2))
    # two-sided exact: 2 * P(X <= 2), X ~ Bin(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert (r["b"], r["c"], r["n_discordant"], r["method"]) == (10, 2, 12, "exact")
    assert r["p"] == r["p_exact"] == pytest.approx(158 / 4096, abs=TOL)
    assert r["chi2"] == pytest.approx(49 / 12, abs=TOL)  # (|10 - 2| - 1)^2 / 12


def test_mcnemar_chi2_with_continuity_correction_for_many():
    r = mcnemar(*_pairs(30, 15))
    assert r["method"] == "chi2_cc"
    assert r["chi2"] == pytest.approx(196 / 45, abs=TOL)  # (15 - 1)^2 / 45
    assert r["p"] == r["p_chi2"] == pytest.approx(math.erfc(math.sqrt(196 / 45 / 2)), abs=TOL)
    old = compare.mcnemar(*_pairs(30, 15))  # agrees with compare's arithmetic where b != c
    assert (old["p_exact"], old["chi2"], old["p_chi2"]) == pytest.approx(
        (r["p_exact"], r["chi2"], r["p_chi2"]), abs=TOL
    )
    assert mcnemar(*_pairs(30, 15), exact_below=100)["method"] == "exact"


@pytest.mark.parametrize(("b", "c"), [(0, 0), (1, 1), (7, 7), (40, 40)])
def test_mcnemar_equal_discordant_counts_give_p_one(b, c):
    r = mcnemar(*_pairs(b, c))
    assert (r["p"], r["p_exact"], r["p_chi2"], r["chi2"]) == (1.0, 1.0, 1.0, 0.0)


def test_mcnemar_difference_of_one_and_errors():
    r = mcnemar(*_pairs(31, 30))  # (|1| - 1)^2 = 0: no evidence
    assert r["chi2"] == 0.0 and r["p_chi2"] == 1.0
    with pytest.raises(ValueError, match=r"\(n,\)"):
        mcnemar(np.ones(3, bool), np.ones(4, bool))


# ---------------------------------------------------------------- the paper's t-test


def _two_models(n: int = 150, seed: int = 3) -> tuple:
    """Two nearly identical models (B = A's logits plus small noise) on the same rows."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    la = rng.normal(size=(n, 3))
    lb = la + 0.05 * rng.normal(size=(n, 3))
    la[np.arange(n), y] += 1.0
    lb[np.arange(n), y] += 1.0
    return y, special.softmax(la, axis=1), special.softmax(lb, axis=1)


def test_paper_ttest_p_value_falls_without_bound_as_replicates_grow():
    y, pa, pb = _two_models()
    seed = bootstrap_seed("demo", "test", 0)
    out = {
        n: paper_ttest_on_bootstrap_replicates(
            y, pa, pb, ["a", "b", "c"], multilabel=False, seed=seed, n_boot=n
        )
        for n in (50, 1000, 5000)
    }
    assert out[50]["p"] > out[1000]["p"] > out[5000]["p"]
    assert out[5000]["p"] < 1e-20 and out[50]["p"] > 0.3  # 0.43, 6e-6, 4e-32 here
    # the same difference: the replicate means barely move, t grows like sqrt(n_boot)
    diffs = [o["mean_a"] - o["mean_b"] for o in out.values()]
    assert max(diffs) - min(diffs) < 0.5 * abs(diffs[-1])
    assert out[5000]["t"] / out[1000]["t"] == pytest.approx(math.sqrt(5), rel=0.25)
    assert out[1000]["test"] == "paper's t-test on bootstrap replicates"
    assert (out[1000]["construction"], out[1000]["metric"], out[1000]["n"]) == (
        "paired",
        "auroc_macro",
        1000,
    )


def test_paper_ttest_independent_vs_paired_construction():
    y, pa, pb = _two_models()
    seed = bootstrap_seed("demo", "test", 0)
    kw = {"multilabel": False, "seed": seed, "n_boot": 1000, "metric": "accuracy"}
    paired = paper_ttest_on_bootstrap_replicates(y, pa, pb, ["a", "b", "c"], **kw)
    indep = paper_ttest_on_bootstrap_replicates(
        y, pa, pb, ["a", "b", "c"], construction="independent", **kw
    )
    assert paired["correlation"] > 0.5  # same resamples: strongly correlated series
    assert abs(indep["correlation"]) < 0.15  # separate resamples: about 0, as the paper's t
    assert abs(paired["t"]) > abs(indep["t"])
    # the independent series are each model's own bootstrap with its labelled seed
    rep_a = bootstrap_replicates(
        y,
        pa,
        ["a", "b", "c"],
        multilabel=False,
        n_boot=1000,
        seed=bootstrap_seed(seed, "paper-independent", "a"),
    ).metrics["accuracy"]
    assert indep["mean_a"] == pytest.approx(rep_a.mean(), abs=TOL)
    paired_a = bootstrap_replicates(
        y, pa, ["a", "b", "c"], multilabel=False, n_boot=1000, seed=seed
    ).metrics["accuracy"]
    assert paired["mean_a"] == pytest.approx(paired_a.mean(), abs=TOL)
    with pytest.raises(ValueError, match="construction"):
        paper_ttest_on_bootstrap_replicates(y, pa, pb, ["a", "b", "c"], construction="x", **kw)
    with pytest.raises(ValueError, match="metric"):
        paper_ttest_on_bootstrap_replicates(
            y, pa, pb, ["a", "b", "c"], **{**kw, "metric": "auroc/zz"}
        )


def test_ttest_on_replicates_equals_ttest_rel_and_edge_cases():
    rng = np.random.default_rng(2)
    a = rng.normal(size=200)
    b = a - 0.1 + 0.3 * rng.normal(size=200)
    a[3] = np.nan
    r = ttest_on_replicates(a, b)
    ok = ~np.isnan(a)
    ref = sps.ttest_rel(a[ok], b[ok])
    assert (r["t"], r["p"], r["n"]) == pytest.approx((ref.statistic, ref.pvalue, 199), abs=TOL)
    assert r["correlation"] == pytest.approx(np.corrcoef(a[ok], b[ok])[0, 1], abs=TOL)
    assert ttest_on_replicates(a[ok], a[ok])[("p")] == 1.0
    grid = np.arange(50) * 0.25  # dyadic: the difference is exactly constant
    const = ttest_on_replicates(grid + 0.5, grid)
    assert const["t"] == math.inf and const["p"] == 0.0
