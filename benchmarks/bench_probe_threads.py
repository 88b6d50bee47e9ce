"""Probe fit with one BLAS thread vs the library default, on probe-sized features.

Prints times measured in one run (never asserted): synthetic 502 x 1280 features, 9 classes,
the default 7-value C grid (the demo task's shape).
Run: ``python benchmarks/bench_probe_threads.py [--n 502] [--n-val 72] [--dim 1280] [--classes 9]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medprobe.probe import LogisticProbe  # noqa: E402


def _data(n: int, d: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = rng.normal(size=(k, d))[y] * 0.3 + rng.normal(size=(n, d))
    return X.astype(np.float32), y


def main(argv: list[str] | None = None) -> dict:
    """Print both fit times; return ``{"ratios": {"probe_one_thread_speedup": ...}, ...}``
    (default-threads time / one-thread time)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=502, help="training rows")
    ap.add_argument("--n-val", type=int, default=72, help="validation rows (the C grid)")
    ap.add_argument("--dim", type=int, default=1280, help="features")
    ap.add_argument("--classes", type=int, default=9)
    a = ap.parse_args(argv)
    X, y = _data(a.n, a.dim, a.classes, 0)
    Xv, yv = _data(a.n_val, a.dim, a.classes, 1)
    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    blas_desc = [(i["internal_api"], i["num_threads"]) for i in blas]
    print(f"probe on {a.n} x {a.dim}, {a.classes} classes; BLAS: {blas_desc}")
    times = {}
    for label, limit in (("library default threads", None), ("1 thread (medprobe)", 1)):
        import medprobe.probe.sklearn_solver as solver_mod  # the backend that limits BLAS

        orig = solver_mod.blas_threads
        solver_mod.blas_threads = lambda n, d, _l=limit: _l  # type: ignore[assignment]
        try:
            t = time.perf_counter()
            LogisticProbe(n_classes=a.classes).fit(X, y, Xv, yv)
            times[label] = time.perf_counter() - t
        finally:
            solver_mod.blas_threads = orig
        print(f"{label:26s} {times[label]:7.2f} s")
    t_default, t_one = times.values()
    print(f"speed-up of 1 thread: {t_default / t_one:.1f}x")
    return {
        "ratios": {"probe_one_thread_speedup": t_default / t_one},
        "seconds": times,
        "blas": blas_desc,
        "shape": [a.n, a.dim, a.classes],
    }


if __name__ == "__main__":
    main()
