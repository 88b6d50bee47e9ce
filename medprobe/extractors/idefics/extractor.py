"""IDEFICS-9B / 80B (open Flamingo reproduction) hidden states, ``IdeficsForVisionText2Text``.

Models: ``HuggingFaceM4/idefics-80b-instruct`` and ``HuggingFaceM4/idefics-9b-instruct`` (the
paper's models, Han et al., "Multimodal Large Language Models are Generalist Medical Image
Interpreters", medRxiv 2023); the base checkpoints ``HuggingFaceM4/idefics-{9b,80b}`` by
``model.hf_id=...``; any local directory written by ``save_pretrained`` (tests use tiny random
ones). Full documentation with the memory plan: ``docs/idefics.md``. Loading, revision,
fingerprint of the checkpoint, quantisation and placement come from
:class:`~medprobe.extractors.hf.HFExtractor`.

Prompt (:mod:`medprobe.extractors.idefics.prompt`). ``cfg.prompt.text`` is a template with one
``{image}`` placeholder or a bare question wrapped in the instruct chat format; it is rendered
with ``IdeficsProcessor``'s own rules. The rendered string is what the model reads; it is part
of :meth:`IdeficsExtractor.fingerprint` (hence of the cache key) and of ``results.json``.

Layers (checked on transformers 5.24; :mod:`medprobe.extractors.idefics.architecture`):

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

Placement (model parallel inside a node): ``device_map`` (default ``auto``) and ``max_memory``
go to ``from_pretrained``; :func:`~medprobe.extractors.idefics.placement.device_plan` computes
the same placement without weights or GPUs. Command line: ``python -m
medprobe.extractors.idefics plan --model idefics80b --layer 32 --max-memory
0=48GiB,1=48GiB,2=48GiB,3=48GiB`` (:mod:`medprobe.extractors.idefics.plan`).

Batching: the runner's prompt is the same for every image, so its token ids are built once and
repeated; batches then need no padding. Different prompts per sample
(:meth:`IdeficsExtractor.extract` with ``prompts=``) are left-padded; a sample's features are
the same alone or padded in a batch (tested).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medprobe.errors import ExtractorError, NonFiniteFeaturesError
from medprobe.extractors.base import LayerId, check_features, resolve_layers
from medprobe.extractors.hf import HFExtractor, jsonable
from medprobe.extractors.idefics.architecture import (
    FINAL_NORM,
    IMAGE_LATENTS,
    is_80b_sized,
    kept_depth,
    truncated_config,
)
from medprobe.extractors.idefics.memory import count_parameters
from medprobe.extractors.idefics.placement import block_ranges, placement
from medprobe.extractors.idefics.prompt import IMAGE_TOKEN, render_prompt, split_template

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

#: Bumped whenever a change in this file changes the features (part of the fingerprint).
CODE_VERSION = "idefics-1"

POOLINGS = ("last", "mean_after_image", "image_latents")

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


class IdeficsExtractor(HFExtractor):
    """Hidden states of IDEFICS at any decoder layers, pooled (see the module docstring).

    Construction is cheap: the config, tokenizer and image processor are read on first use,
    the weights on the first :meth:`extract` (only as deep as the requested layers need).

    Args:
        hf_id: hub id or local directory (``save_pretrained`` output with tokenizer and
            image processor).
        prompt: a question, or a template with one ``{image}`` placeholder
            (:func:`~medprobe.extractors.idefics.prompt.split_template`).
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
        prompt_format: how a bare question is wrapped: ``"chat"`` (default, the instruct
            chat turn) or ``"plain"`` (``<s>`` + image + question, the authors' code;
            :func:`~medprobe.extractors.idefics.prompt.plain_template`). In the fingerprint
            only when ``"plain"``, so ``"chat"`` keeps the cache keys it always had.

    Raises:
        ExtractorError: empty ``hf_id`` or prompt, a malformed template, unknown dtype,
            pooling or quantisation.
    """

    name = "idefics"
    label = "IDEFICS"
    code_version = CODE_VERSION
    poolings = POOLINGS
    model_types = ("idefics",)
    supports_quantization = True
    uses_device_map = True
    # a local directory: weights, configs, tokenizer and image-processor files, each
    # "sha256:<hex>" (files above 1 GiB by size + head and tail: medprobe.hashing)
    fingerprint_globs = (
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
    fingerprint_files_key = "files"
    transient = ("_model", "_depth")

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
        prompt_format: str = "chat",
    ) -> None:
        if not isinstance(hf_id, str) or not hf_id.strip():
            raise ExtractorError(
                f"idefics: model.hf_id must be a hub id or a local directory, got {hf_id!r}"
            )
        split_template(prompt, str(prompt_format))
        super().__init__(
            hf_id,
            revision=revision,
            dtype=dtype,
            device=device,
            pooling=pooling,
            quantization=quantization,
            device_map=device_map,
            max_memory=max_memory,
        )
        self.prompt = prompt
        self.prompt_format = str(prompt_format)
        self.truncate = bool(truncate)
        self._depth: int | None = None
        self._load_info: dict[str, Any] = {"loaded": False}
        self._prompt_cache: dict[str, Any] | None = None

    # ------------------------------------------------------------------ sources

    def check_config(self, hf_config: Any) -> None:
        """Refuse ``dtype="float16"`` with an unquantised 80B-sized model (hidden size >= 8192 or
        >= 80 blocks); warn for float16 otherwise.

        float16 with ``quantization=8bit`` is allowed: it is what the authors ran
        (``BitsAndBytesConfig(load_in_8bit=True)`` and no dtype, which on transformers 4.x
        makes every non-quantised module and all activations float16; ``fidelity=paper``). A
        non-finite feature still stops the run, naming the layer and the images.

        Raises:
            ExtractorError: float16 with an unquantised (or 4-bit) 80B-sized model.
        """
        if self.dtype == "float16" and is_80b_sized(hf_config) and str(self.quantization) != "8bit":
            raise ExtractorError(
                "idefics: dtype=float16 is refused for IDEFICS-80B: it is reported to overflow "
                "(NaN / <unk> outputs); use model.dtype=bfloat16, or float16 with "
                "model.quantization=8bit as the paper ran it (fidelity=paper)"
            )
        if self.dtype == "float16":
            log.warning("idefics: float16 may overflow; bfloat16 is the safe choice")

    def build_processor(self) -> Any:
        """The checkpoint's ``IdeficsProcessor`` (tokenizer padding on the left), its image
        processor pinned to the PIL backend (``IdeficsImageProcessorPil``: transformers 5.x
        picks the torchvision one whenever torchvision is importable, and the two do not
        resize bit-identically).

        Raises:
            ExtractorError: missing directory or processor / tokenizer files.
        """
        from transformers import IdeficsProcessor
        from transformers.models.idefics.image_processing_pil_idefics import (
            IdeficsImageProcessorPil,
        )

        errors = (OSError, ValueError, KeyError, TypeError, AttributeError)
        proc = self.pretrained(IdeficsProcessor, "the IDEFICS processor", errors=errors, quiet=True)
        if type(proc.image_processor) is not IdeficsImageProcessorPil:
            proc.image_processor = self.pretrained(
                IdeficsImageProcessorPil, "the IDEFICS image processor", errors=errors, quiet=True
            )
        proc.tokenizer.padding_side = "left"
        return proc

    def offload_refused_hint(self) -> str:
        return "; see medprobe plan --help (docs/idefics.md)"

    # ------------------------------------------------------------------ prompts

    def rendered_prompt(self, template: str | None = None) -> str:
        """The exact text the model reads (see :func:`render_prompt`)."""
        bos = self.processor().tokenizer.bos_token or "<s>"
        return render_prompt(self.prompt if template is None else template, bos, self.prompt_format)

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
        n_emb = int(cfg.vocab_size) + int(cfg.additional_vocab_size)
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
        return self.processor_settings(self.processor().image_processor, _PREPROCESS_KEYS)

    def feature_settings(self) -> dict[str, Any]:
        """``dtype``, ``quantization`` (:meth:`quantization_settings`), ``pooling``,
        ``rendered_prompt``, ``preprocessing``; ``prompt_format`` only when ``"plain"`` (so the
        default ``"chat"`` keeps every existing cache key byte-identical)."""
        settings = {
            "dtype": self.dtype,
            "quantization": self.quantization_settings(),
            "pooling": self.pooling,
            "rendered_prompt": self.rendered_prompt(),
            "preprocessing": self.preprocessing(),
        }
        if self.prompt_format != "chat":
            settings["prompt_format"] = self.prompt_format
        return settings

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
            ExtractorError: missing directory, no weight files, unreadable config/processor;
                float16 with an 80B-sized model (the config is read first).
        """
        self.config()
        return super().fingerprint()

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
        model, info = self.load_pretrained(
            IdeficsForVisionText2Text,
            "the IDEFICS weights",
            quiet=True,
            config=truncated_config(cfg, depth),  # the rule device_plan() uses too
        )
        unused = self._check_loading_info(info, depth, max(1, int(cfg.cross_layer_interval)))
        self._model = self.place(model)
        self._depth = depth
        self._load_info = self._describe(model, cfg, depth)
        attn = getattr(model.config, "_attn_implementation", None)
        self._load_info["attn_implementation"] = None if attn is None else str(attn)
        self._load_info["device_type"] = model.model.embed_tokens.weight.device.type
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
            str(dev): {"decoder_blocks": block_ranges(row["decoder_blocks"]),
                       "cross_attn_blocks": block_ranges(row["cross_attn_blocks"])}
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
        for another reason than truncation, e.g. old persisted rotary buffers),
        ``attn_implementation`` (transformers' ``config._attn_implementation``) and
        ``device_type`` (of the embeddings), plus ``dtype``, ``quantization``, ``device_map``.
        """
        return {
            **self._load_info,
            "dtype": self.dtype,
            "quantization": self.quantization,
            "device_map": jsonable(self.effective_device_map()),
        }

    def release(self) -> None:
        """Drop the loaded model (frees its memory once nothing else holds it)."""
        super().release()
        self._depth = None
        self._load_info = {"loaded": False}

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
        except NonFiniteFeaturesError as e:
            hint = (
                " (float16 overflow? use model.dtype=bfloat16)" if self.dtype == "float16" else ""
            )
            raise NonFiniteFeaturesError(f"idefics: {e}{hint}", e.layer, e.rows) from None
        except ExtractorError as e:
            raise ExtractorError(f"idefics: {e}") from None
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

    def __repr__(self) -> str:
        return (
            f"IdeficsExtractor(hf_id={self.hf_id!r}, dtype={self.dtype!r}, "
            f"quantization={self.quantization!r}, pooling={self.pooling!r}, "
            f"truncate={self.truncate!r}, device_map={self.effective_device_map()!r})"
        )


def from_config(cfg: Any, prompt: str = "") -> IdeficsExtractor:
    """Build an :class:`IdeficsExtractor` from a model config node (no weights loaded).

    Args:
        cfg: the model config (``medprobe.config.ModelConfig``; attribute access only):
            ``hf_id``, ``revision``, ``dtype``, ``pooling`` (``"default"`` = ``"last"``),
            ``quantization``, ``device_map``, ``max_memory``, ``device``, ``truncate``,
            ``prompt_format``.
            Serves ``model=idefics9b`` and ``model=idefics80b`` (``cfg.kind == "idefics"``).
        prompt: the prompt template (``cfg.prompt.text``), with one ``{image}``.

    Raises:
        ExtractorError: missing ``hf_id``; an empty prompt (``prompt=none``; the message names
            the prompt presets); a malformed template; a local directory that does not exist;
            unknown dtype / pooling / quantisation.
    """
    return IdeficsExtractor.from_model_config(
        cfg,
        prompt=str(prompt or ""),
        truncate=bool(cfg.truncate),
        prompt_format=str(cfg.prompt_format),
    )
