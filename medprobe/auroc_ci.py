"""Confidence intervals for AUROC beyond the percentile bootstrap: DeLong (logit scale), BCa.

The percentile bootstrap interval of an AUROC is poor with few positives: with 5 positives it
covered the true AUROC in 60-72% of simulated runs (issue 13; ``benchmarks/
bench_auroc_ci_coverage.py`` measures every method here), and an observed AUROC of 1 gives the
empty interval ``[1, 1]``. This module computes the alternatives from the *empirical influence
values* of the AUROC, one number per resampling unit (an image, or a patient's images
together), so the same arithmetic serves image-level and patient-level (cluster) inference:

- :func:`auroc_influence`: AUROC and the influence value of every example, from DeLong's
  placements (DeLong, DeLong & Clarke-Pearson 1988, Biometrics 44:837; computed by sorting,
  as in Sun & Xu 2014, IEEE Signal Process. Lett. 21:1389).
- :func:`influence_variance`: the variance of the AUROC from the influence values summed per
  unit, within strata. Image-level, stratified by the label, it *is* DeLong's variance
  ``S10 / m + S01 / n`` (tested against :func:`medprobe.compare.delong`); with patients as
  units it is the clustered form of Obuchowski 1997 (Biometrics 53:567): placements summed per
  patient, variance between patients.
- :func:`logit_interval`: Wald interval on the logit scale, back-transformed, so it stays in
  (0, 1) and is asymmetric near 1 (Pepe 2003, *The Statistical Evaluation of Medical Tests*,
  sec. 5.2.3; Qin & Hotilovac 2008, Stat Methods Med Res 17:207, compare such intervals).
- :func:`bca_interval`: bias-corrected and accelerated percentile interval (Efron 1987, JASA
  82:171), acceleration from the same influence values (Davison & Hinkley 1997, eq. 5.23 and
  sec. 3.2 for strata).
- :func:`delong_test`: DeLong's paired test of two AUROCs from the difference of their
  influence values, image-level (= :func:`medprobe.compare.delong`) or patient-level.
- :func:`boundary_interval`: where the logit is undefined (observed AUROC 0 or 1, or zero
  variance: complete separation), the interval
  ``{theta : (A - theta)^2 <= z^2 V(theta)}`` with the Hanley & McNeil (1982, Radiology
  143:29) variance ``V(theta)`` as a function of the *true* AUROC, with Newcombe's (2006, Stat
  Med 25:559) ``N* = (m + n) / 2 - 1``: a score-type interval that is never ``[1, 1]``.

DeLong's arithmetic is computed here rather than imported from :mod:`medprobe.compare`,
because ``compare`` imports :mod:`medprobe.stats`, which uses this module (a cycle);
``tests/stats/test_auroc_ci.py`` checks the two agree.
"""

from __future__ import annotations

import math
from typing import Any, Final, Literal

import numpy as np
from scipy import optimize, special
from scipy import stats as sps

__all__ = [
    "AUROC_CI_METHODS",
    "AurocCiMethod",
    "auroc_influence",
    "bca_interval",
    "boundary_interval",
    "delong_test",
    "group_index",
    "influence_variance",
    "logit_interval",
    "majority_strata",
    "satterthwaite_df",
]

#: Interval methods for AUROC (``stats.evaluate(auroc_ci=...)``):
#: ``"percentile"`` (the bootstrap percentile interval, medprobe's behaviour before issue 13),
#: ``"bca"`` (:func:`bca_interval`), ``"delong_logit"`` (:func:`logit_interval` of
#: :func:`influence_variance`, with :func:`boundary_interval` at complete separation).
AUROC_CI_METHODS: Final = ("percentile", "bca", "delong_logit", "hanley_mcneil_score")
AurocCiMethod = Literal["percentile", "bca", "delong_logit", "hanley_mcneil_score"]


def _z(ci: float) -> float:
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1); got {ci}")
    return float(sps.norm.ppf(0.5 + ci / 2.0))


def group_index(groups: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """Dense group indices ``0 .. G-1`` (sorted group ids) of ``n`` rows.

    Args:
        groups: ``(n,)`` patient (or lesion) ids: integers or strings.
        n: the number of rows the ids must cover.

    Returns:
        ``(gidx, G)``: ``(n,)`` int64 index of each row's group in ``np.unique(groups)``
        order, and the number of groups.

    Raises:
        ValueError: wrong shape, or ids that are not all integers or all strings (``None``,
            nan and floats are rejected: a missing id must not silently form one group).
    """
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups must have shape ({n},) like the labels; got {g.shape}")
    if g.dtype.kind == "O":
        if not all(isinstance(v, str) for v in g) and not all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) for v in g
        ):
            raise ValueError("groups must be all integers or all strings (no None / nan)")
        g = g.astype(str) if isinstance(g[0], str) else g.astype(np.int64)
    elif g.dtype.kind not in "iuUS":
        raise ValueError(f"groups must be integer or string ids; got dtype {g.dtype}")
    uniq, gidx = np.unique(g, return_inverse=True)
    return gidx.astype(np.int64).ravel(), int(uniq.size)


def majority_strata(labels: np.ndarray, gidx: np.ndarray, n_groups: int) -> np.ndarray:
    """Stratum of every group: its most frequent label, ties to the smallest label.

    This is the stratification rule of the patient-level bootstrap for multiclass tasks (see
    :func:`medprobe.stats.bootstrap_counts`): groups whose images all share one label are
    stratified by that label, so with one image per patient the rule is the image-level
    stratified bootstrap; a class that is the majority of at least one group is present in
    every replicate.

    Args:
        labels: ``(n,)`` non-negative int labels (class ids, or 0/1 of one binary column).
        gidx: ``(n,)`` group index of each row (:func:`group_index`).
        n_groups: ``G``.

    Returns:
        ``(G,)`` int64.
    """
    lab = np.asarray(labels, dtype=np.int64)
    table = np.zeros((n_groups, int(lab.max()) + 1), dtype=np.int64)
    np.add.at(table, (gidx, lab), 1)
    return np.argmax(table, axis=1).astype(np.int64)  # first maximum = smallest label


def auroc_influence(y_bin: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray]:
    """AUROC of one binary column and the empirical influence value of every example.

    With ``m`` positives and ``n`` negatives, DeLong's placement of positive ``i`` is
    ``V10_i`` = fraction of negatives scored below it (ties 1/2), of negative ``j`` is
    ``V01_j`` = fraction of positives scored above it; ``AUROC = mean(V10) = mean(V01)``
    (Mann-Whitney, equal to ``sklearn.metrics.roc_auc_score``). The influence values are
    ``psi_i = (V10_i - A) / m`` for positives and ``(V01_j - A) / n`` for negatives: the
    first-order change of the AUROC per example, summing to 0 within each class.

    Args:
        y_bin: ``(n,)`` bool or 0/1.
        scores: ``(n,)`` finite floats.

    Returns:
        ``(auroc, psi)``: float and ``(n,)`` float64.

    Raises:
        ValueError: shape mismatch, non-finite scores, or no positives / no negatives.
    """
    y = np.asarray(y_bin).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"y_bin and scores must both be (n,); got {y.shape} and {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        raise ValueError(f"AUROC needs positives and negatives; got {m} and {n}")
    sp, sn = s[y], s[~y]
    neg_sorted, pos_sorted = np.sort(sn), np.sort(sp)
    below = np.searchsorted(neg_sorted, sp, side="left")
    v10 = (below + 0.5 * (np.searchsorted(neg_sorted, sp, side="right") - below)) / n
    above = m - np.searchsorted(pos_sorted, sn, side="right")
    ties = np.searchsorted(pos_sorted, sn, side="right") - np.searchsorted(
        pos_sorted, sn, side="left"
    )
    v01 = (above + 0.5 * ties) / m
    auc = float(v10.mean())
    psi = np.empty(y.size)
    psi[y] = (v10 - auc) / m
    psi[~y] = (v01 - auc) / n
    return auc, psi


def _unit_sums(
    psi: np.ndarray, strata: np.ndarray | None, groups: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Influence summed per unit and centred within each stratum; the units' strata."""
    p = np.asarray(psi, dtype=np.float64)
    unit: np.ndarray
    st: np.ndarray
    if groups is None:
        unit = p
        st = np.zeros(p.size, np.int64) if strata is None else np.asarray(strata, np.int64)
    else:
        gidx = np.asarray(groups, dtype=np.int64)
        n_groups = int(gidx.max()) + 1
        unit = np.bincount(gidx, weights=p, minlength=n_groups)
        st = np.zeros(n_groups, np.int64) if strata is None else np.asarray(strata, np.int64)
    if st.shape != unit.shape:
        raise ValueError(f"strata must have one entry per unit ({unit.size}); got {st.shape}")
    _, sidx = np.unique(st, return_inverse=True)
    sidx = sidx.ravel()
    means = np.bincount(sidx, weights=unit) / np.bincount(sidx)
    return unit - means[sidx], sidx


def _components(
    psi: np.ndarray, strata: np.ndarray | None, groups: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per stratum: its variance contribution and its number of units (nan if < 2 units)."""
    centred, sidx = _unit_sums(psi, strata, groups)
    sizes = np.bincount(sidx).astype(np.float64)
    ss = np.bincount(sidx, weights=centred**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        contrib = np.where(sizes >= 2, sizes / (sizes - 1.0) * ss, np.nan)
    return contrib, sizes


def influence_variance(
    psi: np.ndarray, *, strata: np.ndarray | None = None, groups: np.ndarray | None = None
) -> float:
    """Variance of a statistic from its influence values, per unit and within strata.

    ``var = sum_s V_s`` with ``V_s = G_s / (G_s - 1) * sum_{u in s} (Psi_u - mean_s Psi)^2``,
    where ``Psi_u`` is the sum of ``psi`` over unit ``u``'s rows and ``G_s`` the number of
    units in stratum ``s``. For one AUROC with images as units and strata = the label this is
    exactly DeLong's ``var(V10) / m + var(V01) / n`` (``ddof=1``, as pROC); with patients as
    units it is the cluster (Obuchowski 1997) variance. For a macro AUROC pass the mean of the
    per-class ``psi`` (the influence of a mean is the mean of the influences).

    Args:
        psi: ``(n,)`` influence values (:func:`auroc_influence`).
        strata: per unit (``(n,)`` without groups, ``(G,)`` with), int labels; ``None``: one
            stratum.
        groups: ``(n,)`` dense group index (:func:`group_index`); ``None``: every row a unit.

    Returns:
        float >= 0; nan when a stratum has fewer than two units (its variance is not
        estimable; e.g. DeLong with a single positive).
    """
    contrib, _ = _components(psi, strata, groups)
    return float(np.sum(contrib))


def satterthwaite_df(
    psi: np.ndarray, *, strata: np.ndarray | None = None, groups: np.ndarray | None = None
) -> float:
    """Welch-Satterthwaite degrees of freedom of :func:`influence_variance`.

    ``df = (sum_s V_s)^2 / sum_s V_s^2 / (G_s - 1)``. An AUROC's DeLong variance is a
    two-sample variance like Welch's (the placements of the positives and of the negatives),
    so with 5 positives its error is dominated by a 4-df sample variance; Brunner & Munzel
    (2000, Biometrical J. 42:17) use this approximation for the same placement variance of
    the relative effect ``P(X < Y) + P(X = Y) / 2`` (= AUROC).

    Args:
        psi, strata, groups: as in :func:`influence_variance`.

    Returns:
        float >= 1 (``inf`` when the variance is 0; nan when it is not estimable).
    """
    contrib, sizes = _components(psi, strata, groups)
    total = float(np.sum(contrib))
    if math.isnan(total):
        return float("nan")
    if total <= 0.0:
        return float("inf")
    return max(1.0, total**2 / float(np.sum(contrib**2 / (sizes - 1.0))))


def logit_interval(
    auc: float, var: float, *, ci: float = 0.95, df: float = math.inf
) -> tuple[float, float]:
    """Wald interval on the logit scale: ``expit(logit(A) +- q SE / (A (1 - A)))``.

    The delta method carries ``SE`` (e.g. ``sqrt`` of :func:`influence_variance`) to the logit
    scale; the interval is back-transformed, so it lies inside (0, 1) and is asymmetric near
    the boundary (Pepe 2003, sec. 5.2.3). ``q`` is the normal quantile, or Student's t with
    ``df`` degrees of freedom (:func:`satterthwaite_df`) when ``df`` is finite.

    Args:
        auc: observed AUROC.
        var: its variance estimate.
        ci: two-sided level in (0, 1).
        df: degrees of freedom of ``var``; ``inf``: normal quantile.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when ``auc`` is 0 or 1, or ``var`` is 0 or nan (the
        logit interval is undefined: use :func:`boundary_interval`).
    """
    z = _z(ci) if math.isinf(df) else float(sps.t.ppf(0.5 + ci / 2.0, df))
    if not (0.0 < auc < 1.0) or not (var > 0.0):
        return float("nan"), float("nan")
    centre = math.log(auc / (1.0 - auc))
    half = z * math.sqrt(var) / (auc * (1.0 - auc))
    return float(special.expit(centre - half)), float(special.expit(centre + half))


def _hanley_mcneil_var(theta: Any, n_star: float, m: int, n: int) -> Any:
    """Hanley & McNeil 1982 variance at true AUROC ``theta`` with both sample sizes minus one
    replaced by Newcombe's ``N* - 1``."""
    q = (1.0 - theta) / (2.0 - theta) + theta / (1.0 + theta)
    return theta * (1.0 - theta) * (1.0 + (n_star - 1.0) * q) / (m * n)


def boundary_interval(auc: float, m: int, n: int, *, ci: float = 0.95) -> tuple[float, float]:
    """Score-type interval ``{theta : (A - theta)^2 <= z^2 V(theta)}``.

    ``V(theta) = theta (1 - theta) [1 + (N* - 1) ((1 - theta) / (2 - theta) + theta /
    (1 + theta))] / (m n)`` with ``N* = (m + n) / 2 - 1`` (Hanley & McNeil 1982's variance
    under their exponential model, with Newcombe 2006's common sample size). Because the
    variance is evaluated at the candidate ``theta`` rather than at the estimate, the
    interval is not degenerate at ``A = 1`` (or 0): it is the fallback of ``"delong_logit"``
    where the logit interval is undefined (complete separation).

    Args:
        auc: observed AUROC in [0, 1].
        m, n: numbers of positive and negative units (patients, with clustered data: a
            conservative count).
        ci: two-sided level in (0, 1).

    Returns:
        ``(low, high)`` with ``low <= auc <= high``.

    Raises:
        ValueError: ``m`` or ``n`` < 1, or ``auc`` outside [0, 1].
    """
    z = _z(ci)
    if m < 1 or n < 1:
        raise ValueError(f"need at least one positive and one negative; got {m} and {n}")
    if not 0.0 <= auc <= 1.0:
        raise ValueError(f"auc must lie in [0, 1]; got {auc}")
    n_star = max((m + n) / 2.0 - 1.0, 1.0)

    def f(theta: float) -> float:
        return (auc - theta) ** 2 - z * z * _hanley_mcneil_var(theta, n_star, m, n)

    # f <= 0 on one interval around auc. f(0) = auc^2 and f(1) = (1 - auc)^2, but V(0) =
    # V(1) = 0, so at auc = 1 (0) theta = 1 (0) is a root too: bracket the other root on a
    # grid first (f is smooth; 4097 points resolve intervals far narrower than any here).
    grid = np.linspace(0.0, 1.0, 4097)
    vals = (auc - grid) ** 2 - z * z * _hanley_mcneil_var(grid, n_star, m, n)
    inside = np.flatnonzero(vals < 0.0)
    if inside.size == 0:  # only possible when V vanishes around auc: the point itself
        return float(auc), float(auc)
    i, k = int(inside[0]), int(inside[-1])
    low = 0.0 if i == 0 else optimize.brentq(f, grid[i - 1], grid[i], xtol=1e-14)
    high = 1.0 if k == grid.size - 1 else optimize.brentq(f, grid[k], grid[k + 1], xtol=1e-14)
    return float(min(low, auc)), float(max(high, auc))


def bca_interval(
    value: float,
    replicates: np.ndarray,
    psi: np.ndarray,
    *,
    strata: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    ci: float = 0.95,
) -> tuple[float, float]:
    """Bias-corrected and accelerated (BCa) bootstrap interval (Efron 1987).

    ``z0 = Phi^-1(p0)`` with ``p0`` the fraction of replicates below ``value`` (ties count
    1/2, because AUROC replicates are discrete); acceleration
    ``a = sum(Psi^3) / (6 (sum(Psi^2))^1.5)`` from the influence values summed per unit and
    centred within strata (Davison & Hinkley 1997, eq. 5.23); the interval is the
    ``Phi(z0 + (z0 + z_alpha) / (1 - a (z0 + z_alpha)))`` percentiles of the replicates
    (linear interpolation, like the percentile interval).

    Args:
        value: the point estimate.
        replicates: ``(B,)`` bootstrap replicates (nan ones are dropped).
        psi, strata, groups: as in :func:`influence_variance`.
        ci: two-sided level in (0, 1).

    Returns:
        ``(low, high)``. When every replicate lies on one side of ``value`` (``p0`` 0 or 1,
        e.g. all replicates equal 1) the bias correction is infinite; the percentile interval
        is returned then (BCa's own limit).

    Raises:
        ValueError: no valid replicate, ``ci`` outside (0, 1).
    """
    z = _z(ci)
    r = np.asarray(replicates, dtype=np.float64).ravel()
    r = r[~np.isnan(r)]
    if r.size == 0:
        raise ValueError("bca_interval needs at least one valid replicate")
    alpha = (1.0 - ci) / 2.0
    p0 = (np.sum(r < value) + 0.5 * np.sum(r == value)) / r.size
    if not 0.0 < p0 < 1.0:
        lo, hi = np.percentile(r, [100.0 * alpha, 100.0 * (1.0 - alpha)])
        return float(lo), float(hi)
    z0 = float(sps.norm.ppf(p0))
    centred, _ = _unit_sums(psi, strata, groups)
    s2 = float(np.sum(centred**2))
    a = float(np.sum(centred**3)) / (6.0 * s2**1.5) if s2 > 0.0 else 0.0
    q = []
    for zq in (-z, z):
        adj = z0 + (z0 + zq) / (1.0 - a * (z0 + zq))
        q.append(100.0 * float(sps.norm.cdf(adj)))
    lo, hi = np.percentile(r, q)
    return float(lo), float(hi)


def delong_test(
    y_bin: np.ndarray,
    score_a: np.ndarray,
    score_b: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    ci: float = 0.95,
) -> dict[str, float]:
    """DeLong's paired test of two AUROCs on the same examples, optionally patient-level.

    ``var(A_a - A_b)`` is :func:`influence_variance` of ``psi_a - psi_b`` stratified by the
    label: image-level this is DeLong et al. 1988's ``S_aa + S_bb - 2 S_ab`` (equal to
    :func:`medprobe.compare.delong`, tested); with ``groups`` the influence is summed per
    patient and patients are stratified by their majority label (the clustered test of
    Obuchowski 1997). Two-sided normal p-value of ``z = diff / SE``; CI ``diff +- z_q SE``.
    Zero variance: ``z = 0, p = 1`` if ``diff == 0`` (as pROC), else ``z = +-inf, p = 0``.

    Args:
        y_bin: ``(n,)`` 0/1 labels. score_a, score_b: ``(n,)`` scores of the two models.
        groups: ``(n,)`` patient ids (int or str); ``None``: images are independent.
        ci: two-sided level in (0, 1).

    Returns:
        ``{"auc_a", "auc_b", "diff", "se", "z", "p", "ci_low", "ci_high"}`` (the keys of
        :func:`medprobe.compare.delong_from_placements`).

    Raises:
        ValueError: shapes, no positives or negatives, fewer than two positive or negative
            units (variance not estimable).
    """
    col = np.asarray(y_bin).astype(bool)
    auc_a, psi_a = auroc_influence(col, score_a)
    auc_b, psi_b = auroc_influence(col, score_b)
    if groups is None:
        gidx, strata = None, col.astype(np.int64)
    else:
        gidx, n_groups = group_index(groups, col.size)
        strata = majority_strata(col, gidx, n_groups)
    var = influence_variance(psi_a - psi_b, strata=strata, groups=gidx)
    if math.isnan(var):
        raise ValueError("DeLong's variance needs at least 2 positive and 2 negative units")
    diff = auc_a - auc_b
    se = math.sqrt(max(var, 0.0))
    if se > 1e-15:
        z = diff / se
        p = float(2.0 * sps.norm.sf(abs(z)))
    else:
        z, p = (0.0, 1.0) if abs(diff) < 1e-15 else (math.copysign(math.inf, diff), 0.0)
    q = _z(ci)
    return {
        "auc_a": auc_a,
        "auc_b": auc_b,
        "diff": diff,
        "se": se,
        "z": float(z),
        "p": p,
        "ci_low": diff - q * se,
        "ci_high": diff + q * se,
    }
