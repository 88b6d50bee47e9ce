"""The torch backend: :func:`~medprobe.probe.torch_lbfgs.fit_logistic_lbfgs` on CPU or one GPU.

The problem is laid out as scikit-learn lays it out (:func:`torch_targets`), the rows are
standardised on the device (:func:`~medprobe.probe.torch_lbfgs.standardise_to_device`), each C
is fitted cold from zero weights (order-independent path, issue 13), and each C's (K', D) weights are copied to the host in
float64; the fitted probe predicts on the CPU. Closing the solver frees the device and
restores torch's float32 matmul precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from sklearn.preprocessing import StandardScaler

from medprobe.errors import ProbeError
from medprobe.probe.solver import SolverSettings, Step, rows_per_chunk
from medprobe.probe.torch_lbfgs import (
    device_logits,
    fit_logistic_lbfgs,
    resolve_device,
    resolve_dtype,
    standardise_to_device,
)

if TYPE_CHECKING:
    import torch

LayoutKind = Literal["binary", "multinomial", "multilabel"]


@dataclass(frozen=True)
class Layout:
    """How the solver's K' outputs map to the probe's K columns (scikit-learn's layout).

    Attributes:
        kind: ``binary`` (two classes present: ONE output for ``index[1]``), ``multinomial``
            (three or more classes present: one output per class in ``index``) or
            ``multilabel`` (one output per non-constant column in ``index``).
        index: the probe columns the outputs belong to (int array).
        constant: multi-label only: (K,) float64 value of each column where it is constant
            in the training rows (the columns in ``index`` are overwritten).
    """

    kind: LayoutKind
    index: np.ndarray
    constant: np.ndarray | None = None

    def proba(self, logits: np.ndarray, n_classes: int) -> np.ndarray:
        """(n, K') float64 logits -> (n, K) float64 probabilities, scikit-learn's layout."""
        from scipy.special import expit, softmax

        n = len(logits)
        if self.kind == "multilabel":
            assert self.constant is not None
            out = np.repeat(self.constant[None, :], n, axis=0)
            out[:, self.index] = expit(logits)
            return out
        full = np.zeros((n, n_classes), dtype=np.float64)
        if self.kind == "binary":
            p1 = expit(logits[:, 0])
            full[:, self.index[0]], full[:, self.index[1]] = 1.0 - p1, p1
        else:
            full[:, self.index] = softmax(logits, axis=1)
        return full


def torch_targets(
    y: np.ndarray, n_classes: int, multilabel: bool, class_weight: str | None
) -> tuple[np.ndarray, np.ndarray | None, Layout]:
    """Labels -> (target, sample weights, layout) for :func:`fit_logistic_lbfgs`.

    Mirrors scikit-learn: the classes are those present in ``y``; two of them make ONE
    binary problem for ``classes[1]`` (target (n, 1) float64); three or more a multinomial
    one (target (n,) int64 class positions); multi-label columns are independent binary
    problems (target (n, K') float64), and a column with a single value is a constant
    predictor (as ``OneVsRestClassifier``). ``"balanced"`` weights are
    ``compute_class_weight`` per problem ((n,) or (n, K') float64); None without weights.

    Raises:
        ProbeError: multi-label targets that are not (n, ``n_classes``).
    """
    from sklearn.utils.class_weight import compute_class_weight

    balanced = class_weight == "balanced"
    if multilabel:
        Y = np.asarray(y)
        if Y.ndim != 2 or Y.shape[1] != n_classes:
            raise ProbeError(f"multi-label targets must be (n, {n_classes}) 0/1")
        lo, hi = Y.min(0), Y.max(0)
        fit_cols = np.flatnonzero(lo != hi)
        layout = Layout("multilabel", fit_cols, hi.astype(np.float64))
        target = (Y[:, fit_cols] == hi[fit_cols]).astype(np.float64)
        if not balanced:
            return target, None, layout
        sw = np.empty_like(target)
        for j in range(target.shape[1]):
            cw = compute_class_weight("balanced", classes=np.array([0.0, 1.0]), y=target[:, j])
            sw[:, j] = cw[target[:, j].astype(np.int64)]
        return target, sw, layout
    yi = np.asarray(y)
    classes = np.unique(yi)
    enc = np.searchsorted(classes, yi)
    cw = compute_class_weight("balanced", classes=classes, y=yi) if balanced else None
    sw1 = None if cw is None else cw[enc]
    if len(classes) == 2:
        target = (enc == 1).astype(np.float64)[:, None]
        return target, None if sw1 is None else sw1[:, None], Layout("binary", classes)
    return enc.astype(np.int64), sw1, Layout("multinomial", classes)


@dataclass
class TorchFit:
    """The torch probe at one C: ``scaler``, then ``coef`` (K', D) and ``intercept`` (K',)
    float64 on the CPU in the standardised feature space (K' = 1 for a binary problem, as
    scikit-learn), mapped to K columns by ``layout``."""

    scaler: StandardScaler
    coef: np.ndarray
    intercept: np.ndarray
    layout: Layout
    n_classes: int

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, D) features -> (n, K) float64 probabilities, on the CPU in row chunks: features
        standardised in float32 exactly as the scikit-learn backend, logits in float64."""
        out = np.empty((len(X), self.n_classes), dtype=np.float64)
        step = rows_per_chunk(self.coef.shape[1])
        for i in range(0, len(X), step):
            xs = self.scaler.transform(np.asarray(X[i : i + step], dtype=np.float32))
            logits = xs.astype(np.float64) @ self.coef.T + self.intercept
            out[i : i + step] = self.layout.proba(logits, self.n_classes)
        return out


class TorchLBFGSSolver:
    """:class:`~medprobe.probe.solver.Solver` over :func:`fit_logistic_lbfgs`.

    Device memory while open: one (n, D) and one (n_val, D) buffer of ``settings.dtype``
    (standardised in place) plus O((n + n_val) * K) for logits; fp32 matmuls run without TF32
    (it would move the optimum; restored on :meth:`close`).

    Raises:
        ProbeError: a CUDA device asked for where none is available (or ``cuda:N`` beyond
            the count), or multi-label targets of the wrong shape.
    """

    def __init__(
        self, settings: SolverSettings, X: np.ndarray, y: np.ndarray, X_val: np.ndarray
    ) -> None:
        import torch

        self.settings = settings
        self._device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype)
        target_np, self._sw, self.layout = torch_targets(
            y, settings.n_classes, settings.multilabel, settings.class_weight
        )
        self._multinomial = self.layout.kind == "multinomial"
        self._n_out = len(self.layout.index) if self._multinomial else target_np.shape[1]
        self._n_val, self._dim = len(X_val), X.shape[1]
        self._precision: str | None = torch.get_float32_matmul_precision()
        self._X: torch.Tensor | None = None
        self._Xv: torch.Tensor | None = None
        self._target: torch.Tensor | None = None
        try:
            torch.set_float32_matmul_precision("highest")  # no TF32: it would move the optimum
            self._X, self.scaler = standardise_to_device(X, self._device, dtype)
            self._Xv, _ = standardise_to_device(X_val, self._device, dtype, scaler=self.scaler)
            target = torch.as_tensor(target_np, device=self._device)
            self._target = target if self._multinomial else target.to(dtype)
        except BaseException:
            self.close()
            raise

    def fit(self, C: float) -> Step:
        """Fit at ``C`` from zero weights (cold, so the result does not depend on the Cs fitted
        before: a warm start can meet the gradient tolerance at once at large C, issue 13);
        copy the weights to the host."""
        import torch

        assert self._X is not None and self._Xv is not None and self._target is not None
        s = self.settings
        fitted = TorchFit(
            self.scaler, np.zeros((0, self._dim)), np.zeros(0), self.layout, s.n_classes
        )
        if self._n_out == 0:  # multi-label with every column constant: nothing to fit
            logits = np.zeros((self._n_val, 0))
            return Step(self.layout.proba(logits, s.n_classes), fitted, 0, True, None)
        res = fit_logistic_lbfgs(
            self._X, self._target, C, multinomial=self._multinomial, n_classes=self._n_out,
            sample_weight=self._sw, init=None, max_iter=s.max_iter, tol=s.tol,
        )  # fmt: skip
        fitted.coef = res.coef.to("cpu", torch.float64, copy=True).numpy()
        fitted.intercept = res.intercept.to("cpu", torch.float64, copy=True).numpy()
        logits = device_logits(self._Xv, res.coef, res.intercept)
        return Step(
            val_proba=self.layout.proba(logits, s.n_classes),
            fitted=fitted,
            n_iter=res.n_iter,
            converged=res.converged,
            diagnostics={
                "C": C, "n_iter": res.n_iter, "grad_max": res.grad_max,
                "objective": res.objective,
            },
        )  # fmt: skip

    def close(self) -> None:
        """Free the device buffers and restore the float32 matmul precision."""
        import torch

        self._X = self._Xv = self._target = None
        if self._precision is not None:
            torch.set_float32_matmul_precision(self._precision)
            self._precision = None
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
