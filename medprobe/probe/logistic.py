"""The linear probe: logistic regression on standardised features, C chosen on validation rows.

Protocol (paper, "Linear probing"; DESIGN.md): features are standardised with the mean and SD of
the probe's training rows (float64 statistics, float32 data); the inverse regularisation
strength C is chosen from a log grid by the validation score (validation rows are carved from
train, never from test); the probe with the chosen C is the one fitted on the training rows.
Multi-label tasks use one independent binary logistic regression per finding (one-vs-rest).

One C-selection loop (:meth:`LogisticProbe.fit`) runs over a solver backend
(:mod:`medprobe.probe.solver`). Two backends minimise the same objective (scikit-learn's
``LogisticRegression`` with lbfgs, l2 penalty, unpenalised intercept): ``backend="sklearn"``
(the default, scipy's L-BFGS-B; :mod:`medprobe.probe.sklearn_solver`) and ``backend="torch"``
(full-batch ``torch.optim.LBFGS`` with a strong-Wolfe line search on CPU or one GPU, for probes
at the scale of 100k x 8192 features; :mod:`medprobe.probe.torch_solver`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from medprobe.config.schema import DEFAULT_C_GRID
from medprobe.errors import ProbeError
from medprobe.probe.sklearn_solver import SklearnFit, SklearnSolver
from medprobe.probe.solver import Fitted, SolverFactory, SolverSettings
from medprobe.probe.torch_lbfgs import DEVICE_PATTERN, TORCH_DTYPES
from medprobe.probe.torch_solver import Layout, TorchFit, TorchLBFGSSolver

SELECTION_METRICS = ("auroc_macro", "f1_macro", "accuracy", "neg_log_loss")
#: The solver backends by their config name (``probe.backend``).
SOLVERS: dict[str, SolverFactory] = {"sklearn": SklearnSolver, "torch": TorchLBFGSSolver}
BACKENDS = tuple(SOLVERS)
#: Two validation scores closer than this are a tie (the smaller C keeps it).
TIE_TOLERANCE = 1e-12

_F = TypeVar("_F", SklearnFit, TorchFit)


@dataclass
class LogisticProbe:
    """Logistic-regression probe with C chosen on validation data.

    Args:
        n_classes: K (classes, or findings for multi-label).
        multilabel: one-vs-rest binary probes on (n, K) multi-hot labels.
        C_grid: candidate inverse regularisation strengths (> 0).
        class_weight: None or ``"balanced"`` (sklearn semantics; per binary problem for
            multi-label).
        max_iter: lbfgs iterations.
        selection_metric: one of :data:`SELECTION_METRICS`, computed on the validation rows;
            ties go to the smaller C (stronger regularisation).
        seed: random_state of the solver.
        backend: one of :data:`BACKENDS`: ``"sklearn"`` (scipy L-BFGS-B via
            ``LogisticRegression``) or ``"torch"`` (:func:`fit_logistic_lbfgs`); both minimise
            the same objective.
        device: torch backend only: ``"auto"`` (cuda if available, else cpu), ``"cpu"``,
            ``"cuda"`` or ``"cuda:N"``.
        dtype: torch backend only: ``"float32"`` (features, weights and logits; the loss is
            summed in float64) or ``"float64"`` (2x the memory; reaches scikit-learn's minimiser
            to ~1e-6 at a tight ``tol``). scikit-learn itself computes in float32 on the probe's
            float32 features.
        tol: lbfgs stopping tolerance on the largest absolute gradient entry of the
            sample-weight-averaged objective (scikit-learn's ``tol``; its default 1e-4).
        progress: a tqdm bar over the C grid while fitting.

    The string settings may be ``str`` or ``enum.StrEnum`` values.

    After :meth:`fit`: ``C_`` (chosen C), ``val_score_`` (its validation score), ``selection_``
    (list of {C, score} on validation), ``n_iter_max_`` (most lbfgs iterations at any C),
    ``converged_`` (False when some C stopped at ``max_iter``), ``solver_`` (per C the solver's
    record: C, n_iter; torch also grad_max and objective), ``scaler_`` (the fitted
    ``StandardScaler``), ``fitted_`` (the probe at ``C_``). sklearn backend: ``clf_``. torch
    backend: ``coef_`` (K', D) and ``intercept_`` (K',) float64 on CPU in the standardised
    feature space (K' = 1 for a binary problem, as scikit-learn) and ``layout_``.

    Raises:
        ValueError: unknown ``selection_metric``, ``backend``, ``device`` or ``dtype``.
    """

    n_classes: int
    multilabel: bool = False
    C_grid: Sequence[float] = DEFAULT_C_GRID
    class_weight: str | None = None
    max_iter: int = 1000
    selection_metric: str = "auroc_macro"
    seed: int = 0
    backend: str = "sklearn"
    device: str = "auto"
    dtype: str = "float32"
    tol: float = 1e-4
    progress: bool = False
    C_: float = field(init=False, default=float("nan"))
    val_score_: float = field(init=False, default=float("nan"))
    selection_: list[dict[str, float]] = field(init=False, default_factory=list)
    solver_: list[dict[str, float]] = field(init=False, default_factory=list)
    converged_: bool = field(init=False, default=True)
    n_iter_max_: int = field(init=False, default=0)
    fitted_: Fitted | None = field(init=False, default=None, repr=False)
    scaler_: StandardScaler | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        if self.selection_metric not in SELECTION_METRICS:
            raise ValueError(
                f"probe.selection_metric {self.selection_metric!r} unknown; "
                f"use one of {', '.join(SELECTION_METRICS)}"
            )
        if self.backend not in BACKENDS:
            raise ValueError(f"probe.backend {self.backend!r} unknown; use one of sklearn, torch")
        if re.fullmatch(DEVICE_PATTERN, str(self.device)) is None:
            raise ValueError(f"probe.device {self.device!r} unknown; use auto, cpu, cuda or cuda:N")
        if self.dtype not in TORCH_DTYPES:
            raise ValueError(f"probe.dtype {self.dtype!r} unknown; use float32 or float64")

    def _settings(self) -> SolverSettings:
        return SolverSettings(
            n_classes=self.n_classes,
            multilabel=self.multilabel,
            class_weight=None if self.class_weight is None else str(self.class_weight),
            max_iter=int(self.max_iter),
            tol=float(self.tol),
            seed=int(self.seed),
            device=str(self.device),
            dtype=str(self.dtype),
        )

    def _score(self, y: np.ndarray, p: np.ndarray) -> float:
        from medprobe import metrics

        if self.selection_metric == "auroc_macro":
            return metrics.auroc_macro(y, p, multilabel=self.multilabel)
        if self.selection_metric == "f1_macro":
            return metrics.f1_macro(y, p, multilabel=self.multilabel)
        if self.selection_metric == "accuracy":
            return metrics.accuracy(y, p, multilabel=self.multilabel)
        return -metrics.log_loss(y, p, multilabel=self.multilabel)

    def _check(self, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray) -> None:
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

    def fit(
        self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray
    ) -> LogisticProbe:
        """Choose C on (X_val, y_val), keep the probe fitted on (X, y) with that C.

        The C grid is walked in increasing order, each C fitted cold to the solver's
        tolerance (:mod:`medprobe.probe.solver`), so every C's score is the same whatever
        grid it is part of; with ``progress`` a tqdm bar counts the Cs. The chosen C is the first
        maximum of the validation score (a later C must beat it by
        more than :data:`TIE_TOLERANCE`, so ties go to the smaller C).

        Args:
            X: (n, D) features (any float dtype; cast to float32), y: (n,) int or (n, K) 0/1.
            X_val, y_val: validation rows, same layout.

        Raises:
            ProbeError: fewer than two classes in y, empty validation rows, validation rows
                on which the selection metric is undefined, or (torch backend) a CUDA device
                asked for where none is available.
        """
        self._check(y, X_val, y_val)
        self.converged_, self.n_iter_max_ = True, 0
        self.selection_, self.solver_ = [], []
        best: tuple[float, float, Fitted] | None = None
        with closing(SOLVERS[str(self.backend)](self._settings(), X, y, X_val)) as solver:
            self.scaler_ = solver.scaler
            grid = sorted(float(c) for c in self.C_grid)
            for C in tqdm(grid, desc="probe C grid", unit="C", disable=not self.progress,
                          leave=False):  # fmt: skip
                step = solver.fit(C)
                self.converged_ = self.converged_ and step.converged
                self.n_iter_max_ = max(self.n_iter_max_, step.n_iter)
                if step.diagnostics is not None:
                    self.solver_.append(step.diagnostics)
                score = float(self._score(y_val, step.val_proba))
                self.selection_.append({"C": C, "score": score})
                if best is None or score > best[0] + TIE_TOLERANCE:
                    best = (score, C, step.fitted)
        assert best is not None
        self.val_score_, self.C_, self.fitted_ = best
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, D) features -> (n, K) float64 probabilities (rows sum to 1 unless multi-label).

        torch backend: on CPU, in row chunks: features standardised in float32 exactly as the
        sklearn backend, logits in float64 from the stored float64 weights.

        Raises:
            AttributeError: called before :meth:`fit`.
        """
        if self.fitted_ is None:
            raise AttributeError("LogisticProbe.predict_proba before fit")
        return self.fitted_.predict_proba(X)

    def _fitted(self, kind: type[_F]) -> _F:
        if not isinstance(self.fitted_, kind):
            raise AttributeError(f"only a fitted {kind.__name__} probe has this attribute")
        return self.fitted_

    @property
    def clf_(self) -> Any:
        """sklearn backend: the fitted ``LogisticRegression`` (``OneVsRestClassifier``)."""
        return self._fitted(SklearnFit).clf

    @property
    def coef_(self) -> np.ndarray:
        """torch backend: (K', D) float64 weights in the standardised feature space."""
        return self._fitted(TorchFit).coef

    @property
    def intercept_(self) -> np.ndarray:
        """torch backend: (K',) float64 intercepts."""
        return self._fitted(TorchFit).intercept

    @property
    def layout_(self) -> Layout:
        """torch backend: how the K' outputs map to the K probe columns."""
        return self._fitted(TorchFit).layout


def from_config(
    cfg: Any,
    *,
    n_classes: int,
    multilabel: bool,
    seed: int,
    progress: bool = False,
    task_metric: str = "auroc_macro",
) -> LogisticProbe:
    """Build from the ``probe`` config node (attribute access only: ``C_grid``,
    ``class_weight``, ``max_iter``, ``selection_metric``, ``backend``, ``device``, ``dtype``;
    enum values may be ``str`` or ``StrEnum``). ``selection_metric`` null means the task's
    primary metric, ``task_metric`` (the pipeline resolves it before:
    :func:`medprobe.pipeline.probing.resolved_probe_config`); ``progress``: tqdm over the C grid.

    Raises:
        ValueError: an unknown ``selection_metric``, ``backend``, ``device`` or ``dtype``.
    """
    return LogisticProbe(
        n_classes=n_classes,
        multilabel=multilabel,
        C_grid=[float(c) for c in cfg.C_grid],
        class_weight=None if cfg.class_weight is None else str(cfg.class_weight),
        max_iter=int(cfg.max_iter),
        selection_metric=str(task_metric if cfg.selection_metric is None else cfg.selection_metric),
        seed=seed,
        backend=str(cfg.backend),
        device=str(cfg.device),
        dtype=str(cfg.dtype),
        progress=bool(progress),
    )
