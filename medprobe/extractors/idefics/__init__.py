"""IDEFICS-9B / 80B (open Flamingo reproduction): extractor, prompts, memory and placement plans.

One job per module:

- :mod:`~medprobe.extractors.idefics.prompt`: prompt template -> the text the model reads.
- :mod:`~medprobe.extractors.idefics.architecture`: layer names, published checkpoint shapes,
  the decoder depth a set of layers needs.
- :mod:`~medprobe.extractors.idefics.memory`: parameter counts and weight bytes (meta device).
- :mod:`~medprobe.extractors.idefics.placement`: where a load puts each module (device plan).
- :mod:`~medprobe.extractors.idefics.extractor`: :class:`IdeficsExtractor` and ``from_config``
  (the ``model.kind=idefics`` registry entry).
- :mod:`~medprobe.extractors.idefics.plan`: the plan as text and the ``medprobe plan`` command
  line (``python -m medprobe.extractors.idefics plan|memory ...``).

The names below are re-exported, so ``from medprobe.extractors.idefics import X`` keeps working.
Documentation: ``docs/idefics.md``.
"""

from __future__ import annotations

from medprobe.extractors.hf import DTYPES, QUANTIZATIONS, parse_max_memory
from medprobe.extractors.idefics.architecture import (
    FINAL_NORM,
    IMAGE_LATENTS,
    MODEL_ALIASES,
    PUBLISHED_CONFIGS,
    kept_depth,
)
from medprobe.extractors.idefics.extractor import (
    CODE_VERSION,
    POOLINGS,
    IdeficsExtractor,
    from_config,
)
from medprobe.extractors.idefics.memory import count_parameters, memory_plan, weight_bytes
from medprobe.extractors.idefics.placement import (
    PLACEMENT_STRATEGIES,
    device_plan,
    placement,
)
from medprobe.extractors.idefics.plan import format_plan, main, medprobe_command, memory_table
from medprobe.extractors.idefics.prompt import (
    END_OF_UTTERANCE,
    FAKE_TOKEN,
    IMAGE_SLOT,
    IMAGE_TOKEN,
    chat_template,
    interleave,
    render_prompt,
    split_template,
)

__all__ = [
    "CODE_VERSION",
    "DTYPES",
    "END_OF_UTTERANCE",
    "FAKE_TOKEN",
    "FINAL_NORM",
    "IMAGE_LATENTS",
    "IMAGE_SLOT",
    "IMAGE_TOKEN",
    "MODEL_ALIASES",
    "PLACEMENT_STRATEGIES",
    "POOLINGS",
    "PUBLISHED_CONFIGS",
    "QUANTIZATIONS",
    "IdeficsExtractor",
    "chat_template",
    "count_parameters",
    "device_plan",
    "format_plan",
    "from_config",
    "interleave",
    "kept_depth",
    "main",
    "medprobe_command",
    "memory_plan",
    "memory_table",
    "parse_max_memory",
    "placement",
    "render_prompt",
    "split_template",
    "weight_bytes",
]
