"""Shared base of the vision encoders that live in other libraries than transformers (timm,
open_clip), on top of :class:`~medprobe.extractors.hf.HFExtractor` (source, revision, local-file
digests, dtype, device).

* **Files.** ``hf_id`` is a local directory in the library's own Hugging Face format (timm:
  ``config.json`` + weights, as ``timm.models.push_to_hf.save_for_hf`` writes; open_clip:
  ``open_clip_config.json`` + weights) or a hub id. A hub id is read from the local HF cache
  at the commit its revision resolves to; files missing there are fetched with
  ``huggingface_hub`` (which fails cleanly under ``HF_HUB_OFFLINE=1``). The library is then
  pointed at that folder, never at the network.
* **Fingerprint.** :meth:`LibraryExtractor.source_fingerprint` replaces the transformers version
  of the base by ``library`` and the library's version (its model code and transforms make
  the features) plus torchvision's (the transforms run on it).
* **Layers.** :func:`forward_with_hooks`: one forward pass; a pre-hook on block 1 records
  layer 0 (the tokens entering the blocks), a hook on block ``k`` its output (layer ``k``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from medprobe.errors import ExtractorError
from medprobe.extractors.base import LayerId, features_to_numpy, resolve_layers
from medprobe.extractors.hf import HFExtractor, jsonable
from medprobe.extractors.vision import POOLINGS, pool_tokens

if TYPE_CHECKING:
    import torch


def import_object(spec: str) -> Any:
    """``"package.module:attr"`` -> the object (model keyword arguments that name classes,
    e.g. Virchow's ``mlp_layer: timm.layers:SwiGLUPacked``).

    Raises:
        ExtractorError: malformed or unimportable.
    """
    import importlib

    module, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ExtractorError(
            f"cannot import {spec!r} (write 'package.module:Name'): {exc}"
        ) from None


def resolve_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Model keyword arguments with every ``"module:attr"`` string imported
    (:func:`import_object`); other values unchanged."""
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        is_ref = isinstance(value, str) and ":" in value and " " not in value
        out[str(key)] = import_object(value) if is_ref else value
    return out


def forward_with_hooks(
    blocks: Sequence[Any], wanted: Iterable[int], run: Callable[[], Any], batch_first: bool = True
) -> tuple[dict[int, torch.Tensor], Any]:
    """Run ``run()`` once, recording the token states of the ``wanted`` layers.

    Args:
        blocks: the model's transformer blocks, in order (layer ``k`` = output of
            ``blocks[k - 1]``; layer 0 = the input of ``blocks[0]``).
        wanted: layer numbers in ``0..len(blocks)``.
        run: the forward pass (a closure); its result is returned.
        batch_first: the blocks see ``(B, T, D)``; else ``(T, B, D)``, transposed back.

    Returns:
        ``({layer: (B, T, D) tensor}, run())``.
    """
    captured: dict[int, torch.Tensor] = {}

    def keep(layer: int, value: Any) -> None:
        t = value[0] if isinstance(value, tuple) else value
        captured[layer] = t if batch_first else t.transpose(0, 1)

    handles = []
    for layer in sorted(set(wanted)):
        if layer == 0:
            handles.append(blocks[0].register_forward_pre_hook(lambda m, a: keep(0, a[0])))
        else:
            blk = blocks[layer - 1]
            handles.append(
                blk.register_forward_hook(lambda m, a, o, k=layer: keep(k, o))  # type: ignore[misc]
            )
    try:
        result = run()
    finally:
        for h in handles:
            h.remove()
    return captured, result


class LibraryExtractor(HFExtractor):
    """Base of :class:`~medprobe.extractors.timm_models.TimmExtractor` and
    :class:`~medprobe.extractors.openclip.OpenCLIPExtractor` (module docstring).

    Args:
        hf_id, revision, dtype, device, pooling: as :class:`HFExtractor` (poolings ``cls``,
            ``mean_patch``, ``cls_mean_patch``; ``default`` = ``cls`` where the model has a
            class token, else ``mean_patch``).
        model_kwargs: extra keyword arguments for the library's model constructor (``"module:attr"``
            strings are imported: :func:`resolve_kwargs`); they enter the fingerprint.

    Raises:
        ExtractorError: as :class:`HFExtractor`; ``model_kwargs`` that is not a mapping.
    """

    #: The library's import name (its version enters the fingerprint).
    library: ClassVar[str] = ""
    #: The library's config file in a checkpoint folder.
    config_file: ClassVar[str] = "config.json"
    #: The weight files the library reads.
    weight_globs: ClassVar[tuple[str, ...]] = ("*.safetensors", "*.bin")
    poolings = ("default", *POOLINGS)
    uses_device_map = False
    fingerprint_files_key = "files"
    transient = ("_model", "_torch_device", "_meta", "_transform")

    def __init__(
        self,
        hf_id: str,
        revision: str | None = None,
        dtype: str = "float32",
        device: str = "auto",
        pooling: str = "default",
        model_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(hf_id, revision=revision, dtype=dtype, device=device, pooling=pooling)
        if model_kwargs is not None and not isinstance(model_kwargs, Mapping):
            raise ExtractorError(
                f"{self.name}: model.model_kwargs must be a mapping, got {model_kwargs!r}"
            )
        self.model_kwargs: dict[str, Any] = {
            str(k): jsonable(v) for k, v in (model_kwargs or {}).items()
        }
        self._pooling_given = self.pooling
        self._pooling_resolved = False
        self._torch_device: Any = None
        self._meta: Any = None
        self._transform: Any = None

    @classmethod
    def config_kwargs(cls, cfg: Any) -> dict[str, Any]:
        """:meth:`HFExtractor.config_kwargs` + ``model_kwargs`` (``cfg.model_kwargs``)."""
        kwargs = super().config_kwargs(cfg)
        mk = cfg.model_kwargs
        kwargs["model_kwargs"] = dict(mk.items()) if isinstance(mk, Mapping) else mk
        return kwargs

    # ------------------------------------------------------------------ files

    def resolved_revision(self) -> str | None:
        """The commit a hub id resolves to in the local HF cache (found through the library's
        ``config_file``), else ``None``."""
        try:
            from huggingface_hub import try_to_load_from_cache

            hit = try_to_load_from_cache(self.hf_id, self.config_file, revision=self.revision)
        except Exception:  # noqa: BLE001 - a malformed id or cache means "unknown"
            return None
        if not isinstance(hit, str):
            return None
        parts = Path(hit).parts
        return parts[-2] if len(parts) >= 3 and parts[-3] == "snapshots" else None

    def folder(self, weights: bool = False) -> Path:
        """The checkpoint folder: the local directory, or the hub id's snapshot folder in the
        HF cache (with the weights when ``weights``; missing files are fetched, which fails
        offline).

        Raises:
            ExtractorError: the files are not cached and cannot be fetched; a local directory
                without the config file or (``weights``) without a weight file.
        """
        local = self.local_dir()
        if local is None:
            local = self._hub_folder(weights)
        if not (local / self.config_file).is_file():
            raise ExtractorError(f"{self.name}: no {self.config_file} in {local}")
        if weights and not any(f.is_file() for g in self.weight_globs for f in local.glob(g)):
            raise ExtractorError(
                f"{self.name}: no weight files ({', '.join(self.weight_globs)}) in {local}"
            )
        return local

    def _hub_folder(self, weights: bool) -> Path:
        from huggingface_hub import hf_hub_download, snapshot_download

        rev = self.load_revision()
        try:
            if weights:
                return Path(
                    snapshot_download(
                        self.hf_id,
                        revision=rev,
                        allow_patterns=[self.config_file, *self.weight_globs],
                    )
                )
            return Path(hf_hub_download(self.hf_id, self.config_file, revision=rev)).parent
        except Exception as exc:  # noqa: BLE001 - hub errors (offline, gated, typo) -> one line
            what = "weights" if weights else self.config_file
            raise self.load_error(f"the {self.label} {what}", exc) from None

    def build_config(self) -> Any:
        """The library's JSON config of the checkpoint (a dict)."""
        path = self.folder() / self.config_file
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ExtractorError(f"{self.name}: cannot read {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ExtractorError(f"{self.name}: {path} is not a JSON object")
        return data

    def source_fingerprint(self) -> dict[str, Any]:
        """:meth:`HFExtractor.source_fingerprint` with ``library``, its version and
        torchvision's instead of transformers' version."""
        import importlib

        fp = super().source_fingerprint()
        fp.pop("transformers", None)
        lib = importlib.import_module(self.library)
        try:
            import torchvision

            tv: str | None = torchvision.__version__
        except ImportError:  # pragma: no cover - timm and open_clip require it
            tv = None
        return {**fp, "library": self.library, self.library: lib.__version__, "torchvision": tv}

    # ------------------------------------------------------------------ model structure

    def meta_model(self) -> Any:
        """The model built on the meta device (no weights, no memory): structure only."""
        if self._meta is None:
            import torch

            with torch.device("meta"):
                self._meta = self.build_model()
        return self._meta

    def build_model(self) -> Any:
        """The (tower) module with random weights, from the config (hook)."""
        raise NotImplementedError

    def structure(self, model: Any) -> tuple[Sequence[Any], int, bool]:
        """``(blocks, prefix tokens, has a class token)`` of a model (hook)."""
        raise NotImplementedError

    def named_layers(self) -> list[str]:
        """Named layers after the numbered ones (hook)."""
        return ["norm"]

    def resolve_pooling(self) -> None:
        """``default`` -> ``cls`` or ``mean_patch``; refuse ``cls`` without a class token."""
        if self._pooling_resolved:
            return
        _, _, has_cls = self.structure(self.meta_model())
        if self._pooling_given == "default":
            self.pooling = "cls" if has_cls else "mean_patch"
        elif self._pooling_given in ("cls", "cls_mean_patch") and not has_cls:
            raise ExtractorError(
                f"{self.name}: pooling={self._pooling_given} needs a class token and "
                f"{self.hf_id!r} has none; use pooling=mean_patch"
            )
        self._pooling_resolved = True

    def param_count(self) -> int:
        """Parameters of the loaded module (:func:`param_count_of`)."""
        return param_count_of(self.meta_model())

    def layers(self) -> list[LayerId]:
        """``[0, 1, ..., L, *named]`` with ``L`` the number of blocks (config only)."""
        blocks, _, _ = self.structure(self.meta_model())
        return [*range(len(blocks) + 1), *self.named_layers()]

    # ------------------------------------------------------------------ preprocessing

    def transform(self) -> Any:
        """The library's eval transform (PIL -> tensor), built from the config (hook)."""
        raise NotImplementedError

    def preprocessing(self) -> dict[str, Any]:
        """The preprocessing settings (JSON) that enter the fingerprint (hook)."""
        raise NotImplementedError

    def feature_settings(self) -> dict[str, Any]:
        """``model_kwargs``, ``prefix_tokens``, ``dtype``, ``pooling`` (resolved),
        ``preprocessing`` (settings + the transform's repr)."""
        self.resolve_pooling()
        _, prefix, _ = self.structure(self.meta_model())
        return {
            "model_kwargs": self.model_kwargs,
            "prefix_tokens": prefix,
            "dtype": self.dtype,
            "pooling": self.pooling,
            "preprocessing": {**self.preprocessing(), "transform": repr(self.transform())},
        }

    def preprocess(self, image: Any) -> torch.Tensor:
        """One ``PIL.Image`` -> ``(3, H, W)`` float32 tensor (the library's eval transform)."""
        if self._transform is None:
            self._transform = self.transform()
        if image.mode != "RGB":
            image = image.convert("RGB")
        return self._transform(image).float()

    # ------------------------------------------------------------------ extraction

    def load_model(self) -> Any:
        """The module with its pretrained weights, on the CPU (hook)."""
        raise NotImplementedError

    def load(self) -> Any:
        """Load the weights (eval mode, on the device, in ``dtype``); idempotent.

        Raises:
            ExtractorError: files not in the cache and not fetchable, weights that do not
                match the architecture.
        """
        if self._model is None:
            dev = self.torch_device()
            model = self.load_model()
            self._model = model.to(device=dev, dtype=self.torch_dtype()).eval()
            self._torch_device = dev
        return self._model

    def run(self, model: Any, x: torch.Tensor, layers: Sequence[LayerId]) -> dict[LayerId, Any]:
        """One forward pass -> ``{layer: (B, T, D) tokens or (B, D) vector}`` (hook)."""
        raise NotImplementedError

    def extract(
        self, batch: torch.Tensor, layers: Sequence[LayerId] | LayerId | str
    ) -> dict[LayerId, np.ndarray]:
        """``(B, 3, H, W)`` pixels -> ``{layer: (B, D) float32}`` from one forward pass; token
        layers pooled as ``pooling`` says (:func:`~medprobe.extractors.vision.pool_tokens`).

        Raises:
            ExtractorError: unknown layer, a batch that is not ``(B, 3, H, W)``, weights that
                cannot be loaded, non-finite or all-zero features.
        """
        import torch

        wanted = resolve_layers(layers, self.layers())
        if not isinstance(batch, torch.Tensor) or batch.ndim != 4 or batch.shape[1] != 3:
            shape = tuple(batch.shape) if hasattr(batch, "shape") else type(batch).__name__
            raise ExtractorError(f"{self.name}: expected a (B, 3, H, W) tensor batch, got {shape}")
        self.resolve_pooling()
        model = self.load()
        _, prefix, has_cls = self.structure(model)
        x = batch.to(device=self._torch_device, dtype=self.torch_dtype())
        with torch.inference_mode():
            states = self.run(model, x, wanted)
            feats = {
                layer: pool_tokens(t, self.pooling, prefix, has_cls) if t.ndim == 3 else t
                for layer, t in states.items()
            }
        return features_to_numpy(feats, wanted, batch.shape[0])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(hf_id={self.hf_id!r}, revision={self.revision!r}, "
            f"dtype={self.dtype!r}, device={self.device!r}, pooling={self._pooling_given!r})"
        )


def param_count_of(model: Any) -> int:
    """Number of parameters of a module (meta tensors count too)."""
    return int(sum(p.numel() for p in model.parameters()))
