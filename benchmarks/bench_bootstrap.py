"""Vectorised bootstrap AUROC vs a naive scikit-learn loop over the same resamples.

Default workload (DESIGN.md / STACK.md): 1000 stratified replicates of per-class one-vs-rest
AUROC on 15,000 x 5 synthetic multiclass data. Both methods use the same resample counts,
measured in one run; prints both times, the ratio (target >= 10x) and the max abs difference.
Prints, never asserts, timings.

Run: ``python benchmarks/bench_bootstrap.py [--n 15000] [--classes 5] [--n-boot 1000]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

if __package__ in (None, ""):  # run as a script from anywhere: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medprobe import metrics  # noqa: E402
from medprobe.stats import (  # noqa: E402
    bootstrap_auroc,
    bootstrap_counts,
    bootstrap_replicates,
    bootstrap_seed,
)


def synthetic(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(n,)`` int labels and ``(n, k)`` softmax probabilities with a modest signal."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.0
    proba = np.exp(logits)
    return y, proba / proba.sum(axis=1, keepdims=True)


def naive_auroc(y_bin: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Reference: ``roc_auc_score`` per replicate and column on explicit resamples."""
    out = np.empty((counts.shape[0], y_bin.shape[1]))
    idx_all = np.arange(y_bin.shape[0])
    for b, row in enumerate(counts):
        idx = np.repeat(idx_all, row)
        for j in range(y_bin.shape[1]):
            out[b, j] = roc_auc_score(y_bin[idx, j], scores[idx, j])
    return out


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print timings, ratio and max abs difference, and return them.

    Returns:
        ``{"ratios": {"bootstrap_speedup": naive / vectorised}, "seconds": {...},
        "max_abs_diff": float, "n": ..., "classes": ..., "n_boot": ...}``.
    """
    ap = argparse.ArgumentParser(description="Vectorised bootstrap AUROC vs a naive sklearn loop.")
    ap.add_argument("--n", type=int, default=15_000, help="test examples")
    ap.add_argument("--classes", type=int, default=5, help="classes (K)")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates")
    args = ap.parse_args(argv)

    y, proba = synthetic(args.n, args.classes)
    y_bin = metrics.indicator(y, args.classes)
    seed = bootstrap_seed("bench", "test", 0)
    print(f"data: n={args.n} K={args.classes} n_boot={args.n_boot} (stratified, one-vs-rest)")

    t0 = time.perf_counter()
    counts = bootstrap_counts(y, args.n_boot, seed, stratify=True)
    t_counts = time.perf_counter() - t0

    t0 = time.perf_counter()
    fast = bootstrap_auroc(y_bin, proba, counts)
    t_fast = time.perf_counter() - t0

    names = [f"c{j}" for j in range(args.classes)]
    t0 = time.perf_counter()
    bootstrap_replicates(y, proba, names, multilabel=False, n_boot=args.n_boot, seed=seed)
    t_all = time.perf_counter() - t0

    t0 = time.perf_counter()
    slow = naive_auroc(y_bin, proba, counts)
    t_slow = time.perf_counter() - t0

    print(f"resample counts ({counts.shape[0]} x {counts.shape[1]} int32): {t_counts:8.3f} s")
    print(f"vectorised bootstrap_auroc:                  {t_fast:8.3f} s")
    print(f"naive sklearn loop (same resamples):         {t_slow:8.3f} s")
    print(f"speed-up naive / vectorised:                 {t_slow / t_fast:8.1f} x (target >= 10)")
    print(f"max |vectorised - naive|:                    {np.abs(fast - slow).max():8.1e}")
    print(f"bootstrap_replicates (counts + AUROC + F1 + accuracy, all metrics): {t_all:.3f} s")
    return {
        "ratios": {"bootstrap_speedup": t_slow / t_fast},
        "seconds": {"counts": t_counts, "vectorised": t_fast, "naive": t_slow, "all": t_all},
        "max_abs_diff": float(np.abs(fast - slow).max()),
        "n": args.n,
        "classes": args.classes,
        "n_boot": args.n_boot,
    }


if __name__ == "__main__":
    main()
