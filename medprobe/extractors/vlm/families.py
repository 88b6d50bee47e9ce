"""What the generic VLM extractor needs to know per model family (transformers 5.24
``AutoModelForImageTextToText``), and the truncation rule.

Every family is read the same way (chat template -> language-model forward with
``output_hidden_states=True``); what differs is listed in :class:`Family`:

* where the image sits in the token stream: *in-stream* families (LLaVA, Qwen2-VL,
  Idefics3/SmolVLM, Gemma 3, PaliGemma, InternVL) replace placeholder tokens (``image_token_id``
  in the model config) by the projected image features; Mllama keeps one ``<|image|>`` token and
  lets the text cross-attend to the image in dedicated cross-attention layers;
* which marker tokens close the image (skipped by ``pooling=mean_after_image``);
* which extra processor outputs the forward needs (Qwen2-VL: ``mm_token_type_ids``);
* whether text before the image is kept from seeing it (not in PaliGemma, a prefix-LM, nor in
  transformers' Mllama, whose fully masked cross-attention rows attend to the whole image);
* whether the processor has a chat template at all (PaliGemma's does not: it prepends the image
  tokens itself);
* how the decoder layers are numbered: Mllama counts its cross-attention layers in
  ``text_config.num_hidden_layers`` (11B: 40 = 32 self-attention + 8 cross-attention layers),
  and layer ``k`` is the output of the k-th of all 40; every other family numbers only its
  (self-attention) decoder blocks.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from medprobe.extractors.base import LayerId

#: Layer name: the language model's final norm applied to the last block (needs every block).
FINAL_NORM = "final_norm"
#: Layer name: the image features the language model reads (vision tower + projector /
#: connector output, before any decoder layer), mean over all of them.
VISION = "vision"


@dataclass(frozen=True)
class Family:
    """One ``config.model_type`` of ``AutoModelForImageTextToText``."""

    label: str
    #: the image features replace placeholder tokens in the text stream (else: cross-attention)
    in_stream: bool = True
    #: tokens that close the image (skipped after the last image token by mean_after_image)
    image_end: tuple[str, ...] = ()
    #: extra processor options the forward needs
    processor_call: tuple[tuple[str, Any], ...] = ()
    #: the layer numbering counts cross-attention layers (Mllama)
    counts_cross_attention: bool = False
    #: text before the image cannot see the image (a causal stream, or masked cross-attention)
    causal_before_image: bool = True


_QWEN = Family(
    "Qwen2-VL",
    image_end=("<|vision_end|>",),
    processor_call=(("return_mm_token_type_ids", True),),
)

#: ``config.model_type`` -> :class:`Family`.
FAMILIES: dict[str, Family] = {
    "llava": Family("LLaVA"),
    "llava_next": Family("LLaVA-NeXT"),
    "llava_onevision": Family("LLaVA-OneVision"),
    "qwen2_vl": _QWEN,
    "qwen2_5_vl": Family(
        "Qwen2.5-VL", image_end=_QWEN.image_end, processor_call=_QWEN.processor_call
    ),
    "idefics3": Family("Idefics3", image_end=("<fake_token_around_image>",)),
    "smolvlm": Family("SmolVLM", image_end=("<fake_token_around_image>",)),
    "gemma3": Family("Gemma 3", image_end=("<end_of_image>",)),
    # prefix-LM: the prompt attends bidirectionally to the image, which always comes first
    "paligemma": Family("PaliGemma", causal_before_image=False),
    # transformers' Mllama gives a text row whose cross-attention mask is all zero (the text
    # before the image) a zero bias: it attends uniformly to every image token, and only the MLP
    # output of that row is masked, so the text before the image does see the image (tested)
    "mllama": Family(
        "Mllama", in_stream=False, counts_cross_attention=True, causal_before_image=False
    ),
    "internvl": Family("InternVL", image_end=("</img>",)),
}


def family(model_type: str) -> Family:
    """The :class:`Family` of a ``model_type`` (KeyError when unsupported)."""
    return FAMILIES[model_type]


def text_config(config: Any) -> Any:
    """The language model's config (``config.text_config``; the config itself when absent)."""
    return getattr(config, "text_config", None) or config


def num_layers(config: Any) -> int:
    """Decoder layers of the language model (Mllama: self- plus cross-attention layers)."""
    return int(text_config(config).num_hidden_layers)


def image_token_id(config: Any) -> int | None:
    """The id of the placeholder token replaced by image features (Mllama: its ``<|image|>``
    token), from the model config; ``None`` when the config has none."""
    for key in ("image_token_id", "image_token_index"):
        value = getattr(config, key, None)
        if value is not None:
            return int(value)
    return None


def kept_depth(layers: list[LayerId], n: int) -> int:
    """Decoder layers to load for ``layers`` (resolved ids): the deepest numbered layer (at
    least 1: ``vision`` and layer 0 are read at the first layer's input), all ``n`` for
    ``final_norm``."""
    if FINAL_NORM in layers:
        return n
    numbered = [int(x) for x in layers if isinstance(x, int)]
    return min(n, max([1, *numbered]))


def truncated_config(config: Any, depth: int) -> Any:
    """A copy of ``config`` whose language model has ``depth`` layers and whose last hidden
    state is never normed (``text_config.tie_last_hidden_states=False``: setting it on the
    top-level config does nothing). Per-layer lists (``layer_types``) are cut to ``depth``;
    Mllama's ``cross_attention_layers`` keep their indices (those >= depth are not built)."""
    cfg = copy.deepcopy(config)
    tc = text_config(cfg)
    tc.num_hidden_layers = int(depth)
    types = getattr(tc, "layer_types", None)
    if isinstance(types, list):
        tc.layer_types = types[: int(depth)]
    tc.tie_last_hidden_states = False
    return cfg
