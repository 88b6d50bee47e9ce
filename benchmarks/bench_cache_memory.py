"""Peak RSS of streaming N vs 4N rows through CacheWriter: memory must be flat in N.

Each measurement runs in its own child process (``VmHWM`` of that process only). The
features are synthetic float32 batches (b, D) for L layers, generated batch by batch, so only
one batch is ever in RAM. For reference the same data is also written the naive way, through
whole-array ``open_memmap`` arrays flushed after each batch: written pages of a shared mapping
stay resident and count towards RSS, so that peak grows with N.

Prints numbers, never asserts. Target: writer peak(4N) / peak(N) <= 1.2.

    python benchmarks/bench_cache_memory.py [--n 2000] [--layers 4] [--dim 1280] [--batch 32]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _rss import peak_rss_kib  # noqa: E402


def _batches(n: int, layers: int, dim: int, bs: int):
    import numpy as np

    rng = np.random.default_rng(0)
    for start in range(0, n, bs):
        b = min(bs, n - start)
        yield {layer: rng.standard_normal((b, dim), dtype=np.float32) for layer in range(layers)}


def _child(mode: str, n: int, layers: int, dim: int, bs: int, root: str) -> None:
    """Write n rows in this process, then print 'peak_kib seconds'."""
    import numpy as np

    t0 = time.perf_counter()
    if mode == "writer":
        from medprobe.cache import FeatureCache, cache_key

        spec = {"bench": "cache_memory", "n": n, "layers": layers, "dim": dim}
        cache = FeatureCache(root)
        w = cache.writer(cache_key(spec), [f"x/{i}.png" for i in range(n)], range(layers), spec)
        for feats in _batches(n, layers, dim, bs):
            w.write(feats)
        w.finalize()
    else:  # naive: whole-array memmaps, flushed after every batch
        mms = [
            np.lib.format.open_memmap(
                os.path.join(root, f"l{i}.npy"), mode="w+", dtype=np.float16, shape=(n, dim)
            )
            for i in range(layers)
        ]
        done = 0
        for feats in _batches(n, layers, dim, bs):
            b = feats[0].shape[0]
            for i, mm in enumerate(mms):
                mm[done : done + b] = feats[i]
                mm.flush()
            done += b
    dt = time.perf_counter() - t0
    print(peak_rss_kib(), f"{dt:.3f}")


def _measure(mode: str, n: int, layers: int, dim: int, bs: int) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of one child process writing n rows."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with tempfile.TemporaryDirectory(prefix="bench_cache_") as root:
        args = [mode, str(n), str(layers), str(dim), str(bs), root]
        out = subprocess.run(
            [sys.executable, __file__, "--child", *args],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    return int(out[0]) / 1024, float(out[1])  # VmHWM is in KiB


def main(argv: list[str] | None = None) -> dict | None:
    """Print peak RSS of N vs 4N rows per writer; return ``{"ratios": {...}, "rss_mib": ...}``.

    Ratios: ``cache_writer_rss_ratio`` (CacheWriter peak 4N / N) and, without ``--no-naive``,
    ``naive_memmap_rss_ratio``.
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="rows in the small run (large = 4n)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--no-naive", action="store_true", help="skip the naive memmap reference")
    p.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        mode, n, layers, dim, bs, root = a.child
        _child(mode, int(n), int(layers), int(dim), int(bs), root)
        return None

    small, large = a.n, 4 * a.n
    mib = lambda n: n * a.layers * a.dim * 2 / 2**20  # noqa: E731
    print(
        f"rows N={small} and 4N={large}, {a.layers} layers x {a.dim} features, batch {a.batch}; "
        f"float16 on disk {mib(small):.1f} MiB vs {mib(large):.1f} MiB"
    )
    modes = ["writer"] + ([] if a.no_naive else ["naive"])
    ratios: dict[str, float] = {}
    rss: dict[str, dict[int, float]] = {}
    for mode in modes:
        (r1, t1), (r4, t4) = (_measure(mode, n, a.layers, a.dim, a.batch) for n in (small, large))
        label = "CacheWriter" if mode == "writer" else "naive memmap (reference)"
        print(
            f"{label:26s} peak RSS N: {r1:7.1f} MiB  4N: {r4:7.1f} MiB  ratio {r4 / r1:.2f}x"
            f"   ({small / t1:,.0f} / {large / t4:,.0f} rows/s)"
        )
        key = "cache_writer_rss_ratio" if mode == "writer" else "naive_memmap_rss_ratio"
        ratios[key] = r4 / r1
        rss[mode] = {small: r1, large: r4}
    print("target: CacheWriter ratio <= 1.20x")
    return {"ratios": ratios, "rss_mib": rss, "layers": a.layers, "dim": a.dim}


if __name__ == "__main__":
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    main()
