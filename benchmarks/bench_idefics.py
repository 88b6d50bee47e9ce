"""IDEFICS extractor benchmarks on a small random IDEFICS and real images (CPU is fine).

Prints ratios measured in one run (never asserted; these machines are noisy):

(a) batched extraction (batches of ``--batch``) vs a batch-of-one loop over the same
    preprocessed images, same layers. Target >= 2x. Timings are best of 3, interleaved.
(b) parameters loaded for a shallow layer (truncated load) vs the full model, measured on the
    small model, and computed for the published 9B / 80B checkpoints at their default layers
    (meta-device counts, nothing downloaded). Also the extraction time of the truncated vs the
    full model for the shallow layer.
(c) the memory plan of docs/idefics.md (weights in GB, bf16 / 8-bit / 4-bit, full vs truncated).

Run: ``python benchmarks/bench_idefics.py [--n 16] [--batch 8] [--layers 16] [--width 128]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from medprobe.data.images import load_image  # noqa: E402
from medprobe.extractors.idefics import (  # noqa: E402
    PUBLISHED_CONFIGS,
    IdeficsExtractor,
    count_parameters,
    kept_depth,
    memory_plan,
)

PROMPT = "Question: What can you seen on this histological picture? Answer:"


def _images(n: int) -> list[Path]:
    demo = REPO / "medprobe" / "demo_data" / "pathmnist" / "images"
    paths = sorted(demo.glob("*.png"))
    if len(paths) < n:
        raise SystemExit(f"need {n} demo images, found {len(paths)} in {demo}")
    return paths[:n]


def _timed_pair(fa, fb, repeats: int = 3) -> tuple[float, float]:
    """Best-of-``repeats`` seconds of ``fa`` and ``fb``, run interleaved (a, b, a, b, ...), so
    that load from other processes hits both alike."""
    best_a = best_b = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fa()
        best_a = min(best_a, time.perf_counter() - t)
        t = time.perf_counter()
        fb()
        best_b = min(best_b, time.perf_counter() - t)
    return best_a, best_b


def bench_batching(model_dir: Path, n: int, batch: int, layers: list[int]) -> dict:
    import torch

    ext = IdeficsExtractor(str(model_dir), PROMPT, dtype="float32", device="cpu")
    x = torch.stack([ext.preprocess(load_image(p)) for p in _images(n)])
    ext.extract(x[:batch], layers)  # load weights, warm up

    def batched() -> None:
        for i in range(0, n, batch):
            ext.extract(x[i : i + batch], layers)

    def one_by_one() -> None:
        for i in range(n):
            ext.extract(x[i : i + 1], layers)

    tb, t1 = _timed_pair(batched, one_by_one)
    print(f"(a) {n} images, layers {layers}, {torch.get_num_threads()} threads")
    print(f"    batched (batch {batch}): {tb:.3f} s   batch of one: {t1:.3f} s")
    print(f"    ratio batch-of-one / batched = {t1 / tb:.2f}x  (target >= 2x)")
    return {"batched_s": tb, "one_by_one_s": t1, "speedup": t1 / tb, "layers": layers}


def bench_truncation(model_dir: Path, n: int, batch: int, shallow: int) -> dict:
    import torch

    trunc = IdeficsExtractor(str(model_dir), PROMPT, dtype="float32", device="cpu")
    full = IdeficsExtractor(str(model_dir), PROMPT, dtype="float32", device="cpu", truncate=False)
    x = torch.stack([trunc.preprocess(load_image(p)) for p in _images(n)])
    t0 = time.perf_counter()
    trunc.extract(x[:1], [shallow])
    load_t = time.perf_counter() - t0
    t0 = time.perf_counter()
    full.extract(x[:1], [shallow])
    load_f = time.perf_counter() - t0
    a, b = trunc.load_info(), full.load_info()

    def run(e: IdeficsExtractor) -> None:
        for i in range(0, n, batch):
            e.extract(x[i : i + batch], [shallow])

    tt, tf = _timed_pair(lambda: run(trunc), lambda: run(full))
    print(f"(b) layer {shallow} of {b['num_hidden_layers']} on the small model")
    print(
        f"    parameters loaded: truncated {a['params_loaded']:,} ({a['kept_depth']} blocks) vs "
        f"full {b['params_loaded']:,} -> ratio {a['params_loaded'] / b['params_loaded']:.3f}"
    )
    print(
        f"    memory footprint ratio "
        f"{a['memory_footprint_bytes'] / b['memory_footprint_bytes']:.3f}"
        f"; first call (load + forward) {load_t:.2f} s vs {load_f:.2f} s"
    )
    print(
        f"    extraction of {n} images: truncated {tt:.3f} s vs full {tf:.3f} s -> {tf / tt:.2f}x"
    )
    out = {
        "params_ratio_small": a["params_loaded"] / b["params_loaded"],
        "truncated_s": tt,
        "full_s": tf,
        "published": {},
    }
    for hf_id, layers in (
        ("HuggingFaceM4/idefics-9b-instruct", (4, 13, 32)),
        ("HuggingFaceM4/idefics-80b-instruct", (8, 32, 80)),
    ):
        cfg = PUBLISHED_CONFIGS[hf_id]
        n_full = count_parameters(cfg)["total"]
        for layer in layers:
            k = kept_depth([layer], cfg["num_hidden_layers"], cfg["cross_layer_interval"])
            n_k = count_parameters(cfg, k)["total"]
            print(
                f"    {hf_id.split('/')[1]} layer {layer:>2}: {n_k / 1e9:6.2f}B of "
                f"{n_full / 1e9:.2f}B parameters ({k} blocks) -> ratio {n_k / n_full:.3f}"
            )
            out["published"][f"{hf_id.split('/')[1]}@{layer}"] = n_k / n_full
    return out


def print_memory_plan() -> None:
    print("(c) weight memory (GB = 1e9 bytes; bf16 unless quantised; + ~2 GB for activations)")
    print(f"    {'model':<22}{'layer':>6}{'quant':>7}{'full':>9}{'truncated':>11}  blocks")
    for hf_id, layer in (
        ("HuggingFaceM4/idefics-9b-instruct", 13),
        ("HuggingFaceM4/idefics-9b-instruct", 32),
        ("HuggingFaceM4/idefics-80b-instruct", 32),
    ):
        for row in memory_plan(hf_id, layer):
            print(
                f"    {hf_id.split('/')[1]:<22}{layer:>6}{row['quantization']:>7}"
                f"{row['gb_full']:>9.1f}{row['gb_truncated']:>11.1f}  "
                f"{row['depth_truncated']}/{row['depth_full']}"
            )


def main(argv: list[str] | None = None) -> dict:
    """Run (a)-(c) and print them; return ``{"ratios": {...}, "batching": ..., ...}``.

    Ratios: ``idefics_batched_speedup`` (a, batch-of-one / batched) and
    ``idefics_truncated_params_ratio`` (b, parameters loaded truncated / full, small model).
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="images (demo set)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--layers", type=int, default=16, help="decoder blocks of the small model")
    ap.add_argument("--width", type=int, default=128, help="decoder width of the small model")
    args = ap.parse_args(argv)

    from tiny_models import save_tiny_idefics

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_tiny_idefics(
            Path(tmp) / "m",
            num_hidden_layers=args.layers,
            cross_layer_interval=4,
            hidden_size=args.width,
            image_size=64,
        )
        print(
            f"small random IDEFICS: {args.layers} blocks, width {args.width}, cross-attention "
            "every 4, 64 x 64 images"
        )
        batching = bench_batching(
            model_dir,
            args.n,
            args.batch,
            sorted({min(4, args.layers), args.layers // 2, args.layers}),
        )
        truncation = bench_truncation(model_dir, args.n, args.batch, shallow=2)
    print_memory_plan()
    return {
        "ratios": {
            "idefics_batched_speedup": batching["speedup"],
            "idefics_truncated_params_ratio": truncation["params_ratio_small"],
        },
        "batching": batching,
        "truncation": truncation,
        "model": {"layers": args.layers, "width": args.width, "n": args.n, "batch": args.batch},
    }


if __name__ == "__main__":
    main()
