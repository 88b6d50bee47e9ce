"""Image towers of open_clip models (BiomedCLIP style), through the open_clip library.

Registry kind ``open_clip`` (``model=biomedclip``). Needs the optional extra
``pip install medprobe[open_clip]`` (open_clip_torch, which brings timm and torchvision).

Source: ``hf_id`` is a hub id holding an open_clip checkpoint (``open_clip_config.json`` with
``model_cfg`` and ``preprocess_cfg``, plus ``open_clip_pytorch_model.bin`` or
``*.safetensors``: what open_clip's ``hf-hub:`` loader reads), or a local folder of the same
files. Only the image tower is built (``open_clip.model._build_vision_tower`` from
``model_cfg["vision_cfg"]``) and only the checkpoint's ``visual.*`` weights are loaded into it,
strictly: the text tower (for BiomedCLIP a PubMedBERT whose config open_clip would fetch from
the hub) is never built.

Towers and layers:

* open_clip's own ``VisionTransformer`` (OpenAI-style CLIP ViTs): tokens ``[CLS, patches]``.
  ``0`` = the tokens entering the first residual block (after ``ln_pre``); ``k`` = the output of
  ``transformer.resblocks[k-1]``; ``"norm"`` = ``ln_post`` over block L's tokens (offered when
  the tower applies ``ln_post`` to all tokens: no attention pooler, ``final_ln_after_pool``
  false).
* a ``TimmModel`` tower (BiomedCLIP: ``vit_base_patch16_224`` trunk plus a linear projection):
  the trunk's blocks as in :mod:`medprobe.extractors.timm_models`; ``"norm"`` = the trunk's
  final ``norm`` over block L's tokens.
* ``"embeds"`` (both): the tower's output, the joint image-text embedding that
  ``model.encode_image(x)`` returns (not L2-normalised; width ``embed_dim``, 512 for
  BiomedCLIP). It does not depend on the pooling setting.

Pooling: ``cls``, ``mean_patch``, ``cls_mean_patch`` (:func:`~medprobe.extractors.vision.pool_tokens`;
prefix tokens excluded from the mean); ``default`` = ``cls``.

Preprocessing: open_clip's eval transform ``image_transform_v2(PreprocessCfg)`` with the
checkpoint's ``preprocess_cfg`` over open_clip's defaults and ``size`` = the tower's image size,
as ``open_clip.create_model_from_pretrained`` builds it; the settings, the transform's repr
and the open_clip and torchvision versions enter the fingerprint.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from medprobe.errors import ExtractorError
from medprobe.extractors.base import LayerId
from medprobe.extractors.hf import jsonable
from medprobe.extractors.library import LibraryExtractor, forward_with_hooks, param_count_of
from medprobe.extractors.vision import refuse_quantization

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Bumped whenever a change in this file changes the features (part of the fingerprint).
CODE_VERSION = "open_clip-1"

#: Published open_clip checkpoints described from their model cards (layers and parameter
#: counts without a download; ``param_count_from_config``): hub id -> vision_cfg, embed_dim.
PUBLISHED_CONFIGS: dict[str, tuple[dict[str, Any], int]] = {
    # BiomedCLIP (Zhang et al. 2023): ViT-B/16 (timm vit_base_patch16_224) + linear projection
    # to 512, trained on 15M PubMed Central figure-caption pairs
    "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224": (
        {
            "image_size": 224,
            "timm_model_name": "vit_base_patch16_224",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
        },
        512,
    ),
}


def _import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError:
        raise ExtractorError(
            "model.kind=open_clip needs open_clip_torch (and torchvision): "
            "pip install 'medprobe[open_clip]'"
        ) from None
    return open_clip


def build_tower(vision_cfg: dict[str, Any], embed_dim: int, quick_gelu: bool = False) -> Any:
    """open_clip's image tower of ``vision_cfg`` with random weights (no download).

    Raises:
        ExtractorError: open_clip is missing or cannot build the config.
    """
    _import_open_clip()
    from open_clip.model import _build_vision_tower

    cfg = dict(vision_cfg)
    cfg["timm_model_pretrained"] = False  # never fetch the trunk's ImageNet weights
    try:
        return _build_vision_tower(embed_dim, cfg, quick_gelu=quick_gelu)
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise ExtractorError(f"open_clip: cannot build the image tower {cfg}: {exc}") from None


def param_count_from_config(vision_cfg: dict[str, Any], embed_dim: int) -> int:
    """Parameters of the image tower (what medprobe loads), built on the meta device.
    Bytes of the weights: x4 float32, x2 bfloat16.

    Raises:
        ExtractorError: open_clip is missing or cannot build the config.
    """
    import torch

    with torch.device("meta"):
        return param_count_of(build_tower(vision_cfg, embed_dim))


class OpenCLIPExtractor(LibraryExtractor):
    """Per-layer pooled token states of an open_clip image tower (module docstring).

    Args:
        hf_id: a hub id with an open_clip checkpoint
            (``microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``) or a local folder
            with its ``open_clip_config.json`` and weights.
        revision, dtype, device, pooling, model_kwargs: see
            :class:`~medprobe.extractors.library.LibraryExtractor` (``model_kwargs`` overlay
            ``model_cfg["vision_cfg"]``).

    Raises:
        ExtractorError: empty ``hf_id``, unknown dtype, pooling or device.
    """

    name = "open_clip"
    label = "open_clip"
    library = "open_clip"
    code_version = CODE_VERSION
    config_file = "open_clip_config.json"
    weight_globs = ("*.safetensors", "*.bin", "*.pth")
    fingerprint_globs = (*weight_globs, config_file)

    def check_config(self, hf_config: Any) -> None:
        """The config must hold ``model_cfg`` with a ``vision_cfg``."""
        model_cfg = hf_config.get("model_cfg")
        if not isinstance(model_cfg, dict) or not isinstance(model_cfg.get("vision_cfg"), dict):
            raise ExtractorError(
                f"open_clip: {self.config_file} of {self.hf_id!r} has no model_cfg.vision_cfg "
                "(not an open_clip checkpoint?)"
            )

    def vision_cfg(self) -> dict[str, Any]:
        """``model_cfg["vision_cfg"]`` overlaid with ``model_kwargs``."""
        return {**self.config()["model_cfg"]["vision_cfg"], **self.model_kwargs}

    def build_model(self) -> Any:
        model_cfg = self.config()["model_cfg"]
        return build_tower(
            self.vision_cfg(), int(model_cfg["embed_dim"]), bool(model_cfg.get("quick_gelu"))
        )

    @staticmethod
    def parts(tower: Any) -> tuple[Sequence[Any], Any, bool]:
        """``(blocks, final norm or None, blocks are batch-first)`` of a tower."""
        trunk = getattr(tower, "trunk", None)
        if trunk is not None:  # TimmModel
            return list(trunk.blocks), getattr(trunk, "norm", None), True
        transformer = tower.transformer
        norm = tower.ln_post
        if getattr(tower, "attn_pool", None) is not None or getattr(
            tower, "final_ln_after_pool", False
        ):
            norm = None  # ln_post does not act on all tokens
        return list(transformer.resblocks), norm, bool(getattr(transformer, "batch_first", True))

    def structure(self, model: Any) -> tuple[Sequence[Any], int, bool]:
        """``(blocks, prefix tokens, has a class token)``."""
        trunk = getattr(model, "trunk", None)
        blocks, _, _ = self.parts(model)
        if trunk is not None:
            prefix = int(getattr(trunk, "num_prefix_tokens", 0))
            return blocks, prefix, getattr(trunk, "cls_token", None) is not None
        if getattr(model, "transformer", None) is None:
            raise ExtractorError(
                f"open_clip: image tower {type(model).__name__} is not a vision transformer"
            )
        return blocks, 1, True  # open_clip's VisionTransformer: [CLS, patches]

    def named_layers(self) -> list[str]:
        _, norm, _ = self.parts(self.meta_model())
        return ["norm", "embeds"] if norm is not None else ["embeds"]

    def preprocess_cfg(self) -> dict[str, Any]:
        """open_clip's ``PreprocessCfg`` defaults, the checkpoint's ``preprocess_cfg``, ``size``
        = the tower's image size (as ``create_model`` sets it)."""
        _import_open_clip()
        from open_clip.transform import PreprocessCfg, merge_preprocess_dict

        cfg = merge_preprocess_dict(
            asdict(PreprocessCfg()), dict(self.config().get("preprocess_cfg") or {})
        )
        size = getattr(self.meta_model(), "image_size", None)
        if size is not None:
            cfg["size"] = tuple(size) if isinstance(size, (list, tuple)) else size
        return dict(cfg)

    def transform(self) -> Any:
        _import_open_clip()
        from open_clip.transform import PreprocessCfg, image_transform_v2

        return image_transform_v2(PreprocessCfg(**self.preprocess_cfg()), is_train=False)

    def preprocessing(self) -> dict[str, Any]:
        return {str(k): jsonable(v) for k, v in sorted(self.preprocess_cfg().items())}

    def load_model(self) -> Any:
        """The image tower with the checkpoint's ``visual.*`` weights (strict).

        Raises:
            ExtractorError: files not cached and not fetchable, no ``visual.*`` weights, or
                weights that do not match the tower.
        """
        _import_open_clip()
        from open_clip.factory import _find_checkpoint_in_dir, load_state_dict

        folder = self.folder(weights=True)
        path = _find_checkpoint_in_dir(folder)
        try:
            state = load_state_dict(str(path))
        except (RuntimeError, OSError, ValueError) as exc:
            raise self.load_error("the open_clip weights", exc) from None
        visual = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
        if not visual:
            raise ExtractorError(f"open_clip: {path} holds no visual.* weights")
        tower = self.build_model()
        try:
            tower.load_state_dict(visual, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ExtractorError(
                f"open_clip: the weights in {path} do not match the image tower of "
                f"{self.config_file}: {first}"
            ) from None
        log.info("open_clip: loaded %s", self.hf_id)
        return tower

    def run(self, model: Any, x: torch.Tensor, layers: Sequence[LayerId]) -> dict[LayerId, Any]:
        """The tower once (its output is ``"embeds"``), block outputs recorded by hooks;
        ``"norm"`` = the final norm of block L's tokens."""
        blocks, norm, batch_first = self.parts(model)
        wanted = {w for w in layers if isinstance(w, int)}
        if "norm" in layers:
            wanted.add(len(blocks))
        captured, embeds = forward_with_hooks(blocks, wanted, lambda: model(x), batch_first)
        out: dict[LayerId, Any] = {k: v for k, v in captured.items() if k in layers}
        if "norm" in layers:
            out["norm"] = norm(captured[len(blocks)])
        if "embeds" in layers:
            out["embeds"] = embeds
        return out


def from_config(cfg: Any, prompt: str = "") -> OpenCLIPExtractor:
    """Build an :class:`OpenCLIPExtractor` from a model config node (``cfg.kind ==
    "open_clip"``; reads ``hf_id``, ``revision``, ``dtype``, ``device``, ``pooling``,
    ``model_kwargs``). No weights are loaded; the prompt is ignored.

    Raises:
        ExtractorError: empty ``hf_id``, a local directory that does not exist, unknown dtype
            or pooling, ``model_kwargs`` that is not a mapping, ``quantization`` other than
            ``none``.
    """
    del prompt
    refuse_quantization(cfg)
    return OpenCLIPExtractor.from_model_config(cfg)
