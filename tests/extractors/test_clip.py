"""CLIPExtractor on tiny random CLIP models: values equal to direct transformers calls."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import shared_data_dir
from PIL import Image
from transformers import CLIPModel

from medprobe.config import ModelConfig
from medprobe.errors import ExtractorError
from medprobe.extractors.clip import CODE_VERSION, CLIPExtractor, from_config

TILE = Path("T1_crc") / "tiles" / "ADI-TCGA-EENSRDNW.png"


def _model_config(**fields: object) -> ModelConfig:
    """``model=clip``'s config node with ``fields`` overridden (what the pipeline passes)."""
    return ModelConfig(**{"name": "clip", "kind": "clip", **fields})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def reference(tiny_clip: Path) -> CLIPModel:
    return CLIPModel.from_pretrained(tiny_clip).eval()


@pytest.fixture(scope="module")
def ext(tiny_clip: Path) -> CLIPExtractor:
    return CLIPExtractor(str(tiny_clip), device="cpu")


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.randn(4, 3, 32, 32, generator=g)


def test_layers_and_fingerprint_without_weights(
    tiny_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("weights must not be loaded")

    monkeypatch.setattr(CLIPModel, "from_pretrained", boom)
    e = CLIPExtractor(str(tiny_clip), device="cpu")
    assert e.layers() == [0, 1, 2, "pooled", "embeds"]
    fp = e.fingerprint()
    assert e._model is None
    assert fp["extractor"] == "clip" and fp["code_version"] == CODE_VERSION
    assert fp["source"] == "local"
    assert set(fp["weights"]) == {"model.safetensors", "config.json"}
    assert all(len(h) == 64 for h in fp["weights"].values())
    assert (fp["dtype"], fp["pooling"]) == ("float32", "cls")
    pre = fp["preprocessing"]
    assert pre["size"] == {"shortest_edge": 32}
    assert pre["crop_size"] == {"height": 32, "width": 32}
    assert pre["resample"] == int(Image.Resampling.BICUBIC)
    assert pre["do_center_crop"] and pre["do_normalize"]
    np.testing.assert_allclose(pre["image_mean"], [0.48145466, 0.4578275, 0.40821073])
    np.testing.assert_allclose(pre["image_std"], [0.26862954, 0.26130258, 0.27577711])
    import json

    json.dumps(fp)  # JSON-serialisable


def test_features_equal_direct_transformers_calls(
    ext: CLIPExtractor, reference: CLIPModel, pixels: torch.Tensor
) -> None:
    feats = ext.extract(pixels, "all")
    assert list(feats) == [0, 1, 2, "pooled", "embeds"]
    with torch.inference_mode():
        out = reference.vision_model(pixel_values=pixels, output_hidden_states=True)
        embeds = reference.get_image_features(pixel_values=pixels).pooler_output
        vm = reference.vision_model
        emb0 = vm.pre_layrnorm(vm.embeddings(pixels))
    assert len(out.hidden_states) == 3
    for k in range(3):
        want = out.hidden_states[k][:, 0].numpy()
        assert feats[k].dtype == np.float32 and feats[k].shape == (4, 32)
        np.testing.assert_allclose(feats[k], want, atol=1e-6, rtol=0)
    # layer 0 is the embeddings AFTER pre_layrnorm; layer L is before post_layernorm
    np.testing.assert_allclose(feats[0], emb0[:, 0].numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(feats[2], out.last_hidden_state[:, 0].numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(feats["pooled"], out.pooler_output.numpy(), atol=1e-6, rtol=0)
    assert feats["embeds"].shape == (4, 16)
    np.testing.assert_allclose(feats["embeds"], embeds.numpy(), atol=1e-6, rtol=0)
    assert not np.allclose(feats["pooled"], feats[2], atol=1e-3)  # post-LN really applied


def test_mean_pooling_and_negative_layer(
    tiny_clip: Path, reference: CLIPModel, pixels: torch.Tensor
) -> None:
    e = CLIPExtractor(str(tiny_clip), device="cpu", pooling="mean")
    feats = e.extract(pixels, [-1, 1, "pooled"])
    assert list(feats) == [1, 2, "pooled"]  # keys are resolved layers, forward order
    with torch.inference_mode():
        out = reference.vision_model(pixel_values=pixels, output_hidden_states=True)
    for k in (1, 2):
        want = out.hidden_states[k][:, 1:].mean(dim=1).numpy()  # 16 patches, CLS excluded
        np.testing.assert_allclose(feats[k], want, atol=1e-6, rtol=0)
    np.testing.assert_allclose(feats["pooled"], out.pooler_output.numpy(), atol=1e-6, rtol=0)


def test_sample_alone_equals_in_batch(ext: CLIPExtractor, pixels: torch.Tensor) -> None:
    batch = ext.extract(pixels, "all")
    for i in (0, 3):
        alone = ext.extract(pixels[i : i + 1], "all")
        for layer, arr in alone.items():
            assert arr.shape[0] == 1
            np.testing.assert_allclose(arr[0], batch[layer][i], atol=1e-5, rtol=0)


def test_preprocess_real_image_matches_processor(ext: CLIPExtractor, tiny_clip: Path) -> None:
    path = shared_data_dir() / TILE
    if not path.is_file():
        pytest.skip(f"shared data not found: {path}")
    # the PIL backend, which the extractor pins: with torchvision installed transformers' default
    # CLIPImageProcessor is the torchvision one, whose resize differs by up to 1/255
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    with Image.open(path) as im:
        img = im.convert("RGB")
    x = ext.preprocess(img)
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
    assert tuple(x.shape) == (3, 32, 32)
    direct = CLIPImageProcessorPil.from_pretrained(tiny_clip)(images=img, return_tensors="pt")
    np.testing.assert_array_equal(x.numpy(), direct["pixel_values"][0].numpy())
    # normalised with CLIP mean/std: not in [0, 1]
    assert x.min() < 0 < x.max()
    # picklable for DataLoader workers, also after the model was loaded
    ext.extract(x[None], [0])
    clone = pickle.loads(pickle.dumps(ext))
    assert clone._model is None
    np.testing.assert_array_equal(clone.preprocess(img).numpy(), x.numpy())


def test_fingerprint_stable_and_sensitive(
    tiny_clip: Path, tiny_clip_seed1: Path, tmp_path: Path
) -> None:
    a = CLIPExtractor(str(tiny_clip)).fingerprint()
    assert a == CLIPExtractor(str(tiny_clip)).fingerprint()
    other = tiny_clip_seed1
    b = CLIPExtractor(str(other)).fingerprint()
    assert b["weights"]["model.safetensors"] != a["weights"]["model.safetensors"]
    assert b["weights"]["config.json"] == a["weights"]["config.json"]
    assert CLIPExtractor(str(tiny_clip), dtype="bfloat16").fingerprint() != a
    assert CLIPExtractor(str(tiny_clip), pooling="mean").fingerprint() != a
    # same weights bytes in a copy -> same weight hashes
    copy = Path(shutil.copytree(tiny_clip, tmp_path / "copy"))
    assert CLIPExtractor(str(copy)).fingerprint()["weights"] == a["weights"]
    # "default" pooling is "cls", also through from_config
    cfg = ModelConfig(
        name="plip",
        kind="clip",
        hf_id=str(tiny_clip),
        revision=None,
        device="auto",
        pooling="default",
    )
    assert from_config(cfg, prompt="ignored").fingerprint() == a


def test_bfloat16_close_to_float32(
    ext: CLIPExtractor, tiny_clip: Path, pixels: torch.Tensor
) -> None:
    ref = ext.extract(pixels, ["pooled", "embeds"])
    e = CLIPExtractor(str(tiny_clip), dtype="bfloat16", device="cpu")
    got = e.extract(pixels, ["pooled", "embeds"])
    assert e.load().dtype == torch.bfloat16
    for layer in ref:
        assert got[layer].dtype == np.float32
        np.testing.assert_allclose(got[layer], ref[layer], atol=0.1, rtol=0.05)


def test_hub_id_from_offline_cache(
    tiny_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pixels: torch.Tensor
) -> None:
    import huggingface_hub.constants as hub_constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-clip"
    shutil.copytree(tiny_clip, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    e = CLIPExtractor("acme/tiny-clip", device="cpu")
    assert e.layers() == [0, 1, 2, "pooled", "embeds"]
    fp = e.fingerprint()
    assert fp["source"] == "hub" and fp["resolved_revision"] == commit and "weights" not in fp
    local = CLIPExtractor(str(tiny_clip), device="cpu").extract(pixels, ["embeds"])
    np.testing.assert_array_equal(e.extract(pixels, ["embeds"])["embeds"], local["embeds"])
    # offline and not cached: a one-line error naming the id, nothing is downloaded
    for call in (CLIPExtractor("acme/absent").layers, CLIPExtractor("acme/absent").fingerprint):
        with pytest.raises(ExtractorError, match="acme/absent") as info:
            call()
        assert "\n" not in str(info.value)


def test_errors(ext: CLIPExtractor, tmp_path: Path, pixels: torch.Tensor) -> None:
    with pytest.raises(ExtractorError, match=r"valid layers: \[0, 1, 2, 'pooled', 'embeds'\]"):
        ext.extract(pixels, ["cls_token"])
    with pytest.raises(ExtractorError, match="valid layers"):
        ext.extract(pixels, [3])
    with pytest.raises(ExtractorError, match=r"float32.*bfloat16.*float16"):
        CLIPExtractor("x/y", dtype="float64")
    with pytest.raises(ExtractorError, match="valid poolings"):
        CLIPExtractor("x/y", pooling="max")
    with pytest.raises(ExtractorError, match=r"\(B, 3, H, W\)"):
        ext.extract(pixels[0], [0])
    missing = tmp_path / "no" / "such_model"
    with pytest.raises(ExtractorError, match=str(missing)):
        from_config(_model_config(hf_id=str(missing), device="cpu", pooling="cls"))
    with pytest.raises(ExtractorError, match=str(missing)):
        CLIPExtractor(str(missing)).layers()
    with pytest.raises(ExtractorError, match="hf_id"):
        from_config(_model_config(hf_id=None))
    with pytest.raises(ExtractorError, match="hf_id"):
        from_config(_model_config(hf_id=""))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ExtractorError, match="no weight files"):
        CLIPExtractor(str(empty)).fingerprint()
    with pytest.raises(ExtractorError) as info:
        CLIPExtractor(str(missing)).fingerprint()
    assert "\n" not in str(info.value)


def test_image_processor_pinned_to_pil_and_transformers_version_fingerprinted(
    tiny_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers 5.x switches CLIPImageProcessor to its torchvision backend whenever
    torchvision is importable; medprobe always runs the PIL one and fingerprints it."""
    import transformers
    import transformers.utils

    monkeypatch.setattr(transformers.utils, "is_torchvision_available", lambda: True)
    e = CLIPExtractor(str(tiny_clip), device="cpu")
    assert type(e.processor()).__name__ == "CLIPImageProcessorPil"
    fp = e.fingerprint()
    assert fp["preprocessing"]["backend"] == "CLIPImageProcessorPil"
    assert fp["transformers"] == transformers.__version__


def test_load_info_records_attention_and_device(ext: CLIPExtractor, pixels: torch.Tensor) -> None:
    fresh = CLIPExtractor(ext.hf_id, device="cpu")
    assert fresh.load_info() == {"loaded": False, "attn_implementation": None,
                                 "device_type": None, "dtype": "float32"}  # fmt: skip
    ext.extract(pixels, [0])
    info = ext.load_info()
    assert info["loaded"] is True and info["device_type"] == "cpu"
    assert info["attn_implementation"] == ext.load().config._attn_implementation
    assert info["attn_implementation"] in {"eager", "sdpa"}
