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

Preprocessing is the checkpoint's own ``CLIPImageProcessor`` (for CLIP and PLIP: resize the
shortest side to 224 with bicubic resampling, center crop 224 x 224, scale to [0, 1],
normalise with the OpenAI CLIP mean/std). Without torchvision, transformers uses its PIL backend
(``CLIPImageProcessorPil``); the backend class is part of the fingerprint because the two
backends' resize outputs are not bit-identical.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medprobe.extractors.base import (
    ExtractorError,
    LayerId,
    check_features,
    file_sha256,
    resolve_layers,
)
from medprobe.extractors.hub import HubSource, jsonable

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

#: Bumped whenever a change in this file changes the features (part of the fingerprint).
CODE_VERSION = "clip-1"

DTYPES = ("float32", "bfloat16", "float16")
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
_WEIGHT_GLOBS = ("*.safetensors", "*.bin")


class CLIPExtractor(HubSource):
    """Hidden states of a CLIP vision tower (see the module docstring for the layers).

    Construction is cheap: the config is read on the first :meth:`layers` / :meth:`fingerprint`
    call, the image processor on the first :meth:`preprocess` / :meth:`fingerprint`, and the
    weights only on the first :meth:`extract`.

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

    def __init__(
        self,
        hf_id: str,
        revision: str | None = None,
        dtype: str = "float32",
        device: str = "auto",
        pooling: str = "cls",
    ) -> None:
        if not isinstance(hf_id, (str, Path)) or not str(hf_id).strip():
            raise ExtractorError(
                f"clip: model.hf_id must be a hub id or a local directory, got {hf_id!r}"
            )
        if dtype not in DTYPES:
            raise ExtractorError(f"clip: unknown dtype {dtype!r}; valid dtypes: {list(DTYPES)}")
        if pooling == "default":
            pooling = "cls"
        if pooling not in POOLINGS:
            raise ExtractorError(
                f"clip: unknown pooling {pooling!r}; valid poolings: {list(POOLINGS)}"
            )
        if not isinstance(device, str) or not device:
            raise ExtractorError(
                f"clip: device must be a string such as 'auto', 'cpu', 'cuda:0', got {device!r}"
            )
        self.hf_id = str(hf_id)
        self.revision = revision or None
        self.dtype = dtype
        self.device = device
        self.pooling = pooling
        self._config: Any = None
        self._processor: Any = None
        self._model: Any = None
        self._torch_device: Any = None
        self._fingerprint: dict[str, Any] | None = None

    # ------------------------------------------------------------------ sources

    def config(self) -> Any:
        """The checkpoint's ``CLIPConfig`` (read once; no weights).

        Raises:
            ExtractorError: missing local directory, or the config cannot be read.
        """
        if self._config is None:
            from transformers import CLIPConfig

            src = self._source()
            try:
                self._config = CLIPConfig.from_pretrained(src, revision=self.revision or "main")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise self._load_error("the CLIP config", exc) from None
        return self._config

    def processor(self) -> Any:
        """The checkpoint's CLIP image processor (PIL backend when torchvision is absent).

        Raises:
            ExtractorError: missing local directory or ``preprocessor_config.json``.
        """
        if self._processor is None:
            from transformers.utils import is_torchvision_available

            proc_cls: Any
            if is_torchvision_available():
                from transformers import CLIPImageProcessor as proc_cls
            else:  # the class CLIPImageProcessor falls back to (without the warning)
                from transformers.models.clip.image_processing_pil_clip import (
                    CLIPImageProcessorPil as proc_cls,
                )
            src = self._source()
            try:
                self._processor = proc_cls.from_pretrained(src, revision=self.revision or "main")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise self._load_error("the image processor", exc) from None
        return self._processor

    # ------------------------------------------------------------------ protocol

    def layers(self) -> list[LayerId]:
        """``[0, 1, ..., L, "pooled", "embeds"]`` with ``L = vision_config.num_hidden_layers``.

        Reads only the config (12 blocks for ViT-B/32, so 15 layers in all).

        Raises:
            ExtractorError: the config cannot be read.
        """
        n = int(self.config().vision_config.num_hidden_layers)
        return [*range(n + 1), *NAMED_LAYERS]

    def _weights_fingerprint(self, local: Path) -> dict[str, str]:
        """``{file name: sha256}`` of a local directory's weight files and ``config.json``."""
        files = sorted({f for g in _WEIGHT_GLOBS for f in local.glob(g) if f.is_file()})
        if not files:
            raise ExtractorError(
                f"clip: no weight files ({', '.join(_WEIGHT_GLOBS)}) in local model directory {local}"
            )
        cfg = local / "config.json"
        if cfg.is_file():
            files.append(cfg)
        return {f.name: file_sha256(f) for f in files}

    def preprocessing(self) -> dict[str, Any]:
        """The image processor's settings that change pixel values (JSON types).

        Includes ``backend`` (the processor class name: ``CLIPImageProcessor`` with torchvision,
        ``CLIPImageProcessorPil`` without).
        """
        proc = self.processor()
        settings = proc.to_dict()
        out: dict[str, Any] = {"backend": type(proc).__name__}
        for key in _PREPROCESS_KEYS:
            out[key] = jsonable(settings.get(key))
        return out

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
        if self._fingerprint is None:
            local = self._local_dir()
            fp: dict[str, Any] = {
                "extractor": self.name,
                "code_version": CODE_VERSION,
                "hf_id": self.hf_id,
                "revision": self.revision,
            }
            if local is not None:
                fp["source"] = "local"
                fp["weights"] = self._weights_fingerprint(local)
            else:
                fp["source"] = "hub"
                fp["resolved_revision"] = self._resolved_revision() or self.revision or "main"
            fp["dtype"] = self.dtype
            fp["pooling"] = self.pooling
            fp["preprocessing"] = self.preprocessing()
            self._fingerprint = fp
        return dict(self._fingerprint)

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

    def _resolve_device(self) -> torch.device:
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            dev = torch.device(self.device)
        except (RuntimeError, ValueError) as exc:
            raise ExtractorError(f"clip: invalid device {self.device!r}: {exc}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ExtractorError(
                f"clip: device {self.device!r} requested but CUDA is not available"
            )
        return dev

    def load(self) -> Any:
        """Load the ``CLIPModel`` (eval mode, on the device, in ``dtype``); idempotent.

        Raises:
            ExtractorError: missing local directory or weights that cannot be loaded.
        """
        if self._model is None:
            import torch
            from transformers import CLIPModel

            src = self._source()
            dev = self._resolve_device()
            torch_dtype = getattr(torch, self.dtype)
            rev = self.revision or "main"
            if self._local_dir() is None:
                rev = self._resolved_revision() or rev  # load exactly what was fingerprinted
            try:
                model: Any = CLIPModel.from_pretrained(src, revision=rev, dtype=torch_dtype)
            except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
                raise self._load_error("the CLIP weights", exc) from None
            model.text_model = None  # only the vision tower and its projection are used
            model.text_projection = None
            self._model = model.to(dev).eval()
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
        result = {
            layer: feats[layer].detach().to(device="cpu", dtype=torch.float32).numpy()
            for layer in wanted
        }
        check_features(result, batch.shape[0])
        return result

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the loaded model (DataLoader workers only need the processor)."""
        state = self.__dict__.copy()
        state["_model"] = None
        state["_torch_device"] = None
        return state

    def __repr__(self) -> str:
        return (
            f"CLIPExtractor(hf_id={self.hf_id!r}, revision={self.revision!r}, dtype={self.dtype!r}, "
            f"device={self.device!r}, pooling={self.pooling!r})"
        )


def from_config(cfg: Any, prompt: str = "") -> CLIPExtractor:
    """Build a :class:`CLIPExtractor` from a model config node (no weights loaded).

    Args:
        cfg: object with attributes ``hf_id`` and optionally ``revision``, ``dtype``,
            ``device``, ``pooling`` (``"default"`` means ``"cls"``).
        prompt: ignored (CLIP's image tower takes no text).

    Raises:
        ExtractorError: missing or empty ``hf_id``, a local directory that does not exist
            (the message names it), unknown dtype/pooling.
    """
    del prompt
    hf_id = getattr(cfg, "hf_id", None)
    if not hf_id or not isinstance(hf_id, (str, Path)):
        raise ExtractorError(
            f"clip: model.hf_id must be a hub id or a local directory, got {hf_id!r}"
        )
    pooling = getattr(cfg, "pooling", None) or "cls"
    ext = CLIPExtractor(
        hf_id=str(hf_id),
        revision=getattr(cfg, "revision", None),
        dtype=getattr(cfg, "dtype", None) or "float32",
        device=getattr(cfg, "device", None) or "auto",
        pooling=pooling,
    )
    ext._local_dir()  # a missing local directory fails here, with its path
    return ext
