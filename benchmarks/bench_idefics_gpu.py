"""Images per second of a realistic-size random IDEFICS decoder block stack, bf16 on a GPU.

For each published checkpoint (``--models 80b,9b``) a short stack is built with random weights
from :data:`medprobe.extractors.idefics.PUBLISHED_CONFIGS` (transformers' ``IdeficsModel``
from a config, ``dtype=bfloat16``, built directly on the GPU; nothing is downloaded): the
real hidden size, MLP width, heads, qk norms and ``cross_layer_interval``, but only
``--layers`` decoder blocks (default 4, which includes one gated cross-attention block, as in
every 4-block stretch of the real models). Input: one image per sample as 64 perceiver latents
(the resampler's output, width 1280) and a prompt of ``--prompt-tokens`` tokens (default 26:
medprobe's rendered chat prompt for the pathology question, ``<s>User:`` + image + question +
``<end_of_utterance>\\nAssistant:``, counted with the Llama tokenizer's pieces).

Measured (``torch.cuda.synchronize`` around ``--iters`` timed forwards after ``--warmup``):
images/s of the block stack at each batch size (default 1, 8, 32), and of the vision tower +
perceiver resampler (ViT-H/14 at 224 px, 6 perceiver blocks; shared by both checkpoints), plus
peak GPU memory per stack. Extrapolated, not measured: images/s of the 80B truncated at layer
32 and the 9B at layer 13 (medprobe's default layers; the stack time scaled by kept blocks /
stack blocks, exact in proportion of cross-attention blocks when ``--layers`` is a multiple of
4), decoder only and with the vision tower added. Loading real weights, the embedding of a
real tokenizer and the pooling are not part of it. Prints numbers, never asserts them.

Without CUDA it prints ``skipped: no CUDA device``; ``--cpu-smoke`` runs the same code on the
CPU in float32 with tiny widths (the code path is tested there; its numbers mean nothing).

Run: ``python benchmarks/bench_idefics_gpu.py [--layers 4] [--batch-sizes 1,8,32]
[--models 80b,9b] [--cpu-smoke]``. About a minute on an H200 (mostly start-up).
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from medprobe.extractors.idefics import PUBLISHED_CONFIGS, kept_depth  # noqa: E402

MODELS = {
    "80b": "HuggingFaceM4/idefics-80b-instruct",
    "9b": "HuggingFaceM4/idefics-9b-instruct",
}
#: The probed layer medprobe uses by default (conf/model/idefics80b.yaml, idefics9b.yaml).
DEFAULT_LAYER = {"80b": 32, "9b": 13}
#: Tokens of medprobe's rendered pathology prompt (prompt=pathology, the longest default):
#: <s> | ▁User : | <fake> <image> <fake> | ▁Question : ▁What ▁can ▁you ▁seen ▁on ▁this ▁hist
#: ological ▁picture ? ▁Answer : | <end_of_utterance> | <0x0A> | ▁Ass istant : = 26.
PROMPT_TOKENS = 26
#: Position of <image> in that prompt; tokens from here on cross-attend to the image.
IMAGE_POSITION = 4
SKIPPED = "skipped: no CUDA device"


def stack_config(hf_id: str, layers: int, smoke: bool = False) -> dict[str, Any]:
    """``IdeficsConfig`` arguments of ``hf_id`` with ``layers`` decoder blocks.

    The published dimensions (:data:`PUBLISHED_CONFIGS`), gates open (``alpha_initializer
    ="ones"``, so the cross-attention output is used as after training). ``smoke``: the same
    structure with tiny widths (hidden / 128, heads / 16, a 1-block vision tower and perceiver
    on 28 px images; still 64 latents per image) for a CPU run of the code path.

    Raises:
        ValueError: ``layers`` is not a positive multiple of the model's
            ``cross_layer_interval`` (transformers' IDEFICS needs one gated cross-attention
            block per interval).
    """
    cfg = copy.deepcopy(PUBLISHED_CONFIGS[hf_id])
    iv = int(cfg["cross_layer_interval"])
    if layers <= 0 or layers % iv:
        raise ValueError(f"--layers must be a positive multiple of {iv} (cross_layer_interval)")
    cfg.update(num_hidden_layers=layers, alpha_initializer="ones", alpha_type="float")
    cfg.update(freeze_text_layers=False, freeze_vision_layers=False)
    if smoke:
        cfg["hidden_size"] //= 128
        cfg["intermediate_size"] //= 128
        cfg["num_attention_heads"] //= 16
        cfg["vision_config"] = dict(cfg["vision_config"], embed_dim=32, intermediate_size=64,
                                    num_attention_heads=2, num_hidden_layers=1, image_size=28)  # fmt: skip
        cfg["perceiver_config"] = dict(cfg["perceiver_config"], resampler_depth=1,
                                       resampler_n_heads=2, resampler_head_dim=16)  # fmt: skip
    return cfg


def build_stack(cfg: dict[str, Any], device: str, dtype: Any) -> Any:
    """Random-weight ``IdeficsModel`` from ``cfg``, created directly on ``device`` in ``dtype``
    (no CPU copy of the weights, no download), in eval mode."""
    import torch
    from transformers import IdeficsConfig, IdeficsModel
    from transformers.utils import logging as hf_logging

    prev = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with torch.device(device):
            model = IdeficsModel._from_config(IdeficsConfig(**cfg), dtype=dtype)
    finally:
        hf_logging.set_verbosity(prev)
    return model.eval()


def stack_inputs(
    cfg: dict[str, Any], batch: int, prompt_tokens: int, device: str, dtype: Any
) -> dict[str, Any]:
    """One forward's keyword arguments: ``(batch, prompt_tokens)`` token ids, an all-ones
    attention mask, one image per sample as ``(batch, n_latents, vision width)`` perceiver
    latents, the image mask (tokens from ``<image>`` on see it)."""
    import torch

    g = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(3, int(cfg["vocab_size"]), (batch, prompt_tokens), generator=g)
    ids[:, 0] = 1  # <s>
    pos = min(IMAGE_POSITION, prompt_tokens - 1)
    img_mask = torch.zeros(batch, prompt_tokens, 1, dtype=torch.long)
    img_mask[:, pos:] = 1
    n_lat = int(cfg["perceiver_config"]["resampler_n_latents"])
    width = int(cfg["vision_config"]["embed_dim"])
    latents = torch.randn(batch, n_lat, width, generator=g)
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones(batch, prompt_tokens, dtype=torch.long, device=device),
        "image_attention_mask": img_mask.to(device),
        "perceiver_embeddings": latents.to(device, dtype),
        "use_cache": False,
    }


def timed(fn: Callable[[], Any], sync: Callable[[], None], warmup: int, iters: int) -> float:
    """Mean seconds of ``fn()`` over ``iters`` calls after ``warmup`` calls, synchronised."""
    for _ in range(warmup):
        fn()
    sync()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    sync()
    return (time.perf_counter() - t) / iters


def _params(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def bench_model(
    key: str, args: argparse.Namespace, device: str, dtype: Any, time_vision: bool
) -> dict[str, Any]:
    """Build one stack, time it (and the vision tower + perceiver if ``time_vision``) at every
    batch size. Returns the numbers (see :func:`main`)."""
    import torch

    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    cfg = stack_config(MODELS[key], args.layers, smoke=args.cpu_smoke)
    if cuda:
        gc.collect()  # the previous stack
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model = build_stack(cfg, device, dtype)
    sync()
    build_s = time.perf_counter() - t0
    itemsize = torch.empty((), dtype=dtype).element_size()
    blocks = _params(model.layers) + _params(model.gated_cross_attn_layers)
    out: dict[str, Any] = {
        "hf_id": MODELS[key],
        "decoder_blocks": len(model.layers),
        "cross_blocks": len(model.gated_cross_attn_layers),
        "hidden_size": int(cfg["hidden_size"]),
        "intermediate_size": int(cfg["intermediate_size"]),
        "heads": int(cfg["num_attention_heads"]),
        "cross_layer_interval": int(cfg["cross_layer_interval"]),
        "image_tokens": int(cfg["perceiver_config"]["resampler_n_latents"]),
        "block_params": blocks,
        "block_weights_gib": blocks * itemsize / 2**30,
        "model_weights_gib": _params(model) * itemsize / 2**30,
        "build_s": build_s,
        "stack": {},
        "vision": {},
        "finite": True,
    }
    with torch.inference_mode():
        for b in args.batch_sizes:
            kw = stack_inputs(cfg, b, args.prompt_tokens, device, dtype)
            last = model(**kw).last_hidden_state
            out["finite"] &= bool(torch.isfinite(last).all())
            s = timed(lambda kw=kw: model(**kw), sync, args.warmup, args.iters)
            out["stack"][b] = {"ms": 1e3 * s, "images_per_s": b / s}
            if time_vision:
                size = int(cfg["vision_config"]["image_size"])
                g = torch.Generator(device="cpu").manual_seed(1)
                px = torch.randn(b, 3, size, size, generator=g).to(device, dtype)

                def vision(px: Any = px) -> Any:
                    hs = model.vision_model(pixel_values=px).last_hidden_state
                    return model.perceiver_resampler(hs)

                s = timed(vision, sync, args.warmup, args.iters)
                out["vision"][b] = {"ms": 1e3 * s, "images_per_s": b / s}
    out["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return out  # the model is freed with this frame (the next call empties the CUDA cache)


def extrapolate(
    key: str, stack: dict[str, Any], vision: dict[int, dict[str, float]], layers: int
) -> dict[str, Any]:
    """Images/s of the published model truncated at its default layer, from the stack time:
    kept blocks / stack blocks x stack time (per batch size), decoder only and + vision."""
    cfg = PUBLISHED_CONFIGS[MODELS[key]]
    layer = DEFAULT_LAYER[key]
    kept = kept_depth([layer], int(cfg["num_hidden_layers"]), int(cfg["cross_layer_interval"]))
    per_batch = {}
    for b, m in stack["stack"].items():
        dec_s = kept / layers * m["ms"] / 1e3
        row = {"images_per_s": b / dec_s}
        if b in vision:
            row["images_per_s_with_vision"] = b / (dec_s + vision[b]["ms"] / 1e3)
        per_batch[b] = row
    return {
        "layer": layer,
        "kept_blocks": kept,
        "kept_cross_blocks": kept // int(cfg["cross_layer_interval"]),
        "scale": kept / layers,
        "per_batch": per_batch,
    }


def _batch_sizes(text: str) -> list[int]:
    sizes = [int(x) for x in text.split(",") if x.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive integers: {text!r}")
    return sizes


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print it and return the numbers.

    Returns:
        ``{"status": "ok" | "skipped: no CUDA device", "ratios": {...}, ...}``. With a run:
        ``ratios`` = ``{"idefics80b_layer32_images_per_s", "idefics9b_layer13_images_per_s"}``
        (extrapolated, decoder only, at the largest batch size); ``stacks`` = per model the
        built blocks (``decoder_blocks``, ``cross_blocks``), dimensions, weights and peak GPU
        memory in GiB, ``stack`` = ``{batch: {"ms", "images_per_s"}}``; ``vision`` = the
        same for the vision tower + perceiver; ``extrapolated`` = per model
        :func:`extrapolate`.
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4, help="decoder blocks (multiple of 4)")
    ap.add_argument("--batch-sizes", type=_batch_sizes, default=[1, 8, 32])
    ap.add_argument("--models", default="80b,9b", help="comma-separated: 80b, 9b")
    ap.add_argument("--prompt-tokens", type=int, default=PROMPT_TOKENS)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10, help="timed forwards per batch size")
    ap.add_argument("--no-vision", action="store_true", help="skip the vision tower timing")
    ap.add_argument(
        "--cpu-smoke", action="store_true", help="run on CPU, float32, tiny widths (tests)"
    )
    args = ap.parse_args(argv)
    keys = [k.strip().lower() for k in args.models.split(",") if k.strip()]
    unknown = [k for k in keys if k not in MODELS]
    if unknown or not keys:
        ap.error(f"--models: unknown {unknown}; valid: {list(MODELS)}")
    iv = {int(PUBLISHED_CONFIGS[MODELS[k]]["cross_layer_interval"]) for k in keys}
    if args.layers <= 0 or any(args.layers % i for i in iv):
        ap.error(f"--layers must be a positive multiple of cross_layer_interval {sorted(iv)}")
    if args.prompt_tokens <= IMAGE_POSITION:
        ap.error(f"--prompt-tokens must be > {IMAGE_POSITION} (the image token's position)")

    import torch

    if args.cpu_smoke:
        device, dtype, name = "cpu", torch.float32, "cpu (smoke run: tiny widths, float32)"
    elif torch.cuda.is_available():
        device, dtype, name = "cuda", torch.bfloat16, torch.cuda.get_device_name(0)
    else:
        print(SKIPPED)
        return {"status": SKIPPED, "ratios": {}}

    print(
        f"random IDEFICS block stacks on {name}, {str(dtype).split('.')[1]}: {args.layers} "
        f"decoder blocks incl. {args.layers // min(iv)} gated cross-attention; prompt "
        f"{args.prompt_tokens} tokens, one image = 64 perceiver latents; batch sizes "
        f"{args.batch_sizes}; {args.warmup} warm-up + {args.iters} timed forwards"
    )
    stacks: dict[str, Any] = {}
    vision: dict[int, dict[str, float]] = {}
    for i, key in enumerate(keys):
        res = bench_model(key, args, device, dtype, time_vision=(i == 0 and not args.no_vision))
        stacks[key] = res
        vision = res.pop("vision") or vision
        peak = "n/a" if res["peak_gpu_gib"] is None else f"{res['peak_gpu_gib']:.1f} GiB"
        print(
            f"{key.upper()} stack: {res['decoder_blocks']} decoder + {res['cross_blocks']} "
            f"cross-attention blocks, hidden {res['hidden_size']}, MLP {res['intermediate_size']}"
            f", {res['heads']} heads; block weights {res['block_weights_gib']:.1f} GiB; peak "
            f"GPU memory {peak}; built in {res['build_s']:.1f} s"
            + ("" if res["finite"] else "; WARNING: non-finite outputs")
        )
        for b, m in res["stack"].items():
            print(
                f"    batch {b:>3}: {m['ms']:8.2f} ms/forward  {m['images_per_s']:10.1f} images/s"
            )
    for b, m in vision.items():
        print(
            f"vision tower + perceiver (shared), batch {b:>3}: {m['ms']:8.2f} ms  "
            f"{m['images_per_s']:10.1f} images/s"
        )

    extrapolated = {k: extrapolate(k, stacks[k], vision, args.layers) for k in keys}
    print("EXTRAPOLATED, not measured (stack time x kept blocks / stack blocks):")
    for k, e in extrapolated.items():
        for b, row in e["per_batch"].items():
            with_vis = row.get("images_per_s_with_vision")
            extra = "" if with_vis is None else f"; {with_vis:10.1f} with the vision tower"
            print(
                f"    {k.upper()} truncated at layer {e['layer']} ({e['kept_blocks']} decoder + "
                f"{e['kept_cross_blocks']} cross blocks = {e['scale']:g} x the stack), batch "
                f"{b:>3}: {row['images_per_s']:10.1f} images/s decoder only{extra}"
            )
    big = max(args.batch_sizes)
    ratios = {
        f"idefics{k}_layer{e['layer']}_images_per_s": e["per_batch"][big]["images_per_s"]
        for k, e in extrapolated.items()
    }
    return {
        "status": "ok",
        "device": name,
        "dtype": str(dtype).split(".")[1],
        "layers": args.layers,
        "prompt_tokens": args.prompt_tokens,
        "batch_sizes": args.batch_sizes,
        "ratio_batch_size": big,
        "stacks": stacks,
        "vision": vision,
        "extrapolated": extrapolated,
        "ratios": ratios,
    }


if __name__ == "__main__":
    main()
