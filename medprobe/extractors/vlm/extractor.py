"""Any chat-template vision-language model of transformers' ``AutoModelForImageTextToText``:
hidden states of its language model at any decoder layer, pooled (``model.kind=vlm``).

Families (:data:`~medprobe.extractors.vlm.families.FAMILIES`, tested on tiny random models):
LLaVA / LLaVA-NeXT / LLaVA-OneVision, Qwen2-VL / Qwen2.5-VL, Idefics3 / SmolVLM, Gemma 3
(MedGemma), PaliGemma, Mllama (Llama 3.2 Vision), InternVL. Documentation: ``docs/models.md``.
Loading, revision, checkpoint fingerprint, quantisation and placement come from
:class:`~medprobe.extractors.hf.HFExtractor`.

Input. ``cfg.prompt.text`` is the user turn's text; the image comes first, or where the prompt
writes ``{image}``. One conversation per image, ``[{"role": "user", "content": [image,
text]}]`` (a ``model.system_prompt`` adds a system turn; without one the chat template's own
default applies, e.g. Qwen2-VL's "You are a helpful assistant."), goes through
``processor.apply_chat_template(..., add_generation_prompt=True, tokenize=True,
return_dict=True)`` per batch in :meth:`VLMExtractor.collate` (DataLoader workers), left
padded: the number of image tokens depends on the image (Idefics3 splitting, Qwen dynamic
resolution), so nothing is tokenised once and repeated. A processor without a chat template
(PaliGemma) gets the prompt text and inserts the image tokens itself.

Layers (transformers 5.24):

* ``0``: the input of decoder layer 1 (token embeddings with the image features in place);
* ``k`` (1..N): the output of decoder layer ``k``, never normed (the config is loaded with
  ``text_config.tie_last_hidden_states=False``, else transformers norms ``hidden_states[N]``);
  N = ``text_config.num_hidden_layers``, which for Mllama counts its cross-attention layers;
* ``"final_norm"``: the final norm of layer N's output (what ``lm_head`` reads; full depth);
* ``"vision"``: the image features the language model reads (vision tower + projector), mean
  over all of them: the "what does the language model add" control. Independent of the pooling.

Pooling of the numbered layers and ``"final_norm"``: ``"last"`` (default): the rightmost
attended position, i.e. the last token of the generation prompt; ``"mean_image"``: the mean
over the image tokens (in-stream families only); ``"mean_after_image"``: the mean over the
attended tokens after the image (after its closing marker tokens).

Truncated loading (``truncate=True``): only ``text_config.num_hidden_layers = k`` decoder layers
are built and read (k = the deepest requested layer); truncated states equal the full model's.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medprobe.errors import ExtractorError, NonFiniteFeaturesError
from medprobe.extractors.base import LayerId, check_features, resolve_layers
from medprobe.extractors.hf import HFExtractor, jsonable
from medprobe.extractors.vlm.families import (
    FAMILIES,
    FINAL_NORM,
    VISION,
    Family,
    image_token_id,
    kept_depth,
    num_layers,
    truncated_config,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

#: Bumped whenever a change in this file changes the features (part of the fingerprint).
CODE_VERSION = "vlm-1"
POOLINGS = ("last", "mean_image", "mean_after_image")
IMAGE_SLOT = "{image}"
#: A stand-in image used only to render the prompt for the fingerprint (never a feature).
_PLACEHOLDER = "<image>"


def text_digest(text: str | None) -> str | None:
    """``sha256:<hex>`` of a text (a chat template), ``None`` for none."""
    if text is None:
        return None
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


class VLMExtractor(HFExtractor):
    """Hidden states of a chat-template VLM's language model (see the module docstring).

    Construction is cheap; the config and processor are read on first use, the weights on the
    first :meth:`extract` (only as deep as the requested layers need).

    Args:
        hf_id: hub id or local ``save_pretrained`` directory (with its processor).
        prompt: the user turn's text; ``{image}`` marks where the image goes (default: first).
        revision, dtype, device, pooling, quantization, device_map, max_memory: as
            :class:`~medprobe.extractors.hf.HFExtractor` (pooling ``"default"`` = ``"last"``).
        truncate: load only the decoder layers the requested layers need.
        system_prompt: a system turn; ``None`` keeps the chat template's default.
        processor_kwargs: options for ``AutoProcessor.from_pretrained`` (e.g. Qwen's
            ``max_pixels``, Idefics3's ``do_image_splitting``); part of the fingerprint.

    Raises:
        ExtractorError: several ``{image}`` in the prompt; what the base refuses.
    """

    name = "vlm"
    label = "VLM"
    code_version = CODE_VERSION
    poolings = POOLINGS
    model_types = tuple(FAMILIES)
    supports_quantization = True
    uses_device_map = True
    fingerprint_globs = (
        *HFExtractor.fingerprint_globs,
        "chat_template.json",
        "chat_template.jinja",
        "video_preprocessor_config.json",
    )
    transient = ("_model", "_depth")

    def __init__(
        self,
        hf_id: str,
        prompt: str = "",
        *,
        revision: str | None = None,
        dtype: Any = "bfloat16",
        device: str | None = "auto",
        pooling: Any = "last",
        quantization: Any = "none",
        device_map: str | Mapping[str, Any] | None = None,
        max_memory: Any = None,
        truncate: bool = True,
        system_prompt: str | None = None,
        processor_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
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
        prompt = str(prompt or "")
        if prompt.count(IMAGE_SLOT) > 1:
            raise ExtractorError(
                f"vlm: the prompt has {prompt.count(IMAGE_SLOT)} {IMAGE_SLOT}; one image per prompt"
            )
        self.prompt = prompt
        self.truncate = bool(truncate)
        self.system_prompt = None if system_prompt is None else str(system_prompt)
        self.processor_kwargs = {str(k): v for k, v in dict(processor_kwargs or {}).items()}
        self._depth: int | None = None
        self._load_info: dict[str, Any] = {"loaded": False}

    # ------------------------------------------------------------------ sources

    def family(self) -> Family:
        """The model's :class:`~medprobe.extractors.vlm.families.Family` (reads the config)."""
        return FAMILIES[str(self.config().model_type)]

    def check_config(self, hf_config: Any) -> None:
        """Refuse ``pooling=mean_image`` for a family without image tokens in the text stream
        (Mllama cross-attends to the image)."""
        fam = FAMILIES[str(hf_config.model_type)]
        if self.pooling == "mean_image" and not fam.in_stream:
            raise ExtractorError(
                f"vlm: pooling=mean_image needs image tokens in the text stream; {fam.label} "
                "reads the image through cross-attention (use last or mean_after_image)"
            )

    def build_processor(self) -> Any:
        """``AutoProcessor`` of the checkpoint with its image processor's PIL backend (the
        torchvision one does not resize bit-identically) and ``processor_kwargs``; the
        tokenizer pads on the left.

        Raises:
            ExtractorError: missing or unreadable processor files.
        """
        from transformers import AutoImageProcessor, AutoProcessor

        errors = (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError)
        kwargs = self.processor_kwargs
        proc = self.pretrained(
            AutoProcessor, "the VLM processor", errors=errors, quiet=True, **kwargs
        )
        tok = getattr(proc, "tokenizer", None)
        if tok is None or getattr(proc, "image_processor", None) is None:
            raise ExtractorError(f"vlm: {self.hf_id!r} has no image processor and tokenizer")
        if not type(proc.image_processor).__name__.endswith("Pil"):
            proc.image_processor = self.pretrained(
                AutoImageProcessor, "the VLM image processor", errors=errors, quiet=True,
                backend="pil", **kwargs,
            )  # fmt: skip
        tok.padding_side = "left"
        return proc

    # ------------------------------------------------------------------ prompt

    def chat_template(self) -> str | None:
        """The processor's chat template (``None``: the processor builds the prompt itself)."""
        template = getattr(self.processor(), "chat_template", None)
        if isinstance(template, dict):  # several named templates: the default one
            template = template.get("default")
        return template if isinstance(template, str) else None

    def conversation(self, image: Any) -> list[dict[str, Any]]:
        """The one-turn conversation of ``image`` (a ``PIL.Image``, or a placeholder string
        when only rendering): system turn if set, then the user turn with the image where the
        prompt writes ``{image}`` (default: first)."""
        before, sep, after = self.prompt.partition(IMAGE_SLOT)
        if not sep:
            before, after = "", self.prompt
        item: dict[str, Any] = {"type": "image"}
        if not isinstance(image, str):
            item["image"] = image
        content = [
            *([{"type": "text", "text": before}] if before else []),
            item,
            *([{"type": "text", "text": after}] if after else []),
        ]
        msgs: list[dict[str, Any]] = []
        if self.system_prompt is not None:
            msgs.append(
                {"role": "system", "content": [{"type": "text", "text": self.system_prompt}]}
            )
        msgs.append({"role": "user", "content": content})
        return msgs

    def rendered_prompt(self) -> str:
        """The text the chat template renders (image placeholders not yet expanded); without a
        chat template, the prompt text given to the processor (``{image}`` removed).

        Raises:
            ExtractorError: the processor cannot be read or the template fails.
        """
        if self.chat_template() is None:
            return self.plain_prompt()
        try:
            return str(
                self.processor().apply_chat_template(
                    self.conversation(_PLACEHOLDER), add_generation_prompt=True, tokenize=False
                )
            )
        except Exception as exc:  # noqa: BLE001 - a Jinja error of the checkpoint's template
            raise ExtractorError(f"vlm: the chat template of {self.hf_id!r} fails: {exc}") from None

    def plain_prompt(self) -> str:
        """The prompt of a processor without a chat template: the processor's image token
        where ``{image}`` is (default: first), then the text (PaliGemma's processor expands
        the image token and adds ``<bos>`` and the closing newline itself)."""
        token = str(getattr(self.processor(), "image_token", _PLACEHOLDER))
        if IMAGE_SLOT in self.prompt:
            return self.prompt.replace(IMAGE_SLOT, token)
        return token + self.prompt

    def processor_call_kwargs(self) -> dict[str, Any]:
        """What every processor call gets: left padding, tensors, the family's extras."""
        return {"padding": True, "return_tensors": "pt", **dict(self.family().processor_call)}

    def collate(self, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        """A batch of RGB images -> the processor's tensors (``input_ids``, ``attention_mask``
        ``(B, T)`` left padded, ``pixel_values`` and the family's extras), one conversation per
        image. Runs in DataLoader workers.

        Raises:
            ExtractorError: the processor refuses the batch.
        """
        proc = self.processor()
        try:
            if self.chat_template() is None:
                text = [self.plain_prompt()] * len(images)
                enc = proc(
                    text=text, images=[[im] for im in images], **self.processor_call_kwargs()
                )
            else:
                enc = proc.apply_chat_template(
                    [self.conversation(im) for im in images],
                    add_generation_prompt=True,
                    tokenize=True,
                    return_dict=True,
                    processor_kwargs=self.processor_call_kwargs(),
                )
        except (ValueError, TypeError, KeyError) as exc:
            raise ExtractorError(
                f"vlm: the processor of {self.hf_id!r} refused a batch: {exc}"
            ) from None
        return {k: v for k, v in dict(enc).items() if k != "labels"}

    # ------------------------------------------------------------------ protocol

    def layers(self) -> list[LayerId]:
        """``[0, 1, ..., N, "final_norm", "vision"]``, ``N = text_config.num_hidden_layers``
        (Mllama: cross-attention layers included). Reads only the config."""
        return [*range(num_layers(self.config()) + 1), FINAL_NORM, VISION]

    def processor_settings_all(self) -> dict[str, Any]:
        """Every processor setting (processor + image processor, JSON types; the chat
        template is recorded separately) and the ``processor_kwargs`` given."""
        settings = jsonable(self.processor().to_dict())
        settings.pop("chat_template", None)
        return {"settings": settings, "processor_kwargs": jsonable(self.processor_kwargs)}

    def feature_settings(self) -> dict[str, Any]:
        """``dtype``, ``quantization``, ``pooling``, ``prompt``, ``system_prompt``,
        ``chat_template`` (its sha256), ``rendered_prompt``, ``processor``
        (:meth:`processor_settings_all`)."""
        return {
            "dtype": self.dtype,
            "quantization": self.quantization_settings(),
            "pooling": self.pooling,
            "prompt": self.prompt,
            "system_prompt": self.system_prompt,
            "chat_template": text_digest(self.chat_template()),
            "rendered_prompt": self.rendered_prompt(),
            "processor": self.processor_settings_all(),
        }

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes the features (JSON types); never loads weights.

        Keys: the checkpoint (``extractor``, ``code_version``, ``transformers``, ``hf_id``,
        ``revision``, ``source``, ``files`` or ``resolved_revision``) and
        :meth:`feature_settings`. Truncation and placement are not in it (a kept layer's
        features do not depend on them, tested).

        Raises:
            ExtractorError: missing directory, unreadable config / processor, a model type
                that is not a supported family.
        """
        self.config()
        return super().fingerprint()

    def preprocess(self, image: Image.Image) -> Image.Image:
        """One image -> the RGB ``PIL.Image`` (the processor runs per batch in :meth:`collate`)."""
        return image if image.mode == "RGB" else image.convert("RGB")

    # ------------------------------------------------------------------ loading

    def load(self, layers: Sequence[LayerId] | LayerId | str | None = None) -> Any:
        """Load the model deep enough for ``layers`` (``None``: all, or what is loaded).

        Raises:
            ExtractorError: unknown layer, unreadable or missing weights.
        """
        from transformers import AutoModelForImageTextToText

        if layers is None:
            if self._model is not None:
                return self._model
            layers = "all"
        wanted = resolve_layers(layers, self.layers())
        cfg = self.config()
        n = num_layers(cfg)
        depth = kept_depth(wanted, n) if self.truncate else n
        if self._model is not None and self._depth is not None and depth <= self._depth:
            return self._model
        if self._model is not None:
            self.release()
        model, info = self.load_pretrained(
            AutoModelForImageTextToText,
            "the VLM weights",
            quiet=True,
            config=truncated_config(cfg, depth),
        )
        missing = [k for k in info.get("missing_keys") or [] if not k.startswith("lm_head")]
        if missing:
            raise ExtractorError(
                f"vlm: {len(missing)} weights missing from the checkpoint (they would be random), "
                f"e.g. {sorted(missing)[0]}"
            )
        self._model = self.place(model)
        self._depth = depth
        params = sum(p.numel() for p in model.parameters())
        self._load_info = {
            "loaded": True,
            "model_type": str(cfg.model_type),
            "kept_depth": depth,
            "num_hidden_layers": n,
            "truncated": depth < n,
            "params_loaded": int(params),
            "memory_footprint_bytes": int(model.get_memory_footprint()),
        }
        log.info("vlm: loaded %s: %d of %d decoder layers (%s)", self.hf_id, depth, n, self.dtype)
        return self._model

    def load_info(self) -> dict[str, Any]:
        """What was loaded, for ``results.json``: ``{"loaded": False}`` before loading; then
        ``model_type``, ``kept_depth``, ``num_hidden_layers``, ``truncated``,
        ``params_loaded``, ``memory_footprint_bytes``, :meth:`runtime_info`, ``dtype``,
        ``quantization``, ``device_map``."""
        return {
            **self._load_info,
            **self.runtime_info(),
            "dtype": self.dtype,
            "quantization": self.quantization,
            "device_map": jsonable(self.effective_device_map()),
        }

    def release(self) -> None:
        super().release()
        self._depth = None
        self._load_info = {"loaded": False}

    # ------------------------------------------------------------------ extraction

    def hidden_states(
        self, batch: Mapping[str, Any], layers: Sequence[LayerId] | LayerId | str
    ) -> tuple[dict[LayerId, torch.Tensor], Mapping[str, Any]]:
        """Un-pooled states of one forward pass, for inspection and tests.

        Returns:
            ``({layer: tensor}, inputs)``: ``(B, T, D)`` states for numbered layers and
            ``"final_norm"``; for ``"vision"`` the ``(B, T, D)`` layer-0 states (in-stream
            families: pooled over the image positions by :meth:`extract`) or Mllama's
            ``(B, images x tiles x patches, D)`` projected image features; ``inputs`` = the
            batch on the model's device (``T`` positions, left padded).

        Raises:
            ExtractorError: as :meth:`extract`.
        """
        import torch

        wanted = resolve_layers(layers, self.layers())
        if not isinstance(batch, Mapping) or "input_ids" not in batch:
            raise ExtractorError(
                f"vlm: expected the processor's tensors (VLMExtractor.collate), got {type(batch).__name__}"
            )
        model = self.load(wanted)
        base = model.model
        dev = base.get_input_embeddings().weight.device
        if dev.type == "meta":  # offloaded embedding: accelerate's hooks place the inputs
            dev = torch.device("cpu")
        dtype = self.torch_dtype()
        inputs = {
            k: (v.to(dev, dtype) if v.is_floating_point() else v.to(dev))
            if isinstance(v, torch.Tensor)
            else v
            for k, v in batch.items()
        }
        captured: list[torch.Tensor] = []
        hook = None
        if VISION in wanted and not self.family().in_stream:  # Mllama: the projected image
            hook = base.multi_modal_projector.register_forward_hook(
                lambda _m, _a, out: captured.append(out)
            )
        try:
            with torch.inference_mode():
                # every hidden state (a selection [k] leaks into LLaVA's vision tower)
                out = base(**inputs, output_hidden_states=True, use_cache=False)
        finally:
            if hook is not None:
                hook.remove()
        states: dict[LayerId, torch.Tensor] = {}
        for layer in wanted:
            if isinstance(layer, int):
                states[layer] = out.hidden_states[layer]
            elif layer == FINAL_NORM:
                states[layer] = out.last_hidden_state
            elif layer == VISION and self.family().in_stream:
                states[layer] = out.hidden_states[0]
            elif layer == VISION:
                feats = captured[-1]
                states[layer] = feats.reshape(
                    int(inputs["input_ids"].shape[0]), -1, feats.shape[-1]
                )
        return states, inputs

    def extract(
        self, batch: Mapping[str, Any], layers: Sequence[LayerId] | LayerId | str
    ) -> dict[LayerId, np.ndarray]:
        """The processor's tensors (:meth:`collate`) -> ``{layer: (B, D) float32}``.

        One forward pass returns every requested layer, pooled (module docstring). ``D`` is
        ``text_config.hidden_size`` for every layer (``"vision"`` included: projected).

        Raises:
            ExtractorError: unknown layer, a malformed batch, weights that cannot be loaded, a
                pooling the prompt cannot give (no text after the image), non-finite or
                all-zero features.
        """
        wanted = resolve_layers(layers, self.layers())
        states, inputs = self.hidden_states(batch, wanted)
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        bsz = int(ids.shape[0])
        result: dict[LayerId, np.ndarray] = {}
        weights = None
        for layer in wanted:
            hs = states[layer].float()
            if layer == VISION:
                if self.family().in_stream:
                    w = self._image_mask(ids, mask).float()
                    w = w / w.sum(dim=1, keepdim=True)
                    pooled = (hs * w.to(hs.device)[..., None]).sum(dim=1)
                else:
                    pooled = self._mean_valid_tiles(hs, inputs)
            else:
                if weights is None:
                    weights = self.pool_weights(ids, mask)
                pooled = (hs * weights.to(hs.device)[..., None]).sum(dim=1)
            result[layer] = pooled.cpu().numpy().astype(np.float32)
        try:
            check_features(result, bsz)
        except NonFiniteFeaturesError as e:
            raise NonFiniteFeaturesError(f"vlm: {e}", e.layer, e.rows) from None
        except ExtractorError as e:
            raise ExtractorError(f"vlm: {e}") from None
        return result

    def _image_mask(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` bool: the image-token positions (every row must have some)."""
        import torch

        tid = image_token_id(self.config())
        img = (
            (ids == tid) & mask.bool()
            if tid is not None
            else torch.zeros_like(mask, dtype=torch.bool)
        )
        if not torch.all(img.any(dim=1)):
            raise ExtractorError(
                f"vlm: no image token (id {tid}) in a prompt; is the processor the model's?"
            )
        return img

    def _mean_valid_tiles(self, feats: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        """Mllama: ``(B, tiles x patches, D)`` projected image features -> ``(B, D)``, the
        padding tiles (``aspect_ratio_mask == 0``) left out."""
        tiles = inputs.get("aspect_ratio_mask")
        bsz = feats.shape[0]
        if tiles is None:
            return feats.mean(dim=1)
        t = tiles.reshape(bsz, -1).to(feats.device).float()  # (B, images x tiles)
        per_tile = feats.reshape(bsz, t.shape[1], -1, feats.shape[-1]).mean(dim=2)
        return (per_tile * t[..., None]).sum(dim=1) / t.sum(dim=1, keepdim=True)

    def pool_weights(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` float32 weights summing to 1 per row for the pooling (module docstring).

        Raises:
            ExtractorError: no image token in a row (mean_image / mean_after_image), or no
                text after the image (mean_after_image).
        """
        import torch

        bsz, t = ids.shape
        pos = torch.arange(t, device=ids.device).expand(bsz, t)
        attended = mask.bool()
        if self.pooling == "last":
            last = (t - 1) - torch.argmax(attended.flip(dims=[1]).long(), dim=1)
            return (pos == last[:, None]).float()
        img = self._image_mask(ids, mask)
        if self.pooling == "mean_image":
            return img.float() / img.sum(dim=1, keepdim=True).float()
        last_img = torch.where(img, pos, torch.full_like(pos, -1)).max(dim=1).values
        start = last_img + 1
        tok = self.processor().tokenizer
        ends = [int(tok.convert_tokens_to_ids(s)) for s in self.family().image_end]
        for _ in range(4):  # skip the marker tokens that close the image
            at = ids.gather(1, start.clamp(max=t - 1)[:, None])[:, 0]
            is_end = torch.zeros_like(at, dtype=torch.bool)
            for e in ends:
                is_end |= at == e
            start = torch.where(is_end & (start < t), start + 1, start)
        after = (pos >= start[:, None]) & attended
        n = after.sum(dim=1, keepdim=True)
        if torch.any(n == 0):
            raise ExtractorError("vlm: pooling=mean_after_image needs text after the image")
        return after.float() / n.float()

    def __repr__(self) -> str:
        return (
            f"VLMExtractor(hf_id={self.hf_id!r}, dtype={self.dtype!r}, pooling={self.pooling!r}, "
            f"quantization={self.quantization!r}, truncate={self.truncate!r})"
        )


def from_config(cfg: Any, prompt: str = "") -> VLMExtractor:
    """Build a :class:`VLMExtractor` from a model config node (no weights loaded).

    Args:
        cfg: the model config (``medprobe.config.ModelConfig``, attribute access only):
            ``hf_id``, ``revision``, ``dtype``, ``device``, ``pooling`` (``"default"`` =
            ``"last"``), ``quantization``, ``device_map``, ``max_memory``, ``truncate``,
            ``system_prompt``, ``processor_kwargs``.
        prompt: the user turn's text (``cfg.prompt.text``), optionally with ``{image}``.

    Raises:
        ExtractorError: missing ``hf_id``, a local directory that does not exist, unknown
            dtype / pooling / quantisation, several ``{image}``.
    """
    kwargs = cfg.processor_kwargs
    return VLMExtractor.from_model_config(
        cfg,
        prompt=str(prompt or ""),
        truncate=bool(cfg.truncate),
        system_prompt=cfg.system_prompt,
        processor_kwargs=dict(kwargs.items()) if kwargs else None,
    )
