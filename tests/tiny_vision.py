"""Tiny random vision encoders saved locally in the format each medprobe loader reads
(transformers ``save_pretrained``, timm ``save_for_hf``, open_clip ``open_clip_config.json``):
offline, no downloads. Width 32, 2 blocks, 32 x 32 images, 8 x 8 patches (16 patch tokens)
unless said otherwise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Shape of every tiny transformer: width 32, 2 blocks, 2 heads, 32 px images, 8 px patches.
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    image_size=32,
    patch_size=8,
)

#: The HF families of medprobe/extractors/vision.py and what a tiny one is made of.
HF_FAMILIES = ("dinov2", "dinov2_with_registers", "vit", "siglip", "siglip_vision_model")
#: Register tokens of the tiny DINOv2-with-registers.
REGISTERS = 4


def save_tiny_hf_vision(family: str, path: Path, seed: int = 0) -> Path:
    """A tiny random transformers vision model of ``family`` (a ``model_type``) plus its
    image processor (PIL backend, 32 x 32 output), saved to ``path``.

    ``siglip`` saves a full ``SiglipModel`` (text tower too, as the hub checkpoints are);
    ``siglip_vision_model`` a bare ``SiglipVisionModel``; ``dinov2_with_registers`` has
    :data:`REGISTERS` register tokens; ``vit`` is saved with its pooler (as Phikon is).
    """
    import torch
    import transformers as tf

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if family == "dinov2":
        model: Any = tf.Dinov2Model(tf.Dinov2Config(**TINY))
    elif family == "dinov2_with_registers":
        cfg = tf.Dinov2WithRegistersConfig(**TINY, num_register_tokens=REGISTERS)
        model = tf.Dinov2WithRegistersModel(cfg)
    elif family == "vit":
        model = tf.ViTModel(tf.ViTConfig(**TINY))
    elif family == "siglip":
        text = dict(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                    num_attention_heads=2, max_position_embeddings=16)  # fmt: skip
        model = tf.SiglipModel(tf.SiglipConfig(text_config=text, vision_config=TINY))
    elif family == "siglip_vision_model":
        model = tf.SiglipVisionModel(tf.SiglipVisionConfig(**TINY))
    else:
        raise ValueError(family)
    model.eval().save_pretrained(path)
    if family.startswith("siglip"):
        from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

        SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(path)
    elif family == "vit":
        from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

        ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(path)
    else:  # DINOv2: BitImageProcessor, shortest side then center crop, ImageNet mean/std
        from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil

        BitImageProcessorPil(
            size={"shortest_edge": 36},
            crop_size={"height": 32, "width": 32},
            image_mean=[0.485, 0.456, 0.406],
            image_std=[0.229, 0.224, 0.225],
        ).save_pretrained(path)
    return path


#: The tiny timm ViT: 2 register tokens + CLS, LayerScale (init_values) as UNI / Virchow.
TIMM_ARGS: dict[str, Any] = dict(
    img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, reg_tokens=2, num_classes=0,
    init_values=1e-5,
)  # fmt: skip


def save_tiny_timm(path: Path, seed: int = 0, **model_args: Any) -> Path:
    """A tiny random timm ``VisionTransformer`` (:data:`TIMM_ARGS` updated by ``model_args``)
    saved with ``timm.models.save_for_hf`` (``config.json`` with ``architecture``,
    ``model_args``, ``pretrained_cfg`` for 32 px; ``model.safetensors``), the layout of
    UNI's and Virchow's hub repositories."""
    import timm
    import torch
    from timm.models import save_for_hf

    path = Path(path)
    torch.manual_seed(seed)
    args = {**TIMM_ARGS, **model_args}
    model = timm.create_model("vit_base_patch16_224", pretrained=False, **args).eval()
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 32, 32)}
    save_for_hf(model, str(path), model_args=args, safe_serialization=True)
    return path


#: Tiny open_clip configs: open_clip's own ViT tower, and a timm trunk (BiomedCLIP style;
#: vit_tiny at 224 px since open_clip does not pass the image size to the trunk).
OPEN_CLIP_VISION: dict[str, dict[str, Any]] = {
    "native": dict(image_size=32, layers=2, width=32, patch_size=8, head_width=16),
    "timm": dict(image_size=224, timm_model_name="vit_tiny_patch16_224",
                 timm_model_pretrained=False, timm_pool="", timm_proj="linear"),
}  # fmt: skip


def save_tiny_open_clip(path: Path, tower: str = "native", seed: int = 0) -> Path:
    """A tiny random open_clip ``CLIP`` (image tower :data:`OPEN_CLIP_VISION` [``tower``],
    a 1-block text tower, ``embed_dim`` 16) saved as ``open_clip_config.json`` +
    ``open_clip_pytorch_model.bin``, the layout of BiomedCLIP's hub repository; preprocessing
    mean 0.5, std 0.25."""
    import open_clip
    import torch

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model_cfg = dict(
        embed_dim=16,
        vision_cfg=OPEN_CLIP_VISION[tower],
        text_cfg=dict(context_length=8, vocab_size=99, width=32, heads=2, layers=1),
    )
    model = open_clip.CLIP(**model_cfg).eval()
    torch.save(model.state_dict(), path / "open_clip_pytorch_model.bin")
    config = {"model_cfg": model_cfg, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    (path / "open_clip_config.json").write_text(json.dumps(config))
    return path
