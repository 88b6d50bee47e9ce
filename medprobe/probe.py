"""The linear probe: scikit-learn logistic regression on standardised features.

Protocol (paper, "Linear probing"; DESIGN.md): features are standardised with the mean and SD of
the probe's training rows (float64 statistics, float32 data); the inverse regularisation
strength C is chosen from a log grid by the validation score (validation rows are carved from
train, never from test); the probe with the chosen C is the one fitted on the training rows.
Multi-label tasks use one independent binary logistic regression per finding (one-vs-rest).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

SELECTION_METRICS = ("auroc_macro", "f1_macro", "accuracy", "neg_log_loss")


class ProbeError(ValueError):
    """The probe cannot be fitted or selected on these rows (one readable line)."""


@dataclass
class LogisticProbe:
    """Logistic-regression probe with C chosen on validation data.

    Args:
        n_classes: K (classes, or findings for multi-label).
        multilabel: one-vs-rest binary probes on (n, K) multi-hot labels.
        C_grid: candidate inverse regularisation strengths (> 0).
        class_weight: None or ``"balanced"`` (sklearn semantics).
        max_iter: lbfgs iterations.
        selection_metric: one of :data:`SELECTION_METRICS`, computed on the validation rows;
            ties go to the smaller C (stronger regularisation).
        seed: random_state of the solver.

    After :meth:`fit`: ``C_`` (chosen C), ``selection_`` (list of {C, score} on validation),
    ``n_iter_max_`` and ``converged_``.
    """

    n_classes: int
    multilabel: bool = False
    C_grid: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
    class_weight: str | None = None
    max_iter: int = 1000
    selection_metric: str = "auroc_macro"
    seed: int = 0
    C_: float = field(init=False, default=float("nan"))
    selection_: list[dict[str, float]] = field(init=False, default_factory=list)
    converged_: bool = field(init=False, default=True)

    def __post_init__(self) -> None:
        if self.selection_metric not in SELECTION_METRICS:
            raise ValueError(
                f"probe.selection_metric {self.selection_metric!r} unknown; "
                f"use one of {', '.join(SELECTION_METRICS)}"
            )

    def _fit_one(self, X: np.ndarray, y: np.ndarray, C: float, prev: Any | None) -> Any:
        """Fit at ``C``; multiclass fits start from the previous (smaller) C's solution.

        Warm starting along an increasing C path reaches the same optimum (the objective is
        strictly convex) in far fewer lbfgs iterations.
        """
        if self.multilabel:
            clf: Any = OneVsRestClassifier(
                LogisticRegression(
                    C=C,
                    max_iter=self.max_iter,
                    class_weight=self.class_weight,
                    random_state=self.seed,
                )
            )
        else:
            clf = (
                copy.deepcopy(prev)
                if prev is not None
                else LogisticRegression(
                    max_iter=self.max_iter,
                    class_weight=self.class_weight,
                    random_state=self.seed,
                    warm_start=True,
                )
            )
            clf.set_params(C=C)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf.fit(X, y)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            self.converged_ = False
        return clf

    def _proba(self, clf: Any, X: np.ndarray) -> np.ndarray:
        p = clf.predict_proba(X)
        if self.multilabel:
            return np.asarray(p, dtype=np.float64)
        # A class absent from the training rows gets probability 0 (column kept, K fixed).
        full = np.zeros((len(X), self.n_classes), dtype=np.float64)
        full[:, clf.classes_] = p
        return full

    def _score(self, y: np.ndarray, p: np.ndarray) -> float:
        from medprobe import metrics

        if self.selection_metric == "auroc_macro":
            return metrics.auroc_macro(y, p, multilabel=self.multilabel)
        if self.selection_metric == "f1_macro":
            return metrics.f1_macro(y, p, multilabel=self.multilabel)
        if self.selection_metric == "accuracy":
            return metrics.accuracy(y, p, multilabel=self.multilabel)
        return -metrics.log_loss(y, p, multilabel=self.multilabel)

    def fit(
        self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray
    ) -> LogisticProbe:
        """Choose C on (X_val, y_val), keep the probe fitted on (X, y) with that C.

        Args:
            X: (n, D) features (any float dtype; cast to float32), y: (n,) int or (n, K) 0/1.
            X_val, y_val: validation rows, same layout.

        Raises:
            ProbeError: fewer than two classes in y, empty validation rows, or validation rows
                on which the selection metric is undefined.
        """
        if len(X_val) == 0:
            raise ProbeError("the probe needs validation rows to choose C; none were given")
        if not self.multilabel and len(np.unique(y)) < 2:
            raise ProbeError("the probe's training rows contain a single class")
        if self.selection_metric == "auroc_macro":
            yv = np.asarray(y_val)
            pos = yv.sum(0) if self.multilabel else np.bincount(yv, minlength=self.n_classes)
            if not np.any((pos > 0) & (pos < len(yv))):
                raise ProbeError(
                    "the validation rows hold a single class, so AUROC cannot choose C; give "
                    "the task more validation rows (its val split, or probe.val_fraction when "
                    "the task has none)"
                )
        self.scaler_ = StandardScaler().fit(np.asarray(X, dtype=np.float32))
        Xs = self.scaler_.transform(np.asarray(X, dtype=np.float32))
        Xv = self.scaler_.transform(np.asarray(X_val, dtype=np.float32))
        best: tuple[float, float, Any] | None = None
        self.selection_ = []
        clf = None
        with threadpool_limits(limits=blas_threads(*Xs.shape), user_api="blas"):
            for C in sorted(float(c) for c in self.C_grid):
                clf = self._fit_one(Xs, y, C, clf)
                score = float(self._score(y_val, self._proba(clf, Xv)))
                self.selection_.append({"C": C, "score": score})
                if best is None or score > best[0] + 1e-12:
                    best = (score, C, clf)
        assert best is not None
        self.val_score_, self.C_, self.clf_ = best
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, D) features -> (n, K) float64 probabilities (rows sum to 1 unless multi-label)."""
        Xs = self.scaler_.transform(np.asarray(X, dtype=np.float32))
        with threadpool_limits(limits=blas_threads(*Xs.shape), user_api="blas"):
            return self._proba(self.clf_, Xs)


def blas_threads(n: int, d: int) -> int | None:
    """BLAS threads for an (n, d) probe problem: 1 below 5e7 elements, else the library default.

    lbfgs on a probe-sized problem makes thousands of small matrix products; there, BLAS worker
    threads cost more than they save (measured 5-7x slower with 2 threads than 1 on 502 x 1280
    features, benchmarks/bench_probe_threads.py) and make results depend on the thread count.
    """
    return 1 if n * d < 5e7 else None


def from_config(cfg: Any, *, n_classes: int, multilabel: bool, seed: int) -> LogisticProbe:
    """Build from the ``probe`` config node."""
    return LogisticProbe(
        n_classes=n_classes,
        multilabel=multilabel,
        C_grid=[float(c) for c in cfg.C_grid],
        class_weight=cfg.class_weight,
        max_iter=int(cfg.max_iter),
        selection_metric=str(cfg.selection_metric),
        seed=seed,
    )
