"""IDEFICS-9B / 80B (open Flamingo reproduction) hidden states, ``IdeficsForVisionText2Text``.

Models: ``HuggingFaceM4/idefics-80b-instruct`` and ``HuggingFaceM4/idefics-9b-instruct`` (the
paper's models, Han et al., "Multimodal Large Language Models are Generalist Medical Image
Interpreters", medRxiv 2023); the base checkpoints ``HuggingFaceM4/idefics-{9b,80b}`` by
``model.hf_id=...``; any local directory written by ``save_pretrained`` (tests use tiny random
ones). Full documentation with the memory plan: ``docs/idefics.md``.

Prompt. ``cfg.prompt.text`` is a template with one ``{image}`` placeholder, e.g.
``"User:{image}Question: What's on this image? Answer:<end_of_utterance>\\nAssistant:"``, or a
bare question (the ``conf/prompt`` presets), which :func:`chat_template` wraps in exactly that
instruct chat format, image first. The template is split into the interleaved list
``["User:", <image>, "Question: ...\\nAssistant:"]`` that ``IdeficsProcessor`` takes and is
rendered with the processor's own rules (``<s>`` first, each text piece stripped of spaces, the
image as ``<fake_token_around_image><image><fake_token_around_image>``, no end-of-utterance
token added: the template writes it, as the model cards do with
``add_end_of_utterance_token=False``). The rendered string is what the model reads; it is part
of :meth:`IdeficsExtractor.fingerprint` (hence of the cache key) and of ``results.json``.

Layers (DESIGN.md convention; checked on transformers 5.24). IDEFICS inserts a gated
cross-attention block (text attends to the perceiver-resampled image latents) *before* decoder
blocks 0, ``cross_layer_interval``, 2 x ``cross_layer_interval``, ... (0-based).

* ``0``: the input of decoder block 1 = token embeddings after the first gated
  cross-attention block (transformers' ``hidden_states[0]``; tokens after the image already
  carry image information here).
* ``k`` (1..N): the output of decoder block ``k`` (``hidden_states[k]``), **without** the final
  RMSNorm, also for ``k = N``. A truncated stack therefore returns the same values as the full
  model for every kept layer.
* ``"final_norm"``: the final RMSNorm applied to block N's output (what ``lm_head`` reads,
  transformers' default ``hidden_states[N]``); needs the full depth. ``-1`` means N.
* ``"image_latents"``: only with ``pooling="image_latents"`` (then it is the only layer).

Pooling (what the probe sees, for numbered layers and ``"final_norm"``):

* ``"last"`` (default; the paper's choice): the state of the last prompt token, found as the
  rightmost attended position (never ``attention_mask.sum() - 1``, which is wrong under left
  padding). In a causal decoder this is the one position that has read the whole prompt: the
  image (through cross-attention) and every word of the question. With the chat templates it is
  the ``:`` of ``Assistant:``, the state from which the answer would be generated.
* ``"mean_after_image"``: the mean over the text tokens after the image (after the closing
  ``<fake_token_around_image>``), padding excluded. These are the tokens that cross-attend to
  the image; the mean mixes states that have read different amounts of the question.
* ``"image_latents"``: the mean over the perceiver resampler's output latents (64 x 1280 for
  the real models): the visual features the language model cross-attends to, before any text
  is read. Independent of the prompt text and of every decoder layer, so its one layer is
  ``"image_latents"`` and the decoder is loaded with depth 0.

Truncated loading (``truncate=True``): only the decoder blocks up to the deepest requested
layer are read from the checkpoint, the depth rounded up to a multiple of
``cross_layer_interval`` (4 for the real models; transformers needs it). The vision tower,
perceiver, embeddings and ``lm_head`` are always loaded. :meth:`IdeficsExtractor.load_info`
records how many parameters were loaded.

Placement (model parallel inside a node). The loader hands ``device_map`` (default ``auto``)
and ``max_memory`` to ``from_pretrained``; transformers / accelerate place whole decoder,
cross-attention and vision blocks (the model's ``_no_split_modules``) over the listed GPUs.
:func:`device_plan` computes that placement on the meta device, without weights or GPUs, with
the loader's own truncation and quantisation rules (same config, same ``BitsAndBytesConfig``,
same transformers function), so the plan is what a load does (tested on a tiny model with
cpu/disk offload). Command line: ``python -m medprobe.extractors.idefics plan --model idefics80b
--layer 32 --max-memory 0=48GiB,1=48GiB,2=48GiB,3=48GiB`` (and ``memory`` for the weight
table of :func:`memory_plan`).

Batching: the runner's prompt is the same for every image, so its token ids are built once and
repeated; batches then need no padding. Different prompts per sample
(:meth:`IdeficsExtractor.extract` with ``prompts=``) are left-padded; a sample's features are
the same alone or padded in a batch (tested).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from medprobe.extractors.base import (
    ExtractorError,
    LayerId,
    check_features,
    file_sha256,
    resolve_layers,
)
from medprobe.extractors.hub import HubSource, jsonable

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

#: Bumped whenever a change in this file changes the features (part of the fingerprint).
CODE_VERSION = "idefics-1"

DTYPES = ("float32", "bfloat16", "float16")
POOLINGS = ("last", "mean_after_image", "image_latents")
QUANTIZATIONS = ("none", "8bit", "4bit")
IMAGE_SLOT = "{image}"
FINAL_NORM = "final_norm"
IMAGE_LATENTS = "image_latents"
IMAGE_TOKEN = "<image>"
FAKE_TOKEN = "<fake_token_around_image>"
END_OF_UTTERANCE = "<end_of_utterance>"

#: Files hashed for a local model directory (weights, configs, tokenizer, image processor).
_FINGERPRINT_GLOBS = (
    "*.safetensors",
    "*.bin",
    "config.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "preprocessor_config.json",
    "processor_config.json",
)
#: Files above this size are fingerprinted by size + sha256 of their first and last 64 MiB
#: (a full hash of the 160 GB of IDEFICS-80B would take minutes on every run).
_FULL_HASH_LIMIT = 1 << 30
_PARTIAL_CHUNK = 64 << 20

_PREPROCESS_KEYS = (
    "do_convert_rgb",
    "do_resize",
    "size",
    "resample",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "image_num_channels",
)

#: Architecture of the published checkpoints (config.json of HuggingFaceM4/idefics-9b-instruct
#: and idefics-80b-instruct on the Hugging Face hub; the base checkpoints have the same shapes).
#: Used by :func:`memory_plan` without downloading anything.
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


# ---------------------------------------------------------------------------------- prompts


def chat_template(question: str) -> str:
    """A bare question -> the instruct chat template with the image first (the paper's order).

    ``"Q"`` -> ``"User:{image}Q<end_of_utterance>\\nAssistant:"``: the format of the
    IDEFICS instruct model cards, with the image before the question as in the paper's code
    (``[image, question]``).
    """
    return f"User:{IMAGE_SLOT}{question.strip()}{END_OF_UTTERANCE}\nAssistant:"


def split_template(template: str) -> tuple[str, str]:
    """Split a prompt at its one ``{image}`` placeholder -> ``(before, after)``.

    A prompt without ``{image}`` is a bare question (e.g. the presets ``pathology``,
    ``dermatology``, ...) and is first wrapped by :func:`chat_template`.

    Raises:
        ExtractorError: the prompt is empty (``prompt=none``), has several ``{image}``
            placeholders, or writes a literal ``<image>`` / ``<fake_token_around_image>``
            (the processor would read it as a second image slot that no image fills;
            transformers 5.24 trap).
    """
    if not isinstance(template, str) or not template.strip():
        raise ExtractorError(
            "idefics: the prompt is empty; choose prompt=general (or pathology, dermatology, "
            "ophthalmology, radiology) or set prompt.text to a question or to a template "
            "with one {image}"
        )
    for literal in (IMAGE_TOKEN, FAKE_TOKEN):
        if literal in template:
            raise ExtractorError(
                f"idefics: the prompt contains the literal {literal}; write {IMAGE_SLOT} where "
                f"the image goes (a literal {IMAGE_TOKEN} becomes an extra, empty image slot): "
                f"{template!r}"
            )
    n = template.count(IMAGE_SLOT)
    if n == 0:
        template = chat_template(template)
    elif n > 1:
        raise ExtractorError(
            f"idefics: one image per sample: the prompt has {n} {IMAGE_SLOT} placeholders: "
            f"{template!r}"
        )
    before, after = template.split(IMAGE_SLOT)
    return before, after


def interleave(template: str, image: Any) -> list[Any]:
    """The interleaved ``[text, image, text]`` list ``IdeficsProcessor`` takes for one sample.

    Empty text pieces are dropped. ``image`` is passed through (a ``PIL.Image``; never a path
    string, which the processor would read as text).

    Raises:
        ExtractorError: see :func:`split_template`.
    """
    before, after = split_template(template)
    return [p for p in (before, image, after) if not (isinstance(p, str) and not p)]


def render_prompt(template: str, bos_token: str = "<s>") -> str:
    """The exact text the model reads for ``template``, by ``IdeficsProcessor``'s rules.

    ``bos_token`` + each text piece stripped of spaces, the image as
    ``<fake_token_around_image><image><fake_token_around_image>``; no end-of-utterance token is
    inserted (``add_end_of_utterance_token=False``: the template writes it). Tests check that
    tokenising this string gives the processor's ``input_ids``.

    Raises:
        ExtractorError: see :func:`split_template`.
    """
    before, after = split_template(template)
    return f"{bos_token}{before.strip(' ')}{FAKE_TOKEN}{IMAGE_TOKEN}{FAKE_TOKEN}{after.strip(' ')}"


# ------------------------------------------------------------------------ depth and memory


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


def _idefics_config(config: Any) -> Any:
    from transformers import IdeficsConfig

    if isinstance(config, Mapping):
        return IdeficsConfig(**dict(config))
    return config


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

    cfg = copy.deepcopy(_idefics_config(config))
    if depth is not None:
        cfg.num_hidden_layers = int(depth)
    with _quiet_transformers(), torch.device("meta"):
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
    cfg = _idefics_config(PUBLISHED_CONFIGS[hf_id])
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


# ---------------------------------------------------- placement plan (model parallel, one node)

#: Short names of the published checkpoints (the ``model=`` config names). The base checkpoints
#: (``HuggingFaceM4/idefics-80b``, ``-9b``) have the shapes of the instruct ones.
MODEL_ALIASES: dict[str, str] = {
    "idefics80b": "HuggingFaceM4/idefics-80b-instruct",
    "idefics9b": "HuggingFaceM4/idefics-9b-instruct",
    "HuggingFaceM4/idefics-80b": "HuggingFaceM4/idefics-80b-instruct",
    "HuggingFaceM4/idefics-9b": "HuggingFaceM4/idefics-9b-instruct",
}
#: ``device_map`` values for which transformers / accelerate infer the placement.
PLACEMENT_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
#: Named ``max_memory`` devices, in the order accelerate fills them (after the GPUs).
_NAMED_DEVICES = ("mps", "cpu", "disk")
#: Top-level parts of ``IdeficsForVisionText2Text`` other than the two block lists.
_PARTS = ("embed_tokens", "vision_model", "perceiver_resampler", "norm", "lm_head")


def _memory_device(key: Any) -> int | str:
    if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
        return key
    text = str(key).strip().lower()
    if text.startswith("cuda:"):
        text = text[5:]
    if text.isdigit():
        return int(text)
    if text in _NAMED_DEVICES:
        return text
    raise ExtractorError(
        f"idefics: max_memory device {key!r} is not a GPU index (0, 1, ... or cuda:0) nor one "
        f"of {list(_NAMED_DEVICES)}"
    )


def _size_bytes(value: Any) -> int:
    """A ``max_memory`` size -> bytes (accelerate's reading of it)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ExtractorError(f"idefics: max_memory size {value} is negative")
        return value
    if not isinstance(value, str):
        raise ExtractorError(
            f"idefics: max_memory size {value!r} must be bytes (an integer) or a string like 48GiB"
        )
    text = value.strip()
    if text.endswith("b") and not text.lower().endswith("ib"):
        raise ExtractorError(
            f"idefics: max_memory size {value!r} ends in a lower-case b, which accelerate reads "
            "as bits; write GB (1e9 bytes) or GiB (2**30 bytes)"
        )
    from accelerate.utils import convert_file_size_to_int

    try:
        return int(convert_file_size_to_int(text))
    except ValueError:
        raise ExtractorError(
            f"idefics: max_memory size {value!r} is not bytes nor a size like 48GiB, 500MiB, 51.5GB"
        ) from None


def parse_max_memory(spec: str | Mapping[Any, Any] | None) -> dict[int | str, int | str] | None:
    """Per-device memory limits for accelerate -> e.g. ``{0: "48GiB", "cpu": "200GiB"}``.

    Args:
        spec: a mapping (``model.max_memory``; Hydra gives ``{0: 48GiB, cpu: 200GiB}`` for the
            override ``'model.max_memory={0:48GiB,cpu:200GiB}'``), or the command-line form
            ``"0=48GiB,1=48GiB,cpu=200GiB"``; ``None`` or empty -> ``None``. Keys: a GPU index
            (``0``, ``"0"`` and ``"cuda:0"`` all mean 0), ``"cpu"``, ``"disk"``, ``"mps"``.
            Sizes: bytes (an integer, in a mapping only: on the command line a bare ``48``
            is refused as a likely missing unit) or what accelerate reads: ``48GiB`` (2**30
            bytes), ``500MiB``, ``51.5GB`` (1e9 bytes), ``500MB``.

    Returns:
        The limits with normalised keys, GPUs first in index order (accelerate's fill order),
        values as given (accelerate converts them).

    Raises:
        ExtractorError: an entry that is not ``DEVICE=SIZE``, an unknown device, a device
            given twice, a size accelerate cannot read, a negative size, or a size ending in
            a lower-case ``b`` (accelerate reads ``48gb`` as gigabits).
    """
    if spec is None:
        return None
    items: list[tuple[Any, Any]]
    if isinstance(spec, str):
        if not spec.strip():
            return None
        items = []
        for part in spec.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise ExtractorError(
                    f"idefics: max_memory entry {part.strip()!r} is not DEVICE=SIZE "
                    "(e.g. 0=48GiB,1=48GiB,cpu=200GiB)"
                )
            items.append((key.strip(), value.strip()))
    elif isinstance(spec, Mapping) or hasattr(spec, "items"):
        items = list(spec.items())
    else:
        raise ExtractorError(
            f"idefics: max_memory must be a mapping like {{0: 48GiB, cpu: 200GiB}}, got {spec!r}"
        )
    if not items:
        return None
    out: dict[int | str, int | str] = {}
    for key, value in items:
        dev = _memory_device(key)
        if dev in out:
            raise ExtractorError(f"idefics: max_memory gives device {dev!r} twice")
        _size_bytes(value)
        out[dev] = value.strip() if isinstance(value, str) else value
    gpus = sorted(k for k in out if isinstance(k, int))
    return {**{g: out[g] for g in gpus}, **{k: out[k] for k in _NAMED_DEVICES if k in out}}


def _plan_config(model: Any) -> tuple[str, Any]:
    """``model`` -> ``(name, IdeficsConfig)``; see :func:`device_plan`."""
    if isinstance(model, (str, Path)):
        name = MODEL_ALIASES.get(str(model), str(model))
        if name in PUBLISHED_CONFIGS:
            return name, _idefics_config(PUBLISHED_CONFIGS[name])
        path = Path(str(model)).expanduser()
        if (path / "config.json").is_file():
            from transformers import AutoConfig

            try:
                cfg = AutoConfig.from_pretrained(path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ExtractorError(
                    f"idefics: cannot read {path / 'config.json'}: {exc}"
                ) from None
            if getattr(cfg, "model_type", None) != "idefics":
                raise ExtractorError(
                    f"idefics: {path} holds a {cfg.model_type!r} model, not IDEFICS"
                )
            return str(path), cfg
        valid = [*MODEL_ALIASES, *PUBLISHED_CONFIGS]
        raise ExtractorError(
            f"idefics: unknown model {str(model)!r}; valid: {', '.join(dict.fromkeys(valid))}, "
            "or a local model directory with a config.json"
        )
    return "custom", _idefics_config(model)


def _truncated_config(cfg: Any, depth: int) -> Any:
    """The config the loader reads the checkpoint with: ``depth`` decoder blocks, block
    ``depth``'s output never normed (``tie_last_hidden_states=False``)."""
    kcfg = copy.deepcopy(cfg)
    kcfg.num_hidden_layers = int(depth)
    kcfg.tie_last_hidden_states = False
    return kcfg


def _bnb_config(quantization: str, compute_dtype: Any) -> Any:
    """The ``BitsAndBytesConfig`` of ``quantization`` (``None`` for ``"none"``)."""
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=False,
            bnb_4bit_compute_dtype=compute_dtype,
        )
    return None


@contextmanager
def _quiet_placement() -> Iterator[None]:
    """Silence accelerate's "Device 0 is not available" (a plan for GPUs on a machine without
    them) and bitsandbytes' import notice about the optional ``kernels`` package."""
    loggers = [logging.getLogger(n) for n in ("accelerate", "bitsandbytes")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with _quiet_transformers():
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _skeleton(cfg: Any, dtype: str, quantization: str) -> tuple[Any, Any]:
    """``IdeficsForVisionText2Text(cfg)`` on the meta device as ``from_pretrained`` builds it
    before reading weights (transformers 5.24 ``PreTrainedModel.from_pretrained``): the same
    quantizer (``get_hf_quantizer``), init context (``dtype``, meta device) and, under
    bitsandbytes, the Linear layers replaced by ``Linear8bitLt`` / ``Linear4bit``.
    Returns ``(model, hf_quantizer or None)``."""
    import torch
    from transformers import IdeficsForVisionText2Text
    from transformers.quantizers.auto import get_hf_quantizer
    from transformers.utils import ContextManagers

    torch_dtype = getattr(torch, dtype)
    kcfg = copy.deepcopy(cfg)
    hq, kcfg, _ = get_hf_quantizer(kcfg, _bnb_config(quantization, torch_dtype), "auto", True, {})
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
    """Bytes of one parameter once loaded, by :func:`weight_bytes`' rules: a weight
    bitsandbytes quantises (the quantizer's own test) 1 byte + a float32 scale per row (8-bit)
    or 0.5 byte + a float32 absmax per 64 (4-bit NF4); everything else its dtype's size."""
    n = int(param.numel())
    if hq is not None and hq.param_needs_quantization(model, name):
        if quantization == "8bit":
            return n + 4 * int(param.shape[0])
        return math.ceil(n / 2) + 4 * math.ceil(n / 64)
    return n * int(param.element_size())


def _device_order(dev: Any) -> tuple[int, Any]:
    if isinstance(dev, int):
        return (0, dev)
    if dev in _NAMED_DEVICES:
        return (2, _NAMED_DEVICES.index(dev))
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
    name, cfg = _plan_config(model)
    dtype = str(getattr(dtype, "value", dtype))
    if dtype not in DTYPES:
        raise ExtractorError(f"idefics: unknown dtype {dtype!r}; valid dtypes: {list(DTYPES)}")
    quantization = str(quantization or "none")
    if quantization not in QUANTIZATIONS:
        raise ExtractorError(
            f"idefics: unknown quantization {quantization!r}; valid: {list(QUANTIZATIONS)}"
        )
    n, iv = int(cfg.num_hidden_layers), int(cfg.cross_layer_interval)
    if dtype == "float16" and (int(cfg.hidden_size) >= 8192 or n >= 80):
        raise ExtractorError(
            "idefics: dtype=float16 is refused for IDEFICS-80B (reported to overflow); use bfloat16"
        )
    if isinstance(layer, str) and "," in layer:
        layer = [x.strip() for x in layer.split(",")]
    wanted = resolve_layers(layer, [*range(n + 1), FINAL_NORM, IMAGE_LATENTS])
    depth = kept_depth(wanted, n, iv) if truncate else n
    limits = parse_max_memory(max_memory)
    if isinstance(device_map, str) and device_map in PLACEMENT_STRATEGIES and not limits:
        raise ExtractorError(
            f"idefics: a plan for device_map={device_map} needs max_memory, the memory of each "
            "GPU to use, e.g. 0=48GiB,1=48GiB (GB = 1e9 bytes, GiB = 2**30)"
        )
    with _quiet_placement():
        skel, hq = _skeleton(_truncated_config(cfg, depth), dtype, quantization)
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
                "limit_bytes": _size_bytes(lim) if lim is not None else None,
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


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report (a truncated load lists the skipped blocks)."""
    from transformers.utils import logging as hf_logging

    prev = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(prev)


def _file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file; large files: ``sha256-head-tail:<size>:<hex>``."""
    size = path.stat().st_size
    if size <= _FULL_HASH_LIMIT:
        return "sha256:" + file_sha256(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(_PARTIAL_CHUNK))
        f.seek(max(0, size - _PARTIAL_CHUNK))
        h.update(f.read(_PARTIAL_CHUNK))
    return f"sha256-head-tail:{size}:{h.hexdigest()}"


# -------------------------------------------------------------------------------- extractor


class IdeficsExtractor(HubSource):
    """Hidden states of IDEFICS at any decoder layers, pooled (see the module docstring).

    Construction is cheap: the config, tokenizer and image processor are read on first use,
    the weights on the first :meth:`extract` (only as deep as the requested layers need).

    Args:
        hf_id: hub id or local directory (``save_pretrained`` output with tokenizer and
            image processor).
        prompt: a question, or a template with one ``{image}`` placeholder
            (:func:`split_template`).
        revision: hub branch, tag or commit (ignored for a local directory).
        dtype: ``"bfloat16"`` (default), ``"float32"`` or ``"float16"`` (refused for 80B:
            reported to overflow to NaN / ``<unk>``). Compute dtype under quantisation.
            Features are returned as float32.
        pooling: ``"last"`` (``"default"``), ``"mean_after_image"`` or ``"image_latents"``.
        quantization: ``"none"``, ``"8bit"`` (LLM.int8) or ``"4bit"`` (NF4), by
            bitsandbytes. A quantised model is placed by ``device_map``, never moved.
        device_map: accelerate placement (``"auto"``, ``"balanced"``, ``"sequential"``,
            ``"cpu"``, ``"cuda:0"``, or a dict); ``None`` derives it from ``device``.
        max_memory: per-device limits for ``device_map``, e.g. ``{0: "70GiB", "cpu": "200GiB"}``.
        device: used when ``device_map`` is ``None``: ``"auto"`` -> ``device_map="auto"``,
            otherwise every module on that device.
        truncate: load only the decoder blocks the requested layers need.

    Raises:
        ExtractorError: empty ``hf_id`` or prompt, a malformed template, unknown dtype,
            pooling or quantisation.
    """

    name = "idefics"

    def __init__(
        self,
        hf_id: str,
        prompt: str,
        revision: str | None = None,
        dtype: str = "bfloat16",
        pooling: str = "last",
        quantization: str = "none",
        device_map: str | dict[str, Any] | None = None,
        max_memory: Mapping[Any, Any] | None = None,
        device: str = "auto",
        truncate: bool = True,
    ) -> None:
        if not isinstance(hf_id, (str, Path)) or not str(hf_id).strip():
            raise ExtractorError(
                f"idefics: model.hf_id must be a hub id or a local directory, got {hf_id!r}"
            )
        split_template(prompt)
        dtype = str(getattr(dtype, "value", dtype))
        if dtype not in DTYPES:
            raise ExtractorError(f"idefics: unknown dtype {dtype!r}; valid dtypes: {list(DTYPES)}")
        if pooling == "default":
            pooling = "last"
        if pooling not in POOLINGS:
            raise ExtractorError(
                f"idefics: unknown pooling {pooling!r}; valid poolings: {list(POOLINGS)}"
            )
        quantization = str(quantization or "none")
        if quantization not in QUANTIZATIONS:
            raise ExtractorError(
                f"idefics: unknown quantization {quantization!r}; valid: {list(QUANTIZATIONS)}"
            )
        self.hf_id = str(hf_id)
        self.prompt = prompt
        self.revision = revision or None
        self.dtype = dtype
        self.pooling = pooling
        self.quantization = quantization
        self.device_map = device_map
        self.max_memory = parse_max_memory(max_memory)
        self.device = device or "auto"
        self.truncate = bool(truncate)
        self._config: Any = None
        self._processor: Any = None
        self._model: Any = None
        self._depth: int | None = None
        self._load_info: dict[str, Any] = {"loaded": False}
        self._prompt_cache: dict[str, Any] | None = None
        self._fingerprint: dict[str, Any] | None = None

    # ------------------------------------------------------------------ sources

    def _revision(self) -> str:
        rev = self.revision or "main"
        if self._local_dir() is None:
            rev = self._resolved_revision() or rev  # load exactly what was fingerprinted
        return rev

    def config(self) -> Any:
        """The checkpoint's ``IdeficsConfig`` (read once; no weights).

        Raises:
            ExtractorError: missing directory or unreadable config; ``dtype="float16"`` with
                an 80B-sized model (hidden size >= 8192 or >= 80 blocks).
        """
        if self._config is None:
            from transformers import AutoConfig

            try:
                cfg = AutoConfig.from_pretrained(self._source(), revision=self._revision())
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise self._load_error("the IDEFICS config", exc) from None
            if getattr(cfg, "model_type", None) != "idefics":
                raise ExtractorError(
                    f"idefics: {self.hf_id!r} is a {getattr(cfg, 'model_type', '?')!r} model, "
                    "not IDEFICS (model_type 'idefics')"
                )
            self._config = cfg
            self._check_dtype()
        return self._config

    def _check_dtype(self) -> None:
        cfg = self._config
        big = int(cfg.hidden_size) >= 8192 or int(cfg.num_hidden_layers) >= 80
        if self.dtype == "float16" and big:
            raise ExtractorError(
                "idefics: dtype=float16 is refused for IDEFICS-80B: it is reported to overflow "
                "(NaN / <unk> outputs); use model.dtype=bfloat16 (also as the compute dtype of "
                "model.quantization=8bit or 4bit)"
            )
        if self.dtype == "float16":
            log.warning("idefics: float16 may overflow; bfloat16 is the safe choice")

    def processor(self) -> Any:
        """The checkpoint's ``IdeficsProcessor`` (tokenizer padding on the left).

        Raises:
            ExtractorError: missing directory or processor / tokenizer files.
        """
        if self._processor is None:
            from transformers import IdeficsProcessor

            try:
                with _quiet_transformers():
                    proc = IdeficsProcessor.from_pretrained(
                        self._source(), revision=self._revision()
                    )
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise self._load_error("the IDEFICS processor", exc) from None
            proc.tokenizer.padding_side = "left"
            self._processor = proc
        return self._processor

    # ------------------------------------------------------------------ prompts

    def rendered_prompt(self, template: str | None = None) -> str:
        """The exact text the model reads (see :func:`render_prompt`)."""
        bos = self.processor().tokenizer.bos_token or "<s>"
        return render_prompt(self.prompt if template is None else template, bos)

    def encode(self, templates: Sequence[str]) -> dict[str, torch.Tensor]:
        """Prompt templates -> left-padded ``input_ids``, ``attention_mask`` ``(B, T)`` int64
        and ``image_attention_mask`` ``(B, T, 1)`` int64 (1 where a token sees the image).

        The image mask is computed by transformers' own IDEFICS processor helpers, so text
        before the image cannot see it.

        Raises:
            ExtractorError: a malformed template, a token id beyond the model's vocabulary,
                or a rendered prompt whose number of ``<image>`` tokens is not one.
        """
        import torch
        from transformers.models.idefics.processing_idefics import (
            image_attention_mask_for_packed_input_ids,
            incremental_to_binary_attention_mask,
        )

        tok = self.processor().tokenizer
        texts = [self.rendered_prompt(t) for t in templates]
        enc = tok(texts, add_special_tokens=False, padding="longest", return_tensors="pt")
        ids = enc["input_ids"].long()
        mask = enc["attention_mask"].long()
        image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
        counts = (ids == image_id).sum(dim=1)
        if not torch.all(counts == 1):
            raise ExtractorError(
                f"idefics: each prompt must hold one <image> token for its one image; "
                f"got {counts.tolist()} (is {IMAGE_TOKEN} missing from the tokenizer?)"
            )
        cfg = self.config()
        n_emb = int(cfg.vocab_size) + int(getattr(cfg, "additional_vocab_size", 0))
        if int(ids.max()) >= n_emb:
            bad = tok.convert_ids_to_tokens(int(ids.max()))
            raise ExtractorError(
                f"idefics: token {bad!r} (id {int(ids.max())}) is outside the model's "
                f"{n_emb} embeddings; is this the right tokenizer for {self.hf_id!r}?"
            )
        inc, _ = image_attention_mask_for_packed_input_ids(ids, tok, "pt")
        img_mask = incremental_to_binary_attention_mask(inc, "pt", num_classes=1).long()
        return {"input_ids": ids, "attention_mask": mask, "image_attention_mask": img_mask}

    # ------------------------------------------------------------------ protocol

    def layers(self) -> list[LayerId]:
        """``[0, 1, ..., N, "final_norm"]``, or ``["image_latents"]`` for that pooling.

        ``N = num_hidden_layers`` (32 for 9B, 80 for 80B). Reads only the config.

        Raises:
            ExtractorError: the config cannot be read (or float16 with 80B).
        """
        if self.pooling == IMAGE_LATENTS:
            return [IMAGE_LATENTS]
        n = int(self.config().num_hidden_layers)
        return [*range(n + 1), FINAL_NORM]

    def preprocessing(self) -> dict[str, Any]:
        """The image processor's settings that change pixel values (JSON types)."""
        ip = self.processor().image_processor
        settings = ip.to_dict()
        out: dict[str, Any] = {"backend": type(ip).__name__}
        for key in _PREPROCESS_KEYS:
            out[key] = jsonable(settings.get(key))
        return out

    def quantization_settings(self) -> dict[str, Any] | None:
        """The bitsandbytes settings used (``None`` without quantisation)."""
        if self.quantization == "8bit":
            return {"method": "bitsandbytes LLM.int8", "llm_int8_threshold": 6.0}
        if self.quantization == "4bit":
            return {
                "method": "bitsandbytes 4bit",
                "bnb_4bit_quant_type": "nf4",
                "bnb_4bit_use_double_quant": False,
                "bnb_4bit_compute_dtype": self.dtype,
            }
        return None

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes the features, as JSON types. Never loads weights.

        Keys: ``extractor``, ``code_version``, ``hf_id``, ``revision``, ``source``; for a
        local directory ``files`` = ``{name: digest}`` of weights, configs, tokenizer and
        image-processor files; for a hub id ``resolved_revision``; ``dtype``,
        ``quantization`` (:meth:`quantization_settings`), ``pooling``, ``rendered_prompt``
        (the exact text read: two prompt presets that render the same share a cache entry),
        ``preprocessing``. Truncation and placement are not in it: they do not change the
        features of a kept layer (tested).

        Raises:
            ExtractorError: missing directory, no weight files, unreadable config/processor.
        """
        if self._fingerprint is None:
            local = self._local_dir()
            self.config()
            fp: dict[str, Any] = {
                "extractor": self.name,
                "code_version": CODE_VERSION,
                "hf_id": self.hf_id,
                "revision": self.revision,
            }
            if local is not None:
                files = sorted(
                    {f for g in _FINGERPRINT_GLOBS for f in local.glob(g) if f.is_file()}
                )
                if not any(f.suffix in (".safetensors", ".bin") for f in files):
                    raise ExtractorError(
                        f"idefics: no weight files (*.safetensors, *.bin) in local model "
                        f"directory {local}"
                    )
                fp["source"] = "local"
                fp["files"] = {f.name: _file_digest(f) for f in files}
            else:
                fp["source"] = "hub"
                fp["resolved_revision"] = self._resolved_revision() or self.revision or "main"
            fp["dtype"] = self.dtype
            fp["quantization"] = self.quantization_settings()
            fp["pooling"] = self.pooling
            fp["rendered_prompt"] = self.rendered_prompt()
            fp["preprocessing"] = self.preprocessing()
            self._fingerprint = fp
        return copy.deepcopy(self._fingerprint)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One ``PIL.Image`` -> ``(3, S, S)`` float32 pixel values (S = 224 for the real models).

        The checkpoint's IDEFICS image processor: convert to RGB, resize to S x S (bicubic, no
        crop: the aspect ratio is not kept), scale to [0, 1], normalise with the OpenAI CLIP
        mean/std. Safe in DataLoader workers (pickling drops a loaded model).

        Raises:
            ExtractorError: the processor cannot be loaded.
        """
        if image.mode != "RGB":
            image = image.convert("RGB")
        out = self.processor().image_processor([image], return_tensors="pt")
        pv = out["pixel_values"] if not hasattr(out, "ndim") else out
        return pv.reshape(-1, *pv.shape[-3:])[0].float()

    # ------------------------------------------------------------------ loading

    def _device_map(self) -> Any:
        if self.device_map is not None:
            return self.device_map
        return "auto" if self.device == "auto" else {"": self.device}

    def _max_memory(self) -> dict[int | str, int | str] | None:
        """A fresh copy of the :func:`parse_max_memory` limits (accelerate converts the dict it
        is given in place)."""
        return dict(self.max_memory) if self.max_memory else None

    def load(self, layers: Sequence[LayerId] | LayerId | str | None = None) -> Any:
        """Load ``IdeficsForVisionText2Text`` deep enough for ``layers``; idempotent.

        ``None``: the model already loaded, else all layers. With ``truncate`` only
        :func:`kept_depth` decoder blocks are read (a deeper later request reloads). The final
        norm is never applied to a returned numbered layer.
        Placement is by ``device_map`` (accelerate); the model is never moved with ``.to()``.

        Raises:
            ExtractorError: unknown layer, weights that cannot be loaded, weights missing from
                the checkpoint (other than ``lm_head``, which the features never use).
        """
        import torch
        from transformers import IdeficsForVisionText2Text

        if layers is None:
            if self._model is not None:
                return self._model
            layers = "all"
        wanted = resolve_layers(layers, self.layers())
        cfg = self.config()
        n = int(cfg.num_hidden_layers)
        depth = kept_depth(wanted, n, int(cfg.cross_layer_interval)) if self.truncate else n
        if self._model is not None and self._depth is not None and depth <= self._depth:
            return self._model
        if self._model is not None:
            log.info("idefics: reloading %d blocks deep (had %d)", depth, self._depth)
            self.release()
        kcfg = _truncated_config(cfg, depth)  # the rule device_plan() uses too
        torch_dtype = getattr(torch, self.dtype)
        kwargs: dict[str, Any] = {
            "config": kcfg,
            "revision": self._revision(),
            "dtype": torch_dtype,
            "device_map": self._device_map(),
            "output_loading_info": True,
        }
        if self._max_memory():
            kwargs["max_memory"] = self._max_memory()
        if self.quantization != "none":
            kwargs["quantization_config"] = _bnb_config(self.quantization, torch_dtype)
        try:
            with _quiet_transformers():
                loaded: Any = IdeficsForVisionText2Text.from_pretrained(self._source(), **kwargs)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, ImportError) as exc:
            if "dispatched on the CPU or the disk" in str(exc):
                raise ExtractorError(
                    f"idefics: the {self.quantization} model does not fit the GPUs of max_memory "
                    f"({self._max_memory()}) and bitsandbytes refuses cpu/disk offload; see "
                    "python -m medprobe.extractors.idefics plan --help (docs/idefics.md)"
                ) from None
            raise self._load_error("the IDEFICS weights", exc) from None
        model, info = loaded  # output_loading_info=True
        unused = self._check_loading_info(info, depth, max(1, int(cfg.cross_layer_interval)))
        self._model = model.eval()
        self._depth = depth
        self._load_info = self._describe(model, cfg, depth)
        self._load_info["unused_checkpoint_entries"] = len(unused)
        log.info(
            "idefics: loaded %s: %d of %d decoder blocks, %s of %s parameters, %s, quantization=%s",
            self.hf_id,
            depth,
            n,
            f"{self._load_info['params_loaded']:,}",
            f"{self._load_info['params_full']:,}",
            self.dtype,
            self.quantization,
        )
        return self._model

    @staticmethod
    def _check_loading_info(info: Mapping[str, Any], depth: int, interval: int) -> list[str]:
        """Refuse missing weights; return checkpoint keys skipped for another reason than
        truncation (logged: e.g. persisted ``rotary_emb.inv_freq`` buffers of old checkpoints).

        Missing ``lm_head`` weights only warn: the features never pass through ``lm_head``.
        """
        missing = sorted(info.get("missing_keys") or [])
        if any(not k.startswith("lm_head") for k in missing):
            bad = next(k for k in missing if not k.startswith("lm_head"))
            raise ExtractorError(
                f"idefics: {len(missing)} weights missing from the checkpoint (they would be "
                f"random), e.g. {bad}"
            )
        if missing:
            log.warning("idefics: lm_head weights missing (unused for features): %s", missing)
        other: list[str] = []
        for key in sorted(info.get("unexpected_keys") or []):
            parts = key.split(".")
            for name, limit in (("layers", depth), ("gated_cross_attn_layers", depth // interval)):
                if name in parts and parts.index(name) + 1 < len(parts):
                    idx = parts[parts.index(name) + 1]
                    if idx.isdigit() and int(idx) >= limit:
                        break
            else:
                other.append(key)
        if other:
            log.warning(
                "idefics: %d checkpoint entries not used by the model, e.g. %s",
                len(other),
                other[0],
            )
        return other

    @staticmethod
    def _describe(model: Any, cfg: Any, depth: int) -> dict[str, Any]:
        params = 0
        for p in model.parameters():
            qs = getattr(p, "quant_state", None)
            params += int(np.prod(qs.shape)) if qs is not None else p.numel()
        dmap = getattr(model, "hf_device_map", None)
        devices = sorted({str(v) for v in dmap.values()}) if dmap else [str(model.device)]
        where = {
            str(dev): {"decoder_blocks": _ranges(row["decoder_blocks"]),
                       "cross_attn_blocks": _ranges(row["cross_attn_blocks"])}
            for dev, row in placement(model, dmap or {"": str(model.device)}).items()
        }  # fmt: skip
        return {
            "loaded": True,
            "kept_depth": depth,
            "num_hidden_layers": int(cfg.num_hidden_layers),
            "cross_layer_interval": int(cfg.cross_layer_interval),
            "truncated": depth < int(cfg.num_hidden_layers),
            "params_loaded": int(params),
            "params_full": int(count_parameters(cfg)["total"]),
            "memory_footprint_bytes": int(model.get_memory_footprint()),
            "devices": devices,
            "placement": where,
        }

    def load_info(self) -> dict[str, Any]:
        """What was loaded, for ``results.json``.

        ``{"loaded": False}`` before any extraction (e.g. a cache hit); after loading:
        ``kept_depth``, ``num_hidden_layers``, ``cross_layer_interval``, ``truncated``,
        ``params_loaded`` (logical count, also under 4-bit packing), ``params_full`` (the
        untruncated model), ``memory_footprint_bytes`` (transformers' count of parameter and
        buffer bytes), ``devices``, ``placement`` (``{device: {"decoder_blocks": "0-8",
        "cross_attn_blocks": "-"}}`` from the model's ``hf_device_map``: compare with
        :func:`device_plan`), ``unused_checkpoint_entries`` (checkpoint entries skipped
        for another reason than truncation, e.g. old persisted rotary buffers), plus ``dtype``,
        ``quantization``, ``device_map``.
        """
        return {
            **self._load_info,
            "dtype": self.dtype,
            "quantization": self.quantization,
            "device_map": jsonable(self._device_map()),
        }

    def release(self) -> None:
        """Drop the loaded model (frees its memory once nothing else holds it)."""
        self._model = None
        self._depth = None
        self._load_info = {"loaded": False}
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover - torch ships with the extractor
            pass

    # ------------------------------------------------------------------ extraction

    def _prompt_inputs(self, batch_size: int) -> dict[str, torch.Tensor]:
        if self._prompt_cache is None:
            self._prompt_cache = self.encode([self.prompt])
        return {
            k: v.repeat(batch_size, *([1] * (v.ndim - 1))) for k, v in self._prompt_cache.items()
        }

    def _inputs(
        self, batch: torch.Tensor, prompts: Sequence[str] | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Check a batch -> ``(pixels (B, 1, 3, S, S), encoded prompts)``."""
        import torch

        if not isinstance(batch, torch.Tensor) or batch.ndim not in (4, 5) or batch.shape[-3] != 3:
            shape = tuple(batch.shape) if hasattr(batch, "shape") else type(batch).__name__
            raise ExtractorError(f"idefics: expected a (B, 3, H, W) tensor batch, got {shape}")
        pixels = batch if batch.ndim == 5 else batch[:, None]
        bsz = int(pixels.shape[0])
        if prompts is None:
            enc = self._prompt_inputs(bsz)
        else:
            if len(prompts) != bsz:
                raise ExtractorError(f"idefics: {len(prompts)} prompts for {bsz} images")
            enc = self.encode(prompts)
        image_id = self.processor().tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        n_tokens = (enc["input_ids"] == image_id).sum(dim=1)
        if not torch.all(n_tokens == pixels.shape[1]):
            raise ExtractorError(
                f"idefics: <image> tokens per sample {n_tokens.tolist()} != images per sample "
                f"({pixels.shape[1]})"
            )
        return pixels, enc

    def hidden_states(
        self,
        batch: torch.Tensor,
        layers: Sequence[LayerId] | LayerId | str,
        prompts: Sequence[str] | None = None,
    ) -> tuple[dict[LayerId, torch.Tensor], dict[str, torch.Tensor]]:
        """Un-pooled states of one forward pass, for inspection and tests.

        Returns:
            ``({layer: (B, T, D) tensor}, encoded prompts)`` for the numbered layers and
            ``"final_norm"`` (on the model's device and dtype), ``{"image_latents": (B,
            n_latents, D_vision)}`` for that layer; the encoded prompts are those of
            :meth:`encode` (``T`` positions, left-padded).

        Raises:
            ExtractorError: as :meth:`extract`.
        """
        import torch

        wanted = resolve_layers(layers, self.layers())
        pixels, enc = self._inputs(batch, prompts)
        model = self.load(wanted)
        base = model.model
        dev = base.embed_tokens.weight.device
        if dev.type == "meta":  # offloaded embedding: accelerate's hooks place the inputs
            dev = torch.device("cpu")
        enc = {k: v.to(dev) for k, v in enc.items()}
        numbered = sorted(int(x) for x in wanted if isinstance(x, int))
        latents: list[torch.Tensor] = []
        hook = None
        if IMAGE_LATENTS in wanted:
            hook = base.perceiver_resampler.register_forward_hook(
                lambda _m, _a, out: latents.append(out)
            )
        try:
            with torch.inference_mode():
                out = base(
                    **enc,
                    pixel_values=pixels.to(dev, torch.float32),
                    output_hidden_states=numbered if numbered else False,
                    use_cache=False,
                )
        finally:
            if hook is not None:
                hook.remove()
        states: dict[LayerId, torch.Tensor] = {k: out.hidden_states[k] for k in numbered}
        if FINAL_NORM in wanted:
            states[FINAL_NORM] = out.last_hidden_state
        if IMAGE_LATENTS in wanted:
            states[IMAGE_LATENTS] = latents[-1].reshape(pixels.shape[0], -1, latents[-1].shape[-1])
        return states, enc

    def extract(
        self,
        batch: torch.Tensor,
        layers: Sequence[LayerId] | LayerId | str,
        prompts: Sequence[str] | None = None,
    ) -> dict[LayerId, np.ndarray]:
        """Pixel values ``(B, 3, S, S)`` (or ``(B, 1, 3, S, S)``) -> ``{layer: (B, D) float32}``.

        One forward pass returns every requested layer, pooled (module docstring). ``D`` is
        ``hidden_size`` (4096 for 9B, 8192 for 80B) for numbered layers and ``"final_norm"``,
        the vision width (1280) for ``"image_latents"``. Keys are resolved layers (``-1`` is
        the last numbered layer N, un-normed). ``prompts`` (one template per sample) overrides
        the extractor's prompt; different prompts are left-padded.

        Every batch is checked: one ``<image>`` token per image, and every layer finite and
        not all zero (the error names the layer).

        Raises:
            ExtractorError: unknown layer, a malformed batch or prompt, weights that cannot be
                loaded, or non-finite / all-zero features.
        """
        wanted = resolve_layers(layers, self.layers())
        states, enc = self.hidden_states(batch, wanted, prompts)
        result: dict[LayerId, np.ndarray] = {}
        weights = None
        for layer in wanted:
            hs = states[layer].float()
            if layer == IMAGE_LATENTS:
                pooled = hs.mean(dim=1)
            else:
                if weights is None:
                    weights = self._pool_weights(enc["input_ids"], enc["attention_mask"])
                pooled = (hs * weights.to(hs.device)[..., None]).sum(dim=1)
            result[layer] = pooled.cpu().numpy().astype(np.float32)
        try:
            check_features(result, int(batch.shape[0]))
        except ExtractorError as e:
            hint = (
                " (float16 overflow? use model.dtype=bfloat16)" if self.dtype == "float16" else ""
            )
            raise ExtractorError(f"idefics: {e}{hint}") from None
        return result

    def _pool_weights(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` float32 weights summing to 1 per row for the pooling (see module doc)."""
        import torch

        bsz, t = ids.shape
        pos = torch.arange(t, device=ids.device).expand(bsz, t)
        attended = mask.bool()
        if self.pooling == "last":
            last = (t - 1) - torch.argmax(attended.flip(dims=[1]).long(), dim=1)
            return (pos == last[:, None]).float()
        image_id = self.processor().tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        img_pos = torch.where(ids == image_id, pos, torch.full_like(pos, -1)).max(dim=1).values
        after = (pos > (img_pos + 1)[:, None]) & attended  # past the closing fake token
        n = after.sum(dim=1, keepdim=True)
        if torch.any(n == 0):
            raise ExtractorError(
                "idefics: pooling=mean_after_image needs text after {image} in the prompt"
            )
        return after.float() / n.float()

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the loaded model (DataLoader workers only need the processor)."""
        state = self.__dict__.copy()
        state["_model"] = None
        state["_depth"] = None
        return state

    def __repr__(self) -> str:
        return (
            f"IdeficsExtractor(hf_id={self.hf_id!r}, dtype={self.dtype!r}, "
            f"quantization={self.quantization!r}, pooling={self.pooling!r}, "
            f"truncate={self.truncate!r}, device_map={self._device_map()!r})"
        )


def from_config(cfg: Any, prompt: str = "") -> IdeficsExtractor:
    """Build an :class:`IdeficsExtractor` from a model config node (no weights loaded).

    Args:
        cfg: object with ``hf_id`` and optionally ``revision``, ``dtype``, ``pooling``
            (``"default"`` = ``"last"``), ``quantization``, ``device_map``, ``max_memory``,
            ``device``, ``truncate`` (medprobe.config.ModelConfig).
        prompt: the prompt template (``cfg.prompt.text``), with one ``{image}``.

    Raises:
        ExtractorError: missing ``hf_id``; an empty prompt (``prompt=none``; the message names
            the prompt presets); a malformed template; a local directory that does not exist;
            unknown dtype / pooling / quantisation.
    """
    hf_id = getattr(cfg, "hf_id", None)
    if not hf_id or not isinstance(hf_id, (str, Path)):
        raise ExtractorError(
            f"idefics: model.hf_id must be a hub id or a local directory, got {hf_id!r}"
        )
    max_memory = getattr(cfg, "max_memory", None)
    if max_memory is not None and hasattr(max_memory, "items"):
        max_memory = {k: v for k, v in max_memory.items()}
    device_map = getattr(cfg, "device_map", None)
    if device_map is not None and hasattr(device_map, "items"):
        device_map = {str(k): v for k, v in device_map.items()}
    ext = IdeficsExtractor(
        hf_id=str(hf_id),
        prompt=str(prompt or ""),
        revision=getattr(cfg, "revision", None),
        dtype=getattr(cfg, "dtype", None) or "bfloat16",
        pooling=getattr(cfg, "pooling", None) or "last",
        quantization=getattr(cfg, "quantization", None) or "none",
        device_map=device_map,
        max_memory=max_memory,
        device=getattr(cfg, "device", None) or "auto",
        truncate=bool(getattr(cfg, "truncate", True)),
    )
    ext._local_dir()  # a missing local directory fails here, with its path
    return ext


def _ranges(xs: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"``; ``[]`` -> ``"-"``."""
    runs: list[list[int]] = []
    for x in sorted(xs):
        if runs and x == runs[-1][1] + 1:
            runs[-1][1] = x
        else:
            runs.append([x, x])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs) or "-"


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
    """:func:`device_plan`'s result as the text ``python -m medprobe.extractors.idefics plan``
    prints (GB = 1e9 bytes)."""

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
                _ranges(r["decoder_blocks"]),
                _ranges(r["cross_attn_blocks"]),
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
                    f"decoder blocks {_ranges(r['decoder_blocks'])}" if r["decoder_blocks"] else "",
                    f"cross-attn blocks {_ranges(r['cross_attn_blocks'])}"
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


def _memory_table(model: str, layer: Any) -> str:
    name, _ = _plan_config(model)
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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line (no usage block), exit status 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m medprobe.extractors.idefics {plan,memory} ...``: the placement plan
    (:func:`device_plan`, :func:`format_plan`) or the weight-memory table (:func:`memory_plan`)
    of a published IDEFICS checkpoint, without weights or GPUs.

    Exit status: 0; 1 with ``plan --strict`` when the plan does not fit (spills, exceeds
    ``max_memory`` or would be refused); 2 for bad input (one line on stderr).
    """
    ap = _Parser(
        prog="python -m medprobe.extractors.idefics",
        description="IDEFICS memory and placement plans, computed without weights or GPUs.",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="where each module goes for a max_memory (device_map)")
    m = sub.add_parser("memory", help="weight memory, full vs truncated, per quantisation")
    for q in (p, m):
        q.add_argument("--model", default="idefics80b",
                       help="idefics80b, idefics9b, a published hub id or a local directory")  # fmt: skip
        q.add_argument("--layer", default=None,
                       help="cached layer(s): 32, 8,16,32, all, final_norm (default: the "
                       "model's: 32 for 80B, 13 for 9B)")  # fmt: skip
    p.add_argument("--dtype", default="bfloat16", choices=DTYPES)
    p.add_argument("--quantization", default="none", choices=QUANTIZATIONS)
    p.add_argument("--max-memory", default=None,
                   help="per-device limits, e.g. 0=48GiB,1=48GiB,cpu=200GiB (GiB = 2**30 bytes)")  # fmt: skip
    p.add_argument("--device-map", default="auto", choices=PLACEMENT_STRATEGIES)
    p.add_argument("--no-truncate", action="store_true", help="load all decoder blocks")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--strict", action="store_true", help="exit 1 when the plan does not fit")
    args = ap.parse_args(argv)
    layer = args.layer
    if layer is None:
        layer = 13 if MODEL_ALIASES.get(args.model, args.model).endswith("9b-instruct") else 32
    try:
        if args.command == "memory":
            print(_memory_table(args.model, layer))
            return 0
        plan = device_plan(
            args.model,
            layer,
            dtype=args.dtype,
            quantization=args.quantization,
            max_memory=args.max_memory,
            truncate=not args.no_truncate,
            device_map=args.device_map,
        )
    except (ExtractorError, KeyError) as exc:
        msg = exc.args[0] if exc.args else str(exc)
        print(f"{ap.prog} {args.command}: error: {msg}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(jsonable(plan), indent=1))
    else:
        print(format_plan(plan))
    return 1 if args.strict and not plan["fits"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
