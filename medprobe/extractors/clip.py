"""CLIP ViT image encoders (OpenAI CLIP ViT-B/32, PLIP) through transformers' ``CLIPModel``.

Models: ``openai/clip-vit-base-patch32`` and ``vinid/plip`` (PLIP is a CLIP ViT-B/32 fine-tuned
on pathology image-text pairs, same architecture). Any ``CLIPModel`` checkpoint works, from the
hub or from a local directory written by ``save_pretrained``.

Layers (checked on transformers 5.24):

* ``0``: ``hidden_states[0]`` of the vision tower = the input of encoder block 1, i.e. the patch
  + class + position embeddings **after** CLIP's ``pre_layrnorm`` (not the raw embeddings).
* ``k`` (1..L): ``hidden_states[k]`` = the output of encoder block ``k``. ``hidden_states[L]``
  equals ``last_hidden_state``; ``post_layernorm`` is *not* applied to it.
* ``"pooled"``: ``vision_model(...).pooler_output`` = ``post_layernorm`` of the CLS token of
  block ``L``'s output (width ``vision_config.hidden_size``, 768 for ViT-B/32).
* ``"embeds"``: ``visual_projection(pooled)``, the joint image-text embedding (width
  ``projection_dim``, 512 for ViT-B/32), what ``CLIPModel.get_image_features(...).pooler_output``
  returns in transformers 5 (not L2-normalised).

Pooling of the numbered layers: ``"cls"`` takes token 0 (the class token) of
``hidden_states[k]``; ``"mean"`` averages the patch tokens 1..N (the class token excluded).
``"pooled"`` and ``"embeds"`` do not depend on the pooling setting.

Preprocessing is the checkpoint's own ``CLIPImageProcessor`` settings (for CLIP and PLIP:
resize the shortest side to 224 with bicubic resampling, center crop 224 x 224, scale to
[0, 1], normalise with the OpenAI CLIP mean/std), always run by transformers' PIL backend
(``CLIPImageProcessorPil``), also when torchvision is installed (transformers would switch to
its torchvision backend, whose resize is not bit-identical); the backend class is part of the
fingerprint.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medprobe.errors import ExtractorError
from medprobe.extractors.base import LayerId, features_to_numpy, resolve_layers
from medprobe.extractors.hf import WEIGHT_GLOBS, HFExtractor
from medprobe.hashing import file_sha256

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

#: Bumped whenever a change in this file changes the features (part of the fingerprint).
CODE_VERSION = "clip-1"

POOLINGS = ("cls", "mean")
NAMED_LAYERS: tuple[str, ...] = ("pooled", "embeds")

# Processor settings that change pixel values (recorded in the fingerprint).
_PREPROCESS_KEYS = (
    "do_convert_rgb",
    "do_resize",
    "size",
    "resample",
    "do_center_crop",
    "crop_size",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
)


class CLIPExtractor(HFExtractor):
    """Hidden states of a CLIP vision tower (see the module docstring for the layers).

    Construction is cheap: the config is read on the first :meth:`layers` / :meth:`fingerprint`
    call, the image processor on the first :meth:`preprocess` / :meth:`fingerprint`, and the
    weights only on the first :meth:`extract`. Loading, revision, fingerprint of the checkpoint
    and device placement come from :class:`~medprobe.extractors.hf.HFExtractor`.

    Args:
        hf_id: hub id (``"openai/clip-vit-base-patch32"``, ``"vinid/plip"``) or a local
            directory written by ``save_pretrained``.
        revision: hub branch, tag or commit (ignored for a local directory).
        dtype: weights and compute dtype, one of ``"float32"``, ``"bfloat16"``, ``"float16"``.
            Features are always returned as float32.
        device: ``"auto"`` (cuda if available, else cpu) or a torch device string.
        pooling: ``"cls"`` (class token) or ``"mean"`` (mean of the patch tokens) for the
            numbered layers; ``"default"`` means ``"cls"``.

    Raises:
        ExtractorError: empty ``hf_id``, unknown dtype, pooling or device.
    """

    name = "clip"
    label = "CLIP"
    code_version = CODE_VERSION
    poolings = POOLINGS
    # CLIPModel checkpoints only (CLIP, PLIP); the vision tower is moved to one device
    model_types = ("clip",)
    uses_device_map = False
    # a local directory: plain sha256 of its weights and config.json, under "weights"
    fingerprint_globs = (*WEIGHT_GLOBS, "config.json")
    fingerprint_files_key = "weights"
    transient = ("_model", "_torch_device")

    def __init__(
        self,
        hf_id: str,
        revision: str | None = None,
        dtype: str = "float32",
        device: str = "auto",
        pooling: str = "cls",
    ) -> None:
        super().__init__(hf_id, revision=revision, dtype=dtype, device=device, pooling=pooling)
        self._torch_device: Any = None

    # ------------------------------------------------------------------ sources

    def build_processor(self) -> Any:
        """The checkpoint's CLIP image processor, always its PIL backend
        (``CLIPImageProcessorPil``): transformers 5.x picks the torchvision one whenever
        torchvision is importable, and the two do not resize bit-identically.

        Raises:
            ExtractorError: missing local directory or ``preprocessor_config.json``.
        """
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        return self.pretrained(CLIPImageProcessorPil, "the image processor")

    # ------------------------------------------------------------------ protocol

    def layers(self) -> list[LayerId]:
        """``[0, 1, ..., L, "pooled", "embeds"]`` with ``L = vision_config.num_hidden_layers``.

        Reads only the config (12 blocks for ViT-B/32, so 15 layers in all).

        Raises:
            ExtractorError: the config cannot be read.
        """
        n = int(self.config().vision_config.num_hidden_layers)
        return [*range(n + 1), *NAMED_LAYERS]

    def file_digest(self, path: Any) -> str:
        """Plain hex sha256 of every byte (CLIP checkpoints are small)."""
        return file_sha256(path)

    def preprocessing(self) -> dict[str, Any]:
        """The image processor's settings that change pixel values (JSON types).

        Includes ``backend`` (the processor class name, pinned: ``CLIPImageProcessorPil``).
        """
        return self.processor_settings(self.processor(), _PREPROCESS_KEYS)

    def feature_settings(self) -> dict[str, Any]:
        """``dtype``, ``pooling``, ``preprocessing`` (see :meth:`preprocessing`)."""
        return {
            "dtype": self.dtype,
            "pooling": self.pooling,
            "preprocessing": self.preprocessing(),
        }

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes the features, as JSON types. Never loads weights.

        Keys: ``extractor``, ``code_version``, ``hf_id``, ``revision``, ``source``
        (``"local"`` or ``"hub"``); for a local directory ``weights`` = ``{file: sha256}`` of
        its ``*.safetensors`` / ``*.bin`` and ``config.json``; for a hub id
        ``resolved_revision`` = the cached commit when the HF cache has one, else the
        revision string (``"main"`` when none was given); ``dtype``; ``pooling``;
        ``preprocessing`` (see :meth:`preprocessing`).

        Raises:
            ExtractorError: missing local directory, no weight files in it, or the image
                processor config cannot be read.
        """
        return super().fingerprint()

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One ``PIL.Image`` -> ``(3, H, W)`` float32 ``pixel_values`` (224 x 224 for CLIP).

        Uses the checkpoint's image processor (see the module docstring). Safe to call in
        DataLoader workers: pickling the extractor drops a loaded model.

        Raises:
            ExtractorError: the image processor cannot be loaded.
        """
        if image.mode != "RGB":
            image = image.convert("RGB")
        pv = self.processor()(images=image, return_tensors="pt")["pixel_values"]
        return pv[0].float()

    def load(self) -> Any:
        """Load the ``CLIPModel`` (eval mode, on the device, in ``dtype``); idempotent.

        Only the vision tower and its projection are kept.

        Raises:
            ExtractorError: missing local directory or weights that cannot be loaded.
        """
        if self._model is None:
            from transformers import CLIPModel

            dev = self.torch_device()
            model, _ = self.load_pretrained(CLIPModel, "the CLIP weights")
            model.text_model = None  # only the vision tower and its projection are used
            model.text_projection = None
            self._model = self.place(model)
            self._torch_device = dev
            log.info("clip: loaded %s (%s) on %s", self.hf_id, self.dtype, dev)
        return self._model

    def extract(
        self, batch: torch.Tensor, layers: Sequence[LayerId] | LayerId | str
    ) -> dict[LayerId, np.ndarray]:
        """``(B, 3, H, W)`` pixel values -> ``{layer: (B, D) float32 array}``.

        One forward pass of the vision tower returns all requested layers. ``D`` is
        ``vision_config.hidden_size`` for the numbered layers and ``"pooled"``,
        ``projection_dim`` for ``"embeds"``. Keys are the layers as resolved by
        :func:`~medprobe.extractors.base.resolve_layers` (so ``-1`` comes back as ``L``).
        Loads the weights on the first call.

        Raises:
            ExtractorError: unknown layer (the message lists the valid ones), a batch that is
                not ``(B, 3, H, W)``, weights that cannot be loaded, or non-finite / all-zero
                features.
        """
        import torch

        wanted = resolve_layers(layers, self.layers())
        if not isinstance(batch, torch.Tensor) or batch.ndim != 4 or batch.shape[1] != 3:
            shape = tuple(batch.shape) if hasattr(batch, "shape") else type(batch).__name__
            raise ExtractorError(f"clip: expected a (B, 3, H, W) tensor batch, got {shape}")
        model = self.load()
        numbered = [w for w in wanted if isinstance(w, int)]
        x = batch.to(device=self._torch_device, dtype=model.dtype)
        with torch.inference_mode():
            out = model.vision_model(pixel_values=x, output_hidden_states=bool(numbered))
            feats: dict[LayerId, torch.Tensor] = {}
            for layer in numbered:
                hs = out.hidden_states[layer]
                feats[layer] = hs[:, 0] if self.pooling == "cls" else hs[:, 1:].mean(dim=1)
            if "pooled" in wanted:
                feats["pooled"] = out.pooler_output
            if "embeds" in wanted:
                feats["embeds"] = model.visual_projection(out.pooler_output)
        return features_to_numpy(feats, wanted, batch.shape[0])

    def __repr__(self) -> str:
        return (
            f"CLIPExtractor(hf_id={self.hf_id!r}, revision={self.revision!r}, dtype={self.dtype!r}, "
            f"device={self.device!r}, pooling={self.pooling!r})"
        )


def from_config(cfg: Any, prompt: str = "") -> CLIPExtractor:
    """Build a :class:`CLIPExtractor` from a model config node (no weights loaded).

    Args:
        cfg: the model config (``medprobe.config.ModelConfig``: attributes ``hf_id``,
            ``revision``, ``dtype``, ``device``, ``pooling``; ``"default"`` pooling means
            ``"cls"``). Serves ``model=clip`` and ``model=plip`` (``cfg.kind == "clip"``).
        prompt: ignored (CLIP's image tower takes no text).

    Raises:
        ExtractorError: missing or empty ``hf_id``, a local directory that does not exist
            (the message names it), unknown dtype/pooling.
    """
    del prompt
    return CLIPExtractor.from_model_config(cfg)
