"""Cost of checking a cached layer against its checksum, vs a plain load of the same layer.

A cache entry of one (N, D) float16 layer is written once (synthetic rows). Each measurement
then runs in a fresh child process (nothing verified yet: the first load of a process is the
one that hashes) and times one of:

* ``plain``: ``np.load(path)``, the whole layer read into memory: the reference;
* ``unverified``: ``FeatureCache(root, verify=False).load(key, layer)`` and every row read
  (``np.array``), as the probe reads them;
* ``verified``: the same with verification on (the default): the file is hashed through the
  returned mapping, then every row is read.

Both with the file in the page cache (``hot``, the worst case for the ratio: hashing is then the
only extra work) and evicted from it before each run (``cold``, ``posix_fadvise(DONTNEED)``:
disk speed). The measurements are interleaved and the best of ``--repeats`` kept (the machines
are shared: the fastest run is the one least disturbed; the medians are printed too). Prints
numbers, never asserts. Target: verified / plain <= 1.3 (issue 14).

    python benchmarks/bench_cache_verify.py [--n 100000] [--dim 4096] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

_CHILD = r"""
import os, sys, time
import numpy as np
from medprobe.cache import FeatureCache
mode, root, key, path, cold = sys.argv[1:6]
if cold == "1":
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
t = time.perf_counter()
if mode == "plain":
    x = np.load(path)
else:
    cache = FeatureCache(root, verify=(mode == "verified"))
    x = np.array(cache.load(key, 0))
dt = time.perf_counter() - t
assert x.shape[0] > 0
print(dt)
"""


def _write_entry(root: str, n: int, dim: int) -> tuple[str, str]:
    import numpy as np

    from medprobe.cache import FeatureCache, cache_key

    spec = {"bench": "cache_verify", "n": n, "dim": dim}
    key = cache_key(spec)
    cache = FeatureCache(root)
    w = cache.writer(key, [f"x/{i}.png" for i in range(n)], [0], spec, fsync=False)
    rng = np.random.default_rng(0)
    bs = max(1, (32 << 20) // (dim * 4))
    block = rng.standard_normal((bs, dim), dtype=np.float32)
    for start in range(0, n, bs):
        b = min(bs, n - start)
        w.write({0: block[:b] + (start % 997) * 0.01})
    w.finalize()
    return key, str(cache.entry_dir(key) / cache.meta(key)["files"][0])


def _run(mode: str, root: str, key: str, path: str, cold: bool) -> float:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, root, key, path, "1" if cold else "0"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return float(out.stdout.split()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="rows of the layer")
    ap.add_argument("--dim", type=int, default=4096, help="feature width")
    ap.add_argument("--repeats", type=int, default=7, help="runs per measurement (best kept)")
    ap.add_argument("--dir", default=None, help="where to write the entry (default: a temp dir)")
    args = ap.parse_args(argv)

    size_mb = args.n * args.dim * 2 / 1e6
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-cache-verify-") as root:
        t = time.perf_counter()
        key, path = _write_entry(root, args.n, args.dim)
        print(
            f"layer {args.n} x {args.dim} float16 ({size_mb:,.0f} MB) written and checksummed "
            f"in {time.perf_counter() - t:.1f} s"
        )
        modes = ("plain", "unverified", "verified")
        times: dict[str, list[float]] = {f"{m}_{c}": [] for c in ("hot", "cold") for m in modes}
        _run("plain", root, key, path, cold=False)  # warm the page cache
        for _ in range(args.repeats):
            for cold in (False, True):
                for mode in modes:
                    times[f"{mode}_{'cold' if cold else 'hot'}"].append(
                        _run(mode, root, key, path, cold)
                    )
    med = {k: min(v) for k, v in times.items()}
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(f"{'':12s} {'hot (page cache)':>18s} {'cold (from disk)':>18s}   (best of "
          f"{args.repeats}, seconds; GB/s; median in brackets)")  # fmt: skip
    for mode in modes:
        h, c = med[f"{mode}_hot"], med[f"{mode}_cold"]
        mh, mc = medians[f"{mode}_hot"], medians[f"{mode}_cold"]
        print(
            f"{mode:12s} {h:9.3f} {size_mb / 1e3 / h:6.2f} GB/s {c:9.3f} {size_mb / 1e3 / c:6.2f} "
            f"GB/s   [{mh:.3f} {mc:.3f}]"
        )
    ratios = {
        "cache_verify_cost": med["verified_hot"] / med["plain_hot"],
        "cache_verify_cost_cold": med["verified_cold"] / med["plain_cold"],
        "cache_verify_vs_unverified_hot": med["verified_hot"] / med["unverified_hot"],
        "cache_verify_vs_unverified_cold": med["verified_cold"] / med["unverified_cold"],
    }
    for k, v in ratios.items():
        print(f"{k:34s} {v:5.2f}x")
    print("target: verified / plain <= 1.3 (hot is the worst case)")
    return {
        "ratios": ratios,
        "seconds": med,
        "median_seconds": medians,
        "n": args.n,
        "dim": args.dim,
        "mb": size_mb,
    }


if __name__ == "__main__":
    main()
