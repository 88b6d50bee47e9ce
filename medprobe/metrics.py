"""Point-estimate metrics on a whole prediction set, computed with scikit-learn.

These are the reference implementations: :func:`medprobe.stats.evaluate` reports them as the
``"value"`` of each metric and re-derives the same numbers per bootstrap replicate with
vectorised code (``tests/test_stats.py`` checks the two agree). The probe's validation uses
them to pick hyper-parameters.

Conventions shared with :mod:`medprobe.stats`:

- Multiclass: ``y`` is ``(n,)`` integer class ids in ``[0, K)``; ``proba`` is ``(n, K)`` with
  rows summing to 1 (checked to ``ROW_SUM_ATOL``, then renormalised in float64 because
  scikit-learn's multiclass ``roc_auc_score`` insists on exact sums). Prediction = argmax
  (first maximum on ties, as ``np.argmax``).
- Multi-label: ``y`` is ``(n, K)`` with values in {0, 1}; ``proba`` is ``(n, K)`` independent
  probabilities in [0, 1]. Prediction = ``proba >= threshold``.
- Per-class AUROC is one-vs-rest: column ``k`` of the binary indicator against ``proba[:, k]``.
  A class whose indicator column has no positives or no negatives has no AUROC (nan in
  :func:`per_class_auroc`) and is left out of the macro average, never averaged in as nan.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.metrics import log_loss as _sk_log_loss

__all__ = [
    "ROW_SUM_ATOL",
    "accuracy",
    "auroc_macro",
    "check_predictions",
    "f1_macro",
    "indicator",
    "log_loss",
    "per_class_auroc",
    "predict",
]

#: Largest accepted ``|row sum - 1|`` of multiclass probabilities. Covers float16-stored
#: softmax outputs (each entry carries at most ~5e-4 relative error, so a row sum ~5e-4).
ROW_SUM_ATOL = 1e-3
#: Tolerance for probabilities slightly outside [0, 1] (float rounding); larger is an error.
_RANGE_ATOL = 1e-6


def check_predictions(
    y: np.ndarray, proba: np.ndarray, *, multilabel: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels and probabilities; return them in canonical form.

    Args:
        y: multiclass: ``(n,)`` integer class ids in ``[0, K)`` (integral floats accepted);
            multi-label: ``(n, K)`` with values in {0, 1} (bool, int or float).
        proba: ``(n, K)`` finite probabilities. Multiclass rows must sum to 1 within
            :data:`ROW_SUM_ATOL`; multi-label entries must lie in [0, 1].
        multilabel: which of the two layouts above.

    Returns:
        ``(y, proba)``: multiclass ``y`` as ``(n,)`` int64, multi-label ``y`` as ``(n, K)``
        bool; ``proba`` as ``(n, K)`` float64, multiclass rows divided by their sum.

    Raises:
        ValueError: wrong dimensions or mismatched ``n`` / ``K``, ``n == 0``, ``K < 2`` for
            multiclass, non-finite or out-of-range probabilities, rows not summing to 1, labels
            out of range or not integral / not 0-1.
    """
    p = np.asarray(proba)
    if p.ndim != 2:
        raise ValueError(f"proba must be 2-D (n, K); got shape {p.shape}")
    if not (np.issubdtype(p.dtype, np.floating) or np.issubdtype(p.dtype, np.integer)):
        raise ValueError(f"proba must be numeric; got dtype {p.dtype}")
    n, k = p.shape
    if n == 0 or k == 0:
        raise ValueError(f"proba must have at least one example and one class; got {p.shape}")
    p = p.astype(np.float64)
    if not np.isfinite(p).all():
        bad = int((~np.isfinite(p)).any(axis=1).sum())
        raise ValueError(f"proba has non-finite values in {bad} of {n} rows")
    if p.min() < -_RANGE_ATOL or p.max() > 1 + _RANGE_ATOL:
        raise ValueError(
            f"proba must lie in [0, 1]; got range [{p.min():.6g}, {p.max():.6g}] "
            "(pass probabilities, not logits)"
        )
    yy = np.asarray(y)
    if multilabel:
        if yy.shape != (n, k):
            raise ValueError(f"multi-label y must have shape {(n, k)} like proba; got {yy.shape}")
        if yy.dtype != np.bool_:
            if not (np.issubdtype(yy.dtype, np.number)) or not np.isin(yy, (0, 1)).all():
                raise ValueError("multi-label y must contain only 0 and 1")
        return yy.astype(bool), p
    if k < 2:
        raise ValueError(f"multiclass proba needs K >= 2 columns; got {k}")
    if yy.shape != (n,):
        raise ValueError(f"multiclass y must have shape {(n,)}; got {yy.shape}")
    if yy.dtype == np.bool_ or not np.issubdtype(yy.dtype, np.number):
        raise ValueError(f"multiclass y must hold integer class ids; got dtype {yy.dtype}")
    if not np.issubdtype(yy.dtype, np.integer):
        if not np.isfinite(yy).all() or (yy != np.round(yy)).any():
            raise ValueError("multiclass y must hold integer class ids; got non-integral values")
    yi = yy.astype(np.int64)
    if yi.min() < 0 or yi.max() >= k:
        raise ValueError(f"multiclass y must lie in [0, {k}); got range [{yi.min()}, {yi.max()}]")
    sums = p.sum(axis=1)
    worst = float(np.abs(sums - 1.0).max())
    if worst > ROW_SUM_ATOL:
        raise ValueError(
            f"multiclass proba rows must sum to 1 (within {ROW_SUM_ATOL}); worst row sums to "
            f"{sums[np.argmax(np.abs(sums - 1.0))]:.6g}"
        )
    return yi, p / sums[:, None]


def indicator(y: np.ndarray, n_classes: int) -> np.ndarray:
    """One-hot ``(n, n_classes)`` bool matrix of ``(n,)`` integer class ids (no validation)."""
    return np.asarray(y)[:, None] == np.arange(n_classes)[None, :]


def predict(proba: np.ndarray, *, multilabel: bool, threshold: float = 0.5) -> np.ndarray:
    """Hard predictions: multiclass ``(n,)`` int64 argmax; multi-label ``(n, K)`` bool.

    Multi-label uses ``proba >= threshold``. No validation (call :func:`check_predictions`).
    """
    p = np.asarray(proba)
    if multilabel:
        return p >= threshold
    return np.argmax(p, axis=1).astype(np.int64)


def per_class_auroc(y: np.ndarray, proba: np.ndarray, *, multilabel: bool) -> np.ndarray:
    """One-vs-rest AUROC of every class with ``sklearn.metrics.roc_auc_score``.

    Args and validation as in :func:`check_predictions`.

    Returns:
        ``(K,)`` float64; nan for a class whose indicator column has no positives or no
        negatives (AUROC undefined). Ties in scores count 1/2 (Mann-Whitney U / trapezoidal
        ROC, which is what ``roc_auc_score`` computes).

    Raises:
        ValueError: see :func:`check_predictions`.
    """
    yc, p = check_predictions(y, proba, multilabel=multilabel)
    y_bin = yc if multilabel else indicator(yc, p.shape[1])
    out = np.full(p.shape[1], np.nan)
    for j in range(p.shape[1]):
        n_pos = int(y_bin[:, j].sum())
        if 0 < n_pos < y_bin.shape[0]:
            out[j] = roc_auc_score(y_bin[:, j], p[:, j])
    return out


def auroc_macro(y: np.ndarray, proba: np.ndarray, *, multilabel: bool) -> float:
    """Unweighted mean of the defined one-vs-rest AUROCs (classes without AUROC left out).

    When every class is present (multiclass) this equals
    ``roc_auc_score(y, proba, multi_class="ovr", average="macro")``; scikit-learn instead
    errors or returns nan when a class is absent, which is why classes are averaged here.

    Returns:
        float in [0, 1].

    Raises:
        ValueError: invalid inputs (see :func:`check_predictions`), or no class has both
            positives and negatives.
    """
    per = per_class_auroc(y, proba, multilabel=multilabel)
    if np.isnan(per).all():
        raise ValueError("AUROC is undefined: no class has both positive and negative examples")
    return float(np.nanmean(per))


def f1_macro(
    y: np.ndarray, proba: np.ndarray, *, multilabel: bool, threshold: float = 0.5
) -> float:
    """Macro F1 over the classes not absent from ``y``: ``sklearn.metrics.f1_score(labels=kept,
    average="macro", zero_division=0)``.

    Absent (the rule of macro AUROC and :func:`medprobe.stats.evaluate`'s
    ``absent_classes``): a class (or finding) with no positive in ``y``; for multi-label also
    a finding positive on every row (no negative, so no AUROC). Both macros average over the
    same classes and the table's "excluded" line holds for every macro. Its false positives still count: they are false
    negatives of the true classes (multiclass) or lower nothing else (multi-label).

    Returns:
        float in [0, 1].

    Raises:
        ValueError: see :func:`check_predictions`.
    """
    yc, p = check_predictions(y, proba, multilabel=multilabel)
    pred = predict(p, multilabel=multilabel, threshold=threshold)
    y_bin = yc.astype(bool) if multilabel else indicator(yc, p.shape[1])
    s = y_bin.sum(axis=0)
    labels = np.flatnonzero((s > 0) & ((s < len(y_bin)) | (not multilabel)))
    return float(f1_score(yc, pred, labels=labels, average="macro", zero_division=0))


def accuracy(
    y: np.ndarray, proba: np.ndarray, *, multilabel: bool, threshold: float = 0.5
) -> float:
    """Multiclass: top-1 accuracy. Multi-label: mean per-label accuracy.

    The multi-label value is the fraction of correct (example, label) decisions,
    ``1 - sklearn.metrics.hamming_loss``; it is NOT scikit-learn's ``accuracy_score`` on
    indicator matrices (subset / exact-match accuracy).

    Returns:
        float in [0, 1].

    Raises:
        ValueError: see :func:`check_predictions`.
    """
    yc, p = check_predictions(y, proba, multilabel=multilabel)
    pred = predict(p, multilabel=multilabel, threshold=threshold)
    return float(np.mean(pred == yc))


def log_loss(y: np.ndarray, proba: np.ndarray, *, multilabel: bool) -> float:
    """Mean negative log-likelihood (lower is better), ``sklearn.metrics.log_loss``.

    Multiclass: ``log_loss(y, proba, labels=range(K))`` (classes absent from ``y`` allowed).
    Multi-label: mean over the ``K`` labels of the binary log loss of each column (scikit-learn
    would otherwise read an indicator matrix as one multiclass problem). Probabilities are
    clipped to ``[eps, 1 - eps]`` (float64 machine epsilon) by scikit-learn.

    Returns:
        float >= 0.

    Raises:
        ValueError: see :func:`check_predictions`.
    """
    yc, p = check_predictions(y, proba, multilabel=multilabel)
    if not multilabel:
        return float(_sk_log_loss(yc, p, labels=np.arange(p.shape[1])))
    p = np.clip(p, 0.0, 1.0)
    per = [
        _sk_log_loss(yc[:, j], np.stack([1.0 - p[:, j], p[:, j]], axis=1), labels=[0, 1])
        for j in range(p.shape[1])
    ]
    return float(np.mean(per))
