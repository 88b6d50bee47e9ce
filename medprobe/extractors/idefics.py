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

Batching: the runner's prompt is the same for every image, so its token ids are built once and
repeated; batches then need no padding. Different prompts per sample
(:meth:`IdeficsExtractor.extract` with ``prompts=``) are left-padded; a sample's features are
the same alone or padded in a batch (tested).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
        self.max_memory = dict(max_memory) if max_memory else None
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

    def _max_memory(self) -> dict[Any, str] | None:
        if not self.max_memory:
            return None
        return {
            (int(k) if isinstance(k, str) and k.isdigit() else k): str(v)
            for k, v in self.max_memory.items()
        }

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
        from transformers import BitsAndBytesConfig, IdeficsForVisionText2Text

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
        kcfg = copy.deepcopy(cfg)
        kcfg.num_hidden_layers = depth
        kcfg.tie_last_hidden_states = False  # block k's output is never normed
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
        if self.quantization == "8bit":
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        elif self.quantization == "4bit":
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=False,
                bnb_4bit_compute_dtype=torch_dtype,
            )
        try:
            with _quiet_transformers():
                loaded: Any = IdeficsForVisionText2Text.from_pretrained(self._source(), **kwargs)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, ImportError) as exc:
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
        }

    def load_info(self) -> dict[str, Any]:
        """What was loaded, for ``results.json``.

        ``{"loaded": False}`` before any extraction (e.g. a cache hit); after loading:
        ``kept_depth``, ``num_hidden_layers``, ``cross_layer_interval``, ``truncated``,
        ``params_loaded`` (logical count, also under 4-bit packing), ``params_full`` (the
        untruncated model), ``memory_footprint_bytes`` (transformers' count of parameter and
        buffer bytes), ``devices``, ``unused_checkpoint_entries`` (checkpoint entries skipped
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
