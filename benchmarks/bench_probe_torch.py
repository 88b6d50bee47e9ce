"""Logistic probe solvers: scikit-learn (scipy L-BFGS-B) vs torch full-batch L-BFGS.

One fit of the same problem at the same C (no C grid), measured in one run and printed, never
asserted: synthetic float32 features with a modest class signal, standardised as the probe
does. CPU (default 20,000 x 1,024, 5 classes): wall time of scikit-learn's
``LogisticRegression`` (one BLAS thread below 5e7 elements, as the probe) and of
:func:`medprobe.probe.fit_logistic_lbfgs` in float32 (the torch backend's default) and float64,
their ratios, each solution's objective (scikit-learn's, evaluated in float64) and the
max |delta proba| on held-out rows. With CUDA: torch float32 at 100,000 x 8,192 (3.3 GB of
features), host rows -> standardised on the GPU -> fit, with its times and peak GPU memory
(``torch.cuda.max_memory_allocated``), then the whole torch-backend probe (C grid of 7,
validation rows) likewise.

Run: ``python benchmarks/bench_probe_torch.py [--n 20000] [--dim 1024] [--classes 5] [--C 1.0]
[--big-n 100000] [--big-dim 8192] [--big-device cuda] [--no-big] [--no-big-probe]``.
``--big-device cpu`` with small ``--big-n/--big-dim`` dry-runs the GPU part on a CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medprobe.probe import (  # noqa: E402
    blas_threads,
    device_logits,
    fit_logistic_lbfgs,
    logistic_objective,
    standardise_to_device,
)


def _data(n: int, d: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) float32 features: class centres N(0, 2/d) (about 2 SD apart) + unit noise + 5."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    centres = np.random.default_rng(12345).normal(size=(k, d)) * np.sqrt(2.0 / d)
    centres = centres.astype(np.float32)
    X = rng.standard_normal((n, d), dtype=np.float32)
    X += centres[y]
    X += 5.0
    return X, y


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _objective(Xs64: torch.Tensor, y: torch.Tensor, coef: np.ndarray, icpt: np.ndarray, C: float):
    return float(
        logistic_objective(
            Xs64, y, torch.as_tensor(coef, dtype=torch.float64),
            torch.as_tensor(icpt, dtype=torch.float64), C, multinomial=True,
        )
    )  # fmt: skip


def cpu_comparison(a: argparse.Namespace) -> dict[str, Any]:
    """The CPU part: same standardised rows, same C, three solvers."""
    X, y = _data(a.n, a.dim, a.classes, 0)
    Xh, _ = _data(a.n_heldout, a.dim, a.classes, 1)
    scaler = StandardScaler().fit(X)
    Xs, Xhs = scaler.transform(X), scaler.transform(Xh)  # float32, as the probe
    print(
        f"CPU: {a.n} x {a.dim} float32, {a.classes} classes, C={a.C}, tol={a.tol}; "
        f"BLAS threads for scikit-learn: {blas_threads(*Xs.shape) or 'library default'}; "
        f"torch threads: {blas_threads(*Xs.shape) or torch.get_num_threads()}",
        flush=True,
    )
    seconds: dict[str, float] = {}
    sols: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
    t = time.perf_counter()
    with threadpool_limits(limits=blas_threads(*Xs.shape), user_api="blas"):
        clf = LogisticRegression(C=a.C, tol=a.tol, max_iter=a.max_iter).fit(Xs, y)
    seconds["sklearn"] = time.perf_counter() - t
    sols["sklearn"] = (clf.coef_.astype(np.float64), clf.intercept_.astype(np.float64),
                       int(clf.n_iter_[0]))  # fmt: skip
    y_t = torch.as_tensor(y)
    # warm-up: the first torch optimiser in a process pays for torch's lazy imports (~3 s)
    fit_logistic_lbfgs(torch.zeros((4, 2)), torch.arange(4) % 2, 1.0, multinomial=True, n_classes=2)
    for name, dtype in (("torch float32", torch.float32), ("torch float64", torch.float64)):
        Xt = torch.from_numpy(Xs).to(dtype)
        t = time.perf_counter()
        res = fit_logistic_lbfgs(
            Xt, y_t, a.C, multinomial=True, n_classes=a.classes, tol=a.tol, max_iter=a.max_iter
        )
        seconds[name] = time.perf_counter() - t
        sols[name] = (res.coef.double().numpy(), res.intercept.double().numpy(), res.n_iter)
        del Xt
    Xs64 = torch.from_numpy(Xs.astype(np.float64))
    obj = {k: _objective(Xs64, y_t, c, b, a.C) for k, (c, b, _) in sols.items()}
    proba = {k: _softmax(Xhs.astype(np.float64) @ c.T + b) for k, (c, b, _) in sols.items()}
    for k in sols:
        print(
            f"  {k:14s} {seconds[k]:7.2f} s  {sols[k][2]:4d} iterations  objective {obj[k]:.12f}",
            flush=True,
        )
    out: dict[str, Any] = {"ratios": {}, "seconds": seconds, "objective": obj, "n_iter": {},
                           "max_abs_dproba": {}}  # fmt: skip
    for k, key in (("torch float32", "probe_torch_cpu_speedup"),
                   ("torch float64", "probe_torch_float64_cpu_speedup")):  # fmt: skip
        ratio = seconds["sklearn"] / seconds[k]
        dp = float(np.abs(proba[k] - proba["sklearn"]).max())
        out["ratios"][key] = ratio
        out["max_abs_dproba"][k] = dp
        print(
            f"  sklearn / {k}: {ratio:.2f}x; objective {k} - sklearn {obj[k] - obj['sklearn']:+.2e}"
            f"; max |dproba| on {a.n_heldout} held-out rows {dp:.1e}"
        )
    out["n_iter"] = {k: v[2] for k, v in sols.items()}
    return out


def big_fit(a: argparse.Namespace) -> dict[str, Any] | None:
    """The GPU part: host float32 rows -> standardised on the device -> one fit at C; then the
    whole probe (``LogisticProbe(backend="torch")``, default C grid, 20% extra validation rows)
    with its peak memory and the device memory left after it."""
    from medprobe.probe import LogisticProbe

    dev = torch.device(a.big_device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print(f"\n{a.big_n} x {a.big_dim} on {a.big_device}: skipped (no CUDA device here)")
        return None
    cuda = dev.type == "cuda"
    X, y = _data(a.big_n, a.big_dim, a.classes, 2)
    gib = X.nbytes / 2**30
    print(f"\n{a.big_device}: {a.big_n} x {a.big_dim} float32 ({gib:.2f} GiB), {a.classes} "
          f"classes, C={a.C}, tol={a.tol}", flush=True)  # fmt: skip

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    def peak_gib() -> float | None:
        return torch.cuda.max_memory_allocated(dev) / 2**30 if cuda else None

    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    sync()
    t = time.perf_counter()
    Xt, _ = standardise_to_device(X, dev, torch.float32)
    y_t = torch.as_tensor(y, device=dev)
    sync()
    t_std = time.perf_counter() - t
    t = time.perf_counter()
    res = fit_logistic_lbfgs(
        Xt, y_t, a.C, multinomial=True, n_classes=a.classes, tol=a.tol, max_iter=a.max_iter
    )
    sync()
    t_fit = time.perf_counter() - t
    acc = float((device_logits(Xt, res.coef, res.intercept).argmax(1) == y).mean())
    peak = peak_gib()
    out: dict[str, Any] = {
        "seconds": {"standardise": t_std, "fit": t_fit}, "n_iter": res.n_iter,
        "grad_max": res.grad_max, "converged": res.converged, "peak_gpu_gib": peak,
        "features_gib": gib, "shape": [a.big_n, a.big_dim, a.classes],
    }  # fmt: skip
    del Xt, y_t, res
    print(f"  host -> device + standardise {t_std:7.2f} s")
    print(f"  fit at C={a.C} (float32)     {t_fit:7.2f} s  {out['n_iter']} iterations, max "
          f"|grad| {out['grad_max']:.1e}, converged {out['converged']}, train accuracy "
          f"{acc:.3f}", flush=True)  # fmt: skip
    if peak is not None:
        print(f"  peak GPU memory {peak:.2f} GiB ({peak / gib:.2f}x the features)")
    if a.no_big_probe:
        return out
    Xv, yv = _data(a.big_n // 5, a.big_dim, a.classes, 3)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    before = torch.cuda.memory_allocated(dev) if cuda else 0
    t = time.perf_counter()
    probe = LogisticProbe(n_classes=a.classes, backend="torch", device=a.big_device, tol=a.tol,
                          max_iter=a.max_iter).fit(X, y, Xv, yv)  # fmt: skip
    sync()
    t_probe = time.perf_counter() - t
    left = (torch.cuda.memory_allocated(dev) - before) / 2**20 if cuda else None
    out["probe"] = {"seconds": t_probe, "C": probe.C_, "converged": probe.converged_,
                    "n_iter": [s["n_iter"] for s in probe.solver_], "peak_gpu_gib": peak_gib(),
                    "left_on_device_mib": left}  # fmt: skip
    print(
        f"  whole probe (7 C values, {len(Xv)} validation rows) {t_probe:7.2f} s, chosen C "
        f"{probe.C_}, iterations per C {out['probe']['n_iter']}, converged {probe.converged_}"
    )
    if cuda:
        print(f"  whole probe: peak GPU memory {out['probe']['peak_gpu_gib']:.2f} GiB; "
              f"left allocated after fit {left:.1f} MiB")  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Print the comparison; return ``{"ratios": {"probe_torch_cpu_speedup": ...,
    "probe_torch_float64_cpu_speedup": ...}, ..., "big": {...} or None}`` (sklearn time /
    torch float32 (float64) time on CPU; the GPU fit's times and peak memory when it ran)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="CPU comparison: training rows")
    ap.add_argument("--dim", type=int, default=1_024, help="CPU comparison: features")
    ap.add_argument("--n-heldout", type=int, default=2_000, help="rows for max |dproba|")
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--C", type=float, default=1.0, help="inverse regularisation strength")
    ap.add_argument("--tol", type=float, default=1e-4, help="gradient tolerance (both solvers)")
    ap.add_argument("--max-iter", type=int, default=1000)
    ap.add_argument("--big-n", type=int, default=100_000, help="GPU fit: rows")
    ap.add_argument("--big-dim", type=int, default=8_192, help="GPU fit: features")
    ap.add_argument("--big-device", default="cuda", help="GPU fit: device (cpu = dry run)")
    ap.add_argument("--no-big", action="store_true", help="skip the GPU fit")
    ap.add_argument("--no-big-probe", action="store_true", help="GPU: skip the whole-probe fit")
    a = ap.parse_args(argv)
    out = cpu_comparison(a)
    out["big"] = None if a.no_big else big_fit(a)
    out["shape"] = [a.n, a.dim, a.classes]
    return out


if __name__ == "__main__":
    main()
