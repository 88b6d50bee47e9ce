"""Full-batch L-BFGS in torch for scikit-learn's logistic-regression objective.

For probes at the scale of 100k x 8192 features (one GPU, or CPU): :func:`standardise_to_device`
copies and standardises the rows exactly as ``StandardScaler`` does, :func:`fit_logistic_lbfgs`
minimises :func:`logistic_objective` (scikit-learn's ``LogisticRegression`` objective, l2
penalty, unpenalised intercept) with ``torch.optim.LBFGS`` and scikit-learn's stopping rule,
:func:`device_logits` scores rows in chunks. The probe backend built on these is
:class:`medprobe.probe.torch_solver.TorchLBFGSSolver`. torch is imported on first use only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sklearn.preprocessing import StandardScaler

from medprobe.errors import ProbeError
from medprobe.probe.solver import blas_threads, rows_per_chunk

if TYPE_CHECKING:
    import torch

TORCH_DTYPES = ("float32", "float64")
DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"


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

    spec = str(spec)
    if spec not in TORCH_DTYPES:
        raise ValueError(f"probe.dtype {spec!r} unknown; use float32 or float64")
    dtype: torch.dtype = getattr(torch, spec)
    return dtype


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
    step = chunk_rows or rows_per_chunk(d)
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
