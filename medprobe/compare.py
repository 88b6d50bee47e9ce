"""Paired comparisons of runs on the same test set, from ``results.json`` + ``predictions.csv``.

``medprobe compare RUN_DIR RUN_DIR [...] [--out DIR]`` compares every pair of runs
and writes ``comparison.json`` and ``comparison.csv`` (one row per pair and metric).

Pairing: runs are matched by example id (order on disk does not matter); runs whose test ids
differ are refused (:class:`ComparisonError`). Both runs' bootstrap replicates are drawn with
the *same* resample counts (seed ``bootstrap_seed(task, "test", seed)`` of the first run of the
pair, never the model; :func:`medprobe.stats.bootstrap_replicates`), so replicate ``b`` of run
A and replicate ``b`` of run B score the same resampled test set.

Resampling unit: patients when the runs' ``predictions.csv`` carry a ``group`` column
(written by the pipeline for tasks with patient ids), else images; both runs of a pair get
the same patient resamples (docs/statistics.md, section 2).

Statistics per metric (sources; docs/statistics.md, section 3):

- Paired bootstrap difference ``A - B``: point value on the full test set, bootstrap SD and
  percentile CI of the per-replicate differences (Efron & Tibshirani 1993, ch. 13 and 16), and
  its two-sided bootstrap p-value (:func:`bootstrap_p`).
- DeLong's test for correlated AUROCs (DeLong, DeLong & Clarke-Pearson 1988, Biometrics
  44:837), computed with the fast midrank algorithm of Sun & Xu 2014 (IEEE Signal Process.
  Lett. 21:1389): binary tasks and every one-vs-rest class (``auroc/<class>``); with patient
  ids the clustered test of Obuchowski 1997 (:func:`medprobe.auroc_ci.delong_test`).
  Two-sided p-value from ``z = (AUC_A - AUC_B) / SE``; the CI of the difference is
  ``diff +- z_q SE`` as in pROC's ``roc.test`` (Robin et al. 2011).
- McNemar's test for accuracy (multiclass, top-1): :func:`medprobe.stats.mcnemar` (exact
  binomial below 25 discordant pairs, else chi-square with Edwards' correction; ``b == c``
  gives p = 1).
- Multiplicity: each row's primary test (DeLong, McNemar, else the bootstrap p) is adjusted
  within its family, Holm by default or Benjamini-Hochberg (:func:`adjust_rows`); the
  ``significant`` flag and the console's ``*`` use the adjusted value, and the family is
  written beside it.
- The paper's t-test on bootstrap replicates (``ttest_rel`` over the replicate series; Han et
  al., Methods, "Statistical analysis"), columns ``paper_ttest_*``: a reproduction of the
  paper's statistic, never inference. Its p-value falls without bound as more replicates are
  drawn (much faster than ``1/sqrt(n_boot)``): any fixed non-zero difference becomes
  "significant". ``--paper-ttest independent`` builds the two series from independent
  resamples, the construction that reproduces the paper's t
  (:func:`medprobe.stats.paper_ttest_on_bootstrap_replicates`).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from medprobe import metrics
from medprobe.auroc_ci import delong_test
from medprobe.errors import ComparisonError, ConfigError, ResultsError
from medprobe.multiplicity import PVALUE_ADJUSTMENTS, adjust_pvalues
from medprobe.results import Predictions, Results, read_predictions, read_results
from medprobe.stats import (
    REPLICATE_CONSTRUCTIONS,
    bootstrap_replicates,
    bootstrap_seed,
    mcnemar,
    summarize,
    ttest_on_replicates,
)

__all__ = [
    "ComparisonError",
    "ResultsError",
    "Run",
    "adjust_rows",
    "align",
    "bootstrap_p",
    "compare_pair",
    "compare_runs",
    "delong",
    "delong_from_placements",
    "delong_placements",
    "family_of",
    "format_comparison",
    "load_run",
    "mcnemar",
    "pair_groups",
    "write_comparison",
]


@dataclass(frozen=True)
class Run:
    """One run's results and test predictions, read through :mod:`medprobe.results`.

    Attributes:
        path: the run directory.
        results: its ``results.json`` (:class:`medprobe.results.Results`).
        predictions: its ``predictions.csv`` (:class:`medprobe.results.Predictions`).

    ``ids`` (``(n,)`` str), ``y`` (multiclass ``(n,)`` int64; multi-label ``(n, K)`` bool),
    ``proba`` (``(n, K)`` float64), ``classes`` and ``multilabel`` are the predictions'.
    """

    path: Path
    results: Results
    predictions: Predictions

    @property
    def ids(self) -> list[str]:
        return self.predictions.ids

    @property
    def y(self) -> np.ndarray:
        return self.predictions.y

    @property
    def proba(self) -> np.ndarray:
        return self.predictions.proba

    @property
    def classes(self) -> list[str]:
        return self.predictions.classes

    @property
    def multilabel(self) -> bool:
        return self.predictions.multilabel

    @property
    def label(self) -> str:
        """Short display name keyed on the model's identity (never its extractor kind):
        ``<model> L<layer> frac<train fraction> s<seed>``, e.g. ``plip L2 frac1 s0`` (``frac``,
        not ``f``, so that a label never reads like a metric name such as ``f1_macro``)."""
        r = self.results
        return f"{r.model} L{r.layer} frac{r.train_fraction:g} s{r.seed}"

    def subset(self, order: np.ndarray) -> Run:
        """The same run with rows reordered / selected by ``order`` (int indices)."""
        return Run(self.path, self.results, self.predictions.subset(order))


def load_run(path: str | Path) -> Run:
    """Read ``<path>/results.json`` and ``<path>/predictions.csv``.

    Raises:
        ResultsError: a file is missing or unreadable, or the CSV lacks a ``p_<class>``
            column, names an unknown label or repeats an id (:mod:`medprobe.results`).
    """
    d = Path(path)
    results = read_results(d)
    return Run(
        d,
        results,
        read_predictions(d, results.classes, results.multilabel, results.predictions_sha256),
    )


def align(runs: Sequence[Run]) -> list[Run]:
    """Reorder every run to the first run's id order.

    Raises:
        ComparisonError: fewer than two runs; one folder given twice; different tasks, classes
            or layouts; different test ids (one line naming a differing id and both counts); or
            the same id with different labels.
    """
    if len(runs) < 2:
        raise ComparisonError(f"need at least two runs to compare; got {len(runs)}")
    seen: dict[Path, Path] = {}
    for r in runs:  # a run against itself gives differences of exactly 0 and p = 1
        real = Path(r.path).resolve()
        if real in seen:
            raise ComparisonError(
                f"the same run folder is given twice ({seen[real]} and {r.path}): "
                "compare different runs"
            )
        seen[real] = Path(r.path)
    ref = runs[0]
    out = [ref]
    for r in runs[1:]:
        if r.results.task != ref.results.task:
            raise ComparisonError(
                f"different tasks: {ref.path} is {ref.results.task!r}, "
                f"{r.path} is {r.results.task!r}"
            )
        if r.classes != ref.classes or r.multilabel != ref.multilabel:
            raise ComparisonError(
                f"different classes: {ref.path} has {ref.classes}, {r.path} has {r.classes}"
            )
        if set(r.ids) != set(ref.ids):
            only_ref = sorted(set(ref.ids) - set(r.ids))
            only_r = sorted(set(r.ids) - set(ref.ids))
            which, where, other = (
                (only_ref[0], ref.path, r.path) if only_ref else (only_r[0], r.path, ref.path)
            )
            raise ComparisonError(
                f"runs are not on the same test set: id {which!r} is in {where} but not in "
                f"{other} ({ref.path}: {len(ref.ids)} ids, {r.path}: {len(r.ids)} ids)"
            )
        own = {i: k for k, i in enumerate(r.ids)}
        rr = r.subset(np.array([own[i] for i in ref.ids], dtype=np.int64))
        bad = np.flatnonzero((rr.y != ref.y).any(axis=1) if ref.multilabel else (rr.y != ref.y))
        if bad.size:
            raise ComparisonError(
                f"id {ref.ids[bad[0]]!r} has different labels in {ref.path} and {r.path} "
                f"({bad.size} such ids)"
            )
        out.append(rr)
    return out


# ----------------------------------------------------------------------------- DeLong


def delong_placements(
    y_bin: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUROCs and DeLong structural components of ``m`` score vectors on one binary label.

    Fast algorithm of Sun & Xu 2014 (midranks via ``scipy.stats.rankdata``, ties = 1/2), equal
    to DeLong et al. 1988's ``V10`` / ``V01`` computed pair by pair.

    Args:
        y_bin: ``(n,)`` bool or 0/1, at least one positive and one negative.
        scores: ``(m, n)`` float scores (a ``(n,)`` vector is ``m = 1``).

    Returns:
        ``(auc, v_pos, v_neg)``: ``(m,)`` AUROCs; ``(m, n_pos)`` placement of each positive
        (fraction of negatives scored below it, ties 1/2; DeLong's ``V10``); ``(m, n_neg)``
        placement of each negative (fraction of positives scored above it; ``V01``).
        ``auc == v_pos.mean(1) == v_neg.mean(1)``.

    Raises:
        ValueError: shape mismatch, labels not 0/1, a class without examples, non-finite scores.
    """
    y = np.asarray(y_bin)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if y.ndim != 1 or s.shape[1] != y.shape[0]:
        raise ValueError(f"y_bin must be (n,) and scores (m, n); got {y.shape} and {s.shape}")
    if y.dtype != np.bool_:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("y_bin must contain only 0 and 1")
        y = y.astype(bool)
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"DeLong needs positives and negatives; got {n_pos} and {n_neg}")
    x, z = s[:, y], s[:, ~y]
    tx = sps.rankdata(x, axis=1)
    tz = sps.rankdata(z, axis=1)
    t_all = sps.rankdata(np.concatenate([x, z], axis=1), axis=1)
    v_pos = (t_all[:, :n_pos] - tx) / n_neg
    v_neg = 1.0 - (t_all[:, n_pos:] - tz) / n_pos
    auc = (t_all[:, :n_pos].sum(axis=1) / n_pos - (n_pos + 1) / 2.0) / n_neg
    return auc, v_pos, v_neg


def delong_from_placements(
    v_pos: np.ndarray, v_neg: np.ndarray, *, ci: float = 0.95
) -> dict[str, float]:
    """DeLong's test of ``AUC_0 - AUC_1`` from the two curves' structural components.

    ``S = cov(v_pos) / n_pos + cov(v_neg) / n_neg`` (covariances with ``ddof=1``, as R's
    ``cov`` in pROC), ``var(diff) = S00 + S11 - 2 S01``, ``z = diff / sqrt(var)``, two-sided
    normal p-value; CI ``diff +- Phi^-1((1 + ci) / 2) * SE``. When the variance is 0 (e.g.
    identical curves) ``z = 0`` and ``p = 1`` if ``diff == 0`` (pROC does the same).

    Args:
        v_pos: ``(2, n_pos)`` placements of the positives (``V10``), paired by example.
        v_neg: ``(2, n_neg)`` placements of the negatives (``V01``).
        ci: two-sided CI level in (0, 1).

    Returns:
        ``{"auc_a", "auc_b", "diff", "se", "z", "p", "ci_low", "ci_high"}``.

    Raises:
        ValueError: not two curves, or fewer than 2 positives / negatives.
    """
    vp, vn = np.asarray(v_pos, dtype=np.float64), np.asarray(v_neg, dtype=np.float64)
    if vp.ndim != 2 or vn.ndim != 2 or vp.shape[0] != 2 or vn.shape[0] != 2:
        raise ValueError(f"need (2, n_pos) and (2, n_neg) placements; got {vp.shape}, {vn.shape}")
    if vp.shape[1] < 2 or vn.shape[1] < 2:
        raise ValueError("DeLong's variance needs at least 2 positives and 2 negatives")
    auc = vp.mean(axis=1)
    cov = np.cov(vp) / vp.shape[1] + np.cov(vn) / vn.shape[1]
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    diff = float(auc[0] - auc[1])
    se = math.sqrt(max(var, 0.0))
    if se > 1e-15:
        z = diff / se
        p = float(2.0 * sps.norm.sf(abs(z)))
    else:
        z, p = (0.0, 1.0) if abs(diff) < 1e-15 else (math.copysign(math.inf, diff), 0.0)
    q = float(sps.norm.ppf((1.0 + ci) / 2.0))
    return {
        "auc_a": float(auc[0]),
        "auc_b": float(auc[1]),
        "diff": diff,
        "se": se,
        "z": float(z),
        "p": p,
        "ci_low": diff - q * se,
        "ci_high": diff + q * se,
    }


def delong(
    y_bin: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, *, ci: float = 0.95
) -> dict[str, float]:
    """DeLong's paired test of two AUROCs on the same examples (see module docstring).

    Args:
        y_bin: ``(n,)`` 0/1 labels. score_a, score_b: ``(n,)`` scores, same example order.

    Returns:
        as :func:`delong_from_placements`.
    """
    _, v_pos, v_neg = delong_placements(y_bin, np.stack([score_a, score_b]))
    return delong_from_placements(v_pos, v_neg, ci=ci)


# ----------------------------------------------------------------------------- comparisons


def _point_values(run: Run) -> dict[str, float]:
    per = metrics.per_class_auroc(run.y, run.proba, multilabel=run.multilabel)
    out = {
        "auroc_macro": metrics.auroc_macro(run.y, run.proba, multilabel=run.multilabel),
        "f1_macro": metrics.f1_macro(run.y, run.proba, multilabel=run.multilabel),
        "accuracy": metrics.accuracy(run.y, run.proba, multilabel=run.multilabel),
    }
    for c, v in zip(run.classes, per, strict=True):
        out[f"auroc/{c}"] = float(v)
    return out


def pair_groups(a: Run, b: Run) -> np.ndarray | None:
    """The patient ids both runs' rows share (``group`` column of ``predictions.csv``), or None.

    Runs written without the column (tasks without patient ids, or before issue 13) give
    None, and the images are the resampling unit; one run with ids is enough (ids belong to
    the examples, not to the model).

    Raises:
        ComparisonError: the runs are not aligned, or both carry ids that disagree for a row.
    """
    if a.ids != b.ids:
        raise ComparisonError("runs are not aligned by id; call align() first")
    ga, gb = a.predictions.groups, b.predictions.groups
    if ga is not None and gb is not None and ga != gb:
        k = next(i for i, (x, y) in enumerate(zip(ga, gb, strict=True)) if x != y)
        raise ComparisonError(
            f"id {a.ids[k]!r} belongs to patient {ga[k]!r} in {a.path} but {gb[k]!r} in {b.path}"
        )
    g = ga if ga is not None else gb
    return None if g is None else np.asarray(g, dtype=str)


def bootstrap_p(d: np.ndarray) -> float:
    """Two-sided percentile-bootstrap p-value of a paired difference: ``min(1, 2 * min(P(d <=
    0), P(d >= 0)))`` over the valid replicates ``d``, each share counted as ``(k + 1) / (B +
    1)`` so that p > 0 (Davison & Hinkley 1997, sec. 4.4). It is the test dual to the
    percentile CI of the difference (the CI at level ``1 - alpha`` excludes 0 about when
    ``p < alpha``), used for metrics without a closed-form test (macro F1, multi-label macro
    AUROC). nan when no replicate is valid."""
    x = np.asarray(d, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return math.nan
    if np.all(x == 0):
        return 1.0
    lo = (np.count_nonzero(x <= 0) + 1) / (x.size + 1)
    hi = (np.count_nonzero(x >= 0) + 1) / (x.size + 1)
    return float(min(1.0, 2.0 * min(lo, hi)))


def compare_pair(
    a: Run,
    b: Run,
    *,
    n_boot: int | None = None,
    ci: float = 0.95,
    paper_ttest: str = "paired",
) -> list[dict[str, Any]]:
    """Every statistic for runs ``a`` and ``b`` (already aligned, see :func:`align`).

    Resampling: the same resamples for both runs (seed ``bootstrap_seed(task, "test", seed)``
    of run ``a``); patients when the runs' ``predictions.csv`` carry a ``group`` column
    (:func:`pair_groups`), else images. DeLong's test is patient-level (Obuchowski 1997) with
    patient ids (:func:`medprobe.auroc_ci.delong_test`). p-values here are unadjusted:
    :func:`compare_runs` adds the adjusted ones (:func:`adjust_rows`).

    Args:
        a, b: runs on the same test rows in the same order.
        n_boot: bootstrap replicates (default: run ``a``'s ``bootstrap.n``).
        ci: level of the bootstrap and DeLong CIs.
        paper_ttest: construction of the paper's t-test on bootstrap replicates,
            ``"paired"`` (the same resamples) or ``"independent"`` (each run its own
            resamples, what reproduces the paper's t: see
            :func:`medprobe.stats.paper_ttest_on_bootstrap_replicates`). Never inference.

    Returns:
        One dict per metric (``auroc_macro``, ``f1_macro``, ``accuracy``, ``auroc/<class>``):
        ``run_a``, ``run_b`` (labels), ``dir_a``, ``dir_b``, ``metric``, ``value_a``,
        ``value_b``, ``diff`` (A - B), ``diff_sd``, ``diff_ci_low``, ``diff_ci_high``,
        ``n_replicates``, ``diff_p`` (:func:`bootstrap_p`), ``resampling_unit``
        (``image``/``patient``), ``n_resampling_units``; where defined ``delong_z``,
        ``delong_p``, ``delong_ci_low``, ``delong_ci_high`` (binary / per-class AUROC) and
        ``mcnemar_b``, ``mcnemar_c``, ``mcnemar_method``, ``mcnemar_p``, ``mcnemar_p_exact``,
        ``mcnemar_chi2``, ``mcnemar_p_chi2`` (multiclass accuracy;
        :func:`medprobe.stats.mcnemar`), else None; ``test`` and ``p``: the row's primary
        test (``delong``, ``mcnemar``, else ``bootstrap`` with ``diff_p``);
        ``paper_ttest_t``, ``paper_ttest_p``, ``paper_ttest_construction`` (the paper's
        t-test on bootstrap replicates, reproduction only).

    Raises:
        ComparisonError: the runs are not aligned or disagree on patient ids.
        ValueError: unknown ``paper_ttest``.
    """
    if paper_ttest not in REPLICATE_CONSTRUCTIONS:
        raise ValueError(
            f"paper_ttest must be one of {REPLICATE_CONSTRUCTIONS}; got {paper_ttest!r}"
        )
    groups = pair_groups(a, b)
    task, seed = a.results.task, a.results.seed
    n_boot = int(n_boot or a.results.bootstrap.n)
    boot_seed = bootstrap_seed(task, "test", seed)

    def replicates(r: Run, s: int) -> dict[str, np.ndarray]:
        return bootstrap_replicates(r.y, r.proba, r.classes, multilabel=r.multilabel,
                                    n_boot=n_boot, seed=s, groups=groups).metrics  # fmt: skip

    reps = [replicates(r, boot_seed) for r in (a, b)]
    paper = reps
    if paper_ttest == "independent":
        paper = [replicates(r, bootstrap_seed(boot_seed, "paper-independent", k))
                 for r, k in ((a, "a"), (b, "b"))]  # fmt: skip
    n_units = len(a.ids) if groups is None else int(np.unique(groups).size)
    val_a, val_b = _point_values(a), _point_values(b)
    y_bin = a.y if a.multilabel else metrics.indicator(a.y, len(a.classes))
    binary = not a.multilabel and len(a.classes) == 2
    rows = []
    for key in reps[0]:
        if key not in reps[1]:
            continue
        d = reps[0][key] - reps[1][key]
        s = summarize(key, val_a[key] - val_b[key], d, ci=ci)
        tt = ttest_on_replicates(paper[0][key], paper[1][key])
        row: dict[str, Any] = {
            "task": task,
            "run_a": a.label,
            "run_b": b.label,
            "dir_a": str(a.path),
            "dir_b": str(b.path),
            "metric": key,
            "value_a": val_a[key],
            "value_b": val_b[key],
            "diff": s["value"],
            "diff_sd": s["sd"],
            "diff_ci_low": s["ci_low"],
            "diff_ci_high": s["ci_high"],
            "n_replicates": s["n_replicates"],
            "diff_p": bootstrap_p(d),
            "resampling_unit": "image" if groups is None else "patient",
            "n_resampling_units": n_units,
            "n_test": len(a.ids),
        }
        dl = None
        j = a.classes.index(key.split("/", 1)[1]) if key.startswith("auroc/") else None
        if j is None and key == "auroc_macro" and binary:
            j = 1
        if j is not None:
            try:
                dl = delong_test(y_bin[:, j], a.proba[:, j], b.proba[:, j], groups=groups, ci=ci)
            except ValueError:  # fewer than 2 positive or negative units: no DeLong variance
                dl = None
        for f in ("z", "p", "ci_low", "ci_high"):
            row[f"delong_{f}"] = dl[f] if dl else None
        mc = None
        if key == "accuracy" and not a.multilabel:
            ok_a = metrics.predict(a.proba, multilabel=False) == a.y
            ok_b = metrics.predict(b.proba, multilabel=False) == b.y
            mc = mcnemar(ok_a, ok_b)
        for f in ("b", "c", "method", "p", "p_exact", "chi2", "p_chi2"):
            row[f"mcnemar_{f}"] = mc[f] if mc else None
        if dl:
            row["test"], row["p"] = "delong", dl["p"]
        elif mc:
            row["test"], row["p"] = "mcnemar", mc["p"]
        else:
            row["test"], row["p"] = "bootstrap", row["diff_p"]
        row["paper_ttest_t"] = tt["t"]
        row["paper_ttest_p"] = tt["p"]
        row["paper_ttest_construction"] = paper_ttest
        rows.append(row)
    return rows


def family_of(row: dict[str, Any]) -> str:
    """The multiplicity family of a comparison row: every per-class AUROC test of the
    comparison is one family (classes x model pairs), each summary metric another (its model
    pairs)."""
    return "per-class AUROC" if str(row["metric"]).startswith("auroc/") else str(row["metric"])


def adjust_rows(
    rows: Sequence[dict[str, Any]], *, method: str = "holm", alpha: float = 0.05
) -> list[dict[str, Any]]:
    """Add the multiplicity-adjusted p-values to comparison rows (new dicts, same order).

    Families (:func:`family_of`): the per-class AUROC tests of all model pairs together, and
    each summary metric (``auroc_macro``, ``f1_macro``, ``accuracy``) over all model pairs.
    Within a family the rows' primary p-values (``p``) are adjusted by
    :func:`medprobe.multiplicity.adjust_pvalues` (Holm 1979, FWER; or Benjamini-Hochberg
    1995, FDR); rows without a p-value are not part of the family.

    Adds ``p_adj``, ``p_adjustment`` (method), ``family`` (e.g. ``"holm over 18 per-class
    AUROC tests (DeLong) of 2 model pairs"``) and ``significant`` (``p_adj < alpha``; None
    without a p-value).

    Raises:
        ValueError: unknown method.
    """
    out = [dict(r) for r in rows]
    fams: dict[str, list[int]] = {}
    for i, r in enumerate(out):
        fams.setdefault(family_of(r), []).append(i)
    for fam, idx in fams.items():
        ps = [out[i]["p"] for i in idx]
        ps = [None if p is None or (isinstance(p, float) and math.isnan(p)) else p for p in ps]
        adj = adjust_pvalues(ps, method)
        tests = sorted({str(out[i]["test"]) for i, p in zip(idx, ps, strict=True) if p is not None})
        pairs = len({(out[i]["dir_a"], out[i]["dir_b"]) for i in idx})
        n = sum(p is not None for p in ps)
        what = f"{fam} test" + ("s" if n != 1 else "")
        label = (f"{method} over {n} {what} ({', '.join(tests) or 'none'}) of {pairs} model "
                 f"pair{'s' if pairs != 1 else ''}")  # fmt: skip
        for i, p, q in zip(idx, ps, adj, strict=True):
            out[i]["p_adj"] = None if p is None else float(q)
            out[i]["p_adjustment"] = method
            out[i]["family"] = label
            out[i]["significant"] = None if p is None else bool(q < alpha)
    return out


def compare_runs(
    runs: Sequence[Run],
    *,
    n_boot: int | None = None,
    ci: float = 0.95,
    adjust: str = "holm",
    paper_ttest: str = "paired",
) -> list[dict[str, Any]]:
    """:func:`compare_pair` for every pair ``(i, j), i < j`` after :func:`align`, with
    p-values adjusted for multiplicity (:func:`adjust_rows`, ``method=adjust``, ``alpha = 1 -
    ci``)."""
    aligned = align(runs)
    rows: list[dict[str, Any]] = []
    for a, b in itertools.combinations(aligned, 2):
        rows += compare_pair(a, b, n_boot=n_boot, ci=ci, paper_ttest=paper_ttest)
    return adjust_rows(rows, method=adjust, alpha=1.0 - ci)


COLUMNS = [
    "task", "run_a", "run_b", "metric", "value_a", "value_b", "diff", "diff_sd", "diff_ci_low",
    "diff_ci_high", "n_replicates", "diff_p", "test", "p", "p_adj", "p_adjustment", "family",
    "significant", "delong_z", "delong_p", "delong_ci_low", "delong_ci_high", "mcnemar_b",
    "mcnemar_c", "mcnemar_method", "mcnemar_p", "mcnemar_p_exact", "mcnemar_chi2",
    "mcnemar_p_chi2", "paper_ttest_construction", "paper_ttest_t", "paper_ttest_p",
    "resampling_unit", "n_resampling_units", "n_test", "dir_a", "dir_b",
]  # fmt: skip


def write_comparison(rows: Sequence[dict[str, Any]], out_dir: Path) -> tuple[Path, Path]:
    """Write ``comparison.json`` and ``comparison.csv`` (columns :data:`COLUMNS`) to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pj, pc = out_dir / "comparison.json", out_dir / "comparison.csv"

    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    pj.write_text(json.dumps([{k: clean(v) for k, v in r.items()} for r in rows], indent=2))
    with open(pc, "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r.get(k) is None else r[k] for k in COLUMNS})
    return pj, pc


def _fmt_p(p: float | None) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "-"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def format_comparison(rows: Sequence[dict[str, Any]]) -> str:
    """Console table: one line per pair and metric: difference, its paired-bootstrap CI, the
    DeLong and McNemar p-values, the row's primary p adjusted for multiplicity with ``*``
    where significant; then the resampling unit, the families and the caveat of the paper's
    t-test (kept in comparison.csv only)."""
    method = next((str(r["p_adjustment"]) for r in rows if r.get("p_adjustment")), "holm")
    adj_head = f"p {method}"
    # columns at least as wide as their longest name plus a space (a 24-character run name ran
    # into the next column: "dinov2_base Lnorm frac1 s0auroc_macro")
    wa = max([24, *(len(str(r["run_a"])) + 2 for r in rows)])
    wb = max([24, *(len(str(r["run_b"])) + 2 for r in rows)])
    wm = max([22, *(len(str(r["metric"])) + 2 for r in rows)])
    head = (
        f"{'A':<{wa}}{'B':<{wb}}{'metric':<{wm}}{'A-B':>8}  {'95% CI':<18}"
        f"{'DeLong p':>9}{'McNemar p':>10}{adj_head:>10}"
    )
    lines = [head]
    for r in rows:
        interval = f"[{r['diff_ci_low']:.4f}, {r['diff_ci_high']:.4f}]"
        mark = " *" if r.get("significant") else ""
        lines.append(
            f"{r['run_a']:<{wa}}{r['run_b']:<{wb}}{r['metric']:<{wm}}{r['diff']:>8.4f}  "
            f"{interval:<18}"
            f"{_fmt_p(r['delong_p']):>9}{_fmt_p(r['mcnemar_p']):>10}"
            f"{_fmt_p(r.get('p_adj')):>10}{mark}"
        )
    units = sorted({f"{r['resampling_unit']} ({r['n_resampling_units']})" for r in rows})
    lines.append(f"resampling unit: {', '.join(units)}; both runs of a pair on the same resamples")
    lines.append(
        f"p {method}: the row's test (DeLong for AUROC, McNemar for accuracy, else the paired "
        f"bootstrap) adjusted by {method} within its family; * = adjusted p below 0.05. Families:"
    )
    lines += [
        f"  {f}" for f in dict.fromkeys(str(r.get("family")) for r in rows if r.get("family"))
    ]
    lines.append(
        "the paper's t-test on bootstrap replicates (paper_ttest_* in comparison.csv) is a "
        "reproduction, not inference: its p falls without bound as n_boot grows"
    )
    return "\n".join(lines)


def check_boot_args(prog: str, n_boot: int | None, ci: float | None = None) -> None:
    """Refuse ``--n-boot`` < 2 and ``--ci`` outside (0, 1) before any file is read (they were a
    ValueError traceback, and ``--n-boot 0`` silently meant "run A's n").

    Raises:
        ConfigError: naming the option.
    """
    if n_boot is not None and n_boot < 2:
        raise ConfigError(f"{prog}: --n-boot must be >= 2 (replicates), got {n_boot}")
    if ci is not None and not 0.0 < ci < 1.0:
        raise ConfigError(f"{prog}: --ci must be in (0, 1), e.g. 0.95, got {ci}")


def main(argv: Sequence[str] | None = None) -> int:
    """``medprobe compare RUN RUN [...]``: paired tests between run folders; returns 0.

    Raises:
        ComparisonError: runs that cannot be compared (other test ids, labels or tasks).
        ResultsError: a run folder that cannot be read.
        ConfigError: bad arguments (``medprobe compare --help``).
    """
    from medprobe.cli.common import ArgumentParser, folder

    ap = ArgumentParser(
        prog="medprobe compare",
        description="Paired comparison of medprobe runs on the same test set: paired "
        "bootstrap CI of the difference, DeLong (AUROC), McNemar (accuracy), p-values adjusted "
        "for multiplicity; patients are the resampling unit when the runs have patient ids.",
    )
    ap.add_argument("runs", nargs="+", type=Path,
                    help="required: two or more run folders (results.json inside)")  # fmt: skip
    ap.add_argument("--out", type=folder, default=Path("comparison"),
                    help="folder for comparison.json and comparison.csv (default ./comparison)")  # fmt: skip
    ap.add_argument("--n-boot", type=int, default=None, help="replicates (default: run A's)")
    ap.add_argument("--ci", type=float, default=0.95, help="CI level of the differences")
    ap.add_argument("--adjust", choices=PVALUE_ADJUSTMENTS, default="holm",
                    help="multiplicity adjustment: holm (FWER, default) or bh (FDR)")  # fmt: skip
    ap.add_argument("--paper-ttest", choices=REPLICATE_CONSTRUCTIONS, default="paired",
                    help="replicate series of the paper's t-test on bootstrap replicates "
                    "(reproduction only): paired resamples, or independent ones as the paper")  # fmt: skip
    args = ap.parse_args(argv)
    check_boot_args("medprobe compare", args.n_boot, args.ci)
    if len(args.runs) < 2:
        raise ComparisonError("medprobe compare needs at least two run folders")
    rows = compare_runs([load_run(p) for p in args.runs], n_boot=args.n_boot, ci=args.ci,
                        adjust=args.adjust, paper_ttest=args.paper_ttest)  # fmt: skip
    print(format_comparison(rows))
    pj, pc = write_comparison(rows, args.out)
    print(f"wrote {pj} and {pc}")
    return 0


if __name__ == "__main__":
    from medprobe.cli import main as cli_main

    cli_main(["compare", *sys.argv[1:]])
