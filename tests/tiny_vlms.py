"""Tiny random chat-template VLMs (``AutoModelForImageTextToText``) saved locally, offline.

One builder per family: a byte-level tokenizer holding the family's special tokens, a chat
template in the family's published prompt format (written here: nothing is downloaded), the
family's processor with its image processor's PIL backend, and a random model whose language
model has 4 decoder layers of width 64 (Mllama: 5, two of them cross-attention layers). Every
model's processor pads on the left. :data:`BUILDERS` maps a family to its builder;
:func:`save_tiny_vlm` writes one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Hidden width of every tiny language model (the features' D).
WIDTH = 64


def byte_tokenizer(
    specials: list[str], extra: dict[str, str] | None = None, bos: str = "<s>"
) -> Any:
    """A byte-level Llama tokenizer (ids: ``<unk>`` 0 = pad, ``bos`` 1, ``</s>`` 2, ``▁`` 3,
    bytes 4-259) with ``specials`` added from 260 on, in order. ``extra`` names special
    tokens as attributes (``{"image_token": "<image>"}``). Pads on the left."""
    from transformers import LlamaTokenizer

    vocab = {"<unk>": 0, bos: 1, "</s>": 2, "\u2581": 3}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    tok = LlamaTokenizer(
        vocab=vocab,
        merges=[],
        unk_token="<unk>",
        bos_token=bos,
        eos_token="</s>",
        pad_token="<unk>",
        additional_special_tokens=list(specials),
        **({"extra_special_tokens": extra} if extra else {}),
    )
    tok.padding_side = "left"
    return tok


def _llama_text(vocab: int, layers: int = 4, **kw: Any) -> dict[str, Any]:
    return dict(
        model_type="llama", vocab_size=vocab, hidden_size=WIDTH, intermediate_size=2 * WIDTH,
        num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
        max_position_embeddings=2048, pad_token_id=0, bos_token_id=1, eos_token_id=2, **kw,
    )  # fmt: skip


def _siglip(image_size: int = 32, patch: int = 8, **kw: Any) -> dict[str, Any]:
    return dict(
        model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=2, image_size=image_size, patch_size=patch, **kw,
    )  # fmt: skip


# ---------------------------------------------------------------------------- chat templates
# Each renders the family's published prompt format for a user turn of text and image items.

LLAVA_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'][0]['text'] + ' ' }}"
    "{% else %}{{ m['role'].upper() + ': ' }}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} "
    "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
QWEN_TEMPLATE = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
IDEFICS3_TEMPLATE = (
    "<|begin_of_text|>{% for m in messages %}{{ m['role'] | capitalize }}"
    "{% if m['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}"
    "{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% set sys = '' %}{% if messages[0]['role'] == 'system' %}"
    "{% set sys = messages[0]['content'][0]['text'] + '\n\n' %}{% set msgs = messages[1:] %}"
    "{% else %}{% set msgs = messages %}{% endif %}{% for m in msgs %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{% if loop.first %}{{ sys }}{% endif %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<start_of_image>{% else %}{{ c['text'] | trim }}{% endif %}"
    "{% endfor %}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}"
    "<start_of_turn>model\n{% endif %}"
)
MLLAMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
    "\n\n{% for c in m['content'] %}{% if c['type'] == 'image' %}<|image|>{% else %}"
    "{{ c['text'] }}{% endif %}{% endfor %}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

#: The rendered prompt (chat template output, image placeholders not expanded) of each tiny
#: family for the prompt "What is shown?" (the image first).
RENDERED = {
    "llava": "USER: <image>\nWhat is shown? ASSISTANT:",
    "llava_onevision": "USER: <image>\nWhat is shown? ASSISTANT:",
    "qwen2_5_vl": (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>What is shown?<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
    "idefics3": "<|begin_of_text|>User:<image>What is shown?<end_of_utterance>\nAssistant:",
    "gemma3": "<s><start_of_turn>user\n<start_of_image>What is shown?<end_of_turn>\n"
    "<start_of_turn>model\n",
    "mllama": "<s><|start_header_id|>user<|end_header_id|>\n\n<|image|>What is shown?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "paligemma": "<image>What is shown?",  # no chat template: the processor's own format
    "internvl": "<|im_start|>user\n<IMG_CONTEXT>\nWhat is shown?<|im_end|>\n<|im_start|>assistant\n",
}


# ---------------------------------------------------------------------------- builders


def build_llava(path: Path, layers: int = 4) -> tuple[Any, Any]:
    """LLaVA-1.5 style: CLIP vision tower (width 64, 32 px, 8 px patches, CLS dropped: 16 image
    tokens), 2-layer MLP projector, Llama text model. Every Linear input width is a multiple of
    64, so bitsandbytes 4-bit runs on CPU."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = byte_tokenizer(["<image>"])
    cfg = LlavaConfig(
        text_config=_llama_text(len(tok), layers),
        # width 64: every Linear input is a multiple of 64, so bitsandbytes 4-bit runs on CPU
        vision_config=dict(model_type="clip_vision_model", hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8),
        image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )  # fmt: skip
    proc = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE,
    )  # fmt: skip
    return LlavaForConditionalGeneration(cfg), proc


def build_qwen2_5_vl(path: Path, layers: int = 4) -> tuple[Any, Any]:
    """Qwen2.5-VL: dynamic resolution (8 px patches, 2 x 2 merge: a 32 x 32 image is 4 tokens,
    a 64 x 32 one 8), M-RoPE text model."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    specials = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]  # fmt: skip
    tok = byte_tokenizer(specials)
    ids = {s: tok.convert_tokens_to_ids(s) for s in specials}
    text = dict(
        vocab_size=len(tok), hidden_size=WIDTH, intermediate_size=2 * WIDTH,
        num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
        max_position_embeddings=2048, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
    )  # fmt: skip
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=WIDTH,
                  patch_size=8, spatial_merge_size=2, temporal_patch_size=2, window_size=16,
                  fullatt_block_indexes=[1])  # fmt: skip
    cfg = Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    size = {"shortest_edge": 16 * 16, "longest_edge": 64 * 32}
    proc = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessorPil(size=size, patch_size=8, merge_size=2,
                                                 temporal_patch_size=2),
        video_processor=Qwen2VLVideoProcessor(size=size, patch_size=8, merge_size=2,
                                              temporal_patch_size=2),
        tokenizer=tok, chat_template=QWEN_TEMPLATE,
    )  # fmt: skip
    return Qwen2_5_VLForConditionalGeneration(cfg), proc


def build_idefics3(path: Path) -> tuple[Any, Any]:
    """Idefics3: SigLIP tower (32 px tiles), pixel-shuffle connector (scale 2: 4 tokens per
    tile), image splitting (a 64 x 32 image is 2 tiles + the global one)."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    rows = [f"<row_{r}_col_{c}>" for r in range(1, 3) for c in range(1, 3)]
    specials = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>",
                "<|begin_of_text|>", *rows]  # fmt: skip
    tok = byte_tokenizer(specials)
    cfg = Idefics3Config(
        text_config=_llama_text(len(tok)),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8),
        scale_factor=2, image_token_id=tok.convert_tokens_to_ids("<image>"),
    )  # fmt: skip
    proc = Idefics3Processor(
        image_processor=Idefics3ImageProcessorPil(
            size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True
        ),
        tokenizer=tok, image_seq_len=4, chat_template=IDEFICS3_TEMPLATE,
    )  # fmt: skip
    return Idefics3ForConditionalGeneration(cfg), proc


def build_gemma3(path: Path) -> tuple[Any, Any]:
    """Gemma 3 / MedGemma: SigLIP tower (32 px, 8 px patches), 2 x 2 average pool -> 4 image
    soft tokens between ``<start_of_image>`` and ``<end_of_image>``; sliding + full layers."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    extra = {"boi_token": "<start_of_image>", "image_token": "<image_soft_token>",
             "eoi_token": "<end_of_image>"}  # fmt: skip
    tok = byte_tokenizer(["<start_of_turn>", "<end_of_turn>", *extra.values()], extra)
    text = dict(
        vocab_size=len(tok), hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=4,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=8,
        layer_types=["sliding_attention", "sliding_attention", "sliding_attention",
                     "full_attention"],
        max_position_embeddings=2048, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    cfg = Gemma3Config(
        text_config=text, vision_config=_siglip(), mm_tokens_per_image=4,
        boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"),
    )  # fmt: skip
    proc = Gemma3Processor(
        image_processor=Gemma3ImageProcessorPil(size={"height": 32, "width": 32}),
        tokenizer=tok, image_seq_length=4, chat_template=GEMMA3_TEMPLATE,
    )  # fmt: skip
    model = Gemma3ForConditionalGeneration(cfg)
    # transformers initialises the projection to zeros (image features would be all zero)
    model.model.multi_modal_projector.mm_input_projection_weight.data.normal_(0.0, 0.2)
    return model, proc


def build_mllama(path: Path) -> tuple[Any, Any]:
    """Llama 3.2 Vision: tiled vision tower (32 px tiles, up to 2), 5 text layers of which 1
    and 3 (0-based) are cross-attention layers: layer numbering counts them."""
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaProcessor
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

    tok = byte_tokenizer(["<|image|>", "<|python_tag|>", "<|start_header_id|>",
                          "<|end_header_id|>", "<|eot_id|>"])  # fmt: skip
    image_id = tok.convert_tokens_to_ids("<|image|>")
    text = dict(
        vocab_size=len(tok), hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=5,
        num_attention_heads=2, num_key_value_heads=2, cross_attention_layers=[1, 3],
        max_position_embeddings=2048, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_global_layers=1,
                  attention_heads=2, image_size=32, patch_size=8, max_num_tiles=2,
                  intermediate_layers_indices=[0], vision_output_dim=64,
                  supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]])  # fmt: skip
    cfg = MllamaConfig(text_config=text, vision_config=vision, image_token_index=image_id)
    model = MllamaForConditionalGeneration(cfg)
    for name, p in model.named_parameters():  # open the cross-attention gates (init: zeros,
        if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")):  # image ignored)
            p.data.fill_(1.0)
    proc = MllamaProcessor(
        image_processor=MllamaImageProcessorPil(size={"height": 32, "width": 32}, max_image_tiles=2),
        tokenizer=tok, chat_template=MLLAMA_TEMPLATE,
    )  # fmt: skip
    return model, proc


def build_paligemma(path: Path) -> tuple[Any, Any]:
    """PaliGemma: SigLIP tower (32 px, 16 image tokens), Gemma text model, prefix-LM; no chat
    template (as the pretrained checkpoints): the processor prepends the image tokens and
    ``<bos>``, and ends the prompt with a newline."""
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    tok = byte_tokenizer(["<image>"])
    text = dict(
        model_type="gemma", vocab_size=len(tok), hidden_size=WIDTH, intermediate_size=2 * WIDTH,
        num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
        max_position_embeddings=2048, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    cfg = PaliGemmaConfig(
        text_config=text, vision_config=_siglip(projection_dim=WIDTH),
        image_token_id=tok.convert_tokens_to_ids("<image>"), projection_dim=WIDTH,
    )  # fmt: skip
    image_proc = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    image_proc.image_seq_length = 16
    proc = PaliGemmaProcessor(image_processor=image_proc, tokenizer=tok)
    return PaliGemmaForConditionalGeneration(cfg), proc


INTERNVL_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<IMG_CONTEXT>\n{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}"
)


def build_internvl(path: Path) -> tuple[Any, Any]:
    """InternVL (transformers format): InternViT tower (32 px tiles, 8 px patches), pixel
    shuffle 0.5 -> 4 tokens per tile between ``<img>`` and ``</img>``, Qwen2 text model; the
    processor's dynamic tiling (the processor's default, as the real checkpoints) makes the
    token count depend on the image's shape."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
        GotOcr2ImageProcessorPil,
    )
    from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

    extra = {"start_image_token": "<img>", "end_image_token": "</img>",
             "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}  # fmt: skip
    tok = byte_tokenizer(["<|im_start|>", "<|im_end|>", *extra.values()], extra)
    text = dict(
        model_type="qwen2", vocab_size=len(tok), hidden_size=WIDTH, intermediate_size=2 * WIDTH,
        num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=2,
        max_position_embeddings=2048, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, image_size=[32, 32], patch_size=[8, 8])  # fmt: skip
    cfg = InternVLConfig(
        text_config=text, vision_config=vision, downsample_ratio=0.5, image_seq_length=4,
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), tie_word_embeddings=False,
    )  # fmt: skip
    proc = InternVLProcessor(
        image_processor=GotOcr2ImageProcessorPil(size={"height": 32, "width": 32}),
        video_processor=InternVLVideoProcessor(size={"height": 32, "width": 32}),
        tokenizer=tok, image_seq_length=4, chat_template=INTERNVL_TEMPLATE,
    )  # fmt: skip
    return InternVLForConditionalGeneration(cfg), proc


def build_llava_onevision(path: Path) -> tuple[Any, Any]:
    """LLaVA-OneVision: SigLIP tower (32 px, 8 px patches: 16 tokens per crop), AnyRes crops on
    a 32 px grid (up to 2 x 2) plus the base view, a learned newline per row of crops, Qwen2
    text model; the LLaVA chat format (the real checkpoints use ChatML)."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionProcessor,
    )
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )
    from transformers.models.llava_onevision.video_processing_llava_onevision import (
        LlavaOnevisionVideoProcessor,
    )

    tok = byte_tokenizer(["<image>", "<video>"])
    grid = [[32, 32], [32, 64], [64, 32], [64, 64]]
    text = dict(
        model_type="qwen2", vocab_size=len(tok), hidden_size=WIDTH, intermediate_size=2 * WIDTH,
        num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=2,
        max_position_embeddings=2048, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    cfg = LlavaOnevisionConfig(
        text_config=text, vision_config=_siglip(vision_use_head=False),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        video_token_id=tok.convert_tokens_to_ids("<video>"), image_grid_pinpoints=grid,
        vision_feature_layer=-1, vision_feature_select_strategy="full", tie_word_embeddings=False,
    )  # fmt: skip
    size = {"height": 32, "width": 32}
    proc = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessorPil(size=size, image_grid_pinpoints=grid),
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        tokenizer=tok, num_image_tokens=16, vision_feature_select_strategy="full",
        chat_template=LLAVA_TEMPLATE,
    )  # fmt: skip
    return LlavaOnevisionForConditionalGeneration(cfg), proc


#: family -> builder of ``(model, processor)``.
BUILDERS: dict[str, Callable[..., tuple[Any, Any]]] = {
    "llava": build_llava,
    "qwen2_5_vl": build_qwen2_5_vl,
    "idefics3": build_idefics3,
    "gemma3": build_gemma3,
    "mllama": build_mllama,
    "paligemma": build_paligemma,
    "internvl": build_internvl,
    "llava_onevision": build_llava_onevision,
}


def save_tiny_vlm(family: str, path: Path, seed: int = 0, **kw: Any) -> Path:
    """Save the tiny random model of ``family`` (:data:`BUILDERS`) with its processor to
    ``path``; weights drawn after ``torch.manual_seed(seed)``. ``kw`` go to the builder
    (LLaVA and Qwen2.5-VL take ``layers``, default 4). Nothing touches the network.

    Returns:
        ``path`` (created), loadable by ``AutoModelForImageTextToText`` and ``AutoProcessor``.
    """
    import torch

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model, proc = BUILDERS[family](path, **kw)
    model.eval().save_pretrained(path)
    proc.save_pretrained(path)
    return path
