"""Probe fit with one BLAS thread vs the library default, on probe-sized features.

Prints times measured in one run (never asserted): synthetic 502 x 1280 features, 9 classes,
the default 7-value C grid (the demo task's shape).
Run: ``python benchmarks/bench_probe_threads.py``.
"""

from __future__ import annotations

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


def main(argv: list[str] | None = None) -> None:
    X, y = _data(502, 1280, 9, 0)
    Xv, yv = _data(72, 1280, 9, 1)
    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    print(
        f"probe on 502 x 1280, 9 classes; BLAS: {[(i['internal_api'], i['num_threads']) for i in blas]}"
    )
    times = {}
    for label, limit in (("library default threads", None), ("1 thread (medprobe)", 1)):
        import medprobe.probe as probe_mod

        orig = probe_mod.blas_threads
        probe_mod.blas_threads = lambda n, d, _l=limit: _l  # type: ignore[assignment]
        try:
            t = time.perf_counter()
            LogisticProbe(n_classes=9).fit(X, y, Xv, yv)
            times[label] = time.perf_counter() - t
        finally:
            probe_mod.blas_threads = orig
        print(f"{label:26s} {times[label]:7.2f} s")
    a, b = times.values()
    print(f"speed-up of 1 thread: {a / b:.1f}x")


if __name__ == "__main__":
    main()
