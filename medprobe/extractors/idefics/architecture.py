"""What IDEFICS is, for every other module of the package: layer names, the published
checkpoints' shapes, and which decoder blocks a set of layers needs.

IDEFICS (``IdeficsForVisionText2Text``, transformers 5.24) inserts a gated cross-attention block
(text attends to the perceiver-resampled image latents) *before* decoder blocks 0,
``cross_layer_interval``, 2 x ``cross_layer_interval``, ... (0-based). A model truncated to
``k`` decoder blocks must keep ``k`` a multiple of ``cross_layer_interval`` (transformers needs
it) and must not apply the final norm to block ``k``'s output (``tie_last_hidden_states``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

from medprobe.extractors.base import LayerId

#: Layer name: the final RMSNorm applied to block N's output (needs the full depth).
FINAL_NORM = "final_norm"
#: Layer name: the mean of the perceiver resampler's output latents (depth 0).
IMAGE_LATENTS = "image_latents"

#: Architecture of the published checkpoints (config.json of HuggingFaceM4/idefics-9b-instruct
#: and idefics-80b-instruct on the Hugging Face hub; the base checkpoints have the same shapes).
#: Used by the memory and placement plans without downloading anything.
# Both checkpoints share the ViT-H/14 vision tower and the 6-block perceiver resampler.
_PUBLISHED_VISION = dict(embed_dim=1280, image_size=224, intermediate_size=5120, patch_size=14,
                         num_attention_heads=16, num_hidden_layers=32)  # fmt: skip
_PUBLISHED_PERCEIVER = dict(use_resampler=True, resampler_depth=6, resampler_head_dim=96,
                            resampler_n_heads=16, resampler_n_latents=64,
                            qk_layer_norms_perceiver=True)  # fmt: skip
PUBLISHED_CONFIGS: dict[str, dict[str, Any]] = {
    "HuggingFaceM4/idefics-9b-instruct": dict(
        vocab_size=32000, additional_vocab_size=2, hidden_size=4096, intermediate_size=11008,
        num_hidden_layers=32, num_attention_heads=32, cross_layer_interval=4,
        qk_layer_norms=True, rms_norm_eps=1e-6, use_resampler=True,
        vision_config=_PUBLISHED_VISION, perceiver_config=_PUBLISHED_PERCEIVER,
    ),
    "HuggingFaceM4/idefics-80b-instruct": dict(
        vocab_size=32000, additional_vocab_size=2, hidden_size=8192, intermediate_size=22016,
        num_hidden_layers=80, num_attention_heads=64, cross_layer_interval=4,
        qk_layer_norms=True, rms_norm_eps=1e-5, use_resampler=True,
        vision_config=_PUBLISHED_VISION, perceiver_config=_PUBLISHED_PERCEIVER,
    ),
}  # fmt: skip

#: Short names of the published checkpoints (the ``model=`` config names). The base checkpoints
#: (``HuggingFaceM4/idefics-80b``, ``-9b``) have the shapes of the instruct ones.
MODEL_ALIASES: dict[str, str] = {
    "idefics80b": "HuggingFaceM4/idefics-80b-instruct",
    "idefics9b": "HuggingFaceM4/idefics-9b-instruct",
    "HuggingFaceM4/idefics-80b": "HuggingFaceM4/idefics-80b-instruct",
    "HuggingFaceM4/idefics-9b": "HuggingFaceM4/idefics-9b-instruct",
}


def idefics_config(config: Any) -> Any:
    """An ``IdeficsConfig``, or a dict of its arguments (``PUBLISHED_CONFIGS[hf_id]``) -> an
    ``IdeficsConfig``."""
    from transformers import IdeficsConfig

    if isinstance(config, Mapping):
        return IdeficsConfig(**dict(config))
    return config


def is_80b_sized(config: Any) -> bool:
    """Hidden size >= 8192 or >= 80 decoder blocks: float16 is refused for such a model (it is
    reported to overflow to NaN / ``<unk>``; the model card's dtype is bfloat16)."""
    return int(config.hidden_size) >= 8192 or int(config.num_hidden_layers) >= 80


def kept_depth(layers: Sequence[LayerId], num_hidden_layers: int, cross_layer_interval: int) -> int:
    """Decoder blocks to load for ``layers`` (resolved layer ids).

    The deepest numbered layer rounded up to a multiple of ``cross_layer_interval`` (at least
    one interval when any numbered layer is wanted: layer 0 is recorded at block 1's input),
    capped at ``num_hidden_layers``; the full depth for ``"final_norm"``; 0 when only
    ``"image_latents"`` is wanted.
    """
    if FINAL_NORM in layers:
        return num_hidden_layers
    numbered = [int(x) for x in layers if isinstance(x, int)]
    if not numbered:
        return 0
    iv = max(1, int(cross_layer_interval))
    k = max(iv, math.ceil(max(numbered) / iv) * iv)
    return min(int(num_hidden_layers), k)


def truncated_config(config: Any, depth: int) -> Any:
    """The config the loader reads the checkpoint with: ``depth`` decoder blocks, block
    ``depth``'s output never normed (``tie_last_hidden_states=False``). A copy."""
    kcfg = copy.deepcopy(config)
    kcfg.num_hidden_layers = int(depth)
    kcfg.tie_last_hidden_states = False
    return kcfg
