"""Generic VLM extractor (``model.kind=vlm``): one forward pass for every layer vs one layer,
on tiny random Qwen2.5-VL and LLaVA models (tests/tiny_vlms.py) and real demo images (CPU).

Prints, per family, the time of ``extract(batch, "all")`` (every decoder layer, ``final_norm``
and ``vision``, pooled, from one forward pass with ``output_hidden_states=True``) over the time
of ``extract(batch, [k])`` (one layer) on the same untruncated model and the same processed
batches: the cost of caching the whole layer sweep in one pass. Best of 3, interleaved; never
asserted (these machines are noisy). A truncated one-layer load is reported beside it.

Run: ``python benchmarks/bench_vlm.py [--n 16] [--batch 8] [--layers 8]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from medprobe.data.images import load_image  # noqa: E402
from medprobe.extractors.vlm import VLMExtractor  # noqa: E402

PROMPT = "Question: What can you seen on this histological picture? Answer:"
FAMILIES = ("qwen2_5_vl", "llava")


def _batches(ext: VLMExtractor, n: int, batch: int) -> list[Any]:
    demo = REPO / "medprobe" / "demo_data" / "pathmnist" / "images"
    paths = sorted(demo.glob("*.png"))[:n]
    images = [ext.preprocess(load_image(p).resize((32, 32))) for p in paths]
    return [ext.collate(images[i : i + batch]) for i in range(0, len(images), batch)]


def _time(ext: VLMExtractor, batches: list[Any], layers: Any) -> float:
    t = time.perf_counter()
    for b in batches:
        ext.extract(b, layers)
    return time.perf_counter() - t


def bench_family(family: str, root: Path, n: int, batch: int, layers: int) -> dict[str, Any]:
    """Timings of one family (seconds, best of 3) and the all-layers / one-layer ratio."""
    from tiny_vlms import save_tiny_vlm

    model_dir = save_tiny_vlm(family, root / family, layers=layers)
    kw = {"dtype": "float32", "device": "cpu"}
    full = VLMExtractor(str(model_dir), PROMPT, truncate=False, **kw)  # type: ignore[arg-type]
    batches = _batches(full, n, batch)
    k = max(1, layers // 2)
    full.extract(batches[0], "all")  # load and warm up
    all_s, one_s = [], []
    for _ in range(3):
        all_s.append(_time(full, batches, "all"))
        one_s.append(_time(full, batches, [k]))
    trunc = VLMExtractor(str(model_dir), PROMPT, truncate=True, **kw)  # type: ignore[arg-type]
    trunc.extract(batches[0], [k])
    trunc_s = min(_time(trunc, batches, [k]) for _ in range(3))
    out = {
        "all_layers_s": min(all_s),
        "one_layer_s": min(one_s),
        "one_layer_truncated_s": trunc_s,
        "layers_cached": len(full.layers()),
        "layer": k,
        "ratio": min(all_s) / min(one_s),
    }
    print(
        f"  {family:<12} all {out['layers_cached']} layers {out['all_layers_s']:.3f} s, layer {k} "
        f"{out['one_layer_s']:.3f} s -> {out['ratio']:.2f}x the time; layer {k} truncated "
        f"({k} of {layers} decoder layers loaded) {trunc_s:.3f} s"
    )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; return ``{"ratios": {"vlm_all_layers_cost_<family>": ...}, ...}``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="images (demo set, 32 x 32)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--layers", type=int, default=8, help="decoder layers of the tiny models")
    args = ap.parse_args(argv)
    print(f"tiny random VLMs: {args.layers} decoder layers of width 64, {args.n} demo images")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fam in FAMILIES:
            results[fam] = bench_family(fam, Path(tmp), args.n, args.batch, args.layers)
    return {
        "ratios": {f"vlm_all_layers_cost_{f}": results[f]["ratio"] for f in FAMILIES},
        "families": results,
        "model": {"layers": args.layers, "n": args.n, "batch": args.batch},
    }


if __name__ == "__main__":
    main()
