"""The scikit-learn backend: ``LogisticRegression`` (lbfgs, scipy's L-BFGS-B) on float32 rows.

Standardisation: ``StandardScaler`` fitted on the float32 training rows (float64 statistics,
float32 data). Every C is fitted cold (from zero weights): a warm start from the previous C
can already satisfy lbfgs' gradient tolerance at a large C (issue 13: C=100 took 0
iterations and copied C=10's validation score on the knee set), which made large-C scores
depend on the order the grid was walked. Cold fits make each C's probe a function of C
alone. Multi-label problems are one ``OneVsRestClassifier`` per C. BLAS threads are limited by :func:`~medprobe.probe.solver.blas_threads`
while the path is open and while predicting.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from medprobe.probe.solver import SolverSettings, Step, blas_threads


def _full_proba(clf: Any, Xs: np.ndarray, n_classes: int, multilabel: bool) -> np.ndarray:
    """Standardised float32 rows -> (n, K) float64 probabilities in the probe's K columns."""
    p = clf.predict_proba(Xs)
    if multilabel:
        return np.asarray(p, dtype=np.float64)
    # A class absent from the training rows gets probability 0 (column kept, K fixed).
    full = np.zeros((len(Xs), n_classes), dtype=np.float64)
    full[:, clf.classes_] = p
    return full


@dataclass
class SklearnFit:
    """The scikit-learn probe at one C: ``scaler`` then ``clf`` (a ``LogisticRegression``,
    or a ``OneVsRestClassifier`` of them for multi-label)."""

    scaler: StandardScaler
    clf: Any
    n_classes: int
    multilabel: bool

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, D) features -> (n, K) float64 probabilities (cast to float32, standardised)."""
        Xs = self.scaler.transform(np.asarray(X, dtype=np.float32))
        with threadpool_limits(limits=blas_threads(*Xs.shape), user_api="blas"):
            return _full_proba(self.clf, Xs, self.n_classes, self.multilabel)


class SklearnSolver:
    """:class:`~medprobe.probe.solver.Solver` over scikit-learn's ``LogisticRegression``.

    Memory: one float32 (n, D) standardised copy of the training rows (the input is cast once:
    the runner passes float16 rows) and one of the validation rows.
    """

    def __init__(
        self, settings: SolverSettings, X: np.ndarray, y: np.ndarray, X_val: np.ndarray
    ) -> None:
        self.settings = settings
        Xf = np.asarray(X, dtype=np.float32)  # one cast (the runner passes float16 rows)
        self.scaler = StandardScaler().fit(Xf)
        self._X: np.ndarray | None = self.scaler.transform(Xf)
        del Xf
        self._Xv: np.ndarray | None = self.scaler.transform(np.asarray(X_val, dtype=np.float32))
        self._y = y
        self._limits: Any | None = threadpool_limits(
            limits=blas_threads(*self._X.shape), user_api="blas"
        )

    def _estimator(self, C: float) -> Any:
        s = self.settings
        if s.multilabel:
            return OneVsRestClassifier(
                LogisticRegression(
                    C=C,
                    max_iter=s.max_iter,
                    tol=s.tol,
                    class_weight=s.class_weight,
                    random_state=s.seed,
                )
            )
        return LogisticRegression(
            C=C, max_iter=s.max_iter, tol=s.tol, class_weight=s.class_weight, random_state=s.seed
        )

    def fit(self, C: float) -> Step:
        """Fit at ``C`` from zero weights (cold: the result does not depend on earlier Cs)."""
        assert self._X is not None and self._Xv is not None, "fit after close"
        s = self.settings
        clf = self._estimator(C)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf.fit(self._X, self._y)
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        ests = getattr(clf, "estimators_", [clf])  # constant columns have no n_iter_
        n_iter = max((int(np.max(e.n_iter_)) for e in ests if hasattr(e, "n_iter_")), default=0)
        return Step(
            val_proba=_full_proba(clf, self._Xv, s.n_classes, s.multilabel),
            fitted=SklearnFit(self.scaler, clf, s.n_classes, s.multilabel),
            n_iter=n_iter,
            converged=converged,
            diagnostics={"C": C, "n_iter": n_iter},
        )

    def close(self) -> None:
        """Drop the standardised copies and restore the BLAS thread limits."""
        self._X = self._Xv = None
        if self._limits is not None:
            self._limits.restore_original_limits()
            self._limits = None
