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


#: Special tokens of the IDEFICS tokenizers (HuggingFaceM4/idefics-*), in their id order.
IDEFICS_SPECIAL_TOKENS = ("<fake_token_around_image>", "<image>", "<end_of_utterance>")


def tiny_idefics_tokenizer():  # -> transformers.LlamaTokenizer
    """A byte-level Llama tokenizer with IDEFICS' special tokens, built offline.

    Vocabulary: ``<unk>`` 0 (also the pad token, as in IDEFICS), ``<s>`` 1, ``</s>`` 2, ``▁``
    (the Metaspace space) 3, the 256 byte tokens ``<0x00>``..``<0xFF>`` 4-259, then
    ``<fake_token_around_image>`` 260, ``<image>`` 261, ``<end_of_utterance>`` 262. Any text
    tokenises (byte fallback); padding is on the left.
    """
    from transformers import LlamaTokenizer

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "\u2581": 3}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    tok = LlamaTokenizer(
        vocab=vocab,
        merges=[],
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<unk>",
        additional_special_tokens=list(IDEFICS_SPECIAL_TOKENS),
    )
    tok.padding_side = "left"
    return tok


def tiny_idefics_config(
    num_hidden_layers: int = 8,
    cross_layer_interval: int = 2,
    hidden_size: int = 64,
    image_size: int = 32,
    alpha_initializer: str = "ones",
):  # -> transformers.IdeficsConfig
    """An ``IdeficsConfig`` shaped like the real ones (qk norms, perceiver), scaled down.

    Decoder: ``num_hidden_layers`` blocks of width ``hidden_size`` (2 heads, MLP 2x), a gated
    cross-attention block every ``cross_layer_interval``; vision tower: 2 blocks of width 64 on
    ``image_size`` images with 8 x 8 patches; perceiver: 1 block, 4 latents. Every Linear input
    width is a multiple of 64, so bitsandbytes 4-bit runs on CPU. ``alpha_initializer="ones"``
    opens the cross-attention gates (with the default ``"zeros"`` a random model ignores the
    image). Vocabulary: 260 + 3 special tokens (:func:`tiny_idefics_tokenizer`).
    """
    from transformers import IdeficsConfig

    return IdeficsConfig(
        vocab_size=260,
        additional_vocab_size=3,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=2,
        cross_layer_interval=cross_layer_interval,
        alpha_initializer=alpha_initializer,
        alpha_type="float",
        qk_layer_norms=True,
        max_position_embeddings=512,
        use_resampler=True,
        freeze_text_layers=False,
        freeze_vision_layers=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        vision_config=dict(
            embed_dim=64,
            image_size=image_size,
            intermediate_size=128,
            patch_size=8,
            num_attention_heads=2,
            num_hidden_layers=2,
        ),
        perceiver_config=dict(
            use_resampler=True,
            resampler_n_latents=4,
            resampler_depth=1,
            resampler_n_heads=2,
            resampler_head_dim=32,
            qk_layer_norms_perceiver=True,
        ),
    )


def save_tiny_idefics(path: Path, seed: int = 0, **config_kwargs: object) -> Path:
    """Save a tiny random ``IdeficsForVisionText2Text`` with its processor to ``path``.

    Config: :func:`tiny_idefics_config` (``config_kwargs`` are passed to it); tokenizer:
    :func:`tiny_idefics_tokenizer`; image processor: IDEFICS' recipe (resize to ``image_size``
    bicubic, CLIP mean/std) in its PIL backend. Weights are drawn after
    ``torch.manual_seed(seed)``. Nothing touches the network.

    Returns:
        ``path``, holding ``config.json``, ``model.safetensors``, the tokenizer files and
        ``processor_config.json`` / ``preprocessor_config.json`` (loadable by
        ``AutoProcessor``).
    """
    import torch
    from transformers import IdeficsForVisionText2Text, IdeficsProcessor
    from transformers.models.idefics.image_processing_pil_idefics import IdeficsImageProcessorPil

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = tiny_idefics_config(**config_kwargs)  # type: ignore[arg-type]
    torch.manual_seed(seed)
    model = IdeficsForVisionText2Text(cfg).eval()
    model.save_pretrained(path)
    image_size = int(cfg.vision_config.image_size)
    proc = IdeficsProcessor(
        image_processor=IdeficsImageProcessorPil(image_size=image_size),
        tokenizer=tiny_idefics_tokenizer(),
    )
    proc.save_pretrained(path)
    return path
