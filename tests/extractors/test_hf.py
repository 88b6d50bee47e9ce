"""The shared Hugging Face extractor base (medprobe.extractors.hf): config nodes in, source and
fingerprint, max_memory, and a new model written on it in a few lines."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import Compose
from transformers import CLIPVisionModel

from medprobe.config import DType, ModelConfig
from medprobe.errors import ExtractorError
from medprobe.extractors.base import Extractor, LayerId, resolve_layers
from medprobe.extractors.clip import CLIPExtractor
from medprobe.extractors.hf import HFExtractor, looks_like_path, parse_max_memory
from medprobe.extractors.idefics import IdeficsExtractor
from medprobe.registry import EXTRACTORS


class VisionTower(HFExtractor):
    """A new model on the base: the CLS token of a CLIP vision tower's blocks (test only)."""

    name = "vision_tower"
    label = "CLIP vision"
    code_version = "vision-tower-test-1"
    poolings = ("cls",)
    model_types = ("clip",)

    def build_processor(self) -> Any:
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        return self.pretrained(CLIPImageProcessorPil, "the image processor")

    def layers(self) -> list[LayerId]:
        return list(range(int(self.config().vision_config.num_hidden_layers) + 1))

    def feature_settings(self) -> dict[str, Any]:
        keys = ("size", "crop_size", "image_mean", "image_std")
        settings = self.processor_settings(self.processor(), keys)
        return {"dtype": self.dtype, "pooling": self.pooling, "preprocessing": settings}

    def preprocess(self, image: Any) -> torch.Tensor:
        return self.processor()(images=image, return_tensors="pt")["pixel_values"][0]

    def extract(self, batch: torch.Tensor, layers: Any) -> dict[LayerId, np.ndarray]:
        wanted = resolve_layers(layers, self.layers())
        if self._model is None:
            model, _ = self.load_pretrained(CLIPVisionModel, "the vision tower")
            self._model = self.place(model)
        with torch.inference_mode():
            out = self._model(pixel_values=batch, output_hidden_states=True)
        return {k: out.hidden_states[int(k)][:, 0].float().numpy() for k in wanted}


def test_a_new_model_needs_only_its_own_parts(tiny_clip: Path, tmp_path: Path) -> None:
    ext = VisionTower(str(tiny_clip), device="cpu")
    assert isinstance(ext, Extractor) and ext.layers() == [0, 1, 2]
    fp = ext.fingerprint()
    assert (fp["extractor"], fp["code_version"], fp["source"]) == (
        "vision_tower",
        "vision-tower-test-1",
        "local",
    )
    assert set(fp["files"]) == {"model.safetensors", "config.json", "preprocessor_config.json"}
    assert all(v.startswith("sha256:") for v in fp["files"].values())  # medprobe.hashing
    assert (fp["dtype"], fp["pooling"]) == ("float32", "cls")  # "default" = the first pooling
    # same features as the CLIP extractor's numbered layers (same weights, same CLS pooling)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    got = ext.extract(pixels, [0, 2])
    want = CLIPExtractor(str(tiny_clip), device="cpu").extract(pixels, [0, 2])
    for layer in (0, 2):
        np.testing.assert_allclose(got[layer], want[layer], atol=1e-6, rtol=0)
    assert pickle.loads(pickle.dumps(ext))._model is None and ext._model is not None
    with pytest.raises(ExtractorError, match="vision_tower: quantization=8bit is not supported"):
        VisionTower(str(tiny_clip), quantization="8bit")
    with pytest.raises(ExtractorError, match="vision_tower: unknown pooling 'mean'"):
        VisionTower(str(tiny_clip), pooling="mean")
    (tmp_path / "config.json").write_text('{"model_type": "idefics"}')
    with pytest.raises(ExtractorError, match="is a 'idefics' model, not CLIP vision"):
        VisionTower(str(tmp_path)).layers()


def test_model_config_nodes_are_read_by_attribute(compose: Compose, tiny_clip: Path) -> None:
    """The composed node (model=plip: identity plip, kind clip) and the typed dataclass build
    the same extractor; the dtype enum arrives as its value."""
    node = compose("model=plip", f"model.hf_id={tiny_clip}").model
    assert (node.name, node.kind) == ("plip", "clip")
    typed = ModelConfig(name="plip", kind="clip", hf_id=str(tiny_clip), dtype=DType.bfloat16)
    a = EXTRACTORS.get(node.kind)(node, "")
    b = EXTRACTORS.get(typed.kind)(typed, "")
    assert isinstance(a, CLIPExtractor) and isinstance(b, CLIPExtractor)
    assert (a.dtype, b.dtype, a.pooling, b.pooling) == ("float32", "bfloat16", "cls", "cls")
    assert a.fingerprint() == {**b.fingerprint(), "dtype": "float32"}
    assert CLIPExtractor.config_kwargs(typed) == {
        "hf_id": str(tiny_clip),
        "revision": None,
        "dtype": DType.bfloat16,
        "device": "auto",
        "pooling": "default",
    }  # effnet/IDEFICS-only keys (quantization, device_map, ...) are not read for CLIP
    node = compose(
        "model=idefics80b", "model.quantization=4bit", "model.max_memory={0:70GiB,cpu:100GiB}"
    ).model
    kwargs = IdeficsExtractor.config_kwargs(node)
    assert kwargs["quantization"] == "4bit" and kwargs["device_map"] == "auto"
    assert kwargs["max_memory"] == {0: "70GiB", "cpu": "100GiB"}
    assert type(kwargs["max_memory"]) is dict


def test_sources_and_one_line_errors(tmp_path: Path) -> None:
    for path in ("/abs/model", "./m", "../m", "~/m", "a/b/c", "m/", "C:\\m", "."):
        assert looks_like_path(path), path
    for hub_id in ("openai/clip-vit-base-patch32", "vinid/plip", "gpt2"):
        assert not looks_like_path(hub_id), hub_id
    assert CLIPExtractor("vinid/plip").local_dir() is None
    assert CLIPExtractor("vinid/plip").load_revision() == "main"  # not cached: as given
    assert CLIPExtractor("vinid/plip", revision="v2").load_revision() == "v2"
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ExtractorError, match="model path is not a directory"):
        CLIPExtractor(str(f)).local_dir()
    with pytest.raises(ExtractorError, match="local model directory not found"):
        CLIPExtractor(str(tmp_path / "absent")).source()
    err = CLIPExtractor("acme/x", revision="v1").load_error("the weights", OSError("a\nb"))
    assert str(err) == (
        "clip: cannot load the weights for 'acme/x@v1' (offline and not in the HF cache? "
        "a typo?): OSError: a"
    )
    for bad in ("", "  ", None, 3):
        with pytest.raises(ExtractorError, match="must be a hub id or a local directory"):
            CLIPExtractor(bad)  # type: ignore[arg-type]
    with pytest.raises(ExtractorError, match="device must be a string"):
        CLIPExtractor("acme/x", device=0)  # type: ignore[arg-type]


def test_parse_max_memory_and_the_idefics_loader_uses_it() -> None:
    assert parse_max_memory("cpu=200GiB, cuda:1=40GiB,0=48GiB") == {
        0: "48GiB",
        1: "40GiB",
        "cpu": "200GiB",
    }
    assert parse_max_memory({"0": 1_000_000, "disk": "900GB"}) == {0: 1_000_000, "disk": "900GB"}
    assert parse_max_memory(None) is None and parse_max_memory("") is None
    for bad, msg in (
        ("0:48GiB", "is not DEVICE=SIZE"),
        ("gpu0=1GiB", "not a GPU index"),
        ("0=48gb", "lower-case b"),
        ("0=lots", "not bytes nor a size"),
        ("0=48", "not bytes nor a size"),
        ("0=1GiB,cuda:0=2GiB", "twice"),
        ({0: -1}, "negative"),
        ({0: 1.5}, "must be bytes"),
    ):
        with pytest.raises(ExtractorError, match=msg):
            parse_max_memory(bad)
    ext = IdeficsExtractor(
        "HuggingFaceM4/idefics-80b-instruct", "Q?", max_memory={"cuda:1": "40GiB", "0": 10**9}
    )
    assert ext.max_memory_limits() == {0: 10**9, 1: "40GiB"}  # byte counts stay integers
    assert (
        ext.max_memory_limits() is not ext.max_memory_limits()
    )  # accelerate may convert it in place
    with pytest.raises(ExtractorError, match="not bytes nor a size"):
        IdeficsExtractor("HuggingFaceM4/idefics-80b-instruct", "Q?", max_memory={0: "75 gigs"})


def test_versions_record_the_hf_stack() -> None:
    """results.json ``versions``: transformers, tokenizers, accelerate, bitsandbytes (None when
    not installed), read from package metadata."""
    from importlib.metadata import version

    from medprobe.pipeline.probing import RECORDED_PACKAGES, versions

    v = versions()
    assert set(RECORDED_PACKAGES) <= set(v)
    assert v["transformers"] == version("transformers")
    assert v["tokenizers"] == version("tokenizers")
    assert v["accelerate"] == version("accelerate")
    assert v["bitsandbytes"] is None or isinstance(v["bitsandbytes"], str)
