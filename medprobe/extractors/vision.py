"""Vision foundation models through transformers' own classes: DINOv2 / RAD-DINO, DINOv2 with
registers, SigLIP / SigLIP 2 (fixed resolution) vision towers and ViT encoders (Phikon).

Registry kind ``vision`` (``model=dinov2_base``, ``rad_dino``, ``siglip_base``,
``siglip2_base``, ``phikon``; any checkpoint of a family below, from the hub or a local
``save_pretrained`` directory). The family is the checkpoint's ``config.model_type``:

======================= ============================ ============ ==========================
``model_type``          class loaded                 CLS token    tokens of ``hidden_states``
======================= ============================ ============ ==========================
dinov2                  ``Dinov2Model``              yes          CLS, patches
dinov2_with_registers   ``Dinov2WithRegistersModel`` yes          CLS, R registers, patches
vit                     ``ViTModel`` (no pooler)     yes          CLS, patches
siglip                  ``SiglipVisionModel``        no           patches
siglip_vision_model     ``SiglipVisionModel``        no           patches
======================= ============================ ============ ==========================

``siglip`` is a full SigLIP (or fixed-resolution SigLIP 2: ``google/siglip2-*-patch16-224`` are
``model_type`` siglip) checkpoint; only its vision tower is built and loaded (the text tower's
weights are skipped as unused keys). SigLIP 2 NaFlex (``model_type`` siglip2: variable patch
counts with an attention mask) is refused with a message naming the fixed-resolution
checkpoints.

Layers (checked on transformers 5.24; ``tests/extractors/test_vision.py`` pins them):

* ``0``: ``hidden_states[0]``, the embedding output (patch + position embeddings, with the CLS
  and register tokens where the family has them), the input of block 1.
* ``k`` (1..L): ``hidden_states[k]`` = the output of encoder block ``k`` **before** the final
  layer norm (``hidden_states[L]`` is block L's raw output, not ``last_hidden_state``).
* ``"norm"``: ``last_hidden_state`` = the final layer norm (``layernorm``; SigLIP's
  ``post_layernorm``) of block L's output. With ``cls`` pooling this is DINOv2's and RAD-DINO's
  ``pooler_output`` and Phikon's documented feature ``last_hidden_state[:, 0]``.
* ``"pooled"`` (SigLIP with ``vision_use_head``, all published checkpoints): ``pooler_output``,
  the multihead-attention-pooling (MAP) head over the normed tokens: SigLIP's image embedding,
  the one trained against the text. It does not depend on the pooling setting.

Pooling of the numbered layers and ``"norm"`` (:func:`pool_tokens`):

* ``cls``: token 0 (the class token). Refused for SigLIP, which has none.
* ``mean_patch``: the mean of the patch tokens only: the CLS token and DINOv2's register tokens
  (``config.num_register_tokens``) are excluded. For SigLIP every token is a patch.
* ``cls_mean_patch``: ``cls`` and ``mean_patch`` concatenated (width 2 D): DINOv2's linear-eval
  input and Virchow's documented embedding.
* ``default``: ``cls`` where the family has a CLS token, else ``mean_patch`` (SigLIP: the MAP
  head only exists on top of the last block, so a per-layer pooling must be a mean; the head
  output is the named layer ``"pooled"``, which the SigLIP configs probe by default).

Preprocessing is the checkpoint's own image processor, always transformers' PIL backend
(``AutoImageProcessor(..., backend="pil")``; torchvision's resize is not bit-identical), whose
class name and every setting enter the fingerprint.

All requested layers come from one forward pass (``output_hidden_states=True``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medprobe.errors import ExtractorError
from medprobe.extractors.base import LayerId, features_to_numpy, option_value, resolve_layers
from medprobe.extractors.hf import WEIGHT_GLOBS, HFExtractor, jsonable

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

#: Bumped whenever a change in this file changes the features (part of the fingerprint).
CODE_VERSION = "vision-1"

#: Poolings of every vision-model kind (``vision``, ``timm``, ``open_clip``); see
#: :func:`pool_tokens`. ``default`` is resolved per family.
POOLINGS = ("cls", "mean_patch", "cls_mean_patch")

#: Processor keys that never change pixel values (left out of the fingerprint).
_PROCESSOR_BOOKKEEPING = ("processor_class", "image_processor_type", "auto_map")


def pool_tokens(tokens: torch.Tensor, pooling: str, prefix: int, has_cls: bool) -> torch.Tensor:
    """``(B, T, D)`` tokens -> ``(B, D)`` (``(B, 2 D)`` for ``cls_mean_patch``).

    Args:
        tokens: a layer's token states, prefix tokens first (CLS, then registers), then the
            ``T - prefix`` patch tokens.
        pooling: ``cls`` (token 0), ``mean_patch`` (mean of tokens ``prefix..T-1``: CLS and
            register tokens excluded), ``cls_mean_patch`` (both, concatenated).
        prefix: number of non-patch tokens at the start (1 for CLS, 1 + R with R registers,
            0 for SigLIP).
        has_cls: whether token 0 is a class token.

    Raises:
        ExtractorError: ``cls`` pooling on a model without a class token; no patch tokens;
            unknown pooling.
    """
    import torch

    if pooling in ("cls", "cls_mean_patch") and not has_cls:
        raise ExtractorError(f"pooling {pooling!r} needs a class token; this model has none")
    if tokens.ndim != 3 or tokens.shape[1] <= prefix:
        raise ExtractorError(
            f"expected (B, T, D) tokens with more than {prefix} prefix tokens, got "
            f"{tuple(tokens.shape)}"
        )
    if pooling == "cls":
        return tokens[:, 0]
    mean = tokens[:, prefix:].mean(dim=1)
    if pooling == "mean_patch":
        return mean
    if pooling == "cls_mean_patch":
        return torch.cat([tokens[:, 0], mean], dim=-1)
    raise ExtractorError(f"unknown pooling {pooling!r}; valid poolings: {list(POOLINGS)}")


@dataclass(frozen=True)
class Family:
    """What differs between the transformers vision families.

    Attributes:
        model_class: the transformers class loaded (``Dinov2Model``, ...).
        has_cls: token 0 is a class token.
        registers: the config attribute holding the number of register tokens (after CLS),
            or ``None``.
        head: the model has a pooling head whose ``pooler_output`` is the named layer
            ``"pooled"`` when its config's ``vision_use_head`` is true.
        load_kwargs: extra ``from_pretrained`` arguments (ViT: no pooler).
    """

    model_class: str
    has_cls: bool
    registers: str | None = None
    head: bool = False
    load_kwargs: tuple[tuple[str, Any], ...] = ()


FAMILIES: dict[str, Family] = {
    "dinov2": Family("Dinov2Model", has_cls=True),
    "dinov2_with_registers": Family(
        "Dinov2WithRegistersModel", has_cls=True, registers="num_register_tokens"
    ),
    "vit": Family("ViTModel", has_cls=True, load_kwargs=(("add_pooling_layer", False),)),
    "siglip": Family("SiglipVisionModel", has_cls=False, head=True),
    "siglip_vision_model": Family("SiglipVisionModel", has_cls=False, head=True),
}

#: DINOv2 ViT-B/14: facebook/dinov2-base (Oquab et al. 2023) and microsoft/rad-dino
#: (Perez-Garcia et al. 2024, the same architecture trained on chest X-rays)
_DINOV2_B14: tuple[str, dict[str, Any]] = (
    "dinov2",
    dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        mlp_ratio=4,
        image_size=518,
        patch_size=14,
        layerscale_value=1.0,
    ),
)

#: Checkpoints whose configs are written here from their published hyper-parameters, so that
#: layers and parameter counts are known without a download (``param_count_from_config``).
#: Values: (model_type, config keyword arguments).
PUBLISHED_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    # facebook/dinov2-base and microsoft/rad-dino: ViT-B/14 (Oquab et al. 2023; Perez-Garcia
    # et al. 2024), LayerScale 1.0, position embeddings for 518 px (interpolated to the input)
    "facebook/dinov2-base": _DINOV2_B14,
    "microsoft/rad-dino": _DINOV2_B14,
    # SigLIP ViT-B/16 at 224 px (Zhai et al. 2023); SigLIP 2 fixed-resolution B/16 has the same
    # vision tower shape (Tschannen et al. 2025)
    "google/siglip-base-patch16-224": (
        "siglip_vision_model",
        dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=224,
            patch_size=16,
        ),
    ),
    "google/siglip2-base-patch16-224": (
        "siglip_vision_model",
        dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=224,
            patch_size=16,
        ),
    ),
    # Phikon: iBOT ViT-B/16 on 40M TCGA tiles (Filiot et al. 2023)
    "owkin/phikon": (
        "vit",
        dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=224,
            patch_size=16,
            qkv_bias=True,
        ),
    ),
}


def published_config(hf_id: str) -> Any:
    """The transformers config of a checkpoint in :data:`PUBLISHED_CONFIGS` (no download).

    Raises:
        ExtractorError: ``hf_id`` is not listed.
    """
    from transformers import AutoConfig

    if hf_id not in PUBLISHED_CONFIGS:
        raise ExtractorError(
            f"vision: no published config for {hf_id!r}; known: {sorted(PUBLISHED_CONFIGS)}"
        )
    model_type, kwargs = PUBLISHED_CONFIGS[hf_id]
    return AutoConfig.for_model(model_type, **kwargs)


def vision_config(hf_config: Any) -> Any:
    """The vision part of a config (a full SigLIP config -> its ``vision_config``)."""
    if getattr(hf_config, "model_type", None) == "siglip":
        return hf_config.vision_config
    return hf_config


def param_count_from_config(hf_config: Any) -> int:
    """Parameters of the module medprobe loads for ``hf_config`` (a transformers config of a
    family in :data:`FAMILIES`; for SigLIP only the vision tower), counted on the meta device
    (no memory, no weights). Bytes of the weights: x4 float32, x2 bfloat16.

    Raises:
        ExtractorError: a ``model_type`` that is not a family of this module.
    """
    import torch
    import transformers

    model_type = getattr(hf_config, "model_type", None)
    if model_type not in FAMILIES:
        raise ExtractorError(f"vision: model_type {model_type!r} is not one of {list(FAMILIES)}")
    fam = FAMILIES[model_type]
    cls = getattr(transformers, fam.model_class)
    with torch.device("meta"):
        model = cls(vision_config(hf_config), **dict(fam.load_kwargs))
    return int(sum(p.numel() for p in model.parameters()))


def published_param_count(hf_id: str) -> int:
    """Parameters medprobe loads for a published vision checkpoint of any kind (``vision``,
    ``timm``, ``open_clip``), from the hyper-parameters in the modules' ``PUBLISHED_CONFIGS``,
    on the meta device: no download, no memory (for ``medprobe plan``). Weight bytes: x4
    float32, x2 bfloat16 / float16.

    Raises:
        ExtractorError: ``hf_id`` is in no table; timm / open_clip missing for their models.
    """
    from medprobe.extractors import openclip, timm_models

    if hf_id in PUBLISHED_CONFIGS:
        return param_count_from_config(published_config(hf_id))
    if hf_id in timm_models.PUBLISHED_CONFIGS:
        return timm_models.param_count_from_config(*timm_models.PUBLISHED_CONFIGS[hf_id])
    if hf_id in openclip.PUBLISHED_CONFIGS:
        return openclip.param_count_from_config(*openclip.PUBLISHED_CONFIGS[hf_id])
    known = sorted(
        [*PUBLISHED_CONFIGS, *timm_models.PUBLISHED_CONFIGS, *openclip.PUBLISHED_CONFIGS]
    )
    raise ExtractorError(f"vision: no published config for {hf_id!r}; known: {known}")


def refuse_quantization(cfg: Any) -> None:
    """Vision encoders run unquantised (at most 1.1B parameters: 2.3 GB in bfloat16).

    Raises:
        ExtractorError: ``cfg.quantization`` is not ``none`` (it would be silently ignored).
    """
    q = str(option_value(cfg.quantization) or "none")
    if q != "none":
        raise ExtractorError(
            f"{cfg.kind}: model.quantization={q} is not supported for vision encoders (they "
            "fit any GPU in bfloat16: model.dtype=bfloat16)"
        )


class VisionExtractor(HFExtractor):
    """Per-layer pooled token states of a transformers vision encoder (module docstring).

    Construction is cheap: the config is read on the first :meth:`layers` / :meth:`fingerprint`
    call, the image processor on the first :meth:`preprocess` / :meth:`fingerprint`, the
    weights on the first :meth:`extract`.

    Args:
        hf_id: hub id (``facebook/dinov2-base``, ``microsoft/rad-dino``, ``owkin/phikon``,
            ``google/siglip-base-patch16-224``, ...) or a local ``save_pretrained`` directory.
        revision: hub branch, tag or commit (ignored for a local directory).
        dtype: weights and compute dtype (``float32``, ``bfloat16``, ``float16``); features
            are returned as float32.
        device: ``auto`` (cuda if available) or a torch device string.
        pooling: ``cls``, ``mean_patch``, ``cls_mean_patch`` or ``default`` (``cls``; for
            SigLIP ``mean_patch``).

    Raises:
        ExtractorError: empty ``hf_id``, unknown dtype, pooling or device. Reading the config
            (first :meth:`layers` / :meth:`fingerprint`) raises it for a family not in
            :data:`FAMILIES` and for ``cls`` pooling of SigLIP.
    """

    name = "vision"
    label = "vision encoder"
    code_version = CODE_VERSION
    poolings = ("default", *POOLINGS)
    model_types = (*FAMILIES, "siglip2")  # siglip2 (NaFlex) is refused with a hint
    uses_device_map = False
    fingerprint_globs = (*WEIGHT_GLOBS, "config.json", "preprocessor_config.json")
    fingerprint_files_key = "files"
    transient = ("_model", "_torch_device")

    def __init__(
        self,
        hf_id: str,
        revision: str | None = None,
        dtype: str = "float32",
        device: str = "auto",
        pooling: str = "default",
    ) -> None:
        super().__init__(hf_id, revision=revision, dtype=dtype, device=device, pooling=pooling)
        # the base resolved "default" to poolings[0]; the family decides (check_config)
        self._pooling_given = self.pooling
        self._torch_device: Any = None

    # ------------------------------------------------------------------ family

    def check_config(self, hf_config: Any) -> None:
        """Resolve ``default`` pooling for the family; refuse SigLIP 2 NaFlex and ``cls``
        pooling of a model without a class token."""
        model_type = hf_config.model_type
        if model_type == "siglip2":
            raise ExtractorError(
                f"vision: {self.hf_id!r} is a SigLIP 2 NaFlex checkpoint (variable patch "
                "counts), which is not supported; use a fixed-resolution SigLIP 2 checkpoint "
                "such as google/siglip2-base-patch16-224 (model=siglip2_base)"
            )
        fam = FAMILIES[model_type]
        if self._pooling_given == "default":
            self.pooling = "cls" if fam.has_cls else "mean_patch"
        elif self._pooling_given in ("cls", "cls_mean_patch") and not fam.has_cls:
            raise ExtractorError(
                f"vision: pooling={self._pooling_given} needs a class token and "
                f"{model_type} models have none; use pooling=mean_patch (or layer=pooled, "
                "the attention-pooling head)"
            )
        else:
            self.pooling = self._pooling_given

    def family(self) -> Family:
        """The :class:`Family` of the checkpoint (reads the config)."""
        return FAMILIES[self.config().model_type]

    def num_register_tokens(self) -> int:
        """Register tokens after the CLS token (0 outside DINOv2 with registers)."""
        fam = self.family()
        return int(getattr(self.config(), fam.registers)) if fam.registers else 0

    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: CLS + registers (0 for SigLIP)."""
        return int(self.family().has_cls) + self.num_register_tokens()

    def has_head(self) -> bool:
        """SigLIP with its attention-pooling head (``vision_use_head``, true by default)."""
        return self.family().head and bool(
            getattr(vision_config(self.config()), "vision_use_head", True)
        )

    def param_count(self) -> int:
        """Parameters of the loaded module (:func:`param_count_from_config`)."""
        return param_count_from_config(self.config())

    # ------------------------------------------------------------------ sources

    def build_processor(self) -> Any:
        """The checkpoint's image processor, transformers' PIL backend.

        Raises:
            ExtractorError: missing local directory or ``preprocessor_config.json``.
        """
        from transformers import AutoImageProcessor

        return self.pretrained(AutoImageProcessor, "the image processor", backend="pil")

    def preprocessing(self) -> dict[str, Any]:
        """``{"backend": processor class, setting: value}``: every setting of the image
        processor (JSON types) but bookkeeping keys."""
        proc = self.processor()
        settings = proc.to_dict()
        out: dict[str, Any] = {"backend": type(proc).__name__}
        for key in sorted(settings):
            if key not in _PROCESSOR_BOOKKEEPING:
                out[key] = jsonable(settings[key])
        return out

    def feature_settings(self) -> dict[str, Any]:
        """``library`` (transformers), ``family`` (model_type), ``prefix_tokens``, ``dtype``,
        ``pooling`` (resolved), ``preprocessing``."""
        hf_config = self.config()
        return {
            "library": "transformers",
            "family": hf_config.model_type,
            "prefix_tokens": self.num_prefix_tokens(),
            "dtype": self.dtype,
            "pooling": self.pooling,
            "preprocessing": self.preprocessing(),
        }

    # ------------------------------------------------------------------ protocol

    def layers(self) -> list[LayerId]:
        """``[0, 1, ..., L, "norm"]`` (+ ``"pooled"`` for SigLIP with its head); reads only
        the config.

        Raises:
            ExtractorError: the config cannot be read or is not a supported family.
        """
        n = int(vision_config(self.config()).num_hidden_layers)
        named: list[LayerId] = ["norm", "pooled"] if self.has_head() else ["norm"]
        return [*range(n + 1), *named]

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One ``PIL.Image`` -> ``(3, H, W)`` float32 ``pixel_values`` (the checkpoint's own
        processor, PIL backend)."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        pv = self.processor()(images=image, return_tensors="pt")["pixel_values"]
        return pv[0].float()

    def load(self) -> Any:
        """Load the family's model class (eval, on the device, in ``dtype``); idempotent.

        Raises:
            ExtractorError: weights that cannot be read, or weights of the loaded module
                missing from the checkpoint (they would be random).
        """
        if self._model is None:
            import transformers

            fam = self.family()
            dev = self.torch_device()
            model, info = self.load_pretrained(
                getattr(transformers, fam.model_class),
                f"the {fam.model_class} weights",
                quiet=True,  # a full SigLIP checkpoint: the text tower's keys are unused
                **dict(fam.load_kwargs),
            )
            missing = sorted(info.get("missing_keys") or [])
            if missing:
                raise ExtractorError(
                    f"vision: {self.hf_id!r} lacks {len(missing)} weights of "
                    f"{fam.model_class} (e.g. {missing[0]}); not a {fam.model_class} checkpoint?"
                )
            self._model = self.place(model)
            self._torch_device = dev
            log.info("vision: loaded %s (%s) on %s", self.hf_id, self.dtype, dev)
        return self._model

    def extract(
        self, batch: torch.Tensor, layers: Sequence[LayerId] | LayerId | str
    ) -> dict[LayerId, np.ndarray]:
        """``(B, 3, H, W)`` pixel values -> ``{layer: (B, D) float32}`` from one forward pass.

        ``D`` is ``hidden_size`` (``2 x hidden_size`` for ``cls_mean_patch``). Loads the
        weights on the first call.

        Raises:
            ExtractorError: unknown layer, a batch that is not ``(B, 3, H, W)``, weights that
                cannot be loaded, non-finite or all-zero features.
        """
        import torch

        wanted = resolve_layers(layers, self.layers())
        if not isinstance(batch, torch.Tensor) or batch.ndim != 4 or batch.shape[1] != 3:
            shape = tuple(batch.shape) if hasattr(batch, "shape") else type(batch).__name__
            raise ExtractorError(f"vision: expected a (B, 3, H, W) tensor batch, got {shape}")
        model = self.load()
        numbered = [w for w in wanted if isinstance(w, int)]
        prefix, has_cls = self.num_prefix_tokens(), self.family().has_cls
        x = batch.to(device=self._torch_device, dtype=model.dtype)
        with torch.inference_mode():
            out = model(pixel_values=x, output_hidden_states=bool(numbered))
            feats: dict[LayerId, torch.Tensor] = {}
            for layer in numbered:
                feats[layer] = pool_tokens(out.hidden_states[layer], self.pooling, prefix, has_cls)
            if "norm" in wanted:
                feats["norm"] = pool_tokens(out.last_hidden_state, self.pooling, prefix, has_cls)
            if "pooled" in wanted:
                feats["pooled"] = out.pooler_output
        return features_to_numpy(feats, wanted, batch.shape[0])

    def __repr__(self) -> str:
        return (
            f"VisionExtractor(hf_id={self.hf_id!r}, revision={self.revision!r}, "
            f"dtype={self.dtype!r}, device={self.device!r}, pooling={self._pooling_given!r})"
        )


def from_config(cfg: Any, prompt: str = "") -> VisionExtractor:
    """Build a :class:`VisionExtractor` from a model config node (no weights loaded).

    Args:
        cfg: ``medprobe.config.ModelConfig`` (``hf_id``, ``revision``, ``dtype``, ``device``,
            ``pooling``), ``cfg.kind == "vision"``.
        prompt: ignored (image encoders take no text).

    Raises:
        ExtractorError: empty ``hf_id``, a local directory that does not exist, unknown
            dtype or pooling, ``quantization`` other than ``none``.
    """
    del prompt
    refuse_quantization(cfg)
    return VisionExtractor.from_model_config(cfg)
