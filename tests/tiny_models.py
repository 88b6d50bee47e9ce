"""Tiny random models saved locally for fast, offline tests (no hub access, no downloads)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import CLIPConfig


def tiny_clip_config() -> CLIPConfig:
    """A ``CLIPConfig`` with a 2-block, width-32 vision tower on 32 x 32 images (16 patches)."""
    from transformers import CLIPConfig

    text = dict(
        vocab_size=99,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)


def save_tiny_clip(path: Path, seed: int = 0) -> Path:
    """Save a tiny random ``CLIPModel`` plus a 32 x 32 ``CLIPImageProcessor`` to ``path``.

    Vision tower: width 32, 2 blocks, 2 heads, 32 x 32 images, 8 x 8 patches; text tower as
    small; ``projection_dim`` 16. Weights are drawn after ``torch.manual_seed(seed)``, so the
    same seed gives the same ``model.safetensors``. The image processor keeps CLIP's recipe
    (shortest side -> 32 bicubic, center crop 32, CLIP mean/std). No tokenizer is saved (not
    needed for image features). Nothing touches the network.

    Returns:
        ``path`` (created if needed), holding ``config.json``, ``model.safetensors`` and
        ``preprocessor_config.json``.
    """
    import torch
    from transformers import CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = CLIPModel(tiny_clip_config()).eval()
    model.save_pretrained(path)
    proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    proc.save_pretrained(path)
    return path
