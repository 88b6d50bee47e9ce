"""The extractor protocol: one forward pass -> pooled hidden states of every requested layer.

An extractor is built cheaply (no weights loaded) so that its :meth:`Extractor.fingerprint`
can be computed for a cache lookup; weights are loaded on the first :meth:`Extractor.extract`.

Layer identifiers (``LayerId``) are integers where a layer is a numbered block output
(0 = embedding / stem output, k = output of block or stage k, -1 = the last numbered layer)
and short strings for named outputs that are not a block (for example CLIP's ``"pooled"`` and
``"embeds"``). See DESIGN.md, "Conventions".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any, Protocol, runtime_checkable

import numpy as np

from medprobe.errors import ExtractorError, NonFiniteFeaturesError  # noqa: F401 (re-exported)

LayerId = int | str


@runtime_checkable
class Extractor(Protocol):
    """What the runner needs from a model.

    Built by the registry entry of ``cfg.model.kind``: ``from_config(cfg.model, prompt_text)``
    (config read by attribute only). Optional, used when present: ``load_info()`` (what was
    loaded, for ``results.json``), ``rendered_prompt()`` (the exact text a language model
    read; its fingerprint then has a ``"rendered_prompt"`` key) and ``collate(samples)`` (the
    DataLoader's ``collate_fn`` over a list of :meth:`preprocess` outputs, for models whose
    processor works per batch: chat-template VLMs). Extractors of Hugging Face
    checkpoints derive from :class:`medprobe.extractors.hf.HFExtractor`.

    Attributes:
        name: the extractor kind (registry key), e.g. ``"effnet_lite0"``, ``"clip"`` (which
            builds both ``model=clip`` and ``model=plip``); the fingerprint's ``"extractor"``.
    """

    name: str

    def layers(self) -> list[LayerId]:
        """All layers this model can return, in forward order."""
        ...

    def fingerprint(self) -> dict[str, Any]:
        """JSON-serialisable description of everything that changes the features.

        Must not load weights. Includes model id and revision or weights-file hash, dtype,
        pooling, preprocessing, rendered prompt (if any) and a code version.
        """
        ...

    def preprocess(self, image: Any) -> Any:
        """One RGB ``PIL.Image`` -> model input for one example (runs in DataLoader workers)."""
        ...

    def extract(self, batch: Any, layers: Sequence[LayerId]) -> dict[LayerId, np.ndarray]:
        """A collated batch -> ``{layer: (B, D) float32 array}`` for every requested layer.

        All layers come from one forward pass. Raises :class:`ExtractorError` when a layer
        is unknown or a layer's features are non-finite or all zero.
        """
        ...


def resolve_layers(
    requested: Sequence[LayerId] | LayerId | str, available: Sequence[LayerId]
) -> list[LayerId]:
    """Map user layer ids (``-1``, ``"all"``, ints given as strings) to available ones.

    Args:
        requested: one layer, a list of layers, or ``"all"``.
        available: the extractor's :meth:`Extractor.layers`.

    Returns:
        Distinct layers in the order of ``available``.

    Raises:
        ExtractorError: a layer is not available (the message lists the valid ones).
    """
    if isinstance(requested, str) and requested == "all":
        return list(available)
    if requested is None or isinstance(requested, bool):
        raise ExtractorError(f"layer {requested!r} is not a layer; valid layers: {list(available)}")
    if isinstance(requested, (int, str)):
        requested = [requested]
    ints = [a for a in available if isinstance(a, int)]
    out: set[LayerId] = set()
    for r in requested:
        if r is None or isinstance(r, bool):
            raise ExtractorError(f"layer {r!r} is not a layer; valid layers: {list(available)}")
        r2: LayerId = r
        if isinstance(r, str) and r.lstrip("-").isdigit():
            r2 = int(r)
        if isinstance(r2, int) and r2 < 0 and ints:
            if -r2 > len(ints):
                raise ExtractorError(f"layer {r} out of range; valid layers: {list(available)}")
            r2 = sorted(ints)[r2]
        if r2 not in available:
            raise ExtractorError(f"unknown layer {r!r}; valid layers: {list(available)}")
        out.add(r2)
    return [a for a in available if a in out]


def check_features(feats: Mapping[LayerId, np.ndarray], batch_size: int) -> None:
    """Raise :class:`ExtractorError` naming the layer if features are malformed.

    Each array must be 2-D with ``batch_size`` rows, finite, and not all zero.
    """
    for layer, arr in feats.items():
        if arr.ndim != 2 or arr.shape[0] != batch_size:
            raise ExtractorError(
                f"layer {layer}: expected ({batch_size}, D) features, got {arr.shape}"
            )
        finite = np.isfinite(arr).all(axis=1)
        if not finite.all():
            rows = np.flatnonzero(~finite).tolist()
            raise NonFiniteFeaturesError(
                f"layer {layer}: non-finite features (nan/inf) in {len(rows)} of the batch's "
                f"{batch_size} images",
                layer,
                rows,
            )
        if not np.any(arr):
            raise ExtractorError(f"layer {layer}: features are all zero in this batch")


def features_to_numpy(
    feats: Mapping[LayerId, Any], wanted: Sequence[LayerId], batch_size: int
) -> dict[LayerId, np.ndarray]:
    """The ``wanted`` layers of ``feats`` (``(batch_size, D)`` torch tensors, any device and
    dtype) as float32 NumPy arrays on the CPU, checked by :func:`check_features`.

    Raises:
        ExtractorError / NonFiniteFeaturesError: as :func:`check_features`.
    """
    import torch

    result = {
        layer: feats[layer].detach().to(device="cpu", dtype=torch.float32).numpy()
        for layer in wanted
    }
    check_features(result, batch_size)
    return result


def option_value(value: Any) -> Any:
    """A config option as its plain value: an enum member -> ``.value``, anything else as is.

    Config enums are ``(str, Enum)`` today, whose ``str()`` is ``"DType.float32"``, not the
    value; the typed config's ``StrEnum`` members pass through unchanged in value.
    """
    return value.value if isinstance(value, Enum) else value


def layer_filename(layer: LayerId) -> str:
    """File stem for a layer: zero-padded integers sort numerically (``layer_008``)."""
    if isinstance(layer, int):
        return f"layer_{layer:03d}" if layer >= 0 else f"layer_m{-layer:03d}"
    return f"layer_{layer}"
