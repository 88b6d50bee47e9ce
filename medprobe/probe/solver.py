"""What a solver backend of :class:`medprobe.probe.logistic.LogisticProbe` provides.

The probe owns the C-selection loop (one loop for every backend); a backend owns the rest:
standardising the training and validation rows, fitting one C (cold, from zero weights: the
fit at one C must not depend on the Cs fitted before it, issue 13), validation probabilities, and the fitted probe's ``predict_proba``.

A backend is a class ``Solver(settings, X, y, X_val)`` (see :data:`SolverFactory`): the
constructor prepares the problem (the training statistics, device buffers, thread limits);
``fit(C)`` is called once per C in increasing order; ``close()`` releases what the
constructor acquired (always called, also after an error). Both backends minimise the same
objective, scikit-learn's ``LogisticRegression`` (lbfgs, l2 penalty, unpenalised intercept).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from sklearn.preprocessing import StandardScaler


@dataclass(frozen=True)
class SolverSettings:
    """The objective and stopping rule every backend gets (the probe's settings).

    Attributes:
        n_classes: K (classes, or findings for multi-label).
        multilabel: one independent binary problem per column of (n, K) 0/1 targets.
        class_weight: None or ``"balanced"`` (scikit-learn's semantics, per binary problem
            for multi-label).
        max_iter: lbfgs iteration cap per C.
        tol: lbfgs stopping tolerance on the largest absolute gradient entry of the
            sample-weight-averaged objective (scikit-learn's ``tol``).
        seed: the solver's ``random_state`` (scikit-learn; lbfgs itself is deterministic).
        device: torch backend only: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: torch backend only: ``float32`` or ``float64``.
    """

    n_classes: int
    multilabel: bool
    class_weight: str | None
    max_iter: int
    tol: float
    seed: int
    device: str
    dtype: str


class Fitted(Protocol):
    """A probe fitted at one C: raw features in, probabilities out."""

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, D) features (any float dtype, unstandardised) -> (n, K) float64
        probabilities (rows sum to 1 unless multi-label; a class absent from the training
        rows gets 0)."""
        ...


@dataclass
class Step:
    """One C of the path, fitted on the training rows.

    Attributes:
        val_proba: (n_val, K) float64 probabilities of the validation rows.
        fitted: the probe at this C (kept by the probe if this C is chosen).
        n_iter: most lbfgs iterations of any binary/multinomial problem at this C (0 when
            nothing was fitted).
        converged: False when the iteration cap stopped the solver before ``tol``.
        diagnostics: per-C solver record (``C``, ``n_iter``, and for the torch backend
            ``grad_max`` and ``objective``), or None when nothing was fitted.
    """

    val_proba: np.ndarray
    fitted: Fitted
    n_iter: int
    converged: bool
    diagnostics: dict[str, float] | None


class Solver(Protocol):
    """One backend prepared for one problem (see the module docstring)."""

    #: The ``StandardScaler`` fitted on the training rows (float64 statistics).
    scaler: StandardScaler

    def fit(self, C: float) -> Step:
        """Fit at ``C`` (> 0) to the solver's tolerance for this C's own objective,
        independently of earlier calls (cold start)."""
        ...

    def close(self) -> None:
        """Release buffers and restore thread / precision settings (idempotent)."""
        ...


#: ``backend(settings, X, y, X_val)``: X (n, D) and X_val (n_val, D) features of any float
#: dtype, y (n,) int class ids or (n, K) 0/1 for multi-label.
SolverFactory = Callable[[SolverSettings, np.ndarray, np.ndarray, np.ndarray], Solver]


def blas_threads(n: int, d: int) -> int | None:
    """BLAS threads for an (n, d) probe problem: 1 below 5e7 elements, else the library default.

    lbfgs on a probe-sized problem makes thousands of small matrix products; there, BLAS worker
    threads cost more than they save (measured 5-7x slower with 2 threads than 1 on 502 x 1280
    features, benchmarks/bench_probe_threads.py) and make results depend on the thread count.
    """
    return 1 if n * d < 5e7 else None


def rows_per_chunk(d: int) -> int:
    """Rows per chunk so that one float64 chunk of width ``d`` is about 128 MB."""
    return max(1, (1 << 24) // max(int(d), 1))
