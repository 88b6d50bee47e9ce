"""Vision transformers that live in timm (UNI, Virchow / Virchow2, H-optimus style pathology
encoders), loaded with ``timm.create_model`` and their pretrained weights.

Registry kind ``timm`` (``model=uni``, ``model=virchow2``). Needs the optional extra
``pip install medprobe[timm]`` (timm, which brings torchvision).

Source: ``hf_id`` is a hub id holding a timm checkpoint (``config.json`` with
``architecture``, ``model_args`` and ``pretrained_cfg``, plus the weights: what
``timm.models.push_to_hf.save_for_hf`` writes and timm's ``hf-hub:`` loader reads), or a local
folder of the same files. The model is built with ``timm.create_model("local-dir:<folder>",
pretrained=True, **model_kwargs)`` (a hub id: its snapshot folder in the HF cache; see
:mod:`medprobe.extractors.library`). ``model.model_kwargs`` are the constructor arguments a
model card asks for beyond its ``config.json`` (UNI: ``init_values: 1e-5``,
``dynamic_img_size: true``; Virchow2: ``mlp_layer: timm.layers:SwiGLUPacked``,
``act_layer: torch.nn:SiLU``); ``"module:Name"`` strings are imported.

Layers (timm ``VisionTransformer`` and models with its ``blocks`` / ``forward_features``
structure; tokens are ``[CLS, registers..., patches]`` with ``num_prefix_tokens`` = CLS +
registers):

* ``0``: the tokens entering block 1 (patch embedding + position embedding, CLS and register
  tokens prepended, ``norm_pre``).
* ``k`` (1..L): the output of ``blocks[k-1]`` (forward hooks; the same values as timm's own
  ``forward_intermediates(norm=False)``).
* ``"norm"``: ``forward_features``: the final ``norm`` over the tokens of block L. With ``cls``
  pooling this is UNI's documented embedding; with ``cls_mean_patch`` Virchow2's (class token
  and the mean of the patch tokens, registers excluded).

Pooling: ``cls``, ``mean_patch`` (register and CLS tokens excluded), ``cls_mean_patch``;
``default`` = ``cls`` (``mean_patch`` for a model without a class token).

Preprocessing: timm's eval transform (``timm.data.create_transform``) of the data config that
``timm.data.resolve_data_config`` derives from the checkpoint's ``pretrained_cfg`` (input size,
interpolation, crop fraction and mode, mean, std); the settings, the transform's repr and the
timm and torchvision versions enter the fingerprint.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from medprobe.errors import ExtractorError
from medprobe.extractors.base import LayerId
from medprobe.extractors.hf import jsonable
from medprobe.extractors.library import (
    LibraryExtractor,
    forward_with_hooks,
    param_count_of,
    resolve_kwargs,
)
from medprobe.extractors.vision import refuse_quantization

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Bumped whenever a change in this file changes the features (part of the fingerprint).
CODE_VERSION = "timm-1"

#: Published timm checkpoints described from their model cards (layers and parameter counts
#: without a download; ``param_count_from_config``): hub id -> (architecture, model_args).
PUBLISHED_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    # UNI (Chen et al., Nat Med 2024): ViT-L/16 DINOv2-trained on 100M pathology tiles
    "MahmoodLab/UNI": (
        "vit_large_patch16_224",
        {
            "img_size": 224,
            "patch_size": 16,
            "init_values": 1e-5,
            "num_classes": 0,
            "dynamic_img_size": True,
        },
    ),
    # Virchow2 (Zimmermann et al. 2024): ViT-H/14 with 4 registers, SwiGLU MLP (ratio 5.3375)
    "paige-ai/Virchow2": (
        "vit_huge_patch14_224",
        {
            "img_size": 224,
            "init_values": 1e-5,
            "num_classes": 0,
            "reg_tokens": 4,
            "mlp_ratio": 5.3375,
            "global_pool": "",
            "dynamic_img_size": True,
            "mlp_layer": "timm.layers:SwiGLUPacked",
            "act_layer": "torch.nn:SiLU",
        },
    ),
    # H-optimus-0 (Bioptimus 2024): ViT-g/14 with 4 registers
    "bioptimus/H-optimus-0": (
        "vit_giant_patch14_reg4_dinov2",
        {"img_size": 224, "init_values": 1e-5, "num_classes": 0, "dynamic_img_size": False},
    ),
}


def param_count_from_config(architecture: str, model_args: dict[str, Any]) -> int:
    """Parameters of ``timm.create_model(architecture, **model_args)``, built on the meta
    device (no weights, no memory). ``model_args`` may hold ``"module:Name"`` strings.
    Bytes of the weights: x4 float32, x2 bfloat16, x1 8-bit, x0.5 4-bit.

    Raises:
        ExtractorError: timm is not installed or does not know the architecture.
    """
    import torch

    timm = _import_timm()
    try:
        with torch.device("meta"):
            model = timm.create_model(architecture, pretrained=False, **resolve_kwargs(model_args))
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ExtractorError(f"timm: cannot build {architecture!r}: {exc}") from None
    return param_count_of(model)


def _import_timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ExtractorError(
            "model.kind=timm needs timm (and torchvision): pip install 'medprobe[timm]'"
        ) from None
    return timm


class TimmExtractor(LibraryExtractor):
    """Per-layer pooled token states of a timm vision transformer (module docstring).

    Args:
        hf_id: a hub id with a timm checkpoint (``MahmoodLab/UNI``, ``paige-ai/Virchow2``) or
            a local folder with its ``config.json`` and weights.
        revision, dtype, device, pooling, model_kwargs: see
            :class:`~medprobe.extractors.library.LibraryExtractor`.

    Raises:
        ExtractorError: empty ``hf_id``, unknown dtype, pooling or device; timm missing (on
            the first :meth:`layers` / :meth:`fingerprint`).
    """

    name = "timm"
    label = "timm"
    library = "timm"
    code_version = CODE_VERSION
    config_file = "config.json"
    weight_globs = ("*.safetensors", "*.bin")
    fingerprint_globs = (*weight_globs, config_file)

    def check_config(self, hf_config: Any) -> None:
        """The config must name an ``architecture``."""
        if not isinstance(hf_config.get("architecture"), str):
            raise ExtractorError(
                f"timm: {self.config_file} of {self.hf_id!r} has no 'architecture' (not a timm "
                "checkpoint?)"
            )

    def create_kwargs(self) -> dict[str, Any]:
        """``model_args`` of the config overlaid with ``model_kwargs`` (imported)."""
        args = dict(self.config().get("model_args") or {})
        args.update(self.model_kwargs)
        return resolve_kwargs(args)

    def build_model(self) -> Any:
        timm = _import_timm()
        arch = self.config()["architecture"]
        try:
            return timm.create_model(arch, pretrained=False, **self.create_kwargs())
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ExtractorError(f"timm: cannot build {arch!r} for {self.hf_id!r}: {exc}") from None

    def structure(self, model: Any) -> tuple[Sequence[Any], int, bool]:
        """``(model.blocks, model.num_prefix_tokens, has a class token)``.

        Raises:
            ExtractorError: the model has no ``blocks`` (not a ViT-style model).
        """
        blocks = getattr(model, "blocks", None)
        if blocks is None or not hasattr(model, "forward_features"):
            raise ExtractorError(
                f"timm: {type(model).__name__} has no transformer blocks (model.blocks); "
                "only ViT-style timm models are supported"
            )
        prefix = int(getattr(model, "num_prefix_tokens", 0))
        has_cls = getattr(model, "cls_token", None) is not None
        return list(blocks), prefix, has_cls

    def param_count(self) -> int:
        return param_count_of(self.meta_model())

    def data_config(self) -> dict[str, Any]:
        """timm's data config from the checkpoint's ``pretrained_cfg`` (input_size,
        interpolation, mean, std, crop_pct, crop_mode)."""
        timm = _import_timm()
        pcfg = dict(self.config().get("pretrained_cfg") or {})
        if not pcfg:
            pcfg = dict(self.meta_model().pretrained_cfg)
        return dict(timm.data.resolve_data_config(pretrained_cfg=pcfg))

    def transform(self) -> Any:
        timm = _import_timm()
        return timm.data.create_transform(**self.data_config(), is_training=False)

    def preprocessing(self) -> dict[str, Any]:
        return {str(k): jsonable(v) for k, v in sorted(self.data_config().items())}

    def load_model(self) -> Any:
        """``timm.create_model("local-dir:<folder>", pretrained=True, **model_kwargs)``
        (strict weight loading).

        Raises:
            ExtractorError: files not cached and not fetchable, weights that do not match.
        """
        timm = _import_timm()
        folder = self.folder(weights=True)
        kwargs = resolve_kwargs(self.model_kwargs)
        try:
            model = timm.create_model(f"local-dir:{folder}", pretrained=True, **kwargs)
        except (RuntimeError, ValueError, TypeError, OSError, KeyError) as exc:
            raise self.load_error("the timm weights", exc) from None
        log.info("timm: loaded %s", self.hf_id)
        return model

    def run(self, model: Any, x: torch.Tensor, layers: Sequence[LayerId]) -> dict[LayerId, Any]:
        """``forward_features`` once, block outputs recorded by hooks."""
        blocks, _, _ = self.structure(model)
        numbered = [w for w in layers if isinstance(w, int)]
        captured, normed = forward_with_hooks(blocks, numbered, lambda: model.forward_features(x))
        out: dict[LayerId, Any] = {k: v for k, v in captured.items()}
        if "norm" in layers:
            out["norm"] = normed
        return out


def from_config(cfg: Any, prompt: str = "") -> TimmExtractor:
    """Build a :class:`TimmExtractor` from a model config node (``cfg.kind == "timm"``; reads
    ``hf_id``, ``revision``, ``dtype``, ``device``, ``pooling``, ``model_kwargs``). No weights
    are loaded; the prompt is ignored.

    Raises:
        ExtractorError: empty ``hf_id``, a local directory that does not exist, unknown dtype
            or pooling, ``model_kwargs`` that is not a mapping, ``quantization`` other than
            ``none``.
    """
    del prompt
    refuse_quantization(cfg)
    return TimmExtractor.from_model_config(cfg)
