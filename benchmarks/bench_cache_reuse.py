"""Cost of a run after the image list changed, vs the first extraction (issue 14.11).

The features stage (:func:`medprobe.pipeline.features.features`, everything a job does before
probing: hashing the images, the lock, the image check, extraction, finalising the entry) runs
three times in one process on the demo set with the default model (EfficientNet-Lite0, CPU),
each into the same fresh cache:

1. ``first``: N images, nothing cached: every image is hashed, checked and extracted;
2. ``removed``: the same list less 2% of the images (a few bad files skipped): a new key, whose
   rows are all copied from the first entry (verified first), none extracted;
3. ``added``: the first list plus 2% new images: 98% copied, 2% checked and extracted.

Before each run the process forgets what it hashed (image digests and verified cache files), as
a new process would, so every run pays for hashing the images and verifying its sources. The
model's weights are loaded before the first run (not timed): the ratio is against extraction
alone. Prints numbers, never asserts. Target: removed / first <= 0.05.

    python benchmarks/bench_cache_reuse.py [--n 300] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _config(cache_dir: str, batch_size: int) -> Any:
    from hydra import compose, initialize_config_dir

    from medprobe.config import conf_dir, register_configs, to_typed

    register_configs()
    overrides = [f"cache_dir={cache_dir}", "progress=false", "model.num_workers=0",
                 f"model.batch_size={batch_size}", "model.layers=[2,4,6,8]"]  # fmt: skip
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return to_typed(compose(config_name="config", overrides=overrides))


def _forget() -> None:
    """What a fresh process would not know: hashed images, verified cache files."""
    import medprobe.cache as cache_mod
    import medprobe.hashing as hashing

    hashing._IMAGE_DIGESTS.clear()
    with cache_mod._VERIFIED_LOCK:
        cache_mod._VERIFIED.clear()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="images of the first run (<= 718 - 2%%)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--share", type=float, default=0.02, help="share of images removed/added")
    args = ap.parse_args(argv)

    import numpy as np

    from medprobe.data.images import load_image
    from medprobe.data.tasks.demo import build_manifest
    from medprobe.extractors.base import Extractor
    from medprobe.pipeline.features import features
    from medprobe.registry import EXTRACTORS

    full = build_manifest()
    k = max(1, round(args.n * args.share))
    if args.n + k > len(full):
        raise SystemExit(f"--n {args.n} + {k} new images exceeds the {len(full)} demo images")
    first = full.subset(np.arange(args.n))
    step = args.n // k
    removed = first.subset(np.array([i for i in range(args.n) if i % step or i // step >= k]))
    added = full.subset(np.arange(args.n + k))
    with tempfile.TemporaryDirectory(prefix="bench-cache-reuse-") as tmp:
        cfg = _config(tmp, args.batch_size)
        ext: Extractor = EXTRACTORS.get(cfg.model.kind)(cfg.model, cfg.prompt.text)
        layers = [2, 4, 6, 8]
        x = ext.preprocess(load_image(first.paths[0]))[None]
        ext.extract(x, layers)  # weights loaded before anything is timed
        seconds: dict[str, float] = {}
        infos: dict[str, dict[str, Any]] = {}
        for name, manifest in (("first", first), ("removed", removed), ("added", added)):
            _forget()
            t = time.perf_counter()
            _, _, info = features(cfg, manifest, ext, layers)
            seconds[name] = time.perf_counter() - t
            infos[name] = info
            print(
                f"{name:8s} {len(manifest):4d} images: {seconds[name]:7.2f} s  "
                f"(extracted {info.get('extracted_rows')}, reused {info.get('reused_rows', 0)})",
                flush=True,
            )
    ratios = {
        "cache_reuse_removed_cost": seconds["removed"] / seconds["first"],
        "cache_reuse_added_cost": seconds["added"] / seconds["first"],
    }
    for key, v in ratios.items():
        print(f"{key:26s} {v:6.3f}x the first extraction")
    print(f"target: a run after removing {args.share:.0%} of the images <= 0.05x the first")
    return {
        "ratios": ratios,
        "seconds": seconds,
        "images": {"first": len(first), "removed": len(removed), "added": len(added)},
        "extracted": {n: i.get("extracted_rows") for n, i in infos.items()},
        "reused": {n: i.get("reused_rows", 0) for n, i in infos.items()},
    }


if __name__ == "__main__":
    main()
