"""Weight memory of a VLM checkpoint, full vs truncated, computed on the meta device from its
config alone (no weights, no download, no GPU), and ``medprobe plan model=<name>``.

:data:`PUBLISHED_CONFIGS` holds the architecture hyper-parameters of the checkpoints of
``conf/model/`` as published in their ``config.json`` on the Hugging Face hub (transcribed: only
what shapes the weights; the test checks the resulting parameter counts against the counts the
model cards state). A local model directory is read from its own ``config.json``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medprobe.errors import ConfigError, ExtractorError
from medprobe.extractors.base import LayerId, resolve_layers
from medprobe.extractors.hf import QUANTIZATIONS, quiet_transformers
from medprobe.extractors.vlm.families import (
    FAMILIES,
    FINAL_NORM,
    VISION,
    kept_depth,
    num_layers,
    truncated_config,
)

_SIGLIP_SO400M = dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304,
                      num_hidden_layers=27, num_attention_heads=16, patch_size=14)  # fmt: skip
_QWEN25_7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                  num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False)  # fmt: skip

#: hub id -> the architecture of its ``config.json`` (model_type + what shapes the weights).
PUBLISHED_CONFIGS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-VL-7B-Instruct": dict(
        model_type="qwen2_5_vl",
        text_config=dict(vocab_size=152064, **_QWEN25_7B, rope_parameters=dict(
            rope_type="default", rope_theta=1000000.0, mrope_section=[16, 24, 24])),
        vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                           out_hidden_size=3584, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[7, 15, 23, 31]),
        image_token_id=151655, tie_word_embeddings=False,
    ),
    "google/medgemma-4b-it": dict(
        model_type="gemma3",
        text_config=dict(vocab_size=262208, hidden_size=2560, intermediate_size=10240,
                         num_hidden_layers=34, num_attention_heads=8, num_key_value_heads=4,
                         head_dim=256, sliding_window=1024),
        vision_config=dict(_SIGLIP_SO400M, image_size=896, vision_use_head=False),
        mm_tokens_per_image=256, image_token_index=262144,
    ),
    "llava-hf/llava-onevision-qwen2-7b-ov-hf": dict(
        model_type="llava_onevision",
        text_config=dict(model_type="qwen2", vocab_size=152128, **_QWEN25_7B),
        vision_config=dict(_SIGLIP_SO400M, num_hidden_layers=26, image_size=384,
                           vision_use_head=False),
        vision_feature_layer=-1, vision_feature_select_strategy="full", image_token_index=151646,
        tie_word_embeddings=False,
    ),
    "HuggingFaceM4/Idefics3-8B-Llama3": dict(
        model_type="idefics3",
        text_config=dict(model_type="llama", vocab_size=128259, hidden_size=4096,
                         intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, tie_word_embeddings=False),
        vision_config=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                           num_attention_heads=16, image_size=364, patch_size=14),
        scale_factor=2, image_token_id=128257, tie_word_embeddings=False,
    ),
    "HuggingFaceTB/SmolVLM-Instruct": dict(
        model_type="idefics3",
        text_config=dict(model_type="llama", vocab_size=49155, hidden_size=2048,
                         intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                         num_key_value_heads=32, tie_word_embeddings=False),
        vision_config=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                           num_attention_heads=16, image_size=384, patch_size=14),
        scale_factor=3, image_token_id=49153, tie_word_embeddings=False,
    ),
    "meta-llama/Llama-3.2-11B-Vision-Instruct": dict(
        model_type="mllama",
        text_config=dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                         num_hidden_layers=40, num_attention_heads=32, num_key_value_heads=8,
                         cross_attention_layers=[3, 8, 13, 18, 23, 28, 33, 38]),
        vision_config=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                           num_global_layers=8, attention_heads=16, image_size=560,
                           patch_size=14, max_num_tiles=4,
                           intermediate_layers_indices=[3, 7, 15, 23, 30],
                           vision_output_dim=7680),
        image_token_index=128256,
    ),
    "google/paligemma2-3b-pt-224": dict(
        model_type="paligemma",
        text_config=dict(model_type="gemma2", vocab_size=257216, hidden_size=2304,
                         intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
                         num_key_value_heads=4, head_dim=256),
        vision_config=dict(_SIGLIP_SO400M, image_size=224, projection_dim=2304,
                           vision_use_head=False),
        projection_dim=2304, image_token_index=257152,
    ),
    "OpenGVLab/InternVL3-8B-hf": dict(
        model_type="internvl",
        text_config=dict(model_type="qwen2", vocab_size=151674, **_QWEN25_7B),
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                           num_attention_heads=16, image_size=[448, 448], patch_size=[14, 14]),
        downsample_ratio=0.5, image_token_id=151667, tie_word_embeddings=False,
    ),
}  # fmt: skip

#: ``model=`` config name -> hub id (conf/model/<name>.yaml).
MODEL_ALIASES: dict[str, str] = {
    "qwen2_5_vl_7b": "Qwen/Qwen2.5-VL-7B-Instruct",
    "medgemma_4b": "google/medgemma-4b-it",
    "llava_onevision_7b": "llava-hf/llava-onevision-qwen2-7b-ov-hf",
    "idefics3_8b": "HuggingFaceM4/Idefics3-8B-Llama3",
    "smolvlm_2b": "HuggingFaceTB/SmolVLM-Instruct",
    "llama32_vision_11b": "meta-llama/Llama-3.2-11B-Vision-Instruct",
    "paligemma2_3b": "google/paligemma2-3b-pt-224",
    "internvl3_8b": "OpenGVLab/InternVL3-8B-hf",
}


def vlm_config(model: Any) -> tuple[str, Any]:
    """``model`` -> ``(name, transformers config)``: a ``model=`` name of
    :data:`MODEL_ALIASES`, a hub id of :data:`PUBLISHED_CONFIGS`, a local directory (its
    ``config.json``) or a config object (name ``"custom"``).

    Raises:
        ExtractorError: an unknown name, an unreadable config, a model type that is not a VLM
            family.
    """
    from transformers import AutoConfig

    if not isinstance(model, (str, Path)):
        return "custom", model
    name = MODEL_ALIASES.get(str(model), str(model))
    if name in PUBLISHED_CONFIGS:
        spec = dict(PUBLISHED_CONFIGS[name])
        return name, AutoConfig.for_model(spec.pop("model_type"), **spec)
    path = Path(str(model)).expanduser()
    source = str(path) if (path / "config.json").is_file() else str(model)
    try:  # a local folder, or a hub id's config.json in the local Hugging Face cache
        cfg = AutoConfig.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError):
        raise ExtractorError(
            f"vlm: no published config for {model!r} and no config.json for it in a local "
            f"folder or the Hugging Face cache; shipped: {', '.join(MODEL_ALIASES)}"
        ) from None
    if cfg.model_type not in FAMILIES:
        raise ExtractorError(f"vlm: {model} holds a {cfg.model_type!r} model, not a VLM family")
    return source, cfg


def language_model(model: Any) -> Any:
    """The decoder stack of an ``AutoModelForImageTextToText`` model (``language_model``;
    Idefics3: ``text_model``)."""
    base = model.model
    for attr in ("language_model", "text_model"):
        if hasattr(base, attr):
            return getattr(base, attr)
    raise ExtractorError(f"vlm: {type(base).__name__} has no language model attribute")


def count_parameters(config: Any, depth: int | None = None) -> dict[str, int]:
    """Parameters of ``AutoModelForImageTextToText.from_config(config)`` with ``depth``
    decoder layers (:func:`~medprobe.extractors.vlm.families.truncated_config`), built on the
    ``meta`` device (no memory).

    Returns:
        ``total``; ``linear`` = weights of the ``nn.Linear`` layers bitsandbytes quantises
        (every Linear but ``lm_head``); ``linear_rows`` = their summed output features;
        ``other`` = ``total - linear``; ``language_model`` (decoder layers, embeddings, norm),
        ``vision`` (vision tower + projector / connector), ``lm_head``.
    """
    import torch
    from torch import nn
    from transformers import AutoModelForImageTextToText

    cfg = truncated_config(config, depth) if depth is not None else copy.deepcopy(config)
    with quiet_transformers(), torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(cfg)
    out = {"total": 0, "linear": 0, "linear_rows": 0, "language_model": 0, "vision": 0,
           "lm_head": 0}  # fmt: skip
    lm = language_model(model)
    lm_ids = {id(p) for p in lm.parameters()}
    head_ids = {id(p) for p in model.lm_head.parameters()}
    seen: set[int] = set()
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = p.numel()
        out["total"] += n
        part = "language_model" if id(p) in lm_ids else "lm_head" if id(p) in head_ids else "vision"
        out[part] += n
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and not name.startswith("lm_head"):
            out["linear"] += mod.weight.numel()
            out["linear_rows"] += mod.out_features
    out["other"] = out["total"] - out["linear"]
    return out


def weight_bytes(counts: Mapping[str, int], quantization: str = "none", itemsize: int = 2) -> int:
    """Bytes of weights for :func:`count_parameters` ``counts`` (the IDEFICS rule,
    :func:`medprobe.extractors.idefics.memory.weight_bytes`): ``none`` every parameter at
    ``itemsize``; ``8bit`` Linear weights 1 byte + a float32 scale per output row; ``4bit``
    0.5 byte + a float32 absmax per 64 weights; the rest at ``itemsize``.

    Raises:
        ExtractorError: unknown quantisation.
    """
    if quantization == "none":
        return int(counts["total"] * itemsize)
    other = int(counts["other"] * itemsize)
    if quantization == "8bit":
        return other + int(counts["linear"]) + 4 * int(counts["linear_rows"])
    if quantization == "4bit":
        return other + math.ceil(counts["linear"] / 2) + 4 * math.ceil(counts["linear"] / 64)
    raise ExtractorError(
        f"vlm: unknown quantization {quantization!r}; valid: {list(QUANTIZATIONS)}"
    )


def memory_plan(
    model: Any, layer: Any, quantizations: Sequence[str] = QUANTIZATIONS
) -> dict[str, Any]:
    """Weight memory of ``model`` (:func:`vlm_config`) probed at ``layer`` (an int, ``-1``,
    ``final_norm``, ``vision``, ``all`` or a list: the deepest counts), full vs truncated.

    Returns:
        ``model``, ``model_type``, ``layer`` (resolved, the deepest), ``depth_full``,
        ``depth_truncated``, ``params_full``, ``params_truncated``, ``vision_params``, and
        ``rows``: one per quantisation with ``quantization``, ``gb_full``, ``gb_truncated``
        (1e9 bytes; bf16 for what is not quantised).

    Raises:
        ExtractorError: an unknown model or layer.
    """
    name, cfg = vlm_config(model)
    n = num_layers(cfg)
    available: list[LayerId] = [*range(n + 1), FINAL_NORM, VISION]
    if isinstance(layer, str) and "," in layer:
        layer = [x.strip() for x in layer.split(",")]
    wanted = resolve_layers(layer, available)
    depth = kept_depth(wanted, n)
    full, trunc = count_parameters(cfg, n), count_parameters(cfg, depth)
    numbered = [x for x in wanted if isinstance(x, int)]
    deepest: LayerId = FINAL_NORM if FINAL_NORM in wanted else max(numbered) if numbered else VISION
    return {
        "model": name,
        "model_type": str(cfg.model_type),
        "layer": deepest,
        "depth_full": n,
        "depth_truncated": depth,
        "params_full": full["total"],
        "params_truncated": trunc["total"],
        "vision_params": full["vision"],
        "rows": [
            {
                "quantization": q,
                "gb_full": weight_bytes(full, q) / 1e9,
                "gb_truncated": weight_bytes(trunc, q) / 1e9,
            }
            for q in quantizations
        ],
    }


def format_memory_plan(plan: Mapping[str, Any]) -> str:
    """:func:`memory_plan` as the text ``medprobe plan model=<name>`` prints."""
    fam = FAMILIES[plan["model_type"]]
    lines = [
        f"{plan['model']} ({fam.label}), layer {plan['layer']}: weight memory computed on the "
        "meta device (no weights read, no GPU needed)",
        f"parameters {plan['params_full'] / 1e9:.2f} B in full (vision tower + projector "
        f"{plan['vision_params'] / 1e9:.2f} B); {plan['depth_truncated']} of "
        f"{plan['depth_full']} decoder layers loaded truncated ({plan['params_truncated'] / 1e9:.2f} B)",
        "GB = 1e9 bytes; bf16 unless quantised; add activations (~1-3 GB at batch 8) and ~1 GB "
        "of CUDA context per GPU",
        f"{'quantization':<14}{'full':>8}{'truncated':>11}  layers",
    ]
    for r in plan["rows"]:
        lines.append(
            f"{r['quantization']:<14}{r['gb_full']:>8.1f}{r['gb_truncated']:>11.1f}  "
            f"{plan['depth_truncated']}/{plan['depth_full']}"
        )
    return "\n".join(lines)


#: vision encoder kinds (medprobe/extractors/vision.py, timm_models.py, openclip.py)
VISION_KINDS = ("vision", "timm", "open_clip")


def format_vision_plan(name: str, hf_id: str, kind: str, params: int) -> str:
    """The weight memory of a vision encoder (``params`` parameters, from its published
    hyper-parameters on the meta device: :func:`medprobe.extractors.vision.published_param_count`)
    at float32 and bfloat16, as ``medprobe plan model=<name>`` prints it. GB = 1e9 bytes.
    Vision encoders run unquantised and are never truncated: every layer comes from one pass."""
    return "\n".join(
        [
            f"{name} ({hf_id}, kind {kind}): weight memory computed on the meta device (no "
            "weights read, no GPU needed)",
            f"parameters {params / 1e6:.1f} M; every layer in one forward pass (no truncation, no "
            "8-bit / 4-bit: vision encoders run unquantised)",
            f"{'dtype':<14}{'weights GB':>11}",
            f"{'float32':<14}{params * 4 / 1e9:>11.2f}",
            f"{'bfloat16':<14}{params * 2 / 1e9:>11.2f}",
        ]
    )


def _model_node(name: str) -> tuple[str, Any]:
    """Compose ``model=<name>`` (Hydra, conf/) -> ``(kind, composed config)``.

    Raises:
        ConfigError: an unknown model config.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from medprobe.config import conf_dir, register_configs

    register_configs()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[f"model={name}"])
    except HydraException as exc:
        raise ConfigError(
            f"medprobe plan: unknown model={name}: {str(exc).splitlines()[0]}"
        ) from None
    return str(cfg.model.kind), cfg


def main(argv: Sequence[str] | None = None) -> int:
    """``medprobe plan model=<name> [layer=<L>] [model.hf_id=<id or dir>]``: the weight memory
    of any VLM or IDEFICS model config, full vs truncated, per quantisation, from the config
    alone (no download). Any other argument form goes to the IDEFICS placement planner
    (:func:`medprobe.extractors.idefics.plan.main`: ``--model``, ``--max-memory``, ...).

    Raises:
        ConfigError: an unknown model config, an argument that is not ``key=value``, a model
            kind without a memory plan.
        ExtractorError: an unknown layer, a model whose config is not shipped.
    """
    import sys

    from medprobe.extractors.idefics import plan as idefics_plan

    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a.startswith("model=") for a in args):
        return idefics_plan.main(args)
    opts: dict[str, str] = {}
    for a in args:
        key, sep, value = a.partition("=")
        if not sep or key not in ("model", "layer", "model.hf_id"):
            raise ConfigError(
                f"medprobe plan: {a!r}: with model=<name> the arguments are model=, layer= and "
                "model.hf_id= (the IDEFICS placement plan: medprobe plan --help)"
            )
        opts[key] = value
    kind, cfg = _model_node(opts["model"])
    hf_id = opts.get("model.hf_id", str(cfg.model.hf_id))
    layer: Any = opts.get("layer", cfg.layer)
    if kind == "idefics":
        print(idefics_plan.memory_table(hf_id, layer))
        return 0
    if kind in VISION_KINDS:
        from medprobe.extractors.vision import published_param_count

        print(format_vision_plan(opts["model"], hf_id, kind, published_param_count(hf_id)))
        return 0
    if kind != "vlm":
        raise ConfigError(
            f"medprobe plan: model={opts['model']} (kind {kind}) is small enough to need no plan; "
            "plans exist for kinds vlm, idefics, " + ", ".join(VISION_KINDS)
        )
    print(format_memory_plan(memory_plan(hf_id, layer)))
    return 0
