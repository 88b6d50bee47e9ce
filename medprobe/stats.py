"""Vectorised bootstrap of classification metrics, and the paired tests built on it.

A replicate is represented by integer resample *counts* (how often each test example is
drawn), never by an index list, so every metric of every replicate is a weighted statistic of
the full test set: AUROC from presorted scores and cumulative weighted negatives, F1 and
accuracy from ``counts @ indicator`` products. There is no per-replicate loop over
scikit-learn; the only per-replicate Python loop draws the counts (one RNG call and one
``np.bincount`` per replicate).

Resampling unit: images by default; with ``groups`` (patient or lesion ids) whole patients
are drawn and each image inherits its patient's count (the cluster bootstrap,
:func:`bootstrap_counts`). The count-matrix design is the same, so everything downstream is
unchanged. :func:`evaluate` records the unit (``"resampling_unit"``).

Pairing: replicates are seeded by (task, split, seed) through :func:`bootstrap_seed`, never by
model, so two models evaluated on the same test set see identical resamples (the same
patients, with ``groups``) and their replicate arrays (:func:`bootstrap_replicates`) can be
compared replicate by replicate (DESIGN.md, "Conventions").

Statistical rules and sources (docs/statistics.md explains every number):

- Multiclass tasks use the stratified bootstrap (resample within each class, keeping every
  class's count fixed), so each replicate contains every class present in the test set and
  every one-vs-rest AUROC is defined. This is pROC's default for ``ci.auc``
  (``stratified=TRUE``; Robin et al. 2011, BMC Bioinformatics 12:77) and the stratified
  resampling of Carpenter & Bithell 2000 (Stat Med 19:1141), section 3. Patient-level, the
  patients are stratified by their majority class (:func:`bootstrap_counts`).
- Multi-label tasks use the plain (non-stratified) bootstrap over examples (or patients).
- AUROC is the Mann-Whitney statistic with ties counted 1/2 (Hanley & McNeil 1982), which is
  also what ``sklearn.metrics.roc_auc_score`` computes.
- Confidence intervals are percentile intervals (Efron & Tibshirani 1993, ch. 13) computed
  with ``np.percentile``'s default linear interpolation; SD uses ``ddof=1``. AUROC entries
  can instead use BCa or DeLong's variance on the logit scale (``evaluate(auroc_ci=...)``,
  :mod:`medprobe.auroc_ci`), better with few positives.
- Paired tests: :func:`mcnemar` (accuracy). DeLong's test of two AUROCs lives in
  :mod:`medprobe.compare`. :func:`paper_ttest_on_bootstrap_replicates` reproduces the
  paper's t-test and says why it is not inference. Adjust a family of p-values with
  :mod:`medprobe.multiplicity`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps
from sklearn.metrics import f1_score
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from medprobe import metrics
from medprobe.auroc_ci import (
    AUROC_CI_METHODS,
    auroc_influence,
    bca_interval,
    boundary_interval,
    group_index,
    influence_variance,
    logit_interval,
    majority_strata,
    satterthwaite_df,
)

__all__ = [
    "FEW_POSITIVES",
    "MCNEMAR_EXACT_BELOW",
    "REPLICATE_CONSTRUCTIONS",
    "BootstrapReplicates",
    "binary_auroc_interval",
    "bootstrap_auroc",
    "bootstrap_counts",
    "bootstrap_replicates",
    "bootstrap_seed",
    "evaluate",
    "few_positives",
    "mcnemar",
    "paper_ttest_on_bootstrap_replicates",
    "summarize",
    "ttest_on_replicates",
]

#: Classes with fewer test positives than this get a warning in the table and results (their
#: AUROC intervals are unreliable; docs/statistics.md, "Small classes"). Issue 13: was 5.
FEW_POSITIVES = 10

#: Target ``rows * n`` elements per block of replicates (at least 8 rows): keeps each block's
#: counts (2 MB as int32) in cache and temporaries small whatever ``n_boot`` is; measured
#: fastest on a 2-core machine (33 replicates per block at n = 15,000).
_BLOCK_ELEMENTS = 500_000


def bootstrap_seed(*parts: str | int) -> int:
    """Stable 63-bit seed from e.g. ``(task name, split name, seed)``.

    sha256 of a length-prefixed, type-tagged encoding of the parts (so ``("a", 1)`` differs
    from ``("a", "1")`` and from ``("a1",)``); never Python's ``hash``, which is salted per
    process for strings. Identical on every machine and Python version.

    Args:
        parts: strings and integers (``bool`` is rejected: ``True`` would silently equal 1).

    Returns:
        int in ``[0, 2**63)``, usable as ``seed`` for :func:`bootstrap_counts` / :func:`evaluate`.

    Raises:
        TypeError: a part is not ``str`` or ``int``.
    """
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, bool | np.bool_) or not isinstance(part, str | int | np.integer):
            raise TypeError(f"bootstrap_seed parts must be str or int; got {type(part).__name__}")
        text = part if isinstance(part, str) else str(int(part))
        tag = "s" if isinstance(part, str) else "i"
        data = text.encode("utf-8")
        h.update(f"{tag}{len(data)}:".encode())
        h.update(data)
    return int.from_bytes(h.digest()[:8], "big") >> 1


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool | np.bool_) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    return int(seed)


def _check_n_boot(n_boot: int) -> int:
    if isinstance(n_boot, bool | np.bool_) or not isinstance(n_boot, int | np.integer):
        raise ValueError(f"n_boot must be an int >= 1; got {n_boot!r}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1; got {n_boot}")
    return int(n_boot)


class _CountSampler:
    """Draws replicate ``b``'s counts from its own stream ``SeedSequence(seed, spawn_key=(b,))``.

    Because each replicate has its own stream, rows ``[b0, b1)`` are the same whether drawn
    alone or as part of a larger call: chunked evaluation, ``n_boot`` prefixes
    (the first 200 of 1000 replicates equal a 200-replicate run) and :func:`bootstrap_counts`
    all agree.
    """

    def __init__(self, y: np.ndarray, seed: int, *, stratify: bool) -> None:
        yy = np.asarray(y)
        if yy.ndim == 0 or yy.shape[0] == 0:
            raise ValueError(f"y must have at least one example; got shape {yy.shape}")
        self.n = int(yy.shape[0])
        self.seed = _check_seed(seed)
        self.stratify = stratify
        if stratify:
            if yy.ndim != 1:
                raise ValueError(f"stratify=True needs 1-D class ids y; got shape {yy.shape}")
            order = np.argsort(yy, kind="stable")  # positions grouped by class, ascending class
            _, starts, sizes = np.unique(yy[order], return_index=True, return_counts=True)
            self.groups = [(int(s), int(m)) for s, m in zip(starts, sizes, strict=True)]
            self.inverse = np.empty(self.n, dtype=np.int64)  # sorted position of example i
            self.inverse[order] = np.arange(self.n)

    def _one(self, b: int) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(b,)))
        if not self.stratify:
            return np.bincount(rng.integers(0, self.n, size=self.n), minlength=self.n)
        # Within each class (ascending class id): draw n_c members uniformly with replacement.
        draws = np.concatenate([s + rng.integers(0, m, size=m) for s, m in self.groups])
        return np.bincount(draws, minlength=self.n)[self.inverse]

    def rows(self, b0: int, b1: int) -> np.ndarray:
        """Counts of replicates ``b0 .. b1 - 1`` as a ``(b1 - b0, n)`` int32 array."""
        out = np.empty((b1 - b0, self.n), dtype=np.int32)
        for r, b in enumerate(range(b0, b1)):
            out[r] = self._one(b)
        return out


class _GroupCountSampler:
    """Patient-level (cluster) counts: draw groups, give every row its group's count.

    Group ``g`` is drawn ``k`` times -> each of its rows has count ``k``. The group draws come
    from a :class:`_CountSampler` over the ``G`` groups (stratified by :func:`majority_strata`
    for multiclass), so the stream rule (replicate ``b`` from ``SeedSequence(seed,
    spawn_key=(b,))``) and the prefix property are the same as image-level.
    """

    def __init__(self, y: np.ndarray, groups: np.ndarray, seed: int, *, stratify: bool) -> None:
        yy = np.asarray(y)
        if yy.ndim == 0 or yy.shape[0] == 0:
            raise ValueError(f"y must have at least one example; got shape {yy.shape}")
        self.gidx, self.n_groups = group_index(groups, int(yy.shape[0]))
        if stratify:
            if yy.ndim != 1:
                raise ValueError(f"stratify=True needs 1-D class ids y; got shape {yy.shape}")
            strata = majority_strata(yy, self.gidx, self.n_groups)
            self.inner = _CountSampler(strata, seed, stratify=True)
        else:
            self.inner = _CountSampler(np.zeros(self.n_groups), seed, stratify=False)

    def rows(self, b0: int, b1: int) -> np.ndarray:
        """Row counts of replicates ``b0 .. b1 - 1`` as a ``(b1 - b0, n)`` int32 array."""
        return np.ascontiguousarray(self.inner.rows(b0, b1)[:, self.gidx])


def _sampler(
    y: np.ndarray, seed: int, *, stratify: bool, groups: np.ndarray | None
) -> _CountSampler | _GroupCountSampler:
    if groups is None:
        return _CountSampler(y, seed, stratify=stratify)
    return _GroupCountSampler(y, groups, seed, stratify=stratify)


def bootstrap_counts(
    y: np.ndarray,
    n_boot: int,
    seed: int,
    *,
    stratify: bool,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Integer resample counts of ``n_boot`` bootstrap replicates.

    ``counts[b, i]`` is how many times test example ``i`` is drawn in replicate ``b``.
    Replicate ``b`` is drawn from its own stream ``np.random.SeedSequence(seed,
    spawn_key=(b,))``, so the result is a pure function of ``(y, groups, seed, b)``: the first
    ``m`` rows do not depend on ``n_boot``.

    Image-level (``groups=None``): ``n`` examples are drawn with replacement; every row sums
    to ``n``. Patient-level (``groups`` given): the ``G`` groups are drawn with replacement
    and every image of a group drawn ``k`` times gets count ``k`` (the cluster bootstrap of
    Davison & Hinkley 1997, sec. 3.8, resampling clusters whole; Field & Welsh 2007, JRSS B
    69:369, show it is the consistent choice when the units are correlated within groups);
    row sums then vary around ``n``.

    Args:
        y: ``(n,)`` integer class ids when ``stratify``; otherwise any array whose first axis
            is the ``n`` examples (e.g. an ``(n, K)`` multi-label matrix; only ``n`` is used).
        n_boot: number of replicates, >= 1.
        seed: non-negative int, normally ``bootstrap_seed(task, split, seed)`` (never the
            model, so that CIs of different models are paired: with ``groups`` both models
            get the same patient resamples).
        stratify: resample within strata with each stratum's size fixed. Image-level, the
            strata are the classes (the multiclass rule: every class present in ``y`` is
            present in every replicate; pROC ``ci.auc(stratified=TRUE)``, Robin et al. 2011;
            Carpenter & Bithell 2000). Patient-level, a group's stratum is its most frequent
            class, ties to the smallest class id (:func:`medprobe.auroc_ci.majority_strata`):
            with label-homogeneous groups that is the class again; a class that is never a
            group's majority can be missing from a replicate (its AUROC is then undefined in
            that replicate and left out, as the multi-label rule). ``False`` is the plain
            bootstrap over examples or groups (the multi-label rule).
        groups: ``(n,)`` patient (or lesion) ids, int or str (see
            :func:`medprobe.auroc_ci.group_index`); ``None``: images are the unit.

    Returns:
        ``(n_boot, n)`` int32. Memory is ``4 * n_boot * n`` bytes (60 MB for 1000 x 15,000);
        :func:`bootstrap_replicates` never holds more than one block of rows at a time.

    Raises:
        ValueError: ``n_boot < 1``, negative seed, empty ``y``, non-1-D ``y`` with
            ``stratify=True``, ``groups`` of the wrong shape or type.
    """
    n_boot = _check_n_boot(n_boot)
    return _sampler(y, _check_seed(seed), stratify=stratify, groups=groups).rows(0, n_boot)


@dataclass(frozen=True)
class _AurocPlan:
    """Per-column precomputation: sorted scores of the smaller class, ranks of the other."""

    query: np.ndarray  # indices of the examples whose partners are counted (smaller class)
    ref_order: np.ndarray  # indices of the other class, sorted by score
    left: np.ndarray  # per query: number of reference scores  < its score
    right: np.ndarray  # per query: number of reference scores <= its score
    flipped: bool  # True when the queries are the negatives (AUROC = 1 - computed value)


def _auroc_plan(y_col: np.ndarray, s_col: np.ndarray) -> _AurocPlan | None:
    pos = np.flatnonzero(y_col)
    neg = np.flatnonzero(~y_col)
    if pos.size == 0 or neg.size == 0:
        return None
    flipped = pos.size > neg.size  # gather cost scales with the query class: use the smaller
    query, ref = (neg, pos) if flipped else (pos, neg)
    ref_order = ref[np.argsort(s_col[ref], kind="stable")]
    ref_sorted = s_col[ref_order]
    q = s_col[query]
    return _AurocPlan(
        query=query,
        ref_order=ref_order,
        left=np.searchsorted(ref_sorted, q, side="left"),
        right=np.searchsorted(ref_sorted, q, side="right"),
        flipped=flipped,
    )


def _auroc_block(counts_t: np.ndarray, plan: _AurocPlan | None) -> np.ndarray:
    """AUROC of one column for a block of replicates.

    ``counts_t`` is the block's counts transposed, ``(n, rows)`` C-contiguous int32: gathering
    examples then copies contiguous rows and the cumulative sum runs along axis 0, both
    vectorised across replicates (measured ~1.6x faster than the ``(rows, n)`` layout).
    """
    rows = counts_t.shape[1]
    if plan is None:
        return np.full(rows, np.nan)
    w_ref = counts_t[plan.ref_order]
    cum = np.empty((w_ref.shape[0] + 1, rows), dtype=counts_t.dtype)
    cum[0] = 0
    np.cumsum(w_ref, axis=0, out=cum[1:])
    w_q = counts_t[plan.query]
    # Per query: 2 * (weighted reference scores below + 1/2 weighted reference ties).
    below2 = cum[plan.left] + cum[plan.right]
    # Weighted sum over queries in float64: exact, every partial sum is an integer below
    # 2 * total^2 / 4 < 2^53 (totals up to ~1e8 examples per replicate).
    twice = np.einsum("ij,ij->j", w_q.astype(np.float64), below2.astype(np.float64))
    n_q = w_q.sum(axis=0, dtype=np.int64)
    n_ref = cum[-1].astype(np.int64)
    valid = (n_q > 0) & (n_ref > 0)
    auc = np.full(rows, np.nan)
    auc[valid] = twice[valid] / (2.0 * n_q[valid] * n_ref[valid])
    if plan.flipped:  # computed P(neg > pos) + 1/2 P(tie); AUROC is its complement
        auc = 1.0 - auc
    return auc


def _block_rows(n: int) -> int:
    return max(8, _BLOCK_ELEMENTS // max(1, n))


def _transpose_block(counts: np.ndarray) -> np.ndarray:
    """``(rows, n)`` counts -> ``(n, rows)`` C-contiguous int32 (int64 if sums could overflow)."""
    big = counts.shape[0] > 0 and int(counts.sum(axis=1).max()) >= 2**30
    return np.ascontiguousarray(counts.T, dtype=np.int64 if big else np.int32)


def _check_counts(counts: np.ndarray, n: int) -> np.ndarray:
    c = np.asarray(counts)
    if c.ndim != 2 or c.shape[1] != n:
        raise ValueError(f"counts must have shape (n_boot, {n}); got {c.shape}")
    if c.shape[0] < 1:
        raise ValueError("counts must hold at least one replicate")
    if not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"counts must be integers; got dtype {c.dtype}")
    if c.size and c.min() < 0:
        raise ValueError("counts must be non-negative")
    return c


def bootstrap_auroc(y_bin: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-column binary AUROC of every bootstrap replicate, vectorised over replicates.

    Replicate ``b`` weights example ``i`` by ``counts[b, i]``, which is exactly the AUROC of
    the resampled set ``np.repeat(np.arange(n), counts[b])``. Ties count 1/2 (Mann-Whitney;
    equals ``sklearn.metrics.roc_auc_score``). Per column, the scores of the smaller class's
    partners are sorted once and ties are grouped with ``searchsorted`` (left/right); each
    replicate then needs one cumulative sum of weighted partners and two gathers, all in exact
    integer arithmetic until the final division.

    Args:
        y_bin: ``(n, K)`` bool or 0/1 labels (a ``(n,)`` vector is treated as ``K = 1``).
        scores: ``(n, K)`` finite float scores, same layout as ``y_bin``.
        counts: ``(n_boot, n)`` non-negative integer resample counts
            (:func:`bootstrap_counts`; all ones = the full test set).

    Returns:
        ``(n_boot, K)`` float64; nan where a replicate has no positives or no negatives in
        that column.

    Raises:
        ValueError: shape mismatch, labels not 0/1, non-finite scores, negative or non-integer
            counts.
    """
    yb = np.asarray(y_bin)
    s = np.asarray(scores, dtype=np.float64)
    if yb.ndim == 1:
        yb = yb[:, None]
    if s.ndim == 1:
        s = s[:, None]
    if yb.ndim != 2 or yb.shape != s.shape:
        raise ValueError(f"y_bin and scores must both be (n, K); got {yb.shape} and {s.shape}")
    if yb.dtype != np.bool_:
        if not np.issubdtype(yb.dtype, np.number) or not np.isin(yb, (0, 1)).all():
            raise ValueError("y_bin must contain only 0 and 1")
        yb = yb.astype(bool)
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    c = _check_counts(counts, yb.shape[0])
    plans = [_auroc_plan(yb[:, k], s[:, k]) for k in range(yb.shape[1])]
    out = np.empty((c.shape[0], yb.shape[1]))
    step = _block_rows(yb.shape[0])
    for b0 in range(0, c.shape[0], step):
        blk_t = _transpose_block(c[b0 : b0 + step])
        for k, plan in enumerate(plans):
            out[b0 : b0 + step, k] = _auroc_block(blk_t, plan)
    return out


@dataclass(frozen=True)
class BootstrapReplicates:
    """Per-replicate metric values of one prediction set.

    Attributes:
        metrics: metric name -> ``(n_boot,)`` float64, nan where the metric is undefined in
            that replicate. Names as in :func:`evaluate` (``"auroc_macro"``,
            ``"auroc/<class>"`` for every class not in ``absent_classes``, ``"f1_macro"``,
            ``"accuracy"``).
        absent_classes: class names with no positives (multi-label: no positives or no
            negatives) in the full test set.
        counts_seed: the seed the replicates were drawn with (pairing check for paired tests).
    """

    metrics: dict[str, np.ndarray]
    absent_classes: list[str]
    counts_seed: int


def _check_class_names(class_names: Any, k: int) -> list[str]:
    names = list(class_names)
    if len(names) != k:
        raise ValueError(f"class_names has {len(names)} entries but proba has {k} columns")
    if not all(isinstance(c, str) and c for c in names):
        raise ValueError("class_names must be non-empty strings")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names must be unique; got {names}")
    return names


def bootstrap_replicates(
    y: np.ndarray,
    proba: np.ndarray,
    class_names: list[str] | tuple[str, ...],
    *,
    multilabel: bool,
    n_boot: int = 1000,
    seed: int,
    threshold: float = 0.5,
    progress: bool = False,
    groups: np.ndarray | None = None,
) -> BootstrapReplicates:
    """Every metric of every bootstrap replicate, without a per-replicate scikit-learn loop.

    Counts are drawn in blocks of replicates (:func:`bootstrap_counts` rows, stratified for
    multiclass, plain for multi-label; over images, or over patients when ``groups`` is
    given) so memory stays bounded for any ``n_boot``. Per block: AUROC via
    :func:`bootstrap_auroc`'s kernel; with ``W`` the block's counts as float64,
    ``accuracy = W @ correct / W.sum(1)`` (``W.sum(1) = n`` image-level) and macro F1 from
    ``TP = W @ (Y & P)``, ``W @ Y`` and ``W @ P`` (per class ``F1 = 2 TP / (|Y| + |P|)``, 0
    when both are 0, averaged over the classes not absent, exactly like
    ``f1_score(labels=<those classes>, average="macro", zero_division=0)``).

    One rule for every macro average (macro AUROC and macro F1): it averages the classes not
    in ``absent_classes``. Multiclass: a class is absent when it has no positive in the test
    set. Multi-label: a label is absent when it has no positive *or no negative* in the test
    set, so a finding positive on every test row is left out of macro F1 as it is of macro
    AUROC (its AUROC is undefined; before issue 13 it stayed in macro F1 only).

    Rules for undefined AUROCs:

    - Absent classes (see :class:`BootstrapReplicates`) get no ``"auroc/<class>"`` entry and
      are left out of ``"auroc_macro"``.
    - Multiclass: stratified resampling keeps every present class in every replicate, so all
      remaining AUROCs are defined in every replicate.
    - Multi-label: a replicate in which a label has no positives or no negatives is nan for
      that label; the replicate's macro AUROC averages the labels defined in it (nan if none).

    Args:
        y, proba, multilabel, threshold: as in :func:`medprobe.metrics.check_predictions`.
        class_names: ``K`` unique names.
        n_boot: replicates, >= 1.
        seed: non-negative int, normally ``bootstrap_seed(task, split, seed)``.
        progress: show a tqdm bar over replicate blocks.
        groups: ``(n,)`` patient ids (int or str): resample patients, not images (see
            :func:`bootstrap_counts`); ``None``: images.

    Returns:
        :class:`BootstrapReplicates`.

    Raises:
        ValueError: invalid inputs (see :func:`medprobe.metrics.check_predictions`), bad
            ``class_names``, ``n_boot < 1``, negative seed, a multiclass test set with fewer
            than two classes present, or a multi-label set with no label having both
            positives and negatives.
    """
    yc, p = metrics.check_predictions(y, proba, multilabel=multilabel)
    n, k = p.shape
    names = _check_class_names(class_names, k)
    n_boot = _check_n_boot(n_boot)
    seed = _check_seed(seed)

    y_bin = yc if multilabel else metrics.indicator(yc, k)
    n_pos = y_bin.sum(axis=0)
    absent = (n_pos == 0) | (multilabel & (n_pos == n))
    present = np.flatnonzero(~absent)
    if not multilabel and present.size < 2:
        raise ValueError(
            f"multiclass AUROC needs at least two classes present in the test set; only "
            f"{[names[j] for j in present]} present"
        )
    if present.size == 0:
        raise ValueError("no label has both positive and negative examples in the test set")
    plans = {int(j): _auroc_plan(y_bin[:, j], p[:, j]) for j in present}

    pred = metrics.predict(p, multilabel=multilabel, threshold=threshold)
    pred_bin = pred if multilabel else metrics.indicator(pred, k)
    # (n, 3K) so that one matmul yields |Y|, |P| and TP per class.
    f1_design = np.concatenate([y_bin, pred_bin, y_bin & pred_bin], axis=1).astype(np.float64)
    f1_cols = ~absent  # one rule for both macros (see the docstring)
    correct = (pred == yc).astype(np.float64)
    if multilabel:
        correct = correct.mean(axis=1)  # mean per-label accuracy

    sampler = _sampler(yc, seed, stratify=not multilabel, groups=groups)
    auroc = np.empty((n_boot, present.size))
    f1 = np.empty(n_boot)
    acc = np.empty(n_boot)
    step = min(n_boot, _block_rows(n))
    starts = range(0, n_boot, step)
    # The per-block products are tiny; multi-threaded BLAS only adds spinning threads that
    # compete with the numpy work in between (measured 2x slower overall on 2 cores).
    with threadpool_limits(limits=1, user_api="blas"):
        for b0 in tqdm(starts, desc="bootstrap", unit="block", disable=not progress):
            b1 = min(b0 + step, n_boot)
            cnt_t = _transpose_block(sampler.rows(b0, b1))  # (n, rows)
            for col, j in enumerate(present):
                auroc[b0:b1, col] = _auroc_block(cnt_t, plans[int(j)])
            w = cnt_t.T.astype(np.float64)  # (rows, n); integer-valued, so products are exact
            sums = w @ f1_design
            true_n, pred_n, tp = sums[:, :k], sums[:, k : 2 * k], sums[:, 2 * k :]
            denom = true_n + pred_n
            f1_k = np.divide(2.0 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
            f1[b0:b1] = f1_k[:, f1_cols].mean(axis=1)
            acc[b0:b1] = (w @ correct) / w.sum(axis=1)  # = n image-level, exactly

    defined = ~np.isnan(auroc)
    n_def = defined.sum(axis=1)
    macro = np.full(n_boot, np.nan)
    ok = n_def > 0
    macro[ok] = np.where(defined, auroc, 0.0).sum(axis=1)[ok] / n_def[ok]

    out: dict[str, np.ndarray] = {"auroc_macro": macro}
    for col, j in enumerate(present):
        out[f"auroc/{names[j]}"] = auroc[:, col]
    out["f1_macro"] = f1
    out["accuracy"] = acc
    return BootstrapReplicates(
        metrics=out, absent_classes=[names[j] for j in np.flatnonzero(absent)], counts_seed=seed
    )


def summarize(
    name: str, value: float, replicates: np.ndarray, *, ci: float = 0.95
) -> dict[str, Any]:
    """Summary of one metric: point estimate plus bootstrap mean, SD and percentile CI.

    nan replicates (metric undefined in that replicate) are left out; ``n_replicates`` says
    how many remain.

    Args:
        name: metric name, used in error messages.
        value: point estimate on the full test set.
        replicates: ``(n_boot,)`` float replicate values.
        ci: two-sided level in (0, 1); the interval is
            ``np.percentile(valid, [100 (1 - ci) / 2, 100 (1 + ci) / 2])`` (linear
            interpolation; Efron & Tibshirani 1993, ch. 13).

    Returns:
        ``{"value", "mean", "boot_mean", "sd", "ci_low", "ci_high", "ci_method",
        "n_replicates"}``; floats are Python floats. ``boot_mean`` is the mean of the valid
        replicates (what the paper plots as "mean +- SD", Figs. 3-6); ``mean`` is the same
        number under its pre-issue-13 key. ``sd`` (``ddof=1``) is nan when only one replicate
        is valid; the CI never is. ``ci_method`` is ``"percentile"``.

    Raises:
        ValueError: ``ci`` outside (0, 1), or no valid replicate.
    """
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1); got {ci}")
    r = np.asarray(replicates, dtype=np.float64).ravel()
    valid = r[~np.isnan(r)]
    if valid.size == 0:
        raise ValueError(
            f"{name}: no bootstrap replicate has a defined value (all {r.size} lack positives "
            "or negatives); raise n_boot or check the test set"
        )
    lo, hi = np.percentile(valid, [100.0 * (1.0 - ci) / 2.0, 100.0 * (1.0 + ci) / 2.0])
    mean = float(valid.mean())
    return {
        "value": float(value),
        "mean": mean,
        "boot_mean": mean,
        "sd": float(valid.std(ddof=1)) if valid.size > 1 else float("nan"),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "ci_method": "percentile",
        "n_replicates": int(valid.size),
    }


def few_positives(
    y: np.ndarray, class_names: list[str] | tuple[str, ...], *, multilabel: bool
) -> list[tuple[str, int]]:
    """Classes with fewer than :data:`FEW_POSITIVES` (but at least one) test positives.

    Their AUROC intervals are unreliable whatever the method (see docs/statistics.md, "Small
    classes"); the table and ``results.json`` warn about them.

    Args:
        y: multiclass ``(n,)`` class ids or multi-label ``(n, K)`` 0/1.
        class_names: ``K`` names.
        multilabel: layout of ``y``.

    Returns:
        ``[(name, n_positives), ...]`` in class order.
    """
    names = list(class_names)
    yy = np.asarray(y)
    pos = yy.sum(axis=0) if multilabel else np.bincount(yy.astype(np.int64), minlength=len(names))
    return [(c, int(k)) for c, k in zip(names, pos, strict=True) if 0 < k < FEW_POSITIVES]


def _unit_counts(y_col: np.ndarray, gidx: np.ndarray | None) -> tuple[int, int]:
    """Units (images, or groups) with at least one positive / one negative in a column."""
    if gidx is None:
        return int(y_col.sum()), int((~y_col).sum())
    return int(np.unique(gidx[y_col]).size), int(np.unique(gidx[~y_col]).size)


def _auroc_interval(
    method: str,
    value: float,
    replicates: np.ndarray,
    psi: np.ndarray,
    *,
    var_strata: np.ndarray | None,
    boot_strata: np.ndarray | None,
    gidx: np.ndarray | None,
    units: tuple[int, int],
    ci: float,
) -> tuple[float, float, str] | None:
    """``(low, high, ci_method)`` of one AUROC by ``method``; None: keep the percentile CI."""
    if method == "bca":
        lo, hi = bca_interval(value, replicates, psi, strata=boot_strata, groups=gidx, ci=ci)
        return lo, hi, "bca"
    if method == "hanley_mcneil_score":
        lo, hi = boundary_interval(min(max(value, 0.0), 1.0), *units, ci=ci)
        return lo, hi, "hanley_mcneil_score"
    var = influence_variance(psi, strata=var_strata, groups=gidx)
    if math.isnan(var):  # a stratum with a single unit (e.g. one positive): not estimable
        return None
    df = satterthwaite_df(psi, strata=var_strata, groups=gidx)
    lo, hi = logit_interval(value, var, ci=ci, df=df)
    if math.isnan(lo):  # AUROC 0 or 1, or zero variance: complete separation
        lo, hi = boundary_interval(min(max(value, 0.0), 1.0), *units, ci=ci)
        return lo, hi, "hanley_mcneil_score"
    return lo, hi, "delong_logit"


def binary_auroc_interval(
    y_bin: np.ndarray,
    scores: np.ndarray,
    replicates: np.ndarray,
    *,
    method: str,
    ci: float = 0.95,
    groups: np.ndarray | None = None,
) -> tuple[float, float, str]:
    """Interval of one binary AUROC by ``method``, as :func:`evaluate` computes it per class.

    Args:
        y_bin: ``(n,)`` 0/1 labels with positives and negatives.
        scores: ``(n,)`` finite scores.
        replicates: ``(n_boot,)`` bootstrap AUROC replicates drawn stratified by the label
            (:func:`bootstrap_auroc` of :func:`bootstrap_counts` with ``stratify=True``, and
            the same ``groups``); used by ``"percentile"`` and ``"bca"``.
        method: one of :data:`medprobe.auroc_ci.AUROC_CI_METHODS`.
        ci: two-sided level in (0, 1).
        groups: ``(n,)`` patient ids, or ``None`` (images are the units).

    Returns:
        ``(low, high, ci_method)``; ``ci_method`` as in :func:`evaluate`'s entries.

    Raises:
        ValueError: unknown method, no positives or negatives, bad ``groups``.
    """
    if method not in AUROC_CI_METHODS:
        raise ValueError(f"method must be one of {AUROC_CI_METHODS}; got {method!r}")
    col = np.asarray(y_bin).astype(bool)
    auc, psi = auroc_influence(col, scores)
    if method == "percentile":
        s = summarize("auroc", auc, replicates, ci=ci)
        return s["ci_low"], s["ci_high"], "percentile"
    if groups is None:
        gidx, strata = None, col.astype(np.int64)
    else:
        gidx, n_groups = group_index(groups, col.size)
        strata = majority_strata(col, gidx, n_groups)
    got = _auroc_interval(
        method,
        auc,
        replicates,
        psi,
        var_strata=strata,
        boot_strata=strata,
        gidx=gidx,
        units=_unit_counts(col, gidx),
        ci=ci,
    )
    if got is None:
        s = summarize("auroc", auc, replicates, ci=ci)
        return s["ci_low"], s["ci_high"], "percentile"
    return got


def _apply_auroc_ci(
    result: dict[str, Any],
    reps: BootstrapReplicates,
    y_bin: np.ndarray,
    p: np.ndarray,
    names: list[str],
    *,
    multilabel: bool,
    yc: np.ndarray,
    gidx: np.ndarray | None,
    n_groups: int,
    method: str,
    ci: float,
) -> None:
    """Replace the percentile CI of every AUROC entry of ``result`` by ``method``'s."""
    if multilabel:
        boot_strata = None  # the multi-label bootstrap is not stratified
    elif gidx is None:
        boot_strata = yc
    else:
        boot_strata = majority_strata(yc, gidx, n_groups)
    psis = []
    units = []
    for j, name in enumerate(names):
        key = f"auroc/{name}"
        if key not in result:
            continue
        col = y_bin[:, j]
        _, psi = auroc_influence(col, p[:, j])
        psis.append(psi)
        units.append(_unit_counts(col, gidx))
        var_strata = col.astype(np.int64) if gidx is None else majority_strata(col, gidx, n_groups)
        got = _auroc_interval(
            method,
            result[key]["value"],
            reps.metrics[key],
            psi,
            var_strata=var_strata,
            boot_strata=boot_strata,
            gidx=gidx,
            units=units[-1],
            ci=ci,
        )
        if got is not None:
            result[key]["ci_low"], result[key]["ci_high"], result[key]["ci_method"] = got
    # Macro AUROC: the influence of a mean is the mean of the influences. Its variance strata
    # are the bootstrap's (classes; none for multi-label). At complete separation the score
    # interval uses the smallest class's counts (the widest).
    got = _auroc_interval(
        method,
        result["auroc_macro"]["value"],
        reps.metrics["auroc_macro"],
        np.mean(psis, axis=0),
        var_strata=boot_strata,
        boot_strata=boot_strata,
        gidx=gidx,
        units=min(units),
        ci=ci,
    )
    if got is not None:
        e = result["auroc_macro"]
        e["ci_low"], e["ci_high"], e["ci_method"] = got


def evaluate(
    y: np.ndarray,
    proba: np.ndarray,
    class_names: list[str] | tuple[str, ...],
    *,
    multilabel: bool,
    n_boot: int = 1000,
    seed: int,
    ci: float = 0.95,
    threshold: float = 0.5,
    progress: bool = False,
    groups: np.ndarray | None = None,
    auroc_ci: str = "percentile",
) -> dict[str, Any]:
    """Point estimates, bootstrap mean / SD and CIs of the standard metrics.

    Args:
        y: multiclass ``(n,)`` int class ids in ``[0, K)``; multi-label ``(n, K)`` 0/1.
        proba: ``(n, K)`` float probabilities; multiclass rows sum to 1 (renormalised in
            float64), multi-label entries are independent probabilities in [0, 1].
        class_names: ``K`` unique names; they become keys ``"auroc/<class>"``.
        multilabel: selects the layout, the prediction rule (argmax vs
            ``proba >= threshold``) and the resampling (stratified vs plain, see
            :func:`bootstrap_counts`).
        n_boot: bootstrap replicates, >= 1.
        seed: non-negative int, normally ``bootstrap_seed(task, split, seed)`` — never
            derived from the model, so CIs of different models are paired.
        ci: two-sided CI level in (0, 1).
        threshold: multi-label decision threshold.
        progress: tqdm bar over replicate blocks.
        groups: ``(n,)`` patient (or lesion) ids, int or str. Given, the resampling unit is
            the patient: every replicate draws patients with replacement and keeps all their
            images (:func:`bootstrap_counts`), and the DeLong / BCa arithmetic of
            ``auroc_ci`` sums influence per patient. ``None``: images are the unit (tasks
            without patient ids).
        auroc_ci: interval of the AUROC entries (``auroc_macro`` and ``auroc/<class>``), one of
            :data:`medprobe.auroc_ci.AUROC_CI_METHODS`: ``"percentile"`` (default, as before
            issue 13), ``"bca"`` or ``"delong_logit"`` (see :mod:`medprobe.auroc_ci`). F1 and
            accuracy always use the percentile interval.

    Returns:
        A flat dict with stable keys (used as W&B summary keys)::

            "auroc_macro", "auroc/<class>" (each class not absent), "f1_macro", "accuracy"
                -> {"value", "mean", "boot_mean", "sd", "ci_low", "ci_high", "ci_method",
                    "n_replicates"}
            "absent_classes" -> list[str]
            "resampling_unit" -> "image" | "patient"
            "n_resampling_units" -> int (n images, or the number of distinct groups)

        ``value`` is computed on the full test set (AUROC and accuracy by
        :mod:`medprobe.metrics`, scikit-learn). ``boot_mean`` (= ``mean``) and ``sd``
        (``ddof=1``) summarise the valid replicates; ``n_replicates`` counts them.
        ``ci_low``/``ci_high`` is the interval named by ``ci_method``: ``"percentile"``,
        ``"bca"``, ``"delong_logit"``, or ``"hanley_mcneil_score"`` where ``delong_logit``
        meets complete separation (AUROC 0 or 1); a ``delong_logit`` entry whose variance is
        not estimable (a class with a single positive unit) keeps ``"percentile"``.

        Classes averaged: ``auroc_macro`` is the mean of the per-class one-vs-rest AUROCs and
        ``f1_macro`` the macro F1 (``f1_score(labels=..., average="macro",
        zero_division=0)``), both over the classes NOT in ``absent_classes`` (one rule for
        both macros). Absent: multiclass, no positive in the test set; multi-label, no
        positive or no negative (a finding positive on every test row has no AUROC and is
        left out of macro F1 as well). Predictions of an absent class still count as errors
        of the true classes. ``auroc_macro`` equals ``roc_auc_score(y, proba,
        multi_class="ovr")`` when all classes are present. ``accuracy`` is top-1 accuracy
        (multiclass) or mean per-label accuracy, ``1 - hamming_loss`` (multi-label).
        Multi-label replicates in which a label lacks positives or negatives (and, with
        ``groups``, multiclass replicates missing a class) are left out of that label's
        summary, and that replicate's macro AUROC averages the labels defined in it (see
        :func:`bootstrap_replicates`).

    Raises:
        ValueError: bad shapes, non-finite or out-of-range probabilities, multiclass rows not
            summing to 1, labels out of range, bad ``class_names``, ``n_boot < 1``, ``ci``
            not in (0, 1), fewer than two classes present (multiclass), a metric with zero
            valid replicates, bad ``groups``, unknown ``auroc_ci``.
    """
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1); got {ci}")
    if auroc_ci not in AUROC_CI_METHODS:
        raise ValueError(f"auroc_ci must be one of {AUROC_CI_METHODS}; got {auroc_ci!r}")
    reps = bootstrap_replicates(
        y,
        proba,
        class_names,
        multilabel=multilabel,
        n_boot=n_boot,
        seed=seed,
        threshold=threshold,
        progress=progress,
        groups=groups,
    )
    yc, p = metrics.check_predictions(y, proba, multilabel=multilabel)
    names = list(class_names)
    gidx, n_groups = (None, yc.shape[0]) if groups is None else group_index(groups, yc.shape[0])
    per_class = metrics.per_class_auroc(y, proba, multilabel=multilabel)
    kept = [j for j, c in enumerate(names) if c not in reps.absent_classes]
    pred = metrics.predict(p, multilabel=multilabel, threshold=threshold)
    point = {
        "auroc_macro": metrics.auroc_macro(y, proba, multilabel=multilabel),
        "f1_macro": float(f1_score(yc, pred, labels=kept, average="macro", zero_division=0)),
        "accuracy": metrics.accuracy(y, proba, multilabel=multilabel, threshold=threshold),
    }
    for j, name in enumerate(names):
        point[f"auroc/{name}"] = float(per_class[j])
    result: dict[str, Any] = {
        key: summarize(key, point[key], values, ci=ci) for key, values in reps.metrics.items()
    }
    if auroc_ci != "percentile":
        y_bin = yc if multilabel else metrics.indicator(yc, p.shape[1])
        _apply_auroc_ci(
            result,
            reps,
            y_bin,
            p,
            names,
            multilabel=multilabel,
            yc=yc,
            gidx=gidx,
            n_groups=n_groups,
            method=auroc_ci,
            ci=ci,
        )
    result["absent_classes"] = reps.absent_classes
    result["resampling_unit"] = "image" if groups is None else "patient"
    result["n_resampling_units"] = int(n_groups)
    return result


# ----------------------------------------------------------------------------- paired tests

#: :func:`mcnemar` uses the exact binomial test below this many discordant pairs.
MCNEMAR_EXACT_BELOW = 25


def mcnemar(
    correct_a: np.ndarray, correct_b: np.ndarray, *, exact_below: int = MCNEMAR_EXACT_BELOW
) -> dict[str, Any]:
    """McNemar's test of two paired accuracies on the same examples.

    Only the discordant pairs carry information: ``b`` = A right and B wrong, ``c`` = A wrong
    and B right. Under equal accuracies ``b ~ Binomial(b + c, 1/2)``.

    - ``b + c < exact_below``: exact two-sided binomial p
      (``scipy.stats.binomtest(b, b + c, 0.5)``; McNemar 1947, Psychometrika 12:153), the
      recommended test for few discordant pairs (Fagerland, Lydersen & Laake 2013, BMC Med.
      Res. Methodol. 13:91).
    - otherwise: chi-square with Edwards' (1948, Psychometrika 13:185) continuity correction
      ``(|b - c| - 1)^2 / (b + c)`` on 1 df.
    - ``b == c`` (including no discordant pair): ``p = 1`` for both. The correction
      ``(|b - c| - 1)^2`` would otherwise give ``1 / (b + c) > 0`` when ``b == c``: an
      observed difference of zero must not look like evidence; the statistic is
      ``max(|b - c| - 1, 0)^2 / (b + c)``.

    Args:
        correct_a, correct_b: ``(n,)`` bool, whether each model got example ``i`` right.
        exact_below: discordant-pair count below which the exact test is the reported ``p``.

    Returns:
        ``{"b", "c", "n_discordant", "method", "p", "p_exact", "chi2", "p_chi2"}``:
        ``method`` is ``"exact"`` or ``"chi2_cc"`` and names the test behind ``p``; both
        tests' values are always given.

    Raises:
        ValueError: shapes differ or are not 1-D.
    """
    a = np.asarray(correct_a, dtype=bool)
    bb = np.asarray(correct_b, dtype=bool)
    if a.shape != bb.shape or a.ndim != 1:
        raise ValueError(f"correct_a and correct_b must be (n,); got {a.shape}, {bb.shape}")
    b = int((a & ~bb).sum())
    c = int((~a & bb).sum())
    nd = b + c
    method = "exact" if nd < exact_below else "chi2_cc"
    if b == c:
        return {
            "b": b, "c": c, "n_discordant": nd, "method": method,
            "p": 1.0, "p_exact": 1.0, "chi2": 0.0, "p_chi2": 1.0,
        }  # fmt: skip
    p_exact = min(1.0, float(sps.binomtest(b, nd, 0.5).pvalue))
    chi2 = max(abs(b - c) - 1, 0) ** 2 / nd
    p_chi2 = float(sps.chi2.sf(chi2, 1))
    return {
        "b": b,
        "c": c,
        "n_discordant": nd,
        "method": method,
        "p": p_exact if method == "exact" else p_chi2,
        "p_exact": p_exact,
        "chi2": float(chi2),
        "p_chi2": p_chi2,
    }


#: Replicate-series constructions of :func:`paper_ttest_on_bootstrap_replicates`.
REPLICATE_CONSTRUCTIONS = ("paired", "independent")


def ttest_on_replicates(rep_a: np.ndarray, rep_b: np.ndarray) -> dict[str, Any]:
    """Paired two-tailed t-test over two series of bootstrap replicates (``ttest_rel``).

    This is the arithmetic of the paper's test (Han et al., Methods, "Statistical
    analysis"), NOT valid inference: see :func:`paper_ttest_on_bootstrap_replicates`.
    Replicates where either series is nan are dropped. All differences zero: ``t = 0``,
    ``p = 1``; a constant non-zero difference: ``t = +-inf``, ``p = 0``.

    Returns:
        ``{"t", "p", "n", "correlation"}``: ``n`` replicate pairs used; ``correlation`` is
        Pearson's r between the two series (nan if either is constant), the quantity that
        tells paired from independent series.
    """
    a, b = np.asarray(rep_a, dtype=np.float64), np.asarray(rep_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"rep_a and rep_b must be (n,) of one length; got {a.shape}, {b.shape}")
    ok = ~(np.isnan(a) | np.isnan(b))
    a, b = a[ok], b[ok]
    d = a - b
    corr = float("nan")
    if a.size > 1 and a.std() > 0 and b.std() > 0:
        corr = float(np.corrcoef(a, b)[0, 1])
    if d.size < 2 or (np.all(d == d[0]) and d[0] == 0):
        return {"t": 0.0, "p": 1.0, "n": int(d.size), "correlation": corr}
    if np.all(d == d[0]):  # constant non-zero difference: zero variance, t is infinite
        return {"t": math.copysign(math.inf, d[0]), "p": 0.0, "n": int(d.size), "correlation": corr}
    res = sps.ttest_rel(a, b)
    return {
        "t": float(res.statistic),
        "p": float(res.pvalue),
        "n": int(d.size),
        "correlation": corr,
    }


def paper_ttest_on_bootstrap_replicates(
    y: np.ndarray,
    proba_a: np.ndarray,
    proba_b: np.ndarray,
    class_names: list[str] | tuple[str, ...],
    *,
    multilabel: bool,
    seed: int,
    metric: str = "auroc_macro",
    n_boot: int = 1000,
    construction: str = "paired",
    threshold: float = 0.5,
    groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """The paper's t-test on bootstrap replicates: a reproduction, not a test to rely on.

    The paper (Han et al.) compares two models by a paired two-tailed t-test over the ``n_boot``
    bootstrap replicates of a metric. The replicates are not independent observations of the
    population: they are resamples of ONE test set, as many as one cares to draw. The t
    statistic is ``mean(d) / (sd(d) / sqrt(n_boot))`` where ``sd(d)`` estimates the
    *resampling* spread of the difference, which does not shrink with ``n_boot``; so ``t``
    grows like ``sqrt(n_boot)`` for the same difference on the same test set, and the
    p-value falls without bound, much faster than any power of ``1/n_boot`` (issue 13 measured
    p = 0.56, 4e-16 and 2e-73 at 50, 1000 and 5000 replicates for one fixed difference; the
    demo model at its last layer vs layer 6, accuracy, paired: 0.027, 2e-18, 3e-75). It does
    NOT shrink like ``1/sqrt(n_boot)``. Any non-zero difference becomes "significant" by
    drawing more replicates.
    Valid paired inference on the same test set is DeLong's test (AUROC), the bootstrap CI
    of the paired difference, and McNemar's test (accuracy); see docs/statistics.md.

    Constructions of the two replicate series:

    - ``"paired"``: both models on the same resamples (seed ``seed``), as medprobe pairs
      every comparison. The series are strongly correlated; ``sd(d)`` is the paired
      bootstrap SD of the difference.
    - ``"independent"``: each model on its own resamples (seeds
      ``bootstrap_seed(seed, "paper-independent", "a" | "b")``), the construction that
      reproduces the paper's numbers: its t = 139.7 implies a correlation of about 0 between
      the series, i.e. separately bootstrapped models. It ignores that both models were scored
      on the same examples, so ``sd(d)`` mixes in the resampling noise of each model
      separately; together with the ``n_boot`` problem above the p-value means nothing.

    Args:
        y, proba_a, proba_b, class_names, multilabel, threshold, groups: as in
            :func:`bootstrap_replicates` (both models on the same test rows, in the same order).
        seed: non-negative int, normally ``bootstrap_seed(task, "test", seed)``.
        metric: a key of :func:`evaluate`'s metrics (``"auroc_macro"``, ``"f1_macro"``,
            ``"accuracy"``, ``"auroc/<class>"``).
        n_boot: replicates per model.
        construction: ``"paired"`` or ``"independent"`` (:data:`REPLICATE_CONSTRUCTIONS`).

    Returns:
        ``{"test": "paper's t-test on bootstrap replicates", "construction", "metric", "t",
        "p", "n", "correlation", "mean_a", "mean_b", "n_boot"}`` (see
        :func:`ttest_on_replicates`; means over the replicates used).

    Raises:
        ValueError: unknown construction or metric, or invalid inputs (see
            :func:`bootstrap_replicates`).
    """
    if construction not in REPLICATE_CONSTRUCTIONS:
        raise ValueError(
            f"construction must be one of {REPLICATE_CONSTRUCTIONS}; got {construction!r}"
        )
    seed = _check_seed(seed)
    if construction == "paired":
        seeds = (seed, seed)
    else:
        seeds = (
            bootstrap_seed(seed, "paper-independent", "a"),
            bootstrap_seed(seed, "paper-independent", "b"),
        )
    reps = [
        bootstrap_replicates(
            y,
            proba,
            class_names,
            multilabel=multilabel,
            n_boot=n_boot,
            seed=s,
            threshold=threshold,
            groups=groups,
        ).metrics
        for proba, s in zip((proba_a, proba_b), seeds, strict=True)
    ]
    if metric not in reps[0] or metric not in reps[1]:
        raise ValueError(f"metric {metric!r} not available; have {sorted(reps[0])}")
    ra, rb = reps[0][metric], reps[1][metric]
    tt = ttest_on_replicates(ra, rb)
    ok = ~(np.isnan(ra) | np.isnan(rb))
    return {
        "test": "paper's t-test on bootstrap replicates",
        "construction": construction,
        "metric": metric,
        **tt,
        "mean_a": float(ra[ok].mean()),
        "mean_b": float(rb[ok].mean()),
        "n_boot": int(n_boot),
    }
