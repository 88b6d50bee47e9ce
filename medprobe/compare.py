"""Paired comparisons of runs on the same test set, from ``results.json`` + ``predictions.csv``.

``medprobe compare RUN_DIR RUN_DIR [...] [--out DIR]`` compares every pair of runs
and writes ``comparison.json`` and ``comparison.csv`` (one row per pair and metric).

Pairing: runs are matched by example id (order on disk does not matter); runs whose test ids
differ are refused (:class:`ComparisonError`). Both runs' bootstrap replicates are drawn with
the *same* resample counts (seed ``bootstrap_seed(task, "test", seed)`` of the first run of the
pair, never the model; :func:`medprobe.stats.bootstrap_replicates`), so replicate ``b`` of run
A and replicate ``b`` of run B score the same resampled test set.

Statistics per metric (sources):

- Paired bootstrap difference ``A - B``: point value on the full test set, bootstrap SD and
  percentile CI of the per-replicate differences (Efron & Tibshirani 1993, ch. 13 and 16).
- The paper's paired two-tailed t-test over bootstrap replicates
  (``scipy.stats.ttest_rel(rep_A, rep_B)``; Han et al., Methods, "Statistical analysis").
  Reported to reproduce the paper's statistics only. It is NOT a test of a population-level
  difference: the replicates are not independent observations of new test sets, so its
  p-value shrinks like ``1/sqrt(n_boot)`` as more replicates are drawn (any fixed non-zero
  difference becomes "significant" with enough replicates). Use the bootstrap CI, DeLong or
  McNemar for inference.
- DeLong's test for correlated AUROCs (DeLong, DeLong & Clarke-Pearson 1988, Biometrics
  44:837), computed with the fast midrank algorithm of Sun & Xu 2014 (IEEE Signal Process.
  Lett. 21:1389): binary tasks and every one-vs-rest class (``auroc/<class>``). Two-sided
  p-value from ``z = (AUC_A - AUC_B) / SE``; the CI of the difference is ``diff +- z_q SE``
  as in pROC's ``roc.test`` (Robin et al. 2011).
- McNemar's test for accuracy (multiclass, top-1): exact two-sided binomial test on the
  discordant pairs (``scipy.stats.binomtest(b, b + c, 0.5)``) and the chi-square statistic
  with continuity correction ``(|b - c| - 1)^2 / (b + c)`` on 1 df (McNemar 1947,
  Psychometrika 12:153; Edwards 1948).
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
from medprobe.errors import ComparisonError, ResultsError
from medprobe.results import Predictions, Results, read_predictions, read_results
from medprobe.stats import bootstrap_replicates, bootstrap_seed, summarize

__all__ = [
    "ComparisonError",
    "ResultsError",
    "Run",
    "align",
    "compare_pair",
    "compare_runs",
    "delong",
    "delong_from_placements",
    "delong_placements",
    "format_comparison",
    "load_run",
    "mcnemar",
    "paired_ttest",
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
        ``<model> L<layer> f<fraction> s<seed>``, e.g. ``plip L2 f1 s0``."""
        r = self.results
        return f"{r.model} L{r.layer} f{r.train_fraction:g} s{r.seed}"

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
    return Run(d, results, read_predictions(d, results.classes, results.multilabel))


def align(runs: Sequence[Run]) -> list[Run]:
    """Reorder every run to the first run's id order.

    Raises:
        ComparisonError: fewer than two runs; different tasks, classes or layouts; different
            test ids (one line naming a differing id and both counts); or the same id with
            different labels.
    """
    if len(runs) < 2:
        raise ComparisonError(f"need at least two runs to compare; got {len(runs)}")
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


# ----------------------------------------------------------------------------- McNemar, t-test


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float | int]:
    """McNemar's test of paired accuracies.

    Args:
        correct_a, correct_b: ``(n,)`` bool, whether each model got example ``i`` right.

    Returns:
        ``{"b", "c", "p_exact", "chi2", "p_chi2"}``: ``b`` = A right and B wrong, ``c`` = A
        wrong and B right; exact two-sided binomial p on the ``b + c`` discordant pairs
        (McNemar 1947); chi-square with continuity correction ``(|b - c| - 1)^2 / (b + c)``
        (Edwards 1948), 1 df. No discordant pairs: ``p = 1``, ``chi2 = 0``.
    """
    a = np.asarray(correct_a, dtype=bool)
    bb = np.asarray(correct_b, dtype=bool)
    if a.shape != bb.shape or a.ndim != 1:
        raise ValueError(f"correct_a and correct_b must be (n,); got {a.shape}, {bb.shape}")
    b = int((a & ~bb).sum())
    c = int((~a & bb).sum())
    if b + c == 0:
        return {"b": 0, "c": 0, "p_exact": 1.0, "chi2": 0.0, "p_chi2": 1.0}
    p_exact = float(sps.binomtest(b, b + c, 0.5).pvalue)
    chi2 = max(abs(b - c) - 1, 0) ** 2 / (b + c)
    return {
        "b": b,
        "c": c,
        "p_exact": p_exact,
        "chi2": float(chi2),
        "p_chi2": float(sps.chi2.sf(chi2, 1)),
    }


def paired_ttest(rep_a: np.ndarray, rep_b: np.ndarray) -> dict[str, float | int]:
    """The paper's paired two-tailed t-test over bootstrap replicates (``ttest_rel``).

    Replicates where either run is nan are dropped. All differences zero: ``t = 0``, ``p = 1``.
    Caveat (see module docstring): its p-value shrinks with the number of replicates and it
    does not test a population-level difference; reported only to reproduce the paper.

    Returns:
        ``{"t", "p", "n"}`` (``n`` = replicate pairs used).
    """
    a, b = np.asarray(rep_a, dtype=np.float64), np.asarray(rep_b, dtype=np.float64)
    ok = ~(np.isnan(a) | np.isnan(b))
    a, b = a[ok], b[ok]
    d = a - b
    if d.size < 2 or (np.all(d == d[0]) and d[0] == 0):
        return {"t": 0.0, "p": 1.0, "n": int(d.size)}
    if np.all(d == d[0]):  # constant non-zero difference: zero variance, t is infinite
        return {"t": math.copysign(math.inf, d[0]), "p": 0.0, "n": int(d.size)}
    res = sps.ttest_rel(a, b)
    return {"t": float(res.statistic), "p": float(res.pvalue), "n": int(d.size)}


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


def compare_pair(
    a: Run, b: Run, *, n_boot: int | None = None, ci: float = 0.95
) -> list[dict[str, Any]]:
    """Every statistic for runs ``a`` and ``b`` (already aligned, see :func:`align`).

    Args:
        a, b: runs on the same test rows in the same order.
        n_boot: bootstrap replicates (default: run ``a``'s ``bootstrap.n``).
        ci: level of the bootstrap and DeLong CIs.

    Returns:
        One dict per metric (``auroc_macro``, ``f1_macro``, ``accuracy``, ``auroc/<class>``):
        ``run_a``, ``run_b`` (labels), ``dir_a``, ``dir_b``, ``metric``, ``value_a``,
        ``value_b``, ``diff`` (A - B), ``diff_sd``, ``diff_ci_low``, ``diff_ci_high``,
        ``n_replicates``, ``ttest_t``, ``ttest_p``, and where defined ``delong_z``,
        ``delong_p``, ``delong_ci_low``, ``delong_ci_high`` (binary / per-class AUROC),
        ``mcnemar_b``, ``mcnemar_c``, ``mcnemar_p_exact``, ``mcnemar_chi2``, ``mcnemar_p_chi2``
        (multiclass accuracy); else None.

    Raises:
        ComparisonError: the runs are not aligned.
    """
    if a.ids != b.ids:
        raise ComparisonError("runs are not aligned by id; call align() first")
    task, seed = a.results.task, a.results.seed
    n_boot = int(n_boot or a.results.bootstrap.n)
    boot_seed = bootstrap_seed(task, "test", seed)
    reps = [
        bootstrap_replicates(
            r.y, r.proba, r.classes, multilabel=r.multilabel, n_boot=n_boot, seed=boot_seed
        ).metrics
        for r in (a, b)
    ]
    val_a, val_b = _point_values(a), _point_values(b)
    y_bin = a.y if a.multilabel else metrics.indicator(a.y, len(a.classes))
    binary = not a.multilabel and len(a.classes) == 2
    rows = []
    for key in reps[0]:
        if key not in reps[1]:
            continue
        d = reps[0][key] - reps[1][key]
        s = summarize(key, val_a[key] - val_b[key], d, ci=ci)
        tt = paired_ttest(reps[0][key], reps[1][key])
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
            "ttest_t": tt["t"],
            "ttest_p": tt["p"],
            "n_test": len(a.ids),
        }
        dl = None
        j = a.classes.index(key.split("/", 1)[1]) if key.startswith("auroc/") else None
        if j is None and key == "auroc_macro" and binary:
            j = 1
        if j is not None:
            try:
                dl = delong(y_bin[:, j], a.proba[:, j], b.proba[:, j], ci=ci)
            except ValueError:  # fewer than 2 positives or negatives: no DeLong variance
                dl = None
        for f in ("z", "p", "ci_low", "ci_high"):
            row[f"delong_{f}"] = dl[f] if dl else None
        mc = None
        if key == "accuracy" and not a.multilabel:
            ok_a = metrics.predict(a.proba, multilabel=False) == a.y
            ok_b = metrics.predict(b.proba, multilabel=False) == b.y
            mc = mcnemar(ok_a, ok_b)
        for f in ("b", "c", "p_exact", "chi2", "p_chi2"):
            row[f"mcnemar_{f}"] = mc[f] if mc else None
        rows.append(row)
    return rows


def compare_runs(
    runs: Sequence[Run], *, n_boot: int | None = None, ci: float = 0.95
) -> list[dict[str, Any]]:
    """:func:`compare_pair` for every pair ``(i, j), i < j`` after :func:`align`."""
    aligned = align(runs)
    rows: list[dict[str, Any]] = []
    for a, b in itertools.combinations(aligned, 2):
        rows += compare_pair(a, b, n_boot=n_boot, ci=ci)
    return rows


COLUMNS = [
    "task", "run_a", "run_b", "metric", "value_a", "value_b", "diff", "diff_sd", "diff_ci_low",
    "diff_ci_high", "n_replicates", "ttest_t", "ttest_p", "delong_z", "delong_p",
    "delong_ci_low", "delong_ci_high", "mcnemar_b", "mcnemar_c", "mcnemar_p_exact",
    "mcnemar_chi2", "mcnemar_p_chi2", "n_test", "dir_a", "dir_b",
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
    if p is None:
        return "-"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def format_comparison(rows: Sequence[dict[str, Any]]) -> str:
    """Console table: one line per pair and metric (difference, CI, p-values)."""
    head = (
        f"{'A':<24}{'B':<24}{'metric':<22}{'A-B':>8}  {'95% CI':<18}{'t-test p':>9}"
        f"{'DeLong p':>9}{'McNemar p':>10}"
    )
    lines = [head]
    for r in rows:
        interval = f"[{r['diff_ci_low']:.4f}, {r['diff_ci_high']:.4f}]"
        lines.append(
            f"{r['run_a']:<24}{r['run_b']:<24}{r['metric']:<22}{r['diff']:>8.4f}  "
            f"{interval:<18}"
            f"{_fmt_p(r['ttest_p']):>9}{_fmt_p(r['delong_p']):>9}"
            f"{_fmt_p(r['mcnemar_p_exact']):>10}"
        )
    lines.append(
        "note: the t-test over bootstrap replicates reproduces the paper's statistic; its p "
        "shrinks as n_boot grows and is not a test of a population difference"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``medprobe compare RUN RUN [...]``: paired tests between run folders; returns 0.

    Raises:
        ComparisonError: runs that cannot be compared (other test ids, labels or tasks).
        ResultsError: a run folder that cannot be read.
        ConfigError: bad arguments (``medprobe compare --help``).
    """
    from medprobe.cli.common import ArgumentParser

    ap = ArgumentParser(
        prog="medprobe compare",
        description="Paired comparison of medprobe runs on the same test set: paired "
        "bootstrap CI of the difference, DeLong (AUROC), McNemar (accuracy).",
    )
    ap.add_argument("runs", nargs="+", type=Path,
                    help="required: two or more run folders (results.json inside)")  # fmt: skip
    ap.add_argument("--out", type=Path, default=Path("."), help="where comparison.* go")
    ap.add_argument("--n-boot", type=int, default=None, help="replicates (default: run A's)")
    ap.add_argument("--ci", type=float, default=0.95, help="CI level of the differences")
    args = ap.parse_args(argv)
    if len(args.runs) < 2:
        raise ComparisonError("medprobe compare needs at least two run folders")
    rows = compare_runs([load_run(p) for p in args.runs], n_boot=args.n_boot, ci=args.ci)
    print(format_comparison(rows))
    pj, pc = write_comparison(rows, args.out)
    print(f"wrote {pj} and {pc}")
    return 0


if __name__ == "__main__":
    from medprobe.cli import main as cli_main

    cli_main(["compare", *sys.argv[1:]])
