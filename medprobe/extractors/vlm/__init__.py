"""Generic chat-template vision-language models (``model.kind=vlm``): the extractor, the
family table and the memory plan. Documentation: ``docs/models.md``.

- :mod:`~medprobe.extractors.vlm.families`: per-family facts (image tokens, layer numbering,
  truncation).
- :mod:`~medprobe.extractors.vlm.extractor`: :class:`VLMExtractor` and ``from_config`` (the
  ``model.kind=vlm`` registry entry).
- :mod:`~medprobe.extractors.vlm.plan`: published checkpoint shapes and the weight-memory plan
  on the meta device (``medprobe plan model=<name>``).
"""

from __future__ import annotations

from medprobe.extractors.vlm.extractor import CODE_VERSION, POOLINGS, VLMExtractor, from_config
from medprobe.extractors.vlm.families import FAMILIES, FINAL_NORM, VISION

__all__ = [
    "CODE_VERSION",
    "FAMILIES",
    "FINAL_NORM",
    "POOLINGS",
    "VISION",
    "VLMExtractor",
    "from_config",
]
