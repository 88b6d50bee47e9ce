"""Where a load of IDEFICS puts each module (model parallel inside a node), computed without
weights or GPUs.

The loader (:meth:`~medprobe.extractors.idefics.extractor.IdeficsExtractor.load`) hands
``device_map`` (default ``auto``) and ``max_memory`` to ``from_pretrained``; transformers /
accelerate place whole decoder, cross-attention and vision blocks (the model's
``_no_split_modules``) over the listed GPUs. :func:`device_plan` computes that placement on the
meta device with the loader's own truncation and quantisation rules (same config, same
``BitsAndBytesConfig``, same transformers functions), so the plan is what a load does (tested on
a tiny model with cpu/disk offload). :func:`placement` describes a device map, planned or the
``hf_device_map`` of a loaded model, per device.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medprobe.errors import ExtractorError
from medprobe.extractors.base import LayerId, option_value, resolve_layers
from medprobe.extractors.hf import (
    DTYPES,
    NAMED_DEVICES,
    QUANTIZATIONS,
    bnb_config,
    jsonable,
    parse_max_memory,
    quiet_transformers,
    size_bytes,
)
from medprobe.extractors.idefics.architecture import (
    FINAL_NORM,
    IMAGE_LATENTS,
    MODEL_ALIASES,
    PUBLISHED_CONFIGS,
    idefics_config,
    is_80b_sized,
    kept_depth,
    truncated_config,
)

#: ``device_map`` values for which transformers / accelerate infer the placement.
PLACEMENT_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
#: Top-level parts of ``IdeficsForVisionText2Text`` other than the two block lists.
_PARTS = ("embed_tokens", "vision_model", "perceiver_resampler", "norm", "lm_head")


def plan_config(model: Any) -> tuple[str, Any]:
    """``model`` -> ``(name, IdeficsConfig)``: a short name of :data:`MODEL_ALIASES`, a hub id
    of :data:`PUBLISHED_CONFIGS`, a local model directory (its ``config.json``), an
    ``IdeficsConfig`` or a dict of its arguments (name ``"custom"``).

    Raises:
        ExtractorError: an unknown name, a directory whose config cannot be read or is not
            IDEFICS.
    """
    if isinstance(model, (str, Path)):
        name = MODEL_ALIASES.get(str(model), str(model))
        if name in PUBLISHED_CONFIGS:
            return name, idefics_config(PUBLISHED_CONFIGS[name])
        path = Path(str(model)).expanduser()
        if (path / "config.json").is_file():
            from transformers import AutoConfig

            try:
                cfg = AutoConfig.from_pretrained(path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ExtractorError(
                    f"idefics: cannot read {path / 'config.json'}: {exc}"
                ) from None
            if cfg.model_type != "idefics":
                raise ExtractorError(
                    f"idefics: {path} holds a {cfg.model_type!r} model, not IDEFICS"
                )
            return str(path), cfg
        valid = [*MODEL_ALIASES, *PUBLISHED_CONFIGS]
        raise ExtractorError(
            f"idefics: unknown model {str(model)!r}; valid: {', '.join(dict.fromkeys(valid))}, "
            "or a local model directory with a config.json"
        )
    return "custom", idefics_config(model)


@contextmanager
def quiet_placement() -> Iterator[None]:
    """Silence accelerate's "Device 0 is not available" (a plan for GPUs on a machine without
    them) and bitsandbytes' import notice about the optional ``kernels`` package."""
    loggers = [logging.getLogger(n) for n in ("accelerate", "bitsandbytes")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with quiet_transformers():
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def skeleton(cfg: Any, dtype: str, quantization: str) -> tuple[Any, Any]:
    """``IdeficsForVisionText2Text(cfg)`` on the meta device as ``from_pretrained`` builds it
    before reading weights (transformers 5.24 ``PreTrainedModel.from_pretrained``): the same
    quantizer (``get_hf_quantizer``), init context (``dtype``, meta device) and, under
    bitsandbytes, the Linear layers replaced by ``Linear8bitLt`` / ``Linear4bit``.
    Returns ``(model, hf_quantizer or None)``."""
    import torch
    from transformers import IdeficsForVisionText2Text
    from transformers.quantizers.auto import get_hf_quantizer
    from transformers.utils import ContextManagers

    torch_dtype: torch.dtype = getattr(torch, dtype)
    kcfg = copy.deepcopy(cfg)
    hq, kcfg, _ = get_hf_quantizer(kcfg, bnb_config(quantization, torch_dtype), "auto", True, {})
    init = IdeficsForVisionText2Text.get_init_context(torch_dtype, hq is not None, False, None)
    with ContextManagers(init):
        model = IdeficsForVisionText2Text(kcfg)
        if hq is not None:
            hq.preprocess_model(
                model=model,
                dtype=torch_dtype,
                device_map="auto",
                checkpoint_files=None,
                use_kernels=False,
            )
    return model, hq


def _param_bytes(model: Any, name: str, param: Any, hq: Any, quantization: str) -> int:
    """Bytes of one parameter once loaded, by the rules of
    :func:`~medprobe.extractors.idefics.memory.weight_bytes`: a weight bitsandbytes quantises
    (the quantizer's own test) 1 byte + a float32 scale per row (8-bit) or 0.5 byte + a float32
    absmax per 64 (4-bit NF4); everything else its dtype's size."""
    n = int(param.numel())
    if hq is not None and hq.param_needs_quantization(model, name):
        if quantization == "8bit":
            return n + 4 * int(param.shape[0])
        return math.ceil(n / 2) + 4 * math.ceil(n / 64)
    return n * int(param.element_size())


def _device_order(dev: Any) -> tuple[int, Any]:
    if isinstance(dev, int):
        return (0, dev)
    if dev in NAMED_DEVICES:
        return (2, NAMED_DEVICES.index(dev))
    return (1, str(dev))


def placement(model: Any, device_map: Mapping[str, Any], hf_quantizer: Any = None,
              quantization: str = "none") -> dict[Any, dict[str, Any]]:  # fmt: skip
    """Where each part of an IDEFICS model sits under ``device_map`` (module name -> device,
    e.g. a loaded model's ``hf_device_map``); parameters are matched to the map with
    transformers' own ``expand_device_map`` (what ``from_pretrained`` places them by).

    Returns:
        ``{device: {"weight_bytes", "decoder_blocks", "cross_attn_blocks", "modules"}}`` in
        accelerate's fill order (GPUs, then cpu, disk): the indices ``i`` of
        ``model.layers.i`` and ``model.gated_cross_attn_layers.i`` on the device, the other
        top-level parts (``embed_tokens``, ``vision_model``, ``perceiver_resampler``, ``norm``,
        ``lm_head``) with weights there, and the bytes of the weights (:func:`_param_bytes`;
        on the meta device the bytes they will take).
    """
    from transformers.integrations.accelerate import expand_device_map

    params = dict(model.named_parameters())
    where = expand_device_map(dict(device_map), list(params))
    rows: dict[Any, dict[str, Any]] = {}
    for name, p in params.items():
        dev = where[name]
        row = rows.setdefault(
            dev, {"weight_bytes": 0, "decoder_blocks": set(), "cross_attn_blocks": set(),
                  "modules": set()},
        )  # fmt: skip
        row["weight_bytes"] += _param_bytes(model, name, p, hf_quantizer, quantization)
        parts = name.split(".")
        if parts[0] == "model":
            parts = parts[1:]
        if parts[0] == "layers":
            row["decoder_blocks"].add(int(parts[1]))
        elif parts[0] == "gated_cross_attn_layers":
            row["cross_attn_blocks"].add(int(parts[1]))
        else:
            row["modules"].add(parts[0])
    out: dict[Any, dict[str, Any]] = {}
    for dev in sorted(rows, key=_device_order):
        row = rows[dev]
        out[dev] = {
            "weight_bytes": int(row["weight_bytes"]),
            "decoder_blocks": sorted(row["decoder_blocks"]),
            "cross_attn_blocks": sorted(row["cross_attn_blocks"]),
            "modules": [m for m in _PARTS if m in row["modules"]]
            + sorted(row["modules"] - set(_PARTS)),
        }
    return out


def _infer_device_map(model: Any, device_map: Any, max_memory: Mapping[Any, Any] | None,
                      hf_quantizer: Any) -> dict[str, Any]:  # fmt: skip
    """The device map ``from_pretrained`` computes for ``device_map`` (transformers 5.24
    ``integrations.accelerate._get_device_map``: the balanced limits for ``auto`` /
    ``balanced``, 90 % of ``max_memory`` under bitsandbytes, accelerate's inference with the
    model's ``_no_split_modules``), without the quantizer's refusal of cpu/disk offload (the
    plan reports it instead)."""
    from transformers.integrations.accelerate import _get_device_map

    if isinstance(device_map, Mapping):
        return {str(k): v for k, v in device_map.items()}
    if device_map not in PLACEMENT_STRATEGIES:
        return {"": device_map}
    if hf_quantizer is not None:  # checked by the caller, after the map is known
        hf_quantizer.validate_environment = lambda *a, **k: None
    limits = dict(max_memory) if max_memory else None  # accelerate converts it in place
    return dict(_get_device_map(model, device_map, limits, hf_quantizer))


def device_plan(
    model: Any = "idefics80b",
    layer: LayerId | Sequence[LayerId] | str = 32,
    dtype: str = "bfloat16",
    quantization: str = "none",
    max_memory: str | Mapping[Any, Any] | None = None,
    truncate: bool = True,
    device_map: Any = "auto",
) -> dict[str, Any]:
    """Where a load of IDEFICS for ``layer`` would put each module, computed without weights.

    Builds the model skeleton on the meta device exactly as :meth:`IdeficsExtractor.load`
    gets it from ``from_pretrained`` (same truncation to :func:`kept_depth` blocks, same
    ``BitsAndBytesConfig``, same quantizer module replacement) and asks transformers /
    accelerate for the device map the load computes for ``device_map`` and ``max_memory``
    (``_no_split_modules``: whole decoder blocks, gated cross-attention blocks and vision
    encoder blocks; ``auto`` spreads the model evenly over the listed GPUs). Runs on a
    machine without GPUs: GPU indices in ``max_memory`` need not exist.

    Args:
        model: ``idefics80b``, ``idefics9b`` (:data:`MODEL_ALIASES`), a hub id of
            :data:`PUBLISHED_CONFIGS`, a local model directory (its ``config.json``), an
            ``IdeficsConfig`` or a dict of its arguments.
        layer: the cached layer(s), as ``model.layers`` (``32``, ``[8, 16, 32]``, ``"all"``,
            ``"final_norm"``, ``"image_latents"``).
        dtype: ``bfloat16``, ``float32``, ``float16`` (refused for 80B like the loader does).
        quantization: ``none``, ``8bit``, ``4bit``.
        max_memory: :func:`parse_max_memory` input, e.g. ``"0=48GiB,1=48GiB"``; required for
            the strategies (``auto``, ...), since no GPU is asked for its size.
        truncate: load only the blocks ``layer`` needs (``model.truncate``).
        device_map: a strategy of :data:`PLACEMENT_STRATEGIES`, one device (``"cpu"``), or an
            explicit ``{module: device}`` map.

    Returns:
        ``model``, ``layers`` (resolved), ``depth`` (decoder blocks loaded),
        ``num_hidden_layers``, ``cross_layer_interval``, ``truncated``, ``dtype``,
        ``quantization``, ``device_map`` (the strategy or map asked for), ``max_memory``
        (normalised), ``modules`` (the inferred ``{module: device}`` map, what the load uses),
        ``devices`` (list of rows ``device``, ``limit``, ``limit_bytes``, ``weight_bytes``,
        ``decoder_blocks``, ``cross_attn_blocks``, ``modules``; every ``max_memory`` device,
        also those left empty), ``total_bytes`` (equal to :func:`weight_bytes` of the loaded
        blocks), ``offloaded`` (``cpu`` / ``disk`` devices holding weights), ``spills``
        (weights on disk, or on cpu while GPUs are listed), ``over_limit`` (devices whose
        weights exceed their ``max_memory``: possible under 4-bit, whose absmax transformers
        does not count), ``error`` (why transformers would refuse the load: bitsandbytes with
        cpu/disk offload), ``fits`` (none of these).

    Raises:
        ExtractorError: unknown model, layer, dtype or quantisation; malformed ``max_memory``;
            no ``max_memory`` for a strategy; float16 with 80B.
    """
    name, cfg = plan_config(model)
    dtype = str(option_value(dtype))
    if dtype not in DTYPES:
        raise ExtractorError(f"idefics: unknown dtype {dtype!r}; valid dtypes: {list(DTYPES)}")
    quantization = str(option_value(quantization) or "none")
    if quantization not in QUANTIZATIONS:
        raise ExtractorError(
            f"idefics: unknown quantization {quantization!r}; valid: {list(QUANTIZATIONS)}"
        )
    n, iv = int(cfg.num_hidden_layers), int(cfg.cross_layer_interval)
    if dtype == "float16" and is_80b_sized(cfg):
        raise ExtractorError(
            "idefics: dtype=float16 is refused for IDEFICS-80B (reported to overflow); use bfloat16"
        )
    if isinstance(layer, str) and "," in layer:
        layer = [x.strip() for x in layer.split(",")]
    wanted = resolve_layers(layer, [*range(n + 1), FINAL_NORM, IMAGE_LATENTS])
    depth = kept_depth(wanted, n, iv) if truncate else n
    limits = parse_max_memory(max_memory, "idefics")
    if isinstance(device_map, str) and device_map in PLACEMENT_STRATEGIES and not limits:
        raise ExtractorError(
            f"idefics: a plan for device_map={device_map} needs max_memory, the memory of each "
            "GPU to use, e.g. 0=48GiB,1=48GiB (GB = 1e9 bytes, GiB = 2**30)"
        )
    with quiet_placement():
        skel, hq = skeleton(truncated_config(cfg, depth), dtype, quantization)
        dmap = _infer_device_map(skel, device_map, limits, hq)
        error = None
        if hq is not None:
            try:
                type(hq).validate_environment(hq, device_map=dmap)
            except (ValueError, ImportError, RuntimeError) as exc:
                error = " ".join(str(exc).split())
        where = placement(skel, dmap, hq, quantization)
    devices = list(limits or {})
    devices += sorted((d for d in where if d not in devices), key=_device_order)
    rows = []
    for dev in devices:
        got = where.get(dev, {})
        lim = (limits or {}).get(dev)
        rows.append(
            {
                "device": dev,
                "limit": lim,
                "limit_bytes": size_bytes(lim) if lim is not None else None,
                "weight_bytes": got.get("weight_bytes", 0),
                "decoder_blocks": got.get("decoder_blocks", []),
                "cross_attn_blocks": got.get("cross_attn_blocks", []),
                "modules": got.get("modules", []),
            }
        )
    offloaded = [r["device"] for r in rows if r["device"] in ("cpu", "disk") and r["weight_bytes"]]
    gpus = any(r["device"] not in ("cpu", "disk") for r in rows)
    spills = "disk" in offloaded or ("cpu" in offloaded and gpus)
    over = [
        r["device"]
        for r in rows
        if r["limit_bytes"] is not None and r["weight_bytes"] > r["limit_bytes"]
    ]
    return {
        "model": name,
        "layer": jsonable(layer),
        "layers": wanted,
        "depth": depth,
        "num_hidden_layers": n,
        "cross_layer_interval": iv,
        "truncate": bool(truncate),
        "truncated": depth < n,
        "dtype": dtype,
        "quantization": quantization,
        "device_map": device_map,
        "max_memory": limits,
        "modules": dmap,
        "devices": rows,
        "total_bytes": sum(r["weight_bytes"] for r in rows),
        "offloaded": offloaded,
        "spills": spills,
        "over_limit": over,
        "error": error,
        "fits": not spills and not over and error is None,
    }


def block_ranges(xs: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"``; ``[]`` -> ``"-"``."""
    runs: list[list[int]] = []
    for x in sorted(xs):
        if runs and x == runs[-1][1] + 1:
            runs[-1][1] = x
        else:
            runs.append([x, x])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs) or "-"
