"""The linear probe: scikit-learn logistic regression on standardised features.

Protocol (paper, "Linear probing"; DESIGN.md): features are standardised with the mean and SD of
the probe's training rows (float64 statistics, float32 data); the inverse regularisation
strength C is chosen from a log grid by the validation score (validation rows are carved from
train, never from test); the probe with the chosen C is the one fitted on the training rows.
Multi-label tasks use one independent binary logistic regression per finding (one-vs-rest).

Two solvers minimise the same objective (scikit-learn's ``LogisticRegression`` with lbfgs, l2
penalty, unpenalised intercept): ``backend="sklearn"`` (the default, scipy's L-BFGS-B) and
``backend="torch"`` (full-batch ``torch.optim.LBFGS`` with a strong-Wolfe line search on CPU or
one GPU, for probes at the scale of 100k x 8192 features; :func:`fit_logistic_lbfgs`).
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from medprobe.errors import ProbeError  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    import torch

SELECTION_METRICS = ("auroc_macro", "f1_macro", "accuracy", "neg_log_loss")
BACKENDS = ("sklearn", "torch")
TORCH_DTYPES = ("float32", "float64")
DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"


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
        backend: ``"sklearn"`` (scipy L-BFGS-B via ``LogisticRegression``) or ``"torch"``
            (:func:`fit_logistic_lbfgs`); both minimise the same objective.
        device: torch backend only: ``"auto"`` (cuda if available, else cpu), ``"cpu"``,
            ``"cuda"`` or ``"cuda:N"``.
        dtype: torch backend only: ``"float32"`` (features, weights and logits; the loss is
            summed in float64) or ``"float64"`` (2x the memory; reaches scikit-learn's minimiser
            to ~1e-6 at a tight ``tol``). scikit-learn itself computes in float32 on the probe's
            float32 features.
        tol: lbfgs stopping tolerance on the largest absolute gradient entry of the
            sample-weight-averaged objective (scikit-learn's ``tol``; its default 1e-4).

    After :meth:`fit`: ``C_`` (chosen C), ``val_score_`` (its validation score), ``selection_``
    (list of {C, score} on validation), ``n_iter_max_`` (most lbfgs iterations at any C),
    ``converged_`` (False when some C stopped at ``max_iter``), ``scaler_`` (the fitted
    ``StandardScaler``). sklearn backend: ``clf_``. torch backend: ``coef_`` (K', D) and
    ``intercept_`` (K',) float64 on CPU in the standardised feature space (K' = 1 for a binary
    problem, as scikit-learn), and ``solver_`` (per C: n_iter, grad_max, objective).

    Raises:
        ValueError: unknown ``selection_metric``, ``backend``, ``device`` or ``dtype``.
    """

    n_classes: int
    multilabel: bool = False
    C_grid: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
    class_weight: str | None = None
    max_iter: int = 1000
    selection_metric: str = "auroc_macro"
    seed: int = 0
    backend: str = "sklearn"
    device: str = "auto"
    dtype: str = "float32"
    tol: float = 1e-4
    C_: float = field(init=False, default=float("nan"))
    selection_: list[dict[str, float]] = field(init=False, default_factory=list)
    converged_: bool = field(init=False, default=True)
    n_iter_max_: int = field(init=False, default=0)

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
                    tol=self.tol,
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
                    tol=self.tol,
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
        ests = getattr(clf, "estimators_", [clf])
        n_iter = [int(np.max(e.n_iter_)) for e in ests if hasattr(e, "n_iter_")]
        self.n_iter_max_ = max([self.n_iter_max_, *n_iter])
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
            ProbeError: fewer than two classes in y, empty validation rows, validation rows
                on which the selection metric is undefined, or (torch backend) a CUDA device
                asked for where none is available.
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
        self.converged_ = True
        self.n_iter_max_ = 0
        if self.backend == "torch":
            return self._fit_torch(X, y, X_val, y_val)
        Xf = np.asarray(X, dtype=np.float32)  # one cast (the runner passes float16 rows)
        self.scaler_ = StandardScaler().fit(Xf)
        Xs = self.scaler_.transform(Xf)
        del Xf
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

    # ---- torch backend -------------------------------------------------------------------

    def _torch_problem(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels -> (target, sample weights) for :func:`fit_logistic_lbfgs`; sets ``layout_``.

        Mirrors scikit-learn: the classes are those present in ``y``; two of them make ONE
        binary problem for ``classes[1]``; three or more a multinomial one; multi-label columns
        are independent binary problems, and a column with a single value is a constant
        predictor (as ``OneVsRestClassifier``). ``"balanced"`` weights are
        ``compute_class_weight`` per problem.
        """
        from sklearn.utils.class_weight import compute_class_weight

        balanced = self.class_weight == "balanced"
        if self.multilabel:
            Y = np.asarray(y)
            if Y.ndim != 2 or Y.shape[1] != self.n_classes:
                raise ProbeError(f"multi-label targets must be (n, {self.n_classes}) 0/1")
            lo, hi = Y.min(0), Y.max(0)
            fit_cols = np.flatnonzero(lo != hi)
            self.layout_ = ("multilabel", fit_cols, hi.astype(np.float64))
            target = (Y[:, fit_cols] == hi[fit_cols]).astype(np.float64)
            if not balanced:
                return target, None
            sw = np.empty_like(target)
            for j in range(target.shape[1]):
                cw = compute_class_weight("balanced", classes=np.array([0.0, 1.0]), y=target[:, j])
                sw[:, j] = cw[target[:, j].astype(np.int64)]
            return target, sw
        yi = np.asarray(y)
        classes = np.unique(yi)
        enc = np.searchsorted(classes, yi)
        cw = compute_class_weight("balanced", classes=classes, y=yi) if balanced else None
        sw = None if cw is None else cw[enc]
        if len(classes) == 2:
            self.layout_ = ("binary", classes, None)
            target = (enc == 1).astype(np.float64)[:, None]
            return target, None if sw is None else sw[:, None]
        self.layout_ = ("multinomial", classes, None)
        return enc.astype(np.int64), sw

    def _torch_proba(self, logits: np.ndarray) -> np.ndarray:
        """(n, K') float64 logits -> (n, K) float64 probabilities, scikit-learn's layout."""
        from scipy.special import expit, softmax

        kind, idx, const = self.layout_
        n = len(logits)
        if kind == "multilabel":
            out = np.repeat(const[None, :], n, axis=0)
            out[:, idx] = expit(logits)
            return out
        full = np.zeros((n, self.n_classes), dtype=np.float64)
        if kind == "binary":
            p1 = expit(logits[:, 0])
            full[:, idx[0]], full[:, idx[1]] = 1.0 - p1, p1
        else:
            full[:, idx] = softmax(logits, axis=1)
        return full

    def _fit_torch(
        self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray
    ) -> LogisticProbe:
        """:meth:`fit` with :func:`fit_logistic_lbfgs`: standardise on the device, warm-start
        along the increasing C path, keep the best C's (K', D) weights on CPU, free the device.

        Device memory: one (n, D) and one (n_val, D) buffer of ``dtype`` (standardised in
        place) plus O((n + n_val) * K) for logits; fp32 matmuls run without TF32 (restored).
        """
        import torch

        dev = resolve_device(self.device)
        dt = resolve_dtype(self.dtype)
        target_np, sw = self._torch_problem(y)
        multinomial = self.layout_[0] == "multinomial"
        n_out = len(self.layout_[1]) if multinomial else target_np.shape[1]
        precision = torch.get_float32_matmul_precision()
        Xt = Xv = target = None
        init: tuple[torch.Tensor, torch.Tensor] | None = None
        best: tuple[float, float, np.ndarray, np.ndarray] | None = None
        self.selection_, self.solver_ = [], []
        try:
            torch.set_float32_matmul_precision("highest")  # no TF32: it would move the optimum
            Xt, self.scaler_ = standardise_to_device(X, dev, dt)
            Xv, _ = standardise_to_device(X_val, dev, dt, scaler=self.scaler_)
            target = torch.as_tensor(target_np, device=dev)
            if not multinomial:
                target = target.to(dt)
            for C in sorted(float(c) for c in self.C_grid):
                logits = np.zeros((len(X_val), 0))
                coef, icpt = np.zeros((0, Xt.shape[1])), np.zeros(0)
                if n_out > 0:  # else multi-label with every column constant: nothing to fit
                    res = fit_logistic_lbfgs(
                        Xt, target, C, multinomial=multinomial, n_classes=n_out,
                        sample_weight=sw, init=init, max_iter=self.max_iter, tol=self.tol,
                    )  # fmt: skip
                    init = (res.coef, res.intercept)
                    coef = res.coef.to("cpu", torch.float64, copy=True).numpy()
                    icpt = res.intercept.to("cpu", torch.float64, copy=True).numpy()
                    logits = device_logits(Xv, res.coef, res.intercept)
                    self.converged_ = self.converged_ and res.converged
                    self.n_iter_max_ = max(self.n_iter_max_, res.n_iter)
                    self.solver_.append(
                        {"C": C, "n_iter": res.n_iter, "grad_max": res.grad_max,
                         "objective": res.objective}
                    )  # fmt: skip
                score = float(self._score(y_val, self._torch_proba(logits)))
                self.selection_.append({"C": C, "score": score})
                if best is None or score > best[0] + 1e-12:
                    best = (score, C, coef, icpt)
        finally:
            del Xt, Xv, target, init
            torch.set_float32_matmul_precision(precision)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        assert best is not None
        self.val_score_, self.C_, self.coef_, self.intercept_ = best
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, D) features -> (n, K) float64 probabilities (rows sum to 1 unless multi-label).

        torch backend: on CPU, in row chunks: features standardised in float32 exactly as the
        sklearn backend, logits in float64 from the stored float64 weights.
        """
        if self.backend == "torch":
            out = np.empty((len(X), self.n_classes), dtype=np.float64)
            step = _chunk_rows(self.coef_.shape[1])
            for i in range(0, len(X), step):
                xs = self.scaler_.transform(np.asarray(X[i : i + step], dtype=np.float32))
                logits = xs.astype(np.float64) @ self.coef_.T + self.intercept_
                out[i : i + step] = self._torch_proba(logits)
            return out
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


# ---- torch solver -------------------------------------------------------------------------


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; ``cpu``; ``cuda`` / ``cuda:N`` if present.

    Raises:
        ProbeError: CUDA asked for but not available, or ``cuda:N`` beyond the device count.
        ValueError: a spec that is none of these.
    """
    import torch

    spec = str(spec)
    if re.fullmatch(DEVICE_PATTERN, spec) is None:
        raise ValueError(f"probe.device {spec!r} unknown; use auto, cpu, cuda or cuda:N")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ProbeError(f"probe.device={spec} but no CUDA device is available here")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise ProbeError(
                f"probe.device={spec} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    return torch.device(spec)


def resolve_dtype(spec: str) -> torch.dtype:
    """``"float32"`` / ``"float64"`` -> the torch dtype.

    Raises:
        ValueError: any other value.
    """
    import torch

    if spec not in TORCH_DTYPES:
        raise ValueError(f"probe.dtype {spec!r} unknown; use float32 or float64")
    return getattr(torch, spec)


@contextmanager
def torch_cpu_threads(n: int, d: int, device: torch.device) -> Iterator[None]:
    """Limit torch's CPU threads by :func:`blas_threads` (1 below 5e7 elements) for a block.

    Same reason as for BLAS: lbfgs on a small problem makes many tiny kernels, where worker
    threads cost more than they save (a 300 x 30 fit measured 0.13 s with 1 thread and
    0.9-6 s with 2 on a loaded 2-core machine). No effect on CUDA devices or large problems.
    """
    import torch

    limit = blas_threads(n, d) if device.type == "cpu" else None
    before = torch.get_num_threads()
    if limit is not None:
        torch.set_num_threads(limit)
    try:
        yield
    finally:
        if limit is not None:
            torch.set_num_threads(before)


def _chunk_rows(d: int) -> int:
    """Rows per chunk so that one float64 chunk of width ``d`` is about 128 MB."""
    return max(1, (1 << 24) // max(int(d), 1))


def _host_chunk(X: np.ndarray, i: int, j: int) -> np.ndarray:
    """Rows ``i:j`` as a writeable C-contiguous float32 array (the sklearn path's cast)."""
    a = np.ascontiguousarray(X[i:j], dtype=np.float32)
    return a if a.flags.writeable else a.copy()


def standardise_to_device(
    X: np.ndarray,
    device: torch.device,
    dtype: torch.dtype,
    *,
    scaler: StandardScaler | None = None,
    chunk_rows: int | None = None,
) -> tuple[torch.Tensor, StandardScaler]:
    """Copy (n, D) features to ``device`` standardised as ``StandardScaler`` does, in chunks.

    The host rows are cast to float32 chunk by chunk (float16 cache rows never become a full
    float32 copy on the host); the device holds one (n, D) buffer of ``dtype`` and is
    standardised in place. With ``scaler=None`` the mean and variance are computed on the
    device in float64 with scikit-learn's corrected two-pass formula
    (``_incremental_mean_and_var``), near-constant features get scale 1
    (``_is_constant_feature``), and a fitted ``StandardScaler`` carrying those statistics is
    returned; the values are then ``(float32(x) - float32(mean)) / float32(scale)`` in float32,
    exactly scikit-learn's ``transform`` of float32 data, stored as ``dtype``. Up to the last
    bit of the float64 sums (summation order differs), the result equals
    ``StandardScaler().fit(X32).transform(X32)``.

    Returns:
        (the (n, D) tensor of ``dtype`` on ``device``, the scaler).

    Raises:
        ValueError: X is not 2-D, or has no rows while ``scaler`` is None.
    """
    import torch

    if X.ndim != 2:
        raise ValueError(f"features must be (n, D), got shape {X.shape}")
    n, d = X.shape
    step = chunk_rows or _chunk_rows(d)
    buf = torch.empty((n, d), dtype=dtype, device=device)
    f64 = torch.float64
    total = torch.zeros(d, dtype=f64, device=device) if scaler is None else None
    for i in range(0, n, step):
        c = torch.from_numpy(_host_chunk(X, i, i + step)).to(device)
        buf[i : i + step].copy_(c)
        if total is not None:
            total += c.sum(0, dtype=f64)
    if scaler is None:
        if n == 0:
            raise ValueError("cannot standardise zero rows")
        assert total is not None
        mean = total / n
        corr = torch.zeros(d, dtype=f64, device=device)
        ssq = torch.zeros(d, dtype=f64, device=device)
        for i in range(0, n, step):
            t = buf[i : i + step].to(f64) - mean
            corr += t.sum(0)
            ssq += t.square_().sum(0)
            del t
        var = (ssq - corr**2 / n) / n
        eps = torch.finfo(f64).eps
        constant = var <= n * eps * var + (n * mean * eps) ** 2
        scale = torch.where(constant, torch.ones_like(var), var.sqrt())
        scaler = StandardScaler()
        scaler.mean_ = mean.cpu().numpy()
        scaler.var_ = var.cpu().numpy()
        scaler.scale_ = scale.cpu().numpy()
        scaler.n_samples_seen_ = n
        scaler.n_features_in_ = d
    mean32 = torch.as_tensor(scaler.mean_, device=device).to(torch.float32)
    scale32 = torch.as_tensor(scaler.scale_, device=device).to(torch.float32)
    for i in range(0, n, step):
        view = buf[i : i + step]
        c = view.to(torch.float32)  # the same tensor when dtype is float32: in place
        c.sub_(mean32).div_(scale32)
        if c.data_ptr() != view.data_ptr():
            view.copy_(c)
    return buf, scaler


@dataclass
class LBFGSResult:
    """Solution of :func:`fit_logistic_lbfgs` (tensors on the solver's device and dtype).

    ``coef`` (K, D), ``intercept`` (K,); ``objective`` and ``grad_max`` (largest absolute
    gradient entry) at the solution, in the sample-weight-averaged scaling; ``n_iter`` lbfgs
    iterations; ``converged`` False when the iteration or evaluation cap stopped the solver
    before the gradient reached ``tol`` (scikit-learn's ConvergenceWarning case).
    """

    coef: torch.Tensor
    intercept: torch.Tensor
    objective: float
    grad_max: float
    n_iter: int
    converged: bool


def logistic_objective(
    X: torch.Tensor,
    target: torch.Tensor,
    coef: torch.Tensor,
    intercept: torch.Tensor,
    C: float,
    *,
    multinomial: bool,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """scikit-learn's ``LogisticRegression`` (l2, unpenalised intercept) objective, float64.

    Source: scikit-learn 1.9 ``_logistic_regression_path`` + ``LinearModelLoss`` (lbfgs); the
    probe protocol is the paper's "Linear probing" (module docstring).

    Per problem: ``(C * sum_i s_i * loss_i + 0.5 * ||W||^2) / (C * sum_i s_i)``, the scaling
    of sklearn's ``LinearModelLoss`` (the same minimiser as sklearn's documented
    ``C * sum loss + 0.5 ||W||^2``); ``s`` = sample weights (class weights), 1 when None.

    Args:
        X: (n, D) float tensor. coef: (K, D) same dtype, applied as ``F.linear`` (the (K, D)
            layout; STACK.md: ~5x faster per step than (D, K)). intercept: (K,).
        target: multinomial: (n,) int64 class ids in [0, K), loss_i = cross-entropy of the
            softmax over K. Otherwise (n, K) 0/1 floats: K independent binary problems, each
            with its own weight row and sigmoid (K = 1 is scikit-learn's binary case: ONE
            coefficient vector, not a 2-row softmax); their objectives are summed.
        sample_weight: None, (n,) (multinomial) or (n, K) (binary problems).

    Returns:
        0-dim float64 tensor (differentiable w.r.t. coef and intercept).
    """
    import torch
    import torch.nn.functional as F

    n = X.shape[0]
    z = F.linear(X, coef, intercept)
    if multinomial:
        per = F.cross_entropy(z, target, reduction="none").to(torch.float64)
    else:
        per = F.binary_cross_entropy_with_logits(z, target, reduction="none").to(torch.float64)
    if sample_weight is None:
        data = per.sum() / n
        sw_sum: torch.Tensor | float = float(n)
    else:
        sw = sample_weight.to(torch.float64)
        sw_sum = sw.sum(0)
        data = (per * (sw / sw_sum)).sum()
    penalty = 0.5 / C * (coef.to(torch.float64).square().sum(-1) / sw_sum).sum()
    return data + penalty


def fit_logistic_lbfgs(
    X: torch.Tensor,
    target: torch.Tensor,
    C: float,
    *,
    multinomial: bool,
    n_classes: int | None = None,
    sample_weight: np.ndarray | torch.Tensor | None = None,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_iter: int = 1000,
    tol: float = 1e-4,
    history_size: int = 10,
) -> LBFGSResult:
    """Minimise :func:`logistic_objective` with full-batch ``torch.optim.LBFGS``.

    Same problem and stopping rule as scikit-learn's ``LogisticRegression(solver="lbfgs")``:
    stop when the largest absolute gradient entry of the averaged objective is <= ``tol``
    (scipy's ``gtol``), when the objective stops changing (float64: 64 machine epsilons,
    scipy's ``ftol``; float32: torch's default 1e-9, as the loss is accumulated in float64 but
    the logits carry float32 rounding), or after ``max_iter`` iterations; strong-Wolfe line
    search; ``history_size`` 10 (scipy's ``maxcor``); function evaluations capped at
    ``max(15000, 1.25 * max_iter)`` (scipy's ``maxfun``). The solver runs on ``X``'s device
    and dtype. The multinomial intercept is only defined up to a constant (it is not
    penalised); it is returned centred (sum 0), as scikit-learn's starts from zeros and keeps.

    Args:
        X: (n, D) float32/float64 tensor, standardised. target, sample_weight: as
            :func:`logistic_objective` (numpy or tensor weights).
        C: inverse regularisation strength (> 0).
        multinomial: softmax over ``n_classes`` (required then) vs independent sigmoids.
        init: warm start (coef (K, D), intercept (K,)), copied; zeros when None.

    Returns:
        :class:`LBFGSResult`.

    Raises:
        ValueError: C <= 0, or multinomial without ``n_classes``.
    """
    import torch

    if not C > 0:
        raise ValueError(f"C must be > 0, got {C}")
    if multinomial and n_classes is None:
        raise ValueError("multinomial needs n_classes")
    dev, dt = X.device, X.dtype
    k = int(n_classes) if multinomial else int(target.shape[1])  # type: ignore[arg-type]
    sw = None if sample_weight is None else torch.as_tensor(sample_weight, device=dev)
    if init is None:
        W = torch.zeros((k, X.shape[1]), dtype=dt, device=dev)
        b = torch.zeros(k, dtype=dt, device=dev)
    else:
        W = init[0].detach().to(dev, dt).clone()
        b = init[1].detach().to(dev, dt).clone()
    W.requires_grad_(True)
    b.requires_grad_(True)
    max_eval = max(15000, max_iter * 5 // 4)
    opt = torch.optim.LBFGS(
        [W, b],
        lr=1.0,
        max_iter=max_iter,
        max_eval=max_eval,
        tolerance_grad=tol,
        tolerance_change=64 * float(np.finfo(np.float64).eps) if dt == torch.float64 else 1e-9,
        history_size=history_size,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        f = logistic_objective(X, target, W, b, C, multinomial=multinomial, sample_weight=sw)
        f.backward()
        return f

    with torch_cpu_threads(X.shape[0], X.shape[1], dev):
        opt.step(closure)
        with torch.enable_grad():
            f = closure()
    state = opt.state[W]
    n_iter, evals = int(state.get("n_iter", 0)), int(state.get("func_evals", 0))
    assert W.grad is not None and b.grad is not None
    grad_max = float(torch.maximum(W.grad.abs().max(), b.grad.abs().max()))
    capped = n_iter >= max_iter or evals >= max_eval
    with torch.no_grad():
        if multinomial:
            b -= b.mean()
    return LBFGSResult(
        coef=W.detach(),
        intercept=b.detach(),
        objective=float(f.detach()),
        grad_max=grad_max,
        n_iter=n_iter,
        converged=grad_max <= tol or not capped,
    )


def device_logits(
    X: torch.Tensor, coef: torch.Tensor, intercept: torch.Tensor, chunk_rows: int = 65536
) -> np.ndarray:
    """(n, D) tensor, (K, D) weights -> (n, K) float64 numpy logits, in row chunks on X's device."""
    import torch
    import torch.nn.functional as F

    out = np.empty((X.shape[0], coef.shape[0]), dtype=np.float64)
    with torch.no_grad(), torch_cpu_threads(X.shape[0], X.shape[1], X.device):
        for i in range(0, X.shape[0], chunk_rows):
            z = F.linear(X[i : i + chunk_rows], coef, intercept)
            out[i : i + chunk_rows] = z.to("cpu", torch.float64).numpy()
    return out


def from_config(cfg: Any, *, n_classes: int, multilabel: bool, seed: int) -> LogisticProbe:
    """Build from the ``probe`` config node (``backend``/``device``/``dtype`` default to
    sklearn/auto/float32 when the node predates them)."""
    return LogisticProbe(
        n_classes=n_classes,
        multilabel=multilabel,
        C_grid=[float(c) for c in cfg.C_grid],
        class_weight=cfg.class_weight,
        max_iter=int(cfg.max_iter),
        selection_metric=str(cfg.selection_metric),
        seed=seed,
        backend=str(getattr(cfg, "backend", "sklearn")),
        device=str(getattr(cfg, "device", "auto")),
        dtype=str(getattr(cfg, "dtype", "float32")),
    )
