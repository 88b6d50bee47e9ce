"""``medprobe plan``: the IDEFICS placement plan and weight-memory table as text, computed
without weights or GPUs.

:func:`format_plan` prints :func:`~medprobe.extractors.idefics.placement.device_plan`'s result
(one row per device: its ``max_memory``, weights, free memory, decoder / cross-attention blocks
and other modules; then whether it fits, spills, exceeds ``max_memory`` or would be refused, and
the ``python -m medprobe`` command that loads it). :func:`memory_table` is the weight memory of a
published checkpoint, full vs truncated, per quantisation. :func:`main` is the command line
(``medprobe plan ...``; also ``python -m medprobe.extractors.idefics plan|memory ...``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from medprobe.cli.common import ArgumentParser
from medprobe.errors import ConfigError, ExtractorError
from medprobe.extractors.base import LayerId, resolve_layers
from medprobe.extractors.hf import DTYPES, QUANTIZATIONS, jsonable
from medprobe.extractors.idefics.architecture import (
    FINAL_NORM,
    IMAGE_LATENTS,
    MODEL_ALIASES,
    PUBLISHED_CONFIGS,
)
from medprobe.extractors.idefics.memory import memory_plan
from medprobe.extractors.idefics.placement import (
    PLACEMENT_STRATEGIES,
    block_ranges,
    device_plan,
    plan_config,
)


def _memory_text(limits: Mapping[Any, Any], sep: str = "=") -> str:
    return ",".join(f"{k}{sep}{v}" for k, v in limits.items())


def medprobe_command(plan: Mapping[str, Any]) -> str | None:
    """The ``python -m medprobe`` overrides that load what ``plan`` describes (``None`` for a
    model without a ``model=`` config: a local directory or a custom config)."""
    alias = {v: k for k, v in MODEL_ALIASES.items() if "/" not in k}.get(plan["model"])
    if alias is None:
        return None
    parts = ["python -m medprobe", f"model={alias}"]
    layer = plan["layer"]
    if isinstance(layer, list):
        parts.append(f"'model.layers=[{','.join(str(x) for x in layer)}]'")
    elif layer == "all":
        parts.append("model.layers=all")
    else:
        parts.append(f"layer={layer}")
    if plan["dtype"] != "bfloat16":
        parts.append(f"model.dtype={plan['dtype']}")
    if plan["quantization"] != "none":
        parts.append(f"model.quantization={plan['quantization']}")
    if not plan["truncate"]:
        parts.append("model.truncate=false")
    if isinstance(plan["device_map"], str) and plan["device_map"] != "auto":
        parts.append(f"model.device_map={plan['device_map']}")
    if plan["max_memory"]:
        parts.append(f"'model.max_memory={{{_memory_text(plan['max_memory'], ':')}}}'")
    return " ".join(parts)


def format_plan(plan: Mapping[str, Any]) -> str:
    """:func:`~medprobe.extractors.idefics.placement.device_plan`'s result as the text
    ``medprobe plan`` prints (GB = 1e9 bytes)."""

    def gb(b: float) -> str:
        return f"{b / 1e9:.1f} GB"

    depth, n = plan["depth"], plan["num_hidden_layers"]
    layer = plan["layer"]
    layer_text = ",".join(map(str, layer)) if isinstance(layer, list) else str(layer)
    how = "truncated" if plan["truncated"] else "all blocks"
    limits = plan["max_memory"] or {}
    lines = [
        "IDEFICS placement plan (computed on the meta device: no weights read, no GPU needed)",
        f"model      {plan['model']}, layer {layer_text}: {depth} of {n} decoder blocks ({how})",
        f"weights    {gb(plan['total_bytes'])}: {plan['dtype']}"
        if plan["quantization"] == "none"
        else f"weights    {gb(plan['total_bytes'])}: bitsandbytes {plan['quantization']} Linear "
        f"weights, {plan['dtype']} for the rest and for compute",
        f"placement  device_map={plan['device_map'] if isinstance(plan['device_map'], str) else 'dict'}"
        + (f", max_memory {_memory_text(limits)}" if limits else ""),
        "",
    ]
    head = ("device", "max_memory", "weights", "free", "decoder blocks", "cross-attn", "other")
    table = [head]
    for r in plan["devices"]:
        lim = r["limit_bytes"]
        table.append(
            (
                str(r["device"]),
                "-" if lim is None else f"{r['limit']} = {gb(lim)}",
                gb(r["weight_bytes"]),
                "-" if lim is None else gb(lim - r["weight_bytes"]),
                block_ranges(r["decoder_blocks"]),
                block_ranges(r["cross_attn_blocks"]),
                ", ".join(r["modules"]) or "-",
            )
        )
    n_dec = sum(len(r["decoder_blocks"]) for r in plan["devices"])
    n_x = sum(len(r["cross_attn_blocks"]) for r in plan["devices"])
    n_xall = depth // max(1, plan["cross_layer_interval"])
    table.append(
        ("total", "", gb(plan["total_bytes"]), "", f"{n_dec} of {depth}", f"{n_x} of {n_xall}", "")
    )
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for row in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    lines.append("")
    if plan["fits"]:
        gpu_rows = [r for r in plan["devices"] if r["weight_bytes"]]
        lines.append(
            f"fits: every weight on {'the GPU' if len(gpu_rows) == 1 else 'the listed devices'}"
            " within max_memory (weights only: keep ~2 GB per GPU outside max_memory for the"
            " CUDA context and activations)"
        )
    if plan["spills"]:
        for r in plan["devices"]:
            if r["device"] in plan["offloaded"]:
                what = [
                    f"decoder blocks {block_ranges(r['decoder_blocks'])}"
                    if r["decoder_blocks"]
                    else "",
                    f"cross-attn blocks {block_ranges(r['cross_attn_blocks'])}"
                    if r["cross_attn_blocks"]
                    else "",
                    ", ".join(r["modules"]),
                ]
                how = "read from disk" if r["device"] == "disk" else "copied to the GPU"
                lines.append(
                    f"SPILLS to {r['device']}: {gb(r['weight_bytes'])} "
                    f"({'; '.join(w for w in what if w)}): {how} on every batch, slow"
                )
    for dev in plan["over_limit"]:
        r = next(x for x in plan["devices"] if x["device"] == dev)
        lines.append(
            f"OVER max_memory on {dev}: {gb(r['weight_bytes'])} of weights > {gb(r['limit_bytes'])}"
            " (transformers counts a 4-bit weight at 0.5 byte without its absmax)"
        )
    if plan["error"]:
        first = plan["error"].split(". ")[0].rstrip(".")
        lines.append(f"REFUSED: transformers stops this load: {first}.")
    cmd = medprobe_command(plan)
    if cmd and plan["fits"]:
        lines.append(f"run: {cmd}")
    return "\n".join(lines)


def memory_table(model: str, layer: Any) -> str:
    """The weight memory of a published checkpoint (``idefics80b``, ``idefics9b`` or their hub
    ids) probed at ``layer`` (``32``, ``"8,16,32"``: the deepest counts): one row per
    quantisation, full vs truncated, GB = 1e9 bytes (:func:`~medprobe.extractors.idefics.memory.memory_plan`).

    Raises:
        ExtractorError: an unknown model, a local directory or custom config (no published
            shapes), an unknown layer.
    """
    name, _ = plan_config(model)
    if name not in PUBLISHED_CONFIGS:
        raise ExtractorError(f"idefics: the memory table is for {list(PUBLISHED_CONFIGS)}")
    cfg = PUBLISHED_CONFIGS[name]
    wanted = resolve_layers(
        [x.strip() for x in layer.split(",")] if isinstance(layer, str) else layer,
        [*range(int(cfg["num_hidden_layers"]) + 1), FINAL_NORM, IMAGE_LATENTS],
    )
    numbered = [x for x in wanted if isinstance(x, int)]
    deepest: LayerId = (
        FINAL_NORM if FINAL_NORM in wanted else max(numbered) if numbered else IMAGE_LATENTS
    )
    rows = memory_plan(name, deepest)
    out = [
        f"{name}, layer {deepest}: weight memory (GB = 1e9 bytes; bf16 unless quantised; "
        "+ ~2 GB per GPU for activations)",
        f"{'quantization':<14}{'full':>8}{'truncated':>11}  blocks",
    ]
    for r in rows:
        out.append(
            f"{r['quantization']:<14}{r['gb_full']:>8.1f}{r['gb_truncated']:>11.1f}  "
            f"{r['depth_truncated']}/{r['depth_full']}"
        )
    return "\n".join(out)


def build_parser(prog: str = "medprobe plan") -> ArgumentParser:
    """The ``plan`` command line (see :func:`main`); mistakes raise ``ConfigError``."""
    ap = ArgumentParser(
        prog=prog,
        description="IDEFICS placement plan (which GPU holds which blocks for a max_memory) or "
        "weight-memory table, computed on the meta device: no weights read, no GPU needed.",
    )
    ap.add_argument("--model", default="idefics80b",
                    help="idefics80b (default), idefics9b, a published hub id or a local "
                    "model directory")  # fmt: skip
    ap.add_argument("--layer", default=None,
                    help="cached layer(s): 32, 8,16,32, all, final_norm (default: the "
                    "model's: 32 for 80B, 13 for 9B)")  # fmt: skip
    ap.add_argument("--max-memory", default=None, metavar="DEVICE=SIZE,...",
                    help="required for a plan (not for --memory-table): per-device limits, "
                    "e.g. 0=48GiB,1=48GiB,cpu=200GiB (GiB = 2**30 bytes, GB = 1e9)")  # fmt: skip
    ap.add_argument("--dtype", default="bfloat16", choices=DTYPES)
    ap.add_argument("--quantization", default="none", choices=QUANTIZATIONS)
    ap.add_argument("--device-map", default="auto", choices=PLACEMENT_STRATEGIES)
    ap.add_argument("--no-truncate", action="store_true", help="load all decoder blocks")
    ap.add_argument("--json", action="store_true", help="print the plan as JSON")
    ap.add_argument("--strict", action="store_true", help="exit 1 when the plan does not fit")
    ap.add_argument("--memory-table", action="store_true",
                    help="print the weight memory of --model at --layer, full vs truncated, per "
                    "quantisation, instead of a placement plan")  # fmt: skip
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """``medprobe plan [--model M] [--layer L] --max-memory 0=48GiB,... [options]``: the
    placement plan (:func:`~medprobe.extractors.idefics.placement.device_plan`,
    :func:`format_plan`); with ``--memory-table`` the weight-memory table
    (:func:`memory_table`) instead. Prints to stdout.

    Args:
        argv: the arguments after ``plan`` (``None``: ``sys.argv[1:]``).

    Returns:
        0; 1 with ``--strict`` when the plan does not fit (spills, exceeds ``max_memory`` or
        would be refused).

    Raises:
        ConfigError: a bad option (argparse), or a plan without ``--max-memory``.
        ExtractorError: an unknown model or layer, a malformed ``--max-memory``, float16 with
            80B.
    """
    args = build_parser().parse_args(argv)
    layer: LayerId | str | None = args.layer
    if layer is None:
        layer = 13 if MODEL_ALIASES.get(args.model, args.model).endswith("9b-instruct") else 32
    if args.memory_table:
        print(memory_table(args.model, layer))
        return 0
    if not args.max_memory:
        raise ConfigError(
            "medprobe plan: a plan needs --max-memory, the memory of each GPU to use, e.g. "
            "--max-memory 0=48GiB,1=48GiB (GiB = 2**30 bytes, GB = 1e9); see medprobe plan --help"
        )
    plan = device_plan(
        args.model,
        layer,
        dtype=args.dtype,
        quantization=args.quantization,
        max_memory=args.max_memory,
        truncate=not args.no_truncate,
        device_map=args.device_map,
    )
    if args.json:
        print(json.dumps(jsonable(plan), indent=1))
    else:
        print(format_plan(plan))
    return 1 if args.strict and not plan["fits"] else 0
