"""Vision foundation models (medprobe/extractors/vision.py, timm_models.py, openclip.py) on tiny
random models built offline: layer k equals the library's own layer k, CLS / mean-patch pooling
equal a manual computation (register tokens excluded), batched equals single, fingerprints and
cache keys, and ``python -m medprobe`` end to end on the demo task."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import Compose, run_medprobe, small_demo
from PIL import Image
from tiny_vision import (
    HF_FAMILIES,
    REGISTERS,
    TIMM_ARGS,
    save_tiny_hf_vision,
    save_tiny_open_clip,
    save_tiny_timm,
)

from medprobe.cache import cache_key
from medprobe.config import ModelConfig
from medprobe.config.validate import validate
from medprobe.errors import ConfigError, ExtractorError
from medprobe.extractors.vision import (
    CODE_VERSION,
    VisionExtractor,
    from_config,
    param_count_from_config,
    pool_tokens,
    published_config,
)

POOLS = ("cls", "mean_patch", "cls_mean_patch")
#: Prefix tokens (CLS + registers) per family of the tiny models.
PREFIX = {"dinov2": 1, "dinov2_with_registers": 1 + REGISTERS, "vit": 1, "siglip": 0,
          "siglip_vision_model": 0}  # fmt: skip
NEW_MODELS = ("dinov2_base", "rad_dino", "siglip_base", "siglip2_base", "phikon", "uni",
              "virchow2", "biomedclip")  # fmt: skip


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_vision")
    return {f: save_tiny_hf_vision(f, root / f) for f in HF_FAMILIES}


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(7))


def _image(seed: int = 0, size: tuple[int, int] = (48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype("uint8"))


def _reference(family: str, path: Path) -> Any:
    """The library's own model of a tiny checkpoint (what medprobe must reproduce)."""
    import transformers as tf

    cls = {"dinov2": tf.Dinov2Model, "dinov2_with_registers": tf.Dinov2WithRegistersModel,
           "vit": tf.ViTModel, "siglip": tf.SiglipModel,
           "siglip_vision_model": tf.SiglipVisionModel}[family]  # fmt: skip
    model = cls.from_pretrained(path).eval()
    return model.vision_model if family == "siglip" else model


def _manual(tokens: torch.Tensor, pooling: str, prefix: int) -> np.ndarray:
    """Pooling written out by hand: token 0; the mean of the tokens after the prefix."""
    cls = tokens[:, 0]
    mean = tokens[:, prefix:].sum(dim=1) / (tokens.shape[1] - prefix)
    out = {"cls": cls, "mean_patch": mean, "cls_mean_patch": torch.cat([cls, mean], 1)}[pooling]
    return out.detach().numpy()


# ------------------------------------------------------------------ transformers families


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_hf_layers_and_fingerprint_without_weights(
    family: str, hf_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import PreTrainedModel

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("weights must not be loaded")

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", boom)
    e = VisionExtractor(str(hf_dirs[family]), device="cpu")
    siglip = family.startswith("siglip")
    assert e.layers() == [0, 1, 2, "norm", *(["pooled"] if siglip else [])]
    fp = e.fingerprint()
    assert fp["extractor"] == "vision" and fp["code_version"] == CODE_VERSION
    assert fp["library"] == "transformers" and fp["family"] == family
    assert fp["prefix_tokens"] == PREFIX[family]
    # default pooling: cls where there is a class token, mean_patch for SigLIP
    assert fp["pooling"] == ("mean_patch" if siglip else "cls")
    pre = fp["preprocessing"]
    assert pre["backend"].endswith("Pil") and "image_mean" in pre and "image_std" in pre
    assert set(fp["files"]) >= {"config.json", "model.safetensors", "preprocessor_config.json"}


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_hf_layer_k_is_hidden_states_k_and_pooling_is_manual(
    family: str, hf_dirs: dict[str, Path], pixels: torch.Tensor
) -> None:
    ref = _reference(family, hf_dirs[family])
    with torch.no_grad():
        out = ref(pixel_values=pixels, output_hidden_states=True)
    prefix = PREFIX[family]
    pools = ("mean_patch",) if family.startswith("siglip") else POOLS
    for pooling in pools:
        e = VisionExtractor(str(hf_dirs[family]), device="cpu", pooling=pooling)
        f = e.extract(pixels, "all")
        for k in range(3):
            np.testing.assert_allclose(f[k], _manual(out.hidden_states[k], pooling, prefix),
                                       rtol=1e-5, atol=1e-6)  # fmt: skip
        np.testing.assert_allclose(f["norm"], _manual(out.last_hidden_state, pooling, prefix),
                                   rtol=1e-5, atol=1e-6)  # fmt: skip
        if family.startswith("siglip"):
            np.testing.assert_allclose(f["pooled"], out.pooler_output.numpy(), rtol=1e-5,
                                       atol=1e-6)  # fmt: skip
    if family == "dinov2_with_registers":  # the registers are really left out of the mean
        with_registers = _manual(out.hidden_states[2], "mean_patch", 1)
        assert not np.allclose(f[2][:, 32:], with_registers, atol=1e-4)
    if family in ("dinov2", "dinov2_with_registers"):  # norm + cls = DINOv2's pooler_output
        cls = VisionExtractor(str(hf_dirs[family]), device="cpu").extract(pixels, "norm")
        np.testing.assert_allclose(cls["norm"], out.pooler_output.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ["dinov2_with_registers", "siglip"])
def test_hf_batched_equals_single(family: str, hf_dirs: dict[str, Path]) -> None:
    e = VisionExtractor(str(hf_dirs[family]), device="cpu", pooling="mean_patch")
    images = [e.preprocess(_image(s)) for s in range(3)]
    batched = e.extract(torch.stack(images), "all")
    for i, x in enumerate(images):
        single = e.extract(x[None], "all")
        for layer, v in single.items():
            np.testing.assert_allclose(batched[layer][i : i + 1], v, rtol=1e-5, atol=1e-6)


def test_hf_preprocess_is_the_checkpoints_processor(hf_dirs: dict[str, Path]) -> None:
    from transformers import AutoImageProcessor

    for family in ("dinov2", "vit", "siglip"):
        proc = AutoImageProcessor.from_pretrained(hf_dirs[family], backend="pil")
        img = _image(3, (60, 44))
        want = proc(images=img, return_tensors="pt")["pixel_values"][0]
        got = VisionExtractor(str(hf_dirs[family]), device="cpu").preprocess(img)
        assert got.shape == (3, 32, 32) and torch.equal(got, want)


def test_hf_refusals(hf_dirs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ExtractorError, match="needs a class token.*siglip models have none"):
        VisionExtractor(str(hf_dirs["siglip"]), pooling="cls").layers()
    with pytest.raises(ExtractorError, match="unknown pooling 'mean'"):
        VisionExtractor(str(hf_dirs["dinov2"]), pooling="mean")
    from transformers import Siglip2Config

    Siglip2Config().save_pretrained(tmp_path / "naflex")
    with pytest.raises(ExtractorError, match="SigLIP 2 NaFlex.*siglip2-base-patch16-224"):
        VisionExtractor(str(tmp_path / "naflex")).layers()
    from tiny_models import save_tiny_clip

    clip = save_tiny_clip(tmp_path / "clip")
    with pytest.raises(ExtractorError, match="is a 'clip' model, not vision encoder"):
        VisionExtractor(str(clip)).layers()
    with pytest.raises(ExtractorError, match="unknown layer 'pooled'"):
        VisionExtractor(str(hf_dirs["dinov2"]), device="cpu").extract(torch.zeros(1, 3, 32, 32),
                                                                      "pooled")  # fmt: skip


def test_cache_key_differs_between_poolings(hf_dirs: dict[str, Path]) -> None:
    d = str(hf_dirs["dinov2_with_registers"])
    keys = {
        p: cache_key({"extractor": VisionExtractor(d, pooling=p).fingerprint(), "layers": ["2"]})
        for p in ("default", *POOLS)
    }
    assert keys["default"] == keys["cls"]  # default is cls: the same features, the same key
    assert len({keys[p] for p in POOLS}) == 3
    # a different processor setting (image size, mean/std) changes the key too
    fp = VisionExtractor(d, pooling="cls").fingerprint()
    pre = dict(fp["preprocessing"], image_std=[0.5, 0.5, 0.5])
    assert cache_key({"extractor": {**fp, "preprocessing": pre}, "layers": ["2"]}) != keys["cls"]


def test_pool_tokens_refuses_cls_without_a_class_token() -> None:
    t = torch.arange(24.0).reshape(1, 4, 6)
    assert pool_tokens(t, "mean_patch", 0, False).tolist() == [[9.0, 10, 11, 12, 13, 14]]
    assert pool_tokens(t, "mean_patch", 2, True).tolist() == [[15.0, 16, 17, 18, 19, 20]]
    with pytest.raises(ExtractorError, match="needs a class token"):
        pool_tokens(t, "cls", 0, False)


def test_published_configs_param_counts() -> None:
    """The parameter counts docs/models.md quotes, from the configs alone (meta)."""
    counts = {h: param_count_from_config(published_config(h)) for h in
              ("facebook/dinov2-base", "google/siglip-base-patch16-224", "owkin/phikon")}  # fmt: skip
    assert counts == {"facebook/dinov2-base": 86_580_480,
                      "google/siglip-base-patch16-224": 92_884_224,
                      "owkin/phikon": 85_798_656}  # fmt: skip


def test_published_param_counts_of_the_library_models() -> None:
    """UNI, Virchow2, H-optimus-0 and BiomedCLIP's image tower from their model cards' shapes
    (docs/models.md quotes these; meta device, no download)."""
    pytest.importorskip("open_clip")
    from medprobe.extractors.vision import published_param_count

    assert published_param_count("MahmoodLab/UNI") == 303_350_784
    assert published_param_count("paige-ai/Virchow2") == 631_239_424
    assert published_param_count("bioptimus/H-optimus-0") == 1_134_774_272
    biomedclip = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
    assert published_param_count(biomedclip) == 86_191_872
    with pytest.raises(ExtractorError, match="no published config for 'x/y'"):
        published_param_count("x/y")


# ------------------------------------------------------------------ configs


@pytest.mark.parametrize("model", NEW_MODELS)
def test_model_configs_compose_and_validate(compose: Compose, model: str) -> None:
    cfg = compose(f"model={model}")
    validate(cfg)
    assert cfg.model.name == model and cfg.model.kind in ("vision", "timm", "open_clip")
    default_layer = {"siglip_base": "pooled", "siglip2_base": "pooled", "biomedclip": "embeds"}
    assert cfg.layer == default_layer.get(model, "norm")


def test_config_refuses_a_pooling_of_another_kind(compose: Compose) -> None:
    with pytest.raises(ConfigError, match="valid: default, cls, mean_patch, cls_mean_patch"):
        validate(compose("model=dinov2_base", "model.pooling=last"))


@pytest.mark.parametrize("model", ["dinov2_base", "uni", "biomedclip"])
def test_quantization_is_refused_not_ignored(compose: Compose, model: str) -> None:
    from medprobe.registry import EXTRACTORS

    node = compose(f"model={model}", "model.quantization=8bit").model
    with pytest.raises(ExtractorError, match="model.quantization=8bit is not supported"):
        EXTRACTORS.get(node.kind)(node, "")


def test_from_config_reads_the_node(hf_dirs: dict[str, Path]) -> None:
    node = ModelConfig(
        name="dinov2_base",
        kind="vision",
        hf_id=str(hf_dirs["vit"]),
        pooling="mean_patch",
        device="cpu",
    )  # type: ignore[arg-type]
    e = from_config(node, "ignored prompt")
    assert e.pooling == "mean_patch" and e.fingerprint()["family"] == "vit"


# ------------------------------------------------------------------ timm


@pytest.fixture(scope="module")
def timm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("timm")
    return save_tiny_timm(tmp_path_factory.mktemp("tiny_timm") / "vit")


def test_timm_layers_equal_forward_intermediates_and_pooling(
    timm_dir: Path, pixels: torch.Tensor
) -> None:
    import timm

    from medprobe.extractors.timm_models import TimmExtractor

    ref = timm.create_model(f"local-dir:{timm_dir}", pretrained=True).eval()
    with torch.no_grad():
        inter = ref.forward_intermediates(pixels, norm=False, output_fmt="NLC",
                                          return_prefix_tokens=True, intermediates_only=True)  # fmt: skip
        normed = ref.forward_features(pixels)
        x0 = ref.norm_pre(ref._pos_embed(ref.patch_embed(pixels)))
    # timm: blocks k = patches + (CLS, registers) prefix
    tokens = [x0] + [torch.cat([pre, patches], dim=1) for patches, pre in inter]
    prefix = 1 + TIMM_ARGS["reg_tokens"]
    assert ref.num_prefix_tokens == prefix
    for pooling in POOLS:
        e = TimmExtractor(str(timm_dir), device="cpu", pooling=pooling)
        assert e.layers() == [0, 1, 2, "norm"]
        f = e.extract(pixels, "all")
        for k in range(3):
            np.testing.assert_allclose(f[k], _manual(tokens[k], pooling, prefix), rtol=1e-5,
                                       atol=1e-6)  # fmt: skip
        np.testing.assert_allclose(f["norm"], _manual(normed, pooling, prefix), rtol=1e-5,
                                   atol=1e-6)  # fmt: skip
    # UNI's embedding: model(x) with num_classes=0 and token pooling = norm + cls
    cls = TimmExtractor(str(timm_dir), device="cpu").extract(pixels, "norm")["norm"]
    np.testing.assert_allclose(cls, ref(pixels).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_timm_batched_equals_single_and_preprocess(timm_dir: Path) -> None:
    import timm

    from medprobe.extractors.timm_models import TimmExtractor

    e = TimmExtractor(str(timm_dir), device="cpu", pooling="cls_mean_patch")
    ref = timm.create_model(f"local-dir:{timm_dir}", pretrained=True)
    want = timm.data.create_transform(**timm.data.resolve_data_config({}, model=ref))
    img = _image(5, (50, 40))
    assert torch.equal(e.preprocess(img), want(img))
    images = [e.preprocess(_image(s)) for s in range(3)]
    batched = e.extract(torch.stack(images), [1, "norm"])
    for i, x in enumerate(images):
        single = e.extract(x[None], [1, "norm"])
        for layer, v in single.items():
            assert v.shape == (1, 64)  # cls_mean_patch: 2 x width
            np.testing.assert_allclose(batched[layer][i : i + 1], v, rtol=1e-5, atol=1e-6)


def test_timm_fingerprint_and_model_kwargs(timm_dir: Path, tmp_path: Path) -> None:
    import timm

    from medprobe.extractors.timm_models import TimmExtractor

    fp = TimmExtractor(str(timm_dir), pooling="mean_patch").fingerprint()
    assert fp["library"] == "timm" and fp["timm"] == timm.__version__ and fp["torchvision"]
    assert "transformers" not in fp and fp["prefix_tokens"] == 3
    assert fp["preprocessing"]["input_size"] == [3, 32, 32]
    assert "Normalize" in fp["preprocessing"]["transform"]
    other = TimmExtractor(str(timm_dir), pooling="cls").fingerprint()
    assert cache_key({"extractor": fp}) != cache_key({"extractor": other})
    # a "module:Name" keyword argument (Virchow2's act_layer) is imported and fingerprinted
    silu = save_tiny_timm(tmp_path / "silu", act_layer="silu")
    e = TimmExtractor(str(silu), device="cpu", model_kwargs={"act_layer": "torch.nn:SiLU"})
    assert e.fingerprint()["model_kwargs"] == {"act_layer": "torch.nn:SiLU"}
    model = e.load()
    assert isinstance(model.blocks[0].mlp.act, torch.nn.SiLU)
    with pytest.raises(ExtractorError, match="cannot import 'torch.nn:Nope'"):
        TimmExtractor(str(silu), model_kwargs={"act_layer": "torch.nn:Nope"}).layers()


def test_hub_ids_are_read_from_the_hf_cache_at_the_resolved_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub id (UNI, BiomedCLIP style) offline: the snapshot of the cached commit is loaded
    and that commit is fingerprinted."""
    pytest.importorskip("open_clip")
    import huggingface_hub.constants as hub_constants

    from medprobe.extractors.openclip import OpenCLIPExtractor
    from medprobe.extractors.timm_models import TimmExtractor

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    commit = "0123456789abcdef0123456789abcdef01234567"
    for repo, save in (("org/tiny-timm", save_tiny_timm), ("org/tiny-oc", save_tiny_open_clip)):
        repo_dir = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
        save(repo_dir / "snapshots" / commit)
        (repo_dir / "refs").mkdir()
        (repo_dir / "refs" / "main").write_text(commit)
    x = torch.full((1, 3, 32, 32), 0.1)
    for cls, repo in ((TimmExtractor, "org/tiny-timm"), (OpenCLIPExtractor, "org/tiny-oc")):
        e = cls(repo, device="cpu")
        fp = e.fingerprint()
        assert (fp["source"], fp["resolved_revision"]) == ("hub", commit)
        assert e.extract(x, "norm")["norm"].shape == (1, 32)


def test_composed_and_typed_nodes_build_the_same_timm_extractor(
    compose: Compose, timm_dir: Path
) -> None:
    """model=uni: the composed node (model_kwargs a DictConfig) and the typed config (a dict)
    give the same extractor and fingerprint."""
    from medprobe.config.validate import to_typed
    from medprobe.registry import EXTRACTORS

    cfg = compose("model=uni", f"model.hf_id={timm_dir}")
    a = EXTRACTORS.get("timm")(cfg.model, "")
    b = EXTRACTORS.get("timm")(to_typed(cfg).model, "")
    assert a.model_kwargs == b.model_kwargs == {"init_values": 1e-5, "dynamic_img_size": True}
    assert a.fingerprint() == b.fingerprint()


def test_timm_hub_id_offline_and_not_cached_is_one_error() -> None:
    pytest.importorskip("timm")
    from medprobe.extractors.timm_models import TimmExtractor

    with pytest.raises(ExtractorError, match="cannot load the timm config.json for 'nobody/none'"):
        TimmExtractor("nobody/none").fingerprint()


# ------------------------------------------------------------------ open_clip


@pytest.mark.parametrize(
    "tower",
    ["native", pytest.param("timm", marks=pytest.mark.slow)],  # timm: 224 px, ~10-30 s
)
def test_open_clip_layers_embeds_and_preprocess(tower: str, tmp_path: Path) -> None:
    open_clip = pytest.importorskip("open_clip")
    from medprobe.extractors.openclip import OpenCLIPExtractor

    d = save_tiny_open_clip(tmp_path / tower, tower)
    ref, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{d}")
    ref.eval()
    size = 32 if tower == "native" else 224
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    visual = ref.visual
    with torch.no_grad():
        if tower == "native":
            inter = visual.forward_intermediates(x, intermediates_only=True, output_fmt="NLC",
                                                 output_extra_tokens=True)  # fmt: skip
            tokens = [torch.cat([c, p], 1) for c, p in
                      zip(inter["image_intermediates_prefix"], inter["image_intermediates"], strict=True)]  # fmt: skip
            depth, prefix = 2, 1
        else:
            trunk = visual.trunk
            inter = trunk.forward_intermediates(x, norm=False, output_fmt="NLC",
                                                return_prefix_tokens=True, intermediates_only=True)  # fmt: skip
            tokens = [torch.cat([pre, p], 1) for p, pre in inter]
            depth, prefix = 12, trunk.num_prefix_tokens
        embeds = ref.encode_image(x)
    e = OpenCLIPExtractor(str(d), device="cpu", pooling="mean_patch")
    assert e.layers() == [*range(depth + 1), "norm", "embeds"]
    f = e.extract(x, [1, depth, "norm", "embeds"])
    np.testing.assert_allclose(f[1], _manual(tokens[0], "mean_patch", prefix), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(f[depth], _manual(tokens[-1], "mean_patch", prefix), rtol=1e-5,
                               atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(f["embeds"], embeds.numpy(), rtol=1e-5, atol=1e-6)
    img = _image(2, (70, 50))
    assert torch.equal(e.preprocess(img), preprocess(img))
    fp = e.fingerprint()
    assert fp["library"] == "open_clip" and fp["open_clip"] == open_clip.__version__
    assert fp["preprocessing"]["size"] == [size, size] and fp["preprocessing"]["std"] == [0.25] * 3
    cls = OpenCLIPExtractor(str(d), pooling="cls").fingerprint()
    assert cache_key({"extractor": fp}) != cache_key({"extractor": cls})


def test_open_clip_batched_equals_single(tmp_path: Path) -> None:
    pytest.importorskip("open_clip")
    from medprobe.extractors.openclip import OpenCLIPExtractor

    e = OpenCLIPExtractor(str(save_tiny_open_clip(tmp_path / "m")), device="cpu")
    images = [e.preprocess(_image(s)) for s in range(3)]
    batched = e.extract(torch.stack(images), "all")
    for i, x in enumerate(images):
        for layer, v in e.extract(x[None], "all").items():
            np.testing.assert_allclose(batched[layer][i : i + 1], v, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ end to end


def _run(tmp_path: Path, *args: str) -> dict[str, Any]:
    run_medprobe(tmp_path, *args, "task=demo", "tracker=none", "progress=false",
                 "bootstrap.n=50", "model.device=cpu", "output_dir=out")  # fmt: skip
    return json.loads((tmp_path / "out" / "results.json").read_text())


def test_medprobe_run_dinov2_end_to_end(tmp_path: Path) -> None:
    d = save_tiny_hf_vision("dinov2_with_registers", tmp_path / "m")
    r = _run(tmp_path, "model=dinov2_base", f"model.hf_id={d}", "model.pooling=mean_patch")
    assert (r["model"], r["model_kind"], r["layer"]) == ("dinov2_base", "vision", "norm")
    assert r["counts"]["feature_dim"] == 32
    assert r["extractor"]["pooling"] == "mean_patch" and r["extractor"]["prefix_tokens"] == 5
    assert 0.0 <= r["metrics"]["auroc_macro"]["value"] <= 1.0


@pytest.mark.parametrize(
    ("model", "kind", "layer", "pooling"),
    [("siglip_base", "vision", "pooled", "mean_patch"), ("phikon", "vision", "norm", "cls"),
     ("uni", "timm", "norm", "cls"), ("biomedclip", "open_clip", "embeds", "cls")],
)  # fmt: skip
def test_run_task_demo_end_to_end_each_family(
    model: str, kind: str, layer: str, pooling: str, compose: Compose, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """``medprobe run model=<config> model.hf_id=<tiny> task=demo`` in process for the families
    the subprocess test above does not run (SigLIP, ViT/Phikon, timm, open_clip), on 81 demo
    images (3 per class and split), each at its config's default layer."""
    from medprobe.pipeline.run import run
    from medprobe.registry import TASKS

    if kind == "timm":
        pytest.importorskip("timm")
        d = save_tiny_timm(tmp_path / "m")
    elif kind == "open_clip":
        pytest.importorskip("open_clip")
        d = save_tiny_open_clip(tmp_path / "m")
    else:
        d = save_tiny_hf_vision({"siglip_base": "siglip", "phikon": "vit"}[model], tmp_path / "m")
    monkeypatch.setitem(TASKS._loaded, "demo", small_demo())
    cfg = compose(
        f"model={model}", f"model.hf_id={d}", "model.num_workers=0", "model.device=cpu",
        "task=demo", "tracker=none", "progress=false", "bootstrap.n=20",
        f"output_dir={tmp_path / 'out'}", f"cache_dir={tmp_path / 'cache'}",
    )  # fmt: skip
    run(cfg)
    r = json.loads((tmp_path / "out" / "results.json").read_text())
    assert (r["model"], r["model_kind"], r["task"], str(r["layer"])) == (model, kind, "demo", layer)
    assert r["extractor"]["pooling"] == pooling
    assert sum(r["counts"][k] for k in ("fit", "val", "test")) == 81
    assert 0.0 <= r["metrics"]["auroc_macro"]["value"] <= 1.0


@pytest.mark.slow  # a second subprocess run (~20-30 s on 2 busy cores); the timm layers and
# pooling are tested above without one
def test_medprobe_run_timm_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    d = save_tiny_timm(tmp_path / "m")
    # model=uni: its model_kwargs (init_values, dynamic_img_size) apply to the tiny ViT too
    r = _run(tmp_path, "model=uni", f"model.hf_id={d}", "layer=1")
    assert (r["model"], r["model_kind"], r["layer"]) == ("uni", "timm", 1)
    assert r["counts"]["feature_dim"] == 32 and r["extractor"]["pooling"] == "cls"
    assert r["extractor"]["model_kwargs"] == {"init_values": 1e-5, "dynamic_img_size": True}


@pytest.mark.parametrize(
    ("model", "params", "fp32", "bf16"),
    [("dinov2_base", "86.6", "0.35", "0.17"), ("siglip_base", "92.9", "0.37", "0.19"),
     ("uni", "303.4", "1.21", "0.61"), ("virchow2", "631.2", "2.52", "1.26"),
     ("biomedclip", "86.2", "0.34", "0.17")],
)  # fmt: skip
def test_plan_prints_the_weight_memory_of_a_vision_config(
    model: str, params: str, fp32: str, bf16: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``medprobe plan model=<vision config>``: parameters from the published hyper-parameters
    on the meta device (no download), weight GB at float32 and bfloat16."""
    from medprobe.extractors.vlm.plan import main

    assert main([f"model={model}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"parameters {params} M;" in lines[1]
    assert lines[3].split() == ["float32", fp32] and lines[4].split() == ["bfloat16", bf16]
