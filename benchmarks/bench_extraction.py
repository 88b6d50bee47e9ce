"""Extraction benchmarks on the real demo images with the default model (EfficientNet-Lite0).

Prints ratios measured in one run (never asserted; these machines are noisy):

(b) batched extraction through the runner's path (DataLoader, batches, streaming cache writes)
    vs a batch-of-one loop (load, preprocess, forward one image at a time). Target >= 2x.
(c) one forward pass returning 4 layers (2, 4, 6, 8) vs a 1-layer run (8), both batched.
    Target <= 1.1x: a layer sweep costs one extraction.
(d) peak RSS of extracting N vs 4N images into the feature cache, each in a fresh child
    process. Target <= 1.2x: memory is flat in dataset size.

Run: ``python benchmarks/bench_extraction.py [--n 256] [--rss-n 128] [--rss-batch 32]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _rss import peak_rss_kib  # noqa: E402

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medprobe.cache import FeatureCache  # noqa: E402
from medprobe.data.images import load_image  # noqa: E402
from medprobe.data.tasks.demo import build_manifest  # noqa: E402
from medprobe.extractors.effnet import EffNetLite0Extractor  # noqa: E402
from medprobe.pipeline.features import extract_to_cache  # noqa: E402


def batched(paths: list[Path], layers: list[int], batch_size: int, workers: int) -> float:
    """Seconds to extract ``paths`` into a fresh cache entry through the runner's path."""
    ext = EffNetLite0Extractor(device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(tmp)
        ids = [p.name for p in paths]
        ext.extract(ext.preprocess(load_image(paths[0]))[None], layers)  # load weights first
        t = time.perf_counter()
        w = cache.writer("bench", ids, layers, meta={})
        extract_to_cache(
            ext, paths, w, layers, batch_size=batch_size, num_workers=workers,
            max_side=1024, progress=False,
        )  # fmt: skip
        w.finalize()
        return time.perf_counter() - t


def one_by_one(paths: list[Path], layers: list[int]) -> float:
    """Seconds for the naive loop: one image at a time, no DataLoader, no batching."""
    ext = EffNetLite0Extractor(device="cpu")
    ext.extract(ext.preprocess(load_image(paths[0]))[None], layers)
    t = time.perf_counter()
    for p in paths:
        ext.extract(ext.preprocess(load_image(p))[None], layers)
    return time.perf_counter() - t


def _rss_child(n: int, batch_size: int = 32) -> None:
    paths = build_manifest(None).paths[:n]
    batched(paths, list(range(9)), batch_size=batch_size, workers=0)
    rss_kib = peak_rss_kib()
    print(json.dumps({"n": n, "rss_mib": rss_kib / 1024}))


def peak_rss(n: int, batch_size: int = 32) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(n), "--rss-batch", str(batch_size)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(json.loads(out.stdout.strip().splitlines()[-1])["rss_mib"])


def main(argv: list[str] | None = None) -> dict | None:
    """Run (b)-(d), print them and return ``{"ratios": {...}, "seconds": {...}, ...}``.

    Ratios: ``extraction_batched_speedup`` (b, one-by-one / batched), ``layer_sweep_cost``
    (c, 4 layers / 1 layer), ``extraction_rss_ratio`` (d, peak RSS 4N / N).
    """
    ap = argparse.ArgumentParser(description="Extraction ratios on the demo images.")
    ap.add_argument("--n", type=int, default=256, help="demo images for (b) and (c)")
    ap.add_argument("--rss-n", type=int, default=128, help="N for (d); the large run is 4N")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rss-batch", type=int, default=32, help="batch size for (d) (<= N)")
    ap.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.rss_child:
        _rss_child(a.rss_child, a.rss_batch)
        return None

    paths = build_manifest(None).paths[: a.n]
    print(f"EfficientNet-Lite0 on {len(paths)} demo images (CPU, batch {a.batch_size}, "
          f"{a.workers} loader workers)")  # fmt: skip
    t_single = one_by_one(paths, [8])
    t_batch = batched(paths, [8], a.batch_size, a.workers)
    print(f"(b) batch-of-one loop {t_single:7.2f} s | batched DataLoader {t_batch:7.2f} s | "
          f"speed-up {t_single / t_batch:5.2f}x (target >= 2x)")  # fmt: skip
    t4 = batched(paths, [2, 4, 6, 8], a.batch_size, a.workers)
    t1 = batched(paths, [8], a.batch_size, a.workers)
    print(f"(c) 4 layers in one pass {t4:7.2f} s | 1 layer {t1:7.2f} s | "
          f"cost {t4 / t1:5.2f}x (target <= 1.1x; 4 separate passes would be ~4x)")  # fmt: skip
    r1, r4 = peak_rss(a.rss_n, a.rss_batch), peak_rss(4 * a.rss_n, a.rss_batch)
    print(f"(d) peak RSS {a.rss_n} images {r1:7.1f} MiB | {4 * a.rss_n} images {r4:7.1f} MiB | "
          f"ratio {r4 / r1:5.2f}x (target <= 1.2x)")  # fmt: skip
    return {
        "ratios": {
            "extraction_batched_speedup": t_single / t_batch,
            "layer_sweep_cost": t4 / t1,
            "extraction_rss_ratio": r4 / r1,
        },
        "seconds": {"one_by_one": t_single, "batched": t_batch, "layers_4": t4, "layers_1": t1},
        "rss_mib": {a.rss_n: r1, 4 * a.rss_n: r4},
        "images": len(paths),
        "batch_size": a.batch_size,
        "workers": a.workers,
        "rss_batch": a.rss_batch,
    }


if __name__ == "__main__":
    main()
