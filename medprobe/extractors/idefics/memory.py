"""IDEFICS parameter and weight-memory arithmetic, without weights (meta device).

:func:`count_parameters` builds the model on the ``meta`` device; :func:`weight_bytes` prices
the counts under a quantisation; :func:`memory_plan` is the table full vs truncated of a
published checkpoint (docs/idefics.md). Per-device limits (``max_memory``) are parsed by
:func:`medprobe.extractors.hf.parse_max_memory`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

from medprobe.errors import ExtractorError
from medprobe.extractors.base import LayerId
from medprobe.extractors.hf import QUANTIZATIONS, quiet_transformers
from medprobe.extractors.idefics.architecture import PUBLISHED_CONFIGS, idefics_config, kept_depth


def count_parameters(config: Any, depth: int | None = None) -> dict[str, int]:
    """Parameters of ``IdeficsForVisionText2Text(config)`` with ``depth`` decoder blocks.

    Built on the ``meta`` device (no memory, well under a second for 80B). ``config`` is an
    ``IdeficsConfig`` or a dict of its arguments (e.g. ``PUBLISHED_CONFIGS[hf_id]``).

    Returns:
        ``total``; ``linear`` = weights of the ``nn.Linear`` layers bitsandbytes quantises
        (every Linear but ``lm_head``); ``linear_rows`` = their summed output features (one
        8-bit scale each); ``other`` = ``total - linear`` (embeddings, norms, patch conv,
        latents, gates, ``lm_head``: kept in ``dtype`` under quantisation); and per-part
        counts ``embed_tokens``, ``vision_model``, ``perceiver_resampler``, ``layers``,
        ``gated_cross_attn_layers``, ``norm``, ``lm_head``.
    """
    import torch
    from torch import nn
    from transformers import IdeficsForVisionText2Text

    cfg = copy.deepcopy(idefics_config(config))
    if depth is not None:
        cfg.num_hidden_layers = int(depth)
    with quiet_transformers(), torch.device("meta"):
        model = IdeficsForVisionText2Text(cfg)
    out: dict[str, int] = {"total": 0, "linear": 0, "linear_rows": 0}
    for name, p in model.named_parameters():
        out["total"] += p.numel()
        part = name.split(".")[1] if name.startswith("model.") else name.split(".")[0]
        out[part] = out.get(part, 0) + p.numel()
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and not name.startswith("lm_head"):
            out["linear"] += mod.weight.numel()
            out["linear_rows"] += mod.out_features
    out["other"] = out["total"] - out["linear"]
    return out


def weight_bytes(counts: Mapping[str, int], quantization: str = "none", itemsize: int = 2) -> int:
    """Bytes of weights for :func:`count_parameters` ``counts`` under a quantisation.

    ``none``: every parameter at ``itemsize`` (2 for bf16). ``8bit`` (LLM.int8): quantisable
    Linear weights 1 byte + one float32 scale per output row; the rest at ``itemsize``.
    ``4bit`` (NF4, no double quantisation): 0.5 byte + one float32 absmax per 64 weights; the
    rest at ``itemsize``. Activations and the CUDA context come on top (docs/idefics.md).

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
        f"idefics: unknown quantization {quantization!r}; valid: {list(QUANTIZATIONS)}"
    )


def memory_plan(
    hf_id: str, layer: LayerId, quantizations: Sequence[str] = QUANTIZATIONS
) -> list[dict[str, Any]]:
    """Weight memory of a published checkpoint probed at ``layer``, full vs truncated.

    Uses :data:`PUBLISHED_CONFIGS` (no download) and :func:`count_parameters`; bf16
    (2 bytes) for everything not quantised.

    Returns:
        One row per quantisation: ``quantization``, ``depth_full``, ``depth_truncated``,
        ``params_full``, ``params_truncated``, ``gb_full``, ``gb_truncated`` (1e9 bytes).

    Raises:
        KeyError: ``hf_id`` is not in :data:`PUBLISHED_CONFIGS`.
    """
    cfg = idefics_config(PUBLISHED_CONFIGS[hf_id])
    n, iv = int(cfg.num_hidden_layers), int(cfg.cross_layer_interval)
    k = kept_depth([layer], n, iv)
    full, trunc = count_parameters(cfg, n), count_parameters(cfg, k)
    return [
        {
            "quantization": q,
            "depth_full": n,
            "depth_truncated": k,
            "params_full": full["total"],
            "params_truncated": trunc["total"],
            "gb_full": weight_bytes(full, q) / 1e9,
            "gb_truncated": weight_bytes(trunc, q) / 1e9,
        }
        for q in quantizations
    ]
