"""EfficientNet-Lite0: real ImageNet weights and the preprocessing they were trained with.

The proof uses real photos shipped by scikit-image (``skimage.data.coffee`` — a cup of espresso,
ImageNet class 967 "espresso" — and ``skimage.data.chelsea`` — a tabby cat, ImageNet classes
281 tabby, 282 tiger cat, 285 Egyptian cat). Expected outputs were pinned once on 2026-11-29.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medprobe.config import DType, ModelConfig
from medprobe.errors import ExtractorError
from medprobe.extractors.effnet import (
    LAYERS,
    EffNetLite0Extractor,
    from_config,
    preprocess_image,
    weights_path,
)
from medprobe.hashing import file_sha256
from medprobe.registry import EXTRACTORS

skdata = pytest.importorskip("skimage.data")

ESPRESSO = 967
CATS = [281, 282, 285]


@pytest.fixture(scope="module")
def ext() -> EffNetLite0Extractor:
    return EffNetLite0Extractor(device="cpu")


def _logits(ext: EffNetLite0Extractor, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return ext.model(x)


def test_real_photos_classified_correctly(ext: EffNetLite0Extractor) -> None:
    x = torch.stack(
        [
            ext.preprocess(Image.fromarray(skdata.coffee())),
            ext.preprocess(Image.fromarray(skdata.chelsea())),
        ]
    )
    p = _logits(ext, x).softmax(-1)
    assert int(p[0].argmax()) == ESPRESSO
    assert float(p[0, ESPRESSO]) == pytest.approx(0.951, abs=0.01)
    assert int(p[1].argmax()) in CATS
    assert float(p[1, CATS].sum()) == pytest.approx(0.919, abs=0.01)


def test_tf_normalisation_beats_torchvision_normalisation(ext: EffNetLite0Extractor) -> None:
    """The (x-127)/128 scaling is the right one: torchvision mean/std is less confident."""
    img = Image.fromarray(skdata.coffee())
    x_tf = ext.preprocess(img)[None]
    raw = (x_tf * 128.0 + 127.0) / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    x_tv = (raw - mean) / std
    p_tf = _logits(ext, x_tf).softmax(-1)[0, ESPRESSO]
    p_tv = _logits(ext, x_tv).softmax(-1)[0, ESPRESSO]
    assert p_tf > p_tv + 0.1


def test_layers_widths_and_head_equals_classifier_input(ext: EffNetLite0Extractor) -> None:
    x = ext.preprocess(Image.fromarray(skdata.chelsea()))[None]
    feats = ext.extract(x, LAYERS)
    widths = [feats[k].shape[1] for k in LAYERS]
    assert widths == [32, 16, 24, 40, 80, 112, 192, 320, 1280]
    assert all(v.dtype == np.float32 for v in feats.values())
    # layer 8 pooled features through the pretrained classifier reproduce the model's logits
    logits = ext.model._fc(torch.from_numpy(feats[8]))
    torch.testing.assert_close(logits, _logits(ext, x), rtol=0, atol=1e-4)


def test_one_pass_layers_equal_single_layer_runs(ext: EffNetLite0Extractor) -> None:
    x = ext.preprocess(Image.fromarray(skdata.coffee()))[None]
    allf = ext.extract(x, LAYERS)
    for k in (0, 3, 8):
        np.testing.assert_array_equal(ext.extract(x, [k])[k], allf[k])


def test_batched_equals_single(ext: EffNetLite0Extractor, shared_data) -> None:
    tiles = sorted((shared_data / "T1_crc" / "tiles").glob("*.png"))[:4]
    xs = [ext.preprocess(Image.open(p).convert("RGB")) for p in tiles]
    batch = ext.extract(torch.stack(xs), [4, 8])
    for i, x in enumerate(xs):
        single = ext.extract(x[None], [4, 8])
        for k in (4, 8):
            np.testing.assert_allclose(batch[k][i], single[k][0], rtol=1e-5, atol=1e-5)


def test_preprocess_crop_and_scale() -> None:
    # a 256x320 image: center crop 224 of the 256 short side, no resampling blur on a flat field
    img = Image.new("RGB", (320, 256), (255, 127, 0))
    x = preprocess_image(img)
    assert x.shape == (3, 224, 224)
    assert torch.allclose(x[:, 100, 100], torch.tensor([1.0, 0.0, -127 / 128]))


def test_fingerprint_is_cheap_and_stable() -> None:
    a, b = EffNetLite0Extractor(device="cpu"), EffNetLite0Extractor(device="cpu", dtype="bfloat16")
    fa = a.fingerprint()
    assert a._model is None  # no weights loaded to compute it
    assert fa == EffNetLite0Extractor(device="cpu").fingerprint()
    assert fa != b.fingerprint()
    assert len(fa["weights_sha256"]) == 64
    assert fa["weights_sha256"] == file_sha256(weights_path())  # medprobe.hashing, every byte


def test_from_config_reads_the_model_node() -> None:
    """The registry builder takes the config node (dtype an enum there) or the typed one."""
    node = ModelConfig(name="effnet_lite0", kind="effnet_lite0", device="cpu")
    assert node.dtype is DType.float32
    ext = EXTRACTORS.get(node.kind)(node, "ignored")
    assert isinstance(ext, EffNetLite0Extractor) and (ext.device, ext.dtype) == ("cpu", "float32")
    assert ext.fingerprint() == EffNetLite0Extractor(device="cpu").fingerprint()
    bf16 = ModelConfig(name="effnet_lite0", kind="effnet_lite0", dtype=DType.bfloat16)
    assert from_config(bf16).dtype == "bfloat16"


def test_bad_layer_and_dtype(ext: EffNetLite0Extractor) -> None:
    x = torch.zeros(1, 3, 224, 224)
    with pytest.raises(ExtractorError, match="valid layers"):
        ext.extract(x, [9])
    with pytest.raises(ExtractorError, match="dtype"):
        EffNetLite0Extractor(dtype="int8")
